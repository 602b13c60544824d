//! strongSwan's VICI wire format ([`codec`]) and the typed views of its `list-sa` replies and
//! IKE/CHILD events ([`model`]): pure. The client is in the `socksec` crate.

pub mod codec;
pub mod model;

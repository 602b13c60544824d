//! strongSwan's VICI interface: where socksec gets peer identities (IKE and EAP/XAuth ids) and
//! IKE/CHILD SA unique ids for IPSEC2.
//!
//! - [`codec`]: the wire format, pure (bytes ↔ [`codec::Packet`] / [`codec::Message`]).
//! - [`model`]: typed views of `list-sa` and IKE/CHILD events ([`model::IkeSa`],
//!   [`model::ChildSa`], [`model::Identity`]), pure.
//! - [`client`]: a small synchronous client over charon's Unix socket
//!   ([`client::ViciClient`]).

pub mod client;
pub mod codec;
pub mod model;

pub use client::{ViciClient, ViciError};
pub use codec::{CodecError, Message, Packet, Value};
pub use model::{ChildSa, Identity, IdentityKind, IkeSa, ModelError};

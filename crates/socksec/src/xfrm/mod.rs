//! Kernel IPsec (XFRM): the snapshot model, the codec and the pure resolution are in
//! [`socksec_core::xfrm`] (re-exported here); this module is the netlink edge that fills
//! snapshots ([`dump`]) and keeps them current ([`events`]).

pub use socksec_core::xfrm::{codec, model};

pub mod dump;
pub mod events;

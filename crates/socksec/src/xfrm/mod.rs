//! Kernel IPsec (XFRM): the snapshot model, the pure resolution, and the netlink edge that
//! fills snapshots.

pub mod classify;
pub mod codec;
pub mod dump;
pub mod events;
pub mod index;
pub mod model;
pub mod resolve;

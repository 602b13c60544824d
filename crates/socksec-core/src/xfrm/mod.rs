//! Kernel IPsec (XFRM) as plain data and pure functions: the snapshot model, the netlink codec
//! that parses dumps and events into it, the classification of SAs, the candidate index and
//! the resolution that decides as the kernel does.

pub mod classify;
pub mod codec;
pub mod events;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod index;
pub mod model;
pub mod resolve;

//! # socksec-core: the pure half of socksec
//!
//! Everything that decides an answer and nothing that reads one: the Winsock contract
//! ([`contract`]) and the detailed answer ([`report`]), the [`flow`] a socket's traffic is, the
//! snapshots the kernel and the IKE daemon are read into ([`xfrm::model`], [`vici::model`],
//! [`sock_diag`], [`ktls`], [`wireguard`]), every codec ([`netlink`] framing, XFRM in
//! [`xfrm::codec`], sock_diag, WireGuard's generic netlink, VICI, the [`broker`] protocol) and
//! the resolution ([`xfrm::resolve`], [`peer`]).
//!
//! This crate has no `unsafe`, depends on no system-interface crate (libc, netlink-sys, rustix,
//! socket2, nix) and reads no socket, file, clock or environment: `now` is always an argument.
//! The `socksec` crate does the I/O and re-exports these modules under the same names.

#![forbid(unsafe_code)]

pub mod answer;
pub mod broker;
pub mod change;
pub mod contract;
pub mod error;
pub mod flow;
pub mod ike_diff;
pub mod impersonation;
pub mod ktls;
pub mod libreswan;
pub mod metrics;
pub mod netlink;
pub mod peer;
pub mod report;
pub mod rtnetlink;
pub mod rules;
pub mod sa;
pub mod secure;
pub mod sock_diag;
pub mod vici;
pub mod winerr;
pub mod wireguard;
pub mod xfrm;

pub use contract::{Flags, Ipsec2Info, QueryTemplate, SecurityInfo, SecurityProtocol};
pub use error::{Error, ErrorKind};
pub use report::{Caveat, Direction, Mechanism, PolicyRef, Protection, Reason, SaInfo};

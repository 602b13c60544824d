//! The socksec IPsec lab, as a library behind the `socksec-lab` binary.
//!
//! * [`host`]: `socksec-lab run`: packages, kernel, initramfs, one qemu boot, results.
//! * [`guest`]: `socksec-lab guest`: inside the guest, runs the [`scenarios`].
//! * [`lab`]: scenario infrastructure (namespaces, charon, parsers, sockets, socket query).
//! * [`results`]: the JSON the guest hands back to the host.

pub mod cmd;
pub mod error;
pub mod guest;
pub mod host;
pub mod lab;
pub mod results;
pub mod scenarios;
pub mod sys;

//! # socksec-winsock: the Winsock Secure Socket Extensions, as a C library for Linux
//!
//! C and C++ code written for Windows asks `WSAQuerySocketSecurity` whether the system
//! protects a socket's connection. This crate builds `libsocksec_winsock.so` and
//! `libsocksec_winsock.a` that export the six Secure Socket Extension functions with their
//! Winsock signatures and x86-64 Windows struct layouts, plus `WSAGetLastError` and
//! `WSASetLastError`; `include/socksec_winsock.h` declares them. The answers come from the
//! [`socksec`] library.
//!
//! | function | behaviour on Linux |
//! | --- | --- |
//! | [`WSAQuerySocketSecurity`] | the full decision table; answers from the kernel's IPsec tables |
//! | [`WSASetSocketSecurity`] | validates, then `WSAEOPNOTSUPP` (not supported on Linux yet) |
//! | [`WSASetSocketPeerTargetName`] | validates, then `WSAEOPNOTSUPP` |
//! | [`WSADeleteSocketPeerTargetName`] | validates, then `WSAEOPNOTSUPP` |
//! | [`WSAImpersonateSocketPeer`] | validates, then `WSAEOPNOTSUPP` (no access tokens on Linux) |
//! | [`WSARevertImpersonation`] | 0: a no-op, since no thread can be impersonating |
//!
//! Decided behaviour where Windows is silent or ambiguous (see the project's DESIGN.md):
//! * `SOCKET` is the file descriptor.
//! * A connection with no protection is a successful query with `Flags` 0.
//! * Size queries write the needed size (24, or 64 for IPSEC2) and fail with `WSAEFAULT` for
//!   a TCP socket queried without a template, `WSAEMSGSIZE` otherwise.
//! * `PeerAddress` accepts Windows' `AF_INET6` (23) and Linux's (10).
//! * The peer token handles are always 0 in this version: peer identities are not returned
//!   yet, whatever `PeerTokenAccessMask` asks.
//! * Overlapped calls complete before returning; a completion routine is called exactly once
//!   (see [`ffi`]).
//! * `SOCKSEC_STRICT=1` in the environment turns on strict mode (see [`calls::STRICT_ENV`]).
//!
//! Reading the kernel's IPsec tables needs CAP_NET_ADMIN; without it the query fails with
//! `WSAEACCES`.
//!
//! Layout: [`types`] holds the C types and constants, [`translate`] the pure byte-level
//! translation, [`calls`] the decision procedures, [`ffi`] the exported functions and every
//! `unsafe` block.

pub mod calls;
pub mod ffi;
pub mod tokens;
pub mod translate;
pub mod types;

pub use ffi::{
    WSADeleteSocketPeerTargetName, WSAGetLastError, WSAImpersonateSocketPeer,
    WSAQuerySocketSecurity, WSARevertImpersonation, WSASetLastError, WSASetSocketPeerTargetName,
    WSASetSocketSecurity, socksec_winsock_version,
};

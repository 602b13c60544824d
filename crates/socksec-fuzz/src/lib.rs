//! # socksec-fuzz: what each fuzz target checks
//!
//! socksec parses bytes from four sources it does not control: any local user (the broker's
//! requests, parsed by `socksecd` as root), the kernel (XFRM, rtnetlink, sock_diag, WireGuard's
//! generic netlink), the IKE daemons (charon's VICI, pluto's whack replies) and C callers (the ABI's pointers and lengths). Each
//! of those decoders has a target here: a function over arbitrary bytes that panics when an
//! invariant breaks, not only when the decoder does.
//!
//! * **Round trips**: where an encoder exists, `decode(encode(x)) == x` for every `x` the
//!   decoder accepted (broker frames, VICI messages and packets, the `SaLookupContext` GUID).
//! * **No key material kept**: targets plant a recognisable key ([`KEY`]) in every key field
//!   the kernel can send (XFRM SA algorithms, TCP-MD5 keys, WireGuard's private and preshared
//!   keys) around the fuzzed bytes, and fail if it shows in the parsed value, its `Debug` or
//!   its JSON, in any encoding ([`assert_no_key`]).
//! * **Lengths are not trusted**: a length field never makes a decoder allocate more than the
//!   bytes it has; `tests/corpus.rs` measures the largest allocation of each run, and
//!   `make fuzz` runs libFuzzer with `-malloc_limit_mb`.
//! * **Resolution is never more than the facts**: over a fuzzed SPD/SAD and flow, ENCRYPTED
//!   never comes without SECURED, and SECURED never without a valid SA giving integrity behind
//!   every direction; the lookup index changes no answer ([`targets::resolution`]).
//!
//! The targets are run three ways: `make fuzz` (cargo-fuzz on nightly, `fuzz/`, fresh inputs
//! for a given time), CI's short fresh run of each, and `cargo test -p socksec-fuzz`, which
//! replays every committed corpus file and every past crash on stable (`fuzz/corpus/NAME/`,
//! `fuzz/regressions/NAME/`).

pub mod c_abi;
pub mod keys;
pub mod snapshot;
pub mod targets;

pub use keys::{KEY, assert_no_key};

/// A fuzz target: bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus folder and of its cargo-fuzz binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("broker_request", targets::broker_request),
    ("broker_response", targets::broker_response),
    ("netlink_framing", targets::netlink_framing),
    ("xfrm_dump", targets::xfrm_dump),
    ("xfrm_event", targets::xfrm_event),
    ("rtnetlink", targets::rtnetlink),
    ("sock_diag", targets::sock_diag),
    ("wireguard_genl", targets::wireguard_genl),
    ("vici_message", targets::vici_message),
    ("vici_stream", targets::vici_stream),
    ("pluto_whack", targets::pluto_whack),
    ("sa_context_guid", targets::sa_context_guid),
    ("cert_names", targets::cert_names),
    ("c_abi", c_abi::c_abi),
    ("resolution", targets::resolution),
    ("secure_settings", targets::secure_settings),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

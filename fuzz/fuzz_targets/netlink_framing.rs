#![no_main]
//! See `socksec_fuzz::TARGETS`: `netlink_framing`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("netlink_framing").expect("a known target")(data));

#![no_main]
//! See `socksec_fuzz::TARGETS`: `rtnetlink`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("rtnetlink").expect("a known target")(data));

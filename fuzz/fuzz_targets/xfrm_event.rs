#![no_main]
//! See `socksec_fuzz::TARGETS`: `xfrm_event`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("xfrm_event").expect("a known target")(data));

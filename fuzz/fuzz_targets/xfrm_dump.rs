#![no_main]
//! See `socksec_fuzz::TARGETS`: `xfrm_dump`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("xfrm_dump").expect("a known target")(data));

#![no_main]
//! See `socksec_fuzz::TARGETS`: `broker_response`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("broker_response").expect("a known target")(data));

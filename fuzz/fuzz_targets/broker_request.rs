#![no_main]
//! See `socksec_fuzz::TARGETS`: `broker_request`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("broker_request").expect("a known target")(data));

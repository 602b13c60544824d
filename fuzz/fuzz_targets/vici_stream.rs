#![no_main]
//! See `socksec_fuzz::TARGETS`: `vici_stream`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("vici_stream").expect("a known target")(data));

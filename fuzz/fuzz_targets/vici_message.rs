#![no_main]
//! See `socksec_fuzz::TARGETS`: `vici_message`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("vici_message").expect("a known target")(data));

#![no_main]
//! See `socksec_fuzz::TARGETS`: `resolution`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("resolution").expect("a known target")(data));

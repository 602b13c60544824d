#![no_main]
//! See `socksec_fuzz::TARGETS`: `secure_settings`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("secure_settings").expect("a known target")(data));

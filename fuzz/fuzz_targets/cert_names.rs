#![no_main]
//! See `socksec_fuzz::TARGETS`: `cert_names`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("cert_names").expect("a known target")(data));

#![no_main]
//! See `socksec_fuzz::TARGETS`: `sa_context_guid`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("sa_context_guid").expect("a known target")(data));

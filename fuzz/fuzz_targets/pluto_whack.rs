#![no_main]
//! See `socksec_fuzz::TARGETS`: `pluto_whack`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("pluto_whack").expect("a known target")(data));

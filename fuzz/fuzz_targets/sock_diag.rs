#![no_main]
//! See `socksec_fuzz::TARGETS`: `sock_diag`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("sock_diag").expect("a known target")(data));

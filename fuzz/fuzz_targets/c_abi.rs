#![no_main]
//! See `socksec_fuzz::TARGETS`: `c_abi`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("c_abi").expect("a known target")(data));

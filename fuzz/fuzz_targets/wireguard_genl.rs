#![no_main]
//! See `socksec_fuzz::TARGETS`: `wireguard_genl`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| socksec_fuzz::target("wireguard_genl").expect("a known target")(data));

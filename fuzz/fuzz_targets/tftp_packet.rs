//! libFuzzer entry of the `tftp_packet` target; the checks live in `bakery_fuzz::tftp_packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bakery_fuzz::tftp_packet(data));

//! libFuzzer entry of the `cmdline` target; the checks live in `bakery_fuzz::cmdline`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bakery_fuzz::cmdline(data));

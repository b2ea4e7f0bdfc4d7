//! libFuzzer entry of the `cpi_request` target; the checks live in `bakery_fuzz::cpi_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bakery_fuzz::cpi_request(data));

//! libFuzzer entry of the `image` target; the checks live in `bakery_fuzz::image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bakery_fuzz::image(data));

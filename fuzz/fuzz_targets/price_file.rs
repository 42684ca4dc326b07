#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| socer::fuzz::price_file(data));

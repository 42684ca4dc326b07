#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| socer::fuzz::http_query(data));

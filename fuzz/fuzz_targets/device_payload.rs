#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| socer::fuzz::device_payload(data));

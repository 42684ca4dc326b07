#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| socer_drivers::fuzz::profile_file(data));

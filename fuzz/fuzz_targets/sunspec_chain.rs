#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| socer_drivers::fuzz::sunspec_chain(data));

//! libFuzzer entry for `fuzz/checks/inbox_decode.rs`, where the properties checked are described.
#![no_main]

#[path = "../checks/inbox_decode.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));

//! libFuzzer entry for `fuzz/checks/signature_headers.rs`, where the properties checked are described.
#![no_main]

#[path = "../checks/signature_headers.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));

//! libFuzzer entry for `fuzz/checks/hubspot_body.rs`, where the properties checked are described.
#![no_main]

#[path = "../checks/hubspot_body.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));

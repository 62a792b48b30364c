//! libFuzzer entry for `fuzz/checks/salesforce_soap.rs`, where the properties checked are described.
#![no_main]

#[path = "../checks/salesforce_soap.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));

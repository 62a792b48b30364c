//! libFuzzer entry for `fuzz/checks/product_event.rs`, where the properties checked are described.
#![no_main]

#[path = "../checks/product_event.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));

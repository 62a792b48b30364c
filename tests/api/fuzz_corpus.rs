//! Replays every committed fuzz input (`fuzz/corpus/<target>/`) through the same checks the fuzz
//! targets run, on the stable toolchain, so the seeds and every crash input added to them stay
//! regression tests in `cargo test` without a fuzzing build.

use std::path::Path;

#[path = "../../fuzz/checks/hubspot_body.rs"]
mod hubspot_body;
#[path = "../../fuzz/checks/inbox_decode.rs"]
mod inbox_decode;
#[path = "../../fuzz/checks/product_event.rs"]
mod product_event;
#[path = "../../fuzz/checks/salesforce_soap.rs"]
mod salesforce_soap;
#[path = "../../fuzz/checks/signature_headers.rs"]
mod signature_headers;

/// Runs `check` on every file of the target's corpus; a panic names the file.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no seeds in {}", dir.display());
    for input in inputs {
        let data = std::fs::read(&input).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", input.display());
    }
}

#[test]
fn hubspot_body_corpus() {
    replay("hubspot_body", hubspot_body::check);
}

#[test]
fn salesforce_soap_corpus() {
    replay("salesforce_soap", salesforce_soap::check);
}

#[test]
fn product_event_corpus() {
    replay("product_event", product_event::check);
}

#[test]
fn signature_headers_corpus() {
    replay("signature_headers", signature_headers::check);
}

#[test]
fn inbox_decode_corpus() {
    replay("inbox_decode", inbox_decode::check);
}

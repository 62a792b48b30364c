//! Stored inbox events (`processing::decode::decode`): whatever a sender managed to get stored,
//! decoding must give changes, an ignore reason or an error, never a panic.
//!
//! Input: the first byte picks the source (`b'0' + i` picks `SOURCES[i]`, modulo their number),
//! the rest up to the first newline is the event type, everything after it is the payload.

use referral_sync::processing::decode::{decode, Decoded, GuardedNames};
use referral_sync::store::NewInboxEvent;

const SOURCES: &[&str] = &[
    "hubspot",
    "hubspot-api",
    "salesforce",
    "salesforce-callout",
    "signup:app",
];

pub fn check(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let source = SOURCES[usize::from(selector.wrapping_sub(b'0')) % SOURCES.len()];
    let (event_type, payload) = match rest.iter().position(|&b| b == b'\n') {
        Some(newline) => (&rest[..newline], &rest[newline + 1..]),
        None => (rest, &[][..]),
    };
    let event = NewInboxEvent {
        source: source.parse().expect("a known source"),
        dedupe_key: "fuzz".to_string(),
        event_type: String::from_utf8_lossy(event_type).into_owned(),
        object_key: None,
        occurred_at: Some(1_763_700_000_000),
        received_at: 1_763_700_000_500,
        meta: "{}".to_string(),
        // Payloads are stored as text, so they are always UTF-8.
        payload: String::from_utf8_lossy(payload).into_owned(),
        partition_no: 0,
    };
    let names = GuardedNames {
        hubspot_referral_source: "referral_source".to_string(),
        salesforce_referral_source: "Referral_Source__c".to_string(),
    };
    match decode(&event, &names) {
        Ok(Decoded::Crm { at, changes }) => {
            assert_eq!(at, 1_763_700_000_000, "the occurrence time is the event's");
            assert!(!changes.is_empty(), "CRM changes are never an empty list");
            assert!(source != "signup:app", "product events are not CRM changes");
        }
        Ok(Decoded::Product(product)) => {
            assert_eq!(
                source, "signup:app",
                "only product sources decode to product events"
            );
            let direct =
                referral_sync::ingest::product::parse_product_event(event.payload.as_bytes())
                    .expect("decode accepted it");
            assert_eq!(product, direct);
        }
        Ok(Decoded::Ignore(reason)) => assert!(!reason.is_empty()),
        Err(error) => assert!(!error.0.is_empty()),
    }
}

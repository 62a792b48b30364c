//! HubSpot webhook bodies (`ingest::hubspot::parse_body`): any bytes must give events or an
//! error, never a panic, and accepted events must describe the body they came from.

use referral_sync::ingest::hubspot::{parse_body, MAX_EVENTS_PER_REQUEST};

pub fn check(data: &[u8]) {
    let Ok(events) = parse_body(data) else {
        return;
    };
    // Only valid JSON (hence UTF-8) is accepted.
    let text = std::str::from_utf8(data).expect("an accepted body is UTF-8");
    assert!(
        events.len() <= MAX_EVENTS_PER_REQUEST,
        "{} events",
        events.len()
    );
    // JSON allows only ASCII whitespace before the value, so this is the top-level shape.
    let workflow_body = text.trim_start().starts_with('{');
    if workflow_body {
        assert_eq!(events.len(), 1, "a workflow body is one event");
        assert_eq!(events[0].event_type, "workflow.webhook");
        assert_eq!(
            events[0].raw,
            text.trim(),
            "a workflow event is the whole body"
        );
        assert!(events[0].dedupe_key.starts_with("workflow:"));
    }
    for event in &events {
        assert!(
            text.contains(&event.raw),
            "raw {:?} is not part of the body",
            event.raw
        );
        assert!(
            event.raw.starts_with('{') && event.raw.ends_with('}'),
            "raw {:?} is not one JSON object",
            event.raw
        );
        assert!(!event.event_type.is_empty());
        if !workflow_body {
            // App events always carry the object they concern, and it is part of the dedupe key.
            let id = event
                .object_id
                .as_deref()
                .expect("app event without object id");
            assert!(!id.is_empty() && id.trim() == id, "object id {id:?}");
            assert!(
                event.dedupe_key.contains(id),
                "{} lacks {id}",
                event.dedupe_key
            );
        }
    }
}

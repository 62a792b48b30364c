//! Salesforce Outbound Messages (`ingest::salesforce::parse_outbound_message`): any bytes must give
//! a message or an error, never a panic or unbounded work, and an accepted message must respect
//! the limits the parser promises. Also checks that a SOAP fault built from arbitrary text stays
//! well-formed.

use referral_sync::ingest::salesforce::{
    fault_response, org_id_matches, parse_outbound_message, FaultCode, MAX_FIELDS_PER_SOBJECT,
    MAX_NOTIFICATIONS,
};

pub fn check(data: &[u8]) {
    match parse_outbound_message(data) {
        Ok(message) => {
            assert!(
                message.notifications.len() <= MAX_NOTIFICATIONS,
                "{} notifications",
                message.notifications.len()
            );
            assert!(
                org_id_matches(&message.organization_id, &message.organization_id),
                "accepted organization id {:?} is not a Salesforce id",
                message.organization_id
            );
            for notification in &message.notifications {
                assert!(!notification.id.is_empty(), "notification with an empty id");
                assert!(
                    !notification.sobject_type.is_empty()
                        && notification.sobject_type.len() <= 80
                        && notification
                            .sobject_type
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "sObject type {:?}",
                    notification.sobject_type
                );
                assert!(notification.fields.len() <= MAX_FIELDS_PER_SOBJECT);
                let json =
                    notification.to_json(&message.organization_id, message.action_id.as_deref());
                let value: serde_json::Value =
                    serde_json::from_str(&json).expect("inbox payload is JSON");
                assert_eq!(
                    value["notification_id"].as_str(),
                    Some(notification.id.as_str())
                );
            }
            fault_is_well_formed(&fault_response(FaultCode::Server, "ok"));
        }
        Err(error) => fault_is_well_formed(&fault_response(FaultCode::Client, &error.to_string())),
    }
    fault_is_well_formed(&fault_response(
        FaultCode::Client,
        &String::from_utf8_lossy(data),
    ));
}

/// The faultstring carries no markup and no character XML 1.0 forbids.
fn fault_is_well_formed(fault: &str) {
    let start = fault
        .find("<faultstring>")
        .map(|i| i + "<faultstring>".len());
    let end = fault.rfind("</faultstring>");
    let (Some(start), Some(end)) = (start, end) else {
        panic!("fault without faultstring: {fault:?}");
    };
    let text = &fault[start..end];
    assert!(
        !text.contains('<') && !text.contains('>'),
        "markup in {text:?}"
    );
    for (i, _) in text.match_indices('&') {
        let rest = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|entity| rest.starts_with(entity)),
            "bare & in {text:?}"
        );
    }
    assert!(
        text.chars()
            .all(|c| matches!(c, '\t' | '\n' | '\r')
                || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')),
        "character XML 1.0 forbids in {text:?}"
    );
}

//! HubSpot webhook bodies: splits an app-webhook batch (a JSON array of events) or a workflow
//! "Send a webhook" body (one JSON object) into inbox events, each with a dedupe key, a
//! normalised event type, the object it concerns and its exact JSON text.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// HubSpot batches at most this many events into one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 100;

/// One event ready for the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpotEvent {
    /// `{portalId}:{subscriptionId}:{eventId}:{objectId}:{occurredAt}` for app events (missing
    /// parts empty; events without `objectId` use the id they carry), `workflow:{sha256 of body}`
    /// for workflow bodies.
    pub dedupe_key: String,
    /// `contact.creation`, `deal.propertyChange`, …; generic `object.*` events for contacts,
    /// deals and companies are renamed to `contact.*`, `deal.*`, `company.*`; workflow bodies are
    /// `workflow.webhook`.
    pub event_type: String,
    /// `contact`, `deal`, `company`, another HubSpot object name or objectTypeId. For association
    /// events this is the type of `fromObjectId`, taken from `associationType`.
    pub object_type: Option<String>,
    /// The object's id as a decimal string.
    pub object_id: Option<String>,
    pub portal_id: Option<i64>,
    pub occurred_at_ms: Option<i64>,
    /// This event's JSON text exactly as it appeared in the body.
    pub raw: String,
}

/// Why a HubSpot body was rejected. `event N` counts array elements from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubSpotParseError {
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("body must be a JSON array of events or a JSON object, not {0}")]
    UnexpectedTopLevel(&'static str),
    #[error("too many events: {count} in one request, at most {MAX_EVENTS_PER_REQUEST} allowed")]
    TooManyEvents { count: usize },
    #[error("event {index}: expected a JSON object")]
    EventNotObject { index: usize },
    #[error("event {index}: missing field {field}")]
    MissingField { index: usize, field: &'static str },
    #[error("event {index}: field {field} must be {expected}")]
    WrongType {
        index: usize,
        field: &'static str,
        expected: &'static str,
    },
}

/// Splits a webhook body into events: a JSON array is an app-webhook batch, a JSON object is a
/// workflow webhook.
pub fn parse_body(body: &[u8]) -> Result<Vec<HubSpotEvent>, HubSpotParseError> {
    let document: &RawValue = serde_json::from_slice(body).map_err(invalid_json)?;
    let text = document.get();
    match text.as_bytes().first() {
        Some(b'[') => parse_batch(text),
        Some(b'{') => parse_workflow(body, text).map(|event| vec![event]),
        Some(b'"') => Err(HubSpotParseError::UnexpectedTopLevel("a string")),
        Some(b't' | b'f') => Err(HubSpotParseError::UnexpectedTopLevel("a boolean")),
        Some(b'n') => Err(HubSpotParseError::UnexpectedTopLevel("null")),
        _ => Err(HubSpotParseError::UnexpectedTopLevel("a number")),
    }
}

fn invalid_json(error: serde_json::Error) -> HubSpotParseError {
    HubSpotParseError::InvalidJson(error.to_string())
}

fn parse_batch(text: &str) -> Result<Vec<HubSpotEvent>, HubSpotParseError> {
    let elements: Vec<&RawValue> = serde_json::from_str(text).map_err(invalid_json)?;
    if elements.len() > MAX_EVENTS_PER_REQUEST {
        return Err(HubSpotParseError::TooManyEvents {
            count: elements.len(),
        });
    }
    elements
        .iter()
        .enumerate()
        .map(|(index, raw)| parse_app_event(index, raw.get()))
        .collect()
}

fn parse_app_event(index: usize, raw: &str) -> Result<HubSpotEvent, HubSpotParseError> {
    let fields = match serde_json::from_str::<Value>(raw).map_err(invalid_json)? {
        Value::Object(fields) => fields,
        _ => return Err(HubSpotParseError::EventNotObject { index }),
    };
    let event = AppEvent { index, fields };
    let subscription_type = event.subscription_type()?;
    let (event_type, subscription_object) = normalise_type(subscription_type, &event.fields);
    let object_id = event.object_id(&event_type)?;
    let object_type = association_from_type(&event.fields).or(subscription_object);
    Ok(HubSpotEvent {
        dedupe_key: event.dedupe_key(&object_id),
        event_type,
        object_type,
        object_id: Some(object_id),
        portal_id: integer_field(&event.fields, "portalId"),
        occurred_at_ms: integer_field(&event.fields, "occurredAt"),
        raw: raw.to_string(),
    })
}

/// An app-webhook event object with its position in the batch, for error messages.
struct AppEvent {
    index: usize,
    fields: Map<String, Value>,
}

impl AppEvent {
    fn subscription_type(&self) -> Result<&str, HubSpotParseError> {
        let value = present(&self.fields, "subscriptionType")
            .or_else(|| present(&self.fields, "eventType"))
            .ok_or(HubSpotParseError::MissingField {
                index: self.index,
                field: "subscriptionType",
            })?;
        value
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or(HubSpotParseError::WrongType {
                index: self.index,
                field: "subscriptionType",
                expected: "a non-empty string",
            })
    }

    /// `objectId`, or for merge and association events, which may lack it, the id they carry.
    fn object_id(&self, event_type: &str) -> Result<String, HubSpotParseError> {
        let (reported, candidates): (&'static str, &[&'static str]) =
            if event_type.ends_with(".merge") {
                (
                    "primaryObjectId",
                    &["objectId", "primaryObjectId", "newObjectId"],
                )
            } else if event_type.ends_with(".associationChange") {
                ("fromObjectId", &["objectId", "fromObjectId"])
            } else {
                ("objectId", &["objectId"])
            };
        let (field, value) = candidates
            .iter()
            .find_map(|field| present(&self.fields, field).map(|value| (*field, value)))
            .ok_or(HubSpotParseError::MissingField {
                index: self.index,
                field: reported,
            })?;
        id_text(value).ok_or(HubSpotParseError::WrongType {
            index: self.index,
            field,
            expected: "an integer or a non-empty string",
        })
    }

    fn dedupe_key(&self, object_id: &str) -> String {
        let part = |name: &str| present(&self.fields, name).map_or_else(String::new, scalar_text);
        format!(
            "{}:{}:{}:{}:{}",
            part("portalId"),
            part("subscriptionId"),
            part("eventId"),
            object_id,
            part("occurredAt"),
        )
    }
}

/// Returns the normalised event type and the object type named by the subscription.
fn normalise_type(
    subscription_type: &str,
    fields: &Map<String, Value>,
) -> (String, Option<String>) {
    let Some((object, action)) = subscription_type.split_once('.') else {
        return (subscription_type.to_string(), None);
    };
    if object != "object" {
        return (subscription_type.to_string(), Some(object.to_string()));
    }
    let Some(type_id) = present(fields, "objectTypeId").map(scalar_text) else {
        return (subscription_type.to_string(), None);
    };
    match standard_object_name(&type_id) {
        Some(name) => (format!("{name}.{action}"), Some(name.to_string())),
        None => (subscription_type.to_string(), Some(type_id)),
    }
}

fn standard_object_name(object_type_id: &str) -> Option<&'static str> {
    match object_type_id {
        "0-1" => Some("contact"),
        "0-2" => Some("company"),
        "0-3" => Some("deal"),
        _ => None,
    }
}

/// `CONTACT_TO_DEAL` → `contact`: HubSpot sends both directions of an association to the same
/// subscription, so the subscription's object is not necessarily the `fromObjectId`'s.
fn association_from_type(fields: &Map<String, Value>) -> Option<String> {
    let association = present(fields, "associationType")?.as_str()?;
    let (from, _) = association.split_once("_TO_")?;
    if from.is_empty() {
        return None;
    }
    Some(from.to_ascii_lowercase())
}

/// HubSpot ids are integers but some senders quote them.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .map(|id| id.to_string())
            .or_else(|| n.as_i64().map(|id| id.to_string())),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

fn integer_field(fields: &Map<String, Value>, name: &str) -> Option<i64> {
    match present(fields, name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A field that is there and not `null`.
fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|value| !value.is_null())
}

fn parse_workflow(body: &[u8], text: &str) -> Result<HubSpotEvent, HubSpotParseError> {
    let fields: Map<String, Value> = serde_json::from_str(text).map_err(invalid_json)?;
    let (object_id_field, object_id) = ["objectId", "hs_object_id", "vid", "id"]
        .iter()
        .find_map(|name| present(&fields, name).map(|value| (*name, value)))
        .map_or((None, None), |(name, value)| (Some(name), id_text(value)));
    Ok(HubSpotEvent {
        dedupe_key: format!("workflow:{}", hex::encode(Sha256::digest(body))),
        event_type: "workflow.webhook".to_string(),
        object_type: workflow_object_type(&fields, object_id_field),
        object_id,
        portal_id: integer_field(&fields, "portalId")
            .or_else(|| integer_field(&fields, "portal-id")),
        occurred_at_ms: None,
        raw: text.to_string(),
    })
}

/// Workflow bodies rarely say what they describe; `vid` only exists on legacy contact records.
fn workflow_object_type(fields: &Map<String, Value>, id_field: Option<&str>) -> Option<String> {
    let declared = present(fields, "objectTypeId").or_else(|| present(fields, "objectType"));
    if let Some(declared) = declared.map(scalar_text) {
        let name = standard_object_name(&declared).map(str::to_string);
        return Some(name.unwrap_or_else(|| declared.to_ascii_lowercase()));
    }
    (id_field == Some("vid")).then(|| "contact".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> HubSpotEvent {
        let mut events = parse_body(body.as_bytes()).expect("parses");
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    #[test]
    fn classic_batch_keeps_types_keys_and_exact_raw_text() {
        let first = r#"{"objectId":697680835,"propertyName":"dealstage","propertyValue":"closedwon","changeSource":"AUTOMATION_PLATFORM","eventId":1228532628,"subscriptionId":92894,"portalId":5799819,"appId":186886,"occurredAt":1556105815815,"subscriptionType":"deal.propertyChange","attemptNumber":3}"#;
        let second = "{ \"objectId\" : 51,\n  \"propertyName\":\"firstname\", \"propertyValue\":\"Jos\\u00e9 Zoë 🚀\",\"eventId\":7,\"subscriptionId\":11,\"portalId\":5799819,\"occurredAt\":1556105815999,\"eventType\":\"contact.propertyChange\" }";
        let third = r#"{"objectId":51,"eventId":8,"subscriptionId":12,"portalId":5799819,"occurredAt":1556105816000,"subscriptionType":"contact.creation"}"#;
        let body = format!("  [ {first},\n{second} , {third}]  ");

        let events = parse_body(body.as_bytes()).unwrap();

        assert_eq!(events.len(), 3);
        assert_eq!(events[0].raw, first);
        assert_eq!(events[1].raw, second);
        assert_eq!(events[2].raw, third);
        assert_eq!(
            events[0].dedupe_key,
            "5799819:92894:1228532628:697680835:1556105815815"
        );
        assert_eq!(events[1].dedupe_key, "5799819:11:7:51:1556105815999");
        assert_eq!(events[0].event_type, "deal.propertyChange");
        assert_eq!(events[1].event_type, "contact.propertyChange");
        assert_eq!(events[2].event_type, "contact.creation");
        assert_eq!(events[0].object_type.as_deref(), Some("deal"));
        assert_eq!(events[1].object_type.as_deref(), Some("contact"));
        assert_eq!(events[0].object_id.as_deref(), Some("697680835"));
        assert_eq!(events[0].portal_id, Some(5_799_819));
        assert_eq!(events[0].occurred_at_ms, Some(1_556_105_815_815));
    }

    #[test]
    fn same_event_id_for_different_objects_gets_different_keys() {
        let body = r#"[{"objectId":1,"eventId":5,"subscriptionId":2,"portalId":3,"occurredAt":4,"subscriptionType":"contact.deletion"},
                       {"objectId":9,"eventId":5,"subscriptionId":2,"portalId":3,"occurredAt":4,"subscriptionType":"contact.deletion"}]"#;
        let events = parse_body(body.as_bytes()).unwrap();
        assert_ne!(events[0].dedupe_key, events[1].dedupe_key);
    }

    #[test]
    fn missing_key_parts_are_empty() {
        let event = one(r#"[{"objectId":"42","subscriptionType":"contact.restore"}]"#);
        assert_eq!(event.dedupe_key, ":::42:");
        assert_eq!(event.object_id.as_deref(), Some("42"));
        assert_eq!(event.portal_id, None);
        assert_eq!(event.occurred_at_ms, None);
    }

    #[test]
    fn generic_object_events_are_renamed_by_object_type_id() {
        let body = r#"[{"objectId":1,"objectTypeId":"0-1","subscriptionType":"object.creation","eventId":1},
                       {"objectId":2,"objectTypeId":"0-3","subscriptionType":"object.propertyChange","propertyName":"amount","propertyValue":"10"},
                       {"objectId":3,"objectTypeId":"0-2","subscriptionType":"object.deletion"},
                       {"objectId":4,"objectTypeId":"2-7654321","subscriptionType":"object.creation"}]"#;
        let events = parse_body(body.as_bytes()).unwrap();
        let types: Vec<(&str, Option<&str>)> = events
            .iter()
            .map(|e| (e.event_type.as_str(), e.object_type.as_deref()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("contact.creation", Some("contact")),
                ("deal.propertyChange", Some("deal")),
                ("company.deletion", Some("company")),
                ("object.creation", Some("2-7654321")),
            ]
        );
    }

    #[test]
    fn merge_event_without_object_id_uses_primary_object_id() {
        let event = one(
            r#"[{"eventId":10,"subscriptionId":20,"portalId":30,"occurredAt":40,"subscriptionType":"contact.merge","primaryObjectId":111,"mergedObjectIds":[222,333],"newObjectId":111}]"#,
        );
        assert_eq!(event.event_type, "contact.merge");
        assert_eq!(event.object_type.as_deref(), Some("contact"));
        assert_eq!(event.object_id.as_deref(), Some("111"));
        assert_eq!(event.dedupe_key, "30:20:10:111:40");
    }

    #[test]
    fn association_event_is_keyed_by_from_object() {
        let body = r#"[{"eventId":1,"subscriptionId":2,"portalId":3,"occurredAt":4,"subscriptionType":"deal.associationChange","associationType":"DEAL_TO_CONTACT","fromObjectId":500,"toObjectId":600,"associationRemoved":false,"isPrimaryAssociation":false},
                       {"eventId":5,"subscriptionId":2,"portalId":3,"occurredAt":4,"subscriptionType":"deal.associationChange","associationType":"CONTACT_TO_DEAL","fromObjectId":600,"toObjectId":500,"associationRemoved":false,"isPrimaryAssociation":false}]"#;
        let events = parse_body(body.as_bytes()).unwrap();
        assert_eq!(events[0].event_type, "deal.associationChange");
        assert_eq!(events[0].object_type.as_deref(), Some("deal"));
        assert_eq!(events[0].object_id.as_deref(), Some("500"));
        assert_eq!(events[1].object_type.as_deref(), Some("contact"));
        assert_eq!(events[1].object_id.as_deref(), Some("600"));
        assert_eq!(events[0].dedupe_key, "3:2:1:500:4");
    }

    #[test]
    fn workflow_object_is_one_event_keyed_by_body_hash() {
        let body = "{\"objectId\": 123, \"properties\": {\"email\": \"ana@northwind.io\"}}\n";
        let event = one(body);
        assert_eq!(event.event_type, "workflow.webhook");
        assert_eq!(event.object_id.as_deref(), Some("123"));
        assert_eq!(event.occurred_at_ms, None);
        assert_eq!(event.raw, body.trim_end());
        let expected = hex::encode(Sha256::digest(body.as_bytes()));
        assert_eq!(event.dedupe_key, format!("workflow:{expected}"));
        assert_eq!(one(body).dedupe_key, event.dedupe_key);
    }

    #[test]
    fn legacy_workflow_body_uses_vid_as_a_contact_id() {
        let event = one(
            r#"{"vid": 987, "portal-id": 62515, "properties": {"email": {"value": "ana@northwind.io"}}}"#,
        );
        assert_eq!(event.object_id.as_deref(), Some("987"));
        assert_eq!(event.object_type.as_deref(), Some("contact"));
        assert_eq!(event.portal_id, Some(62515));
    }

    #[test]
    fn workflow_id_fields_are_tried_in_order() {
        let event = one(r#"{"id": "7", "hs_object_id": "55", "properties": {}}"#);
        assert_eq!(event.object_id.as_deref(), Some("55"));
        assert_eq!(event.object_type, None);
    }

    #[test]
    fn more_than_one_hundred_events_are_rejected() {
        let event = r#"{"objectId":1,"subscriptionType":"contact.creation"}"#;
        let body = format!("[{}]", vec![event; 101].join(","));
        assert_eq!(
            parse_body(body.as_bytes()),
            Err(HubSpotParseError::TooManyEvents { count: 101 })
        );
        let body = format!("[{}]", vec![event; 100].join(","));
        assert_eq!(parse_body(body.as_bytes()).unwrap().len(), 100);
    }

    #[test]
    fn empty_batch_is_no_events() {
        assert_eq!(parse_body(b" [ ] "), Ok(vec![]));
    }

    #[test]
    fn missing_subscription_type_names_the_index() {
        let body = r#"[{"objectId":1,"subscriptionType":"contact.creation"},
                       {"objectId":2,"subscriptionType":"contact.creation"},
                       {"objectId":3,"subscriptionType":"contact.creation"},
                       {"objectId":4}]"#;
        let error = parse_body(body.as_bytes()).unwrap_err();
        assert_eq!(error.to_string(), "event 3: missing field subscriptionType");
    }

    #[test]
    fn missing_or_malformed_object_id_is_rejected() {
        let error = parse_body(br#"[{"subscriptionType":"contact.creation"}]"#).unwrap_err();
        assert_eq!(error.to_string(), "event 0: missing field objectId");
        let error =
            parse_body(br#"[{"subscriptionType":"contact.creation","objectId":1.5}]"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "event 0: field objectId must be an integer or a non-empty string"
        );
        let error = parse_body(br#"[{"subscriptionType":"contact.merge"}]"#).unwrap_err();
        assert_eq!(error.to_string(), "event 0: missing field primaryObjectId");
    }

    #[test]
    fn non_object_elements_are_rejected() {
        let error = parse_body(br#"[{"objectId":1,"subscriptionType":"a.b"}, 5]"#).unwrap_err();
        assert_eq!(error, HubSpotParseError::EventNotObject { index: 1 });
    }

    #[test]
    fn invalid_json_reports_where() {
        let error = parse_body(b"[{\"objectId\": 1,\n  oops}]").unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("body is not valid JSON"), "{message}");
        assert!(message.contains("line 2 column 3"), "{message}");
        assert!(matches!(
            parse_body(b""),
            Err(HubSpotParseError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_body(b"[1] trailing"),
            Err(HubSpotParseError::InvalidJson(_))
        ));
    }

    #[test]
    fn scalar_top_level_is_rejected() {
        for body in [&b"\"hi\""[..], b"42", b"true", b"null", b"-1"] {
            assert!(matches!(
                parse_body(body),
                Err(HubSpotParseError::UnexpectedTopLevel(_))
            ));
        }
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_body(deep.as_bytes()).is_err());
        assert!(parse_body(&[0xff, 0xfe, b'[', b']']).is_err());
        assert!(
            parse_body(br#"[{"subscriptionType":"contact.creation","objectId":-1e400}]"#).is_err()
        );
    }
}

//! Turns a stored inbox event into typed domain changes. Pure: no I/O, no clock. Each CRM's
//! vocabulary (HubSpot subscription types and property names, Salesforce sObjects and fields) is
//! translated here, so the processor speaks only of people, deals, stages and the guarded
//! referral-source value.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::clock::Millis;
pub use crate::domain::{Crm, RecordKind};
use crate::domain::{Email, EventSource};
use crate::ingest::product::{self, ProductEvent};
use crate::store::{NewInboxEvent, RecordKey};

/// One CRM record, as the CRM names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    pub crm: Crm,
    pub kind: RecordKind,
    /// `contact`/`deal` (HubSpot) or the sObject name `Contact`/`Lead`/`Opportunity` (Salesforce).
    pub object_type: String,
    pub id: String,
    /// HubSpot portal id or Salesforce org id; empty when unknown.
    pub account: String,
}

impl RecordRef {
    pub fn key(&self) -> RecordKey {
        RecordKey::new(self.crm, &self.object_type, &self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmChange {
    /// The record exists (created, or seen in a snapshot) with whatever identity facts came along.
    Upsert {
        record: RecordRef,
        created_at: Option<Millis>,
        email: Option<Email>,
        parent_id: Option<String>,
    },
    /// A deal's stage as the CRM names it.
    Stage {
        deal: RecordRef,
        pipeline: Option<String>,
        stage_id: String,
        is_won: Option<bool>,
        is_closed: Option<bool>,
    },
    /// Deal facts; `None` = not mentioned by this event.
    DealFields {
        deal: RecordRef,
        pipeline: Option<String>,
        amount: Option<String>,
        currency: Option<String>,
        /// Salesforce `Opportunity.Type` (e.g. a renewal), see [`crate::config::RenewalSettings`].
        deal_type: Option<String>,
        /// Where the deal came from as the CRM says it (HubSpot `hs_analytics_source`,
        /// Salesforce `LeadSource`); `[channels]` maps it to a channel.
        crm_source: Option<String>,
    },
    /// A deal ↔ person association appeared or was removed.
    Associate {
        crm: Crm,
        deal_id: String,
        person_id: String,
        removed: bool,
    },
    /// Salesforce: the Opportunity's account; its contacts count as the deal's people.
    DealAccount {
        deal: RecordRef,
        account_id: String,
    },
    /// The CRM shows this value in the guarded referral-source property.
    GuardedValue {
        record: RecordRef,
        value: Option<String>,
        change_source: Option<String>,
    },
    Deleted {
        record: RecordRef,
    },
    Restored {
        record: RecordRef,
    },
    Merged {
        primary: RecordRef,
        merged_ids: Vec<String>,
    },
    /// HubSpot sent only an id: read the record (and its associations) through the API.
    NeedsRead {
        record: RecordRef,
    },
}

#[derive(Debug, Clone)]
pub enum Decoded {
    Product(ProductEvent),
    Crm { at: Millis, changes: Vec<CrmChange> },
    Ignore(String),
}

/// The HubSpot deal property naming where the deal came from ("Original Traffic Source").
pub const HUBSPOT_DEAL_SOURCE: &str = "hs_analytics_source";

/// The property/field names the decoder must recognise.
#[derive(Debug, Clone)]
pub struct GuardedNames {
    pub hubspot_referral_source: String,
    pub salesforce_referral_source: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

pub fn decode(event: &NewInboxEvent, names: &GuardedNames) -> Result<Decoded, DecodeError> {
    let at = event.occurred_at.unwrap_or(event.received_at);
    let json = || -> Result<Value, DecodeError> {
        serde_json::from_str(&event.payload)
            .map_err(|e| DecodeError(format!("stored payload is not JSON: {e}")))
    };
    let changes = match &event.source {
        EventSource::Product(_) => {
            return product::parse_product_event(event.payload.as_bytes())
                .map(Decoded::Product)
                .map_err(|e| DecodeError(e.to_string()));
        }
        EventSource::HubSpot => decode_hubspot(&event.event_type, &json()?, names)?,
        EventSource::HubSpotApi => {
            let requested = event
                .object_key
                .as_deref()
                .and_then(|key| key.rsplit(':').next());
            decode_hubspot_snapshot(&event.event_type, &json()?, requested, names)?
        }
        EventSource::Salesforce => {
            let json = json()?;
            let account = str_field(&json, "organization_id").unwrap_or_default();
            let sobject = str_field(&json, "sobject_type").unwrap_or_default();
            decode_salesforce(&sobject, &account, json.get("fields"), names)
        }
        EventSource::SalesforceCallout => {
            let json = json()?;
            let data = json.get("data").unwrap_or(&Value::Null);
            let sobject = str_field(data, "sobject_type")
                .or_else(|| data.get("attributes").and_then(|a| str_field(a, "type")))
                .unwrap_or_default();
            decode_salesforce(&sobject, "", Some(data), names)
        }
    };
    Ok(if changes.is_empty() {
        Decoded::Ignore(format!(
            "{} carries nothing the ledger tracks",
            event.event_type
        ))
    } else {
        Decoded::Crm { at, changes }
    })
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn hubspot_record(kind: RecordKind, id: String, account: &str) -> RecordRef {
    RecordRef {
        crm: Crm::HubSpot,
        kind,
        object_type: match kind {
            RecordKind::Person => "contact".into(),
            RecordKind::Deal => "deal".into(),
        },
        id,
        account: account.to_string(),
    }
}

fn hubspot_kind(object: &str) -> Option<RecordKind> {
    match object {
        "contact" => Some(RecordKind::Person),
        "deal" => Some(RecordKind::Deal),
        _ => None,
    }
}

fn decode_hubspot(
    event_type: &str,
    e: &Value,
    names: &GuardedNames,
) -> Result<Vec<CrmChange>, DecodeError> {
    if event_type == "workflow.webhook" {
        return Ok(decode_hubspot_workflow(e, names));
    }
    let (object, action) = event_type.split_once('.').unwrap_or((event_type, ""));
    let account = str_field(e, "portalId").unwrap_or_default();
    let object_id = str_field(e, "objectId");
    if action == "associationChange" {
        let kind = str_field(e, "associationType").unwrap_or_default();
        let (from, to) = (str_field(e, "fromObjectId"), str_field(e, "toObjectId"));
        let removed = e
            .get("associationRemoved")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let pair = match (kind.as_str(), from, to) {
            ("CONTACT_TO_DEAL", Some(c), Some(d)) => Some((d, c)),
            ("DEAL_TO_CONTACT", Some(d), Some(c)) => Some((d, c)),
            _ => None,
        };
        return Ok(pair
            .map(|(deal_id, person_id)| CrmChange::Associate {
                crm: Crm::HubSpot,
                deal_id,
                person_id,
                removed,
            })
            .into_iter()
            .collect());
    }
    let Some(kind) = hubspot_kind(object) else {
        return Ok(Vec::new());
    };
    let record = |id: String| hubspot_record(kind, id, &account);
    let occurred = e.get("occurredAt").and_then(Value::as_i64);
    Ok(match action {
        "creation" => {
            let Some(id) = object_id else {
                return Ok(Vec::new());
            };
            vec![
                CrmChange::Upsert {
                    record: record(id.clone()),
                    created_at: occurred,
                    email: None,
                    parent_id: None,
                },
                CrmChange::NeedsRead { record: record(id) },
            ]
        }
        "deletion" | "privacyDeletion" => object_id
            .map(|id| CrmChange::Deleted { record: record(id) })
            .into_iter()
            .collect(),
        "restore" => object_id
            .map(|id| CrmChange::Restored { record: record(id) })
            .into_iter()
            .collect(),
        "merge" => {
            let primary = str_field(e, "primaryObjectId").or(object_id);
            let mut merged_ids: Vec<String> = e
                .get("mergedObjectIds")
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|v| match v {
                            Value::Number(n) => Some(n.to_string()),
                            Value::String(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            // "In some cases a new object is created from the result of a merge": then the new
            // object survives, and the primary is merged into it like the others.
            let created = str_field(e, "newObjectId").filter(|new| Some(new) != primary.as_ref());
            let survivor = match (created.clone(), primary) {
                (Some(new), primary) => {
                    merged_ids.extend(primary);
                    new
                }
                (None, Some(primary)) => primary,
                (None, None) => return Ok(Vec::new()),
            };
            merged_ids.retain(|id| *id != survivor);
            let mut changes = vec![CrmChange::Merged {
                primary: record(survivor.clone()),
                merged_ids,
            }];
            // Nothing is known yet about a record the merge created: read it.
            if created.is_some() {
                changes.push(CrmChange::NeedsRead {
                    record: record(survivor),
                });
            }
            changes
        }
        "propertyChange" => {
            let Some(id) = object_id else {
                return Ok(Vec::new());
            };
            let name = str_field(e, "propertyName").unwrap_or_default();
            let value = str_field(e, "propertyValue").filter(|v| !v.is_empty());
            let change_source = str_field(e, "changeSource");
            hubspot_property(kind, record(id), &name, value, change_source, names)
        }
        _ => Vec::new(),
    })
}

fn hubspot_property(
    kind: RecordKind,
    record: RecordRef,
    name: &str,
    value: Option<String>,
    change_source: Option<String>,
    names: &GuardedNames,
) -> Vec<CrmChange> {
    if name == names.hubspot_referral_source {
        return vec![CrmChange::GuardedValue {
            record,
            value,
            change_source,
        }];
    }
    match (kind, name) {
        (RecordKind::Person, "email") => vec![CrmChange::Upsert {
            record,
            created_at: None,
            email: value.as_deref().and_then(Email::normalize),
            parent_id: None,
        }],
        (RecordKind::Deal, "dealstage") => value
            .map(|stage_id| CrmChange::Stage {
                deal: record,
                pipeline: None,
                stage_id,
                is_won: None,
                is_closed: None,
            })
            .into_iter()
            .collect(),
        (RecordKind::Deal, "pipeline" | "amount" | "deal_currency_code" | HUBSPOT_DEAL_SOURCE) => {
            vec![CrmChange::DealFields {
                pipeline: value.clone().filter(|_| name == "pipeline"),
                amount: value.clone().filter(|_| name == "amount"),
                currency: value.clone().filter(|_| name == "deal_currency_code"),
                deal_type: None,
                crm_source: value.filter(|_| name == HUBSPOT_DEAL_SOURCE),
                deal: record,
            }]
        }
        _ => Vec::new(),
    }
}

/// A property bag where values are plain or HubSpot's `{"value": …}` (workflow and legacy shapes).
fn hubspot_props(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(map)) = v {
        for (k, v) in map {
            let value = match v {
                Value::Object(inner) => inner.get("value").and_then(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            };
            if let Some(value) = value.filter(|s| !s.is_empty()) {
                out.insert(k.clone(), value);
            }
        }
    }
    out
}

/// A full record: a workflow body or an API read. Everything it says is applied.
fn snapshot_changes(
    kind: RecordKind,
    record: RecordRef,
    props: &BTreeMap<String, String>,
    names: &GuardedNames,
) -> Vec<CrmChange> {
    let mut changes = vec![CrmChange::Upsert {
        record: record.clone(),
        created_at: props.get("createdate").and_then(|v| parse_time(v)),
        email: props
            .get("email")
            .and_then(|e| Email::normalize(e))
            .filter(|_| kind == RecordKind::Person),
        parent_id: None,
    }];
    if kind == RecordKind::Deal {
        changes.push(CrmChange::DealFields {
            deal: record.clone(),
            pipeline: props.get("pipeline").cloned(),
            amount: props.get("amount").cloned(),
            currency: props.get("deal_currency_code").cloned(),
            deal_type: None,
            crm_source: props.get(HUBSPOT_DEAL_SOURCE).cloned(),
        });
        if let Some(stage_id) = props.get("dealstage") {
            changes.push(CrmChange::Stage {
                deal: record.clone(),
                pipeline: props.get("pipeline").cloned(),
                stage_id: stage_id.clone(),
                is_won: None,
                is_closed: None,
            });
        }
    }
    if props.contains_key(&names.hubspot_referral_source) {
        changes.push(CrmChange::GuardedValue {
            record,
            value: props.get(&names.hubspot_referral_source).cloned(),
            change_source: Some("SNAPSHOT".into()),
        });
    }
    changes
}

fn decode_hubspot_workflow(e: &Value, names: &GuardedNames) -> Vec<CrmChange> {
    let props = hubspot_props(e.get("properties"));
    let id = ["objectId", "hs_object_id", "vid", "id"]
        .iter()
        .find_map(|k| str_field(e, k))
        .or_else(|| props.get("hs_object_id").cloned());
    let Some(id) = id else { return Vec::new() };
    let kind = if props.contains_key("dealstage") || props.contains_key("dealname") {
        RecordKind::Deal
    } else if props.contains_key("email") || e.get("vid").is_some() {
        RecordKind::Person
    } else {
        return Vec::new();
    };
    let account = str_field(e, "portalId").unwrap_or_default();
    snapshot_changes(kind, hubspot_record(kind, id, &account), &props, names)
}

/// A record read back from the HubSpot API (`contact.snapshot` / `deal.snapshot`): `{"id",
/// "properties", "associations": {"contacts": {"results": [{"id"}]}}}`. HubSpot answers a read
/// of a merged-away id (`requested`) with the record it was merged into: that is a merge too.
fn decode_hubspot_snapshot(
    event_type: &str,
    e: &Value,
    requested: Option<&str>,
    names: &GuardedNames,
) -> Result<Vec<CrmChange>, DecodeError> {
    let object = event_type.split('.').next().unwrap_or_default();
    let Some(kind) = hubspot_kind(object) else {
        return Ok(Vec::new());
    };
    let id = str_field(e, "id").ok_or_else(|| DecodeError("snapshot without id".into()))?;
    let account = str_field(e, "portalId").unwrap_or_default();
    let record = hubspot_record(kind, id.clone(), &account);
    let mut changes = Vec::new();
    if let Some(merged) = requested.filter(|r| *r != id) {
        changes.push(CrmChange::Merged {
            primary: record.clone(),
            merged_ids: vec![merged.to_string()],
        });
    }
    changes.extend(snapshot_changes(
        kind,
        record,
        &hubspot_props(e.get("properties")),
        names,
    ));
    if kind == RecordKind::Deal {
        let contacts = e
            .pointer("/associations/contacts/results")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in contacts {
            if let Some(person_id) = str_field(&c, "id") {
                changes.push(CrmChange::Associate {
                    crm: Crm::HubSpot,
                    deal_id: id.clone(),
                    person_id,
                    removed: false,
                });
            }
        }
    }
    Ok(changes)
}

fn decode_salesforce(
    sobject: &str,
    account: &str,
    fields: Option<&Value>,
    names: &GuardedNames,
) -> Vec<CrmChange> {
    let kind = match sobject {
        "Contact" | "Lead" => RecordKind::Person,
        "Opportunity" => RecordKind::Deal,
        _ => return Vec::new(),
    };
    let empty = Value::Null;
    let fields = fields.unwrap_or(&empty);
    let field = |name: &str| str_field(fields, name).filter(|v| !v.is_empty());
    let Some(id) = field("Id") else {
        return Vec::new();
    };
    let record = RecordRef {
        crm: Crm::Salesforce,
        kind,
        object_type: sobject.to_string(),
        id: id.clone(),
        account: account.to_string(),
    };
    let mut changes = vec![CrmChange::Upsert {
        record: record.clone(),
        created_at: field("CreatedDate").and_then(|v| parse_time(&v)),
        email: field("Email")
            .and_then(|e| Email::normalize(&e))
            .filter(|_| kind == RecordKind::Person),
        parent_id: field("AccountId").filter(|_| kind == RecordKind::Person),
    }];
    if kind == RecordKind::Deal {
        let flag = |name: &str| field(name).map(|v| v.eq_ignore_ascii_case("true"));
        if let Some(stage_id) = field("StageName") {
            changes.push(CrmChange::Stage {
                deal: record.clone(),
                pipeline: None,
                stage_id,
                is_won: flag("IsWon"),
                is_closed: flag("IsClosed"),
            });
        }
        changes.push(CrmChange::DealFields {
            deal: record.clone(),
            pipeline: None,
            amount: field("Amount"),
            currency: field("CurrencyIsoCode"),
            deal_type: field("Type"),
            crm_source: field("LeadSource"),
        });
        if let Some(contact) = field("ContactId") {
            changes.push(CrmChange::Associate {
                crm: Crm::Salesforce,
                deal_id: id.clone(),
                person_id: contact,
                removed: false,
            });
        }
        if let Some(account_id) = field("AccountId") {
            changes.push(CrmChange::DealAccount {
                deal: record.clone(),
                account_id,
            });
        }
    }
    // A field present in the message (even as xsi:nil) is an observation of its current value.
    if fields.get(&names.salesforce_referral_source).is_some() {
        changes.push(CrmChange::GuardedValue {
            record,
            value: field(&names.salesforce_referral_source),
            change_source: None,
        });
    }
    changes
}

/// RFC 3339 or epoch milliseconds.
fn parse_time(v: &str) -> Option<Millis> {
    v.parse::<i64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(v)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> GuardedNames {
        GuardedNames {
            hubspot_referral_source: "referral_source".into(),
            salesforce_referral_source: "Referral_Source__c".into(),
        }
    }

    fn event(source: &str, event_type: &str, payload: &str) -> NewInboxEvent {
        NewInboxEvent {
            source: source.parse().unwrap(),
            dedupe_key: "k".into(),
            event_type: event_type.into(),
            object_key: None,
            occurred_at: Some(5),
            received_at: 9,
            meta: "{}".into(),
            payload: payload.into(),
            partition_no: 0,
        }
    }

    fn changes(e: &NewInboxEvent) -> Vec<CrmChange> {
        match decode(e, &names()).unwrap() {
            Decoded::Crm { changes, .. } => changes,
            other => panic!("expected CRM changes, got {other:?}"),
        }
    }

    #[test]
    fn hubspot_deal_stage_and_guarded_property_changes_are_recognised() {
        let stage = event(
            "hubspot",
            "deal.propertyChange",
            r#"{"objectId":7,"propertyName":"dealstage","propertyValue":"closedwon","portalId":62515,"occurredAt":5}"#,
        );
        let tamper = event(
            "hubspot",
            "contact.propertyChange",
            r#"{"objectId":8,"propertyName":"referral_source","propertyValue":"","changeSource":"CRM_UI"}"#,
        );

        let stage = changes(&stage);
        let tamper = changes(&tamper);

        assert!(
            matches!(&stage[0], CrmChange::Stage { deal, stage_id, .. } if deal.id == "7" && stage_id == "closedwon" && deal.account == "62515")
        );
        assert!(
            matches!(&tamper[0], CrmChange::GuardedValue { value: None, change_source: Some(s), .. } if s == "CRM_UI"),
            "an emptied field is a change to nothing"
        );
    }

    #[test]
    fn hubspot_associations_read_both_directions() {
        let a = event(
            "hubspot",
            "contact.associationChange",
            r#"{"associationType":"CONTACT_TO_DEAL","fromObjectId":1,"toObjectId":2}"#,
        );
        let b = event(
            "hubspot",
            "deal.associationChange",
            r#"{"associationType":"DEAL_TO_CONTACT","fromObjectId":2,"toObjectId":1,"associationRemoved":true}"#,
        );

        assert_eq!(
            changes(&a),
            vec![CrmChange::Associate {
                crm: Crm::HubSpot,
                deal_id: "2".into(),
                person_id: "1".into(),
                removed: false
            }]
        );
        assert_eq!(
            changes(&b),
            vec![CrmChange::Associate {
                crm: Crm::HubSpot,
                deal_id: "2".into(),
                person_id: "1".into(),
                removed: true
            }]
        );
    }

    #[test]
    fn hubspot_creation_asks_for_a_read_and_unrelated_properties_are_ignored() {
        let created = changes(&event(
            "hubspot",
            "deal.creation",
            r#"{"objectId":3,"occurredAt":4}"#,
        ));
        let other = decode(
            &event(
                "hubspot",
                "deal.propertyChange",
                r#"{"objectId":3,"propertyName":"dealname","propertyValue":"x"}"#,
            ),
            &names(),
        )
        .unwrap();

        assert!(matches!(
            &created[0],
            CrmChange::Upsert {
                created_at: Some(4),
                ..
            }
        ));
        assert!(
            matches!(&created[1], CrmChange::NeedsRead { record } if record.kind == RecordKind::Deal)
        );
        assert!(matches!(other, Decoded::Ignore(_)));
    }

    #[test]
    fn salesforce_opportunity_yields_stage_amount_contact_account_and_guarded_value() {
        let e = event(
            "salesforce",
            "salesforce.Opportunity",
            r#"{"organization_id":"00D","sobject_type":"Opportunity","fields":{"Id":"006A","StageName":"Closed Won","IsWon":"true","Amount":"120000.0","CurrencyIsoCode":"EUR","Type":"Renewal","LeadSource":"Partner Referral","ContactId":"003B","AccountId":"001C","Referral_Source__c":null}}"#,
        );

        let c = changes(&e);

        assert!(c.iter().any(|x| matches!(x, CrmChange::Stage { stage_id, is_won: Some(true), .. } if stage_id == "Closed Won")));
        assert!(c.iter().any(|x| matches!(x, CrmChange::DealFields { amount: Some(a), currency: Some(cur), deal_type: Some(t), crm_source: Some(src), .. } if a == "120000.0" && cur == "EUR" && t == "Renewal" && src == "Partner Referral")));
        assert!(c
            .iter()
            .any(|x| matches!(x, CrmChange::Associate { person_id, .. } if person_id == "003B")));
        assert!(c.iter().any(
            |x| matches!(x, CrmChange::DealAccount { account_id, .. } if account_id == "001C")
        ));
        assert!(
            c.iter()
                .any(|x| matches!(x, CrmChange::GuardedValue { value: None, .. })),
            "nil is an observed empty value"
        );
    }

    #[test]
    fn salesforce_contact_without_the_guarded_field_makes_no_tamper_observation() {
        let e = event(
            "salesforce",
            "salesforce.Contact",
            r#"{"organization_id":"00D","sobject_type":"Contact","fields":{"Id":"003A","Email":"Ana@Northwind.io","AccountId":"001C"}}"#,
        );

        let c = changes(&e);

        assert_eq!(c.len(), 1);
        assert!(
            matches!(&c[0], CrmChange::Upsert { email: Some(m), parent_id: Some(p), .. } if m.as_str() == "ana@northwind.io" && p == "001C")
        );
    }

    #[test]
    fn hubspot_snapshots_carry_associations() {
        let e = event(
            "hubspot-api",
            "deal.snapshot",
            r#"{"id":"9","properties":{"dealstage":"qualifiedtobuy","pipeline":"default","amount":"5000","hs_analytics_source":"ORGANIC_SEARCH"},"associations":{"contacts":{"results":[{"id":"1","type":"deal_to_contact"}]}}}"#,
        );
        let source_changed = changes(&event(
            "hubspot",
            "deal.propertyChange",
            r#"{"objectId":9,"propertyName":"hs_analytics_source","propertyValue":"PAID_SEARCH"}"#,
        ));

        let c = changes(&e);

        assert!(c.iter().any(|x| matches!(x, CrmChange::DealFields { crm_source: Some(s), .. } if s == "ORGANIC_SEARCH")));
        assert!(
            matches!(&source_changed[0], CrmChange::DealFields { crm_source: Some(s), amount: None, .. } if s == "PAID_SEARCH")
        );

        assert!(c
            .iter()
            .any(|x| matches!(x, CrmChange::Stage { pipeline: Some(p), .. } if p == "default")));
        assert!(c
            .iter()
            .any(|x| matches!(x, CrmChange::Associate { person_id, .. } if person_id == "1")));
    }

    #[test]
    fn a_merge_that_creates_a_record_makes_it_the_survivor_of_both() {
        let created = changes(&event(
            "hubspot",
            "contact.merge",
            r#"{"objectId":11,"primaryObjectId":11,"mergedObjectIds":[12],"newObjectId":13,"portalId":62515}"#,
        ));
        let kept = changes(&event(
            "hubspot",
            "deal.merge",
            r#"{"objectId":21,"primaryObjectId":21,"mergedObjectIds":[22],"newObjectId":21}"#,
        ));

        assert!(matches!(&created[0],
            CrmChange::Merged { primary, merged_ids } if primary.id == "13" && primary.account == "62515" && merged_ids == &["12", "11"]));
        assert!(matches!(&created[1], CrmChange::NeedsRead { record } if record.id == "13"));
        assert_eq!(created.len(), 2);
        assert_eq!(
            kept,
            vec![CrmChange::Merged {
                primary: hubspot_record(RecordKind::Deal, "21".into(), ""),
                merged_ids: vec!["22".into()],
            }]
        );
    }

    #[test]
    fn a_read_answered_by_another_record_is_a_merge_into_it() {
        let mut e = event(
            "hubspot-api",
            "contact.snapshot",
            r#"{"id":"13","properties":{"email":"a@x.io"}}"#,
        );
        e.object_key = Some("hubspot:contact:12".into());

        let c = changes(&e);

        assert!(matches!(&c[0],
            CrmChange::Merged { primary, merged_ids } if primary.id == "13" && merged_ids == &["12"]));
        assert!(
            matches!(&c[1], CrmChange::Upsert { record, email: Some(m), .. } if record.id == "13" && m.as_str() == "a@x.io")
        );
        e.object_key = Some("hubspot:contact:13".into());
        assert!(matches!(&changes(&e)[0], CrmChange::Upsert { .. }));
    }
}

//! `referral-sync crm setup`: create the HubSpot property group and properties, and check that the
//! Salesforce fields (with their types and pick-list values) and the Platform Event exist, printing
//! what was created, changed or is missing. Idempotent: what is right is left alone; a HubSpot
//! pick-list gains the options the config added (a status or a tier) and an older text property
//! becomes the pick-list it should be. Exit status 1 when something is missing or failed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Settings;
use crate::crm::fields::{referral_fields, ReferralField, ValueKind};
use crate::crm::hubspot::HubSpotClient;
use crate::crm::salesforce::{DescribedField, SalesforceClient};
use crate::crm::{http_client, CallError};

/// Runs setup; returns the report lines and whether everything is in place.
pub async fn run(settings: &Settings) -> (Vec<String>, bool) {
    let http = http_client(Duration::from_secs(settings.outbox.request_timeout_secs));
    let mut lines = Vec::new();
    let mut ok = true;
    if settings.hubspot.access_token.is_empty() {
        lines.push("hubspot: skipped (hubspot.access_token is empty)".into());
    } else {
        let client = HubSpotClient::new(
            http.clone(),
            &settings.hubspot.api_base_url,
            settings.hubspot.access_token.clone(),
        );
        ok &= hubspot(&client, settings, &mut lines).await;
    }
    let sf = &settings.salesforce;
    if sf.login_url.is_empty() || sf.client_id.is_empty() {
        lines.push("salesforce: skipped (salesforce.login_url / client_id are empty)".into());
    } else {
        let client = SalesforceClient::new(
            http,
            &sf.login_url,
            &sf.client_id,
            sf.client_secret.clone(),
            &sf.api_version,
        );
        ok &= salesforce(&client, settings, &mut lines).await;
    }
    (lines, ok)
}

async fn hubspot(client: &HubSpotClient, settings: &Settings, lines: &mut Vec<String>) -> bool {
    let names = &settings.hubspot.properties;
    let group = names.group.clone().unwrap_or_else(|| "referral".into());
    let mut ok = true;
    for object in ["contact", "deal"] {
        match client.ensure_group(object, &group, "Referral").await {
            Ok(created) => lines.push(format!(
                "hubspot {object}s: property group `{group}` {}",
                if created { "created" } else { "exists" }
            )),
            Err(e) => {
                lines.push(format!(
                    "hubspot {object}s: property group `{group}` FAILED: {e}"
                ));
                ok = false;
                continue;
            }
        }
        for field in referral_fields(names)
            .into_iter()
            .filter(|f| f.on.on_hubspot(object))
        {
            let outcome = hubspot_property(client, settings, object, &group, &field).await;
            let name = field.name;
            match outcome {
                Ok(Outcome::Done(what)) => {
                    lines.push(format!("hubspot {object}s: property `{name}` {what}"));
                }
                Ok(Outcome::Wrong(what)) => {
                    lines.push(format!("hubspot {object}s: property `{name}` {what}"));
                    ok = false;
                }
                Err(e) => {
                    lines.push(format!("hubspot {object}s: property `{name}` FAILED: {e}"));
                    ok = false;
                }
            }
        }
    }
    ok
}

/// What setup did about one property or field.
enum Outcome {
    /// In place now (created, updated, or already right): the sentence says which.
    Done(String),
    /// Present but not usable as it is; a person has to act.
    Wrong(String),
}

/// Create the property, or bring an existing pick-list's options up to date.
async fn hubspot_property(
    client: &HubSpotClient,
    settings: &Settings,
    object: &str,
    group: &str,
    field: &ReferralField<'_>,
) -> Result<Outcome, CallError> {
    let (kind, field_type) = field.kind.hubspot_type();
    let wanted = field.kind.options(settings);
    let Some(existing) = client.property(object, field.name).await? else {
        let mut definition = json!({"name": field.name, "label": field.label, "type": kind,
            "fieldType": field_type, "groupName": group});
        if kind == "enumeration" {
            definition["options"] = hubspot_options(&[], &wanted);
        }
        let created = client.create_property(object, &definition).await?;
        return Ok(Outcome::Done(
            if created { "created" } else { "exists" }.into(),
        ));
    };
    let text = |key: &str| existing.get(key).and_then(Value::as_str).unwrap_or("");
    let (has_kind, has_field_type) = (text("type"), text("fieldType"));
    if kind != "enumeration" {
        return Ok(if has_kind == kind {
            Outcome::Done("exists".into())
        } else {
            Outcome::Wrong(format!(
                "is {has_kind}/{has_field_type} but should be {kind}/{field_type}: change its field type in HubSpot's property settings"
            ))
        });
    }
    if has_kind != "enumeration" {
        // An older setup made it free text; every value the service wrote is one of the options.
        let changes = json!({"type": kind, "fieldType": field_type,
            "options": hubspot_options(&[], &wanted)});
        client.update_property(object, field.name, &changes).await?;
        return Ok(Outcome::Done(format!(
            "changed from {has_kind}/{has_field_type} to {kind}/{field_type}"
        )));
    }
    let current: Vec<Value> = existing
        .get("options")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let missing: Vec<&(String, String)> = wanted
        .iter()
        .filter(|(value, _)| {
            !current
                .iter()
                .any(|o| o.get("value").and_then(Value::as_str) == Some(value))
        })
        .collect();
    if missing.is_empty() {
        return Ok(Outcome::Done("exists".into()));
    }
    let added: Vec<&str> = missing.iter().map(|(value, _)| value.as_str()).collect();
    let missing: Vec<(String, String)> = missing.into_iter().cloned().collect();
    // The options list is replaced as a whole, so the ones already there (maybe added by hand)
    // go back in first.
    let changes = json!({"options": hubspot_options(&current, &missing)});
    client.update_property(object, field.name, &changes).await?;
    Ok(Outcome::Done(format!(
        "options added: {}",
        added.join(", ")
    )))
}

/// `current` options as HubSpot returned them, then `added` ones after them.
fn hubspot_options(current: &[Value], added: &[(String, String)]) -> Value {
    let mut options = current.to_vec();
    let first = options.len();
    options.extend(added.iter().enumerate().map(|(i, (value, label))| {
        json!({"label": label, "value": value, "displayOrder": first + i, "hidden": false})
    }));
    Value::Array(options)
}

async fn salesforce(
    client: &SalesforceClient,
    settings: &Settings,
    lines: &mut Vec<String>,
) -> bool {
    let names = &settings.salesforce.fields;
    let mut ok = true;
    for sobject in ["Contact", "Lead", "Opportunity"] {
        let described = match client.describe(sobject).await {
            Ok(f) => f,
            Err(e) => {
                lines.push(format!("salesforce {sobject}: could not describe: {e}"));
                ok = false;
                continue;
            }
        };
        let mut problems = Vec::new();
        for field in referral_fields(names)
            .into_iter()
            .filter(|f| f.on.on_salesforce(sobject))
        {
            if let Some(problem) = salesforce_field(settings, &field, &described) {
                problems.push(problem);
            }
        }
        if problems.is_empty() {
            lines.push(format!("salesforce {sobject}: all referral fields exist"));
        } else {
            ok = false;
            for problem in problems {
                lines.push(format!(
                    "salesforce {sobject}: {problem} (fix it in Setup → Object Manager)"
                ));
            }
        }
    }
    let event = names.reward_event.clone();
    match client.describe(&event).await {
        Ok(_) => lines.push(format!("salesforce {event}: platform event exists")),
        Err(CallError::Permanent {
            status: Some(404), ..
        }) => {
            ok = false;
            lines.push(format!(
                "salesforce {event}: MISSING platform event (create it in Setup → Platform Events)"
            ));
        }
        Err(e) => {
            ok = false;
            lines.push(format!("salesforce {event}: could not describe: {e}"));
        }
    }
    ok
}

/// What is wrong with one field in the org, if anything.
fn salesforce_field(
    settings: &Settings,
    field: &ReferralField<'_>,
    described: &[DescribedField],
) -> Option<String> {
    let expected = field.kind.salesforce_type();
    let name = field.name;
    let Some(found) = described.iter().find(|d| d.name.eq_ignore_ascii_case(name)) else {
        return Some(format!("MISSING field {name} ({expected})"));
    };
    let accepted: &[&str] = match field.kind {
        ValueKind::Text => &["string", "textarea"],
        // A Currency field takes the same JSON numbers.
        ValueKind::Number => &["double", "currency"],
        ValueKind::DateTime => &["datetime"],
        ValueKind::RewardStatus | ValueKind::Tier | ValueKind::Moment => &["picklist"],
    };
    if !accepted.contains(&found.kind.as_str()) {
        return Some(format!(
            "WRONG TYPE {name} is {} but should be {expected}",
            found.kind
        ));
    }
    let missing: Vec<String> = field
        .kind
        .options(settings)
        .into_iter()
        .map(|(value, _)| value)
        .filter(|value| !found.picklist_values.contains(value))
        .collect();
    (!missing.is_empty())
        .then(|| format!("MISSING picklist values on {name}: {}", missing.join(", ")))
}

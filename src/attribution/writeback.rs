//! The CRM writes the ledger causes, as outbox rows: referral context on linked records, restores
//! of a tampered referral source, advocacy-moment marks on contacts, and read jobs for records
//! HubSpot announced by id only. Property
//! names come from `hubspot.properties` / `salesforce.fields`. Delivery is the outbox worker's job.

use std::collections::BTreeMap;

use serde_json::json;

use crate::clock::{to_rfc3339, Millis};
use crate::config::{CrmFieldNames, Settings};
use crate::domain::moment::MomentKind;
use crate::processing::decode::RecordRef;
use crate::store::{Attribution, CrmRecord, NewOutbox, StoreError, Tx};

pub const UPDATE_PROPERTIES: &str = "update_properties";
pub const READ_RECORD: &str = "read_record";

fn names<'a>(settings: &'a Settings, crm: &str) -> &'a CrmFieldNames {
    if crm == "hubspot" {
        &settings.hubspot.properties
    } else {
        &settings.salesforce.fields
    }
}

/// The referral-context write for a linked record (SPEC §5, first row), reading the referrer and
/// their successes inside `tx`.
pub async fn context_write(
    tx: &mut Tx,
    settings: &Settings,
    record: &CrmRecord,
    attribution: &Attribution,
) -> Result<NewOutbox, StoreError> {
    let (name, successes) = match &attribution.referrer_code {
        Some(code) => (
            tx.referrer(code).await?.and_then(|r| r.name),
            tx.successful_referrals(code).await?,
        ),
        None => (None, 0),
    };
    Ok(context_properties(
        settings,
        record,
        attribution,
        name.as_deref(),
        successes,
    ))
}

/// The referral-context write, given the referrer's name and successful referrals so far.
pub fn context_properties(
    settings: &Settings,
    record: &CrmRecord,
    attribution: &Attribution,
    referrer_name: Option<&str>,
    successes: i64,
) -> NewOutbox {
    let n = names(settings, &record.crm);
    let tier = match (
        &attribution.referrer_code,
        attribution
            .market
            .as_ref()
            .and_then(|m| settings.programs.get(m)),
    ) {
        (Some(_), Some(program)) => program
            .tiers
            .iter()
            .rev()
            .find(|t| i64::from(t.min_successful) <= successes)
            .map(|t| t.name.clone()),
        _ => None,
    };
    // HubSpot datetime properties take epoch milliseconds; Salesforce DateTime fields ISO 8601.
    let first_touch = if record.crm == "hubspot" {
        attribution.first_touch_at.to_string()
    } else {
        to_rfc3339(attribution.first_touch_at)
    };
    let referred_by = referrer_name
        .map(str::to_string)
        .or_else(|| attribution.referrer_code.clone());
    let properties: BTreeMap<String, String> = [
        (&n.referral_source, attribution.source.clone()),
        (&n.referral_code, attribution.referrer_code.clone()),
        (&n.referred_by, referred_by),
        (&n.referrer_tier, tier),
        (&n.referral_market, attribution.market.clone()),
        (&n.referral_first_touch_at, Some(first_touch)),
    ]
    .into_iter()
    .map(|(name, value)| (name.clone(), value.unwrap_or_default()))
    .collect();
    update_properties(record, &properties)
}

/// Put the recorded referral source back (tamper guard).
pub fn restore_write(settings: &Settings, record: &CrmRecord, recorded: &str) -> NewOutbox {
    let field = names(settings, &record.crm).referral_source.clone();
    update_properties(
        record,
        &[(field, recorded.to_string())].into_iter().collect(),
    )
}

/// Mark a contact as a good moment to ask for a referral: which moment, and when.
pub fn ask_write(
    settings: &Settings,
    contact: &CrmRecord,
    kind: MomentKind,
    at: Millis,
) -> NewOutbox {
    let n = names(settings, &contact.crm);
    // HubSpot datetime properties take epoch milliseconds; Salesforce DateTime fields ISO 8601.
    let at = if contact.crm == "hubspot" {
        at.to_string()
    } else {
        to_rfc3339(at)
    };
    let properties = [
        (n.ask_moment.clone(), kind.as_str().to_string()),
        (n.ask_at.clone(), at),
    ];
    update_properties(contact, &properties.into_iter().collect())
}

/// Set properties (HubSpot) or fields (Salesforce) on one record.
pub fn update_properties(record: &CrmRecord, properties: &BTreeMap<String, String>) -> NewOutbox {
    NewOutbox {
        crm: record.crm.clone(),
        account: record.account.clone(),
        object_type: record.object_type.clone(),
        object_id: record.object_id.clone(),
        kind: UPDATE_PROPERTIES.into(),
        payload: json!({ "properties": properties }).to_string(),
    }
}

/// Read a record (and, for deals, its contact associations) through the CRM API.
pub fn read_record(record: &RecordRef) -> NewOutbox {
    NewOutbox {
        crm: record.crm.as_str().into(),
        account: record.account.clone(),
        object_type: record.object_type.clone(),
        object_id: record.id.clone(),
        kind: READ_RECORD.into(),
        payload: "{}".into(),
    }
}

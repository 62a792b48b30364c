//! The CRM writes the ledger causes, as outbox rows: referral context on linked records, restores
//! of a tampered referral source, advocacy-moment marks on contacts, and read jobs for records
//! HubSpot announced by id only. Property
//! names come from `hubspot.properties` / `salesforce.fields`. Delivery is the outbox worker's job.

use std::collections::BTreeMap;

use crate::clock::{to_rfc3339, Millis};
use crate::config::Settings;
use crate::domain::moment::MomentKind;
use crate::domain::Crm;
use crate::outbox::CrmCommand;
use crate::processing::decode::RecordRef;
use crate::store::{Attribution, CrmRecord, NewOutbox, StoreError, Tx};

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
            tx.referrer(code).await?.and_then(|r| r.facts.name),
            crate::store::rule_count(tx.successful_referrals(code).await?)?,
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
/// `referrer_tier` is the tier those successes reach, or the first tier before the first one.
pub fn context_properties(
    settings: &Settings,
    record: &CrmRecord,
    attribution: &Attribution,
    referrer_name: Option<&str>,
    successes: u32,
) -> NewOutbox {
    let n = settings.field_names(record.crm);
    let tier = match (
        &attribution.referrer_code,
        attribution
            .market
            .as_ref()
            .and_then(|m| settings.programs.get(m)),
    ) {
        // Before the referrer's first success: the tier they would have with it, the first one,
        // so the field is never blank on a referred record.
        (Some(_), Some(program)) => crate::rewards::calculate::tier_for(&program.tiers, successes)
            .or_else(|| program.tiers.iter().min_by_key(|t| t.min_successful))
            .map(|t| t.name.clone()),
        _ => None,
    };
    // HubSpot datetime properties take epoch milliseconds; Salesforce DateTime fields ISO 8601.
    let first_touch = match record.crm {
        Crm::HubSpot => attribution.first_touch_at.to_string(),
        Crm::Salesforce => to_rfc3339(attribution.first_touch_at),
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
    CrmCommand::update(properties).on(record)
}

/// Put the recorded referral source back (tamper guard).
pub fn restore_write(settings: &Settings, record: &CrmRecord, recorded: &str) -> NewOutbox {
    let field = settings.field_names(record.crm).referral_source.clone();
    CrmCommand::update([(field, recorded.to_string())].into_iter().collect()).on(record)
}

/// Mark a contact as a good moment to ask for a referral: which moment, and when.
pub fn ask_write(
    settings: &Settings,
    contact: &CrmRecord,
    kind: MomentKind,
    at: Millis,
) -> NewOutbox {
    let n = settings.field_names(contact.crm);
    // HubSpot datetime properties take epoch milliseconds; Salesforce DateTime fields ISO 8601.
    let at = match contact.crm {
        Crm::HubSpot => at.to_string(),
        Crm::Salesforce => to_rfc3339(at),
    };
    let properties = [
        (n.ask_moment.clone(), kind.as_str().to_string()),
        (n.ask_at.clone(), at),
    ];
    CrmCommand::update(properties.into_iter().collect()).on(contact)
}

/// Read a record (and, for deals, its contact associations) through the CRM API.
pub fn read_record(record: &RecordRef) -> NewOutbox {
    CrmCommand::ReadRecord {}.on_object(
        record.crm,
        &record.account,
        &record.object_type,
        &record.id,
    )
}

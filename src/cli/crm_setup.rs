//! `referral-sync crm setup`: create the HubSpot property group and properties (idempotent: what
//! exists is left alone) and check that the Salesforce fields and Platform Event exist, printing
//! what was created and what is missing. Exit status 1 when something is missing or failed.

use std::time::Duration;

use serde_json::json;

use crate::config::{CrmFieldNames, Settings};
use crate::crm::hubspot::HubSpotClient;
use crate::crm::salesforce::SalesforceClient;
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
        ok &= hubspot(&client, &settings.hubspot.properties, &mut lines).await;
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
        ok &= salesforce(&client, &sf.fields, &mut lines).await;
    }
    (lines, ok)
}

/// (name, label, HubSpot type, fieldType, deals only)
fn property_definitions(
    n: &CrmFieldNames,
) -> Vec<(&str, &'static str, &'static str, &'static str, bool)> {
    vec![
        (
            &n.referral_source,
            "Referral source",
            "string",
            "text",
            false,
        ),
        (&n.referral_code, "Referral code", "string", "text", false),
        (&n.referred_by, "Referred by", "string", "text", false),
        (&n.referrer_tier, "Referrer tier", "string", "text", false),
        (
            &n.referral_market,
            "Referral market",
            "string",
            "text",
            false,
        ),
        (
            &n.referral_first_touch_at,
            "Referral first touch",
            "datetime",
            "date",
            false,
        ),
        (
            &n.reward_status,
            "Referral reward status",
            "string",
            "text",
            true,
        ),
        (
            &n.reward_amount,
            "Referral reward amount",
            "number",
            "number",
            true,
        ),
        (
            &n.reward_currency,
            "Referral reward currency",
            "string",
            "text",
            true,
        ),
        (
            &n.reward_hold_until,
            "Referral reward hold until",
            "datetime",
            "date",
            true,
        ),
    ]
}

async fn hubspot(client: &HubSpotClient, names: &CrmFieldNames, lines: &mut Vec<String>) -> bool {
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
        for (name, label, kind, field_type, deals_only) in property_definitions(names) {
            if deals_only && object != "deal" {
                continue;
            }
            let definition = json!({"name": name, "label": label, "type": kind, "fieldType": field_type, "groupName": group});
            match client.ensure_property(object, &definition).await {
                Ok(created) => lines.push(format!(
                    "hubspot {object}s: property `{name}` {}",
                    if created { "created" } else { "exists" }
                )),
                Err(e) => {
                    lines.push(format!("hubspot {object}s: property `{name}` FAILED: {e}"));
                    ok = false;
                }
            }
        }
    }
    ok
}

async fn salesforce(
    client: &SalesforceClient,
    names: &CrmFieldNames,
    lines: &mut Vec<String>,
) -> bool {
    let mut ok = true;
    for sobject in ["Contact", "Lead", "Opportunity"] {
        let fields = match client.describe(sobject).await {
            Ok(f) => f,
            Err(e) => {
                lines.push(format!("salesforce {sobject}: could not describe: {e}"));
                ok = false;
                continue;
            }
        };
        let missing: Vec<&str> = property_definitions(names)
            .into_iter()
            .filter(|(_, _, _, _, deals_only)| !deals_only || sobject == "Opportunity")
            .map(|(name, ..)| name)
            .filter(|name| !fields.iter().any(|f| f == name))
            .collect();
        if missing.is_empty() {
            lines.push(format!("salesforce {sobject}: all referral fields exist"));
        } else {
            ok = false;
            lines.push(format!(
                "salesforce {sobject}: MISSING fields {} (create them in Setup → Object Manager)",
                missing.join(", ")
            ));
        }
    }
    let event = names
        .reward_event
        .clone()
        .unwrap_or_else(|| "Referral_Reward__e".into());
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

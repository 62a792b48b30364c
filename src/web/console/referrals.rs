//! Referrals (`/console/referrals`, filtered and paged like the API's list) and one referral's
//! timeline (`/console/referrals/{id}`): every touch including the refused claims, the linked CRM
//! records with links into HubSpot and Salesforce, stage changes, tamper restores, rewards and
//! the audit, in time order — from [`crate::routes::admin::referrals::referral_story`], the API's
//! story of the same referral.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{Chrome, ConsoleUser, Section};
use crate::clock::Millis;
use crate::config::Settings;
use crate::domain::market::Market;
use crate::domain::Crm;
use crate::routes::admin::referrals::referral_story;
use crate::startup::AppState;
use crate::store::{CrmRecord, Referral, ReferralFilter};
use crate::web::{format_money, format_time, render, WebError};

const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct ReferralsQuery {
    pub market: Option<String>,
    pub source: Option<String>,
    pub referrer: Option<String>,
    pub after: Option<String>,
}

pub struct ReferralRow {
    pub id: String,
    pub email: String,
    pub referrer: String,
    pub source: String,
    pub market: String,
    pub first_touch: String,
    pub progress: &'static str,
}

fn progress(r: &Referral) -> &'static str {
    if r.won_at.is_some() {
        "won"
    } else if r.qualified_at.is_some() {
        "qualified"
    } else if r.signed_up_at.is_some() {
        "signed up"
    } else {
        "referred"
    }
}

#[derive(Template)]
#[template(path = "console/templates/referrals.html")]
struct ReferralsPage {
    chrome: Chrome,
    market: String,
    source: String,
    referrer: String,
    rows: Vec<ReferralRow>,
    next: Option<String>,
}

fn given(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

/// `GET /console/referrals?market=&source=&referrer=&after=`.
pub async fn get_referrals(
    user: ConsoleUser,
    query: web::Query<ReferralsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let market = given(&query.market)
        .map(|m| Market::parse(&m).map(Market::into_string))
        .transpose()
        .map_err(|e| WebError::Invalid(format!("market {e}")))?;
    let source = given(&query.source);
    if let Some(s) = &source {
        if !crate::attribution::overrides::SOURCES.contains(&s.as_str()) {
            return Err(WebError::Invalid(format!(
                "source must be one of {}",
                crate::attribution::overrides::SOURCES.join(", ")
            )));
        }
    }
    let filter = ReferralFilter {
        market: market.clone(),
        source: source.clone(),
        referrer_code: given(&query.referrer),
        since: None,
    };
    let referrals = state
        .store
        .list_referrals(&filter, given(&query.after).as_deref(), PAGE)
        .await?;
    let next = (referrals.len() as i64 == PAGE)
        .then(|| referrals.last())
        .flatten()
        .map(|last| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in [
                ("market", &filter.market),
                ("source", &filter.source),
                ("referrer", &filter.referrer_code),
            ] {
                if let Some(v) = value {
                    q.append_pair(name, v);
                }
            }
            q.append_pair("after", last.id());
            format!("/console/referrals?{}", q.finish())
        });
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "–".into());
    render(&ReferralsPage {
        chrome: Chrome::new(Section::Referrals, &user),
        market: market.unwrap_or_default(),
        source: source.unwrap_or_default(),
        referrer: filter.referrer_code.clone().unwrap_or_default(),
        rows: referrals
            .iter()
            .map(|r| ReferralRow {
                id: r.id().to_string(),
                email: r.email().to_string(),
                referrer: dash(&r.attribution().referrer_code),
                source: dash(&r.attribution().source),
                market: dash(&r.attribution().market),
                first_touch: format_time(r.attribution().first_touch_at),
                progress: progress(r),
            })
            .collect(),
        next,
    })
}

/// One entry of a referral's timeline.
pub struct Moment {
    pub at: Millis,
    pub when: String,
    /// CSS class: `touch`, `refused`, `record`, `stage`, `reward`, `tamper`, `audit`.
    pub kind: &'static str,
    pub title: String,
    pub detail: String,
}

/// A linked CRM record with where it opens in its CRM.
pub struct RecordView {
    pub label: String,
    pub kind: String,
    pub stage: String,
    pub amount: String,
    pub linked: String,
    pub href: Option<String>,
}

pub struct RewardView {
    pub beneficiary: String,
    pub amount: String,
    pub status: String,
    pub hold_until: String,
    pub deal: String,
}

#[derive(Template)]
#[template(path = "console/templates/referral.html")]
struct TimelinePage {
    chrome: Chrome,
    referral: Referral,
    first_touch: String,
    moments: Vec<Moment>,
    records: Vec<RecordView>,
    rewards: Vec<RewardView>,
}

/// Where a CRM record opens: HubSpot's record page (by portal id and object type) or
/// Salesforce's Lightning record page. `None` when the portal is not known.
pub fn record_href(settings: &Settings, record: &CrmRecord) -> Option<String> {
    let id = url::form_urlencoded::byte_serialize(record.object_id.as_bytes()).collect::<String>();
    match record.crm {
        Crm::HubSpot => {
            let object = match record.object_type.as_str() {
                "contact" => "0-1",
                "company" => "0-2",
                "deal" => "0-3",
                _ => return None,
            };
            if record.account.is_empty() || !record.account.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(format!(
                "{}/contacts/{}/record/{object}/{id}",
                settings.console.hubspot_app_url.trim_end_matches('/'),
                record.account
            ))
        }
        Crm::Salesforce => {
            let base = [
                &settings.console.salesforce_app_url,
                &settings.salesforce.login_url,
            ]
            .into_iter()
            .find(|u| !u.is_empty())?;
            if !record
                .object_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return None;
            }
            Some(format!(
                "{}/lightning/r/{}/{id}/view",
                base.trim_end_matches('/'),
                record.object_type
            ))
        }
    }
}

fn audit_title(action: &str) -> (&'static str, String) {
    let (kind, words) = match action {
        "reward_created" => ("reward", "Reward created"),
        "reward_eligible" => ("reward", "Reward eligible: the hold ended"),
        "reward_approved" => ("reward", "Reward approved"),
        "reward_rejected" => ("reward", "Reward rejected"),
        "reward_paid" => ("reward", "Reward marked paid"),
        "reward_reversed" => ("reward", "Reward reversed: the deal left the success stage"),
        "reward_reinstated" => ("reward", "Reward reinstated: the deal reached the success stage again"),
        "reward_withdrawn" => ("reward", "Reward withdrawn"),
        "reward_not_eligible" => ("reward", "No reward: the deal is not eligible"),
        "reward_moved" => ("reward", "Reward moved to the surviving deal"),
        "tamper_restored" => (
            "tamper",
            "Tamper restored: the CRM's referral source was changed; the recorded value is written back",
        ),
        "attribution_override" => ("audit", "Attribution overridden by an admin"),
        "deal_relinked" => ("audit", "Deal relinked to an earlier first touch"),
        _ => return ("audit", action.replace('_', " ")),
    };
    (kind, words.to_string())
}

fn record_label(r: &CrmRecord) -> String {
    format!("{} {} {}", r.crm.display_name(), r.object_type, r.object_id)
}

/// `GET /console/referrals/{id}`.
pub async fn get_referral(
    user: ConsoleUser,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let story = referral_story(&state.store, &id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no referral {id}")))?;
    let mut moments = Vec::new();
    let mut moment = |at: Millis, kind: &'static str, title: String, detail: String| {
        moments.push(Moment {
            at,
            when: format_time(at),
            kind,
            title,
            detail,
        })
    };
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "–".into());
    for t in story.touches.iter().map(|t| &t.touch) {
        let claim = format!(
            "{} via {} in {} ({})",
            or_dash(&t.referrer_code),
            or_dash(&t.source),
            or_dash(&t.market),
            t.kind
        );
        let (kind, title) = match t.outcome.as_str() {
            "first_touch" => ("touch", "First touch recorded".to_string()),
            "kept_original" => (
                "refused",
                "Later claim refused: the first touch is kept".to_string(),
            ),
            "override" => ("audit", "Attribution changed by an admin".to_string()),
            other => ("touch", format!("Touch ({other})")),
        };
        moment(t.occurred_at, kind, title, claim);
    }
    for r in &story.records {
        if let Some(at) = r.linked_at {
            moment(
                at,
                "record",
                format!("Linked {}", record_label(r)),
                r.email.clone().unwrap_or_default(),
            );
        }
    }
    for s in &story.stage_history {
        moment(
            s.occurred_at,
            "stage",
            format!(
                "Deal {} at stage {}",
                s.deal_id,
                s.stage.as_deref().unwrap_or("unmapped")
            ),
            format!(
                "CRM stage {}{}",
                s.stage_id,
                s.pipeline
                    .as_deref()
                    .map(|p| format!(" in pipeline {p}"))
                    .unwrap_or_default()
            ),
        );
    }
    for entry in &story.audit {
        let a = &entry.record;
        let (kind, title) = audit_title(&a.action);
        let mut detail = format!("by {}", a.actor);
        match (&a.old_value, &a.new_value) {
            (Some(old), Some(new)) => detail.push_str(&format!(" · {old} → {new}")),
            (None, Some(new)) => detail.push_str(&format!(" · {new}")),
            _ => {}
        }
        if let Some(reason) = &a.reason {
            detail.push_str(&format!(" · reason: {reason}"));
        }
        moment(entry.at, kind, title, detail);
    }
    moments.sort_by_key(|m| m.at);
    let records = story
        .records
        .iter()
        .map(|r| RecordView {
            label: record_label(r),
            kind: r.object_type.clone(),
            stage: or_dash(&r.stage),
            amount: match (&r.amount, &r.currency) {
                (Some(a), Some(c)) => format!("{a} {c}"),
                (Some(a), None) => a.clone(),
                _ => "–".into(),
            },
            linked: r.linked_at.map(format_time).unwrap_or_else(|| "–".into()),
            href: record_href(&state.settings, r),
        })
        .collect();
    let rewards = story
        .rewards
        .iter()
        .map(|w| {
            let amount: rust_decimal::Decimal = w.line.amount.parse().map_err(|e| {
                WebError::Internal(anyhow::anyhow!(
                    "reward {} amount `{}`: {e}",
                    w.id,
                    w.line.amount
                ))
            })?;
            Ok(RewardView {
                beneficiary: w.line.beneficiary.to_string(),
                amount: format_money(&w.line.currency, amount),
                status: w.line.status.as_str().replace('_', " "),
                hold_until: w
                    .line
                    .hold_until
                    .map(format_time)
                    .unwrap_or_else(|| "–".into()),
                deal: format!("{} {}", w.line.crm, w.line.deal_id),
            })
        })
        .collect::<Result<_, WebError>>()?;
    render(&TimelinePage {
        chrome: Chrome::new(Section::Referrals, &user),
        first_touch: format_time(story.referral.attribution().first_touch_at),
        referral: story.referral,
        moments,
        records,
        rewards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(crm: &str, object_type: &str, id: &str, account: &str) -> CrmRecord {
        CrmRecord::bare(
            crate::store::RecordKey::new(crm.parse().unwrap(), object_type, id),
            account,
        )
    }

    #[test]
    fn records_link_into_their_crm() {
        let mut settings = crate::config::Settings::shipped_defaults();
        assert_eq!(
            record_href(&settings, &record("hubspot", "deal", "21", "62515")).as_deref(),
            Some("https://app.hubspot.com/contacts/62515/record/0-3/21")
        );
        assert_eq!(
            record_href(&settings, &record("hubspot", "contact", "11", "62515")).as_deref(),
            Some("https://app.hubspot.com/contacts/62515/record/0-1/11")
        );
        assert_eq!(
            record_href(&settings, &record("hubspot", "deal", "21", "")),
            None,
            "no portal id, no link"
        );
        assert_eq!(
            record_href(
                &settings,
                &record("salesforce", "Opportunity", "006x", "00D")
            ),
            None,
            "no Salesforce URL configured"
        );
        settings.salesforce.login_url = "https://acme.my.salesforce.com/".into();
        assert_eq!(
            record_href(
                &settings,
                &record("salesforce", "Opportunity", "006x", "00D")
            )
            .as_deref(),
            Some("https://acme.my.salesforce.com/lightning/r/Opportunity/006x/view")
        );
    }
}

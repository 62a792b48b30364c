//! The reward lifecycle around the pure calculation: evaluate once when a linked deal reaches its
//! program's success stage, reverse while the hold runs if the deal leaves it, release holds when
//! their time comes (driven by the injected clock), and apply admin decisions. Every change is
//! audited and queues its CRM writes in the same transaction.

use std::collections::{BTreeMap, HashSet};

use rust_decimal::Decimal;
use serde_json::json;

use super::calculate::{self, DealFacts, Evaluation, InitialStatus, RefereeFacts, ReferrerFacts};
use crate::clock::{to_rfc3339, Millis, DAY};
use crate::config::{CrmFieldNames, ProgramSettings, Settings};
use crate::domain::reward::{Beneficiary, RewardStatus};
use crate::domain::stage::CanonicalStage;
use crate::store::{
    CrmRecord, NewAudit, NewOutbox, NewReward, Referral, Reward, Store, StoreError, Tx,
};

pub const CREATE_NOTE: &str = "create_note";
pub const PUBLISH_EVENT: &str = "publish_event";

/// The program that applies to a referral, with the market that chose it.
pub fn program_for<'a>(
    settings: &'a Settings,
    referral: &Referral,
    referrer_market: Option<&str>,
) -> Option<(String, &'a ProgramSettings)> {
    let market = match settings.rewards.program_by.as_str() {
        "referrer_market" => referrer_market
            .map(str::to_string)
            .or(referral.market.clone()),
        _ => referral
            .market
            .clone()
            .or(referrer_market.map(str::to_string)),
    }
    .unwrap_or_else(|| settings.rewards.default_market.clone());
    settings.programs.get(&market).map(|p| (market, p))
}

/// A linked deal's current stage changed to `stage` at `at`.
pub async fn on_deal_stage(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    stage: CanonicalStage,
    at: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    let Some(referral_id) = deal.referral_id.as_deref() else {
        return Ok(());
    };
    let Some(referral) = tx.referral(referral_id).await? else {
        return Ok(());
    };
    let referrer = match &referral.referrer_code {
        Some(code) => tx.referrer(code).await?,
        None => None,
    };
    let Some((market, program)) = program_for(
        settings,
        &referral,
        referrer.as_ref().and_then(|r| r.market.as_deref()),
    ) else {
        return Ok(());
    };
    let success: CanonicalStage = program.success_stage.parse().unwrap_or(CanonicalStage::Won);
    let existing = tx.deal_rewards(&deal.crm, &deal.object_id).await?;
    if stage == success {
        if existing.is_empty() {
            evaluate(
                tx,
                settings,
                deal,
                &referral,
                referrer.as_ref(),
                &market,
                program,
                at,
                now,
            )
            .await?;
        }
        for r in existing.iter().filter(|r| r.status == "reversed") {
            let hold = at + i64::from(program.hold_days) * DAY;
            if let Some(r) = tx
                .transition_reward(&r.id, &["reversed"], "pending", None, Some(hold), now)
                .await?
            {
                record(
                    tx,
                    settings,
                    deal,
                    &r,
                    "reward_reinstated",
                    "system",
                    Some("the deal reached the success stage again"),
                    now,
                )
                .await?;
            }
        }
    } else {
        // Left the success stage: a reward whose hold is still running (or awaiting review) is off.
        for r in existing
            .iter()
            .filter(|r| matches!(r.status.as_str(), "pending" | "needs_review"))
        {
            if let Some(r) = tx
                .transition_reward(
                    &r.id,
                    &["pending", "needs_review"],
                    "reversed",
                    None,
                    None,
                    now,
                )
                .await?
            {
                let why = format!("the deal moved to {stage} during the hold");
                record(
                    tx,
                    settings,
                    deal,
                    &r,
                    "reward_reversed",
                    "system",
                    Some(&why),
                    now,
                )
                .await?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn evaluate(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    referral: &Referral,
    referrer: Option<&crate::store::Referrer>,
    market: &str,
    program: &ProgramSettings,
    at: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    let code = referral.referrer_code.clone().unwrap_or_default();
    let fraud = &settings.fraud;
    let deal_facts = DealFacts {
        amount: deal
            .amount
            .as_deref()
            .and_then(|a| a.trim().parse::<Decimal>().ok()),
        currency: deal.currency.clone(),
        won_at: at,
    };
    let referee = RefereeFacts {
        email: referral.email.clone(),
        first_touch_at: referral.first_touch_at,
        signup_ip: referral.signup_ip.as_deref().and_then(|ip| ip.parse().ok()),
        known_to_crm_before_first_touch: tx
            .person_known_before(&referral.email, referral.first_touch_at)
            .await?,
    };
    // Only referees near this one in time can share its IP (the rule's window), so a referrer's
    // whole history is never read.
    let ip_window = i64::from(fraud.shared_ip_window_days) * DAY;
    let other_ips = tx
        .referee_ips(
            &code,
            &referral.id,
            referral.first_touch_at - ip_window,
            referral.first_touch_at + ip_window,
        )
        .await?
        .into_iter()
        .filter_map(|(ip, t)| ip.parse().ok().map(|ip| (ip, t)))
        .collect();
    let window = i64::from(fraud.velocity_window_days) * DAY;
    let referrer_facts = ReferrerFacts {
        code: code.clone(),
        email: referrer.and_then(|r| r.email.clone()),
        company_domain: referrer.and_then(|r| r.company_domain.clone()),
        successful_including_this: u32::try_from(tx.successful_referrals(&code).await?)
            .unwrap_or(u32::MAX)
            .max(1),
        other_referee_ips: other_ips,
        referrals_in_velocity_window: u32::try_from(
            tx.referrals_between(
                &code,
                referral.first_touch_at - window,
                referral.first_touch_at,
            )
            .await?,
        )
        .unwrap_or(u32::MAX),
    };
    match calculate::evaluate(program, fraud, &deal_facts, &referee, &referrer_facts) {
        Evaluation::NotEligible { reason } => {
            tx.audit(
                &NewAudit {
                    actor: "system",
                    action: "reward_not_eligible",
                    entity_type: "crm_record",
                    entity_id: &format!("{}:{}:{}", deal.crm, deal.object_type, deal.object_id),
                    old_value: None,
                    new_value: None,
                    reason: Some(&reason),
                },
                now,
            )
            .await?;
        }
        Evaluation::Rewards(decisions) => {
            let mut to_review = false;
            for d in decisions {
                let status = match d.status {
                    InitialStatus::Pending => "pending",
                    InitialStatus::NeedsReview => "needs_review",
                };
                let new = NewReward {
                    crm: deal.crm.clone(),
                    deal_id: deal.object_id.clone(),
                    beneficiary: serde_json::to_value(d.beneficiary)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    referral_id: referral.id.clone(),
                    referrer_code: referral.referrer_code.clone(),
                    market: market.to_string(),
                    status: status.into(),
                    kind: d.kind.to_string(),
                    amount: d.amount.to_string(),
                    currency: d.currency.clone(),
                    tier: d.tier.clone(),
                    deal_amount: deal_facts.amount.map(|a| a.to_string()),
                    deal_currency: deal.currency.clone(),
                    fx_rate: d.fx_rate.map(|r| r.to_string()),
                    calculation: d.calculation.to_string(),
                    flags: serde_json::to_string(&d.flags).unwrap_or_else(|_| "[]".into()),
                    review_reason: (!d.review_reasons.is_empty())
                        .then(|| d.review_reasons.join("; ")),
                    won_at: at,
                    hold_until: Some(d.hold_until),
                };
                if let Some(created) = tx.insert_reward(&new, now).await? {
                    to_review |= created.status == RewardStatus::NeedsReview.as_str();
                    let why = created.review_reason.clone();
                    record(
                        tx,
                        settings,
                        deal,
                        &created,
                        "reward_created",
                        "system",
                        why.as_deref(),
                        now,
                    )
                    .await?;
                }
            }
            // Sales sees why the deal shows a status and no amount (or an amount not yet due).
            if to_review && deal.crm == "hubspot" {
                let summary = deal_summary(tx, deal, "Referral reward needs review").await?;
                tx.enqueue(&note(deal, &summary, now), now).await?;
            }
        }
    }
    Ok(())
}

/// Pending rewards whose hold has ended become eligible; the CRM hears about it (properties plus a
/// note on HubSpot deals or a Platform Event in Salesforce). Returns how many were released.
pub async fn release_holds(
    store: &Store,
    settings: &Settings,
    now: Millis,
) -> Result<usize, StoreError> {
    let mut tx = store.begin().await?;
    let due = tx.due_holds(now, 500).await?;
    let mut released = Vec::new();
    for r in due {
        let Some(r) = tx
            .transition_reward(&r.id, &["pending"], "eligible", None, None, now)
            .await?
        else {
            continue;
        };
        let deal = deal_record(&mut tx, &r).await?;
        record(
            &mut tx,
            settings,
            &deal,
            &r,
            "reward_eligible",
            "system",
            Some("hold period ended"),
            now,
        )
        .await?;
        released.push((deal, r));
    }
    // Announced once every due reward has moved, so a deal's note shows both sides as they are.
    let mut noted = HashSet::new();
    for (deal, r) in &released {
        if deal.crm == "hubspot" && !noted.insert(deal.key()) {
            continue;
        }
        let announcement =
            announcement(&mut tx, settings, deal, r, "Referral reward eligible", now).await?;
        tx.enqueue(&announcement, now).await?;
    }
    tx.commit().await?;
    Ok(released.len())
}

/// Release due holds every `HOLD_TICK` until shutdown. Holds are stored as due times, so nothing
/// is lost across restarts: a hold that ended while the service was down is released at start.
pub async fn run_hold_timer(
    store: Store,
    settings: std::sync::Arc<Settings>,
    clock: crate::clock::SharedClock,
    shutdown: tokio_util::sync::CancellationToken,
) {
    const HOLD_TICK: std::time::Duration = std::time::Duration::from_secs(30);
    loop {
        match release_holds(&store, &settings, clock.now()).await {
            Ok(n) if n > 0 => tracing::info!(released = n, "reward holds ended"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = ?e, "releasing reward holds failed"),
        }
        if let Ok(counts) = store.reward_status_counts().await {
            for (status, n) in counts {
                metrics::gauge!("rewards", "status" => status).set(n as f64);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HOLD_TICK) => {},
        }
    }
}

/// What an admin may do to a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    Paid,
}

impl Decision {
    fn transition(self) -> (&'static [&'static str], &'static str, &'static str) {
        match self {
            Self::Approve => (&["needs_review", "eligible"], "approved", "reward_approved"),
            Self::Reject => (
                &["needs_review", "pending", "eligible"],
                "rejected",
                "reward_rejected",
            ),
            Self::Paid => (&["approved"], "paid", "reward_paid"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("reward {0} not found")]
    NotFound(String),
    #[error("reward is {status}; {action} needs one of: {allowed}")]
    WrongState {
        status: String,
        action: &'static str,
        allowed: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Approve, reject or mark paid, audited with who and why.
pub async fn decide(
    store: &Store,
    settings: &Settings,
    reward_id: &str,
    decision: Decision,
    actor: &str,
    reason: Option<&str>,
    now: Millis,
) -> Result<Reward, DecisionError> {
    if decision == Decision::Reject && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(DecisionError::Invalid(
            "reason is required to reject a reward".into(),
        ));
    }
    let (from, to, action) = decision.transition();
    let mut tx = store.begin().await?;
    let current = tx
        .reward(reward_id)
        .await?
        .ok_or_else(|| DecisionError::NotFound(reward_id.into()))?;
    let Some(updated) = tx
        .transition_reward(reward_id, from, to, Some(actor), None, now)
        .await?
    else {
        return Err(DecisionError::WrongState {
            status: current.status,
            action: match decision {
                Decision::Approve => "approve",
                Decision::Reject => "reject",
                Decision::Paid => "paid",
            },
            allowed: from.join(", "),
        });
    };
    let deal = deal_record(&mut tx, &updated).await?;
    record(
        &mut tx, settings, &deal, &updated, action, actor, reason, now,
    )
    .await?;
    if decision == Decision::Approve && current.status == RewardStatus::NeedsReview.as_str() {
        let announcement = announcement(
            &mut tx,
            settings,
            &deal,
            &updated,
            "Referral reward approved",
            now,
        )
        .await?;
        tx.enqueue(&announcement, now).await?;
    }
    tx.commit().await?;
    Ok(updated)
}

async fn deal_record(tx: &mut Tx, r: &Reward) -> Result<CrmRecord, StoreError> {
    let object_type = if r.crm == "hubspot" {
        "deal"
    } else {
        "Opportunity"
    };
    let key = crate::store::RecordKey {
        crm: r.crm.clone(),
        object_type: object_type.into(),
        object_id: r.deal_id.clone(),
    };
    tx.record(&key)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("reward {} has no deal record", r.id)))
}

/// Audit a reward change and, for the referrer's reward, put its state on the deal.
#[allow(clippy::too_many_arguments)]
async fn record(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    r: &Reward,
    action: &str,
    actor: &str,
    reason: Option<&str>,
    now: Millis,
) -> Result<(), StoreError> {
    tx.audit(
        &NewAudit {
            actor,
            action,
            entity_type: "reward",
            entity_id: &r.id,
            old_value: None,
            new_value: Some(
                json!({"status": r.status, "amount": r.amount, "currency": r.currency}).to_string(),
            ),
            reason,
        },
        now,
    )
    .await?;
    metrics::counter!("reward_transitions_total", "action" => action.to_string()).increment(1);
    match r.beneficiary.parse::<Beneficiary>() {
        Ok(Beneficiary::Referrer) => {
            tx.enqueue(&reward_properties(settings, deal, r), now)
                .await?;
        }
        Ok(Beneficiary::Referee) => {
            for contact in referee_contacts(tx, &deal.crm, &r.referral_id).await? {
                tx.enqueue(&referee_properties(settings, &contact, r), now)
                    .await?;
            }
        }
        Err(_) => {}
    }
    Ok(())
}

/// The amount and currency to show for a reward; `None` while it has no amount (see
/// [`calculate::amount_computed`]): a 0.00 there would read as "no reward".
fn shown_amount(r: &Reward) -> Option<(&str, &str)> {
    calculate::amount_computed(&r.calculation).then_some((r.amount.as_str(), r.currency.as_str()))
}

/// The referee's contacts in `crm`: the people the referral is attributed to (Salesforce
/// Contacts, not Leads, which carry no reward fields).
async fn referee_contacts(
    tx: &mut Tx,
    crm: &str,
    referral_id: &str,
) -> Result<Vec<CrmRecord>, StoreError> {
    Ok(tx
        .records_linked_to(referral_id)
        .await?
        .into_iter()
        .filter(|c| {
            c.crm == crm
                && matches!(c.object_type.as_str(), "contact" | "Contact")
                && c.merged_into.is_none()
                && c.deleted_at.is_none()
        })
        .collect())
}

/// SPEC §5, two-sided rewards: the referee's reward status, amount and currency on their contact.
pub fn referee_properties(settings: &Settings, contact: &CrmRecord, r: &Reward) -> NewOutbox {
    let n = field_names(settings, &contact.crm);
    let (amount, currency) = shown_amount(r).unwrap_or_default();
    let properties: BTreeMap<String, String> = [
        (n.referee_reward_status.clone(), r.status.clone()),
        (n.referee_reward_amount.clone(), amount.to_string()),
        (n.referee_reward_currency.clone(), currency.to_string()),
    ]
    .into_iter()
    .collect();
    crate::attribution::writeback::update_properties(contact, &properties)
}

fn field_names<'a>(settings: &'a Settings, crm: &str) -> &'a CrmFieldNames {
    if crm == "hubspot" {
        &settings.hubspot.properties
    } else {
        &settings.salesforce.fields
    }
}

/// SPEC §5 second row: reward status, amount, currency and hold end on the deal.
pub fn reward_properties(settings: &Settings, deal: &CrmRecord, r: &Reward) -> NewOutbox {
    let hubspot = deal.crm == "hubspot";
    let n = field_names(settings, &deal.crm);
    let (amount, currency) = shown_amount(r).unwrap_or_default();
    let hold = r
        .hold_until
        .map(|h| {
            if hubspot {
                h.to_string()
            } else {
                to_rfc3339(h)
            }
        })
        .unwrap_or_default();
    let properties: BTreeMap<String, String> = [
        (n.reward_status.clone(), r.status.clone()),
        (n.reward_amount.clone(), amount.to_string()),
        (n.reward_currency.clone(), currency.to_string()),
        (n.reward_hold_until.clone(), hold),
    ]
    .into_iter()
    .collect();
    crate::attribution::writeback::update_properties(deal, &properties)
}

/// SPEC §5 third row: a note on the HubSpot deal, or a Platform Event in Salesforce, headed
/// `headline` ("Referral reward eligible").
async fn announcement(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    r: &Reward,
    headline: &str,
    now: Millis,
) -> Result<NewOutbox, StoreError> {
    let summary = deal_summary(tx, deal, headline).await?;
    if deal.crm == "hubspot" {
        return Ok(note(deal, &summary, now));
    }
    let event = settings
        .salesforce
        .fields
        .reward_event
        .clone()
        .unwrap_or_else(|| "Referral_Reward__e".into());
    let (amount, currency) = shown_amount(r).unzip();
    let payload = json!({"event": event, "fields": {
        "Opportunity_Id__c": r.deal_id, "Beneficiary__c": r.beneficiary, "Status__c": r.status,
        "Amount__c": amount, "Currency__c": currency, "Referrer_Code__c": r.referrer_code,
        "Tier__c": r.tier, "Reward_Id__c": r.id, "Summary__c": summary}});
    Ok(outbox_row(deal, PUBLISH_EVENT, payload))
}

fn note(deal: &CrmRecord, body: &str, now: Millis) -> NewOutbox {
    outbox_row(deal, CREATE_NOTE, json!({"body": body, "timestamp": now}))
}

fn outbox_row(deal: &CrmRecord, kind: &str, payload: serde_json::Value) -> NewOutbox {
    NewOutbox {
        crm: deal.crm.clone(),
        account: deal.account.clone(),
        object_type: deal.object_type.clone(),
        object_id: deal.object_id.clone(),
        kind: kind.into(),
        payload: payload.to_string(),
    }
}

/// Both sides of the deal's referral reward in one sentence: who gets what, in which state, and
/// why one waits for review, e.g. "Referral reward eligible on deal 2001: referrer ACME-7 (tier
/// bronze) 3000.00 USD, eligible; referee ana@northwind.io credit 500.00 USD, eligible."
async fn deal_summary(tx: &mut Tx, deal: &CrmRecord, headline: &str) -> Result<String, StoreError> {
    let mut sides = Vec::new();
    for r in tx.deal_rewards(&deal.crm, &deal.object_id).await? {
        let who = match r.beneficiary.parse::<Beneficiary>() {
            Ok(Beneficiary::Referee) => {
                let email = tx
                    .referral(&r.referral_id)
                    .await?
                    .map(|referral| referral.email);
                format!("referee {}", email.as_deref().unwrap_or("unknown"))
            }
            _ => format!(
                "referrer {}{}",
                r.referrer_code.as_deref().unwrap_or("unknown"),
                r.tier
                    .as_deref()
                    .map(|t| format!(" (tier {t})"))
                    .unwrap_or_default()
            ),
        };
        let what = match shown_amount(&r) {
            Some((amount, currency)) if r.kind == "credit" => format!("credit {amount} {currency}"),
            Some((amount, currency)) => format!("{amount} {currency}"),
            None => "no amount yet".into(),
        };
        let state = match (
            &r.review_reason,
            r.status == RewardStatus::NeedsReview.as_str(),
        ) {
            (Some(why), true) => format!("needs review ({why})"),
            _ => r.status.replace('_', " "),
        };
        sides.push(format!("{who} {what}, {state}"));
    }
    Ok(format!(
        "{headline} on deal {}: {}.",
        deal.object_id,
        sides.join("; ")
    ))
}

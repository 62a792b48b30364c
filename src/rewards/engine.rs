//! The reward lifecycle around the pure calculations: evaluate once when a linked deal reaches its
//! program's success stage (a renewal earns a recurring reward instead), evaluate each paid invoice
//! of a referred customer, reverse while the hold runs if the deal leaves the success stage, claw
//! back with a negative adjustment what was payable already (a deal lost after its hold, a refund,
//! a paid-out installment), release holds when their time comes (driven by the injected clock, or
//! at once when the hold is already over), and apply admin decisions. Every change is audited and
//! queues its CRM writes in the same transaction.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use rust_decimal::Decimal;
use serde_json::json;

use super::calculate::{
    self, round_money, DealFacts, Evaluation, RefereeFacts, ReferrerFacts, RewardDecision,
};
use super::recurring::{self, CustomerFacts, PaymentFacts, ADJUSTMENT_KIND};
use crate::clock::{to_rfc3339, Millis, DAY};
use crate::config::{ProgramBy, ProgramSettings, Settings};
use crate::domain::reward::{Beneficiary, LineKind, RewardMove, RewardStatus};
use crate::domain::stage::CanonicalStage;
use crate::domain::Crm;
use crate::outbox::CrmCommand;
use crate::store::{
    rule_count, CrmRecord, Invoice, NewAudit, NewOutbox, NewRecheck, NewReward, RecheckKind,
    Referral, Referrer, Refund, Reward, Store, StoreError, Tx,
};

/// Source key of an invoice's recurring line.
fn invoice_source(invoice_id: &str) -> String {
    format!("invoice:{invoice_id}")
}

/// Source key of a refund's adjustment.
fn refund_source(refund_key: &str) -> String {
    format!("refund:{refund_key}")
}

/// Source key of the adjustment taking back a line whose deal left the success stage after its
/// hold.
fn clawback_source(line_id: &str) -> String {
    format!("clawback:{line_id}")
}

/// Source key of the adjustment taking back the installments already paid out of a line reversed
/// during its hold.
fn paid_share_clawback_source(line_id: &str) -> String {
    format!("clawback-paid:{line_id}")
}

/// Source key of the adjustment taking back the installments already paid out of a line an admin
/// rejected (never withdrawn by the deal's stage).
fn rejected_share_source(line_id: &str) -> String {
    format!("rejected-paid:{line_id}")
}

/// An adjustment the deal's stage put in force (and takes back when the deal is won again).
fn is_clawback(r: &Reward) -> bool {
    r.line
        .source_key
        .as_deref()
        .is_some_and(|k| k.starts_with("clawback:") || k.starts_with("clawback-paid:"))
}

/// The program that applies to a referral, with the market that chose it.
pub fn program_for<'a>(
    settings: &'a Settings,
    referral: &Referral,
    referrer_market: Option<&str>,
) -> Option<(String, &'a ProgramSettings)> {
    let market = match settings.rewards.program_by {
        ProgramBy::ReferrerMarket => referrer_market
            .map(str::to_string)
            .or(referral.attribution().market.clone()),
        ProgramBy::RefereeMarket => referral
            .attribution()
            .market
            .clone()
            .or(referrer_market.map(str::to_string)),
    }
    .unwrap_or_else(|| settings.rewards.default_market.clone());
    settings.programs.get(&market).map(|p| (market, p))
}

/// A referral with its referrer and the program that applies to it.
struct Enrolled<'a> {
    referral: Referral,
    referrer: Option<Referrer>,
    market: String,
    program: &'a ProgramSettings,
}

impl Enrolled<'_> {
    /// The referrer's code (empty when the referral has none).
    fn code(&self) -> String {
        let code = &self.referral.attribution().referrer_code;
        code.clone().unwrap_or_default()
    }
}

/// A linked deal that reached the success stage at `at` with no line of its own yet, and the
/// enrolled referral it earns for.
struct Win<'a> {
    settings: &'a Settings,
    deal: &'a CrmRecord,
    e: &'a Enrolled<'a>,
    at: Millis,
}

async fn enrolled<'a>(
    tx: &mut Tx,
    settings: &'a Settings,
    referral_id: &str,
) -> Result<Option<Enrolled<'a>>, StoreError> {
    let Some(referral) = tx.referral(referral_id).await? else {
        return Ok(None);
    };
    let referrer = match &referral.attribution().referrer_code {
        Some(code) => tx.referrer(code).await?,
        None => None,
    };
    let Some((market, program)) = program_for(
        settings,
        &referral,
        referrer.as_ref().and_then(|r| r.facts.market.as_deref()),
    ) else {
        return Ok(None);
    };
    Ok(Some(Enrolled {
        referral,
        referrer,
        market,
        program,
    }))
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
    let Some(e) = enrolled(tx, settings, referral_id).await? else {
        return Ok(());
    };
    let success = e.program.success_stage;
    let mut own: Vec<Reward> = own_lines(tx, deal).await?;
    if stage == success {
        // Decided while the deal had no amount: decided again now that it has one.
        if deal.amount.is_some()
            && own
                .iter()
                .any(|r| r.line.status == RewardStatus::NeedsReview && r.line.deal_amount.is_none())
        {
            for r in tx
                .withdraw_unsettled_rewards(deal.crm, &deal.object_id, true)
                .await?
            {
                tx.audit(
                    &NewAudit {
                        actor: "system",
                        action: "reward_withdrawn",
                        entity_type: "reward",
                        entity_id: &r.id,
                        old_value: serde_json::to_string(&r).ok(),
                        new_value: None,
                        reason: Some("the deal amount arrived; the reward is decided again"),
                    },
                    now,
                )
                .await?;
            }
            own = own_lines(tx, deal).await?;
        }
        if own.is_empty() {
            let win = Win {
                settings,
                deal,
                e: &e,
                at,
            };
            if settings.renewals.is_renewal(deal) {
                renewal(tx, &win, now).await?;
            } else {
                evaluate(tx, &win, now).await?;
            }
        }
        let mut reinstated = Vec::new();
        for r in own
            .iter()
            .filter(|r| r.line.status == RewardStatus::Reversed)
        {
            let hold = at + i64::from(e.program.hold_days) * DAY;
            if let Some(r) = tx
                .transition_reward(&r.id, RewardMove::Reinstate, None, Some(hold), now)
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
                reinstated.push(r);
            }
        }
        if !reinstated.is_empty() {
            release_if_due(tx, settings, deal, reinstated, now).await?;
            recheck_invoices(tx, e.program, &e.referral, now).await?;
        }
        // Back at the success stage: a clawback not paid out yet is withdrawn.
        let ids: Vec<&str> = own.iter().map(|r| r.id.as_str()).collect();
        for adjustment in tx.adjustments_of(&ids).await? {
            if !is_clawback(&adjustment) {
                continue;
            }
            system_move(
                tx,
                settings,
                deal,
                &adjustment.id,
                RewardMove::Withdraw,
                "clawback_withdrawn",
                "the deal reached the success stage again",
                now,
            )
            .await?;
        }
    } else {
        for r in &own {
            match r.line.status {
                // Left the success stage during the hold (or awaiting review): the line is off,
                // and what of it was paid out already comes back.
                RewardStatus::Pending | RewardStatus::NeedsReview => {
                    let why = format!("the deal moved to {stage} during the hold");
                    let reversed = system_move(
                        tx,
                        settings,
                        deal,
                        &r.id,
                        RewardMove::Reverse,
                        "reward_reversed",
                        &why,
                        now,
                    )
                    .await?;
                    let Some(r) = reversed else {
                        continue;
                    };
                    let source = paid_share_clawback_source(&r.id);
                    claw_back_paid_shares(tx, settings, deal, &r, &source, &why, now).await?;
                }
                // After the hold: the line stays as it is; a negative adjustment takes it back.
                RewardStatus::Eligible | RewardStatus::Approved | RewardStatus::Paid
                    if r.line.beneficiary == Beneficiary::Referrer =>
                {
                    let why = format!("the deal moved to {stage} after the hold ended");
                    let amount = r.amount()?;
                    if calculate::amount_computed(&r.line.calculation) && !amount.is_zero() {
                        claw_back(
                            tx,
                            settings,
                            deal,
                            r,
                            amount,
                            &clawback_source(&r.id),
                            &why,
                            now,
                        )
                        .await?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The deal's amount as the CRM gave it; `None` when it has none, or none that is a number (the
/// reward then waits for review, saying so).
fn deal_amount(deal: &CrmRecord) -> Option<Decimal> {
    deal.amount
        .as_deref()
        .and_then(|a| a.trim().parse::<Decimal>().ok())
}

/// The deal's own lines (what its win earned), referrer first.
async fn own_lines(tx: &mut Tx, deal: &CrmRecord) -> Result<Vec<Reward>, StoreError> {
    Ok(tx
        .deal_rewards(deal.crm, &deal.object_id)
        .await?
        .into_iter()
        .filter(Reward::is_deals_own)
        .collect())
}

/// What the fraud checks and tiers read about a referral and its referrer.
async fn fraud_facts(
    tx: &mut Tx,
    settings: &Settings,
    e: &Enrolled<'_>,
    successful: u32,
) -> Result<(RefereeFacts, ReferrerFacts), StoreError> {
    let (referral, referrer) = (&e.referral, e.referrer.as_ref());
    let first_touch_at = referral.attribution().first_touch_at;
    let code = e.code();
    // Signup IPs are stored only once parsed as one (ingest): text that is none is an error.
    let ip_of = |ip: &str, whose: &dyn std::fmt::Display| {
        ip.parse::<IpAddr>()
            .map_err(|e| StoreError::Corrupt(format!("signup IP `{ip}` of {whose}: {e}")))
    };
    let referee = RefereeFacts {
        email: referral.email().to_string(),
        first_touch_at,
        signup_ip: referral
            .signup_ip
            .as_deref()
            .map(|ip| ip_of(ip, &format_args!("referral {}", referral.id())))
            .transpose()?,
        known_to_crm_before_first_touch: tx
            .person_known_before(referral.email(), first_touch_at)
            .await?,
    };
    // Only referees near this one in time can share its IP (the rule's window), so a referrer's
    // whole history is never read.
    let ip_window = i64::from(settings.fraud.shared_ip_window_days) * DAY;
    let other_ips = tx
        .referee_ips(
            &code,
            referral.id(),
            first_touch_at - ip_window,
            first_touch_at + ip_window,
        )
        .await?
        .into_iter()
        .map(|(ip, t)| Ok((ip_of(&ip, &format_args!("a referee of {code}"))?, t)))
        .collect::<Result<_, StoreError>>()?;
    let window = i64::from(settings.fraud.velocity_window_days) * DAY;
    let referrer_facts = ReferrerFacts {
        code: code.clone(),
        email: referrer.and_then(|r| r.facts.email.clone()),
        company_domain: referrer.and_then(|r| r.facts.company_domain.clone()),
        successful_including_this: successful,
        other_referee_ips: other_ips,
        referrals_in_velocity_window: rule_count(
            tx.referrals_between(&code, first_touch_at - window, first_touch_at)
                .await?,
        )?,
    };
    Ok((referee, referrer_facts))
}

/// The line to store for one decision.
#[allow(clippy::too_many_arguments)]
fn new_line(
    deal: &CrmRecord,
    referral: &Referral,
    market: &str,
    program: &ProgramSettings,
    d: &RewardDecision,
    line_kind: LineKind,
    source_key: Option<String>,
    won_at: Millis,
    deal_amount: Option<Decimal>,
    deal_currency: Option<String>,
) -> NewReward {
    // A deal's own line for the referrer is paid per the program's schedule, fixed now.
    let schedule = (source_key.is_none()
        && d.beneficiary == Beneficiary::Referrer
        && !program.payout_schedule.is_empty())
    .then(|| serde_json::to_string(&program.payout_schedule).expect("plain data serialises"));
    NewReward {
        crm: deal.crm,
        deal_id: deal.object_id.clone(),
        beneficiary: d.beneficiary,
        referral_id: referral.id().to_string(),
        referrer_code: referral.attribution().referrer_code.clone(),
        market: market.to_string(),
        status: d.status.into(),
        kind: d.kind.to_string(),
        amount: d.amount.to_string(),
        currency: d.currency.clone(),
        tier: d.tier.clone(),
        deal_amount: deal_amount.map(|a| a.to_string()),
        deal_currency,
        fx_rate: d.fx_rate.map(|r| r.to_string()),
        calculation: d.calculation.to_string(),
        flags: serde_json::to_string(&d.flags).unwrap_or_else(|_| "[]".into()),
        review_reason: (!d.review_reasons.is_empty()).then(|| d.review_reasons.join("; ")),
        won_at,
        hold_until: Some(d.hold_until),
        line_kind,
        source_key,
        adjusts: None,
        payout_schedule: schedule,
    }
}

/// The first win: one line per beneficiary.
async fn evaluate(tx: &mut Tx, win: &Win<'_>, now: Millis) -> Result<(), StoreError> {
    let &Win {
        settings,
        deal,
        e,
        at,
    } = win;
    let code = e.code();
    let deal_facts = DealFacts {
        amount: deal_amount(deal),
        currency: deal.currency.clone(),
        won_at: at,
    };
    let successful = rule_count(tx.successful_referrals(&code).await?)?.max(1);
    let (referee, referrer_facts) = fraud_facts(tx, settings, e, successful).await?;
    match calculate::evaluate(
        e.program,
        &settings.fraud,
        &deal_facts,
        &referee,
        &referrer_facts,
    ) {
        Evaluation::NotEligible { reason } => {
            not_eligible(tx, &deal.key().label(), &reason, now).await?;
        }
        Evaluation::Rewards(decisions) => {
            let mut created = Vec::new();
            for d in &decisions {
                let new = new_line(
                    deal,
                    &e.referral,
                    &e.market,
                    e.program,
                    d,
                    LineKind::Reward,
                    None,
                    at,
                    deal_facts.amount,
                    deal.currency.clone(),
                );
                if let Some(line) = insert_line(tx, settings, deal, &new, now).await? {
                    created.push(line);
                }
            }
            after_created(
                tx,
                settings,
                deal,
                created,
                "Referral reward needs review",
                now,
            )
            .await?;
            recheck_invoices(tx, e.program, &e.referral, now).await?;
        }
    }
    Ok(())
}

/// A won renewal of a customer whose first win earned a reward: a recurring line (never a second
/// first-win reward), unless the customer's revenue arrives as invoices.
async fn renewal(tx: &mut Tx, win: &Win<'_>, now: Millis) -> Result<(), StoreError> {
    let &Win {
        settings,
        deal,
        e,
        at,
    } = win;
    let entity = deal.key().label();
    let Some(rule) = &e.program.recurring else {
        return not_eligible(
            tx,
            &entity,
            "a renewal earns only recurring rewards, and the program pays none",
            now,
        )
        .await;
    };
    let lines = tx.referral_lines(e.referral.id()).await?;
    let Some(first_win) = first_win(&lines).map(|w| w.line.won_at) else {
        return not_eligible(
            tx,
            &entity,
            "a renewal before the customer's first rewarded win earns nothing",
            now,
        )
        .await;
    };
    if !tx
        .invoice_ids_of(e.referral.id(), e.referral.email())
        .await?
        .is_empty()
    {
        return not_eligible(
            tx,
            &entity,
            "this customer's recurring rewards follow its paid invoices",
            now,
        )
        .await;
    }
    let payment = PaymentFacts {
        amount: deal_amount(deal),
        currency: deal.currency.clone(),
        paid_at: at,
        source: format!("renewal deal {}", deal.object_id),
    };
    let line = recurring_line(
        tx, settings, deal, e, rule, &lines, first_win, &payment, None, now,
    )
    .await?;
    if let Some(line) = line {
        after_created(
            tx,
            settings,
            deal,
            vec![line],
            "Referral recurring reward needs review",
            now,
        )
        .await?;
    }
    Ok(())
}

/// Decide and store one payment's recurring line; `None` when it earns nothing (audited) or
/// existed.
#[allow(clippy::too_many_arguments)]
async fn recurring_line(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    e: &Enrolled<'_>,
    rule: &crate::config::RecurringRule,
    lines: &[Reward],
    first_win_at: Millis,
    payment: &PaymentFacts,
    source_key: Option<String>,
    now: Millis,
) -> Result<Option<Reward>, StoreError> {
    let code = e.code();
    let successful = rule_count(tx.successful_referrals_at(&code, payment.paid_at).await?)?;
    let (referee, referrer_facts) = fraud_facts(tx, settings, e, successful.max(1)).await?;
    let customer = CustomerFacts {
        first_win_at,
        earned_before: earned_recurring(lines)?,
        successful_at_payment: successful,
    };
    match recurring::evaluate_recurring(
        e.program,
        rule,
        &settings.fraud,
        payment,
        &customer,
        &referee,
        &referrer_facts,
    ) {
        Evaluation::NotEligible { reason } => {
            let entity = source_key.clone().unwrap_or_else(|| deal.key().label());
            not_eligible(tx, &entity, &reason, now).await?;
            Ok(None)
        }
        Evaluation::Rewards(decisions) => {
            let Some(d) = decisions.first() else {
                return Ok(None);
            };
            let new = new_line(
                deal,
                &e.referral,
                &e.market,
                e.program,
                d,
                LineKind::Recurring,
                source_key,
                payment.paid_at,
                payment.amount,
                payment.currency.clone(),
            );
            insert_line(tx, settings, deal, &new, now).await
        }
    }
}

async fn not_eligible(
    tx: &mut Tx,
    entity: &str,
    reason: &str,
    now: Millis,
) -> Result<(), StoreError> {
    tx.audit(
        &NewAudit {
            actor: "system",
            action: "reward_not_eligible",
            entity_type: if entity.starts_with("invoice:") {
                "invoice"
            } else {
                "crm_record"
            },
            entity_id: entity.strip_prefix("invoice:").unwrap_or(entity),
            old_value: None,
            new_value: None,
            reason: Some(reason),
        },
        now,
    )
    .await
}

/// Store a new line and audit it; `None` when its deal or source had one already.
async fn insert_line(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    new: &NewReward,
    now: Millis,
) -> Result<Option<Reward>, StoreError> {
    let Some(created) = tx.insert_reward(new, now).await? else {
        return Ok(None);
    };
    let action = match new.line_kind {
        LineKind::Adjustment => "reward_adjusted",
        _ => "reward_created",
    };
    let why = created.line.review_reason.clone();
    record(
        tx,
        settings,
        deal,
        &created,
        action,
        "system",
        why.as_deref(),
        now,
    )
    .await?;
    Ok(Some(created))
}

/// After new lines of a deal: a note when one waits for review (so sales sees why the deal shows
/// a status and no amount), and release at once what has no hold left.
async fn after_created(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    created: Vec<Reward>,
    review_headline: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let to_review = created
        .iter()
        .find(|r| r.line.status == RewardStatus::NeedsReview);
    if let (Some(line), Crm::HubSpot) = (to_review, deal.crm) {
        let summary = summary(tx, deal, line, review_headline).await?;
        tx.enqueue(&note(deal, &summary, now), now).await?;
    }
    release_if_due(tx, settings, deal, created, now).await
}

/// Pending lines whose hold is already over (a program with `hold_days = 0`, a payment or win
/// learnt of late) become eligible now, in this transaction, and are announced.
async fn release_if_due(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    lines: Vec<Reward>,
    now: Millis,
) -> Result<(), StoreError> {
    let mut released = Vec::new();
    for r in lines {
        if r.line.status != RewardStatus::Pending || r.line.hold_until.is_none_or(|h| h > now) {
            continue;
        }
        if let Some(r) = release(tx, settings, deal, &r, now).await? {
            released.push((deal.clone(), r));
        }
    }
    announce_released(tx, settings, &released, now).await
}

/// One pending line becomes eligible (audited, on the deal).
async fn release(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    r: &Reward,
    now: Millis,
) -> Result<Option<Reward>, StoreError> {
    system_move(
        tx,
        settings,
        deal,
        &r.id,
        RewardMove::Release,
        "reward_eligible",
        "hold period ended",
        now,
    )
    .await
}

/// A move the service makes on its own, recorded under `action` with its reason; `None` when
/// the line had already left the statuses the move starts from.
#[allow(clippy::too_many_arguments)]
async fn system_move(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    reward_id: &str,
    step: RewardMove,
    action: &str,
    reason: &str,
    now: Millis,
) -> Result<Option<Reward>, StoreError> {
    let Some(r) = tx
        .transition_reward(reward_id, step, None, None, now)
        .await?
    else {
        return Ok(None);
    };
    record(tx, settings, deal, &r, action, "system", Some(reason), now).await?;
    Ok(Some(r))
}

/// The CRM hears about released lines: a deal's own lines in one note (HubSpot) or a Platform
/// Event each (Salesforce); a recurring line on its own; adjustments only change the deal's
/// reward properties.
async fn announce_released(
    tx: &mut Tx,
    settings: &Settings,
    released: &[(CrmRecord, Reward)],
    now: Millis,
) -> Result<(), StoreError> {
    let mut noted = HashSet::new();
    for (deal, r) in released {
        let headline = match r.line.line_kind {
            LineKind::Adjustment => continue,
            LineKind::Recurring => "Referral recurring reward eligible",
            LineKind::Reward => "Referral reward eligible",
        };
        // Both sides of a deal's own reward share one note.
        if r.is_deals_own() && deal.crm == Crm::HubSpot && !noted.insert(deal.key()) {
            continue;
        }
        let announcement = announcement(tx, settings, deal, r, headline, now).await?;
        tx.enqueue(&announcement, now).await?;
    }
    Ok(())
}

/// The customer's first rewarded win: its earliest own reward line for the referrer that was not
/// reversed. The recurring window starts there.
fn first_win(lines: &[Reward]) -> Option<&Reward> {
    lines
        .iter()
        .filter(|r| {
            r.is_deals_own()
                && r.line.line_kind == LineKind::Reward
                && r.line.beneficiary == Beneficiary::Referrer
                && r.line.status != RewardStatus::Reversed
        })
        .min_by_key(|r| (r.line.won_at, r.created_at))
}

/// What the customer's recurring rewards add up to so far, net of what was taken back from them
/// (what counts against the recurring cap).
fn earned_recurring(lines: &[Reward]) -> Result<Decimal, StoreError> {
    let recurring: HashSet<&str> = lines
        .iter()
        .filter(|r| r.line.line_kind == LineKind::Recurring)
        .map(|r| r.id.as_str())
        .collect();
    let mut sum = Decimal::ZERO;
    for r in lines {
        let counts = recurring.contains(r.id.as_str())
            || r.line
                .adjusts
                .as_deref()
                .is_some_and(|a| recurring.contains(a));
        let in_force = !matches!(
            r.line.status,
            RewardStatus::Reversed | RewardStatus::Rejected
        );
        if counts && in_force && r.line.beneficiary == Beneficiary::Referrer {
            sum += r.amount()?;
        }
    }
    Ok(sum)
}

/// A referred customer's invoices are looked at again (its first rewarded win is what starts the
/// recurring window), in the next reconcile round.
async fn recheck_invoices(
    tx: &mut Tx,
    program: &ProgramSettings,
    referral: &Referral,
    now: Millis,
) -> Result<(), StoreError> {
    if program.recurring.is_none() {
        return Ok(());
    }
    let mut ids = tx.invoice_ids_of(referral.id(), referral.email()).await?;
    ids.sort();
    let rechecks: Vec<NewRecheck> = ids
        .into_iter()
        .map(|id| NewRecheck {
            kind: RecheckKind::Invoice,
            subject: id,
            detail: None,
        })
        .collect();
    tx.queue_rechecks(&rechecks, now).await
}

/// A paid invoice of `referral`'s customer, with the refunds known for it: its recurring line, and
/// one adjustment per refund. Stated on state, so applying it again changes nothing.
pub async fn on_invoice(
    tx: &mut Tx,
    settings: &Settings,
    invoice: &Invoice,
    referral_id: &str,
    refunds: &[&Refund],
    now: Millis,
) -> Result<(), StoreError> {
    let Some(e) = enrolled(tx, settings, referral_id).await? else {
        return Ok(());
    };
    let Some(rule) = &e.program.recurring else {
        return Ok(());
    };
    let lines = tx.referral_lines(e.referral.id()).await?;
    // No rewarded win yet: nothing to pay a share of; the win rechecks the invoices.
    let Some(anchor) = first_win(&lines).cloned() else {
        return Ok(());
    };
    let deal = deal_record(tx, &anchor).await?;
    let source = invoice_source(&invoice.invoice_id);
    let existing = lines
        .iter()
        .find(|r| {
            r.line.source_key.as_deref() == Some(source.as_str())
                && r.line.beneficiary == Beneficiary::Referrer
        })
        .cloned();
    let amount = parse_amount(&invoice.amount, "invoice", &invoice.invoice_id)?;
    let line = match existing {
        Some(line) => Some(line),
        None => {
            let payment = PaymentFacts {
                amount: Some(amount),
                currency: Some(invoice.currency.clone()),
                paid_at: invoice.paid_at,
                source: format!("invoice {}", invoice.invoice_id),
            };
            let created = recurring_line(
                tx,
                settings,
                &deal,
                &e,
                rule,
                &lines,
                anchor.line.won_at,
                &payment,
                Some(source),
                now,
            )
            .await?;
            if let Some(line) = &created {
                after_created(
                    tx,
                    settings,
                    &deal,
                    vec![line.clone()],
                    "Referral recurring reward needs review",
                    now,
                )
                .await?;
            }
            match created {
                Some(line) => tx.reward(&line.id).await?,
                None => None,
            }
        }
    };
    let Some(line) = line else {
        return Ok(());
    };
    let mut refunded_before = Decimal::ZERO;
    for refund in refunds {
        let refunded = parse_amount(&refund.amount, "refund", &refund.refund_key)?;
        let before = refunded_before;
        refunded_before += refunded;
        refund_adjustment(
            tx, settings, &deal, &line, invoice, refund, amount, before, refunded, now,
        )
        .await?;
    }
    Ok(())
}

fn parse_amount(text: &str, what: &str, id: &str) -> Result<Decimal, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what} {id}: amount `{text}`: {e}")))
}

/// The adjustment one refund makes to an invoice's recurring line: the same share of the line,
/// taken back in step with it (payable when the line is, in review while the line is).
#[allow(clippy::too_many_arguments)]
async fn refund_adjustment(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    line: &Reward,
    invoice: &Invoice,
    refund: &Refund,
    invoice_amount: Decimal,
    refunded_before: Decimal,
    refunded: Decimal,
    now: Millis,
) -> Result<(), StoreError> {
    let source = refund_source(&refund.refund_key);
    let status = line.line.status;
    // Nothing was (or will be) paid for the line: nothing to take back.
    if matches!(status, RewardStatus::Reversed | RewardStatus::Rejected)
        || !calculate::amount_computed(&line.line.calculation)
    {
        return Ok(());
    }
    if !refund.currency.eq_ignore_ascii_case(&invoice.currency) {
        // Never converted by guess: a person settles it.
        let reason = format!(
            "refund {} is in {}, its invoice in {}: take it back by hand",
            refund.refund_key, refund.currency, invoice.currency
        );
        return tx
            .audit(
                &NewAudit {
                    actor: "system",
                    action: "refund_unmatched",
                    entity_type: "invoice",
                    entity_id: &invoice.invoice_id,
                    old_value: None,
                    new_value: None,
                    reason: Some(&reason),
                },
                now,
            )
            .await;
    }
    let taken =
        recurring::refund_adjustment(line.amount()?, invoice_amount, refunded_before, refunded);
    if taken.is_zero() {
        return Ok(());
    }
    let why = format!(
        "invoice {} refunded {} {} at {}",
        invoice.invoice_id,
        refund.amount,
        refund.currency,
        to_rfc3339(refund.refunded_at)
    );
    let (status, hold_until, review) = match status {
        RewardStatus::Pending => (RewardStatus::Pending, line.line.hold_until, None),
        RewardStatus::NeedsReview => (
            RewardStatus::NeedsReview,
            None,
            Some(format!(
                "takes back part of reward {}, which awaits review",
                line.id
            )),
        ),
        _ => (RewardStatus::Eligible, None, None),
    };
    let calculation = json!({
        "beneficiary": Beneficiary::Referrer,
        "line_kind": LineKind::Adjustment,
        "adjusts": line.id,
        "reason": why,
        "line_amount": line.line.amount,
        "invoice_amount": invoice_amount.to_string(),
        "refunded_before": refunded_before.to_string(),
        "refund_amount": refunded.to_string(),
        "base_amount": taken.to_string(),
        "final_amount": taken.to_string(),
        "formula": format!(
            "−({} × min({}, {}) / {} − {} × {} / {}), each rounded to 2 dp = {taken}",
            line.line.amount,
            (refunded_before + refunded).normalize(),
            invoice_amount.normalize(),
            invoice_amount.normalize(),
            line.line.amount,
            refunded_before.normalize(),
            invoice_amount.normalize(),
        ),
    });
    let new = adjustment(
        line,
        source,
        taken,
        status,
        hold_until,
        review,
        &calculation,
        refund.refunded_at,
    );
    insert_line(tx, settings, deal, &new, now).await?;
    Ok(())
}

/// A negative line taking back (part of) `line`.
#[allow(clippy::too_many_arguments)]
fn adjustment(
    line: &Reward,
    source_key: String,
    amount: Decimal,
    status: RewardStatus,
    hold_until: Option<Millis>,
    review_reason: Option<String>,
    calculation: &serde_json::Value,
    at: Millis,
) -> NewReward {
    NewReward {
        crm: line.line.crm,
        deal_id: line.line.deal_id.clone(),
        beneficiary: line.line.beneficiary,
        referral_id: line.line.referral_id.clone(),
        referrer_code: line.line.referrer_code.clone(),
        market: line.line.market.clone(),
        status,
        kind: ADJUSTMENT_KIND.into(),
        amount: amount.to_string(),
        currency: line.line.currency.clone(),
        tier: line.line.tier.clone(),
        deal_amount: None,
        deal_currency: None,
        fx_rate: None,
        calculation: calculation.to_string(),
        flags: "[]".into(),
        review_reason,
        won_at: at,
        hold_until,
        line_kind: LineKind::Adjustment,
        source_key: Some(source_key),
        adjusts: Some(line.id.clone()),
        payout_schedule: None,
    }
}

/// Take back `taken` (positive) of `line` with an adjustment keyed `source`, payable at once; a
/// withdrawn one with that key is put back in force.
#[allow(clippy::too_many_arguments)]
async fn claw_back(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    line: &Reward,
    taken: Decimal,
    source: &str,
    why: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let existing = tx
        .adjustments_of(&[line.id.as_str()])
        .await?
        .into_iter()
        .find(|a| a.line.source_key.as_deref() == Some(source));
    match existing {
        None => {
            let amount = round_money(-taken);
            let calculation = json!({
                "beneficiary": line.line.beneficiary,
                "line_kind": LineKind::Adjustment,
                "adjusts": line.id,
                "reason": why,
                "line_amount": line.line.amount,
                "base_amount": amount.to_string(),
                "final_amount": amount.to_string(),
                "formula": format!("−{} = {amount}", round_money(taken)),
            });
            let new = adjustment(
                line,
                source.to_string(),
                amount,
                RewardStatus::Eligible,
                None,
                None,
                &calculation,
                now,
            );
            insert_line(tx, settings, deal, &new, now).await?;
        }
        Some(a) if a.line.status == RewardStatus::Reversed => {
            system_move(
                tx,
                settings,
                deal,
                &a.id,
                RewardMove::Restore,
                "clawback_reinstated",
                why,
                now,
            )
            .await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// A line reversed or rejected before it was payable in full, of which installments were paid
/// out already: what was paid comes back as a negative adjustment keyed `source`.
async fn claw_back_paid_shares(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    line: &Reward,
    source: &str,
    why: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let mut paid = Decimal::ZERO;
    for amount in tx.paid_out_amounts(&line.id).await? {
        paid += parse_amount(&amount, "payout line of reward", &line.id)?;
    }
    if paid.is_zero() {
        return Ok(());
    }
    let why = format!("{why}; {paid} {} of it was paid out", line.line.currency);
    claw_back(tx, settings, deal, line, paid, source, &why, now).await
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
        let deal = deal_record(&mut tx, &r).await?;
        if let Some(r) = release(&mut tx, settings, &deal, &r, now).await? {
            released.push((deal, r));
        }
    }
    // Announced once every due reward has moved, so a deal's note shows both sides as they are.
    announce_released(&mut tx, settings, &released, now).await?;
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
                metrics::gauge!("rewards", "status" => status.as_str()).set(n as f64);
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
    /// The move it makes, and the audited action.
    fn step(self) -> (RewardMove, &'static str) {
        match self {
            Self::Approve => (RewardMove::Approve, "reward_approved"),
            Self::Reject => (RewardMove::Reject, "reward_rejected"),
            Self::Paid => (RewardMove::MarkPaid, "reward_paid"),
        }
    }

    /// The status a reward has once the decision is made.
    pub fn outcome(self) -> RewardStatus {
        self.step().0.to()
    }

    fn name(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Paid => "mark paid",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("reward {0} not found")]
    NotFound(String),
    #[error("reward is {status}; {action} needs one of: {allowed}")]
    WrongState {
        status: RewardStatus,
        action: &'static str,
        allowed: String,
    },
    #[error("reward {reward} is in payout statement {payout}; mark the statement paid instead")]
    InStatement { reward: String, payout: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Approve, reject or mark paid, audited with who and why. Adjustments taking back the line follow
/// an approval out of review, and a rejection.
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
    let (step, action) = decision.step();
    let mut tx = store.begin().await?;
    let current = tx
        .reward(reward_id)
        .await?
        .ok_or_else(|| DecisionError::NotFound(reward_id.into()))?;
    if decision == Decision::Paid {
        if let Some(payout) = tx.statement_of(reward_id).await? {
            return Err(DecisionError::InStatement {
                reward: reward_id.into(),
                payout,
            });
        }
    }
    let Some(updated) = tx
        .transition_reward(reward_id, step, Some(actor), None, now)
        .await?
    else {
        return Err(DecisionError::WrongState {
            status: current.line.status,
            action: decision.name(),
            allowed: step
                .from()
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let deal = deal_record(&mut tx, &updated).await?;
    record(
        &mut tx, settings, &deal, &updated, action, actor, reason, now,
    )
    .await?;
    let follow = match decision {
        Decision::Approve if current.line.status == RewardStatus::NeedsReview => {
            Some((RewardMove::ApproveWithLine, "reward_approved"))
        }
        Decision::Reject => Some((RewardMove::RejectWithLine, "reward_rejected")),
        _ => None,
    };
    if let Some((step, action)) = follow {
        let why = format!("follows reward {reward_id}");
        for a in tx.adjustments_of(&[reward_id]).await? {
            if let Some(a) = tx
                .transition_reward(&a.id, step, Some(actor), None, now)
                .await?
            {
                record(&mut tx, settings, &deal, &a, action, actor, Some(&why), now).await?;
            }
        }
    }
    if decision == Decision::Reject {
        let why = reason.unwrap_or_default().to_string();
        let source = rejected_share_source(&updated.id);
        claw_back_paid_shares(&mut tx, settings, &deal, &updated, &source, &why, now).await?;
    }
    if decision == Decision::Approve && current.line.status == RewardStatus::NeedsReview {
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

/// A line a payout statement paid in full: `paid`, audited with the statement's reference, and on
/// the deal. `None` when it was not payable any more.
pub(crate) async fn paid_by_statement(
    tx: &mut Tx,
    settings: &Settings,
    reward_id: &str,
    actor: &str,
    reason: &str,
    now: Millis,
) -> Result<Option<Reward>, StoreError> {
    let Some(paid) = tx
        .transition_reward(reward_id, RewardMove::PaidByStatement, None, None, now)
        .await?
    else {
        return Ok(None);
    };
    let deal = deal_record(tx, &paid).await?;
    record(
        tx,
        settings,
        &deal,
        &paid,
        "reward_paid",
        actor,
        Some(reason),
        now,
    )
    .await?;
    Ok(Some(paid))
}

async fn deal_record(tx: &mut Tx, r: &Reward) -> Result<CrmRecord, StoreError> {
    let key = crate::store::RecordKey::new(r.line.crm, r.line.crm.deal_type(), &r.line.deal_id);
    tx.record(&key)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("reward {} has no deal record", r.id)))
}

/// Audit a reward change and, for the referrer's lines, put the deal's reward state on the deal.
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
                json!({"status": r.line.status, "amount": r.line.amount, "currency": r.line.currency}).to_string(),
            ),
            reason,
        },
        now,
    )
    .await?;
    metrics::counter!("reward_transitions_total", "action" => action.to_string()).increment(1);
    match r.line.beneficiary {
        Beneficiary::Referrer => {
            let properties = deal_properties(tx, settings, deal, r).await?;
            tx.enqueue(&properties, now).await?;
        }
        Beneficiary::Referee => {
            for contact in referee_contacts(tx, deal.crm, &r.line.referral_id).await? {
                tx.enqueue(&referee_properties(settings, &contact, r), now)
                    .await?;
            }
        }
    }
    Ok(())
}

/// The amount and currency to show for a reward; `None` while it has no amount (see
/// [`calculate::amount_computed`]): a 0.00 there would read as "no reward".
fn shown_amount(r: &Reward) -> Option<(&str, &str)> {
    calculate::amount_computed(&r.line.calculation)
        .then_some((r.line.amount.as_str(), r.line.currency.as_str()))
}

/// The referee's contacts in `crm`: the people the referral is attributed to (Salesforce
/// Contacts, not Leads, which carry no reward fields).
async fn referee_contacts(
    tx: &mut Tx,
    crm: Crm,
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
    let n = settings.field_names(contact.crm);
    let (amount, currency) = shown_amount(r).unwrap_or_default();
    let properties: BTreeMap<String, String> = [
        (n.referee_reward_status.clone(), r.line.status.to_string()),
        (n.referee_reward_amount.clone(), amount.to_string()),
        (n.referee_reward_currency.clone(), currency.to_string()),
    ]
    .into_iter()
    .collect();
    CrmCommand::update(properties).on(contact)
}

/// SPEC §5 second row, for the referrer: the deal's reward status, amount, currency and hold end.
/// The status is its own line's, `reversed` while a clawback of it is in force; the amount is its
/// own line's plus the recurring rewards it anchors and the adjustments (negative) in force, so
/// the deal shows what the referrer nets on it. `changed` stands in when the deal has no own line
/// for the referrer.
async fn deal_properties(
    tx: &mut Tx,
    settings: &Settings,
    deal: &CrmRecord,
    changed: &Reward,
) -> Result<NewOutbox, StoreError> {
    let lines: Vec<Reward> = tx
        .deal_rewards(deal.crm, &deal.object_id)
        .await?
        .into_iter()
        .filter(|r| r.line.beneficiary == Beneficiary::Referrer)
        .collect();
    let own = lines
        .iter()
        .find(|r| r.is_deals_own())
        .unwrap_or(changed)
        .clone();
    let mut status = own.line.status;
    let mut net = match shown_amount(&own) {
        Some(_) => Some(own.amount()?),
        None => None,
    };
    for r in lines.iter().filter(|r| r.id != own.id) {
        if !r.line.status.in_force()
            || r.line.currency != own.line.currency
            || shown_amount(r).is_none()
        {
            continue;
        }
        if is_clawback(r) && r.line.adjusts.as_deref() == Some(own.id.as_str()) {
            status = RewardStatus::Reversed;
        }
        let amount = r.amount()?;
        net = net.map(|n| n + amount);
    }
    let n = settings.field_names(deal.crm);
    let (amount, currency) = match net {
        Some(net) => (round_money(net).to_string(), own.line.currency.clone()),
        None => (String::new(), String::new()),
    };
    let hold = own
        .line
        .hold_until
        .map(|h| match deal.crm {
            Crm::HubSpot => h.to_string(),
            Crm::Salesforce => to_rfc3339(h),
        })
        .unwrap_or_default();
    let properties: BTreeMap<String, String> = [
        (n.reward_status.clone(), status.to_string()),
        (n.reward_amount.clone(), amount),
        (n.reward_currency.clone(), currency),
        (n.reward_hold_until.clone(), hold),
    ]
    .into_iter()
    .collect();
    Ok(CrmCommand::update(properties).on(deal))
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
    let summary = summary(tx, deal, r, headline).await?;
    if deal.crm == Crm::HubSpot {
        return Ok(note(deal, &summary, now));
    }
    let (amount, currency) = shown_amount(r).unzip();
    let fields = json!({
        "Opportunity_Id__c": r.line.deal_id, "Beneficiary__c": r.line.beneficiary, "Status__c": r.line.status,
        "Amount__c": amount, "Currency__c": currency, "Referrer_Code__c": r.line.referrer_code,
        "Tier__c": r.line.tier, "Reward_Id__c": r.id, "Summary__c": summary});
    Ok(CrmCommand::PublishEvent {
        event: settings.salesforce.fields.reward_event.clone(),
        fields,
    }
    .on(deal))
}

fn note(deal: &CrmRecord, body: &str, now: Millis) -> NewOutbox {
    CrmCommand::CreateNote {
        body: body.to_string(),
        timestamp: now,
    }
    .on(deal)
}

/// What a note or Platform Event says about `r`: both sides of the deal's own reward for a deal's
/// own line, the one line otherwise.
async fn summary(
    tx: &mut Tx,
    deal: &CrmRecord,
    r: &Reward,
    headline: &str,
) -> Result<String, StoreError> {
    let lines = if r.is_deals_own() {
        own_lines(tx, deal).await?
    } else {
        vec![r.clone()]
    };
    let mut sides = Vec::new();
    for r in &lines {
        sides.push(side(tx, r).await?);
    }
    Ok(format!(
        "{headline} on deal {}: {}.",
        deal.object_id,
        sides.join("; ")
    ))
}

/// One line in one phrase, e.g. "referrer ACME-7 (tier bronze) 3000.00 USD, eligible", "referee
/// ana@northwind.io credit 500.00 USD, eligible", "referrer ACME-7 (tier silver) 180.00 USD for
/// invoice in_2, pending".
async fn side(tx: &mut Tx, r: &Reward) -> Result<String, StoreError> {
    let who = match r.line.beneficiary {
        Beneficiary::Referee => {
            let email = tx
                .referral(&r.line.referral_id)
                .await?
                .map(|referral| referral.first_touch.email);
            format!("referee {}", email.as_deref().unwrap_or("unknown"))
        }
        Beneficiary::Referrer => format!(
            "referrer {}{}",
            r.line.referrer_code.as_deref().unwrap_or("unknown"),
            r.line
                .tier
                .as_deref()
                .map(|t| format!(" (tier {t})"))
                .unwrap_or_default()
        ),
    };
    let what = match shown_amount(r) {
        Some((amount, currency)) if r.line.kind == "credit" => {
            format!("credit {amount} {currency}")
        }
        Some((amount, currency)) => format!("{amount} {currency}"),
        None => "no amount yet".into(),
    };
    let source = match r
        .line
        .source_key
        .as_deref()
        .and_then(|k| k.strip_prefix("invoice:"))
    {
        Some(invoice) => format!(" for invoice {invoice}"),
        None => String::new(),
    };
    let state = match (
        &r.line.review_reason,
        r.line.status == RewardStatus::NeedsReview,
    ) {
        (Some(why), true) => format!("needs review ({why})"),
        _ => r.line.status.label().to_lowercase(),
    };
    Ok(format!("{who} {what}{source}, {state}"))
}

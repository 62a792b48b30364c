//! What a referred deal earns: a pure, deterministic calculation (no I/O, no clock, no database).
//!
//! Given a program, the won deal, the referral (referee) and the referrer, [`evaluate`] decides
//! whether the deal is eligible at all (attribution window, minimum deal amount) and, if it is, one
//! [`RewardDecision`] per beneficiary: the referrer always, the referee when the program is
//! two-sided. Every number is explained in [`RewardDecision::calculation`] so a person can redo
//! the arithmetic. Money is [`Decimal`] throughout; time is epoch milliseconds passed in.
//!
//! Order of the checks:
//! 1. won before the first touch, or more than `attribution_window_days` after it → not eligible;
//! 2. the deal amount is converted into the program currency (`fx`), never guessed;
//! 3. a known converted amount below `min_deal_amount` → not eligible;
//! 4. each beneficiary's reward is computed (referrer: tier multiplier; percent rewards capped
//!    after the multiplier), rounded to 2 dp, midpoint away from zero;
//! 5. a decision goes to review when a blocking fraud flag was raised, the deal currency has no
//!    rate, a percent reward lacks a usable deal amount, the minimum could not be checked, or the
//!    reward is above `approval_threshold`; otherwise it is pending until `won_at + hold_days`.

use std::net::IpAddr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::{Millis, DAY};
use crate::config::{FraudSettings, ProgramSettings, RewardRule, TierSettings};

const SELF_REFERRAL: &str = "self_referral";
const SHARED_IP: &str = "shared_ip";
const EXISTING_CUSTOMER: &str = "existing_customer";
const DISPOSABLE_DOMAIN: &str = "disposable_domain";
const VELOCITY: &str = "velocity";

/// The won deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealFacts {
    /// The deal amount in `currency`; `None` when the CRM has none.
    pub amount: Option<Decimal>,
    /// ISO code of the deal amount; `None` (or blank) means the program currency.
    pub currency: Option<String>,
    /// When the deal reached the program's success stage.
    pub won_at: Millis,
}

/// The referred person (the referral).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefereeFacts {
    /// Normalised lowercase email.
    pub email: String,
    /// The write-once first touch.
    pub first_touch_at: Millis,
    pub signup_ip: Option<IpAddr>,
    /// A CRM contact with this email existed before the first touch.
    pub known_to_crm_before_first_touch: bool,
}

/// The referrer and what is known about their other referrals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferrerFacts {
    pub code: String,
    pub email: Option<String>,
    pub company_domain: Option<String>,
    /// Successful referrals of this referrer, counting this deal.
    pub successful_including_this: u32,
    /// Signup IPs (and first-touch times) of this referrer's OTHER referees.
    pub other_referee_ips: Vec<(IpAddr, Millis)>,
    /// Referrals by this referrer within `fraud.velocity_window_days` before this referral's
    /// first touch, including this one.
    pub referrals_in_velocity_window: u32,
}

/// Who a reward is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Beneficiary {
    Referrer,
    Referee,
}

impl Beneficiary {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referrer => "referrer",
            Self::Referee => "referee",
        }
    }
}

/// The status a new reward starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialStatus {
    Pending,
    NeedsReview,
}

impl InitialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::NeedsReview => "needs_review",
        }
    }
}

/// One beneficiary's reward for one deal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RewardDecision {
    pub beneficiary: Beneficiary,
    /// `percent_of_deal`, `flat` or `credit`.
    pub kind: &'static str,
    /// In `currency`, rounded to 2 dp (midpoint away from zero), always with scale 2; 0.00 when it
    /// cannot be computed (the decision is then in review and `review_reasons` says why).
    pub amount: Decimal,
    /// The program currency.
    pub currency: String,
    /// The referrer's tier; `None` for the referee or below the first tier.
    pub tier: Option<String>,
    /// The tier multiplier applied; 1 for the referee.
    pub multiplier: Decimal,
    /// The rate used when the deal is in another currency (1 deal unit = rate program units).
    pub fx_rate: Option<Decimal>,
    /// The deal amount in the program currency, unrounded; `None` when unknown.
    pub deal_amount_converted: Option<Decimal>,
    pub status: InitialStatus,
    /// Human sentences; empty exactly when `status` is `Pending`.
    pub review_reasons: Vec<String>,
    /// Every fraud flag raised, blocking or not.
    pub flags: Vec<String>,
    /// `won_at + hold_days` days.
    pub hold_until: Millis,
    /// Every input and intermediate value (decimals as strings).
    pub calculation: Value,
}

/// The outcome for one won deal.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// The deal earns nothing; `reason` is a human sentence.
    NotEligible { reason: String },
    /// One decision for the referrer, then one for the referee when the program is two-sided.
    Rewards(Vec<RewardDecision>),
}

/// The deal amount in the program currency, or why it is not known.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DealValue {
    Known(Decimal),
    /// The deal has no amount.
    Missing,
    /// The deal is in a currency the program has no rate for.
    NoRate,
    /// amount × rate does not fit a decimal.
    Overflow,
}

/// What every decision of one evaluation shares.
struct Shared<'a> {
    program: &'a ProgramSettings,
    deal: &'a DealFacts,
    referee: &'a RefereeFacts,
    deal_currency: String,
    currency_assumed: bool,
    fx_rate: Option<Decimal>,
    fx_missing: Option<String>,
    value: DealValue,
    min_unchecked: Option<String>,
    flags: Vec<String>,
    blocking: Vec<String>,
    elapsed_ms: Millis,
    hold_until: Millis,
}

/// The arithmetic of one rule.
struct Computed {
    amount: Decimal,
    base: Option<Decimal>,
    pre_cap: Option<Decimal>,
    cap: Option<Decimal>,
    capped: bool,
    formula: String,
    problem: Option<String>,
}

/// Decide what a won deal earns. Pure and deterministic.
pub fn evaluate(
    program: &ProgramSettings,
    fraud: &FraudSettings,
    deal: &DealFacts,
    referee: &RefereeFacts,
    referrer: &ReferrerFacts,
) -> Evaluation {
    // 1. Attribution window, measured exactly in milliseconds.
    let window_days = program.attribution_window_days;
    let Some(elapsed_ms) = deal.won_at.checked_sub(referee.first_touch_at) else {
        return not_eligible("the win and first-touch times are too far apart to compare".into());
    };
    if elapsed_ms < 0 {
        return not_eligible(format!(
            "won before the first touch (won at {} ms, first touch at {} ms)",
            deal.won_at, referee.first_touch_at
        ));
    }
    if elapsed_ms > i64::from(window_days) * DAY {
        let whole_days = elapsed_ms / DAY;
        let reason = if whole_days > i64::from(window_days) {
            format!(
                "won {whole_days} days after the first touch, outside the {window_days}-day window"
            )
        } else {
            format!(
                "won more than {window_days} days after the first touch, outside the {window_days}-day window"
            )
        };
        return not_eligible(reason);
    }

    // 2. Currency: never guess a rate.
    let program_currency = program.currency.trim().to_ascii_uppercase();
    let (deal_currency, currency_assumed) = match deal
        .currency
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        Some(c) => (c.to_ascii_uppercase(), false),
        None => (program_currency.clone(), true),
    };
    let same_currency = deal_currency == program_currency;
    let fx_rate = if same_currency {
        None
    } else {
        program
            .fx
            .iter()
            .find(|(cur, _)| cur.trim().eq_ignore_ascii_case(&deal_currency))
            .map(|(_, rate)| *rate)
            .filter(|rate| *rate > Decimal::ZERO)
    };
    let fx_missing = (!same_currency && fx_rate.is_none())
        .then(|| format!("no FX rate for {deal_currency} → {}", program.currency));
    let value = match (deal.amount, fx_rate) {
        (None, _) => DealValue::Missing,
        (Some(_), None) if fx_missing.is_some() => DealValue::NoRate,
        (Some(amount), None) => DealValue::Known(amount),
        (Some(amount), Some(rate)) => amount
            .checked_mul(rate)
            .map_or(DealValue::Overflow, DealValue::Known),
    };

    // 3. The program minimum, on the converted amount.
    let mut min_unchecked = None;
    if let Some(min) = program.min_deal_amount {
        match value {
            DealValue::Known(converted) if converted < min => {
                let rounded = round_money(converted);
                let shown = if rounded < min { rounded } else { converted };
                return not_eligible(format!(
                    "deal amount {shown} {} is below the program minimum {min}",
                    program.currency
                ));
            }
            DealValue::Known(_) => {}
            other => {
                min_unchecked = Some(format!(
                    "the program minimum {min} {} could not be checked: {}",
                    program.currency,
                    value_problem(other, deal, &deal_currency, fx_missing.as_deref())
                ));
            }
        }
    }

    // 4. Fraud flags; those the program blocks on send every decision to review.
    let flags = fraud_flags(fraud, referee, referrer);
    let blocking = flags
        .iter()
        .filter(|f| program.block_on.iter().any(|b| b == *f))
        .map(|f| format!("fraud flag {f} blocks automatic approval"))
        .collect();

    let shared = Shared {
        program,
        deal,
        referee,
        deal_currency,
        currency_assumed,
        fx_rate,
        fx_missing,
        value,
        min_unchecked,
        flags,
        blocking,
        elapsed_ms,
        hold_until: deal
            .won_at
            .saturating_add(i64::from(program.hold_days) * DAY),
    };

    // 5. One decision per beneficiary.
    let tier = tier_for(&program.tiers, referrer.successful_including_this);
    let mut decisions = vec![decide(
        &shared,
        Beneficiary::Referrer,
        &program.reward,
        tier,
        Some(referrer.successful_including_this),
    )];
    if let Some(rule) = &program.referee_reward {
        decisions.push(decide(&shared, Beneficiary::Referee, rule, None, None));
    }
    Evaluation::Rewards(decisions)
}

/// The fraud flags raised for this referral, in a fixed order: `self_referral`, `shared_ip`,
/// `existing_customer`, `disposable_domain`, `velocity`.
pub fn fraud_flags(
    fraud: &FraudSettings,
    referee: &RefereeFacts,
    referrer: &ReferrerFacts,
) -> Vec<String> {
    let referee_domain = email_domain(&referee.email);
    let mut flags = Vec::new();
    if is_self_referral(fraud, referee, referee_domain.as_deref(), referrer) {
        flags.push(SELF_REFERRAL);
    }
    if shares_ip(fraud, referee, referrer) {
        flags.push(SHARED_IP);
    }
    if referee.known_to_crm_before_first_touch {
        flags.push(EXISTING_CUSTOMER);
    }
    if referee_domain
        .as_deref()
        .is_some_and(|d| domain_listed(&fraud.disposable_domains, d))
    {
        flags.push(DISPOSABLE_DOMAIN);
    }
    if referrer.referrals_in_velocity_window > fraud.velocity_max_referrals {
        flags.push(VELOCITY);
    }
    flags.into_iter().map(String::from).collect()
}

/// The highest tier whose `min_successful` the count reaches (tiers in any order); `None` below
/// the first tier.
pub fn tier_for(tiers: &[TierSettings], successful: u32) -> Option<&TierSettings> {
    tiers
        .iter()
        .filter(|t| t.min_successful <= successful)
        .max_by_key(|t| t.min_successful)
}

fn not_eligible(reason: String) -> Evaluation {
    Evaluation::NotEligible { reason }
}

fn round_money(amount: Decimal) -> Decimal {
    let mut rounded = amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    // Only pads (the value already has at most 2 dp): 50000 → 50000.00.
    rounded.rescale(2);
    rounded
}

fn kind_of(rule: &RewardRule) -> &'static str {
    match rule {
        RewardRule::PercentOfDeal { .. } => "percent_of_deal",
        RewardRule::Flat { .. } => "flat",
        RewardRule::Credit { .. } => "credit",
    }
}

/// Why the deal amount in the program currency is not known.
fn value_problem(
    value: DealValue,
    deal: &DealFacts,
    deal_currency: &str,
    fx_missing: Option<&str>,
) -> String {
    match value {
        DealValue::Known(_) => String::new(),
        DealValue::Missing => "deal amount unknown".into(),
        DealValue::NoRate => fx_missing.unwrap_or("no FX rate").to_string(),
        DealValue::Overflow => format!(
            "deal amount {} {deal_currency} is too large to convert",
            deal.amount.unwrap_or_default()
        ),
    }
}

fn compute(shared: &Shared<'_>, rule: &RewardRule, multiplier: Decimal) -> Computed {
    let currency = &shared.program.currency;
    let overflow = || Computed {
        amount: round_money(Decimal::ZERO),
        base: None,
        pre_cap: None,
        cap: None,
        capped: false,
        formula: "the reward is too large to compute".into(),
        problem: Some("the reward is too large to compute".into()),
    };
    match rule {
        RewardRule::PercentOfDeal { percent, cap } => {
            let converted = match shared.value {
                DealValue::Known(c) if c < Decimal::ZERO => {
                    let reason = format!("deal amount {} {currency} is negative", round_money(c));
                    return Computed {
                        amount: round_money(Decimal::ZERO),
                        base: None,
                        pre_cap: None,
                        cap: *cap,
                        capped: false,
                        formula: format!("not computed: {reason}"),
                        problem: Some(reason),
                    };
                }
                DealValue::Known(c) => c,
                other => {
                    let reason = value_problem(
                        other,
                        shared.deal,
                        &shared.deal_currency,
                        shared.fx_missing.as_deref(),
                    );
                    return Computed {
                        amount: round_money(Decimal::ZERO),
                        base: None,
                        pre_cap: None,
                        cap: *cap,
                        capped: false,
                        formula: format!("not computed: {reason}"),
                        // A missing rate is already a reason on every decision.
                        problem: (other != DealValue::NoRate).then_some(reason),
                    };
                }
            };
            let Some(base) = converted
                .checked_mul(*percent)
                .and_then(|x| x.checked_div(Decimal::ONE_HUNDRED))
            else {
                return overflow();
            };
            let Some(pre_cap) = base.checked_mul(multiplier) else {
                return overflow();
            };
            let capped = cap.is_some_and(|c| pre_cap > c);
            let bounded = match cap {
                Some(c) if capped => *c,
                _ => pre_cap,
            };
            let amount = round_money(bounded);
            let cap_step = match cap {
                Some(c) if capped => format!("capped at {c} → {c}"),
                Some(c) => format!("cap {c} not reached → {}", pre_cap.normalize()),
                None => "no cap".into(),
            };
            Computed {
                amount,
                base: Some(base),
                pre_cap: Some(pre_cap),
                cap: *cap,
                capped,
                formula: format!(
                    "{} {currency} × {percent} / 100 = {}; × {multiplier} = {}; {cap_step}; rounded to 2 dp = {amount}",
                    converted.normalize(),
                    base.normalize(),
                    pre_cap.normalize(),
                ),
                problem: None,
            }
        }
        RewardRule::Flat { amount: base } | RewardRule::Credit { amount: base } => {
            let Some(pre_cap) = base.checked_mul(multiplier) else {
                return overflow();
            };
            let amount = round_money(pre_cap);
            Computed {
                amount,
                base: Some(*base),
                pre_cap: Some(pre_cap),
                cap: None,
                capped: false,
                formula: format!(
                    "{base} {currency} × {multiplier} = {}; rounded to 2 dp = {amount}",
                    pre_cap.normalize()
                ),
                problem: None,
            }
        }
    }
}

fn decide(
    shared: &Shared<'_>,
    beneficiary: Beneficiary,
    rule: &RewardRule,
    tier: Option<&TierSettings>,
    successful: Option<u32>,
) -> RewardDecision {
    let program = shared.program;
    let multiplier = tier.map_or(Decimal::ONE, |t| t.multiplier);
    let computed = compute(shared, rule, multiplier);

    // Review reasons, in a fixed order: fraud blocks, FX, this reward's own problem, the minimum,
    // the approval threshold.
    let mut reasons = shared.blocking.clone();
    reasons.extend(shared.fx_missing.clone());
    reasons.extend(computed.problem.clone());
    reasons.extend(shared.min_unchecked.clone());
    if let Some(threshold) = program.approval_threshold {
        if computed.amount > threshold {
            reasons.push(format!(
                "reward {} {} is above the approval threshold {threshold}",
                computed.amount, program.currency
            ));
        }
    }
    let status = if reasons.is_empty() {
        InitialStatus::Pending
    } else {
        InitialStatus::NeedsReview
    };
    let converted = match shared.value {
        DealValue::Known(c) => Some(c),
        _ => None,
    };

    let dec = |d: Decimal| Value::String(d.to_string());
    let opt = |d: Option<Decimal>| d.map_or(Value::Null, dec);
    let rule_json = match rule {
        RewardRule::PercentOfDeal { percent, cap } => {
            json!({ "kind": kind_of(rule), "percent": dec(*percent), "cap": opt(*cap) })
        }
        RewardRule::Flat { amount } | RewardRule::Credit { amount } => {
            json!({ "kind": kind_of(rule), "amount": dec(*amount) })
        }
    };
    let days_to_win = (Decimal::from(shared.elapsed_ms) / Decimal::from(DAY))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    let calculation = json!({
        "beneficiary": beneficiary.as_str(),
        "program_currency": program.currency,
        "deal_amount": opt(shared.deal.amount),
        "deal_currency": shared.deal_currency,
        "deal_currency_assumed": shared.currency_assumed,
        "fx_rate": opt(shared.fx_rate),
        "deal_amount_converted": opt(converted),
        "rule": rule_json,
        "tier": tier.map(|t| t.name.clone()),
        "tier_min_successful": tier.map(|t| t.min_successful),
        "successful_including_this": successful,
        "multiplier": dec(multiplier),
        "base_amount": opt(computed.base),
        "pre_cap_amount": opt(computed.pre_cap),
        "cap": opt(computed.cap),
        "capped": computed.capped,
        "final_amount": dec(computed.amount),
        "rounding": "2 dp, midpoint away from zero",
        "formula": computed.formula,
        "min_deal_amount": opt(program.min_deal_amount),
        "approval_threshold": opt(program.approval_threshold),
        "attribution_window_days": program.attribution_window_days,
        "first_touch_at": shared.referee.first_touch_at,
        "won_at": shared.deal.won_at,
        "elapsed_ms": shared.elapsed_ms,
        "days_to_win": dec(days_to_win),
        "hold_days": program.hold_days,
        "hold_until": shared.hold_until,
        "flags": shared.flags,
        "block_on": program.block_on,
    });

    RewardDecision {
        beneficiary,
        kind: kind_of(rule),
        amount: computed.amount,
        currency: program.currency.clone(),
        tier: tier.map(|t| t.name.clone()),
        multiplier,
        fx_rate: shared.fx_rate,
        deal_amount_converted: converted,
        status,
        review_reasons: reasons,
        flags: shared.flags.clone(),
        hold_until: shared.hold_until,
        calculation,
    }
}

fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn normalise_domain(domain: &str) -> String {
    domain
        .trim()
        .trim_start_matches('@')
        .trim_end_matches('.')
        .to_lowercase()
}

/// The lowercase domain of an email address, if it has one.
fn email_domain(email: &str) -> Option<String> {
    let (_, domain) = email.trim().rsplit_once('@')?;
    let domain = normalise_domain(domain);
    (!domain.is_empty()).then_some(domain)
}

fn domain_listed(list: &[String], domain: &str) -> bool {
    list.iter().any(|d| normalise_domain(d) == domain)
}

fn is_self_referral(
    fraud: &FraudSettings,
    referee: &RefereeFacts,
    referee_domain: Option<&str>,
    referrer: &ReferrerFacts,
) -> bool {
    let referee_email = normalise_email(&referee.email);
    if let Some(referrer_email) = referrer.email.as_deref().map(normalise_email) {
        if !referee_email.is_empty() && referee_email == referrer_email {
            return true;
        }
    }
    let Some(domain) = referee_domain else {
        return false;
    };
    if domain_listed(&fraud.free_mail_domains, domain) {
        return false;
    }
    let company = referrer
        .company_domain
        .as_deref()
        .map(normalise_domain)
        .filter(|d| !d.is_empty());
    let referrer_email_domain = referrer.email.as_deref().and_then(email_domain);
    company.as_deref() == Some(domain) || referrer_email_domain.as_deref() == Some(domain)
}

fn shares_ip(fraud: &FraudSettings, referee: &RefereeFacts, referrer: &ReferrerFacts) -> bool {
    let Some(ip) = referee.signup_ip.map(|ip| ip.to_canonical()) else {
        return false;
    };
    let window = u64::from(fraud.shared_ip_window_days) * DAY.unsigned_abs();
    let others = referrer
        .other_referee_ips
        .iter()
        .filter(|(other, at)| {
            other.to_canonical() == ip && at.abs_diff(referee.first_touch_at) <= window
        })
        .count();
    // At least one other referee is always needed, even if the setting says 0.
    others >= fraud.shared_ip_min_others.max(1) as usize
}

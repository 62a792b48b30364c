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
pub use crate::domain::reward::Beneficiary;
use crate::domain::reward::RewardStatus;

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

/// The status a new reward starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialStatus {
    Pending,
    NeedsReview,
}

impl From<InitialStatus> for RewardStatus {
    fn from(status: InitialStatus) -> Self {
        match status {
            InitialStatus::Pending => RewardStatus::Pending,
            InitialStatus::NeedsReview => RewardStatus::NeedsReview,
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
pub(crate) enum DealValue {
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
    let Converted {
        currency: deal_currency,
        assumed: currency_assumed,
        fx_rate,
        fx_missing,
        value,
    } = convert(program, deal.amount, deal.currency.as_deref());

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
                    value_problem(other, deal.amount, &deal_currency, fx_missing.as_deref())
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

/// Whether a stored [`RewardDecision::calculation`] arrived at an amount. One that could not (no
/// FX rate, no deal amount, an overflow) records 0.00 with no base amount, and that 0.00 is not a
/// reward anyone was promised.
pub fn amount_computed(calculation: &str) -> bool {
    serde_json::from_str::<Value>(calculation)
        .map_or(true, |c| !c.get("base_amount").is_some_and(Value::is_null))
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

/// 2 dp, midpoint away from zero, always with scale 2.
pub(crate) fn round_money(amount: Decimal) -> Decimal {
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
pub(crate) fn value_problem(
    value: DealValue,
    amount: Option<Decimal>,
    deal_currency: &str,
    fx_missing: Option<&str>,
) -> String {
    match value {
        DealValue::Known(_) => String::new(),
        DealValue::Missing => "deal amount unknown".into(),
        DealValue::NoRate => fx_missing.unwrap_or("no FX rate").to_string(),
        DealValue::Overflow => format!(
            "deal amount {} {deal_currency} is too large to convert",
            amount.unwrap_or_default()
        ),
    }
}

/// An amount in the program currency, or why it is not known.
pub(crate) struct Converted {
    /// The amount's currency (uppercase); the program's when none was given.
    pub currency: String,
    /// No currency was given and the program's was assumed.
    pub assumed: bool,
    /// The rate used, when the amount is in another currency.
    pub fx_rate: Option<Decimal>,
    /// "no FX rate for GBP → USD" when there is none.
    pub fx_missing: Option<String>,
    pub value: DealValue,
}

/// `amount` in `currency` converted into the program currency with the program's `fx` table;
/// never guessed.
pub(crate) fn convert(
    program: &ProgramSettings,
    amount: Option<Decimal>,
    currency: Option<&str>,
) -> Converted {
    let program_currency = program.currency.trim().to_ascii_uppercase();
    let (currency, assumed) = match currency.map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => (c.to_ascii_uppercase(), false),
        None => (program_currency.clone(), true),
    };
    let same_currency = currency == program_currency;
    let fx_rate = if same_currency {
        None
    } else {
        program
            .fx
            .iter()
            .find(|(cur, _)| cur.trim().eq_ignore_ascii_case(&currency))
            .map(|(_, rate)| *rate)
            .filter(|rate| *rate > Decimal::ZERO)
    };
    let fx_missing = (!same_currency && fx_rate.is_none())
        .then(|| format!("no FX rate for {currency} → {}", program.currency));
    let value = match (amount, fx_rate) {
        (None, _) => DealValue::Missing,
        (Some(_), None) if fx_missing.is_some() => DealValue::NoRate,
        (Some(amount), None) => DealValue::Known(amount),
        (Some(amount), Some(rate)) => amount
            .checked_mul(rate)
            .map_or(DealValue::Overflow, DealValue::Known),
    };
    Converted {
        currency,
        assumed,
        fx_rate,
        fx_missing,
        value,
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
                        shared.deal.amount,
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

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use crate::domain::stage::CanonicalStage;

    use super::*;
    use crate::config::{InstallmentSettings, RecurringRule};
    use crate::domain::payout::InstallmentAt;

    /// First touch: 2023-11-14T22:13:20Z.
    pub(crate) const T0: Millis = 1_700_000_000_000;
    /// Won 120 days after the first touch.
    pub(crate) const WON: Millis = T0 + 120 * DAY;
    /// WON + 30 hold days.
    const HOLD: Millis = WON + 30 * DAY;

    pub(crate) fn d(s: &str) -> Decimal {
        s.parse().expect("decimal literal")
    }

    fn tiers(names: [&str; 3]) -> Vec<TierSettings> {
        [
            (names[0], 1, "1.0"),
            (names[1], 3, "1.5"),
            (names[2], 5, "2.0"),
        ]
        .into_iter()
        .map(|(name, min, mult)| TierSettings {
            name: name.into(),
            min_successful: min,
            multiplier: d(mult),
        })
        .collect()
    }

    /// `[programs.US]` of config/example.toml (checked by `fixtures_are_the_example_programs`).
    pub(crate) fn us() -> ProgramSettings {
        ProgramSettings {
            currency: "USD".into(),
            success_stage: CanonicalStage::Won,
            attribution_window_days: 365,
            hold_days: 30,
            min_deal_amount: Some(d("1000")),
            approval_threshold: Some(d("10000")),
            reward: RewardRule::PercentOfDeal {
                percent: d("7.5"),
                cap: Some(d("5000")),
            },
            referee_reward: Some(RewardRule::Credit { amount: d("500") }),
            tiers: tiers(["bronze", "silver", "gold"]),
            fx: BTreeMap::from([("EUR".to_string(), d("1.08"))]),
            block_on: vec!["self_referral".into(), "shared_ip".into()],
            recurring: Some(RecurringRule {
                percent: d("10"),
                months: 12,
                cap: Some(d("20000")),
            }),
            payout_terms_days: 30,
            payout_schedule: vec![],
        }
    }

    /// `[programs.RU]` of config/example.toml, defaults filled in.
    pub(crate) fn ru() -> ProgramSettings {
        ProgramSettings {
            currency: "RUB".into(),
            success_stage: CanonicalStage::Won,
            attribution_window_days: 365,
            hold_days: 30,
            min_deal_amount: None,
            approval_threshold: None,
            reward: RewardRule::Flat { amount: d("50000") },
            referee_reward: None,
            tiers: tiers(["member", "insider", "ambassador"]),
            fx: BTreeMap::new(),
            block_on: vec!["self_referral".into()],
            recurring: None,
            payout_terms_days: 30,
            payout_schedule: vec![
                InstallmentSettings {
                    at: InstallmentAt::Won,
                    share: d("0.5"),
                },
                InstallmentSettings {
                    at: InstallmentAt::HoldEnd,
                    share: d("0.5"),
                },
            ],
        }
    }

    fn us_with(change: impl FnOnce(&mut ProgramSettings)) -> ProgramSettings {
        let mut p = us();
        change(&mut p);
        p
    }

    /// The compiled-in defaults of `[fraud]`, with shorter domain lists.
    pub(crate) fn fraud() -> FraudSettings {
        FraudSettings {
            free_mail_domains: vec!["gmail.com".into(), "yandex.ru".into()],
            disposable_domains: vec!["mailinator.com".into()],
            shared_ip_min_others: 1,
            shared_ip_window_days: 30,
            velocity_max_referrals: 20,
            velocity_window_days: 7,
        }
    }

    fn deal(amount: Option<&str>, currency: Option<&str>) -> DealFacts {
        DealFacts {
            amount: amount.map(d),
            currency: currency.map(String::from),
            won_at: WON,
        }
    }

    fn usd(amount: &str) -> DealFacts {
        deal(Some(amount), Some("USD"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip literal")
    }

    pub(crate) fn referee() -> RefereeFacts {
        RefereeFacts {
            email: "bob@beta.io".into(),
            first_touch_at: T0,
            signup_ip: Some(ip("203.0.113.7")),
            known_to_crm_before_first_touch: false,
        }
    }

    pub(crate) fn referrer(successful: u32) -> ReferrerFacts {
        ReferrerFacts {
            code: "ALICE".into(),
            email: Some("alice@acme.com".into()),
            company_domain: Some("acme.com".into()),
            successful_including_this: successful,
            other_referee_ips: vec![],
            referrals_in_velocity_window: 1,
        }
    }

    #[derive(Debug, Clone)]
    struct Want {
        beneficiary: Beneficiary,
        kind: &'static str,
        /// Compared as a string, so the scale (2 dp) is checked too.
        amount: &'static str,
        currency: &'static str,
        tier: Option<&'static str>,
        multiplier: &'static str,
        fx_rate: Option<&'static str>,
        /// `None`: not checked; `Some(None)`: must be unknown.
        converted: Option<Option<&'static str>>,
        status: InitialStatus,
        reasons: Vec<&'static str>,
        flags: Vec<&'static str>,
    }

    fn referrer_gets(
        kind: &'static str,
        amount: &'static str,
        tier: Option<&'static str>,
        multiplier: &'static str,
    ) -> Want {
        Want {
            beneficiary: Beneficiary::Referrer,
            kind,
            amount,
            currency: "USD",
            tier,
            multiplier,
            fx_rate: None,
            converted: None,
            status: InitialStatus::Pending,
            reasons: vec![],
            flags: vec![],
        }
    }

    fn referee_gets(kind: &'static str, amount: &'static str) -> Want {
        Want {
            beneficiary: Beneficiary::Referee,
            tier: None,
            multiplier: "1",
            ..referrer_gets(kind, amount, None, "1")
        }
    }

    /// The US referee's credit: 500 × 1 (no tier) = 500.00.
    fn credit500() -> Want {
        referee_gets("credit", "500.00")
    }

    impl Want {
        fn currency(mut self, currency: &'static str) -> Self {
            self.currency = currency;
            self
        }
        fn fx(mut self, rate: &'static str, converted: &'static str) -> Self {
            self.fx_rate = Some(rate);
            self.converted = Some(Some(converted));
            self
        }
        fn converted(mut self, converted: Option<&'static str>) -> Self {
            self.converted = Some(converted);
            self
        }
        fn review(mut self, reasons: &[&'static str]) -> Self {
            self.status = InitialStatus::NeedsReview;
            self.reasons = reasons.to_vec();
            self
        }
        fn flags(mut self, flags: &[&'static str]) -> Self {
            self.flags = flags.to_vec();
            self
        }
    }

    #[derive(Debug)]
    enum Expect {
        NotEligible(String),
        Rewards(Vec<Want>),
    }

    fn rewards(wants: Vec<Want>) -> Expect {
        Expect::Rewards(wants)
    }

    fn not_eligible(reason: &str) -> Expect {
        Expect::NotEligible(reason.into())
    }

    struct Case {
        name: &'static str,
        program: ProgramSettings,
        fraud: FraudSettings,
        deal: DealFacts,
        referee: RefereeFacts,
        referrer: ReferrerFacts,
        expect: Expect,
    }

    impl Case {
        fn new(
            name: &'static str,
            program: ProgramSettings,
            deal: DealFacts,
            successful: u32,
            expect: Expect,
        ) -> Self {
            Self {
                name,
                program,
                fraud: fraud(),
                deal,
                referee: referee(),
                referrer: referrer(successful),
                expect,
            }
        }
        fn referee(mut self, change: impl FnOnce(&mut RefereeFacts)) -> Self {
            change(&mut self.referee);
            self
        }
        fn referrer(mut self, change: impl FnOnce(&mut ReferrerFacts)) -> Self {
            change(&mut self.referrer);
            self
        }
        fn fraud(mut self, change: impl FnOnce(&mut FraudSettings)) -> Self {
            change(&mut self.fraud);
            self
        }
    }

    const SELF_BLOCKS: &str = "fraud flag self_referral blocks automatic approval";
    const SHARED_IP_BLOCKS: &str = "fraud flag shared_ip blocks automatic approval";
    const NO_GBP_RATE: &str = "no FX rate for GBP → USD";
    const MIN_UNCHECKED_GBP: &str =
        "the program minimum 1000 USD could not be checked: no FX rate for GBP → USD";
    const MIN_UNCHECKED_AMOUNT: &str =
        "the program minimum 1000 USD could not be checked: deal amount unknown";

    fn cases() -> Vec<Case> {
        let pct = "percent_of_deal";
        vec![
            // ---- percent of deal, cap --------------------------------------------------------
            Case::new(
                "percent, cap binds",
                us(),
                usd("80000"),
                1,
                // 80000 × 7.5 / 100 = 6000 × 1.0 (bronze) = 6000 > cap 5000 → 5000.00
                rewards(vec![
                    referrer_gets(pct, "5000.00", Some("bronze"), "1.0").converted(Some("80000")),
                    credit500(),
                ]),
            ),
            Case::new(
                "percent, cap does not bind",
                us(),
                usd("40000"),
                3,
                // 40000 × 7.5 / 100 = 3000 × 1.5 (silver) = 4500 ≤ cap 5000 → 4500.00
                rewards(vec![
                    referrer_gets(pct, "4500.00", Some("silver"), "1.5"),
                    credit500(),
                ]),
            ),
            Case::new(
                "percent, the cap bounds the reward after the multiplier",
                us(),
                usd("40000"),
                5,
                // 40000 × 7.5 / 100 = 3000 × 2.0 (gold) = 6000 > cap 5000 → 5000.00
                // (capping before the multiplier would give min(3000, 5000) × 2 = 6000.00)
                rewards(vec![
                    referrer_gets(pct, "5000.00", Some("gold"), "2.0"),
                    credit500(),
                ]),
            ),
            Case::new(
                "percent without cap",
                us_with(|p| {
                    p.reward = RewardRule::PercentOfDeal {
                        percent: d("7.5"),
                        cap: None,
                    }
                }),
                usd("80000"),
                1,
                // 80000 × 7.5 / 100 = 6000 × 1.0 = 6000.00 (no cap)
                rewards(vec![
                    referrer_gets(pct, "6000.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            ),
            // ---- flat and credit -------------------------------------------------------------
            Case::new(
                "flat, times the tier multiplier",
                us_with(|p| p.reward = RewardRule::Flat { amount: d("250") }),
                usd("40000"),
                3,
                // 250 × 1.5 (silver) = 375.00; the deal amount plays no part
                rewards(vec![
                    referrer_gets("flat", "375.00", Some("silver"), "1.5"),
                    credit500(),
                ]),
            ),
            Case::new(
                "credit, times the tier multiplier",
                us_with(|p| p.reward = RewardRule::Credit { amount: d("100") }),
                usd("40000"),
                5,
                // 100 × 2.0 (gold) = 200.00
                rewards(vec![
                    referrer_gets("credit", "200.00", Some("gold"), "2.0"),
                    credit500(),
                ]),
            ),
            // ---- tiers (20000 × 7.5 / 100 = 1500 before the multiplier) ------------------------
            Case::new(
                "tier: 1st successful referral is bronze 1.0x",
                us(),
                usd("20000"),
                1,
                // 1500 × 1.0 = 1500.00
                rewards(vec![
                    referrer_gets(pct, "1500.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            ),
            Case::new(
                "tier: 2nd successful referral is still bronze",
                us(),
                usd("20000"),
                2,
                // 1500 × 1.0 = 1500.00
                rewards(vec![
                    referrer_gets(pct, "1500.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            ),
            Case::new(
                "tier: 3rd successful referral is silver 1.5x",
                us(),
                usd("20000"),
                3,
                // 1500 × 1.5 = 2250.00
                rewards(vec![
                    referrer_gets(pct, "2250.00", Some("silver"), "1.5"),
                    credit500(),
                ]),
            ),
            Case::new(
                "tier: 5th successful referral is gold 2.0x",
                us(),
                usd("20000"),
                5,
                // 1500 × 2.0 = 3000.00
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("gold"), "2.0"),
                    credit500(),
                ]),
            ),
            Case::new(
                "tier: 12th successful referral stays gold",
                us(),
                usd("20000"),
                12,
                // 1500 × 2.0 = 3000.00
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("gold"), "2.0"),
                    credit500(),
                ]),
            ),
            Case::new(
                "tier: a count below the first tier has no tier and multiplier 1",
                us(),
                usd("20000"),
                0,
                // 1500 × 1 = 1500.00
                rewards(vec![referrer_gets(pct, "1500.00", None, "1"), credit500()]),
            ),
            // ---- the RU example program ------------------------------------------------------
            Case::new(
                "RU: flat 50000 RUB, 1st referral is member",
                ru(),
                deal(Some("2000000"), Some("RUB")),
                1,
                // 50000 × 1.0 = 50000.00; one-sided: no referee decision
                rewards(vec![referrer_gets(
                    "flat",
                    "50000.00",
                    Some("member"),
                    "1.0",
                )
                .currency("RUB")
                .converted(Some("2000000"))]),
            ),
            Case::new(
                "RU: 3rd referral is insider",
                ru(),
                deal(Some("2000000"), None),
                3,
                // 50000 × 1.5 = 75000.00 (currency missing → RUB assumed)
                rewards(vec![referrer_gets(
                    "flat",
                    "75000.00",
                    Some("insider"),
                    "1.5",
                )
                .currency("RUB")
                .converted(Some("2000000"))]),
            ),
            Case::new(
                "RU: 5th referral is ambassador",
                ru(),
                deal(Some("2000000"), Some("RUB")),
                5,
                // 50000 × 2.0 = 100000.00
                rewards(vec![referrer_gets(
                    "flat",
                    "100000.00",
                    Some("ambassador"),
                    "2.0",
                )
                .currency("RUB")]),
            ),
            Case::new(
                "RU: a USD deal has no rate, the flat reward stays computable but needs review",
                ru(),
                usd("30000"),
                1,
                // 50000 × 1.0 = 50000.00; RU has no minimum, so only the FX reason
                rewards(vec![referrer_gets(
                    "flat",
                    "50000.00",
                    Some("member"),
                    "1.0",
                )
                .currency("RUB")
                .converted(None)
                .review(&["no FX rate for USD → RUB"])]),
            ),
            // ---- minimum deal amount ---------------------------------------------------------
            Case::new(
                "below the minimum amount",
                us(),
                usd("800"),
                1,
                not_eligible("deal amount 800.00 USD is below the program minimum 1000"),
            ),
            Case::new(
                "exactly the minimum amount is eligible",
                us(),
                usd("1000"),
                1,
                // 1000 × 7.5 / 100 = 75 × 1.0 = 75.00
                rewards(vec![
                    referrer_gets(pct, "75.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            ),
            Case::new(
                "below the minimum after conversion",
                us(),
                deal(Some("900"), Some("EUR")),
                1,
                // 900 EUR × 1.08 = 972.00 USD < 1000
                not_eligible("deal amount 972.00 USD is below the program minimum 1000"),
            ),
            Case::new(
                "the minimum applies to the converted amount",
                us(),
                deal(Some("950"), Some("EUR")),
                1,
                // 950 EUR × 1.08 = 1026 USD ≥ 1000 (950 alone would be below);
                // 1026 × 7.5 / 100 = 76.95 × 1.0 = 76.95
                rewards(vec![
                    referrer_gets(pct, "76.95", Some("bronze"), "1.0").fx("1.08", "1026"),
                    credit500().fx("1.08", "1026"),
                ]),
            ),
            Case::new(
                "a negative deal amount is below the minimum",
                us(),
                usd("-500"),
                1,
                not_eligible("deal amount -500.00 USD is below the program minimum 1000"),
            ),
            Case::new(
                "a negative deal amount without a minimum needs review",
                us_with(|p| p.min_deal_amount = None),
                usd("-500"),
                1,
                // a percent of a negative amount is never paid out: 0.00, review
                rewards(vec![
                    referrer_gets(pct, "0.00", Some("bronze"), "1.0")
                        .review(&["deal amount -500.00 USD is negative"]),
                    credit500(),
                ]),
            ),
            // ---- attribution window ----------------------------------------------------------
            Case::new(
                "outside the attribution window",
                us(),
                DealFacts {
                    won_at: T0 + 400 * DAY,
                    ..usd("40000")
                },
                1,
                not_eligible("won 400 days after the first touch, outside the 365-day window"),
            ),
            Case::new(
                "one millisecond outside the attribution window",
                us(),
                DealFacts {
                    won_at: T0 + 365 * DAY + 1,
                    ..usd("40000")
                },
                1,
                not_eligible(
                    "won more than 365 days after the first touch, outside the 365-day window",
                ),
            ),
            Case::new(
                "exactly at the end of the attribution window is eligible",
                us(),
                DealFacts {
                    won_at: T0 + 365 * DAY,
                    ..usd("40000")
                },
                1,
                // 40000 × 7.5 / 100 = 3000 × 1.0 = 3000.00
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            ),
            Case::new(
                "the window comes from the program",
                us_with(|p| p.attribution_window_days = 90),
                usd("40000"),
                1,
                not_eligible("won 120 days after the first touch, outside the 90-day window"),
            ),
            Case::new(
                "won before the first touch",
                us(),
                DealFacts {
                    won_at: T0 - DAY,
                    ..usd("40000")
                },
                1,
                not_eligible(&format!(
                    "won before the first touch (won at {} ms, first touch at {T0} ms)",
                    T0 - DAY
                )),
            ),
            // ---- currency --------------------------------------------------------------------
            Case::new(
                "another currency with a rate",
                us(),
                deal(Some("40000"), Some("EUR")),
                1,
                // 40000 EUR × 1.08 = 43200 USD × 7.5 / 100 = 3240 × 1.0 = 3240.00
                rewards(vec![
                    referrer_gets(pct, "3240.00", Some("bronze"), "1.0").fx("1.08", "43200"),
                    credit500().fx("1.08", "43200"),
                ]),
            ),
            Case::new(
                "the deal currency is matched case-insensitively",
                us(),
                deal(Some("40000"), Some(" eur ")),
                1,
                // as above: 40000 × 1.08 = 43200 × 7.5 / 100 = 3240.00
                rewards(vec![
                    referrer_gets(pct, "3240.00", Some("bronze"), "1.0").fx("1.08", "43200"),
                    credit500().fx("1.08", "43200"),
                ]),
            ),
            Case::new(
                "the program currency in lowercase is not a foreign currency",
                us(),
                deal(Some("40000"), Some("usd")),
                1,
                // no conversion: 40000 × 7.5 / 100 = 3000 × 1.0 = 3000.00
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0").converted(Some("40000")),
                    credit500().converted(Some("40000")),
                ]),
            ),
            Case::new(
                "a missing deal currency means the program currency",
                us(),
                deal(Some("40000"), None),
                1,
                // no conversion: 40000 × 7.5 / 100 = 3000.00, no rate recorded
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0").converted(Some("40000")),
                    credit500().converted(Some("40000")),
                ]),
            ),
            Case::new(
                "another currency without a rate needs review",
                us(),
                deal(Some("40000"), Some("GBP")),
                1,
                // the percent reward cannot be computed (0.00); the credit can (500.00); both
                // wait for a person, and the minimum could not be checked
                rewards(vec![
                    referrer_gets(pct, "0.00", Some("bronze"), "1.0")
                        .converted(None)
                        .review(&[NO_GBP_RATE, MIN_UNCHECKED_GBP]),
                    credit500()
                        .converted(None)
                        .review(&[NO_GBP_RATE, MIN_UNCHECKED_GBP]),
                ]),
            ),
            // ---- deal amount missing ---------------------------------------------------------
            Case::new(
                "deal amount missing: percent needs review, credit stays computable",
                us(),
                deal(None, Some("USD")),
                1,
                rewards(vec![
                    referrer_gets(pct, "0.00", Some("bronze"), "1.0")
                        .converted(None)
                        .review(&["deal amount unknown", MIN_UNCHECKED_AMOUNT]),
                    credit500().converted(None).review(&[MIN_UNCHECKED_AMOUNT]),
                ]),
            ),
            Case::new(
                "deal amount missing without a minimum: percent still needs review",
                us_with(|p| p.min_deal_amount = None),
                deal(None, Some("USD")),
                1,
                rewards(vec![
                    referrer_gets(pct, "0.00", Some("bronze"), "1.0")
                        .review(&["deal amount unknown"]),
                    credit500(),
                ]),
            ),
            Case::new(
                "deal amount missing without a minimum: flat is unaffected",
                us_with(|p| {
                    p.min_deal_amount = None;
                    p.reward = RewardRule::Flat { amount: d("250") };
                }),
                deal(None, Some("USD")),
                3,
                // 250 × 1.5 (silver) = 375.00
                rewards(vec![
                    referrer_gets("flat", "375.00", Some("silver"), "1.5").converted(None),
                    credit500(),
                ]),
            ),
            // ---- referee reward (two-sided) --------------------------------------------------
            Case::new(
                "referee credit gets no tier multiplier",
                us(),
                usd("40000"),
                5,
                // referrer: 3000 × 2.0 = 6000 → cap 5000.00; referee: 500 × 1 = 500.00
                // (with the gold multiplier it would be 1000.00)
                rewards(vec![
                    referrer_gets(pct, "5000.00", Some("gold"), "2.0"),
                    credit500(),
                ]),
            ),
            Case::new(
                "referee percent reward gets no tier multiplier",
                us_with(|p| {
                    p.referee_reward = Some(RewardRule::PercentOfDeal {
                        percent: d("1"),
                        cap: None,
                    })
                }),
                usd("40000"),
                5,
                // referee: 40000 × 1 / 100 = 400 × 1 = 400.00 (gold would make it 800.00)
                rewards(vec![
                    referrer_gets(pct, "5000.00", Some("gold"), "2.0"),
                    referee_gets(pct, "400.00"),
                ]),
            ),
            Case::new(
                "referee percent reward has its own cap",
                us_with(|p| {
                    p.referee_reward = Some(RewardRule::PercentOfDeal {
                        percent: d("1"),
                        cap: Some(d("250")),
                    })
                }),
                usd("40000"),
                1,
                // referrer: 3000.00; referee: 40000 × 1 / 100 = 400 > cap 250 → 250.00
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0"),
                    referee_gets(pct, "250.00"),
                ]),
            ),
            // ---- fraud: self_referral --------------------------------------------------------
            Case::new(
                "self_referral by the same email blocks",
                us(),
                usd("40000"),
                1,
                // gmail.com is free mail, so only the email equality can raise the flag
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["self_referral"])
                        .review(&[SELF_BLOCKS]),
                    credit500().flags(&["self_referral"]).review(&[SELF_BLOCKS]),
                ]),
            )
            .referee(|r| r.email = "alice@gmail.com".into())
            .referrer(|r| {
                r.email = Some("Alice@GMAIL.com".into());
                r.company_domain = None;
            }),
            Case::new(
                "self_referral by the referrer's company domain",
                us(),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["self_referral"])
                        .review(&[SELF_BLOCKS]),
                    credit500().flags(&["self_referral"]).review(&[SELF_BLOCKS]),
                ]),
            )
            .referee(|r| r.email = "bob@acme.com".into())
            .referrer(|r| {
                r.email = Some("alice@gmail.com".into());
                r.company_domain = Some("Acme.com".into());
            }),
            Case::new(
                "self_referral by the referrer's email domain",
                us(),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["self_referral"])
                        .review(&[SELF_BLOCKS]),
                    credit500().flags(&["self_referral"]).review(&[SELF_BLOCKS]),
                ]),
            )
            .referee(|r| r.email = "bob@acme.com".into())
            .referrer(|r| r.company_domain = None),
            Case::new(
                "no self_referral for a shared free-mail domain",
                us(),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            )
            .referee(|r| r.email = "bob@gmail.com".into())
            .referrer(|r| {
                r.email = Some("alice@gmail.com".into());
                r.company_domain = Some("gmail.com".into());
            }),
            Case::new(
                "self_referral does not block where the program does not block it",
                us_with(|p| p.block_on = vec![]),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0").flags(&["self_referral"]),
                    credit500().flags(&["self_referral"]),
                ]),
            )
            .referee(|r| r.email = "bob@acme.com".into()),
            // ---- fraud: shared_ip (default: at least 1 other within 30 days) -----------------
            Case::new(
                "shared_ip blocks in US",
                us(),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["shared_ip"])
                        .review(&[SHARED_IP_BLOCKS]),
                    credit500()
                        .flags(&["shared_ip"])
                        .review(&[SHARED_IP_BLOCKS]),
                ]),
            )
            .referrer(|r| r.other_referee_ips = vec![(ip("203.0.113.7"), T0 - 10 * DAY)]),
            Case::new(
                "shared_ip is recorded but does not block in RU",
                ru(),
                deal(Some("2000000"), Some("RUB")),
                1,
                rewards(vec![referrer_gets(
                    "flat",
                    "50000.00",
                    Some("member"),
                    "1.0",
                )
                .currency("RUB")
                .flags(&["shared_ip"])]),
            )
            .referrer(|r| r.other_referee_ips = vec![(ip("203.0.113.7"), T0 + 29 * DAY)]),
            Case::new(
                "shared_ip matches an IPv4-mapped IPv6 address",
                ru(),
                deal(Some("2000000"), Some("RUB")),
                1,
                rewards(vec![referrer_gets(
                    "flat",
                    "50000.00",
                    Some("member"),
                    "1.0",
                )
                .currency("RUB")
                .flags(&["shared_ip"])]),
            )
            .referrer(|r| r.other_referee_ips = vec![(ip("::ffff:203.0.113.7"), T0)]),
            Case::new(
                "shared_ip matches when the referee's own IP is IPv4-mapped",
                ru(),
                deal(Some("2000000"), Some("RUB")),
                1,
                rewards(vec![referrer_gets(
                    "flat",
                    "50000.00",
                    Some("member"),
                    "1.0",
                )
                .currency("RUB")
                .flags(&["shared_ip"])]),
            )
            .referee(|r| r.signup_ip = Some(ip("::ffff:203.0.113.7")))
            .referrer(|r| r.other_referee_ips = vec![(ip("203.0.113.7"), T0)]),
            Case::new(
                "no shared_ip when the other referee came outside the window",
                us(),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            )
            .referrer(|r| r.other_referee_ips = vec![(ip("203.0.113.7"), T0 - 31 * DAY)]),
            Case::new(
                "no shared_ip when the other referees used other IPs",
                us(),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            )
            .referrer(|r| {
                r.other_referee_ips = vec![(ip("203.0.113.8"), T0), (ip("198.51.100.7"), T0)]
            }),
            Case::new(
                "no shared_ip below shared_ip_min_others",
                us(),
                usd("40000"),
                1,
                // 1 other on the same IP, 2 required
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            )
            .fraud(|f| f.shared_ip_min_others = 2)
            .referrer(|r| {
                r.other_referee_ips = vec![(ip("203.0.113.7"), T0), (ip("203.0.113.9"), T0)]
            }),
            Case::new(
                "shared_ip at shared_ip_min_others",
                us(),
                usd("40000"),
                1,
                // 2 others on the same IP, 2 required
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["shared_ip"])
                        .review(&[SHARED_IP_BLOCKS]),
                    credit500()
                        .flags(&["shared_ip"])
                        .review(&[SHARED_IP_BLOCKS]),
                ]),
            )
            .fraud(|f| f.shared_ip_min_others = 2)
            .referrer(|r| {
                r.other_referee_ips =
                    vec![(ip("203.0.113.7"), T0 - DAY), (ip("203.0.113.7"), T0 + DAY)]
            }),
            // ---- fraud: existing_customer ----------------------------------------------------
            Case::new(
                "existing_customer is recorded but does not block in US",
                us(),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["existing_customer"]),
                    credit500().flags(&["existing_customer"]),
                ]),
            )
            .referee(|r| r.known_to_crm_before_first_touch = true),
            Case::new(
                "existing_customer blocks where the program blocks it",
                us_with(|p| p.block_on = vec!["existing_customer".into()]),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["existing_customer"])
                        .review(&["fraud flag existing_customer blocks automatic approval"]),
                    credit500()
                        .flags(&["existing_customer"])
                        .review(&["fraud flag existing_customer blocks automatic approval"]),
                ]),
            )
            .referee(|r| r.known_to_crm_before_first_touch = true),
            // ---- fraud: disposable_domain ----------------------------------------------------
            Case::new(
                "disposable_domain is recorded but does not block in US",
                us(),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["disposable_domain"]),
                    credit500().flags(&["disposable_domain"]),
                ]),
            )
            .referee(|r| r.email = "bob@mailinator.com".into()),
            Case::new(
                "disposable_domain blocks where the program blocks it",
                us_with(|p| p.block_on = vec!["disposable_domain".into()]),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["disposable_domain"])
                        .review(&["fraud flag disposable_domain blocks automatic approval"]),
                    credit500()
                        .flags(&["disposable_domain"])
                        .review(&["fraud flag disposable_domain blocks automatic approval"]),
                ]),
            )
            .referee(|r| r.email = "bob@mailinator.com".into()),
            // ---- fraud: velocity (more than 20 in the window) --------------------------------
            Case::new(
                "velocity is recorded but does not block in US",
                us(),
                usd("40000"),
                1,
                // 21 > 20
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0").flags(&["velocity"]),
                    credit500().flags(&["velocity"]),
                ]),
            )
            .referrer(|r| r.referrals_in_velocity_window = 21),
            Case::new(
                "no velocity at exactly the maximum",
                us_with(|p| p.block_on = vec!["velocity".into()]),
                usd("40000"),
                1,
                // 20 is not more than 20
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            )
            .referrer(|r| r.referrals_in_velocity_window = 20),
            Case::new(
                "velocity blocks where the program blocks it",
                us_with(|p| p.block_on = vec!["velocity".into()]),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["velocity"])
                        .review(&["fraud flag velocity blocks automatic approval"]),
                    credit500()
                        .flags(&["velocity"])
                        .review(&["fraud flag velocity blocks automatic approval"]),
                ]),
            )
            .referrer(|r| r.referrals_in_velocity_window = 21),
            Case::new(
                "several flags: all recorded, only the blocking one is a reason",
                us(),
                usd("40000"),
                1,
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .flags(&["self_referral", "existing_customer", "velocity"])
                        .review(&[SELF_BLOCKS]),
                    credit500()
                        .flags(&["self_referral", "existing_customer", "velocity"])
                        .review(&[SELF_BLOCKS]),
                ]),
            )
            .referee(|r| {
                r.email = "bob@acme.com".into();
                r.known_to_crm_before_first_touch = true;
            })
            .referrer(|r| r.referrals_in_velocity_window = 25),
            Case::new(
                "review reasons accumulate: fraud block, FX, minimum",
                us(),
                deal(Some("40000"), Some("GBP")),
                1,
                rewards(vec![
                    referrer_gets(pct, "0.00", Some("bronze"), "1.0")
                        .flags(&["self_referral"])
                        .review(&[SELF_BLOCKS, NO_GBP_RATE, MIN_UNCHECKED_GBP]),
                    credit500().flags(&["self_referral"]).review(&[
                        SELF_BLOCKS,
                        NO_GBP_RATE,
                        MIN_UNCHECKED_GBP,
                    ]),
                ]),
            )
            .referee(|r| r.email = "bob@acme.com".into()),
            // ---- approval threshold ----------------------------------------------------------
            Case::new(
                "above the approval threshold needs review",
                us_with(|p| p.approval_threshold = Some(d("4000"))),
                usd("40000"),
                5,
                // 40000 × 7.5 / 100 = 3000 × 2.0 = 6000 → cap 5000.00 > 4000;
                // the referee's 500.00 is not above it
                rewards(vec![
                    referrer_gets(pct, "5000.00", Some("gold"), "2.0")
                        .review(&["reward 5000.00 USD is above the approval threshold 4000"]),
                    credit500(),
                ]),
            ),
            Case::new(
                "exactly at the approval threshold is pending",
                us_with(|p| p.approval_threshold = Some(d("4500"))),
                usd("40000"),
                3,
                // 40000 × 7.5 / 100 = 3000 × 1.5 = 4500.00, not above 4500
                rewards(vec![
                    referrer_gets(pct, "4500.00", Some("silver"), "1.5"),
                    credit500(),
                ]),
            ),
            Case::new(
                "the approval threshold applies to the referee too",
                us_with(|p| p.approval_threshold = Some(d("400"))),
                usd("40000"),
                1,
                // referrer 3000.00 > 400; referee 500.00 > 400
                rewards(vec![
                    referrer_gets(pct, "3000.00", Some("bronze"), "1.0")
                        .review(&["reward 3000.00 USD is above the approval threshold 400"]),
                    credit500().review(&["reward 500.00 USD is above the approval threshold 400"]),
                ]),
            ),
            // ---- rounding ----------------------------------------------------------------------
            Case::new(
                "rounding: midpoint away from zero",
                us(),
                usd("1001.40"),
                1,
                // 1001.40 × 7.5 / 100 = 75.105 × 1.0 = 75.105 → 75.11 (banker's would give 75.10)
                rewards(vec![
                    referrer_gets(pct, "75.11", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            ),
            Case::new(
                "rounding: below the midpoint rounds down",
                us(),
                usd("1234.56"),
                1,
                // 1234.56 × 7.5 / 100 = 92.592 × 1.0 → 92.59
                rewards(vec![
                    referrer_gets(pct, "92.59", Some("bronze"), "1.0"),
                    credit500(),
                ]),
            ),
        ]
    }

    fn check(name: &str, won_at: Millis, got: &RewardDecision, want: &Want) {
        let who = format!("{name} [{:?}]", want.beneficiary);
        assert_eq!(got.beneficiary, want.beneficiary, "{who}: beneficiary");
        assert_eq!(got.kind, want.kind, "{who}: kind");
        assert_eq!(got.amount.to_string(), want.amount, "{who}: amount");
        assert_eq!(got.currency, want.currency, "{who}: currency");
        assert_eq!(got.tier.as_deref(), want.tier, "{who}: tier");
        assert_eq!(got.multiplier, d(want.multiplier), "{who}: multiplier");
        assert_eq!(got.fx_rate, want.fx_rate.map(d), "{who}: fx_rate");
        if let Some(converted) = want.converted {
            assert_eq!(
                got.deal_amount_converted,
                converted.map(d),
                "{who}: deal_amount_converted"
            );
        }
        assert_eq!(got.status, want.status, "{who}: status");
        assert_eq!(got.review_reasons, want.reasons, "{who}: review_reasons");
        assert_eq!(got.flags, want.flags, "{who}: flags");
        // Both example programs hold for 30 days, review or not.
        assert_eq!(got.hold_until, won_at + 30 * DAY, "{who}: hold_until");
        assert_eq!(
            got.calculation["final_amount"], want.amount,
            "{who}: calculation.final_amount"
        );
    }

    #[test]
    fn table_of_reward_cases() {
        let cases = cases();
        let mut names = std::collections::BTreeSet::new();
        for case in &cases {
            assert!(names.insert(case.name), "duplicate case name {}", case.name);
            let got = evaluate(
                &case.program,
                &case.fraud,
                &case.deal,
                &case.referee,
                &case.referrer,
            );
            match (&case.expect, &got) {
                (Expect::NotEligible(want), Evaluation::NotEligible { reason }) => {
                    assert_eq!(reason, want, "{}: reason", case.name)
                }
                (Expect::Rewards(wants), Evaluation::Rewards(decisions)) => {
                    assert_eq!(
                        decisions.len(),
                        wants.len(),
                        "{}: number of decisions",
                        case.name
                    );
                    for (got, want) in decisions.iter().zip(wants) {
                        check(case.name, case.deal.won_at, got, want);
                    }
                }
                (want, got) => panic!("{}: expected {want:?}, got {got:?}", case.name),
            }
        }
        assert!(cases.len() >= 50, "the table shrank to {}", cases.len());
    }

    fn num(v: &Value) -> Decimal {
        d(v.as_str()
            .unwrap_or_else(|| panic!("{v} is not a decimal string")))
    }

    fn decisions(e: Evaluation) -> Vec<RewardDecision> {
        match e {
            Evaluation::Rewards(d) => d,
            other => panic!("expected rewards, got {other:?}"),
        }
    }

    #[test]
    fn fixtures_are_the_example_programs() {
        #[derive(Deserialize)]
        struct Example {
            programs: BTreeMap<String, ProgramSettings>,
        }
        let example: Example = toml::from_str(include_str!("../../config/example.toml"))
            .expect("config/example.toml parses");
        for (market, fixture) in [("US", us()), ("RU", ru())] {
            assert_eq!(
                serde_json::to_value(&example.programs[market]).unwrap(),
                serde_json::to_value(&fixture).unwrap(),
                "programs.{market} of config/example.toml differs from the test fixture"
            );
        }
    }

    #[test]
    fn calculation_explains_every_number() {
        // 40000 EUR × 1.08 = 43200 USD; × 7.5 / 100 = 3240; × 1.5 (silver) = 4860 ≤ 5000 → 4860.00
        let got = decisions(evaluate(
            &us(),
            &fraud(),
            &deal(Some("40000"), Some("EUR")),
            &referee(),
            &referrer(3),
        ));
        let c = &got[0].calculation;
        assert_eq!(c["beneficiary"], "referrer");
        assert_eq!(c["program_currency"], "USD");
        assert_eq!(num(&c["deal_amount"]), d("40000"));
        assert_eq!(c["deal_currency"], "EUR");
        assert_eq!(c["deal_currency_assumed"], false);
        assert_eq!(num(&c["fx_rate"]), d("1.08"));
        assert_eq!(num(&c["deal_amount_converted"]), d("43200"));
        assert_eq!(c["rule"]["kind"], "percent_of_deal");
        assert_eq!(num(&c["rule"]["percent"]), d("7.5"));
        assert_eq!(num(&c["rule"]["cap"]), d("5000"));
        assert_eq!(c["tier"], "silver");
        assert_eq!(c["tier_min_successful"], 3);
        assert_eq!(c["successful_including_this"], 3);
        assert_eq!(num(&c["multiplier"]), d("1.5"));
        assert_eq!(num(&c["base_amount"]), d("3240"));
        assert_eq!(num(&c["pre_cap_amount"]), d("4860"));
        assert_eq!(num(&c["cap"]), d("5000"));
        assert_eq!(c["capped"], false);
        assert_eq!(c["final_amount"], "4860.00");
        assert_eq!(num(&c["min_deal_amount"]), d("1000"));
        assert_eq!(num(&c["approval_threshold"]), d("10000"));
        assert_eq!(c["attribution_window_days"], 365);
        assert_eq!(c["first_touch_at"], T0);
        assert_eq!(c["won_at"], WON);
        assert_eq!(c["elapsed_ms"], 120 * DAY);
        assert_eq!(num(&c["days_to_win"]), d("120"));
        assert_eq!(c["hold_days"], 30);
        assert_eq!(c["hold_until"], HOLD);
        assert_eq!(
            c["formula"],
            "43200 USD × 7.5 / 100 = 3240; × 1.5 = 4860; cap 5000 not reached → 4860; rounded to 2 dp = 4860.00"
        );
        // A person can redo it from the record alone.
        let redone = num(&c["deal_amount_converted"]) * num(&c["rule"]["percent"])
            / Decimal::ONE_HUNDRED
            * num(&c["multiplier"]);
        assert_eq!(redone, num(&c["pre_cap_amount"]));
        assert_eq!(got[0].hold_until, HOLD);

        // The referee's credit: no tier, multiplier 1.
        let c = &got[1].calculation;
        assert_eq!(c["beneficiary"], "referee");
        assert_eq!(c["rule"]["kind"], "credit");
        assert_eq!(num(&c["rule"]["amount"]), d("500"));
        assert_eq!(c["tier"], Value::Null);
        assert_eq!(c["successful_including_this"], Value::Null);
        assert_eq!(num(&c["multiplier"]), d("1"));
        assert_eq!(c["final_amount"], "500.00");
    }

    #[test]
    fn calculation_records_the_cap_and_unknown_values() {
        // 80000 × 7.5 / 100 = 6000 × 1.0 = 6000 > cap 5000 → 5000.00
        let got = decisions(evaluate(
            &us(),
            &fraud(),
            &usd("80000"),
            &referee(),
            &referrer(1),
        ));
        let c = &got[0].calculation;
        assert_eq!(num(&c["pre_cap_amount"]), d("6000"));
        assert_eq!(c["capped"], true);
        assert_eq!(c["final_amount"], "5000.00");
        assert_eq!(c["fx_rate"], Value::Null);

        // No amount: nothing to compute, and the record says so.
        let got = decisions(evaluate(
            &us(),
            &fraud(),
            &deal(None, None),
            &referee(),
            &referrer(1),
        ));
        let c = &got[0].calculation;
        assert_eq!(c["deal_amount"], Value::Null);
        assert_eq!(c["deal_currency"], "USD");
        assert_eq!(c["deal_currency_assumed"], true);
        assert_eq!(c["deal_amount_converted"], Value::Null);
        assert_eq!(c["pre_cap_amount"], Value::Null);
        assert_eq!(c["final_amount"], "0.00");
        assert_eq!(c["formula"], "not computed: deal amount unknown");
    }

    #[test]
    fn fraud_flags_come_in_a_fixed_order() {
        let suspicious_referee = RefereeFacts {
            email: "alice@mailinator.com".into(),
            known_to_crm_before_first_touch: true,
            ..referee()
        };
        let suspicious_referrer = ReferrerFacts {
            email: Some("alice@mailinator.com".into()),
            other_referee_ips: vec![(ip("203.0.113.7"), T0)],
            referrals_in_velocity_window: 21,
            ..referrer(1)
        };
        assert_eq!(
            fraud_flags(&fraud(), &suspicious_referee, &suspicious_referrer),
            [
                "self_referral",
                "shared_ip",
                "existing_customer",
                "disposable_domain",
                "velocity"
            ]
        );
        assert!(fraud_flags(&fraud(), &referee(), &referrer(1)).is_empty());
    }

    #[test]
    fn shared_ip_needs_a_signup_ip_and_another_referee() {
        let lenient = FraudSettings {
            shared_ip_min_others: 0,
            ..fraud()
        };
        // Even with a minimum of 0, no other referee on the IP is no shared IP.
        assert!(fraud_flags(&lenient, &referee(), &referrer(1)).is_empty());
        // Without a signup IP there is nothing to share.
        let no_ip = RefereeFacts {
            signup_ip: None,
            ..referee()
        };
        let with_others = ReferrerFacts {
            other_referee_ips: vec![(ip("203.0.113.7"), T0)],
            ..referrer(1)
        };
        assert!(fraud_flags(&lenient, &no_ip, &with_others).is_empty());
        assert_eq!(
            fraud_flags(&lenient, &referee(), &with_others),
            ["shared_ip"]
        );
    }

    #[test]
    fn tier_for_picks_the_highest_reached_tier_in_any_order() {
        let mut shuffled = tiers(["bronze", "silver", "gold"]);
        shuffled.reverse();
        let name = |n| tier_for(&shuffled, n).map(|t| t.name.as_str());
        assert_eq!(name(0), None);
        assert_eq!(name(1), Some("bronze"));
        assert_eq!(name(2), Some("bronze"));
        assert_eq!(name(3), Some("silver"));
        assert_eq!(name(4), Some("silver"));
        assert_eq!(name(5), Some("gold"));
        assert_eq!(name(u32::MAX), Some("gold"));
        assert_eq!(tier_for(&[], 3), None);
    }

    #[test]
    fn evaluation_is_deterministic() {
        let run = || {
            evaluate(
                &us(),
                &fraud(),
                &deal(Some("40000"), Some("EUR")),
                &referee(),
                &referrer(3),
            )
        };
        assert_eq!(run(), run());
    }
}

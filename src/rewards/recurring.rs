//! What a referred customer's later revenue earns, and what gives money back: pure, deterministic
//! arithmetic (no I/O, no clock, no database), like [`super::calculate`].
//!
//! - [`evaluate_recurring`]: a payment (a paid invoice, or a won renewal deal) within `months`
//!   calendar months of the customer's first won deal earns the referrer `percent` of it, in the
//!   program currency (`fx`, never guessed), times the tier multiplier the referrer has when it is
//!   paid, bounded by what is left of `cap` for this customer; review and hold as for a first
//!   win.
//! - [`refund_adjustment`]: a refund takes back the same share of a recurring line as of the
//!   invoice, counted cumulatively, so refunds adding up to the invoice take back exactly the line.
//! - [`installment_amounts`]: a reward split by `payout_schedule`, each share rounded to cents and
//!   the last one taking the remainder, so the installments add up to the reward exactly.

use chrono::Months;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::calculate::{
    convert, fraud_flags, round_money, tier_for, value_problem, Beneficiary, Converted, DealValue,
    Evaluation, InitialStatus, RefereeFacts, ReferrerFacts, RewardDecision,
};
use crate::clock::{to_rfc3339, Millis, DAY};
use crate::config::{FraudSettings, ProgramSettings, RecurringRule};

/// The rule kind recorded on recurring lines (`rewards.kind`).
pub const RECURRING_KIND: &str = "recurring";
/// The rule kind recorded on adjustments (`rewards.kind`).
pub const ADJUSTMENT_KIND: &str = "adjustment";

/// A payment of a referred customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    /// What was paid, in `currency`; `None` when a renewal deal has no amount.
    pub amount: Option<Decimal>,
    /// ISO code; `None` (or blank) means the program currency.
    pub currency: Option<String>,
    pub paid_at: Millis,
    /// What was paid, for people: "invoice in_1", "renewal deal 2001".
    pub source: String,
}

/// What a recurring reward depends on besides the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerFacts {
    /// When the customer's first won deal was won: the window starts there.
    pub first_win_at: Millis,
    /// The recurring rewards this customer's payments earned so far, net of refunds, in the
    /// program currency (what counts against `cap`).
    pub earned_before: Decimal,
    /// The referrer's successful referrals won at or before the payment (their tier then).
    pub successful_at_payment: u32,
}

/// The end of the recurring window: `months` calendar months after the first win.
pub fn window_end(first_win_at: Millis, months: u32) -> Option<Millis> {
    chrono::DateTime::from_timestamp_millis(first_win_at)?
        .checked_add_months(Months::new(months))
        .map(|t| t.timestamp_millis())
}

/// Decide what a payment earns the referrer. Pure and deterministic.
pub fn evaluate_recurring(
    program: &ProgramSettings,
    rule: &RecurringRule,
    fraud: &FraudSettings,
    payment: &PaymentFacts,
    customer: &CustomerFacts,
    referee: &RefereeFacts,
    referrer: &ReferrerFacts,
) -> Evaluation {
    let not_eligible = |reason: String| Evaluation::NotEligible { reason };
    // 1. The window: from the first win, `months` calendar months.
    let Some(window_end) = window_end(customer.first_win_at, rule.months) else {
        return not_eligible("the recurring window cannot be computed".into());
    };
    if payment.paid_at < customer.first_win_at {
        return not_eligible(format!(
            "{} was paid at {}, before the customer's first win at {}",
            payment.source,
            to_rfc3339(payment.paid_at),
            to_rfc3339(customer.first_win_at)
        ));
    }
    if payment.paid_at >= window_end {
        return not_eligible(format!(
            "{} was paid at {}, after the {}-month recurring window ended at {}",
            payment.source,
            to_rfc3339(payment.paid_at),
            rule.months,
            to_rfc3339(window_end)
        ));
    }
    // 2. What is left under the cap.
    let remaining = rule.cap.map(|cap| cap - customer.earned_before);
    if let (Some(cap), Some(left)) = (rule.cap, remaining) {
        if left <= Decimal::ZERO {
            return not_eligible(format!(
                "the recurring cap of {cap} {} for this customer is reached",
                program.currency
            ));
        }
    }
    // 3. The payment in the program currency, never guessed.
    let Converted {
        currency: payment_currency,
        assumed,
        fx_rate,
        fx_missing,
        value,
    } = convert(program, payment.amount, payment.currency.as_deref());
    // 4. The tier when it was paid, the cap after the multiplier.
    let tier = tier_for(&program.tiers, customer.successful_at_payment.max(1));
    let multiplier = tier.map_or(Decimal::ONE, |t| t.multiplier);
    let mut problem = None;
    let (base, pre_cap, amount, capped) = match value {
        DealValue::Known(converted) => {
            let base = converted
                .checked_mul(rule.percent)
                .and_then(|x| x.checked_div(Decimal::ONE_HUNDRED));
            let pre_cap = base.and_then(|b| b.checked_mul(multiplier));
            match (base, pre_cap) {
                (Some(base), Some(pre_cap)) => {
                    let capped = remaining.is_some_and(|left| pre_cap > left);
                    let bounded = match remaining {
                        Some(left) if capped => left,
                        _ => pre_cap,
                    };
                    (Some(base), Some(pre_cap), round_money(bounded), capped)
                }
                _ => {
                    problem = Some("the reward is too large to compute".to_string());
                    (None, None, round_money(Decimal::ZERO), false)
                }
            }
        }
        other => {
            if other != DealValue::NoRate {
                problem = Some(value_problem(
                    other,
                    payment.amount,
                    &payment_currency,
                    fx_missing.as_deref(),
                ));
            }
            (None, None, round_money(Decimal::ZERO), false)
        }
    };
    if base.is_some() && amount.is_zero() {
        return not_eligible(format!(
            "{} earns {amount} {} after rounding",
            payment.source, program.currency
        ));
    }
    // 5. Review: blocking fraud flags, FX, the amount, the approval threshold.
    let flags = fraud_flags(fraud, referee, referrer);
    let mut reasons: Vec<String> = flags
        .iter()
        .filter(|f| program.block_on.iter().any(|b| b == *f))
        .map(|f| format!("fraud flag {f} blocks automatic approval"))
        .collect();
    reasons.extend(fx_missing.clone());
    reasons.extend(problem);
    if let Some(threshold) = program.approval_threshold {
        if amount > threshold {
            reasons.push(format!(
                "reward {amount} {} is above the approval threshold {threshold}",
                program.currency
            ));
        }
    }
    let status = if reasons.is_empty() {
        InitialStatus::Pending
    } else {
        InitialStatus::NeedsReview
    };
    let hold_until = payment
        .paid_at
        .saturating_add(i64::from(program.hold_days) * DAY);
    let dec = |d: Decimal| Value::String(d.to_string());
    let opt = |d: Option<Decimal>| d.map_or(Value::Null, dec);
    let converted = match value {
        DealValue::Known(c) => Some(c),
        _ => None,
    };
    let formula = match (converted, base, pre_cap) {
        (Some(c), Some(b), Some(p)) => {
            let cap_step = match (rule.cap, remaining) {
                (Some(cap), Some(left)) if capped => {
                    format!(
                        "capped at what is left of {cap}: {} → {}",
                        left.normalize(),
                        left.normalize()
                    )
                }
                (Some(cap), Some(left)) => {
                    format!(
                        "{} left of cap {cap}, not reached → {}",
                        left.normalize(),
                        p.normalize()
                    )
                }
                _ => "no cap".into(),
            };
            format!(
                "{} {} × {} / 100 = {}; × {multiplier} = {}; {cap_step}; rounded to 2 dp = {amount}",
                c.normalize(),
                program.currency,
                rule.percent,
                b.normalize(),
                p.normalize(),
            )
        }
        _ => format!(
            "not computed: {}",
            value_problem(
                value,
                payment.amount,
                &payment_currency,
                fx_missing.as_deref()
            )
        ),
    };
    let calculation = json!({
        "beneficiary": Beneficiary::Referrer.as_str(),
        "line_kind": "recurring",
        "source": payment.source,
        "program_currency": program.currency,
        "payment_amount": opt(payment.amount),
        "payment_currency": payment_currency,
        "payment_currency_assumed": assumed,
        // Named as on a first win, so the same reader (and `amount_computed`) explains both.
        "deal_amount": opt(payment.amount),
        "fx_rate": opt(fx_rate),
        "payment_amount_converted": opt(converted),
        "rule": {"kind": RECURRING_KIND, "percent": dec(rule.percent), "months": rule.months,
                 "cap": opt(rule.cap)},
        "tier": tier.map(|t| t.name.clone()),
        "tier_min_successful": tier.map(|t| t.min_successful),
        "successful_at_payment": customer.successful_at_payment,
        "multiplier": dec(multiplier),
        "base_amount": opt(base),
        "pre_cap_amount": opt(pre_cap),
        "earned_before": dec(customer.earned_before),
        "cap_remaining": opt(remaining),
        "capped": capped,
        "final_amount": dec(amount),
        "rounding": "2 dp, midpoint away from zero",
        "formula": formula,
        "first_win_at": customer.first_win_at,
        "window_months": rule.months,
        "window_end": window_end,
        "paid_at": payment.paid_at,
        "approval_threshold": opt(program.approval_threshold),
        "hold_days": program.hold_days,
        "hold_until": hold_until,
        "flags": flags,
        "block_on": program.block_on,
    });
    Evaluation::Rewards(vec![RewardDecision {
        beneficiary: Beneficiary::Referrer,
        kind: RECURRING_KIND,
        amount,
        currency: program.currency.clone(),
        tier: tier.map(|t| t.name.clone()),
        multiplier,
        fx_rate,
        deal_amount_converted: converted,
        status,
        review_reasons: reasons,
        flags,
        hold_until,
        calculation,
    }])
}

/// What a refund of `refund` (of an invoice of `invoice`, of which `refunded_before` was already
/// refunded) takes back from a recurring line of `line`: minus the same share, rounded to cents
/// cumulatively, so that refunds adding up to the invoice take back the line to the cent. Zero
/// when nothing is left to take back. All amounts in the invoice currency except `line`.
pub fn refund_adjustment(
    line: Decimal,
    invoice: Decimal,
    refunded_before: Decimal,
    refund: Decimal,
) -> Decimal {
    if invoice <= Decimal::ZERO || refund <= Decimal::ZERO {
        return round_money(Decimal::ZERO);
    }
    let share_of = |refunded: Decimal| {
        let refunded = refunded.clamp(Decimal::ZERO, invoice);
        line.checked_mul(refunded)
            .and_then(|x| x.checked_div(invoice))
            .map_or(line, round_money)
    };
    let before = share_of(refunded_before);
    let after = share_of(refunded_before.saturating_add(refund));
    round_money(before - after)
}

/// A reward of `amount` split into installments of `shares` (adding up to 1): each share rounded
/// to cents (midpoint away from zero), the last taking what is left, so they add up to `amount`.
pub fn installment_amounts(amount: Decimal, shares: &[Decimal]) -> Vec<Decimal> {
    let Some((_, first)) = shares.split_last() else {
        return vec![round_money(amount)];
    };
    let mut parts: Vec<Decimal> = first
        .iter()
        .map(|share| amount.checked_mul(*share).map_or(amount, round_money))
        .collect();
    let given: Decimal = parts.iter().sum();
    parts.push(round_money(amount - given));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewards::calculate::tests::{d, fraud, referee, referrer, ru, us, WON};

    /// The window of `us()`: 12 months after WON (2024-03-13T22:13:20Z).
    const MONTH: Millis = 30 * DAY;

    fn rule() -> RecurringRule {
        us().recurring
            .expect("the US example program pays recurring rewards")
    }

    fn invoice(amount: &str, currency: &str, paid_at: Millis) -> PaymentFacts {
        PaymentFacts {
            amount: Some(d(amount)),
            currency: Some(currency.into()),
            paid_at,
            source: "invoice in_1".into(),
        }
    }

    fn customer(earned_before: &str, successful: u32) -> CustomerFacts {
        CustomerFacts {
            first_win_at: WON,
            earned_before: d(earned_before),
            successful_at_payment: successful,
        }
    }

    /// A line's amount, tier, status and review reasons.
    type Line = (
        &'static str,
        Option<&'static str>,
        InitialStatus,
        Vec<&'static str>,
    );

    /// One case: a payment, the customer's state, what the referrer gets (or why not).
    struct Case {
        name: &'static str,
        program: ProgramSettings,
        payment: PaymentFacts,
        customer: CustomerFacts,
        /// The line, or why there is none.
        want: Result<Line, &'static str>,
    }

    fn pays(amount: &'static str, tier: &'static str) -> Result<Line, &'static str> {
        Ok((amount, Some(tier), InitialStatus::Pending, vec![]))
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "a payment in the window earns 10% at bronze",
                program: us(),
                payment: invoice("1200", "USD", WON + MONTH),
                customer: customer("0", 1),
                // 1200 × 10 / 100 = 120 × 1.0 (bronze) = 120.00; cap 20000 far away
                want: pays("120.00", "bronze"),
            },
            Case {
                name: "tier change between two payments: the same invoice at silver",
                program: us(),
                payment: invoice("1200", "USD", WON + 2 * MONTH),
                customer: customer("120.00", 3),
                // 1200 × 10 / 100 = 120 × 1.5 (silver: 3 successes by then) = 180.00
                want: pays("180.00", "silver"),
            },
            Case {
                name: "the cap is reached mid-window: what is left of it",
                program: us(),
                payment: invoice("12000", "USD", WON + 6 * MONTH),
                customer: customer("19500.00", 1),
                // 12000 × 10 / 100 = 1200 × 1.0 = 1200 > 20000 − 19500 = 500 left → 500.00
                want: pays("500.00", "bronze"),
            },
            Case {
                name: "after the cap is reached a payment earns nothing",
                program: us(),
                payment: invoice("12000", "USD", WON + 7 * MONTH),
                customer: customer("20000.00", 1),
                want: Err("the recurring cap of 20000 USD for this customer is reached"),
            },
            Case {
                name: "the cap applies after the multiplier",
                program: us(),
                payment: invoice("5000", "USD", WON + 6 * MONTH),
                customer: customer("19000.00", 5),
                // 5000 × 10 / 100 = 500 × 2.0 (gold) = 1000 ≤ 1000 left → 1000.00, not capped
                want: pays("1000.00", "gold"),
            },
            Case {
                name: "a payment after the window earns nothing",
                program: us(),
                // WON is 2024-03-13T22:13:20Z; the 12-month window ends 2025-03-13T22:13:20Z.
                payment: invoice("1200", "USD", window_end(WON, 12).unwrap()),
                customer: customer("0", 1),
                want: Err("invoice in_1 was paid at 2025-03-13T22:13:20.000Z, after the 12-month recurring window ended at 2025-03-13T22:13:20.000Z"),
            },
            Case {
                name: "the last millisecond of the window still earns",
                program: us(),
                payment: invoice("1200", "USD", window_end(WON, 12).unwrap() - 1),
                customer: customer("0", 1),
                want: pays("120.00", "bronze"),
            },
            Case {
                name: "a payment before the first win earns nothing",
                program: us(),
                payment: invoice("1200", "USD", WON - 1),
                customer: customer("0", 1),
                want: Err("invoice in_1 was paid at 2024-03-13T22:13:19.999Z, before the customer's first win at 2024-03-13T22:13:20.000Z"),
            },
            Case {
                name: "FX on a recurring payment",
                program: us(),
                payment: invoice("999.99", "EUR", WON + MONTH),
                customer: customer("0", 3),
                // 999.99 EUR × 1.08 = 1079.9892 USD × 10 / 100 = 107.99892 × 1.5 = 161.99838
                // → 162.00
                want: pays("162.00", "silver"),
            },
            Case {
                name: "no rate for the payment's currency: review, never a guess",
                program: us(),
                payment: invoice("1000", "GBP", WON + MONTH),
                customer: customer("0", 1),
                want: Ok(("0.00", Some("bronze"), InitialStatus::NeedsReview, vec!["no FX rate for GBP → USD"])),
            },
            Case {
                name: "above the approval threshold: review",
                program: us(),
                payment: invoice("120000", "USD", WON + MONTH),
                customer: customer("0", 1),
                // 120000 × 10 / 100 = 12000 × 1.0 = 12000.00 > 10000
                want: Ok(("12000.00", Some("bronze"), InitialStatus::NeedsReview,
                          vec!["reward 12000.00 USD is above the approval threshold 10000"])),
            },
            Case {
                name: "cents round half away from zero",
                program: us(),
                payment: invoice("0.25", "USD", WON + MONTH),
                customer: customer("0", 3),
                // 0.25 × 10 / 100 = 0.025 × 1.5 = 0.0375 → 0.04
                want: pays("0.04", "silver"),
            },
            Case {
                name: "a payment that rounds to nothing earns nothing",
                program: us(),
                payment: invoice("0.04", "USD", WON + MONTH),
                customer: customer("0", 1),
                // 0.04 × 10 / 100 = 0.004 → 0.00
                want: Err("invoice in_1 earns 0.00 USD after rounding"),
            },
            Case {
                name: "a renewal deal without an amount: review",
                program: us(),
                payment: PaymentFacts {
                    amount: None,
                    currency: None,
                    paid_at: WON + 11 * MONTH,
                    source: "renewal deal 2001".into(),
                },
                customer: customer("0", 1),
                want: Ok(("0.00", Some("bronze"), InitialStatus::NeedsReview, vec!["deal amount unknown"])),
            },
            Case {
                name: "RU: a program without a cap, flat tiers",
                program: {
                    let mut p = ru();
                    p.recurring = Some(RecurringRule { percent: d("5"), months: 24, cap: None });
                    p
                },
                payment: invoice("200000", "RUB", WON + 13 * MONTH),
                customer: customer("1000000", 3),
                // 200000 × 5 / 100 = 10000 × 1.5 (insider) = 15000.00; the 24-month window holds
                want: pays("15000.00", "insider"),
            },
        ]
    }

    #[test]
    fn table_of_recurring_cases() {
        for case in cases() {
            let rule = case.program.recurring.clone().unwrap_or_else(rule);
            let got = evaluate_recurring(
                &case.program,
                &rule,
                &fraud(),
                &case.payment,
                &case.customer,
                &referee(),
                &referrer(case.customer.successful_at_payment),
            );
            match (&case.want, got) {
                (Err(want), Evaluation::NotEligible { reason }) => {
                    assert_eq!(&reason, want, "{}", case.name)
                }
                (Ok((amount, tier, status, reasons)), Evaluation::Rewards(decisions)) => {
                    assert_eq!(
                        decisions.len(),
                        1,
                        "{}: one line, the referrer's",
                        case.name
                    );
                    let got = &decisions[0];
                    assert_eq!(got.beneficiary, Beneficiary::Referrer, "{}", case.name);
                    assert_eq!(got.kind, RECURRING_KIND, "{}", case.name);
                    assert_eq!(got.amount.to_string(), *amount, "{}: amount", case.name);
                    assert_eq!(got.tier.as_deref(), *tier, "{}: tier", case.name);
                    assert_eq!(got.status, *status, "{}: status", case.name);
                    assert_eq!(got.review_reasons, *reasons, "{}: reasons", case.name);
                    assert_eq!(
                        got.hold_until,
                        case.payment.paid_at + i64::from(case.program.hold_days) * DAY,
                        "{}: the hold runs from the payment",
                        case.name
                    );
                    assert_eq!(got.calculation["final_amount"], *amount, "{}", case.name);
                }
                (want, got) => panic!("{}: expected {want:?}, got {got:?}", case.name),
            }
        }
    }

    #[test]
    fn a_recurring_calculation_explains_every_number() {
        // 999.99 EUR × 1.08 = 1079.9892 USD; × 10 / 100 = 107.99892; × 1.5 = 161.99838 → 162.00
        let Evaluation::Rewards(got) = evaluate_recurring(
            &us(),
            &rule(),
            &fraud(),
            &invoice("999.99", "EUR", WON + MONTH),
            &customer("100", 3),
            &referee(),
            &referrer(3),
        ) else {
            panic!("expected a line");
        };
        let c = &got[0].calculation;
        assert_eq!(c["payment_amount"], "999.99");
        assert_eq!(c["payment_currency"], "EUR");
        assert_eq!(c["fx_rate"], "1.08");
        let num = |v: &Value| d(v.as_str().expect("a decimal string"));
        assert_eq!(num(&c["payment_amount_converted"]), d("1079.9892"));
        assert_eq!(num(&c["base_amount"]), d("107.99892"));
        assert_eq!(num(&c["pre_cap_amount"]), d("161.99838"));
        assert_eq!(num(&c["multiplier"]), d("1.5"));
        assert_eq!(num(&c["cap_remaining"]), d("19900"));
        assert_eq!(c["capped"], false);
        assert_eq!(c["first_win_at"], WON);
        assert_eq!(c["window_end"], window_end(WON, 12).unwrap());
        assert_eq!(
            c["formula"],
            "1079.9892 USD × 10 / 100 = 107.99892; × 1.5 = 161.99838; 19900 left of cap 20000, not reached → 161.99838; rounded to 2 dp = 162.00"
        );
        assert!(crate::rewards::calculate::amount_computed(&c.to_string()));
    }

    #[test]
    fn table_of_refund_adjustments() {
        // (line, invoice, refunded before, refund, adjustment), all worked by hand.
        let cases = [
            // A partial refund: 250 of 1000 refunded takes back 25% of 100.00 = 25.00.
            ("100.00", "1000", "0", "250", "-25.00"),
            // A full refund takes back the whole line.
            ("120.00", "1200", "0", "1200", "-120.00"),
            // The line at silver: 25% of 150.00 = 37.50.
            ("150.00", "1000", "0", "250", "-37.50"),
            // Three thirds of 100.00: 33.33, then 66.67 − 33.33 = 33.34, then 100.00 − 66.67 =
            // 33.33; together exactly the line.
            ("100.00", "300", "0", "100", "-33.33"),
            ("100.00", "300", "100", "100", "-33.34"),
            ("100.00", "300", "200", "100", "-33.33"),
            // More refunded than paid takes back no more than the line.
            ("100.00", "300", "200", "500", "-33.33"),
            ("100.00", "300", "300", "50", "0.00"),
            // A capped line: refunding half of the invoice takes back half of what was paid.
            ("500.00", "12000", "0", "6000", "-250.00"),
        ];
        for (line, invoice, before, refund, want) in cases {
            assert_eq!(
                refund_adjustment(d(line), d(invoice), d(before), d(refund)).to_string(),
                want,
                "line {line}, invoice {invoice}, refunded {before} then {refund}"
            );
        }
    }

    #[test]
    fn table_of_installments() {
        // (reward, shares, installments), worked by hand.
        let cases: [(&str, &[&str], &[&str]); 6] = [
            // RU: 50,000.00 half at the win, half at the end of the hold.
            ("50000.00", &["0.5", "0.5"], &["25000.00", "25000.00"]),
            // 75,000 (insider 1.5×) halves.
            ("75000.00", &["0.5", "0.5"], &["37500.00", "37500.00"]),
            // An odd cent goes up in the first share, the last takes the rest: 50.005 → 50.01.
            ("100.01", &["0.5", "0.5"], &["50.01", "50.00"]),
            // Thirds: 33.33 + 33.33 + 33.34.
            (
                "100.00",
                &["0.3333333333", "0.3333333333", "0.3333333334"],
                &["33.33", "33.33", "33.34"],
            ),
            // 30/70.
            ("1234.56", &["0.3", "0.7"], &["370.37", "864.19"]),
            // No schedule: the whole reward.
            ("3000.00", &[], &["3000.00"]),
        ];
        for (amount, shares, want) in cases {
            let shares: Vec<Decimal> = shares.iter().map(|s| d(s)).collect();
            let got: Vec<String> = installment_amounts(d(amount), &shares)
                .iter()
                .map(Decimal::to_string)
                .collect();
            assert_eq!(got, want, "{amount} in {shares:?}");
            let sum: Decimal = installment_amounts(d(amount), &shares).iter().sum();
            assert_eq!(sum, d(amount), "{amount}: the installments add up");
        }
    }
}

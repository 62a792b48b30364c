//! Payout statements (SPEC §4 "Payouts"): what each referrer is owed per currency and calendar
//! month (UTC), and marking it paid.
//!
//! A line is payable once `eligible` (or `approved` after review); a line with a payout schedule
//! pays each installment when its moment comes (`won`: even while the hold runs; `hold_end`: once
//! eligible). Reading a period ([`read_period`]) gathers what became payable in it and is on no
//! statement yet into one open statement per (referrer, currency), and takes off an open statement
//! what is no longer payable (rejected, paid on its own); what became payable in an earlier month
//! whose statement was paid (or never opened) joins the next one read. Marking a statement paid
//! ([`mark_paid`]) freezes it, and each reward line it paid in full becomes `paid`, audited with
//! the transfer reference. Totals are exact decimals per currency, never summed across
//! currencies.

use std::collections::{BTreeMap, HashMap, HashSet};

use rust_decimal::Decimal;
use serde::Serialize;

use crate::clock::{to_rfc3339, Millis};
use crate::config::{InstallmentSettings, Settings};
use crate::domain::payout::{InstallmentAt, PayoutStatus, Period};
use crate::domain::reward::RewardStatus;
use crate::reports::funnel::neutralize_formula;
use crate::rewards::engine;
use crate::rewards::recurring::installment_amounts;
use crate::store::{
    count, NewAudit, NewPayout, NewPayoutLine, PayoutDue, PayoutLineKey, PayoutLineRow, PayoutRow,
    Reward, Store, StoreError, Tx,
};

/// Which statements a reading returns (all of the period are gathered either way).
#[derive(Debug, Clone, Default)]
pub struct StatementFilter {
    pub currency: Option<String>,
    pub referrer: Option<String>,
}

/// One statement: what one referrer is owed in one currency for one month.
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    pub id: String,
    pub period: String,
    pub referrer_code: String,
    pub currency: String,
    /// `open` or `paid`.
    pub status: PayoutStatus,
    /// Exact, with cents; negative when adjustments outweigh what is owed.
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    /// `YYYY-MM-DD`: the end of the month plus the program's `payout_terms_days`.
    pub due_date: String,
    pub reference: Option<String>,
    pub paid_at: Option<String>,
    pub paid_by: Option<String>,
    pub lines: Vec<StatementLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatementLine {
    pub reward_id: String,
    /// The deal the line is written to, `crm:object_type:id`.
    pub deal: String,
    /// `reward`, `recurring` or `adjustment`.
    pub kind: String,
    /// For a payout-schedule installment, its moment (`won`, `hold_end`).
    pub installment: Option<String>,
    /// What made a line other than a deal's own win: `invoice:<id>`, `refund:<key>`,
    /// `clawback:<reward id>`.
    pub source: Option<String>,
    /// Negative for adjustments.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// When it became payable (RFC 3339).
    pub payable_at: String,
}

/// A period's statements and their totals per currency.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodPayouts {
    pub period: String,
    pub statements: Vec<Statement>,
    /// Per currency; never one sum across currencies.
    pub totals: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error("{0}")]
    Invalid(String),
    #[error("payout statement {0} not found")]
    NotFound(String),
    /// Paid already, or changed since it was read: nothing was changed.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What of a line is payable: the whole line (installment 0) or installment n of its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub installment: i64,
    pub at: Option<InstallmentAt>,
    pub amount: Decimal,
    pub payable_at: Millis,
}

/// The installments fixed on a line when it was made (empty: paid whole).
fn schedule_of(
    reward_id: &str,
    schedule: Option<&str>,
) -> Result<Vec<InstallmentSettings>, StoreError> {
    match schedule {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            StoreError::Corrupt(format!("reward {reward_id}: payout schedule `{text}`: {e}"))
        }),
    }
}

/// What of `r` is payable now, whatever statement it is on. Pure.
pub fn payable(r: &Reward) -> Result<Vec<Due>, StoreError> {
    let status = r.line.status;
    let whole_at = || {
        r.payable_at.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "reward {} is {} without a payable time",
                r.id, r.line.status
            ))
        })
    };
    let schedule = schedule_of(&r.id, r.line.payout_schedule.as_deref())?;
    if schedule.is_empty() {
        return Ok(match status {
            RewardStatus::Eligible | RewardStatus::Approved => vec![Due {
                installment: 0,
                at: None,
                amount: r.amount()?,
                payable_at: whole_at()?,
            }],
            _ => Vec::new(),
        });
    }
    let payable_in_full = matches!(status, RewardStatus::Eligible | RewardStatus::Approved);
    if !payable_in_full && status != RewardStatus::Pending {
        return Ok(Vec::new());
    }
    let shares: Vec<Decimal> = schedule.iter().map(|s| s.share).collect();
    let amounts = installment_amounts(r.amount()?, &shares);
    let mut due = Vec::new();
    for (i, (step, amount)) in schedule.iter().zip(amounts).enumerate() {
        let payable_at = match step.at {
            // The win pays its share even while the hold runs; after a review, from the approval.
            InstallmentAt::Won if r.line.review_reason.is_none() => r.line.won_at,
            InstallmentAt::Won if payable_in_full => whole_at()?,
            InstallmentAt::Won => continue,
            InstallmentAt::HoldEnd if payable_in_full => whole_at()?,
            InstallmentAt::HoldEnd => continue,
        };
        due.push(Due {
            installment: i64::try_from(i + 1).unwrap_or(i64::MAX),
            at: Some(step.at),
            amount,
            payable_at,
        });
    }
    Ok(due)
}

/// A period's statements, gathered (opened or refreshed) first. A period that has not begun is
/// refused: it would sweep up what belongs to the current month.
pub async fn read_period(
    store: &Store,
    settings: &Settings,
    period: Period,
    filter: &StatementFilter,
    now: Millis,
) -> Result<PeriodPayouts, PayoutError> {
    if period > Period::of(now) {
        return Err(PayoutError::Invalid(format!(
            "period {period} has not begun (the current month is {})",
            Period::of(now)
        )));
    }
    let mut tx = store.begin().await?;
    gather(&mut tx, settings, period, now).await?;
    let rows = tx
        .payouts_of_period(
            &period.to_string(),
            filter.currency.as_deref(),
            filter.referrer.as_deref(),
        )
        .await?;
    let statements = statements(&mut tx, rows).await?;
    tx.commit().await?;
    let mut totals: BTreeMap<String, Decimal> = BTreeMap::new();
    for s in &statements {
        *totals.entry(s.currency.clone()).or_default() += s.total;
    }
    Ok(PeriodPayouts {
        period: period.to_string(),
        statements,
        totals: totals
            .into_iter()
            .map(|(currency, total)| (currency, money(total).to_string()))
            .collect(),
    })
}

/// One referrer's latest statements as they stand, newest period first, at most `limit`, read
/// in one snapshot. Nothing is gathered: a statement appears once its period has been read
/// ([`read_period`]), and an open one totals the lines it holds.
pub async fn of_referrer(
    store: &Store,
    referrer: &str,
    limit: i64,
) -> Result<Vec<Statement>, StoreError> {
    let mut tx = store.begin_read().await?;
    let rows = tx.payouts_of_referrer(referrer, limit).await?;
    let statements = statements(&mut tx, rows).await?;
    tx.commit().await?;
    Ok(statements)
}

fn money(d: Decimal) -> Decimal {
    crate::rewards::calculate::round_money(d)
}

/// Gather `period`'s open statements: add what became payable and is on no statement, take off
/// what is no longer payable, fix due dates, drop statements left empty.
async fn gather(
    tx: &mut Tx,
    settings: &Settings,
    period: Period,
    now: Millis,
) -> Result<(), StoreError> {
    tx.lock_payout_gathering().await?;
    let label = period.to_string();
    let candidates = tx.payout_candidates().await?;
    let ids: Vec<&str> = candidates.iter().map(|r| r.id.as_str()).collect();
    let placed: HashSet<(String, i64)> = tx
        .placed_lines(&ids)
        .await?
        .into_iter()
        .map(|p| (p.reward_id, p.installment))
        .collect();
    // Months whose own statement is still open keep their lines for it.
    let open_elsewhere: HashSet<(String, String, String)> = tx
        .open_payouts()
        .await?
        .into_iter()
        .map(|p| (p.referrer_code, p.currency, p.period))
        .collect();
    let mut still_due: HashSet<(String, i64)> = HashSet::new();
    let mut wanted: BTreeMap<(String, String), Vec<(NewPayoutLine, String)>> = BTreeMap::new();
    for r in &candidates {
        let Some(code) = r.line.referrer_code.clone() else {
            continue;
        };
        for due in payable(r)? {
            if due.payable_at >= period.end() {
                continue;
            }
            still_due.insert((r.id.clone(), due.installment));
            if placed.contains(&(r.id.clone(), due.installment)) {
                continue;
            }
            let own = Period::of(due.payable_at);
            if own < period
                && open_elsewhere.contains(&(
                    code.clone(),
                    r.line.currency.clone(),
                    own.to_string(),
                ))
            {
                continue;
            }
            wanted
                .entry((code.clone(), r.line.currency.clone()))
                .or_default()
                .push((
                    NewPayoutLine {
                        reward_id: r.id.clone(),
                        installment: due.installment,
                        payout_id: String::new(),
                        kind: r.line.line_kind.as_str().to_string(),
                        amount: money(due.amount).to_string(),
                        payable_at: due.payable_at,
                    },
                    r.line.market.clone(),
                ));
        }
    }
    let existing = tx.payouts_of_period(&label, None, None).await?;
    let open_here: Vec<&str> = existing
        .iter()
        .filter(|p| p.status == PayoutStatus::Open)
        .map(|p| p.id.as_str())
        .collect();
    let stale: Vec<PayoutLineKey> = tx
        .payout_lines_of(&open_here)
        .await?
        .into_iter()
        .filter(|l| !still_due.contains(&(l.reward_id.clone(), l.installment)))
        .map(|l| PayoutLineKey {
            payout_id: l.payout_id,
            reward_id: l.reward_id,
            installment: l.installment,
        })
        .collect();
    if wanted.is_empty() && stale.is_empty() {
        return Ok(());
    }
    let known: HashSet<(String, String)> = existing
        .iter()
        .map(|p| (p.referrer_code.clone(), p.currency.clone()))
        .collect();
    let opening: Vec<NewPayout> = wanted
        .iter()
        .filter(|(key, _)| !known.contains(*key))
        .map(|((code, currency), lines)| NewPayout {
            id: uuid::Uuid::now_v7().to_string(),
            period: label.clone(),
            referrer_code: code.clone(),
            currency: currency.clone(),
            due_date: period.due_date(terms(settings, lines.iter().map(|(_, m)| m.as_str()))),
        })
        .collect();
    tx.insert_payouts(&opening, now).await?;
    let statements: HashMap<(String, String), String> = tx
        .payouts_of_period(&label, None, None)
        .await?
        .into_iter()
        .map(|p| ((p.referrer_code, p.currency), p.id))
        .collect();
    let mut touching: Vec<&str> = wanted
        .keys()
        .filter_map(|key| statements.get(key).map(String::as_str))
        .collect();
    touching.extend(stale.iter().map(|l| l.payout_id.as_str()));
    let open: HashSet<String> = tx
        .touch_open_payouts(&touching, now)
        .await?
        .into_iter()
        .collect();
    let mut adding = Vec::new();
    for (key, lines) in wanted {
        let Some(id) = statements.get(&key).filter(|id| open.contains(*id)) else {
            continue;
        };
        adding.extend(lines.into_iter().map(|(line, _)| NewPayoutLine {
            payout_id: id.clone(),
            ..line
        }));
    }
    adding.sort_by(|a, b| (&a.reward_id, a.installment).cmp(&(&b.reward_id, b.installment)));
    tx.insert_payout_lines(&adding).await?;
    let stale: Vec<PayoutLineKey> = stale
        .into_iter()
        .filter(|l| open.contains(&l.payout_id))
        .collect();
    tx.delete_payout_lines(&stale).await?;
    let open: Vec<&str> = open.iter().map(String::as_str).collect();
    let mut markets: HashMap<String, Vec<String>> = HashMap::new();
    for line in tx.payout_lines_of(&open).await? {
        markets.entry(line.payout_id).or_default().push(line.market);
    }
    let due: Vec<PayoutDue> = markets
        .iter()
        .map(|(id, markets)| PayoutDue {
            id: id.clone(),
            due_date: period.due_date(terms(settings, markets.iter().map(String::as_str))),
        })
        .collect();
    tx.set_payout_due_dates(&due).await?;
    tx.delete_empty_payouts(&open).await
}

/// The payment terms of a statement: the longest of its lines' programs (30 days when a line's
/// program is no longer configured).
fn terms<'a>(settings: &Settings, markets: impl Iterator<Item = &'a str>) -> u32 {
    markets
        .map(|m| settings.programs.get(m).map_or(30, |p| p.payout_terms_days))
        .max()
        .unwrap_or(30)
}

/// Statements with their lines and totals.
async fn statements(tx: &mut Tx, rows: Vec<PayoutRow>) -> Result<Vec<Statement>, StoreError> {
    let ids: Vec<&str> = rows.iter().map(|p| p.id.as_str()).collect();
    let mut lines: HashMap<String, Vec<PayoutLineRow>> = HashMap::new();
    for line in tx.payout_lines_of(&ids).await? {
        lines.entry(line.payout_id.clone()).or_default().push(line);
    }
    rows.into_iter()
        .map(|p| {
            let lines = lines.remove(&p.id).unwrap_or_default();
            statement(p, lines)
        })
        .collect()
}

fn statement(p: PayoutRow, rows: Vec<PayoutLineRow>) -> Result<Statement, StoreError> {
    let mut lines = Vec::with_capacity(rows.len());
    let mut sum = Decimal::ZERO;
    for l in rows {
        let amount: Decimal = l.amount.parse().map_err(|e| {
            StoreError::Corrupt(format!("payout {} line amount `{}`: {e}", p.id, l.amount))
        })?;
        sum += amount;
        let installment = match usize::try_from(l.installment) {
            Ok(0) => None,
            Ok(n) => Some(
                schedule_of(&l.reward_id, l.payout_schedule.as_deref())?
                    .get(n - 1)
                    .map(|s| s.at.as_str().to_string())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "payout {} line {}: no installment {n} in its schedule",
                            p.id, l.reward_id
                        ))
                    })?,
            ),
            Err(_) => {
                return Err(StoreError::Corrupt(format!(
                    "payout {} line {}: installment {}",
                    p.id, l.reward_id, l.installment
                )))
            }
        };
        let deal_type = l.crm.deal_type();
        lines.push(StatementLine {
            reward_id: l.reward_id,
            deal: format!("{}:{deal_type}:{}", l.crm, l.deal_id),
            kind: l.kind,
            installment,
            source: l.source_key,
            amount,
            payable_at: to_rfc3339(l.payable_at),
        });
    }
    let total = match (p.status, p.total.as_deref()) {
        (PayoutStatus::Paid, Some(total)) => total
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("payout {}: total `{total}`: {e}", p.id)))?,
        (PayoutStatus::Paid, None) => {
            return Err(StoreError::Corrupt(format!(
                "payout {} is paid without a total",
                p.id
            )))
        }
        (PayoutStatus::Open, _) => money(sum),
    };
    Ok(Statement {
        id: p.id,
        period: p.period,
        referrer_code: p.referrer_code,
        currency: p.currency,
        status: p.status,
        total,
        due_date: p.due_date,
        reference: p.reference,
        paid_at: p.paid_at.map(to_rfc3339),
        paid_by: p.paid_by,
        lines,
    })
}

/// A statement's payment as the payer reports it.
#[derive(Debug, Clone, Copy)]
pub struct Payment<'a> {
    /// The statement's id.
    pub statement: &'a str,
    /// The transfer's reference.
    pub reference: &'a str,
    /// The total the payer read, when they give it: the statement must still total that.
    pub expected_total: Option<Decimal>,
    /// Who marks it paid.
    pub actor: &'a str,
}

/// Mark an open statement paid: every line it holds is paid in this one audited transaction, the
/// statement frozen. Paid already → [`PayoutError::Conflict`] and nothing changes; so too when a
/// line on it is no longer payable, or the payment's expected total differs: read the period
/// again.
pub async fn mark_paid(
    store: &Store,
    settings: &Settings,
    payment: Payment<'_>,
    now: Millis,
) -> Result<Statement, PayoutError> {
    let payment = Payment {
        reference: payment.reference.trim(),
        ..payment
    };
    if payment.reference.is_empty() {
        return Err(PayoutError::Invalid(
            "reference is required: the transfer's reference".into(),
        ));
    }
    let mut tx = store.begin().await?;
    // Rewards change only in reconcile rounds, which hold this lock: none runs meanwhile.
    tx.lock_reconcile().await?;
    match pay(&mut tx, settings, payment, now).await {
        Ok(statement) => {
            tx.commit().await?;
            Ok(statement)
        }
        Err(e) => {
            // Now, not when the connection is next used: the lock is held until then.
            tx.rollback().await?;
            Err(e)
        }
    }
}

async fn pay(
    tx: &mut Tx,
    settings: &Settings,
    payment: Payment<'_>,
    now: Millis,
) -> Result<Statement, PayoutError> {
    let Payment {
        statement: id,
        reference,
        expected_total,
        actor,
    } = payment;
    let Some(current) = tx.payout(id).await? else {
        return Err(PayoutError::NotFound(id.into()));
    };
    // The statement's row lock first: a refresh adding to it waits, or finds it paid.
    if tx.touch_open_payouts(&[id], now).await?.is_empty() {
        return Err(PayoutError::Conflict(format!(
            "payout statement {id} was paid at {} by {} with reference {}; nothing changed",
            current.paid_at.map(to_rfc3339).unwrap_or_default(),
            current.paid_by.as_deref().unwrap_or("unknown"),
            current.reference.as_deref().unwrap_or("-"),
        )));
    }
    let lines = tx.payout_lines_of(&[id]).await?;
    let reward_ids: Vec<&str> = lines.iter().map(|l| l.reward_id.as_str()).collect();
    let mut rewards: HashMap<String, Reward> = HashMap::new();
    for rid in &reward_ids {
        if let Some(r) = tx.reward(rid).await? {
            rewards.insert(r.id.clone(), r);
        }
    }
    for l in &lines {
        let still = match rewards.get(&l.reward_id) {
            Some(r) => payable(r)?.iter().any(|d| d.installment == l.installment),
            None => false,
        };
        if !still {
            return Err(PayoutError::Conflict(format!(
                "reward {} on payout statement {id} is no longer payable; read the period again",
                l.reward_id
            )));
        }
    }
    let mut statement = statement(current, lines.clone())?;
    if let Some(expected) = expected_total {
        if expected != statement.total {
            return Err(PayoutError::Conflict(format!(
                "payout statement {id} totals {} {}, not {expected}; read the period again",
                statement.total, statement.currency
            )));
        }
    }
    let total = statement.total.to_string();
    let Some(paid) = tx
        .mark_payout_paid(id, reference, &total, actor, now)
        .await?
    else {
        return Err(PayoutError::Conflict(format!(
            "payout statement {id} changed meanwhile; read the period again"
        )));
    };
    // A line is paid once every installment of it is on a paid statement.
    let counts: HashMap<String, i64> = tx
        .paid_installments(&reward_ids)
        .await?
        .into_iter()
        .collect();
    let why = format!("paid with payout statement {id}, reference {reference}");
    let mut fully_paid = Vec::new();
    for (rid, r) in &rewards {
        let installments = schedule_of(rid, r.line.payout_schedule.as_deref())?
            .len()
            .max(1);
        let on_paid = count(counts.get(rid).copied().unwrap_or(0))?;
        if on_paid >= installments as u64 {
            fully_paid.push(rid);
        }
    }
    fully_paid.sort();
    let mut paid_rewards = Vec::new();
    for rid in fully_paid {
        if engine::paid_by_statement(tx, settings, rid, actor, &why, now)
            .await?
            .is_some()
        {
            paid_rewards.push(rid.clone());
        }
    }
    tx.audit(
        &NewAudit {
            actor,
            action: "payout_paid",
            entity_type: "payout",
            entity_id: id,
            old_value: None,
            new_value: Some(
                serde_json::json!({"reference": reference, "total": total,
                                   "currency": statement.currency, "lines": lines.len(),
                                   "rewards_paid": paid_rewards})
                .to_string(),
            ),
            reason: None,
        },
        now,
    )
    .await?;
    statement.status = paid.status;
    statement.reference = paid.reference;
    statement.paid_at = paid.paid_at.map(to_rfc3339);
    statement.paid_by = paid.paid_by;
    Ok(statement)
}

/// One row per statement line (a statement without lines has none): text cells neutralised
/// against spreadsheet formulas; amounts are numbers this service wrote, a negative one stays a
/// number.
pub fn to_csv(payouts: &PeriodPayouts) -> String {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let header = [
        "statement_id",
        "period",
        "referrer_code",
        "currency",
        "status",
        "due_date",
        "reference",
        "statement_total",
        "reward_id",
        "deal",
        "kind",
        "installment",
        "source",
        "amount",
        "payable_at",
    ];
    out.write_record(header).expect("CSV to memory");
    for s in &payouts.statements {
        for l in &s.lines {
            let text = |t: &str| neutralize_formula(t.to_string());
            out.write_record([
                text(&s.id),
                text(&s.period),
                text(&s.referrer_code),
                text(&s.currency),
                text(s.status.as_str()),
                text(&s.due_date),
                text(s.reference.as_deref().unwrap_or_default()),
                s.total.to_string(),
                text(&l.reward_id),
                text(&l.deal),
                text(&l.kind),
                text(l.installment.as_deref().unwrap_or_default()),
                text(l.source.as_deref().unwrap_or_default()),
                l.amount.to_string(),
                text(&l.payable_at),
            ])
            .expect("CSV to memory");
        }
    }
    String::from_utf8(out.into_inner().expect("CSV to memory")).expect("CSV of UTF-8 is UTF-8")
}

/// For the terminal: each statement, its lines, then the totals per currency.
pub fn to_table(payouts: &PeriodPayouts) -> String {
    let mut out = format!("Payout statements for {}\n", payouts.period);
    if payouts.statements.is_empty() {
        out.push_str("\n  nothing payable\n");
    }
    for s in &payouts.statements {
        out.push_str(&format!(
            "\n  {} {} {} — {}, due {}{}\n",
            s.referrer_code,
            s.currency,
            s.total,
            s.status,
            s.due_date,
            s.reference
                .as_deref()
                .map(|r| format!(", reference {r}"))
                .unwrap_or_default()
        ));
        out.push_str(&format!("  statement {}\n", s.id));
        for l in &s.lines {
            let what = match (&l.installment, &l.source) {
                (Some(at), _) => format!("{} ({at} share)", l.kind),
                (None, Some(source)) => format!("{} ({source})", l.kind),
                (None, None) => l.kind.clone(),
            };
            out.push_str(&format!(
                "    {:>12}  {:<40} {}  {}\n",
                l.amount,
                what,
                l.deal,
                &l.payable_at[..10.min(l.payable_at.len())]
            ));
        }
    }
    if !payouts.totals.is_empty() {
        out.push_str("\n  Totals: ");
        out.push_str(
            &payouts
                .totals
                .iter()
                .map(|(c, t)| format!("{t} {c}"))
                .collect::<Vec<_>>()
                .join("; "),
        );
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::reward::{Beneficiary, LineKind};
    use crate::domain::Crm;
    use crate::store::NewReward;

    const WON: Millis = 1_000_000;
    const ELIGIBLE: Millis = 2_000_000;

    fn line(status: &str, schedule: Option<&str>, review: Option<&str>) -> Reward {
        Reward {
            id: "r1".into(),
            line: NewReward {
                crm: Crm::HubSpot,
                deal_id: "201".into(),
                beneficiary: Beneficiary::Referrer,
                referral_id: "ref".into(),
                referrer_code: Some("IVAN-1".into()),
                market: "RU".into(),
                status: status.parse().unwrap(),
                kind: "flat".into(),
                amount: "50000.00".into(),
                currency: "RUB".into(),
                tier: None,
                deal_amount: None,
                deal_currency: None,
                fx_rate: None,
                calculation: "{}".into(),
                flags: "[]".into(),
                review_reason: review.map(Into::into),
                won_at: WON,
                hold_until: None,
                line_kind: LineKind::Reward,
                source_key: None,
                adjusts: None,
                payout_schedule: schedule.map(Into::into),
            },
            decided_by: None,
            created_at: WON,
            updated_at: WON,
            payable_at: matches!(status, "eligible" | "approved").then_some(ELIGIBLE),
        }
    }

    const HALVES: &str = r#"[{"at":"won","share":"0.5"},{"at":"hold_end","share":"0.5"}]"#;

    /// (installment, amount, payable at) of what is payable.
    fn due(r: &Reward) -> Vec<(i64, String, Millis)> {
        payable(r)
            .unwrap()
            .into_iter()
            .map(|d| (d.installment, d.amount.to_string(), d.payable_at))
            .collect()
    }

    #[test]
    fn what_of_a_line_is_payable_follows_its_status_and_schedule() {
        let half = |i: i64, at: Millis| (i, "25000.00".to_string(), at);
        let whole = || (0, "50000.00".to_string(), ELIGIBLE);
        // Paid whole once payable; nothing before, nothing after.
        assert_eq!(due(&line("pending", None, None)), []);
        assert_eq!(due(&line("eligible", None, None)), [whole()]);
        assert_eq!(
            due(&line("approved", None, Some("above threshold"))),
            [whole()]
        );
        for settled in ["paid", "reversed", "rejected", "needs_review"] {
            assert_eq!(due(&line(settled, Some(HALVES), None)), [], "{settled}");
        }
        // Half at the win, even while the hold runs; the other half once eligible.
        assert_eq!(due(&line("pending", Some(HALVES), None)), [half(1, WON)]);
        assert_eq!(
            due(&line("eligible", Some(HALVES), None)),
            [half(1, WON), half(2, ELIGIBLE)]
        );
        // After a review, nothing is payable before the approval, and both halves from it.
        assert_eq!(due(&line("pending", Some(HALVES), Some("flagged"))), []);
        assert_eq!(
            due(&line("approved", Some(HALVES), Some("flagged"))),
            [half(1, ELIGIBLE), half(2, ELIGIBLE)]
        );
        // What cannot be read is an error, never a guess.
        assert!(payable(&line("eligible", Some("[{\"at\":\"signed\"}]"), None)).is_err());
        let mut no_time = line("eligible", None, None);
        no_time.payable_at = None;
        assert!(payable(&no_time).is_err());
    }
}

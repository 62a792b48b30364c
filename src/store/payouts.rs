//! Payout statements' SQL. One statement per (referrer, currency, period) and a reward line (or
//! one installment of it) in at most one statement are unique keys, so replicas gathering the
//! same period at once end with one statement and each line once. A statement's lines change only
//! while it is open, under a row lock taken on the statement first ([`Tx::touch_open_payouts`],
//! [`Tx::mark_payout_paid`]), so marking it paid never races a refresh adding to it. Gatherings
//! of a period take turns ([`Tx::lock_payout_gathering`]): two at once write the same statements
//! in different orders, which PostgreSQL ends in a deadlock.

use serde::Serialize;

use super::bulk::{self, Col, Param};
use super::rewards::REWARD_COLUMNS;
use super::tx::{on_tx, TxInner};
use super::{Reward, StoreError, Tx};
use crate::clock::Millis;
use crate::domain::payout::PayoutStatus;
use crate::domain::Crm;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PayoutRow {
    pub id: String,
    pub period: String,
    pub referrer_code: String,
    pub currency: String,
    pub status: PayoutStatus,
    pub due_date: String,
    /// Frozen when paid; an open statement's total is its lines' sum.
    pub total: Option<String>,
    pub reference: Option<String>,
    pub paid_at: Option<i64>,
    pub paid_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A statement to open.
#[derive(Debug, Clone, Serialize)]
pub struct NewPayout {
    pub id: String,
    pub period: String,
    pub referrer_code: String,
    pub currency: String,
    pub due_date: String,
}

/// A line (or installment) put on a statement.
#[derive(Debug, Clone, Serialize)]
pub struct NewPayoutLine {
    pub reward_id: String,
    /// 0: the whole line; n: the n-th installment of its payout schedule.
    pub installment: i64,
    pub payout_id: String,
    pub kind: String,
    pub amount: String,
    pub payable_at: Millis,
}

/// A statement's line, with what the statement shows of its reward.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PayoutLineRow {
    pub payout_id: String,
    pub reward_id: String,
    pub installment: i64,
    pub kind: String,
    pub amount: String,
    pub payable_at: i64,
    pub crm: Crm,
    pub deal_id: String,
    pub source_key: Option<String>,
    pub market: String,
    pub payout_schedule: Option<String>,
}

/// Where a line (or installment) is, and the state of that statement.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlacedLine {
    pub reward_id: String,
    pub installment: i64,
    pub payout_id: String,
    pub period: String,
    pub status: PayoutStatus,
}

/// A line to take off an open statement.
#[derive(Debug, Clone, Serialize)]
pub struct PayoutLineKey {
    pub payout_id: String,
    pub reward_id: String,
    pub installment: i64,
}

/// A statement's due date, set when its lines change.
#[derive(Debug, Clone, Serialize)]
pub struct PayoutDue {
    pub id: String,
    pub due_date: String,
}

const PAYOUT_COLUMNS: &str = "p.id, p.period, p.referrer_code, p.currency, p.status, p.due_date, \
     p.total, p.reference, p.paid_at, p.paid_by, p.created_at, p.updated_at";

const LINE_COLUMNS: &str = "l.payout_id, l.reward_id, l.installment, l.kind, l.amount, \
     l.payable_at, w.crm, w.deal_id, w.source_key, w.market, w.payout_schedule";

#[derive(Serialize)]
struct Id<'a> {
    id: &'a str,
}

fn ids<'a>(values: &[&'a str]) -> Vec<Id<'a>> {
    values.iter().map(|id| Id { id }).collect()
}

/// Advisory-lock key of payout gathering (one gathering at a time per deployment).
const GATHER_LOCK: i64 = 0x7265_6673_796e_6304;

impl Tx {
    /// Wait for the payout gathering lock, held until the transaction ends. SQLite has one
    /// writer, which orders gatherings by itself.
    pub async fn lock_payout_gathering(&mut self) -> Result<(), StoreError> {
        if let TxInner::Postgres(t) = &mut self.inner {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(GATHER_LOCK)
                .execute(&mut **t)
                .await?;
        }
        Ok(())
    }

    /// The referrer's lines that are payable, or have installments payable, and are not paid.
    pub async fn payout_candidates(&mut self) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM rewards \
             WHERE beneficiary = 'referrer' AND referrer_code IS NOT NULL \
               AND (status IN ('eligible', 'approved') \
                    OR (status = 'pending' AND payout_schedule IS NOT NULL)) \
             ORDER BY id"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql).fetch_all(c).await?))
    }

    /// Where the lines (and installments) of these rewards are already.
    pub async fn placed_lines(&mut self, rewards: &[&str]) -> Result<Vec<PlacedLine>, StoreError> {
        self.bulk_fetch(
            "SELECT l.reward_id, l.installment, l.payout_id, p.period, p.status \
             FROM {rows} JOIN payout_lines l ON l.reward_id = r.v \
             JOIN payouts p ON p.id = l.payout_id",
            &bulk::LIST,
            &bulk::list(rewards),
            &[],
        )
        .await
    }

    pub async fn open_payouts(&mut self) -> Result<Vec<PayoutRow>, StoreError> {
        let sql = format!("SELECT {PAYOUT_COLUMNS} FROM payouts p WHERE p.status = 'open'");
        Ok(on_tx!(self, |c| sqlx::query_as(&sql).fetch_all(c).await?))
    }

    /// A period's statements, optionally of one currency and one referrer, in a fixed order.
    pub async fn payouts_of_period(
        &mut self,
        period: &str,
        currency: Option<&str>,
        referrer: Option<&str>,
    ) -> Result<Vec<PayoutRow>, StoreError> {
        let sql = format!(
            "SELECT {PAYOUT_COLUMNS} FROM payouts p WHERE p.period = $1 \
               AND ($2 IS NULL OR p.currency = $2) AND ($3 IS NULL OR p.referrer_code = $3) \
             ORDER BY p.currency, p.referrer_code"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(period)
            .bind(currency)
            .bind(referrer)
            .fetch_all(c)
            .await?))
    }

    /// One referrer's latest statements, newest period first (then by currency), at most
    /// `limit`.
    pub async fn payouts_of_referrer(
        &mut self,
        referrer: &str,
        limit: i64,
    ) -> Result<Vec<PayoutRow>, StoreError> {
        let sql = format!(
            "SELECT {PAYOUT_COLUMNS} FROM payouts p WHERE p.referrer_code = $1 \
             ORDER BY p.period DESC, p.currency, p.id LIMIT $2"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(referrer)
            .bind(limit)
            .fetch_all(c)
            .await?))
    }

    pub async fn payout(&mut self, id: &str) -> Result<Option<PayoutRow>, StoreError> {
        let sql = format!("SELECT {PAYOUT_COLUMNS} FROM payouts p WHERE p.id = $1");
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(c)
            .await?))
    }

    /// Open statements unless (referrer, currency, period) has one already (another replica may
    /// be opening the same at this moment: its row wins, nothing fails).
    pub async fn insert_payouts(
        &mut self,
        payouts: &[NewPayout],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO payouts (id, period, referrer_code, currency, status, due_date, \
                 created_at, updated_at) \
             SELECT r.id, r.period, r.referrer_code, r.currency, 'open', r.due_date, $2, $2 \
             FROM {rows} WHERE true \
             ON CONFLICT (referrer_code, currency, period) DO NOTHING",
            &[
                ("id", Col::Text),
                ("period", Col::Text),
                ("referrer_code", Col::Text),
                ("currency", Col::Text),
                ("due_date", Col::Text),
            ],
            payouts,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// Lock these statements for changing their lines; returns those still open (one being
    /// marked paid meanwhile is waited for, then left alone).
    pub async fn touch_open_payouts(
        &mut self,
        payouts: &[&str],
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let mut sorted = payouts.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let found: Vec<(String,)> = self
            .bulk_fetch(
                "UPDATE payouts SET updated_at = $2 \
                 WHERE status = 'open' AND id IN (SELECT r.id FROM {rows}) RETURNING id",
                &[("id", Col::Text)],
                &ids(&sorted),
                &[Param::Int(now)],
            )
            .await?;
        Ok(found.into_iter().map(|(id,)| id).collect())
    }

    /// Put lines on statements; a line another statement got first stays there.
    pub async fn insert_payout_lines(&mut self, lines: &[NewPayoutLine]) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO payout_lines (reward_id, installment, payout_id, kind, amount, payable_at) \
             SELECT r.reward_id, r.installment, r.payout_id, r.kind, r.amount, r.payable_at \
             FROM {rows} WHERE true ON CONFLICT (reward_id, installment) DO NOTHING",
            &[
                ("reward_id", Col::Text),
                ("installment", Col::BigInt),
                ("payout_id", Col::Text),
                ("kind", Col::Text),
                ("amount", Col::Text),
                ("payable_at", Col::BigInt),
            ],
            lines,
            &[],
        )
        .await?;
        Ok(())
    }

    pub async fn delete_payout_lines(&mut self, lines: &[PayoutLineKey]) -> Result<(), StoreError> {
        self.bulk_execute(
            "DELETE FROM payout_lines WHERE EXISTS (SELECT 1 FROM {rows} \
                 WHERE r.payout_id = payout_lines.payout_id AND r.reward_id = payout_lines.reward_id \
                   AND r.installment = payout_lines.installment)",
            &[
                ("payout_id", Col::Text),
                ("reward_id", Col::Text),
                ("installment", Col::BigInt),
            ],
            lines,
            &[],
        )
        .await?;
        Ok(())
    }

    /// The lines of these statements, in statement order then payable order.
    pub async fn payout_lines_of(
        &mut self,
        payouts: &[&str],
    ) -> Result<Vec<PayoutLineRow>, StoreError> {
        self.bulk_fetch(
            &format!(
                "SELECT {LINE_COLUMNS} FROM {{rows}} JOIN payout_lines l ON l.payout_id = r.id \
                 JOIN rewards w ON w.id = l.reward_id \
                 ORDER BY l.payout_id, l.payable_at, l.reward_id, l.installment"
            ),
            &[("id", Col::Text)],
            &ids(payouts),
            &[],
        )
        .await
    }

    pub async fn set_payout_due_dates(&mut self, due: &[PayoutDue]) -> Result<(), StoreError> {
        self.bulk_execute(
            "UPDATE payouts SET due_date = r.due_date FROM {rows} \
             WHERE payouts.id = r.id AND payouts.status = 'open'",
            &[("id", Col::Text), ("due_date", Col::Text)],
            due,
            &[],
        )
        .await?;
        Ok(())
    }

    /// Remove open statements that have no line left.
    pub async fn delete_empty_payouts(&mut self, payouts: &[&str]) -> Result<(), StoreError> {
        self.bulk_execute(
            "DELETE FROM payouts WHERE status = 'open' AND id IN (SELECT r.id FROM {rows}) \
               AND NOT EXISTS (SELECT 1 FROM payout_lines l WHERE l.payout_id = payouts.id)",
            &[("id", Col::Text)],
            &ids(payouts),
            &[],
        )
        .await?;
        Ok(())
    }

    /// Freeze an open statement as paid; `None` when it is not open (paid already, or unknown).
    pub async fn mark_payout_paid(
        &mut self,
        id: &str,
        reference: &str,
        total: &str,
        actor: &str,
        now: Millis,
    ) -> Result<Option<PayoutRow>, StoreError> {
        let sql = format!(
            "UPDATE payouts SET status = 'paid', reference = $2, total = $3, paid_by = $4, \
                 paid_at = $5, updated_at = $5 WHERE id = $1 AND status = 'open' \
             RETURNING {}",
            PAYOUT_COLUMNS.replace("p.", "")
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(id)
            .bind(reference)
            .bind(total)
            .bind(actor)
            .bind(now)
            .fetch_optional(c)
            .await?))
    }

    /// How many lines (installments) of each reward are on paid statements.
    pub async fn paid_installments(
        &mut self,
        rewards: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.bulk_fetch(
            "SELECT l.reward_id, COUNT(*) FROM {rows} JOIN payout_lines l ON l.reward_id = r.v \
             JOIN payouts p ON p.id = l.payout_id WHERE p.status = 'paid' GROUP BY l.reward_id",
            &bulk::LIST,
            &bulk::list(rewards),
            &[],
        )
        .await
    }

    /// The amounts of a reward's lines on paid statements.
    pub async fn paid_out_amounts(&mut self, reward_id: &str) -> Result<Vec<String>, StoreError> {
        let found: Vec<(String,)> = on_tx!(self, |c| sqlx::query_as(
            "SELECT l.amount FROM payout_lines l JOIN payouts p ON p.id = l.payout_id \
             WHERE l.reward_id = $1 AND p.status = 'paid' ORDER BY l.installment"
        )
        .bind(reward_id)
        .fetch_all(c)
        .await?);
        Ok(found.into_iter().map(|(a,)| a).collect())
    }

    /// A statement holding (part of) this reward, if any.
    pub async fn statement_of(&mut self, reward_id: &str) -> Result<Option<String>, StoreError> {
        let found: Option<(String,)> = on_tx!(self, |c| {
            sqlx::query_as(
            "SELECT payout_id FROM payout_lines WHERE reward_id = $1 ORDER BY installment LIMIT 1"
        )
        .bind(reward_id)
        .fetch_optional(c)
        .await?
        });
        Ok(found.map(|(id,)| id))
    }
}

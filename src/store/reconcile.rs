//! The reconcile queue: what the facts of a processed batch may have changed for the derived state
//! (links, milestones, rewards, the tamper guard). Each entry is written in the transaction of the
//! facts that caused it, so it becomes visible only once those facts are committed; the reconcile
//! step reads committed facts for it and deletes it in the transaction that brings the derived
//! state in line.

use serde::{Deserialize, Serialize};

use super::bulk::{Col, Param};
use super::tx::{on_tx, TxInner};
use super::{on_pool, Store, StoreError, Tx};
use crate::clock::Millis;

/// Advisory-lock key of the reconcile step (any constant unique to this job).
const RECONCILE_LOCK: i64 = 0x7265_6673_796e_6302;

/// What a recheck is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecheckKind {
    /// People with this normalised email may need a link (a claim, or a person's email changed).
    Email,
    /// This record's link or derived state may have changed (`crm:object_type:object_id`).
    Record,
    /// The CRM showed a referral-source value on this linked record (detail: [`GuardDetail`]).
    Guard,
    /// This invoice (its payment, or a refund of it) may earn or take back a recurring reward.
    Invoice,
    /// This person (a normalised email) had an advocacy moment to decide on.
    Moment,
    /// This deal was won, or got a person, since: a renewal win is an advocacy moment for its
    /// people (`crm:object_type:object_id`).
    Won,
}

impl RecheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Record => "record",
            Self::Guard => "guard",
            Self::Invoice => "invoice",
            Self::Moment => "moment",
            Self::Won => "won",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Email,
            Self::Record,
            Self::Guard,
            Self::Invoice,
            Self::Moment,
            Self::Won,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The value a CRM showed in a guarded referral-source property, and who changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardDetail {
    pub value: Option<String>,
    pub change_source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewRecheck {
    pub kind: RecheckKind,
    pub subject: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recheck {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub detail: Option<String>,
    pub attempts: i64,
}

impl Recheck {
    pub fn kind(&self) -> Result<RecheckKind, StoreError> {
        RecheckKind::parse(&self.kind)
            .ok_or_else(|| StoreError::Corrupt(format!("recheck kind `{}`", self.kind)))
    }

    /// The same recheck, to queue again.
    pub fn to_new(&self) -> Result<NewRecheck, StoreError> {
        Ok(NewRecheck {
            kind: self.kind()?,
            subject: self.subject.clone(),
            detail: self.detail.clone(),
        })
    }
}

impl Tx {
    pub async fn queue_rechecks(
        &mut self,
        rechecks: &[NewRecheck],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO reconcile_queue (kind, subject, detail, enqueued_at) \
             SELECT r.kind, r.subject, r.detail, $2 FROM {rows}",
            &[
                ("kind", Col::Text),
                ("subject", Col::Text),
                ("detail", Col::Text),
            ],
            rechecks,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// The oldest due rechecks, in the order they were queued.
    pub async fn due_rechecks(
        &mut self,
        now: Millis,
        limit: i64,
    ) -> Result<Vec<Recheck>, StoreError> {
        Ok(on_tx!(self, |c| sqlx::query_as(
            "SELECT id, kind, subject, detail, attempts FROM reconcile_queue \
             WHERE not_before <= $1 ORDER BY id LIMIT $2"
        )
        .bind(now)
        .bind(limit)
        .fetch_all(c)
        .await?))
    }

    pub async fn delete_rechecks(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        #[derive(Serialize)]
        struct Id {
            id: i64,
        }
        let ids: Vec<Id> = ids.iter().map(|&id| Id { id }).collect();
        self.bulk_execute(
            "DELETE FROM reconcile_queue WHERE id IN (SELECT r.id FROM {rows})",
            &[("id", Col::BigInt)],
            &ids,
            &[],
        )
        .await?;
        Ok(())
    }

    /// Queue `recheck` again after a failure: due at `not_before`, keeping the error.
    pub async fn queue_retry(
        &mut self,
        recheck: &NewRecheck,
        attempts: i64,
        error: &str,
        not_before: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| sqlx::query(
            "INSERT INTO reconcile_queue (kind, subject, detail, enqueued_at, not_before, \
                 attempts, last_error) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(recheck.kind.as_str())
        .bind(&recheck.subject)
        .bind(&recheck.detail)
        .bind(now)
        .bind(not_before)
        .bind(attempts)
        .bind(error)
        .execute(c)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Take the reconcile step's lock for this transaction; `false` when another processor holds
    /// it. SQLite has one writer: always `true`.
    pub async fn try_lock_reconcile(&mut self) -> Result<bool, StoreError> {
        match &mut self.inner {
            TxInner::Sqlite(_) => Ok(true),
            TxInner::Postgres(t) => {
                let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(RECONCILE_LOCK)
                    .fetch_one(&mut **t)
                    .await?;
                Ok(got)
            }
        }
    }

    /// Wait for the reconcile step's lock (admin changes to derived state take it, so they never
    /// interleave with a reconcile round).
    pub async fn lock_reconcile(&mut self) -> Result<(), StoreError> {
        if let TxInner::Postgres(t) = &mut self.inner {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(RECONCILE_LOCK)
                .execute(&mut **t)
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// Rechecks waiting after a failure: subject and error, oldest first.
    pub async fn failing_rechecks(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
            "SELECT subject, last_error FROM reconcile_queue WHERE last_error IS NOT NULL ORDER BY id"
        )
        .fetch_all(p)
        .await?
        }))
    }

    /// What the sessions of this service waiting for a lock another session holds wait on
    /// (`pg_stat_activity.wait_event`: `tuple`, `transactionid`, `extend`, …), one entry per
    /// session. PostgreSQL only; SQLite has no such view and answers none. For benchmarks and
    /// diagnosis.
    pub async fn sessions_waiting_on_locks(&self) -> Result<Vec<String>, StoreError> {
        match self.kind() {
            super::BackendKind::Sqlite => Ok(Vec::new()),
            super::BackendKind::Postgres => {
                let waiting: Vec<(String,)> = on_pool!(self, |p| sqlx::query_as(
                    "SELECT COALESCE(wait_event, '') FROM pg_stat_activity \
                     WHERE application_name = 'referral-sync' AND wait_event_type = 'Lock'"
                )
                .fetch_all(p)
                .await?);
                Ok(waiting.into_iter().map(|(w,)| w).collect())
            }
        }
    }

    /// Queued rechecks and how many of them failed at least once.
    pub async fn reconcile_backlog(&self) -> Result<(i64, i64), StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT COUNT(*), COUNT(last_error) FROM reconcile_queue"
        )
        .fetch_one(p)
        .await?))
    }
}

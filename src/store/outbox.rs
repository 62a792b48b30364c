//! The outbox's SQL: claiming CRM records by lease, and recording what a delivery attempt did.
//!
//! Per-record order: only a record's *head* (its oldest pending row) can be claimed, and the lease
//! is taken on that row, so one record is never delivered by two workers at once and its writes go
//! out in the order they were made. No transaction is held while the CRM is called: the lease is
//! the lock, and every finish is fenced on still holding it.

use serde::Serialize;

use super::bulk::{Col, Param};
use super::records::{RecordKey, KEY_COLUMNS};
use super::tx::{on_tx, Tx};
use super::{on_pool, Backend, BackendKind, Store, StoreError};
use crate::clock::Millis;
use crate::domain::{Crm, DeliveryStatus};
use crate::outbox::{CommandKind, CrmCommand};

/// A CRM write or read waiting in (or done with) the outbox.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub crm: Crm,
    pub account: String,
    pub object_type: String,
    pub object_id: String,
    pub kind: CommandKind,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

impl OutboxRow {
    /// What the row asks of the CRM.
    pub fn command(&self) -> Result<CrmCommand, StoreError> {
        CrmCommand::decode(self.kind, &self.payload)
            .map_err(|e| StoreError::Corrupt(format!("outbox row {}: {e}", self.id)))
    }
}

/// A new outbox row: a command for one record (built by [`CrmCommand::on`]).
#[derive(Debug, Clone)]
pub struct NewOutbox {
    pub crm: Crm,
    pub account: String,
    pub object_type: String,
    pub object_id: String,
    pub command: CrmCommand,
}

/// A [`NewOutbox`] as its columns, for the set-based insert.
#[derive(Serialize)]
struct OutboxColumns<'a> {
    crm: Crm,
    account: &'a str,
    object_type: &'a str,
    object_id: &'a str,
    kind: CommandKind,
    payload: String,
}

pub(super) const OUTBOX_COLUMNS: &str =
    "id, crm, account, object_type, object_id, kind, payload, status, \
     attempts, next_attempt_at, last_status, last_error, created_at, delivered_at";

impl Tx {
    pub async fn enqueue(&mut self, row: &NewOutbox, now: Millis) -> Result<(), StoreError> {
        self.enqueue_all(std::slice::from_ref(row), now).await
    }

    /// Queue CRM writes in the given order (which is each record's delivery order), one
    /// statement for all.
    pub async fn enqueue_all(&mut self, rows: &[NewOutbox], now: Millis) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<OutboxColumns> = rows
            .iter()
            .map(|r| OutboxColumns {
                crm: r.crm,
                account: &r.account,
                object_type: &r.object_type,
                object_id: &r.object_id,
                kind: r.command.kind(),
                payload: r.command.payload(),
            })
            .collect();
        self.bulk_execute(
            "INSERT INTO outbox (crm, account, object_type, object_id, kind, payload, \
                 next_attempt_at, created_at) \
             SELECT r.crm, r.account, r.object_type, r.object_id, r.kind, r.payload, $2, $2 \
             FROM {rows}",
            &[
                ("crm", Col::Text),
                ("account", Col::Text),
                ("object_type", Col::Text),
                ("object_id", Col::Text),
                ("kind", Col::Text),
                ("payload", Col::Text),
            ],
            &rows,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// The records among `keys` with an undelivered write of `kind` waiting.
    pub async fn with_pending_outbox(
        &mut self,
        keys: &[RecordKey],
        kind: CommandKind,
    ) -> Result<Vec<RecordKey>, StoreError> {
        self.bulk_fetch(
            "SELECT DISTINCT o.crm, o.object_type, o.object_id FROM {rows} JOIN outbox o \
             ON o.crm = r.crm AND o.object_type = r.object_type AND o.object_id = r.object_id \
             WHERE o.kind = $2 AND o.status = 'pending'",
            &KEY_COLUMNS,
            keys,
            &[Param::Text(kind.as_str().to_string())],
        )
        .await
    }
}

/// A claimed record: its pending rows in order (the first one holds the lease).
#[derive(Debug, Clone)]
pub struct ClaimedRecord {
    pub head_id: i64,
    pub rows: Vec<OutboxRow>,
    /// The record's previous claim ended without an outcome: its worker died, or its lease ran out
    /// during the CRM call. The head may have reached the CRM already.
    pub in_doubt: bool,
}

/// What happened to a delivery, for [`Store::finish_delivery`].
#[derive(Debug, Clone)]
pub enum DeliveryResult {
    /// These rows reached the CRM.
    Delivered { row_ids: Vec<i64> },
    /// Try the record again at `retry_at` (the head row carries the attempt count).
    Retry {
        status: Option<i64>,
        error: String,
        retry_at: Millis,
        /// Keep the claim until `retry_at` instead of ending it, so the claim after it finds the
        /// record in doubt: the attempt may have reached the CRM (see [`ClaimedRecord::in_doubt`]).
        keep_claim: bool,
    },
    /// Not attempted (rate limit, CRM not configured): look again at `retry_at`, no attempt
    /// counted; `keep_claim` as for `Retry`.
    Defer { retry_at: Millis, keep_claim: bool },
    /// The CRM refused these rows for good; they wait for `replay`.
    Dead {
        row_ids: Vec<i64>,
        status: Option<i64>,
        error: String,
    },
}

/// The heads of the records due for delivery, oldest first (`$1` now, `$2` how many).
///
/// Each candidate's head is looked up by record: when the statistics were taken while pending
/// rows were rare (the usual state) and a backlog has built up since (a CRM outage, a burst),
/// PostgreSQL planned the earlier `NOT EXISTS` form as a scan of every pending row per pending
/// row. Measured with 6,000 pending rows behind such statistics: 3.6 s per claim, against 15 ms
/// for this form over the pending rows' own index (migration 0009). Public for the plan test.
#[doc(hidden)]
pub fn claim_heads_sql(kind: BackendKind) -> String {
    let lock = match kind {
        BackendKind::Postgres => "FOR UPDATE SKIP LOCKED",
        BackendKind::Sqlite => "",
    };
    format!(
        "SELECT o.id, o.locked_by FROM outbox o WHERE o.status = 'pending' \
           AND o.next_attempt_at <= $1 AND (o.locked_until IS NULL OR o.locked_until < $1) \
           AND o.id = (SELECT p.id FROM outbox p WHERE p.crm = o.crm \
               AND p.object_type = o.object_type AND p.object_id = o.object_id \
               AND p.status = 'pending' ORDER BY p.id LIMIT 1) \
         ORDER BY o.next_attempt_at, o.id LIMIT $2 {lock}"
    )
}

impl Store {
    /// Lease up to `limit` due records to `worker` until `lease_until`.
    pub async fn claim_records(
        &self,
        worker: &str,
        now: Millis,
        lease_until: Millis,
        limit: i64,
        rows_per_record: i64,
    ) -> Result<Vec<ClaimedRecord>, StoreError> {
        // A head is the oldest pending row of its record; it must be due and not leased by a live
        // worker. PostgreSQL skips heads another worker is claiming right now.
        // Every finish clears `locked_by`, so a head that still names a worker was claimed and never
        // finished: the claim after it is in doubt.
        let candidates = claim_heads_sql(self.kind());
        let rows_sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND crm = $1 \
             AND object_type = $2 AND object_id = $3 ORDER BY id LIMIT $4"
        );
        let mut tx = self.begin().await?;
        let mut heads: Vec<(i64, Option<String>)> = on_tx!(tx, |c| sqlx::query_as(&candidates)
            .bind(now)
            .bind(limit)
            .fetch_all(c)
            .await?);
        heads.sort_unstable();
        let mut claimed = Vec::with_capacity(heads.len());
        for (head_id, previous_holder) in heads {
            let head: OutboxRow = on_tx!(tx, |c| sqlx::query_as(&format!(
                "UPDATE outbox SET locked_by = $1, locked_until = $2 WHERE id = $3 \
                 RETURNING {OUTBOX_COLUMNS}"
            ))
            .bind(worker)
            .bind(lease_until)
            .bind(head_id)
            .fetch_one(c)
            .await?);
            let rows: Vec<OutboxRow> = on_tx!(tx, |c| sqlx::query_as(&rows_sql)
                .bind(head.crm)
                .bind(&head.object_type)
                .bind(&head.object_id)
                .bind(rows_per_record)
                .fetch_all(c)
                .await?);
            claimed.push(ClaimedRecord {
                head_id,
                rows,
                in_doubt: previous_holder.is_some(),
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Record the rows of many claimed records as delivered, in one transaction: a batch call
    /// answered for up to a hundred records, and finishing them one transaction each kept the
    /// worker's round longer than the call itself once a backlog formed. Returns the heads
    /// `worker` no longer held (their lease expired and someone else took over), whose rows are
    /// left as they are. [`Store::finish_delivery`] records a single delivered record through it.
    pub async fn finish_delivered(
        &self,
        worker: &str,
        delivered: &[(i64, Vec<i64>)],
        now: Millis,
    ) -> Result<Vec<i64>, StoreError> {
        #[derive(Serialize)]
        struct Id {
            id: i64,
        }
        const ID: [(&str, Col); 1] = [("id", Col::BigInt)];
        if delivered.is_empty() {
            return Ok(Vec::new());
        }
        let heads: Vec<Id> = delivered.iter().map(|(head, _)| Id { id: *head }).collect();
        let lock = match self.kind() {
            BackendKind::Postgres => " FOR UPDATE OF o",
            BackendKind::Sqlite => "",
        };
        let mut tx = self.begin().await?;
        let holders: Vec<(i64, Option<String>)> = tx
            .bulk_fetch(
                &format!(
                    "SELECT o.id, o.locked_by FROM {{rows}} JOIN outbox o ON o.id = r.id{lock}"
                ),
                &ID,
                &heads,
                &[],
            )
            .await?;
        let held: std::collections::HashSet<i64> = holders
            .into_iter()
            .filter(|(_, holder)| holder.as_deref() == Some(worker))
            .map(|(id, _)| id)
            .collect();
        let rows: Vec<Id> = delivered
            .iter()
            .filter(|(head, _)| held.contains(head))
            .flat_map(|(_, rows)| rows.iter().map(|id| Id { id: *id }))
            .collect();
        tx.bulk_execute(
            "UPDATE outbox SET status = 'delivered', delivered_at = $2, attempts = attempts + 1, \
             locked_by = NULL, locked_until = NULL, last_error = NULL \
             FROM {rows} WHERE outbox.id = r.id AND outbox.status = 'pending'",
            &ID,
            &rows,
            &[Param::Int(now)],
        )
        .await?;
        tx.commit().await?;
        Ok(delivered
            .iter()
            .map(|(head, _)| *head)
            .filter(|head| !held.contains(head))
            .collect())
    }

    /// Record a delivery attempt for a claimed record; a no-op (returns false) when `worker` no
    /// longer holds the record's lease (it expired and someone else took over).
    pub async fn finish_delivery(
        &self,
        worker: &str,
        head_id: i64,
        result: &DeliveryResult,
        now: Millis,
    ) -> Result<bool, StoreError> {
        if let DeliveryResult::Delivered { row_ids } = result {
            let lost = self
                .finish_delivered(worker, &[(head_id, row_ids.clone())], now)
                .await?;
            return Ok(lost.is_empty());
        }
        let mut tx = self.begin().await?;
        let fence = match self.backend {
            Backend::Postgres(_) => "SELECT locked_by FROM outbox WHERE id = $1 FOR UPDATE",
            Backend::Sqlite(_) => "SELECT locked_by FROM outbox WHERE id = $1",
        };
        let holder: Option<(Option<String>,)> = on_tx!(tx, |c| sqlx::query_as(fence)
            .bind(head_id)
            .fetch_optional(c)
            .await?);
        if holder.and_then(|(h,)| h).as_deref() != Some(worker) {
            return Ok(false);
        }
        match result {
            DeliveryResult::Delivered { .. } => unreachable!("finished by finish_delivered above"),
            DeliveryResult::Retry {
                status,
                error,
                retry_at,
                ..
            } => {
                on_tx!(tx, |c| {
                    sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_status = $3, \
                     last_error = $4 WHERE id = $1"
                )
                .bind(head_id)
                .bind(retry_at)
                .bind(status)
                .bind(error)
                .execute(c)
                .await?
                .rows_affected()
                });
            }
            DeliveryResult::Defer { retry_at, .. } => {
                on_tx!(tx, |c| sqlx::query(
                    "UPDATE outbox SET next_attempt_at = $2 WHERE id = $1"
                )
                .bind(head_id)
                .bind(retry_at)
                .execute(c)
                .await?
                .rows_affected());
            }
            DeliveryResult::Dead {
                row_ids,
                status,
                error,
            } => {
                for id in row_ids {
                    on_tx!(tx, |c| {
                        sqlx::query(
                        "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_status = $2, \
                         last_error = $3, locked_by = NULL, locked_until = NULL WHERE id = $1 AND status = 'pending'"
                    )
                    .bind(id)
                    .bind(status)
                    .bind(error)
                    .execute(c)
                    .await?
                    .rows_affected()
                    });
                }
            }
        }
        match result {
            // The claim runs on until the retry, still naming this worker.
            DeliveryResult::Retry {
                retry_at,
                keep_claim: true,
                ..
            }
            | DeliveryResult::Defer {
                retry_at,
                keep_claim: true,
            } => {
                on_tx!(tx, |c| sqlx::query(
                    "UPDATE outbox SET locked_until = $3 WHERE id = $1 AND locked_by = $2"
                )
                .bind(head_id)
                .bind(worker)
                .bind(retry_at)
                .execute(c)
                .await?
                .rows_affected());
            }
            // Otherwise the head's lease ends here (it may not be among the finished rows).
            _ => {
                on_tx!(tx, |c| sqlx::query(
                    "UPDATE outbox SET locked_by = NULL, locked_until = NULL \
                     WHERE id = $1 AND locked_by = $2"
                )
                .bind(head_id)
                .bind(worker)
                .execute(c)
                .await?
                .rows_affected());
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Queue depth and the age of the oldest pending write (for metrics).
    pub async fn outbox_backlog(&self, now: Millis) -> Result<(i64, Millis), StoreError> {
        let (n, oldest): (i64, Option<i64>) = on_pool!(self, |p| sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending'"
        )
        .fetch_one(p)
        .await?);
        Ok((n, oldest.map_or(0, |t| (now - t).max(0))))
    }

    /// Dead deliveries, newest first (admin API).
    pub async fn dead_deliveries(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'dead' ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(p)
        .await?))
    }

    /// Put dead deliveries back in the queue: the given ids, or all dead since `since` when `ids`
    /// is empty. A property an *later* write to the same record already set is dropped from the
    /// replayed write, so a replay never puts an old value over a newer one. Returns how many were
    /// re-queued.
    pub async fn replay_dead(
        &self,
        ids: &[i64],
        since: Option<Millis>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let dead: Vec<OutboxRow> = on_tx!(tx, |c| {
            sqlx::query_as(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'dead' AND created_at >= $1 ORDER BY id"
        ))
        .bind(since.unwrap_or(0))
        .fetch_all(c)
        .await?
        });
        let mut requeued = 0;
        for row in dead
            .into_iter()
            .filter(|r| ids.is_empty() || ids.contains(&r.id))
        {
            let mut command = row.command()?;
            if let CrmCommand::UpdateProperties { properties } = &mut command {
                let later: Vec<OutboxRow> = on_tx!(tx, |c| {
                    sqlx::query_as(&format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE crm = $1 AND object_type = $2 AND object_id = $3 \
                     AND id > $4 AND kind = 'update_properties' AND status IN ('pending', 'delivered')"
                ))
                .bind(row.crm)
                .bind(&row.object_type)
                .bind(&row.object_id)
                .bind(row.id)
                .fetch_all(c)
                .await?
                });
                for newer in &later {
                    if let CrmCommand::UpdateProperties { properties: newer } = newer.command()? {
                        properties.retain(|k, _| !newer.contains_key(k));
                    }
                }
                if properties.is_empty() {
                    on_tx!(tx, |c| {
                        sqlx::query(
                            "UPDATE outbox SET status = 'coalesced', last_error = 'superseded by a later write' WHERE id = $1"
                        )
                        .bind(row.id)
                        .execute(c)
                        .await?
                        .rows_affected()
                    });
                    continue;
                }
            }
            on_tx!(tx, |c| {
                sqlx::query(
                "UPDATE outbox SET status = 'pending', payload = $2, attempts = 0, next_attempt_at = $3, \
                 locked_by = NULL, locked_until = NULL WHERE id = $1"
            )
            .bind(row.id)
            .bind(command.payload())
            .bind(now)
            .execute(c)
            .await?
            .rows_affected()
            });
            requeued += 1;
        }
        tx.commit().await?;
        Ok(requeued)
    }

    /// Outbox rows for one record (or all), oldest first.
    pub async fn outbox_rows(&self, key: Option<&RecordKey>) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE ($1 IS NULL OR (crm = $1 AND object_type = $2 \
             AND object_id = $3)) ORDER BY id"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(key.map(|k| k.crm))
            .bind(key.map(|k| k.object_type.clone()))
            .bind(key.map(|k| k.object_id.clone()))
            .fetch_all(p)
            .await?))
    }

    /// Store the answer of a CRM read as an inbox event, so the processor applies it like any
    /// other event; the read's outbox row is its dedupe key.
    pub async fn record_read_result(&self, event: &super::NewInboxEvent) -> Result<(), StoreError> {
        self.append_inbox(std::slice::from_ref(event))
            .await
            .map(|_| ())
    }
}

//! The inbox: every verified webhook event, appended before it is acknowledged and deduplicated by
//! the unique key `(source, dedupe_key)`.

use serde::Serialize;
use sqlx::QueryBuilder;

use super::{on_pool, Store, StoreError};
use crate::clock::Millis;

/// One verified event, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInboxEvent {
    pub source: String,
    pub dedupe_key: String,
    pub event_type: String,
    pub object_key: Option<String>,
    pub occurred_at: Option<Millis>,
    pub received_at: Millis,
    /// JSON object of request facts worth keeping (signature scheme, content type); never secrets.
    pub meta: String,
    pub payload: String,
}

/// What storing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    New(i64),
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    Pending,
    Processed,
    Ignored,
    Unmapped,
    Failed,
}

impl InboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Unmapped => "unmapped",
            Self::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => Self::Pending,
            "processed" => Self::Processed,
            "ignored" => Self::Ignored,
            "unmapped" => Self::Unmapped,
            "failed" => Self::Failed,
            other => return Err(StoreError::Corrupt(format!("inbox status {other}"))),
        })
    }
}

/// A stored inbox event.
#[derive(Debug, Clone, Serialize)]
pub struct InboxEvent {
    pub id: i64,
    pub source: String,
    pub dedupe_key: String,
    pub event_type: String,
    pub object_key: Option<String>,
    pub occurred_at: Option<Millis>,
    pub received_at: Millis,
    pub meta: String,
    pub payload: String,
    pub status: InboxStatus,
    pub status_reason: Option<String>,
    pub attempts: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct InboxRow {
    id: i64,
    source: String,
    dedupe_key: String,
    event_type: String,
    object_key: Option<String>,
    occurred_at: Option<i64>,
    received_at: i64,
    meta: String,
    payload: String,
    status: String,
    status_reason: Option<String>,
    attempts: i64,
}

impl TryFrom<InboxRow> for InboxEvent {
    type Error = StoreError;
    fn try_from(r: InboxRow) -> Result<Self, StoreError> {
        Ok(InboxEvent {
            id: r.id,
            source: r.source,
            dedupe_key: r.dedupe_key,
            event_type: r.event_type,
            object_key: r.object_key,
            occurred_at: r.occurred_at,
            received_at: r.received_at,
            meta: r.meta,
            payload: r.payload,
            status: InboxStatus::parse(&r.status)?,
            status_reason: r.status_reason,
            attempts: r.attempts,
        })
    }
}

pub(crate) const INBOX_COLUMNS: &str =
    "id, source, dedupe_key, event_type, object_key, occurred_at, \
     received_at, meta, payload, status, status_reason, attempts";

/// Rows per INSERT statement: keeps bind parameters far below either engine's limit.
const ROWS_PER_STATEMENT: usize = 200;

impl Store {
    /// Append events in ONE transaction (group commit): after this returns `Ok`, every event is
    /// durable. The answer lists, in input order, the new row id or `Duplicate` for an event whose
    /// `(source, dedupe_key)` was already stored (or repeated earlier in the same batch).
    pub async fn append_inbox(
        &self,
        events: &[NewInboxEvent],
    ) -> Result<Vec<Ingested>, StoreError> {
        let mut outcome = vec![Ingested::Duplicate; events.len()];
        if events.is_empty() {
            return Ok(outcome);
        }
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for (chunk_no, chunk) in events.chunks(ROWS_PER_STATEMENT).enumerate() {
                let mut q = QueryBuilder::new(
                    "INSERT INTO inbox_events (source, dedupe_key, event_type, object_key, \
                     occurred_at, received_at, meta, payload) ",
                );
                q.push_values(chunk, |mut row, e| {
                    row.push_bind(&e.source)
                        .push_bind(&e.dedupe_key)
                        .push_bind(&e.event_type)
                        .push_bind(&e.object_key)
                        .push_bind(e.occurred_at)
                        .push_bind(e.received_at)
                        .push_bind(&e.meta)
                        .push_bind(&e.payload);
                });
                q.push(
                    " ON CONFLICT (source, dedupe_key) DO NOTHING RETURNING id, source, dedupe_key",
                );
                let inserted: Vec<(i64, String, String)> =
                    q.build_query_as().fetch_all(&mut *tx).await?;
                // RETURNING order is not guaranteed: match rows back by their key. Within a chunk a
                // key can repeat; only its first occurrence is the new row.
                for (id, source, key) in inserted {
                    let base = chunk_no * ROWS_PER_STATEMENT;
                    if let Some(pos) = chunk
                        .iter()
                        .position(|e| e.source == source && e.dedupe_key == key)
                    {
                        outcome[base + pos] = Ingested::New(id);
                    }
                }
            }
            tx.commit().await?;
        });
        Ok(outcome)
    }

    /// Events of one source in arrival order (admin views and tests).
    pub async fn list_inbox(
        &self,
        source: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        let rows: Vec<InboxRow> = on_pool!(self, |pool| {
            let sql = format!(
                "SELECT {INBOX_COLUMNS} FROM inbox_events \
                 WHERE ($1 IS NULL OR source = $1) ORDER BY id LIMIT $2"
            );
            sqlx::query_as(&sql)
                .bind(source)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(InboxEvent::try_from).collect()
    }

    /// How many inbox events are in each status.
    pub async fn inbox_status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT status, COUNT(*) FROM inbox_events GROUP BY status ORDER BY status",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Count of stored events, optionally of one source.
    pub async fn count_inbox(&self, source: Option<&str>) -> Result<i64, StoreError> {
        let (n,): (i64,) = on_pool!(self, |pool| {
            sqlx::query_as("SELECT COUNT(*) FROM inbox_events WHERE ($1 IS NULL OR source = $1)")
                .bind(source)
                .fetch_one(pool)
                .await?
        });
        Ok(n)
    }
}

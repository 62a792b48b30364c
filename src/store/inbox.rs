//! The inbox: every verified webhook event, appended before it is acknowledged and deduplicated by
//! the unique key `(source, dedupe_key)`.

use std::collections::HashMap;

use super::{on_pool, Backend, Store, StoreError};
use crate::clock::Millis;
use serde::Serialize;

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

impl Store {
    /// Append events in ONE transaction (group commit): after this returns `Ok`, every event is
    /// durable. The answer lists, in input order, the new row id or `Duplicate` for an event whose
    /// `(source, dedupe_key)` was already stored (or repeated earlier in the same batch).
    ///
    /// One statement of fixed shape per group, whatever its size: SQLite reads the rows from one
    /// JSON array (`json_each`, parsed in C), PostgreSQL from eight arrays (`UNNEST`). Binding
    /// eight parameters per row instead costs several times more CPU per event.
    pub async fn append_inbox(
        &self,
        events: &[NewInboxEvent],
    ) -> Result<Vec<Ingested>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let inserted: Vec<(i64, String, String)> = match &self.backend {
            Backend::Sqlite(pool) => {
                // Borrowed tuples serialise as JSON arrays without copying any string.
                let rows: Vec<_> = events
                    .iter()
                    .map(|e| {
                        (
                            &e.source,
                            &e.dedupe_key,
                            &e.event_type,
                            &e.object_key,
                            e.occurred_at,
                            e.received_at,
                            &e.meta,
                            &e.payload,
                        )
                    })
                    .collect();
                let rows =
                    serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let mut tx = pool.begin().await?;
                let inserted = sqlx::query_as(
                    "INSERT INTO inbox_events (source, dedupe_key, event_type, object_key, \
                         occurred_at, received_at, meta, payload) \
                     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                         value ->> 5, value ->> 6, value ->> 7 \
                     FROM json_each($1) WHERE true \
                     ON CONFLICT (source, dedupe_key) DO NOTHING \
                     RETURNING id, source, dedupe_key",
                )
                .bind(rows)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                inserted
            }
            Backend::Postgres(pool) => {
                let column =
                    |f: fn(&NewInboxEvent) -> &str| events.iter().map(f).collect::<Vec<_>>();
                let mut tx = pool.begin().await?;
                let inserted = sqlx::query_as(
                    "INSERT INTO inbox_events (source, dedupe_key, event_type, object_key, \
                         occurred_at, received_at, meta, payload) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                         $5::bigint[], $6::bigint[], $7::text[], $8::text[]) \
                     ON CONFLICT (source, dedupe_key) DO NOTHING \
                     RETURNING id, source, dedupe_key",
                )
                .bind(column(|e| &e.source))
                .bind(column(|e| &e.dedupe_key))
                .bind(column(|e| &e.event_type))
                .bind(
                    events
                        .iter()
                        .map(|e| e.object_key.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
                .bind(events.iter().map(|e| e.received_at).collect::<Vec<_>>())
                .bind(column(|e| &e.meta))
                .bind(column(|e| &e.payload))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                inserted
            }
        };
        // RETURNING order is not guaranteed: match rows back by key. A key repeated within the
        // group is new only at its first occurrence.
        let mut first_at: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            first_at
                .entry((e.source.as_str(), e.dedupe_key.as_str()))
                .or_insert(i);
        }
        let mut outcome = vec![Ingested::Duplicate; events.len()];
        for (id, source, key) in &inserted {
            if let Some(pos) = first_at.get(&(source.as_str(), key.as_str())) {
                outcome[*pos] = Ingested::New(*id);
            }
        }
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

//! The inbox: every verified webhook event, appended before it is acknowledged and deduplicated by
//! the unique key `(source, dedupe_key)`.

use std::collections::HashMap;

use serde::Serialize;

use super::bulk::{self, Col, Param};
use super::tx::{on_tx, Tx};
use super::{on_pool, Backend, BackendKind, Store, StoreError};
use crate::clock::Millis;
use crate::domain::EventSource;
pub use crate::domain::InboxStatus;

/// Processing partitions; migration 0003 creates one `inbox_partitions` row for each.
pub const PARTITIONS: i32 = 64;

/// One verified event, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct NewInboxEvent {
    pub source: EventSource,
    pub dedupe_key: String,
    pub event_type: String,
    pub object_key: Option<String>,
    pub occurred_at: Option<Millis>,
    pub received_at: Millis,
    /// JSON object of request facts worth keeping (signature scheme, content type); never secrets.
    pub meta: String,
    pub payload: String,
    /// The processing partition (see [`crate::ingest::partition_of`]).
    pub partition_no: i32,
}

/// What storing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    New(i64),
    Duplicate,
}

/// What processing decided for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboxOutcome {
    pub id: i64,
    pub status: InboxStatus,
    pub reason: Option<String>,
}

/// A stored inbox event: the event as stored, and what processing made of it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InboxEvent {
    pub id: i64,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub event: NewInboxEvent,
    pub status: InboxStatus,
    pub status_reason: Option<String>,
    pub attempts: i64,
}

pub(crate) const INBOX_COLUMNS: &str =
    "id, source, dedupe_key, event_type, object_key, occurred_at, \
     received_at, meta, payload, status, status_reason, attempts, partition_no";

/// One inbox row; the unique key `(source, dedupe_key)` turns a repeat into no row at all.
const INSERT_INBOX_EVENT: &str = "INSERT INTO inbox_events (source, dedupe_key, event_type, \
     object_key, occurred_at, received_at, meta, payload, partition_no) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (source, dedupe_key) DO NOTHING";

/// A SQLite connection of its own for the inbox writer thread ([`crate::ingest::writer`]), which
/// calls SQLite directly: per event one step of a cached prepared statement, per group one
/// commit, and nothing crossing a thread until the group is answered.
pub struct SqliteInboxConnection {
    connection: rusqlite::Connection,
}

impl SqliteInboxConnection {
    /// Append events in ONE transaction, exactly as [`Store::append_inbox`] does.
    pub fn append(&mut self, events: &[NewInboxEvent]) -> Result<Vec<Ingested>, StoreError> {
        // IMMEDIATE takes the write lock up front (waiting out the pool's writers through the busy
        // timeout) rather than upgrading a read snapshot that another writer may have outdated.
        let tx = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut outcome = Vec::with_capacity(events.len());
        {
            let mut insert = tx.prepare_cached(INSERT_INBOX_EVENT)?;
            for e in events {
                let inserted = insert.execute(rusqlite::params![
                    e.source.to_string(),
                    e.dedupe_key,
                    e.event_type,
                    e.object_key,
                    e.occurred_at,
                    e.received_at,
                    e.meta,
                    e.payload,
                    e.partition_no,
                ])?;
                outcome.push(match inserted {
                    0 => Ingested::Duplicate,
                    _ => Ingested::New(tx.last_insert_rowid()),
                });
            }
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// The connection's setting `name` (`PRAGMA name`), as a number: for the tests of its
    /// durability and tuning.
    pub fn pragma(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self
            .connection
            .pragma_query_value(None, name, |row| row.get(0))?)
    }
}

impl Tx {
    /// Count of events this transaction sees, optionally of one source.
    pub async fn count_inbox(&mut self, source: Option<&EventSource>) -> Result<i64, StoreError> {
        let (n,): (i64,) = on_tx!(self, |c| sqlx::query_as(
            "SELECT COUNT(*) FROM inbox_events WHERE ($1 IS NULL OR source = $1)"
        )
        .bind(source)
        .fetch_one(c)
        .await?);
        Ok(n)
    }

    /// Lock up to `limit` partitions that have pending events, those waiting longest first, for
    /// the rest of this transaction. Partitions another processor holds are skipped, never
    /// waited for. `None` on SQLite, whose single writer holds every partition.
    pub async fn lock_partitions(&mut self, limit: i64) -> Result<Option<Vec<i32>>, StoreError> {
        if self.kind() == BackendKind::Sqlite {
            return Ok(None);
        }
        let locked: Vec<(i32,)> = on_tx!(self, |c| sqlx::query_as(
            // One probe of the pending index per partition: its oldest pending event, if any.
            "SELECT p.partition_no FROM inbox_partitions p CROSS JOIN LATERAL \
                 (SELECT e.id FROM inbox_events e \
                  WHERE e.partition_no = p.partition_no AND e.status = 'pending' \
                  ORDER BY e.id LIMIT 1) oldest \
             ORDER BY oldest.id LIMIT $1 FOR UPDATE OF p SKIP LOCKED"
        )
        .bind(limit)
        .fetch_all(c)
        .await?);
        Ok(Some(locked.into_iter().map(|(p,)| p).collect()))
    }

    /// Pending events in arrival order: at most `limit`, taken from the given partitions in
    /// equal shares (each partition's events in order), or from all (`None`).
    pub async fn pending_events(
        &mut self,
        partitions: Option<&[i32]>,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        let rows: Vec<InboxEvent> = match partitions {
            None => {
                let sql = format!(
                    "SELECT {INBOX_COLUMNS} FROM inbox_events WHERE status = 'pending' \
                     ORDER BY id LIMIT $1"
                );
                on_tx!(self, |c| sqlx::query_as(&sql)
                    .bind(limit)
                    .fetch_all(c)
                    .await?)
            }
            Some([]) => Vec::new(),
            Some(partitions) => {
                let share = (limit + partitions.len() as i64 - 1) / partitions.len() as i64;
                // Only PostgreSQL locks partitions; LATERAL takes each one's oldest by index.
                let partitions: Vec<String> = partitions.iter().map(i32::to_string).collect();
                let partitions: Vec<&str> = partitions.iter().map(String::as_str).collect();
                self.bulk_fetch(
                    &format!(
                        "SELECT e.* FROM {{rows}} CROSS JOIN LATERAL \
                         (SELECT {INBOX_COLUMNS} FROM inbox_events \
                          WHERE partition_no = CAST(r.v AS INTEGER) AND status = 'pending' \
                          ORDER BY id LIMIT $2) e ORDER BY e.id"
                    ),
                    &bulk::LIST,
                    &bulk::list(&partitions),
                    &[Param::Int(share)],
                )
                .await?
            }
        };
        Ok(rows)
    }

    /// Record what processing decided, one statement for all.
    pub async fn set_outcomes(
        &mut self,
        outcomes: &[InboxOutcome],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "UPDATE inbox_events SET status = r.status, status_reason = r.reason, \
                 attempts = inbox_events.attempts + 1, processed_at = $2 \
             FROM {rows} WHERE inbox_events.id = r.id",
            &[
                ("id", Col::BigInt),
                ("status", Col::Text),
                ("reason", Col::Text),
            ],
            outcomes,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }
}

impl Store {
    /// Pending events and the arrival time of the oldest (for the backlog gauges and `/readyz`).
    pub async fn inbox_backlog(&self) -> Result<(i64, Option<Millis>), StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT COUNT(*), MIN(received_at) FROM inbox_events WHERE status = 'pending'"
        )
        .fetch_one(p)
        .await?))
    }

    /// Put failed and unmapped inbox events back in the queue (after the cause is fixed).
    pub async fn requeue_inbox(&self) -> Result<u64, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query(
            "UPDATE inbox_events SET status = 'pending', status_reason = NULL \
             WHERE status IN ('failed', 'unmapped')"
        )
        .execute(p)
        .await?
        .rows_affected()))
    }

    /// A connection for the SQLite inbox writer, with the pool's durability settings and tuning;
    /// `None` on PostgreSQL, where the pool is used.
    pub fn open_sqlite_inbox_connection(
        &self,
    ) -> Result<Option<SqliteInboxConnection>, StoreError> {
        let Some(file) = &self.sqlite_file else {
            return Ok(None);
        };
        let connection = rusqlite::Connection::open(file)?;
        // As the pool's connections: WAL, and an fsync per commit so that an acknowledged webhook
        // survives power loss, not just a crash. The pool already switched the file to WAL.
        connection.busy_timeout(std::time::Duration::from_secs(30))?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", true)?;
        for (name, value) in super::SQLITE_TUNING {
            // Some settings answer with their new value, some with nothing.
            let mut set = connection.prepare(&format!("PRAGMA {name} = {value}"))?;
            let mut answer = set.query([])?;
            while answer.next()?.is_some() {}
        }
        // Fails now, not on the first webhook, when this is not the pool's (migrated) database.
        connection.prepare_cached(INSERT_INBOX_EVENT)?;
        Ok(Some(SqliteInboxConnection { connection }))
    }

    /// Append events in ONE transaction (group commit): after this returns `Ok`, every event is
    /// durable. The answer lists, in input order, the new row id or `Duplicate` for an event whose
    /// `(source, dedupe_key)` was already stored (or repeated earlier in the same batch).
    ///
    /// The webhook path on SQLite uses [`SqliteInboxConnection::append`] instead (same statement).
    /// PostgreSQL takes the whole group in one statement of fixed shape, reading the rows from eight
    /// arrays (`UNNEST`): one round trip, where a statement per row would be one per event. With
    /// `synchronous_commit` on, the statement has been flushed to disk when it returns.
    pub async fn append_inbox(
        &self,
        events: &[NewInboxEvent],
    ) -> Result<Vec<Ingested>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let pool = match &self.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut outcome = Vec::with_capacity(events.len());
                for e in events {
                    let done = sqlx::query(INSERT_INBOX_EVENT)
                        .bind(&e.source)
                        .bind(&e.dedupe_key)
                        .bind(&e.event_type)
                        .bind(&e.object_key)
                        .bind(e.occurred_at)
                        .bind(e.received_at)
                        .bind(&e.meta)
                        .bind(&e.payload)
                        .bind(e.partition_no)
                        .execute(&mut *tx)
                        .await?;
                    outcome.push(match done.rows_affected() {
                        0 => Ingested::Duplicate,
                        _ => Ingested::New(done.last_insert_rowid()),
                    });
                }
                tx.commit().await?;
                return Ok(outcome);
            }
            Backend::Postgres(pool) => pool,
        };
        let column = |f: fn(&NewInboxEvent) -> &str| events.iter().map(f).collect::<Vec<_>>();
        let sources: Vec<String> = events.iter().map(|e| e.source.to_string()).collect();
        // One statement is one transaction by itself: no BEGIN and COMMIT round trips.
        let inserted: Vec<(i64, String, String)> = sqlx::query_as(
            "INSERT INTO inbox_events (source, dedupe_key, event_type, object_key, \
                 occurred_at, received_at, meta, payload, partition_no) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::int[]) \
             ON CONFLICT (source, dedupe_key) DO NOTHING \
             RETURNING id, source, dedupe_key",
        )
        .bind(&sources)
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
        .bind(events.iter().map(|e| e.partition_no).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
        // RETURNING order is not guaranteed: match rows back by key. A key repeated within the
        // group is new only at its first occurrence.
        let mut first_at: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
        for (i, (e, source)) in events.iter().zip(&sources).enumerate() {
            first_at
                .entry((source.as_str(), e.dedupe_key.as_str()))
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
        source: Option<&EventSource>,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        let rows: Vec<InboxEvent> = on_pool!(self, |pool| {
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
        Ok(rows)
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
    pub async fn count_inbox(&self, source: Option<&EventSource>) -> Result<i64, StoreError> {
        let mut tx = self.begin_read().await?;
        let n = tx.count_inbox(source).await?;
        tx.rollback().await?;
        Ok(n)
    }
}

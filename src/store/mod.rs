//! Durable state. [`Store`] is the only code that speaks SQL; it runs on SQLite (embedded, the
//! default) or PostgreSQL (scale-out), chosen by the URL scheme. Both backends share one SQL text per
//! operation wherever the dialects agree (`$N` placeholders work on both); dialect-specific statements
//! are matched explicitly. Every public method is one transaction. Correctness lives in constraints
//! (unique keys for dedupe, one reward per deal and beneficiary), not in process memory, so several
//! replicas can share one PostgreSQL.

mod admin;
mod audit;
mod baseline;
mod bulk;
mod console;
mod inbox;
mod invoices;
mod moments;
mod outbox;
mod payouts;
mod reconcile;
mod records;
mod referrals;
mod reports;
mod rewards;
mod statistics;
mod text;
mod tx;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::SqliteRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Encode, FromRow, PgPool, Postgres, Sqlite, SqlitePool, Type};

use crate::config::{redact_url, sqlite_path, DatabaseSettings};

pub use admin::ReferralFilter;
pub use audit::{AuditEntry, AuditRecord, NewAudit};
pub use baseline::{
    BaselineFacts, Cohort, CohortCount, CustomerCorrection, CustomerGroup, CustomerRevenue,
    ParticipationFacts, ReferralChannel, ReferredCustomerDeals, ReferredPayments, Rolled, WonGroup,
};
pub use console::{ConsoleSessionRow, DayGroup, DeliveryCounts, DeliveryState};
pub use inbox::{
    InboxEvent, InboxOutcome, InboxStatus, Ingested, NewInboxEvent, SqliteInboxConnection,
    PARTITIONS,
};
pub use invoices::{Invoice, InvoiceReferral, NewInvoice, NewRefund, Refund};
pub use moments::{
    AskOutcome, Moment, MomentDecision, NewAsk, NewMoment, OpenReferral, ASK_FOLLOW_UP,
};
pub use outbox::{claim_heads_sql, ClaimedRecord, DeliveryResult, NewOutbox, OutboxRow};
pub use payouts::{
    NewPayout, NewPayoutLine, PayoutDue, PayoutLineKey, PayoutLineRow, PayoutRow, PlacedLine,
};
pub use reconcile::{GuardDetail, NewRecheck, Recheck, RecheckKind};
pub use records::{
    Association, CrmRecord, LinkedFacts, NewStageChange, RecordFacts, RecordKey, RecordLink,
    StageChange,
};
pub use referrals::{
    Attribution, MilestoneFill, NewReferral, NewTouch, RefereeDetails, RefereeFill, Referral,
    Referrer, ReferrerFacts, ReferrerUpsert, Touch,
};
pub use reports::{
    DaysToWinGroup, FunnelFacts, FunnelFilter, MoneyGroup, PartnerGroup, ReferralGroup,
    ReferralOrigin,
};
pub use rewards::{NewReward, Reward};
pub use tx::Tx;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

/// A count the database returned (`COUNT(*)`, a sum of counts) as the unsigned number it is; a
/// negative one means the stored data is not what this code wrote.
pub(crate) fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("a count of {n}")))
}

/// A [`count`] as the `u32` the reward rules compare counts in (tiers, velocity limits); one past
/// `u32::MAX` is more than any rule asks for, so it stays `u32::MAX`.
pub(crate) fn rule_count(n: i64) -> Result<u32, StoreError> {
    Ok(u32::try_from(count(n)?).unwrap_or(u32::MAX))
}

/// A list of column names (`"id, email, …"`) qualified with a table alias (`"f.id, f.email, …"`).
fn qualified(columns: &str, alias: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has. The body is compiled once per
/// backend, so generic sqlx calls type-check against each driver.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            crate::store::Backend::Sqlite($pool) => $body,
            crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The durable store. Cheap to clone (pools are shared).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    display_url: String,
    /// The SQLite database file, for connections opened outside the pool (the inbox writer's).
    sqlite_file: Option<Arc<Path>>,
    /// Held while a report checks out its readers ([`Store::begin_reads`]): two reports each
    /// holding part of the pool while waiting for the rest would wait for each other.
    checking_out_readers: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.display_url)
            .finish()
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Connected, but these migration versions are not applied yet.
    MigrationsPending(Vec<i64>),
}

/// How every SQLite connection is tuned, the pool's and the inbox writer's alike (README
/// "Inbox processing" has the measurements):
/// - `mmap_size` 2 GiB (the most SQLite's default build allows; a larger file is read the usual
///   way beyond it): reads straight from the page cache instead of a copy per page, about half
///   the funnel's time over 1,000,000 referrals (reports scan large indexes).
/// - `temp_store = MEMORY`: the statement journal of a set-based write (hundreds of rows in one
///   statement) stays in memory instead of spilling to a temporary file: +6–25% events/s in
///   `cargo bench --bench process`, alternating with the default in one run. The funnel
///   benchmark's peak RSS did not grow with it.
pub(crate) const SQLITE_TUNING: [(&str, &str); 2] =
    [("mmap_size", "2147483648"), ("temp_store", "MEMORY")];

impl Store {
    /// Connect (creating the SQLite file and its folder when missing). Does not migrate.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Store> {
        use anyhow::Context;
        let url = settings.url.expose();
        let display_url = redact_url(url);
        let acquire = Duration::from_secs(settings.acquire_timeout_secs.max(1));
        let mut sqlite_file = None;
        let backend = if url.starts_with("sqlite:") {
            let mut options = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("database.url {display_url} is not a valid SQLite URL"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Full durability: an acknowledged webhook survives power loss, not just a crash.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            for (name, value) in SQLITE_TUNING {
                options = options.pragma(name, value);
            }
            // The file exactly as the pool resolved it (percent-decoded); an in-memory database
            // exists per connection, so nothing outside the pool can share it.
            let in_memory = sqlite_path(url).is_none() || url.contains("mode=memory");
            if !in_memory {
                let file = options.get_filename();
                if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("could not create the database folder {}", parent.display())
                    })?;
                }
                sqlite_file = Some(Arc::from(file));
            }
            let pool = SqlitePoolOptions::new()
                // An embedded file cannot drop a connection: skip the ping on every checkout.
                .test_before_acquire(false)
                .max_connections(settings.max_connections)
                .acquire_timeout(acquire)
                .connect_with(options)
                .await
                .with_context(|| format!("could not open {display_url}"))?;
            Backend::Sqlite(pool)
        } else {
            let options = PgConnectOptions::from_str(url)
                .with_context(|| {
                    format!("database.url {display_url} is not a valid PostgreSQL URL")
                })?
                .application_name("referral-sync");
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(acquire)
                .connect_with(options)
                .await
                .with_context(|| format!("could not connect to {display_url}"))?;
            Backend::Postgres(pool)
        };
        Ok(Store {
            backend,
            display_url,
            sqlite_file,
            checking_out_readers: Arc::default(),
        })
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The database URL with any password removed.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite(_) => &SQLITE_MIGRATIONS,
            Backend::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Apply every pending migration. Safe to run from several replicas at once (sqlx takes an
    /// advisory lock on PostgreSQL; SQLite serialises writers).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool| self.migrator().run(pool).await?);
        Ok(())
    }

    /// Database reachable and every migration this binary knows applied.
    pub async fn readiness(&self) -> Result<Readiness, StoreError> {
        let applied: Vec<(i64,)> = on_pool!(self, |pool| {
            let exists: Option<(i64,)> = sqlx::query_as(match self.kind() {
                BackendKind::Sqlite => {
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
                }
                BackendKind::Postgres => {
                    "SELECT 1::BIGINT FROM information_schema.tables WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
                }
            })
            .fetch_optional(pool)
            .await?;
            if exists.is_none() {
                Vec::new()
            } else {
                sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                    .fetch_all(pool)
                    .await?
            }
        });
        let pending: Vec<i64> = self
            .migrator()
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.iter().any(|(a,)| a == v))
            .collect();
        Ok(if pending.is_empty() {
            Readiness::Ready
        } else {
            Readiness::MigrationsPending(pending)
        })
    }

    /// Close the pools, waiting for connections to return.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    /// The row `sql` selects with `key` as its only parameter (`$1`), if any.
    async fn fetch_optional_by<'q, O, K>(
        &self,
        sql: &'q str,
        key: K,
    ) -> Result<Option<O>, StoreError>
    where
        O: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
        K: 'q + Send + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>,
    {
        Ok(on_pool!(self, |p| sqlx::query_as(sql)
            .bind(key)
            .fetch_optional(p)
            .await?))
    }

    /// The rows `sql` selects with `key` as its only parameter (`$1`).
    async fn fetch_all_by<'q, O, K>(&self, sql: &'q str, key: K) -> Result<Vec<O>, StoreError>
    where
        O: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
        K: 'q + Send + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>,
    {
        Ok(on_pool!(self, |p| sqlx::query_as(sql)
            .bind(key)
            .fetch_all(p)
            .await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_sqlite_connection_is_tuned_alike() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&crate::config::DatabaseSettings {
            url: crate::config::Secret::new(format!("sqlite:{}/map.db", dir.path().display())),
            max_connections: 2,
            acquire_timeout_secs: 5,
        })
        .await
        .unwrap();
        let Backend::Sqlite(pool) = &store.backend else {
            unreachable!("a SQLite URL")
        };
        // Reads through a memory map; statement journals in memory (2).
        let tuned = |name: &str, value: i64| match name {
            "mmap_size" => assert!(value >= 1 << 30, "mmap_size {value}"),
            "temp_store" => assert_eq!(value, 2, "temp_store"),
            other => unreachable!("{other}"),
        };
        // Two connections held at once: every connection of the pool, not just the first.
        let held = [pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
        for mut connection in held {
            for name in ["mmap_size", "temp_store"] {
                let (value,): (i64,) = sqlx::query_as(&format!("PRAGMA {name}"))
                    .fetch_one(&mut *connection)
                    .await
                    .unwrap();
                tuned(name, value);
            }
        }
        store.migrate().await.unwrap();
        let writer = store.open_sqlite_inbox_connection().unwrap().unwrap();
        for name in ["mmap_size", "temp_store"] {
            tuned(name, writer.pragma(name).unwrap());
        }
    }

    #[test]
    fn a_count_is_unsigned_and_a_negative_one_is_an_error_naming_it() {
        assert_eq!(count(0).unwrap(), 0);
        assert_eq!(count(42).unwrap(), 42);
        let err = count(-3).unwrap_err().to_string();
        assert!(err.contains("a count of -3"), "{err}");
    }

    #[test]
    fn a_rule_count_saturates_and_a_negative_one_is_an_error_naming_it() {
        assert_eq!(rule_count(7).unwrap(), 7);
        assert_eq!(rule_count(i64::MAX).unwrap(), u32::MAX);
        let err = rule_count(-1).unwrap_err().to_string();
        assert!(err.contains("a count of -1"), "{err}");
    }
}

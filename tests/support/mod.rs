//! Test support: spawn the real application on port 0 with its own database (a SQLite file in a
//! temp dir, or a fresh PostgreSQL database), a fake clock and no background noise; plus
//! [`both_backends!`] to run one test body on each backend.
#![allow(dead_code)]

pub mod browser;
pub mod console;
pub mod crm;
pub mod postgres;
pub mod senders;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use referral_sync::clock::FakeClock;
use referral_sync::config::{ConfigSources, Secret, Settings};
use referral_sync::processing::InboxProcessor;
use referral_sync::startup::Application;
use referral_sync::store::Store;
use referral_sync::supervisor::{WorkerFactory, WorkerRegistry};
use tokio_util::sync::CancellationToken;

/// 2026-11-20T10:00:00Z, the day of the SPEC's story.
pub const T0: i64 = 1_795_168_800_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that lives as long as the test.
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres(postgres::TestDatabase),
}

impl TestDb {
    /// A fresh database URL for `backend`; `None` when PostgreSQL is unavailable and not required
    /// (the reason has been printed as "skipped: …").
    pub fn new(backend: Backend) -> Option<(TestDb, String)> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/test.db", dir.path().display());
                Some((TestDb::Sqlite(dir), url))
            }
            Backend::Postgres => {
                let db = postgres::require_or_skip()?;
                let url = db.url.clone();
                Some((TestDb::Postgres(db), url))
            }
        }
    }
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped defaults, read exactly as the service reads them but with an empty environment.
pub fn default_settings() -> Settings {
    Settings::load(&ConfigSources {
        file: None,
        dir: Some(repo_dir().join("config")),
        env: Some(BTreeMap::new()),
    })
    .expect("config/default.toml is valid")
}

/// A migrated store on a fresh database.
pub async fn test_store(backend: Backend) -> Option<(Store, TestDb)> {
    let (store, db, _) = test_store_with(backend, |_| {}).await?;
    Some((store, db))
}

/// A migrated store on a fresh database, its database settings changed by `adjust` first; also
/// the database's URL, for statements the store does not offer.
pub async fn test_store_with(
    backend: Backend,
    adjust: impl FnOnce(&mut referral_sync::config::DatabaseSettings),
) -> Option<(Store, TestDb, String)> {
    let (db, url) = TestDb::new(backend)?;
    let mut settings = default_settings();
    settings.database.url = Secret::new(url.clone());
    adjust(&mut settings.database);
    let store = Store::connect(&settings.database).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some((store, db, url))
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub store: Store,
    pub clock: Arc<FakeClock>,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub processor: InboxProcessor,
    pub outbox: referral_sync::outbox::OutboxWorker,
    /// The supervised workers' states (only [`SpawnOptions::workers`] run in tests).
    pub workers: WorkerRegistry,
    /// Bytes reserved by webhook bodies not verified yet.
    pub body_budget: referral_sync::ingest::body::BodyBudget,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: TestDb,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Runs `sql` on the app's database directly (to break it the way an operator, or a bug,
    /// might).
    pub async fn execute_sql(&self, sql: &str) {
        let url = self.settings.database.url.expose();
        if url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// Run the inbox processor until nothing is pending (no background worker in tests).
    pub async fn process(&self) -> usize {
        self.processor.drain().await.expect("inbox processing")
    }

    /// Refresh the channel baseline's rollup until no deal is marked (the processors do it when
    /// idle; reports are exact either way).
    pub async fn refresh_baseline(&self) -> usize {
        self.processor
            .drain_baseline()
            .await
            .expect("baseline refresh")
    }

    /// Run the outbox worker until nothing is claimable at the current (fake) time.
    pub async fn deliver(&self) -> referral_sync::outbox::TickReport {
        self.outbox.drain().await.expect("outbox delivery")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request failed")
    }

    /// Stop the server gracefully and wait for it; returns what `run_until_stopped` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server
            .take()
            .expect("running")
            .await
            .expect("server task")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Options for [`spawn_app_with`].
pub struct SpawnOptions {
    pub migrate: bool,
    /// Share a clock with something else (the CRM sandbox); a new one at [`T0`] otherwise.
    pub clock: Option<Arc<FakeClock>>,
    /// Background workers to run under the app's supervisor (the built-in ones don't run in
    /// tests: they are driven step by step).
    pub workers: Vec<(String, WorkerFactory)>,
    /// Run the built-in background workers too (processors, outbox, hold timer).
    pub run_workers: bool,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        Self {
            migrate: true,
            clock: None,
            workers: Vec::new(),
            run_workers: false,
        }
    }
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, SpawnOptions::default(), |_| {}).await
}

/// Start the app on port 0 with its own database, after `configure` adjusts the settings.
pub async fn spawn_app_with(
    backend: Backend,
    options: SpawnOptions,
    configure: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    init_test_logging();
    let (db, url) = TestDb::new(backend)?;
    let mut settings = default_settings();
    settings.database.url = Secret::new(url);
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 1;
    settings.server.shutdown_grace_secs = 5;
    configure(&mut settings);
    let store = Store::connect(&settings.database).await.expect("connect");
    if options.migrate {
        store.migrate().await.expect("migrate");
    }
    let clock = options.clock.clone().unwrap_or_else(|| FakeClock::new(T0));
    let mut app = Application::build_with(
        settings.clone(),
        store.clone(),
        clock.clone(),
        options.run_workers,
    )
    .await
    .expect("build app");
    for (name, worker) in options.workers {
        app.add_worker(&name, worker);
    }
    let workers = app.state().workers.clone();
    let body_budget = app.state().body_budget.clone();
    let port = app.port();
    let processor = app.processor();
    let outbox = app.outbox();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Some(TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        store,
        clock,
        client: reqwest::Client::new(),
        settings,
        processor,
        outbox,
        workers,
        body_budget,
        shutdown,
        server: Some(server),
        _db: db,
    })
}

/// Logs go to the test output only with TEST_LOG=1.
pub fn init_test_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info,referral_sync=debug")
                .with_test_writer()
                .try_init();
        }
    });
}

/// `both_backends!(name, …)` turns each `async fn name(backend: Backend)` into two tests,
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}

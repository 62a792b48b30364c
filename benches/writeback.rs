//! CRM write-back benchmark (SPEC §10), against the in-repo HubSpot sandbox.
//!
//! (a) backlog: 10,000 queued updates (2 per record, 2,500 contacts + 2,500 deals) drained with the
//!     client limit set AT the sandbox's limit; reports API calls per update and 429s. Time is a
//!     fake clock the bench advances whenever the limiter makes the worker wait, so the run is fast
//!     and the simulated drain time is exact.
//! (b) latency: the real server (workers on, system clock) receives signed HubSpot webhooks at a
//!     steady rate; each links a contact to an existing referral, which queues a CRM write. Latency
//!     is webhook sent → the sandbox applying the write. Reports p50/p99.
//!
//! Run: `cargo bench --bench writeback` (env: BENCH_RATE=500, BENCH_SECONDS=10, BENCH_LIMIT=190,
//! BENCH_BACKENDS=sqlite,postgres for the latency run).

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_sandbox::{CrmSandbox, SandboxConfig};
use referral_sync::clock::{Clock, FakeClock, SharedClock, SystemClock};
use referral_sync::config::{ConfigSources, Secret, Settings};
use referral_sync::domain::Crm;
use referral_sync::ingest::signature::{sign_hubspot, HubSpotVersion};
use referral_sync::outbox::{CrmCommand, OutboxWorker};
use referral_sync::startup::Application;
use referral_sync::store::{Attribution, Store};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bench-hubspot-secret";

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings(dir: &std::path::Path, crm: &str, limit: u32) -> Settings {
    let mut s = Settings::load(&ConfigSources {
        file: None,
        dir: Some(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")),
        env: Some(BTreeMap::new()),
    })
    .expect("default config");
    s.database.url = Secret::new(format!("sqlite://{}/bench.db", dir.display()));
    s.server.bind = "127.0.0.1:0".into();
    s.server.public_base_url = String::new();
    s.telemetry.level = "error".into();
    s.hubspot.client_secrets = vec![Secret::new(SECRET)];
    s.hubspot.access_token = Secret::new("pat-sandbox");
    s.hubspot.api_base_url = crm.into();
    s.outbox.hubspot_requests_per_10s = limit;
    s
}

async fn backlog(limit: u32) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = FakeClock::new(1_800_000_000_000);
    let crm = CrmSandbox::start(
        SandboxConfig {
            hubspot_limit_per_10s: limit,
            ..Default::default()
        },
        referral_sync::clock::for_sandbox(clock.clone()),
    )
    .await
    .expect("sandbox");
    let settings = Arc::new(settings(dir.path(), &crm.base_url, limit));
    let store = Store::connect(&settings.database).await.expect("store");
    store.migrate().await.expect("migrate");
    let now = clock.now();
    let mut tx = store.begin().await.expect("tx");
    let mut updates = 0;
    for round in 0..2 {
        for (object_type, base) in [("contact", 100_000), ("deal", 200_000)] {
            for i in 0..2_500 {
                let properties = [
                    ("referral_source".to_string(), "link".to_string()),
                    ("referral_code".to_string(), format!("R-{round}")),
                ];
                let row = CrmCommand::update(properties.into_iter().collect()).on_object(
                    Crm::HubSpot,
                    "62515",
                    object_type,
                    &(base + i).to_string(),
                );
                tx.enqueue(&row, now).await.expect("enqueue");
                updates += 1;
            }
        }
    }
    tx.commit().await.expect("commit");
    let worker = OutboxWorker::new(
        store.clone(),
        settings.clone(),
        clock.clone() as SharedClock,
        Default::default(),
    );
    let started = Instant::now();
    let start_ms = clock.now();
    loop {
        let r = worker.tick().await.expect("tick");
        let (pending, _) = store.outbox_backlog(clock.now()).await.expect("backlog");
        if pending == 0 {
            break;
        }
        if r.calls == 0 {
            clock.advance(250); // the limiter is making us wait: let simulated time pass
        }
    }
    let requests = crm.state.requests();
    let api_calls = requests.len();
    let rate_limited = requests.iter().filter(|r| r.status == 429).count();
    let latest = crm
        .state
        .hubspot_object("contacts", "100000")
        .unwrap_or_default();
    crm.stop().await;
    json!({
        "benchmark": "backlog", "updates": updates, "records": 5000, "limit_per_10s": limit,
        "api_calls": api_calls, "calls_per_update": (api_calls as f64 / updates as f64 * 10_000.0).round() / 10_000.0,
        "http_429": rate_limited, "simulated_drain_s": (clock.now() - start_ms) as f64 / 1000.0,
        "wall_s": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "last_value_won": latest.get("referral_code").map(String::as_str) == Some("R-1"),
    })
}

async fn latency(
    rate: u32,
    seconds: u64,
    limit: u32,
    database_url: Option<String>,
) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock: SharedClock = Arc::new(SystemClock);
    let crm = CrmSandbox::start(
        SandboxConfig {
            hubspot_limit_per_10s: limit,
            ..Default::default()
        },
        referral_sync::clock::for_sandbox(clock.clone()),
    )
    .await
    .expect("sandbox");
    let mut settings = settings(dir.path(), &crm.base_url, limit);
    let backend = if database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    if let Some(url) = database_url {
        settings.database.url = Secret::new(url);
    }
    let store = Store::connect(&settings.database).await.expect("store");
    store.migrate().await.expect("migrate");
    let total = rate as u64 * seconds;
    // The referrals exist already; each webhook links one contact to one of them.
    let mut tx = store.begin().await.expect("tx");
    for i in 0..total {
        let a = Attribution {
            referrer_code: Some("ACME-7".into()),
            source: Some("link".into()),
            market: Some("US".into()),
            first_touch_at: clock.now(),
        };
        tx.insert_referral(&format!("p{i}@bench.io"), &a, clock.now())
            .await
            .expect("referral");
    }
    tx.commit().await.expect("commit");
    let app = Application::build(settings, store.clone(), clock.clone())
        .await
        .expect("app");
    let url = format!("http://127.0.0.1:{}/webhooks/hubspot", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let http = reqwest::Client::new();
    let mut sent_at: HashMap<String, i64> = HashMap::new();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = Instant::now();
    let mut in_flight = Vec::new();
    for i in 0..total {
        next += interval;
        tokio::time::sleep_until(next.into()).await;
        let now = clock.now();
        let contact = (500_000 + i).to_string();
        sent_at.insert(contact.clone(), now);
        let body = json!([{"objectId": 500_000 + i, "propertyName": "email", "propertyValue": format!("p{i}@bench.io"),
                           "eventId": i, "subscriptionId": 1, "portalId": 62515, "occurredAt": now,
                           "subscriptionType": "contact.propertyChange", "attemptNumber": 0}])
        .to_string();
        let headers = sign_hubspot(
            HubSpotVersion::V3,
            SECRET,
            "POST",
            &url,
            body.as_bytes(),
            now,
        );
        let mut req = http.post(&url).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        in_flight.push(tokio::spawn(req.body(body).send()));
    }
    for f in in_flight {
        let _ = f.await;
    }
    let send_s = started.elapsed().as_secs_f64();
    // Wait (bounded) for the last writes to land.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let written = crm
            .state
            .writes()
            .iter()
            .filter(|w| w.object_type.starts_with("contact"))
            .count();
        if written as u64 >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut latencies: Vec<i64> = crm
        .state
        .writes()
        .iter()
        .filter_map(|w| sent_at.get(&w.id).map(|s| w.at - s))
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(-1)
    };
    let requests = crm.state.requests();
    shutdown.cancel();
    let _ = server.await;
    crm.stop().await;
    json!({
        "benchmark": "latency", "backend": backend, "events": total, "target_rate": rate, "achieved_rate": (total as f64 / send_s).round(),
        "writes_seen": latencies.len(), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": latencies.last().copied().unwrap_or(-1),
        "api_calls": requests.len(), "http_429": requests.iter().filter(|r| r.status == 429).count(), "limit_per_10s": limit,
    })
}

fn main() {
    let rate: u32 = env_or("BENCH_RATE", 500);
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let limit: u32 = env_or("BENCH_LIMIT", 190);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let backends: String = env_or("BENCH_BACKENDS", "sqlite,postgres".to_string());
    runtime.block_on(async {
        println!("{}", backlog(100).await);
        for backend in backends.split(',') {
            let (url, _db) = match backend {
                "sqlite" => (None, None),
                _ => match postgres::test_database() {
                    postgres::Availability::Available(db) => (Some(db.url.clone()), Some(db)),
                    postgres::Availability::Unavailable(why) => {
                        eprintln!("postgres skipped: {why}");
                        continue;
                    }
                },
            };
            println!("{}", latency(rate, seconds, limit, url).await);
        }
    });
}

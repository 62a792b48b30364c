//! Ingest benchmark (SPEC §10): the real `referral-sync` binary under signed HubSpot load, measured
//! in one run against its own ceiling.
//!
//! For each backend (SQLite, and PostgreSQL when available) and each workload (1-event and
//! 100-event HubSpot v3 requests) it runs the server twice:
//!   ceiling  — `ingest.discard_after_verify = true`: verify + parse, answer, store nothing;
//!   durable  — the normal path: group commit, SQLite `synchronous=FULL` / PostgreSQL
//!              `synchronous_commit=on`, answer after commit.
//! in BENCH_ROUNDS rounds that alternate which mode goes first, and prints one JSON object per run,
//! then per backend and workload the median of the rounds' durable/ceiling ratios and the median
//! durable events/s. Every request carries unique events, so durable runs really insert. Peak RSS is
//! the server's VmHWM from /proc.
//!
//! Run: `cargo bench --bench ingest` (env: BENCH_SECONDS=5, BENCH_ROUNDS=3, BENCH_CONNECTIONS=64,
//! BENCH_BATCH_CONNECTIONS=16, BENCH_BACKENDS=sqlite,postgres, BENCH_WORKLOADS=single_event,batch_100,
//! BENCH_MODES=ceiling,durable).

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use referral_sync::ingest::signature::{sign_hubspot, HubSpotVersion};
use serde_json::json;
use support::{env_or, median, percentile_ms};

const SECRET: &str = "bench-hubspot-secret";
const PUBLIC_BASE: &str = "https://hooks.bench.local";

type Server = support::service::Service;

fn start_server(database_url: Option<String>, discard: bool) -> Server {
    Server::start(
        env!("CARGO_BIN_EXE_referral-sync"),
        database_url,
        &[
            ("REFERRAL_SYNC__SERVER__PUBLIC_BASE_URL", PUBLIC_BASE.into()),
            ("REFERRAL_SYNC__HUBSPOT__CLIENT_SECRETS", SECRET.into()),
            (
                "REFERRAL_SYNC__INGEST__DISCARD_AFTER_VERIFY",
                discard.to_string(),
            ),
            // Measure ingest alone, as an API-only replica; processing is benchmarked separately.
            ("REFERRAL_SYNC__WORKERS__ENABLED", "false".into()),
        ],
    )
}

impl Server {
    /// CPU seconds (user + system) the server has used so far.
    fn cpu_seconds(&self) -> f64 {
        support::cpu_seconds_of(self.child.id())
    }

    /// Sum and count of a Prometheus histogram on the server's /metrics.
    fn histogram(&self, name: &str) -> (f64, f64) {
        let text = reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .and_then(|r| r.text())
            .unwrap_or_default();
        let value = |suffix: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}_{suffix}")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (value("sum"), value("count"))
    }

    fn peak_rss_kib(&self) -> u64 {
        self.memory_kib("VmHWM")
    }
}

/// A HubSpot batch whose events are unique across the whole run.
fn batch_body(events: usize, counter: &AtomicU64, now_ms: i64) -> String {
    let first = counter.fetch_add(events as u64, Ordering::Relaxed);
    let items: Vec<serde_json::Value> = (0..events as u64)
        .map(|i| {
            json!({"objectId": 100_000 + first + i, "propertyName": "dealstage", "propertyValue": "closedwon",
                   "changeSource": "CRM_UI", "eventId": first + i, "subscriptionId": 92894, "portalId": 5799819,
                   "appId": 186886, "occurredAt": now_ms, "subscriptionType": "deal.propertyChange", "attemptNumber": 0})
        })
        .collect();
    serde_json::to_string(&items).expect("json")
}

struct RunResult {
    requests: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

async fn drive(
    port: u16,
    events_per_request: usize,
    connections: usize,
    seconds: f64,
) -> RunResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let counter = Arc::new(AtomicU64::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as u64
            * 1000,
    ));
    let url = format!("http://127.0.0.1:{port}/webhooks/hubspot");
    let signed_url = format!("{PUBLIC_BASE}/webhooks/hubspot");
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, counter, url, signed_url, errors) = (
            client.clone(),
            counter.clone(),
            url.clone(),
            signed_url.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let now_ms = chrono::Utc::now().timestamp_millis();
                let body = batch_body(events_per_request, &counter, now_ms);
                let headers = sign_hubspot(
                    HubSpotVersion::V3,
                    SECRET,
                    "POST",
                    &signed_url,
                    body.as_bytes(),
                    now_ms,
                );
                let mut req = client.post(&url).header("content-type", "application/json");
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let sent = Instant::now();
                match req.body(body).send().await {
                    Ok(r) if r.status().as_u16() == 204 => {
                        latencies.push(sent.elapsed().as_micros() as u64)
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.expect("load task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    RunResult {
        requests: latencies_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        latencies_us,
    }
}

/// One run of a fresh server in one mode: warm-up, then `seconds` of load; the figures as JSON.
fn measure(
    runtime: &tokio::runtime::Runtime,
    database_url: Option<String>,
    mode: &str,
    events: usize,
    connections: usize,
    seconds: f64,
) -> serde_json::Value {
    let server = start_server(database_url, mode == "ceiling");
    // Warm up connections and caches, then measure.
    runtime.block_on(drive(server.port, events, connections, 0.5));
    let cpu_before = server.cpu_seconds();
    let (commit_s0, commits0) = server.histogram("inbox_group_commit_seconds");
    let (events0, _) = server.histogram("inbox_group_commit_events");
    let r = runtime.block_on(drive(server.port, events, connections, seconds));
    let cpu = server.cpu_seconds() - cpu_before;
    let (commit_s1, commits1) = server.histogram("inbox_group_commit_seconds");
    let (events1, _) = server.histogram("inbox_group_commit_events");
    let commits = commits1 - commits0;
    let rss_kib = server.peak_rss_kib();
    drop(server);
    let rps = r.requests as f64 / r.seconds;
    json!({
        "mode": mode,
        "connections": connections, "seconds": (r.seconds * 100.0).round() / 100.0,
        "requests": r.requests, "errors": r.errors,
        "requests_per_s": rps.round(), "events_per_s": (rps * events as f64).round(),
        "p50_ms": percentile_ms(&r.latencies_us, 0.50), "p99_ms": percentile_ms(&r.latencies_us, 0.99),
        "peak_rss_mib": (rss_kib as f64 / 1024.0 * 10.0).round() / 10.0,
        "server_cpu_us_per_event": (cpu * 1e6 / (r.requests as f64 * events as f64)).round(),
        "group_commits": commits,
        "avg_group_events": if commits > 0.0 { ((events1 - events0) / commits).round() } else { 0.0 },
        "avg_commit_ms": if commits > 0.0 { ((commit_s1 - commit_s0) / commits * 1e5).round() / 100.0 } else { 0.0 },
    })
}

fn main() {
    let seconds: f64 = env_or("BENCH_SECONDS", 5.0);
    let single_connections: usize = env_or("BENCH_CONNECTIONS", 64);
    let batch_connections: usize = env_or("BENCH_BATCH_CONNECTIONS", 16);
    let backends: String = env_or("BENCH_BACKENDS", "sqlite,postgres".to_string());
    let workloads: String = env_or("BENCH_WORKLOADS", "single_event,batch_100".to_string());
    let modes: String = env_or("BENCH_MODES", "ceiling,durable".to_string());
    let rounds: usize = env_or("BENCH_ROUNDS", 3usize).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut summary = Vec::new();
    for backend in backends.split(',') {
        let (database_url, _pg) = match backend {
            "sqlite" => (None, None),
            "postgres" => match postgres::test_database() {
                postgres::Availability::Available(db) => (Some(db.url.clone()), Some(db)),
                postgres::Availability::Unavailable(why) => {
                    eprintln!("postgres skipped: {why}");
                    continue;
                }
            },
            other => panic!("unknown backend {other}"),
        };
        for (workload, events, connections) in [
            ("single_event", 1usize, single_connections),
            ("batch_100", 100usize, batch_connections),
        ] {
            if !workloads.split(',').any(|w| w == workload) {
                continue;
            }
            // Rounds alternate the order of the two modes, so drift in the machine's speed during
            // the run (other tenants on a shared host) weighs on both alike; the ratio reported is
            // the median of the rounds' ratios.
            let mut ratios = Vec::new();
            let mut durable_events_per_s = Vec::new();
            for round in 0..rounds {
                let order = if round % 2 == 0 {
                    ["ceiling", "durable"]
                } else {
                    ["durable", "ceiling"]
                };
                let mut rates = std::collections::HashMap::new();
                for mode in order {
                    if !modes.split(',').any(|m| m == mode) {
                        continue;
                    }
                    let line = measure(
                        &runtime,
                        database_url.clone(),
                        mode,
                        events,
                        connections,
                        seconds,
                    );
                    let rps = line["requests_per_s"].as_f64().unwrap_or(0.0);
                    rates.insert(mode, rps);
                    if mode == "durable" {
                        durable_events_per_s.push(rps * events as f64);
                    }
                    let mut line = line;
                    line["backend"] = json!(backend);
                    line["workload"] = json!(workload);
                    line["round"] = json!(round + 1);
                    println!("{line}");
                }
                if let (Some(c), Some(d)) = (rates.get("ceiling"), rates.get("durable")) {
                    if *c > 0.0 {
                        ratios.push(d / c);
                    }
                }
            }
            let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
            summary.push(json!({"backend": backend, "workload": workload,
                                "durable_over_ceiling": round3(median(&ratios)),
                                "round_ratios": ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
                                "durable_events_per_s": median(&durable_events_per_s).round()}));
        }
    }
    println!("{}", json!({"summary": summary}));
}

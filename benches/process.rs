//! Processing benchmark (SPEC §10: inbox → ledger → outbox at ≥ 20,000 events/s on SQLite and
//! ≥ 10,000 on PostgreSQL for a realistic mix, not degrading with history, spread across
//! processors).
//!
//! **Drain.** A realistic mix is stored through the real HTTP ingest with the workers off: 20% of
//! the events tell referral stories (partner joins, signups, contact creations and email changes,
//! deal creations, associations, amounts, three stage changes; a quarter of the deals are won,
//! which makes rewards, a quarter lost), 80% are property changes of records no referral touches
//! (deal stages and amounts, contact emails). Then N processors (tasks in this process, each with its own connections, as
//! replicas would have) drain the inbox and the reconcile queue. Printed per run: events/s, this
//! process's CPU µs per event, the database server's CPU µs per event (PostgreSQL: every
//! `postgres` process), and on PostgreSQL the share of samples in which a processor's connection
//! waited on a lock.
//!
//! **History.** With `BENCH_HISTORY=1` (the long form) each run is repeated on a database that
//! already holds 1,000,000 referrals with their contacts and deals and 5,000,000 processed inbox
//! events, and the ratio to the empty-database figure is printed.
//!
//! **Burst.** The full service (workers on) takes HubSpot batches at 3,000 events/s for
//! `BENCH_BURST_SECONDS`; the processing lag (now − arrival of the oldest pending event) is
//! sampled every 250 ms; its maximum and the drain time after the burst are printed.
//!
//! Run: `cargo bench --bench process` (env: BENCH_EVENTS=100000, BENCH_BACKENDS=sqlite,postgres,
//! BENCH_PROCESSORS=1,2 (PostgreSQL; SQLite always runs 1), BENCH_HISTORY=0, BENCH_BURST_SECONDS=60,
//! BENCH_BURST_RATE=3000).

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use referral_sync::clock::{SharedClock, SystemClock};
use referral_sync::config::{ConfigSources, Secret, Settings};
use referral_sync::ingest::signature::{sign_hubspot, sign_standard_webhooks, HubSpotVersion};
use referral_sync::processing::InboxProcessor;
use referral_sync::startup::Application;
use referral_sync::store::{BackendKind, Store};
use serde_json::{json, Value};
use support::{cpu_seconds_of, cpu_seconds_of_all, env_or, Rng};
use tokio_util::sync::CancellationToken;

const HUBSPOT_SECRET: &str = "bench-hubspot-secret";
const SOURCE_SECRET: &str = "whsec_YmVuY2gtcHJvZHVjdC1zZWNyZXQtMzItYnl0ZXMhIQ==";
const PORTAL: u64 = 5_799_819;
const PARTNERS: u64 = 50;
const DAY_MS: i64 = 86_400_000;

/// The settings of every run: the example programs (so stories earn rewards), no CRM credentials
/// (nothing is delivered: processing is measured, not write-back).
fn settings(database_url: &str, processors: usize) -> Settings {
    let mut s = Settings::load(&ConfigSources {
        file: Some(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/example.toml"),
        ),
        dir: Some(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")),
        env: Some(BTreeMap::new()),
    })
    .expect("config/example.toml loads");
    s.database.url = Secret::new(database_url);
    s.database.max_connections = 16;
    s.server.bind = "127.0.0.1:0".into();
    s.server.public_base_url = String::new();
    s.server.workers = 2;
    s.telemetry.level = "error".into();
    s.hubspot.client_secrets = vec![Secret::new(HUBSPOT_SECRET)];
    s.hubspot.access_token = Secret::new("");
    s.salesforce.login_url = String::new();
    if let Some(app) = s.sources.get_mut("app") {
        app.secrets = vec![Secret::new(SOURCE_SECRET)];
    }
    s.processing.processors = processors;
    s
}

// ---- the mix ----------------------------------------------------------------------------------

/// What to send: product events (one per request) and HubSpot events (batched by 100).
struct Mix {
    product: Vec<Value>,
    hubspot: Vec<Value>,
}

impl Mix {
    fn events(&self) -> usize {
        self.product.len() + self.hubspot.len()
    }
}

fn hubspot_event(id: u64, kind: &str, object: u64, at: i64, extra: Value) -> Value {
    let mut e = json!({"eventId": id, "subscriptionId": 92_894, "portalId": PORTAL, "appId": 186_886,
        "occurredAt": at, "subscriptionType": kind, "attemptNumber": 0, "objectId": object,
        "changeSource": "CRM_UI"});
    if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
        e.extend(extra.clone());
    }
    e
}

fn property(name: &str, value: impl ToString) -> Value {
    json!({"propertyName": name, "propertyValue": value.to_string()})
}

/// `events` events, 20% of them in referral stories of 9 events (one signup plus eight HubSpot
/// events), 80% property changes of unlinked records; `tag` keeps ids unique across runs that
/// share a database.
fn mix(events: usize, tag: u64, now: i64) -> Mix {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ tag);
    let mut product: Vec<Value> = (0..PARTNERS)
        .map(|p| {
            json!({"id": format!("evt_partner_{tag}_{p}"), "type": "partner.joined",
                   "occurred_at": iso(now - 400 * DAY_MS),
                   "data": {"code": format!("P-{p}"), "name": format!("Partner {p}"),
                            "email": format!("partner{p}@partners.bench"), "market": "US", "kind": "partner"}})
        })
        .collect();
    let mut hubspot = Vec::new();
    let stories = events / 5 / 9;
    let mut event_id = tag * 100_000_000;
    let mut next_id = || {
        event_id += 1;
        event_id
    };
    let base = tag * 10_000_000;
    for s in 0..stories as u64 {
        let email = format!("s{s}.{tag}@story.bench");
        let (contact, deal) = (base + 2 * s, base + 2 * s + 1);
        let t = now - 120 * DAY_MS + s as i64;
        product.push(json!({"id": format!("evt_signup_{tag}_{s}"), "type": "signup.created",
            "occurred_at": iso(t),
            "data": {"email": email, "referral_code": format!("P-{}", s % PARTNERS), "source": "link",
                     "market": "US", "ip": format!("10.{}.{}.{}", s % 250, (s / 250) % 250, s % 7)}}));
        for e in [
            hubspot_event(next_id(), "contact.creation", contact, t + 1_000, json!({})),
            hubspot_event(
                next_id(),
                "contact.propertyChange",
                contact,
                t + 1_000,
                property("email", &email),
            ),
            hubspot_event(next_id(), "deal.creation", deal, t + 2_000, json!({})),
            hubspot_event(
                next_id(),
                "deal.associationChange",
                deal,
                t + 2_000,
                json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact}),
            ),
            hubspot_event(
                next_id(),
                "deal.propertyChange",
                deal,
                t + 3_000,
                property("amount", 12_000 + s % 5_000),
            ),
            hubspot_event(
                next_id(),
                "deal.propertyChange",
                deal,
                t + DAY_MS,
                property("dealstage", "qualifiedtobuy"),
            ),
            hubspot_event(
                next_id(),
                "deal.propertyChange",
                deal,
                t + 2 * DAY_MS,
                property("dealstage", "presentationscheduled"),
            ),
            hubspot_event(
                next_id(),
                "deal.propertyChange",
                deal,
                t + 3 * DAY_MS,
                // A quarter of the stories win, a quarter are lost, half are still open.
                property(
                    "dealstage",
                    [
                        "closedwon",
                        "closedlost",
                        "decisionmakerboughtin",
                        "contractsent",
                    ][(s % 4) as usize],
                ),
            ),
        ] {
            hubspot.push(e);
        }
    }
    let noise = events - product.len() - hubspot.len();
    let stages = [
        "appointmentscheduled",
        "qualifiedtobuy",
        "presentationscheduled",
        "closedlost",
    ];
    let mut noise_events = Vec::with_capacity(noise);
    for n in 0..noise as u64 {
        let object = base + 5_000_000 + rng.below(noise as u64 / 3 + 1);
        let at = now - rng.below(90 * DAY_MS as u64) as i64;
        let e = match rng.below(100) {
            0..=34 => hubspot_event(
                next_id(),
                "deal.propertyChange",
                object,
                at,
                property("dealstage", stages[(n % 4) as usize]),
            ),
            35..=59 => hubspot_event(
                next_id(),
                "deal.propertyChange",
                object,
                at,
                property("amount", 1_000 + rng.below(90_000)),
            ),
            _ => hubspot_event(
                next_id(),
                "contact.propertyChange",
                object,
                at,
                property("email", format!("n{object}@noise.bench")),
            ),
        };
        noise_events.push(e);
    }
    // Stories arrive spread through the noise, each story's events in order.
    let mut merged = Vec::with_capacity(hubspot.len() + noise_events.len());
    let every = (noise_events.len() / hubspot.len().max(1)).max(1);
    let mut noise_iter = noise_events.into_iter();
    for e in hubspot {
        merged.push(e);
        merged.extend(noise_iter.by_ref().take(every));
    }
    merged.extend(noise_iter);
    Mix {
        product,
        hubspot: merged,
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---- sending ----------------------------------------------------------------------------------

async fn post_hubspot(client: &reqwest::Client, base: &str, events: &[Value]) {
    let body = serde_json::to_string(events).expect("json");
    let now = chrono::Utc::now().timestamp_millis();
    let url = format!("{base}/webhooks/hubspot");
    let headers = sign_hubspot(
        HubSpotVersion::V3,
        HUBSPOT_SECRET,
        "POST",
        &url,
        body.as_bytes(),
        now,
    );
    let mut req = client.post(&url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let status = req.body(body).send().await.expect("send").status();
    assert_eq!(status.as_u16(), 204, "HubSpot batch refused");
}

async fn post_product(client: &reqwest::Client, base: &str, event: &Value) {
    let body = event.to_string();
    let id = event["id"].as_str().expect("id");
    let now = chrono::Utc::now().timestamp();
    let headers = sign_standard_webhooks(SOURCE_SECRET, id, now, body.as_bytes()).expect("sign");
    let mut req = client
        .post(format!("{base}/webhooks/signup/app"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let status = req.body(body).send().await.expect("send").status();
    assert!(status.is_success(), "product event refused: {status}");
}

/// Store the mix through the real ingest (workers off), 8 requests at a time. The app has a
/// store of its own: stopping it closes its pool.
async fn store_mix(settings: &Settings, mix: &Mix) {
    let store = Store::connect(&settings.database).await.expect("connect");
    let app = Application::build_with(settings.clone(), store, Arc::new(SystemClock), false)
        .await
        .expect("app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let client = reqwest::Client::new();
    // Partners first, then everything in order, 8 requests in flight.
    for e in &mix.product[..PARTNERS as usize] {
        post_product(&client, &base, e).await;
    }
    let mut jobs: Vec<Job> = mix.product[PARTNERS as usize..]
        .iter()
        .map(|e| Job::Product(e.clone()))
        .collect();
    jobs.extend(mix.hubspot.chunks(100).map(|c| Job::HubSpot(c.to_vec())));
    let jobs = Arc::new(std::sync::Mutex::new(jobs.into_iter()));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (jobs, client, base) = (jobs.clone(), client.clone(), base.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let next = jobs.lock().expect("jobs").next();
                match next {
                    Some(Job::Product(e)) => post_product(&client, &base, &e).await,
                    Some(Job::HubSpot(batch)) => post_hubspot(&client, &base, &batch).await,
                    None => return,
                }
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    stop.cancel();
    server.await.expect("server task").expect("server");
}

enum Job {
    Product(Value),
    HubSpot(Vec<Value>),
}

// ---- draining ---------------------------------------------------------------------------------

async fn backlog(store: &Store) -> (i64, i64) {
    let pending = store.inbox_backlog().await.expect("backlog").0;
    let queued = store.reconcile_backlog().await.expect("queue").0;
    (pending, queued)
}

/// Run `processors` processors until the inbox and the reconcile queue are empty.
async fn drain(settings: &Settings, store: &Store, processors: usize, events: usize) -> Value {
    let settings = Arc::new(settings.clone());
    let clock: SharedClock = Arc::new(SystemClock);
    let done = Arc::new(AtomicBool::new(false));
    let lock_samples = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    // What the waiting sessions wait on, summed over the samples (PostgreSQL).
    let sampler = (store.kind() == BackendKind::Postgres).then(|| {
        let (store, done, samples) = (store.clone(), done.clone(), lock_samples.clone());
        tokio::spawn(async move {
            let mut waits: BTreeMap<String, u64> = BTreeMap::new();
            while !done.load(Ordering::Relaxed) {
                if let Ok(waiting) = store.sessions_waiting_on_locks().await {
                    samples.0.fetch_add(1, Ordering::Relaxed);
                    if !waiting.is_empty() {
                        samples.1.fetch_add(1, Ordering::Relaxed);
                    }
                    for w in waiting {
                        *waits.entry(w).or_default() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            waits
        })
    });
    let me = std::process::id();
    let (cpu0, db0) = (cpu_seconds_of(me), cpu_seconds_of_all("postgres"));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..processors {
        let p = InboxProcessor::new(
            store.clone(),
            settings.clone(),
            clock.clone(),
            Arc::new(tokio::sync::Notify::new()),
        );
        let (store, done) = (store.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let report = p.tick().await.expect("processing");
                if report.is_idle() {
                    if backlog(&store).await == (0, 0) {
                        done.store(true, Ordering::Relaxed);
                    } else {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("processor");
    }
    let seconds = started.elapsed().as_secs_f64();
    let (cpu, db) = (
        cpu_seconds_of(me) - cpu0,
        cpu_seconds_of_all("postgres") - db0,
    );
    let waits = match sampler {
        Some(s) => s.await.expect("sampler"),
        None => BTreeMap::new(),
    };
    let (samples, waiting) = (
        lock_samples.0.load(Ordering::Relaxed),
        lock_samples.1.load(Ordering::Relaxed),
    );
    let per_event = |s: f64| (s * 1e6 / events as f64).round();
    json!({
        "processors": processors, "events": events,
        "seconds": (seconds * 100.0).round() / 100.0,
        "events_per_s": (events as f64 / seconds).round(),
        "processor_cpu_us_per_event": per_event(cpu),
        "database_cpu_us_per_event": if store.kind() == BackendKind::Postgres { json!(per_event(db)) } else { json!(null) },
        "lock_wait_share": if samples > 0 { json!((waiting as f64 / samples as f64 * 1000.0).round() / 1000.0) } else { json!(null) },
        "lock_waits_by_kind": waits,
    })
}

// ---- history ----------------------------------------------------------------------------------

/// `INSERT … SELECT` over `g` = 1..=n on either backend.
fn over_series(postgres: bool, n: u64, insert: &str, select: &str) -> String {
    if postgres {
        format!("{insert} SELECT {select} FROM generate_series(1, {n}) AS s(g)")
    } else {
        format!(
            "WITH RECURSIVE s(g) AS (VALUES (1) UNION ALL SELECT g + 1 FROM s WHERE g < {n}) \
             {insert} SELECT {select} FROM s"
        )
    }
}

/// 1,000,000 referrals with a linked contact each, 500,000 linked deals (a third won, each with
/// stage history), and 5,000,000 processed inbox events, written directly in SQL.
async fn add_history(database_url: &str) {
    const REFERRALS: u64 = 1_000_000;
    const DEALS: u64 = 500_000;
    const EVENTS: u64 = 5_000_000;
    let started = Instant::now();
    let postgres = database_url.starts_with("postgres");
    let t0 = chrono::Utc::now().timestamp_millis() - 400 * DAY_MS;
    let statements = [
        over_series(postgres, REFERRALS,
            "INSERT INTO referrals (id, email, referrer_code, source, market, first_touch_at, won_at, created_at, updated_at)",
            &format!("'hist-' || g, 'h' || g || '@history.bench', 'P-' || (g % 2000), 'link', 'US', {t0} + g, \
                      CASE WHEN g % 6 = 0 THEN {t0} + g + {DAY_MS} ELSE NULL END, {t0}, {t0}")),
        over_series(postgres, REFERRALS,
            "INSERT INTO crm_records (crm, object_type, object_id, account, referral_id, email, referrer_code, source, market, first_touch_at, linked_at, crm_created_at, created_at, updated_at)",
            &format!("'hubspot', 'contact', 'h' || g, '{PORTAL}', 'hist-' || g, 'h' || g || '@history.bench', \
                      'P-' || (g % 2000), 'link', 'US', {t0} + g, {t0}, {t0}, {t0}, {t0}")),
        over_series(postgres, DEALS,
            "INSERT INTO crm_records (crm, object_type, object_id, account, referral_id, referrer_code, source, market, first_touch_at, linked_at, pipeline, stage_id, stage, stage_occurred_at, amount, currency, created_at, updated_at)",
            &format!("'hubspot', 'deal', 'hd' || g, '{PORTAL}', 'hist-' || (2 * g), 'P-' || ((2 * g) % 2000), 'link', 'US', \
                      {t0} + 2 * g, {t0}, 'default', CASE WHEN g % 3 = 0 THEN 'closedwon' ELSE 'qualifiedtobuy' END, \
                      CASE WHEN g % 3 = 0 THEN 'won' ELSE 'qualified' END, {t0} + {DAY_MS}, '25000', 'USD', {t0}, {t0}")),
        over_series(postgres, DEALS,
            "INSERT INTO crm_associations (crm, deal_id, contact_id, removed, occurred_at)",
            &format!("'hubspot', 'hd' || g, 'h' || (2 * g), FALSE, {t0}")),
        over_series(postgres, DEALS,
            "INSERT INTO stage_history (crm, deal_id, pipeline, stage_id, stage, occurred_at, recorded_at)",
            &format!("'hubspot', 'hd' || g, 'default', CASE WHEN g % 3 = 0 THEN 'closedwon' ELSE 'qualifiedtobuy' END, \
                      CASE WHEN g % 3 = 0 THEN 'won' ELSE 'qualified' END, {t0} + {DAY_MS}, {t0}")),
        over_series(postgres, EVENTS,
            "INSERT INTO inbox_events (source, dedupe_key, event_type, object_key, occurred_at, received_at, meta, payload, status, attempts, processed_at, partition_no)",
            &format!("'hubspot', 'hist:' || g, 'deal.propertyChange', 'hubspot:deal:hd' || (g % {DEALS}), {t0} + g, {t0} + g, '{{}}', \
                      '{{\"eventId\":' || g || ',\"subscriptionType\":\"deal.propertyChange\",\"objectId\":' || (g % {DEALS}) || \
                      ',\"propertyName\":\"amount\",\"propertyValue\":\"25000\",\"portalId\":{PORTAL},\"occurredAt\":' || ({t0} + g) || '}}', \
                      'processed', 1, {t0} + g, g % 64")),
    ];
    if postgres {
        let pool = sqlx::PgPool::connect(database_url).await.expect("connect");
        for sql in &statements {
            sqlx::query(sql).execute(&pool).await.expect("history");
        }
        sqlx::query("ANALYZE")
            .execute(&pool)
            .await
            .expect("analyze");
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(database_url)
            .await
            .expect("connect");
        for sql in &statements {
            sqlx::query(sql).execute(&pool).await.expect("history");
        }
        pool.close().await;
    }
    eprintln!("history added in {:.0} s", started.elapsed().as_secs_f64());
}

// ---- burst ------------------------------------------------------------------------------------

/// The whole service under a burst of HubSpot batches at `rate` events/s for `seconds`.
async fn burst(database_url: &str, rate: u64, seconds: u64) -> Value {
    let settings = settings(database_url, 2);
    let store = Store::connect(&settings.database).await.expect("connect");
    store.migrate().await.expect("migrate");
    let clock: SharedClock = Arc::new(SystemClock);
    let app = Application::build_with(settings.clone(), store.clone(), clock.clone(), true)
        .await
        .expect("app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp_millis();
    let mix = mix((rate * seconds) as usize, 7, now);
    for e in &mix.product {
        post_product(&client, &base, e).await;
    }
    let batches: Vec<Vec<Value>> = mix.hubspot.chunks(100).map(|c| c.to_vec()).collect();
    let per_second = (rate / 100).max(1);
    let sampling = Arc::new(AtomicBool::new(true));
    let max_lag_ms = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (store, sampling, max_lag_ms, clock) = (
            store.clone(),
            sampling.clone(),
            max_lag_ms.clone(),
            clock.clone(),
        );
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Ok((_, Some(oldest))) = store.inbox_backlog().await {
                    max_lag_ms.fetch_max((clock.now() - oldest).max(0) as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let started = Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        // Paced: batch i leaves at i / per_second seconds.
        let due = started + Duration::from_secs_f64(i as f64 / per_second as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, base, batch) = (client.clone(), base.clone(), batch.clone());
        tokio::spawn(async move { post_hubspot(&client, &base, &batch).await });
    }
    let sent = started.elapsed();
    let drain_started = Instant::now();
    while backlog(&store).await != (0, 0) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = drain_started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    stop.cancel();
    server.await.expect("server task").expect("server");
    json!({"benchmark": "burst", "rate_events_per_s": rate, "events": mix.events(),
           "sending_s": (sent.as_secs_f64() * 10.0).round() / 10.0,
           "max_lag_s": max_lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
           "drain_after_burst_s": (drain.as_secs_f64() * 100.0).round() / 100.0})
}

// ---- main -------------------------------------------------------------------------------------

async fn run_drain(
    database_url: &str,
    backend: &str,
    processors: usize,
    events: usize,
    history: bool,
) -> Value {
    let settings = settings(database_url, processors);
    let store = Store::connect(&settings.database).await.expect("connect");
    store.migrate().await.expect("migrate");
    if history {
        add_history(database_url).await;
    }
    let mix = mix(events, 1, chrono::Utc::now().timestamp_millis());
    let stored_at = Instant::now();
    store_mix(&settings, &mix).await;
    let stored = stored_at.elapsed().as_secs_f64();
    let mut line = drain(&settings, &store, processors, mix.events()).await;
    let rewards = store.reward_status_counts().await.expect("rewards");
    line["benchmark"] = json!("drain");
    line["backend"] = json!(backend);
    line["history"] = json!(history);
    line["stored_in_s"] = json!((stored * 10.0).round() / 10.0);
    line["rewards"] = json!(rewards.iter().map(|(_, n)| n).sum::<i64>());
    store.close().await;
    line
}

fn main() {
    let events: usize = env_or("BENCH_EVENTS", 100_000);
    let backends: String = env_or("BENCH_BACKENDS", "sqlite,postgres".to_string());
    let processor_counts: String = env_or("BENCH_PROCESSORS", "1,2".to_string());
    let history: bool = env_or("BENCH_HISTORY", 0u8) == 1;
    let burst_seconds: u64 = env_or("BENCH_BURST_SECONDS", 60);
    let burst_rate: u64 = env_or("BENCH_BURST_RATE", 3_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut summary = Vec::new();
    for backend in backends.split(',') {
        let counts: Vec<usize> = match backend {
            "sqlite" => vec![1],
            _ => processor_counts
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect(),
        };
        let histories: &[bool] = if history { &[false, true] } else { &[false] };
        for &with_history in histories {
            let mut rates = Vec::new();
            for &processors in &counts {
                let (url, _db, _dir) = database(backend);
                let line =
                    runtime.block_on(run_drain(&url, backend, processors, events, with_history));
                println!("{line}");
                rates.push((processors, line["events_per_s"].as_f64().unwrap_or(0.0)));
            }
            summary.push(json!({"backend": backend, "history": with_history,
                "events_per_s_by_processors": rates.iter().map(|(n, r)| json!({"processors": n, "events_per_s": r})).collect::<Vec<_>>()}));
        }
        if burst_seconds > 0 {
            let (url, _db, _dir) = database(backend);
            let mut line = runtime.block_on(burst(&url, burst_rate, burst_seconds));
            line["backend"] = json!(backend);
            println!("{line}");
            summary.push(line);
        }
    }
    println!("{}", json!({"summary": summary}));
}

/// A fresh database for `backend`: its URL and what must live as long as it is used.
fn database(backend: &str) -> (String, Option<postgres::TestDatabase>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    match backend {
        "sqlite" => (
            format!("sqlite://{}/bench.db", dir.path().display()),
            None,
            dir,
        ),
        "postgres" => match postgres::test_database() {
            postgres::Availability::Available(db) => (db.url.clone(), Some(db), dir),
            postgres::Availability::Unavailable(why) => panic!("PostgreSQL unavailable: {why}"),
        },
        other => panic!("unknown backend {other}"),
    }
}

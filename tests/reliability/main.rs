//! Reliability of the real binary under crashes and scale-out, end to end: signed webhooks in,
//! inbox processing, rewards, CRM write-back to the in-repo sandbox.
//!
//! - `sigkill_under_load_loses_nothing_and_rewards_once_on_sqlite`: one `serve` process on a SQLite
//!   file is SIGKILLed at random moments while a sender keeps posting product signups and HubSpot
//!   batches, and restarted on the same port and file each time. Every acknowledged event must be
//!   stored exactly once and processed, every won deal rewarded once per beneficiary, every linked
//!   record must get its referral context, and no record may get an older value back after a newer
//!   one. No property write may reach the CRM twice: a record whose delivery was cut short by a
//!   kill is read back before it is sent again.
//! - `two_processes_on_one_postgresql_store_once_reward_once_and_deliver_everything`: `migrate`
//!   once, then two `serve --no-migrate` processes on one PostgreSQL database; signups alternate
//!   between them and every HubSpot batch goes to both. Skipped (printing "skipped: …") without
//!   PostgreSQL unless `REQUIRE_POSTGRES=1`.
//!
//! By default (CI) they run reduced: 30 referrals and 3 kills, 20 referrals on PostgreSQL, each
//! within about a minute. `RELIABILITY_FULL=1` runs the full form: 300 referrals and 10 kills,
//! 300 referrals on PostgreSQL. Run with `--nocapture` to see the printed figures (kills,
//! requests, events, rewards, CRM writes and exact repeats).

#[path = "../support/mod.rs"]
mod support;

mod service;
mod traffic;
mod verify;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_sandbox::{CrmSandbox, SandboxConfig};
use referral_sync::clock::SystemClock;

use service::{run_to_completion, write_config_file, Service, Shared};
use traffic::{stories, Plan, Rng, Traffic};

/// Reduced in CI, full with `RELIABILITY_FULL=1`.
struct Scale {
    full: bool,
    referrals: u64,
    kills: u64,
    budget: Duration,
}

impl Scale {
    fn crash() -> Scale {
        if full() {
            Scale {
                full: true,
                referrals: 300,
                kills: 10,
                budget: Duration::from_secs(300),
            }
        } else {
            Scale {
                full: false,
                referrals: 30,
                kills: 3,
                budget: Duration::from_secs(60),
            }
        }
    }

    fn scale_out() -> Scale {
        Scale {
            referrals: if full() { 300 } else { 20 },
            kills: 0,
            ..Scale::crash()
        }
    }
}

fn full() -> bool {
    std::env::var("RELIABILITY_FULL").is_ok_and(|v| v.trim() == "1")
}

/// A kill comes this long (in ms, uniformly) after the previous restart was ready.
const KILL_AFTER_MS: (u64, u64) = (200, 1200);

async fn sandbox() -> CrmSandbox {
    CrmSandbox::start(
        SandboxConfig {
            hubspot_limit_per_10s: 190,
            ..Default::default()
        },
        referral_sync::clock::for_sandbox(Arc::new(SystemClock)),
    )
    .await
    .expect("start the CRM sandbox")
}

fn assert_complete(traffic: &Traffic) {
    let incomplete = traffic.incomplete();
    assert!(
        incomplete.is_empty(),
        "{} of {} stories were not acknowledged to the end before the deadline \
         (story, steps acknowledged): {:?}; sends {}, acknowledged {}, refused {:?}, unanswered {}",
        incomplete.len(),
        traffic.stories.len(),
        &incomplete[..incomplete.len().min(10)],
        traffic.sends,
        traffic.acked_sends,
        traffic.refused,
        traffic.lost
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_nothing_and_rewards_once_on_sqlite() {
    let scale = Scale::crash();
    let started = Instant::now();
    let deadline = started + scale.budget;
    let crm = sandbox().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = Shared {
        database_url: format!("sqlite://{}/reliability.db", dir.path().display()),
        crm_base_url: crm.base_url.clone(),
        config_file: write_config_file(dir.path()),
        log_dir: dir.path().to_path_buf(),
    };
    let client = reqwest::Client::new();
    let mut service = Service::new("crash", &shared, &["serve"]);
    service.start(&client, deadline).await;
    let store = verify::connect(&shared.database_url).await;

    let mut rng = Rng::from_time();
    let seed = rng.seed();
    let stop = Arc::new(AtomicBool::new(false));
    let mean_gap = (KILL_AFTER_MS.0 + KILL_AFTER_MS.1) / 2;
    let sender = tokio::spawn(traffic::send(
        stories(scale.referrals),
        Plan {
            targets: vec![service.base_url()],
            hubspot_to_every_target: false,
            // New stories keep starting until about the last kill, so every kill lands under load.
            spacing: Duration::from_millis(mean_gap * scale.kills / scale.referrals),
            batch_events: 20,
            redeliveries_per_round: 3,
            keep_sending_until: Some(stop.clone()),
            deadline: started + scale.budget * 6 / 10,
        },
    ));
    let mut kill_moments = Vec::new();
    for _ in 0..scale.kills {
        let wait = rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1);
        // Not waiting for anything: the pause IS the random moment of the crash.
        tokio::time::sleep(Duration::from_millis(wait)).await;
        service.kill();
        kill_moments.push(started.elapsed().as_millis());
        service.start(&client, deadline).await;
    }
    stop.store(true, Ordering::SeqCst);
    let traffic = sender.await.expect("the sender task");
    let sent_by = started.elapsed();
    assert_complete(&traffic);

    let settled = verify::wait_until_settled(&store, deadline).await;
    let events = verify::inbox_holds_each_acknowledged_event_once(&store, &traffic).await;
    let rewards = verify::one_reward_per_deal_and_beneficiary(&store, &traffic.stories).await;
    verify::every_record_has_its_context(&store, &crm.state, &traffic.stories).await;
    let writes = verify::writes_kept_record_order_and_none_repeated(&crm.state);

    println!(
        "crash test ({} form, seed {seed}): {} referrals, {} kills at {kill_moments:?} ms, {} starts; \
         sends {} (acknowledged {}, refused {:?}, unanswered {}, redeliveries {}); \
         {} distinct events acknowledged, {} stored, inbox {:?}, outbox {:?}; {rewards} rewards; \
         CRM: requests by status {:?}, {} writes to {} records, {} exact repeats {:?}; \
         sending took {sent_by:?}, settling {:?}, total {:?}",
        if scale.full { "full" } else { "reduced" },
        scale.referrals,
        kill_moments.len(),
        service.starts,
        traffic.sends,
        traffic.acked_sends,
        traffic.refused,
        traffic.lost,
        traffic.redeliveries,
        traffic.acked.len(),
        events,
        settled.inbox,
        settled.outbox,
        writes.requests_by_status,
        writes.writes,
        writes.records,
        writes.exact_repeats,
        writes.repeated_records,
        settled.waited,
        started.elapsed(),
    );
    store.close().await;
    service.kill();
    crm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgresql_store_once_reward_once_and_deliver_everything() {
    let Some(db) = support::postgres::require_or_skip() else {
        return;
    };
    let scale = Scale::scale_out();
    let started = Instant::now();
    let deadline = started + scale.budget;
    let crm = sandbox().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = Shared {
        database_url: db.url.clone(),
        crm_base_url: crm.base_url.clone(),
        config_file: write_config_file(dir.path()),
        log_dir: dir.path().to_path_buf(),
    };
    run_to_completion(&shared, &["migrate"]);
    let client = reqwest::Client::new();
    let mut replicas = [
        Service::new("replica-a", &shared, &["serve", "--no-migrate"]),
        Service::new("replica-b", &shared, &["serve", "--no-migrate"]),
    ];
    for replica in &mut replicas {
        replica.start(&client, deadline).await;
    }
    let store = verify::connect(&shared.database_url).await;

    let traffic = traffic::send(
        stories(scale.referrals),
        Plan {
            targets: replicas.iter().map(Service::base_url).collect(),
            hubspot_to_every_target: true,
            spacing: Duration::from_millis(5),
            batch_events: 20,
            redeliveries_per_round: 0,
            keep_sending_until: None,
            deadline: started + scale.budget * 6 / 10,
        },
    )
    .await;
    let sent_by = started.elapsed();
    assert_complete(&traffic);
    assert!(
        traffic.refused.is_empty() && traffic.lost == 0,
        "with no crash, every send is acknowledged: refused {:?}, unanswered {}",
        traffic.refused,
        traffic.lost
    );

    let settled = verify::wait_until_settled(&store, deadline).await;
    let events = verify::inbox_holds_each_acknowledged_event_once(&store, &traffic).await;
    let rewards = verify::one_reward_per_deal_and_beneficiary(&store, &traffic.stories).await;
    verify::every_record_has_its_context(&store, &crm.state, &traffic.stories).await;
    let writes = verify::writes_kept_record_order_and_none_repeated(&crm.state);
    let acknowledged_twice = traffic.acked.values().filter(|n| **n > 1).count();
    let mut processed_by = Vec::new();
    for replica in &replicas {
        processed_by.push(replica.events_processed(&client).await);
    }
    assert!(
        processed_by.iter().all(|n| *n > 0),
        "both replicas apply events (partitioned processing), not one at a time: {processed_by:?}"
    );

    println!(
        "scale-out test ({} form): {} referrals over 2 processes (events applied by each: \
         {processed_by:?}); sends {} (acknowledged {}); \
         {} distinct events acknowledged ({acknowledged_twice} by both processes), {} stored, \
         inbox {:?}, outbox {:?}; {rewards} rewards; CRM: requests by status {:?}, {} writes to \
         {} records, {} exact repeats {:?}; sending took {sent_by:?}, settling {:?}, total {:?}",
        if full() { "full" } else { "reduced" },
        scale.referrals,
        traffic.sends,
        traffic.acked_sends,
        traffic.acked.len(),
        events,
        settled.inbox,
        settled.outbox,
        writes.requests_by_status,
        writes.writes,
        writes.records,
        writes.exact_repeats,
        writes.repeated_records,
        settled.waited,
        started.elapsed(),
    );
    store.close().await;
    for replica in &mut replicas {
        replica.kill();
    }
    crm.stop().await;
}

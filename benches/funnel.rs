//! Funnel report benchmark (SPEC §10: 1,000,000 referrals in ≤ 1 s on SQLite): fills a temporary
//! SQLite database with 1,000,000 referrals (2 markets × 4 sources, 2,000 referrers, ~25% with a
//! deal, ~8% won with a reward, some reversed), then times `Store::funnel_facts` + `compute` over
//! the whole range and prints one JSON line. Setup time is reported but not part of the figure.
//! There is no ANALYZE, so SQLite plans the queries as it would on a production database.
//!
//! Run: `cargo bench --bench funnel` (env: BENCH_REFERRALS=1000000, BENCH_RUNS=5, BENCH_DB=PATH to
//! keep the database and reuse it on the next run).

mod support;

use std::time::{Duration, Instant};

use referral_sync::reports::funnel::{compute, FunnelFilter};
use serde_json::json;
use support::env_or;

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

#[tokio::main]
async fn main() {
    let runs: usize = env_or("BENCH_RUNS", 5).max(1);
    let filled = support::referrals::filled().await;
    let (store, referrals, setup_s) = (filled.store.clone(), filled.referrals, filled.setup_s);

    let mut times = Vec::new();
    let mut report = None;
    for _ in 0..runs {
        let started = Instant::now();
        let facts = store
            .funnel_facts(&FunnelFilter::default())
            .await
            .expect("funnel facts");
        report = Some(compute(&facts));
        times.push(started.elapsed());
    }
    times.sort();
    let report = report.expect("at least one run");
    assert_eq!(report.totals.referrals, referrals, "every referral counted");
    eprintln!(
        "totals: {} referrals, {} qualified, {} won, {} active referrers, revenue {:?}, cost {:?}",
        report.totals.referrals,
        report.totals.qualified,
        report.totals.won,
        report.totals.active_referrers,
        report.totals.revenue,
        report.totals.reward_cost
    );
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    println!(
        "{}",
        json!({
            "referrals": referrals,
            "report_ms_min": ms(times[0]),
            "report_ms_median": ms(median(&times)),
            "setup_s": (setup_s * 100.0).round() / 100.0,
        })
    );
    store.close().await;
}

//! Funnel report benchmark (SPEC §10: 1,000,000 referrals in ≤ 1 s on SQLite): over
//! [`support::referrals`]' data (1,000,000 referrals and 4,000,000 deals no referral touches),
//! times over the whole range, 5 runs each: the funnel (`Store::funnel_facts` + `compute`), and
//! the funnel with the referred vs non-referred comparison (`funnel::report_with_comparison`:
//! `Store::baseline_facts` read beside the funnel, + `compare::compute`) with 1,000 deals changed
//! since the baseline rollup's last refresh. Then it marks 20,000 deals and times their refresh.
//! Prints one JSON line; setup time is reported but not part of the figures. There is no ANALYZE, so SQLite plans
//! the queries as it would on a production database.
//!
//! Run: `cargo bench --bench funnel` (env: BENCH_REFERRALS=1000000, BENCH_DEALS=4000000,
//! BENCH_RUNS=5, BENCH_DB=PATH to keep the database and reuse it on the next run).

mod support;

use std::time::{Duration, Instant};

use referral_sync::reports::compare;
use referral_sync::reports::funnel::{self, compute, FunnelFilter};
use serde_json::json;
use support::env_or;
use support::referrals::{mark, DAY, START};

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

/// Times of `runs` runs of `f`, sorted, and its last result.
async fn timed<T, F: std::future::Future<Output = T>>(
    runs: usize,
    mut f: impl FnMut() -> F,
) -> (Vec<Duration>, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(f().await);
        times.push(started.elapsed());
    }
    times.sort();
    (times, last.expect("at least one run"))
}

#[tokio::main]
async fn main() {
    let runs: usize = env_or("BENCH_RUNS", 5).max(1);
    let filled = support::referrals::filled().await;
    let (store, settings, url) = (&filled.store, &filled.settings, &filled.url);
    let (referrals, deals, setup_s) = (filled.referrals, filled.deals, filled.setup_s);
    // Deals written since the rollup's last refresh: the report corrects for them.
    let pending = mark(url, ((referrals / 4 + deals) / 1_000).max(1) as i64).await;

    let filter = FunnelFilter::default();
    let (funnel_times, report) = timed(runs, || async {
        compute(&store.funnel_facts(&filter).await.expect("funnel facts"))
    })
    .await;
    assert_eq!(report.totals.referrals, referrals, "every referral counted");
    let as_of = START + 2 * 365 * DAY;
    let (compare_times, comparison) = timed(runs, || async {
        funnel::report_with_comparison(store, settings, &filter, as_of)
            .await
            .expect("funnel with the comparison")
    })
    .await;
    let comparison = comparison.comparison.expect("compared");
    // The comparison's own parts, alone: what its figure is made of.
    let (baseline_times, baseline) = timed(runs, || async {
        store
            .baseline_facts(&filter, as_of)
            .await
            .expect("baseline facts")
    })
    .await;
    let (compute_times, _) = timed(runs, || async { compare::compute(settings, &baseline) }).await;
    let created: u64 = comparison
        .totals
        .iter()
        .filter(|r| r.channel == "referral" || r.channel == compare::NON_REFERRED)
        .map(|r| r.deals_created)
        .sum();
    eprintln!(
        "totals: {} referrals, {} qualified, {} won, {} active referrers, revenue {:?}, cost {:?}",
        report.totals.referrals,
        report.totals.qualified,
        report.totals.won,
        report.totals.active_referrers,
        report.totals.revenue,
        report.totals.reward_cost
    );
    for row in &comparison.totals {
        eprintln!(
            "{:>13}: {} created, {} won, conversion {:?}, median days {:?}",
            row.channel,
            row.deals_created,
            row.deals_won,
            row.conversion_rate,
            row.median_days_to_won
        );
    }
    eprintln!("participation: {:?}", comparison.participation.last());

    // The refresh: 20,000 marked deals, drained a batch at a time as an idle processor does.
    let marked = mark(url, ((referrals / 4 + deals) / 20_000).max(1) as i64).await;
    let started = Instant::now();
    let mut refreshed = 0;
    loop {
        let mut tx = store.begin().await.expect("begin");
        let n = tx.refresh_baseline(1_000).await.expect("refresh");
        tx.commit().await.expect("commit");
        if n == 0 {
            break;
        }
        refreshed += n;
    }
    let refresh_s = started.elapsed().as_secs_f64();

    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    println!(
        "{}",
        json!({
            "referrals": referrals,
            "deals": created,
            "report_ms_min": ms(funnel_times[0]),
            "report_ms_median": ms(median(&funnel_times)),
            "compare_ms_min": ms(compare_times[0]),
            "compare_ms_median": ms(median(&compare_times)),
            "baseline_facts_ms_median": ms(median(&baseline_times)),
            "compare_compute_ms_median": ms(median(&compute_times)),
            "marked_during_reports": pending,
            "refresh_deals": refreshed,
            "refresh_deals_per_s": (refreshed as f64 / refresh_s).round(),
            "marked_for_refresh": marked,
            "setup_s": (setup_s * 100.0).round() / 100.0,
        })
    );
    store.close().await;
}

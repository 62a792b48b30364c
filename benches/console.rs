//! Console page benchmark: the Program page over 1,000,000 referrals (the funnel benchmark's data,
//! `support/referrals.rs`) must render in ≤ 1.5 s, and load nothing from another origin. Starts
//! the service in-process on a free port (no background workers), signs in through the real form,
//! then times `GET /console/program` — the whole answer, from request to last byte — unfiltered
//! and filtered to one market, and the funnel report alone for comparison, and prints one JSON
//! line with the page's weight.
//!
//! Run: `cargo bench --bench console` (env: BENCH_REFERRALS=1000000, BENCH_RUNS=5, BENCH_DB=PATH to
//! keep the database and reuse it on the next run).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use referral_sync::clock::SystemClock;
use referral_sync::config::AdminKey;
use referral_sync::reports::funnel::{compute, FunnelFilter};
use referral_sync::startup::Application;
use serde_json::json;
use sha2::{Digest, Sha256};
use support::env_or;

const KEY: &str = "bench-console-read-key";
const TARGET_MS: f64 = 1_500.0;

/// `name=value` of the `Set-Cookie` named `name`.
fn cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .to_string()
}

/// Times `runs` loads of `url` with `session`; returns the sorted times and the last body.
async fn time_page(
    client: &reqwest::Client,
    url: &str,
    session: &str,
    runs: usize,
) -> (Vec<Duration>, String) {
    let mut times = Vec::with_capacity(runs);
    let mut body = String::new();
    for _ in 0..runs {
        let started = Instant::now();
        let response = client
            .get(url)
            .header("cookie", session)
            .send()
            .await
            .expect("page");
        assert_eq!(response.status(), 200, "{url}");
        body = response.text().await.expect("page body");
        times.push(started.elapsed());
    }
    times.sort();
    (times, body)
}

#[tokio::main]
async fn main() {
    let runs: usize = env_or("BENCH_RUNS", 5).max(1);
    let filled = support::referrals::filled().await;
    let mut settings = filled.settings.clone();
    settings.server.bind = "127.0.0.1:0".into();
    settings.telemetry.level = "error".into();
    settings.admin.keys = vec![AdminKey {
        hash: hex::encode(Sha256::digest(KEY.as_bytes())),
        role: "read".into(),
        name: Some("bench".into()),
    }];
    let app = Application::build_with(settings, filled.store.clone(), Arc::new(SystemClock), false)
        .await
        .expect("build the service");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let form = client
        .get(format!("{base}/console"))
        .send()
        .await
        .expect("sign-in page");
    let form_cookie = cookie(&form, "rs_console_signin");
    let html = form.text().await.expect("sign-in form");
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("sign-in token")
        .to_string();
    let signed_in = client
        .post(format!("{base}/console/sign-in"))
        .header("cookie", form_cookie)
        .form(&[("csrf", token.as_str()), ("key", KEY)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), 303, "signed in");
    let session = cookie(&signed_in, "rs_console");

    // The funnel report alone, in the same minutes, so the page's own cost shows through the
    // noise of a shared machine.
    let mut funnel_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let facts = filled
            .store
            .funnel_facts(&FunnelFilter::default())
            .await
            .expect("funnel facts");
        std::hint::black_box(compute(&facts));
        funnel_times.push(started.elapsed());
    }
    funnel_times.sort();
    let (all, page) = time_page(&client, &format!("{base}/console/program"), &session, runs).await;
    let (us, _) = time_page(
        &client,
        &format!("{base}/console/program?market=US"),
        &session,
        runs,
    )
    .await;
    let stylesheet = client
        .get(format!("{base}/assets/web.css"))
        .send()
        .await
        .expect("stylesheet")
        .bytes()
        .await
        .expect("stylesheet body");
    let total = page
        .split("id=\"total-referrals\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the page shows the referrals")
        .replace(',', "");
    assert_eq!(
        total,
        filled.referrals.to_string(),
        "every referral counted"
    );
    // The page names no other origin at all: no absolute URL, protocol-relative or not.
    let external = page.matches("://").count() + page.matches("=\"//").count();
    let loads = page.matches(" src=").count() + page.matches("<link ").count();

    stop.cancel();
    let _ = server.await;
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let median = |t: &[Duration]| t[t.len() / 2];
    println!(
        "{}",
        json!({
            "referrals": filled.referrals,
            "program_ms_min": ms(all[0]),
            "program_ms_median": ms(median(&all)),
            "program_market_us_ms_median": ms(median(&us)),
            "funnel_report_alone_ms_median": ms(median(&funnel_times)),
            "target_ms": TARGET_MS,
            "met": ms(median(&all)) <= TARGET_MS,
            "page_bytes": page.len(),
            "stylesheet_bytes": stylesheet.len(),
            "resources_loaded": loads,
            "external_urls": external,
            "setup_s": (filled.setup_s * 100.0).round() / 100.0,
        })
    );
}

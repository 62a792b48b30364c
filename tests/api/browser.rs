//! The console and the partner portal in a real browser (headless Chromium through WebDriver,
//! `support/browser.rs`), asserting on what the page shows: a RevOps lead signs in, filters the
//! funnel, approves a reward, replays a dead delivery and signs out; partners open a valid link,
//! an expired one, a tampered one, and a second partner's link that shows none of the first's
//! data. No page loads anything from another origin. The screenshots in `docs/screenshots/` come
//! from here (`UPDATE_SCREENSHOTS=1`). SQLite only: the pages' storage is tested on both backends
//! in `console.rs` and `portal.rs`.

use referral_sync::clock::DAY;
use referral_sync::reports::funnel::{self, FunnelFilter};
use referral_sync::store::DeliveryResult;

use crate::support::browser::Browser;
use crate::support::console::{
    console_app, reward_of, seed, seed_history, ADMIN_KEY, EVE_DEAL, READ_KEY,
};
use crate::support::{Backend, T0};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revops_lead_signs_in_filters_approves_replays_and_signs_out() {
    let Some(browser) = Browser::start(1280, 1600).await else {
        return;
    };
    let app = console_app(Backend::Sqlite).await.unwrap();
    seed(&app).await;
    seed_history(&app).await;
    let total = |market: Option<&str>| {
        let store = app.store.clone();
        let filter = FunnelFilter {
            market: market.map(String::from),
            ..Default::default()
        };
        async move {
            funnel::report(&store, &filter)
                .await
                .unwrap()
                .totals
                .referrals
                .to_string()
        }
    };
    let (all_referrals, ru_referrals) = (total(None).await, total(Some("RU")).await);
    assert_eq!(all_referrals, "76", "4 from the story, 72 of history");
    let reward = reward_of(&app, EVE_DEAL).await;
    let claimed = app
        .store
        .claim_records("test", T0, T0 + 60_000, 1, 1)
        .await
        .unwrap();
    let dead = claimed[0].head_id;
    app.store
        .finish_delivery(
            "test",
            dead,
            &DeliveryResult::Dead {
                row_ids: vec![dead],
                status: Some(400),
                error: "PROPERTY_DOESNT_EXIST: referral_market".into(),
            },
            T0,
        )
        .await
        .unwrap();
    let origin = app.address.clone();

    // Sign in.
    browser.goto(&format!("{origin}/console")).await;
    browser
        .find("#key")
        .await
        .send_keys(ADMIN_KEY)
        .await
        .unwrap();
    browser.find("#sign-in button").await.click().await.unwrap();
    browser
        .wait_for_url(|u| u.ends_with("/console/program"))
        .await;
    assert!(browser.text("#who").await.contains("ops@acme.com · admin"));
    assert_eq!(browser.text("#total-referrals").await, all_referrals);
    let markets: Vec<String> = rows_of(&browser, "market").await;
    assert!(markets.contains(&"US".to_string()) && markets.contains(&"RU".to_string()));
    browser.find("#heat-map").await;
    browser.find("#conversion-chart").await;
    assert!(browser.text("#comparison").await.contains("non_referred"));
    assert!(browser.text("#scorecards").await.contains("NORTHWIND-3"));
    browser.assert_same_origin(&origin).await;
    browser.screenshot("console-program").await;

    // Filter the funnel to RU.
    thirtyfour::components::SelectElement::new(&browser.find("#market").await)
        .await
        .unwrap()
        .select_by_value("RU")
        .await
        .unwrap();
    browser.find("#apply").await.click().await.unwrap();
    browser.wait_for_url(|u| u.contains("market=RU")).await;
    assert_eq!(browser.text("#total-referrals").await, ru_referrals);
    assert_eq!(rows_of(&browser, "market").await, ["RU"]);
    assert!(browser
        .find("#csv")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap()
        .ends_with("market=RU"));

    // Approve the reward that waits for review.
    browser
        .find("nav a[href='/console/review']")
        .await
        .click()
        .await
        .unwrap();
    let card = format!("#reward-{reward}");
    let text = browser.text(&card).await;
    assert!(text.contains("Self-referral"), "the flag in words: {text}");
    browser
        .find(&format!("{card} form.approve input[name=reason]"))
        .await
        .send_keys("intro confirmed with the partner")
        .await
        .unwrap();
    browser
        .find(&format!("{card} form.approve button"))
        .await
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("#notice").await, "The reward was approved.");
    assert!(
        !browser.has(&card).await,
        "the approved reward left the queue"
    );
    let approved = app.store.reward_by_id(&reward).await.unwrap().unwrap();
    assert_eq!(
        (
            approved.line.status.as_str(),
            approved.decided_by.as_deref()
        ),
        ("approved", Some("ops@acme.com"))
    );
    browser.assert_same_origin(&origin).await;

    // Replay the dead delivery.
    browser
        .find("nav a[href='/console/deliveries']")
        .await
        .click()
        .await
        .unwrap();
    assert!(browser
        .text(&format!("tr[data-delivery='{dead}']"))
        .await
        .contains("PROPERTY_DOESNT_EXIST"));
    browser
        .find(&format!("#replay-{dead}"))
        .await
        .click()
        .await
        .unwrap();
    browser.find("#replay").await.click().await.unwrap();
    assert!(browser.text("#notice").await.contains("re-queued"));
    assert_eq!(browser.text("#dead-count").await, "0");
    assert!(browser.text("#no-dead").await.contains("No dead delivery"));
    browser.assert_same_origin(&origin).await;

    // The other pages render and load nothing from elsewhere.
    for page in ["/console/health", "/console/partners", "/console/referrals"] {
        browser.goto(&format!("{origin}{page}")).await;
        browser.find("#who").await;
        browser.assert_same_origin(&origin).await;
    }

    // Sign out: the session is gone, the console asks for a key again.
    browser.find("#sign-out").await.click().await.unwrap();
    assert_eq!(browser.text("#notice").await, "You are signed out.");
    browser.goto(&format!("{origin}/console/program")).await;
    browser.wait_for_url(|u| u.ends_with("/console")).await;
    browser.find("#key").await;
    browser.close().await;
}

/// The `data-<attribute>` values of the funnel table's rows.
async fn rows_of(browser: &Browser, attribute: &str) -> Vec<String> {
    browser.find("#funnel-table").await;
    let mut values = Vec::new();
    for row in browser
        .client
        .find_all(thirtyfour::By::Css("#funnel-table tr.funnel-row"))
        .await
        .unwrap()
    {
        values.push(
            row.attr(format!("data-{attribute}"))
                .await
                .unwrap()
                .unwrap_or_default(),
        );
    }
    values.dedup();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_see_their_own_page_and_bad_links_show_nothing() {
    let Some(browser) = Browser::start(1100, 900).await else {
        return;
    };
    let app = console_app(Backend::Sqlite).await.unwrap();
    seed(&app).await;
    // Reading November's payouts draws up BETA-2's statement: half of gus's flat reward, paid at
    // the win. ACME-7 has nothing payable yet.
    let (status, body) = crate::admin::call(
        &app,
        "GET",
        "/api/v1/payouts?period=2026-11",
        Some(READ_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let origin = app.address.clone();
    let acme = format!("{origin}{}", app.portal_path("ACME-7", 30));
    let beta = format!("{origin}{}", app.portal_path("BETA-2", 30));
    let short = format!("{origin}{}", app.portal_path("ACME-7", 1));

    // A valid link (US, English).
    browser.goto(&acme).await;
    assert_eq!(browser.text("#partner-name").await, "Acme Partners");
    assert_eq!(browser.text("#tier-name").await.to_lowercase(), "bronze");
    let referrals = browser.text("#referrals").await;
    for expected in [
        "Eve, Eve Inc",
        "reward under review",
        "in pipeline",
        "reward pending until Dec 19, 2026",
        "$1,500.00 · 7.5% of $20,000.00",
    ] {
        assert!(referrals.contains(expected), "{expected} in {referrals}");
    }
    assert!(browser.text("#rewards").await.contains("$3,000.00"));
    assert!(browser
        .text("#payouts")
        .await
        .contains("No payout statements yet"));
    browser.assert_same_origin(&origin).await;
    browser.screenshot("partner-us").await;

    // The second partner's link (RU: Russian) shows none of the first's data.
    browser.goto(&beta).await;
    assert_eq!(browser.text("#partner-name").await, "Beta Consulting");
    let page = browser.text("body").await;
    assert!(
        page.contains("Ваши рекомендации") && page.contains("50 000,00 ₽"),
        "{page}"
    );
    let payouts = browser.text("#payouts").await;
    for expected in [
        "ноябрь 2026",
        "к выплате",
        "25 000,00 ₽",
        "30 декабря 2026 г.",
    ] {
        assert!(payouts.contains(expected), "{expected} in {payouts}");
    }
    for theirs in ["Acme", "ACME-7", "Eve", "Bo,", "Cy,", "$"] {
        assert!(
            !page.contains(theirs),
            "{theirs} on the second partner's page"
        );
    }
    browser.assert_same_origin(&origin).await;
    browser.screenshot("partner-ru").await;
    browser.find("#language").await.click().await.unwrap();
    browser.wait_for_url(|u| u.contains("lang=en")).await;
    assert!(browser.text("#rewards").await.contains("RUB 50,000.00"));

    // A tampered link: the page says so and shows nothing else.
    browser.goto(&acme.replace("token=1", "token=2")).await;
    assert_refused(&browser).await;
    browser.goto(&acme.replace("/ACME-7?", "/BETA-2?")).await;
    assert_refused(&browser).await;

    // A link past its expiry.
    browser.goto(&short).await;
    assert_eq!(browser.text("#partner-name").await, "Acme Partners");
    app.clock.advance(DAY);
    browser.goto(&short).await;
    assert_refused(&browser).await;
    browser.close().await;
}

async fn assert_refused(browser: &Browser) {
    let body = browser.text("body").await;
    assert!(
        body.contains("This link is not valid or has expired."),
        "{body}"
    );
    for data in [
        "Acme", "ACME-7", "Beta", "Eve", "Gus", "USD", "RUB", "$", "₽",
    ] {
        assert!(!body.contains(data), "{data} shown on a refused link");
    }
    assert!(!browser.has("#referrals").await);
}

//! The RevOps console over HTTP, on both backends: every route refuses a request without a session,
//! a read session's writes and a form without its CSRF token; sessions are database rows shared by
//! replicas; each page shows what the store holds, and its forms decide and replay with the API's
//! rules and audit. (`browser.rs` drives the same pages in Chromium.)

use referral_sync::clock::MINUTE;
use referral_sync::domain::reward::RewardStatus;
use referral_sync::domain::DeliveryStatus;
use referral_sync::startup::Application;
use referral_sync::store::DeliveryResult;

use crate::both_backends;
use crate::support::console::{
    console_app, reward_of, seed, sign_in_at, Session, ADMIN_KEY, ADMIN_NAME, EVE_DEAL, READ_KEY,
};
use crate::support::{Backend, TestApp, T0};

/// Every console route: (method, path, changes something).
pub const ROUTES: &[(&str, &str, bool)] = &[
    ("GET", "/console/program", false),
    ("GET", "/console/program.csv", false),
    ("GET", "/console/comparison.csv", false),
    ("GET", "/console/referrers.csv", false),
    ("GET", "/console/review", false),
    ("POST", "/console/rewards/{id}/approve", true),
    ("POST", "/console/rewards/{id}/reject", true),
    ("GET", "/console/referrals", false),
    ("GET", "/console/referrals/{id}", false),
    ("GET", "/console/partners", false),
    ("GET", "/console/deliveries", false),
    ("POST", "/console/deliveries/replay", true),
    ("POST", "/console/inbox/requeue", true),
    ("GET", "/console/health", false),
    ("POST", "/console/sign-out", false),
];

both_backends!(
    every_route_refuses_no_session_a_read_sessions_writes_and_a_missing_csrf_token,
    sign_in_sets_a_strict_http_only_session_cookie_and_sign_out_ends_it,
    sign_in_refuses_a_wrong_key_and_a_form_without_its_token,
    sessions_are_shared_by_replicas_and_end_with_their_key_or_their_time,
    the_program_page_shows_the_funnel_filters_it_and_exports_what_it_shows,
    the_program_page_compares_referred_with_other_deals_and_scores_referrers,
    the_review_queue_explains_each_reward_and_decides_with_the_apis_rules_and_audit,
    the_deliveries_page_shows_the_crms_error_and_replays_the_selected_dead_writes,
    a_referrals_timeline_shows_refused_claims_crm_links_stages_and_tamper_restores,
    the_health_page_shows_backlogs_and_the_partners_page_links_for_admins_only,
    pages_escape_what_came_from_outside_and_carry_their_security_headers,
);

async fn every_route_refuses_no_session_a_read_sessions_writes_and_a_missing_csrf_token(
    backend: Backend,
) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;
    let reward = reward_of(&app, EVE_DEAL).await;
    let referral = app
        .store
        .referral_by_email("eve@acme.com")
        .await
        .unwrap()
        .unwrap()
        .first_touch
        .id;
    let dead = kill(&app, 1).await[0];
    let admin = app.sign_in(ADMIN_KEY).await;
    let read = app.sign_in(READ_KEY).await;

    for (method, template, changes) in ROUTES {
        let path = template.replace(
            "{id}",
            if template.contains("rewards") {
                &reward
            } else {
                &referral
            },
        );
        let id = dead.to_string();
        let fields = [("reason", "x"), ("id", id.as_str())];
        if *method == "GET" {
            let (status, location, body) = app.page(&path, None).await;
            assert_eq!(
                (status, location.as_str()),
                (303, "/console"),
                "GET {path} without a session goes to sign-in"
            );
            assert!(!body.contains("ACME-7"), "GET {path} shows nothing");
            let (ok, _, _) = app.page(&path, Some(&read)).await;
            assert_eq!(ok, 200, "GET {path} with a read session");
            continue;
        }
        let (none, _, _) = app
            .post_form(&path, None, &with_csrf(&fields, &admin.csrf))
            .await;
        assert_eq!(none, 401, "POST {path} without a session");
        let (no_token, _, _) = app.post_form(&path, Some(&admin), &fields).await;
        assert_eq!(no_token, 403, "POST {path} without a CSRF token");
        let mut wrong = fields.to_vec();
        wrong.push(("csrf", "forged-token"));
        let (forged, _, _) = app.post_form(&path, Some(&admin), &wrong).await;
        assert_eq!(forged, 403, "POST {path} with another CSRF token");
        let (crossed, _, _) = app
            .post_form(&path, Some(&admin), &with_csrf(&fields, &read.csrf))
            .await;
        assert_eq!(
            crossed, 403,
            "POST {path} with another session's CSRF token"
        );
        if *changes {
            let (read_post, _, body) = app
                .post_form(&path, Some(&read), &with_csrf(&fields, &read.csrf))
                .await;
            assert_eq!(read_post, 403, "POST {path} from a read session");
            assert!(body.contains("read-only"), "{body}");
        }
    }

    // Nothing those refusals touched changed.
    let eve = app.store.reward_by_id(&reward).await.unwrap().unwrap();
    assert_eq!(eve.line.status, RewardStatus::NeedsReview);
    let row = app.store.outbox_rows(None).await.unwrap();
    assert_eq!(
        row.iter().find(|r| r.id == dead).unwrap().status,
        DeliveryStatus::Dead,
        "no replay happened"
    );
    let (still, _, _) = app.page("/console/review", Some(&admin)).await;
    assert_eq!(
        still, 200,
        "the admin session was not signed out by a refused form"
    );
    // Read sessions see no buttons.
    let (_, _, review) = app.page("/console/review", Some(&read)).await;
    assert!(review.contains(&reward) && !review.contains("/approve"));
    let (_, _, deliveries) = app.page("/console/deliveries", Some(&read)).await;
    assert!(!deliveries.contains("Replay selected") && !deliveries.contains("type=\"checkbox\""));
}

/// Mark the heads of `n` records' queued CRM writes dead, as CRM refusals would; their ids.
async fn kill(app: &TestApp, n: i64) -> Vec<i64> {
    let claimed = app
        .store
        .claim_records("test", T0, T0 + 60_000, n, 1)
        .await
        .unwrap();
    for record in &claimed {
        app.store
            .finish_delivery(
                "test",
                record.head_id,
                &DeliveryResult::Dead {
                    row_ids: vec![record.head_id],
                    status: Some(400),
                    error: "PROPERTY_DOESNT_EXIST: referral_market".into(),
                },
                T0,
            )
            .await
            .unwrap();
    }
    claimed.iter().map(|r| r.head_id).collect()
}

/// `base` plus the `csrf` field.
fn with_csrf<'a>(base: &[(&'a str, &'a str)], csrf: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut fields = base.to_vec();
    fields.push(("csrf", csrf));
    fields
}

async fn sign_in_sets_a_strict_http_only_session_cookie_and_sign_out_ends_it(backend: Backend) {
    let Some(app) = console_app(backend).await else {
        return;
    };

    let session = app.sign_in(ADMIN_KEY).await;
    let (program, _, page) = app.page("/console/program", Some(&session)).await;
    let (signed_in_root, to, _) = app.page("/console", Some(&session)).await;
    let (out, location, _) = app
        .post_form(
            "/console/sign-out",
            Some(&session),
            &[("csrf", &session.csrf)],
        )
        .await;
    let (after, back_to, _) = app.page("/console/program", Some(&session)).await;
    let (_, _, sign_in_page) = app.page(&location, None).await;

    let attributes: Vec<String> = session
        .set_cookie
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for wanted in ["httponly", "samesite=strict", "path=/console", "secure"] {
        assert!(
            attributes.iter().any(|a| a == wanted),
            "{wanted} in {attributes:?}"
        );
    }
    assert_eq!(program, 200);
    assert!(page.contains(ADMIN_NAME) && page.contains("admin"));
    assert_eq!((signed_in_root, to.as_str()), (303, "/console/program"));
    assert_eq!((out, location.as_str()), (303, "/console?signed_out=1"));
    assert_eq!(
        (after, back_to.as_str()),
        (303, "/console"),
        "the cookie opens nothing after sign-out"
    );
    assert!(sign_in_page.contains("You are signed out."));
    let stored = app
        .store
        .console_session(
            &crate::support::console::hash(session.cookie.split_once('=').unwrap().1),
            T0,
        )
        .await
        .unwrap();
    assert!(stored.is_none(), "the session row is gone");

    // Signing in from a browser that still holds a session replaces that session.
    let first = app.sign_in(READ_KEY).await;
    let client = crate::support::console::web_client();
    let form = client.get(app.url("/console")).send().await.unwrap();
    let (signin_cookie, _) =
        crate::support::console::cookie_named(&form, "rs_console_signin").unwrap();
    let token = crate::support::console::csrf_in(&form.text().await.unwrap()).unwrap();
    let again = client
        .post(app.url("/console/sign-in"))
        .header("cookie", format!("{signin_cookie}; {}", first.cookie))
        .form(&[("csrf", token.as_str()), ("key", READ_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    let (replaced, _, _) = app.page("/console/program", Some(&first)).await;
    assert_eq!(replaced, 303, "the earlier session ended");
}

async fn sign_in_refuses_a_wrong_key_and_a_form_without_its_token(backend: Backend) {
    let Some(app) = crate::support::spawn_app_with(backend, Default::default(), |s| {
        crate::support::console::configure(s);
        // Served over plain http: the cookie must still work, so it is not Secure.
        s.server.public_base_url = String::new();
    })
    .await
    else {
        return;
    };

    let wrong = sign_in_at(&app.address, "not-a-configured-key").await;
    let (forged, _, forged_page) = app
        .post_form(
            "/console/sign-in",
            None,
            &[("csrf", "made-up"), ("key", ADMIN_KEY)],
        )
        .await;
    let plain = app.sign_in(READ_KEY).await;
    let (wrong_status, _, wrong_page) = {
        let client = crate::support::console::web_client();
        let form = client.get(app.url("/console")).send().await.unwrap();
        let (cookie, _) =
            crate::support::console::cookie_named(&form, "rs_console_signin").unwrap();
        let token = crate::support::console::csrf_in(&form.text().await.unwrap()).unwrap();
        let r = client
            .post(app.url("/console/sign-in"))
            .header("cookie", cookie)
            .form(&[("csrf", token.as_str()), ("key", "not-a-configured-key")])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), (), r.text().await.unwrap())
    };

    assert!(wrong.is_none());
    assert_eq!(wrong_status, 401);
    assert!(wrong_page.contains("not one of admin.keys"));
    assert!(
        !wrong_page.contains("not-a-configured-key"),
        "the key is never echoed"
    );
    assert_eq!(forged, 403, "a sign-in without the form's token");
    assert!(forged_page.contains("expired"));
    assert!(
        !plain.set_cookie.to_ascii_lowercase().contains("secure"),
        "{}",
        plain.set_cookie
    );
    assert!(plain.set_cookie.to_ascii_lowercase().contains("httponly"));
}

async fn sessions_are_shared_by_replicas_and_end_with_their_key_or_their_time(backend: Backend) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    // A second replica on the same database, and a third whose configuration dropped the read key.
    let replica = |drop_read_key: bool| {
        let mut settings = app.settings.clone();
        settings.server.bind = "127.0.0.1:0".into();
        if drop_read_key {
            settings.admin.keys.retain(|k| k.role == "admin");
        }
        let (store, clock) = (app.store.clone(), app.clock.clone());
        async move {
            let replica = Application::build_with(settings, store, clock, false)
                .await
                .unwrap();
            let address = format!("http://127.0.0.1:{}", replica.port());
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(replica.run_until_stopped(stop.clone()));
            (address, stop.drop_guard())
        }
    };
    let (b, _b) = replica(false).await;
    let (c, _c) = replica(true).await;
    let get = |base: String, s: Session| async move {
        crate::support::console::web_client()
            .get(format!("{base}/console/review"))
            .header("cookie", s.cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    let admin = app.sign_in(ADMIN_KEY).await;
    let read = app.sign_in(READ_KEY).await;
    let on_b = get(b.clone(), admin.clone()).await;
    let read_on_c = get(c.clone(), read.clone()).await;
    let read_on_a = get(app.address.clone(), read.clone()).await;
    let signed_out_on_b = crate::support::console::web_client()
        .post(format!("{b}/console/sign-out"))
        .header("cookie", &admin.cookie)
        .form(&[("csrf", admin.csrf.as_str())])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let admin_on_a = get(app.address.clone(), admin.clone()).await;
    app.clock
        .advance(i64::from(app.settings.console.session_minutes) * MINUTE);
    let read_expired = get(app.address.clone(), read.clone()).await;

    assert_eq!(
        on_b, 200,
        "a session opened on one replica works on another"
    );
    assert_eq!(
        read_on_c, 303,
        "a replica without the key refuses its sessions"
    );
    assert_eq!(read_on_a, 200);
    assert_eq!(signed_out_on_b, 303);
    assert_eq!(
        admin_on_a, 303,
        "signed out on one replica is signed out on all"
    );
    assert_eq!(
        read_expired, 303,
        "a session ends console.session_minutes after sign-in"
    );
}

async fn the_program_page_shows_the_funnel_filters_it_and_exports_what_it_shows(backend: Backend) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;
    let s = app.sign_in(READ_KEY).await;

    let (_, _, all) = app.page("/console/program", Some(&s)).await;
    let (_, _, ru) = app.page("/console/program?market=ru", Some(&s)).await;
    let (_, _, intro) = app
        .page(
            "/console/program?source=intro&from=2026-11-01&to=2026-11-30",
            Some(&s),
        )
        .await;
    let (_, _, later) = app.page("/console/program?from=2026-12-01", Some(&s)).await;
    let (bad, _, bad_page) = app
        .page("/console/program?market=%3DSUM(1)", Some(&s))
        .await;
    let csv = crate::support::console::web_client()
        .get(app.url("/console/program.csv?market=RU"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    let disposition = csv.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let csv = csv.text().await.unwrap();

    for expected in [
        "data-market=\"US\" data-source=\"link\" data-kind=\"all\"",
        "data-market=\"RU\" data-source=\"link\" data-kind=\"all\"",
        "data-market=\"US\" data-source=\"all\" data-kind=\"partner\"",
        "Funnel of US",
        "id=\"conversion-chart\"",
        "id=\"heat-map\"",
        "referrers in US → referees in US: 3 referrals, 2 won",
        // 2 of 3 US referrals won, 1 of 1 RU: 3 of 4 overall.
        "<div class=\"value\" id=\"total-conversion\">75.0%</div>",
        "USD 60,000.00",
    ] {
        assert!(all.contains(expected), "{expected} on the Program page");
    }
    assert!(ru.contains("data-market=\"RU\"") && !ru.contains("data-market=\"US\" data-source"));
    assert!(
        ru.contains("<option value=\"RU\" selected>"),
        "the filter shows what is applied"
    );
    assert!(ru.contains("RUB 777,777.00"), "revenue in its own currency");
    assert!(intro.contains("data-source=\"intro\"") && !intro.contains("data-source=\"link\""));
    assert!(intro.contains("<div class=\"value\" id=\"total-referrals\">1</div>"));
    assert!(later.contains("<div class=\"value\" id=\"total-referrals\">0</div>"));
    assert!(later.contains("No referrals match these filters."));
    assert_eq!(bad, 422);
    assert!(bad_page.contains("market must be a market code"));
    assert!(!bad_page.contains("=SUM"), "bad input is not echoed");
    assert!(
        all.contains("href=\"/console/program.csv?\"")
            || all.contains("href=\"/console/program.csv\"")
    );
    assert!(ru.contains("href=\"/console/program.csv?market=RU\""));
    assert_eq!(disposition, "attachment; filename=\"funnel.csv\"");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("market,source,"));
    // The market's row, its one source, its one referrer kind, then the totals.
    assert!(lines[1].starts_with("RU,all,all,"), "{csv}");
    assert!(lines[2].starts_with("RU,link,all,"), "{csv}");
    assert!(lines[3].starts_with("RU,all,partner,"), "{csv}");
    assert!(lines[4].starts_with("all,all,all,"));
    assert_eq!(lines.len(), 5, "exactly what the filtered page shows");
}

/// The cells of the row of `page` whose opening tag carries `attributes`.
fn row_cells(page: &str, attributes: &str) -> Vec<String> {
    let start = page
        .find(attributes)
        .unwrap_or_else(|| panic!("a row with {attributes}"));
    let row = &page[start..];
    let row = &row[..row.find("</tr>").unwrap()];
    row.split("<td")
        .skip(1)
        .map(|cell| {
            let text = &cell[cell.find('>').unwrap() + 1..];
            text[..text.find("</td>").unwrap()].to_string()
        })
        .collect()
}

/// GET `path` with the session's cookie: (status, content-disposition, body).
async fn download(app: &TestApp, path: &str, session: &Session) -> (u16, String, String) {
    let response = crate::support::console::web_client()
        .get(app.url(path))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let disposition = response
        .headers()
        .get("content-disposition")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, disposition, response.text().await.unwrap())
}

async fn the_program_page_compares_referred_with_other_deals_and_scores_referrers(
    backend: Backend,
) {
    let Some(app) = crate::support::spawn_app_with(backend, Default::default(), |s| {
        crate::support::console::configure(s);
        s.channels.market_by_currency = [("USD".to_string(), "US".to_string())].into();
    })
    .await
    else {
        return;
    };
    seed(&app).await;
    // Four non-referred US deals (USD → US), created ten and nine days before T0: 9001 qualified
    // then won 8 days after its creation (5,000 USD); 9002 qualified; 9003 lost; 9004 untouched.
    let d = referral_sync::clock::DAY;
    let mut events = Vec::new();
    let mut n = 900;
    let mut event = |deal: u64, at: i64, kind: &str, extra: serde_json::Value| {
        n += 1;
        events.push(crate::support::senders::hubspot_event(
            n, kind, deal, at, extra,
        ));
    };
    for (deal, created, amount, stages) in [
        (
            9001,
            T0 - 10 * d,
            "5000",
            vec![("qualifiedtobuy", T0 - 9 * d), ("closedwon", T0 - 2 * d)],
        ),
        (
            9002,
            T0 - 10 * d,
            "3000",
            vec![("qualifiedtobuy", T0 - 8 * d)],
        ),
        (9003, T0 - 9 * d, "1000", vec![("closedlost", T0 - 5 * d)]),
        (9004, T0 - 9 * d, "700", vec![]),
    ] {
        event(deal, created, "deal.creation", serde_json::json!({}));
        for (name, value) in [("amount", amount), ("deal_currency_code", "USD")] {
            event(
                deal,
                created,
                "deal.propertyChange",
                serde_json::json!({"propertyName": name, "propertyValue": value}),
            );
        }
        for (stage, at) in stages {
            event(
                deal,
                at,
                "deal.propertyChange",
                serde_json::json!({"propertyName": "dealstage", "propertyValue": stage}),
            );
        }
    }
    app.hubspot(serde_json::Value::Array(events)).await;
    app.process().await;
    app.refresh_baseline().await;
    let s = app.sign_in(READ_KEY).await;

    let (status, _, page) = app.page("/console/program", Some(&s)).await;
    let (_, _, ru) = app.page("/console/program?market=RU", Some(&s)).await;
    let (comparison_status, comparison_disposition, comparison_csv) =
        download(&app, "/console/comparison.csv?market=US", &s).await;
    let (referrers_status, referrers_disposition, referrers_csv) =
        download(&app, "/console/referrers.csv", &s).await;

    assert_eq!(status, 200);
    // Referred, US: eve (won), bo (at demo: qualified), cy (won): 2 of 3 won, all 3 qualified.
    let referral = row_cells(&page, "data-market=\"US\" data-channel=\"referral\"");
    assert_eq!(
        referral[..7],
        ["US", "referral", "3", "3", "2", "66.7%", "66.7%"],
        "{referral:?}"
    );
    // Non-referred, US: 1 of 4 won, 1 of the 2 qualified; 8 days to won; 5,000 USD average.
    let other = row_cells(&page, "data-market=\"US\" data-channel=\"non_referred\"");
    assert_eq!(
        other[..10],
        [
            "US",
            "non_referred",
            "4",
            "2",
            "1",
            "25.0%",
            "50.0%",
            "8.0",
            "8.0",
            "USD 5,000.00"
        ],
        "{other:?}"
    );
    // Referred, RU: gus won.
    let gus = row_cells(&page, "data-market=\"RU\" data-channel=\"referral\"");
    assert_eq!(gus[2..6], ["1", "1", "1", "100.0%"], "{gus:?}");
    // Over every market: 3 of 4 referred deals won against 1 of 4 others.
    let all = row_cells(&page, "data-market=\"all\" data-channel=\"referral\"");
    assert_eq!(all[2..6], ["4", "4", "3", "75.0%"], "{all:?}");
    // Customers: eve and cy (US), gus (RU); none of them has referred anyone.
    let us = row_cells(&page, "class=\"participation-row\" data-market=\"US\"");
    assert_eq!(us, ["US", "2", "0", "0.0%"]);
    let everyone = row_cells(
        &page,
        "class=\"participation-row total\" data-market=\"all\"",
    );
    assert_eq!(everyone, ["all", "3", "0", "0.0%"]);

    // Scorecards, most wins first: ACME-7 (3 referrals, 2 won, 60,000 USD), then BETA-2.
    let acme = row_cells(&page, "class=\"scorecard\" data-code=\"ACME-7\"");
    assert_eq!(
        acme[..9],
        [
            "ACME-7",
            "Acme Partners",
            "US",
            "partner",
            "3",
            "100.0%",
            "2",
            "66.7%",
            "1.0"
        ],
        "{acme:?}"
    );
    assert_eq!(acme[9], "USD 60,000.00");
    let beta = row_cells(&page, "class=\"scorecard\" data-code=\"BETA-2\"");
    assert_eq!(beta[4..8], ["1", "100.0%", "1", "100.0%"], "{beta:?}");
    assert_eq!(beta[9], "RUB 777,777.00");
    assert!(
        page.find("data-code=\"ACME-7\"").unwrap() < page.find("data-code=\"BETA-2\"").unwrap()
    );
    assert!(page.contains("<span id=\"referrer-count\">2</span>"));
    assert!(
        page.contains("href=\"/console/comparison.csv?\"")
            && page.contains("href=\"/console/referrers.csv?\"")
    );

    // The filters apply: RU shows its rows and BETA-2 only.
    assert!(ru.contains("data-market=\"RU\" data-channel=\"referral\""));
    assert!(!ru.contains("data-market=\"US\" data-channel"));
    assert!(!ru.contains("data-code=\"ACME-7\"") && ru.contains("data-code=\"BETA-2\""));
    assert!(ru.contains("href=\"/console/comparison.csv?market=RU\""));
    assert!(ru.contains("href=\"/console/referrers.csv?market=RU\""));

    assert_eq!(comparison_status, 200);
    assert_eq!(
        comparison_disposition,
        "attachment; filename=\"comparison.csv\""
    );
    let lines: Vec<&str> = comparison_csv.lines().collect();
    assert!(
        lines[0].starts_with("market,channel,deals_created,"),
        "{comparison_csv}"
    );
    assert!(
        lines[1].starts_with("US,referral,3,3,2,0.6667,0.6667,"),
        "{comparison_csv}"
    );
    assert!(
        lines[2].starts_with("US,non_referred,4,2,1,0.2500,0.5000,8.0,"),
        "{comparison_csv}"
    );
    assert_eq!(referrers_status, 200);
    assert_eq!(
        referrers_disposition,
        "attachment; filename=\"referrers.csv\""
    );
    let lines: Vec<&str> = referrers_csv.lines().collect();
    assert!(lines[0].starts_with("referrer_code,name,"));
    assert!(
        lines[1].starts_with("ACME-7,Acme Partners,US,partner,3,3,2,"),
        "{referrers_csv}"
    );
    assert!(
        lines[2].starts_with("BETA-2,Beta Consulting,RU,partner,1,1,1,"),
        "{referrers_csv}"
    );
    assert_eq!(lines.len(), 3);
}

async fn the_review_queue_explains_each_reward_and_decides_with_the_apis_rules_and_audit(
    backend: Backend,
) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;
    let reward = reward_of(&app, EVE_DEAL).await;
    let admin = app.sign_in(ADMIN_KEY).await;
    let reject = format!("/console/rewards/{reward}/reject");
    let approve = format!("/console/rewards/{reward}/approve");

    let (_, _, queue) = app.page("/console/review", Some(&admin)).await;
    let (no_reason, _, refused) = app
        .post_form(
            &reject,
            Some(&admin),
            &[("csrf", &admin.csrf), ("reason", "  ")],
        )
        .await;
    let after_refusal = app.store.reward_by_id(&reward).await.unwrap().unwrap();
    let writes_before = app.store.outbox_rows(None).await.unwrap().len();
    let (approved, to, _) = app
        .post_form(
            &approve,
            Some(&admin),
            &[("csrf", &admin.csrf), ("reason", "intro verified by phone")],
        )
        .await;
    let (_, _, done) = app.page(&to, Some(&admin)).await;
    let (again, _, conflict) = app
        .post_form(&approve, Some(&admin), &[("csrf", &admin.csrf)])
        .await;
    let (unknown, _, _) = app
        .post_form(
            "/console/rewards/nope/approve",
            Some(&admin),
            &[("csrf", &admin.csrf)],
        )
        .await;

    assert!(queue.contains(&format!("id=\"reward-{reward}\"")));
    assert!(
        queue.contains("Self-referral: the referee has the referrer&#39;s email")
            || queue.contains("Self-referral: the referee has the referrer&#x27;s email"),
        "the flag in words"
    );
    assert!(
        queue.contains("fraud flag self_referral blocks automatic approval"),
        "why it waits"
    );
    assert!(
        queue.contains("40000 USD × 7.5 / 100 = 3000"),
        "the calculation"
    );
    assert!(queue.contains("USD 3,000.00"));
    assert_eq!(no_reason, 422);
    assert!(refused.contains("reason is required to reject a reward"));
    assert_eq!(after_refusal.line.status, RewardStatus::NeedsReview);
    assert_eq!(
        (approved, to.as_str()),
        (303, "/console/review?done=approved")
    );
    assert!(
        done.contains("The reward was approved.") && !done.contains(&format!("reward-{reward}"))
    );
    assert_eq!(again, 409);
    assert!(conflict.contains("reward is approved"));
    assert_eq!(unknown, 404);
    let decided = app.store.reward_by_id(&reward).await.unwrap().unwrap();
    assert_eq!(
        (decided.line.status.as_str(), decided.decided_by.as_deref()),
        ("approved", Some(ADMIN_NAME))
    );
    let audit = app.store.audit_entries("reward", &reward).await.unwrap();
    let entry = audit
        .iter()
        .find(|a| a.record.action == "reward_approved")
        .unwrap();
    assert_eq!(
        (entry.record.actor.as_str(), entry.record.reason.as_deref()),
        (ADMIN_NAME, Some("intro verified by phone"))
    );
    assert!(
        app.store.outbox_rows(None).await.unwrap().len() > writes_before,
        "the approval queued its CRM writes, as the API's does"
    );
}

async fn the_deliveries_page_shows_the_crms_error_and_replays_the_selected_dead_writes(
    backend: Backend,
) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;
    let dead = kill(&app, 2).await;
    let (first, second) = (dead[0], dead[1]);
    let admin = app.sign_in(ADMIN_KEY).await;

    let (_, _, before) = app.page("/console/deliveries", Some(&admin)).await;
    let (empty, _, _) = app
        .post_form(
            "/console/deliveries/replay",
            Some(&admin),
            &[("csrf", &admin.csrf)],
        )
        .await;
    let (bad_id, _, _) = app
        .post_form(
            "/console/deliveries/replay",
            Some(&admin),
            &[("csrf", &admin.csrf), ("id", "x")],
        )
        .await;
    let (replayed, to, _) = app
        .post_form(
            "/console/deliveries/replay",
            Some(&admin),
            &[("csrf", &admin.csrf), ("id", &first.to_string())],
        )
        .await;
    let (_, _, after) = app.page(&to, Some(&admin)).await;

    assert!(before.contains("PROPERTY_DOESNT_EXIST: referral_market"));
    assert!(before.contains(&format!("name=\"id\" value=\"{first}\"")));
    assert!(before.contains("<div class=\"value\" id=\"dead-count\">2</div>"));
    assert!(before.contains("custom_stage_77"), "the parked event");
    assert!(before.contains("<code class=\"config-key\">hubspot.pipelines</code>"));
    assert_eq!(
        empty, 422,
        "an empty selection replays nothing (not everything)"
    );
    assert_eq!(bad_id, 422);
    assert_eq!(replayed, 303);
    assert!(to.starts_with("/console/deliveries?replayed="), "{to}");
    assert!(after.contains("dead deliver(y/ies) re-queued."));
    let rows = app.store.outbox_rows(None).await.unwrap();
    let status = |id: i64| rows.iter().find(|r| r.id == id).unwrap().status;
    // Replayed: pending again, or coalesced when later writes already carry all its values.
    assert_ne!(status(first), DeliveryStatus::Dead);
    assert_eq!(
        status(second),
        DeliveryStatus::Dead,
        "only the selected write is replayed"
    );

    let (requeued, to, _) = app
        .post_form(
            "/console/inbox/requeue",
            Some(&admin),
            &[("csrf", &admin.csrf)],
        )
        .await;
    assert_eq!(
        (requeued, to.as_str()),
        (303, "/console/deliveries?requeued=1")
    );
    let (unmapped, _) = app.store.parked_inbox_counts().await.unwrap();
    assert_eq!(unmapped, 0, "the parked event is back in the queue");
}

async fn a_referrals_timeline_shows_refused_claims_crm_links_stages_and_tamper_restores(
    backend: Backend,
) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;
    // A rep overwrites cy's referral source on the deal: the service restores it.
    app.hubspot(serde_json::json!([crate::support::senders::deal_property(
        900,
        crate::support::console::CY_DEAL,
        "referral_source",
        "rep typed this",
        T0
    )]))
    .await;
    app.process().await;
    let cy = app
        .store
        .referral_by_email("cy@fabrikam.com")
        .await
        .unwrap()
        .unwrap()
        .first_touch
        .id;
    let s = app.sign_in(READ_KEY).await;

    let (_, _, list) = app
        .page("/console/referrals?referrer=ACME-7", Some(&s))
        .await;
    let (_, _, timeline) = app
        .page(&format!("/console/referrals/{cy}"), Some(&s))
        .await;
    let (missing, _, _) = app.page("/console/referrals/nope", Some(&s)).await;

    assert!(list.contains(&format!("href=\"/console/referrals/{cy}\"")));
    assert!(list.contains("eve@acme.com") && !list.contains("gus@initech.ru"));
    for expected in [
        "First touch recorded",
        "Later claim refused: the first touch is kept",
        "BETA-2 via link in US",
        "href=\"https://app.hubspot.com/contacts/62515/record/0-3/5550023\"",
        "href=\"https://app.hubspot.com/contacts/62515/record/0-1/4440013\"",
        "Deal 5550023 at stage won",
        "Tamper restored",
        "Reward created",
        "USD 1,500.00",
    ] {
        assert!(timeline.contains(expected), "{expected} in the timeline");
    }
    let refused = timeline.find("Later claim refused").unwrap();
    let first = timeline.find("First touch recorded").unwrap();
    assert!(first < refused, "in time order");
    assert_eq!(missing, 404);
}

async fn the_health_page_shows_backlogs_and_the_partners_page_links_for_admins_only(
    backend: Backend,
) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;
    // Two events wait, received an hour ago.
    app.signup(serde_json::json!({"id": "w1", "type": "signup.created", "occurred_at": crate::support::senders::iso(T0),
        "data": {"email": "w1@x.io", "referral_code": "ACME-7", "source": "link", "market": "US"}}))
        .await;
    app.signup(serde_json::json!({"id": "w2", "type": "signup.created", "occurred_at": crate::support::senders::iso(T0),
        "data": {"email": "w2@x.io", "referral_code": "ACME-7", "source": "link", "market": "US"}}))
        .await;
    app.clock.advance(60 * MINUTE);
    let admin = app.sign_in(ADMIN_KEY).await;
    let read = app.sign_in(READ_KEY).await;

    let (_, _, health) = app.page("/console/health", Some(&read)).await;
    let (_, _, partners_admin) = app.page("/console/partners", Some(&admin)).await;
    let (_, _, partners_read) = app.page("/console/partners", Some(&read)).await;

    assert!(
        health.contains("id=\"inbox-pending\"><div class=\"value\">2</div>"),
        "{health}"
    );
    assert!(health.contains("id=\"processing-lag\"><div class=\"value\">1 h 00 min</div>"));
    assert!(health.contains("id=\"inbox-unmapped\"><div class=\"value\">1</div>"));
    assert!(health.contains("id=\"crm-429\""));
    let outbox = app.store.outbox_backlog(app.clock_now()).await.unwrap().0;
    assert!(health.contains(&format!(
        "id=\"outbox-depth\"><div class=\"value\">{outbox}</div>"
    )));
    assert!(partners_admin.contains("data-code=\"ACME-7\""));
    let link = partners_admin
        .split("class=\"portal-link\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&");
    assert!(
        link.starts_with("https://hooks.example.com/partners/"),
        "{link}"
    );
    assert!(
        !partners_read.contains("portal-link") && partners_read.contains("admin sessions only")
    );
    // The link the console shows opens that partner's page.
    let path = link.trim_start_matches("https://hooks.example.com");
    let (status, _, page) = app.page(path, None).await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"partner-code\">"));
}

async fn pages_escape_what_came_from_outside_and_carry_their_security_headers(backend: Backend) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    let hostile = "<script>alert(1)</script>";
    app.signup(serde_json::json!({"id": "x1", "type": "partner.joined", "occurred_at": crate::support::senders::iso(T0),
        "data": {"code": "EVIL-1", "name": hostile, "market": "US"}}))
        .await;
    app.signup(serde_json::json!({"id": "x2", "type": "signup.created", "occurred_at": crate::support::senders::iso(T0),
        "data": {"email": "mallory@x.io", "name": "\"><img src=x onerror=alert(2)>", "referral_code": "EVIL-1",
                 "source": "link", "market": "US"}}))
        .await;
    app.process().await;
    let s = app.sign_in(ADMIN_KEY).await;

    let (_, _, partners) = app.page("/console/partners", Some(&s)).await;
    let (_, _, portal) = app.page(&app.portal_path("EVIL-1", 30), None).await;
    let headers = |path: String| {
        let cookie = s.cookie.clone();
        let url = app.url(&path);
        async move {
            crate::support::console::web_client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .headers()
                .clone()
        }
    };

    for page in [&partners, &portal] {
        assert!(
            page.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                || page.contains("&lt;script&gt;"),
            "escaped"
        );
        assert!(!page.contains(hostile) && !page.contains("<img src=x"));
    }
    for path in [
        "/console".to_string(),
        "/console/program".to_string(),
        app.portal_path("EVIL-1", 30),
        "/partners/EVIL-1?token=forged".to_string(),
    ] {
        let h = headers(path.clone()).await;
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            get("content-security-policy").starts_with("default-src 'none'; style-src 'self'"),
            "{path}"
        );
        assert_eq!(get("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(get("cache-control"), "no-store", "{path}");
        assert_eq!(get("x-frame-options"), "DENY", "{path}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
    }
}

//! The admin API (SPEC §6): every route refuses requests without a valid key (401) and admin
//! actions refuse read keys (403); each resource answers success, 404 and 422 as documented; the
//! OpenAPI document lists exactly the routes served. On both backends.

use std::collections::BTreeSet;

use referral_sync::clock::DAY;
use referral_sync::config::AdminKey;
use referral_sync::domain::Crm;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::support::senders::{example_settings, iso};
use crate::support::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

pub(crate) const ADMIN_KEY: &str = "admin-test-key-0123456789";
pub(crate) const READ_KEY: &str = "read-test-key-0123456789";

/// Every admin route: (method, path template, needs admin).
pub const ROUTES: &[(&str, &str, bool)] = &[
    ("GET", "/api/v1/referrers", false),
    ("GET", "/api/v1/referrers/{code}", false),
    ("GET", "/api/v1/referrals", false),
    ("GET", "/api/v1/referrals/{id}", false),
    ("POST", "/api/v1/referrals/{id}/attribution", true),
    ("GET", "/api/v1/rewards", false),
    ("POST", "/api/v1/rewards/{id}/approve", true),
    ("POST", "/api/v1/rewards/{id}/reject", true),
    ("POST", "/api/v1/rewards/{id}/paid", true),
    ("GET", "/api/v1/payouts", false),
    ("POST", "/api/v1/payouts/{id}/paid", true),
    ("GET", "/api/v1/deliveries", false),
    ("POST", "/api/v1/deliveries/replay", true),
    ("GET", "/api/v1/reports/funnel", false),
    ("GET", "/api/v1/reports/referrers", false),
];

both_backends!(
    every_route_needs_a_key_and_admin_actions_need_an_admin_key,
    referrers_are_listed_paged_and_found_by_code,
    referrals_are_filtered_and_show_their_whole_story,
    an_attribution_override_needs_an_admin_and_a_reason,
    rewards_are_listed_and_decided,
    dead_deliveries_are_listed_and_replayed,
    a_replay_body_that_is_not_understood_requeues_nothing,
    a_decision_body_that_is_not_understood_is_refused_not_ignored,
    the_bearer_scheme_is_case_insensitive,
    an_override_to_a_market_or_source_outside_its_rule_is_refused,
    funnel_csv_cells_a_spreadsheet_would_run_are_neutralised,
    the_openapi_document_lists_exactly_the_served_routes,
    the_funnel_answers_json_or_csv_and_refuses_bad_filters,
    the_referrer_scorecards_answer_json_or_csv_and_refuse_a_bad_kind,
);

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

async fn app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, SpawnOptions::default(), |s| {
        crate::support::senders::configure(s);
        s.programs = example_settings().programs;
        with_keys(s);
    })
    .await
}

/// An admin key (named ops@acme.com) and a read key.
pub(crate) fn with_keys(s: &mut referral_sync::config::Settings) {
    s.admin.keys = vec![
        AdminKey {
            hash: hash(ADMIN_KEY),
            role: "admin".into(),
            name: Some("ops@acme.com".into()),
        },
        AdminKey {
            hash: hash(READ_KEY),
            role: "read".into(),
            name: None,
        },
    ];
}

pub(crate) async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.client.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        app.url(path),
    );
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Two US referrals from ACME-7 (one won, with a flagged reward) and one RU referral.
async fn seed(app: &TestApp) -> (String, String) {
    app.signup(json!({"id": "p", "type": "partner.joined", "occurred_at": iso(T0 - DAY),
        "data": {"code": "ACME-7", "name": "Acme Partners", "company_domain": "acme.com", "market": "US"}}))
        .await;
    for (id, email, source, market) in [
        ("s1", "eve@acme.com", "link", "US"),
        ("s2", "bo@contoso.com", "intro", "US"),
        ("s3", "gus@initech.ru", "code", "RU"),
    ] {
        app.signup(json!({"id": id, "type": "signup.created", "occurred_at": iso(T0),
            "data": {"email": email, "referral_code": "ACME-7", "source": source, "market": market}}))
            .await;
    }
    let ev = |n: u64, kind: &str, obj: u64, extra: Value| {
        let mut e = json!({"eventId": n, "subscriptionId": 1, "portalId": 62515, "occurredAt": T0 + DAY, "subscriptionType": kind, "objectId": obj});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    app.hubspot(json!([
        ev(
            1,
            "contact.propertyChange",
            11,
            json!({"propertyName": "email", "propertyValue": "eve@acme.com"})
        ),
        ev(
            2,
            "deal.associationChange",
            21,
            json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": 21, "toObjectId": 11})
        ),
        ev(
            3,
            "deal.propertyChange",
            21,
            json!({"propertyName": "amount", "propertyValue": "40000"})
        ),
        ev(
            4,
            "deal.propertyChange",
            21,
            json!({"propertyName": "dealstage", "propertyValue": "closedwon"})
        ),
    ]))
    .await;
    app.process().await;
    let referral = app
        .store
        .referral_by_email("eve@acme.com")
        .await
        .unwrap()
        .unwrap()
        .first_touch
        .id;
    let reward = app
        .store
        .rewards_of_deal(Crm::HubSpot, "21")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.line.beneficiary.as_str() == "referrer")
        .unwrap()
        .id;
    (referral, reward)
}

async fn every_route_needs_a_key_and_admin_actions_need_an_admin_key(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    for (method, template, admin) in ROUTES {
        let path = template.replace("{code}", "ACME-7").replace("{id}", "x");
        let (none, body) = call(&app, method, &path, None, None).await;
        let (wrong, _) = call(&app, method, &path, Some("not-a-key"), None).await;
        assert_eq!(none, 401, "{method} {path} without a key");
        assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        assert_eq!(wrong, 401, "{method} {path} with a wrong key");
        if *admin {
            let (read, body) = call(
                &app,
                method,
                &path,
                Some(READ_KEY),
                Some(json!({"reason": "x"})),
            )
            .await;
            assert_eq!(read, 403, "{method} {path} with a read key");
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
}

async fn referrers_are_listed_paged_and_found_by_code(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    seed(&app).await;
    for code in ["ZED-1", "BEE-2"] {
        app.signup(json!({"id": code, "type": "partner.invited", "occurred_at": iso(T0), "data": {"code": code, "email": format!("{code}@x.io")}})).await;
    }
    app.process().await;

    let (s, first) = call(
        &app,
        "GET",
        "/api/v1/referrers?limit=2",
        Some(READ_KEY),
        None,
    )
    .await;
    let next = first["next"].as_str().unwrap().to_string();
    let (_, second) = call(
        &app,
        "GET",
        &format!("/api/v1/referrers?limit=2&after={next}"),
        Some(READ_KEY),
        None,
    )
    .await;
    let (one, acme) = call(
        &app,
        "GET",
        "/api/v1/referrers/ACME-7",
        Some(READ_KEY),
        None,
    )
    .await;
    let (missing, _) = call(&app, "GET", "/api/v1/referrers/NOPE", Some(READ_KEY), None).await;
    let (bad, err) = call(
        &app,
        "GET",
        "/api/v1/referrers?limit=0",
        Some(READ_KEY),
        None,
    )
    .await;

    assert_eq!(s, 200);
    let codes: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["ACME-7", "BEE-2", "ZED-1"],
        "keyset pages in code order"
    );
    assert!(second["next"].is_null());
    assert_eq!(
        (
            one,
            acme["referrer"]["name"].as_str(),
            acme["referrals"].as_i64(),
            acme["successful_referrals"].as_i64()
        ),
        (200, Some("Acme Partners"), Some(3), Some(1))
    );
    assert_eq!(missing, 404);
    assert_eq!(bad, 422);
    assert!(err["error"]["message"].as_str().unwrap().contains("limit"));
}

async fn referrals_are_filtered_and_show_their_whole_story(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let (referral, _) = seed(&app).await;

    let (s, us) = call(
        &app,
        "GET",
        "/api/v1/referrals?market=us",
        Some(READ_KEY),
        None,
    )
    .await;
    let (_, intro) = call(
        &app,
        "GET",
        "/api/v1/referrals?source=intro",
        Some(READ_KEY),
        None,
    )
    .await;
    let (_, later) = call(
        &app,
        "GET",
        &format!("/api/v1/referrals?since={}", iso(T0 + DAY)),
        Some(READ_KEY),
        None,
    )
    .await;
    let (one, story) = call(
        &app,
        "GET",
        &format!("/api/v1/referrals/{referral}"),
        Some(READ_KEY),
        None,
    )
    .await;
    let (missing, _) = call(
        &app,
        "GET",
        "/api/v1/referrals/00000000-0000-0000-0000-000000000000",
        Some(READ_KEY),
        None,
    )
    .await;
    let (bad_source, _) = call(
        &app,
        "GET",
        "/api/v1/referrals?source=tv",
        Some(READ_KEY),
        None,
    )
    .await;
    let (bad_since, err) = call(
        &app,
        "GET",
        "/api/v1/referrals?since=yesterday",
        Some(READ_KEY),
        None,
    )
    .await;

    assert_eq!(s, 200);
    assert_eq!(us["items"].as_array().unwrap().len(), 2);
    assert_eq!(intro["items"][0]["email"], "bo@contoso.com");
    assert_eq!(later["items"].as_array().unwrap().len(), 0);
    assert_eq!(one, 200);
    assert_eq!(story["referral"]["referrer_code"], "ACME-7");
    assert_eq!(story["touches"][0]["outcome"], "first_touch");
    assert_eq!(
        story["crm_records"].as_array().unwrap().len(),
        2,
        "contact and deal"
    );
    assert_eq!(story["stage_history"][0]["stage"], "won");
    assert_eq!(story["rewards"].as_array().unwrap().len(), 2);
    assert!(story["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "reward_created"));
    assert_eq!(missing, 404);
    assert_eq!(bad_source, 422);
    assert_eq!(bad_since, 422);
    assert!(err["error"]["message"].as_str().unwrap().contains("since"));
}

async fn an_attribution_override_needs_an_admin_and_a_reason(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let (referral, _) = seed(&app).await;
    let path = format!("/api/v1/referrals/{referral}/attribution");

    let (no_reason, _) = call(
        &app,
        "POST",
        &path,
        Some(ADMIN_KEY),
        Some(json!({"source": "intro", "reason": " "})),
    )
    .await;
    let (missing_field, err) = call(
        &app,
        "POST",
        &path,
        Some(ADMIN_KEY),
        Some(json!({"source": "intro"})),
    )
    .await;
    let (bad_json, _) = {
        let r = app
            .client
            .post(app.url(&path))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    let (unknown, _) = call(
        &app,
        "POST",
        "/api/v1/referrals/nope/attribution",
        Some(ADMIN_KEY),
        Some(json!({"source": "intro", "reason": "r"})),
    )
    .await;
    let (ok, body) = call(
        &app,
        "POST",
        &path,
        Some(ADMIN_KEY),
        Some(json!({"source": "intro", "reason": "partner proved the intro"})),
    )
    .await;

    assert_eq!(no_reason, 422);
    assert_eq!(missing_field, 422);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("reason"),
        "{err}"
    );
    assert_eq!(bad_json, 400);
    assert_eq!(unknown, 404);
    assert_eq!(ok, 200);
    assert_eq!(body["referral"]["source"], "intro");
    let audit = app
        .store
        .audit_entries("referral", &referral)
        .await
        .unwrap();
    assert_eq!(
        (
            audit[0].record.actor.as_str(),
            audit[0].record.reason.as_deref()
        ),
        ("ops@acme.com", Some("partner proved the intro"))
    );
}

async fn rewards_are_listed_and_decided(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let (_, reward) = seed(&app).await;

    let (s, review) = call(
        &app,
        "GET",
        "/api/v1/rewards?status=needs_review",
        Some(READ_KEY),
        None,
    )
    .await;
    let (bad, _) = call(
        &app,
        "GET",
        "/api/v1/rewards?status=maybe",
        Some(READ_KEY),
        None,
    )
    .await;
    let (premature, _) = call(
        &app,
        "POST",
        &format!("/api/v1/rewards/{reward}/paid"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    let (no_reason, _) = call(
        &app,
        "POST",
        &format!("/api/v1/rewards/{reward}/reject"),
        Some(ADMIN_KEY),
        Some(json!({})),
    )
    .await;
    let (unknown, _) = call(
        &app,
        "POST",
        "/api/v1/rewards/nope/approve",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    let (approved, body) = call(
        &app,
        "POST",
        &format!("/api/v1/rewards/{reward}/approve"),
        Some(ADMIN_KEY),
        Some(json!({"reason": "verified"})),
    )
    .await;
    let (paid, paid_body) = call(
        &app,
        "POST",
        &format!("/api/v1/rewards/{reward}/paid"),
        Some(ADMIN_KEY),
        None,
    )
    .await;

    assert_eq!(s, 200);
    assert!(
        review["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == reward.as_str()),
        "the self-referral waits for review"
    );
    assert_eq!(bad, 422);
    assert_eq!(premature, 409, "paid needs approved first");
    assert_eq!(no_reason, 422);
    assert_eq!(unknown, 404);
    assert_eq!(
        (
            approved,
            body["reward"]["status"].as_str(),
            body["reward"]["decided_by"].as_str()
        ),
        (200, Some("approved"), Some("ops@acme.com"))
    );
    assert_eq!(
        (paid, paid_body["reward"]["status"].as_str()),
        (200, Some("paid"))
    );
}

async fn dead_deliveries_are_listed_and_replayed(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    seed(&app).await;
    // Without CRM credentials nothing is sent; mark one write dead as a CRM refusal would.
    let row = app.store.outbox_rows(None).await.unwrap()[0].clone();
    let claimed = app
        .store
        .claim_records("test", T0, T0 + 60_000, 1, 10)
        .await
        .unwrap();
    app.store
        .finish_delivery(
            "test",
            claimed[0].head_id,
            &referral_sync::store::DeliveryResult::Dead {
                row_ids: vec![claimed[0].head_id],
                status: Some(400),
                error: "PROPERTY_DOESNT_EXIST".into(),
            },
            T0,
        )
        .await
        .unwrap();

    let (s, dead) = call(
        &app,
        "GET",
        "/api/v1/deliveries?status=dead",
        Some(READ_KEY),
        None,
    )
    .await;
    let (bad, _) = call(
        &app,
        "GET",
        "/api/v1/deliveries?status=lost",
        Some(READ_KEY),
        None,
    )
    .await;
    let (bad_since, _) = call(
        &app,
        "POST",
        "/api/v1/deliveries/replay",
        Some(ADMIN_KEY),
        Some(json!({"since": "soon"})),
    )
    .await;
    let (replayed, body) = call(
        &app,
        "POST",
        "/api/v1/deliveries/replay",
        Some(ADMIN_KEY),
        Some(json!({"ids": [claimed[0].head_id]})),
    )
    .await;

    assert_eq!(s, 200);
    assert_eq!(dead["items"][0]["last_error"], "PROPERTY_DOESNT_EXIST");
    assert!(row.id > 0);
    assert_eq!(bad, 422);
    assert_eq!(bad_since, 422);
    assert_eq!((replayed, body["requeued"].as_u64()), (200, Some(1)));
    let (_, after) = call(
        &app,
        "GET",
        "/api/v1/deliveries?status=dead",
        Some(READ_KEY),
        None,
    )
    .await;
    assert_eq!(after["items"].as_array().unwrap().len(), 0);
}

/// Marks up to `n` pending CRM writes dead, as CRM refusals would; returns their outbox ids.
async fn kill_deliveries(app: &TestApp, n: i64) -> Vec<i64> {
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
                &referral_sync::store::DeliveryResult::Dead {
                    row_ids: vec![record.head_id],
                    status: Some(400),
                    error: "PROPERTY_DOESNT_EXIST".into(),
                },
                T0,
            )
            .await
            .unwrap();
    }
    claimed.iter().map(|r| r.head_id).collect()
}

async fn dead_count(app: &TestApp) -> usize {
    let (_, dead) = call(
        app,
        "GET",
        "/api/v1/deliveries?status=dead",
        Some(READ_KEY),
        None,
    )
    .await;
    dead["items"].as_array().unwrap().len()
}

async fn a_replay_body_that_is_not_understood_requeues_nothing(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    seed(&app).await;
    let ids = kill_deliveries(&app, 10).await;
    let dead = ids.len();
    assert!(dead >= 2, "the seed leaves at least two CRM writes");
    let replay = |content_type: Option<&str>, body: String| {
        let mut req = app
            .client
            .post(app.url("/api/v1/deliveries/replay"))
            .bearer_auth(ADMIN_KEY)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (
                status,
                body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
    };
    let json = Some("application/json");
    let one = format!("{{\"ids\":[{}]}}", ids[0]);

    for (case, (status, message), expected, names) in [
        (
            "ids as strings",
            replay(json, r#"{"ids":["1"]}"#.into()).await,
            422,
            "expected i64",
        ),
        (
            "a form body (curl -d)",
            replay(Some("application/x-www-form-urlencoded"), one.clone()).await,
            400,
            "Content-Type",
        ),
        (
            "no content type",
            replay(None, one.clone()).await,
            400,
            "Content-Type",
        ),
        (
            "over the limit",
            replay(json, format!("{{\"ids\":[{}]}}", "1,".repeat(40_000) + "1")).await,
            413,
            "limit",
        ),
        ("no body", replay(json, String::new()).await, 400, "JSON"),
        (
            "an empty object",
            replay(json, "{}".into()).await,
            422,
            "all: true",
        ),
        (
            "a misspelt key",
            replay(json, r#"{"id":[1]}"#.into()).await,
            422,
            "id",
        ),
        (
            "all with ids",
            replay(json, format!("{{\"all\":true,\"ids\":[{}]}}", ids[0])).await,
            422,
            "all",
        ),
    ] {
        assert_eq!(status, expected, "{case}: {message}");
        assert!(message.contains(names), "{case}: {message}");
    }
    assert_eq!(dead_count(&app).await, dead, "nothing was re-queued");

    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/deliveries/replay",
        Some(ADMIN_KEY),
        Some(serde_json::from_str(&one).unwrap()),
    )
    .await;
    assert_eq!((status, body["requeued"].as_u64()), (200, Some(1)));
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/deliveries/replay",
        Some(ADMIN_KEY),
        Some(json!({"all": true})),
    )
    .await;
    assert_eq!(
        (status, body["requeued"].as_u64()),
        (200, Some(dead as u64 - 1)),
        "all, when asked for"
    );
    assert_eq!(dead_count(&app).await, 0);
}

async fn a_decision_body_that_is_not_understood_is_refused_not_ignored(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let (_, reward) = seed(&app).await;
    let path = format!("/api/v1/rewards/{reward}/reject");
    let reject = |content_type: &'static str, body: &'static str| {
        let req = app
            .client
            .post(app.url(&path))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", content_type)
            .body(body);
        async move { req.send().await.unwrap().status().as_u16() }
    };

    let as_form = reject(
        "application/x-www-form-urlencoded",
        r#"{"reason":"duplicate"}"#,
    )
    .await;
    let misspelt = reject("application/json", r#"{"reasn":"duplicate"}"#).await;
    let not_json = reject("application/json", "reason=duplicate").await;

    assert_eq!(as_form, 400, "a reason sent as a form is not dropped");
    assert_eq!(misspelt, 422);
    assert_eq!(not_json, 400);
    let (_, rewards) = call(
        &app,
        "GET",
        "/api/v1/rewards?status=rejected",
        Some(READ_KEY),
        None,
    )
    .await;
    assert!(
        rewards["items"].as_array().unwrap().is_empty(),
        "no decision was taken without its reason"
    );
    let (status, _) = call(
        &app,
        "POST",
        &path,
        Some(ADMIN_KEY),
        Some(json!({"reason": "duplicate"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, story) = call(
        &app,
        "GET",
        "/api/v1/rewards?status=rejected",
        Some(READ_KEY),
        None,
    )
    .await;
    assert_eq!(story["items"].as_array().unwrap().len(), 1);
}

async fn the_openapi_document_lists_exactly_the_served_routes(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };

    let (s, doc) = call(&app, "GET", "/openapi.json", None, None).await;

    assert_eq!(s, 200);
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["security"].is_array(),
                "{method} {path} declares its key"
            );
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} documents 401"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
}

async fn the_funnel_answers_json_or_csv_and_refuses_bad_filters(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    seed(&app).await;

    let (s, json) = call(
        &app,
        "GET",
        "/api/v1/reports/funnel?market=us",
        Some(READ_KEY),
        None,
    )
    .await;
    let csv = app
        .client
        .get(app.url("/api/v1/reports/funnel?format=csv"))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .unwrap();
    let (bad_format, _) = call(
        &app,
        "GET",
        "/api/v1/reports/funnel?format=xml",
        Some(READ_KEY),
        None,
    )
    .await;
    let (bad_from, err) = call(
        &app,
        "GET",
        "/api/v1/reports/funnel?from=last-week",
        Some(READ_KEY),
        None,
    )
    .await;

    assert_eq!(s, 200);
    // US: eve (link, won) and bo (intro); gus is RU and filtered out.
    assert_eq!(json["totals"]["referrals"], 2);
    assert_eq!(json["totals"]["won"], 1);
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(csv.text().await.unwrap().contains("US"));
    assert_eq!(bad_format, 422);
    assert_eq!(bad_from, 422);
    assert!(err["error"]["message"].as_str().unwrap().contains("from"));
}

async fn the_referrer_scorecards_answer_json_or_csv_and_refuse_a_bad_kind(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    seed(&app).await;

    let (s, json) = call(
        &app,
        "GET",
        "/api/v1/reports/referrers?market=us",
        Some(READ_KEY),
        None,
    )
    .await;
    let csv = app
        .client
        .get(app.url("/api/v1/reports/referrers?format=csv&kind=partner"))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .unwrap();
    let (customers, none) = call(
        &app,
        "GET",
        "/api/v1/reports/referrers?kind=customer",
        Some(READ_KEY),
        None,
    )
    .await;
    let (bad_kind, err) = call(
        &app,
        "GET",
        "/api/v1/reports/referrers?kind=vendor",
        Some(READ_KEY),
        None,
    )
    .await;
    let (anonymous, _) = call(&app, "GET", "/api/v1/reports/referrers", None, None).await;

    assert_eq!(s, 200);
    // ACME-7's US referrals: eve (link, won with a 40000 deal) and bo (intro).
    let acme = &json["referrers"][0];
    assert_eq!(acme["referrer_code"], "ACME-7");
    assert_eq!(acme["name"], "Acme Partners");
    assert_eq!(acme["referrer_kind"], "partner");
    assert_eq!(
        (acme["referrals"].clone(), acme["won"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(acme["win_rate"], "0.5000");
    assert_eq!(
        acme["revenue"]["unknown"], "40000.00",
        "the deal has no currency"
    );
    assert_eq!(json["referrers"].as_array().unwrap().len(), 1);
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("ACME-7,Acme Partners,US,partner,3,"),
        "{csv}"
    );
    assert_eq!(customers, 200);
    assert_eq!(none["referrers"], json!([]), "ACME-7 is a partner");
    assert_eq!(bad_kind, 422);
    assert!(err["error"]["message"].as_str().unwrap().contains("kind"));
    assert_eq!(anonymous, 401);
}

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = app
            .client
            .get(app.url("/api/v1/referrers"))
            .header("authorization", format!("{scheme} {READ_KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    let other = app
        .client
        .get(app.url("/api/v1/referrers"))
        .header("authorization", format!("Basic {READ_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401, "another scheme is not a bearer key");
}

async fn an_override_to_a_market_or_source_outside_its_rule_is_refused(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let (referral, _) = seed(&app).await;
    let path = format!("/api/v1/referrals/{referral}/attribution");

    for (change, field) in [
        (json!({"market": "=HYPERLINK(\"http://x\")"}), "market"),
        (json!({"market": "+1+1"}), "market"),
        (json!({"market": "@SUM(1+1)"}), "market"),
        (json!({"source": "-2+3"}), "source"),
    ] {
        let mut body = change.clone();
        body["reason"] = json!("fix");
        let (status, err) = call(&app, "POST", &path, Some(ADMIN_KEY), Some(body)).await;
        assert_eq!(status, 422, "{change}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{change}: {message}");
    }
    let (status, body) = call(
        &app,
        "POST",
        &path,
        Some(ADMIN_KEY),
        Some(json!({"market": " eu-west ", "reason": "moved"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["referral"]["market"], "EU-WEST", "normalised once");
}

async fn funnel_csv_cells_a_spreadsheet_would_run_are_neutralised(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    // Values stored before markets were validated (or by hand in the database).
    let formulas = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(1+1)"];
    let mut tx = app.store.begin().await.unwrap();
    for (i, formula) in formulas.iter().enumerate() {
        let attribution = referral_sync::store::Attribution {
            referrer_code: None,
            source: Some(formula.to_string()),
            market: Some(formula.to_string()),
            first_touch_at: T0,
        };
        tx.insert_referral(&format!("r{i}@example.com"), &attribution, T0)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let response = app
        .client
        .get(app.url("/api/v1/reports/funnel?format=csv"))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let csv = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let cells: Vec<String> = reader
        .records()
        .flat_map(|r| {
            let r = r.unwrap();
            [r[0].to_string(), r[1].to_string()]
        })
        .collect();
    for formula in formulas {
        assert!(
            cells.iter().any(|c| *c == format!("'{formula}")),
            "{formula} not neutralised in:\n{csv}"
        );
    }
    assert!(
        !cells
            .iter()
            .any(|c| c.starts_with(['=', '+', '-', '@', '\t', '\r'])),
        "{csv}"
    );
}

//! Webhook ingest end to end (SPEC §3): every scheme accepted and stored once per event; every
//! forged, stale or malformed request refused with a clear error and nothing stored.

use referral_sync::domain::EventSource;
use referral_sync::ingest::signature::{self, HmacEncoding, HubSpotVersion};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::senders::*;
use crate::support::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

async fn app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, SpawnOptions::default(), configure).await
}

fn now_secs() -> i64 {
    T0 / 1000
}

fn hubspot_batch(n: usize, first_event_id: u64) -> String {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"objectId": 1000 + i, "eventId": first_event_id + i as u64, "subscriptionId": 92894,
                   "portalId": 5799819, "appId": 186886, "occurredAt": T0 - 5_000 + i as i64,
                   "subscriptionType": "contact.creation", "attemptNumber": 0, "changeSource": "CRM_UI"})
        })
        .collect();
    serde_json::to_string(&events).unwrap()
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("JSON error body");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

both_backends!(
    hubspot_batches_are_split_into_one_row_per_event_and_stored_once,
    hubspot_workflow_and_v1_requests_are_accepted_where_configured,
    forged_stale_or_unsigned_hubspot_requests_get_401_and_store_nothing,
    malformed_and_oversized_hubspot_requests_get_400_and_413,
    salesforce_outbound_messages_are_acknowledged_after_storage,
    salesforce_requests_with_a_wrong_token_org_or_body_are_refused,
    salesforce_json_callouts_are_verified_as_standard_webhooks,
    product_events_are_accepted_under_every_scheme,
    product_events_with_bad_signatures_or_fields_are_refused,
    metrics_count_received_accepted_and_rejected_webhooks,
    a_product_event_is_one_event_whatever_webhook_id_carries_it,
    media_types_are_matched_case_insensitively,
    webhook_paths_answer_other_methods_with_405_and_allow_post,
    a_market_or_source_outside_its_rule_is_refused_naming_the_field,
);

async fn hubspot_batches_are_split_into_one_row_per_event_and_stored_once(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let body = hubspot_batch(3, 1);

    let first = app
        .post_hubspot_signed(
            &body,
            HubSpotVersion::V3,
            HUBSPOT_SECRET,
            &hubspot_url(),
            T0,
        )
        .await;
    let again = app
        .post_hubspot_signed(
            &body,
            HubSpotVersion::V3,
            HUBSPOT_OLD_SECRET,
            &hubspot_url(),
            T0,
        )
        .await;

    assert_eq!(first.status(), 204);
    assert_eq!(
        again.status(),
        204,
        "a duplicate (signed with the rotated-out secret) gets the same answer"
    );
    let rows = app
        .store
        .list_inbox(Some(&EventSource::HubSpot), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "one row per event, stored once");
    assert_eq!(rows[0].event.event_type, "contact.creation");
    assert_eq!(
        rows[0].event.object_key.as_deref(),
        Some("hubspot:contact:1000")
    );
    assert_eq!(rows[0].event.occurred_at, Some(T0 - 5_000));
    assert_eq!(rows[0].event.received_at, T0);
    let raw: Value = serde_json::from_str(&rows[2].event.payload).unwrap();
    assert_eq!(raw["eventId"], 3);
    assert!(rows[0].event.meta.contains("v3"));
}

async fn hubspot_workflow_and_v1_requests_are_accepted_where_configured(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let workflow = r#"{"objectId": 512, "properties": {"dealstage": "closedwon"}}"#;
    let v1_batch = hubspot_batch(2, 50);

    let wf = app
        .post_hubspot_signed(
            workflow,
            HubSpotVersion::V3,
            HUBSPOT_SECRET,
            &hubspot_url(),
            T0,
        )
        .await;
    let v1 = app
        .post_hubspot_signed(
            &v1_batch,
            HubSpotVersion::V1,
            HUBSPOT_SECRET,
            &hubspot_url(),
            0,
        )
        .await;
    let v2 = app
        .post_hubspot_signed(
            &hubspot_batch(1, 90),
            HubSpotVersion::V2,
            HUBSPOT_SECRET,
            &hubspot_url(),
            0,
        )
        .await;

    assert_eq!(wf.status(), 204);
    assert_eq!(v1.status(), 204);
    let (status, _, message) = error_of(v2).await;
    assert_eq!(status, 401, "v2 is not in hubspot.signature_versions");
    assert!(message.contains("v2"), "{message}");
    assert_eq!(
        app.store
            .count_inbox(Some(&EventSource::HubSpot))
            .await
            .unwrap(),
        3
    );
    let rows = app
        .store
        .list_inbox(Some(&EventSource::HubSpot), 10)
        .await
        .unwrap();
    assert_eq!(rows[0].event.event_type, "workflow.webhook");
}

async fn forged_stale_or_unsigned_hubspot_requests_get_401_and_store_nothing(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let body = hubspot_batch(1, 7);
    let url = hubspot_url();

    let cases: Vec<(&str, reqwest::Response)> = vec![
        (
            "wrong secret",
            app.post_hubspot_signed(&body, HubSpotVersion::V3, "not-the-secret", &url, T0)
                .await,
        ),
        (
            "stale timestamp",
            app.post_hubspot_signed(
                &body,
                HubSpotVersion::V3,
                HUBSPOT_SECRET,
                &url,
                T0 - 301_000,
            )
            .await,
        ),
        (
            "future timestamp",
            app.post_hubspot_signed(
                &body,
                HubSpotVersion::V3,
                HUBSPOT_SECRET,
                &url,
                T0 + 301_000,
            )
            .await,
        ),
        (
            "tampered URL",
            app.post_hubspot_signed(
                &body,
                HubSpotVersion::V3,
                HUBSPOT_SECRET,
                "https://evil.example.com/webhooks/hubspot",
                T0,
            )
            .await,
        ),
        (
            "socket URL instead of the public one",
            app.post_hubspot_signed(
                &body,
                HubSpotVersion::V3,
                HUBSPOT_SECRET,
                &app.url("/webhooks/hubspot"),
                T0,
            )
            .await,
        ),
        ("tampered body", {
            let headers = signature::sign_hubspot(
                HubSpotVersion::V3,
                HUBSPOT_SECRET,
                "POST",
                &url,
                body.as_bytes(),
                T0,
            );
            let mut req = app.client.post(app.url("/webhooks/hubspot"));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.body(body.replace("92894", "92895"))
                .send()
                .await
                .unwrap()
        }),
        (
            "missing headers",
            app.client
                .post(app.url("/webhooks/hubspot"))
                .body(body.clone())
                .send()
                .await
                .unwrap(),
        ),
    ];

    for (case, response) in cases {
        let (status, code, message) = error_of(response).await;
        assert_eq!(status, 401, "{case}");
        assert_eq!(code, "unauthorized", "{case}");
        assert!(
            message.starts_with("hubspot signature rejected: "),
            "{case}: {message}"
        );
        assert!(
            !message.contains(HUBSPOT_SECRET),
            "{case}: secret in message"
        );
    }
    assert_eq!(
        app.store.count_inbox(None).await.unwrap(),
        0,
        "nothing stored"
    );
}

async fn malformed_and_oversized_hubspot_requests_get_400_and_413(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let url = hubspot_url();
    let oversized = format!(
        "[{}]",
        vec![r#"{"x":"yyyyyyyyyyyyyyyyyyyy"}"#; 4000].join(",")
    );

    let bad_json = app
        .post_hubspot_signed(
            "[{\"objectId\": 1,",
            HubSpotVersion::V3,
            HUBSPOT_SECRET,
            &url,
            T0,
        )
        .await;
    let missing_type = app
        .post_hubspot_signed(
            r#"[{"objectId": 1, "eventId": 2}]"#,
            HubSpotVersion::V3,
            HUBSPOT_SECRET,
            &url,
            T0,
        )
        .await;
    let too_many = app
        .post_hubspot_signed(
            &hubspot_batch(101, 1),
            HubSpotVersion::V3,
            HUBSPOT_SECRET,
            &url,
            T0,
        )
        .await;
    let too_large = app
        .post_hubspot_signed(&oversized, HubSpotVersion::V3, HUBSPOT_SECRET, &url, T0)
        .await;

    let (status, code, _) = error_of(bad_json).await;
    assert_eq!((status.as_u16(), code.as_str()), (400, "bad_request"));
    let (status, _, message) = error_of(missing_type).await;
    assert_eq!(status, 400);
    assert!(message.contains("subscriptionType"), "{message}");
    assert_eq!(error_of(too_many).await.0, 400);
    let (status, code, message) = error_of(too_large).await;
    assert_eq!((status.as_u16(), code.as_str()), (413, "payload_too_large"));
    assert!(message.contains("65536"), "{message}");
    assert_eq!(app.store.count_inbox(None).await.unwrap(), 0);
}

/// Notifications `(id, sObject type, record id)` with a fixed set of fields.
fn standard_message(org: &str, items: &[(&str, &str, &str)]) -> String {
    let fields: Vec<Vec<(&str, Option<&str>)>> = items
        .iter()
        .map(|(_, _, record)| {
            vec![
                ("Id", Some(*record)),
                ("StageName", Some("Closed Won")),
                ("Referral_Source__c", Some("ACME-7")),
                ("Amount", None),
                ("SystemModstamp", Some("2026-11-20T09:59:00.000Z")),
            ]
        })
        .collect();
    let notes: Vec<Notification<'_>> = items
        .iter()
        .zip(&fields)
        .map(|((id, kind, _), f)| (*id, *kind, f.as_slice()))
        .collect();
    outbound_message(org, &notes)
}

async fn salesforce_outbound_messages_are_acknowledged_after_storage(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let message = standard_message(
        SF_ORG,
        &[
            ("04l7F000008aeAyQAI", "Opportunity", "0067F000003pmdWQAQ"),
            ("04l7F000008aeAzQAI", "Contact", "0037F000001AbcdQAI"),
        ],
    );

    let by_query = app
        .post_outbound_message(&format!("?token={SF_TOKEN}"), None, message.clone())
        .await;
    let by_basic = app
        .post_outbound_message("", Some(("salesforce", SF_TOKEN)), message)
        .await;

    for response in [by_query, by_basic] {
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.contains("<Ack>true</Ack>"), "{text}");
    }
    let rows = app
        .store
        .list_inbox(Some(&EventSource::Salesforce), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "the redelivery is stored once");
    assert_eq!(rows[0].event.dedupe_key, "04l7F000008aeAyQAI");
    assert_eq!(rows[0].event.event_type, "salesforce.Opportunity");
    assert_eq!(
        rows[0].event.object_key.as_deref(),
        Some("salesforce:Opportunity:0067F000003pmdWQAQ")
    );
    assert_eq!(
        rows[0].event.occurred_at,
        Some(1_795_168_740_000),
        "SystemModstamp orders the event"
    );
    let payload: Value = serde_json::from_str(&rows[1].event.payload).unwrap();
    assert_eq!(payload["fields"]["Referral_Source__c"], "ACME-7");
    assert_eq!(payload["fields"]["Amount"], Value::Null);
}

async fn salesforce_requests_with_a_wrong_token_org_or_body_are_refused(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let good = standard_message(
        SF_ORG,
        &[("04l7F000008aeB0QAI", "Opportunity", "0067F000003pmdWQAQ")],
    );
    let query = format!("?token={SF_TOKEN}");

    let wrong_token = app
        .post_outbound_message("?token=guess", None, good.clone())
        .await;
    let no_token = app.post_outbound_message("", None, good.clone()).await;
    let other_org = app
        .post_outbound_message(
            &query,
            None,
            standard_message(
                "00D000000000001EAA",
                &[("04l7F000008aeB1QAI", "Lead", "00Q7F00000AbcdeQAI")],
            ),
        )
        .await;
    let truncated = app
        .post_outbound_message(&query, None, good[..good.len() / 2].to_string())
        .await;
    let billion_laughs = app.post_outbound_message(&query,
        None,
        r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>&lol2;</soapenv:Body></soapenv:Envelope>"#.into(),
    )
    .await;

    for (case, response, status) in [
        ("wrong token", wrong_token, 401),
        ("no token", no_token, 401),
        ("org not allowed", other_org, 403),
        ("truncated XML", truncated, 400),
        ("DTD / entity expansion", billion_laughs, 400),
    ] {
        assert_eq!(response.status(), status, "{case}");
        let text = response.text().await.unwrap();
        assert!(
            text.contains("<soapenv:Fault>") || text.contains(":Fault>"),
            "{case}: {text}"
        );
        assert!(!text.contains("<Ack>true</Ack>"), "{case}");
        assert!(!text.contains(SF_TOKEN), "{case}: token echoed");
    }
    assert_eq!(app.store.count_inbox(None).await.unwrap(), 0);
}

async fn salesforce_json_callouts_are_verified_as_standard_webhooks(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let body = r#"{"type":"opportunity.updated","data":{"Id":"0067F000003pmdWQAQ","StageName":"Closed Won"}}"#;
    let send = |secret: &'static str, ts: i64| {
        let headers =
            signature::sign_standard_webhooks(secret, "msg_apex_1", ts, body.as_bytes()).unwrap();
        let mut req = app
            .client
            .post(app.url("/webhooks/salesforce"))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(body).send()
    };

    let ok = send(CALLOUT_SECRET, now_secs()).await.unwrap();
    let dup = send(CALLOUT_SECRET, now_secs()).await.unwrap();
    let forged = send(APP_SECRET, now_secs()).await.unwrap();
    let stale = send(CALLOUT_SECRET, now_secs() - 600).await.unwrap();

    assert_eq!(ok.status(), 204);
    assert_eq!(dup.status(), 204);
    assert_eq!(forged.status(), 401);
    let (status, _, message) = error_of(stale).await;
    assert_eq!(status, 401);
    assert!(message.contains("too old"), "{message}");
    let rows = app
        .store
        .list_inbox(Some(&EventSource::SalesforceCallout), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.dedupe_key, "msg_apex_1");
    assert_eq!(rows[0].event.event_type, "opportunity.updated");
}

fn signup_body(id: &str, kind: &str) -> String {
    json!({"id": id, "type": kind, "occurred_at": "2026-11-20T09:58:00Z",
           "data": {"email": " Ana@Northwind.io ", "name": "Ana", "company": "Northwind",
                    "referral_code": "ACME-7", "source": "link", "market": "US",
                    "utm": {"source": "partner", "campaign": "q4"}, "ip": "203.0.113.7"}})
    .to_string()
}

async fn product_events_are_accepted_under_every_scheme(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let standard = signup_body("evt_1", "signup.created");
    let stripe = signup_body("evt_2", "referral.created");
    let hex = signup_body("evt_3", "signup.activated");
    let b64 = signup_body("evt_4", "partner.unknown_future_type");

    let responses = [
        app.post_signup_raw(
            "app",
            &standard,
            signature::sign_standard_webhooks(APP_SECRET, "msg_1", now_secs(), standard.as_bytes())
                .unwrap(),
        )
        .await,
        app.post_signup_raw(
            "app",
            &standard,
            signature::sign_standard_webhooks(APP_SECRET, "msg_1", now_secs(), standard.as_bytes())
                .unwrap(),
        )
        .await,
        app.post_signup_raw(
            "billing",
            &stripe,
            signature::sign_stripe(STRIPE_SECRET, now_secs(), stripe.as_bytes()),
        )
        .await,
        app.post_signup_raw(
            "legacy",
            &hex,
            signature::sign_hmac_sha256(
                "X-Signature",
                HMAC_SECRET,
                hex.as_bytes(),
                HmacEncoding::Hex,
            ),
        )
        .await,
        app.post_signup_raw(
            "partner-portal",
            &b64,
            signature::sign_hmac_sha256(
                "X-Partner-Sig",
                HMAC_SECRET,
                b64.as_bytes(),
                HmacEncoding::Base64,
            ),
        )
        .await,
    ];

    let mut duplicates = Vec::new();
    for r in responses {
        assert_eq!(r.status(), 202);
        duplicates.push(
            r.json::<Value>().await.unwrap()["duplicate"]
                .as_bool()
                .unwrap(),
        );
    }
    assert_eq!(duplicates, [false, true, false, false, false]);
    let rows = app.store.list_inbox(None, 10).await.unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        (&rows[0].event.source, rows[0].event.dedupe_key.as_str()),
        (&EventSource::Product("app".into()), "evt_1"),
        "the event id identifies a product event"
    );
    assert_eq!(
        (&rows[1].event.source, rows[1].event.dedupe_key.as_str()),
        (&EventSource::Product("billing".into()), "evt_2")
    );
    assert_eq!(
        rows[3].event.event_type, "partner.unknown_future_type",
        "unknown types are stored, not rejected"
    );
    assert_eq!(rows[0].event.payload, standard, "the raw body is kept");
    assert_eq!(rows[0].event.occurred_at, Some(T0 - 120_000));
}

async fn product_events_with_bad_signatures_or_fields_are_refused(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let body = signup_body("evt_9", "signup.created");
    let no_email = json!({"id": "evt_10", "type": "signup.created", "occurred_at": "2026-11-20T09:58:00Z", "data": {"referral_code": "ACME-7"}}).to_string();
    let sign = |b: &str| {
        signature::sign_standard_webhooks(APP_SECRET, "msg_x", now_secs(), b.as_bytes()).unwrap()
    };

    let wrong_secret = app
        .post_signup_raw(
            "app",
            &body,
            signature::sign_standard_webhooks(
                "whsec_c2VjcmV0LXRoYXQtaXMtd3Jvbmc=",
                "m",
                now_secs(),
                body.as_bytes(),
            )
            .unwrap(),
        )
        .await;
    let stale = app
        .post_signup_raw(
            "app",
            &body,
            signature::sign_standard_webhooks(APP_SECRET, "m", now_secs() - 301, body.as_bytes())
                .unwrap(),
        )
        .await;
    let future = app
        .post_signup_raw(
            "billing",
            &body,
            signature::sign_stripe(STRIPE_SECRET, now_secs() + 301, body.as_bytes()),
        )
        .await;
    let unsigned = app.post_signup_raw("legacy", &body, vec![]).await;
    let missing_field = app.post_signup_raw("app", &no_email, sign(&no_email)).await;
    let bad_json = app
        .post_signup_raw("app", "{\"id\": ", sign("{\"id\": "))
        .await;
    let unknown_source = app.post_signup_raw("nope", &body, sign(&body)).await;

    let (status, _, message) = error_of(wrong_secret).await;
    assert_eq!(status, 401);
    assert!(message.contains("does not match"), "{message}");
    assert!(error_of(stale).await.2.contains("too old"));
    assert!(error_of(future).await.2.contains("future"));
    let (status, _, message) = error_of(unsigned).await;
    assert_eq!(status, 401);
    assert!(message.contains("missing"), "{message}");
    let (status, code, message) = error_of(missing_field).await;
    assert_eq!((status.as_u16(), code.as_str()), (422, "unprocessable"));
    assert!(message.contains("data.email"), "{message}");
    assert_eq!(error_of(bad_json).await.0, 400);
    let (status, _, message) = error_of(unknown_source).await;
    assert_eq!(status, 404);
    assert!(message.contains("sources.nope"), "{message}");
    assert_eq!(app.store.count_inbox(None).await.unwrap(), 0);
}

async fn metrics_count_received_accepted_and_rejected_webhooks(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let body = hubspot_batch(2, 500);
    app.post_hubspot_signed(
        &body,
        HubSpotVersion::V3,
        HUBSPOT_SECRET,
        &hubspot_url(),
        T0,
    )
    .await;
    app.post_hubspot_signed(&body, HubSpotVersion::V3, "forged", &hubspot_url(), T0)
        .await;

    let text = app.get("/metrics").await.text().await.unwrap();

    assert!(
        text.contains("webhooks_received_total{source=\"hubspot\"}"),
        "{text}"
    );
    assert!(text.contains("webhooks_accepted_total{source=\"hubspot\"}"));
    assert!(
        text.contains("webhooks_rejected_total{source=\"hubspot\",reason=\"signature_mismatch\"}")
    );
    assert!(text.contains("inbox_events_total{source=\"hubspot\",outcome=\"new\"}"));
    assert!(text.contains("webhook_ingest_seconds_bucket"));
}

async fn a_product_event_is_one_event_whatever_webhook_id_carries_it(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let body = signup_body("evt_same", "signup.created");

    let mut duplicates = Vec::new();
    for webhook_id in ["msg_a", "msg_b", "msg_c"] {
        let headers =
            signature::sign_standard_webhooks(APP_SECRET, webhook_id, now_secs(), body.as_bytes())
                .unwrap();
        let response = app.post_signup_raw("app", &body, headers).await;
        assert_eq!(response.status(), 202);
        duplicates.push(response.json::<Value>().await.unwrap()["duplicate"].clone());
    }
    app.process().await;

    assert_eq!(duplicates, [json!(false), json!(true), json!(true)]);
    assert_eq!(app.store.count_inbox(None).await.unwrap(), 1);
    let referral = app
        .store
        .referral_by_email("ana@northwind.io")
        .await
        .unwrap()
        .expect("the referral");
    assert_eq!(
        app.store.touches(referral.id()).await.unwrap().len(),
        1,
        "applied once"
    );
}

async fn media_types_are_matched_case_insensitively(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let body = r#"{"type":"opportunity.updated","data":{"Id":"0067F000003pmdWQAQ"}}"#;
    let headers =
        signature::sign_standard_webhooks(CALLOUT_SECRET, "msg_case", now_secs(), body.as_bytes())
            .unwrap();
    let mut request = app
        .client
        .post(app.url("/webhooks/salesforce"))
        .header("content-type", "Application/JSON; charset=UTF-8");
    for (k, v) in headers {
        request = request.header(k, v);
    }

    let response = request.body(body).send().await.unwrap();

    assert_eq!(response.status(), 204, "routed as a JSON callout");
    let rows = app
        .store
        .list_inbox(Some(&EventSource::SalesforceCallout), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

async fn webhook_paths_answer_other_methods_with_405_and_allow_post(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    for path in [
        "/webhooks/hubspot",
        "/webhooks/salesforce",
        "/webhooks/signup/app",
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::PUT] {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            assert_eq!(response.headers()["allow"], "POST", "{method} {path}");
            let (_, code, message) = error_of(response).await;
            assert_eq!(code, "method_not_allowed");
            assert!(message.contains("POST"), "{message}");
        }
    }
}

async fn a_market_or_source_outside_its_rule_is_refused_naming_the_field(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let post = |id: &str, data: Value| {
        let body = json!({"id": id, "type": "signup.created", "occurred_at": "2026-11-20T09:58:00Z", "data": data}).to_string();
        let headers =
            signature::sign_standard_webhooks(APP_SECRET, id, now_secs(), body.as_bytes()).unwrap();
        let app = &app;
        async move { error_of(app.post_signup_raw("app", &body, headers).await).await }
    };

    for (i, market) in [
        "=HYPERLINK(\"http://x\")",
        "+1+1",
        "-2+3",
        "@SUM(1+1)",
        "US\t=1",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, _, message) = post(
            &format!("evt_m{i}"),
            json!({"email": "ana@northwind.io", "market": market}),
        )
        .await;
        assert_eq!(status, 422, "{market}");
        assert!(
            message.starts_with("data.market must be a market code"),
            "{message}"
        );
    }
    let (status, _, message) = post(
        "evt_s",
        json!({"email": "ana@northwind.io", "source": "=cmd"}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        message.starts_with("data.source must be one of"),
        "{message}"
    );
    assert_eq!(app.store.count_inbox(None).await.unwrap(), 0);
}

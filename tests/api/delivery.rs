//! CRM write-back against the in-repo sandbox (SPEC §5): the right values arrive; rate limits,
//! expired sessions, refusals and long outages are handled; per-record order holds; two workers
//! never deliver the same write twice. The app and the sandbox share one fake clock, so waiting
//! out a rate-limit window or a ten-minute outage is a clock move, not a sleep.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crm_sandbox::{Crm, CrmSandbox, Failure, SandboxConfig};
use referral_sync::clock::{Clock, FakeClock, Millis, DAY, MINUTE, SECOND};
use referral_sync::config::Secret;
use referral_sync::crm::http_client;
use referral_sync::crm::hubspot::HubSpotClient;
use referral_sync::crm::salesforce::SalesforceClient;
use referral_sync::outbox::OutboxWorker;
use referral_sync::rewards::engine::release_holds;
use serde_json::json;

use crate::both_backends;
use crate::support::crm::{hubspot_referral, world, world_with};
use crate::support::senders::{
    deal_property, hubspot_event, iso, outbound_message, SF_ORG, SF_TOKEN,
};
use crate::support::{Backend, TestApp, T0};

both_backends!(
    hubspot_receives_context_restores_rewards_and_a_note,
    salesforce_receives_fields_and_a_platform_event_and_renews_an_expired_session_once,
    a_rate_limit_burst_is_waited_out_and_retried,
    a_refused_write_is_dead_lettered_and_delivered_by_replay_once_fixed,
    a_long_outage_ends_with_every_write_delivered_once_in_record_order,
    pending_updates_to_one_record_are_coalesced_and_batched,
    crm_calls_go_only_to_the_configured_instance_never_to_urls_in_a_message,
    a_write_in_doubt_after_a_crash_is_checked_before_it_is_sent_again,
    a_write_whose_answer_timed_out_is_read_back_not_repeated,
    a_record_in_doubt_is_read_once_even_when_its_write_waits_for_the_rate_limit,
    a_salesforce_write_in_doubt_is_read_back_not_repeated,
    a_round_that_would_outlast_its_lease_hands_the_rest_back_unsent,
    a_stored_write_that_cannot_be_read_is_dead_lettered_with_why_and_the_rest_go_out,
    a_stored_attempt_count_that_is_not_a_count_is_dead_lettered_with_why,
);

/// Attempts only ever grow from 0; a negative count is stored data this code did not write.
/// The write goes nowhere (it is not retried as if it had failed many times, nor sent as new)
/// and its dead letter says why.
async fn a_stored_attempt_count_that_is_not_a_count_is_dead_lettered_with_why(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    hubspot_referral(&w.app, 12).await;
    let rows = w.app.store.outbox_rows(None).await.unwrap();
    let broken = rows
        .iter()
        .find(|r| r.object_type == "contact" && r.object_id == "1012")
        .expect("a write for contact 1012");
    w.app
        .execute_sql(&format!(
            "UPDATE outbox SET attempts = -3 WHERE id = {}",
            broken.id
        ))
        .await;

    w.app.deliver().await;

    let dead = w.app.store.dead_deliveries(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].id, broken.id);
    let why = dead[0].last_error.as_deref().unwrap();
    assert!(why.contains("stored attempt count -3"), "{why}");
    assert!(w.crm.state.hubspot_object("contacts", "1012").is_none());
    assert_eq!(
        w.crm.state.hubspot_object("deals", "2012").unwrap()["referral_code"],
        "ACME-7",
        "the deal's own write went out"
    );
}

async fn a_stored_write_that_cannot_be_read_is_dead_lettered_with_why_and_the_rest_go_out(
    backend: Backend,
) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    hubspot_referral(&w.app, 10).await;
    hubspot_referral(&w.app, 11).await;
    let rows = w.app.store.outbox_rows(None).await.unwrap();
    let broken = rows
        .iter()
        .find(|r| r.object_type == "contact" && r.object_id == "1010")
        .expect("a write for contact 1010");
    w.app
        .execute_sql(&format!(
            "UPDATE outbox SET payload = '{{\"properties\": 5}}' WHERE id = {}",
            broken.id
        ))
        .await;

    w.app.deliver().await;

    let dead = w.app.store.dead_deliveries(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].id, broken.id);
    assert_eq!(dead[0].last_status, None, "the CRM was never called for it");
    let why = dead[0].last_error.as_deref().unwrap();
    assert!(
        why.contains("update_properties payload cannot be read"),
        "the error says what could not be read: {why}"
    );
    // Everything else was delivered, including the other record's writes.
    assert_eq!(
        w.crm.state.hubspot_object("contacts", "1011").unwrap()["referral_code"],
        "ACME-7"
    );
    assert_eq!(
        w.crm.state.hubspot_object("deals", "2010").unwrap()["referral_code"],
        "ACME-7"
    );
    assert!(w.crm.state.hubspot_object("contacts", "1010").is_none());
}

async fn hubspot_receives_context_restores_rewards_and_a_note(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    let (contact, deal) = hubspot_referral(&w.app, 1).await;
    w.app.deliver().await;

    let c = w
        .crm
        .state
        .hubspot_object("contacts", &contact.to_string())
        .expect("contact written");
    assert_eq!(
        (
            c["referral_source"].as_str(),
            c["referral_code"].as_str(),
            c["referral_market"].as_str()
        ),
        ("link", "ACME-7", "US")
    );
    assert_eq!(c["referral_first_touch_at"], T0.to_string());
    let d = w
        .crm
        .state
        .hubspot_object("deals", &deal.to_string())
        .expect("deal written");
    assert_eq!(d["referral_code"], "ACME-7");

    // A rep overwrites the source in the CRM; HubSpot reports it; the original comes back.
    w.app.hubspot(json!([hubspot_event(90, "contact.propertyChange", contact, T0 + DAY, json!({"propertyName": "referral_source", "propertyValue": "cold call", "changeSource": "CRM_UI"}))])).await;
    w.app.process().await;
    w.app.deliver().await;
    assert_eq!(
        w.crm
            .state
            .hubspot_object("contacts", &contact.to_string())
            .unwrap()["referral_source"],
        "link"
    );

    // The deal is won: reward state on the deal; when the hold ends, eligible plus a note.
    w.app
        .hubspot(json!([deal_property(
            91,
            deal,
            "dealstage",
            "closedwon",
            T0 + 10 * DAY
        )]))
        .await;
    w.app.process().await;
    w.app.deliver().await;
    let d = w
        .crm
        .state
        .hubspot_object("deals", &deal.to_string())
        .unwrap();
    assert_eq!(
        (
            d["referral_reward_status"].as_str(),
            d["referral_reward_amount"].as_str(),
            d["referral_reward_currency"].as_str()
        ),
        ("pending", "3000.00", "USD")
    );
    w.clock.set(T0 + 40 * DAY);
    release_holds(&w.app.store, &w.app.settings, T0 + 40 * DAY)
        .await
        .unwrap();
    w.app.deliver().await;
    assert_eq!(
        w.crm
            .state
            .hubspot_object("deals", &deal.to_string())
            .unwrap()["referral_reward_status"],
        "eligible"
    );
    let notes = w.crm.state.notes();
    assert!(!notes.is_empty(), "a note on the deal");
    assert!(notes[0].to_string().contains("3000.00 USD"), "{}", notes[0]);
    assert!(
        notes[0].to_string().contains(&deal.to_string()),
        "associated with the deal"
    );
    // Everything queued is delivered, nothing dead.
    assert!(w
        .app
        .store
        .outbox_rows(None)
        .await
        .unwrap()
        .iter()
        .all(|r| r.status.as_str() == "delivered" || r.kind.as_str() == "read_record"));
}

async fn salesforce_receives_fields_and_a_platform_event_and_renews_an_expired_session_once(
    backend: Backend,
) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    w.app.signup(json!({"id": "evt_sf", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "gus@initech.ru", "referral_code": "IVAN-1", "source": "code", "market": "RU"}}))
        .await;
    let contact: &[(&str, Option<&str>)] = &[
        ("Id", Some("0037F00000SfSfSQAA")),
        ("Email", Some("gus@initech.ru")),
    ];
    let opp: &[(&str, Option<&str>)] = &[
        ("Id", Some("0067F00000SfSfSQAA")),
        ("ContactId", Some("0037F00000SfSfSQAA")),
        ("StageName", Some("Closed Won")),
        ("IsWon", Some("true")),
        ("Amount", Some("900000")),
        ("CurrencyIsoCode", Some("RUB")),
    ];
    w.app
        .salesforce(&[
            ("04l0000000000S1AAA", "Contact", contact),
            ("04l0000000000S2AAA", "Opportunity", opp),
        ])
        .await;
    w.app.process().await;
    w.app.deliver().await;
    assert_eq!(w.crm.state.tokens_issued(), 1);
    let c = w
        .crm
        .state
        .salesforce_record("Contact", "0037F00000SfSfSQAA")
        .unwrap();
    assert_eq!(
        (
            c["Referral_Source__c"].as_str(),
            c["Referral_Code__c"].as_str(),
            c["Referral_Market__c"].as_str()
        ),
        ("code", "IVAN-1", "RU")
    );
    let o = w
        .crm
        .state
        .salesforce_record("Opportunity", "0067F00000SfSfSQAA")
        .unwrap();
    assert_eq!(
        (
            o["Referral_Reward_Status__c"].as_str(),
            o["Referral_Reward_Amount__c"].as_str()
        ),
        ("pending", "50000.00")
    );

    // The session expires; the next write renews the token once and goes through.
    w.crm.state.expire_salesforce_sessions();
    w.clock.set(T0 + 40 * DAY);
    release_holds(&w.app.store, &w.app.settings, T0 + 40 * DAY)
        .await
        .unwrap();
    w.app.deliver().await;

    assert_eq!(w.crm.state.tokens_issued(), 2, "exactly one renewal");
    assert_eq!(
        w.crm
            .state
            .salesforce_record("Opportunity", "0067F00000SfSfSQAA")
            .unwrap()["Referral_Reward_Status__c"],
        "eligible"
    );
    let events = w.crm.state.platform_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "Referral_Reward__e");
    assert_eq!(events[0].1["Amount__c"], "50000.00");
    let unauthorized = w
        .crm
        .state
        .requests()
        .iter()
        .filter(|r| r.status == 401)
        .count();
    assert_eq!(unauthorized, 1, "one expired call, then the renewed one");
}

async fn a_rate_limit_burst_is_waited_out_and_retried(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    let (contact, _) = hubspot_referral(&w.app, 2).await;
    w.crm.state.fail_next(Crm::HubSpot, 3, Failure::RateLimit);

    w.app.deliver().await;
    let waiting = w.app.store.outbox_rows(None).await.unwrap();
    assert!(
        waiting
            .iter()
            .any(|r| r.status.as_str() == "pending" && r.last_status == Some(429)),
        "{waiting:#?}"
    );
    assert!(w
        .crm
        .state
        .hubspot_object("contacts", &contact.to_string())
        .is_none_or(|c| !c.contains_key("referral_code")));
    // HubSpot's window is 10 s: a retry is never scheduled sooner.
    let retry_at = waiting
        .iter()
        .filter(|r| r.last_status == Some(429))
        .map(|r| r.next_attempt_at)
        .min()
        .unwrap();
    assert!(retry_at >= T0 + 10 * SECOND, "retry at {retry_at}");

    for _ in 0..5 {
        w.clock.advance(MINUTE);
        w.app.deliver().await;
    }

    assert_eq!(
        w.crm
            .state
            .hubspot_object("contacts", &contact.to_string())
            .unwrap()["referral_code"],
        "ACME-7"
    );
    assert!(w
        .app
        .store
        .outbox_rows(None)
        .await
        .unwrap()
        .iter()
        .all(|r| r.status.as_str() != "dead"));
}

async fn a_refused_write_is_dead_lettered_and_delivered_by_replay_once_fixed(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    w.crm
        .state
        .remove_salesforce_field("Contact", "Referral_Market__c");
    w.app.signup(json!({"id": "evt_d", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "hal@initech.com", "referral_code": "ACME-7", "source": "link", "market": "US"}}))
        .await;
    let contact: &[(&str, Option<&str>)] = &[
        ("Id", Some("0037F00000DdDdDQAA")),
        ("Email", Some("hal@initech.com")),
    ];
    w.app
        .salesforce(&[("04l0000000000D1AAA", "Contact", contact)])
        .await;
    w.app.process().await;

    w.app.deliver().await;

    let dead = w.app.store.dead_deliveries(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_status, Some(400));
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("INVALID_FIELD"),
        "the CRM's error is kept: {:?}",
        dead[0].last_error
    );

    // The admin creates the field, then replays.
    w.crm
        .state
        .add_salesforce_field("Contact", "Referral_Market__c");
    let replayed = w
        .app
        .store
        .replay_dead(&[], None, w.clock.now_ms())
        .await
        .unwrap();
    w.app.deliver().await;

    assert_eq!(replayed, 1);
    assert_eq!(
        w.crm
            .state
            .salesforce_record("Contact", "0037F00000DdDdDQAA")
            .unwrap()["Referral_Market__c"],
        "US"
    );
    assert!(w.app.store.dead_deliveries(10).await.unwrap().is_empty());
}

async fn a_long_outage_ends_with_every_write_delivered_once_in_record_order(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    let (_, deal) = hubspot_referral(&w.app, 3).await;
    w.app.deliver().await;
    w.crm
        .state
        .set_outage(Crm::HubSpot, Some(Failure::Status(503)));
    // During the outage the deal moves through stages; each move queues reward writes.
    let stages = ["closedwon", "contractsent", "closedwon", "closedlost"];
    for (i, stage) in stages.iter().enumerate() {
        w.app
            .hubspot(json!([deal_property(
                300 + i as u64,
                deal,
                "dealstage",
                stage,
                T0 + (i as i64 + 1) * DAY
            )]))
            .await;
        w.app.process().await;
        w.app.deliver().await;
        w.clock.advance(MINUTE);
    }
    // Ten minutes of 503s, retried on schedule.
    for _ in 0..10 {
        w.clock.advance(MINUTE);
        w.app.deliver().await;
    }
    let before = w.crm.state.writes().len();
    w.crm.state.set_outage(Crm::HubSpot, None);
    for _ in 0..40 {
        w.clock.advance(10 * MINUTE);
        w.app.deliver().await;
    }

    let rows = w.app.store.outbox_rows(None).await.unwrap();
    assert!(
        rows.iter()
            .all(|r| r.status.as_str() == "delivered" || r.kind.as_str() == "read_record"),
        "{rows:#?}"
    );
    // The deal's last reward status is the last one made: per-record order held.
    let d = w
        .crm
        .state
        .hubspot_object("deals", &deal.to_string())
        .unwrap();
    assert_eq!(d["referral_reward_status"], "reversed");
    let deal_writes: Vec<String> = w.crm.state.writes()[before..]
        .iter()
        .filter(|x| x.id == deal.to_string())
        .filter_map(|x| x.properties.get("referral_reward_status").cloned())
        .collect();
    assert_eq!(deal_writes.last().map(String::as_str), Some("reversed"));
    assert!(
        deal_writes.len() <= 1,
        "pending updates to one record went out merged: {deal_writes:?}"
    );
    let failed = w
        .crm
        .state
        .requests()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert!(failed >= 3, "the outage was really hit: {failed}");
}

async fn pending_updates_to_one_record_are_coalesced_and_batched(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    for n in 10..40 {
        hubspot_referral(&w.app, n).await;
    }
    let queued = w
        .app
        .store
        .outbox_rows(None)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind.as_str() == "update_properties")
        .count();

    let report = w.app.deliver().await;

    let calls = w
        .crm
        .state
        .requests()
        .iter()
        .filter(|r| r.path.contains("batch/update") || r.method == "PATCH")
        .count();
    assert_eq!(queued, 60, "30 contacts + 30 deals");
    assert!(
        calls <= 2,
        "one batch per object type, got {calls} calls ({report:?})"
    );
    assert_eq!(
        w.crm.state.hubspot_object("contacts", "1025").unwrap()["referral_code"],
        "ACME-7"
    );
}

trait ClockNow {
    fn now_ms(&self) -> i64;
}

impl ClockNow for Arc<FakeClock> {
    fn now_ms(&self) -> i64 {
        referral_sync::clock::Clock::now(&**self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_on_one_postgresql_never_deliver_the_same_write_twice() {
    let Some(w) = world(
        Backend::Postgres,
        SandboxConfig {
            hubspot_limit_per_10s: 10_000,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    for n in 100..160 {
        hubspot_referral(&w.app, n).await;
    }
    let expected = w
        .app
        .store
        .outbox_rows(None)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind.as_str() == "update_properties")
        .count();
    let settings = Arc::new(w.app.settings.clone());
    let second = OutboxWorker::new(
        w.app.store.clone(),
        settings,
        w.clock.clone(),
        Default::default(),
    );
    let first = w.app.outbox.clone();

    let (a, b) = tokio::join!(
        async {
            let mut n = 0;
            for _ in 0..20 {
                n += first.tick().await.unwrap().records;
            }
            n
        },
        async {
            let mut n = 0;
            for _ in 0..20 {
                n += second.tick().await.unwrap().records;
            }
            n
        },
    );

    // One context write per record here, so records claimed = writes queued.
    assert_eq!(
        a + b,
        expected,
        "every record claimed exactly once across both workers ({a} + {b})"
    );
    let mut seen = std::collections::HashMap::new();
    for write in w.crm.state.writes() {
        *seen
            .entry((write.object_type.clone(), write.id.clone()))
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), expected, "every record written");
    assert!(
        seen.values().all(|n| *n == 1),
        "no record written twice: {seen:?}"
    );
}

/// Every Salesforce Outbound Message names API URLs of its own (EnterpriseUrl, PartnerUrl), next to
/// an optional session id. Calling back whatever URL a request names would hand the CRM token to
/// anyone who can reach the webhook: the service talks only to the instance its config names.
async fn crm_calls_go_only_to_the_configured_instance_never_to_urls_in_a_message(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let connections = connections.clone();
        async move {
            while trap.accept().await.is_ok() {
                connections.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    w.app.signup(json!({"id": "evt_trap", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "lou@initech.ru", "referral_code": "IVAN-1", "source": "code", "market": "RU"}}))
        .await;
    let contact: &[(&str, Option<&str>)] = &[
        ("Id", Some("0037F00000TrApSQAA")),
        ("Email", Some("lou@initech.ru")),
    ];
    let body = outbound_message(SF_ORG, &[("04l0000000000T1AAA", "Contact", contact)])
        .replace("https://ap5.salesforce.com", &trap_url)
        .replace(
            r#"<SessionId xsi:nil="true"/>"#,
            "<SessionId>00D7F00000107Xs!AQ4AQFake.Session</SessionId>",
        );
    assert_eq!(
        body.matches(&trap_url).count(),
        2,
        "both URLs point at the trap"
    );

    let answer = w
        .app
        .post_outbound_message(&format!("?token={SF_TOKEN}"), None, body)
        .await;
    assert_eq!(answer.status(), 200);
    w.app.process().await;
    w.app.deliver().await;

    let written = w
        .crm
        .state
        .salesforce_record("Contact", "0037F00000TrApSQAA")
        .expect("the contact's context reached the configured instance");
    assert_eq!(written["Referral_Code__c"], "IVAN-1");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing connected to a URL taken from the message"
    );
}

/// A worker that dies between the CRM's answer and recording it leaves its records claimed. The
/// claim after it finds them in doubt and reads each record first: a write that landed is recorded
/// as delivered without being sent again, one that did not is sent.
async fn a_write_in_doubt_after_a_crash_is_checked_before_it_is_sent_again(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    let (contact, deal) = hubspot_referral(&w.app, 1).await;
    let (contact, deal) = (contact.to_string(), deal.to_string());
    let now = T0;
    w.clock.set(now);

    // A worker claims both records, gets the contact's write through, and dies.
    let claimed = claim_as_a_worker_that_dies(&w.app, now).await;
    assert!(claimed.iter().all(|record| !record.in_doubt), "first claim");
    let contact_rows = &claimed
        .iter()
        .find(|record| record.rows[0].object_type == "contact")
        .expect("the contact has writes queued")
        .rows;
    let written = merged_properties(contact_rows);
    HubSpotClient::new(
        http_client(std::time::Duration::from_secs(5)),
        &w.crm.base_url,
        Secret::new(SandboxConfig::default().hubspot_token),
    )
    .update("contact", &contact, &written)
    .await
    .unwrap();

    let writes_to = |id: &str| writes_to(&w.crm, id);

    // Its lease runs out; a live worker takes over, but HubSpot rate-limits the reads: nothing is
    // written blind, and the records stay in doubt.
    w.clock.set(now + 121 * SECOND);
    w.crm.state.fail_next(Crm::HubSpot, 2, Failure::RateLimit);
    w.app.deliver().await;
    assert_eq!((writes_to(&contact), writes_to(&deal)), (1, 0));

    // Later the reads go through.
    w.clock.set(now + 200 * SECOND);
    w.app.deliver().await;

    assert_eq!(
        writes_to(&contact),
        1,
        "the write that landed is not sent again"
    );
    assert_eq!(writes_to(&deal), 1, "the write that did not land is sent");
    let reads: BTreeSet<String> = w
        .crm
        .state
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.status != 429)
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        reads,
        BTreeSet::from([
            format!("/crm/v3/objects/contacts/{contact}"),
            format!("/crm/v3/objects/deals/{deal}")
        ]),
        "each record in doubt is read"
    );
    let gets = w
        .crm
        .state
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert_eq!(gets, 4, "each twice: rate-limited, then answered");
    let (pending, _) = w.app.store.outbox_backlog(now).await.unwrap();
    assert_eq!(pending, 0, "every write is recorded as delivered");
}

/// A call that times out may still have been carried out: the CRM applied the write and only its
/// answer was lost. The retry reads the record back instead of repeating the write.
async fn a_write_whose_answer_timed_out_is_read_back_not_repeated(backend: Backend) {
    let Some(w) = world_with(backend, SandboxConfig::default(), |s| {
        s.outbox.request_timeout_secs = 1;
    })
    .await
    else {
        return;
    };
    let (contact, deal) = hubspot_referral(&w.app, 1).await;
    let (contact, deal) = (contact.to_string(), deal.to_string());
    let writes_to = |id: &str| writes_to(&w.crm, id);

    // HubSpot applies both writes (contact, deal) and answers after the client gave up.
    w.crm.state.fail_next(
        Crm::HubSpot,
        2,
        Failure::AnswerLate(std::time::Duration::from_millis(1_500)),
    );
    w.app.deliver().await;
    assert_eq!((writes_to(&contact), writes_to(&deal)), (1, 1));
    let (pending, _) = w.app.store.outbox_backlog(T0).await.unwrap();
    assert!(
        pending > 0,
        "no answer, so nothing is recorded as delivered yet"
    );

    w.clock.advance(10 * MINUTE);
    w.app.deliver().await;

    assert_eq!(
        (writes_to(&contact), writes_to(&deal)),
        (1, 1),
        "read back, not written again"
    );
    let gets = w
        .crm
        .state
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.status == 200)
        .count();
    assert_eq!(gets, 2, "each record read back once");
    let (pending, _) = w.app.store.outbox_backlog(T0).await.unwrap();
    assert_eq!(pending, 0);
}

/// The read that settles a doubt and the write it calls for may not fit in one rate-limit window.
/// Once read, the record is an ordinary write: it is not read again each round while it waits
/// for the limiter (which would spend every round's call on the read and never write).
async fn a_record_in_doubt_is_read_once_even_when_its_write_waits_for_the_rate_limit(
    backend: Backend,
) {
    let Some(w) = world_with(backend, SandboxConfig::default(), |s| {
        s.outbox.hubspot_requests_per_10s = 1;
    })
    .await
    else {
        return;
    };
    let (contact, deal) = hubspot_referral(&w.app, 1).await;
    w.clock.set(T0);
    claim_as_a_worker_that_dies(&w.app, T0).await;

    // One call per 10 s: each round after the lease ran out has room for one read or one write.
    for round in 0..10 {
        w.clock.set(T0 + 121 * SECOND + round * 11 * SECOND);
        w.app.deliver().await;
    }

    let requests = w.crm.state.requests();
    for id in [contact.to_string(), deal.to_string()] {
        let reads = requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/{id}")))
            .count();
        let writes = writes_to(&w.crm, &id);
        assert_eq!(
            (reads, writes),
            (1, 1),
            "record {id}: one read, then one write"
        );
    }
    let (pending, _) = w.app.store.outbox_backlog(T0).await.unwrap();
    assert_eq!(pending, 0);
}

/// How many writes the CRM sandbox received for record `id`.
fn writes_to(crm: &CrmSandbox, id: &str) -> usize {
    crm.state
        .writes()
        .iter()
        .filter(|write| write.id == id)
        .count()
}

/// The same read-back on Salesforce: a record's fields as the REST API returns them.
async fn a_salesforce_write_in_doubt_is_read_back_not_repeated(backend: Backend) {
    let sandbox = SandboxConfig::default();
    let Some(w) = world(backend, sandbox.clone()).await else {
        return;
    };
    w.app.signup(json!({"id": "evt_sf_doubt", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "ida@initech.ru", "referral_code": "IVAN-1", "source": "code", "market": "RU"}}))
        .await;
    let contact_id = "0037F00000DoUbTQAA";
    let contact: &[(&str, Option<&str>)] =
        &[("Id", Some(contact_id)), ("Email", Some("ida@initech.ru"))];
    w.app
        .salesforce(&[("04l0000000000D1AAA", "Contact", contact)])
        .await;
    w.app.process().await;
    w.clock.set(T0);

    // A worker claims the contact, gets its write through, and dies.
    let claimed = claim_as_a_worker_that_dies(&w.app, T0).await;
    let fields = merged_properties(&claimed[0].rows);
    SalesforceClient::new(
        http_client(std::time::Duration::from_secs(5)),
        &w.crm.base_url,
        &sandbox.salesforce_client_id,
        Secret::new(sandbox.salesforce_client_secret.clone()),
        &sandbox.salesforce_api_version,
    )
    .update("Contact", contact_id, &fields)
    .await
    .unwrap();

    w.clock.set(T0 + 121 * SECOND);
    w.app.deliver().await;

    assert_eq!(writes_to(&w.crm, contact_id), 1, "not written again");
    let read = w
        .crm
        .state
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(contact_id))
        .count();
    assert_eq!(read, 1);
    let (pending, _) = w.app.store.outbox_backlog(T0).await.unwrap();
    assert_eq!(pending, 0);
}

/// Claims every due record as a worker that will never finish (it "dies" after the claim).
async fn claim_as_a_worker_that_dies(
    app: &TestApp,
    now: i64,
) -> Vec<referral_sync::store::ClaimedRecord> {
    app.store
        .claim_records("worker-that-dies", now, now + 120 * SECOND, 100, 100)
        .await
        .unwrap()
}

/// A record's pending property updates merged in order, as one write would carry them.
fn merged_properties(rows: &[referral_sync::store::OutboxRow]) -> BTreeMap<String, String> {
    let mut merged = BTreeMap::new();
    for row in rows {
        let payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
        for (name, value) in payload["properties"].as_object().unwrap() {
            merged.insert(name.clone(), value.as_str().unwrap().to_string());
        }
    }
    merged
}

/// A clock that moves `step` forward each time it is read: a CRM so slow that one round of calls
/// takes longer than the claim it works under.
struct SlowClock {
    clock: Arc<FakeClock>,
    step: Millis,
}

impl Clock for SlowClock {
    fn now(&self) -> Millis {
        self.clock.advance(self.step);
        self.clock.now()
    }
}

/// When the CRM is slow, a round over many records can outlast its lease, and another worker may
/// take the records it has not reached. No call is started that could end after the claim does:
/// the rest are handed back unsent, and a later round delivers each of them once.
async fn a_round_that_would_outlast_its_lease_hands_the_rest_back_unsent(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    for n in 1..=10 {
        hubspot_referral(&w.app, n).await;
    }
    // In doubt, every record costs a call of its own (the read) in the next round.
    w.clock.set(T0);
    let claimed = claim_as_a_worker_that_dies(&w.app, T0).await;
    w.clock.set(T0 + 121 * SECOND);

    let started = w.clock.now();
    let slow = OutboxWorker::new(
        w.app.store.clone(),
        Arc::new(w.app.settings.clone()),
        Arc::new(SlowClock {
            clock: w.clock.clone(),
            step: 5 * SECOND,
        }),
        Default::default(),
    );
    slow.tick().await.unwrap();

    let outbox = &w.app.settings.outbox;
    // The round's first reading of the clock moved it one step before the claim.
    let lease_until = started + 5 * SECOND + outbox.lease_secs as Millis * 1000;
    let last_safe_start = lease_until - outbox.request_timeout_secs as Millis * 1000;
    let calls = w.crm.state.requests();
    assert!(!calls.is_empty(), "the round did start");
    assert!(
        calls.iter().all(|call| call.at <= last_safe_start),
        "a call started after {last_safe_start}: {:?}",
        calls.iter().map(|call| call.at).collect::<Vec<_>>()
    );
    let (pending, _) = w.app.store.outbox_backlog(T0).await.unwrap();
    assert!(
        pending > 0,
        "records the round did not reach were handed back"
    );

    // Later rounds (the clock moving on for the rate limit) deliver the rest.
    for _ in 0..6 {
        w.clock.advance(10 * SECOND);
        w.app.deliver().await;
    }
    let (pending, _) = w.app.store.outbox_backlog(T0).await.unwrap();
    assert_eq!(pending, 0);
    for record in &claimed {
        let id = &record.rows[0].object_id;
        assert!(writes_to(&w.crm, id) <= 1, "record {id} written twice");
    }
}

//! Partitioned processing (README "Processing"): the rules that cross partitions give the result
//! serial processing gives, whatever the arrival order and however processors interleave; a
//! write racing a link is never lost; one bad event or recheck fails alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use referral_sync::clock::{DAY, MINUTE};
use referral_sync::config::Settings;
use referral_sync::domain::Crm;
use referral_sync::ingest::partition_of;
use referral_sync::processing::InboxProcessor;
use referral_sync::store::{RecordFacts, RecordKey, RecordLink, Referral, Store};
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::senders::{configure, example_settings, hubspot_event, iso};
use crate::support::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

both_backends!(
    a_deal_whose_contacts_sit_in_different_partitions_takes_the_earliest_in_any_order,
    a_merge_across_partitions_keeps_the_earliest_in_any_order,
    a_contacts_link_arriving_after_its_deals_association_links_the_deal,
    a_deal_won_before_its_earliest_contact_joined_rewards_the_earliest,
    a_fact_racing_a_link_is_never_lost,
    one_event_the_database_refuses_fails_alone,
    a_recheck_that_cannot_be_read_fails_alone_and_is_retried_later,
);

/// How the stored events are processed.
#[derive(Debug, Clone, Copy)]
enum Schedule {
    /// One event per batch, one processor: the serial reference.
    Serial,
    /// Everything in one batch.
    OneBatch,
    /// Several processors at once, one event and one partition per batch each, so their
    /// transactions interleave as much as they can.
    Concurrent(usize),
}

const SCHEDULES: [Schedule; 3] = [
    Schedule::Serial,
    Schedule::OneBatch,
    Schedule::Concurrent(3),
];

async fn app(backend: Backend, schedule: Schedule) -> Option<TestApp> {
    spawn_app_with(backend, SpawnOptions::default(), |s| {
        configure(s);
        s.programs = example_settings().programs;
        s.processing.batch_events = match schedule {
            Schedule::OneBatch => 1000,
            _ => 1,
        };
        s.processing.partitions_per_batch = 1;
    })
    .await
}

async fn process(app: &TestApp, schedule: Schedule) {
    let Schedule::Concurrent(n) = schedule else {
        app.process().await;
        return;
    };
    let settings: Arc<Settings> = Arc::new(app.settings.clone());
    let processors: Vec<InboxProcessor> = (0..n)
        .map(|_| {
            InboxProcessor::new(
                app.store.clone(),
                settings.clone(),
                app.clock.clone(),
                Arc::new(tokio::sync::Notify::new()),
            )
        })
        .collect();
    // Every processor ticks until none has anything left.
    loop {
        let rounds = futures_util::future::join_all(processors.iter().map(|p| p.tick())).await;
        let idle = rounds
            .into_iter()
            .map(|r| r.expect("processing"))
            .all(|r| r.is_idle());
        if idle && app.process().await == 0 {
            return;
        }
    }
}

fn signup(id: &str, email: &str, code: &str, at: i64) -> Value {
    json!({"id": id, "type": "signup.created", "occurred_at": iso(at),
           "data": {"email": email, "referral_code": code, "source": "link", "market": "US"}})
}

fn email_change(event_id: u64, contact: u64, email: &str, at: i64) -> Value {
    hubspot_event(
        event_id,
        "contact.propertyChange",
        contact,
        at,
        json!({"propertyName": "email", "propertyValue": email}),
    )
}

fn associate(event_id: u64, deal: u64, contact: u64, at: i64) -> Value {
    hubspot_event(
        event_id,
        "deal.associationChange",
        deal,
        at,
        json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact}),
    )
}

fn dealstage(event_id: u64, deal: u64, stage: &str, at: i64) -> Value {
    hubspot_event(
        event_id,
        "deal.propertyChange",
        deal,
        at,
        json!({"propertyName": "dealstage", "propertyValue": stage}),
    )
}

/// One thing to send: a product event, or one HubSpot event in a batch of its own.
#[derive(Debug, Clone)]
enum Send {
    Product(Value),
    HubSpot(Value),
}

async fn send_all(app: &TestApp, sends: &[Send]) {
    for s in sends {
        match s {
            Send::Product(e) => app.signup(e.clone()).await,
            Send::HubSpot(e) => app.hubspot(json!([e])).await,
        }
    }
}

fn contact(id: &str) -> RecordKey {
    RecordKey {
        crm: Crm::HubSpot,
        object_type: "contact".into(),
        object_id: id.into(),
    }
}

fn deal(id: &str) -> RecordKey {
    RecordKey {
        crm: Crm::HubSpot,
        object_type: "deal".into(),
        object_id: id.into(),
    }
}

/// Everything derived that processing decides, in a form two runs can be compared by: each
/// record's link (as the referee's email and first touch), each referral's milestones, each
/// reward, and the audited decisions per record.
async fn derived(app: &TestApp, records: &[RecordKey]) -> Value {
    let mut out = BTreeMap::new();
    let mut referrals: BTreeMap<String, Referral> = BTreeMap::new();
    for key in records {
        let record = app.store.crm_record(key).await.unwrap();
        let link = match record.as_ref().and_then(|r| r.referral_id.clone()) {
            Some(id) => {
                let r = app
                    .store
                    .referral(&id)
                    .await
                    .unwrap()
                    .expect("linked referral");
                referrals.insert(r.email().to_string(), r.clone());
                json!({"referee": r.email(), "first_touch_at": record.as_ref().and_then(|r| r.first_touch_at),
                       "referrer": record.as_ref().and_then(|r| r.referrer_code.clone())})
            }
            None => Value::Null,
        };
        // Which decisions were audited, not what they replaced: that is history, not result
        // (serial processing links a deal to the first contact's touch and relinks it when an
        // earlier one joins; a batch that sees both links once; a merge may find its survivor
        // linked or not yet).
        let audit: Vec<String> = app
            .store
            .audit_entries("crm_record", &key.label())
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.record.action != "deal_relinked")
            .map(|a| a.record.action)
            .collect();
        let rewards: Vec<String> = app
            .store
            .rewards_of_deal(key.crm, &key.object_id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                format!(
                    "{} {} {} {} for {}",
                    r.line.beneficiary,
                    r.line.status,
                    r.line.amount,
                    r.line.currency,
                    r.line.referrer_code.as_deref().unwrap_or("-")
                )
            })
            .collect();
        out.insert(
            key.label(),
            json!({"link": link, "audit": audit, "rewards": rewards}),
        );
    }
    for (email, r) in referrals {
        out.insert(
            email,
            json!({"qualified_at": r.qualified_at, "won_at": r.won_at}),
        );
    }
    json!(out)
}

/// Runs `sends` in each schedule on a fresh database and returns what was derived, asserting
/// every schedule agrees with the serial one and nothing failed.
async fn same_under_every_schedule(
    backend: Backend,
    sends: &[Send],
    records: &[RecordKey],
) -> Option<Value> {
    let mut reference: Option<Value> = None;
    for schedule in SCHEDULES {
        let app = app(backend, schedule).await?;
        send_all(&app, sends).await;
        process(&app, schedule).await;
        let statuses = app.store.inbox_status_counts().await.unwrap();
        assert!(
            statuses
                .iter()
                .all(|(s, _)| s == "processed" || s == "ignored"),
            "{schedule:?}: {statuses:?}"
        );
        let got = derived(&app, records).await;
        match &reference {
            None => reference = Some(got),
            Some(serial) => assert_eq!(&got, serial, "{schedule:?} differs from serial processing"),
        }
    }
    reference
}

/// Two HubSpot contact ids in different partitions (and different from `avoid`'s).
fn contacts_in_different_partitions(avoid: &[u64]) -> (u64, u64) {
    let part = |id: u64| partition_of(&format!("hubspot:contact:{id}"));
    let taken: Vec<i32> = avoid
        .iter()
        .map(|d| partition_of(&format!("hubspot:deal:{d}")))
        .collect();
    let first = (100..)
        .find(|id| !taken.contains(&part(*id)))
        .expect("an id");
    let second = (first + 1..)
        .find(|id| part(*id) != part(first) && !taken.contains(&part(*id)))
        .expect("an id");
    (first, second)
}

async fn a_deal_whose_contacts_sit_in_different_partitions_takes_the_earliest_in_any_order(
    backend: Backend,
) {
    let deal_id = 900;
    let (early, late) = contacts_in_different_partitions(&[deal_id]);
    let events = [
        Send::Product(signup("s-late", "late@x.io", "LATE-1", T0)),
        Send::Product(signup("s-early", "early@x.io", "EARLY-1", T0 - 10 * DAY)),
        Send::HubSpot(email_change(1, late, "late@x.io", T0 + MINUTE)),
        Send::HubSpot(email_change(2, early, "early@x.io", T0 + MINUTE)),
        Send::HubSpot(associate(3, deal_id, late, T0 + 2 * MINUTE)),
        Send::HubSpot(associate(4, deal_id, early, T0 + 3 * MINUTE)),
        Send::HubSpot(dealstage(5, deal_id, "closedwon", T0 + 4 * MINUTE)),
    ];
    let records = [
        contact(&early.to_string()),
        contact(&late.to_string()),
        deal(&deal_id.to_string()),
    ];
    // Both arrival orders of the contacts' stories, and the deal's events first.
    let mut reversed = events.to_vec();
    reversed.reverse();
    for order in [events.to_vec(), reversed] {
        let Some(result) = same_under_every_schedule(backend, &order, &records).await else {
            return;
        };
        let linked = &result[deal(&deal_id.to_string()).label()]["link"];
        assert_eq!(linked["referrer"], "EARLY-1", "{result:#}");
        assert_eq!(linked["first_touch_at"], T0 - 10 * DAY);
        assert_eq!(result["early@x.io"]["won_at"], T0 + 4 * MINUTE);
        assert_eq!(
            result[deal(&deal_id.to_string()).label()]["rewards"]
                .as_array()
                .map(Vec::len),
            Some(2),
            "one reward per beneficiary: {result:#}"
        );
    }
}

async fn a_merge_across_partitions_keeps_the_earliest_in_any_order(backend: Backend) {
    let (survivor, merged) = contacts_in_different_partitions(&[]);
    let events = [
        Send::Product(signup("s-new", "new@x.io", "NEW-1", T0)),
        Send::Product(signup("s-old", "old@x.io", "OLD-1", T0 - 5 * DAY)),
        Send::HubSpot(email_change(1, survivor, "new@x.io", T0 + MINUTE)),
        Send::HubSpot(email_change(2, merged, "old@x.io", T0 + MINUTE)),
        Send::HubSpot(hubspot_event(
            3,
            "contact.merge",
            survivor,
            T0 + DAY,
            json!({"primaryObjectId": survivor, "mergedObjectIds": [merged]}),
        )),
    ];
    let records = [contact(&survivor.to_string()), contact(&merged.to_string())];
    let mut merge_first = events.to_vec();
    merge_first.rotate_right(1);
    for order in [events.to_vec(), merge_first] {
        let Some(result) = same_under_every_schedule(backend, &order, &records).await else {
            return;
        };
        let kept = &result[contact(&survivor.to_string()).label()];
        assert_eq!(kept["link"]["referrer"], "OLD-1", "{result:#}");
        assert_eq!(kept["link"]["first_touch_at"], T0 - 5 * DAY);
        assert_eq!(kept["audit"], json!(["merge_kept_earliest"]));
    }
}

async fn a_contacts_link_arriving_after_its_deals_association_links_the_deal(backend: Backend) {
    let deal_id = 700;
    let (person, _) = contacts_in_different_partitions(&[deal_id]);
    let association_first = [
        Send::HubSpot(associate(1, deal_id, person, T0)),
        Send::HubSpot(dealstage(2, deal_id, "qualifiedtobuy", T0 + DAY)),
        Send::HubSpot(email_change(3, person, "ana@x.io", T0 + MINUTE)),
        Send::Product(signup("s-ana", "ana@x.io", "ACME-7", T0 - DAY)),
    ];
    let records = [contact(&person.to_string()), deal(&deal_id.to_string())];
    let mut signup_first = association_first.to_vec();
    signup_first.reverse();
    for order in [association_first.to_vec(), signup_first] {
        let Some(result) = same_under_every_schedule(backend, &order, &records).await else {
            return;
        };
        assert_eq!(
            result[deal(&deal_id.to_string()).label()]["link"]["referrer"],
            "ACME-7",
            "{result:#}"
        );
        assert_eq!(result["ana@x.io"]["qualified_at"], T0 + DAY);
    }
}

/// A deal won while linked to a later first touch (its earliest contact joined it later): the
/// reward not yet announced is decided again for the earliest referral, and the later referral
/// keeps no milestone from a deal that is not its own.
async fn a_deal_won_before_its_earliest_contact_joined_rewards_the_earliest(backend: Backend) {
    let Some(app) = app(backend, Schedule::OneBatch).await else {
        return;
    };
    let (early, late) = contacts_in_different_partitions(&[500]);
    for e in [
        signup("s-late", "late@x.io", "LATE-1", T0),
        signup("s-early", "early@x.io", "EARLY-1", T0 - 10 * DAY),
    ] {
        app.signup(e).await;
    }
    app.hubspot(json!([
        email_change(1, late, "late@x.io", T0 + MINUTE),
        email_change(2, early, "early@x.io", T0 + MINUTE),
        associate(3, 500, late, T0 + 2 * MINUTE),
        dealstage(4, 500, "closedwon", T0 + DAY),
    ]))
    .await;
    app.process().await;
    let first = app
        .store
        .rewards_of_deal(Crm::HubSpot, "500")
        .await
        .unwrap();
    assert!(
        !first.is_empty()
            && first
                .iter()
                .all(|r| r.line.referrer_code.as_deref() == Some("LATE-1")),
        "first the later referral's: {first:?}"
    );
    let late_referral = app
        .store
        .referral_by_email("late@x.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late_referral.won_at, Some(T0 + DAY));

    app.hubspot(json!([associate(5, 500, early, T0 + 2 * DAY)]))
        .await;
    app.process().await;

    let rewards = app
        .store
        .rewards_of_deal(Crm::HubSpot, "500")
        .await
        .unwrap();
    assert_eq!(rewards.len(), 2, "{rewards:?}");
    assert!(
        rewards
            .iter()
            .all(|r| r.line.referrer_code.as_deref() == Some("EARLY-1")),
        "decided again for the earliest: {rewards:?}"
    );
    let late_referral = app
        .store
        .referral_by_email("late@x.io")
        .await
        .unwrap()
        .unwrap();
    let early_referral = app
        .store
        .referral_by_email("early@x.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (late_referral.qualified_at, late_referral.won_at),
        (None, None)
    );
    assert_eq!(early_referral.won_at, Some(T0 + DAY));
    for before in &first {
        let audit = app.store.audit_entries("reward", &before.id).await.unwrap();
        assert!(
            audit.iter().any(|a| a.record.action == "reward_withdrawn"),
            "the first decision is withdrawn, audited: {audit:?}"
        );
    }
}

/// The reconcile step links a deal while a batch of facts changes it: whichever writes second
/// sees the other's change, so the link is rechecked (link first) or the new stage is known to
/// the link (facts first).
async fn a_fact_racing_a_link_is_never_lost(backend: Backend) {
    let Some(app) = app(backend, Schedule::OneBatch).await else {
        return;
    };
    let store: Store = app.store.clone();
    let key = deal("55");
    let mut tx = store.begin().await.unwrap();
    tx.apply_record_facts(&[RecordFacts::new(&key)], T0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (referral, _) = {
        let mut tx = store.begin().await.unwrap();
        let r = tx
            .insert_referral(
                "race@x.io",
                &referral_sync::store::Attribution {
                    referrer_code: Some("ACME-7".into()),
                    source: Some("link".into()),
                    market: Some("US".into()),
                    first_touch_at: T0,
                },
                T0,
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        r
    };
    let won = |at| RecordFacts {
        stage_id: Some("closedwon".into()),
        stage: Some("won".into()),
        stage_at: Some(at),
        ..RecordFacts::new(&key)
    };

    // Link first: the facts written meanwhile come back with the link.
    let mut linking = store.begin().await.unwrap();
    linking
        .link_records(
            &[RecordLink::new(&key, referral.id(), referral.attribution())],
            T0,
        )
        .await
        .unwrap();
    let facts = {
        let store = store.clone();
        let won = won(T0 + DAY);
        tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let linked = tx.apply_record_facts(&[won], T0 + DAY).await.unwrap();
            tx.commit().await.unwrap();
            linked
        })
    };
    until_someone_waits(&store).await;
    linking.commit().await.unwrap();
    let linked = facts.await.unwrap();
    assert_eq!(
        linked[0].1.as_deref(),
        Some(referral.id()),
        "facts written after the link see it, so the deal is rechecked"
    );

    // Facts first: the link sees the stage written meanwhile.
    let mut writing = store.begin().await.unwrap();
    writing
        .apply_record_facts(&[won(T0 + 2 * DAY)], T0 + 2 * DAY)
        .await
        .unwrap();
    let link = {
        let store = store.clone();
        let link = RecordLink::new(&key, referral.id(), referral.attribution());
        tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let after = tx.link_records(&[link], T0 + 2 * DAY).await.unwrap();
            tx.commit().await.unwrap();
            after
        })
    };
    until_someone_waits(&store).await;
    writing.commit().await.unwrap();
    let after = link.await.unwrap();
    assert_eq!(
        after[0].stage_occurred_at,
        Some(T0 + 2 * DAY),
        "a link written after the facts reads them"
    );
}

/// Until the spawned transaction waits for the open one's lock (PostgreSQL shows it; on SQLite,
/// where the second writer waits inside the busy handler, the order is right either way).
async fn until_someone_waits(store: &Store) {
    for _ in 0..1_000 {
        if !store.sessions_waiting_on_locks().await.unwrap().is_empty() {
            return;
        }
        if store.kind() == referral_sync::store::BackendKind::Sqlite {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the racing transaction never waited for the lock");
}

async fn one_event_the_database_refuses_fails_alone(backend: Backend) {
    let Some(app) = app(backend, Schedule::OneBatch).await else {
        return;
    };
    // PostgreSQL text cannot hold U+0000; SQLite's can.
    app.hubspot(json!([
        dealstage(1, 31, "qualifiedtobuy", T0),
        hubspot_event(
            2,
            "deal.propertyChange",
            32,
            T0,
            json!({"propertyName": "amount", "propertyValue": "12\u{0}00"})
        ),
        dealstage(3, 33, "qualifiedtobuy", T0),
    ]))
    .await;
    app.process().await;

    let events = app.store.list_inbox(None, 10).await.unwrap();
    let statuses: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|e| (e.status.as_str(), e.status_reason.as_deref()))
        .collect();
    assert_eq!(statuses[0].0, "processed");
    assert_eq!(statuses[2].0, "processed");
    match backend {
        Backend::Postgres => {
            assert_eq!(statuses[1].0, "failed", "{statuses:?}");
            assert!(
                statuses[1].1.is_some_and(|r| r.contains("refused")),
                "the reason names the refusal: {statuses:?}"
            );
        }
        Backend::Sqlite => assert_eq!(statuses[1].0, "processed", "{statuses:?}"),
    }
    for id in ["31", "33"] {
        let record = app.store.crm_record(&deal(id)).await.unwrap().unwrap();
        assert_eq!(record.stage.as_deref(), Some("qualified"));
    }
}

async fn a_recheck_that_cannot_be_read_fails_alone_and_is_retried_later(backend: Backend) {
    let Some(app) = app(backend, Schedule::OneBatch).await else {
        return;
    };
    let mut tx = app.store.begin().await.unwrap();
    tx.queue_rechecks(
        &[referral_sync::store::NewRecheck {
            kind: referral_sync::store::RecheckKind::Record,
            subject: "not a record".into(),
            detail: None,
        }],
        T0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.signup(signup("s-ok", "ok@x.io", "ACME-7", T0)).await;
    app.hubspot(json!([email_change(1, 77, "ok@x.io", T0 + MINUTE)]))
        .await;
    app.process().await;

    let linked = app.store.crm_record(&contact("77")).await.unwrap().unwrap();
    assert_eq!(
        linked.referrer_code.as_deref(),
        Some("ACME-7"),
        "the good ones go through"
    );
    let (queued, failing) = app.store.reconcile_backlog().await.unwrap();
    assert_eq!(
        (queued, failing),
        (1, 1),
        "the bad one waits, with its error"
    );
    let waiting = app.store.failing_rechecks().await.unwrap();
    assert!(
        waiting[0].1.contains("not a record"),
        "the error names the cause: {waiting:?}"
    );
    // Due again a minute later, and failing again, it is still only that one.
    app.clock.advance(2 * MINUTE);
    app.process().await;
    assert_eq!(app.store.reconcile_backlog().await.unwrap(), (1, 1));
}

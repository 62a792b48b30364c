//! The store's contract, run on both backends: what one backend guarantees, the other must too.

use referral_sync::store::{Ingested, NewInboxEvent, Readiness};

use crate::both_backends;
use crate::support::{test_store, Backend, T0};

both_backends!(
    migrations_are_idempotent_and_leave_the_store_ready,
    inbox_append_stores_each_event_once,
    inbox_append_keeps_sources_apart_and_arrival_order,
);

fn event(source: &str, key: &str) -> NewInboxEvent {
    NewInboxEvent {
        source: source.into(),
        dedupe_key: key.into(),
        event_type: "contact.creation".into(),
        object_key: Some(format!("hubspot:contact:{key}")),
        occurred_at: Some(T0 - 1_000),
        received_at: T0,
        meta: r#"{"signature":"v3"}"#.into(),
        payload: format!(r#"{{"objectId":"{key}","name":"Zoë"}}"#),
    }
}

async fn migrations_are_idempotent_and_leave_the_store_ready(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };

    store.migrate().await.expect("second run is a no-op");

    assert_eq!(store.readiness().await.unwrap(), Readiness::Ready);
}

async fn inbox_append_stores_each_event_once(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };

    let first = store
        .append_inbox(&[
            event("hubspot", "a"),
            event("hubspot", "b"),
            event("hubspot", "a"),
        ])
        .await
        .unwrap();
    let again = store
        .append_inbox(&[event("hubspot", "b"), event("hubspot", "c")])
        .await
        .unwrap();

    assert!(matches!(first[0], Ingested::New(_)));
    assert!(matches!(first[1], Ingested::New(_)));
    assert_eq!(
        first[2],
        Ingested::Duplicate,
        "a repeat inside one batch is a duplicate"
    );
    assert_eq!(
        again[0],
        Ingested::Duplicate,
        "a repeat in a later batch is a duplicate"
    );
    assert!(matches!(again[1], Ingested::New(_)));
    assert_eq!(store.count_inbox(Some("hubspot")).await.unwrap(), 3);
    let stored = store.list_inbox(Some("hubspot"), 10).await.unwrap();
    assert_eq!(
        stored[0].payload, r#"{"objectId":"a","name":"Zoë"}"#,
        "payload kept byte-exact"
    );
    assert_eq!(stored[0].occurred_at, Some(T0 - 1_000));
    assert_eq!(stored[0].status.as_str(), "pending");
}

async fn inbox_append_keeps_sources_apart_and_arrival_order(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };
    let batch: Vec<NewInboxEvent> = (0..450)
        .map(|i| event("hubspot", &format!("k{i}")))
        .collect();

    let outcome = store.append_inbox(&batch).await.unwrap();
    let other = store
        .append_inbox(&[event("signup:app", "k1")])
        .await
        .unwrap();

    assert!(
        outcome.iter().all(|o| matches!(o, Ingested::New(_))),
        "450 rows span several statements"
    );
    let ids: Vec<i64> = outcome
        .iter()
        .map(|o| match o {
            Ingested::New(id) => *id,
            _ => 0,
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids follow input order"
    );
    assert!(
        matches!(other[0], Ingested::New(_)),
        "same key, other source: not a duplicate"
    );
    assert_eq!(store.count_inbox(None).await.unwrap(), 451);
}

//! The store's contract, run on both backends: what one backend guarantees, the other must too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use referral_sync::config::MIN_CONNECTIONS;
use referral_sync::domain::{DeliveryStatus, EventSource};
use referral_sync::reports::funnel::FunnelFilter;
use referral_sync::store::{
    claim_heads_sql, Ingested, NewInboxEvent, Readiness, SqliteInboxConnection, Store,
};

use crate::both_backends;
use crate::support::{default_settings, test_store, test_store_with, Backend, T0};

both_backends!(
    migrations_are_idempotent_and_leave_the_store_ready,
    inbox_append_stores_each_event_once,
    inbox_append_keeps_sources_apart_and_arrival_order,
    sqlite_inbox_writer_connection_is_fully_durable,
    processing_batches_join_by_key_and_nothing_else_does,
    reads_begun_together_see_one_snapshot_while_others_commit,
    reports_at_once_on_the_smallest_pool_all_finish,
    a_delivery_backlog_the_statistics_have_not_seen_is_claimed_by_record,
    tables_that_changed_by_half_since_their_statistics_are_analysed,
    records_a_batch_call_delivered_are_finished_together_except_a_lost_lease,
);

/// The two ways events reach the inbox: the store's pool (every backend), and on SQLite the
/// webhook writer thread's own connection. Both must keep the same contract.
enum Appender {
    Pool,
    WriterConnection(SqliteInboxConnection),
}

impl Appender {
    /// The pool, and on SQLite the writer connection too.
    fn all(store: &Store) -> Vec<Appender> {
        let mut all = vec![Appender::Pool];
        all.extend(
            store
                .open_sqlite_inbox_connection()
                .unwrap()
                .map(Appender::WriterConnection),
        );
        all
    }

    async fn append(&mut self, store: &Store, events: &[NewInboxEvent]) -> Vec<Ingested> {
        match self {
            Appender::Pool => store.append_inbox(events).await.unwrap(),
            Appender::WriterConnection(connection) => connection.append(events).unwrap(),
        }
    }
}

fn event(source: &EventSource, key: &str) -> NewInboxEvent {
    NewInboxEvent {
        source: source.clone(),
        dedupe_key: key.into(),
        event_type: "contact.creation".into(),
        object_key: Some(format!("hubspot:contact:{key}")),
        occurred_at: Some(T0 - 1_000),
        received_at: T0,
        meta: r#"{"signature":"v3"}"#.into(),
        payload: format!(r#"{{"objectId":"{key}","name":"Zoë"}}"#),
        partition_no: referral_sync::ingest::partition_of(&format!("hubspot:contact:{key}")),
    }
}

async fn migrations_are_idempotent_and_leave_the_store_ready(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };

    store.migrate().await.expect("second run is a no-op");

    assert_eq!(store.readiness().await.unwrap(), Readiness::Ready);
}

/// The processor's transactions are planned as per-key lookups whatever PostgreSQL's statistics
/// say; the setting ends with the transaction, so reports and other writes plan freely.
async fn processing_batches_join_by_key_and_nothing_else_does(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };
    for _ in 0..2 {
        let mut batch = store.begin_batch().await.unwrap();
        assert!(batch.joins_by_key().await.unwrap());
        batch.commit().await.unwrap();
        let mut other = store.begin().await.unwrap();
        assert_eq!(
            other.joins_by_key().await.unwrap(),
            matches!(backend, Backend::Sqlite),
            "only the batch's own transaction"
        );
        other.rollback().await.unwrap();
    }
}

async fn inbox_append_stores_each_event_once(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };
    for (round, mut appender) in Appender::all(&store).into_iter().enumerate() {
        let source = EventSource::Product(format!("source-{round}"));
        each_event_once(&store, &mut appender, &source).await;
    }
}

async fn each_event_once(store: &Store, appender: &mut Appender, source: &EventSource) {
    let first = appender
        .append(
            store,
            &[event(source, "a"), event(source, "b"), event(source, "a")],
        )
        .await;
    let again = appender
        .append(store, &[event(source, "b"), event(source, "c")])
        .await;

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
    assert_eq!(store.count_inbox(Some(source)).await.unwrap(), 3);
    let stored = store.list_inbox(Some(source), 10).await.unwrap();
    assert_eq!(
        stored[0].event.payload, r#"{"objectId":"a","name":"Zoë"}"#,
        "payload kept byte-exact"
    );
    assert_eq!(stored[0].event.occurred_at, Some(T0 - 1_000));
    assert_eq!(stored[0].status.as_str(), "pending");
}

async fn inbox_append_keeps_sources_apart_and_arrival_order(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };
    for (round, mut appender) in Appender::all(&store).into_iter().enumerate() {
        let (source, other_source) = (
            EventSource::Product(format!("hubspot-{round}")),
            EventSource::Product(format!("app-{round}")),
        );
        let batch: Vec<NewInboxEvent> =
            (0..450).map(|i| event(&source, &format!("k{i}"))).collect();

        let outcome = appender.append(&store, &batch).await;
        let other = appender.append(&store, &[event(&other_source, "k1")]).await;

        sources_apart_and_in_order(&outcome, &other);
        assert_eq!(
            store.count_inbox(None).await.unwrap(),
            451 * (round as i64 + 1)
        );
    }
}

fn sources_apart_and_in_order(outcome: &[Ingested], other: &[Ingested]) {
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
}

async fn sqlite_inbox_writer_connection_is_fully_durable(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };

    let connection = store.open_sqlite_inbox_connection().unwrap();

    match backend {
        Backend::Sqlite => assert_eq!(
            connection
                .expect("a SQLite store has one")
                .pragma("synchronous")
                .unwrap(),
            2,
            "synchronous=FULL: an fsync per commit, as on the pool's connections"
        ),
        Backend::Postgres => assert!(connection.is_none(), "PostgreSQL writes through the pool"),
    }
}

/// sqlx percent-decodes the SQLite URL's path; the inbox writer's own connection must open that
/// same file, or webhooks would go to an empty database the processor never reads.
#[tokio::test]
async fn a_percent_encoded_sqlite_path_is_one_file_for_the_pool_and_the_inbox_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = default_settings();
    settings.database.url = referral_sync::config::Secret::new(format!(
        "sqlite://{}/my%20data/referral.db",
        dir.path().display()
    ));
    let store = Store::connect(&settings.database).await.unwrap();
    store.migrate().await.unwrap();

    let mut writer = store.open_sqlite_inbox_connection().unwrap().unwrap();
    writer.append(&[event(&EventSource::HubSpot, "a")]).unwrap();

    assert_eq!(store.count_inbox(None).await.unwrap(), 1);
    assert!(dir.path().join("my data/referral.db").exists());
    assert!(!dir.path().join("my%20data").exists());
}

/// A writer connection to a database without the schema fails when it opens (and the service
/// falls back to the pool), not on the first webhook.
#[tokio::test]
async fn the_inbox_writer_connection_refuses_a_database_without_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = default_settings();
    settings.database.url = referral_sync::config::Secret::new(format!(
        "sqlite://{}/unmigrated.db",
        dir.path().display()
    ));
    let store = Store::connect(&settings.database).await.unwrap();

    assert!(store.open_sqlite_inbox_connection().is_err());
}

/// A report's reads run side by side on several connections (`Store::begin_reads`) and must still
/// add up: each sees the same commits, also while another connection commits all the time.
async fn reads_begun_together_see_one_snapshot_while_others_commit(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let source = EventSource::HubSpot;
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                store
                    .append_inbox(&[event(&source, &format!("write-{written}"))])
                    .await
                    .unwrap();
                written += 1;
            }
            written
        }
    });
    let mut seen = Vec::new();
    for _ in 0..200 {
        let [mut first, mut second, mut third] = store.begin_reads::<3>().await.unwrap();
        let counts = [
            first.count_inbox(None).await.unwrap(),
            second.count_inbox(None).await.unwrap(),
            third.count_inbox(None).await.unwrap(),
        ];
        assert!(
            counts.iter().all(|n| *n == counts[0]),
            "one snapshot, yet the readers counted {counts:?}"
        );
        for tx in [first, second, third] {
            tx.rollback().await.unwrap();
        }
        seen.push(counts[0]);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    seen.dedup();
    assert!(
        seen.len() > 20,
        "the writer committed between the snapshots ({} distinct counts of {written} writes)",
        seen.len()
    );
}

/// Each report checks out several readers; several reports at once on the smallest pool the
/// config allows must not each hold part of it while waiting for the rest.
async fn reports_at_once_on_the_smallest_pool_all_finish(backend: Backend) {
    let Some((store, _db, _)) = test_store_with(backend, |database| {
        database.max_connections = MIN_CONNECTIONS;
        // Waiting for each other would end in this timeout, as an error.
        database.acquire_timeout_secs = 2;
    })
    .await
    else {
        return;
    };
    let filter = FunnelFilter::default();
    let reports = (0..6).map(|_| store.funnel_and_baseline_facts(&filter, T0));
    let facts = futures_util::future::try_join_all(reports)
        .await
        .expect("every report finishes");
    assert_eq!(facts.len(), 6);
}

/// A backlog builds up after the statistics were taken while pending rows were rare (a CRM
/// outage, a burst): the claim must still find each record's head through the pending rows' own
/// index, not scan every pending row per pending row (3.6 s per claim with 6,000 rows).
async fn a_delivery_backlog_the_statistics_have_not_seen_is_claimed_by_record(backend: Backend) {
    let Some((store, _db, url)) = test_store_with(backend, |_| {}).await else {
        return;
    };
    let rows = |status: &str, n: i64, records: i64| {
        format!(
            "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) \
             INSERT INTO outbox (crm, object_type, object_id, kind, payload, status, \
                 next_attempt_at, created_at) \
             SELECT 'hubspot', 'contact', 'c' || (g % {records}), 'update_properties', '{{}}', \
                 '{status}', 0, 0 FROM s"
        )
    };
    let sql = claim_heads_sql(store.kind());
    let plan: Vec<String> = match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            for statement in [
                rows("delivered", 5_000, 3_000),
                "ANALYZE outbox".into(),
                rows("pending", 2_000, 700),
            ] {
                sqlx::query(&statement).execute(&pool).await.unwrap();
            }
            sqlx::query_scalar(&format!("EXPLAIN {sql}"))
                .bind(i64::MAX)
                .bind(100_i64)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            for statement in [rows("delivered", 500, 300), rows("pending", 200, 70)] {
                sqlx::query(&statement).execute(&pool).await.unwrap();
            }
            sqlx::query_as::<_, (i64, i64, i64, String)>(&format!("EXPLAIN QUERY PLAN {sql}"))
                .bind(i64::MAX)
                .bind(100_i64)
                .fetch_all(&pool)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, _, _, detail)| detail)
                .collect()
        }
    };
    let plan = plan.join("\n");
    let by_record = plan
        .lines()
        .any(|line| line.contains("outbox_pending_by_record") && line.contains("object_id"))
        || plan
            .lines()
            .skip_while(|l| !l.contains("outbox_pending_by_record"))
            .any(|l| l.contains("Index Cond") && l.contains("object_id = o.object_id"));
    assert!(by_record, "each head looked up by record:\n{plan}");
    // And the claim itself: the oldest row of each record, nothing else.
    let claimed = store
        .claim_records("worker", i64::MAX - 1, i64::MAX, 1_000, 10)
        .await
        .unwrap();
    let records = match backend {
        Backend::Postgres => 700,
        Backend::Sqlite => 70,
    };
    assert_eq!(claimed.len(), records);
}

/// A batch call answers for many records; they are finished in one transaction, and a record
/// whose lease ran out and went to another worker meanwhile is left to that worker.
async fn records_a_batch_call_delivered_are_finished_together_except_a_lost_lease(
    backend: Backend,
) {
    let Some((store, _db, url)) = test_store_with(backend, |_| {}).await else {
        return;
    };
    // Three records with two pending writes each.
    let insert = "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 6) \
         INSERT INTO outbox (crm, object_type, object_id, kind, payload, status, \
             next_attempt_at, created_at) \
         SELECT 'hubspot', 'contact', 'c' || (g % 3), 'update_properties', '{}', 'pending', 0, 0 \
         FROM s";
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(insert).execute(&pool).await.unwrap();
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(insert).execute(&pool).await.unwrap();
        }
    }
    let claimed = store.claim_records("a", 10, 1_000, 10, 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    // "a" is slow: its lease runs out and "b" takes one record over.
    let taken = store
        .claim_records("b", 2_000, 60_000, 1, 10)
        .await
        .unwrap();
    let lost = taken[0].head_id;

    let delivered: Vec<(i64, Vec<i64>)> = claimed
        .iter()
        .map(|c| (c.head_id, c.rows.iter().map(|r| r.id).collect()))
        .collect();
    let not_held = store
        .finish_delivered("a", &delivered, 3_000)
        .await
        .unwrap();

    assert_eq!(not_held, [lost]);
    let rows = store.outbox_rows(None).await.unwrap();
    let lost_record = &claimed.iter().find(|c| c.head_id == lost).unwrap().rows[0].object_id;
    for row in rows {
        if &row.object_id == lost_record {
            assert_eq!(
                (row.status, row.delivered_at, row.attempts),
                (DeliveryStatus::Pending, None, 0),
                "{row:?}"
            );
        } else {
            assert_eq!(
                (row.status, row.delivered_at, row.attempts),
                (DeliveryStatus::Delivered, Some(3_000), 1),
                "{row:?}"
            );
        }
    }
    // Finished rows are not claimed again; the lost record is "b"'s until its lease runs out.
    assert!(store
        .claim_records("a", 4_000, 60_000, 10, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Autovacuum looks at a database once a minute; a table that changed by more than half since
/// its last ANALYZE gets fresh statistics from the processor (`Store::refresh_statistics`), so
/// the first minutes of a deployment or a burst are not planned from a table a fraction its size.
async fn tables_that_changed_by_half_since_their_statistics_are_analysed(backend: Backend) {
    let Some((store, _db, url)) = test_store_with(backend, |_| {}).await else {
        return;
    };
    let Backend::Postgres = backend else {
        // SQLite plans without collected statistics.
        assert_eq!(
            store.refresh_statistics().await.unwrap(),
            Vec::<String>::new()
        );
        return;
    };
    // One connection: the one whose counters the flush sends.
    let mut writer = sqlx::PgPool::connect(&url)
        .await
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let mut analysed = Vec::new();
    for (rows, expected) in [(3_000, true), (1_000, false), (2_000, true)] {
        sqlx::query(
            "INSERT INTO outbox (crm, object_type, object_id, kind, payload, next_attempt_at, \
                 created_at) \
             SELECT 'hubspot', 'contact', 'c' || g, 'update_properties', '{}', 0, 0 \
             FROM generate_series(1, $1) g",
        )
        .bind(rows)
        .execute(&mut *writer)
        .await
        .unwrap();
        // Counters reach the shared statistics when a transaction ends; make it this one.
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut *writer)
            .await
            .unwrap();
        let tables = store.refresh_statistics().await.unwrap();
        assert_eq!(
            tables.iter().any(|t| t == "outbox"),
            expected,
            "after {rows} more rows: {tables:?}"
        );
        let (estimate,): (f32,) =
            sqlx::query_as("SELECT reltuples FROM pg_class WHERE relname = 'outbox'")
                .fetch_one(&mut *writer)
                .await
                .unwrap();
        analysed.push(estimate);
    }
    // 3,000 rows: analysed. 1,000 more (a third): not yet. 2,000 more (half of 4,000 and more): again.
    assert_eq!(analysed, [3_000.0, 3_000.0, 6_000.0]);
}

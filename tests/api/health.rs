//! Liveness, readiness, request ids, JSON errors and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use referral_sync::supervisor::{WorkerFactory, WorkerState};
use tokio_util::sync::CancellationToken;

use crate::both_backends;
use crate::support::{spawn_app, spawn_app_with, Backend, SpawnOptions};

both_backends!(
    healthz_and_readyz_answer_200_on_a_migrated_database,
    readyz_answers_503_while_migrations_are_pending,
    every_response_carries_a_request_id,
    an_unknown_route_gets_the_json_error_body,
    shutdown_drains_and_the_server_stops_cleanly,
    readyz_says_when_processing_completes_no_round,
);

async fn readyz_says_when_processing_completes_no_round(backend: Backend) {
    let Some(app) = spawn_app_with(
        backend,
        SpawnOptions {
            run_workers: true,
            ..Default::default()
        },
        |_| {},
    )
    .await
    else {
        return;
    };
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Every round now fails: the reconcile queue is gone.
    app.execute_sql("ALTER TABLE reconcile_queue RENAME TO reconcile_queue_away")
        .await;
    assert!(app.processor.tick().await.is_err());
    app.clock
        .advance((app.settings.processing.stuck_after_secs as i64 + 1) * 1000);
    let stalled = app.get("/readyz").await;
    let status = stalled.status();
    let body: serde_json::Value = stalled.json().await.unwrap();

    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("completed no round"), "{message}");
    assert!(
        message.contains("reconcile_queue"),
        "names the last error: {message}"
    );

    app.execute_sql("ALTER TABLE reconcile_queue_away RENAME TO reconcile_queue")
        .await;
    app.processor.tick().await.expect("a round completes again");
    assert_eq!(app.get("/readyz").await.status(), 200);
}

async fn healthz_and_readyz_answer_200_on_a_migrated_database(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };

    let health = app.get("/healthz").await;
    let ready = app.get("/readyz").await;

    assert_eq!(health.status(), 200);
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

async fn readyz_answers_503_while_migrations_are_pending(backend: Backend) {
    let Some(app) = spawn_app_with(
        backend,
        SpawnOptions {
            migrate: false,
            ..Default::default()
        },
        |_| {},
    )
    .await
    else {
        return;
    };

    let before = app.get("/readyz").await;
    assert_eq!(before.status(), 503);
    let body: serde_json::Value = before.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("migrations pending"));
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "liveness ignores the database"
    );

    app.store.migrate().await.unwrap();
    assert_eq!(app.get("/readyz").await.status(), 200);
}

async fn every_response_carries_a_request_id(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };

    let a = app.get("/healthz").await;
    let b = app.get("/no-such-thing").await;

    let id_a = a.headers()["x-request-id"].to_str().unwrap().to_string();
    let id_b = b.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id_a.len(), 36, "a UUID");
    assert_ne!(id_a, id_b, "one id per request");
}

async fn an_unknown_route_gets_the_json_error_body(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };

    let response = app.get("/api/v1/nope").await;

    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].is_string());
}

async fn shutdown_drains_and_the_server_stops_cleanly(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let address = app.url("/healthz");
    assert_eq!(app.get("/healthz").await.status(), 200);

    let stopped = app.stop().await;

    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(
        reqwest::get(address).await.is_err(),
        "nothing listens after shutdown"
    );
}

/// A worker for the supervisor to run: each start is reported on `started` (1, 2, …); the first
/// run fails (a panic, or an error with `as_error`) once `fail` is notified, later runs keep going
/// until shutdown.
fn flaky_worker(
    as_error: bool,
) -> (
    WorkerFactory,
    Arc<tokio::sync::Notify>,
    tokio::sync::mpsc::UnboundedReceiver<u32>,
) {
    let fail = Arc::new(tokio::sync::Notify::new());
    let (started, runs) = tokio::sync::mpsc::unbounded_channel();
    let trigger = fail.clone();
    let mut run = 0;
    let factory: WorkerFactory = Box::new(move |stop: CancellationToken| {
        run += 1;
        let (run, started, trigger) = (run, started.clone(), trigger.clone());
        Box::pin(async move {
            let _ = started.send(run);
            if run > 1 {
                stop.cancelled().await;
                return Ok(());
            }
            trigger.notified().await;
            if as_error {
                anyhow::bail!("injected failure: the queue went away");
            }
            panic!("injected failure: index out of range");
        })
    });
    (factory, fail, runs)
}

async fn next_start(runs: &mut tokio::sync::mpsc::UnboundedReceiver<u32>) -> u32 {
    tokio::time::timeout(Duration::from_secs(20), runs.recv())
        .await
        .expect("the worker was (re)started")
        .expect("the factory is alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_panics_is_restarted_and_counted() {
    let (worker, fail, mut runs) = flaky_worker(false);
    let app = spawn_app_with(
        Backend::Sqlite,
        SpawnOptions {
            workers: vec![("flaky_restarted".into(), worker)],
            ..Default::default()
        },
        |s| s.workers.restart_backoff_initial_ms = 10,
    )
    .await
    .unwrap();
    assert_eq!(next_start(&mut runs).await, 1);
    assert_eq!(app.get("/readyz").await.status(), 200);

    fail.notify_one();

    assert_eq!(next_start(&mut runs).await, 2, "restarted after the panic");
    app.workers
        .wait_until(|w| w.get("flaky_restarted") == Some(&WorkerState::Running))
        .await;
    assert_eq!(app.get("/readyz").await.status(), 200, "ready again");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("worker_restarts_total{worker=\"flaky_restarted\"} 1"),
        "{metrics}"
    );
    assert!(app.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_worker_that_is_down_and_shutdown_still_ends_cleanly() {
    let (worker, fail, mut runs) = flaky_worker(true);
    let app = spawn_app_with(
        Backend::Sqlite,
        SpawnOptions {
            workers: vec![("flaky_down".into(), worker)],
            ..Default::default()
        },
        // Long enough that the worker stays down for the whole test.
        |s| s.workers.restart_backoff_initial_ms = 3_600_000,
    )
    .await
    .unwrap();
    assert_eq!(next_start(&mut runs).await, 1);

    fail.notify_one();
    app.workers
        .wait_until(|w| matches!(w.get("flaky_down"), Some(WorkerState::Down { .. })))
        .await;

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("flaky_down"), "{message}");
    assert_eq!(app.get("/healthz").await.status(), 200, "still alive");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("worker_up{worker=\"flaky_down\"} 0"),
        "{metrics}"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.stop()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "the backoff wait ends at shutdown"
    );
}

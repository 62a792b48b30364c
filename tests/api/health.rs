//! Liveness, readiness, request ids, JSON errors and graceful shutdown.

use crate::both_backends;
use crate::support::{spawn_app, spawn_app_with, Backend, SpawnOptions};

both_backends!(
    healthz_and_readyz_answer_200_on_a_migrated_database,
    readyz_answers_503_while_migrations_are_pending,
    every_response_carries_a_request_id,
    an_unknown_route_gets_the_json_error_body,
    shutdown_drains_and_the_server_stops_cleanly,
);

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
            clock: None,
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

//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the database answers,
//! every migration this binary knows is applied, every supervised background worker runs, and
//! this replica's inbox processing completes rounds).

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::Readiness;

pub async fn get_healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn get_readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let down = state.workers.not_running();
    if !down.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "background worker(s) down: {}; see the log for why (restarting with backoff)",
            down.join(", ")
        )));
    }
    if let Some((health, started)) = &state.processing {
        let after = state.settings.processing.stuck_after_secs as i64 * 1000;
        if let Some(why) = health.stalled(state.clock.now(), *started, after) {
            return Err(ApiError::Unavailable(why));
        }
    }
    match state.store.readiness().await {
        Ok(Readiness::Ready) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
        Ok(Readiness::MigrationsPending(versions)) => Err(ApiError::Unavailable(format!(
            "database migrations pending: {versions:?}; run `referral-sync migrate`"
        ))),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            Err(ApiError::Unavailable("database unreachable".into()))
        }
    }
}

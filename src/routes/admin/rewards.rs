//! `GET /api/v1/rewards?status=` and the admin decisions `POST /api/v1/rewards/{id}/approve`,
//! `/reject` (reason required) and `/paid`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{AdminAccess, ReadAccess};
use super::{one_of, OptionalJson, Page, Paged};
use crate::error::ApiError;
use crate::rewards::engine::{decide, Decision, DecisionError};
use crate::startup::AppState;
use crate::store::Reward;

pub const STATUSES: &[&str] = &crate::domain::reward::RewardStatus::NAMES;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RewardQuery {
    /// pending, eligible, approved, paid, reversed, needs_review or rejected.
    pub status: Option<String>,
}

/// List rewards.
#[utoipa::path(get, path = "/api/v1/rewards", params(RewardQuery, Page),
    responses((status = 200, description = "A page of rewards"), (status = 401, description = "No valid API key"), (status = 422, description = "Bad parameter")),
    security(("api_key" = [])))]
pub async fn list_rewards(
    _: ReadAccess,
    query: web::Query<RewardQuery>,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    one_of("status", query.status.as_deref(), STATUSES)?;
    let limit = page.limit()?;
    let items = state
        .store
        .list_rewards(query.status.as_deref(), page.after.as_deref(), limit)
        .await?;
    Ok(HttpResponse::Ok().json(Paged::new(items, limit, |r| r.id.clone())))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Why; required to reject, kept in the audit log.
    pub reason: Option<String>,
}

async fn apply(
    decision: Decision,
    actor: &str,
    id: &str,
    body: OptionalJson<DecisionRequest>,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let reason = body.0.and_then(|b| b.reason);
    match decide_reward(state, decision, actor, id, reason.as_deref()).await {
        Ok(reward) => Ok(HttpResponse::Ok().json(json!({ "reward": reward }))),
        Err(DecisionError::NotFound(m)) => Err(ApiError::NotFound(m)),
        Err(e @ (DecisionError::WrongState { .. } | DecisionError::InStatement { .. })) => {
            Err(ApiError::Conflict(e.to_string()))
        }
        Err(DecisionError::Invalid(m)) => Err(ApiError::Unprocessable(m)),
        Err(DecisionError::Store(e)) => Err(e.into()),
    }
}

/// Apply an admin decision with the reward engine's rules and audit, then wake the outbox worker
/// for the CRM writes it queued. The API and the console both decide here.
pub async fn decide_reward(
    state: &AppState,
    decision: Decision,
    actor: &str,
    id: &str,
    reason: Option<&str>,
) -> Result<Reward, DecisionError> {
    let reward = decide(
        &state.store,
        &state.settings,
        id,
        decision,
        actor,
        reason,
        state.clock.now(),
    )
    .await?;
    state.outbox_wake.notify_one();
    Ok(reward)
}

/// Approve a reward (from needs_review or eligible).
#[utoipa::path(post, path = "/api/v1/rewards/{id}/approve", params(("id" = String, Path, description = "Reward id")), request_body(content = DecisionRequest, description = "Optional reason"),
    responses((status = 200, description = "Approved"), (status = 401, description = "No valid API key"), (status = 403, description = "Read-only key"),
              (status = 404, description = "Unknown id"), (status = 409, description = "Not in a state that allows it")),
    security(("api_key" = [])))]
pub async fn post_approve(
    AdminAccess(c): AdminAccess,
    id: web::Path<String>,
    body: OptionalJson<DecisionRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    apply(Decision::Approve, &c.actor, &id, body, &state).await
}

/// Reject a reward; `reason` is required.
#[utoipa::path(post, path = "/api/v1/rewards/{id}/reject", params(("id" = String, Path, description = "Reward id")), request_body = DecisionRequest,
    responses((status = 200, description = "Rejected"), (status = 401, description = "No valid API key"), (status = 403, description = "Read-only key"),
              (status = 404, description = "Unknown id"), (status = 409, description = "Not in a state that allows it"), (status = 422, description = "Reason missing")),
    security(("api_key" = [])))]
pub async fn post_reject(
    AdminAccess(c): AdminAccess,
    id: web::Path<String>,
    body: OptionalJson<DecisionRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    apply(Decision::Reject, &c.actor, &id, body, &state).await
}

/// Mark an approved reward paid.
#[utoipa::path(post, path = "/api/v1/rewards/{id}/paid", params(("id" = String, Path, description = "Reward id")), request_body(content = DecisionRequest, description = "Optional note"),
    responses((status = 200, description = "Marked paid"), (status = 401, description = "No valid API key"), (status = 403, description = "Read-only key"),
              (status = 404, description = "Unknown id"), (status = 409, description = "Not approved, or on a payout statement (marked paid with it)")),
    security(("api_key" = [])))]
pub async fn post_paid(
    AdminAccess(c): AdminAccess,
    id: web::Path<String>,
    body: OptionalJson<DecisionRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    apply(Decision::Paid, &c.actor, &id, body, &state).await
}

//! `GET /api/v1/deliveries?status=` (CRM writes; `dead` shows the CRM's error) and
//! `POST /api/v1/deliveries/replay` (by ids, since a time, or all with an explicit `"all": true`;
//! a missing or mistyped body re-queues nothing).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{AdminAccess, ReadAccess};
use super::{one_of, parse_time, Page, Paged};
use crate::clock::Millis;
use crate::domain::DeliveryStatus;
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::StoreError;

pub const STATUSES: &[&str] = &DeliveryStatus::NAMES;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// pending, delivered, dead or coalesced.
    pub status: Option<String>,
}

/// List CRM deliveries.
#[utoipa::path(get, path = "/api/v1/deliveries", params(DeliveryQuery, Page),
    responses((status = 200, description = "A page of deliveries"), (status = 401, description = "No valid API key"), (status = 422, description = "Bad parameter")),
    security(("api_key" = [])))]
pub async fn list_deliveries(
    _: ReadAccess,
    query: web::Query<DeliveryQuery>,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    one_of("status", query.status.as_deref(), STATUSES)?;
    let limit = page.limit()?;
    let after = match page.after.as_deref() {
        None => None,
        Some(a) => Some(
            a.parse::<i64>()
                .map_err(|_| ApiError::Unprocessable("after must be a delivery id".into()))?,
        ),
    };
    let items = state
        .store
        .list_deliveries(query.status.as_deref(), after, limit)
        .await?;
    Ok(HttpResponse::Ok().json(Paged::new(items, limit, |r| r.id.to_string())))
}

/// Which dead deliveries to re-queue: `ids`, `since`, both (those ids, if created since), or
/// `"all": true` alone. Nothing given is an error, never "everything".
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Outbox ids of dead deliveries to re-queue.
    #[serde(default)]
    pub ids: Vec<i64>,
    /// Re-queue dead deliveries created at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Re-queue every dead delivery.
    #[serde(default)]
    pub all: bool,
}

/// Re-queue dead deliveries (after fixing the cause).
#[utoipa::path(post, path = "/api/v1/deliveries/replay", request_body = ReplayRequest,
    responses((status = 200, description = "How many were re-queued"), (status = 401, description = "No valid API key"),
              (status = 403, description = "Read-only key"), (status = 422, description = "Bad request body")),
    security(("api_key" = [])))]
pub async fn post_replay(
    AdminAccess(caller): AdminAccess,
    body: web::Json<ReplayRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let selective = !body.ids.is_empty() || body.since.is_some();
    match (body.all, selective) {
        (true, true) => {
            return Err(ApiError::Unprocessable(
                "all: true re-queues every dead delivery; leave out ids and since, or all".into(),
            ))
        }
        (false, false) => {
            return Err(ApiError::Unprocessable(
                "say which dead deliveries to re-queue: ids, since, or all: true".into(),
            ))
        }
        _ => {}
    }
    let since = parse_time("since", body.since.as_deref())?;
    let requeued = replay(&state, &caller.actor, &body.ids, since).await?;
    Ok(HttpResponse::Ok().json(json!({ "requeued": requeued })))
}

/// Re-queue dead deliveries (`ids`, those created since `since`, or all when neither is given)
/// and wake the outbox worker; logged with who asked. The API and the console both replay here.
pub async fn replay(
    state: &AppState,
    actor: &str,
    ids: &[i64],
    since: Option<Millis>,
) -> Result<u64, StoreError> {
    let requeued = state
        .store
        .replay_dead(ids, since, state.clock.now())
        .await?;
    tracing::info!(actor = %actor, requeued, "dead deliveries re-queued");
    state.outbox_wake.notify_one();
    Ok(requeued)
}

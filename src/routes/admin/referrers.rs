//! `GET /api/v1/referrers`, `GET /api/v1/referrers/{code}`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::auth::ReadAccess;
use super::{Page, Paged};
use crate::error::ApiError;
use crate::startup::AppState;

/// List referrers by code.
#[utoipa::path(get, path = "/api/v1/referrers", params(Page),
    responses((status = 200, description = "A page of referrers"), (status = 401, description = "No valid API key"), (status = 422, description = "Bad parameter")),
    security(("api_key" = [])))]
pub async fn list_referrers(
    _: ReadAccess,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = page.limit()?;
    let items = state
        .store
        .list_referrers(page.after.as_deref(), limit)
        .await?;
    Ok(HttpResponse::Ok().json(Paged::new(items, limit, |r| r.facts.code.clone())))
}

/// One referrer with its referral counts.
#[utoipa::path(get, path = "/api/v1/referrers/{code}", params(("code" = String, Path, description = "Referral code")),
    responses((status = 200, description = "The referrer"), (status = 401, description = "No valid API key"), (status = 404, description = "Unknown code")),
    security(("api_key" = [])))]
pub async fn get_referrer(
    _: ReadAccess,
    code: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let referrer = state
        .store
        .referrer_by_code(&code)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no referrer with code {code}")))?;
    let (referrals, won) = state.store.referrer_counts(&code).await?;
    Ok(HttpResponse::Ok()
        .json(json!({"referrer": referrer, "referrals": referrals, "successful_referrals": won})))
}

//! `GET /api/v1/referrals`, `GET /api/v1/referrals/{id}` (the whole story: touches, CRM records,
//! stage history, rewards, audit) and `POST /api/v1/referrals/{id}/attribution` (admin override).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{AdminAccess, ReadAccess};
use super::{one_of, parse_time, Page, Paged};
use crate::attribution::{override_attribution, AttributionChange, OverrideError};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::{
    AuditEntry, CrmRecord, Referral, ReferralFilter, Reward, StageChange, Store, StoreError, Touch,
};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReferralQuery {
    /// Market, e.g. US.
    pub market: Option<String>,
    /// link, code, intro or pool.
    pub source: Option<String>,
    /// Referral code of the referrer.
    pub referrer: Option<String>,
    /// Only referrals first touched at or after this RFC 3339 time.
    pub since: Option<String>,
}

/// List referrals (first touches).
#[utoipa::path(get, path = "/api/v1/referrals", params(ReferralQuery, Page),
    responses((status = 200, description = "A page of referrals"), (status = 401, description = "No valid API key"), (status = 422, description = "Bad parameter")),
    security(("api_key" = [])))]
pub async fn list_referrals(
    _: ReadAccess,
    query: web::Query<ReferralQuery>,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    one_of(
        "source",
        query.source.as_deref(),
        crate::attribution::overrides::SOURCES,
    )?;
    let filter = ReferralFilter {
        market: query.market.as_ref().map(|m| m.to_uppercase()),
        source: query.source.clone(),
        referrer_code: query.referrer.clone(),
        since: parse_time("since", query.since.as_deref())?,
    };
    let limit = page.limit()?;
    let items = state
        .store
        .list_referrals(&filter, page.after.as_deref(), limit)
        .await?;
    Ok(HttpResponse::Ok().json(Paged::new(items, limit, |r| r.id().to_string())))
}

/// One referral with everything that happened to it.
#[utoipa::path(get, path = "/api/v1/referrals/{id}", params(("id" = String, Path, description = "Referral id")),
    responses((status = 200, description = "The referral's story"), (status = 401, description = "No valid API key"), (status = 404, description = "Unknown id")),
    security(("api_key" = [])))]
pub async fn get_referral(
    _: ReadAccess,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let story = referral_story(&state.store, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no referral {id}")))?;
    Ok(HttpResponse::Ok().json(json!({
        "referral": story.referral, "touches": story.touches, "crm_records": story.records,
        "stage_history": story.stage_history, "rewards": story.rewards, "audit": story.audit,
    })))
}

/// Everything that happened to one referral (the API's story and the console's timeline).
pub struct ReferralStory {
    pub referral: Referral,
    pub touches: Vec<Touch>,
    pub records: Vec<CrmRecord>,
    /// The stage history of every linked deal.
    pub stage_history: Vec<StageChange>,
    pub rewards: Vec<Reward>,
    /// Of the referral, its records and its rewards, in time order.
    pub audit: Vec<AuditEntry>,
}

/// Read one referral's story; `None` when there is no such referral.
pub async fn referral_story(store: &Store, id: &str) -> Result<Option<ReferralStory>, StoreError> {
    let Some(referral) = store.referral(id).await? else {
        return Ok(None);
    };
    let touches = store.touches(id).await?;
    let records = store.records_of_referral(id).await?;
    let mut stage_history = Vec::new();
    let mut audit = store.audit_entries("referral", id).await?;
    for r in &records {
        if matches!(r.object_type.as_str(), "deal" | "Opportunity") {
            stage_history.extend(store.stage_history(r.crm, &r.object_id).await?);
        }
        audit.extend(
            store
                .audit_entries(
                    "crm_record",
                    &format!("{}:{}:{}", r.crm, r.object_type, r.object_id),
                )
                .await?,
        );
    }
    let rewards = store.rewards_of_referral(id).await?;
    for r in &rewards {
        audit.extend(store.audit_entries("reward", &r.id).await?);
    }
    audit.sort_by_key(|a| (a.at, a.id));
    Ok(Some(ReferralStory {
        referral,
        touches,
        records,
        stage_history,
        rewards,
        audit,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributionRequest {
    pub referrer_code: Option<String>,
    pub source: Option<String>,
    /// A market code such as US or EU-WEST.
    pub market: Option<String>,
    /// Why the recorded attribution is wrong; required, kept in the audit log.
    pub reason: String,
}

/// Change a recorded attribution (admin, audited).
#[utoipa::path(post, path = "/api/v1/referrals/{id}/attribution", params(("id" = String, Path, description = "Referral id")),
    request_body = AttributionRequest,
    responses((status = 200, description = "The updated referral"), (status = 401, description = "No valid API key"),
              (status = 403, description = "Read-only key"), (status = 404, description = "Unknown id"), (status = 422, description = "Invalid change")),
    security(("api_key" = [])))]
pub async fn post_attribution(
    AdminAccess(caller): AdminAccess,
    id: web::Path<String>,
    body: web::Json<AttributionRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let change = AttributionChange {
        referrer_code: body.referrer_code.clone(),
        source: body.source.clone(),
        market: body.market.clone(),
    };
    let now = state.clock.now();
    match override_attribution(
        &state.store,
        &state.settings,
        &id,
        &change,
        &caller.actor,
        &body.reason,
        now,
    )
    .await
    {
        Ok(referral) => Ok(HttpResponse::Ok().json(json!({ "referral": referral }))),
        Err(OverrideError::NotFound(m)) => Err(ApiError::NotFound(m)),
        Err(OverrideError::Invalid(m)) => Err(ApiError::Unprocessable(m)),
        Err(OverrideError::Store(e)) => Err(e.into()),
    }
}

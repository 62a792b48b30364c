//! `GET /api/v1/reports/funnel?market=&source=&from=&to=&format=json|csv`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::auth::ReadAccess;
use super::{one_of, parse_time};
use crate::error::ApiError;
use crate::reports::funnel::{self, FunnelFilter};
use crate::startup::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FunnelQuery {
    /// Only this market (e.g. US).
    pub market: Option<String>,
    /// Only this source (link, code, intro, pool).
    pub source: Option<String>,
    /// First touch at or after this RFC 3339 time.
    pub from: Option<String>,
    /// First touch before this RFC 3339 time.
    pub to: Option<String>,
    /// json (default) or csv.
    pub format: Option<String>,
}

/// The referral funnel per market × source, with the referrer-market × referee-market matrix.
#[utoipa::path(get, path = "/api/v1/reports/funnel", params(FunnelQuery),
    responses((status = 200, description = "The funnel as JSON or CSV"), (status = 401, description = "No valid API key"), (status = 422, description = "Bad parameter")),
    security(("api_key" = [])))]
pub async fn get_funnel(
    _: ReadAccess,
    query: web::Query<FunnelQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    one_of("format", query.format.as_deref(), &["json", "csv"])?;
    one_of(
        "source",
        query.source.as_deref(),
        crate::attribution::overrides::SOURCES,
    )?;
    let filter = FunnelFilter {
        market: query.market.as_ref().map(|m| m.to_uppercase()),
        source: query.source.clone(),
        from: parse_time("from", query.from.as_deref())?,
        to: parse_time("to", query.to.as_deref())?,
    };
    let facts = state.store.funnel_facts(&filter).await?;
    let report = funnel::compute(&facts);
    Ok(match query.format.as_deref() {
        Some("csv") => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(funnel::to_csv(&report)),
        _ => HttpResponse::Ok().json(report),
    })
}

//! `GET /api/v1/reports/funnel?market=&source=&from=&to=&format=json|csv` and the per-referrer
//! scorecards, `GET /api/v1/reports/referrers` (same filters, plus `kind`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::auth::ReadAccess;
use super::{one_of, parse_time};
use crate::domain::referrer::PartnerKind;
use crate::error::ApiError;
use crate::reports::funnel::{self, FunnelFilter};
use crate::reports::scorecard;
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
    /// true: add referred vs non-referred deals (created in the period), per market and
    /// channel, and the participation rate; as CSV, the comparison alone.
    pub compare: Option<bool>,
}

impl FunnelQuery {
    fn filter(&self) -> Result<FunnelFilter, ApiError> {
        filter_of(
            &self.market,
            &self.source,
            &self.from,
            &self.to,
            &self.format,
        )
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScorecardQuery {
    /// Only referrals of this market (e.g. US).
    pub market: Option<String>,
    /// Only this source (link, code, intro, pool).
    pub source: Option<String>,
    /// First touch at or after this RFC 3339 time.
    pub from: Option<String>,
    /// First touch before this RFC 3339 time.
    pub to: Option<String>,
    /// json (default) or csv.
    pub format: Option<String>,
    /// Only referrers of this kind (customer, partner, creator).
    pub kind: Option<String>,
}

/// The filter a report query names; 422 naming a bad parameter.
fn filter_of(
    market: &Option<String>,
    source: &Option<String>,
    from: &Option<String>,
    to: &Option<String>,
    format: &Option<String>,
) -> Result<FunnelFilter, ApiError> {
    one_of("format", format.as_deref(), &["json", "csv"])?;
    one_of(
        "source",
        source.as_deref(),
        crate::attribution::overrides::SOURCES,
    )?;
    Ok(FunnelFilter {
        market: market.as_ref().map(|m| m.to_uppercase()),
        source: source.clone(),
        from: parse_time("from", from.as_deref())?,
        to: parse_time("to", to.as_deref())?,
    })
}

/// Per referrer: referrals (volume), qualified and win rates, days to win, revenue, reward cost
/// and ROI (quality), for the referrals the filters select.
#[utoipa::path(get, path = "/api/v1/reports/referrers", params(ScorecardQuery),
    responses((status = 200, description = "The scorecards as JSON or CSV"), (status = 401, description = "No valid API key"), (status = 422, description = "Bad parameter")),
    security(("api_key" = [])))]
pub async fn get_referrers(
    _: ReadAccess,
    query: web::Query<ScorecardQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = filter_of(
        &query.market,
        &query.source,
        &query.from,
        &query.to,
        &query.format,
    )?;
    let kind = query
        .kind
        .as_deref()
        .map(|k| {
            k.parse::<PartnerKind>().map_err(|_| {
                ApiError::Unprocessable("kind must be one of customer, partner, creator".into())
            })
        })
        .transpose()?;
    let facts = state.store.funnel_facts(&filter).await?;
    let report = scorecard::compute(&facts, kind);
    Ok(match query.format.as_deref() {
        Some("csv") => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(scorecard::to_csv(&report)),
        _ => HttpResponse::Ok().json(report),
    })
}

/// The referral funnel per market, market × source and market × referrer kind, with the
/// referrer-market × referee-market matrix; with `compare=true`, referred vs non-referred deals.
#[utoipa::path(get, path = "/api/v1/reports/funnel", params(FunnelQuery),
    responses((status = 200, description = "The funnel as JSON or CSV"), (status = 401, description = "No valid API key"), (status = 422, description = "Bad parameter")),
    security(("api_key" = [])))]
pub async fn get_funnel(
    _: ReadAccess,
    query: web::Query<FunnelQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = query.filter()?;
    let report = if query.compare == Some(true) {
        funnel::report_with_comparison(&state.store, &state.settings, &filter, state.clock.now())
            .await?
    } else {
        funnel::report(&state.store, &filter).await?
    };
    Ok(match query.format.as_deref() {
        Some("csv") => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(funnel::to_csv(&report)),
        _ => HttpResponse::Ok().json(report),
    })
}

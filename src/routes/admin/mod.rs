//! The admin and reporting API under `/api/v1` (SPEC §6): referrers, referrals (with their full
//! story), attribution overrides, rewards and their decisions, payout statements, CRM deliveries
//! and replay, the funnel report and the per-referrer scorecards. Every route needs an API key;
//! writes need an admin key.

pub mod auth;
pub mod deliveries;
pub mod openapi;
pub mod payouts;
pub mod referrals;
pub mod referrers;
pub mod reports;
pub mod rewards;

use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::{FutureExt, LocalBoxFuture};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/referrers", web::get().to(referrers::list_referrers))
            .route("/referrers/{code}", web::get().to(referrers::get_referrer))
            .route("/referrals", web::get().to(referrals::list_referrals))
            .route("/referrals/{id}", web::get().to(referrals::get_referral))
            .route(
                "/referrals/{id}/attribution",
                web::post().to(referrals::post_attribution),
            )
            .route("/rewards", web::get().to(rewards::list_rewards))
            .route(
                "/rewards/{id}/approve",
                web::post().to(rewards::post_approve),
            )
            .route("/rewards/{id}/reject", web::post().to(rewards::post_reject))
            .route("/rewards/{id}/paid", web::post().to(rewards::post_paid))
            .route("/payouts", web::get().to(payouts::list_payouts))
            .route("/payouts/{id}/paid", web::post().to(payouts::post_paid))
            .route("/deliveries", web::get().to(deliveries::list_deliveries))
            .route(
                "/deliveries/replay",
                web::post().to(deliveries::post_replay),
            )
            .route("/reports/funnel", web::get().to(reports::get_funnel))
            .route("/reports/referrers", web::get().to(reports::get_referrers)),
    )
    .route("/openapi.json", web::get().to(openapi::get_openapi));
}

/// Keyset pagination: `?limit=` (1–500, default 50) and `?after=` (the `next` of the last page).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page, 1–500 (default 50).
    pub limit: Option<i64>,
    /// Cursor: the `next` value of the previous page.
    pub after: Option<String>,
}

impl Page {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=500).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::Unprocessable(format!(
                "limit must be between 1 and 500, got {n}"
            ))),
        }
    }
}

/// One page of results.
#[derive(Debug, Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// Pass as `?after=` for the next page; null on the last page.
    pub next: Option<String>,
}

impl<T> Paged<T> {
    pub fn new(items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Self {
        let next = (items.len() as i64 == limit)
            .then(|| items.last().map(&cursor))
            .flatten();
        Self { items, next }
    }
}

/// An RFC 3339 query parameter as epoch milliseconds; 422 naming the parameter otherwise.
pub fn parse_time(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    ApiError::Unprocessable(format!(
                        "{name} must be an RFC 3339 time like 2026-11-01T00:00:00Z"
                    ))
                })
        })
        .transpose()
}

/// Reject values outside a fixed set with a 422 naming the parameter.
pub fn one_of(name: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(ApiError::Unprocessable(format!(
            "{name} must be one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// A JSON body that may be left out. No body at all is `None`; a body that is there must be JSON
/// of `T` sent as `application/json`, or the request is refused naming the problem (400, 413,
/// 422) — a reason is never dropped because it came as a form or with a typo.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
        let headers = req.headers();
        let has_body = headers.contains_key(TRANSFER_ENCODING)
            || headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() != "0");
        if !has_body {
            return std::future::ready(Ok(Self(None))).boxed_local();
        }
        web::Json::<T>::from_request(req, payload)
            .map(|json| json.map(|j| Self(Some(j.into_inner()))))
            .boxed_local()
    }
}

//! `GET /api/v1/payouts?period=YYYY-MM&currency=&referrer=` (reading a period gathers its open
//! statements first) and `POST /api/v1/payouts/{id}/paid` with the transfer reference (409 when
//! the statement is paid already or changed since it was read).

use actix_web::{web, HttpResponse};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::auth::{AdminAccess, ReadAccess};
use crate::domain::payout::Period;
use crate::error::ApiError;
use crate::payouts::{self, PayoutError, StatementFilter};
use crate::startup::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PayoutQuery {
    /// The month, `YYYY-MM` (UTC); required, and not after the current month.
    pub period: Option<String>,
    /// Only statements in this currency (ISO code).
    pub currency: Option<String>,
    /// Only this referrer's statements (referrer code).
    pub referrer: Option<String>,
}

impl From<PayoutError> for ApiError {
    fn from(e: PayoutError) -> Self {
        match e {
            PayoutError::Invalid(m) => ApiError::Unprocessable(m),
            PayoutError::NotFound(_) => ApiError::NotFound(e.to_string()),
            PayoutError::Conflict(m) => ApiError::Conflict(m),
            PayoutError::Store(e) => e.into(),
        }
    }
}

/// A period's payout statements, one per (referrer, currency), with their lines and the totals
/// per currency.
#[utoipa::path(get, path = "/api/v1/payouts", params(PayoutQuery),
    responses((status = 200, description = "The period's statements"), (status = 401, description = "No valid API key"),
              (status = 422, description = "Missing or bad period, currency")),
    security(("api_key" = [])))]
pub async fn list_payouts(
    _: ReadAccess,
    query: web::Query<PayoutQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let period: Period = query
        .period
        .as_deref()
        .ok_or_else(|| ApiError::Unprocessable("period is required, as YYYY-MM".into()))?
        .parse()
        .map_err(|e| ApiError::Unprocessable(format!("period: {e}")))?;
    let currency = query
        .currency
        .as_deref()
        .map(|c| {
            let c = c.trim().to_ascii_uppercase();
            if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(c)
            } else {
                Err(ApiError::Unprocessable(
                    "currency must be a three-letter code such as USD".into(),
                ))
            }
        })
        .transpose()?;
    let filter = StatementFilter {
        currency,
        referrer: query.referrer.clone(),
    };
    let read = payouts::read_period(
        &state.store,
        &state.settings,
        period,
        &filter,
        state.clock.now(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(read))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaidRequest {
    /// The transfer's reference (bank transfer id, payment batch); required, audited.
    pub reference: String,
    /// The total you read and paid, e.g. "1234.50": when given and the statement now totals
    /// something else, nothing changes and the answer is 409.
    pub total: Option<String>,
}

/// Mark a statement paid: every line on it is paid in one audited step, and it is frozen.
#[utoipa::path(post, path = "/api/v1/payouts/{id}/paid", params(("id" = String, Path, description = "Statement id")),
    request_body = PaidRequest,
    responses((status = 200, description = "The paid statement"), (status = 401, description = "No valid API key"),
              (status = 403, description = "Read-only key"), (status = 404, description = "Unknown id"),
              (status = 409, description = "Paid already, or changed since it was read"), (status = 422, description = "Missing reference")),
    security(("api_key" = [])))]
pub async fn post_paid(
    AdminAccess(caller): AdminAccess,
    id: web::Path<String>,
    body: web::Json<PaidRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let total = body
        .total
        .as_deref()
        .map(|t| {
            t.trim().parse::<Decimal>().map_err(|_| {
                ApiError::Unprocessable("total must be a decimal string such as \"1234.50\"".into())
            })
        })
        .transpose()?;
    if body.reference.chars().count() > 200 {
        return Err(ApiError::Unprocessable(
            "reference must be at most 200 characters".into(),
        ));
    }
    let payment = payouts::Payment {
        statement: &id,
        reference: &body.reference,
        expected_total: total,
        actor: &caller.actor,
    };
    let statement =
        payouts::mark_paid(&state.store, &state.settings, payment, state.clock.now()).await?;
    state.outbox_wake.notify_one();
    Ok(HttpResponse::Ok().json(json!({ "statement": statement })))
}

//! The review queue (`/console/review`): rewards in `needs_review` with their calculation, the
//! reasons they wait and their fraud flags in words; admins approve or reject (a reason is
//! required to reject) through [`crate::routes::admin::rewards::decide_reward`], the function
//! behind the API's decisions, so the rules and the audit are the API's.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;
use serde_json::Value;

use super::{AdminForm, Chrome, ConsoleUser, Section};
use crate::domain::fraud::FraudFlag;
use crate::domain::reward::RewardStatus;
use crate::rewards::calculate::amount_computed;
use crate::rewards::engine::{Decision, DecisionError};
use crate::routes::admin::rewards::decide_reward;
use crate::startup::AppState;
use crate::store::Reward;
use crate::web::{format_money, format_time, html, see_other, WebError};

/// Rewards shown at once; the rest follow as they are decided.
const QUEUE_PAGE: i64 = 100;

pub struct ReviewItem {
    pub id: String,
    pub referral_id: String,
    pub referrer: String,
    pub beneficiary: String,
    pub market: String,
    pub amount: String,
    pub tier: String,
    pub deal: String,
    pub won_at: String,
    pub reasons: Vec<String>,
    pub flags: Vec<&'static str>,
    pub formula: String,
    /// Every input of the calculation, as stored.
    pub calculation: Vec<(String, String)>,
}

impl ReviewItem {
    fn of(r: &Reward) -> Result<Self, WebError> {
        let corrupt = |what: String| WebError::Internal(anyhow::anyhow!("reward {}: {what}", r.id));
        let calculation: Value = serde_json::from_str(&r.line.calculation)
            .map_err(|e| corrupt(format!("calculation is not JSON: {e}")))?;
        let Value::Object(fields) = &calculation else {
            return Err(corrupt("calculation is not a JSON object".into()));
        };
        let flag_names: Vec<String> = serde_json::from_str(&r.line.flags)
            .map_err(|e| corrupt(format!("flags are not a JSON list of names: {e}")))?;
        let flags = flag_names
            .iter()
            .map(|name| {
                name.parse::<FraudFlag>()
                    .map(FraudFlag::describe)
                    .map_err(|e| corrupt(format!("fraud flag: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let amount: rust_decimal::Decimal = r
            .line
            .amount
            .parse()
            .map_err(|e| corrupt(format!("amount `{}`: {e}", r.line.amount)))?;
        let deal = match (&r.line.deal_amount, &r.line.deal_currency) {
            (Some(a), Some(c)) => format!("{a} {c}"),
            (Some(a), None) => a.clone(),
            _ => "no amount".into(),
        };
        Ok(Self {
            id: r.id.clone(),
            referral_id: r.line.referral_id.clone(),
            referrer: r.line.referrer_code.clone().unwrap_or_else(|| "–".into()),
            beneficiary: r.line.beneficiary.to_string(),
            market: r.line.market.clone(),
            amount: if amount_computed(&r.line.calculation) {
                format_money(&r.line.currency, amount)
            } else {
                format!("not computed ({})", r.line.currency)
            },
            tier: r.line.tier.clone().unwrap_or_else(|| "–".into()),
            deal: format!("{} {} · {deal}", r.line.crm, r.line.deal_id),
            won_at: format_time(r.line.won_at),
            reasons: r
                .line
                .review_reason
                .as_deref()
                .map(|reasons| reasons.split("; ").map(String::from).collect())
                .unwrap_or_default(),
            flags,
            formula: fields
                .get("formula")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            calculation: fields
                .iter()
                .filter(|(k, _)| k.as_str() != "formula")
                .map(|(k, v)| (k.clone(), plain(v)))
                .collect(),
        })
    }
}

/// A calculation value as text: strings bare, objects as `key=value` pairs.
fn plain(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

#[derive(Template)]
#[template(path = "console/templates/review.html")]
struct ReviewPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    items: Vec<ReviewItem>,
    more: bool,
}

#[derive(Debug, Deserialize)]
pub struct ReviewQuery {
    done: Option<String>,
}

async fn page(
    state: &AppState,
    user: &ConsoleUser,
    notice: Option<String>,
    error: Option<String>,
) -> Result<String, WebError> {
    let rewards = state
        .store
        .list_rewards(Some(RewardStatus::NeedsReview.as_str()), None, QUEUE_PAGE)
        .await?;
    let items = rewards
        .iter()
        .map(ReviewItem::of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReviewPage {
        chrome: Chrome::new(Section::Review, user),
        notice,
        error,
        more: items.len() as i64 == QUEUE_PAGE,
        items,
    }
    .render()?)
}

/// `GET /console/review`.
pub async fn get_review(
    user: ConsoleUser,
    query: web::Query<ReviewQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    // Only known words are echoed back, never the query's text.
    let notice = match query.done.as_deref().map(str::parse::<RewardStatus>) {
        Some(Ok(RewardStatus::Approved)) => Some("The reward was approved.".to_string()),
        Some(Ok(RewardStatus::Rejected)) => Some("The reward was rejected.".to_string()),
        _ => None,
    };
    Ok(html(
        StatusCode::OK,
        page(&state, &user, notice, None).await?,
    ))
}

async fn decided(
    decision: Decision,
    form: AdminForm,
    id: &str,
    state: &AppState,
) -> Result<HttpResponse, WebError> {
    let reason = form.fields.text("reason");
    match decide_reward(state, decision, &form.user.actor, id, reason).await {
        Ok(_) => Ok(see_other(&format!(
            "/console/review?done={}",
            decision.outcome()
        ))),
        Err(DecisionError::Store(e)) => Err(e.into()),
        Err(e) => {
            let status = match e {
                DecisionError::NotFound(_) => StatusCode::NOT_FOUND,
                DecisionError::WrongState { .. } => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let body = page(state, &form.user, None, Some(e.to_string())).await?;
            Ok(html(status, body))
        }
    }
}

/// `POST /console/rewards/{id}/approve` (`reason` optional).
pub async fn post_approve(
    form: AdminForm,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    decided(Decision::Approve, form, &id, &state).await
}

/// `POST /console/rewards/{id}/reject` (`reason` required).
pub async fn post_reject(
    form: AdminForm,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    decided(Decision::Reject, form, &id, &state).await
}

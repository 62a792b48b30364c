//! Deliveries (`/console/deliveries`): CRM writes waiting, retrying (with the CRM's last answer)
//! and dead (with the CRM's error), replayed by selection through
//! [`crate::routes::admin::deliveries::replay`] like the API's replay; and inbox events parked as
//! `unmapped` (with the configuration key that maps them) or `failed`, re-queued after the fix.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{AdminForm, Chrome, ConsoleUser, Section};
use crate::routes::admin::deliveries::replay;
use crate::startup::AppState;
use crate::store::{DeliveryState, InboxEvent, OutboxRow};
use crate::web::{format_stored_count, format_time, render, see_other, WebError};

/// Rows shown per group; the counts say how many there are in all.
const SHOWN: i64 = 100;

pub struct DeliveryView {
    pub id: i64,
    pub target: String,
    pub kind: String,
    pub attempts: i64,
    pub created: String,
    pub next_attempt: String,
    pub status: String,
    pub error: String,
}

impl DeliveryView {
    fn of(row: &OutboxRow) -> Self {
        Self {
            id: row.id,
            target: format!("{} {} {}", row.crm, row.object_type, row.object_id),
            kind: row.kind.as_str().replace('_', " "),
            attempts: row.attempts,
            created: format_time(row.created_at),
            next_attempt: format_time(row.next_attempt_at),
            status: row
                .last_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "–".into()),
            error: row.last_error.clone().unwrap_or_default(),
        }
    }
}

pub struct ParkedView {
    pub id: i64,
    pub source: String,
    pub event_type: String,
    pub object: String,
    pub received: String,
    pub status: &'static str,
    pub reason: String,
    /// The configuration key whose entry would let the event through, when the reason names one.
    pub config_key: Option<String>,
}

/// The key an `unmapped` reason asks to edit: `… (add it under hubspot.pipelines.default)`, or
/// `… is not in any hubspot.pipelines mapping`.
pub fn config_key_of(reason: &str) -> Option<String> {
    if let Some(rest) = reason.split("add it under ").nth(1) {
        let key = rest.split(')').next().unwrap_or(rest).trim();
        return (!key.is_empty()).then(|| key.to_string());
    }
    ["hubspot.pipelines", "salesforce.stages"]
        .into_iter()
        .find(|key| reason.contains(key))
        .map(String::from)
}

impl ParkedView {
    fn of(e: &InboxEvent) -> Self {
        let reason = e.status_reason.clone().unwrap_or_default();
        Self {
            id: e.id,
            source: e.event.source.to_string(),
            event_type: e.event.event_type.clone(),
            object: e.event.object_key.clone().unwrap_or_else(|| "–".into()),
            received: format_time(e.event.received_at),
            status: e.status.as_str(),
            config_key: config_key_of(&reason),
            reason,
        }
    }
}

#[derive(Template)]
#[template(path = "console/templates/deliveries.html")]
struct DeliveriesPage {
    chrome: Chrome,
    notice: Option<String>,
    pending_count: String,
    retrying_count: String,
    dead_count: String,
    pending: Vec<DeliveryView>,
    retrying: Vec<DeliveryView>,
    dead: Vec<DeliveryView>,
    parked: Vec<ParkedView>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeliveriesQuery {
    pub replayed: Option<u64>,
    pub requeued: Option<u64>,
}

/// `GET /console/deliveries`.
pub async fn get_deliveries(
    user: ConsoleUser,
    query: web::Query<DeliveriesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let store = &state.store;
    let counts = store.delivery_counts().await?;
    let rows = |state: DeliveryState| store.deliveries_in(state, SHOWN);
    let (pending, retrying, dead) = (
        rows(DeliveryState::Pending).await?,
        rows(DeliveryState::Retrying).await?,
        rows(DeliveryState::Dead).await?,
    );
    let parked = store.parked_inbox_events(SHOWN).await?;
    let notice = match (query.replayed, query.requeued) {
        (Some(n), _) => Some(format!("{n} dead deliver(y/ies) re-queued.")),
        (_, Some(n)) => Some(format!("{n} inbox event(s) re-queued for processing.")),
        _ => None,
    };
    render(&DeliveriesPage {
        chrome: Chrome::new(Section::Deliveries, &user),
        notice,
        pending_count: format_stored_count(counts.pending)?,
        retrying_count: format_stored_count(counts.retrying)?,
        dead_count: format_stored_count(counts.dead)?,
        pending: pending.iter().map(DeliveryView::of).collect(),
        retrying: retrying.iter().map(DeliveryView::of).collect(),
        dead: dead.iter().map(DeliveryView::of).collect(),
        parked: parked.iter().map(ParkedView::of).collect(),
    })
}

/// `POST /console/deliveries/replay` with the checked `id`s.
pub async fn post_replay(
    form: AdminForm,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let ids = form
        .fields
        .all("id")
        .map(|id| {
            id.parse::<i64>()
                .map_err(|_| WebError::Invalid(format!("`{id}` is not a delivery id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // An empty selection would mean "every dead delivery" to the store: refuse it instead.
    if ids.is_empty() {
        return Err(WebError::Invalid(
            "select the dead deliveries to replay".into(),
        ));
    }
    let requeued = replay(&state, &form.user.actor, &ids, None).await?;
    Ok(see_other(&format!(
        "/console/deliveries?replayed={requeued}"
    )))
}

/// `POST /console/inbox/requeue`: parked and failed inbox events back to the processor (after
/// the configuration that parked them is fixed and the service restarted).
pub async fn post_requeue_inbox(
    form: AdminForm,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let requeued = state.store.requeue_inbox().await?;
    tracing::info!(actor = %form.user.actor, requeued, "parked inbox events re-queued");
    state.inbox_wake.notify_one();
    Ok(see_other(&format!(
        "/console/deliveries?requeued={requeued}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_key_is_read_from_the_reason() {
        assert_eq!(
            config_key_of("HubSpot stage `x` of pipeline `default` has no mapping (add it under hubspot.pipelines.default)")
                .as_deref(),
            Some("hubspot.pipelines.default")
        );
        assert_eq!(
            config_key_of("HubSpot stage `x` is not in any hubspot.pipelines mapping").as_deref(),
            Some("hubspot.pipelines")
        );
        assert_eq!(
            config_key_of(
                "Salesforce stage `Won Big` has no mapping (add it under salesforce.stages)"
            )
            .as_deref(),
            Some("salesforce.stages")
        );
        assert_eq!(config_key_of("payload is not JSON"), None);
    }
}

//! HubSpot CRM v3 client (private-app bearer token): property updates (single and batch ≤ 100),
//! notes on deals, record reads with associations, and the property setup behind `crm setup`.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{retry_after, truncate, Answer, CallError};
use crate::config::Secret;
use crate::domain::Crm;

/// HubSpot's documented batch limit.
pub const BATCH_LIMIT: usize = 100;
/// Note → deal association type (HUBSPOT_DEFINED).
const NOTE_TO_DEAL: u32 = 214;

#[derive(Clone)]
pub struct HubSpotClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

/// Properties for one record.
pub type Properties = BTreeMap<String, String>;

impl HubSpotClient {
    pub fn new(http: reqwest::Client, base: &str, token: Secret) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// URL segment for an object type as the service stores it.
    pub fn plural(object_type: &str) -> &str {
        match object_type {
            "contact" => "contacts",
            "deal" => "deals",
            other => other,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), CallError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            req = req.json(body);
        }
        let answer = Answer::of(Crm::HubSpot, req).await?;
        if answer.status.is_success() {
            return Ok((answer.status, answer.body()));
        }
        Err(classify(answer.status, &answer.headers, &answer.text))
    }

    /// `PATCH /crm/v3/objects/{type}/{id}`.
    pub async fn update(
        &self,
        object_type: &str,
        id: &str,
        properties: &Properties,
    ) -> Result<(), CallError> {
        let path = format!("/crm/v3/objects/{}/{id}", Self::plural(object_type));
        self.call(
            Method::PATCH,
            &path,
            Some(&json!({ "properties": properties })),
        )
        .await
        .map(|_| ())
    }

    /// `POST /crm/v3/objects/{type}/batch/update` (≤ 100 inputs). On a partial failure (207) the
    /// failed ids come back with their error; everything else was applied.
    pub async fn batch_update(
        &self,
        object_type: &str,
        inputs: &[(String, Properties)],
    ) -> Result<BTreeMap<String, CallError>, CallError> {
        let body = json!({"inputs": inputs.iter().map(|(id, p)| json!({"id": id, "properties": p})).collect::<Vec<_>>()});
        let path = format!("/crm/v3/objects/{}/batch/update", Self::plural(object_type));
        let (status, answer) = self.call(Method::POST, &path, Some(&body)).await?;
        let mut failed = BTreeMap::new();
        if status == StatusCode::MULTI_STATUS {
            for error in answer
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let message = error_text(error);
                for id in error
                    .pointer("/context/ids")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(id) = id.as_str() {
                        failed.insert(
                            id.to_string(),
                            CallError::Permanent {
                                status: Some(207),
                                message: message.clone(),
                            },
                        );
                    }
                }
            }
        }
        Ok(failed)
    }

    /// A note on a deal's timeline (`POST /crm/v3/objects/notes`).
    pub async fn create_note(
        &self,
        deal_id: &str,
        body: &str,
        timestamp_ms: i64,
    ) -> Result<(), CallError> {
        let note = json!({
            "properties": {"hs_timestamp": timestamp_ms.to_string(), "hs_note_body": body},
            "associations": [{"to": {"id": deal_id},
                              "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_DEAL}]}]
        });
        self.call(Method::POST, "/crm/v3/objects/notes", Some(&note))
            .await
            .map(|_| ())
    }

    /// Read a record with the properties the ledger needs (and, for deals, its contacts).
    pub async fn read(
        &self,
        object_type: &str,
        id: &str,
        properties: &[&str],
    ) -> Result<Value, CallError> {
        let associations = if object_type == "deal" {
            "&associations=contacts"
        } else {
            ""
        };
        let path = format!(
            "/crm/v3/objects/{}/{id}?properties={}{associations}",
            Self::plural(object_type),
            properties.join(",")
        );
        self.call(Method::GET, &path, None).await.map(|(_, v)| v)
    }

    /// Whether a property group exists; creates it when missing. `Ok(true)` = created now.
    pub async fn ensure_group(
        &self,
        object_type: &str,
        name: &str,
        label: &str,
    ) -> Result<bool, CallError> {
        let plural = Self::plural(object_type);
        let path = format!("/crm/v3/properties/{plural}/groups");
        if refused_with(
            404,
            self.call(Method::GET, &format!("{path}/{name}"), None)
                .await,
        )?
        .is_some()
        {
            return Ok(false);
        }
        let body = json!({"name": name, "label": label, "displayOrder": -1});
        refused_with(409, self.call(Method::POST, &path, Some(&body)).await)
            .map(|created| created.is_some())
    }

    /// A property's definition (`GET /crm/v3/properties/{type}/{name}`); `None` when it does not
    /// exist.
    pub async fn property(
        &self,
        object_type: &str,
        name: &str,
    ) -> Result<Option<Value>, CallError> {
        let path = format!("/crm/v3/properties/{}/{name}", Self::plural(object_type));
        refused_with(404, self.call(Method::GET, &path, None).await)
    }

    /// `POST /crm/v3/properties/{type}`. `Ok(false)`: it already existed (409).
    pub async fn create_property(
        &self,
        object_type: &str,
        definition: &Value,
    ) -> Result<bool, CallError> {
        let path = format!("/crm/v3/properties/{}", Self::plural(object_type));
        refused_with(409, self.call(Method::POST, &path, Some(definition)).await)
            .map(|created| created.is_some())
    }

    /// `PATCH /crm/v3/properties/{type}/{name}`: change what `changes` names (an `options` list
    /// replaces the property's options).
    pub async fn update_property(
        &self,
        object_type: &str,
        name: &str,
        changes: &Value,
    ) -> Result<(), CallError> {
        let plural = Self::plural(object_type);
        self.call(
            Method::PATCH,
            &format!("/crm/v3/properties/{plural}/{name}"),
            Some(changes),
        )
        .await
        .map(|_| ())
    }
}

/// The answer, or `None` when HubSpot refused the call with `status` (404: not there; 409: already
/// there), which setup treats as an answer rather than a failure.
fn refused_with(
    status: u16,
    result: Result<(StatusCode, Value), CallError>,
) -> Result<Option<Value>, CallError> {
    match result {
        Ok((_, body)) => Ok(Some(body)),
        Err(CallError::Permanent {
            status: Some(refused),
            ..
        }) if refused == status => Ok(None),
        Err(e) => Err(e),
    }
}

/// HubSpot's error body: `{"status","message","category","policyName",…}` (every field optional).
fn error_text(body: &Value) -> String {
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    match body
        .get("category")
        .or(body.get("errorType"))
        .and_then(Value::as_str)
    {
        Some(category) => format!("{category}: {message}"),
        None => message.to_string(),
    }
}

fn classify(status: StatusCode, headers: &reqwest::header::HeaderMap, text: &str) -> CallError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let message = if body.is_null() {
        format!("HTTP {}: {}", status.as_u16(), truncate(text, 300))
    } else {
        format!("HTTP {}: {}", status.as_u16(), error_text(&body))
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        // The ten-second window clears by itself; the daily one only at the account's midnight,
        // so back off for an hour at a time rather than hammering it.
        let window = headers
            .get("x-hubspot-ratelimit-interval-milliseconds")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(10));
        let wait = match body.get("policyName").and_then(Value::as_str) {
            Some("DAILY") => Duration::from_secs(3600),
            _ => retry_after(headers).unwrap_or(window),
        };
        return CallError::Retry {
            status: Some(429),
            message,
            retry_after: Some(wait),
        };
    }
    CallError::of_status(status, message, retry_after(headers))
}

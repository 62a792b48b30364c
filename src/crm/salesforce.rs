//! Salesforce REST client: OAuth client-credentials token (cached; on 401 `INVALID_SESSION_ID` a new
//! token is fetched once and the call retried once), sObject updates (single and `composite/sobjects`
//! ≤ 200 records in ≤ 10 type chunks), Platform Event publishing, and `describe` for `crm setup`.
//! Field values go out typed: numbers as JSON numbers written from the decimal's own text, an
//! empty value as `null` (how the REST guide clears a field), everything else as a string.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::Mutex;

use super::{retry_after, truncate, Answer, CallError};
use crate::config::Secret;
use crate::domain::Crm;

/// Salesforce's documented sObject Collections limit.
pub const BATCH_LIMIT: usize = 200;
/// A collection is processed in chunks, a new one wherever the sObject type changes; Salesforce
/// refuses a request of more than this many.
pub const MAX_CHUNKS: usize = 10;

#[derive(Clone)]
struct Token {
    access: Secret,
    instance_url: String,
}

pub struct SalesforceClient {
    http: reqwest::Client,
    login_url: String,
    client_id: String,
    client_secret: Secret,
    api_version: String,
    token: Mutex<Option<Token>>,
    /// Fields that hold numbers (Number fields in the org).
    number_fields: BTreeSet<String>,
}

/// The API version as it appears in REST paths (`v62.0`), from either of the spellings people
/// use: Salesforce's own (`62.0`, as Setup and the release notes write it) or the path's
/// (`v62.0`). A bare major version (`62`, what a `62.0` environment variable parses to) gets its
/// `.0` back. `None` when it is not a version at all.
pub fn version_segment(version: &str) -> Option<String> {
    let number = version.trim();
    let number = number.strip_prefix('v').unwrap_or(number);
    let (major, minor) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor)).then(|| format!("v{major}.{minor}"))
}

/// Fields for one record.
pub type Fields = BTreeMap<String, String>;

impl SalesforceClient {
    pub fn new(
        http: reqwest::Client,
        login_url: &str,
        client_id: &str,
        client_secret: Secret,
        api_version: &str,
    ) -> Self {
        Self {
            http,
            login_url: login_url.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            client_secret,
            // Validation refuses anything else; keep a bad value visible in the 404 it causes.
            api_version: version_segment(api_version).unwrap_or_else(|| api_version.to_string()),
            token: Mutex::new(None),
            number_fields: BTreeSet::new(),
        }
    }

    /// Send these fields' values as JSON numbers (Salesforce refuses a string in a Number field).
    pub fn with_number_fields<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.number_fields = names.into_iter().map(Into::into).collect();
        self
    }

    /// The JSON for each field value (see the module docs).
    fn typed<'a>(&self, fields: &'a Fields) -> BTreeMap<&'a str, Box<RawValue>> {
        fields
            .iter()
            .map(|(name, value)| (name.as_str(), self.typed_value(name, value)))
            .collect()
    }

    fn typed_value(&self, name: &str, value: &str) -> Box<RawValue> {
        let raw = if value.is_empty() {
            "null".to_string()
        } else {
            match Decimal::from_str(value) {
                // The decimal's own text is a valid JSON number and never passes through a float.
                Ok(number) if self.number_fields.contains(name) => number.to_string(),
                // Not a number after all: let Salesforce's refusal name the field.
                _ => Value::String(value.to_string()).to_string(),
            }
        };
        RawValue::from_string(raw).expect("a JSON number, string or null")
    }

    async fn token(&self) -> Result<Token, CallError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            return Ok(t.clone());
        }
        let request = self
            .http
            .post(format!("{}/services/oauth2/token", self.login_url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose()),
            ]);
        let answer = Answer::of(Crm::Salesforce, request).await?;
        let status = answer.status;
        let body = answer.body();
        if !status.is_success() {
            // {"error": "invalid_client", "error_description": "…"}: wrong credentials will not fix
            // themselves; a server error might.
            let message = format!(
                "OAuth token request failed: HTTP {}: {} {}",
                status.as_u16(),
                body.get("error").and_then(Value::as_str).unwrap_or(""),
                body.get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
            return Err(CallError::of_status(status, message, None));
        }
        let token = Token {
            access: Secret::new(
                body.get("access_token")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            instance_url: body
                .get("instance_url")
                .and_then(Value::as_str)
                .unwrap_or(&self.login_url)
                .trim_end_matches('/')
                .to_string(),
        };
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn forget(&self, stale: &Token) {
        let mut cached = self.token.lock().await;
        if cached
            .as_ref()
            .is_some_and(|t| t.access.expose() == stale.access.expose())
        {
            *cached = None;
        }
    }

    /// One API call; an expired session is renewed once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<(StatusCode, Value), CallError> {
        let mut renewed = false;
        loop {
            let token = self.token().await?;
            let mut req = self
                .http
                .request(
                    method.clone(),
                    format!(
                        "{}/services/data/{}{path}",
                        token.instance_url, self.api_version
                    ),
                )
                .bearer_auth(token.access.expose());
            if let Some(body) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let answer = Answer::of(Crm::Salesforce, req).await?;
            if answer.status.is_success() {
                return Ok((answer.status, answer.body()));
            }
            if answer.status == StatusCode::UNAUTHORIZED
                && answer.text.contains("INVALID_SESSION_ID")
                && !renewed
            {
                self.forget(&token).await;
                renewed = true;
                continue;
            }
            return Err(classify(answer.status, &answer.headers, &answer.text));
        }
    }

    /// `PATCH /sobjects/{type}/{id}`.
    pub async fn update(&self, sobject: &str, id: &str, fields: &Fields) -> Result<(), CallError> {
        let body = to_json(&self.typed(fields));
        self.call(
            Method::PATCH,
            &format!("/sobjects/{sobject}/{id}"),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// `PATCH /composite/sobjects` with `allOrNone: false` (≤ 200 records, ≤ 10 type chunks: the
    /// caller groups records by type). Returns the per-record errors by id; records not listed
    /// were saved.
    pub async fn composite_update(
        &self,
        records: &[(String, String, Fields)],
    ) -> Result<BTreeMap<String, CallError>, CallError> {
        let body = to_json(&Collection {
            all_or_none: false,
            records: records
                .iter()
                .map(|(sobject, id, fields)| CollectionRecord {
                    attributes: Attributes { kind: sobject },
                    id,
                    fields: self.typed(fields),
                })
                .collect(),
        });
        let (_, results) = self
            .call(Method::PATCH, "/composite/sobjects", Some(&body))
            .await?;
        let mut failed = BTreeMap::new();
        // Results come back in request order.
        for (result, (_, id, _)) in results.as_array().into_iter().flatten().zip(records) {
            if result.get("success").and_then(Value::as_bool) == Some(false) {
                let message = result
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|errs| errs.iter().map(error_text).collect::<Vec<_>>().join("; "))
                    .unwrap_or_else(|| "save failed".into());
                failed.insert(
                    id.clone(),
                    CallError::Permanent {
                        status: Some(200),
                        message,
                    },
                );
            }
        }
        Ok(failed)
    }

    /// `GET /sobjects/{type}/{id}?fields=…`: the record's current values of `fields`.
    pub async fn read(&self, sobject: &str, id: &str, fields: &[&str]) -> Result<Value, CallError> {
        self.call(
            Method::GET,
            &format!("/sobjects/{sobject}/{id}?fields={}", fields.join(",")),
            None,
        )
        .await
        .map(|(_, record)| record)
    }

    /// `POST /sobjects/{Event__e}/`.
    pub async fn publish_event(&self, event: &str, fields: &Value) -> Result<(), CallError> {
        self.call(
            Method::POST,
            &format!("/sobjects/{event}/"),
            Some(&fields.to_string()),
        )
        .await
        .map(|_| ())
    }

    /// The fields of an sObject as `describe` reports them.
    pub async fn describe(&self, sobject: &str) -> Result<Vec<DescribedField>, CallError> {
        let (_, body) = self
            .call(Method::GET, &format!("/sobjects/{sobject}/describe"), None)
            .await?;
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(String::from);
        Ok(body
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some(DescribedField {
                    name: text(f, "name")?,
                    kind: text(f, "type").unwrap_or_default(),
                    picklist_values: f
                        .get("picklistValues")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|v| v.get("active").and_then(Value::as_bool) != Some(false))
                        .filter_map(|v| text(v, "value"))
                        .collect(),
                })
            })
            .collect())
    }
}

/// One field of a `describe` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedField {
    pub name: String,
    /// `string`, `double`, `datetime`, `picklist`, …
    pub kind: String,
    /// The active values of a pick-list.
    pub picklist_values: Vec<String>,
}

/// An sObject Collections update body.
#[derive(Serialize)]
struct Collection<'a> {
    #[serde(rename = "allOrNone")]
    all_or_none: bool,
    records: Vec<CollectionRecord<'a>>,
}

#[derive(Serialize)]
struct CollectionRecord<'a> {
    attributes: Attributes<'a>,
    id: &'a str,
    #[serde(flatten)]
    fields: BTreeMap<&'a str, Box<RawValue>>,
}

#[derive(Serialize)]
struct Attributes<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
}

fn to_json(body: &impl Serialize) -> String {
    serde_json::to_string(body).expect("strings, numbers and nulls always serialise")
}

/// Salesforce errors are arrays of `{"message","errorCode","fields"}` (`statusCode` in collections).
fn error_text(e: &Value) -> String {
    let code = e
        .get("errorCode")
        .or(e.get("statusCode"))
        .and_then(Value::as_str)
        .unwrap_or("ERROR");
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    format!("{code}: {message}")
}

fn classify(status: StatusCode, headers: &reqwest::header::HeaderMap, text: &str) -> CallError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let detail = match body.as_array() {
        Some(errors) => errors.iter().map(error_text).collect::<Vec<_>>().join("; "),
        None => truncate(text, 300),
    };
    let message = format!("HTTP {}: {detail}", status.as_u16());
    // The org's 24-hour API allowance is spent: wait, don't dead-letter.
    if status == StatusCode::FORBIDDEN && detail.contains("REQUEST_LIMIT_EXCEEDED") {
        return CallError::Retry {
            status: Some(403),
            message,
            retry_after: Some(Duration::from_secs(3600)),
        };
    }
    CallError::of_status(status, message, retry_after(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_version_is_read_in_either_spelling() {
        for spelling in ["62.0", "v62.0", " 62.0 ", "62", "v62"] {
            assert_eq!(
                version_segment(spelling).as_deref(),
                Some("v62.0"),
                "{spelling:?}"
            );
        }
        for wrong in ["", "v", "latest", "62.0.1", "6a.0", "v62.", "62 .0"] {
            assert_eq!(version_segment(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn numbers_keep_their_decimal_text_and_empty_values_become_null() {
        let client = SalesforceClient::new(
            reqwest::Client::new(),
            "https://example.my.salesforce.com",
            "id",
            Secret::new("secret"),
            "62.0",
        )
        .with_number_fields(["Amount__c"]);
        let fields: Fields = [
            ("Amount__c", "12345678901234567.10"),
            ("Code__c", "00042"),
            ("Hold__c", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            to_json(&client.typed(&fields)),
            r#"{"Amount__c":12345678901234567.10,"Code__c":"00042","Hold__c":null}"#
        );
    }
}

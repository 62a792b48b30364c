//! Webhook endpoints (SPEC §3). Each request is refused on its headers alone when they already fail
//! (missing or garbled signature headers, a stale timestamp, a wrong Salesforce token) before any
//! body byte is read; otherwise its body is read within the limits of [`crate::ingest::body`],
//! verified against its raw bytes before anything is parsed, split into events, stored through the
//! group-commit inbox writer, and only then answered. A duplicate gets the same answer as the
//! original. Nothing from the body or any secret is logged.

use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::domain::{Crm, EventSource};
use crate::error::ApiError;
use crate::ingest::body::{self, BodyError, BodyLimits, Reservation};
use crate::ingest::partition::{partition_of, product_route_key};
use crate::ingest::signature::{self, HeaderSource, ProductScheme, SignatureError};
use crate::ingest::{hubspot, product, salesforce, AppendError};
use crate::startup::AppState;
use crate::store::{Ingested, NewInboxEvent};

/// actix's header map, for the signature module (lookups are case-insensitive).
struct Headers<'a>(&'a HeaderMap);

impl HeaderSource for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request was turned away; becomes a metric label and the answer.
struct Rejection {
    reason: &'static str,
    error: ApiError,
}

impl Rejection {
    fn new(reason: &'static str, error: ApiError) -> Self {
        Self { reason, error }
    }
    fn signature(scheme: &str, e: SignatureError) -> Self {
        Self::new(
            e.reason_code(),
            ApiError::Unauthorized(format!("{scheme} signature rejected: {e}")),
        )
    }
}

fn record_rejection(source: &EventSource, r: &Rejection) {
    metrics::counter!("webhooks_rejected_total", "source" => source.to_string(), "reason" => r.reason)
        .increment(1);
    // The message can quote the request (a source name from the path, a parser's complaint).
    let error = crate::telemetry::untrusted(&r.error.to_string());
    tracing::warn!(%source, reason = r.reason, %error, "webhook rejected");
}

/// Read the body within the limits of [`crate::ingest::body`]. The reservation counts the body
/// against the unverified-bytes budget: drop it once the request is authenticated.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(Bytes, Reservation), Rejection> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let server = &state.settings.server;
    let limits = BodyLimits {
        max_bytes: server.body_limit_bytes,
        deadline: Duration::from_millis(server.body_read_timeout_ms),
    };
    body::read_body(payload, declared, limits, &state.body_budget)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(limit) => {
                Rejection::new("too_large", ApiError::PayloadTooLarge(limit))
            }
            BodyError::TimedOut(_) => {
                Rejection::new("body_timeout", ApiError::RequestTimeout(e.to_string()))
            }
            BodyError::Overloaded => {
                Rejection::new("overloaded", ApiError::Overloaded(e.to_string()))
            }
            BodyError::Unreadable(_) => {
                Rejection::new("unreadable", ApiError::BadRequest(e.to_string()))
            }
        })
}

/// Read the body and verify it with `verify` before anything parses it (see [`read_body`]); once
/// verified it no longer counts as unverified. A failed check is a `scheme` signature rejection.
async fn read_verified<T>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    scheme: &str,
    verify: impl FnOnce(&[u8]) -> Result<T, SignatureError>,
) -> Result<(Bytes, T), Rejection> {
    let (body, unverified) = read_body(req, payload, state).await?;
    let verified = verify(&body).map_err(|e| Rejection::signature(scheme, e))?;
    drop(unverified);
    Ok((body, verified))
}

/// The secrets a signature may be made with, as the signature module takes them.
fn exposed(secrets: &[Secret]) -> Vec<&str> {
    secrets.iter().map(Secret::expose).collect()
}

/// Store events; `Ok(true)` when at least one was new.
async fn store_events(
    state: &AppState,
    source: &EventSource,
    events: Vec<NewInboxEvent>,
) -> Result<bool, Rejection> {
    let count = events.len();
    if state.settings.ingest.discard_after_verify {
        return Ok(true);
    }
    let outcomes = state.inbox.append(events).await.map_err(|e| {
        let reason = match e {
            AppendError::Closed => "shutting_down",
            AppendError::Store(_) => "storage_unavailable",
        };
        tracing::error!(%source, error = ?e, "could not store webhook events");
        Rejection::new(
            reason,
            ApiError::Unavailable("events could not be stored; retry later".into()),
        )
    })?;
    let new = outcomes
        .iter()
        .filter(|o| matches!(o, Ingested::New(_)))
        .count();
    metrics::counter!("inbox_events_total", "source" => source.to_string(), "outcome" => "new")
        .increment(new as u64);
    metrics::counter!("inbox_events_total", "source" => source.to_string(), "outcome" => "duplicate")
        .increment((count - new) as u64);
    Ok(new > 0 || count == 0)
}

fn meta(pairs: &[(&str, serde_json::Value)]) -> String {
    serde_json::Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
    .to_string()
}

/// Runs one webhook request through `handle`, recording the received/rejected metrics and latency;
/// a rejection is answered by `error_response` (JSON, or a SOAP fault for Outbound Messages).
async fn instrumented<F>(
    source: &EventSource,
    handle: F,
    error_response: fn(&ApiError) -> HttpResponse,
) -> HttpResponse
where
    F: std::future::Future<Output = Result<HttpResponse, Rejection>>,
{
    let started = Instant::now();
    metrics::counter!("webhooks_received_total", "source" => source.to_string()).increment(1);
    let response = match handle.await {
        Ok(response) => {
            metrics::counter!("webhooks_accepted_total", "source" => source.to_string())
                .increment(1);
            response
        }
        Err(rejection) => {
            record_rejection(source, &rejection);
            error_response(&rejection.error)
        }
    };
    metrics::histogram!("webhook_ingest_seconds", "source" => source.to_string())
        .record(started.elapsed().as_secs_f64());
    response
}

// ---------------------------------------------------------------------------------------------
// HubSpot

/// The URL HubSpot called: `server.public_base_url` + the path and query as received. Behind a proxy
/// the socket's view differs from HubSpot's, and v2/v3 signatures cover the full URL.
fn public_url(req: &HttpRequest, base: &str) -> String {
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if base.is_empty() {
        let info = req.connection_info();
        format!("{}://{}{}", info.scheme(), info.host(), path_and_query)
    } else {
        format!("{}{}", base.trim_end_matches('/'), path_and_query)
    }
}

pub async fn post_hubspot(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    instrumented(
        &EventSource::HubSpot,
        receive_hubspot(req, payload, state),
        json_error,
    )
    .await
}

async fn receive_hubspot(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Rejection> {
    let settings = &state.settings;
    let secrets = exposed(&settings.hubspot.client_secrets);
    let versions = &settings.hubspot.signature_versions;
    let now = state.clock.now();
    let headers = Headers(req.headers());
    let scheme = Crm::HubSpot.as_str();
    let claim = signature::hubspot_claim(
        &headers,
        &secrets,
        versions,
        settings.ingest.timestamp_tolerance_secs as i64 * 1000,
        now,
    )
    .map_err(|e| Rejection::signature(scheme, e))?;
    let url = public_url(&req, &settings.server.public_base_url);
    let (body, version) = read_verified(&req, payload, &state, scheme, |body| {
        claim.verify(req.method().as_str(), &url, body)
    })
    .await?;

    let parsed = hubspot::parse_body(&body)
        .map_err(|e| Rejection::new("malformed", ApiError::BadRequest(e.to_string())))?;
    let meta = meta(&[("signature", json!(version.as_str()))]);
    let events = parsed
        .into_iter()
        .map(|e| {
            let object_key = match (&e.object_type, &e.object_id) {
                (Some(t), Some(id)) => Some(format!("hubspot:{t}:{id}")),
                _ => None,
            };
            NewInboxEvent {
                partition_no: partition_of(object_key.as_deref().unwrap_or(&e.dedupe_key)),
                source: EventSource::HubSpot,
                object_key,
                dedupe_key: e.dedupe_key,
                event_type: e.event_type,
                occurred_at: e.occurred_at_ms,
                received_at: now,
                meta: meta.clone(),
                payload: e.raw,
            }
        })
        .collect();
    store_events(&state, &EventSource::HubSpot, events).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---------------------------------------------------------------------------------------------
// Salesforce

pub async fn post_salesforce(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    // Media types are case-insensitive (RFC 9110 §8.3.1): `Application/JSON` is JSON too.
    let is_json = req
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|m| m.essence_str() == "application/json");
    if is_json {
        return instrumented(
            &EventSource::SalesforceCallout,
            receive_salesforce_callout(req, payload, state),
            json_error,
        )
        .await;
    }
    instrumented(
        &EventSource::Salesforce,
        receive_outbound_message(req, payload, state),
        soap_fault,
    )
    .await
}

fn json_error(error: &ApiError) -> HttpResponse {
    actix_web::ResponseError::error_response(error)
}

/// Outbound Messages expect SOAP in both directions, errors included.
fn soap_fault(error: &ApiError) -> HttpResponse {
    let status = actix_web::ResponseError::status_code(error);
    let code = if status.is_client_error() {
        salesforce::FaultCode::Client
    } else {
        salesforce::FaultCode::Server
    };
    let mut response = HttpResponse::build(status);
    error.add_headers(&mut response);
    response
        .content_type("text/xml; charset=utf-8")
        .body(salesforce::fault_response(code, &error.to_string()))
}

/// The Outbound Message secret: `?token=` in the endpoint URL or the HTTP Basic password. A token
/// given twice is refused rather than one of them picked: which one a proxy or framework would
/// use differs, and an attacker who can append to the URL should not get to choose.
fn outbound_credential(req: &HttpRequest) -> Result<Option<String>, Rejection> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let mut tokens = pairs.into_iter().filter(|(k, _)| k == "token");
    match (tokens.next(), tokens.next()) {
        (Some(_), Some(_)) => Err(Rejection::new(
            "repeated_credential",
            ApiError::Unauthorized("?token= is given more than once; give it once".into()),
        )),
        (Some((_, token)), None) => Ok(Some(token)),
        (None, _) => Ok(super::authorization(req, "Basic").and_then(|encoded| {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            decoded
                .split_once(':')
                .map(|(_, password)| password.to_string())
        })),
    }
}

async fn receive_outbound_message(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Rejection> {
    let settings = &state.settings;
    let expected = settings.salesforce.outbound_token.expose();
    if expected.is_empty() {
        return Err(Rejection::new(
            "not_configured",
            ApiError::Unauthorized(
                "salesforce outbound messages are not enabled (salesforce.outbound_token is empty)"
                    .into(),
            ),
        ));
    }
    let presented = outbound_credential(&req)?.ok_or_else(|| {
        Rejection::new(
            "missing_credential",
            ApiError::Unauthorized("missing ?token= or HTTP Basic credentials".into()),
        )
    })?;
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(Rejection::new(
            "bad_credential",
            ApiError::Unauthorized("the outbound message token does not match".into()),
        ));
    }
    // The token authenticated the sender: its body does not count as unverified.
    let (body, _) = read_body(&req, payload, &state).await?;
    let limits = salesforce::SoapLimits {
        max_attributes_per_element: settings.ingest.xml_max_attributes,
    };
    // A large message takes a while to parse: not on the threads that answer other requests.
    let message = web::block(move || salesforce::parse_outbound_message_with(&body, limits))
        .await
        .map_err(|e| {
            Rejection::new(
                "internal",
                ApiError::Internal(anyhow::anyhow!("SOAP parsing did not finish: {e}")),
            )
        })?
        .map_err(|e| Rejection::new("malformed", ApiError::BadRequest(e.to_string())))?;
    if !settings
        .salesforce
        .organization_ids
        .iter()
        .any(|allowed| salesforce::org_id_matches(allowed, &message.organization_id))
    {
        return Err(Rejection::new(
            "org_not_allowed",
            ApiError::Forbidden(format!(
                "organization {} is not in salesforce.organization_ids",
                message.organization_id
            )),
        ));
    }
    let now = state.clock.now();
    let meta = meta(&[("auth", json!("outbound_token"))]);
    let events = message
        .notifications
        .iter()
        .map(|n| {
            let record_id = n.fields.get("Id").cloned().flatten();
            let object_key = record_id.map(|id| format!("salesforce:{}:{id}", n.sobject_type));
            NewInboxEvent {
                partition_no: partition_of(object_key.as_deref().unwrap_or(&n.id)),
                source: EventSource::Salesforce,
                dedupe_key: n.id.clone(),
                event_type: format!("salesforce.{}", n.sobject_type),
                object_key,
                occurred_at: salesforce_modified_at(n),
                received_at: now,
                meta: meta.clone(),
                payload: n.to_json(&message.organization_id, message.action_id.as_deref()),
            }
        })
        .collect();
    store_events(&state, &EventSource::Salesforce, events).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body(salesforce::ack_response()))
}

/// Outbound Messages carry no event time; the record's modification stamp is the best order key
/// when the message definition includes it.
fn salesforce_modified_at(n: &salesforce::Notification) -> Option<i64> {
    ["SystemModstamp", "LastModifiedDate"]
        .iter()
        .find_map(|field| {
            let value = n.fields.get(*field)?.as_deref()?;
            chrono::DateTime::parse_from_rfc3339(value)
                .ok()
                .map(|t| t.timestamp_millis())
        })
}

async fn receive_salesforce_callout(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Rejection> {
    let settings = &state.settings;
    let secrets = exposed(&settings.salesforce.callout_secrets);
    let now = state.clock.now();
    let headers = Headers(req.headers());
    let scheme = "standard-webhooks";
    let claim = signature::standard_webhooks_claim(
        &headers,
        &secrets,
        settings.ingest.timestamp_tolerance_secs as i64,
        now / 1000,
    )
    .map_err(|e| Rejection::signature(scheme, e))?;
    let (body, webhook_id) =
        read_verified(&req, payload, &state, scheme, |body| claim.verify(body)).await?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        Rejection::new(
            "malformed",
            ApiError::BadRequest(format!("body is not valid JSON: {e}")),
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(Rejection::new(
            "malformed",
            ApiError::BadRequest("body must be a JSON object".into()),
        ));
    };
    let event_type = object
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("salesforce.callout");
    // The record the callout is about, as the decoder will read it.
    let data = object.get("data");
    let sobject = data
        .and_then(|d| {
            d.get("sobject_type")
                .or_else(|| d.pointer("/attributes/type"))
        })
        .and_then(|t| t.as_str());
    let record_id = data.and_then(|d| d.get("Id")).and_then(|i| i.as_str());
    let object_key = sobject
        .zip(record_id)
        .map(|(t, id)| format!("salesforce:{t}:{id}"));
    let event = NewInboxEvent {
        partition_no: partition_of(object_key.as_deref().unwrap_or(&webhook_id)),
        source: EventSource::SalesforceCallout,
        dedupe_key: webhook_id,
        event_type: event_type.to_string(),
        object_key,
        occurred_at: None,
        received_at: now,
        meta: meta(&[("signature", json!("standard-webhooks"))]),
        payload: String::from_utf8_lossy(&body).into_owned(),
    };
    store_events(&state, &EventSource::SalesforceCallout, vec![event]).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---------------------------------------------------------------------------------------------
// Product events

pub async fn post_signup(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let name = path.into_inner();
    // A name from the path becomes a metrics label only when it is configured.
    let source = if state.settings.sources.contains_key(&name) {
        EventSource::Product(name.clone())
    } else {
        EventSource::Product("unknown".into())
    };
    instrumented(
        &source,
        receive_signup(req, name, payload, state),
        json_error,
    )
    .await
}

async fn receive_signup(
    req: HttpRequest,
    name: String,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Rejection> {
    let settings = &state.settings;
    let Some(source) = settings.sources.get(&name) else {
        return Err(Rejection::new(
            "unknown_source",
            ApiError::NotFound(format!(
                "no product source named `{name}` is configured (sources.{name})"
            )),
        ));
    };
    let secrets = exposed(&source.secrets);
    let headers = Headers(req.headers());
    let now = state.clock.now();
    let tolerance = settings.ingest.timestamp_tolerance_secs as i64;
    let claim = match source.scheme {
        ProductScheme::StandardWebhooks => {
            signature::standard_webhooks_claim(&headers, &secrets, tolerance, now / 1000)
                .map(ProductClaim::StandardWebhooks)
        }
        ProductScheme::Stripe => signature::stripe_claim(&headers, &secrets, tolerance, now / 1000)
            .map(ProductClaim::Stripe),
        ProductScheme::HmacSha256 => {
            let header_name = source
                .header
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            signature::hmac_sha256_claim(&headers, &header_name, &secrets, source.encoding)
                .map(ProductClaim::HmacSha256)
        }
    }
    .map_err(|e| Rejection::signature(source.scheme.as_str(), e))?;
    let (body, webhook_id) = read_verified(&req, payload, &state, source.scheme.as_str(), |body| {
        claim.verify(body)
    })
    .await?;
    let event = product::parse_product_event(&body).map_err(|e| {
        if e.is_malformed() {
            Rejection::new("malformed", ApiError::BadRequest(e.to_string()))
        } else {
            Rejection::new("invalid", ApiError::Unprocessable(e.to_string()))
        }
    })?;
    let event_source = EventSource::Product(name.to_string());
    let stored = NewInboxEvent {
        partition_no: partition_of(&product_route_key(&event)),
        source: event_source.clone(),
        // SPEC §3: the event `id` identifies a product event, whatever webhook-id carried it.
        dedupe_key: event.id.clone(),
        event_type: event.event_type.clone(),
        object_key: None,
        occurred_at: Some(event.occurred_at_ms),
        received_at: now,
        meta: meta(&[
            ("signature", json!(source.scheme)),
            ("event_id", json!(event.id)),
            ("webhook_id", json!(webhook_id)),
        ]),
        payload: String::from_utf8_lossy(&body).into_owned(),
    };
    let new = store_events(&state, &event_source, vec![stored]).await?;
    Ok(HttpResponse::build(StatusCode::ACCEPTED)
        .json(json!({"id": event.id, "status": "accepted", "duplicate": !new})))
}

/// What a product request's signature headers claim, per scheme (checked before the body).
enum ProductClaim<'a> {
    StandardWebhooks(signature::StandardWebhooksClaim<'a>),
    Stripe(signature::StripeClaim<'a>),
    HmacSha256(signature::HmacClaim<'a>),
}

impl ProductClaim<'_> {
    /// Verifies the body; the Standard Webhooks `webhook-id` when the scheme has one.
    fn verify(&self, body: &[u8]) -> Result<Option<String>, SignatureError> {
        match self {
            Self::StandardWebhooks(claim) => claim.verify(body).map(Some),
            Self::Stripe(claim) => claim.verify(body).map(|()| None),
            Self::HmacSha256(claim) => claim.verify(body).map(|()| None),
        }
    }
}

//! CRM API clients: the only code that talks HTTP to HubSpot and Salesforce. Each call's outcome
//! is classified once, here: success, retry later (timeouts, 408, 429, 5xx, with the CRM's own
//! back-off hint), or a permanent refusal carrying the CRM's error text for the dead-letter queue.

pub mod fields;
pub mod hubspot;
pub mod salesforce;

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use crate::domain::Crm;

/// Why a CRM call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Worth trying again, after `retry_after` if the CRM said so.
    #[error("{message}")]
    Retry {
        status: Option<u16>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The CRM refused the request; retrying the same request cannot help.
    #[error("{message}")]
    Permanent {
        status: Option<u16>,
        message: String,
    },
}

impl CallError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Retry { status, .. } | Self::Permanent { status, .. } => *status,
        }
    }

    /// A refusal with HTTP `status`: retried (after `retry_after`) when the status is worth
    /// retrying ([`is_retryable`]), permanent otherwise.
    pub fn of_status(status: StatusCode, message: String, retry_after: Option<Duration>) -> Self {
        if is_retryable(status) {
            Self::Retry {
                status: Some(status.as_u16()),
                message,
                retry_after,
            }
        } else {
            Self::Permanent {
                status: Some(status.as_u16()),
                message,
            }
        }
    }

    /// A transport failure (timeout, refused connection): always retried.
    pub fn transport(e: &reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else {
            "could not connect"
        };
        // reqwest's Display includes the URL but never headers, so no token can leak here.
        Self::Retry {
            status: None,
            message: format!("request {what}: {e}"),
            retry_after: None,
        }
    }
}

/// A CRM's answer, read in full and counted in `crm_requests_total` by CRM and status.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Answer {
    /// Send `request` to `crm` and read the whole answer; a transport failure is retried.
    pub(crate) async fn of(crm: Crm, request: reqwest::RequestBuilder) -> Result<Self, CallError> {
        let response = request.send().await.map_err(|e| CallError::transport(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        metrics::counter!("crm_requests_total", "crm" => crm.as_str(), "status" => status.as_u16().to_string())
            .increment(1);
        let text = response
            .text()
            .await
            .map_err(|e| CallError::transport(&e))?;
        Ok(Self {
            status,
            headers,
            text,
        })
    }

    /// A successful answer's body. Some successes carry none (204, HubSpot's empty 200s), and the
    /// callers of those read nothing from it.
    pub(crate) fn body(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// Statuses that are worth retrying (SPEC §5): 408, 429 and every 5xx.
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// `Retry-After` in seconds (HTTP dates are rare from these APIs and are ignored).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Shorten a CRM error body for storage and logs.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The HTTP client both CRMs share: rustls, a request timeout, connection reuse.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("referral-sync/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static HTTP client configuration")
}

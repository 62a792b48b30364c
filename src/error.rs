//! The HTTP error type. Every error answer has the body `{"error": {"code": "…", "message": "…"}}`
//! (SPEC §6). `Display` is what the client sees; `Debug` carries the cause chain for the logs, and
//! 5xx answers never reveal the cause.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::store::StoreError;

#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    /// The request body did not arrive in time (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// Too much is in flight right now; answered 503 with `Retry-After`.
    #[error("{0}")]
    Overloaded(String),
    /// 405 with `Allow` naming the one method the path takes.
    #[error("use {0} on this path")]
    MethodNotAllowed(&'static str),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A stable, snake_case code per variant, for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Unprocessable(_) => "unprocessable",
            Self::Unavailable(_) => "unavailable",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Overloaded(_) => "overloaded",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Internal(_) => "internal",
        }
    }
}

impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_chain(self, f)
    }
}

/// An error and every cause under it, one `caused by:` line each: what `Debug` of an HTTP error
/// shows the logs.
pub fn fmt_chain(e: &dyn std::error::Error, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    write!(f, "{e}")?;
    let mut cause = e.source();
    while let Some(c) = cause {
        write!(f, "\n  caused by: {c}")?;
        cause = c.source();
    }
    Ok(())
}

/// What an error answer (JSON or a page) does first: an internal error's cause chain, which the
/// answer never shows, goes to the log. Only an internal error is answered 500.
pub fn log_internal(status: StatusCode, error: &dyn std::fmt::Debug, answering: &str) {
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = ?error, "{answering} failed");
    }
}

/// Seconds a sender is asked to wait after an [`ApiError::Overloaded`] answer.
pub const RETRY_AFTER_SECS: u32 = 5;

impl ApiError {
    /// The headers this error's answer needs, whatever its body (JSON here, SOAP for Salesforce).
    pub fn add_headers(&self, response: &mut actix_web::HttpResponseBuilder) {
        match self {
            Self::Overloaded(_) => {
                response.insert_header((
                    actix_web::http::header::RETRY_AFTER,
                    RETRY_AFTER_SECS.to_string(),
                ));
            }
            Self::MethodNotAllowed(method) => {
                response.insert_header((actix_web::http::header::ALLOW, *method));
            }
            _ => {}
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) | Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        log_internal(status, self, "request");
        let mut response = HttpResponse::build(status);
        self.add_headers(&mut response);
        response.json(json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("not found".into()),
            StoreError::Conflict(m) => Self::Conflict(m),
            e => Self::Internal(e.into()),
        }
    }
}

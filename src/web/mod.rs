//! Server-rendered pages: the RevOps console (`/console`, [`console`]) and the partner portal
//! (`/partners/{code}`, [`portal`]). HTML comes from askama templates kept beside each module and
//! escaped by the template engine; charts are SVG drawn on the server ([`charts`]); one stylesheet
//! is served from the binary. No script, no font or image from anywhere: nothing to build, and
//! every page works offline. What all pages share lives here: the error page, the security
//! headers, form bodies and the formatting of times and numbers.

pub mod charts;
pub mod console;
pub mod portal;

use std::collections::BTreeMap;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use askama::Template;
use futures_util::future::LocalBoxFuture;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::clock::Millis;
use crate::store::StoreError;

/// The stylesheet of every page, compiled in.
const STYLESHEET: &str = include_str!("web.css");

/// No script at all, styles only from this origin, forms only to this origin, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's and the portal's routes, plus the shared stylesheet.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/assets/web.css", web::get().to(get_stylesheet));
    console::configure(cfg);
    portal::configure(cfg);
}

async fn get_stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLESHEET)
}

/// Why a page could not be shown. Each answers with a small HTML page saying so; an internal
/// error says only that, and logs its cause.
#[derive(thiserror::Error)]
pub enum WebError {
    /// A filter or form field that cannot be used (422).
    #[error("{0}")]
    Invalid(String),
    /// No console session (or an expired one): a page sends the browser to sign-in (303), a form
    /// post is refused (401).
    #[error("sign in to the console to continue")]
    SignIn { post: bool },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("something went wrong; the cause is in the service log")]
    Internal(#[from] anyhow::Error),
}

impl std::fmt::Debug for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::error::fmt_chain(self, f)
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("rendering a page"))
    }
}

#[derive(Template)]
#[template(path = "templates/error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::SignIn { post: false } => StatusCode::SEE_OTHER,
            Self::SignIn { post: true } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        crate::error::log_internal(status, self, "page");
        if status == StatusCode::SEE_OTHER {
            return see_other("/console");
        }
        let page = ErrorPage {
            title: status.canonical_reason().unwrap_or("Error"),
            message: self.to_string(),
        };
        match page.render() {
            Ok(body) => html(status, body),
            Err(e) => {
                tracing::error!(error = %e, "the error page failed to render");
                page_builder(status).body(status.to_string())
            }
        }
    }
}

/// A response builder with the headers every page carries: no caching (pages show live and
/// private data), no referrer (portal links carry their token), the content security policy.
pub fn page_builder(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    builder
}

/// An HTML page.
pub fn html(status: StatusCode, body: String) -> HttpResponse {
    page_builder(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// Render `template` as a 200 page.
pub fn render(template: &impl Template) -> Result<HttpResponse, WebError> {
    Ok(html(StatusCode::OK, template.render()?))
}

/// 303 to `location` (after a form post, or to the sign-in page).
pub fn see_other(location: &str) -> HttpResponse {
    let mut response = page_builder(StatusCode::SEE_OTHER).finish();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// An `application/x-www-form-urlencoded` body, keeping repeated names (`id=1&id=2`, which is how
/// a browser sends checked boxes). Anything else is refused, naming what was expected.
pub struct FormFields(Vec<(String, String)>);

/// Bodies of console forms are a few fields; replay selections a few thousand ids at most.
const FORM_LIMIT_BYTES: usize = 64 * 1024;

impl FormFields {
    pub fn parse(body: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, trimmed, if it has one.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }
}

impl FromRequest for FormFields {
    type Error = WebError;
    type Future = LocalBoxFuture<'static, Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_form {
                return Err(WebError::Invalid(
                    "send the form as application/x-www-form-urlencoded".into(),
                ));
            }
            let body = body
                .await
                .map_err(|e| WebError::Invalid(format!("the form could not be read: {e}")))?;
            if body.len() > FORM_LIMIT_BYTES {
                return Err(WebError::Invalid(format!(
                    "the form is larger than {FORM_LIMIT_BYTES} bytes"
                )));
            }
            Ok(Self::parse(&body))
        })
    }
}

/// `2026-11-20 10:00 UTC`.
pub fn format_time(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// `2026-11-20`.
pub fn format_date(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A ratio as a percentage to one decimal (`0.4286` → `42.9%`); `–` when there is none.
pub fn format_percent(ratio: Option<Decimal>) -> String {
    ratio.map_or_else(
        || "–".to_string(),
        |r| {
            let mut p = (r * Decimal::ONE_HUNDRED)
                .round_dp_with_strategy(1, RoundingStrategy::MidpointAwayFromZero);
            p.rescale(1);
            format!("{p}%")
        },
    )
}

/// Digits grouped in threes with `separator`: `1234567` → `1,234,567`.
pub fn group_digits(digits: &str, separator: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * separator.len());
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push_str(separator);
        }
        out.push(c);
    }
    out
}

/// A count with thousands separators (`1,234`).
pub fn format_count(n: u64) -> String {
    group_digits(&n.to_string(), ",")
}

/// A count the database returned, as [`format_count`] shows it; a negative one is an error naming
/// it (see [`crate::store::count`]), not shown as 0.
pub fn format_stored_count(n: i64) -> Result<String, WebError> {
    Ok(format_count(crate::store::count(n)?))
}

/// An exact amount in the console's style: `USD 1,234.50` (two decimals at least, never rounded
/// away; a negative amount as `USD -12.50`).
pub fn format_money(currency: &str, amount: Decimal) -> String {
    let mut amount = amount;
    if amount.scale() < 2 {
        amount.rescale(2);
    }
    let text = amount.abs().to_string();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let sign = if amount.is_sign_negative() && !amount.is_zero() {
        "-"
    } else {
        ""
    };
    format!("{currency} {sign}{}.{fraction}", group_digits(whole, ","))
}

/// Amounts per currency, one per line's worth: `USD 3,000.00 · RUB 50,000.00`; `–` when none.
/// Currencies are never added to each other.
pub fn format_money_map(amounts: &BTreeMap<String, Decimal>) -> String {
    if amounts.is_empty() {
        return "–".into();
    }
    amounts
        .iter()
        .map(|(currency, amount)| format_money(currency, *amount))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Fresh random bytes from the operating system, as unpadded base64url (a session token, a CSRF
/// token).
pub fn random_token() -> Result<String, WebError> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| WebError::Internal(anyhow::anyhow!("no randomness from the OS: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn money_keeps_every_digit_and_groups_thousands() {
        assert_eq!(format_money("USD", d("1234567.5")), "USD 1,234,567.50");
        assert_eq!(format_money("USD", d("0.125")), "USD 0.125");
        assert_eq!(format_money("RUB", d("-12")), "RUB -12.00");
        assert_eq!(format_money("USD", d("100")), "USD 100.00");
        let mut map = BTreeMap::new();
        map.insert("USD".to_string(), d("3000"));
        map.insert("RUB".to_string(), d("50000"));
        assert_eq!(format_money_map(&map), "RUB 50,000.00 · USD 3,000.00");
        assert_eq!(format_money_map(&BTreeMap::new()), "–");
    }

    #[test]
    fn percentages_and_counts_read_like_numbers() {
        assert_eq!(format_percent(Some(d("0.4286"))), "42.9%");
        assert_eq!(format_percent(Some(d("1"))), "100.0%");
        assert_eq!(format_percent(None), "–");
        assert_eq!(format_count(1_000_000), "1,000,000");
        assert_eq!(format_count(999), "999");
        assert_eq!(group_digits("1234", "\u{a0}"), "1\u{a0}234");
    }

    #[test]
    fn a_stored_count_is_shown_and_a_negative_one_is_an_error_naming_it() {
        assert_eq!(format_stored_count(1234).unwrap(), "1,234");
        let e = format_stored_count(-3).unwrap_err();
        assert!(matches!(e, WebError::Internal(_)), "{e:?}");
        assert!(format!("{e:?}").contains("a count of -3"), "{e:?}");
    }

    #[test]
    fn form_bodies_keep_repeated_names_and_decode_them() {
        let form = FormFields::parse(b"id=1&id=22&reason=looks+fine%21&csrf=");
        assert_eq!(form.all("id").collect::<Vec<_>>(), ["1", "22"]);
        assert_eq!(form.text("reason"), Some("looks fine!"));
        assert_eq!(form.text("csrf"), None);
        assert_eq!(form.get("csrf"), Some(""));
    }

    #[test]
    fn tokens_are_fresh_and_url_safe() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}

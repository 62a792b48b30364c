//! Logging setup: readable lines locally, JSON when `telemetry.format = "json"`. `RUST_LOG`
//! overrides the configured filter. Request bodies and secrets are never logged.
//!
//! Log forging: text a request controls (its path, names decoded from it, error messages that
//! quote it) is logged through [`untrusted`], which escapes control characters and cuts it to
//! `telemetry.max_field_chars`, in both formats. The readable format also escapes control
//! characters in every other field, so no value can start a line of its own or drive the terminal.
//! JSON escapes them by itself.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, TelemetrySettings};

/// `telemetry.max_field_chars`, once [`init`] has run.
static MAX_FIELD_CHARS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_FIELD_CHARS);
pub const DEFAULT_MAX_FIELD_CHARS: usize = 256;

/// Install the global subscriber once; later calls (tests) are ignored.
pub fn init(settings: &TelemetrySettings) {
    MAX_FIELD_CHARS.store(settings.max_field_chars, Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if settings.format == LogFormat::Json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        let escaped = fmt::format::debug_fn(|writer, field, value| {
            let text = escape_controls(&format!("{value:?}"));
            if field.name() == "message" {
                writer.write_str(&text)
            } else {
                write!(writer, "{field}={text}")
            }
        })
        .delimited(" ");
        builder.compact().fmt_fields(escaped).try_init()
    };
}

/// Request-controlled text as it may appear in a log line: control characters (and the Unicode
/// line separators and direction overrides) escaped, cut to `telemetry.max_field_chars`.
pub fn untrusted(text: &str) -> String {
    let max = MAX_FIELD_CHARS.load(Ordering::Relaxed);
    let cut = text.char_indices().nth(max).map(|(i, _)| i);
    let mut out = escape_controls(&text[..cut.unwrap_or(text.len())]);
    if let Some(i) = cut {
        let _ = write!(out, "…(+{} bytes)", text.len() - i);
    }
    out
}

fn escape_controls(text: &str) -> String {
    let needs_escape = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if !text.contains(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Request spans without the query string: Salesforce Outbound Messages carry their shared secret
/// as `?token=`, and tracing-actix-web's default span records the full target.
pub struct RedactedSpans;

impl tracing_actix_web::RootSpanBuilder for RedactedSpans {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use actix_web::HttpMessage;
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let route = request.match_pattern().unwrap_or_else(|| "default".into());
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.path = %untrusted(request.path()),
            request_id = %request_id,
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
        )
    }

    /// As tracing-actix-web's default, but an error's message is request-controlled text.
    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        let (status, error) = match outcome {
            Ok(response) => (
                response.status(),
                response.response().error().map(|e| e.to_string()),
            ),
            Err(e) => (e.as_response_error().status_code(), Some(e.to_string())),
        };
        span.record("http.status_code", status.as_u16());
        span.record(
            "otel.status_code",
            if status.is_server_error() {
                "ERROR"
            } else {
                "OK"
            },
        );
        if let Some(message) = error {
            span.record("exception.message", untrusted(&message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_is_cut() {
        assert_eq!(
            untrusted("x\n2026-11-20 INFO forged\u{1b}[2J\u{202E}"),
            "x\\n2026-11-20 INFO forged\\u{1b}[2J\\u{202e}"
        );
        assert_eq!(untrusted("café"), "café");
        let long = "a".repeat(DEFAULT_MAX_FIELD_CHARS + 100);
        let shown = untrusted(&long);
        assert!(shown.starts_with(&"a".repeat(DEFAULT_MAX_FIELD_CHARS)));
        assert!(shown.ends_with("…(+100 bytes)"), "{shown}");
    }
}

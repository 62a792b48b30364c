//! Logging setup: readable lines locally, JSON when `telemetry.format = "json"`. `RUST_LOG`
//! overrides the configured filter. Request bodies and secrets are never logged.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::TelemetrySettings;

/// Install the global subscriber once; later calls (tests) are ignored.
pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if settings.format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.compact().try_init()
    };
}

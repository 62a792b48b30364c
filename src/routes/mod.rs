//! HTTP routes: one module per resource. Handlers are named `verb_noun`.

pub mod admin;
pub mod health;
pub mod metrics;
pub mod webhooks;

use actix_web::web;

/// Everything the app serves.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::get_healthz))
        .route("/readyz", web::get().to(health::get_readyz))
        .route("/metrics", web::get().to(metrics::get_metrics))
        .route("/webhooks/hubspot", web::post().to(webhooks::post_hubspot))
        .route(
            "/webhooks/salesforce",
            web::post().to(webhooks::post_salesforce),
        )
        .route(
            "/webhooks/signup/{source}",
            web::post().to(webhooks::post_signup),
        )
        .configure(admin::configure);
}

//! HTTP routes: one module per resource. Handlers are named `verb_noun`.

pub mod health;

use actix_web::web;

/// Everything the app serves.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::get_healthz))
        .route("/readyz", web::get().to(health::get_readyz));
}

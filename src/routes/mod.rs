//! HTTP routes: one module per resource. Handlers are named `verb_noun`.

pub mod admin;
pub mod health;
pub mod metrics;
pub mod webhooks;

use actix_web::{web, HttpRequest};

use crate::error::ApiError;

/// Everything the app serves.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::get_healthz))
        .route("/readyz", web::get().to(health::get_readyz))
        .route("/metrics", web::get().to(metrics::get_metrics))
        .service(post_only("/webhooks/hubspot").route(web::post().to(webhooks::post_hubspot)))
        .service(post_only("/webhooks/salesforce").route(web::post().to(webhooks::post_salesforce)))
        .service(
            post_only("/webhooks/signup/{source}").route(web::post().to(webhooks::post_signup)),
        )
        .configure(admin::configure)
        .configure(crate::web::configure);
}

/// A path that exists for POST only: any other method gets 405 with `Allow: POST`, not 404.
fn post_only(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed("POST"))
    }))
}

/// The credentials of an `Authorization: <scheme> <credentials>` header, the scheme compared
/// case-insensitively (RFC 9110 §11.1: `BEARER`, `bearer` and `Bearer` are one scheme).
pub fn authorization<'r>(req: &'r HttpRequest, scheme: &str) -> Option<&'r str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (given, credentials) = value.trim_start().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| credentials.trim())
        .filter(|c| !c.is_empty())
}

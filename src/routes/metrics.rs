//! `GET /metrics`: Prometheus text exposition.

use actix_web::{web, HttpResponse};

use crate::startup::AppState;

pub async fn get_metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

//! `GET /openapi.json`: the admin API's OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations (a test checks it lists exactly the routes the app serves).

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{deliveries, payouts, referrals, referrers, reports, rewards};

#[derive(OpenApi)]
#[openapi(
    info(title = "referral-sync admin API", description = "Referrers, referrals, rewards, payout statements, CRM deliveries and the funnel. Authorization: Bearer <API key>."),
    paths(
        referrers::list_referrers, referrers::get_referrer,
        referrals::list_referrals, referrals::get_referral, referrals::post_attribution,
        rewards::list_rewards, rewards::post_approve, rewards::post_reject, rewards::post_paid,
        payouts::list_payouts, payouts::post_paid,
        deliveries::list_deliveries, deliveries::post_replay,
        reports::get_funnel, reports::get_referrers,
    ),
    components(schemas(referrals::AttributionRequest, rewards::DecisionRequest, payouts::PaidRequest, deliveries::ReplayRequest)),
    modifiers(&BearerKey)
)]
pub struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn get_openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

//! The app and an in-process CRM sandbox sharing one fake clock, configured to talk to each
//! other: what the write-back tests play against.

use std::sync::Arc;

use crm_sandbox::{CrmSandbox, SandboxConfig};
use referral_sync::clock::FakeClock;
use referral_sync::config::{Secret, Settings};
use serde_json::json;

use super::senders::{configure, deal_property, example_settings, hubspot_event, iso};
use super::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

pub struct World {
    pub app: TestApp,
    pub crm: CrmSandbox,
    pub clock: Arc<FakeClock>,
}

pub async fn world(backend: Backend, sandbox: SandboxConfig) -> Option<World> {
    world_with(backend, sandbox, |_| {}).await
}

pub async fn world_with(
    backend: Backend,
    sandbox: SandboxConfig,
    adjust: impl Fn(&mut Settings) + Send + 'static,
) -> Option<World> {
    let clock = FakeClock::new(T0);
    let crm = CrmSandbox::start(
        sandbox.clone(),
        referral_sync::clock::for_sandbox(clock.clone()),
    )
    .await
    .expect("sandbox");
    let base = crm.base_url.clone();
    let app = spawn_app_with(
        backend,
        SpawnOptions {
            clock: Some(clock.clone()),
            ..Default::default()
        },
        |s| {
            configure(s);
            s.programs = example_settings().programs;
            s.hubspot.api_base_url = base.clone();
            s.hubspot.access_token = Secret::new(sandbox.hubspot_token.clone());
            s.salesforce.login_url = base.clone();
            s.salesforce.client_id = sandbox.salesforce_client_id.clone();
            s.salesforce.client_secret = Secret::new(sandbox.salesforce_client_secret.clone());
            s.salesforce.api_version = sandbox.salesforce_api_version.clone();
            s.outbox.hubspot_requests_per_10s = sandbox.hubspot_limit_per_10s;
            adjust(s);
        },
    )
    .await?;
    Some(World { app, crm, clock })
}

/// A US referral for `p{n}@northwind.io` with a HubSpot contact and a 40000 USD deal linked to it.
pub async fn hubspot_referral(app: &TestApp, n: u64) -> (u64, u64) {
    hubspot_referral_in(app, n, "USD").await
}

/// [`hubspot_referral`] with the deal in `currency`.
pub async fn hubspot_referral_in(app: &TestApp, n: u64, currency: &str) -> (u64, u64) {
    let (contact, deal) = (1000 + n, 2000 + n);
    app.signup(json!({"id": format!("evt_{n}"), "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": format!("p{n}@northwind.io"), "referral_code": "ACME-7", "source": "link", "market": "US"}}))
        .await;
    app.hubspot(json!([
        hubspot_event(n * 10 + 1, "contact.propertyChange", contact, T0, json!({"propertyName": "email", "propertyValue": format!("p{n}@northwind.io")})),
        hubspot_event(n * 10 + 2, "deal.associationChange", deal, T0, json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact})),
        deal_property(n * 10 + 3, deal, "amount", "40000", T0),
        deal_property(n * 10 + 4, deal, "deal_currency_code", currency, T0),
    ]))
    .await;
    app.process().await;
    (contact, deal)
}

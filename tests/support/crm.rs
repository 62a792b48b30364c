//! The app and an in-process CRM sandbox sharing one fake clock, configured to talk to each
//! other: what the write-back tests play against.

use std::sync::Arc;

use referral_sync::clock::FakeClock;
use referral_sync::config::{Secret, Settings};
use referral_sync::sandbox::{CrmSandbox, SandboxConfig};

use super::senders::{configure, example_settings};
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
    let crm = CrmSandbox::start(sandbox.clone(), clock.clone())
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

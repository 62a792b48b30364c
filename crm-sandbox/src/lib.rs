//! In-process CRM sandbox: a local HTTP server that answers the HubSpot and Salesforce endpoints
//! referral-sync writes to, following the vendors' documented status codes, error bodies, rate-limit
//! answers and token expiry, and refusing what they refuse: values a field's type or a pick-list's
//! options don't allow, Salesforce collections of more than ten type chunks. HubSpot merges answer
//! for the merged-away ids. This module owns the server lifecycle, the shared state, fault
//! injection and the request/write journal; `hubspot` and `salesforce` own each vendor's routes.
//!
//! Time comes from the injected [`SharedClock`], so rate-limit windows move only when a test moves
//! the clock; only [`Failure::Delay`] waits in real time.
//!
//! A crate of its own: the service's tests and its `demo` command use it, a production build
//! leaves it out (the service's `demo` feature).

mod hubspot;
mod salesforce;

pub use salesforce::REWARD_STATUSES;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Where the sandbox reads the time; any `Fn() -> Millis` is one, so a caller passes its own
/// clock as `Arc::new(move || clock.now())`.
pub trait Clock: Send + Sync {
    fn now(&self) -> Millis;
}

impl<F: Fn() -> Millis + Send + Sync> Clock for F {
    fn now(&self) -> Millis {
        self()
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// RFC 3339 with milliseconds, as Salesforce writes times.
fn to_rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// A running sandbox. Dropping it without [`CrmSandbox::stop`] leaves the server running until the
/// runtime shuts down.
pub struct CrmSandbox {
    /// `http://127.0.0.1:PORT`, no trailing slash; both CRMs are served from it.
    pub base_url: String,
    pub state: Arc<SandboxState>,
    handle: ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl CrmSandbox {
    /// Bind 127.0.0.1 on a free port and serve on the current tokio runtime.
    pub async fn start(config: SandboxConfig, clock: SharedClock) -> std::io::Result<CrmSandbox> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let state = Arc::new(SandboxState::new(config, clock, base_url.clone()));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                // Batch bodies of 100–200 records exceed actix's 256 kB default.
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .default_service(web::to(dispatch))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        let server = tokio::spawn(server);
        Ok(CrmSandbox {
            base_url,
            state,
            handle,
            server,
        })
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.server.await;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The Bearer token HubSpot requests must carry.
    pub hubspot_token: String,
    /// Requests per rolling 10 s window (HubSpot private apps: 100–190).
    pub hubspot_limit_per_10s: u32,
    pub salesforce_client_id: String,
    pub salesforce_client_secret: String,
    /// e.g. "v62.0"; any other version in a data URL is a 404.
    pub salesforce_api_version: String,
    /// Writing a HubSpot property that was not created via the properties API is a 400.
    pub strict_properties: bool,
    /// A write to an id that was never seeded creates the record; false: 404.
    pub auto_create: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            hubspot_token: "pat-sandbox".into(),
            hubspot_limit_per_10s: 100,
            salesforce_client_id: "sandbox-client".into(),
            salesforce_client_secret: "sandbox-secret".into(),
            salesforce_api_version: "v62.0".into(),
            strict_properties: false,
            auto_create: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this status and the CRM's own error body.
    Status(u16),
    /// HubSpot: 429 TEN_SECONDLY_ROLLING. Salesforce: 403 REQUEST_LIMIT_EXCEEDED.
    RateLimit,
    /// HubSpot: 429 DAILY. Salesforce: 403 REQUEST_LIMIT_EXCEEDED.
    DailyLimit,
    /// Answer normally after this real delay.
    Delay(Duration),
    /// Carry the request out, then answer only after this real delay: the CRM applied a write
    /// whose answer the client gave up waiting for.
    AnswerLate(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Crm {
    HubSpot,
    Salesforce,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedWrite {
    pub crm: Crm,
    /// HubSpot: "contacts" | "deals" (canonical plural). Salesforce: the sObject name.
    pub object_type: String,
    pub id: String,
    /// Only the properties this write set.
    pub properties: BTreeMap<String, String>,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub crm: Crm,
    pub method: String,
    /// Without the query string.
    pub path: String,
    pub status: u16,
    pub at: Millis,
}

/// Everything the sandbox knows; shared by the server and the test that started it.
pub struct SandboxState {
    config: SandboxConfig,
    clock: SharedClock,
    base_url: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    hubspot: hubspot::Store,
    salesforce: salesforce::Store,
    hubspot_faults: Faults,
    salesforce_faults: Faults,
    writes: Vec<RecordedWrite>,
    requests: Vec<RecordedRequest>,
}

#[derive(Default)]
struct Faults {
    queued: VecDeque<Failure>,
    outage: Option<Failure>,
}

impl Inner {
    fn faults(&mut self, crm: Crm) -> &mut Faults {
        match crm {
            Crm::HubSpot => &mut self.hubspot_faults,
            Crm::Salesforce => &mut self.salesforce_faults,
        }
    }

    /// The failure this request must suffer, if any; an outage does not use up queued failures.
    fn take_failure(&mut self, crm: Crm) -> Option<Failure> {
        let faults = self.faults(crm);
        match &faults.outage {
            Some(failure) => Some(failure.clone()),
            None => faults.queued.pop_front(),
        }
    }
}

impl SandboxState {
    fn new(config: SandboxConfig, clock: SharedClock, base_url: String) -> Self {
        Self {
            config,
            clock,
            base_url,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not take every later assertion down with it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> Millis {
        self.clock.now()
    }

    /// The next `n` API requests to `crm` fail this way (the Salesforce token endpoint never fails).
    pub fn fail_next(&self, crm: Crm, n: usize, failure: Failure) {
        let mut inner = self.lock();
        let queued = &mut inner.faults(crm).queued;
        queued.extend(std::iter::repeat_n(failure, n));
    }

    /// Every API request to `crm` fails this way until cleared with `None`.
    pub fn set_outage(&self, crm: Crm, failure: Option<Failure>) {
        self.lock().faults(crm).outage = failure;
    }

    /// Every Salesforce access token issued so far becomes invalid.
    pub fn expire_salesforce_sessions(&self) {
        self.lock().salesforce.expire_sessions();
    }

    pub fn tokens_issued(&self) -> usize {
        self.lock().salesforce.tokens_issued()
    }

    /// `object_type`: "contacts" | "deals" as in URLs; `contact_ids`: a deal's associated contacts.
    pub fn seed_hubspot(
        &self,
        object_type: &str,
        id: &str,
        properties: &[(&str, &str)],
        contact_ids: &[&str],
    ) {
        let now = self.now();
        self.lock()
            .hubspot
            .seed(object_type, id, properties, contact_ids, now);
    }

    /// Merge HubSpot records as a person merging them in HubSpot would: `merged` into `primary`,
    /// or, given `new_id`, both into a new record (HubSpot: "in some cases a new object is
    /// created"). Reads and writes of a merged-away id then reach the survivor, whose id is
    /// returned.
    pub fn merge_hubspot(
        &self,
        object_type: &str,
        primary: &str,
        merged: &[&str],
        new_id: Option<&str>,
    ) -> String {
        let now = self.now();
        self.lock()
            .hubspot
            .merge(object_type, primary, merged, new_id, now)
    }

    /// Seeded field names become known fields of the sObject.
    pub fn seed_salesforce(&self, sobject: &str, id: &str, fields: &[(&str, &str)]) {
        self.lock().salesforce.seed(sobject, id, fields);
    }

    /// Make `field` unknown on `sobject`: writes to it answer 400 INVALID_FIELD.
    pub fn remove_salesforce_field(&self, sobject: &str, field: &str) {
        self.lock().salesforce.remove_field(sobject, field);
    }

    pub fn add_salesforce_field(&self, sobject: &str, field: &str) {
        self.lock().salesforce.add_field(sobject, field);
    }

    /// Give `sobject` a field of this `describe` type (`string`, `double`, `datetime`,
    /// `picklist`…), replacing one of the same name; `picklist` lists a pick-list's values
    /// (unrestricted).
    pub fn define_salesforce_field(
        &self,
        sobject: &str,
        field: &str,
        kind: &str,
        picklist: &[&str],
    ) {
        self.lock()
            .salesforce
            .define_field(sobject, field, kind, picklist);
    }

    /// Current properties of a HubSpot object.
    pub fn hubspot_object(&self, object_type: &str, id: &str) -> Option<BTreeMap<String, String>> {
        self.lock().hubspot.object(object_type, id)
    }

    pub fn salesforce_record(&self, sobject: &str, id: &str) -> Option<BTreeMap<String, String>> {
        self.lock().salesforce.record(sobject, id)
    }

    /// Every successful record write, in order of application. Notes, properties and platform
    /// events have their own journals.
    pub fn writes(&self) -> Vec<RecordedWrite> {
        self.lock().writes.clone()
    }

    /// Every request either CRM answered, failed ones included, in order of answer.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// HubSpot notes created, each the full body as received.
    pub fn notes(&self) -> Vec<Value> {
        self.lock().hubspot.notes.clone()
    }

    /// Salesforce platform events published: (event name, fields as received).
    pub fn platform_events(&self) -> Vec<(String, Value)> {
        self.lock().salesforce.events.clone()
    }

    /// Names of HubSpot properties created via the properties API, in creation order.
    pub fn hubspot_properties(&self, object_type: &str) -> Vec<String> {
        self.lock().hubspot.property_names(object_type)
    }

    /// A HubSpot property's definition as the properties API answers it.
    pub fn hubspot_property(&self, object_type: &str, name: &str) -> Option<Value> {
        self.lock().hubspot.property_definition(object_type, name)
    }
}

/// A response before it becomes an actix one, so vendor modules can add headers uniformly.
struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = HttpResponse::build(status);
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                builder.insert_header((HeaderName::from_static(name), value));
            }
        }
        match self.body {
            Some(body) => builder
                .content_type("application/json;charset=UTF-8")
                .body(body.to_string()),
            None => builder.finish(),
        }
    }
}

/// What a CRM decided before routing: answer now, wait first, go ahead, or go ahead and answer
/// late.
enum Gate {
    Proceed,
    Delay(Duration),
    AnswerLate(Duration),
    Answer(Reply),
}

impl Gate {
    fn from_failure(failure: Option<Failure>, reply: impl Fn(&Failure) -> Reply) -> Gate {
        match failure {
            None => Gate::Proceed,
            Some(Failure::Delay(delay)) => Gate::Delay(delay),
            Some(Failure::AnswerLate(delay)) => Gate::AnswerLate(delay),
            Some(failure) => Gate::Answer(reply(&failure)),
        }
    }

    /// Sleeps out a delay (never holding the state lock); returns the early answer, if any, and
    /// how long to hold the answer back once the request is carried out.
    async fn pass(self) -> (Option<Reply>, Option<Duration>) {
        match self {
            Gate::Proceed => (None, None),
            Gate::Delay(delay) => {
                tokio::time::sleep(delay).await;
                (None, None)
            }
            Gate::AnswerLate(delay) => (None, Some(delay)),
            Gate::Answer(reply) => (Some(reply), None),
        }
    }
}

/// Sends `reply`, first holding it back for `late` when a test asked for a late answer.
async fn answer_after(late: Option<Duration>, reply: Reply) -> actix_web::HttpResponse {
    if let Some(delay) = late {
        tokio::time::sleep(delay).await;
    }
    reply.into_response()
}

fn record_request(inner: &mut Inner, crm: Crm, req: &HttpRequest, status: u16, at: Millis) {
    inner.requests.push(RecordedRequest {
        crm,
        method: req.method().to_string(),
        path: req.path().to_string(),
        status,
        at,
    });
}

fn correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    // Salesforce also accepts the legacy "OAuth" scheme.
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then(|| token.trim())
}

/// Path segments, empty ones (trailing or doubled slashes) dropped.
fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

async fn dispatch(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<SandboxState>,
) -> HttpResponse {
    let path = req.path();
    if path.starts_with("/crm/") {
        hubspot::handle(&state, &req, &body).await
    } else if path.starts_with("/services/") {
        salesforce::handle(&state, &req, &body).await
    } else {
        HttpResponse::NotFound().finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A clock the sandbox's own tests move by hand.
    pub(super) struct FakeClock(AtomicI64);

    impl FakeClock {
        pub(super) fn new(start: Millis) -> Arc<Self> {
            Arc::new(Self(AtomicI64::new(start)))
        }
        pub(super) fn advance(&self, by: Millis) {
            self.0.fetch_add(by, Ordering::SeqCst);
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Millis {
            self.0.load(Ordering::SeqCst)
        }
    }

    pub(super) struct Started {
        pub(super) sandbox: CrmSandbox,
        pub(super) clock: Arc<FakeClock>,
    }

    pub(super) async fn start(config: SandboxConfig) -> Started {
        let clock = FakeClock::new(1_700_000_000_000);
        let sandbox = CrmSandbox::start(config, clock.clone()).await.unwrap();
        Started { sandbox, clock }
    }

    #[tokio::test]
    async fn stop_releases_the_port_and_unknown_prefixes_are_404() {
        let clock = FakeClock::new(1_700_000_000_000);
        let sandbox = CrmSandbox::start(SandboxConfig::default(), clock)
            .await
            .unwrap();
        assert!(sandbox.base_url.starts_with("http://127.0.0.1:"));
        assert!(!sandbox.base_url.ends_with('/'));
        let resp = reqwest::get(format!("{}/elsewhere", sandbox.base_url))
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert!(sandbox.state.requests().is_empty());
        let url = sandbox.base_url.clone();
        sandbox.stop().await;
        assert!(reqwest::get(format!("{url}/crm/v3/objects/contacts/1"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn writes_are_journalled_in_order_of_application() {
        let s = start(SandboxConfig::default()).await;
        let base = s.sandbox.base_url.clone();
        let client = reqwest::Client::new();
        let t0 = s.clock.now();

        let resp = client
            .patch(format!("{base}/crm/v3/objects/contacts/101"))
            .bearer_auth("pat-sandbox")
            .json(&serde_json::json!({ "properties": { "referral_source": "partner:acme" } }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);

        s.clock.advance(5);
        let token: Value = client
            .post(format!("{base}/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "sandbox-client"),
                ("client_secret", "sandbox-secret"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap();
        let resp = client
            .patch(format!(
                "{base}/services/data/v62.0/sobjects/Opportunity/006A"
            ))
            .bearer_auth(token)
            .json(&serde_json::json!({ "Referral_Reward_Status__c": "approved" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);

        // A refused write is not journalled.
        s.sandbox
            .state
            .fail_next(Crm::HubSpot, 1, Failure::Status(500));
        s.clock.advance(5);
        let batch = serde_json::json!({ "inputs": [
            { "id": "7", "properties": { "referral_code": "A" } },
            { "id": "8", "properties": { "referral_code": "B" } },
        ] });
        for expected in [500, 200] {
            let resp = client
                .post(format!("{base}/crm/v3/objects/deals/batch/update"))
                .bearer_auth("pat-sandbox")
                .json(&batch)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), expected);
        }

        let props = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        let write = |crm, object_type: &str, id: &str, properties, at| RecordedWrite {
            crm,
            object_type: object_type.to_string(),
            id: id.to_string(),
            properties,
            at,
        };
        assert_eq!(
            s.sandbox.state.writes(),
            vec![
                write(
                    Crm::HubSpot,
                    "contacts",
                    "101",
                    props(&[("referral_source", "partner:acme")]),
                    t0
                ),
                write(
                    Crm::Salesforce,
                    "Opportunity",
                    "006A",
                    props(&[("Referral_Reward_Status__c", "approved")]),
                    t0 + 5
                ),
                write(
                    Crm::HubSpot,
                    "deals",
                    "7",
                    props(&[("referral_code", "A")]),
                    t0 + 10
                ),
                write(
                    Crm::HubSpot,
                    "deals",
                    "8",
                    props(&[("referral_code", "B")]),
                    t0 + 10
                ),
            ]
        );
        let requests: Vec<(Crm, String, u16)> = s
            .sandbox
            .state
            .requests()
            .into_iter()
            .map(|r| (r.crm, r.method, r.status))
            .collect();
        assert_eq!(
            requests,
            vec![
                (Crm::HubSpot, "PATCH".to_string(), 200),
                (Crm::Salesforce, "POST".to_string(), 200),
                (Crm::Salesforce, "PATCH".to_string(), 204),
                (Crm::HubSpot, "POST".to_string(), 500),
                (Crm::HubSpot, "POST".to_string(), 200),
            ]
        );
        s.sandbox.stop().await;
    }

    #[test]
    fn an_outage_does_not_use_up_queued_failures() {
        let mut inner = Inner::default();
        inner
            .faults(Crm::HubSpot)
            .queued
            .push_back(Failure::Status(500));
        inner.faults(Crm::HubSpot).outage = Some(Failure::Status(503));
        assert_eq!(inner.take_failure(Crm::HubSpot), Some(Failure::Status(503)));
        inner.faults(Crm::HubSpot).outage = None;
        assert_eq!(inner.take_failure(Crm::HubSpot), Some(Failure::Status(500)));
        assert_eq!(inner.take_failure(Crm::HubSpot), None);
        assert_eq!(inner.take_failure(Crm::Salesforce), None);
    }
}

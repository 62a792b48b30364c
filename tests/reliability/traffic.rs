//! Referral stories and a sender that behaves like the real ones: every request is signed at the
//! moment it is sent, a request counts only when it was acknowledged (2xx), and anything refused
//! or lost is sent again later with the same events. A story moves to its next step only after
//! its current step was acknowledged, as the CRM would not report a deal before its contact.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use referral_sync::clock::to_rfc3339;
use referral_sync::ingest::signature::{sign_hubspot, sign_standard_webhooks, HubSpotVersion};
use serde_json::{json, Value};

use crate::support::senders::{APP_SECRET, HUBSPOT_SECRET};

const PORTAL_ID: u64 = 62515;
const SUBSCRIPTION_ID: u64 = 7;
/// signup, contact email, deal association, amount + currency, closed won.
pub const STEPS: usize = 5;
pub const SIGNUP_SOURCE: &str = "signup:app";
pub const HUBSPOT_SOURCE: &str = "hubspot";
/// Gap between sending rounds; it paces the sender so its load overlaps the kills.
const ROUND_PAUSE: Duration = Duration::from_millis(10);
const MAX_ROUNDS: usize = 200_000;

/// (inbox source, dedupe key)
pub type EventKey = (String, String);

/// Time-seeded xorshift64*: enough randomness for kill moments and redelivery picks.
pub struct Rng(u64);

impl Rng {
    pub fn from_time() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    pub fn seed(&self) -> u64 {
        self.0
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..hi` (`hi > lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// One referral from product signup to a won HubSpot deal.
#[derive(Debug, Clone)]
pub struct Story {
    pub n: u64,
    /// Steps acknowledged so far (0..=STEPS).
    pub step: usize,
    /// Occurrence time of the signup, whole seconds so the RFC 3339 form is exact; CRM events
    /// follow it by a millisecond per step.
    pub first_touch_at: i64,
}

impl Story {
    pub fn contact(&self) -> String {
        (5_000_000 + self.n).to_string()
    }

    pub fn deal(&self) -> String {
        (7_000_000 + self.n).to_string()
    }

    pub fn email(&self) -> String {
        format!("buyer{}@customer{}.io", self.n, self.n)
    }

    /// Three referees per referrer, so referrer tiers move during the run.
    pub fn referral_code(&self) -> String {
        format!("PARTNER-{}", self.n / 3)
    }

    fn signup_id(&self) -> String {
        format!("evt_signup_{}", self.n)
    }

    /// The events of HubSpot step `step` (1..STEPS) of this story, with their dedupe keys.
    fn hubspot_events(&self, step: usize) -> Vec<(Value, String)> {
        let (contact, deal) = (5_000_000 + self.n, 7_000_000 + self.n);
        let at = self.first_touch_at + step as i64;
        let event = |k: u64, kind: &str, object: u64, extra: Value| {
            let id = self.n * 10 + k;
            let mut e = json!({"eventId": id, "subscriptionId": SUBSCRIPTION_ID, "portalId": PORTAL_ID,
                               "occurredAt": at, "subscriptionType": kind, "objectId": object});
            for (key, value) in extra.as_object().expect("object") {
                e[key] = value.clone();
            }
            let dedupe = format!("{PORTAL_ID}:{SUBSCRIPTION_ID}:{id}:{object}:{at}");
            (e, dedupe)
        };
        let deal_prop = |k: u64, name: &str, value: &str| {
            event(
                k,
                "deal.propertyChange",
                deal,
                json!({"propertyName": name, "propertyValue": value}),
            )
        };
        match step {
            1 => vec![event(
                1,
                "contact.propertyChange",
                contact,
                json!({"propertyName": "email", "propertyValue": self.email()}),
            )],
            2 => vec![event(
                2,
                "deal.associationChange",
                deal,
                json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact}),
            )],
            3 => vec![
                deal_prop(3, "amount", "40000"),
                deal_prop(4, "deal_currency_code", "USD"),
            ],
            4 => vec![deal_prop(5, "dealstage", "closedwon")],
            _ => unreachable!("HubSpot steps are 1..{STEPS}"),
        }
    }
}

pub fn stories(n: u64) -> Vec<Story> {
    let now = chrono::Utc::now().timestamp();
    (0..n)
        .map(|i| Story {
            n: i,
            step: 0,
            first_touch_at: now * 1000,
        })
        .collect()
}

/// A request as first built; every send signs it anew.
#[derive(Debug, Clone)]
enum Body {
    Signup { id: String, json: String },
    HubSpot { json: String },
}

#[derive(Debug, Clone)]
struct Request {
    body: Body,
    keys: Vec<EventKey>,
    /// Stories whose current step this request carries.
    stories: Vec<usize>,
}

/// How the sender spreads its work.
pub struct Plan {
    /// Service base URLs; product signups alternate between them.
    pub targets: Vec<String>,
    /// Send every HubSpot batch to every target (duplicates that must be stored once).
    pub hubspot_to_every_target: bool,
    /// A new story starts every `spacing`.
    pub spacing: Duration,
    /// Most events in one HubSpot batch.
    pub batch_events: usize,
    /// Acknowledged requests sent again each round, as senders redeliver what they believe was
    /// lost; it also keeps the service busy between story steps.
    pub redeliveries_per_round: usize,
    /// After every story is complete, keep sending (redeliveries) until this is set (`None`: stop
    /// as soon as the stories are complete).
    pub keep_sending_until: Option<Arc<AtomicBool>>,
    pub deadline: Instant,
}

/// What the sender did.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Every event of an acknowledged request, with how many times it was acknowledged.
    pub acked: BTreeMap<EventKey, usize>,
    pub stories: Vec<Story>,
    pub sends: usize,
    pub acked_sends: usize,
    /// Refusals by HTTP status (a 503 while the database is busy, say).
    pub refused: BTreeMap<u16, usize>,
    /// Sends that got no answer (connection refused or reset: the service was down or killed).
    pub lost: usize,
    /// Acknowledged requests sent again on purpose.
    pub redeliveries: usize,
}

impl Traffic {
    pub fn incomplete(&self) -> Vec<(u64, usize)> {
        self.stories
            .iter()
            .filter(|s| s.step < STEPS)
            .map(|s| (s.n, s.step))
            .collect()
    }
}

/// Drive `stories` through `plan.targets` until every story is complete (and `keep_sending_until`
/// is set) or the deadline passes; the caller checks [`Traffic::incomplete`].
pub async fn send(mut stories: Vec<Story>, plan: Plan) -> Traffic {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let mut rng = Rng::from_time();
    let mut traffic = Traffic::default();
    let mut delivered: Vec<Request> = Vec::new();
    let mut next_target = 0usize;
    let start = Instant::now();
    for _ in 0..MAX_ROUNDS {
        if Instant::now() >= plan.deadline {
            break;
        }
        let complete = stories.iter().all(|s| s.step == STEPS);
        let stop = plan
            .keep_sending_until
            .as_ref()
            .is_none_or(|flag| flag.load(Ordering::SeqCst));
        if complete && stop {
            break;
        }
        let released = if plan.spacing.is_zero() {
            stories.len()
        } else {
            (start.elapsed().as_nanos() / plan.spacing.as_nanos() + 1) as usize
        }
        .min(stories.len());

        let mut requests = build_requests(&stories[..released], plan.batch_events);
        for _ in 0..plan.redeliveries_per_round.min(delivered.len()) {
            let pick = rng.next() as usize % delivered.len();
            let mut again = delivered[pick].clone();
            again.stories.clear();
            requests.push(again);
            traffic.redeliveries += 1;
        }
        let sends = requests.iter().map(|request| {
            let targets: Vec<String> = match (&request.body, plan.hubspot_to_every_target) {
                (Body::HubSpot { .. }, true) => plan.targets.clone(),
                _ => {
                    next_target += 1;
                    vec![plan.targets[next_target % plan.targets.len()].clone()]
                }
            };
            let client = &client;
            async move {
                let answers =
                    join_all(targets.iter().map(|t| post(client, t, &request.body))).await;
                (request, answers)
            }
        });
        for (request, answers) in join_all(sends).await {
            traffic.sends += answers.len();
            for answer in &answers {
                match answer {
                    Some(status) if (200..300).contains(status) => traffic.acked_sends += 1,
                    Some(status) => *traffic.refused.entry(*status).or_default() += 1,
                    None => traffic.lost += 1,
                }
            }
            if answers
                .iter()
                .all(|a| a.is_some_and(|s| (200..300).contains(&s)))
            {
                for key in &request.keys {
                    *traffic.acked.entry(key.clone()).or_default() += answers.len();
                }
                for &i in &request.stories {
                    stories[i].step += 1;
                }
                if !request.stories.is_empty() {
                    delivered.push(request.clone());
                }
            }
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    traffic.stories = stories;
    traffic
}

/// The current step of every released, unfinished story: one request per signup, HubSpot events
/// in batches of at most `batch_events`.
fn build_requests(stories: &[Story], batch_events: usize) -> Vec<Request> {
    let mut requests = Vec::new();
    let mut batch: Vec<Value> = Vec::new();
    let mut batch_keys = Vec::new();
    let mut batch_stories = Vec::new();
    let flush = |requests: &mut Vec<Request>,
                 batch: &mut Vec<Value>,
                 keys: &mut Vec<EventKey>,
                 owners: &mut Vec<usize>| {
        if !batch.is_empty() {
            requests.push(Request {
                body: Body::HubSpot {
                    json: Value::Array(std::mem::take(batch)).to_string(),
                },
                keys: std::mem::take(keys),
                stories: std::mem::take(owners),
            });
        }
    };
    for (i, story) in stories.iter().enumerate() {
        match story.step {
            0 => {
                let id = story.signup_id();
                let event = json!({"id": id, "type": "signup.created",
                    "occurred_at": to_rfc3339(story.first_touch_at),
                    "data": {"email": story.email(), "referral_code": story.referral_code(),
                             "source": "link", "market": "US"}});
                requests.push(Request {
                    body: Body::Signup {
                        id: id.clone(),
                        json: event.to_string(),
                    },
                    keys: vec![(SIGNUP_SOURCE.into(), id)],
                    stories: vec![i],
                });
            }
            step if step < STEPS => {
                let events = story.hubspot_events(step);
                if batch.len() + events.len() > batch_events {
                    flush(
                        &mut requests,
                        &mut batch,
                        &mut batch_keys,
                        &mut batch_stories,
                    );
                }
                for (event, key) in events {
                    batch.push(event);
                    batch_keys.push((HUBSPOT_SOURCE.into(), key));
                }
                batch_stories.push(i);
            }
            _ => {}
        }
    }
    flush(
        &mut requests,
        &mut batch,
        &mut batch_keys,
        &mut batch_stories,
    );
    requests
}

/// POST one request to `base`, signed now; `None` when no answer came back.
async fn post(client: &reqwest::Client, base: &str, body: &Body) -> Option<u16> {
    let (path, json, headers) = match body {
        Body::Signup { id, json } => {
            let now = chrono::Utc::now().timestamp();
            let headers = sign_standard_webhooks(APP_SECRET, id, now, json.as_bytes())
                .expect("a valid whsec_ secret");
            ("/webhooks/signup/app", json, headers)
        }
        Body::HubSpot { json } => {
            let url = format!("{base}/webhooks/hubspot");
            let now = chrono::Utc::now().timestamp_millis();
            let headers = sign_hubspot(
                HubSpotVersion::V3,
                HUBSPOT_SECRET,
                "POST",
                &url,
                json.as_bytes(),
                now,
            );
            ("/webhooks/hubspot", json, headers)
        }
    };
    let mut request = client
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(json.clone());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.ok().map(|r| r.status().as_u16())
}

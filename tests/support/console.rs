//! The console and the portal as a browser-less client sees them: an app with an admin and a read
//! key and a portal secret, a program story to look at, sign-in through the real form (cookies
//! and CSRF tokens read from the answers), and form posts.

use referral_sync::clock::DAY;
use referral_sync::config::{AdminKey, Secret, Settings};
use referral_sync::domain::reward::Beneficiary;
use referral_sync::domain::Crm;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::senders::{example_settings, hubspot_event, iso};
use super::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

pub const ADMIN_KEY: &str = "console-admin-key-0123456789";
pub const READ_KEY: &str = "console-read-key-0123456789";
pub const ADMIN_NAME: &str = "ops@acme.com";
pub const LINK_SECRET: &str = "portal-link-secret-0123456789abcdef";

/// HubSpot ids in the story, distinctive so a page can be searched for them.
pub const EVE_DEAL: u64 = 5_550_021;
pub const BO_DEAL: u64 = 5_550_022;
pub const CY_DEAL: u64 = 5_550_023;
pub const GUS_DEAL: u64 = 5_550_024;
pub const UNMAPPED_DEAL: u64 = 5_550_025;
/// The RU deal's amount: a flat reward does not pay on it, so the portal must never show it.
pub const GUS_DEAL_AMOUNT: &str = "777777";

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Senders, the example programs, an admin and a read key, and a portal secret.
pub fn configure(s: &mut Settings) {
    super::senders::configure(s);
    s.programs = example_settings().programs;
    s.admin.keys = vec![
        AdminKey {
            hash: hash(ADMIN_KEY),
            role: "admin".into(),
            name: Some(ADMIN_NAME.into()),
        },
        AdminKey {
            hash: hash(READ_KEY),
            role: "read".into(),
            name: Some("analyst@acme.com".into()),
        },
    ];
    s.portal.link_secret = Secret::new(LINK_SECRET);
}

pub async fn console_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, SpawnOptions::default(), configure).await
}

/// The program's story (clock at [`T0`]):
/// - ACME-7 (US, "Acme Partners", acme.com): eve@acme.com won a 40,000 USD deal, a self-referral
///   that waits for review; bo@contoso.com has a deal at demo; cy@fabrikam.com won 20,000 USD
///   and its reward is in its hold; a later claim on cy by BETA-2 is refused.
/// - BETA-2 (RU, "Beta Consulting"): gus@initech.ru won a 777,777 RUB deal (flat RU reward in
///   its hold).
/// - A deal moved to a stage no pipeline maps is parked `unmapped`.
pub async fn seed(app: &TestApp) {
    app.signup(json!({"id": "p1", "type": "partner.joined", "occurred_at": iso(T0 - 3 * DAY),
        "data": {"code": "ACME-7", "name": "Acme Partners", "company_domain": "acme.com", "market": "US"}}))
        .await;
    app.signup(json!({"id": "p2", "type": "partner.joined", "occurred_at": iso(T0 - 3 * DAY),
        "data": {"code": "BETA-2", "name": "Beta Consulting", "company_domain": "beta.ru", "market": "RU"}}))
        .await;
    for (id, email, code, source, market, name) in [
        ("s1", "eve@acme.com", "ACME-7", "link", "US", "Eve"),
        ("s2", "bo@contoso.com", "ACME-7", "intro", "US", "Bo"),
        ("s3", "cy@fabrikam.com", "ACME-7", "code", "US", "Cy"),
        ("s4", "gus@initech.ru", "BETA-2", "link", "RU", "Gus"),
    ] {
        app.signup(json!({"id": id, "type": "signup.created", "occurred_at": iso(T0 - 2 * DAY),
            "data": {"email": email, "name": name, "company": format!("{name} Inc"), "referral_code": code,
                     "source": source, "market": market}}))
            .await;
    }
    // A later claim on cy by another partner: kept as a refused touch.
    app.signup(json!({"id": "s5", "type": "signup.created", "occurred_at": iso(T0 - DAY),
        "data": {"email": "cy@fabrikam.com", "referral_code": "BETA-2", "source": "link", "market": "US"}}))
        .await;
    let mut events = Vec::new();
    let mut n = 0;
    let mut event = |kind: &str, object: u64, extra: Value| {
        n += 1;
        events.push(hubspot_event(n, kind, object, T0 - DAY, extra));
    };
    for (contact, deal, email, amount, currency, stage) in [
        (
            4_440_011,
            EVE_DEAL,
            "eve@acme.com",
            "40000",
            "USD",
            "closedwon",
        ),
        (
            4_440_012,
            BO_DEAL,
            "bo@contoso.com",
            "12000",
            "USD",
            "presentationscheduled",
        ),
        (
            4_440_013,
            CY_DEAL,
            "cy@fabrikam.com",
            "20000",
            "USD",
            "closedwon",
        ),
        (
            4_440_014,
            GUS_DEAL,
            "gus@initech.ru",
            GUS_DEAL_AMOUNT,
            "RUB",
            "closedwon",
        ),
    ] {
        event(
            "contact.propertyChange",
            contact,
            json!({"propertyName": "email", "propertyValue": email}),
        );
        event(
            "deal.associationChange",
            deal,
            json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact}),
        );
        for (name, value) in [
            ("amount", amount),
            ("deal_currency_code", currency),
            ("dealstage", stage),
        ] {
            event(
                "deal.propertyChange",
                deal,
                json!({"propertyName": name, "propertyValue": value}),
            );
        }
    }
    event(
        "deal.propertyChange",
        UNMAPPED_DEAL,
        json!({"propertyName": "dealstage", "propertyValue": "custom_stage_77"}),
    );
    app.hubspot(Value::Array(events)).await;
    app.process().await;
}

/// Six months of history from three more partners, so the Program page has something to draw:
/// NORTHWIND-3 and LAKESIDE-9 (US) and VOLGA-5 (RU) refer prospects from June to November 2026
/// (one in seven into the other market), 72 in all: about a third won (fewer of the recent ones,
/// which have had less time), a few lost, the rest in pipeline.
/// ACME-7 and BETA-2 are left alone, so their portal pages read as [`seed`] says.
pub async fn seed_history(app: &TestApp) {
    let partners = [
        ("NORTHWIND-3", "Northwind Partners", "US"),
        ("VOLGA-5", "Volga Digital", "RU"),
        ("LAKESIDE-9", "Lakeside Advisors", "US"),
    ];
    for (i, (code, name, market)) in partners.iter().enumerate() {
        app.signup(json!({"id": format!("hp{i}"), "type": "partner.joined", "occurred_at": iso(T0 - 200 * DAY),
            "data": {"code": code, "name": name, "market": market}}))
            .await;
    }
    let sources = ["link", "code", "intro", "pool"];
    let mut events = Vec::new();
    for i in 0..72u64 {
        let (code, _, home) = partners[(i % 3) as usize];
        let market = match (home, i % 7 == 6) {
            ("US", true) => "RU",
            ("RU", true) => "US",
            (m, _) => m,
        };
        let month = (i / 12) as i64;
        let first_touch = T0 - (5 - month) * 30 * DAY - (i % 7) as i64 * DAY - 6 * DAY;
        let email = format!("lead{i}@client{i}.example");
        app.signup(json!({"id": format!("h{i}"), "type": "signup.created", "occurred_at": iso(first_touch),
            "data": {"email": email, "referral_code": code, "source": sources[(i % 4) as usize], "market": market}}))
            .await;
        let (contact, deal) = (7_000_000 + i, 8_000_000 + i);
        let at = first_touch + DAY;
        let decided = first_touch + (10 + (i * 13) as i64 % 40) * DAY;
        let stage = if (i * 37) % 100 < 45 && decided < T0 {
            "closedwon"
        } else if i % 5 == 3 && decided < T0 {
            "closedlost"
        } else {
            "presentationscheduled"
        };
        let amount = (12_000 + i * 1_700 % 60_000).to_string();
        let currency = if market == "RU" { "RUB" } else { "USD" };
        let n = 1_000 + i * 10;
        events.push(hubspot_event(
            n,
            "contact.propertyChange",
            contact,
            at,
            json!({"propertyName": "email", "propertyValue": email}),
        ));
        events.push(hubspot_event(n + 1, "deal.associationChange", deal, at,
            json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact})));
        events.push(hubspot_event(
            n + 2,
            "deal.propertyChange",
            deal,
            at,
            json!({"propertyName": "amount", "propertyValue": amount}),
        ));
        events.push(hubspot_event(
            n + 3,
            "deal.propertyChange",
            deal,
            at,
            json!({"propertyName": "deal_currency_code", "propertyValue": currency}),
        ));
        events.push(hubspot_event(
            n + 4,
            "deal.propertyChange",
            deal,
            decided.min(T0 - DAY),
            json!({"propertyName": "dealstage", "propertyValue": stage}),
        ));
    }
    for batch in events.chunks(100) {
        app.hubspot(Value::Array(batch.to_vec())).await;
    }
    app.process().await;
}

/// The id of the referrer's reward on a HubSpot deal.
pub async fn reward_of(app: &TestApp, deal: u64) -> String {
    app.store
        .rewards_of_deal(Crm::HubSpot, &deal.to_string())
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.line.beneficiary == Beneficiary::Referrer)
        .expect("a referrer reward")
        .id
}

/// A signed-in console session as a browser holds it.
#[derive(Debug, Clone)]
pub struct Session {
    /// `rs_console=…`, for the Cookie header.
    pub cookie: String,
    /// The session's CSRF token, as its pages carry it.
    pub csrf: String,
    /// The `Set-Cookie` the sign-in answered with.
    pub set_cookie: String,
}

/// A client that shows redirects instead of following them.
pub fn web_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name="csrf" value="…"` of the first form in `html`.
pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].split('"').next()?.to_string())
}

/// The `name=value` of a `Set-Cookie` header named `name`.
pub fn cookie_named(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            (
                v.split(';').next().unwrap_or_default().to_string(),
                v.to_string(),
            )
        })
}

/// Load the sign-in form, post `key` with its token, and follow to the Program page; `None` when
/// the key is refused.
pub async fn sign_in_at(address: &str, key: &str) -> Option<Session> {
    let client = web_client();
    let form = client
        .get(format!("{address}/console"))
        .send()
        .await
        .unwrap();
    let (signin_cookie, _) = cookie_named(&form, "rs_console_signin").expect("sign-in cookie");
    let token = csrf_in(&form.text().await.unwrap()).expect("sign-in form token");
    let answer = client
        .post(format!("{address}/console/sign-in"))
        .header("cookie", signin_cookie)
        .form(&[("csrf", token.as_str()), ("key", key)])
        .send()
        .await
        .unwrap();
    if answer.status() != 303 {
        return None;
    }
    let (cookie, set_cookie) = cookie_named(&answer, "rs_console").expect("session cookie");
    let page = client
        .get(format!("{address}/console/program"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the session opens the Program page");
    let csrf = csrf_in(&page.text().await.unwrap()).expect("the page's CSRF token");
    Some(Session {
        cookie,
        csrf,
        set_cookie,
    })
}

/// Send `req` with `session`'s cookie (if any): status, `Location`, body.
async fn answer(
    mut req: reqwest::RequestBuilder,
    session: Option<&Session>,
) -> (u16, String, String) {
    if let Some(s) = session {
        req = req.header("cookie", &s.cookie);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, location, r.text().await.unwrap())
}

impl TestApp {
    pub async fn sign_in(&self, key: &str) -> Session {
        sign_in_at(&self.address, key).await.expect("key accepted")
    }

    /// GET a console or portal page, as `session` (or none): status, `Location`, body.
    pub async fn page(&self, path: &str, session: Option<&Session>) -> (u16, String, String) {
        answer(web_client().get(self.url(path)), session).await
    }

    /// POST a console form as `session` (or none), with `fields` as given (add `csrf` yourself).
    pub async fn post_form(
        &self,
        path: &str,
        session: Option<&Session>,
        fields: &[(&str, &str)],
    ) -> (u16, String, String) {
        answer(web_client().post(self.url(path)).form(fields), session).await
    }

    /// A portal link for `code` valid `days` days from the app's clock.
    pub fn portal_path(&self, code: &str, days: i64) -> String {
        let token = referral_sync::web::portal::link::token(
            &self.settings.portal.link_secret,
            code,
            self.clock_now() + days * DAY,
        );
        format!("/partners/{code}?token={token}")
    }
}

//! `referral-sync demo`: the whole story of SPEC §2, for a US (HubSpot) and a RU (Salesforce)
//! program, played against the built-in CRM sandbox on loopback with a temporary SQLite database.
//! Webhooks go over real HTTP with real signatures; a fake clock lets months pass in an instant.
//! Then the money after the win: recurring rewards from invoices and a renewal, a refund clawing
//! part of one back, and the month's payout statements, one per currency. Prints a timeline, what
//! the CRMs now hold, and the funnel.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::output::{out, outln};
use crate::clock::{to_rfc3339, Clock, FakeClock, DAY, MINUTE};
use crate::config::{ConfigSources, Secret, Settings, SourceSettings};
use crate::domain::payout::Period;
use crate::domain::reward::LineKind;
use crate::domain::Crm;
use crate::ingest::signature::{
    sign_hubspot, sign_standard_webhooks, HmacEncoding, HubSpotVersion, ProductScheme,
};
use crate::outbox::OutboxWorker;
use crate::processing::InboxProcessor;
use crate::rewards::engine::release_holds;
use crate::startup::Application;
use crate::store::Store;
use crm_sandbox::{CrmSandbox, SandboxConfig};

const HUBSPOT_SECRET: &str = "demo-hubspot-app-secret";
const APP_SECRET: &str = "whsec_ZGVtby1wcm9kdWN0LXNpZ25pbmcta2V5LTEyMzQ1";
const SF_TOKEN: &str = "demo-outbound-token-0123456789";
const SF_ORG: &str = "00D7F00000107XsUAI";
/// 2026-11-02T09:00:00Z
const START: i64 = 1_793_610_000_000;
/// The renewals pipeline of config/example.toml, and its won stage.
const RENEWALS_PIPELINE: &str = "renewals";
const RENEWAL_WON: &str = "3482934002";

struct Demo {
    http: reqwest::Client,
    base: String,
    clock: Arc<FakeClock>,
    processor: InboxProcessor,
    outbox: OutboxWorker,
    store: Store,
    settings: Settings,
    crm: CrmSandbox,
    step: usize,
}

pub async fn run(example: &std::path::Path) -> anyhow::Result<()> {
    let temp = DemoDir::create()?;
    let dir = temp.path();
    let clock = FakeClock::new(START);
    let sandbox = SandboxConfig::default();
    let crm = CrmSandbox::start(sandbox.clone(), crate::clock::for_sandbox(clock.clone())).await?;
    let settings = demo_settings(example, dir, &crm.base_url, &sandbox)?;
    let store = Store::connect(&settings.database).await?;
    store.migrate().await?;
    let app =
        Application::build_with(settings.clone(), store.clone(), clock.clone(), false).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (processor, outbox) = (app.processor(), app.outbox());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let mut demo = Demo {
        http: reqwest::Client::new(),
        base,
        clock,
        processor,
        outbox,
        store,
        settings,
        crm,
        step: 0,
    };

    let story = demo.play(dir).await;
    // Stopped however the story ended (a reader of its output may have gone away mid-way).
    shutdown.cancel();
    let _ = server.await;
    demo.crm.stop().await;
    story
}

/// The demo's temporary folder, removed however the demo ends.
struct DemoDir(std::path::PathBuf);

impl DemoDir {
    fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "referral-sync-demo-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn demo_settings(
    example: &std::path::Path,
    dir: &std::path::Path,
    crm: &str,
    sandbox: &SandboxConfig,
) -> anyhow::Result<Settings> {
    let mut s = Settings::load(&ConfigSources {
        file: None,
        dir: None,
        env: Some(BTreeMap::new()),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if example.is_file() {
        let ex = Settings::load(&ConfigSources {
            file: Some(example.to_path_buf()),
            dir: None,
            env: Some(BTreeMap::new()),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        s.programs = ex.programs;
        s.renewals = ex.renewals;
        s.hubspot.pipelines.extend(ex.hubspot.pipelines);
    } else {
        let ex: toml::Value = toml::from_str(include_str!("../../config/example.toml"))?;
        let part = |path: &[&str]| path.iter().try_fold(&ex, |v, key| v.get(key)).cloned();
        s.programs = part(&["programs"])
            .map(|p| p.try_into())
            .transpose()?
            .unwrap_or_default();
        if let Some(renewals) = part(&["renewals"]) {
            s.renewals = renewals.try_into()?;
        }
        if let Some(pipeline) = part(&[Crm::HubSpot.as_str(), "pipelines", RENEWALS_PIPELINE]) {
            s.hubspot
                .pipelines
                .insert(RENEWALS_PIPELINE.into(), pipeline.try_into()?);
        }
    }
    s.database.url = Secret::new(format!("sqlite://{}/demo.db", dir.display()));
    s.server.bind = "127.0.0.1:0".into();
    s.server.workers = 1;
    s.server.public_base_url = String::new();
    s.telemetry.level = "error".into();
    s.hubspot.client_secrets = vec![Secret::new(HUBSPOT_SECRET)];
    s.hubspot.access_token = Secret::new(sandbox.hubspot_token.clone());
    s.hubspot.api_base_url = crm.into();
    s.salesforce.organization_ids = vec![SF_ORG.into()];
    s.salesforce.outbound_token = Secret::new(SF_TOKEN);
    s.salesforce.login_url = crm.into();
    s.salesforce.client_id = sandbox.salesforce_client_id.clone();
    s.salesforce.client_secret = Secret::new(sandbox.salesforce_client_secret.clone());
    s.salesforce.api_version = sandbox.salesforce_api_version.clone();
    s.sources.insert(
        "app".into(),
        SourceSettings {
            scheme: ProductScheme::StandardWebhooks,
            secrets: vec![Secret::new(APP_SECRET)],
            header: None,
            encoding: HmacEncoding::default(),
        },
    );
    Ok(s)
}

impl Demo {
    /// The whole story, printed as it happens.
    async fn play(&mut self, dir: &std::path::Path) -> anyhow::Result<()> {
        outln!(
            "referral-sync demo — temporary database in {}, CRM sandbox at {}\n",
            dir.display(),
            self.crm.base_url
        )?;
        self.us_story().await?;
        self.ru_story().await?;
        self.money_story().await?;
        self.print_crm()?;
        self.print_funnel().await
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    fn say(&mut self, what: &str) -> anyhow::Result<()> {
        self.step += 1;
        outln!(
            "{:>2}. {}  {what}",
            self.step,
            &to_rfc3339(self.now())[..10]
        )
    }

    fn detail(&self, what: impl AsRef<str>) -> anyhow::Result<()> {
        outln!("              {}", what.as_ref())
    }

    /// Let the service work: process the inbox, deliver to the CRMs.
    async fn settle(&self) -> anyhow::Result<()> {
        // Twice: a delivery can bring back a CRM read whose result must be processed in turn.
        for _ in 0..2 {
            self.processor.drain().await?;
            self.outbox.drain().await?;
        }
        Ok(())
    }

    async fn product(&self, id: &str, kind: &str, data: Value) -> anyhow::Result<()> {
        let body =
            json!({"id": id, "type": kind, "occurred_at": to_rfc3339(self.now()), "data": data})
                .to_string();
        let headers = sign_standard_webhooks(APP_SECRET, id, self.now() / 1000, body.as_bytes())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.post("/webhooks/signup/app", headers, body, "application/json")
            .await
    }

    async fn hubspot(&self, events: Value) -> anyhow::Result<()> {
        let body = events.to_string();
        let url = format!("{}/webhooks/hubspot", self.base);
        let headers = sign_hubspot(
            HubSpotVersion::V3,
            HUBSPOT_SECRET,
            "POST",
            &url,
            body.as_bytes(),
            self.now(),
        );
        self.post("/webhooks/hubspot", headers, body, "application/json")
            .await
    }

    async fn salesforce(
        &self,
        id: &str,
        sobject: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let fields: String = fields
            .iter()
            .map(|(k, v)| format!("<sf:{k}>{v}</sf:{k}>"))
            .collect();
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>{SF_ORG}</OrganizationId><ActionId>04k7F0000008V3hQAE</ActionId><Notification><Id>{id}</Id><sObject xsi:type="sf:{sobject}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{fields}</sObject></Notification></notifications></soapenv:Body></soapenv:Envelope>"#
        );
        self.post(
            &format!("/webhooks/salesforce?token={SF_TOKEN}"),
            vec![],
            body,
            "text/xml",
        )
        .await
    }

    async fn post(
        &self,
        path: &str,
        headers: Vec<(String, String)>,
        body: String,
        content_type: &str,
    ) -> anyhow::Result<()> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let response = req.body(body).send().await?;
        if !response.status().is_success() {
            anyhow::bail!(
                "{path} answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    fn hs(&self, event_id: u64, kind: &str, object: u64, extra: Value) -> Value {
        let mut e = json!({"eventId": event_id, "subscriptionId": 7, "portalId": 62515, "occurredAt": self.now(),
                           "subscriptionType": kind, "objectId": object, "changeSource": "CRM_UI"});
        for (k, v) in extra.as_object().into_iter().flatten() {
            e[k] = v.clone();
        }
        e
    }

    async fn referred_deal(
        &mut self,
        n: u64,
        email: &str,
        name: &str,
        amount: &str,
    ) -> anyhow::Result<(u64, u64)> {
        let (contact, deal) = (100 + n, 200 + n);
        self.product(&format!("evt_signup_{n}"), "signup.created", json!({"email": email, "name": name, "referral_code": "ACME-7", "source": "link", "market": "US", "ip": format!("198.51.100.{n}")})).await?;
        self.clock.advance(MINUTE);
        // What HubSpot holds, so the service's read-back of "created" records finds them.
        let (contact_id, deal_id) = (contact.to_string(), deal.to_string());
        self.crm
            .state
            .seed_hubspot("contacts", &contact_id, &[("email", email)], &[]);
        self.crm.state.seed_hubspot(
            "deals",
            &deal_id,
            &[
                ("amount", amount),
                ("deal_currency_code", "USD"),
                ("pipeline", "default"),
            ],
            &[&contact_id],
        );
        self.hubspot(json!([
            self.hs(n * 100 + 1, "contact.creation", contact, json!({})),
            self.hs(n * 100 + 2, "contact.propertyChange", contact, json!({"propertyName": "email", "propertyValue": email})),
            self.hs(n * 100 + 3, "deal.creation", deal, json!({})),
            self.hs(n * 100 + 4, "deal.associationChange", deal, json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact})),
            self.hs(n * 100 + 5, "deal.propertyChange", deal, json!({"propertyName": "amount", "propertyValue": amount})),
            self.hs(n * 100 + 6, "deal.propertyChange", deal, json!({"propertyName": "deal_currency_code", "propertyValue": "USD"})),
        ]))
        .await?;
        self.settle().await?;
        Ok((contact, deal))
    }

    async fn stage(&mut self, event_id: u64, deal: u64, stage: &str) -> anyhow::Result<()> {
        self.hubspot(json!([self.hs(
            event_id,
            "deal.propertyChange",
            deal,
            json!({"propertyName": "dealstage", "propertyValue": stage})
        )]))
        .await?;
        self.settle().await
    }

    async fn reward_line(&self, crm: Crm, deal: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .store
            .rewards_of_deal(crm, deal)
            .await?
            .into_iter()
            .map(|r| {
                format!(
                    "reward {}: {} {} {} ({}{})",
                    r.line.beneficiary,
                    r.line.status,
                    r.line.amount,
                    r.line.currency,
                    r.line.kind,
                    r.line
                        .tier
                        .map(|t| format!(", tier {t}"))
                        .unwrap_or_default()
                )
            })
            .collect())
    }

    async fn us_story(&mut self) -> anyhow::Result<()> {
        outln!("US market — HubSpot, 7.5% of the deal, Bronze/Silver/Gold, a 500 USD credit for the referee\n")?;
        self.product("evt_partner", "partner.joined", json!({"code": "ACME-7", "name": "Acme Partners", "email": "partners@acme.com", "company_domain": "acme.com", "market": "US", "kind": "partner"})).await?;
        self.settle().await?;
        self.say("Acme Partners joins the program with code ACME-7")?;

        let (contact, deal) = self
            .referred_deal(1, "ana@northwind.io", "Ana", "40000")
            .await?;
        self.say("Ana (Northwind) signs up through ACME-7's link; HubSpot creates her contact and a 40,000 USD deal")?;
        let c = self
            .crm
            .state
            .hubspot_object("contacts", &contact.to_string())
            .unwrap_or_default();
        self.detail(format!(
            "HubSpot contact {contact}: referral_source={} referral_code={} referred_by={}",
            c.get("referral_source").map_or("-", |s| s),
            c.get("referral_code").map_or("-", |s| s),
            c.get("referred_by").map_or("-", |s| s)
        ))?;

        self.clock.advance(20 * DAY);
        self.stage(11, deal, "qualifiedtobuy").await?;
        self.clock.advance(20 * DAY);
        self.stage(12, deal, "presentationscheduled").await?;
        self.say("the deal moves: qualified to buy, presentation scheduled")?;

        self.clock.advance(5 * DAY);
        self.hubspot(json!([self.hs(
            13,
            "contact.propertyChange",
            contact,
            json!({"propertyName": "referral_source", "propertyValue": "trade show"})
        )]))
        .await?;
        self.settle().await?;
        self.say("a rep overwrites Ana's referral source with \"trade show\"")?;
        let restored = self
            .crm
            .state
            .hubspot_object("contacts", &contact.to_string())
            .unwrap_or_default();
        self.detail(format!(
            "restored in HubSpot: referral_source={} (audited as tamper_restored)",
            restored.get("referral_source").map_or("-", |s| s)
        ))?;

        self.clock.advance(60 * DAY);
        self.stage(14, deal, "closedwon").await?;
        self.say("closed won after 105 days")?;
        for line in self.reward_line(Crm::HubSpot, &deal.to_string()).await? {
            self.detail(line)?;
        }

        // Two more referrals for the tier upgrade, and one that slips away during the hold.
        let (_, d2) = self
            .referred_deal(2, "bo@contoso.com", "Bo", "20000")
            .await?;
        let (_, d3) = self
            .referred_deal(3, "cy@fabrikam.com", "Cy", "80000")
            .await?;
        let (_, d4) = self
            .referred_deal(4, "dee@globex.com", "Dee", "30000")
            .await?;
        self.clock.advance(DAY);
        self.stage(21, d2, "closedwon").await?;
        self.stage(22, d4, "closedwon").await?;
        self.stage(23, d3, "closedwon").await?;
        self.say(
            "three more ACME-7 referrals close; the third success makes ACME-7 Silver (1.5×)",
        )?;
        for d in [d2, d4, d3] {
            for line in self.reward_line(Crm::HubSpot, &d.to_string()).await? {
                self.detail(format!("deal {d}: {line}"))?;
            }
        }
        self.clock.advance(3 * DAY);
        self.stage(24, d4, "closedlost").await?;
        self.say("Globex backs out during the hold: its reward is reversed")?;
        for line in self.reward_line(Crm::HubSpot, &d4.to_string()).await? {
            self.detail(line)?;
        }

        self.clock.advance(31 * DAY);
        let released = release_holds(&self.store, &self.settings, self.now()).await?;
        self.settle().await?;
        self.say(&format!("30-day holds end: {released} reward(s) become eligible (or wait for review above the approval threshold)"))?;
        self.detail(format!(
            "HubSpot notes on deals: {}",
            self.crm.state.notes().len()
        ))?;
        outln!()?;
        Ok(())
    }

    async fn ru_story(&mut self) -> anyhow::Result<()> {
        outln!("RU market — Salesforce, flat 50,000 RUB, member/insider/ambassador\n")?;
        self.product("evt_partner_ru", "partner.joined", json!({"code": "IVAN-1", "name": "Ivan Petrov", "email": "ivan@partner.ru", "market": "RU", "kind": "creator"})).await?;
        self.product("evt_signup_ru", "signup.created", json!({"email": "gus@initech.ru", "name": "Gus", "referral_code": "IVAN-1", "source": "code", "market": "RU"})).await?;
        self.settle().await?;
        self.say("Ivan (creator) refers Gus from Initech with code IVAN-1")?;
        self.clock.advance(DAY);
        self.salesforce(
            "04l0000000000R1AAA",
            "Contact",
            &[("Id", "0037F00000RuRuRQAA"), ("Email", "gus@initech.ru")],
        )
        .await?;
        self.salesforce(
            "04l0000000000R2AAA",
            "Opportunity",
            &[
                ("Id", "0067F00000RuRuRQAA"),
                ("ContactId", "0037F00000RuRuRQAA"),
                ("StageName", "Qualification"),
                ("Amount", "900000"),
                ("CurrencyIsoCode", "RUB"),
            ],
        )
        .await?;
        self.settle().await?;
        self.say("Salesforce sends the Contact and a 900,000 RUB Opportunity (Outbound Messages)")?;
        self.clock.advance(40 * DAY);
        self.salesforce(
            "04l0000000000R3AAA",
            "Opportunity",
            &[
                ("Id", "0067F00000RuRuRQAA"),
                ("ContactId", "0037F00000RuRuRQAA"),
                ("StageName", "Closed Won"),
                ("IsWon", "true"),
                ("Amount", "900000"),
                ("CurrencyIsoCode", "RUB"),
            ],
        )
        .await?;
        self.settle().await?;
        self.say("Closed Won")?;
        for line in self
            .reward_line(Crm::Salesforce, "0067F00000RuRuRQAA")
            .await?
        {
            self.detail(line)?;
        }
        self.clock.advance(31 * DAY);
        release_holds(&self.store, &self.settings, self.now()).await?;
        self.settle().await?;
        self.say("the hold ends: the reward is eligible and a Referral_Reward__e Platform Event is published")?;
        outln!()?;
        Ok(())
    }

    /// Lines of a kind made since the story began, as one line each.
    async fn lines_of(&self, kind: LineKind) -> anyhow::Result<Vec<String>> {
        Ok(self
            .store
            .rewards(None, 500)
            .await?
            .into_iter()
            .filter(|r| r.line.line_kind == kind)
            .map(|r| {
                format!(
                    "{} {} {} {} ({}{})",
                    r.line.line_kind,
                    r.line.status,
                    r.line.amount,
                    r.line.currency,
                    r.line
                        .source_key
                        .as_deref()
                        .map_or_else(|| format!("deal {}", r.line.deal_id), str::to_string),
                    r.line
                        .tier
                        .map(|t| format!(", tier {t}"))
                        .unwrap_or_default()
                )
            })
            .collect())
    }

    async fn money_story(&mut self) -> anyhow::Result<()> {
        outln!("After the win — recurring rewards, a refund, the month's payouts\n")?;
        // Northwind (Ana, the first US referral) is billed monthly by the product.
        for month in 1..=3 {
            if month > 1 {
                self.clock.advance(30 * DAY);
            }
            let id = format!("in_nw_{month}");
            self.product(
                &format!("evt_{id}"),
                "invoice.paid",
                json!({"email": "ana@northwind.io", "invoice_id": id, "amount": "4000.00",
                       "currency": "USD", "paid_at": to_rfc3339(self.now())}),
            )
            .await?;
            self.settle().await?;
        }
        self.say("Northwind pays three monthly invoices of 4,000 USD: ACME-7 earns 10% of each, at its tier when paid")?;
        // Contoso (Bo) renews: a won deal in the renewals pipeline, on his contact.
        let (contact, deal) = ("102", "205");
        self.crm.state.seed_hubspot(
            "deals",
            deal,
            &[
                ("amount", "15000"),
                ("deal_currency_code", "USD"),
                ("pipeline", RENEWALS_PIPELINE),
            ],
            &[contact],
        );
        self.hubspot(json!([
            self.hs(5001, "deal.creation", 205, json!({})),
            self.hs(5002, "deal.associationChange", 205, json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": 205, "toObjectId": 102})),
            self.hs(5003, "deal.propertyChange", 205, json!({"propertyName": "pipeline", "propertyValue": RENEWALS_PIPELINE})),
            self.hs(5004, "deal.propertyChange", 205, json!({"propertyName": "amount", "propertyValue": "15000"})),
            self.hs(5005, "deal.propertyChange", 205, json!({"propertyName": "deal_currency_code", "propertyValue": "USD"})),
            self.hs(5006, "deal.propertyChange", 205, json!({"propertyName": "dealstage", "propertyValue": RENEWAL_WON})),
        ]))
        .await?;
        self.clock.advance(5 * DAY);
        self.settle().await?;
        self.say("Contoso renews for 15,000 USD (a won deal in the renewals pipeline): a recurring reward, not a second first-win reward")?;
        self.clock.advance(31 * DAY);
        release_holds(&self.store, &self.settings, self.now()).await?;
        self.settle().await?;
        for line in self.lines_of(LineKind::Recurring).await? {
            self.detail(line)?;
        }
        self.product(
            "evt_re_nw_2",
            "invoice.refunded",
            json!({"invoice_id": "in_nw_2", "refund_id": "re_nw_2", "amount": "1000.00",
                   "currency": "USD", "refunded_at": to_rfc3339(self.now())}),
        )
        .await?;
        self.settle().await?;
        self.say("Northwind is refunded 1,000 USD of its second invoice: a quarter of that reward comes back")?;
        for line in self.lines_of(LineKind::Adjustment).await? {
            self.detail(line)?;
        }
        let period = Period::of(self.now());
        let payouts = crate::payouts::read_period(
            &self.store,
            &self.settings,
            period,
            &crate::payouts::StatementFilter::default(),
            self.now(),
        )
        .await?;
        self.say(&format!(
            "the {period} payout statements, one per referrer and currency (what became payable and was on no statement yet)"
        ))?;
        outln!()?;
        out!("{}", crate::payouts::to_table(&payouts))?;
        if let Some(usd) = payouts.statements.iter().find(|s| s.currency == "USD") {
            let paid = crate::payouts::mark_paid(
                &self.store,
                &self.settings,
                crate::payouts::Payment {
                    statement: &usd.id,
                    reference: "WIRE-ACME-7",
                    expected_total: Some(usd.total),
                    actor: "finance@example.com",
                },
                self.now(),
            )
            .await?;
            self.settle().await?;
            outln!()?;
            self.say(&format!(
                "finance transfers {} {} to ACME-7 and marks the statement paid (reference {}): its lines are paid, the statement frozen",
                paid.total,
                paid.currency,
                paid.reference.as_deref().unwrap_or_default()
            ))?;
        }
        outln!()?;
        Ok(())
    }

    fn print_crm(&self) -> anyhow::Result<()> {
        outln!("What the CRMs hold now\n")?;
        for (kind, id) in [
            ("contacts", "101"),
            ("deals", "201"),
            ("deals", "203"),
            ("deals", "204"),
            ("deals", "205"),
        ] {
            if let Some(props) = self.crm.state.hubspot_object(kind, id) {
                let shown: Vec<String> = props
                    .iter()
                    .filter(|(k, _)| k.starts_with("referral"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                outln!("  HubSpot {kind}/{id}: {}", shown.join(" "))?;
            }
        }
        for (sobject, id) in [
            ("Contact", "0037F00000RuRuRQAA"),
            ("Opportunity", "0067F00000RuRuRQAA"),
        ] {
            if let Some(fields) = self.crm.state.salesforce_record(sobject, id) {
                let shown: Vec<String> = fields
                    .iter()
                    .filter(|(k, _)| k.starts_with("Referr"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                outln!("  Salesforce {sobject}/{id}: {}", shown.join(" "))?;
            }
        }
        for (name, fields) in self.crm.state.platform_events() {
            outln!(
                "  Salesforce {name}: {}",
                fields
                    .get("Summary__c")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )?;
        }
        for note in self.crm.state.notes() {
            outln!(
                "  HubSpot note: {}",
                note.pointer("/properties/hs_note_body")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )?;
        }
        outln!()
    }

    async fn print_funnel(&self) -> anyhow::Result<()> {
        outln!("Funnel\n")?;
        let report =
            crate::reports::funnel::compute(&self.store.funnel_facts(&Default::default()).await?);
        outln!("{}", crate::reports::funnel::to_table(&report))?;
        Ok(())
    }
}

//! Referrals as a channel: referred deals next to every other deal (SPEC §4 "Channel baseline",
//! `GET /api/v1/reports/funnel?compare=true`), played through the real webhooks on both backends,
//! with every figure worked out by hand below; the same figures whether the baseline's rollup is
//! refreshed or not; the participation rate over a known set of customers; and, on PostgreSQL,
//! a refresh that skips the rows a batch holds and takes them next time.

use std::collections::BTreeMap;

use referral_sync::clock::{DAY, HOUR};
use referral_sync::config::Settings;
use referral_sync::domain::stage::CanonicalStage;
use referral_sync::domain::Crm;
use referral_sync::reports::compare::{Comparison, ComparisonRow};
use referral_sync::reports::funnel::{self, FunnelFilter};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::support::senders::{configure, deal_property, hubspot_event, iso};
use crate::support::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

both_backends!(
    referred_and_other_deals_compare_per_market_and_channel,
    the_comparison_is_the_same_before_and_after_the_rollup_refresh,
    won_deals_counted_ahead_follow_their_amount_stage_and_deletion,
    revenue_per_referred_customer_adds_invoices_of_the_first_12_months_net_of_refunds,
    a_deal_announced_by_id_is_read_back_with_its_source,
    the_refresh_never_waits_on_a_person_a_batch_is_writing,
    a_deal_first_heard_of_by_its_win_is_not_won_before_it_was_created,
    participation_counts_crm_and_declared_customers_once_each_in_their_market,
);

const READ_KEY: &str = "channels-read-key";

fn settings(s: &mut Settings) {
    configure(s);
    s.channels.market_by_pipeline = [("default", "US"), ("renewals", "US")]
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .into();
    s.channels.market_by_currency = [("RUB".to_string(), "RU".to_string())].into();
    s.renewals.hubspot_pipelines = vec!["renewals".into()];
    let renewals: BTreeMap<String, CanonicalStage> = [
        ("qualifiedtobuy", "qualified"),
        ("closedwon", "won"),
        ("closedlost", "lost"),
    ]
    .map(|(id, stage)| (id.to_string(), stage.parse().unwrap()))
    .into();
    s.hubspot.pipelines.insert("renewals".into(), renewals);
    s.admin.keys = vec![referral_sync::config::AdminKey {
        hash: hex::encode(Sha256::digest(READ_KEY.as_bytes())),
        role: "read".into(),
        name: None,
    }];
}

/// HubSpot event ids, unique per test.
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// A HubSpot deal as its webhooks tell it: created at `created` (in `pipeline`, in `currency`,
/// for `amount`, from `source`), associated with `contacts`, then moved through `stages`.
#[allow(clippy::too_many_arguments)]
fn hubspot_deal(
    ids: &mut Ids,
    deal: u64,
    created: i64,
    pipeline: Option<&str>,
    currency: &str,
    amount: Option<&str>,
    source: Option<&str>,
    contacts: &[u64],
    stages: &[(&str, i64)],
) -> Vec<Value> {
    let mut events = vec![hubspot_event(
        ids.next(),
        "deal.creation",
        deal,
        created,
        json!({}),
    )];
    for (name, value) in [
        ("pipeline", pipeline),
        ("deal_currency_code", Some(currency)),
        ("amount", amount),
        ("hs_analytics_source", source),
    ] {
        if let Some(value) = value {
            events.push(deal_property(ids.next(), deal, name, value, created));
        }
    }
    for contact in contacts {
        events.push(hubspot_event(
            ids.next(),
            "deal.associationChange",
            deal,
            created,
            json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact}),
        ));
    }
    for (stage, at) in stages {
        events.push(deal_property(ids.next(), deal, "dealstage", stage, *at));
    }
    events
}

fn hubspot_contact(ids: &mut Ids, contact: u64, email: &str) -> Vec<Value> {
    vec![
        hubspot_event(ids.next(), "contact.creation", contact, T0 - DAY, json!({})),
        hubspot_event(
            ids.next(),
            "contact.propertyChange",
            contact,
            T0 - DAY,
            json!({"propertyName": "email", "propertyValue": email}),
        ),
    ]
}

async fn referrer(app: &TestApp, code: &str, kind: &str, market: &str, email: &str) {
    app.signup(
        json!({"id": format!("join-{code}"), "type": "partner.joined",
        "occurred_at": iso(T0 - 30 * DAY),
        "data": {"code": code, "kind": kind, "market": market, "email": email}}),
    )
    .await;
}

async fn referral(app: &TestApp, email: &str, code: &str, source: &str, market: &str) {
    app.signup(
        json!({"id": format!("ref-{email}"), "type": "referral.created",
        "occurred_at": iso(T0 - DAY),
        "data": {"email": email, "referral_code": code, "source": source, "market": market}}),
    )
    .await;
}

/// One Salesforce Opportunity snapshot at `at`.
async fn opportunity(
    app: &TestApp,
    id: &str,
    created: i64,
    (stage, at): (&str, i64),
    amount: &str,
    lead_source: &str,
    contact: Option<&str>,
) {
    let (created, modified) = (iso(created), iso(at));
    let mut fields: Vec<(&str, Option<&str>)> = vec![
        ("Id", Some(id)),
        ("StageName", Some(stage)),
        ("Amount", Some(amount)),
        ("CurrencyIsoCode", Some("RUB")),
        ("LeadSource", Some(lead_source)),
        ("CreatedDate", Some(&created)),
        ("SystemModstamp", Some(&modified)),
    ];
    if let Some(contact) = contact {
        fields.push(("ContactId", Some(contact)));
    }
    let notification = format!("n-{id}-{at}");
    app.salesforce(&[(&notification, "Opportunity", &fields)])
        .await;
}

async fn salesforce_contact(app: &TestApp, id: &str, email: &str) {
    let modified = iso(T0 - DAY);
    let fields = [
        ("Id", Some(id)),
        ("Email", Some(email)),
        ("SystemModstamp", Some(modified.as_str())),
    ];
    app.salesforce(&[(&format!("n-{id}"), "Contact", &fields)])
        .await;
}

// The ledger (created times from T0 = 2026-11-20 10:00 UTC; d = days):
//
// US, HubSpot, pipeline default (→ US by market_by_pipeline) unless noted:
// deal  referral  created  source          amount     stages                           contacts
// 201   r1        T0       -               USD 10000  qualified +2d, won +10d          101 (r1)
// 202   r2        +1d      -               USD 20000  qualified +3d, won +31d          102 (r2)
// 203   r3        +2d      -               USD 1000   qualified +4d, lost +20d         103 (r3)
// 204   r1        +30d     - (renewals)    USD 4000   won +40d                         101 (r1)
// 301   -         T0       ORGANIC_SEARCH  USD 5000   qualified +1d, won +21d          110 (ann)
// 302   -         +1d      ORGANIC_SEARCH  USD 7000   qualified +5d                    -
// 303   -         +1d      PAID_SEARCH     USD 900    -                                -
// 304   -         +2d      BILLBOARD       USD 8000   qualified +3d, won +62d          111 (bob)
// 305   -         +3d      -               USD 100    -                                -
// 306   -         +5d      OFFLINE (renewals) USD 3000 won +25d                        110 (ann)
// 307   -         +6d      DIRECT_TRAFFIC  EUR 500    - (no pipeline: market unknown)  -
//
// RU, Salesforce, RUB (→ RU by market_by_currency):
// 006R4 r4        T0       Partner Referral RUB 100000 Qualification +1d, Closed Won +15d 003R4 (r4)
// 006N6 -         T0       Web             RUB 50000  Qualification +2d, Closed Won +12d 003N6 (olga)
// 006N7 -         +1d      Trade Show      RUB 9000   Prospecting +1d                  -
//
// Referrers: ACME-7 (partner, US) referred r1 r2 r3; IVAN (partner, RU) referred r4; CUST-1
// (customer, US, ann@buyer.us) referred r5; R1 (customer, US, r1@ref.us: a referred customer who
// now refers) referred r6. r5 and r6 have no deal.
async fn seed(app: &TestApp) {
    referrer(app, "ACME-7", "partner", "US", "acme@partner.io").await;
    referrer(app, "IVAN", "partner", "RU", "ivan@partner.ru").await;
    referrer(app, "CUST-1", "customer", "US", "ann@buyer.us").await;
    referrer(app, "R1", "customer", "US", "r1@ref.us").await;
    for (email, code, source, market) in [
        ("r1@ref.us", "ACME-7", "link", "US"),
        ("r2@ref.us", "ACME-7", "code", "US"),
        ("r3@ref.us", "ACME-7", "link", "US"),
        ("r4@ref.ru", "IVAN", "intro", "RU"),
        ("r5@ref.us", "CUST-1", "link", "US"),
        ("r6@ref.us", "R1", "link", "US"),
    ] {
        referral(app, email, code, source, market).await;
    }
    let mut ids = Ids(0);
    let mut events = Vec::new();
    for (contact, email) in [
        (101, "r1@ref.us"),
        (102, "r2@ref.us"),
        (103, "r3@ref.us"),
        (110, "ann@buyer.us"),
        (111, "bob@buyer.us"),
    ] {
        events.extend(hubspot_contact(&mut ids, contact, email));
    }
    let d = DAY;
    let default = Some("default");
    for (deal, created, pipeline, currency, amount, source, contacts, stages) in [
        (
            201,
            T0,
            default,
            "USD",
            "10000",
            None,
            vec![101],
            vec![("qualifiedtobuy", T0 + 2 * d), ("closedwon", T0 + 10 * d)],
        ),
        (
            202,
            T0 + d,
            default,
            "USD",
            "20000",
            None,
            vec![102],
            vec![("qualifiedtobuy", T0 + 3 * d), ("closedwon", T0 + 31 * d)],
        ),
        (
            203,
            T0 + 2 * d,
            default,
            "USD",
            "1000",
            None,
            vec![103],
            vec![("qualifiedtobuy", T0 + 4 * d), ("closedlost", T0 + 20 * d)],
        ),
        (
            204,
            T0 + 30 * d,
            Some("renewals"),
            "USD",
            "4000",
            None,
            vec![101],
            vec![("closedwon", T0 + 40 * d)],
        ),
        (
            301,
            T0,
            default,
            "USD",
            "5000",
            Some("ORGANIC_SEARCH"),
            vec![110],
            vec![("qualifiedtobuy", T0 + d), ("closedwon", T0 + 21 * d)],
        ),
        (
            302,
            T0 + d,
            default,
            "USD",
            "7000",
            Some("ORGANIC_SEARCH"),
            vec![],
            vec![("qualifiedtobuy", T0 + 5 * d)],
        ),
        (
            303,
            T0 + d,
            default,
            "USD",
            "900",
            Some("PAID_SEARCH"),
            vec![],
            vec![],
        ),
        (
            304,
            T0 + 2 * d,
            default,
            "USD",
            "8000",
            Some("BILLBOARD"),
            vec![111],
            vec![("qualifiedtobuy", T0 + 3 * d), ("closedwon", T0 + 62 * d)],
        ),
        (305, T0 + 3 * d, default, "USD", "100", None, vec![], vec![]),
        (
            306,
            T0 + 5 * d,
            Some("renewals"),
            "USD",
            "3000",
            Some("OFFLINE"),
            vec![110],
            vec![("closedwon", T0 + 25 * d)],
        ),
        (
            307,
            T0 + 6 * d,
            None,
            "EUR",
            "500",
            Some("DIRECT_TRAFFIC"),
            vec![],
            vec![],
        ),
    ] {
        events.extend(hubspot_deal(
            &mut ids,
            deal,
            created,
            pipeline,
            currency,
            Some(amount),
            source,
            &contacts,
            &stages,
        ));
    }
    for batch in events.chunks(100) {
        app.hubspot(Value::Array(batch.to_vec())).await;
    }
    salesforce_contact(app, "003R4000000001AAA", "r4@ref.ru").await;
    salesforce_contact(app, "003N6000000001AAA", "olga@buyer.ru").await;
    let (r4, n6, n7) = (
        "006R4000000001AAA",
        "006N6000000001AAA",
        "006N7000000001AAA",
    );
    let (r4c, n6c) = (Some("003R4000000001AAA"), Some("003N6000000001AAA"));
    opportunity(
        app,
        r4,
        T0,
        ("Qualification", T0 + d),
        "100000",
        "Partner Referral",
        r4c,
    )
    .await;
    opportunity(
        app,
        r4,
        T0,
        ("Closed Won", T0 + 15 * d),
        "100000",
        "Partner Referral",
        r4c,
    )
    .await;
    opportunity(
        app,
        n6,
        T0,
        ("Qualification", T0 + 2 * d),
        "50000",
        "Web",
        n6c,
    )
    .await;
    opportunity(
        app,
        n6,
        T0,
        ("Closed Won", T0 + 12 * d),
        "50000",
        "Web",
        n6c,
    )
    .await;
    opportunity(
        app,
        n7,
        T0 + d,
        ("Prospecting", T0 + d),
        "9000",
        "Trade Show",
        None,
    )
    .await;
    app.process().await;
}

/// Every figure of a comparison row on one line: `-` for `None`.
fn line(r: &ComparisonRow) -> String {
    let opt = |v: Option<Decimal>| v.map_or("-".to_string(), |v| v.to_string());
    let map = crate::funnel::money;
    format!(
        "{}/{} | deals {} {} {} | rates {} {} | days {} {} | won {} avg {} | customers {} {}",
        r.market,
        r.channel,
        r.deals_created,
        r.deals_qualified,
        r.deals_won,
        opt(r.conversion_rate),
        opt(r.win_rate_from_qualified),
        opt(r.median_days_to_won),
        opt(r.p90_days_to_won),
        map(&r.won_amount),
        map(&r.average_won_amount),
        r.customers_12m,
        map(&r.revenue_per_customer_12m),
    )
}

fn lines(c: &Comparison) -> Vec<String> {
    c.rows.iter().chain(&c.totals).map(line).collect()
}

async fn comparison(app: &TestApp, filter: FunnelFilter) -> Comparison {
    funnel::report_with_comparison(&app.store, &app.settings, &filter, app.clock_now())
        .await
        .unwrap()
        .comparison
        .expect("asked for")
}

async fn referred_and_other_deals_compare_per_market_and_channel(backend: Backend) {
    let Some(app) = spawn_app_with(backend, SpawnOptions::default(), settings).await else {
        return;
    };
    seed(&app).await;
    // Each deal keeps the first times it reached qualified, won and lost.
    let deal = |id: &str| {
        let key = referral_sync::store::RecordKey {
            crm: Crm::HubSpot,
            object_type: "deal".into(),
            object_id: id.into(),
        };
        let store = app.store.clone();
        async move { store.crm_record(&key).await.unwrap().unwrap() }
    };
    let lost = deal("203").await;
    assert_eq!(
        (lost.qualified_at, lost.won_at, lost.lost_at),
        (Some(T0 + 4 * DAY), None, Some(T0 + 20 * DAY))
    );
    assert_eq!(deal("304").await.crm_source.as_deref(), Some("BILLBOARD"));
    // 420 days on: customers first won up to T0 + 55d have had their 12 months.
    app.clock.advance(420 * DAY);
    app.refresh_baseline().await;

    let all = comparison(&app, FunnelFilter::default()).await;

    assert_eq!(
        lines(&all),
        [
            // RU referred: 006R4, won in 15.0 days for RUB 100000; r4 is a customer since +15d.
            "RU/referral | deals 1 1 1 | rates 1.0000 1.0000 | days 15.0 15.0 \
             | won RUB 100000.00 avg RUB 100000.00 | customers 1 RUB 100000.00",
            // RU others: 006N6 (Web: inbound, won in 12.0 days) and 006N7 (Trade Show: events).
            "RU/non_referred | deals 2 1 1 | rates 0.5000 1.0000 | days 12.0 12.0 \
             | won RUB 50000.00 avg RUB 50000.00 | customers 1 RUB 50000.00",
            "RU/inbound | deals 1 1 1 | rates 1.0000 1.0000 | days 12.0 12.0 \
             | won RUB 50000.00 avg RUB 50000.00 | customers 1 RUB 50000.00",
            "RU/events | deals 1 0 0 | rates 0.0000 - | days - - | won - avg - | customers 0 -",
            // US referred: 201 202 203 204, all qualified (204 went straight to won), 203 lost.
            // Days 10.0, 30.0, 10.0: median 10.0, p90 rank ceil(2.7) = 3 → 30.0. Won 10000 +
            // 20000 + 4000 = 34000 / 3 = 11333.33. Customers r1 (first win +10d) and r2 (+31d):
            // new business 10000 + 20000 (204 is a renewal) / 2 = 15000.
            "US/referral | deals 4 4 3 | rates 0.7500 0.7500 | days 10.0 30.0 \
             | won USD 34000.00 avg USD 11333.33 | customers 2 USD 15000.00",
            // US others: 301..306, qualified 301 302 304 306, won 301 (21.0 days), 304 (60.0),
            // 306 (20.0): median 21.0, p90 60.0; 16000 / 3 = 5333.33. Customers: 301 only (304
            // was won at +62d, less than 12 months ago; 306 is a renewal).
            "US/non_referred | deals 6 4 3 | rates 0.5000 0.7500 | days 21.0 60.0 \
             | won USD 16000.00 avg USD 5333.33 | customers 1 USD 5000.00",
            // ORGANIC_SEARCH is mapped (inbound): 301, 302.
            "US/inbound | deals 2 2 1 | rates 0.5000 0.5000 | days 21.0 21.0 \
             | won USD 5000.00 avg USD 5000.00 | customers 1 USD 5000.00",
            // OFFLINE: 306, a renewal.
            "US/outbound | deals 1 1 1 | rates 1.0000 1.0000 | days 20.0 20.0 \
             | won USD 3000.00 avg USD 3000.00 | customers 0 -",
            "US/paid | deals 1 0 0 | rates 0.0000 - | days - - | won - avg - | customers 0 -",
            // BILLBOARD is not in the mapping: other.
            "US/other | deals 1 1 1 | rates 1.0000 1.0000 | days 60.0 60.0 \
             | won USD 8000.00 avg USD 8000.00 | customers 0 -",
            // 305 came with no source.
            "US/unknown | deals 1 0 0 | rates 0.0000 - | days - - | won - avg - | customers 0 -",
            // 307: no pipeline and EUR, which no mapping names.
            "unknown/referral | deals 0 0 0 | rates - - | days - - | won - avg - | customers 0 -",
            "unknown/non_referred | deals 1 0 0 | rates 0.0000 - | days - - | won - avg - \
             | customers 0 -",
            "unknown/direct | deals 1 0 0 | rates 0.0000 - | days - - | won - avg - \
             | customers 0 -",
            // All markets: referred 5 created, 5 qualified, 4 won; days 10.0 10.0 15.0 30.0:
            // median (10.0 + 15.0) / 2 = 12.5, p90 rank 4 → 30.0.
            "all/referral | deals 5 5 4 | rates 0.8000 0.8000 | days 12.5 30.0 \
             | won RUB 100000.00 USD 34000.00 avg RUB 100000.00 USD 11333.33 \
             | customers 3 RUB 100000.00 USD 15000.00",
            // Others: 9 created, 5 qualified, 4 won; days 12.0 20.0 21.0 60.0: median 20.5.
            "all/non_referred | deals 9 5 4 | rates 0.4444 0.8000 | days 20.5 60.0 \
             | won RUB 50000.00 USD 16000.00 avg RUB 50000.00 USD 5333.33 \
             | customers 2 RUB 50000.00 USD 5000.00",
            "all/inbound | deals 3 3 2 | rates 0.6667 0.6667 | days 16.5 21.0 \
             | won RUB 50000.00 USD 5000.00 avg RUB 50000.00 USD 5000.00 \
             | customers 2 RUB 50000.00 USD 5000.00",
            "all/outbound | deals 1 1 1 | rates 1.0000 1.0000 | days 20.0 20.0 \
             | won USD 3000.00 avg USD 3000.00 | customers 0 -",
            "all/paid | deals 1 0 0 | rates 0.0000 - | days - - | won - avg - | customers 0 -",
            "all/events | deals 1 0 0 | rates 0.0000 - | days - - | won - avg - | customers 0 -",
            "all/direct | deals 1 0 0 | rates 0.0000 - | days - - | won - avg - | customers 0 -",
            "all/other | deals 1 1 1 | rates 1.0000 1.0000 | days 60.0 60.0 \
             | won USD 8000.00 avg USD 8000.00 | customers 0 -",
            "all/unknown | deals 1 0 0 | rates 0.0000 - | days - - | won - avg - | customers 0 -",
        ]
    );
    // Customers: US r1 r2 (referees and people of won deals), ann (301, 306; declared too), bob
    // (304); ann referred r5 and r1 referred r6. RU: r4 and olga, who referred no one.
    let participation: Vec<(String, u64, u64, Option<String>)> = all
        .participation
        .iter()
        .map(|p| {
            (
                p.market.clone(),
                p.customers,
                p.referring_customers,
                p.participation_rate.map(|r| r.to_string()),
            )
        })
        .collect();
    assert_eq!(
        participation,
        [
            ("RU".into(), 2, 0, Some("0.0000".into())),
            ("US".into(), 4, 2, Some("0.5000".into())),
            ("all".into(), 6, 2, Some("0.3333".into())),
        ]
    );

    // The US only, deals created in [T0 + 1d, T0 + 3d 4h): 11-22 is a whole day, the rest are
    // partial days counted directly. 202 203 (referred), 302 303 304 305 (others).
    let period = comparison(
        &app,
        FunnelFilter {
            market: Some("US".into()),
            from: Some(T0 + DAY),
            to: Some(T0 + 3 * DAY + 4 * HOUR),
            ..Default::default()
        },
    )
    .await;
    let heads: Vec<String> = lines(&period)
        .iter()
        .map(|l| l.split(" | ").take(3).collect::<Vec<_>>().join(" | "))
        .collect();
    assert_eq!(
        heads,
        [
            "US/referral | deals 2 2 1 | rates 0.5000 0.5000",
            "US/non_referred | deals 4 2 1 | rates 0.2500 0.5000",
            "US/inbound | deals 1 1 0 | rates 0.0000 0.0000",
            "US/paid | deals 1 0 0 | rates 0.0000 -",
            "US/other | deals 1 1 1 | rates 1.0000 1.0000",
            "US/unknown | deals 1 0 0 | rates 0.0000 -",
            "all/referral | deals 2 2 1 | rates 0.5000 0.5000",
            "all/non_referred | deals 4 2 1 | rates 0.2500 0.5000",
            "all/inbound | deals 1 1 0 | rates 0.0000 0.0000",
            "all/paid | deals 1 0 0 | rates 0.0000 -",
            "all/other | deals 1 1 1 | rates 1.0000 1.0000",
            "all/unknown | deals 1 0 0 | rates 0.0000 -",
        ]
    );

    // Through the API: JSON adds the comparison to the funnel; CSV is the comparison.
    let get = |path: &'static str| {
        let request = app.client.get(app.url(path)).bearer_auth(READ_KEY);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let json: Value =
        serde_json::from_str(&get("/api/v1/reports/funnel?compare=true").await).unwrap();
    let csv = get("/api/v1/reports/funnel?compare=true&format=csv&market=ru").await;
    let plain: Value = serde_json::from_str(&get("/api/v1/reports/funnel").await).unwrap();

    assert_eq!(json["comparison"]["rows"][4]["channel"], "referral");
    assert_eq!(json["comparison"]["rows"][4]["conversion_rate"], "0.7500");
    assert_eq!(
        json["comparison"]["participation"][2]["participation_rate"],
        "0.3333"
    );
    assert_eq!(json["totals"]["referrals"], 6, "the funnel is still there");
    assert!(plain.get("comparison").is_none(), "only when asked for");
    let csv: Vec<&str> = csv.lines().collect();
    assert_eq!(
        csv[0],
        "market,channel,deals_created,deals_qualified,deals_won,conversion_rate,\
         win_rate_from_qualified,median_days_to_won,p90_days_to_won,won_amount,\
         average_won_amount,customers_12m,revenue_per_customer_12m"
    );
    assert_eq!(
        csv[1],
        "RU,referral,1,1,1,1.0000,1.0000,15.0,15.0,RUB 100000.00,RUB 100000.00,1,RUB 100000.00"
    );
    assert_eq!(csv.len(), 1 + 4 + 4, "header, RU rows, totals");
}

async fn the_comparison_is_the_same_before_and_after_the_rollup_refresh(backend: Backend) {
    let Some(app) = spawn_app_with(backend, SpawnOptions::default(), settings).await else {
        return;
    };
    seed(&app).await;
    app.clock.advance(420 * DAY);
    let periods = [
        FunnelFilter::default(),
        FunnelFilter {
            from: Some(T0 + DAY),
            to: Some(T0 + 3 * DAY + 4 * HOUR),
            ..Default::default()
        },
        FunnelFilter {
            from: Some(T0 - 12 * HOUR),
            to: Some(T0 + 2 * DAY),
            ..Default::default()
        },
    ];
    async fn read_all(app: &TestApp, periods: &[FunnelFilter]) -> Vec<Comparison> {
        let mut out = Vec::new();
        for f in periods {
            out.push(comparison(app, f.clone()).await);
        }
        out
    }

    // Nothing counted ahead yet: every deal is marked and counted from its row.
    let unrefreshed = read_all(&app, &periods).await;
    assert!(app.refresh_baseline().await >= 14, "every deal was marked");
    let refreshed = read_all(&app, &periods).await;
    assert_eq!(unrefreshed, refreshed);
    assert_eq!(
        app.refresh_baseline().await,
        0,
        "a refresh leaves nothing marked"
    );

    // Later facts change counted deals: 303 is qualified, 302 is deleted, and 307 gets a pipeline
    // (so it moves to the US). Until the next refresh the rollup still counts them as they were;
    // the report corrects for them.
    let mut ids = Ids(10_000);
    let at = T0 + 100 * DAY;
    app.hubspot(json!([
        deal_property(ids.next(), 303, "dealstage", "qualifiedtobuy", at),
        hubspot_event(ids.next(), "deal.deletion", 302, at, json!({})),
        deal_property(ids.next(), 307, "pipeline", "default", at),
        // Bob leaves his won deal: a customer no more.
        hubspot_event(
            ids.next(),
            "deal.associationChange",
            304,
            at,
            json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": 304, "toObjectId": 111,
                   "associationRemoved": true})
        ),
    ]))
    .await;
    app.process().await;
    let marked = read_all(&app, &periods).await;
    let us = |c: &Comparison| {
        c.rows
            .iter()
            .find(|r| r.market == "US" && r.channel == "non_referred")
            .map(line)
    };
    assert_eq!(
        us(&marked[0]).unwrap(),
        "US/non_referred | deals 6 4 3 | rates 0.5000 0.7500 | days 21.0 60.0 \
         | won USD 16000.00 avg USD 5333.33 | customers 1 USD 5000.00",
        "302 out, 303 qualified, 307 in: 6 created, 4 qualified"
    );
    assert!(
        marked[0].rows.iter().all(|r| r.market != "unknown"),
        "307 left market unknown"
    );
    let us_participation = |c: &Comparison| {
        let p = c.participation.iter().find(|p| p.market == "US").unwrap();
        (p.customers, p.referring_customers)
    };
    assert_eq!(us_participation(&unrefreshed[0]), (4, 2));
    assert_eq!(us_participation(&marked[0]), (3, 2), "bob left");
    assert_eq!(app.refresh_baseline().await, 4, "302, 303, 307 and 304");
    assert_eq!(read_all(&app, &periods).await, marked);
}

async fn won_deals_counted_ahead_follow_their_amount_stage_and_deletion(backend: Backend) {
    let Some(app) = spawn_app_with(backend, SpawnOptions::default(), settings).await else {
        return;
    };
    seed(&app).await;
    app.clock.advance(420 * DAY);
    app.refresh_baseline().await;
    let h = HOUR;
    let periods = [
        FunnelFilter::default(),
        // 301 (non-referred, won T0 + 21 days, a customer 12 months on) won in a whole day of
        // the period, in its first partial day, in its last.
        FunnelFilter {
            from: Some(T0 + 20 * DAY),
            to: Some(T0 + 30 * DAY),
            ..Default::default()
        },
        FunnelFilter {
            from: Some(T0 + 21 * DAY - h),
            to: Some(T0 + 21 * DAY + h),
            ..Default::default()
        },
        FunnelFilter {
            from: Some(T0 + 15 * DAY),
            to: Some(T0 + 21 * DAY + 2 * h),
            ..Default::default()
        },
    ];
    // Days to won, won amounts and customers of US/non_referred in each period.
    async fn won_figures(app: &TestApp, periods: &[FunnelFilter]) -> Vec<String> {
        let mut out = Vec::new();
        for f in periods {
            let c = comparison(app, f.clone()).await;
            let row = c
                .rows
                .iter()
                .find(|r| r.market == "US" && r.channel == "non_referred")
                .map(line)
                .unwrap_or_default();
            out.push(row.split(" | ").skip(3).collect::<Vec<_>>().join(" | "));
        }
        out
    }
    let customer_301 = "days - - | won - avg - | customers 1 USD 5000.00";
    assert_eq!(
        won_figures(&app, &periods).await,
        [
            "days 21.0 60.0 | won USD 16000.00 avg USD 5333.33 | customers 1 USD 5000.00",
            customer_301,
            customer_301,
            customer_301,
        ]
    );

    // 301's amount changes, 304 leaves won, 306 (a won renewal) is deleted.
    let mut ids = Ids(20_000);
    let at = T0 + 100 * DAY;
    app.hubspot(json!([
        deal_property(ids.next(), 301, "amount", "5500.50", at),
        deal_property(ids.next(), 304, "dealstage", "qualifiedtobuy", at),
        hubspot_event(ids.next(), "deal.deletion", 306, at, json!({})),
    ]))
    .await;
    app.process().await;
    let customer_301 = "days - - | won - avg - | customers 1 USD 5500.50";
    let expected = [
        "days 21.0 21.0 | won USD 5500.50 avg USD 5500.50 | customers 1 USD 5500.50",
        customer_301,
        customer_301,
        customer_301,
    ];
    assert_eq!(won_figures(&app, &periods).await, expected, "corrected");
    assert_eq!(app.refresh_baseline().await, 3, "301, 304 and 306");
    assert_eq!(won_figures(&app, &periods).await, expected, "counted ahead");

    // A database from before the won rollups: rows counted without their won part, and the
    // won deals marked by the migration. Reports are exact at once, and again once counted.
    let position = match backend {
        Backend::Sqlite => "INSTR",
        Backend::Postgres => "STRPOS",
    };
    for sql in [
        "DELETE FROM deal_wins".to_string(),
        "DELETE FROM deal_acquisitions".to_string(),
        // `won` is the last field of what a row was counted as.
        format!(
            "UPDATE crm_records SET baseline_rolled = \
                 SUBSTR(baseline_rolled, 1, {position}(baseline_rolled, ',\"won\"') - 1) || '}}' \
             WHERE baseline_rolled LIKE '%\"won\"%'"
        ),
        "UPDATE crm_records SET baseline_dirty = TRUE WHERE stage = 'won' \
             AND object_type IN ('deal', 'Opportunity') AND deleted_at IS NULL \
             AND merged_into IS NULL"
            .to_string(),
    ] {
        app.execute_sql(&sql).await;
    }
    assert_eq!(
        won_figures(&app, &periods).await,
        expected,
        "marked by the migration"
    );
    assert!(app.refresh_baseline().await >= 4, "every live won deal");
    assert_eq!(won_figures(&app, &periods).await, expected, "counted again");
}

async fn revenue_per_referred_customer_adds_invoices_of_the_first_12_months_net_of_refunds(
    backend: Backend,
) {
    let Some(app) = spawn_app_with(backend, SpawnOptions::default(), settings).await else {
        return;
    };
    seed(&app).await;
    // r4 (RU, referral of IVAN) was first won at T0 + 15 days, with RUB 100,000.
    let paid = |id: &str, amount: &str, currency: &str, at: i64| {
        json!({"id": format!("evt_{id}"), "type": "invoice.paid", "occurred_at": iso(at),
               "data": {"email": "r4@ref.ru", "invoice_id": id, "amount": amount,
                        "currency": currency, "paid_at": iso(at)}})
    };
    for event in [
        paid("in_1", "5000.00", "RUB", T0 + 100 * DAY),
        paid("in_2", "300.00", "EUR", T0 + 50 * DAY),
        // Past the first 12 months after the first win.
        paid("in_3", "7000.00", "RUB", T0 + 381 * DAY),
        json!({"id": "evt_re_1", "type": "invoice.refunded", "occurred_at": iso(T0 + 120 * DAY),
               "data": {"invoice_id": "in_1", "amount": "1000.00", "currency": "RUB",
                        "refunded_at": iso(T0 + 120 * DAY)}}),
    ] {
        app.signup(event).await;
    }
    app.process().await;
    app.clock.advance(420 * DAY);
    let c = comparison(&app, FunnelFilter::default()).await;
    let ru = c
        .rows
        .iter()
        .find(|r| r.market == "RU" && r.channel == "referral")
        .unwrap();
    // 100,000 + 5,000 - 1,000 in RUB; 300 in EUR; one customer paying in each.
    assert_eq!(
        line(ru).rsplit(" | ").next().unwrap(),
        "customers 1 EUR 300.00 RUB 104000.00"
    );
}

async fn a_deal_announced_by_id_is_read_back_with_its_source(backend: Backend) {
    use crm_sandbox::SandboxConfig;
    use referral_sync::store::RecordKey;
    let Some(w) = crate::support::crm::world(backend, SandboxConfig::default()).await else {
        return;
    };
    let deal = [
        ("pipeline", "default"),
        ("dealstage", "closedwon"),
        ("amount", "700"),
        ("hs_analytics_source", "PAID_SOCIAL"),
    ];
    w.crm.state.seed_hubspot("deals", "77", &deal, &[]);
    w.app
        .hubspot(json!([hubspot_event(
            1,
            "deal.creation",
            77,
            T0,
            json!({"changeFlag": "CREATED"})
        )]))
        .await;
    for _ in 0..3 {
        w.app.process().await;
        w.app.deliver().await;
    }

    let record = w
        .app
        .store
        .crm_record(&RecordKey {
            crm: Crm::HubSpot,
            object_type: "deal".into(),
            object_id: "77".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.crm_source.as_deref(), Some("PAID_SOCIAL"));
    assert_eq!(record.stage.as_deref(), Some("won"));
    assert!(record.won_at.is_some() && record.qualified_at == record.won_at);
}

async fn the_refresh_never_waits_on_a_person_a_batch_is_writing(backend: Backend) {
    use referral_sync::store::{RecordFacts, RecordKey};
    let Some(app) = spawn_app_with(backend, SpawnOptions::default(), settings).await else {
        return;
    };
    let mut ids = Ids(0);
    let mut events = hubspot_contact(&mut ids, 110, "ann@buyer.us");
    for deal in [301, 302] {
        let contacts: &[u64] = if deal == 301 { &[110] } else { &[] };
        events.extend(hubspot_deal(
            &mut ids,
            deal,
            T0,
            Some("default"),
            "USD",
            Some("500"),
            None,
            contacts,
            &[("closedwon", T0 + DAY)],
        ));
    }
    app.hubspot(Value::Array(events)).await;
    app.process().await;
    let ann = RecordKey {
        crm: Crm::HubSpot,
        object_type: "contact".into(),
        object_id: "110".into(),
    };

    // A batch holds Ann's row while the refresh runs.
    let mut batch = app.store.begin().await.unwrap();
    if backend == Backend::Postgres {
        batch
            .apply_record_facts(&[RecordFacts::new(&ann)], T0)
            .await
            .unwrap();
        // A failure guard only: a refresh that waits on the batch would never return.
        let refreshed =
            tokio::time::timeout(std::time::Duration::from_secs(10), app.refresh_baseline())
                .await
                .expect("the refresh waited on the batch's row lock");
        assert_eq!(
            refreshed, 1,
            "302 is refreshed; 301, whose person is busy, waits"
        );
        assert_eq!(app.store.baseline_backlog().await.unwrap(), 1);
    }
    batch.commit().await.unwrap();
    app.refresh_baseline().await;

    assert_eq!(app.store.baseline_backlog().await.unwrap(), 0);
    let record = app.store.crm_record(&ann).await.unwrap().unwrap();
    assert_eq!(record.customer_since, Some(T0 + DAY));
}

/// A deal whose creation the service never heard of (no `deal.creation`: its first event is the
/// win, at CRM time ten days before the service received it) counts as created at its earliest
/// event, so its days to won are 0, never negative, and it is in the period it was won in.
async fn a_deal_first_heard_of_by_its_win_is_not_won_before_it_was_created(backend: Backend) {
    let Some(app) = spawn_app_with(backend, SpawnOptions::default(), settings).await else {
        return;
    };
    let won_at = T0 - 10 * DAY;
    let mut ids = Ids(50_000);
    app.hubspot(json!([
        deal_property(ids.next(), 900, "pipeline", "default", won_at),
        deal_property(ids.next(), 900, "amount", "1200", won_at),
        deal_property(ids.next(), 900, "dealstage", "closedwon", won_at + HOUR),
    ]))
    .await;
    app.process().await;
    let key = referral_sync::store::RecordKey::new(Crm::HubSpot, "deal", "900");
    let deal = app.store.crm_record(&key).await.unwrap().unwrap();
    assert_eq!(deal.crm_created_at, Some(won_at), "its earliest event");
    assert_eq!(deal.won_at, Some(won_at + HOUR));

    let period = FunnelFilter {
        from: Some(won_at - DAY),
        to: Some(won_at + DAY),
        ..FunnelFilter::default()
    };
    for refreshed in [false, true] {
        if refreshed {
            app.refresh_baseline().await;
        }
        let c = comparison(&app, period.clone()).await;
        let us = c
            .rows
            .iter()
            .find(|r| r.market == "US" && r.channel != "referral")
            .unwrap_or_else(|| panic!("a US non-referred row: {:#?}", c.rows));
        assert_eq!((us.deals_created, us.deals_won), (1, 1), "{us:#?}");
        assert_eq!(us.median_days_to_won, Some(Decimal::ZERO), "{us:#?}");
    }
}

/// Per day of creation (days after T0's), the rollup's deals and qualified deals, read directly
/// from `deal_cohorts` on the app's PostgreSQL database.
async fn rollup_by_day(app: &TestApp) -> Vec<(i64, i64, i64)> {
    let pool = sqlx::PgPool::connect(app.settings.database.url.expose())
        .await
        .unwrap();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT created_day - $1, CAST(SUM(deals) AS BIGINT), CAST(SUM(qualified) AS BIGINT) \
         FROM deal_cohorts GROUP BY created_day ORDER BY created_day",
    )
    .bind(T0.div_euclid(DAY))
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// PostgreSQL only: several processors write at once there, and a batch holds its rows' locks
/// until it commits. (SQLite has one writer: a batch and a refresh never overlap, so there is
/// nothing to skip.) A refresh that waited on a person a batch is writing could deadlock with
/// that batch, or (here, where the batch waits for the refresh to return) never finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refresh_skips_the_people_and_deals_a_batch_holds_then_catches_up() {
    use referral_sync::store::{RecordFacts, RecordKey};
    use std::time::Duration;
    let Some(app) = spawn_app_with(Backend::Postgres, SpawnOptions::default(), settings).await
    else {
        return;
    };
    // Counted ahead: 301 (Ann's, won), 302 (Bob's, open), 303 (nobody's), all in pipeline
    // default (→ US).
    let d = DAY;
    let mut ids = Ids(0);
    let mut events = hubspot_contact(&mut ids, 110, "ann@buyer.us");
    events.extend(hubspot_contact(&mut ids, 111, "bob@buyer.us"));
    for (deal, created, amount, source, contacts, stages) in [
        (
            301,
            T0,
            "5000",
            Some("ORGANIC_SEARCH"),
            &[110][..],
            &[("qualifiedtobuy", T0 + d), ("closedwon", T0 + 21 * d)][..],
        ),
        (
            302,
            T0 + d,
            "7000",
            Some("PAID_SEARCH"),
            &[111][..],
            &[][..],
        ),
        (303, T0 + 2 * d, "900", None, &[][..], &[][..]),
    ] {
        events.extend(hubspot_deal(
            &mut ids,
            deal,
            created,
            Some("default"),
            "USD",
            Some(amount),
            source,
            contacts,
            stages,
        ));
    }
    app.hubspot(Value::Array(events)).await;
    app.process().await;
    app.refresh_baseline().await;
    assert_eq!(app.store.baseline_backlog().await.unwrap(), 0);
    assert_eq!(
        rollup_by_day(&app).await,
        [(0, 1, 1), (1, 1, 0), (2, 1, 0)],
        "301 qualified; 302 and 303 not yet"
    );

    // Later: Bob's 302 is qualified and won, 303 is qualified, 304 is new. All three are marked.
    app.hubspot(Value::Array(
        [
            deal_property(ids.next(), 302, "dealstage", "qualifiedtobuy", T0 + 2 * d),
            deal_property(ids.next(), 302, "dealstage", "closedwon", T0 + 12 * d),
            deal_property(ids.next(), 303, "dealstage", "qualifiedtobuy", T0 + 3 * d),
        ]
        .into_iter()
        .chain(hubspot_deal(
            &mut ids,
            304,
            T0 + 3 * d,
            Some("default"),
            "USD",
            Some("2000"),
            Some("ORGANIC_SEARCH"),
            &[],
            &[],
        ))
        .collect(),
    ))
    .await;
    app.process().await;
    assert_eq!(app.store.baseline_backlog().await.unwrap(), 3);
    app.clock.advance(420 * DAY);

    // Every figure by hand (as of T0 + 420d: customers first won up to T0 + 55d have had their
    // 12 months). US, none referred: 301 (inbound, won in 21.0 days, USD 5000), 302 (paid, won
    // in 11.0 days, USD 7000), 303 (no source, qualified), 304 (inbound, open). 4 created, 3
    // qualified, 2 won: conversion 2/4, win rate 2/3; days 11.0 21.0: median 16.0, p90 rank
    // ceil(1.8) = 2 → 21.0; won 12000 / 2 = 6000; customers 301 and 302, 12000 / 2 = 6000.
    let expected = [
        "US/referral | deals 0 0 0 | rates - - | days - - | won - avg - | customers 0 -",
        "US/non_referred | deals 4 3 2 | rates 0.5000 0.6667 | days 16.0 21.0 \
         | won USD 12000.00 avg USD 6000.00 | customers 2 USD 6000.00",
        "US/inbound | deals 2 1 1 | rates 0.5000 1.0000 | days 21.0 21.0 \
         | won USD 5000.00 avg USD 5000.00 | customers 1 USD 5000.00",
        "US/paid | deals 1 1 1 | rates 1.0000 1.0000 | days 11.0 11.0 \
         | won USD 7000.00 avg USD 7000.00 | customers 1 USD 7000.00",
        "US/unknown | deals 1 1 0 | rates 0.0000 0.0000 | days - - | won - avg - | customers 0 -",
        "all/referral | deals 0 0 0 | rates - - | days - - | won - avg - | customers 0 -",
        "all/non_referred | deals 4 3 2 | rates 0.5000 0.6667 | days 16.0 21.0 \
         | won USD 12000.00 avg USD 6000.00 | customers 2 USD 6000.00",
        "all/inbound | deals 2 1 1 | rates 0.5000 1.0000 | days 21.0 21.0 \
         | won USD 5000.00 avg USD 5000.00 | customers 1 USD 5000.00",
        "all/paid | deals 1 1 1 | rates 1.0000 1.0000 | days 11.0 11.0 \
         | won USD 7000.00 avg USD 7000.00 | customers 1 USD 7000.00",
        "all/unknown | deals 1 1 0 | rates 0.0000 0.0000 | days - - | won - avg - \
         | customers 0 -",
    ];
    // Customers: Ann (301) and Bob (302, once its win is counted); neither referred anyone.
    let participation = |c: &Comparison| -> Vec<(String, u64, u64)> {
        c.participation
            .iter()
            .map(|p| (p.market.clone(), p.customers, p.referring_customers))
            .collect()
    };
    let customers = [("US".to_string(), 2, 0), ("all".to_string(), 2, 0)];
    let (ann, bob) = (
        RecordKey::new(Crm::HubSpot, "contact", "110"),
        RecordKey::new(Crm::HubSpot, "contact", "111"),
    );
    let customer_since = |key: RecordKey| {
        let store = app.store.clone();
        async move {
            store
                .crm_record(&key)
                .await
                .unwrap()
                .unwrap()
                .customer_since
        }
    };
    // The guard only fails a refresh that waits on the batch; a good one returns at once.
    let refresh = || async {
        tokio::time::timeout(Duration::from_secs(10), app.refresh_baseline())
            .await
            .expect("the refresh waited on the batch's row locks")
    };

    // A batch writes Bob and deal 304 and holds their rows until it commits.
    let mut batch = app.store.begin().await.unwrap();
    batch
        .apply_record_facts(
            &[
                RecordFacts::new(&bob),
                RecordFacts::new(&RecordKey::new(Crm::HubSpot, "deal", "304")),
            ],
            app.clock_now(),
        )
        .await
        .unwrap();

    assert_eq!(
        refresh().await,
        1,
        "303 only: 304 is the batch's, 302 is Bob's"
    );
    assert_eq!(app.store.baseline_backlog().await.unwrap(), 2, "302, 304");
    assert_eq!(
        rollup_by_day(&app).await,
        [(0, 1, 1), (1, 1, 0), (2, 1, 1)],
        "303 moved to qualified; 302 still counted unqualified, 304 not counted yet"
    );
    assert_eq!(customer_since(ann.clone()).await, Some(T0 + 21 * d));
    assert_eq!(customer_since(bob.clone()).await, None, "Bob was skipped");
    // Reports are exact meanwhile: they correct the rollup and Bob for the marked deals.
    let during = comparison(&app, FunnelFilter::default()).await;
    assert_eq!(lines(&during), expected);
    assert_eq!(participation(&during), customers);

    // Once the batch commits, the next refresh takes what it skipped.
    batch.commit().await.unwrap();
    assert_eq!(refresh().await, 2, "302 and 304");
    assert_eq!(app.store.baseline_backlog().await.unwrap(), 0);
    assert_eq!(
        rollup_by_day(&app).await,
        [(0, 1, 1), (1, 1, 1), (2, 1, 1), (3, 1, 0)]
    );
    assert_eq!(customer_since(bob).await, Some(T0 + 12 * d));
    let after = comparison(&app, FunnelFilter::default()).await;
    assert_eq!(lines(&after), expected);
    assert_eq!(participation(&after), customers);
    assert_eq!(after, during);
}

/// Participation over a known set: CRM customers (people of won deals, in their deal's market)
/// and customers the product declared who are no CRM customer (in their own market), each once;
/// referring means their email referred anyone, whatever kind of referrer; as of the period's
/// end.
async fn participation_counts_crm_and_declared_customers_once_each_in_their_market(
    backend: Backend,
) {
    let Some(app) = spawn_app_with(backend, SpawnOptions::default(), settings).await else {
        return;
    };
    let d = DAY;
    // Everyone joined at T0 - 30d.
    for (code, kind, market, email) in [
        ("DORA", "customer", "DE", "dora@buyer.de"), // no CRM person; refers at T0 + 15d
        ("EMIL", "customer", "DE", "emil@buyer.de"), // no CRM person
        ("FINN", "customer", "DE", "finn@buyer.de"), // no CRM person
        ("ANN", "customer", "US", "ann@buyer.us"),   // CRM customer too (301); refers
        ("GUS", "customer", "US", "gus@buyer.us"),   // CRM contact, only an open deal (302)
        ("JO", "creator", "US", "jo@buyer.us"),      // CRM customer (305); refers
        ("PIA", "partner", "US", "pia@partner.io"),  // no customer; refers
    ] {
        referrer(&app, code, kind, market, email).await;
    }
    for (n, code, at) in [
        (1, "DORA", T0 + 15 * d),
        (2, "ANN", T0 - d),
        (3, "JO", T0 - d),
        (4, "PIA", T0 - d),
    ] {
        app.signup(json!({"id": format!("ref-{n}"), "type": "referral.created",
            "occurred_at": iso(at),
            "data": {"email": format!("friend{n}@prospect.us"), "referral_code": code,
                     "source": "link", "market": "US"}}))
            .await;
    }
    // CRM: Ann's 301 won at +5d, Gus's 302 open, Hal's 303 won at +20d (Hal is no referrer),
    // Ida's 304 lost, Jo's 305 won at +5d. All in pipeline default (→ US).
    let mut ids = Ids(0);
    let mut events = Vec::new();
    for (contact, email) in [
        (110, "ann@buyer.us"),
        (111, "gus@buyer.us"),
        (112, "hal@buyer.us"),
        (113, "ida@buyer.us"),
        (114, "jo@buyer.us"),
    ] {
        events.extend(hubspot_contact(&mut ids, contact, email));
    }
    for (deal, contact, stages) in [
        (301, 110, &[("closedwon", T0 + 5 * d)][..]),
        (302, 111, &[][..]),
        (303, 112, &[("closedwon", T0 + 20 * d)][..]),
        (304, 113, &[("closedlost", T0 + 5 * d)][..]),
        (305, 114, &[("closedwon", T0 + 5 * d)][..]),
    ] {
        events.extend(hubspot_deal(
            &mut ids,
            deal,
            T0,
            Some("default"),
            "USD",
            Some("1000"),
            None,
            &[contact],
            stages,
        ));
    }
    app.hubspot(Value::Array(events)).await;
    app.process().await;
    app.clock.advance(30 * d);

    let participation = |c: Comparison| -> Vec<(String, u64, u64, Option<String>)> {
        c.participation
            .into_iter()
            .map(|p| {
                (
                    p.market,
                    p.customers,
                    p.referring_customers,
                    p.participation_rate.map(|r| r.to_string()),
                )
            })
            .collect()
    };
    let row = |market: &str, customers: u64, referring: u64, rate: &str| {
        (
            market.to_string(),
            customers,
            referring,
            Some(rate.to_string()),
        )
    };
    let by_then = FunnelFilter {
        to: Some(T0 + 10 * d),
        ..Default::default()
    };
    // Open period. DE: Dora, Emil, Finn (declared), Dora referred: 1/3. US: Ann and Jo (CRM
    // customers who referred; Ann is not counted again as declared), Hal (CRM customer), Gus
    // (declared: his contact is no customer); Pia is a partner and Ida lost: 2/4. All: 3/7.
    let open = [
        row("DE", 3, 1, "0.3333"),
        row("US", 4, 2, "0.5000"),
        row("all", 7, 3, "0.4286"),
    ];
    // As of T0 + 10d: Dora has not referred yet, Hal's deal is not won yet. DE 0/3; US Ann, Jo,
    // Gus: 2/3; all 2/6.
    let early = [
        row("DE", 3, 0, "0.0000"),
        row("US", 3, 2, "0.6667"),
        row("all", 6, 2, "0.3333"),
    ];
    // Exact before the refresh (every deal marked) and after it.
    for refreshed in [false, true] {
        if refreshed {
            assert!(app.refresh_baseline().await >= 5);
        }
        let all = comparison(&app, FunnelFilter::default()).await;
        assert_eq!(participation(all), open, "refreshed: {refreshed}");
        let then = comparison(&app, by_then.clone()).await;
        assert_eq!(participation(then), early, "refreshed: {refreshed}");
    }
}

//! Recurring rewards, clawbacks and payout statements (SPEC §4 "Recurring rewards and clawbacks",
//! "Payouts"; §6 payouts API): invoices and renewals earn recurring lines, refunds and late
//! reversals take money back with negative adjustments, and statements gather what is payable per
//! referrer and currency, once, whoever reads them. On both backends, over the real HTTP surface.

use std::collections::{BTreeMap, BTreeSet};

use referral_sync::clock::{Millis, DAY, HOUR};
use referral_sync::config::Settings;
use referral_sync::domain::payout::Period;
use referral_sync::domain::reward::Beneficiary;
use referral_sync::domain::reward::LineKind;
use referral_sync::domain::reward::RewardStatus;
use referral_sync::domain::Crm;
use referral_sync::payouts::{self, StatementFilter};
use referral_sync::rewards::engine::release_holds;
use referral_sync::rewards::recurring::window_end;
use referral_sync::store::{Attribution, NewReward, Reward, Store};
use serde_json::{json, Value};

use crate::admin::{call, with_keys, ADMIN_KEY, READ_KEY};
use crate::both_backends;
use crate::rewards::{configure, outbox_of, payload, referred_deal, stage};
use crate::support::senders::{deal_property, hubspot_event, iso};
use crate::support::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

both_backends!(
    twelve_monthly_invoices_earn_twelve_recurring_lines_and_a_replay_earns_none,
    a_refund_after_payout_is_a_negative_line_on_the_next_statement,
    marking_a_statement_paid_twice_is_a_conflict_and_changes_nothing,
    two_replicas_gathering_a_period_make_one_statement_per_referrer_and_currency,
    a_refund_that_arrives_before_its_invoice_still_takes_back_its_share,
    a_renewal_earns_a_recurring_line_and_never_a_second_first_win_reward,
    a_deal_lost_after_its_hold_is_clawed_back_by_a_negative_adjustment,
    a_payout_schedule_pays_half_at_the_win_and_takes_it_back_when_the_hold_is_broken,
    the_payouts_api_names_what_is_wrong_with_a_request,
    the_funnel_counts_recurring_revenue_and_rewards_net_of_refunds,
    an_invoice_event_missing_a_field_is_refused_naming_it,
    rejecting_a_reward_whose_first_half_was_paid_takes_that_half_back,
);

async fn app_with(backend: Backend, change: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    spawn_app_with(backend, SpawnOptions::default(), |s| {
        configure(s);
        with_keys(s);
        change(s);
    })
    .await
}

/// The US program without a hold: lines are payable as soon as they are made.
fn no_hold(s: &mut Settings) {
    s.programs.get_mut("US").unwrap().hold_days = 0;
}

async fn invoice(app: &TestApp, event: &str, invoice: &str, email: &str, amount: &str, at: Millis) {
    app.signup(
        json!({"id": event, "type": "invoice.paid", "occurred_at": iso(at),
        "data": {"email": email, "invoice_id": invoice, "amount": amount, "currency": "USD",
                 "paid_at": iso(at)}}),
    )
    .await;
}

async fn refund(app: &TestApp, event: &str, invoice: &str, amount: &str, at: Millis) {
    app.signup(json!({"id": event, "type": "invoice.refunded", "occurred_at": iso(at),
        "data": {"invoice_id": invoice, "amount": amount, "currency": "USD", "refunded_at": iso(at)}}))
        .await;
}

async fn lines(app: &TestApp, kind: LineKind) -> Vec<Reward> {
    app.store
        .rewards(None, 500)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.line.line_kind == kind)
        .collect()
}

async fn payouts(app: &TestApp, period: &str) -> Value {
    let (status, body) = call(
        app,
        "GET",
        &format!("/api/v1/payouts?period={period}"),
        Some(READ_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn pay(app: &TestApp, id: &str, reference: &str, total: Option<&str>) -> (u16, Value) {
    let mut body = json!({"reference": reference});
    if let Some(total) = total {
        body["total"] = json!(total);
    }
    post_paid(app, id, body).await
}

async fn post_paid(app: &TestApp, id: &str, body: Value) -> (u16, Value) {
    call(
        app,
        "POST",
        &format!("/api/v1/payouts/{id}/paid"),
        Some(ADMIN_KEY),
        Some(body),
    )
    .await
}

/// (kind, installment, amount) of a statement's lines, in order.
fn shown(statement: &Value) -> Vec<(String, Option<String>, String)> {
    statement["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_string(),
                l["installment"].as_str().map(String::from),
                l["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Ana's deal 201 (40,000 USD) won at `won`, the clock moved to `now` first.
async fn ana_won(app: &TestApp, won: Millis, now: Millis) {
    referred_deal(app, "ana@northwind.io", 101, 201, "40000").await;
    app.clock.set(now);
    stage(app, 1, 201, "closedwon", won).await;
}

async fn twelve_monthly_invoices_earn_twelve_recurring_lines_and_a_replay_earns_none(
    backend: Backend,
) {
    let Some(app) = app_with(backend, |_| {}).await else {
        return;
    };
    let won = T0 + 10 * DAY;
    ana_won(&app, won, T0).await;

    // A year of monthly invoices, and one a month after the 12-month window.
    let paid_at = |k: u32| window_end(won, k).unwrap() + HOUR;
    for k in 0..=12 {
        invoice(
            &app,
            &format!("evt_in_{k}"),
            &format!("in_{k}"),
            "ana@northwind.io",
            "1000.00",
            paid_at(k),
        )
        .await;
    }
    // The same event delivered again, and the same invoice sent again under a new event id.
    invoice(
        &app,
        "evt_in_3",
        "in_3",
        "ana@northwind.io",
        "1000.00",
        paid_at(3),
    )
    .await;
    invoice(
        &app,
        "evt_in_3_resent",
        "in_3",
        "ana@northwind.io",
        "1000.00",
        paid_at(3),
    )
    .await;
    app.process().await;

    let recurring = lines(&app, LineKind::Recurring).await;
    assert_eq!(recurring.len(), 12, "{recurring:#?}");
    let sources: BTreeSet<String> = recurring
        .iter()
        .map(|r| r.line.source_key.clone().unwrap())
        .collect();
    let expected: BTreeSet<String> = (0..12).map(|k| format!("invoice:in_{k}")).collect();
    assert_eq!(sources, expected);
    for r in &recurring {
        let k: u32 = r.line.source_key.as_deref().unwrap()["invoice:in_".len()..]
            .parse()
            .unwrap();
        // 1000.00 × 10 / 100 × 1.0 (bronze: one success when paid) = 100.00
        assert_eq!(
            (
                r.line.amount.as_str(),
                r.line.currency.as_str(),
                r.line.tier.as_deref()
            ),
            ("100.00", "USD", Some("bronze"))
        );
        assert_eq!(
            (r.line.beneficiary.as_str(), r.line.deal_id.as_str()),
            ("referrer", "201")
        );
        assert_eq!(r.line.status.as_str(), "pending");
        assert_eq!(r.line.won_at, paid_at(k));
        assert_eq!(
            r.line.hold_until,
            Some(paid_at(k) + 30 * DAY),
            "the hold runs from the payment"
        );
        let c: Value = serde_json::from_str(&r.line.calculation).unwrap();
        assert!(
            c["formula"]
                .as_str()
                .unwrap()
                .starts_with("1000 USD × 10 / 100 = 100; × 1.0 = 100; "),
            "{c}"
        );
    }
    let audit = app.store.audit_entries("invoice", "in_12").await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert!(audit[0]
        .record
        .reason
        .as_deref()
        .unwrap()
        .contains("after the 12-month recurring window ended"));
    let counts: BTreeMap<String, i64> = app
        .store
        .inbox_status_counts()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        counts.get("ignored"),
        Some(&1),
        "the resent invoice: {counts:?}"
    );
}

async fn a_refund_after_payout_is_a_negative_line_on_the_next_statement(backend: Backend) {
    let Some(app) = app_with(backend, no_hold).await else {
        return;
    };
    // Won 22 November; without a hold the reward is payable at once.
    ana_won(&app, T0 + 2 * DAY, T0 + 3 * DAY).await;
    app.clock.set(T0 + 6 * DAY);
    invoice(
        &app,
        "evt_in_1",
        "in_1",
        "ana@northwind.io",
        "1000.00",
        T0 + 5 * DAY,
    )
    .await;
    app.process().await;

    let november = payouts(&app, "2026-11").await;
    let statements = november["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{november}");
    let statement = &statements[0];
    assert_eq!(
        (
            statement["referrer_code"].as_str(),
            statement["currency"].as_str(),
            statement["status"].as_str()
        ),
        (Some("ACME-7"), Some("USD"), Some("open"))
    );
    // The first-win reward (7.5% of 40,000) and the recurring reward (10% of 1,000).
    assert_eq!(
        shown(statement),
        [
            ("reward".to_string(), None, "3000.00".to_string()),
            ("recurring".to_string(), None, "100.00".to_string()),
        ]
    );
    assert_eq!(statement["total"], "3100.00");
    assert_eq!(
        statement["due_date"], "2026-12-30",
        "net-30 after 30 November"
    );
    assert_eq!(november["totals"], json!({"USD": "3100.00"}));
    let id = statement["id"].as_str().unwrap().to_string();

    let (status, paid) = pay(&app, &id, "WIRE-2026-11-ACME", Some("3100.00")).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["statement"]["status"], "paid");
    assert_eq!(paid["statement"]["paid_by"], "ops@acme.com");
    let referrer_lines: Vec<Reward> = app
        .store
        .rewards(None, 50)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.line.beneficiary.as_str() == "referrer")
        .collect();
    assert!(
        referrer_lines
            .iter()
            .all(|r| r.line.status.as_str() == "paid"),
        "{referrer_lines:#?}"
    );

    // A quarter of the invoice is refunded in December: a quarter of its reward comes back.
    app.clock.set(T0 + 20 * DAY);
    refund(&app, "evt_re_1", "in_1", "250.00", T0 + 20 * DAY).await;
    app.process().await;

    let adjustments = lines(&app, LineKind::Adjustment).await;
    assert_eq!(adjustments.len(), 1, "{adjustments:#?}");
    let recurring = &lines(&app, LineKind::Recurring).await[0];
    assert_eq!(
        (
            adjustments[0].line.amount.as_str(),
            adjustments[0].line.status.as_str(),
            adjustments[0].line.adjusts.as_deref()
        ),
        ("-25.00", "eligible", Some(recurring.id.as_str()))
    );
    assert_eq!(
        recurring.line.status.as_str(),
        "paid",
        "a paid line is never edited"
    );
    assert_eq!(recurring.line.amount, "100.00");
    // Visible in the API, and on the deal: 3000.00 + 100.00 − 25.00.
    let (_, listed) = call(
        &app,
        "GET",
        "/api/v1/rewards?limit=50",
        Some(READ_KEY),
        None,
    )
    .await;
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["line_kind"] == "adjustment" && r["amount"] == "-25.00"));
    let props = outbox_of(&app, 201, "update_properties").await;
    let last = payload(props.last().unwrap())["properties"].clone();
    assert_eq!(
        (
            last["referral_reward_status"].as_str(),
            last["referral_reward_amount"].as_str()
        ),
        (Some("paid"), Some("3075.00"))
    );

    let december = payouts(&app, "2026-12").await;
    let statement = &december["statements"][0];
    assert_eq!(
        shown(statement),
        [("adjustment".to_string(), None, "-25.00".to_string())]
    );
    assert_eq!(
        statement["lines"][0]["source"],
        format!("refund:in_1@{}", T0 + 20 * DAY)
    );
    assert_eq!(statement["total"], "-25.00");
    // November stays as it was paid.
    let november = payouts(&app, "2026-11").await;
    assert_eq!(november["statements"][0]["total"], "3100.00");
    assert_eq!(
        november["statements"][0]["lines"].as_array().unwrap().len(),
        2
    );
}

async fn marking_a_statement_paid_twice_is_a_conflict_and_changes_nothing(backend: Backend) {
    let Some(app) = app_with(backend, no_hold).await else {
        return;
    };
    ana_won(&app, T0 + 2 * DAY, T0 + 3 * DAY).await;
    let read = payouts(&app, "2026-11").await;
    let id = read["statements"][0]["id"].as_str().unwrap().to_string();
    let (first, _) = pay(&app, &id, "WIRE-1", None).await;
    assert_eq!(first, 200);
    let before = payouts(&app, "2026-11").await;

    let (second, body) = pay(&app, &id, "WIRE-2", None).await;

    assert_eq!(second, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WIRE-1"),
        "{body}"
    );
    let after = payouts(&app, "2026-11").await;
    assert_eq!(before, after);
    assert_eq!(after["statements"][0]["reference"], "WIRE-1");
    let audit = app.store.audit_entries("payout", &id).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.record.action == "payout_paid")
            .count(),
        1
    );
    let referrer = app
        .store
        .rewards_of_deal(Crm::HubSpot, "201")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.line.beneficiary.as_str() == "referrer")
        .unwrap();
    let paid: Vec<String> = app
        .store
        .audit_entries("reward", &referrer.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.record.action == "reward_paid")
        .map(|a| a.record.reason.unwrap_or_default())
        .collect();
    assert_eq!(
        paid,
        [format!("paid with payout statement {id}, reference WIRE-1")]
    );
    // A line on a statement is paid with the statement, never on its own as well.
    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/v1/rewards/{}/paid", referrer.id),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
}

/// `n` eligible referrer lines of `code` in `currency`, payable now.
pub(crate) async fn seed_lines(store: &Store, code: &str, currency: &str, n: usize, now: Millis) {
    let mut tx = store.begin().await.unwrap();
    for i in 0..n {
        let email = format!(
            "{code}-{currency}-{}@example.com",
            uuid::Uuid::new_v4().simple()
        );
        let attribution = Attribution {
            referrer_code: Some(code.into()),
            source: Some("link".into()),
            market: Some("US".into()),
            first_touch_at: now - DAY,
        };
        let (referral, _) = tx.insert_referral(&email, &attribution, now).await.unwrap();
        let line = NewReward {
            crm: Crm::HubSpot,
            deal_id: referral.id().to_string(),
            beneficiary: Beneficiary::Referrer,
            referral_id: referral.id().to_string(),
            referrer_code: Some(code.into()),
            market: "US".into(),
            status: RewardStatus::Eligible,
            kind: "flat".into(),
            amount: format!("{}.50", 10 + i),
            currency: currency.into(),
            tier: None,
            deal_amount: None,
            deal_currency: None,
            fx_rate: None,
            calculation: "{}".into(),
            flags: "[]".into(),
            review_reason: None,
            won_at: now,
            hold_until: None,
            line_kind: LineKind::Reward,
            source_key: None,
            adjusts: None,
            payout_schedule: None,
        };
        tx.insert_reward(&line, now).await.unwrap().unwrap();
    }
    tx.commit().await.unwrap();
}

async fn two_replicas_gathering_a_period_make_one_statement_per_referrer_and_currency(
    backend: Backend,
) {
    let Some(app) = app_with(backend, |_| {}).await else {
        return;
    };
    // A second replica: its own connections to the same database.
    let other = Store::connect(&app.settings.database).await.unwrap();
    let settings = std::sync::Arc::new(app.settings.clone());
    let period: Period = "2026-11".parse().unwrap();
    let mut seeded = 0;
    for round in 0..4 {
        for (code, currency) in [
            ("ACME-7", "USD"),
            ("ACME-7", "RUB"),
            ("IVAN-1", "RUB"),
            ("ZED-9", "USD"),
        ] {
            seed_lines(&app.store, code, currency, 6, T0 + round * HOUR).await;
            seeded += 6;
        }
        let now = T0 + round * HOUR + 1;
        let gatherers: Vec<_> = [
            app.store.clone(),
            other.clone(),
            app.store.clone(),
            other.clone(),
        ]
        .into_iter()
        .map(|store| {
            let settings = settings.clone();
            tokio::spawn(async move {
                payouts::read_period(&store, &settings, period, &StatementFilter::default(), now)
                    .await
            })
        })
        .collect();
        for g in gatherers {
            g.await.unwrap().expect("every replica's reading succeeds");
        }
    }

    let read = payouts::read_period(
        &app.store,
        &settings,
        period,
        &StatementFilter::default(),
        T0 + DAY,
    )
    .await
    .unwrap();
    let keys: Vec<(String, String)> = read
        .statements
        .iter()
        .map(|s| (s.referrer_code.clone(), s.currency.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            ("ACME-7", "RUB"),
            ("IVAN-1", "RUB"),
            ("ACME-7", "USD"),
            ("ZED-9", "USD"),
        ]
        .map(|(c, cur)| (c.to_string(), cur.to_string())),
        "one statement per (referrer, currency)"
    );
    let on_statements: Vec<&str> = read
        .statements
        .iter()
        .flat_map(|s| s.lines.iter().map(|l| l.reward_id.as_str()))
        .collect();
    let distinct: BTreeSet<&str> = on_statements.iter().copied().collect();
    assert_eq!(on_statements.len(), seeded, "every line on a statement");
    assert_eq!(distinct.len(), seeded, "no line on two statements");
    // Totals per currency: 4 rounds × 2 referrers × (10.50 + … + 15.50) = 8 × 78.00.
    assert_eq!(
        read.totals,
        BTreeMap::from([
            ("RUB".to_string(), "624.00".to_string()),
            ("USD".to_string(), "624.00".to_string())
        ])
    );
    other.close().await;
}

async fn a_refund_that_arrives_before_its_invoice_still_takes_back_its_share(backend: Backend) {
    let Some(app) = app_with(backend, |_| {}).await else {
        return;
    };
    let won = T0 + 10 * DAY;
    ana_won(&app, won, T0).await;

    // The refund first (its own partition), then the invoice, named by Ana's HubSpot contact.
    refund(&app, "evt_re_7", "in_7", "400.00", won + 9 * DAY).await;
    // And one in another currency than the invoice: never converted by guess.
    app.signup(
        json!({"id": "evt_re_7_eur", "type": "invoice.refunded", "occurred_at": iso(won + 9 * DAY),
        "data": {"invoice_id": "in_7", "refund_id": "re_eur", "amount": "10.00", "currency": "EUR",
                 "refunded_at": iso(won + 9 * DAY)}}),
    )
    .await;
    app.process().await;
    assert!(lines(&app, LineKind::Adjustment).await.is_empty());
    app.signup(
        json!({"id": "evt_in_7", "type": "invoice.paid", "occurred_at": iso(won + 5 * DAY),
        "data": {"crm_id": "hubspot:contact:101", "invoice_id": "in_7", "amount": "1600.00",
                 "currency": "USD", "paid_at": iso(won + 5 * DAY)}}),
    )
    .await;
    app.process().await;

    let line = &lines(&app, LineKind::Recurring).await[0];
    assert_eq!(
        (line.line.amount.as_str(), line.line.status.as_str()),
        ("160.00", "pending")
    );
    let adjustment = &lines(&app, LineKind::Adjustment).await[0];
    // 400 of 1600 refunded: a quarter of 160.00; held as long as the line it takes back.
    assert_eq!(
        (
            adjustment.line.amount.as_str(),
            adjustment.line.status.as_str(),
            adjustment.line.hold_until
        ),
        ("-40.00", "pending", line.line.hold_until)
    );
    assert_eq!(lines(&app, LineKind::Adjustment).await.len(), 1);
    let audit = app.store.audit_entries("invoice", "in_7").await.unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|a| (a.record.action.as_str(), a.record.reason.as_deref()))
            .collect::<Vec<_>>(),
        [(
            "refund_unmatched",
            Some("refund re_eur is in EUR, its invoice in USD: take it back by hand")
        )]
    );
    assert_eq!(
        release_holds(&app.store, &app.settings, line.line.hold_until.unwrap())
            .await
            .unwrap(),
        4,
        "the first win's two lines (due five days earlier), the line and its adjustment together"
    );
}

async fn a_renewal_earns_a_recurring_line_and_never_a_second_first_win_reward(backend: Backend) {
    let Some(app) = app_with(backend, |s| {
        s.renewals.hubspot_pipelines = vec!["renewals".into()];
        s.hubspot.pipelines.insert(
            "renewals".into(),
            [("renewalopen", "negotiation"), ("renewalwon", "won")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
                .collect(),
        );
    })
    .await
    else {
        return;
    };
    let won = T0 + 10 * DAY;
    ana_won(&app, won, T0).await;
    let renewal = |event: u64, deal: u64, contact: u64, at: Millis| {
        json!([
            hubspot_event(
                event,
                "deal.associationChange",
                deal,
                at,
                json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact})
            ),
            deal_property(event + 1, deal, "pipeline", "renewals", at),
            deal_property(event + 2, deal, "amount", "12000", at),
            deal_property(event + 3, deal, "deal_currency_code", "USD", at),
            deal_property(event + 4, deal, "dealstage", "renewalwon", at + HOUR),
        ])
    };
    app.hubspot(renewal(9000, 202, 101, won + 200 * DAY)).await;
    // Bo was referred too, but his only won deal is a renewal: nothing to renew from.
    referred_deal(&app, "bo@contoso.com", 102, 203, "20000").await;
    app.hubspot(renewal(9100, 204, 102, won + 200 * DAY)).await;
    app.process().await;

    let on_renewal = app
        .store
        .rewards_of_deal(Crm::HubSpot, "202")
        .await
        .unwrap();
    assert_eq!(on_renewal.len(), 1, "{on_renewal:#?}");
    let line = &on_renewal[0];
    // 12,000 × 10 / 100 × 1.0 (bronze) = 1,200.00; the renewal is the line's own deal.
    assert_eq!(
        (
            line.line.line_kind.as_str(),
            line.line.beneficiary.as_str(),
            line.line.amount.as_str(),
            line.line.kind.as_str()
        ),
        ("recurring", "referrer", "1200.00", "recurring")
    );
    assert_eq!(line.line.source_key, None);
    assert_eq!(
        line.line.hold_until,
        Some(won + 200 * DAY + HOUR + 30 * DAY)
    );
    assert_eq!(
        app.store
            .rewards_of_deal(Crm::HubSpot, "201")
            .await
            .unwrap()
            .len(),
        2,
        "the first win keeps its two"
    );
    assert!(app
        .store
        .rewards_of_deal(Crm::HubSpot, "204")
        .await
        .unwrap()
        .is_empty());
    let audit = app
        .store
        .audit_entries("crm_record", "hubspot:deal:204")
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.record.action == "reward_not_eligible"
                && a.record.reason.as_deref()
                    == Some("a renewal before the customer's first rewarded win earns nothing")),
        "{audit:#?}"
    );
}

async fn a_deal_lost_after_its_hold_is_clawed_back_by_a_negative_adjustment(backend: Backend) {
    let Some(app) = app_with(backend, |_| {}).await else {
        return;
    };
    let won = T0 + 10 * DAY;
    ana_won(&app, won, T0).await;
    release_holds(&app.store, &app.settings, won + 30 * DAY)
        .await
        .unwrap();
    app.clock.set(won + 40 * DAY);

    stage(&app, 2, 201, "closedlost", won + 40 * DAY).await;

    let on_deal = app
        .store
        .rewards_of_deal(Crm::HubSpot, "201")
        .await
        .unwrap();
    let referrer = on_deal
        .iter()
        .find(|r| r.is_deals_own() && r.line.beneficiary.as_str() == "referrer")
        .unwrap();
    let referee = on_deal
        .iter()
        .find(|r| r.line.beneficiary.as_str() == "referee")
        .unwrap();
    let clawback = on_deal
        .iter()
        .find(|r| r.line.line_kind.as_str() == "adjustment")
        .expect("an adjustment");
    assert_eq!(
        referrer.line.status.as_str(),
        "eligible",
        "the line itself is not edited"
    );
    assert_eq!(
        referee.line.status.as_str(),
        "eligible",
        "the referee's side stays"
    );
    assert_eq!(
        (
            clawback.line.amount.as_str(),
            clawback.line.status.as_str(),
            clawback.line.beneficiary.as_str()
        ),
        ("-3000.00", "eligible", "referrer")
    );
    assert_eq!(clawback.line.adjusts.as_deref(), Some(referrer.id.as_str()));
    assert_eq!(
        clawback.line.source_key,
        Some(format!("clawback:{}", referrer.id))
    );
    let audit = app
        .store
        .audit_entries("reward", &clawback.id)
        .await
        .unwrap();
    assert_eq!(audit[0].record.action, "reward_adjusted");
    assert_eq!(
        deal_reward(&app, 201).await,
        ("reversed".to_string(), "0.00".to_string())
    );

    // Won again before the clawback was paid out: it is withdrawn; lost again: back in force.
    stage(&app, 3, 201, "closedwon", won + 45 * DAY).await;
    let again = app.store.reward_by_id(&clawback.id).await.unwrap().unwrap();
    assert_eq!(again.line.status.as_str(), "reversed");
    assert_eq!(
        deal_reward(&app, 201).await,
        ("eligible".to_string(), "3000.00".to_string())
    );
    stage(&app, 4, 201, "closedlost", won + 46 * DAY).await;
    let on_deal = app
        .store
        .rewards_of_deal(Crm::HubSpot, "201")
        .await
        .unwrap();
    assert_eq!(on_deal.len(), 3, "still one clawback: {on_deal:#?}");
    assert_eq!(
        app.store
            .reward_by_id(&clawback.id)
            .await
            .unwrap()
            .unwrap()
            .line
            .status,
        RewardStatus::Eligible
    );
}

/// The reward status and amount last written to a HubSpot deal.
async fn deal_reward(app: &TestApp, deal: u64) -> (String, String) {
    let rows = outbox_of(app, deal, "update_properties").await;
    let last = payload(rows.last().unwrap())["properties"].clone();
    (
        last["referral_reward_status"].as_str().unwrap().to_string(),
        last["referral_reward_amount"].as_str().unwrap().to_string(),
    )
}

/// Ivan (RU, flat 50,000 RUB, half at the win and half at the end of the hold) referred `email`,
/// whose HubSpot deal `deal` is won at `won`.
async fn ru_deal_won(app: &TestApp, n: u64, email: &str, won: Millis) {
    app.signup(
        json!({"id": "evt_ivan", "type": "partner.joined", "occurred_at": iso(T0 - DAY),
        "data": {"code": "IVAN-1", "name": "Ivan", "email": "ivan@partner.ru", "market": "RU"}}),
    )
    .await;
    app.signup(
        json!({"id": format!("evt_ru_{n}"), "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": email, "referral_code": "IVAN-1", "source": "code", "market": "RU",
                 "ip": format!("198.51.100.{n}")}}),
    )
    .await;
    let (contact, deal) = (300 + n, 400 + n);
    app.hubspot(json!([
        hubspot_event(n * 100 + 1, "contact.propertyChange", contact, T0, json!({"propertyName": "email", "propertyValue": email})),
        hubspot_event(n * 100 + 2, "deal.associationChange", deal, T0, json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact})),
        deal_property(n * 100 + 3, deal, "amount", "900000", T0),
        deal_property(n * 100 + 4, deal, "deal_currency_code", "RUB", T0),
        deal_property(n * 100 + 5, deal, "dealstage", "closedwon", won),
    ]))
    .await;
    app.process().await;
}

async fn a_payout_schedule_pays_half_at_the_win_and_takes_it_back_when_the_hold_is_broken(
    backend: Backend,
) {
    let Some(app) = app_with(backend, |_| {}).await else {
        return;
    };
    app.clock.set(T0 + 3 * DAY);
    ru_deal_won(&app, 1, "gus@initech.ru", T0 + 2 * DAY).await;
    ru_deal_won(&app, 2, "lev@globex.ru", T0 + 2 * DAY).await;
    ru_deal_won(&app, 3, "mia@umbrella.ru", T0 + 2 * DAY).await;

    // The win pays the first half while the hold runs.
    let november = payouts(&app, "2026-11").await;
    let statement = &november["statements"][0];
    assert_eq!(
        (
            statement["referrer_code"].as_str(),
            statement["currency"].as_str()
        ),
        (Some("IVAN-1"), Some("RUB"))
    );
    let won_half = (
        "reward".to_string(),
        Some("won".to_string()),
        "25000.00".to_string(),
    );
    // The third success makes Ivan an insider (1.5×): 75,000, half of it 37,500.
    let insider_half = (
        "reward".to_string(),
        Some("won".to_string()),
        "37500.00".to_string(),
    );
    assert_eq!(
        shown(statement),
        [won_half.clone(), won_half.clone(), insider_half]
    );
    // Deal 403 falls through during its hold before anyone paid: its half leaves the statement.
    stage(&app, 31, 403, "closedlost", T0 + 3 * DAY).await;
    let november = payouts(&app, "2026-11").await;
    let id = november["statements"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        shown(&november["statements"][0]),
        [won_half.clone(), won_half.clone()]
    );
    let (status, body) = pay(&app, &id, "SWIFT-IVAN-11", Some("50000.00")).await;
    assert_eq!(status, 200, "{body}");
    let pending: Vec<Reward> = app
        .store
        .rewards(Some(RewardStatus::Pending), 10)
        .await
        .unwrap();
    assert_eq!(
        pending.len(),
        2,
        "half paid is not paid: the hold still runs"
    );

    // Deal 402 falls through during its hold after its first half was paid: it comes back.
    app.clock.set(T0 + 5 * DAY);
    stage(&app, 32, 402, "closedlost", T0 + 5 * DAY).await;
    // Deal 401's hold ends in December: the second half.
    release_holds(&app.store, &app.settings, T0 + 32 * DAY)
        .await
        .unwrap();
    app.clock.set(T0 + 33 * DAY);
    let december = payouts(&app, "2026-12").await;
    let statement = &december["statements"][0];
    assert_eq!(
        shown(statement),
        [
            ("adjustment".to_string(), None, "-25000.00".to_string()),
            (
                "reward".to_string(),
                Some("hold_end".to_string()),
                "25000.00".to_string()
            ),
        ]
    );
    assert_eq!(statement["total"], "0.00");
    let (status, _) = pay(
        &app,
        statement["id"].as_str().unwrap(),
        "SWIFT-IVAN-12",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let first = app
        .store
        .rewards_of_deal(Crm::HubSpot, "401")
        .await
        .unwrap();
    assert_eq!(
        first[0].line.status.as_str(),
        "paid",
        "both halves paid: {first:#?}"
    );
    let second = app
        .store
        .rewards_of_deal(Crm::HubSpot, "402")
        .await
        .unwrap();
    let reversed = second.iter().find(|r| r.is_deals_own()).unwrap();
    assert_eq!(reversed.line.status.as_str(), "reversed");
    let clawback = second
        .iter()
        .find(|r| r.line.line_kind.as_str() == "adjustment")
        .unwrap();
    assert_eq!(
        (clawback.line.status.as_str(), clawback.line.amount.as_str()),
        ("paid", "-25000.00")
    );
}

async fn the_payouts_api_names_what_is_wrong_with_a_request(backend: Backend) {
    let Some(app) = app_with(backend, |_| {}).await else {
        return;
    };
    let get = |path: &'static str| {
        let app = &app;
        async move { call(app, "GET", path, Some(READ_KEY), None).await }
    };
    for (path, message) in [
        ("/api/v1/payouts", "period is required, as YYYY-MM"),
        (
            "/api/v1/payouts?period=2026-13",
            "period: `2026-13` is not a month written YYYY-MM, such as 2026-11",
        ),
        (
            "/api/v1/payouts?period=2026-12",
            "period 2026-12 has not begun (the current month is 2026-11)",
        ),
        (
            "/api/v1/payouts?period=2026-11&currency=dollars",
            "currency must be a three-letter code such as USD",
        ),
    ] {
        let (status, body) = get(path).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["error"]["message"], message, "{path}");
    }
    let (status, body) = get("/api/v1/payouts?period=2026-11&currency=usd").await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"period": "2026-11", "statements": [], "totals": {}})
        )
    );

    let (status, body) = post_paid(&app, "nope", json!({"reference": "WIRE-1"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = post_paid(&app, "nope", json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reference"),
        "{body}"
    );
    let (status, body) = post_paid(&app, "nope", json!({"reference": "  "})).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (422, Some("reference is required: the transfer's reference"))
    );
    let (status, body) = post_paid(&app, "nope", json!({"reference": "W", "total": "lots"})).await;
    assert_eq!(status, 422, "{body}");
}

async fn the_funnel_counts_recurring_revenue_and_rewards_net_of_refunds(backend: Backend) {
    let Some(app) = app_with(backend, |_| {}).await else {
        return;
    };
    let won = T0 + 10 * DAY;
    ana_won(&app, won, T0).await;
    let usd = |report: &referral_sync::reports::FunnelReport| {
        let t = &report.totals;
        (
            t.revenue["USD"].to_string(),
            t.reward_cost["USD"].to_string(),
            t.roi["USD"].to_string(),
        )
    };
    let filter = referral_sync::reports::FunnelFilter::default();
    let before = referral_sync::reports::report(&app.store, &filter)
        .await
        .unwrap();
    // The won deal; its reward 3000.00 and the referee's 500.00 credit: (40000 − 3500) / 3500.
    assert_eq!(
        usd(&before),
        ("40000.00".into(), "3500.00".into(), "10.4286".into())
    );

    invoice(
        &app,
        "evt_in_1",
        "in_1",
        "ana@northwind.io",
        "1000.00",
        won + DAY,
    )
    .await;
    refund(&app, "evt_re_1", "in_1", "250.00", won + 2 * DAY).await;
    app.process().await;

    let after = referral_sync::reports::report(&app.store, &filter)
        .await
        .unwrap();
    // Revenue 40000 + 1000 − 250; cost 3500 + 100 − 25; ROI (40750 − 3575) / 3575 = 10.39860…
    assert_eq!(
        usd(&after),
        ("40750.00".into(), "3575.00".into(), "10.3986".into())
    );
}

async fn an_invoice_event_missing_a_field_is_refused_naming_it(backend: Backend) {
    let Some(app) = app_with(backend, |_| {}).await else {
        return;
    };
    for (body, message) in [
        (
            json!({"id": "e1", "type": "invoice.paid", "occurred_at": iso(T0),
                   "data": {"email": "ana@northwind.io", "amount": "10.00", "currency": "USD", "paid_at": iso(T0)}}),
            "data.invoice_id is required",
        ),
        (
            json!({"id": "e2", "type": "invoice.refunded", "occurred_at": iso(T0),
                   "data": {"invoice_id": "in_1", "amount": 10.5, "currency": "USD", "refunded_at": iso(T0)}}),
            "data.amount must be a positive decimal string such as \"99.50\"",
        ),
    ] {
        let body = body.to_string();
        let headers = referral_sync::ingest::signature::sign_standard_webhooks(
            crate::support::senders::APP_SECRET,
            "m",
            T0 / 1000,
            body.as_bytes(),
        )
        .unwrap();
        let response = app.post_signup_raw("app", &body, headers).await;
        assert_eq!(response.status(), 422);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["message"], message);
    }
    assert_eq!(
        app.store.count_inbox(None).await.unwrap(),
        0,
        "nothing stored"
    );
}

async fn rejecting_a_reward_whose_first_half_was_paid_takes_that_half_back(backend: Backend) {
    let Some(app) = app_with(backend, |_| {}).await else {
        return;
    };
    app.clock.set(T0 + 3 * DAY);
    ru_deal_won(&app, 1, "gus@initech.ru", T0 + 2 * DAY).await;
    let november = payouts(&app, "2026-11").await;
    let id = november["statements"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pay(&app, &id, "SWIFT-1", Some("25000.00")).await.0, 200);
    let line = app
        .store
        .rewards_of_deal(Crm::HubSpot, "401")
        .await
        .unwrap()[0]
        .clone();

    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/v1/rewards/{}/reject", line.id),
        Some(ADMIN_KEY),
        Some(json!({"reason": "the intro was not Ivan's"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The deal is rechecked while still won (its amount changes): the rejection's clawback stays.
    app.hubspot(json!([deal_property(
        199,
        401,
        "amount",
        "950000",
        T0 + 4 * DAY
    )]))
    .await;
    app.process().await;

    let on_deal = app
        .store
        .rewards_of_deal(Crm::HubSpot, "401")
        .await
        .unwrap();
    let clawback = on_deal
        .iter()
        .find(|r| r.line.line_kind.as_str() == "adjustment")
        .expect("the paid half comes back");
    assert_eq!(
        (clawback.line.amount.as_str(), clawback.line.status.as_str()),
        ("-25000.00", "eligible")
    );
    assert_eq!(
        clawback.line.source_key,
        Some(format!("rejected-paid:{}", line.id))
    );
    app.clock.set(T0 + 12 * DAY);
    let december = payouts(&app, "2026-12").await;
    assert_eq!(
        shown(&december["statements"][0]),
        [("adjustment".to_string(), None, "-25000.00".to_string())]
    );
}

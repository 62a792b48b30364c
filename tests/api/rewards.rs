//! The reward lifecycle (SPEC §2 steps 5–6, §4): a won deal earns a pending reward that becomes
//! eligible when the hold ends (fake clock, no sleeps), is reversed if the deal leaves the success
//! stage during the hold, is created once however often the win is replayed, and needs an admin's
//! decision when flagged. On both backends.

use referral_sync::clock::DAY;
use referral_sync::config::Settings;
use referral_sync::domain::reward::RewardStatus;
use referral_sync::domain::Crm;
use referral_sync::rewards::engine::{decide, release_holds, Decision, DecisionError};
use referral_sync::store::{OutboxRow, RecordKey};
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::senders::{deal_property, example_settings, hubspot_event, iso};
use crate::support::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

both_backends!(
    a_won_deal_earns_a_pending_reward_that_becomes_eligible_when_the_hold_ends,
    a_deal_reopened_or_lost_during_the_hold_is_reversed,
    a_replayed_win_still_yields_one_reward_per_beneficiary,
    flagged_rewards_wait_for_an_admin_to_approve_or_reject,
    salesforce_wins_publish_a_platform_event_when_eligible,
    a_program_without_a_hold_makes_the_reward_eligible_with_the_win,
    a_percent_reward_is_decided_when_the_deal_amount_arrives_after_the_win,
    a_freshly_linked_record_shows_the_first_tier_before_any_success,
    a_stored_signup_ip_that_is_no_ip_stops_the_reward_with_why,
);

/// Test settings plus the two-market programs of `config/example.toml`.
pub(crate) fn configure(s: &mut Settings) {
    crate::support::senders::configure(s);
    let example = example_settings();
    s.programs = example.programs;
    s.rewards = example.rewards;
}

async fn app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, SpawnOptions::default(), configure).await
}

/// Partner ACME-7 (US), a referee signed up with its code, a HubSpot contact and a deal of
/// `amount` USD associated with it. Event ids are derived from `deal` so several deals can coexist.
pub(crate) async fn referred_deal(
    app: &TestApp,
    email: &str,
    contact: u64,
    deal: u64,
    amount: &str,
) {
    app.signup(json!({"id": "evt_partner", "type": "partner.joined", "occurred_at": iso(T0 - 60 * DAY),
        "data": {"code": "ACME-7", "name": "Acme Partners", "email": "partners@acme.com", "company_domain": "acme.com", "market": "US"}}))
        .await;
    app.signup(json!({"id": format!("evt_signup_{deal}"), "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": email, "referral_code": "ACME-7", "source": "link", "market": "US", "ip": format!("198.51.100.{}", deal % 250)}}))
        .await;
    let base = deal * 100;
    app.hubspot(json!([
        hubspot_event(base + 1, "contact.propertyChange", contact, T0, json!({"propertyName": "email", "propertyValue": email})),
        hubspot_event(base + 2, "deal.associationChange", deal, T0, json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact})),
        deal_property(base + 3, deal, "amount", amount, T0),
        deal_property(base + 4, deal, "deal_currency_code", "USD", T0),
        deal_property(base + 5, deal, "dealstage", "qualifiedtobuy", T0 + DAY),
    ]))
    .await;
    app.process().await;
}

pub(crate) async fn stage(app: &TestApp, event_id: u64, deal: u64, stage: &str, at: i64) {
    app.hubspot(json!([deal_property(
        event_id,
        deal,
        "dealstage",
        stage,
        at
    )]))
    .await;
    app.process().await;
}

pub(crate) fn deal_key(id: u64) -> RecordKey {
    RecordKey {
        crm: Crm::HubSpot,
        object_type: "deal".into(),
        object_id: id.to_string(),
    }
}

pub(crate) async fn outbox_of(app: &TestApp, deal: u64, kind: &str) -> Vec<OutboxRow> {
    app.store
        .outbox_rows(Some(&deal_key(deal)))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind.as_str() == kind)
        .collect()
}

/// What happened to a reward, in order.
async fn audit_actions(app: &TestApp, reward_id: &str) -> Vec<String> {
    app.store
        .audit_entries("reward", reward_id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.record.action)
        .collect()
}

pub(crate) fn payload(row: &OutboxRow) -> Value {
    serde_json::from_str(&row.payload).unwrap()
}

async fn a_won_deal_earns_a_pending_reward_that_becomes_eligible_when_the_hold_ends(
    backend: Backend,
) {
    let Some(app) = app(backend).await else {
        return;
    };
    referred_deal(&app, "ana@northwind.io", 101, 201, "40000").await;
    let won_at = T0 + 10 * DAY;

    stage(&app, 1, 201, "closedwon", won_at).await;

    let rewards = app
        .store
        .rewards_of_deal(Crm::HubSpot, "201")
        .await
        .unwrap();
    assert_eq!(rewards.len(), 2, "two-sided: referrer and referee");
    let referrer = rewards
        .iter()
        .find(|r| r.line.beneficiary.as_str() == "referrer")
        .unwrap();
    let referee = rewards
        .iter()
        .find(|r| r.line.beneficiary.as_str() == "referee")
        .unwrap();
    // 7.5% of 40000 USD = 3000.00 × 1.0 (bronze, first success), under the 5000 cap.
    assert_eq!(
        (
            referrer.line.status.as_str(),
            referrer.line.amount.as_str(),
            referrer.line.currency.as_str()
        ),
        ("pending", "3000.00", "USD")
    );
    assert_eq!(referrer.line.tier.as_deref(), Some("bronze"));
    assert_eq!(referrer.line.hold_until, Some(won_at + 30 * DAY));
    assert_eq!(
        (referee.line.kind.as_str(), referee.line.amount.as_str()),
        ("credit", "500.00")
    );
    let calculation: Value = serde_json::from_str(&referrer.line.calculation).unwrap();
    assert!(
        calculation.to_string().contains("7.5"),
        "the calculation is explained: {calculation}"
    );
    let props = outbox_of(&app, 201, "update_properties").await;
    let last = payload(props.last().unwrap())["properties"].clone();
    assert_eq!(last["referral_reward_status"], "pending");
    assert_eq!(last["referral_reward_amount"], "3000.00");
    assert_eq!(
        last["referral_reward_hold_until"],
        (won_at + 30 * DAY).to_string()
    );

    // The hold runs on the injected clock: nothing a day early, both rewards when it ends.
    assert_eq!(
        release_holds(&app.store, &app.settings, won_at + 29 * DAY)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        release_holds(&app.store, &app.settings, won_at + 30 * DAY)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        release_holds(&app.store, &app.settings, won_at + 31 * DAY)
            .await
            .unwrap(),
        0,
        "released once"
    );

    let statuses: Vec<String> = app
        .store
        .rewards_of_deal(Crm::HubSpot, "201")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.line.status.to_string())
        .collect();
    assert_eq!(
        statuses,
        ["referrer", "referee"].map(|_| "eligible".to_string())
    );
    let notes = outbox_of(&app, 201, "create_note").await;
    assert_eq!(notes.len(), 1, "one note for the deal, both sides in it");
    let body = payload(&notes[0])["body"].as_str().unwrap().to_string();
    assert!(
        body.contains("3000.00 USD")
            && body.contains("ACME-7")
            && body.contains("credit 500.00 USD, eligible"),
        "{body}"
    );
    let props = outbox_of(&app, 201, "update_properties").await;
    assert_eq!(
        payload(props.last().unwrap())["properties"]["referral_reward_status"],
        "eligible"
    );
    let audit = app
        .store
        .audit_entries("reward", &referrer.id)
        .await
        .unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|a| a.record.action.as_str())
            .collect::<Vec<_>>(),
        ["reward_created", "reward_eligible"]
    );
}

async fn a_deal_reopened_or_lost_during_the_hold_is_reversed(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    referred_deal(&app, "bo@contoso.com", 102, 202, "20000").await;
    referred_deal(&app, "cy@fabrikam.com", 103, 203, "20000").await;
    stage(&app, 1, 202, "closedwon", T0 + 10 * DAY).await;
    stage(&app, 2, 203, "closedwon", T0 + 10 * DAY).await;

    stage(&app, 3, 202, "contractsent", T0 + 12 * DAY).await; // reopened
    stage(&app, 4, 203, "closedlost", T0 + 12 * DAY).await; // lost

    for deal in ["202", "203"] {
        let rewards = app.store.rewards_of_deal(Crm::HubSpot, deal).await.unwrap();
        assert_eq!(rewards.len(), 2);
        assert!(
            rewards.iter().all(|r| r.line.status.as_str() == "reversed"),
            "{deal}: {rewards:#?}"
        );
    }
    assert_eq!(
        release_holds(&app.store, &app.settings, T0 + 100 * DAY)
            .await
            .unwrap(),
        0,
        "reversed rewards never become eligible"
    );
    let props = outbox_of(&app, 202, "update_properties").await;
    assert_eq!(
        payload(props.last().unwrap())["properties"]["referral_reward_status"],
        "reversed"
    );
    let referrer = app
        .store
        .rewards_of_deal(Crm::HubSpot, "203")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.line.beneficiary.as_str() == "referrer")
        .unwrap();
    let audit = app
        .store
        .audit_entries("reward", &referrer.id)
        .await
        .unwrap();
    assert_eq!(audit.last().unwrap().record.action, "reward_reversed");
    assert!(audit
        .last()
        .unwrap()
        .record
        .reason
        .as_deref()
        .unwrap()
        .contains("lost"));
}

async fn a_replayed_win_still_yields_one_reward_per_beneficiary(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    referred_deal(&app, "dee@northwind.io", 104, 204, "40000").await;
    stage(&app, 1, 204, "closedwon", T0 + 10 * DAY).await;

    // The same win again: redelivered (same event), re-sent (new event id), and replayed.
    stage(&app, 1, 204, "closedwon", T0 + 10 * DAY).await;
    stage(&app, 2, 204, "closedwon", T0 + 10 * DAY + 1).await;
    // And a reopen then a second win: the reversed reward comes back, still the same rows.
    stage(&app, 3, 204, "contractsent", T0 + 11 * DAY).await;
    stage(&app, 4, 204, "closedwon", T0 + 12 * DAY).await;

    let rewards = app
        .store
        .rewards_of_deal(Crm::HubSpot, "204")
        .await
        .unwrap();
    assert_eq!(rewards.len(), 2, "{rewards:#?}");
    let referrer = rewards
        .iter()
        .find(|r| r.line.beneficiary.as_str() == "referrer")
        .unwrap();
    assert_eq!(referrer.line.status.as_str(), "pending");
    assert_eq!(
        referrer.line.hold_until,
        Some(T0 + 12 * DAY + 30 * DAY),
        "the hold restarts with the new win"
    );
    assert_eq!(
        audit_actions(&app, &referrer.id).await,
        ["reward_created", "reward_reversed", "reward_reinstated"]
    );
    assert_eq!(app.store.rewards(None, 100).await.unwrap().len(), 2);
}

async fn flagged_rewards_wait_for_an_admin_to_approve_or_reject(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    // Referees at the partner's own company domain: a self-referral, which the US program blocks.
    referred_deal(&app, "eve@acme.com", 105, 205, "40000").await;
    referred_deal(&app, "fay@acme.com", 106, 206, "40000").await;
    stage(&app, 1, 205, "closedwon", T0 + 10 * DAY).await;
    stage(&app, 2, 206, "closedwon", T0 + 10 * DAY).await;
    let find = |deal: &'static str| {
        let store = app.store.clone();
        async move {
            store
                .rewards_of_deal(Crm::HubSpot, deal)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.line.beneficiary.as_str() == "referrer")
                .unwrap()
        }
    };
    let first = find("205").await;
    let second = find("206").await;
    assert_eq!(first.line.status.as_str(), "needs_review");
    assert!(
        first.line.flags.contains("self_referral"),
        "{}",
        first.line.flags
    );
    assert!(first
        .line
        .review_reason
        .as_deref()
        .unwrap()
        .contains("self_referral"));
    assert_eq!(
        release_holds(&app.store, &app.settings, T0 + 100 * DAY)
            .await
            .unwrap(),
        0,
        "review is not a hold"
    );

    let approved = decide(
        &app.store,
        &app.settings,
        &first.id,
        Decision::Approve,
        "ops@acme.com",
        Some("known intro"),
        T0 + 11 * DAY,
    )
    .await
    .unwrap();
    let paid = decide(
        &app.store,
        &app.settings,
        &first.id,
        Decision::Paid,
        "finance@acme.com",
        None,
        T0 + 40 * DAY,
    )
    .await
    .unwrap();
    let no_reason = decide(
        &app.store,
        &app.settings,
        &second.id,
        Decision::Reject,
        "ops@acme.com",
        None,
        T0 + 11 * DAY,
    )
    .await;
    let rejected = decide(
        &app.store,
        &app.settings,
        &second.id,
        Decision::Reject,
        "ops@acme.com",
        Some("employee referral"),
        T0 + 11 * DAY,
    )
    .await
    .unwrap();
    let too_late = decide(
        &app.store,
        &app.settings,
        &second.id,
        Decision::Approve,
        "ops@acme.com",
        None,
        T0 + 12 * DAY,
    )
    .await;

    assert_eq!(
        (
            approved.line.status.as_str(),
            approved.decided_by.as_deref()
        ),
        ("approved", Some("ops@acme.com"))
    );
    assert_eq!(paid.line.status.as_str(), "paid");
    assert!(matches!(no_reason, Err(DecisionError::Invalid(_))));
    assert_eq!(rejected.line.status.as_str(), "rejected");
    assert!(
        matches!(too_late, Err(DecisionError::WrongState { ref status, .. }) if *status == RewardStatus::Rejected)
    );
    let actions: Vec<(String, String)> = app
        .store
        .audit_entries("reward", &first.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.record.action, a.record.actor))
        .collect();
    assert_eq!(
        actions[1..],
        [
            ("reward_approved".to_string(), "ops@acme.com".to_string()),
            ("reward_paid".to_string(), "finance@acme.com".to_string())
        ]
    );
    let notes: Vec<String> = outbox_of(&app, 205, "create_note")
        .await
        .iter()
        .map(|n| payload(n)["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        notes.len(),
        2,
        "the review is explained, and the approval of a reviewed reward announced: {notes:?}"
    );
    assert!(
        notes[0].starts_with("Referral reward needs review"),
        "{}",
        notes[0]
    );
    assert!(
        notes[1].starts_with("Referral reward approved"),
        "{}",
        notes[1]
    );
}

async fn salesforce_wins_publish_a_platform_event_when_eligible(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    app.signup(json!({"id": "evt_s", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "gus@initech.ru", "referral_code": "IVAN-1", "source": "code", "market": "RU"}}))
        .await;
    let contact: &[(&str, Option<&str>)] = &[
        ("Id", Some("0037F00000RuRuRQAA")),
        ("Email", Some("gus@initech.ru")),
    ];
    let won: &[(&str, Option<&str>)] = &[
        ("Id", Some("0067F00000RuRuRQAA")),
        ("ContactId", Some("0037F00000RuRuRQAA")),
        ("StageName", Some("Closed Won")),
        ("IsWon", Some("true")),
        ("Amount", Some("900000")),
        ("CurrencyIsoCode", Some("RUB")),
        ("SystemModstamp", Some("2026-12-01T10:00:00.000Z")),
    ];
    app.salesforce(&[
        ("04l0000000000R1AAA", "Contact", contact),
        ("04l0000000000R2AAA", "Opportunity", won),
    ])
    .await;
    app.process().await;

    let reward = app
        .store
        .rewards_of_deal(Crm::Salesforce, "0067F00000RuRuRQAA")
        .await
        .unwrap();
    assert_eq!(reward.len(), 1, "RU has no referee reward");
    // Flat 50000 RUB × 1.0 (member, first success).
    assert_eq!(
        (
            reward[0].line.amount.as_str(),
            reward[0].line.currency.as_str(),
            reward[0].line.tier.as_deref()
        ),
        ("50000.00", "RUB", Some("member"))
    );
    release_holds(
        &app.store,
        &app.settings,
        reward[0].line.hold_until.unwrap(),
    )
    .await
    .unwrap();

    let deal = RecordKey {
        crm: Crm::Salesforce,
        object_type: "Opportunity".into(),
        object_id: "0067F00000RuRuRQAA".into(),
    };
    let rows = app.store.outbox_rows(Some(&deal)).await.unwrap();
    let event = rows
        .iter()
        .find(|r| r.kind.as_str() == "publish_event")
        .expect("platform event queued");
    let event = payload(event);
    assert_eq!(event["event"], "Referral_Reward__e");
    assert_eq!(event["fields"]["Amount__c"], "50000.00");
    assert_eq!(event["fields"]["Status__c"], "eligible");
    let props = rows
        .iter()
        .rfind(|r| r.kind.as_str() == "update_properties")
        .unwrap();
    assert_eq!(
        payload(props)["properties"]["Referral_Reward_Status__c"],
        "eligible"
    );
}

async fn a_program_without_a_hold_makes_the_reward_eligible_with_the_win(backend: Backend) {
    let Some(app) = spawn_app_with(backend, SpawnOptions::default(), |s| {
        configure(s);
        s.programs.get_mut("US").unwrap().hold_days = 0;
    })
    .await
    else {
        return;
    };
    referred_deal(&app, "ana@northwind.io", 101, 201, "40000").await;
    let won = T0 + 2 * DAY;
    app.clock.set(won + 1);

    // Processing the win is all that happens: no hold timer runs.
    stage(&app, 1, 201, "closedwon", won).await;

    let rewards = app
        .store
        .rewards_of_deal(Crm::HubSpot, "201")
        .await
        .unwrap();
    assert!(
        rewards
            .iter()
            .all(|r| r.line.status.as_str() == "eligible" && r.payable_at == Some(won + 1)),
        "{rewards:#?}"
    );
    let notes = outbox_of(&app, 201, "create_note").await;
    assert_eq!(notes.len(), 1);
    assert!(payload(&notes[0])["body"]
        .as_str()
        .unwrap()
        .starts_with("Referral reward eligible on deal 201"));
    let props = outbox_of(&app, 201, "update_properties").await;
    assert_eq!(
        payload(props.last().unwrap())["properties"]["referral_reward_status"],
        "eligible"
    );
    let referrer = rewards
        .iter()
        .find(|r| r.line.beneficiary.as_str() == "referrer")
        .unwrap();
    assert_eq!(
        audit_actions(&app, &referrer.id).await,
        ["reward_created", "reward_eligible"]
    );
}

async fn a_percent_reward_is_decided_when_the_deal_amount_arrives_after_the_win(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    app.signup(json!({"id": "evt_p", "type": "partner.joined", "occurred_at": iso(T0 - DAY),
        "data": {"code": "ACME-7", "name": "Acme Partners", "email": "partners@acme.com", "market": "US"}}))
        .await;
    app.signup(json!({"id": "evt_s", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "ana@northwind.io", "referral_code": "ACME-7", "source": "link", "market": "US"}}))
        .await;
    app.hubspot(json!([
        hubspot_event(
            1,
            "contact.propertyChange",
            101,
            T0,
            json!({"propertyName": "email", "propertyValue": "ana@northwind.io"})
        ),
        hubspot_event(
            2,
            "deal.associationChange",
            201,
            T0,
            json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": 201, "toObjectId": 101})
        ),
        deal_property(3, 201, "dealstage", "closedwon", T0 + 10 * DAY),
    ]))
    .await;
    app.process().await;
    let before = app
        .store
        .rewards_of_deal(Crm::HubSpot, "201")
        .await
        .unwrap();
    let referrer = before
        .iter()
        .find(|r| r.line.beneficiary.as_str() == "referrer")
        .unwrap();
    assert_eq!(referrer.line.status.as_str(), "needs_review");
    assert!(referrer
        .line
        .review_reason
        .as_deref()
        .unwrap()
        .contains("deal amount unknown"));

    app.hubspot(json!([
        deal_property(4, 201, "amount", "40000", T0 + 11 * DAY),
        deal_property(5, 201, "deal_currency_code", "USD", T0 + 11 * DAY),
    ]))
    .await;
    app.process().await;

    let after = app
        .store
        .rewards_of_deal(Crm::HubSpot, "201")
        .await
        .unwrap();
    assert_eq!(after.len(), 2, "{after:#?}");
    let referrer_now = after
        .iter()
        .find(|r| r.line.beneficiary.as_str() == "referrer")
        .unwrap();
    // 7.5% of 40,000 × 1.0 (bronze), held from the win.
    assert_eq!(
        (
            referrer_now.line.status.as_str(),
            referrer_now.line.amount.as_str()
        ),
        ("pending", "3000.00")
    );
    assert_eq!(referrer_now.line.hold_until, Some(T0 + 40 * DAY));
    let withdrawn = app
        .store
        .audit_entries("reward", &referrer.id)
        .await
        .unwrap();
    assert_eq!(withdrawn.last().unwrap().record.action, "reward_withdrawn");
    let props = outbox_of(&app, 201, "update_properties").await;
    assert_eq!(
        payload(props.last().unwrap())["properties"]["referral_reward_amount"],
        "3000.00"
    );
}

async fn a_freshly_linked_record_shows_the_first_tier_before_any_success(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };

    referred_deal(&app, "ana@northwind.io", 101, 201, "40000").await;

    // No success yet: the tier the first success would give, never blank.
    for (object_type, id) in [("contact", "101"), ("deal", "201")] {
        let key = RecordKey {
            crm: Crm::HubSpot,
            object_type: object_type.into(),
            object_id: id.into(),
        };
        let context = app
            .store
            .outbox_rows(Some(&key))
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.kind.as_str() == "update_properties")
            .expect("a context write");
        assert_eq!(
            payload(&context)["properties"]["referrer_tier"],
            "bronze",
            "{object_type} {id}"
        );
    }
}

async fn a_stored_signup_ip_that_is_no_ip_stops_the_reward_with_why(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    referred_deal(&app, "ana@northwind.io", 101, 201, "40000").await;
    app.execute_sql(
        "UPDATE referrals SET signup_ip = 'not-an-ip' WHERE email = 'ana@northwind.io'",
    )
    .await;

    stage(&app, 1, 201, "closedwon", T0 + 10 * DAY).await;

    let rewards = app
        .store
        .rewards_of_deal(Crm::HubSpot, "201")
        .await
        .unwrap();
    assert!(
        rewards.is_empty(),
        "no reward decided on a signup IP that cannot be read: {rewards:?}"
    );
    let failing = app.store.failing_rechecks().await.unwrap();
    assert!(
        failing
            .iter()
            .any(|(_, why)| why.contains("signup IP `not-an-ip`")),
        "the recheck waits with the cause: {failing:?}"
    );
}

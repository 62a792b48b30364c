//! Advocacy moments (SPEC §4, §5): product events and renewal wins mark a customer's CRM contact
//! as a good moment to ask for a referral, through the outbox into the CRM sandbox, by the
//! `[moments]` rules; and the funnel shows, per moment kind, the asks a referral followed.

use crm_sandbox::SandboxConfig;
use referral_sync::cli::crm_setup;
use referral_sync::clock::{DAY, HOUR};
use referral_sync::domain::DeliveryStatus;
use referral_sync::reports::funnel::{self, FunnelFilter};
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::crm::{world_with, World};
use crate::support::senders::{deal_property, hubspot_event, iso, APP_SECRET};
use crate::support::{Backend, T0};

both_backends!(
    an_nps_of_9_or_10_marks_the_contact_once_per_cooldown_and_never_a_detractor,
    a_renewal_win_marks_its_contacts_whatever_arrives_first,
    the_funnel_shows_per_moment_kind_the_asks_a_referral_followed,
);

/// A portal where only properties `crm setup` created can be written (so the pick-list checks
/// its options), a Salesforce org with the README's fields, and renewals in pipeline `renewals`.
async fn set_up(backend: Backend) -> Option<World> {
    let sandbox = SandboxConfig {
        strict_properties: true,
        ..SandboxConfig::default()
    };
    let w = world_with(backend, sandbox, |s| {
        s.renewals.hubspot_pipelines = vec!["renewals".into()];
        let stages = [("closedwon", "won"), ("closedlost", "lost")]
            .map(|(id, stage)| (id.to_string(), stage.parse().unwrap()));
        s.hubspot.pipelines.insert("renewals".into(), stages.into());
    })
    .await?;
    // HubSpot only: the sandbox org has the README's Salesforce fields already.
    let mut hubspot = w.app.settings.clone();
    hubspot.salesforce.login_url = String::new();
    let (lines, ok) = crm_setup::run(&hubspot).await;
    assert!(ok, "{lines:#?}");
    assert!(lines
        .iter()
        .any(|l| l.contains("`referral_ask_moment` created")));
    Some(w)
}

async fn contact(w: &World, event_id: u64, id: u64, email: &str) {
    w.app
        .hubspot(json!([hubspot_event(
            event_id,
            "contact.propertyChange",
            id,
            T0 - DAY,
            json!({"propertyName": "email", "propertyValue": email})
        )]))
        .await;
}

async fn product(w: &World, id: &str, event_type: &str, at: i64, data: Value) {
    w.app
        .signup(json!({"id": id, "type": event_type, "occurred_at": iso(at), "data": data}))
        .await;
}

/// Process, deliver, process: moments are decided and their writes reach the CRM.
async fn settle(w: &World) {
    for _ in 0..2 {
        w.app.process().await;
        w.app.deliver().await;
    }
}

/// How many writes of the ask properties reached HubSpot contact `id`.
fn ask_writes(w: &World, id: u64) -> usize {
    w.crm
        .state
        .writes()
        .iter()
        .filter(|write| {
            write.id == id.to_string() && write.properties.contains_key("referral_ask_moment")
        })
        .count()
}

fn asked(w: &World, id: u64) -> (String, String) {
    let contact = w
        .crm
        .state
        .hubspot_object("contacts", &id.to_string())
        .unwrap_or_default();
    let get = |k: &str| contact.get(k).cloned().unwrap_or_default();
    (get("referral_ask_moment"), get("referral_ask_at"))
}

/// Each moment of `email`, in time order: its kind and what was decided.
async fn decisions(w: &World, email: &str) -> Vec<String> {
    w.app
        .store
        .moments_of(email)
        .await
        .unwrap()
        .into_iter()
        .map(|m| match m.reason {
            Some(reason) => format!("{} {}: {reason}", m.kind, m.status),
            None => format!("{} {}", m.kind, m.status),
        })
        .collect()
}

async fn an_nps_of_9_or_10_marks_the_contact_once_per_cooldown_and_never_a_detractor(
    backend: Backend,
) {
    let Some(w) = set_up(backend).await else {
        return;
    };
    // A score out of range is refused, naming the field, and not stored.
    let body = json!({"id": "nps-bad", "type": "nps.submitted", "occurred_at": iso(T0),
        "data": {"email": "ana@customer.us", "score": 11}})
    .to_string();
    let headers = referral_sync::ingest::signature::sign_standard_webhooks(
        APP_SECRET,
        "nps-bad",
        w.app.clock_now() / 1000,
        body.as_bytes(),
    )
    .unwrap();
    let refused = w.app.post_signup_raw("app", &body, headers).await;
    assert_eq!(refused.status(), 422);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        "data.score must be a whole number from 0 to 10"
    );
    assert_eq!(w.app.store.count_inbox(None).await.unwrap(), 0);
    contact(&w, 1, 501, "ana@customer.us").await;
    contact(&w, 2, 502, "bob@customer.us").await;
    contact(&w, 3, 503, "dave@customer.us").await;
    let carol = "003C00000000001AAA";
    w.app
        .salesforce(&[(
            "04lC1",
            "Contact",
            &[("Id", Some(carol)), ("Email", Some("carol@customer.ru"))],
        )])
        .await;
    // Dave refers: one of his referrals is open.
    product(
        &w,
        "join-dave",
        "partner.joined",
        T0 - 10 * DAY,
        json!({"code": "DAVE-1", "kind": "customer", "email": "dave@customer.us", "market": "US"}),
    )
    .await;
    product(
        &w,
        "ref-dave",
        "referral.created",
        T0 - 5 * DAY,
        json!({"email": "zoe@prospect.us", "referral_code": "DAVE-1", "market": "US"}),
    )
    .await;
    settle(&w).await;

    // Ana: NPS 10 marks her contact.
    product(
        &w,
        "nps-1",
        "nps.submitted",
        T0,
        json!({"email": "Ana@Customer.us", "score": 10}),
    )
    .await;
    settle(&w).await;
    assert_eq!(asked(&w, 501), ("nps".into(), T0.to_string()));
    assert_eq!(ask_writes(&w, 501), 1);

    // A second 10 within the 90-day cooldown does not; a 9 after it does.
    product(
        &w,
        "nps-2",
        "nps.submitted",
        T0 + 30 * DAY,
        json!({"email": "ana@customer.us", "score": 10}),
    )
    .await;
    settle(&w).await;
    assert_eq!(ask_writes(&w, 501), 1, "within the cooldown");
    product(
        &w,
        "nps-3",
        "nps.submitted",
        T0 + 91 * DAY,
        json!({"email": "ana@customer.us", "score": 9}),
    )
    .await;
    settle(&w).await;
    assert_eq!(asked(&w, 501), ("nps".into(), (T0 + 91 * DAY).to_string()));
    assert_eq!(ask_writes(&w, 501), 2);
    assert_eq!(
        decisions(&w, "ana@customer.us").await,
        [
            "nps asked",
            "nps skipped: asked within [moments] cooldown_days (90)",
            "nps asked",
        ]
    );

    // Bob: an NPS 6 does not mark him, nor does finishing onboarding afterwards; a later 9 does.
    product(
        &w,
        "nps-4",
        "nps.submitted",
        T0,
        json!({"email": "bob@customer.us", "score": 6}),
    )
    .await;
    product(
        &w,
        "onb-1",
        "onboarding.completed",
        T0 + DAY,
        json!({"email": "bob@customer.us"}),
    )
    .await;
    settle(&w).await;
    assert_eq!(ask_writes(&w, 502), 0);
    product(
        &w,
        "nps-5",
        "nps.submitted",
        T0 + 2 * DAY,
        json!({"email": "bob@customer.us", "score": 9}),
    )
    .await;
    settle(&w).await;
    assert_eq!(asked(&w, 502), ("nps".into(), (T0 + 2 * DAY).to_string()));
    assert_eq!(
        decisions(&w, "bob@customer.us").await,
        [
            "nps skipped: NPS 6 is below [moments] nps_min (9)",
            "onboarding skipped: the latest NPS score (6) is 6 or less",
            "nps asked",
        ]
    );

    // Carol (Salesforce Contact) finished onboarding: her Contact is marked.
    product(
        &w,
        "onb-2",
        "onboarding.completed",
        T0 + 3 * HOUR,
        json!({"email": "carol@customer.ru"}),
    )
    .await;
    // Dave has an open referral; Eve is in no CRM.
    product(
        &w,
        "use-1",
        "usage.milestone",
        T0,
        json!({"email": "dave@customer.us", "milestone": "100 invoices"}),
    )
    .await;
    product(
        &w,
        "nps-6",
        "nps.submitted",
        T0,
        json!({"email": "eve@nowhere.us", "score": 10}),
    )
    .await;
    settle(&w).await;
    let c = w.crm.state.salesforce_record("Contact", carol).unwrap();
    assert_eq!(
        (
            c["Referral_Ask_Moment__c"].as_str(),
            c["Referral_Ask_At__c"].as_str()
        ),
        ("onboarding", iso(T0 + 3 * HOUR).as_str())
    );
    assert_eq!(ask_writes(&w, 503), 0);
    assert_eq!(
        decisions(&w, "dave@customer.us").await,
        ["usage skipped: a referrer with an open referral"]
    );
    assert_eq!(
        decisions(&w, "eve@nowhere.us").await,
        ["nps skipped: no HubSpot contact or Salesforce Contact has this email"]
    );
    let rows = w.app.store.outbox_rows(None).await.unwrap();
    assert!(
        rows.iter().all(|r| r.status != DeliveryStatus::Dead),
        "{rows:#?}"
    );
}

async fn a_renewal_win_marks_its_contacts_whatever_arrives_first(backend: Backend) {
    let Some(w) = set_up(backend).await else {
        return;
    };
    contact(&w, 1, 601, "frank@customer.us").await;
    contact(&w, 2, 602, "gina@customer.us").await;
    let won = T0 + 5 * DAY;
    // Frank's renewal is won before HubSpot says it is his; Gina's new deal is won, no renewal.
    w.app
        .hubspot(json!([
            deal_property(10, 701, "pipeline", "renewals", T0),
            deal_property(11, 701, "dealstage", "closedwon", won),
            deal_property(12, 702, "pipeline", "default", T0),
            hubspot_event(13, "deal.associationChange", 702, T0,
                json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": 702, "toObjectId": 602})),
            deal_property(14, 702, "dealstage", "closedwon", won),
        ]))
        .await;
    settle(&w).await;
    assert_eq!(ask_writes(&w, 601), 0, "no one to mark yet");
    w.app
        .hubspot(json!([hubspot_event(
            15,
            "deal.associationChange",
            701,
            T0 + 6 * DAY,
            json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": 701, "toObjectId": 601})
        )]))
        .await;
    settle(&w).await;

    assert_eq!(asked(&w, 601), ("renewal".into(), won.to_string()));
    assert_eq!(decisions(&w, "frank@customer.us").await, ["renewal asked"]);
    assert_eq!(ask_writes(&w, 602), 0);
    assert!(decisions(&w, "gina@customer.us").await.is_empty());
    // The same win seen again (a snapshot, a replay) is the same moment.
    w.app
        .hubspot(json!([hubspot_event(
            16,
            "deal.associationChange",
            701,
            T0 + 7 * DAY,
            json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": 701, "toObjectId": 601})
        )]))
        .await;
    settle(&w).await;
    assert_eq!(decisions(&w, "frank@customer.us").await, ["renewal asked"]);
    assert_eq!(ask_writes(&w, 601), 1);
}

async fn the_funnel_shows_per_moment_kind_the_asks_a_referral_followed(backend: Backend) {
    let Some(w) = set_up(backend).await else {
        return;
    };
    contact(&w, 1, 501, "ana@customer.us").await;
    contact(&w, 2, 502, "bob@customer.us").await;
    contact(&w, 3, 503, "cid@customer.us").await;
    product(
        &w,
        "nps-a",
        "nps.submitted",
        T0,
        json!({"email": "ana@customer.us", "score": 10}),
    )
    .await;
    product(
        &w,
        "onb-b",
        "onboarding.completed",
        T0,
        json!({"email": "bob@customer.us"}),
    )
    .await;
    product(
        &w,
        "onb-c",
        "onboarding.completed",
        T0,
        json!({"email": "cid@customer.us"}),
    )
    .await;
    settle(&w).await;
    // Ana joins and refers within 30 days of her ask; Cid only after 40 days; Bob never.
    for (who, code, at) in [
        ("ana", "ANA-1", T0 + 10 * DAY),
        ("cid", "CID-1", T0 + 40 * DAY),
    ] {
        product(
            &w,
            &format!("join-{who}"),
            "partner.joined",
            at - DAY,
            json!({"code": code, "kind": "customer", "email": format!("{who}@customer.us")}),
        )
        .await;
        product(
            &w,
            &format!("ref-{who}"),
            "referral.created",
            at,
            json!({"email": format!("friend-of-{who}@prospect.us"), "referral_code": code}),
        )
        .await;
    }
    settle(&w).await;

    let report = funnel::report(&w.app.store, &FunnelFilter::default())
        .await
        .unwrap();
    let later = funnel::report(
        &w.app.store,
        &FunnelFilter {
            from: Some(T0 + DAY),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let rows: Vec<(String, u64, u64, Option<String>)> = report
        .asks
        .iter()
        .map(|a| {
            (
                a.moment.clone(),
                a.asks,
                a.led_to_referral,
                a.referral_rate.map(|r| r.to_string()),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("nps".into(), 1, 1, Some("1.0000".into())),
            ("onboarding".into(), 2, 0, Some("0.0000".into())),
            ("usage".into(), 0, 0, None),
            ("renewal".into(), 0, 0, None),
        ]
    );
    assert!(
        later.asks.iter().all(|a| a.asks == 0),
        "asks of the period only"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["asks"][0]["moment"], "nps");
    assert!(funnel::to_table(&report).contains("Ask moment"));
}

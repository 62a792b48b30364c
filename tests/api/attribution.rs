//! The attribution ledger end to end (SPEC §2 steps 1–4, §4): signup → contact → deal → stages →
//! an overwrite that gets restored → a later competing claim; for HubSpot and for Salesforce, on
//! both backends.

use std::sync::Arc;

use referral_sync::attribution::{override_attribution, AttributionChange, OverrideError};
use referral_sync::clock::{DAY, MINUTE};
use referral_sync::domain::Crm;
use referral_sync::store::{OutboxRow, RecordKey};
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::senders::{configure, hubspot_event, iso};
use crate::support::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

both_backends!(
    hubspot_story_keeps_the_first_touch_from_signup_to_closed_won,
    salesforce_story_keeps_the_first_touch_from_signup_to_closed_won,
    an_unmapped_stage_is_parked_and_replayed_after_the_mapping_is_added,
    a_deal_with_several_contacts_takes_the_earliest_first_touch,
    merged_contacts_keep_the_earliest_first_touch,
    product_events_without_a_referral_are_ignored_not_failed,
    an_admin_override_changes_the_attribution_everywhere_and_is_audited,
);

async fn app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, SpawnOptions::default(), configure).await
}

fn key(crm: &str, object_type: &str, id: &str) -> RecordKey {
    RecordKey {
        crm: crm.parse().unwrap(),
        object_type: object_type.into(),
        object_id: id.into(),
    }
}

fn props(row: &OutboxRow) -> Value {
    serde_json::from_str::<Value>(&row.payload).unwrap()["properties"].clone()
}

fn writes(rows: &[OutboxRow], kind: &str) -> Vec<OutboxRow> {
    rows.iter()
        .filter(|r| r.kind.as_str() == kind)
        .cloned()
        .collect()
}

async fn partner_joins(app: &TestApp) {
    app.signup(json!({"id": "evt_partner", "type": "partner.joined", "occurred_at": iso(T0 - 30 * DAY),
        "data": {"code": "ACME-7", "name": "Acme Partners", "email": "partners@acme.com", "company_domain": "acme.com",
                 "market": "US", "kind": "partner"}}))
        .await;
}

async fn signup(app: &TestApp, id: &str, email: &str, code: &str, source: &str, at: i64) {
    app.signup(json!({"id": id, "type": "signup.created", "occurred_at": iso(at),
        "data": {"email": email, "name": "Ana", "company": "Northwind", "referral_code": code, "source": source,
                 "market": "US", "utm": {"source": "partner"}, "ip": "203.0.113.7"}}))
        .await;
}

fn stage(event_id: u64, deal: u64, stage: &str, at: i64) -> Value {
    hubspot_event(
        event_id,
        "deal.propertyChange",
        deal,
        at,
        json!({"propertyName": "dealstage", "propertyValue": stage, "changeSource": "CRM_UI"}),
    )
}

async fn hubspot_story_keeps_the_first_touch_from_signup_to_closed_won(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let t = T0;
    // 1–2. The partner joins; a prospect signs up with the partner's code.
    partner_joins(&app).await;
    signup(
        &app,
        "evt_signup",
        " Ana@Northwind.io ",
        "ACME-7",
        "link",
        t,
    )
    .await;
    // 3. HubSpot: contact created, its email set; a deal created and associated.
    app.hubspot(json!([
        hubspot_event(1, "contact.creation", 101, t + MINUTE, json!({})),
        hubspot_event(
            2,
            "contact.propertyChange",
            101,
            t + MINUTE,
            json!({"propertyName": "email", "propertyValue": "ana@northwind.io"})
        ),
        hubspot_event(3, "deal.creation", 201, t + 2 * MINUTE, json!({})),
        hubspot_event(
            4,
            "deal.associationChange",
            201,
            t + 2 * MINUTE,
            json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": 201, "toObjectId": 101})
        ),
    ]))
    .await;
    app.process().await;
    // 4. Stages over months; negotiation arrives before proposal, and one event twice.
    let d = 30 * DAY;
    app.hubspot(json!([
        stage(10, 201, "qualifiedtobuy", t + d),
        stage(11, 201, "presentationscheduled", t + 2 * d)
    ]))
    .await;
    app.hubspot(json!([stage(13, 201, "contractsent", t + 4 * d)]))
        .await;
    app.process().await;
    app.hubspot(json!([stage(12, 201, "decisionmakerboughtin", t + 3 * d)]))
        .await;
    app.hubspot(json!([stage(13, 201, "contractsent", t + 4 * d)]))
        .await;
    app.hubspot(json!([stage(14, 201, "closedwon", t + 5 * d)]))
        .await;
    app.process().await;
    // A rep overwrites the referral source; then our restore echoes back.
    app.hubspot(json!([hubspot_event(20, "contact.propertyChange", 101, t + 5 * d + 1, json!({"propertyName": "referral_source", "propertyValue": "trade show", "changeSource": "CRM_UI"}))])).await;
    app.process().await;
    app.hubspot(json!([hubspot_event(21, "contact.propertyChange", 101, t + 5 * d + 2, json!({"propertyName": "referral_source", "propertyValue": "link", "changeSource": "INTEGRATION"}))])).await;
    // A second, later claim for the same person.
    app.signup(
        json!({"id": "evt_late", "type": "referral.created", "occurred_at": iso(t + 6 * d),
        "data": {"email": "ana@northwind.io", "referral_code": "OTHER-1", "source": "intro"}}),
    )
    .await;
    app.process().await;

    // The first touch never changed.
    let referral = app
        .store
        .referral_by_email("ana@northwind.io")
        .await
        .unwrap()
        .expect("referral");
    assert_eq!(
        (
            referral.attribution().referrer_code.as_deref(),
            referral.attribution().source.as_deref(),
            referral.attribution().market.as_deref()
        ),
        (Some("ACME-7"), Some("link"), Some("US"))
    );
    assert_eq!(referral.attribution().first_touch_at, t);
    assert_eq!(referral.won_at, Some(t + 5 * d));
    assert_eq!(referral.qualified_at, Some(t + d));
    // The deal carries a frozen copy and the right current stage.
    let deal = app
        .store
        .crm_record(&key("hubspot", "deal", "201"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deal.referral_id.as_deref(), Some(referral.id()));
    assert_eq!(
        (
            deal.referrer_code.as_deref(),
            deal.source.as_deref(),
            deal.first_touch_at
        ),
        (Some("ACME-7"), Some("link"), Some(t))
    );
    assert_eq!(deal.stage.as_deref(), Some("won"));
    // The stage history is complete, in CRM time order, with the duplicate stored once.
    let history: Vec<String> = app
        .store
        .stage_history(Crm::HubSpot, "201")
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.stage.unwrap())
        .collect();
    assert_eq!(
        history,
        ["qualified", "demo", "proposal", "negotiation", "won"]
    );
    // Exactly one restore, audited; the echo restored nothing.
    let contact_writes = writes(
        &app.store
            .outbox_rows(Some(&key("hubspot", "contact", "101")))
            .await
            .unwrap(),
        "update_properties",
    );
    assert_eq!(
        contact_writes.len(),
        2,
        "context + one restore: {contact_writes:#?}"
    );
    let context = props(&contact_writes[0]);
    assert_eq!(context["referral_source"], "link");
    assert_eq!(context["referral_code"], "ACME-7");
    assert_eq!(context["referred_by"], "Acme Partners");
    assert_eq!(context["referral_market"], "US");
    assert_eq!(context["referral_first_touch_at"], t.to_string());
    assert_eq!(
        props(&contact_writes[1]),
        json!({"referral_source": "link"})
    );
    let audit = app
        .store
        .audit_entries("crm_record", "hubspot:contact:101")
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].record.action.as_str(),
            audit[0].record.old_value.as_deref(),
            audit[0].record.new_value.as_deref()
        ),
        ("tamper_restored", Some("trade show"), Some("link"))
    );
    assert_eq!(audit[0].record.actor, "crm:CRM_UI");
    let deal_writes = writes(
        &app.store
            .outbox_rows(Some(&key("hubspot", "deal", "201")))
            .await
            .unwrap(),
        "update_properties",
    );
    assert_eq!(deal_writes.len(), 1, "the deal's context");
    assert_eq!(props(&deal_writes[0])["referral_code"], "ACME-7");
    // HubSpot said only "created": the records are read back through the API.
    let reads = writes(&app.store.outbox_rows(None).await.unwrap(), "read_record");
    assert_eq!(
        reads
            .iter()
            .map(|r| (r.object_type.as_str(), r.object_id.as_str()))
            .collect::<Vec<_>>(),
        [("contact", "101"), ("deal", "201")]
    );
    // The late claim is kept as a touch, not applied.
    let touches = app.store.touches(referral.id()).await.unwrap();
    assert_eq!(
        touches
            .iter()
            .map(|t| t.touch.outcome.as_str())
            .collect::<Vec<_>>(),
        ["first_touch", "kept_original"]
    );
    assert_eq!(touches[1].touch.referrer_code.as_deref(), Some("OTHER-1"));
    // Every event was processed (none failed).
    let statuses: Vec<&str> = app
        .store
        .list_inbox(None, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.status.as_str())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|s| match s {
            "processed" => "processed",
            other => other,
        })
        .collect();
    assert!(statuses.iter().all(|s| *s == "processed"), "{statuses:?}");
}

type Fields<'a> = &'a [(&'a str, Option<&'a str>)];

async fn salesforce_story_keeps_the_first_touch_from_signup_to_closed_won(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    partner_joins(&app).await;
    signup(&app, "evt_signup", "bo@contoso.com", "ACME-7", "intro", T0).await;
    let contact: Fields = &[
        ("Id", Some("0037F00000AbcdeQAA")),
        ("Email", Some("Bo@Contoso.com")),
        ("AccountId", Some("0017F00000AbcdeQAA")),
    ];
    app.salesforce(&[("04l000000000001AAA", "Contact", contact)])
        .await;
    let opp = |stage: &'static str,
               at: &'static str,
               won: &'static str,
               source: Option<&'static str>|
     -> Vec<(&'static str, Option<&'static str>)> {
        let mut f = vec![
            ("Id", Some("0067F00000AbcdeQAA")),
            ("ContactId", Some("0037F00000AbcdeQAA")),
            ("StageName", Some(stage)),
            ("IsWon", Some(won)),
            ("IsClosed", Some(won)),
            ("Amount", Some("120000.0")),
            ("CurrencyIsoCode", Some("USD")),
            ("SystemModstamp", Some(at)),
        ];
        f.push(("Referral_Source__c", source));
        f
    };
    let o1 = opp("Prospecting", "2026-11-21T10:00:00.000Z", "false", None);
    app.salesforce(&[("04l000000000002AAA", "Opportunity", &o1)])
        .await;
    app.process().await;
    let o2 = opp(
        "Qualification",
        "2026-12-20T10:00:00.000Z",
        "false",
        Some("intro"),
    );
    let o4 = opp(
        "Negotiation/Review",
        "2027-02-20T10:00:00.000Z",
        "false",
        Some("intro"),
    );
    let o3 = opp(
        "Proposal/Price Quote",
        "2027-01-20T10:00:00.000Z",
        "false",
        Some("intro"),
    );
    let o5 = opp(
        "Closed Won",
        "2027-03-20T10:00:00.000Z",
        "true",
        Some("intro"),
    );
    app.salesforce(&[("04l000000000003AAA", "Opportunity", &o2)])
        .await;
    app.salesforce(&[("04l000000000005AAA", "Opportunity", &o4)])
        .await;
    app.process().await;
    app.salesforce(&[("04l000000000004AAA", "Opportunity", &o3)])
        .await;
    app.salesforce(&[("04l000000000005AAA", "Opportunity", &o4)])
        .await; // redelivered
    app.salesforce(&[("04l000000000006AAA", "Opportunity", &o5)])
        .await;
    app.process().await;
    // A rep types another source on the Opportunity; later our restore shows up.
    let tampered = opp(
        "Closed Won",
        "2027-03-21T10:00:00.000Z",
        "true",
        Some("Trade Show"),
    );
    app.salesforce(&[("04l000000000007AAA", "Opportunity", &tampered)])
        .await;
    app.process().await;
    let echoed = opp(
        "Closed Won",
        "2027-03-21T10:05:00.000Z",
        "true",
        Some("intro"),
    );
    app.salesforce(&[("04l000000000008AAA", "Opportunity", &echoed)])
        .await;
    app.signup(
        json!({"id": "evt_late", "type": "signup.created", "occurred_at": iso(T0 + 200 * DAY),
        "data": {"email": "bo@contoso.com", "referral_code": "OTHER-1", "source": "code"}}),
    )
    .await;
    app.process().await;

    let referral = app
        .store
        .referral_by_email("bo@contoso.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            referral.attribution().referrer_code.as_deref(),
            referral.attribution().source.as_deref(),
            referral.attribution().first_touch_at
        ),
        (Some("ACME-7"), Some("intro"), T0)
    );
    let deal = app
        .store
        .crm_record(&key("salesforce", "Opportunity", "0067F00000AbcdeQAA"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            deal.referrer_code.as_deref(),
            deal.source.as_deref(),
            deal.first_touch_at
        ),
        (Some("ACME-7"), Some("intro"), Some(T0))
    );
    assert_eq!(
        (
            deal.stage.as_deref(),
            deal.amount.as_deref(),
            deal.currency.as_deref()
        ),
        (Some("won"), Some("120000.0"), Some("USD"))
    );
    let history: Vec<String> = app
        .store
        .stage_history(Crm::Salesforce, "0067F00000AbcdeQAA")
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.stage.unwrap())
        .collect();
    assert_eq!(
        history,
        ["lead", "qualified", "proposal", "negotiation", "won"]
    );
    let contact_writes = writes(
        &app.store
            .outbox_rows(Some(&key("salesforce", "Contact", "0037F00000AbcdeQAA")))
            .await
            .unwrap(),
        "update_properties",
    );
    assert_eq!(contact_writes.len(), 1);
    let context = props(&contact_writes[0]);
    assert_eq!(context["Referral_Source__c"], "intro");
    assert_eq!(context["Referral_Code__c"], "ACME-7");
    assert_eq!(context["Referred_By__c"], "Acme Partners");
    assert_eq!(context["Referral_First_Touch__c"], iso(T0));
    let deal_writes = writes(
        &app.store.outbox_rows(Some(&deal.key())).await.unwrap(),
        "update_properties",
    );
    assert_eq!(
        deal_writes.len(),
        2,
        "context + exactly one restore: {deal_writes:#?}"
    );
    assert_eq!(
        props(&deal_writes[1]),
        json!({"Referral_Source__c": "intro"})
    );
    let audit = app
        .store
        .audit_entries("crm_record", "salesforce:Opportunity:0067F00000AbcdeQAA")
        .await
        .unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|a| a.record.action.as_str())
            .collect::<Vec<_>>(),
        ["tamper_restored"]
    );
    let touches = app.store.touches(referral.id()).await.unwrap();
    assert_eq!(
        touches
            .iter()
            .map(|t| (
                t.touch.outcome.as_str(),
                t.touch.referrer_code.as_deref().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("first_touch", "ACME-7"), ("kept_original", "OTHER-1")]
    );
}

async fn an_unmapped_stage_is_parked_and_replayed_after_the_mapping_is_added(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    signup(&app, "evt_s", "cy@fabrikam.com", "ACME-7", "code", T0).await;
    let fields: Fields = &[
        ("Id", Some("0067F00000ZzzzzQAA")),
        ("StageName", Some("Id. Decision Makers")),
        ("IsWon", Some("false")),
        ("IsClosed", Some("false")),
        ("SystemModstamp", Some("2026-11-22T10:00:00.000Z")),
    ];
    app.salesforce(&[("04l00000000000AAAA", "Opportunity", fields)])
        .await;
    app.hubspot(json!([stage(40, 777, "3482933986", T0 + DAY)]))
        .await;
    app.process().await;
    let parked = app.store.list_inbox(None, 10).await.unwrap();
    let unmapped: Vec<_> = parked
        .iter()
        .filter(|e| e.status.as_str() == "unmapped")
        .collect();
    assert_eq!(unmapped.len(), 2, "{parked:#?}");
    assert!(unmapped.iter().any(|e| e
        .status_reason
        .as_deref()
        .unwrap()
        .contains("salesforce.stages")));
    assert!(unmapped
        .iter()
        .any(|e| e.status_reason.as_deref().unwrap().contains("3482933986")));
    let deal = key("salesforce", "Opportunity", "0067F00000ZzzzzQAA");
    assert_eq!(
        app.store.crm_record(&deal).await.unwrap().unwrap().stage,
        None
    );

    // The operator adds the mappings (a restart with the fixed config), then replays.
    let mut fixed = app.settings.clone();
    fixed
        .salesforce
        .stages
        .insert("Id. Decision Makers".into(), "demo".parse().unwrap());
    fixed.hubspot.pipelines.insert(
        "enterprise".into(),
        [("3482933986".to_string(), "proposal".parse().unwrap())].into(),
    );
    let requeued = app.store.requeue_inbox().await.unwrap();
    let processor = referral_sync::processing::InboxProcessor::new(
        app.store.clone(),
        Arc::new(fixed),
        app.clock.clone(),
        Default::default(),
    );
    processor.drain().await.unwrap();

    assert_eq!(requeued, 2);
    let after = app.store.list_inbox(None, 10).await.unwrap();
    assert!(
        after.iter().all(|e| e.status.as_str() == "processed"),
        "{after:#?}"
    );
    assert_eq!(
        app.store
            .crm_record(&deal)
            .await
            .unwrap()
            .unwrap()
            .stage
            .as_deref(),
        Some("demo")
    );
    let history = app
        .store
        .stage_history(Crm::Salesforce, "0067F00000ZzzzzQAA")
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "the parked row is mapped, not duplicated");
    assert_eq!(history[0].stage.as_deref(), Some("demo"));
    assert_eq!(
        app.store
            .crm_record(&key("hubspot", "deal", "777"))
            .await
            .unwrap()
            .unwrap()
            .stage
            .as_deref(),
        Some("proposal")
    );
}

async fn a_deal_with_several_contacts_takes_the_earliest_first_touch(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    signup(&app, "evt_late", "late@northwind.io", "LATE-1", "link", T0).await;
    signup(
        &app,
        "evt_early",
        "early@northwind.io",
        "EARLY-1",
        "code",
        T0 - 10 * DAY,
    )
    .await;
    app.hubspot(json!([
        hubspot_event(
            1,
            "contact.propertyChange",
            1,
            T0,
            json!({"propertyName": "email", "propertyValue": "late@northwind.io"})
        ),
        hubspot_event(
            2,
            "contact.propertyChange",
            2,
            T0,
            json!({"propertyName": "email", "propertyValue": "early@northwind.io"})
        ),
        hubspot_event(
            3,
            "contact.associationChange",
            1,
            T0,
            json!({"associationType": "CONTACT_TO_DEAL", "fromObjectId": 1, "toObjectId": 9})
        ),
    ]))
    .await;
    app.process().await;
    let deal = key("hubspot", "deal", "9");
    assert_eq!(
        app.store
            .crm_record(&deal)
            .await
            .unwrap()
            .unwrap()
            .referrer_code
            .as_deref(),
        Some("LATE-1")
    );

    app.hubspot(json!([hubspot_event(
        4,
        "contact.associationChange",
        2,
        T0 + 1,
        json!({"associationType": "CONTACT_TO_DEAL", "fromObjectId": 2, "toObjectId": 9})
    )]))
    .await;
    app.process().await;

    let linked = app.store.crm_record(&deal).await.unwrap().unwrap();
    assert_eq!(
        (linked.referrer_code.as_deref(), linked.first_touch_at),
        (Some("EARLY-1"), Some(T0 - 10 * DAY))
    );
    let audit = app
        .store
        .audit_entries("crm_record", "hubspot:deal:9")
        .await
        .unwrap();
    assert_eq!(audit[0].record.action, "deal_relinked");
}

async fn merged_contacts_keep_the_earliest_first_touch(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    signup(&app, "evt_a", "a@northwind.io", "NEW-1", "link", T0).await;
    signup(
        &app,
        "evt_b",
        "b@northwind.io",
        "OLD-1",
        "code",
        T0 - 5 * DAY,
    )
    .await;
    app.hubspot(json!([
        hubspot_event(
            1,
            "contact.propertyChange",
            11,
            T0,
            json!({"propertyName": "email", "propertyValue": "a@northwind.io"})
        ),
        hubspot_event(
            2,
            "contact.propertyChange",
            12,
            T0,
            json!({"propertyName": "email", "propertyValue": "b@northwind.io"})
        ),
    ]))
    .await;
    app.process().await;

    app.hubspot(json!([hubspot_event(
        3,
        "contact.merge",
        11,
        T0 + DAY,
        json!({"primaryObjectId": 11, "mergedObjectIds": [12]})
    )]))
    .await;
    app.process().await;

    let primary = app
        .store
        .crm_record(&key("hubspot", "contact", "11"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (primary.referrer_code.as_deref(), primary.first_touch_at),
        (Some("OLD-1"), Some(T0 - 5 * DAY))
    );
    let merged = app
        .store
        .crm_record(&key("hubspot", "contact", "12"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(merged.merged_into.as_deref(), Some("11"));
    let writes = writes(
        &app.store.outbox_rows(Some(&primary.key())).await.unwrap(),
        "update_properties",
    );
    assert_eq!(
        props(writes.last().unwrap())["referral_code"],
        "OLD-1",
        "the CRM is told"
    );
}

async fn product_events_without_a_referral_are_ignored_not_failed(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    app.signup(json!({"id": "e1", "type": "signup.created", "occurred_at": iso(T0), "data": {"email": "nobody@x.io"}})).await;
    app.signup(json!({"id": "e2", "type": "signup.activated", "occurred_at": iso(T0), "data": {"email": "nobody@x.io"}})).await;
    app.signup(json!({"id": "e3", "type": "partner.renamed", "occurred_at": iso(T0), "data": {}}))
        .await;
    signup(&app, "e4", "real@x.io", "ACME-7", "link", T0).await;
    app.signup(json!({"id": "e5", "type": "signup.activated", "occurred_at": iso(T0 + DAY), "data": {"email": "REAL@x.io"}})).await;

    app.process().await;

    let statuses: Vec<(String, String)> = app
        .store
        .list_inbox(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event.dedupe_key, e.status.as_str().to_string()))
        .collect();
    assert_eq!(
        statuses.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["ignored", "ignored", "ignored", "processed", "processed"]
    );
    assert_eq!(
        app.store
            .referral_by_email("real@x.io")
            .await
            .unwrap()
            .unwrap()
            .activated_at,
        Some(T0 + DAY)
    );
    assert!(app
        .store
        .referral_by_email("nobody@x.io")
        .await
        .unwrap()
        .is_none());
}

async fn an_admin_override_changes_the_attribution_everywhere_and_is_audited(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    signup(&app, "evt_s", "dee@northwind.io", "WRONG-1", "link", T0).await;
    app.hubspot(json!([
        hubspot_event(
            1,
            "contact.propertyChange",
            31,
            T0,
            json!({"propertyName": "email", "propertyValue": "dee@northwind.io"})
        ),
        hubspot_event(
            2,
            "contact.associationChange",
            31,
            T0,
            json!({"associationType": "CONTACT_TO_DEAL", "fromObjectId": 31, "toObjectId": 41})
        ),
    ]))
    .await;
    app.process().await;
    let referral = app
        .store
        .referral_by_email("dee@northwind.io")
        .await
        .unwrap()
        .unwrap();
    let change = AttributionChange {
        referrer_code: Some("ACME-7".into()),
        source: Some("intro".into()),
        market: None,
    };

    let refused = override_attribution(
        &app.store,
        &app.settings,
        referral.id(),
        &change,
        "ops@acme.com",
        " ",
        T0 + DAY,
    )
    .await;
    let bad_source = override_attribution(
        &app.store,
        &app.settings,
        referral.id(),
        &AttributionChange {
            source: Some("tv".into()),
            ..Default::default()
        },
        "ops@acme.com",
        "typo",
        T0 + DAY,
    )
    .await;
    let after = override_attribution(
        &app.store,
        &app.settings,
        referral.id(),
        &change,
        "ops@acme.com",
        "partner proved the intro",
        T0 + DAY,
    )
    .await
    .unwrap();

    assert!(matches!(refused, Err(OverrideError::Invalid(m)) if m.contains("reason")));
    assert!(matches!(bad_source, Err(OverrideError::Invalid(m)) if m.contains("source")));
    assert_eq!(
        (
            after.attribution().referrer_code.as_deref(),
            after.attribution().source.as_deref(),
            after.attribution().first_touch_at
        ),
        (Some("ACME-7"), Some("intro"), T0)
    );
    let audit = app
        .store
        .audit_entries("referral", referral.id())
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].record.actor.as_str(),
            audit[0].record.action.as_str(),
            audit[0].record.reason.as_deref()
        ),
        (
            "ops@acme.com",
            "attribution_override",
            Some("partner proved the intro")
        )
    );
    assert!(audit[0]
        .record
        .old_value
        .as_deref()
        .unwrap()
        .contains("WRONG-1"));
    assert!(audit[0]
        .record
        .new_value
        .as_deref()
        .unwrap()
        .contains("ACME-7"));
    for record in [
        key("hubspot", "contact", "31"),
        key("hubspot", "deal", "41"),
    ] {
        assert_eq!(
            app.store
                .crm_record(&record)
                .await
                .unwrap()
                .unwrap()
                .referrer_code
                .as_deref(),
            Some("ACME-7")
        );
        let rows = writes(
            &app.store.outbox_rows(Some(&record)).await.unwrap(),
            "update_properties",
        );
        assert_eq!(
            props(rows.last().unwrap())["referral_code"],
            "ACME-7",
            "the CRM is told"
        );
    }
    let touches = app.store.touches(referral.id()).await.unwrap();
    assert_eq!(touches.last().unwrap().touch.outcome, "override");
    // A later tamper check guards the new value, not the old one.
    app.hubspot(json!([hubspot_event(
        3,
        "contact.propertyChange",
        31,
        T0 + 2 * DAY,
        json!({"propertyName": "referral_source", "propertyValue": "intro"})
    )]))
    .await;
    app.process().await;
    assert_eq!(
        app.store
            .audit_entries("crm_record", "hubspot:contact:31")
            .await
            .unwrap()
            .len(),
        0
    );
}

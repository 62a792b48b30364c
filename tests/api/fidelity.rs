//! What a real HubSpot and Salesforce would do with what the service sends and receives, played
//! against the in-repo sandbox, which enforces the vendors' rules: Salesforce's ten-chunk limit
//! and field types, HubSpot's enumeration options, merged HubSpot ids answering with the record
//! they were merged into.

use referral_sync::cli::crm_setup;
use referral_sync::clock::{DAY, SECOND};
use referral_sync::config::{Secret, Settings, TierSettings};
use referral_sync::crm::http_client;
use referral_sync::crm::salesforce::SalesforceClient;
use referral_sync::domain::reward::RewardStatus;
use referral_sync::rewards::engine::release_holds;
use referral_sync::sandbox::SandboxConfig;
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::crm::{world, world_with};
use crate::support::senders::{deal_property, hubspot_event, iso};
use crate::support::{Backend, T0};

both_backends!(
    a_salesforce_round_over_contacts_and_opportunities_sends_each_type_as_one_chunk,
    salesforce_numbers_go_out_as_exact_json_numbers_and_empty_values_as_null,
    a_salesforce_api_version_written_without_the_v_reaches_the_api,
    partner_events_accept_referral_code_as_their_code,
    crm_setup_makes_hubspot_reward_status_and_tier_pick_lists_and_keeps_their_options_current,
    crm_setup_checks_salesforce_field_types_and_pick_list_values,
    a_reward_in_review_without_an_amount_shows_its_status_and_no_amount,
    the_referee_side_of_a_two_sided_reward_shows_on_their_contact_and_in_the_deal_note,
);

/// Salesforce record ids of the n-th test record: 18 characters, type prefix first.
fn sf_id(prefix: &str, n: usize) -> String {
    format!("{prefix}7F00000{n:05}QAA")
}

async fn a_salesforce_round_over_contacts_and_opportunities_sends_each_type_as_one_chunk(
    backend: Backend,
) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    // Twelve referred people, each with an opportunity: their writes are queued contact,
    // opportunity, contact, … — 24 type chunks if sent in that order.
    for n in 0..12 {
        let email = format!("p{n}@initech.ru");
        w.app
            .signup(json!({"id": format!("evt_chunk_{n}"), "type": "signup.created", "occurred_at": iso(T0),
                "data": {"email": email, "referral_code": "IVAN-1", "source": "code", "market": "RU"}}))
            .await;
        let (contact, opp) = (sf_id("003", n), sf_id("006", n));
        let contact_fields: &[(&str, Option<&str>)] =
            &[("Id", Some(&contact)), ("Email", Some(&email))];
        let opp_fields: &[(&str, Option<&str>)] = &[
            ("Id", Some(&opp)),
            ("ContactId", Some(&contact)),
            ("StageName", Some("Qualification")),
        ];
        let (n1, n2) = (sf_id("04l", 2 * n), sf_id("04l", 2 * n + 1));
        w.app
            .salesforce(&[
                (&n1, "Contact", contact_fields),
                (&n2, "Opportunity", opp_fields),
            ])
            .await;
        w.app.process().await;
    }

    w.app.deliver().await;

    let collections: Vec<_> = w
        .crm
        .state
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/composite/sobjects"))
        .collect();
    assert_eq!(collections.len(), 1, "one call for the round");
    assert_eq!(collections[0].status, 200, "not refused for its chunks");
    let writes = w.crm.state.writes();
    assert_eq!(writes.len(), 24);
    let types: Vec<&str> = writes.iter().map(|w| w.object_type.as_str()).collect();
    let changes = types.windows(2).filter(|p| p[0] != p[1]).count();
    assert_eq!(changes, 1, "grouped by type: {types:?}");
    let (pending, _) = w.app.store.outbox_backlog(T0).await.unwrap();
    assert_eq!(pending, 0);
}

async fn salesforce_numbers_go_out_as_exact_json_numbers_and_empty_values_as_null(
    backend: Backend,
) {
    let sandbox = SandboxConfig::default();
    let Some(w) = world(backend, sandbox.clone()).await else {
        return;
    };
    // The RU program's flat 50000 reward on a won opportunity, sent with the contact's write in
    // one collection.
    w.app.signup(json!({"id": "evt_typed", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "gus@initech.ru", "referral_code": "IVAN-1", "source": "code", "market": "RU"}}))
        .await;
    let (contact, opp) = (sf_id("003", 1), sf_id("006", 1));
    w.app
        .salesforce(&[
            (
                &sf_id("04l", 1),
                "Contact",
                &[("Id", Some(&contact)), ("Email", Some("gus@initech.ru"))],
            ),
            (
                &sf_id("04l", 2),
                "Opportunity",
                &[
                    ("Id", Some(&opp)),
                    ("ContactId", Some(&contact)),
                    ("StageName", Some("Closed Won")),
                    ("IsWon", Some("true")),
                    ("Amount", Some("900000")),
                    ("CurrencyIsoCode", Some("RUB")),
                ],
            ),
        ])
        .await;
    w.app.process().await;
    w.app.deliver().await;

    let o = w.crm.state.salesforce_record("Opportunity", &opp).unwrap();
    // The sandbox keeps a number's JSON text: a float would have arrived as 50000.0.
    assert_eq!(o["Referral_Reward_Amount__c"], "50000.00");
    assert_eq!(o["Referral_Reward_Status__c"], "pending");
    assert!(o["Referral_Reward_Hold_Until__c"].starts_with("2026-12-20T"));
    let dead = w.app.store.outbox_rows(None).await.unwrap();
    assert!(dead.iter().all(|r| r.status != "dead"), "{dead:?}");

    // Clearing a Number or DateTime field: null, which Salesforce accepts where "" is refused.
    let client = SalesforceClient::new(
        http_client(std::time::Duration::from_secs(5)),
        &w.crm.base_url,
        &sandbox.salesforce_client_id,
        Secret::new(sandbox.salesforce_client_secret.clone()),
        &sandbox.salesforce_api_version,
    )
    .with_number_fields(["Referral_Reward_Amount__c"]);
    let fields = [
        ("Referral_Reward_Amount__c", "12345678901234567.89"),
        ("Referral_Reward_Hold_Until__c", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    client.update("Opportunity", &opp, &fields).await.unwrap();
    let o = w.crm.state.salesforce_record("Opportunity", &opp).unwrap();
    assert_eq!(o["Referral_Reward_Amount__c"], "12345678901234567.89");
    assert_eq!(o["Referral_Reward_Hold_Until__c"], "");
}

async fn a_salesforce_api_version_written_without_the_v_reaches_the_api(backend: Backend) {
    let Some(w) = world_with(backend, SandboxConfig::default(), |s| {
        s.salesforce.api_version = "62.0".into();
    })
    .await
    else {
        return;
    };
    assert!(w.app.settings.validate().is_empty());
    w.app.signup(json!({"id": "evt_version", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "ida@initech.ru", "referral_code": "IVAN-1", "source": "code", "market": "RU"}}))
        .await;
    let contact = sf_id("003", 2);
    w.app
        .salesforce(&[(
            &sf_id("04l", 3),
            "Contact",
            &[("Id", Some(&contact)), ("Email", Some("ida@initech.ru"))],
        )])
        .await;
    w.app.process().await;

    w.app.deliver().await;

    let c = w.crm.state.salesforce_record("Contact", &contact).unwrap();
    assert_eq!(c["Referral_Code__c"], "IVAN-1");
    assert!(w
        .crm
        .state
        .requests()
        .iter()
        .any(|r| r.path == format!("/services/data/v62.0/sobjects/Contact/{contact}")));
}

async fn partner_events_accept_referral_code_as_their_code(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    // A partner named by `referral_code`, the field name signup events use.
    w.app.signup(json!({"id": "evt_partner_rc", "type": "partner.joined", "occurred_at": iso(T0 - DAY),
        "data": {"referral_code": "ZED-9", "name": "Zed Consulting", "email": "zed@zed.io", "market": "US"}}))
        .await;
    w.app.signup(json!({"id": "evt_zed_signup", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "amy@globex.com", "referral_code": "ZED-9", "source": "link", "market": "US"}}))
        .await;
    w.app.process().await;

    let referrer = w.app.store.referrer_by_code("ZED-9").await.unwrap();
    assert_eq!(
        referrer.and_then(|r| r.name).as_deref(),
        Some("Zed Consulting")
    );
    // The contact shows who referred them by the partner's name.
    w.app
        .hubspot(json!([hubspot_event(
            1,
            "contact.propertyChange",
            501,
            T0 + SECOND,
            json!({"propertyName": "email", "propertyValue": "amy@globex.com"})
        )]))
        .await;
    w.app.process().await;
    w.app.deliver().await;
    let c = w.crm.state.hubspot_object("contacts", "501").unwrap();
    assert_eq!(c["referred_by"], "Zed Consulting");
}

/// The values of a HubSpot property's options, in order.
fn option_values(definition: &Value) -> Vec<String> {
    definition["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap().to_string())
        .collect()
}

/// Settings for `crm setup` against HubSpot only.
fn hubspot_only(settings: &Settings) -> Settings {
    let mut settings = settings.clone();
    settings.salesforce.login_url = String::new();
    settings
}

async fn crm_setup_makes_hubspot_reward_status_and_tier_pick_lists_and_keeps_their_options_current(
    backend: Backend,
) {
    // A portal where only properties created through the API can be written.
    let sandbox = SandboxConfig {
        strict_properties: true,
        ..SandboxConfig::default()
    };
    let Some(w) = world(backend, sandbox).await else {
        return;
    };
    let state = &w.crm.state;
    // An earlier setup made the status free text.
    let resp = reqwest::Client::new()
        .post(format!("{}/crm/v3/properties/deals", w.crm.base_url))
        .bearer_auth("pat-sandbox")
        .json(
            &json!({"name": "referral_reward_status", "label": "Referral reward status",
            "type": "string", "fieldType": "text", "groupName": "referral"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let (lines, ok) = crm_setup::run(&hubspot_only(&w.app.settings)).await;

    assert!(ok, "{lines:#?}");
    assert!(lines.contains(
        &"hubspot deals: property `referral_reward_status` changed from string/text to enumeration/select".to_string()
    ), "{lines:#?}");
    for object in ["contacts", "deals"] {
        let tier = state.hubspot_property(object, "referrer_tier").unwrap();
        assert_eq!(
            (tier["type"].as_str(), tier["fieldType"].as_str()),
            (Some("enumeration"), Some("select"))
        );
        // Every configured program's tiers (RU, then US).
        assert_eq!(
            option_values(&tier),
            [
                "member",
                "insider",
                "ambassador",
                "bronze",
                "silver",
                "gold"
            ]
        );
        assert_eq!(tier["options"][0]["label"], "Member");
    }
    let status = state
        .hubspot_property("deals", "referral_reward_status")
        .unwrap();
    assert_eq!(status["type"], "enumeration");
    assert_eq!(option_values(&status), RewardStatus::NAMES);
    assert_eq!(status["options"][5]["label"], "Needs review");
    let referee = state
        .hubspot_property("contacts", "referral_referee_reward_status")
        .unwrap();
    assert_eq!(option_values(&referee), RewardStatus::NAMES);
    let amount = state
        .hubspot_property("contacts", "referral_referee_reward_amount")
        .unwrap();
    assert_eq!(
        (amount["type"].as_str(), amount["fieldType"].as_str()),
        (Some("number"), Some("number"))
    );
    assert!(state
        .hubspot_property("deals", "referral_referee_reward_status")
        .is_none());
    assert!(state
        .hubspot_property("contacts", "referral_reward_status")
        .is_none());

    // Run again: nothing to change, nothing changed.
    let before = state.requests().len();
    let (lines, ok) = crm_setup::run(&hubspot_only(&w.app.settings)).await;
    assert!(ok);
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("hubspot"))
            .all(|l| l.ends_with(" exists")),
        "{lines:#?}"
    );
    assert!(state.requests()[before..].iter().all(|r| r.method == "GET"));

    // RevOps adds a tier: its option appears after the others, which stay as they were.
    let mut settings = hubspot_only(&w.app.settings);
    settings
        .programs
        .get_mut("US")
        .unwrap()
        .tiers
        .push(TierSettings {
            name: "platinum".into(),
            min_successful: 10,
            multiplier: "2.5".parse().unwrap(),
        });
    let (lines, ok) = crm_setup::run(&settings).await;
    assert!(ok);
    assert!(
        lines.contains(
            &"hubspot deals: property `referrer_tier` options added: platinum".to_string()
        ),
        "{lines:#?}"
    );
    let tier = state.hubspot_property("deals", "referrer_tier").unwrap();
    assert_eq!(
        option_values(&tier),
        [
            "member",
            "insider",
            "ambassador",
            "bronze",
            "silver",
            "gold",
            "platinum"
        ]
    );

    // The statuses the service writes are options HubSpot accepts.
    w.app.signup(json!({"id": "evt_pick", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "ana@northwind.io", "referral_code": "ACME-7", "source": "link", "market": "US"}}))
        .await;
    w.app
        .hubspot(json!([
            hubspot_event(1, "contact.propertyChange", 101, T0, json!({"propertyName": "email", "propertyValue": "ana@northwind.io"})),
            hubspot_event(2, "deal.associationChange", 201, T0, json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": 201, "toObjectId": 101})),
            deal_property(3, 201, "amount", "40000", T0),
            deal_property(4, 201, "dealstage", "closedwon", T0 + DAY),
        ]))
        .await;
    w.app.process().await;
    w.app.deliver().await;
    w.clock.set(T0 + 40 * DAY);
    release_holds(&w.app.store, &w.app.settings, T0 + 40 * DAY)
        .await
        .unwrap();
    w.app.deliver().await;
    let deal = state.hubspot_object("deals", "201").unwrap();
    assert_eq!(deal["referral_reward_status"], "eligible");
    let rows = w.app.store.outbox_rows(None).await.unwrap();
    assert!(rows.iter().all(|r| r.status != "dead"), "{rows:#?}");
}

async fn crm_setup_checks_salesforce_field_types_and_pick_list_values(backend: Backend) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    let state = &w.crm.state;
    let mut settings = w.app.settings.clone();
    settings.hubspot.access_token = Secret::new("");
    state.define_salesforce_field("Referral_Reward__e", "Summary__c", "string", &[]);
    let tiers = [
        "member",
        "insider",
        "ambassador",
        "bronze",
        "silver",
        "gold",
    ];
    for sobject in ["Contact", "Lead", "Opportunity"] {
        state.define_salesforce_field(sobject, "Referrer_Tier__c", "picklist", &tiers);
    }

    let (lines, ok) = crm_setup::run(&settings).await;
    assert!(ok, "an org set up as the README says passes: {lines:#?}");

    // A Number field made as text, a pick-list lacking a tier, a field nobody created.
    state.define_salesforce_field("Opportunity", "Referral_Reward_Amount__c", "string", &[]);
    state.define_salesforce_field("Lead", "Referrer_Tier__c", "picklist", &tiers[..5]);
    state.remove_salesforce_field("Contact", "Referral_Referee_Reward_Amount__c");
    let (lines, ok) = crm_setup::run(&settings).await;

    assert!(!ok);
    for expected in [
        "salesforce Opportunity: WRONG TYPE Referral_Reward_Amount__c is string but should be double (fix it in Setup → Object Manager)",
        "salesforce Lead: MISSING picklist values on Referrer_Tier__c: gold (fix it in Setup → Object Manager)",
        "salesforce Contact: MISSING field Referral_Referee_Reward_Amount__c (double) (fix it in Setup → Object Manager)",
    ] {
        assert!(lines.contains(&expected.to_string()), "{expected}\n{lines:#?}");
    }
    let salesforce: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("salesforce"))
        .collect();
    assert_eq!(
        salesforce.len(),
        4,
        "Leads carry no referee fields: {lines:#?}"
    );
}

/// A US referral for `email` with HubSpot contact `contact` and deal `deal` in `currency`.
async fn hubspot_deal_in(w: &crate::support::crm::World, n: u64, currency: &str) -> (u64, u64) {
    let (contact, deal) = (1000 + n, 2000 + n);
    let email = format!("p{n}@northwind.io");
    w.app
        .signup(
            json!({"id": format!("evt_{n}"), "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": email, "referral_code": "ACME-7", "source": "link", "market": "US"}}),
        )
        .await;
    w.app
        .hubspot(json!([
            hubspot_event(n * 10 + 1, "contact.propertyChange", contact, T0, json!({"propertyName": "email", "propertyValue": email})),
            hubspot_event(n * 10 + 2, "deal.associationChange", deal, T0, json!({"associationType": "DEAL_TO_CONTACT", "fromObjectId": deal, "toObjectId": contact})),
            deal_property(n * 10 + 3, deal, "amount", "40000", T0),
            deal_property(n * 10 + 4, deal, "deal_currency_code", currency, T0),
            deal_property(n * 10 + 5, deal, "dealstage", "closedwon", T0 + DAY),
        ]))
        .await;
    w.app.process().await;
    (contact, deal)
}

fn note_bodies(w: &crate::support::crm::World) -> Vec<String> {
    w.crm
        .state
        .notes()
        .iter()
        .map(|n| {
            n["properties"]["hs_note_body"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn a_reward_in_review_without_an_amount_shows_its_status_and_no_amount(backend: Backend) {
    let sandbox = SandboxConfig {
        strict_properties: true,
        ..SandboxConfig::default()
    };
    let Some(w) = world(backend, sandbox).await else {
        return;
    };
    let (_, ok) = crm_setup::run(&hubspot_only(&w.app.settings)).await;
    assert!(ok);
    // A GBP deal in the USD program, which has no GBP rate.
    let (_, deal) = hubspot_deal_in(&w, 1, "GBP").await;
    w.app.deliver().await;

    let d = w
        .crm
        .state
        .hubspot_object("deals", &deal.to_string())
        .unwrap();
    assert_eq!(
        (
            d["referral_reward_status"].as_str(),
            d["referral_reward_amount"].as_str(),
            d["referral_reward_currency"].as_str()
        ),
        ("needs_review", "", ""),
        "a status, and no \"0.00 USD\" for a reward nobody computed"
    );
    let notes = note_bodies(&w);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "Referral reward needs review on deal {deal}: referrer ACME-7"
        )),
        "{}",
        notes[0]
    );
    assert!(
        notes[0].contains("no amount yet, needs review (no FX rate for GBP → USD"),
        "{}",
        notes[0]
    );
    // The referee's flat credit is known; it waits for the same review.
    assert!(
        notes[0].contains("credit 500.00 USD, needs review"),
        "{}",
        notes[0]
    );

    // Salesforce: the status, and null for the amount and currency.
    w.app.signup(json!({"id": "evt_sf_gbp", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "nia@globex.co.uk", "referral_code": "ACME-7", "source": "link", "market": "US"}}))
        .await;
    let (contact, opp) = (sf_id("003", 7), sf_id("006", 7));
    w.app
        .salesforce(&[
            (
                &sf_id("04l", 70),
                "Contact",
                &[("Id", Some(&contact)), ("Email", Some("nia@globex.co.uk"))],
            ),
            (
                &sf_id("04l", 71),
                "Opportunity",
                &[
                    ("Id", Some(&opp)),
                    ("ContactId", Some(&contact)),
                    ("StageName", Some("Closed Won")),
                    ("IsWon", Some("true")),
                    ("Amount", Some("40000")),
                    ("CurrencyIsoCode", Some("GBP")),
                ],
            ),
        ])
        .await;
    w.app.process().await;
    w.app.deliver().await;
    let o = w.crm.state.salesforce_record("Opportunity", &opp).unwrap();
    assert_eq!(
        (
            o["Referral_Reward_Status__c"].as_str(),
            o["Referral_Reward_Amount__c"].as_str(),
            o["Referral_Reward_Currency__c"].as_str()
        ),
        ("needs_review", "", "")
    );
    let rows = w.app.store.outbox_rows(None).await.unwrap();
    assert!(rows.iter().all(|r| r.status != "dead"), "{rows:#?}");
}

async fn the_referee_side_of_a_two_sided_reward_shows_on_their_contact_and_in_the_deal_note(
    backend: Backend,
) {
    let sandbox = SandboxConfig {
        strict_properties: true,
        ..SandboxConfig::default()
    };
    let Some(w) = world(backend, sandbox).await else {
        return;
    };
    let (_, ok) = crm_setup::run(&hubspot_only(&w.app.settings)).await;
    assert!(ok);
    let (contact, deal) = hubspot_deal_in(&w, 2, "USD").await;
    w.app.deliver().await;

    let referee = |field: &str| {
        w.crm
            .state
            .hubspot_object("contacts", &contact.to_string())
            .unwrap()[field]
            .clone()
    };
    assert_eq!(
        (
            referee("referral_referee_reward_status"),
            referee("referral_referee_reward_amount"),
            referee("referral_referee_reward_currency")
        ),
        (
            "pending".to_string(),
            "500.00".to_string(),
            "USD".to_string()
        )
    );
    let d = w
        .crm
        .state
        .hubspot_object("deals", &deal.to_string())
        .unwrap();
    assert!(
        !d.contains_key("referral_referee_reward_status"),
        "the referee's side is not the deal's reward"
    );

    w.clock.set(T0 + 40 * DAY);
    release_holds(&w.app.store, &w.app.settings, T0 + 40 * DAY)
        .await
        .unwrap();
    w.app.deliver().await;
    assert_eq!(referee("referral_referee_reward_status"), "eligible");
    let notes = note_bodies(&w);
    assert_eq!(notes.len(), 1, "one note for the deal: {notes:?}");
    assert_eq!(
        notes[0],
        format!(
            "Referral reward eligible on deal {deal}: referrer ACME-7 (tier bronze) 3000.00 USD, eligible; \
             referee p2@northwind.io credit 500.00 USD, eligible."
        )
    );

    // Salesforce: on the referee's Contact.
    w.app.signup(json!({"id": "evt_sf_two", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "liv@globex.com", "referral_code": "ACME-7", "source": "link", "market": "US"}}))
        .await;
    let (contact, opp) = (sf_id("003", 8), sf_id("006", 8));
    w.app
        .salesforce(&[
            (
                &sf_id("04l", 80),
                "Contact",
                &[("Id", Some(&contact)), ("Email", Some("liv@globex.com"))],
            ),
            (
                &sf_id("04l", 81),
                "Opportunity",
                &[
                    ("Id", Some(&opp)),
                    ("ContactId", Some(&contact)),
                    ("StageName", Some("Closed Won")),
                    ("IsWon", Some("true")),
                    ("Amount", Some("40000")),
                    ("CurrencyIsoCode", Some("USD")),
                ],
            ),
        ])
        .await;
    w.app.process().await;
    w.app.deliver().await;
    let c = w.crm.state.salesforce_record("Contact", &contact).unwrap();
    assert_eq!(
        (
            c["Referral_Referee_Reward_Status__c"].as_str(),
            c["Referral_Referee_Reward_Amount__c"].as_str(),
            c["Referral_Referee_Reward_Currency__c"].as_str()
        ),
        ("pending", "500.00", "USD")
    );
    let rows = w.app.store.outbox_rows(None).await.unwrap();
    assert!(rows.iter().all(|r| r.status != "dead"), "{rows:#?}");
}

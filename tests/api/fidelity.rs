//! What a real HubSpot and Salesforce would do with what the service sends and receives, played
//! against the in-repo sandbox, which enforces the vendors' rules: Salesforce's ten-chunk limit
//! and field types, HubSpot's enumeration options, merged HubSpot ids answering with the record
//! they were merged into.

use std::collections::BTreeMap;

use crm_sandbox::SandboxConfig;
use referral_sync::cli::crm_setup;
use referral_sync::clock::{DAY, SECOND};
use referral_sync::config::{Secret, Settings, TierSettings};
use referral_sync::crm::http_client;
use referral_sync::crm::salesforce::SalesforceClient;
use referral_sync::domain::reward::RewardStatus;
use referral_sync::domain::Crm;
use referral_sync::rewards::engine::release_holds;
use referral_sync::store::{CrmRecord, RecordKey};
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::crm::{hubspot_referral_in, world, world_with, World};
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
    a_contact_merge_that_creates_a_record_links_it_to_the_earliest_first_touch,
    a_merged_contact_keeps_the_earliest_first_touch_when_its_creation_event_comes_first,
    a_deal_merge_that_creates_a_record_carries_the_link_contacts_and_rewards_over,
);

/// Salesforce record ids of the n-th test record: 18 characters, type prefix first.
fn sf_id(prefix: &str, n: usize) -> String {
    format!("{prefix}7F00000{n:05}QAA")
}

/// A referral for `email` (code, market) and, by Outbound Messages, its Salesforce Contact and a
/// won Opportunity of `amount` in `currency`. Returns the Contact and Opportunity ids.
async fn salesforce_won_deal(
    w: &World,
    n: usize,
    (email, code, market): (&str, &str, &str),
    amount: &str,
    currency: &str,
) -> (String, String) {
    w.app
        .signup(
            json!({"id": format!("evt_sf_{n}"), "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": email, "referral_code": code, "source": "code", "market": market}}),
        )
        .await;
    let (contact, opp) = (sf_id("003", n), sf_id("006", n));
    w.app
        .salesforce(&[
            (
                &sf_id("04l", 10 * n),
                "Contact",
                &[("Id", Some(&contact)), ("Email", Some(email))],
            ),
            (
                &sf_id("04l", 10 * n + 1),
                "Opportunity",
                &[
                    ("Id", Some(&opp)),
                    ("ContactId", Some(&contact)),
                    ("StageName", Some("Closed Won")),
                    ("IsWon", Some("true")),
                    ("Amount", Some(amount)),
                    ("CurrencyIsoCode", Some(currency)),
                ],
            ),
        ])
        .await;
    w.app.process().await;
    (contact, opp)
}

/// The values of `names` on a record as the sandbox holds it ("" when unset).
fn values<'a, const N: usize>(
    record: &'a BTreeMap<String, String>,
    names: [&str; N],
) -> [&'a str; N] {
    names.map(|name| record.get(name).map_or("", String::as_str))
}

/// Every queued write reached the CRM: none was refused.
async fn nothing_dead(w: &World) {
    let rows = w.app.store.outbox_rows(None).await.unwrap();
    assert!(
        rows.iter().all(|r| r.status.as_str() != "dead"),
        "{rows:#?}"
    );
}

/// The service's view of a HubSpot record.
async fn hubspot_record(w: &World, object_type: &str, id: u64) -> CrmRecord {
    let key = RecordKey {
        crm: Crm::HubSpot,
        object_type: object_type.into(),
        object_id: id.to_string(),
    };
    w.app.store.crm_record(&key).await.unwrap().unwrap()
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
    let (_, opp) =
        salesforce_won_deal(&w, 1, ("gus@initech.ru", "IVAN-1", "RU"), "900000", "RUB").await;
    w.app.deliver().await;

    let o = w.crm.state.salesforce_record("Opportunity", &opp).unwrap();
    // The sandbox keeps a number's JSON text: a float would have arrived as 50000.0.
    assert_eq!(o["Referral_Reward_Amount__c"], "50000.00");
    assert_eq!(o["Referral_Reward_Status__c"], "pending");
    assert!(o["Referral_Reward_Hold_Until__c"].starts_with("2026-12-20T"));
    nothing_dead(&w).await;

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
        referrer.and_then(|r| r.facts.name).as_deref(),
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

/// A portal where only properties created through the API can be written, after `crm setup`.
async fn set_up_portal(backend: Backend) -> Option<World> {
    let sandbox = SandboxConfig {
        strict_properties: true,
        ..SandboxConfig::default()
    };
    let w = world(backend, sandbox).await?;
    let (lines, ok) = crm_setup::run(&hubspot_only(&w.app.settings)).await;
    assert!(ok, "{lines:#?}");
    Some(w)
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
    nothing_dead(&w).await;
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

/// [`hubspot_referral_in`], and the deal is won a day later.
async fn hubspot_won_deal_in(w: &World, n: u64, currency: &str) -> (u64, u64) {
    let (contact, deal) = hubspot_referral_in(&w.app, n, currency).await;
    w.app
        .hubspot(json!([deal_property(
            n * 10 + 5,
            deal,
            "dealstage",
            "closedwon",
            T0 + DAY
        )]))
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
    let Some(w) = set_up_portal(backend).await else {
        return;
    };
    // A GBP deal in the USD program, which has no GBP rate.
    let (_, deal) = hubspot_won_deal_in(&w, 1, "GBP").await;
    w.app.deliver().await;

    let d = w
        .crm
        .state
        .hubspot_object("deals", &deal.to_string())
        .unwrap();
    assert_eq!(
        values(
            &d,
            [
                "referral_reward_status",
                "referral_reward_amount",
                "referral_reward_currency"
            ]
        ),
        ["needs_review", "", ""],
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
    let (_, opp) =
        salesforce_won_deal(&w, 7, ("nia@globex.co.uk", "ACME-7", "US"), "40000", "GBP").await;
    w.app.deliver().await;
    let o = w.crm.state.salesforce_record("Opportunity", &opp).unwrap();
    assert_eq!(
        values(
            &o,
            [
                "Referral_Reward_Status__c",
                "Referral_Reward_Amount__c",
                "Referral_Reward_Currency__c"
            ]
        ),
        ["needs_review", "", ""]
    );
    nothing_dead(&w).await;
}

async fn the_referee_side_of_a_two_sided_reward_shows_on_their_contact_and_in_the_deal_note(
    backend: Backend,
) {
    let Some(w) = set_up_portal(backend).await else {
        return;
    };
    let (contact, deal) = hubspot_won_deal_in(&w, 2, "USD").await;
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
    let (contact, _) =
        salesforce_won_deal(&w, 8, ("liv@globex.com", "ACME-7", "US"), "40000", "USD").await;
    w.app.deliver().await;
    let c = w.crm.state.salesforce_record("Contact", &contact).unwrap();
    assert_eq!(
        values(
            &c,
            [
                "Referral_Referee_Reward_Status__c",
                "Referral_Referee_Reward_Amount__c",
                "Referral_Referee_Reward_Currency__c"
            ]
        ),
        ["pending", "500.00", "USD"]
    );
    nothing_dead(&w).await;
}

/// Process the inbox and deliver until both are quiet: reads answered by the CRM come back as
/// inbox events, which may queue writes.
async fn settle(w: &World) {
    for _ in 0..4 {
        w.app.process().await;
        w.app.deliver().await;
    }
}

/// Two claims (b@ five days before a@) and HubSpot contacts 11 (a@) and 12 (b@), announced by
/// creation events and read back, as HubSpot does it.
async fn two_claimed_contacts(w: &World) {
    w.app.signup(json!({"id": "evt_late", "type": "signup.created", "occurred_at": iso(T0),
        "data": {"email": "a@northwind.io", "referral_code": "NEW-1", "source": "link", "market": "US"}}))
        .await;
    w.app.signup(json!({"id": "evt_early", "type": "signup.created", "occurred_at": iso(T0 - 5 * DAY),
        "data": {"email": "b@northwind.io", "referral_code": "OLD-1", "source": "code", "market": "US"}}))
        .await;
    let state = &w.crm.state;
    state.seed_hubspot("contacts", "11", &[("email", "a@northwind.io")], &[]);
    state.seed_hubspot("contacts", "12", &[("email", "b@northwind.io")], &[]);
    w.app
        .hubspot(json!([
            hubspot_event(
                1,
                "contact.creation",
                11,
                T0,
                json!({"changeFlag": "CREATED"})
            ),
            hubspot_event(
                2,
                "contact.creation",
                12,
                T0,
                json!({"changeFlag": "CREATED"})
            ),
        ]))
        .await;
    settle(w).await;
}

/// HubSpot's merge event when the merge created record `new`.
fn merge_event(event_id: u64, kind: &str, primary: u64, merged: u64, new: u64, at: i64) -> Value {
    hubspot_event(
        event_id,
        kind,
        primary,
        at,
        json!({"primaryObjectId": primary, "mergedObjectIds": [merged], "newObjectId": new,
               "numberOfPropertiesMoved": 3}),
    )
}

async fn contact_merge_story(backend: Backend, creation_first: bool) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    two_claimed_contacts(&w).await;
    let state = &w.crm.state;
    assert_eq!(
        state.hubspot_object("contacts", "12").unwrap()["referral_code"],
        "OLD-1"
    );

    // Someone merges the two in HubSpot, and HubSpot makes a new record of them.
    assert_eq!(
        state.merge_hubspot("contacts", "11", &["12"], Some("13")),
        "13"
    );
    let merge = merge_event(3, "contact.merge", 11, 12, 13, T0 + DAY);
    let created = hubspot_event(
        4,
        "contact.creation",
        13,
        T0 + DAY,
        json!({"changeFlag": "CREATED"}),
    );
    if creation_first {
        w.app.hubspot(json!([created])).await;
        settle(&w).await;
        w.app.hubspot(json!([merge])).await;
    } else {
        w.app.hubspot(json!([merge, created])).await;
    }
    settle(&w).await;

    let survivor = hubspot_record(&w, "contact", 13).await;
    assert_eq!(
        (survivor.referrer_code.as_deref(), survivor.first_touch_at),
        (Some("OLD-1"), Some(T0 - 5 * DAY)),
        "the earliest first touch of the merged records"
    );
    for gone in [11, 12] {
        let record = hubspot_record(&w, "contact", gone).await;
        assert_eq!(record.merged_into.as_deref(), Some("13"), "{gone}");
    }
    // HubSpot kept the primary's values (NEW-1); the service wrote the earliest back.
    let c = state.hubspot_object("contacts", "13").unwrap();
    assert_eq!(
        (c["referral_code"].as_str(), c["referral_source"].as_str()),
        ("OLD-1", "code")
    );

    // A rep overwrites the source on the new record: it is restored.
    w.app
        .hubspot(json!([hubspot_event(5, "contact.propertyChange", 13, T0 + 2 * DAY,
            json!({"propertyName": "referral_source", "propertyValue": "cold call", "changeSource": "CRM_UI"}))]))
        .await;
    settle(&w).await;
    assert_eq!(
        state.hubspot_object("contacts", "13").unwrap()["referral_source"],
        "code"
    );

    // A late event about a merged-away id: HubSpot answers its read with the new record.
    w.app
        .hubspot(json!([hubspot_event(
            6,
            "contact.creation",
            12,
            T0,
            json!({"changeFlag": "CREATED"})
        )]))
        .await;
    settle(&w).await;
    let survivor = hubspot_record(&w, "contact", 13).await;
    assert_eq!(survivor.referrer_code.as_deref(), Some("OLD-1"));
    nothing_dead(&w).await;
}

async fn a_contact_merge_that_creates_a_record_links_it_to_the_earliest_first_touch(
    backend: Backend,
) {
    contact_merge_story(backend, false).await;
}

async fn a_merged_contact_keeps_the_earliest_first_touch_when_its_creation_event_comes_first(
    backend: Backend,
) {
    contact_merge_story(backend, true).await;
}

async fn a_deal_merge_that_creates_a_record_carries_the_link_contacts_and_rewards_over(
    backend: Backend,
) {
    let Some(w) = world(backend, SandboxConfig::default()).await else {
        return;
    };
    two_claimed_contacts(&w).await;
    let state = &w.crm.state;
    // Deal 41 (b@, the earlier claim) is won and earns its rewards; deal 42 (a@) is open.
    fn deal(stage: &str) -> [(&str, &str); 5] {
        [
            ("dealname", "Northwind"),
            ("amount", "40000"),
            ("deal_currency_code", "USD"),
            ("pipeline", "default"),
            ("dealstage", stage),
        ]
    }
    state.seed_hubspot("deals", "41", &deal("closedwon"), &["12"]);
    state.seed_hubspot("deals", "42", &deal("qualifiedtobuy"), &["11"]);
    w.app
        .hubspot(json!([
            hubspot_event(
                11,
                "deal.creation",
                41,
                T0,
                json!({"changeFlag": "CREATED"})
            ),
            hubspot_event(
                12,
                "deal.creation",
                42,
                T0,
                json!({"changeFlag": "CREATED"})
            ),
        ]))
        .await;
    settle(&w).await;
    assert_eq!(
        w.app
            .store
            .rewards_of_deal(Crm::HubSpot, "41")
            .await
            .unwrap()
            .len(),
        2
    );

    // The deals are merged into a new one, which keeps the primary's (41's) stage.
    state.merge_hubspot("deals", "41", &["42"], Some("43"));
    w.app
        .hubspot(json!([
            merge_event(13, "deal.merge", 41, 42, 43, T0 + DAY),
            hubspot_event(
                14,
                "deal.creation",
                43,
                T0 + DAY,
                json!({"changeFlag": "CREATED"})
            ),
        ]))
        .await;
    settle(&w).await;

    let survivor = hubspot_record(&w, "deal", 43).await;
    assert_eq!(
        (survivor.referrer_code.as_deref(), survivor.first_touch_at),
        (Some("OLD-1"), Some(T0 - 5 * DAY))
    );
    let rewards = w.app.store.rewards(None, 100).await.unwrap();
    assert_eq!(
        rewards.len(),
        2,
        "the won deal's rewards, not a second pair: {rewards:#?}"
    );
    assert!(
        rewards.iter().all(|r| r.line.deal_id == "43"),
        "they follow the deal"
    );
    let d = state.hubspot_object("deals", "43").unwrap();
    assert_eq!(d["referral_code"], "OLD-1");

    // The hold ends: the surviving deal shows it.
    w.clock.set(T0 + 40 * DAY);
    release_holds(&w.app.store, &w.app.settings, T0 + 40 * DAY)
        .await
        .unwrap();
    settle(&w).await;
    assert_eq!(
        state.hubspot_object("deals", "43").unwrap()["referral_reward_status"],
        "eligible"
    );

    // An overwrite on the new deal is restored.
    w.app
        .hubspot(json!([hubspot_event(15, "deal.propertyChange", 43, T0 + 41 * DAY,
            json!({"propertyName": "referral_source", "propertyValue": "partner fair", "changeSource": "CRM_UI"}))]))
        .await;
    settle(&w).await;
    assert_eq!(
        state.hubspot_object("deals", "43").unwrap()["referral_source"],
        "code"
    );
    nothing_dead(&w).await;
}

/// The sandbox's Salesforce org has the reward-status pick-list the README tells an admin to set
/// up: exactly the statuses the service writes.
#[test]
fn the_sandbox_pick_list_holds_every_reward_status() {
    assert_eq!(
        crm_sandbox::REWARD_STATUSES,
        referral_sync::domain::reward::RewardStatus::NAMES
    );
}

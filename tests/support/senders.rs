//! Signed requests as HubSpot, Salesforce and the product send them, with the secrets that
//! [`configure`] puts into the test app's settings.

use std::collections::BTreeMap;

use referral_sync::config::{ConfigSources, Secret, Settings, SourceSettings};
use referral_sync::ingest::signature::{self, HmacEncoding, HubSpotVersion};
use serde_json::{json, Value};

use super::TestApp;

/// A Salesforce notification: `(notification id, sObject type, fields)`; `None` is `xsi:nil`.
pub type Notification<'a> = (&'a str, &'a str, &'a [(&'a str, Option<&'a str>)]);

pub const HUBSPOT_SECRET: &str = "hubspot-current-secret";
pub const HUBSPOT_OLD_SECRET: &str = "hubspot-previous-secret";
pub const PUBLIC_BASE: &str = "https://hooks.example.com";
pub const SF_ORG: &str = "00D7F00000107XsUAI";
pub const SF_TOKEN: &str = "sf-outbound-token-0123456789";
pub const APP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const CALLOUT_SECRET: &str = "whsec_dGVzdC1jYWxsb3V0LXNlY3JldC0xMjM0NTY3OA==";
pub const STRIPE_SECRET: &str = "whsec_stripe_style_secret";
pub const HMAC_SECRET: &str = "plain-hmac-secret";

/// `config/example.toml` as loaded, with nothing from the environment: its two-market programs
/// and reward rules are what the domain tests play against.
pub fn example_settings() -> Settings {
    Settings::load(&ConfigSources {
        file: Some(super::repo_dir().join("config/example.toml")),
        dir: Some(super::repo_dir().join("config")),
        env: Some(BTreeMap::new()),
    })
    .expect("config/example.toml loads")
}

/// An epoch-millisecond time as senders write it (RFC 3339).
pub fn iso(ms: i64) -> String {
    referral_sync::clock::to_rfc3339(ms)
}

/// One HubSpot webhook event (portal 62515) as HubSpot sends it in a batch, plus `extra` fields.
pub fn hubspot_event(event_id: u64, kind: &str, object_id: u64, at: i64, extra: Value) -> Value {
    let mut event = json!({"eventId": event_id, "subscriptionId": 92894, "portalId": 62515, "appId": 1,
                           "occurredAt": at, "subscriptionType": kind, "objectId": object_id, "attemptNumber": 0});
    for (key, value) in extra.as_object().expect("extra fields are an object") {
        event[key] = value.clone();
    }
    event
}

/// A `deal.propertyChange` event setting `name` to `value` on `deal`.
pub fn deal_property(event_id: u64, deal: u64, name: &str, value: &str, at: i64) -> Value {
    hubspot_event(
        event_id,
        "deal.propertyChange",
        deal,
        at,
        json!({"propertyName": name, "propertyValue": value}),
    )
}

/// Every sender configured: HubSpot (v3 + v1), Salesforce, and product sources of each scheme.
pub fn configure(s: &mut Settings) {
    s.server.public_base_url = PUBLIC_BASE.into();
    s.server.body_limit_bytes = 64 * 1024;
    s.hubspot.client_secrets = vec![Secret::new(HUBSPOT_SECRET), Secret::new(HUBSPOT_OLD_SECRET)];
    s.hubspot.signature_versions = vec![HubSpotVersion::V3, HubSpotVersion::V1];
    s.salesforce.organization_ids = vec![SF_ORG.into()];
    s.salesforce.outbound_token = Secret::new(SF_TOKEN);
    s.salesforce.callout_secrets = vec![Secret::new(CALLOUT_SECRET)];
    let source =
        |scheme: &str, secret: &str, header: Option<&str>, encoding: Option<&str>| SourceSettings {
            scheme: serde_json::from_value(serde_json::json!(scheme)).unwrap(),
            secrets: vec![Secret::new(secret)],
            header: header.map(Into::into),
            encoding: serde_json::from_value(serde_json::json!(encoding.unwrap_or("hex"))).unwrap(),
        };
    s.sources.insert(
        "app".into(),
        source("standard-webhooks", APP_SECRET, None, None),
    );
    s.sources.insert(
        "billing".into(),
        source("stripe", STRIPE_SECRET, None, None),
    );
    s.sources.insert(
        "legacy".into(),
        source("hmac-sha256", HMAC_SECRET, Some("X-Signature"), Some("hex")),
    );
    s.sources.insert(
        "partner-portal".into(),
        source(
            "hmac-sha256",
            HMAC_SECRET,
            Some("X-Partner-Sig"),
            Some("base64"),
        ),
    );
}

pub fn hubspot_url() -> String {
    format!("{PUBLIC_BASE}/webhooks/hubspot")
}

impl TestApp {
    /// POST a HubSpot body signed with `version`/`secret` for `signed_url` at timestamp `ts`.
    pub async fn post_hubspot_signed(
        &self,
        body: &str,
        version: HubSpotVersion,
        secret: &str,
        signed_url: &str,
        ts: i64,
    ) -> reqwest::Response {
        let headers =
            signature::sign_hubspot(version, secret, "POST", signed_url, body.as_bytes(), ts);
        self.send(
            self.client.post(self.url("/webhooks/hubspot")),
            headers,
            body,
        )
        .await
    }

    /// POST HubSpot events (a JSON array) correctly signed at the app's current time; expects 204.
    pub async fn hubspot(&self, events: Value) {
        let body = events.to_string();
        let now = self.clock_now();
        let r = self
            .post_hubspot_signed(
                &body,
                HubSpotVersion::V3,
                HUBSPOT_SECRET,
                &hubspot_url(),
                now,
            )
            .await;
        assert_eq!(
            r.status(),
            204,
            "hubspot webhook refused: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// POST a product event through the `app` source (Standard Webhooks); expects 202.
    pub async fn signup(&self, event: Value) {
        let body = event.to_string();
        let id = event["id"].as_str().unwrap_or("msg").to_string();
        let headers = signature::sign_standard_webhooks(
            APP_SECRET,
            &id,
            self.clock_now() / 1000,
            body.as_bytes(),
        )
        .unwrap();
        let r = self.post_signup_raw("app", &body, headers).await;
        assert_eq!(
            r.status(),
            202,
            "product event refused: {}",
            r.text().await.unwrap_or_default()
        );
    }

    pub async fn post_signup_raw(
        &self,
        source: &str,
        body: &str,
        headers: Vec<(String, String)>,
    ) -> reqwest::Response {
        self.send(
            self.client
                .post(self.url(&format!("/webhooks/signup/{source}"))),
            headers,
            body,
        )
        .await
    }

    /// POST a Salesforce Outbound Message with `token` as `?token=`.
    pub async fn post_outbound_message(
        &self,
        query: &str,
        basic: Option<(&str, &str)>,
        body: String,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(&format!("/webhooks/salesforce{query}")))
            .header("content-type", "text/xml; charset=utf-8")
            .header("SOAPAction", "\"\"");
        if let Some((user, password)) = basic {
            req = req.basic_auth(user, Some(password));
        }
        req.body(body).send().await.unwrap()
    }

    /// Send Salesforce notifications `(notification id, sObject type, fields)`; expects the Ack.
    pub async fn salesforce(&self, notifications: &[Notification<'_>]) {
        let body = outbound_message(SF_ORG, notifications);
        let r = self
            .post_outbound_message(&format!("?token={SF_TOKEN}"), None, body)
            .await;
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("<Ack>true</Ack>"));
    }

    pub fn clock_now(&self) -> i64 {
        referral_sync::clock::Clock::now(&*self.clock)
    }

    async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
        headers: Vec<(String, String)>,
        body: &str,
    ) -> reqwest::Response {
        req = req.header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(body.to_string()).send().await.unwrap()
    }
}

/// A SOAP Outbound Message; a `None` field value is sent as `xsi:nil`.
pub fn outbound_message(org: &str, notifications: &[Notification<'_>]) -> String {
    let items: String = notifications
        .iter()
        .map(|(id, kind, fields)| {
            let fields: String = fields
                .iter()
                .map(|(name, value)| match value {
                    Some(v) => format!("<sf:{name}>{v}</sf:{name}>"),
                    None => format!("<sf:{name} xsi:nil=\"true\"/>"),
                })
                .collect();
            format!(
                r#"<Notification><Id>{id}</Id><sObject xsi:type="sf:{kind}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{fields}</sObject></Notification>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>{org}</OrganizationId><ActionId>04k7F0000008V3hQAE</ActionId><SessionId xsi:nil="true"/><EnterpriseUrl>https://ap5.salesforce.com/services/Soap/c/47.0/00D7F00000107Xs</EnterpriseUrl><PartnerUrl>https://ap5.salesforce.com/services/Soap/u/47.0/00D7F00000107Xs</PartnerUrl>{items}</notifications></soapenv:Body></soapenv:Envelope>"#
    )
}

pub fn hmac_headers(header: &str, body: &str, encoding: HmacEncoding) -> Vec<(String, String)> {
    signature::sign_hmac_sha256(header, HMAC_SECRET, body.as_bytes(), encoding)
}

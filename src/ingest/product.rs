//! The company's own product events (`partner.*`, `referral.created`, `signup.*`, `invoice.*`, and
//! the advocacy moments `nps.submitted`, `onboarding.completed`, `usage.milestone`): validates one
//! JSON event per request and turns it into typed, normalised data. Unknown event types are
//! accepted without looking at their data, so senders can add types before this service knows them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::market::Market;
use crate::domain::moment::MomentKind;
pub use crate::domain::referrer::PartnerKind;
use crate::domain::Crm;

pub const MAX_ID_CHARS: usize = 200;
pub const MAX_CODE_CHARS: usize = 64;

/// Why a product event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductEventError {
    /// The body is not a JSON object at all (HTTP 400).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but breaks a rule for `field` (HTTP 422).
    #[error("{field} {problem}")]
    Invalid { field: String, problem: String },
}

impl ProductEventError {
    /// True when the body could not be read as a JSON object, as opposed to a rule being broken.
    pub fn is_malformed(&self) -> bool {
        matches!(self, ProductEventError::InvalidJson(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductEvent {
    pub id: String,
    pub event_type: String,
    pub occurred_at_ms: i64,
    pub payload: ProductPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ProductPayload {
    PartnerInvited(PartnerData),
    PartnerJoined(PartnerData),
    ReferralCreated(ReferralData),
    SignupCreated(ReferralData),
    SignupActivated(ActivationData),
    InvoicePaid(InvoicePaid),
    InvoiceRefunded(InvoiceRefunded),
    /// `nps.submitted`, `onboarding.completed`, `usage.milestone`: a customer may be at a good
    /// moment to ask for a referral.
    Moment(MomentData),
    /// A type this service does not know; stored and ignored.
    Unknown,
}

/// A referrer: `partner.invited` and `partner.joined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerData {
    pub code: String,
    /// Normalised with [`normalize_email`].
    pub email: Option<String>,
    pub name: Option<String>,
    /// Trimmed and lowercased.
    pub company_domain: Option<String>,
    /// A [`Market`] code.
    pub market: Option<String>,
    pub kind: PartnerKind,
}

/// A prospect: named by a referrer (`referral.created`) or signing up (`signup.created`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReferralData {
    /// Normalised with [`normalize_email`].
    pub email: String,
    pub name: Option<String>,
    pub company: Option<String>,
    pub referral_code: Option<String>,
    pub source: Option<ReferralSource>,
    /// A [`Market`] code.
    pub market: Option<String>,
    pub utm: BTreeMap<String, String>,
    pub ip: Option<IpAddr>,
}

/// How the prospect arrived: a referral link, a typed code, a direct intro or a pool opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferralSource {
    Link,
    Code,
    Intro,
    Pool,
}

impl ReferralSource {
    pub const ALL: [ReferralSource; 4] = [
        ReferralSource::Link,
        ReferralSource::Code,
        ReferralSource::Intro,
        ReferralSource::Pool,
    ];
    pub const NAMES: &'static [&'static str] = &["link", "code", "intro", "pool"];

    pub fn as_str(self) -> &'static str {
        match self {
            ReferralSource::Link => "link",
            ReferralSource::Code => "code",
            ReferralSource::Intro => "intro",
            ReferralSource::Pool => "pool",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|source| source.as_str() == s)
    }
}

/// `signup.activated`: the prospect became an active customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivationData {
    /// Normalised with [`normalize_email`].
    pub email: String,
}

/// `invoice.paid`: a customer paid an invoice (recurring rewards). The customer is named by email
/// or by a CRM record the service links (`crm_id`, e.g. `hubspot:contact:123`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoicePaid {
    pub invoice_id: String,
    /// Normalised with [`normalize_email`].
    pub email: Option<String>,
    /// `crm:object_type:object_id` of a person or deal.
    pub crm_id: Option<String>,
    /// Positive.
    pub amount: Decimal,
    /// Uppercase ISO code.
    pub currency: String,
    pub paid_at: i64,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
}

/// `invoice.refunded`: part (or all) of a paid invoice was given back (clawbacks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceRefunded {
    pub invoice_id: String,
    /// The sender's id for the refund, when it has one; a refund is otherwise known by its
    /// invoice and time.
    pub refund_id: Option<String>,
    /// The refunded part, positive.
    pub amount: Decimal,
    pub currency: String,
    pub refunded_at: i64,
}

impl InvoiceRefunded {
    /// What tells this refund from another: the sender's refund id, else invoice and time.
    pub fn key(&self) -> String {
        match &self.refund_id {
            Some(id) => id.clone(),
            None => format!("{}@{}", self.invoice_id, self.refunded_at),
        }
    }
}

/// An advocacy moment the product saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MomentData {
    /// Normalised with [`normalize_email`].
    pub email: String,
    /// `nps`, `onboarding` or `usage` (renewals come from the CRM).
    pub kind: MomentKind,
    /// `nps.submitted`: the score, 0 to 10.
    pub score: Option<u8>,
    /// `usage.milestone`: which one.
    pub milestone: Option<String>,
}

/// Parses and validates one product event.
pub fn parse_product_event(body: &[u8]) -> Result<ProductEvent, ProductEventError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ProductEventError::InvalidJson(e.to_string()))?;
    let Value::Object(event) = value else {
        return Err(ProductEventError::InvalidJson(
            "the body must be a JSON object".to_string(),
        ));
    };
    let event = Fields {
        prefix: "",
        map: &event,
    };
    let id = event.required_string("id")?;
    if id.chars().count() > MAX_ID_CHARS {
        return Err(invalid(
            "id",
            format!("must be at most {MAX_ID_CHARS} characters"),
        ));
    }
    let event_type = event.required_string("type")?;
    let occurred_at_ms = event.timestamp_ms("occurred_at")?;
    let payload = parse_payload(&event_type, &event)?;
    Ok(ProductEvent {
        id,
        event_type,
        occurred_at_ms,
        payload,
    })
}

/// Trims and lowercases, so one person's address always compares equal.
pub fn normalize_email(s: &str) -> String {
    s.trim().to_lowercase()
}

fn parse_payload(event_type: &str, event: &Fields) -> Result<ProductPayload, ProductEventError> {
    let payload = match event_type {
        "partner.invited" => ProductPayload::PartnerInvited(partner_data(&event.data()?, true)?),
        "partner.joined" => ProductPayload::PartnerJoined(partner_data(&event.data()?, false)?),
        "referral.created" => ProductPayload::ReferralCreated(referral_data(&event.data()?, true)?),
        "signup.created" => ProductPayload::SignupCreated(referral_data(&event.data()?, false)?),
        "signup.activated" => ProductPayload::SignupActivated(ActivationData {
            email: event.data()?.required_email("email")?,
        }),
        "invoice.paid" => ProductPayload::InvoicePaid(invoice_paid(&event.data()?)?),
        "invoice.refunded" => ProductPayload::InvoiceRefunded(invoice_refunded(&event.data()?)?),
        "nps.submitted" => {
            let data = event.data()?;
            ProductPayload::Moment(MomentData {
                email: data.required_email("email")?,
                kind: MomentKind::Nps,
                score: Some(data.score("score")?),
                milestone: None,
            })
        }
        "onboarding.completed" => ProductPayload::Moment(MomentData {
            email: event.data()?.required_email("email")?,
            kind: MomentKind::Onboarding,
            score: None,
            milestone: None,
        }),
        "usage.milestone" => {
            let data = event.data()?;
            ProductPayload::Moment(MomentData {
                email: data.required_email("email")?,
                kind: MomentKind::Usage,
                score: None,
                milestone: Some(data.required_string("milestone")?),
            })
        }
        _ => ProductPayload::Unknown,
    };
    Ok(payload)
}

fn partner_data(data: &Fields, email_required: bool) -> Result<PartnerData, ProductEventError> {
    let email = if email_required {
        Some(data.required_email("email")?)
    } else {
        data.optional_email("email")?
    };
    let kind = match data.optional_string("kind")? {
        Some(kind) => kind
            .parse::<PartnerKind>()
            .map_err(|_| data.invalid("kind", "must be one of customer, partner, creator"))?,
        None => PartnerKind::default(),
    };
    // Signup events call the code `referral_code`; senders reuse that name here too.
    let code = match (data.present("code"), data.present("referral_code")) {
        (None, Some(_)) => "referral_code",
        _ => "code",
    };
    Ok(PartnerData {
        code: data.code(code)?,
        email,
        name: data.optional_string("name")?,
        company_domain: data
            .optional_string("company_domain")?
            .map(|d| d.to_lowercase()),
        market: data.market("market")?,
        kind,
    })
}

fn referral_data(data: &Fields, code_required: bool) -> Result<ReferralData, ProductEventError> {
    let referral_code = if code_required {
        Some(data.required_string("referral_code")?)
    } else {
        data.optional_string("referral_code")?
    };
    let source = match data.optional_string("source")? {
        Some(source) => Some(
            ReferralSource::parse(&source)
                .ok_or_else(|| data.invalid("source", "must be one of link, code, intro, pool"))?,
        ),
        None => None,
    };
    Ok(ReferralData {
        email: data.required_email("email")?,
        name: data.optional_string("name")?,
        company: data.optional_string("company")?,
        referral_code,
        source,
        market: data.market("market")?,
        utm: data.string_map("utm")?,
        ip: data.ip("ip")?,
    })
}

fn invoice_paid(data: &Fields) -> Result<InvoicePaid, ProductEventError> {
    let email = data.optional_email("email")?;
    let crm_id = data.crm_id("crm_id")?;
    if email.is_none() && crm_id.is_none() {
        return Err(data.invalid(
            "email",
            "is required (or data.crm_id, a CRM record such as hubspot:contact:123)",
        ));
    }
    Ok(InvoicePaid {
        invoice_id: data.identifier("invoice_id")?,
        email,
        crm_id,
        amount: data.positive_amount("amount")?,
        currency: data.currency("currency")?,
        paid_at: data.timestamp_ms("paid_at")?,
        period_start: data.optional_timestamp_ms("period_start")?,
        period_end: data.optional_timestamp_ms("period_end")?,
    })
}

fn invoice_refunded(data: &Fields) -> Result<InvoiceRefunded, ProductEventError> {
    let refund_id = match data.present("refund_id") {
        Some(_) => Some(data.identifier("refund_id")?),
        None => None,
    };
    Ok(InvoiceRefunded {
        invoice_id: data.identifier("invoice_id")?,
        refund_id,
        amount: data.positive_amount("amount")?,
        currency: data.currency("currency")?,
        refunded_at: data.timestamp_ms("refunded_at")?,
    })
}

fn invalid(field: &str, problem: impl Into<String>) -> ProductEventError {
    ProductEventError::Invalid {
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// A JSON object whose fields are reported with `prefix` (`data.`) in errors.
struct Fields<'a> {
    prefix: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn invalid(&self, name: &str, problem: &str) -> ProductEventError {
        invalid(&format!("{}{name}", self.prefix), problem)
    }

    /// A field that is there and not `null`.
    fn present(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|value| !value.is_null())
    }

    fn data(&self) -> Result<Fields<'a>, ProductEventError> {
        match self.present("data") {
            Some(Value::Object(map)) => Ok(Fields {
                prefix: "data.",
                map,
            }),
            Some(_) => Err(self.invalid("data", "must be an object")),
            None => Err(self.invalid("data", "is required")),
        }
    }

    /// A string field, trimmed; blank counts as absent.
    fn optional_string(&self, name: &str) -> Result<Option<String>, ProductEventError> {
        match self.present(name) {
            Some(Value::String(s)) => {
                Ok(Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_string))
            }
            Some(_) => Err(self.invalid(name, "must be a string")),
            None => Ok(None),
        }
    }

    fn required_string(&self, name: &str) -> Result<String, ProductEventError> {
        self.optional_string(name)?
            .ok_or_else(|| self.invalid(name, "is required"))
    }

    fn optional_email(&self, name: &str) -> Result<Option<String>, ProductEventError> {
        let Some(raw) = self.optional_string(name)? else {
            return Ok(None);
        };
        let email = normalize_email(&raw);
        if !looks_like_email(&email) {
            return Err(self.invalid(name, "is not an email address"));
        }
        Ok(Some(email))
    }

    fn required_email(&self, name: &str) -> Result<String, ProductEventError> {
        self.optional_email(name)?
            .ok_or_else(|| self.invalid(name, "is required"))
    }

    /// Codes are typed by people and matched exactly, so whitespace inside one is always a mistake.
    fn code(&self, name: &str) -> Result<String, ProductEventError> {
        let code = self.required_string(name)?;
        if code.chars().any(char::is_whitespace) {
            return Err(self.invalid(name, "must not contain whitespace"));
        }
        if code.chars().count() > MAX_CODE_CHARS {
            return Err(self.invalid(
                name,
                &format!("must be at most {MAX_CODE_CHARS} characters"),
            ));
        }
        Ok(code)
    }

    /// Reports and CRM fields show markets verbatim, so only a [`Market`] code gets in.
    fn market(&self, name: &str) -> Result<Option<String>, ProductEventError> {
        self.optional_string(name)?
            .map(|m| {
                Market::parse(&m)
                    .map(Market::into_string)
                    .map_err(|e| self.invalid(name, &e.to_string()))
            })
            .transpose()
    }

    fn timestamp_ms(&self, name: &str) -> Result<i64, ProductEventError> {
        let text = self.required_string(name)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| t.timestamp_millis())
            .map_err(|_| {
                self.invalid(
                    name,
                    "must be an RFC 3339 timestamp such as 2026-11-20T10:00:00Z",
                )
            })
    }

    fn optional_timestamp_ms(&self, name: &str) -> Result<Option<i64>, ProductEventError> {
        match self.present(name) {
            Some(_) => self.timestamp_ms(name).map(Some),
            None => Ok(None),
        }
    }

    /// An id another system gave (an invoice, a refund): any text up to [`MAX_ID_CHARS`].
    fn identifier(&self, name: &str) -> Result<String, ProductEventError> {
        let id = self.required_string(name)?;
        if id.chars().count() > MAX_ID_CHARS {
            return Err(self.invalid(name, &format!("must be at most {MAX_ID_CHARS} characters")));
        }
        Ok(id)
    }

    /// Money as a decimal string ("99.50"): a JSON number may already have lost its cents.
    fn positive_amount(&self, name: &str) -> Result<Decimal, ProductEventError> {
        let must = "must be a positive decimal string such as \"99.50\"";
        let amount = match self.present(name) {
            Some(Value::String(s)) => s
                .trim()
                .parse::<Decimal>()
                .map_err(|_| self.invalid(name, must))?,
            Some(_) => return Err(self.invalid(name, must)),
            None => return Err(self.invalid(name, "is required")),
        };
        if amount <= Decimal::ZERO {
            return Err(self.invalid(name, must));
        }
        Ok(amount)
    }

    /// A three-letter ISO code, uppercased.
    fn currency(&self, name: &str) -> Result<String, ProductEventError> {
        let code = self.required_string(name)?.to_ascii_uppercase();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(self.invalid(name, "must be a three-letter currency code such as USD"));
        }
        Ok(code)
    }

    /// A person or deal the CRMs know, as `crm:object_type:object_id`.
    fn crm_id(&self, name: &str) -> Result<Option<String>, ProductEventError> {
        let Some(text) = self.optional_string(name)? else {
            return Ok(None);
        };
        let mut parts = text.splitn(3, ':');
        let known = match (parts.next(), parts.next(), parts.next()) {
            (Some(crm), Some(object_type), Some(id)) => {
                !id.is_empty()
                    && id.chars().count() <= MAX_ID_CHARS
                    && !id.chars().any(char::is_whitespace)
                    && crm
                        .parse::<Crm>()
                        .is_ok_and(|crm| crm.kind_of(object_type).is_some())
            }
            _ => false,
        };
        if !known {
            return Err(self.invalid(
                name,
                "must name a CRM person or deal such as hubspot:contact:123 or salesforce:Contact:0035…",
            ));
        }
        Ok(Some(text))
    }

    /// An NPS score: a whole number from 0 to 10 (a number, or a string holding one).
    fn score(&self, name: &str) -> Result<u8, ProductEventError> {
        let score = match self.present(name) {
            None => return Err(self.invalid(name, "is required")),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        score
            .filter(|s| *s <= 10)
            .map(|s| s as u8)
            .ok_or_else(|| self.invalid(name, "must be a whole number from 0 to 10"))
    }

    fn ip(&self, name: &str) -> Result<Option<IpAddr>, ProductEventError> {
        match self.optional_string(name)? {
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(name, "must be an IP address")),
            None => Ok(None),
        }
    }

    fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, ProductEventError> {
        let not_strings = || self.invalid(name, "must be an object of strings");
        match self.present(name) {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(key, value)| match value {
                    Value::String(s) => Ok((key.clone(), s.clone())),
                    _ => Err(not_strings()),
                })
                .collect(),
            Some(_) => Err(not_strings()),
            None => Ok(BTreeMap::new()),
        }
    }
}

/// A plausibility check, not RFC 5322: one `@`, something before it, a dotted domain after it.
fn looks_like_email(email: &str) -> bool {
    if email.chars().count() > 254 || email.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, data: Value) -> Vec<u8> {
        serde_json::json!({
            "id": "evt_01JD3",
            "type": event_type,
            "occurred_at": "2026-11-20T10:00:00Z",
            "data": data,
        })
        .to_string()
        .into_bytes()
    }

    fn full_signup() -> Value {
        serde_json::json!({
            "email": "  Ana@NorthWind.IO ", "name": "Ana", "company": "Northwind",
            "referral_code": "ACME-7", "source": "link", "market": " us ",
            "utm": {"source": "partner", "campaign": "q4"}, "ip": "203.0.113.7"
        })
    }

    fn rejection(body: &[u8]) -> String {
        let error = parse_product_event(body).unwrap_err();
        assert!(!error.is_malformed(), "{error}");
        error.to_string()
    }

    fn without(mut data: Value, field: &str) -> Value {
        data.as_object_mut().unwrap().remove(field);
        data
    }

    fn with(mut data: Value, field: &str, value: Value) -> Value {
        data.as_object_mut()
            .unwrap()
            .insert(field.to_string(), value);
        data
    }

    #[test]
    fn source_names_are_the_enum_values() {
        let names: Vec<&str> = ReferralSource::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ReferralSource::NAMES);
    }

    #[test]
    fn signup_created_is_parsed_and_normalised() {
        let parsed = parse_product_event(&event("signup.created", full_signup())).unwrap();
        assert_eq!(parsed.id, "evt_01JD3");
        assert_eq!(parsed.event_type, "signup.created");
        assert_eq!(parsed.occurred_at_ms, 1_795_168_800_000);
        let ProductPayload::SignupCreated(data) = parsed.payload else {
            panic!("wrong payload {:?}", parsed.payload);
        };
        assert_eq!(data.email, "ana@northwind.io");
        assert_eq!(data.name.as_deref(), Some("Ana"));
        assert_eq!(data.company.as_deref(), Some("Northwind"));
        assert_eq!(data.referral_code.as_deref(), Some("ACME-7"));
        assert_eq!(data.source, Some(ReferralSource::Link));
        assert_eq!(data.market.as_deref(), Some("US"));
        assert_eq!(data.utm.get("campaign").map(String::as_str), Some("q4"));
        assert_eq!(data.ip, Some("203.0.113.7".parse().unwrap()));
        let stored = serde_json::to_value(&data).unwrap();
        assert_eq!(stored["source"], "link");
        assert_eq!(stored["ip"], "203.0.113.7");
    }

    #[test]
    fn signup_created_without_a_code_is_accepted() {
        let data = serde_json::json!({"email": "bo@example.com"});
        let parsed = parse_product_event(&event("signup.created", data)).unwrap();
        let ProductPayload::SignupCreated(data) = parsed.payload else {
            panic!("wrong payload");
        };
        assert_eq!(data.referral_code, None);
        assert_eq!(data.source, None);
        assert!(data.utm.is_empty());
    }

    #[test]
    fn referral_created_is_parsed() {
        let data = serde_json::json!({"email": "Bo@Example.com", "referral_code": "ACME-7", "source": "intro", "ip": "2001:db8::1"});
        let parsed = parse_product_event(&event("referral.created", data)).unwrap();
        let ProductPayload::ReferralCreated(data) = parsed.payload else {
            panic!("wrong payload");
        };
        assert_eq!(data.email, "bo@example.com");
        assert_eq!(data.source, Some(ReferralSource::Intro));
        assert_eq!(data.ip, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn partner_events_are_parsed() {
        let data = serde_json::json!({"code": "ACME-7", "email": "Lead@Acme.com", "name": "Acme", "company_domain": "ACME.com", "market": "de", "kind": "creator"});
        let parsed = parse_product_event(&event("partner.invited", data)).unwrap();
        assert_eq!(
            parsed.payload,
            ProductPayload::PartnerInvited(PartnerData {
                code: "ACME-7".into(),
                email: Some("lead@acme.com".into()),
                name: Some("Acme".into()),
                company_domain: Some("acme.com".into()),
                market: Some("DE".into()),
                kind: PartnerKind::Creator,
            })
        );
        let joined =
            parse_product_event(&event("partner.joined", serde_json::json!({"code": "X1"})))
                .unwrap();
        let ProductPayload::PartnerJoined(data) = joined.payload else {
            panic!("wrong payload");
        };
        assert_eq!(data.kind, PartnerKind::Partner);
        assert_eq!(data.email, None);
        // Named as signup events name it.
        let aliased = parse_product_event(&event(
            "partner.joined",
            serde_json::json!({"referral_code": "X2"}),
        ))
        .unwrap();
        let ProductPayload::PartnerJoined(data) = aliased.payload else {
            panic!("wrong payload");
        };
        assert_eq!(data.code, "X2");
    }

    #[test]
    fn signup_activated_is_parsed() {
        let parsed = parse_product_event(&event(
            "signup.activated",
            serde_json::json!({"email": "ANA@northwind.io"}),
        ))
        .unwrap();
        assert_eq!(
            parsed.payload,
            ProductPayload::SignupActivated(ActivationData {
                email: "ana@northwind.io".into()
            })
        );
    }

    #[test]
    fn advocacy_moments_are_parsed() {
        let nps = parse_product_event(&event(
            "nps.submitted",
            serde_json::json!({"email": " Ana@Northwind.io", "score": 10}),
        ))
        .unwrap();
        let as_text = parse_product_event(&event(
            "nps.submitted",
            serde_json::json!({"email": "ana@northwind.io", "score": "0"}),
        ))
        .unwrap();
        let onboarded = parse_product_event(&event(
            "onboarding.completed",
            serde_json::json!({"email": "ana@northwind.io"}),
        ))
        .unwrap();
        let usage = parse_product_event(&event(
            "usage.milestone",
            serde_json::json!({"email": "ana@northwind.io", "milestone": "100 invoices sent"}),
        ))
        .unwrap();

        assert_eq!(
            nps.payload,
            ProductPayload::Moment(MomentData {
                email: "ana@northwind.io".into(),
                kind: MomentKind::Nps,
                score: Some(10),
                milestone: None,
            })
        );
        assert!(matches!(
            as_text.payload,
            ProductPayload::Moment(MomentData { score: Some(0), .. })
        ));
        assert!(matches!(
            onboarded.payload,
            ProductPayload::Moment(MomentData {
                kind: MomentKind::Onboarding,
                ..
            })
        ));
        assert!(
            matches!(&usage.payload, ProductPayload::Moment(MomentData { kind: MomentKind::Usage, milestone: Some(m), .. }) if m == "100 invoices sent")
        );
    }

    #[test]
    fn advocacy_moments_name_what_is_missing_or_wrong() {
        let cases = [
            (
                "nps.submitted",
                serde_json::json!({"score": 9}),
                "data.email is required",
            ),
            (
                "nps.submitted",
                serde_json::json!({"email": "a@b.co"}),
                "data.score is required",
            ),
            (
                "nps.submitted",
                serde_json::json!({"email": "a@b.co", "score": 11}),
                "data.score must be a whole number from 0 to 10",
            ),
            (
                "nps.submitted",
                serde_json::json!({"email": "a@b.co", "score": 9.5}),
                "data.score must be a whole number from 0 to 10",
            ),
            (
                "nps.submitted",
                serde_json::json!({"email": "a@b.co", "score": -1}),
                "data.score must be a whole number from 0 to 10",
            ),
            (
                "onboarding.completed",
                serde_json::json!({}),
                "data.email is required",
            ),
            (
                "usage.milestone",
                serde_json::json!({"email": "a@b.co"}),
                "data.milestone is required",
            ),
        ];
        for (event_type, data, expected) in cases {
            assert_eq!(
                rejection(&event(event_type, data)),
                expected,
                "{event_type}"
            );
        }
    }

    #[test]
    fn unknown_types_are_accepted_without_data_checks() {
        let body = br#"{"id":"evt_9","type":"subscription.paused","occurred_at":"2026-11-20T10:00:00+02:00","data":[1,2]}"#;
        let parsed = parse_product_event(body).unwrap();
        assert_eq!(parsed.payload, ProductPayload::Unknown);
        assert_eq!(parsed.event_type, "subscription.paused");
        assert_eq!(parsed.occurred_at_ms, 1_795_161_600_000);
    }

    #[test]
    fn missing_envelope_fields_are_named() {
        let full = serde_json::json!({"id": "e", "type": "signup.created", "occurred_at": "2026-11-20T10:00:00Z", "data": {"email": "a@b.co"}});
        for field in ["id", "type", "occurred_at", "data"] {
            let body = without(full.clone(), field).to_string();
            assert_eq!(rejection(body.as_bytes()), format!("{field} is required"));
        }
        let blank_id = with(full.clone(), "id", Value::from("  ")).to_string();
        assert_eq!(rejection(blank_id.as_bytes()), "id is required");
        let long_id = with(full.clone(), "id", Value::from("x".repeat(201))).to_string();
        assert_eq!(
            rejection(long_id.as_bytes()),
            "id must be at most 200 characters"
        );
        let numeric_id = with(full.clone(), "id", Value::from(7)).to_string();
        assert_eq!(rejection(numeric_id.as_bytes()), "id must be a string");
        let data_string = with(full, "data", Value::from("x")).to_string();
        assert_eq!(rejection(data_string.as_bytes()), "data must be an object");
    }

    #[test]
    fn missing_data_fields_are_named() {
        let cases = [
            (
                "partner.invited",
                serde_json::json!({"email": "a@b.co"}),
                "data.code is required",
            ),
            (
                "partner.invited",
                serde_json::json!({"code": "C1"}),
                "data.email is required",
            ),
            (
                "partner.joined",
                serde_json::json!({"email": "a@b.co"}),
                "data.code is required",
            ),
            (
                "referral.created",
                serde_json::json!({"referral_code": "C1"}),
                "data.email is required",
            ),
            (
                "referral.created",
                serde_json::json!({"email": "a@b.co"}),
                "data.referral_code is required",
            ),
            (
                "signup.created",
                serde_json::json!({"referral_code": "C1"}),
                "data.email is required",
            ),
            (
                "signup.activated",
                serde_json::json!({}),
                "data.email is required",
            ),
        ];
        for (event_type, data, expected) in cases {
            assert_eq!(
                rejection(&event(event_type, data)),
                expected,
                "{event_type}"
            );
        }
    }

    fn invoice() -> Value {
        serde_json::json!({"email": " Ana@Northwind.io", "invoice_id": "in_1", "amount": "1200.50",
                           "currency": "usd", "paid_at": "2026-12-01T00:00:00Z",
                           "period_start": "2026-12-01T00:00:00Z", "period_end": "2027-01-01T00:00:00Z"})
    }

    fn refund() -> Value {
        serde_json::json!({"invoice_id": "in_1", "amount": "300", "currency": "USD",
                           "refunded_at": "2026-12-10T00:00:00Z"})
    }

    #[test]
    fn invoice_events_are_parsed() {
        let paid = parse_product_event(&event("invoice.paid", invoice())).unwrap();
        let ProductPayload::InvoicePaid(paid) = paid.payload else {
            panic!("wrong payload");
        };
        assert_eq!(paid.email.as_deref(), Some("ana@northwind.io"));
        assert_eq!(paid.invoice_id, "in_1");
        assert_eq!(paid.amount.to_string(), "1200.50");
        assert_eq!(paid.currency, "USD");
        assert_eq!(paid.paid_at, 1_796_083_200_000);
        assert_eq!(paid.period_end, Some(1_798_761_600_000));
        let by_record = with(
            without(invoice(), "email"),
            "crm_id",
            Value::from("salesforce:Contact:0037F00000RuRuRQAA"),
        );
        let ProductPayload::InvoicePaid(paid) =
            parse_product_event(&event("invoice.paid", by_record))
                .unwrap()
                .payload
        else {
            panic!("wrong payload");
        };
        assert_eq!(
            paid.crm_id.as_deref(),
            Some("salesforce:Contact:0037F00000RuRuRQAA")
        );

        let refunded = parse_product_event(&event("invoice.refunded", refund())).unwrap();
        let ProductPayload::InvoiceRefunded(refunded) = refunded.payload else {
            panic!("wrong payload");
        };
        assert_eq!(refunded.amount.to_string(), "300");
        assert_eq!(refunded.key(), "in_1@1796860800000");
        let with_id = with(refund(), "refund_id", Value::from("re_9"));
        let ProductPayload::InvoiceRefunded(refunded) =
            parse_product_event(&event("invoice.refunded", with_id))
                .unwrap()
                .payload
        else {
            panic!("wrong payload");
        };
        assert_eq!(refunded.key(), "re_9");
    }

    #[test]
    fn invoice_events_name_the_field_they_lack_or_break() {
        let cases = [
            ("invoice.paid", without(invoice(), "email"), "data.email is required (or data.crm_id, a CRM record such as hubspot:contact:123)"),
            ("invoice.paid", without(invoice(), "invoice_id"), "data.invoice_id is required"),
            ("invoice.paid", without(invoice(), "amount"), "data.amount is required"),
            ("invoice.paid", without(invoice(), "currency"), "data.currency is required"),
            ("invoice.paid", without(invoice(), "paid_at"), "data.paid_at is required"),
            ("invoice.paid", with(invoice(), "amount", Value::from(12.5)), "data.amount must be a positive decimal string such as \"99.50\""),
            ("invoice.paid", with(invoice(), "amount", Value::from("-3")), "data.amount must be a positive decimal string such as \"99.50\""),
            ("invoice.paid", with(invoice(), "amount", Value::from("1,200")), "data.amount must be a positive decimal string such as \"99.50\""),
            ("invoice.paid", with(invoice(), "currency", Value::from("dollars")), "data.currency must be a three-letter currency code such as USD"),
            ("invoice.paid", with(invoice(), "paid_at", Value::from("yesterday")), "data.paid_at must be an RFC 3339 timestamp such as 2026-11-20T10:00:00Z"),
            ("invoice.paid", with(invoice(), "period_end", Value::from("soon")), "data.period_end must be an RFC 3339 timestamp such as 2026-11-20T10:00:00Z"),
            ("invoice.paid", with(invoice(), "crm_id", Value::from("hubspot:company:1")), "data.crm_id must name a CRM person or deal such as hubspot:contact:123 or salesforce:Contact:0035…"),
            ("invoice.refunded", without(refund(), "invoice_id"), "data.invoice_id is required"),
            ("invoice.refunded", without(refund(), "amount"), "data.amount is required"),
            ("invoice.refunded", without(refund(), "refunded_at"), "data.refunded_at is required"),
            ("invoice.refunded", with(refund(), "amount", Value::from("0")), "data.amount must be a positive decimal string such as \"99.50\""),
        ];
        for (event_type, data, expected) in cases {
            assert_eq!(
                rejection(&event(event_type, data)),
                expected,
                "{event_type}"
            );
        }
    }

    #[test]
    fn bad_emails_are_rejected() {
        for bad in [
            "ana",
            "@northwind.io",
            "ana@northwind",
            "ana@@northwind.io",
            "a na@northwind.io",
            "ana@northwind.",
            "ana@.io",
            "a@b@c.io",
        ] {
            let data = with(full_signup(), "email", Value::from(bad));
            assert_eq!(
                rejection(&event("signup.created", data)),
                "data.email is not an email address",
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_optional_fields_are_rejected() {
        let cases = [
            (
                "ip",
                Value::from("203.0.113"),
                "data.ip must be an IP address",
            ),
            (
                "source",
                Value::from("email"),
                "data.source must be one of link, code, intro, pool",
            ),
            (
                "utm",
                serde_json::json!({"source": 1}),
                "data.utm must be an object of strings",
            ),
            (
                "utm",
                serde_json::json!(["partner"]),
                "data.utm must be an object of strings",
            ),
            ("name", Value::from(5), "data.name must be a string"),
            (
                "referral_code",
                Value::from(true),
                "data.referral_code must be a string",
            ),
        ];
        for (field, value, expected) in cases {
            let data = with(full_signup(), field, value);
            assert_eq!(rejection(&event("signup.created", data)), expected);
        }
    }

    #[test]
    fn bad_partner_fields_are_rejected() {
        let base = serde_json::json!({"code": "C1", "email": "a@b.co"});
        let cases = [
            (
                "kind",
                Value::from("vendor"),
                "data.kind must be one of customer, partner, creator",
            ),
            (
                "code",
                Value::from("AC ME"),
                "data.code must not contain whitespace",
            ),
            (
                "code",
                Value::from("C".repeat(65)),
                "data.code must be at most 64 characters",
            ),
            ("code", Value::from(7), "data.code must be a string"),
        ];
        for (field, value, expected) in cases {
            let data = with(base.clone(), field, value);
            assert_eq!(rejection(&event("partner.joined", data)), expected);
        }
        let at_limit = with(base, "code", Value::from("C".repeat(64)));
        assert!(parse_product_event(&event("partner.joined", at_limit)).is_ok());
    }

    #[test]
    fn bad_occurred_at_is_rejected() {
        for bad in [
            Value::from("2026-11-20 10:00"),
            Value::from("yesterday"),
            Value::from(1_700_000_000),
        ] {
            let body = with(
                serde_json::json!({"id": "e", "type": "x.y", "data": {}}),
                "occurred_at",
                bad.clone(),
            )
            .to_string();
            let message = rejection(body.as_bytes());
            assert!(
                message.starts_with("occurred_at must be"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn invalid_json_is_malformed() {
        for body in [&b"{\"id\": "[..], b"", b"[1,2]", b"\"text\"", b"\xff"] {
            let error = parse_product_event(body).unwrap_err();
            assert!(error.is_malformed(), "{error}");
            assert!(error.to_string().starts_with("invalid JSON"), "{error}");
        }
    }

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(
            normalize_email("  Ana.Lopez@NorthWind.IO\t"),
            "ana.lopez@northwind.io"
        );
        assert_eq!(normalize_email("ÉLO@Exämple.com"), "élo@exämple.com");
    }
}

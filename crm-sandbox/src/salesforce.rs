//! Salesforce side of the sandbox: the OAuth 2.0 client-credentials token endpoint, session
//! tokens and their expiry, and the REST data endpoints under `/services/data/{version}` (sObject
//! PATCH, sObject Collections update, platform event publish, describe) with Salesforce-shaped
//! error arrays and the `Sforce-Limit-Info` usage header. Field values are checked against the
//! types `describe` reports (a string in a Number field, `""` in a DateTime field, a value a
//! restricted pick-list lacks are refused), and a collection of more than ten type chunks is
//! refused, as Salesforce does.

use std::collections::{BTreeMap, HashMap, HashSet};

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::Sha256;

use super::{
    answer_after, bearer_token, record_request, segments, Crm, Failure, Gate, Inner, RecordedWrite,
    Reply, SandboxState,
};
use crate::Millis;

const DAILY_API_LIMIT: u64 = 15_000;
/// The pick-list values of `Referral_Ask_Moment__c`, as the README tells admins to create them.
const MOMENT_KINDS: [&str; 4] = ["nps", "onboarding", "usage", "renewal"];
const MAX_COLLECTION: usize = 200;
/// Type chunks per sObject Collections request.
const MAX_CHUNKS: usize = 10;
/// The `Referral_Reward_Status__c` pick-list as the README tells an admin to set it up.
pub const REWARD_STATUSES: [&str; 7] = [
    "pending",
    "eligible",
    "approved",
    "paid",
    "reversed",
    "needs_review",
    "rejected",
];
const ORG_ID: &str = "00D000000000001AAA";
const USER_ID: &str = "005000000000001AAA";

/// One field of an sObject in the sandbox org.
#[derive(Debug, Clone)]
struct FieldDef {
    name: String,
    /// As `describe` reports it: `string`, `double`, `currency`, `datetime`, `picklist`, `email`…
    kind: String,
    /// A pick-list's values.
    picklist: Vec<String>,
    /// A restricted pick-list refuses values it does not list.
    restricted: bool,
}

impl FieldDef {
    fn new(name: &str, kind: &str) -> Self {
        Self {
            name: name.to_string(),
            kind: kind.to_string(),
            picklist: Vec::new(),
            restricted: false,
        }
    }

    fn picklist(name: &str, values: &[&str], restricted: bool) -> Self {
        Self {
            picklist: values.iter().map(|v| (*v).to_string()).collect(),
            restricted,
            ..Self::new(name, "picklist")
        }
    }

    fn label(&self) -> String {
        self.name.trim_end_matches("__c").replace('_', " ")
    }

    fn is_number(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "double" | "currency" | "percent" | "int" | "long"
        )
    }
}

/// The fields of an org set up as the README describes (default names), per sObject.
fn org_schema(sobject: &str) -> Vec<FieldDef> {
    let mut fields = vec![
        FieldDef::new("Referral_Source__c", "string"),
        FieldDef::new("Referral_Code__c", "string"),
        FieldDef::new("Referred_By__c", "string"),
        // Tier names come from each deployment's config, so the sandbox lists none.
        FieldDef::picklist("Referrer_Tier__c", &[], false),
        FieldDef::new("Referral_Market__c", "string"),
        FieldDef::new("Referral_First_Touch__c", "datetime"),
        FieldDef::new("Name", "string"),
        FieldDef::new("Email", "email"),
    ];
    match sobject {
        "Opportunity" => fields.extend([
            FieldDef::picklist("Referral_Reward_Status__c", &REWARD_STATUSES, true),
            FieldDef::new("Referral_Reward_Amount__c", "double"),
            FieldDef::new("Referral_Reward_Currency__c", "string"),
            FieldDef::new("Referral_Reward_Hold_Until__c", "datetime"),
            FieldDef::picklist("StageName", &[], false),
            FieldDef::new("Amount", "currency"),
            FieldDef::picklist("CurrencyIsoCode", &[], false),
        ]),
        "Contact" => fields.extend([
            FieldDef::picklist("Referral_Referee_Reward_Status__c", &REWARD_STATUSES, true),
            FieldDef::new("Referral_Referee_Reward_Amount__c", "double"),
            FieldDef::new("Referral_Referee_Reward_Currency__c", "string"),
            FieldDef::picklist("Referral_Ask_Moment__c", &MOMENT_KINDS, true),
            FieldDef::new("Referral_Ask_At__c", "datetime"),
        ]),
        _ => {}
    }
    fields
}

pub(super) struct Store {
    /// Keyed by (canonical sObject name, id); values as received (a number keeps its JSON text,
    /// `null` is stored as "").
    records: HashMap<(String, String), BTreeMap<String, String>>,
    /// Known fields per sObject; an sObject absent here accepts any field as text.
    schemas: HashMap<String, Vec<FieldDef>>,
    tokens: HashSet<String>,
    issued: usize,
    api_usage: u64,
    pub(super) events: Vec<(String, Value)>,
}

impl Default for Store {
    fn default() -> Self {
        let schemas = ["Contact", "Lead", "Opportunity"]
            .into_iter()
            .map(|s| (s.to_string(), org_schema(s)))
            .collect();
        Self {
            records: HashMap::new(),
            schemas,
            tokens: HashSet::new(),
            issued: 0,
            api_usage: 0,
            events: Vec::new(),
        }
    }
}

/// Why a record was refused, in the words Salesforce uses.
struct FieldError {
    code: &'static str,
    message: String,
    fields: Vec<String>,
    /// The body could not be read at all (a JSON type mismatch): Salesforce refuses the whole
    /// request with 400, not just this record.
    whole_request: bool,
}

impl FieldError {
    fn record(code: &'static str, message: String, fields: Vec<String>) -> Self {
        Self {
            code,
            message,
            fields,
            whole_request: false,
        }
    }

    /// Salesforce's JSON deserialisation error for a value of the wrong JSON type.
    fn parser(target: &str, token: &Token) -> Self {
        let (kind, shown) = token.describe();
        Self {
            code: "JSON_PARSER_ERROR",
            message: format!(
                "Cannot deserialize instance of {target} from {kind} value {shown} or request may be missing a required field"
            ),
            fields: Vec::new(),
            whole_request: true,
        }
    }
}

/// One field value as the JSON parser sees it.
enum Token {
    Text(String),
    /// The number's JSON text, exactly as sent.
    Number(String),
    Bool(bool),
    Null,
    Array,
    Object,
}

impl Token {
    fn of(raw: &RawValue) -> Token {
        let text = raw.get().trim();
        match text.as_bytes().first() {
            Some(b'"') => Token::Text(serde_json::from_str(text).unwrap_or_default()),
            Some(b'[') => Token::Array,
            Some(b'{') => Token::Object,
            Some(b't') => Token::Bool(true),
            Some(b'f') => Token::Bool(false),
            Some(b'n') => Token::Null,
            _ => Token::Number(text.to_string()),
        }
    }

    /// Jackson's token name and the value as Salesforce's message shows it.
    fn describe(&self) -> (&'static str, String) {
        match self {
            Token::Text(s) => ("VALUE_STRING", s.clone()),
            Token::Number(n) if n.contains(['.', 'e', 'E']) => ("VALUE_NUMBER_FLOAT", n.clone()),
            Token::Number(n) => ("VALUE_NUMBER_INT", n.clone()),
            Token::Bool(true) => ("VALUE_TRUE", "true".into()),
            Token::Bool(false) => ("VALUE_FALSE", "false".into()),
            Token::Null => ("VALUE_NULL", "null".into()),
            Token::Array => ("START_ARRAY", "[".into()),
            Token::Object => ("START_OBJECT", "{".into()),
        }
    }

    /// How the record keeps it.
    fn stored(self) -> String {
        match self {
            Token::Text(s) | Token::Number(s) => s,
            Token::Bool(b) => b.to_string(),
            Token::Null | Token::Array | Token::Object => String::new(),
        }
    }
}

/// A record body: field name → its JSON value, unparsed.
type RawFields = BTreeMap<String, Box<RawValue>>;

/// A DateTime value as Salesforce reads it: ISO 8601 with a zone (`Z`, `+00:00` or `+0000`).
fn is_datetime(text: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(text).is_ok()
        || chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z").is_ok()
}

impl Store {
    pub(super) fn expire_sessions(&mut self) {
        self.tokens.clear();
    }

    pub(super) fn tokens_issued(&self) -> usize {
        self.issued
    }

    /// sObject names are case-insensitive; this is the spelling the org uses.
    fn sobject_name(&self, name: &str) -> String {
        self.schemas
            .keys()
            .chain(self.records.keys().map(|(s, _)| s))
            .find(|known| known.eq_ignore_ascii_case(name))
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    pub(super) fn seed(&mut self, sobject: &str, id: &str, fields: &[(&str, &str)]) {
        let sobject = self.sobject_name(sobject);
        for (field, _) in fields {
            if !self.knows(&sobject, field) {
                self.define(&sobject, FieldDef::new(field, "string"));
            }
        }
        let record = self.records.entry((sobject, id.to_string())).or_default();
        for (field, value) in fields {
            record.insert((*field).to_string(), (*value).to_string());
        }
    }

    fn knows(&self, sobject: &str, field: &str) -> bool {
        self.schemas
            .get(sobject)
            .is_some_and(|s| s.iter().any(|f| f.name.eq_ignore_ascii_case(field)))
    }

    /// Add `field` to the sObject, replacing a field of the same name.
    fn define(&mut self, sobject: &str, field: FieldDef) {
        let schema = self.schemas.entry(sobject.to_string()).or_default();
        schema.retain(|f| !f.name.eq_ignore_ascii_case(&field.name));
        schema.push(field);
    }

    pub(super) fn add_field(&mut self, sobject: &str, field: &str) {
        let sobject = self.sobject_name(sobject);
        // Without a field list every field is already accepted.
        if self.schemas.contains_key(&sobject) && !self.knows(&sobject, field) {
            self.define(&sobject, FieldDef::new(field, "string"));
        }
    }

    pub(super) fn define_field(
        &mut self,
        sobject: &str,
        field: &str,
        kind: &str,
        picklist: &[&str],
    ) {
        let sobject = self.sobject_name(sobject);
        let def = FieldDef {
            picklist: picklist.iter().map(|v| (*v).to_string()).collect(),
            ..FieldDef::new(field, kind)
        };
        self.define(&sobject, def);
    }

    pub(super) fn remove_field(&mut self, sobject: &str, field: &str) {
        let sobject = self.sobject_name(sobject);
        if !self.schemas.contains_key(&sobject) {
            // Start the list from what records already hold, so only `field` becomes unknown.
            let seen = self
                .record_fields(&sobject)
                .iter()
                .map(|name| FieldDef::new(name, "string"))
                .collect();
            self.schemas.insert(sobject.clone(), seen);
        }
        if let Some(schema) = self.schemas.get_mut(&sobject) {
            schema.retain(|f| !f.name.eq_ignore_ascii_case(field));
        }
    }

    fn record_fields(&self, sobject: &str) -> Vec<String> {
        let mut fields: Vec<String> = self
            .records
            .iter()
            .filter(|((s, _), _)| s == sobject)
            .flat_map(|(_, record)| record.keys().cloned())
            .collect();
        fields.sort();
        fields.dedup();
        fields
    }

    /// The sObject's fields as `describe` reports them.
    fn described(&self, sobject: &str) -> Option<Vec<FieldDef>> {
        match self.schemas.get(sobject) {
            Some(fields) => Some(fields.clone()),
            None if self.records.keys().any(|(s, _)| s == sobject) => Some(
                self.record_fields(sobject)
                    .iter()
                    .map(|name| FieldDef::new(name, "string"))
                    .collect(),
            ),
            None => None,
        }
    }

    pub(super) fn record(&self, sobject: &str, id: &str) -> Option<BTreeMap<String, String>> {
        self.records
            .get(&(self.sobject_name(sobject), id.to_string()))
            .cloned()
    }

    /// Checks a record body against the sObject's fields and their types; returns the values by
    /// canonical name.
    fn check_fields(
        &self,
        sobject: &str,
        body: RawFields,
        skip: &[&str],
    ) -> Result<BTreeMap<String, String>, FieldError> {
        let schema = self.schemas.get(sobject);
        let mut out = BTreeMap::new();
        for (name, raw) in body {
            if skip.iter().any(|s| s.eq_ignore_ascii_case(&name)) {
                continue;
            }
            let def = match schema {
                _ if !is_identifier(&name) => None,
                None => Some(FieldDef::new(&name, "string")),
                Some(fields) => fields
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case(&name))
                    .cloned(),
            };
            let Some(def) = def else {
                return Err(FieldError::record(
                    "INVALID_FIELD",
                    format!("No such column '{name}' on sobject of type {sobject}"),
                    vec![name],
                ));
            };
            let token = Token::of(&raw);
            check_value(&def, &token)?;
            out.insert(def.name, token.stored());
        }
        Ok(out)
    }
}

/// Whether `token` is a value the field accepts, as Salesforce decides it.
fn check_value(def: &FieldDef, token: &Token) -> Result<(), FieldError> {
    match token {
        Token::Array | Token::Object => return Err(FieldError::parser("string", token)),
        Token::Null => return Ok(()),
        _ => {}
    }
    if def.is_number() {
        return match token {
            Token::Number(_) => Ok(()),
            _ => Err(FieldError::parser(&def.kind, token)),
        };
    }
    match (def.kind.as_str(), token) {
        ("datetime", Token::Text(text)) if is_datetime(text) => Ok(()),
        ("date", Token::Text(text))
            if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() =>
        {
            Ok(())
        }
        ("datetime" | "date", _) => Err(FieldError::parser(&def.kind, token)),
        ("boolean", Token::Bool(_)) => Ok(()),
        ("boolean", _) => Err(FieldError::parser("boolean", token)),
        ("picklist", Token::Text(value))
            if def.restricted && !value.is_empty() && !def.picklist.contains(value) =>
        {
            Err(FieldError::record(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                format!(
                    "{}: bad value for restricted picklist field: {value}",
                    def.label()
                ),
                vec![def.name.clone()],
            ))
        }
        _ => Ok(()),
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn errors(status: u16, code: &str, message: impl Into<String>) -> Reply {
    Reply::json(
        status,
        json!([{ "message": message.into(), "errorCode": code }]),
    )
}

fn not_found() -> Reply {
    errors(404, "NOT_FOUND", "The requested resource does not exist")
}

fn parse_json(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body).map_err(|e| {
        errors(
            400,
            "JSON_PARSER_ERROR",
            format!("{e} at [line:{}, column:{}]", e.line(), e.column()),
        )
    })
}

fn random_hex(len: usize) -> String {
    let mut out = String::new();
    while out.len() < len {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(len);
    out
}

fn failure_reply(failure: &Failure) -> Reply {
    match failure {
        Failure::Status(503) => errors(
            503,
            "SERVER_UNAVAILABLE",
            "Server temporarily unavailable. Please try again later.",
        ),
        Failure::Status(status) => errors(
            *status,
            "UNKNOWN_EXCEPTION",
            format!(
                "An unexpected error occurred. Please include this ErrorId if you contact support: {}",
                random_hex(12)
            ),
        ),
        Failure::RateLimit | Failure::DailyLimit => {
            errors(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        }
        // Handled around routing; carrying the request out is the point of these.
        Failure::Delay(_) | Failure::AnswerLate(_) => errors(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred."),
    }
}

pub(super) async fn handle(state: &SandboxState, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let segs = segments(req.path());
    if segs == ["services", "oauth2", "token"] {
        // The token endpoint is not subject to injected failures or outages.
        let mut inner = state.lock();
        let now = state.now();
        let reply = issue_token(state, &mut inner, req, body, now);
        record_request(&mut inner, Crm::Salesforce, req, reply.status, now);
        drop(inner);
        return reply.into_response();
    }
    let is_data = segs.starts_with(&["services", "data"]);
    let (gate, usage) = {
        let mut inner = state.lock();
        let authorized = bearer_token(req).is_some_and(|t| inner.salesforce.tokens.contains(t));
        let gate = if !is_data {
            Gate::Answer(not_found())
        } else if !authorized {
            Gate::Answer(
                errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
                    .header("www-authenticate", "Token".to_string()),
            )
        } else {
            inner.salesforce.api_usage += 1;
            Gate::from_failure(inner.take_failure(Crm::Salesforce), failure_reply)
        };
        (gate, inner.salesforce.api_usage)
    };
    let (early, answer_late) = gate.pass().await;
    let reply = {
        let mut inner = state.lock();
        let now = state.now();
        let reply =
            early.unwrap_or_else(|| match route(state, &mut inner, req, &segs, body, now) {
                Ok(reply) | Err(reply) => reply,
            });
        let reply = if is_data {
            reply.header(
                "sforce-limit-info",
                format!("api-usage={usage}/{DAILY_API_LIMIT}"),
            )
        } else {
            reply
        };
        record_request(&mut inner, Crm::Salesforce, req, reply.status, now);
        reply
    };
    answer_after(answer_late, reply).await
}

fn oauth_error(error: &str, description: &str) -> Reply {
    Reply::json(
        400,
        json!({ "error": error, "error_description": description }),
    )
}

/// Client credentials sent as HTTP Basic auth, which Salesforce accepts instead of body fields.
fn basic_auth(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

fn issue_token(
    state: &SandboxState,
    inner: &mut Inner,
    req: &HttpRequest,
    body: &[u8],
    now: Millis,
) -> Reply {
    if req.method() != actix_web::http::Method::POST {
        return oauth_error("invalid_request", "must use HTTP POST");
    }
    let params = std::str::from_utf8(body)
        .ok()
        .and_then(|b| web::Query::<Vec<(String, String)>>::from_query(b).ok())
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let basic = basic_auth(req);
    let client_id = param("client_id").or_else(|| basic.as_ref().map(|b| b.0.clone()));
    let secret = param("client_secret").or_else(|| basic.as_ref().map(|b| b.1.clone()));
    let config = &state.config;
    if param("grant_type").as_deref() != Some("client_credentials") {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    if client_id.as_deref() != Some(config.salesforce_client_id.as_str()) {
        return oauth_error("invalid_client_id", "client identifier invalid");
    }
    if secret.as_deref() != Some(config.salesforce_client_secret.as_str()) {
        return oauth_error("invalid_client", "invalid client credentials");
    }
    let token = format!("00DSANDBOX!{}", random_hex(64));
    let id = format!("{}/id/{ORG_ID}/{USER_ID}", state.base_url);
    let issued_at = now.to_string();
    // Salesforce signs id + issued_at with the consumer secret so clients can verify the answer.
    let mut mac = Hmac::<Sha256>::new_from_slice(config.salesforce_client_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    inner.salesforce.tokens.insert(token.clone());
    inner.salesforce.issued += 1;
    Reply::json(
        200,
        json!({
            "access_token": token,
            "instance_url": state.base_url,
            "id": id,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
        }),
    )
}

fn route(
    state: &SandboxState,
    inner: &mut Inner,
    req: &HttpRequest,
    segs: &[&str],
    body: &[u8],
    now: Millis,
) -> Result<Reply, Reply> {
    let Some((version, rest)) = segs.get(2..).and_then(<[&str]>::split_first) else {
        return Err(not_found());
    };
    if *version != state.config.salesforce_api_version {
        return Err(not_found());
    }
    match (req.method().as_str(), rest) {
        ("PATCH", ["sobjects", sobject, id]) => update(state, inner, sobject, id, body, now),
        ("GET", ["sobjects", sobject, "describe"]) => describe(inner, sobject),
        ("GET", ["sobjects", sobject, id]) => read(state, inner, sobject, id),
        ("POST", ["sobjects", sobject]) if sobject.to_ascii_lowercase().ends_with("__e") => {
            publish(inner, sobject, body)
        }
        ("PATCH", ["composite", "sobjects"]) => collection_update(state, inner, body, now),
        _ => Err(not_found()),
    }
}

fn exists_or_creatable(state: &SandboxState, inner: &Inner, sobject: &str, id: &str) -> bool {
    state.config.auto_create
        || inner
            .salesforce
            .records
            .contains_key(&(sobject.to_string(), id.to_string()))
}

fn apply(
    inner: &mut Inner,
    sobject: &str,
    id: &str,
    values: BTreeMap<String, String>,
    now: Millis,
) {
    inner
        .salesforce
        .records
        .entry((sobject.to_string(), id.to_string()))
        .or_default()
        .extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
    inner.writes.push(RecordedWrite {
        crm: Crm::Salesforce,
        object_type: sobject.to_string(),
        id: id.to_string(),
        properties: values,
        at: now,
    });
}

fn update(
    state: &SandboxState,
    inner: &mut Inner,
    sobject: &str,
    id: &str,
    body: &[u8],
    now: Millis,
) -> Result<Reply, Reply> {
    let sobject = inner.salesforce.sobject_name(sobject);
    if !parse_json(body)?.is_object() {
        return Err(errors(
            400,
            "JSON_PARSER_ERROR",
            format!("Cannot deserialize instance of {sobject} from a non-object value"),
        ));
    }
    let fields = raw_fields(body)?;
    let values = inner
        .salesforce
        .check_fields(&sobject, fields, &["attributes", "Id"])
        .map_err(|e| {
            Reply::json(
                400,
                json!([{ "message": e.message, "errorCode": e.code, "fields": [] }]),
            )
        })?;
    if !exists_or_creatable(state, inner, &sobject, id) {
        return Err(not_found());
    }
    apply(inner, &sobject, id, values, now);
    Ok(Reply::empty(204))
}

fn read(state: &SandboxState, inner: &Inner, sobject: &str, id: &str) -> Result<Reply, Reply> {
    let sobject = inner.salesforce.sobject_name(sobject);
    let record = inner
        .salesforce
        .records
        .get(&(sobject.clone(), id.to_string()))
        .ok_or_else(not_found)?;
    let mut json = json!({
        "attributes": {
            "type": sobject,
            "url": format!(
                "/services/data/{}/sobjects/{sobject}/{id}",
                state.config.salesforce_api_version
            ),
        },
        "Id": id,
    });
    let schema = inner.salesforce.described(&sobject).unwrap_or_default();
    for (field, value) in record {
        let def = schema.iter().find(|f| f.name == *field);
        // Salesforce answers with typed JSON: numbers, booleans, and null for an empty field.
        json[field] = match def {
            _ if value.is_empty() => Value::Null,
            Some(def) if def.is_number() => {
                serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.clone()))
            }
            Some(def) if def.kind == "boolean" => Value::Bool(value == "true"),
            _ => Value::String(value.clone()),
        };
    }
    Ok(Reply::json(200, json))
}

fn describe(inner: &Inner, sobject: &str) -> Result<Reply, Reply> {
    let store = &inner.salesforce;
    let sobject = store.sobject_name(sobject);
    let Some(fields) = store.described(&sobject) else {
        return Err(not_found());
    };
    let mut described = vec![json!({
        "name": "Id", "label": "Record ID", "type": "id", "custom": false, "updateable": false,
        "picklistValues": [], "restrictedPicklist": false,
    })];
    described.extend(fields.iter().map(|f| {
        json!({
            "name": f.name,
            "label": f.label(),
            "type": f.kind,
            "custom": f.name.ends_with("__c"),
            "updateable": true,
            "picklistValues": f.picklist.iter().map(|value| json!({
                "value": value, "label": value, "active": true, "defaultValue": false,
            })).collect::<Vec<_>>(),
            "restrictedPicklist": f.restricted,
        })
    }));
    Ok(Reply::json(
        200,
        json!({
            "name": sobject,
            "label": sobject,
            "custom": sobject.ends_with("__c"),
            "fields": described,
        }),
    ))
}

fn publish(inner: &mut Inner, event: &str, body: &[u8]) -> Result<Reply, Reply> {
    let body = parse_json(body)?;
    if !body.is_object() {
        return Err(errors(
            400,
            "JSON_PARSER_ERROR",
            format!("Cannot deserialize instance of {event} from a non-object value"),
        ));
    }
    inner.salesforce.events.push((event.to_string(), body));
    Ok(Reply::json(
        201,
        json!({
            "id": format!("e01{}", random_hex(15)),
            "success": true,
            "errors": [{
                "statusCode": "OPERATION_ENQUEUED",
                "message": uuid::Uuid::new_v4().to_string(),
                "fields": [],
            }],
        }),
    ))
}

/// One record of an sObject Collections update that passed validation.
struct Checked {
    sobject: String,
    id: String,
    values: BTreeMap<String, String>,
}

/// An sObject Collections body with each record's values unparsed.
#[derive(serde::Deserialize)]
struct RawCollection {
    records: Vec<RawFields>,
}

/// A record body with each value unparsed; the caller has checked it is an object.
fn raw_fields(body: &[u8]) -> Result<RawFields, Reply> {
    serde_json::from_slice(body).map_err(|e| errors(400, "JSON_PARSER_ERROR", e.to_string()))
}

fn collection_update(
    state: &SandboxState,
    inner: &mut Inner,
    body_bytes: &[u8],
    now: Millis,
) -> Result<Reply, Reply> {
    let body = parse_json(body_bytes)?;
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return Err(errors(
            400,
            "JSON_PARSER_ERROR",
            "Required field 'records' is missing or not an array",
        ));
    };
    if records.len() > MAX_COLLECTION {
        return Err(errors(
            400,
            "EXCEEDED_ID_LIMIT",
            format!("record limit reached. cannot submit more than {MAX_COLLECTION} records into this call"),
        ));
    }
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // The same body again with each value unparsed, for the typed field checks.
    let raw_records = serde_json::from_slice::<RawCollection>(body_bytes)
        .map(|c| c.records)
        .unwrap_or_default();
    let mut checked: Vec<(Option<String>, Result<Checked, FieldError>)> = Vec::new();
    let mut chunks = 0;
    let mut last_type: Option<String> = None;
    for (i, record) in records.iter().enumerate() {
        let Some(fields) = record.as_object() else {
            return Err(errors(
                400,
                "JSON_PARSER_ERROR",
                "Each record must be a JSON object",
            ));
        };
        // A record without attributes.type makes the request malformed, not just the record.
        let Some(sobject) = record.pointer("/attributes/type").and_then(Value::as_str) else {
            return Err(errors(
                400,
                "INVALID_TYPE",
                "Must send a concrete entity type: every record needs attributes.type",
            ));
        };
        let sobject = inner.salesforce.sobject_name(sobject);
        // Records are processed in chunks: a new one wherever the type changes.
        if last_type.as_deref() != Some(sobject.as_str()) {
            chunks += 1;
            last_type = Some(sobject.clone());
        }
        let id = fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("id"))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_string);
        let raw = raw_records.get(i).cloned().unwrap_or_default();
        let outcome = match &id {
            None => Err(FieldError::record(
                "MISSING_ARGUMENT",
                "Id not specified in an update call".into(),
                vec!["Id".into()],
            )),
            Some(id) => inner
                .salesforce
                .check_fields(&sobject, raw, &["attributes", "Id"])
                .and_then(|values| {
                    if exists_or_creatable(state, inner, &sobject, id) {
                        Ok(Checked {
                            sobject: sobject.clone(),
                            id: id.clone(),
                            values,
                        })
                    } else {
                        Err(FieldError::record(
                            "INVALID_CROSS_REFERENCE_KEY",
                            "invalid cross reference id".into(),
                            Vec::new(),
                        ))
                    }
                }),
        };
        // A value of the wrong JSON type fails the parse of the whole body.
        if let Err(e) = &outcome {
            if e.whole_request {
                return Err(Reply::json(
                    400,
                    json!([{ "message": e.message, "errorCode": e.code }]),
                ));
            }
        }
        checked.push((id, outcome));
    }
    if chunks > MAX_CHUNKS {
        return Err(errors(
            400,
            "INVALID_BATCH_SIZE",
            "Cannot have more than 10 chunks in a single operation. Please rearrange the data to reduce chunking.",
        ));
    }
    let roll_back = all_or_none && checked.iter().any(|(_, outcome)| outcome.is_err());
    let results: Vec<Value> = checked
        .into_iter()
        .map(|(id, outcome)| match outcome {
            Ok(_) if roll_back => json!({
                "id": id,
                "success": false,
                "errors": [{
                    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    "fields": [],
                }],
            }),
            Ok(record) => {
                apply(inner, &record.sobject, &record.id, record.values, now);
                json!({ "id": id, "success": true, "errors": [] })
            }
            Err(e) => json!({
                "id": id,
                "success": false,
                "errors": [{ "statusCode": e.code, "message": e.message, "fields": e.fields }],
            }),
        })
        .collect();
    Ok(Reply::json(200, Value::Array(results)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{start, Started};
    use super::super::{Crm, Failure, SandboxConfig};
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use serde_json::{json, Value};
    use sha2::Sha256;

    fn data_url(s: &Started, rest: &str) -> String {
        format!("{}/services/data/v62.0{rest}", s.sandbox.base_url)
    }

    async fn token(s: &Started) -> String {
        let resp = reqwest::Client::new()
            .post(format!("{}/services/oauth2/token", s.sandbox.base_url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "sandbox-client"),
                ("client_secret", "sandbox-secret"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn patch(s: &Started, token: &str, rest: &str, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .patch(data_url(s, rest))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(s: &Started, token: &str, rest: &str) -> Value {
        reqwest::Client::new()
            .get(data_url(s, rest))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn limit_info(resp: &reqwest::Response) -> Option<String> {
        resp.headers()
            .get("sforce-limit-info")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn client_credentials_token_then_patch_is_204() {
        let s = start(SandboxConfig::default()).await;
        let url = format!("{}/services/oauth2/token", s.sandbox.base_url);
        let resp = reqwest::Client::new()
            .post(&url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "sandbox-client"),
                ("client_secret", "sandbox-secret"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let access = body["access_token"].as_str().unwrap();
        assert!(access.starts_with("00DSANDBOX!"));
        assert_eq!(body["instance_url"], s.sandbox.base_url.as_str());
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["issued_at"], "1700000000000");
        let id = body["id"].as_str().unwrap();
        assert_eq!(
            id,
            format!(
                "{}/id/00D000000000001AAA/005000000000001AAA",
                s.sandbox.base_url
            )
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"sandbox-secret").unwrap();
        mac.update(format!("{id}1700000000000").as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(body["signature"], expected.as_str());
        assert_eq!(s.sandbox.state.tokens_issued(), 1);

        let resp = patch(
            &s,
            access,
            "/sobjects/Opportunity/006000000000001AAA",
            json!({ "Referral_Source__c": "partner:acme", "amount": 250.5 }),
        )
        .await;
        assert_eq!(resp.status(), 204);
        assert_eq!(limit_info(&resp).as_deref(), Some("api-usage=1/15000"));
        assert!(resp.bytes().await.unwrap().is_empty());
        let record = s
            .sandbox
            .state
            .salesforce_record("Opportunity", "006000000000001AAA")
            .unwrap();
        assert_eq!(record["Referral_Source__c"], "partner:acme");
        // Field names are case-insensitive; the org's spelling is kept.
        assert_eq!(record["Amount"], "250.5");

        let refused = [
            (
                ("client_credentials", "sandbox-client", "wrong"),
                "invalid_client",
            ),
            (
                ("client_credentials", "other", "sandbox-secret"),
                "invalid_client_id",
            ),
            (
                ("password", "sandbox-client", "sandbox-secret"),
                "unsupported_grant_type",
            ),
        ];
        for ((grant, id, secret), error) in refused {
            let resp = reqwest::Client::new()
                .post(&url)
                .form(&[
                    ("grant_type", grant),
                    ("client_id", id),
                    ("client_secret", secret),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400);
            assert_eq!(resp.json::<Value>().await.unwrap()["error"], error);
        }
        // HTTP Basic client authentication is accepted too.
        let resp = reqwest::Client::new()
            .post(&url)
            .basic_auth("sandbox-client", Some("sandbox-secret"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(s.sandbox.state.tokens_issued(), 2);
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn expired_sessions_are_401_until_a_new_token() {
        let s = start(SandboxConfig::default()).await;
        let old = token(&s).await;
        let body = json!({ "Referral_Code__c": "R1" });
        let first = patch(&s, &old, "/sobjects/Contact/003A", body.clone()).await;
        assert_eq!(first.status(), 204);
        assert_eq!(limit_info(&first).as_deref(), Some("api-usage=1/15000"));

        s.sandbox.state.expire_salesforce_sessions();
        let resp = patch(&s, &old, "/sobjects/Contact/003A", body.clone()).await;
        assert_eq!(resp.status(), 401);
        assert!(limit_info(&resp).is_some());
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!([{ "message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID" }])
        );
        let anonymous = reqwest::Client::new()
            .patch(data_url(&s, "/sobjects/Contact/003A"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);

        let fresh = token(&s).await;
        let resp = patch(&s, &fresh, "/sobjects/Contact/003A", body).await;
        assert_eq!(resp.status(), 204);
        assert_eq!(limit_info(&resp).as_deref(), Some("api-usage=2/15000"));
        assert_eq!(s.sandbox.state.writes().len(), 2);
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn unknown_fields_ids_and_versions_are_refused() {
        let s = start(SandboxConfig {
            auto_create: false,
            ..SandboxConfig::default()
        })
        .await;
        let state = &s.sandbox.state;
        state.seed_salesforce("Opportunity", "006A", &[("StageName", "Prospecting")]);
        let t = token(&s).await;

        let resp = patch(
            &s,
            &t,
            "/sobjects/Opportunity/006A",
            json!({ "Bogus__c": "x" }),
        )
        .await;
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!([{
                "message": "No such column 'Bogus__c' on sobject of type Opportunity",
                "errorCode": "INVALID_FIELD",
                "fields": [],
            }])
        );

        let write = json!({ "Referral_Source__c": "partner:acme" });
        state.remove_salesforce_field("Opportunity", "Referral_Source__c");
        let resp = patch(&s, &t, "/sobjects/Opportunity/006A", write.clone()).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.json::<Value>().await.unwrap()[0]["errorCode"],
            "INVALID_FIELD"
        );
        let described: Value = get_json(&s, &t, "/sobjects/Opportunity/describe").await;
        let names: Vec<&str> = described["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"Referral_Code__c"));
        assert!(!names.contains(&"Referral_Source__c"));
        assert!(state.writes().is_empty());

        state.add_salesforce_field("Opportunity", "Referral_Source__c");
        assert_eq!(
            patch(&s, &t, "/sobjects/Opportunity/006A", write.clone())
                .await
                .status(),
            204
        );

        let resp = patch(&s, &t, "/sobjects/Opportunity/006MISSING", write.clone()).await;
        assert_eq!(resp.status(), 404);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!([{ "errorCode": "NOT_FOUND", "message": "The requested resource does not exist" }])
        );
        let resp = reqwest::Client::new()
            .patch(format!(
                "{}/services/data/v58.0/sobjects/Opportunity/006A",
                s.sandbox.base_url
            ))
            .bearer_auth(&t)
            .json(&write)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(
            resp.json::<Value>().await.unwrap()[0]["errorCode"],
            "NOT_FOUND"
        );
        assert_eq!(state.writes().len(), 1);
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn collection_update_reports_each_record_in_order() {
        let s = start(SandboxConfig {
            auto_create: false,
            ..SandboxConfig::default()
        })
        .await;
        let state = &s.sandbox.state;
        state.seed_salesforce("Opportunity", "006A", &[]);
        state.seed_salesforce("Opportunity", "006B", &[]);
        let t = token(&s).await;
        let opp = |id: &str, field: &str| json!({ "attributes": { "type": "Opportunity" }, "id": id, field: "v" });
        let resp = patch(
            &s,
            &t,
            "/composite/sobjects",
            json!({ "allOrNone": false, "records": [
                opp("006A", "Referral_Code__c"),
                opp("006B", "Nope__c"),
                opp("006C", "Referral_Code__c"),
            ] }),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert!(limit_info(&resp).is_some());
        let results: Value = resp.json().await.unwrap();
        assert_eq!(
            results[0],
            json!({ "id": "006A", "success": true, "errors": [] })
        );
        assert_eq!(results[1]["success"], false);
        assert_eq!(results[1]["errors"][0]["statusCode"], "INVALID_FIELD");
        assert_eq!(results[1]["errors"][0]["fields"], json!(["Nope__c"]));
        assert_eq!(results[2]["success"], false);
        assert_eq!(results[2]["id"], "006C");
        assert_eq!(
            state.salesforce_record("Opportunity", "006A").unwrap()["Referral_Code__c"],
            "v"
        );
        assert!(state
            .salesforce_record("Opportunity", "006B")
            .unwrap()
            .is_empty());
        assert_eq!(state.writes().len(), 1);

        let resp = patch(
            &s,
            &t,
            "/composite/sobjects",
            json!({ "allOrNone": true, "records": [
                opp("006B", "Referral_Code__c"),
                opp("006A", "Nope__c"),
            ] }),
        )
        .await;
        let results: Value = resp.json().await.unwrap();
        assert_eq!(
            results[0]["errors"][0]["statusCode"],
            "ALL_OR_NONE_OPERATION_ROLLED_BACK"
        );
        assert_eq!(results[1]["errors"][0]["statusCode"], "INVALID_FIELD");
        assert_eq!(state.writes().len(), 1);

        let many: Vec<Value> = (0..201).map(|_| opp("006A", "Referral_Code__c")).collect();
        let resp = patch(&s, &t, "/composite/sobjects", json!({ "records": many })).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.json::<Value>().await.unwrap()[0]["errorCode"],
            "EXCEEDED_ID_LIMIT"
        );
        assert_eq!(state.writes().len(), 1);
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn a_collection_of_more_than_ten_type_chunks_is_refused() {
        let s = start(SandboxConfig::default()).await;
        let t = token(&s).await;
        let record = |sobject: &str, i: usize| json!({ "attributes": { "type": sobject }, "id": format!("{i:03}"), "Referral_Code__c": "R" });
        // Contact, Opportunity, Contact, … : each record starts a chunk.
        let alternating: Vec<Value> = (0..24)
            .map(|i| record(if i % 2 == 0 { "Contact" } else { "Opportunity" }, i))
            .collect();
        let resp = patch(
            &s,
            &t,
            "/composite/sobjects",
            json!({ "records": alternating }),
        )
        .await;
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!([{
                "message": "Cannot have more than 10 chunks in a single operation. Please rearrange the data to reduce chunking.",
                "errorCode": "INVALID_BATCH_SIZE",
            }])
        );
        assert!(s.sandbox.state.writes().is_empty());

        // The same records grouped by type are two chunks.
        let grouped: Vec<Value> = (0..24)
            .map(|i| record(if i < 12 { "Contact" } else { "Opportunity" }, i))
            .collect();
        let resp = patch(&s, &t, "/composite/sobjects", json!({ "records": grouped })).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(s.sandbox.state.writes().len(), 24);
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn field_values_must_have_the_type_describe_reports() {
        let s = start(SandboxConfig::default()).await;
        let state = &s.sandbox.state;
        let t = token(&s).await;
        let opp = "/sobjects/Opportunity/006A";
        let refused = [
            (
                json!({ "Referral_Reward_Amount__c": "5000.00" }),
                "Cannot deserialize instance of double from VALUE_STRING value 5000.00 or request may be missing a required field",
            ),
            (
                json!({ "Referral_Reward_Hold_Until__c": "" }),
                "Cannot deserialize instance of datetime from VALUE_STRING value  or request may be missing a required field",
            ),
            (
                json!({ "Referral_Reward_Hold_Until__c": 1795168800000_i64 }),
                "Cannot deserialize instance of datetime from VALUE_NUMBER_INT value 1795168800000 or request may be missing a required field",
            ),
        ];
        for (body, message) in refused {
            let resp = patch(&s, &t, opp, body.clone()).await;
            assert_eq!(resp.status(), 400, "{body}");
            let errors: Value = resp.json().await.unwrap();
            assert_eq!(errors[0]["errorCode"], "JSON_PARSER_ERROR");
            assert_eq!(errors[0]["message"], message);
        }
        let resp = patch(
            &s,
            &t,
            opp,
            json!({ "Referral_Reward_Status__c": "approved-ish" }),
        )
        .await;
        assert_eq!(resp.status(), 400);
        let errors: Value = resp.json().await.unwrap();
        assert_eq!(
            errors[0]["errorCode"],
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        );
        assert_eq!(
            errors[0]["message"],
            "Referral Reward Status: bad value for restricted picklist field: approved-ish"
        );
        assert!(state.writes().is_empty());

        // Numbers keep their exact text; null clears; a DateTime takes ISO 8601.
        let body = r#"{"Referral_Reward_Amount__c": 12345678901234.50, "Referral_Reward_Hold_Until__c": null,
            "Referral_First_Touch__c": "2026-11-20T10:00:00.000+0000", "Referral_Reward_Status__c": "needs_review"}"#;
        let resp = reqwest::Client::new()
            .patch(data_url(&s, opp))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        let record = state.salesforce_record("Opportunity", "006A").unwrap();
        assert_eq!(record["Referral_Reward_Amount__c"], "12345678901234.50");
        assert_eq!(record["Referral_Reward_Hold_Until__c"], "");
        let read: Value = get_json(&s, &t, opp).await;
        assert_eq!(read["Referral_Reward_Amount__c"], json!(12345678901234.5));
        assert_eq!(read["Referral_Reward_Hold_Until__c"], Value::Null);
        assert_eq!(read["Referral_Reward_Status__c"], "needs_review");

        // In a collection a value of the wrong JSON type fails the whole request.
        let resp = patch(
            &s,
            &t,
            "/composite/sobjects",
            json!({ "records": [
                { "attributes": { "type": "Opportunity" }, "id": "006A", "Referral_Code__c": "R" },
                { "attributes": { "type": "Opportunity" }, "id": "006B", "Referral_Reward_Amount__c": "1.00" },
            ] }),
        )
        .await;
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.json::<Value>().await.unwrap()[0]["errorCode"],
            "JSON_PARSER_ERROR"
        );
        assert_eq!(state.writes().len(), 1);

        let described: Value = get_json(&s, &t, "/sobjects/Opportunity/describe").await;
        let field = |name: &str| {
            described["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .cloned()
                .unwrap()
        };
        assert_eq!(field("Referral_Reward_Amount__c")["type"], "double");
        assert_eq!(field("Referral_Reward_Hold_Until__c")["type"], "datetime");
        let status = field("Referral_Reward_Status__c");
        assert_eq!(status["type"], "picklist");
        assert_eq!(status["restrictedPicklist"], true);
        assert_eq!(status["picklistValues"].as_array().unwrap().len(), 7);
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn platform_events_are_enqueued() {
        let s = start(SandboxConfig::default()).await;
        let t = token(&s).await;
        let event = json!({ "Referral_Code__c": "R1", "Amount__c": 25 });
        for path in [
            "/sobjects/Referral_Reward__e/",
            "/sobjects/Referral_Reward__e",
        ] {
            let resp = reqwest::Client::new()
                .post(data_url(&s, path))
                .bearer_auth(&t)
                .json(&event)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            assert!(limit_info(&resp).is_some());
            let body: Value = resp.json().await.unwrap();
            assert!(body["id"].as_str().unwrap().starts_with("e01"));
            assert_eq!(body["success"], true);
            assert_eq!(body["errors"][0]["statusCode"], "OPERATION_ENQUEUED");
            uuid::Uuid::parse_str(body["errors"][0]["message"].as_str().unwrap()).unwrap();
        }
        let resp = reqwest::Client::new()
            .post(data_url(&s, "/sobjects/Referral_Reward__c/"))
            .bearer_auth(&t)
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        let events = s.sandbox.state.platform_events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], ("Referral_Reward__e".to_string(), event));
        assert!(s.sandbox.state.writes().is_empty());
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn injected_failures_use_salesforce_error_bodies() {
        let s = start(SandboxConfig::default()).await;
        let state = &s.sandbox.state;
        let t = token(&s).await;
        let body = json!({ "Referral_Code__c": "R1" });
        let cases = [
            (Failure::Status(503), 503, "SERVER_UNAVAILABLE"),
            (Failure::Status(500), 500, "UNKNOWN_EXCEPTION"),
            (Failure::RateLimit, 403, "REQUEST_LIMIT_EXCEEDED"),
            (Failure::DailyLimit, 403, "REQUEST_LIMIT_EXCEEDED"),
        ];
        for (failure, status, code) in cases {
            state.fail_next(Crm::Salesforce, 1, failure);
            let resp = patch(&s, &t, "/sobjects/Lead/00QA", body.clone()).await;
            assert_eq!(resp.status(), status);
            assert!(limit_info(&resp).is_some());
            assert_eq!(resp.json::<Value>().await.unwrap()[0]["errorCode"], code);
        }
        assert!(state.writes().is_empty());

        // An outage spares the token endpoint.
        state.set_outage(Crm::Salesforce, Some(Failure::Status(503)));
        let again = token(&s).await;
        assert_eq!(
            patch(&s, &again, "/sobjects/Lead/00QA", body.clone())
                .await
                .status(),
            503
        );
        state.set_outage(Crm::Salesforce, None);

        state.fail_next(
            Crm::Salesforce,
            1,
            Failure::Delay(std::time::Duration::from_millis(50)),
        );
        let started = std::time::Instant::now();
        assert_eq!(
            patch(&s, &t, "/sobjects/Lead/00QA", body).await.status(),
            204
        );
        assert!(started.elapsed() >= std::time::Duration::from_millis(50));
        assert_eq!(state.writes().len(), 1);
        let token_requests = state
            .requests()
            .iter()
            .filter(|r| r.path == "/services/oauth2/token" && r.status == 200)
            .count();
        assert_eq!(token_requests, 2);
        s.sandbox.stop().await;
    }
}

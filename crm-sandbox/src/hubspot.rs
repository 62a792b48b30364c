//! HubSpot side of the sandbox: the CRM v3 object, batch, notes and properties endpoints under
//! `/crm/v3`, private-app Bearer auth, the rolling ten-second rate limit with its
//! `X-HubSpot-RateLimit-*` headers, and HubSpot-shaped error bodies. Properties are created and
//! updated as the properties API does (type and field type must go together), and an
//! enumeration property refuses a value that is not one of its options (`INVALID_OPTION`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::{
    answer_after, correlation_id, record_request, segments, Crm, Failure, Gate, Inner,
    RecordedWrite, Reply, SandboxState,
};
use crate::{to_rfc3339, Millis};

const WINDOW_MS: Millis = 10_000;
const MAX_BATCH: usize = 100;
/// HubSpot's association type id for deal → contact.
const DEAL_TO_CONTACT: i64 = 3;

#[derive(Default)]
pub(super) struct Store {
    /// Keyed by (canonical object type, id).
    objects: HashMap<(String, String), Object>,
    groups: HashMap<(String, String), Value>,
    /// Per object type, in creation order.
    properties: HashMap<String, Vec<(String, Value)>>,
    /// Times of the requests inside the rolling window.
    window: VecDeque<Millis>,
    pub(super) notes: Vec<Value>,
    next_id: u64,
    /// Merged-away (type, id) → the id it was merged into.
    merged: HashMap<(String, String), String>,
}

struct Object {
    properties: BTreeMap<String, String>,
    contacts: Vec<String>,
    created_at: Millis,
    updated_at: Millis,
}

impl Object {
    fn new(now: Millis) -> Self {
        Self {
            properties: BTreeMap::new(),
            contacts: Vec::new(),
            created_at: now,
            updated_at: now,
        }
    }

    fn to_json(&self, id: &str) -> Value {
        json!({
            "id": id,
            "properties": self.properties,
            "createdAt": to_rfc3339(self.created_at),
            "updatedAt": to_rfc3339(self.updated_at),
            "archived": false,
        })
    }
}

/// URL object type → the canonical plural name; HubSpot accepts the numeric type ids too.
fn canonical_type(name: &str) -> Option<&'static str> {
    match name {
        "contacts" | "0-1" => Some("contacts"),
        "deals" | "0-3" => Some("deals"),
        "notes" | "0-46" => Some("notes"),
        _ => None,
    }
}

fn key(object_type: &str, id: &str) -> (String, String) {
    let object_type = canonical_type(object_type).unwrap_or(object_type);
    (object_type.to_string(), id.to_string())
}

impl Store {
    pub(super) fn seed(
        &mut self,
        object_type: &str,
        id: &str,
        properties: &[(&str, &str)],
        contact_ids: &[&str],
        now: Millis,
    ) {
        let object = self
            .objects
            .entry(key(object_type, id))
            .or_insert_with(|| Object::new(now));
        for (name, value) in properties {
            object
                .properties
                .insert((*name).to_string(), (*value).to_string());
        }
        object.contacts = contact_ids.iter().map(|c| (*c).to_string()).collect();
    }

    /// The id a record lives under now: HubSpot answers a merged-away id with the record it was
    /// merged into.
    fn resolve(&self, object_type: &str, id: &str) -> String {
        let mut id = id.to_string();
        // Bounded: a merge never points back at an id that is still merged away.
        for _ in 0..self.merged.len() {
            match self.merged.get(&key(object_type, &id)) {
                Some(into) => id = into.clone(),
                None => break,
            }
        }
        id
    }

    /// Merge `merged` into `primary` as HubSpot does, or, with `new_id`, both into a new record;
    /// the primary's values win. Returns the surviving id.
    pub(super) fn merge(
        &mut self,
        object_type: &str,
        primary: &str,
        merged: &[&str],
        new_id: Option<&str>,
        now: Millis,
    ) -> String {
        let object_type = canonical_type(object_type).unwrap_or(object_type);
        let survivor = new_id.unwrap_or(primary).to_string();
        let mut gone: Vec<String> = merged.iter().map(|id| (*id).to_string()).collect();
        gone.extend(new_id.map(|_| primary.to_string()));
        let mut properties = BTreeMap::new();
        let mut contacts: Vec<String> = Vec::new();
        for id in merged.iter().copied().chain([primary]) {
            if let Some(old) = self.objects.get(&key(object_type, id)) {
                properties.extend(old.properties.clone());
                contacts.extend(old.contacts.iter().cloned());
            }
        }
        contacts.sort();
        contacts.dedup();
        properties.insert("hs_merged_object_ids".into(), gone.join(";"));
        for id in &gone {
            self.objects.remove(&key(object_type, id));
            self.merged.insert(key(object_type, id), survivor.clone());
        }
        let object = self
            .objects
            .entry(key(object_type, &survivor))
            .or_insert_with(|| Object::new(now));
        object.properties = properties;
        object.contacts = contacts;
        object.updated_at = now;
        if object_type == "contacts" {
            // Deals associated with a merged-away contact are now associated with the survivor.
            for ((t, _), deal) in self.objects.iter_mut() {
                if t == "deals" && deal.contacts.iter().any(|c| gone.contains(c)) {
                    for c in deal.contacts.iter_mut().filter(|c| gone.contains(c)) {
                        c.clone_from(&survivor);
                    }
                    deal.contacts.sort();
                    deal.contacts.dedup();
                }
            }
        }
        survivor
    }

    pub(super) fn object(&self, object_type: &str, id: &str) -> Option<BTreeMap<String, String>> {
        self.objects
            .get(&key(object_type, id))
            .map(|o| o.properties.clone())
    }

    pub(super) fn property_names(&self, object_type: &str) -> Vec<String> {
        let object_type = canonical_type(object_type).unwrap_or(object_type);
        self.properties
            .get(object_type)
            .map(|props| props.iter().map(|(name, _)| name.clone()).collect())
            .unwrap_or_default()
    }

    pub(super) fn property_definition(&self, object_type: &str, name: &str) -> Option<Value> {
        let object_type = canonical_type(object_type).unwrap_or(object_type);
        self.property(object_type, name).cloned()
    }

    fn property(&self, object_type: &str, name: &str) -> Option<&Value> {
        self.properties
            .get(object_type)?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Count this request into the rolling window; returns how many the window now holds.
    fn admit(&mut self, now: Millis) -> usize {
        while self.window.front().is_some_and(|&t| t <= now - WINDOW_MS) {
            self.window.pop_front();
        }
        self.window.push_back(now);
        self.window.len()
    }

    fn new_id(&mut self, object_type: &str) -> String {
        loop {
            self.next_id += 1;
            let id = (10_000_000_000 + self.next_id).to_string();
            if !self
                .objects
                .contains_key(&(object_type.to_string(), id.clone()))
            {
                return id;
            }
        }
    }
}

pub(super) async fn handle(state: &SandboxState, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let limit = state.config.hubspot_limit_per_10s;
    let expected = format!("Bearer {}", state.config.hubspot_token);
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    // Every request counts toward the window, rejected ones included, as HubSpot counts them.
    let (gate, remaining) = {
        let mut inner = state.lock();
        let used = inner.hubspot.admit(state.now());
        let remaining = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(used);
        let gate = if !authorized {
            Gate::Answer(unauthorized())
        } else if used > usize::try_from(limit).unwrap_or(usize::MAX) {
            Gate::Answer(limited(Policy::TenSecondly))
        } else {
            Gate::from_failure(inner.take_failure(Crm::HubSpot), failure_reply)
        };
        (gate, remaining)
    };
    let (early, answer_late) = gate.pass().await;
    let reply = {
        let mut inner = state.lock();
        let now = state.now();
        let reply = early.unwrap_or_else(|| match route(state, &mut inner, req, body, now) {
            Ok(reply) | Err(reply) => reply,
        });
        let reply = reply
            .header("x-hubspot-ratelimit-max", limit.to_string())
            .header("x-hubspot-ratelimit-remaining", remaining.to_string())
            .header(
                "x-hubspot-ratelimit-interval-milliseconds",
                WINDOW_MS.to_string(),
            );
        record_request(&mut inner, Crm::HubSpot, req, reply.status, now);
        reply
    };
    answer_after(answer_late, reply).await
}

enum Policy {
    TenSecondly,
    Daily,
}

fn error(status: u16, category: &str, message: impl Into<String>) -> Reply {
    Reply::json(
        status,
        json!({
            "status": "error",
            "message": message.into(),
            "correlationId": correlation_id(),
            "category": category,
        }),
    )
}

fn validation(message: impl Into<String>) -> Reply {
    error(400, "VALIDATION_ERROR", message)
}

fn not_found() -> Reply {
    error(404, "OBJECT_NOT_FOUND", "resource not found")
}

fn unauthorized() -> Reply {
    error(
        401,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and \
         you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
    )
}

fn limited(policy: Policy) -> Reply {
    let (message, policy_name, group) = match policy {
        Policy::TenSecondly => (
            "You have reached your ten_secondly_rolling limit.",
            "TEN_SECONDLY_ROLLING",
            "publicapi:private_app-api-calls-ten-secondly:1:62515",
        ),
        Policy::Daily => (
            "You have reached your daily limit.",
            "DAILY",
            "publicapi:private_app-api-calls-daily:1:62515",
        ),
    };
    Reply::json(
        429,
        json!({
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": policy_name,
            "groupName": group,
        }),
    )
}

fn failure_reply(failure: &Failure) -> Reply {
    match failure {
        Failure::Status(status) => error(*status, "INTERNAL_ERROR", "internal error"),
        Failure::RateLimit => limited(Policy::TenSecondly),
        Failure::DailyLimit => limited(Policy::Daily),
        // Handled around routing; carrying the request out is the point of these.
        Failure::Delay(_) | Failure::AnswerLate(_) => {
            error(500, "INTERNAL_ERROR", "internal error")
        }
    }
}

fn object_type_of(name: &str) -> Result<&'static str, Reply> {
    canonical_type(name)
        .ok_or_else(|| validation(format!("Unable to infer object type from: {name}")))
}

fn parse_json(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body).map_err(|e| {
        validation(format!(
            "Invalid input JSON on line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

fn route(
    state: &SandboxState,
    inner: &mut Inner,
    req: &HttpRequest,
    body: &[u8],
    now: Millis,
) -> Result<Reply, Reply> {
    let segs = segments(req.path());
    let Some(rest) = segs.strip_prefix(&["crm", "v3"][..]) else {
        return Err(not_found());
    };
    match (req.method().as_str(), rest) {
        ("PATCH", ["objects", object_type, id]) => {
            update(state, inner, object_type_of(object_type)?, id, body, now)
        }
        ("GET", ["objects", object_type, id]) => read(inner, object_type_of(object_type)?, id, req),
        ("POST", ["objects", object_type, "batch", "update"]) => {
            batch_update(state, inner, object_type_of(object_type)?, body, now)
        }
        ("POST", ["objects", object_type]) => {
            create(state, inner, object_type_of(object_type)?, body, now)
        }
        ("GET", ["properties", object_type, "groups", name]) => {
            let object_type = object_type_of(object_type)?;
            inner
                .hubspot
                .groups
                .get(&(object_type.to_string(), name.to_string()))
                .map(|group| Reply::json(200, group.clone()))
                .ok_or_else(|| {
                    error(
                        404,
                        "OBJECT_NOT_FOUND",
                        format!("Unable to find property group {name}"),
                    )
                })
        }
        ("POST", ["properties", object_type, "groups"]) => {
            create_group(inner, object_type_of(object_type)?, body)
        }
        ("GET", ["properties", object_type, name]) => {
            let object_type = object_type_of(object_type)?;
            inner
                .hubspot
                .property(object_type, name)
                .map(|p| Reply::json(200, p.clone()))
                .ok_or_else(|| {
                    error(
                        404,
                        "OBJECT_NOT_FOUND",
                        format!("Unable to find property {name}"),
                    )
                })
        }
        ("POST", ["properties", object_type]) => {
            create_property(inner, object_type_of(object_type)?, body, now)
        }
        ("PATCH", ["properties", object_type, name]) => {
            update_property(inner, object_type_of(object_type)?, name, body, now)
        }
        _ => Err(not_found()),
    }
}

/// One entry of HubSpot's "Property values were not valid" list; built by hand because the
/// message embeds it as a string with this key order.
fn invalid_entry(name: &str, message: &str, code: &str) -> String {
    let quote = |s: &str| Value::String(s.to_string()).to_string();
    format!(
        "{{\"isValid\":false,\"message\":{},\"error\":{},\"name\":{}}}",
        quote(message),
        quote(code),
        quote(name)
    )
}

fn invalid_properties(entries: &[String]) -> Reply {
    validation(format!(
        "Property values were not valid: [{}]",
        entries.join(",")
    ))
}

/// The `properties` object of a write, checked the way HubSpot checks it.
fn properties_of(
    state: &SandboxState,
    store: &Store,
    object_type: &str,
    value: Option<&Value>,
) -> Result<BTreeMap<String, String>, Reply> {
    let Some(Value::Object(props)) = value else {
        return Err(validation(
            "Invalid input JSON: \"properties\" must be an object of property names to values",
        ));
    };
    // Notes carry only HubSpot's built-in properties, which exist without being created.
    let strict = state.config.strict_properties && object_type != "notes";
    let mut out = BTreeMap::new();
    let mut invalid = Vec::new();
    for (name, value) in props {
        if strict && store.property(object_type, name).is_none() {
            invalid.push(invalid_entry(
                name,
                &format!("Property \"{name}\" does not exist"),
                "PROPERTY_DOESNT_EXIST",
            ));
        } else if let Value::String(s) = value {
            if let Some(problem) = store
                .property(object_type, name)
                .and_then(|definition| invalid_option(definition, s))
            {
                invalid.push(invalid_entry(name, &problem, "INVALID_OPTION"));
            } else {
                out.insert(name.clone(), s.clone());
            }
        } else {
            invalid.push(invalid_entry(
                name,
                &format!("{value} was not a valid string for property \"{name}\""),
                "INVALID_STRING",
            ));
        }
    }
    if invalid.is_empty() {
        Ok(out)
    } else {
        Err(invalid_properties(&invalid))
    }
}

/// Why `value` is not one of an enumeration property's options, as HubSpot words it; `None` when
/// it is (or the property is not an enumeration). An empty value clears the property.
fn invalid_option(definition: &Value, value: &str) -> Option<String> {
    if definition.get("type").and_then(Value::as_str) != Some("enumeration") || value.is_empty() {
        return None;
    }
    let allowed: Vec<&str> = definition
        .get("options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("value").and_then(Value::as_str))
        .collect();
    // A multiple-checkboxes property takes several options joined with `;`.
    let multiple = definition.get("fieldType").and_then(Value::as_str) == Some("checkbox");
    let chosen: Vec<&str> = if multiple {
        value.split(';').collect()
    } else {
        vec![value]
    };
    chosen.into_iter().find(|v| !allowed.contains(v)).map(|v| {
        format!(
            "{v} was not one of the allowed options: [{}]",
            allowed.join(", ")
        )
    })
}

/// Set `props` on an object (creating it if absent) and journal the write.
fn apply(
    inner: &mut Inner,
    object_type: &str,
    id: &str,
    props: BTreeMap<String, String>,
    now: Millis,
) -> Value {
    let object = inner
        .hubspot
        .objects
        .entry((object_type.to_string(), id.to_string()))
        .or_insert_with(|| Object::new(now));
    object
        .properties
        .extend(props.iter().map(|(k, v)| (k.clone(), v.clone())));
    object.updated_at = now;
    let json = object.to_json(id);
    inner.writes.push(RecordedWrite {
        crm: Crm::HubSpot,
        object_type: object_type.to_string(),
        id: id.to_string(),
        properties: props,
        at: now,
    });
    json
}

fn exists_or_creatable(state: &SandboxState, inner: &Inner, object_type: &str, id: &str) -> bool {
    state.config.auto_create
        || inner
            .hubspot
            .objects
            .contains_key(&(object_type.to_string(), id.to_string()))
}

fn update(
    state: &SandboxState,
    inner: &mut Inner,
    object_type: &str,
    id: &str,
    body: &[u8],
    now: Millis,
) -> Result<Reply, Reply> {
    let body = parse_json(body)?;
    let props = properties_of(state, &inner.hubspot, object_type, body.get("properties"))?;
    let id = inner.hubspot.resolve(object_type, id);
    if !exists_or_creatable(state, inner, object_type, &id) {
        return Err(not_found());
    }
    Ok(Reply::json(200, apply(inner, object_type, &id, props, now)))
}

fn singular_upper(object_type: &str) -> String {
    object_type.trim_end_matches('s').to_ascii_uppercase()
}

fn batch_update(
    state: &SandboxState,
    inner: &mut Inner,
    object_type: &str,
    body: &[u8],
    now: Millis,
) -> Result<Reply, Reply> {
    let body = parse_json(body)?;
    let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
        return Err(validation(
            "Invalid input JSON: \"inputs\" must be an array",
        ));
    };
    if inputs.len() > MAX_BATCH {
        return Err(validation(format!(
            "Batch input size {} exceeds the limit of {MAX_BATCH} inputs",
            inputs.len()
        )));
    }
    // HubSpot validates the whole batch before applying any of it.
    let mut parsed = Vec::with_capacity(inputs.len());
    let mut seen = HashSet::new();
    for input in inputs {
        let id = match input.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(validation(
                    "Invalid input JSON: every input needs an \"id\"",
                ))
            }
        };
        if !seen.insert(id.clone()) {
            return Err(validation(format!(
                "Duplicate IDs found in batch input: [{id}]. IDs must be unique"
            )));
        }
        let props = properties_of(state, &inner.hubspot, object_type, input.get("properties"))?;
        parsed.push((id, props));
    }
    let started = to_rfc3339(now);
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for (id, props) in parsed {
        let id = inner.hubspot.resolve(object_type, &id);
        if exists_or_creatable(state, inner, object_type, &id) {
            results.push(apply(inner, object_type, &id, props, now));
        } else {
            missing.push(id);
        }
    }
    let mut response = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": to_rfc3339(now),
    });
    if missing.is_empty() {
        return Ok(Reply::json(200, response));
    }
    response["numErrors"] = json!(1);
    response["errors"] = json!([{
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": format!(
            "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
            singular_upper(object_type)
        ),
        "context": { "ids": missing },
    }]);
    Ok(Reply::json(207, response))
}

fn read(inner: &Inner, object_type: &str, id: &str, req: &HttpRequest) -> Result<Reply, Reply> {
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default();
    // Both `properties=a,b` and repeated `properties=a&properties=b` are accepted.
    let list = |param: &str| -> Vec<String> {
        query
            .iter()
            .filter(|(k, _)| k == param)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let id = &inner.hubspot.resolve(object_type, id);
    let object = inner
        .hubspot
        .objects
        .get(&(object_type.to_string(), id.to_string()))
        .ok_or_else(not_found)?;
    let mut json = object.to_json(id);
    let requested = list("properties");
    if !requested.is_empty() {
        // Requested properties without a value come back as null.
        let props: Map<String, Value> = requested
            .into_iter()
            .map(|name| {
                let value = object
                    .properties
                    .get(&name)
                    .map_or(Value::Null, |v| Value::String(v.clone()));
                (name, value)
            })
            .collect();
        json["properties"] = Value::Object(props);
    }
    let mut associations = Map::new();
    for wanted in list("associations") {
        let Some(wanted) = canonical_type(&wanted) else {
            continue;
        };
        let results: Vec<Value> = match (object_type, wanted) {
            ("deals", "contacts") => object
                .contacts
                .iter()
                .map(|c| json!({ "id": c, "type": "deal_to_contact" }))
                .collect(),
            ("contacts", "deals") => inner
                .hubspot
                .objects
                .iter()
                .filter(|((t, _), deal)| t == "deals" && deal.contacts.iter().any(|c| c == id))
                .map(|((_, deal_id), _)| json!({ "id": deal_id, "type": "contact_to_deal" }))
                .collect(),
            _ => Vec::new(),
        };
        if !results.is_empty() {
            associations.insert(wanted.to_string(), json!({ "results": results }));
        }
    }
    if !associations.is_empty() {
        json["associations"] = Value::Object(associations);
    }
    Ok(Reply::json(200, json))
}

/// Checks the `associations` of a create; returns the ids associated with the deal→contact type.
fn association_contacts(associations: Option<&Value>) -> Result<Vec<String>, Reply> {
    let Some(associations) = associations else {
        return Ok(Vec::new());
    };
    let Some(associations) = associations.as_array() else {
        return Err(validation(
            "Invalid input JSON: \"associations\" must be an array",
        ));
    };
    let mut contacts = Vec::new();
    for association in associations {
        let to = match association.pointer("/to/id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(validation(
                    "Invalid input JSON: association is missing \"to\".\"id\"",
                ))
            }
        };
        let types = association
            .get("types")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| validation("Invalid input JSON: association is missing \"types\""))?;
        for t in types {
            let category_ok = matches!(
                t.get("associationCategory").and_then(Value::as_str),
                Some("HUBSPOT_DEFINED" | "USER_DEFINED" | "INTEGRATOR_DEFINED")
            );
            let Some(type_id) = t.get("associationTypeId").and_then(Value::as_i64) else {
                return Err(validation(
                    "Invalid input JSON: association type is missing \"associationTypeId\"",
                ));
            };
            if !category_ok {
                return Err(validation(
                    "Invalid input JSON: \"associationCategory\" must be HUBSPOT_DEFINED, USER_DEFINED or INTEGRATOR_DEFINED",
                ));
            }
            if type_id == DEAL_TO_CONTACT {
                contacts.push(to.clone());
            }
        }
    }
    Ok(contacts)
}

fn create(
    state: &SandboxState,
    inner: &mut Inner,
    object_type: &str,
    body: &[u8],
    now: Millis,
) -> Result<Reply, Reply> {
    let received = parse_json(body)?;
    let props = properties_of(
        state,
        &inner.hubspot,
        object_type,
        received.get("properties"),
    )?;
    if object_type == "notes" && !props.contains_key("hs_timestamp") {
        return Err(invalid_properties(&[invalid_entry(
            "hs_timestamp",
            "Property \"hs_timestamp\" is required",
            "REQUIRED_FIELD",
        )]));
    }
    let contacts = association_contacts(received.get("associations"))?;
    let id = inner.hubspot.new_id(object_type);
    let mut object = Object::new(now);
    object.properties = props.clone();
    if object_type == "deals" {
        object.contacts = contacts;
    }
    let json = object.to_json(&id);
    inner
        .hubspot
        .objects
        .insert((object_type.to_string(), id.clone()), object);
    if object_type == "notes" {
        inner.hubspot.notes.push(received);
    } else {
        inner.writes.push(RecordedWrite {
            crm: Crm::HubSpot,
            object_type: object_type.to_string(),
            id,
            properties: props,
            at: now,
        });
    }
    Ok(Reply::json(201, json))
}

fn required_strings<'a>(
    body: &'a Value,
    names: &[&'static str],
    what: &str,
) -> Result<Vec<&'a str>, Reply> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| body.get(n).and_then(Value::as_str).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(validation(format!(
            "Invalid input JSON: Cannot build {what}, some of required attributes are not set [{}]",
            missing.join(", ")
        )));
    }
    Ok(names
        .iter()
        .map(|n| body.get(n).and_then(Value::as_str).unwrap_or_default())
        .collect())
}

fn create_group(inner: &mut Inner, object_type: &str, body: &[u8]) -> Result<Reply, Reply> {
    let body = parse_json(body)?;
    let fields = required_strings(&body, &["name", "label"], "PropertyGroupCreate")?;
    let (name, label) = (fields[0], fields[1]);
    let key = (object_type.to_string(), name.to_string());
    if inner.hubspot.groups.contains_key(&key) {
        return Err(error(
            409,
            "OBJECT_ALREADY_EXISTS",
            format!("A property group named '{name}' already exists."),
        ));
    }
    let group = json!({
        "name": name,
        "label": label,
        "displayOrder": body.get("displayOrder").and_then(Value::as_i64).unwrap_or(-1),
        "archived": false,
    });
    inner.hubspot.groups.insert(key, group.clone());
    Ok(Reply::json(201, group))
}

const PROPERTY_TYPES: &[&str] = &[
    "string",
    "number",
    "date",
    "datetime",
    "enumeration",
    "bool",
];
const FIELD_TYPES: &[&str] = &[
    "text",
    "textarea",
    "number",
    "date",
    "file",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "calculation_equation",
    "html",
    "phonenumber",
];

fn create_property(
    inner: &mut Inner,
    object_type: &str,
    body: &[u8],
    now: Millis,
) -> Result<Reply, Reply> {
    let body = parse_json(body)?;
    let fields = required_strings(
        &body,
        &["name", "label", "type", "fieldType", "groupName"],
        "PropertyCreate",
    )?;
    let (name, label, kind, field_type, group) =
        (fields[0], fields[1], fields[2], fields[3], fields[4]);
    if !PROPERTY_TYPES.contains(&kind) {
        return Err(validation(format!(
            "Invalid input JSON: '{kind}' is not a valid property type; expected one of {PROPERTY_TYPES:?}"
        )));
    }
    if !FIELD_TYPES.contains(&field_type) {
        return Err(validation(format!(
            "Invalid input JSON: '{field_type}' is not a valid fieldType; expected one of {FIELD_TYPES:?}"
        )));
    }
    check_field_type(kind, field_type)?;
    let options = options_of(body.get("options"))?;
    if inner.hubspot.property(object_type, name).is_some() {
        return Err(error(
            409,
            "OBJECT_ALREADY_EXISTS",
            format!("Property named '{name}' already exists."),
        ));
    }
    let property = json!({
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "groupName": group,
        "description": body.get("description").and_then(Value::as_str).unwrap_or_default(),
        "options": options,
        "displayOrder": body.get("displayOrder").and_then(Value::as_i64).unwrap_or(-1),
        "formField": body.get("formField").and_then(Value::as_bool).unwrap_or(false),
        "hasUniqueValue": body.get("hasUniqueValue").and_then(Value::as_bool).unwrap_or(false),
        "hidden": false,
        "calculated": false,
        "externalOptions": false,
        "archived": false,
        "createdAt": to_rfc3339(now),
        "updatedAt": to_rfc3339(now),
        "modificationMetadata": {
            "archivable": true,
            "readOnlyDefinition": false,
            "readOnlyValue": false,
        },
    });
    inner
        .hubspot
        .properties
        .entry(object_type.to_string())
        .or_default()
        .push((name.to_string(), property.clone()));
    Ok(Reply::json(201, property))
}

/// The field types HubSpot allows for each property type.
fn check_field_type(kind: &str, field_type: &str) -> Result<(), Reply> {
    let allowed: &[&str] = match kind {
        "string" => &["text", "textarea", "html", "phonenumber", "file"],
        "number" => &["number", "calculation_equation"],
        "date" | "datetime" => &["date"],
        "enumeration" => &["select", "radio", "checkbox", "booleancheckbox"],
        "bool" => &["booleancheckbox"],
        _ => &[],
    };
    if allowed.contains(&field_type) {
        Ok(())
    } else {
        Err(validation(format!(
            "Invalid input JSON: fieldType '{field_type}' is not valid for a property of type '{kind}'; expected one of {allowed:?}"
        )))
    }
}

/// The `options` of a property create or update: each needs a `label` and a unique `value`.
fn options_of(options: Option<&Value>) -> Result<Value, Reply> {
    let Some(options) = options else {
        return Ok(json!([]));
    };
    let Some(options) = options.as_array() else {
        return Err(validation(
            "Invalid input JSON: \"options\" must be an array",
        ));
    };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(options.len());
    for (i, option) in options.iter().enumerate() {
        let fields = required_strings(option, &["label", "value"], "OptionInput")?;
        let value = fields[1];
        if !seen.insert(value.to_string()) {
            return Err(validation(format!(
                "Invalid input JSON: duplicate option value '{value}'"
            )));
        }
        out.push(json!({
            "label": fields[0],
            "value": value,
            "displayOrder": option.get("displayOrder").and_then(Value::as_i64).unwrap_or(i as i64),
            "hidden": option.get("hidden").and_then(Value::as_bool).unwrap_or(false),
            "description": option.get("description").and_then(Value::as_str).unwrap_or_default(),
        }));
    }
    Ok(Value::Array(out))
}

/// `PATCH /crm/v3/properties/{type}/{name}`: what the body names changes; `options` replaces
/// the whole list.
fn update_property(
    inner: &mut Inner,
    object_type: &str,
    name: &str,
    body: &[u8],
    now: Millis,
) -> Result<Reply, Reply> {
    let body = parse_json(body)?;
    let Some(current) = inner.hubspot.property(object_type, name) else {
        return Err(error(
            404,
            "OBJECT_NOT_FOUND",
            format!("Unable to find property {name}"),
        ));
    };
    let mut updated = current.clone();
    for key in ["label", "type", "fieldType", "groupName", "description"] {
        if let Some(value) = body.get(key) {
            let Some(text) = value.as_str() else {
                return Err(validation(format!(
                    "Invalid input JSON: \"{key}\" must be a string"
                )));
            };
            updated[key] = json!(text);
        }
    }
    for key in ["displayOrder", "hidden", "formField"] {
        if let Some(value) = body.get(key) {
            updated[key] = value.clone();
        }
    }
    if body.get("options").is_some() {
        updated["options"] = options_of(body.get("options"))?;
    }
    let text = |key: &str| updated[key].as_str().unwrap_or_default().to_string();
    let (kind, field_type) = (text("type"), text("fieldType"));
    if !PROPERTY_TYPES.contains(&kind.as_str()) {
        return Err(validation(format!(
            "Invalid input JSON: '{kind}' is not a valid property type; expected one of {PROPERTY_TYPES:?}"
        )));
    }
    check_field_type(&kind, &field_type)?;
    updated["updatedAt"] = json!(to_rfc3339(now));
    if let Some(slot) = inner
        .hubspot
        .properties
        .get_mut(object_type)
        .and_then(|props| props.iter_mut().find(|(n, _)| n == name))
    {
        slot.1 = updated.clone();
    }
    Ok(Reply::json(200, updated))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{start, Started};
    use super::super::{Crm, Failure, SandboxConfig};
    use serde_json::{json, Value};

    const TOKEN: &str = "pat-sandbox";

    fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    async fn patch(s: &Started, path: &str, body: Value) -> reqwest::Response {
        client()
            .patch(format!("{}{path}", s.sandbox.base_url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn post(s: &Started, path: &str, body: Value) -> reqwest::Response {
        client()
            .post(format!("{}{path}", s.sandbox.base_url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get(s: &Started, path: &str) -> reqwest::Response {
        client()
            .get(format!("{}{path}", s.sandbox.base_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn missing_or_wrong_token_is_401_invalid_authentication() {
        let s = start(SandboxConfig::default()).await;
        let url = format!("{}/crm/v3/objects/contacts/1", s.sandbox.base_url);
        for request in [
            client().get(&url),
            client().get(&url).bearer_auth("pat-wrong"),
        ] {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), 401);
            assert_eq!(
                header(&resp, "x-hubspot-ratelimit-max").as_deref(),
                Some("100")
            );
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["status"], "error");
            assert_eq!(body["category"], "INVALID_AUTHENTICATION");
            assert!(body["message"]
                .as_str()
                .unwrap()
                .starts_with("Authentication credentials not found. This API supports OAuth 2.0"));
            uuid::Uuid::parse_str(body["correlationId"].as_str().unwrap()).unwrap();
        }
        assert!(s.sandbox.state.writes().is_empty());
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn patch_then_get_shows_the_value_and_associations() {
        let s = start(SandboxConfig::default()).await;
        s.sandbox
            .state
            .seed_hubspot("deals", "501", &[("dealname", "Big one")], &["101", "102"]);
        let resp = patch(
            &s,
            "/crm/v3/objects/deals/501",
            json!({ "properties": { "referral_source": "partner:acme" } }),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["id"], "501");
        assert_eq!(body["archived"], false);
        assert_eq!(body["properties"]["dealname"], "Big one");
        assert_eq!(body["properties"]["referral_source"], "partner:acme");

        let resp = get(
            &s,
            "/crm/v3/objects/0-3/501?properties=referral_source,amount&associations=contacts",
        )
        .await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["properties"],
            json!({ "referral_source": "partner:acme", "amount": null })
        );
        assert_eq!(
            body["associations"]["contacts"]["results"],
            json!([
                { "id": "101", "type": "deal_to_contact" },
                { "id": "102", "type": "deal_to_contact" },
            ])
        );
        let plain: Value = get(&s, "/crm/v3/objects/deals/501")
            .await
            .json()
            .await
            .unwrap();
        assert!(plain.get("associations").is_none());
        assert_eq!(
            s.sandbox.state.hubspot_object("deals", "501").unwrap()["referral_source"],
            "partner:acme"
        );
        assert_eq!(get(&s, "/crm/v3/objects/deals/999").await.status(), 404);

        let resp = patch(
            &s,
            "/crm/v3/objects/deals/501",
            json!({ "properties": { "amount": 12 } }),
        )
        .await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["category"], "VALIDATION_ERROR");
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn unknown_id_is_404_without_auto_create() {
        let s = start(SandboxConfig {
            auto_create: false,
            ..SandboxConfig::default()
        })
        .await;
        let resp = patch(
            &s,
            "/crm/v3/objects/contacts/404",
            json!({ "properties": { "referral_source": "x" } }),
        )
        .await;
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["category"], "OBJECT_NOT_FOUND");
        assert_eq!(body["message"], "resource not found");
        assert!(s.sandbox.state.hubspot_object("contacts", "404").is_none());
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn batch_update_complete_too_large_and_partial() {
        let s = start(SandboxConfig {
            auto_create: false,
            ..SandboxConfig::default()
        })
        .await;
        for id in ["1", "2", "3"] {
            s.sandbox.state.seed_hubspot("contacts", id, &[], &[]);
        }
        let input =
            |id: &str| json!({ "id": id, "properties": { "referral_code": format!("R{id}") } });
        let resp = post(
            &s,
            "/crm/v3/objects/contacts/batch/update",
            json!({ "inputs": [input("1"), input("2"), input("3")] }),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "COMPLETE");
        assert_eq!(body["results"].as_array().unwrap().len(), 3);
        assert_eq!(s.sandbox.state.writes().len(), 3);

        let many: Vec<Value> = (0..101).map(|i| input(&i.to_string())).collect();
        let resp = post(
            &s,
            "/crm/v3/objects/contacts/batch/update",
            json!({ "inputs": many }),
        )
        .await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["category"], "VALIDATION_ERROR");
        assert_eq!(s.sandbox.state.writes().len(), 3);

        let resp = post(
            &s,
            "/crm/v3/objects/contacts/batch/update",
            json!({ "inputs": [
                { "id": "1", "properties": { "referral_code": "NEW1" } },
                { "id": "77", "properties": { "referral_code": "NEW77" } },
                { "id": "3", "properties": { "referral_code": "NEW3" } },
            ] }),
        )
        .await;
        assert_eq!(resp.status(), 207);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["numErrors"], 1);
        assert_eq!(body["errors"][0]["category"], "OBJECT_NOT_FOUND");
        assert_eq!(body["errors"][0]["context"]["ids"], json!(["77"]));
        assert_eq!(body["results"].as_array().unwrap().len(), 2);
        let state = &s.sandbox.state;
        assert_eq!(
            state.hubspot_object("contacts", "1").unwrap()["referral_code"],
            "NEW1"
        );
        assert_eq!(
            state.hubspot_object("contacts", "3").unwrap()["referral_code"],
            "NEW3"
        );
        assert!(state.hubspot_object("contacts", "77").is_none());
        assert_eq!(state.writes().len(), 5);
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn rolling_ten_second_limit_answers_429_until_the_window_moves() {
        let s = start(SandboxConfig {
            hubspot_limit_per_10s: 5,
            ..SandboxConfig::default()
        })
        .await;
        for expected_remaining in (0..5).rev() {
            let resp = get(&s, "/crm/v3/properties/contacts/referral_source").await;
            assert_eq!(resp.status(), 404);
            assert_eq!(
                header(&resp, "x-hubspot-ratelimit-max").as_deref(),
                Some("5")
            );
            assert_eq!(
                header(&resp, "x-hubspot-ratelimit-remaining"),
                Some(expected_remaining.to_string())
            );
            assert_eq!(
                header(&resp, "x-hubspot-ratelimit-interval-milliseconds").as_deref(),
                Some("10000")
            );
            s.clock.advance(1_000);
        }
        let resp = get(&s, "/crm/v3/properties/contacts/referral_source").await;
        assert_eq!(resp.status(), 429);
        assert_eq!(
            header(&resp, "x-hubspot-ratelimit-remaining").as_deref(),
            Some("0")
        );
        assert!(resp.headers().get("retry-after").is_none());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
        assert_eq!(body["errorType"], "RATE_LIMIT");
        assert_eq!(
            body["message"],
            "You have reached your ten_secondly_rolling limit."
        );

        s.clock.advance(10_001);
        let resp = get(&s, "/crm/v3/properties/contacts/referral_source").await;
        assert_eq!(resp.status(), 404);
        assert_eq!(
            header(&resp, "x-hubspot-ratelimit-remaining").as_deref(),
            Some("4")
        );
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn injected_failures_then_success() {
        let s = start(SandboxConfig::default()).await;
        let state = &s.sandbox.state;
        state.fail_next(Crm::HubSpot, 2, Failure::Status(503));
        let body = json!({ "properties": { "referral_source": "x" } });
        for _ in 0..2 {
            let resp = patch(&s, "/crm/v3/objects/contacts/1", body.clone()).await;
            assert_eq!(resp.status(), 503);
            let err: Value = resp.json().await.unwrap();
            assert_eq!(err["category"], "INTERNAL_ERROR");
            assert_eq!(err["status"], "error");
        }
        assert!(state.writes().is_empty());
        assert_eq!(
            patch(&s, "/crm/v3/objects/contacts/1", body.clone())
                .await
                .status(),
            200
        );
        assert_eq!(state.writes().len(), 1);

        state.fail_next(Crm::HubSpot, 1, Failure::DailyLimit);
        let resp = patch(&s, "/crm/v3/objects/contacts/1", body.clone()).await;
        assert_eq!(resp.status(), 429);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["policyName"], "DAILY");
        assert_eq!(err["message"], "You have reached your daily limit.");

        state.set_outage(Crm::HubSpot, Some(Failure::Status(502)));
        for _ in 0..3 {
            assert_eq!(
                patch(&s, "/crm/v3/objects/contacts/1", body.clone())
                    .await
                    .status(),
                502
            );
        }
        state.set_outage(Crm::HubSpot, None);
        assert_eq!(
            patch(&s, "/crm/v3/objects/contacts/1", body.clone())
                .await
                .status(),
            200
        );

        let statuses: Vec<u16> = state.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [503, 503, 200, 429, 502, 502, 502, 200]);
        assert!(state.requests().iter().all(|r| r.crm == Crm::HubSpot
            && r.method == "PATCH"
            && r.path == "/crm/v3/objects/contacts/1"));
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn notes_are_recorded_and_need_a_timestamp() {
        let s = start(SandboxConfig::default()).await;
        let note = json!({
            "properties": { "hs_timestamp": "2025-01-01T00:00:00Z", "hs_note_body": "Referred by Ana" },
            "associations": [{
                "to": { "id": "501" },
                "types": [{ "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214 }],
            }],
        });
        let resp = post(&s, "/crm/v3/objects/notes", note.clone()).await;
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.unwrap();
        assert!(!body["id"].as_str().unwrap().is_empty());
        assert_eq!(body["properties"]["hs_note_body"], "Referred by Ana");
        assert_eq!(s.sandbox.state.notes(), vec![note]);

        let resp = post(
            &s,
            "/crm/v3/objects/notes",
            json!({ "properties": { "hs_note_body": "no time" } }),
        )
        .await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["category"], "VALIDATION_ERROR");
        assert_eq!(s.sandbox.state.notes().len(), 1);
        assert!(s.sandbox.state.writes().is_empty());
        s.sandbox.stop().await;
    }

    #[tokio::test]
    async fn property_groups_and_properties_conflict_and_validate() {
        let s = start(SandboxConfig {
            strict_properties: true,
            ..SandboxConfig::default()
        })
        .await;
        let group = json!({ "name": "referral", "label": "Referral", "displayOrder": -1 });
        assert_eq!(
            get(&s, "/crm/v3/properties/contacts/groups/referral")
                .await
                .status(),
            404
        );
        assert_eq!(
            post(&s, "/crm/v3/properties/contacts/groups", group.clone())
                .await
                .status(),
            201
        );
        assert_eq!(
            get(&s, "/crm/v3/properties/contacts/groups/referral")
                .await
                .status(),
            200
        );
        let resp = post(&s, "/crm/v3/properties/contacts/groups", group).await;
        assert_eq!(resp.status(), 409);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["category"], "OBJECT_ALREADY_EXISTS");
        assert_eq!(
            body["message"],
            "A property group named 'referral' already exists."
        );

        // Strict: a property nobody created cannot be written.
        let write = json!({ "properties": { "referral_source": "partner:acme" } });
        let resp = patch(&s, "/crm/v3/objects/contacts/9", write.clone()).await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["category"], "VALIDATION_ERROR");
        assert_eq!(
            body["message"],
            "Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"referral_source\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"referral_source\"}]"
        );

        let property = json!({
            "name": "referral_source", "label": "Referral source",
            "type": "string", "fieldType": "text", "groupName": "referral",
        });
        let mut untyped = property.clone();
        untyped.as_object_mut().unwrap().remove("type");
        let resp = post(&s, "/crm/v3/properties/contacts", untyped).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["category"],
            "VALIDATION_ERROR"
        );
        assert_eq!(
            post(&s, "/crm/v3/properties/contacts", property.clone())
                .await
                .status(),
            201
        );
        assert_eq!(
            post(&s, "/crm/v3/properties/contacts", property)
                .await
                .status(),
            409
        );
        let fetched: Value = get(&s, "/crm/v3/properties/0-1/referral_source")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(fetched["groupName"], "referral");
        assert_eq!(
            s.sandbox.state.hubspot_properties("contacts"),
            vec!["referral_source".to_string()]
        );
        assert!(s.sandbox.state.hubspot_properties("deals").is_empty());
        assert_eq!(
            patch(&s, "/crm/v3/objects/contacts/9", write)
                .await
                .status(),
            200
        );
        s.sandbox.stop().await;
    }
    #[tokio::test]
    async fn enumeration_properties_refuse_values_that_are_not_options() {
        let s = start(SandboxConfig::default()).await;
        let option = |value: &str| json!({ "label": value, "value": value, "displayOrder": 0, "hidden": false });
        let property = json!({
            "name": "referral_reward_status", "label": "Referral reward status", "groupName": "referral",
            "type": "enumeration", "fieldType": "select", "options": [option("pending"), option("eligible")],
        });
        let mut as_text = property.clone();
        as_text["fieldType"] = json!("text");
        let resp = post(&s, "/crm/v3/properties/deals", as_text).await;
        assert_eq!(resp.status(), 400, "enumeration needs a choice field type");
        assert_eq!(
            post(&s, "/crm/v3/properties/deals", property)
                .await
                .status(),
            201
        );

        let write = |value: &str| json!({ "properties": { "referral_reward_status": value } });
        let resp = patch(&s, "/crm/v3/objects/deals/7", write("needs_review")).await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["category"], "VALIDATION_ERROR");
        assert_eq!(
            body["message"],
            "Property values were not valid: [{\"isValid\":false,\"message\":\"needs_review was not one of the allowed options: [pending, eligible]\",\"error\":\"INVALID_OPTION\",\"name\":\"referral_reward_status\"}]"
        );
        assert!(s.sandbox.state.writes().is_empty());
        for ok in ["pending", ""] {
            assert_eq!(
                patch(&s, "/crm/v3/objects/deals/7", write(ok))
                    .await
                    .status(),
                200
            );
        }

        // Adding the option (the list is replaced as a whole) makes the value acceptable.
        let resp = patch(
            &s,
            "/crm/v3/properties/deals/referral_reward_status",
            json!({ "options": [option("pending"), option("eligible"), option("needs_review")] }),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let updated: Value = resp.json().await.unwrap();
        assert_eq!(updated["options"].as_array().unwrap().len(), 3);
        assert_eq!(
            patch(&s, "/crm/v3/objects/deals/7", write("needs_review"))
                .await
                .status(),
            200
        );
        assert_eq!(
            patch(
                &s,
                "/crm/v3/properties/deals/no_such_property",
                json!({ "label": "x" })
            )
            .await
            .status(),
            404
        );
        s.sandbox.stop().await;
    }
    #[tokio::test]
    async fn a_merged_away_id_answers_with_the_record_it_was_merged_into() {
        let s = start(SandboxConfig {
            auto_create: false,
            ..SandboxConfig::default()
        })
        .await;
        let state = &s.sandbox.state;
        state.seed_hubspot(
            "contacts",
            "11",
            &[("email", "a@x.io"), ("firstname", "Ann")],
            &[],
        );
        state.seed_hubspot(
            "contacts",
            "12",
            &[("email", "b@x.io"), ("phone", "555")],
            &[],
        );
        state.seed_hubspot("deals", "21", &[], &["12"]);

        let survivor = state.merge_hubspot("contacts", "11", &["12"], Some("13"));

        assert_eq!(survivor, "13");
        for gone in ["11", "12"] {
            let resp = get(
                &s,
                &format!("/crm/v3/objects/contacts/{gone}?properties=email,phone"),
            )
            .await;
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["id"], "13");
            // The primary's values win; the others fill the gaps.
            assert_eq!(
                body["properties"],
                json!({"email": "a@x.io", "phone": "555"})
            );
        }
        assert_eq!(
            state.hubspot_object("contacts", "13").unwrap()["hs_merged_object_ids"],
            "12;11"
        );
        let deal: Value = get(&s, "/crm/v3/objects/deals/21?associations=contacts")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(deal["associations"]["contacts"]["results"][0]["id"], "13");
        let resp = patch(
            &s,
            "/crm/v3/objects/contacts/12",
            json!({ "properties": { "referral_source": "link" } }),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap()["id"], "13");
        assert!(state.hubspot_object("contacts", "12").is_none());
        s.sandbox.stop().await;
    }
}

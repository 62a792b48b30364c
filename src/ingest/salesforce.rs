//! Salesforce Outbound Messages: a namespace-aware, entity-safe parser for the SOAP 1.1
//! `notifications` request, and the SOAP acknowledgement and fault bodies sent back.
//!
//! The `SessionId` a message may carry is a live Salesforce session token; it is never stored or
//! returned, only whether one was present.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use serde::Serialize;

/// Salesforce sends at most this many notifications per message.
pub const MAX_NOTIFICATIONS: usize = 100;
/// Outbound Messages are about six levels deep; anything far deeper is hostile.
pub const MAX_DEPTH: usize = 32;
pub const MAX_FIELDS_PER_SOBJECT: usize = 500;
/// Attributes on one element, by default (`ingest.xml_max_attributes`). Outbound Messages carry
/// at most a handful; the XML reader's duplicate check is quadratic in this number.
pub const DEFAULT_MAX_ATTRIBUTES: usize = 32;
/// Namespace declarations in scope at once (on an element and its ancestors). Every element and
/// attribute name is resolved against them, so their number multiplies the work of every element.
/// Salesforce declares four or five.
pub const MAX_NAMESPACE_DECLARATIONS: usize = 64;

/// Bounds on the work one message may cause, beyond the body size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoapLimits {
    pub max_attributes_per_element: usize,
}

impl Default for SoapLimits {
    fn default() -> Self {
        Self {
            max_attributes_per_element: DEFAULT_MAX_ATTRIBUTES,
        }
    }
}

const SOAP_ENVELOPE_NS: &[u8] = b"http://schemas.xmlsoap.org/soap/envelope/";
const OUTBOUND_NS: &[u8] = b"http://soap.sforce.com/2005/09/outbound";
const SOBJECT_NS: &[u8] = b"urn:sobject.enterprise.soap.sforce.com";
const XSI_NS: &[u8] = b"http://www.w3.org/2001/XMLSchema-instance";

const ACK_RESPONSE: &str = concat!(
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
    "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">",
    "<soapenv:Body><notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\">",
    "<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>",
);

/// A parsed `notifications` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub organization_id: String,
    pub action_id: Option<String>,
    pub enterprise_url: Option<String>,
    pub partner_url: Option<String>,
    pub session_id_present: bool,
    pub notifications: Vec<Notification>,
}

/// One `Notification`: the record's fields as sent, `None` where the field was `xsi:nil`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: String,
    pub sobject_type: String,
    pub fields: BTreeMap<String, Option<String>>,
}

impl Notification {
    /// The inbox payload: `{"organization_id","action_id","notification_id","sobject_type",
    /// "fields"}` in that order, fields sorted by name.
    pub fn to_json(&self, org_id: &str, action_id: Option<&str>) -> String {
        let payload = NotificationPayload {
            organization_id: org_id,
            action_id,
            notification_id: &self.id,
            sobject_type: &self.sobject_type,
            fields: &self.fields,
        };
        // Only strings and a map keyed by strings are serialised, which cannot fail.
        serde_json::to_string(&payload).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct NotificationPayload<'a> {
    organization_id: &'a str,
    action_id: Option<&'a str>,
    notification_id: &'a str,
    sobject_type: &'a str,
    fields: &'a BTreeMap<String, Option<String>>,
}

/// The SOAP 1.1 fault code: `Client` when the sender must change the message, `Server` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    Client,
    Server,
}

impl FaultCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultCode::Client => "Client",
            FaultCode::Server => "Server",
        }
    }
}

/// Why an Outbound Message was rejected. `notification N` counts from 0. Messages never quote
/// element text, so the session token cannot leak through them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapParseError {
    #[error("malformed XML at byte {position}: {reason}")]
    MalformedXml { position: u64, reason: String },
    #[error("XML ended at byte {position} before the document was complete")]
    Truncated { position: u64 },
    #[error("XML document type declarations (<!DOCTYPE>) are not accepted")]
    Doctype,
    #[error(
        "unknown or malformed entity reference at byte {position}; only &lt; &gt; &amp; &apos; \
         &quot; and character references are accepted"
    )]
    UnknownEntity { position: u64 },
    #[error("not a SOAP 1.1 envelope: the root element must be Envelope in namespace http://schemas.xmlsoap.org/soap/envelope/")]
    NotSoapEnvelope,
    #[error("the SOAP body has no notifications element in namespace http://soap.sforce.com/2005/09/outbound")]
    MissingNotifications,
    #[error("notifications is missing OrganizationId")]
    MissingOrganizationId,
    #[error("OrganizationId must be a 15-character Salesforce id, or an 18-character one with its checksum suffix")]
    InvalidOrganizationId,
    #[error("notification {index}: missing Id")]
    MissingNotificationId { index: usize },
    #[error("notification {index}: missing sObject")]
    MissingSObject { index: usize },
    #[error("notification {index}: sObject has no xsi:type naming its object type")]
    MissingSObjectType { index: usize },
    #[error("notification {index}: sObject xsi:type is not a valid Salesforce object name")]
    InvalidSObjectType { index: usize },
    #[error("notification {index}: sObject has more than {MAX_FIELDS_PER_SOBJECT} fields")]
    TooManyFields { index: usize },
    #[error("more than {MAX_NOTIFICATIONS} Notification elements in one message")]
    TooManyNotifications,
    #[error("XML is nested deeper than {MAX_DEPTH} elements")]
    TooDeep,
    #[error("an element at byte {position} has more than {max} attributes")]
    TooManyAttributes { position: u64, max: usize },
    #[error("more than {MAX_NAMESPACE_DECLARATIONS} namespace declarations in scope at once")]
    TooManyNamespaces,
}

/// Parses a `notifications` request within the default [`SoapLimits`]. Rejects DTDs and unknown
/// entities rather than expanding or keeping them.
pub fn parse_outbound_message(body: &[u8]) -> Result<OutboundMessage, SoapParseError> {
    parse_outbound_message_with(body, SoapLimits::default())
}

/// [`parse_outbound_message`] with explicit limits. Work is linear in the body size: every
/// structure that would multiply it (attributes per element, namespace declarations, depth,
/// notifications, fields) is bounded.
pub fn parse_outbound_message_with(
    body: &[u8],
    limits: SoapLimits,
) -> Result<OutboundMessage, SoapParseError> {
    let mut reader = NsReader::from_reader(body);
    reader.config_mut().expand_empty_elements = true;
    let mut parser = Parser {
        limits,
        ..Parser::default()
    };
    loop {
        let event = reader.read_event().map_err(|e| reader_error(&reader, e))?;
        match event {
            Event::Start(start) => parser.open(&reader, &start)?,
            Event::End(_) => parser.close()?,
            Event::Text(text) => {
                let text = text.unescape().map_err(|e| content_error(&reader, e))?;
                parser.text(&text);
            }
            Event::CData(data) => {
                let text = std::str::from_utf8(&data)
                    .map_err(|_| malformed(&reader, "invalid UTF-8 in CDATA"))?;
                parser.text(text);
            }
            Event::DocType(_) => return Err(SoapParseError::Doctype),
            Event::Empty(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    parser.finish(reader.buffer_position())
}

/// Whether `got` names the organization `allowed` names. The 15- and 18-character forms of one id
/// match; two 18-character ids must be equal, and an 18-character id must carry the checksum
/// suffix its first 15 characters give (the suffix encodes their case).
pub fn org_id_matches(allowed: &str, got: &str) -> bool {
    if !is_salesforce_id(allowed) || !is_salesforce_id(got) {
        return false;
    }
    if allowed.len() == 18 && got.len() == 18 {
        return allowed == got;
    }
    allowed.get(..15) == got.get(..15)
}

/// A 15-character id, or an 18-character one whose suffix is the checksum of its first 15.
pub fn is_salesforce_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    match bytes.len() {
        15 => bytes.iter().all(u8::is_ascii_alphanumeric),
        18 => {
            bytes.iter().all(u8::is_ascii_alphanumeric)
                && checksum_suffix(&bytes[..15]) == bytes[15..]
        }
        _ => false,
    }
}

/// Salesforce's case checksum: for each 5-character chunk, one bit per uppercase letter (the
/// chunk's first character is the lowest bit), written as one of `A`–`Z`, `0`–`5`.
fn checksum_suffix(id15: &[u8]) -> [u8; 3] {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut suffix = [0u8; 3];
    for (chunk, out) in id15.chunks(5).zip(suffix.iter_mut()) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | (1 << i));
        *out = ALPHABET[bits];
    }
    suffix
}

/// The acknowledgement Salesforce needs to stop redelivering a message.
pub fn ack_response() -> &'static str {
    ACK_RESPONSE
}

/// A SOAP 1.1 fault carrying `message` as its faultstring.
pub fn fault_response(fault_code: FaultCode, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soapenv:Body><soapenv:Fault><faultcode>soapenv:{}</faultcode>\
         <faultstring>{}</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>",
        fault_code.as_str(),
        escape_xml_text(message)
    )
}

/// Escapes markup and replaces characters XML 1.0 cannot carry at all, so any message yields a
/// well-formed fault.
fn escape_xml_text(message: &str) -> String {
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\t' | '\n' | '\r' => escaped.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => escaped.push('\u{FFFD}'),
            c => escaped.push(c),
        }
    }
    escaped
}

/// An error raised while the reader tokenised the input; it knows where the bad markup began.
fn reader_error(reader: &NsReader<&[u8]>, error: quick_xml::Error) -> SoapParseError {
    classify_error(reader.error_position(), error)
}

/// An error found in text or attributes already read; the reader has moved just past them.
fn content_error(reader: &NsReader<&[u8]>, error: quick_xml::Error) -> SoapParseError {
    classify_error(reader.buffer_position(), error)
}

fn classify_error(position: u64, error: quick_xml::Error) -> SoapParseError {
    match error {
        quick_xml::Error::Escape(_) => SoapParseError::UnknownEntity { position },
        quick_xml::Error::IllFormed(quick_xml::errors::IllFormedError::MissingEndTag(_)) => {
            SoapParseError::Truncated { position }
        }
        other => SoapParseError::MalformedXml {
            position,
            reason: other.to_string(),
        },
    }
}

fn malformed(reader: &NsReader<&[u8]>, reason: &str) -> SoapParseError {
    SoapParseError::MalformedXml {
        position: reader.buffer_position(),
        reason: reason.to_string(),
    }
}

/// The namespaces this parser distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Envelope,
    Outbound,
    SObject,
    Xsi,
    Other,
}

fn classify(resolved: ResolveResult) -> Result<Ns, &'static str> {
    match resolved {
        ResolveResult::Bound(ns) => Ok(match ns.into_inner() {
            SOAP_ENVELOPE_NS => Ns::Envelope,
            OUTBOUND_NS => Ns::Outbound,
            SOBJECT_NS => Ns::SObject,
            XSI_NS => Ns::Xsi,
            _ => Ns::Other,
        }),
        ResolveResult::Unbound => Ok(Ns::Other),
        ResolveResult::Unknown(_) => Err("undeclared namespace prefix"),
    }
}

/// What an open element means to the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Envelope,
    Body,
    Notifications,
    OrganizationId,
    ActionId,
    EnterpriseUrl,
    PartnerUrl,
    SessionId,
    Notification,
    NotificationId,
    SObject,
    Field {
        name: String,
        nil: bool,
        has_children: bool,
    },
    Ignored,
}

impl Role {
    fn collects_text(&self) -> bool {
        matches!(
            self,
            Role::OrganizationId
                | Role::ActionId
                | Role::EnterpriseUrl
                | Role::PartnerUrl
                | Role::NotificationId
                | Role::Field { .. }
        )
    }
}

/// The attributes this parser reads; every attribute is still checked for syntax and entities.
#[derive(Default)]
struct XsiAttributes {
    xsi_type: Option<String>,
    xsi_nil: bool,
}

fn read_attributes(
    reader: &NsReader<&[u8]>,
    start: &BytesStart,
) -> Result<XsiAttributes, SoapParseError> {
    let mut found = XsiAttributes::default();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| content_error(reader, e.into()))?;
        let value = attribute
            .unescape_value()
            .map_err(|e| content_error(reader, e))?;
        let (resolved, local) = reader.resolve_attribute(attribute.key);
        if classify(resolved).map_err(|reason| malformed(reader, reason))? != Ns::Xsi {
            continue;
        }
        match local.as_ref() {
            b"type" => found.xsi_type = Some(value.trim().to_string()),
            b"nil" => found.xsi_nil = matches!(value.trim(), "true" | "1"),
            _ => {}
        }
    }
    Ok(found)
}

#[derive(Default)]
struct NotificationDraft {
    id: Option<String>,
    sobject: Option<SObjectDraft>,
}

struct SObjectDraft {
    type_name: String,
    fields: BTreeMap<String, Option<String>>,
}

/// Streaming state: the open elements' roles and what has been collected so far.
#[derive(Default)]
struct Parser {
    limits: SoapLimits,
    /// Namespace declarations of each open element, and their sum.
    declared: Vec<usize>,
    in_scope: usize,
    stack: Vec<Role>,
    text: String,
    root_seen: bool,
    organization_id: Option<String>,
    action_id: Option<String>,
    enterprise_url: Option<String>,
    partner_url: Option<String>,
    session_id_present: bool,
    notifications_seen: bool,
    draft: NotificationDraft,
    notifications: Vec<Notification>,
}

impl Parser {
    fn open(&mut self, reader: &NsReader<&[u8]>, start: &BytesStart) -> Result<(), SoapParseError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SoapParseError::TooDeep);
        }
        if self.stack.is_empty() && self.root_seen {
            return Err(malformed(reader, "more than one root element"));
        }
        self.check_attribute_counts(reader, start)?;
        let attributes = read_attributes(reader, start)?;
        let (resolved, local) = reader.resolve_element(start.name());
        let ns = classify(resolved).map_err(|reason| malformed(reader, reason))?;
        let local = std::str::from_utf8(local.as_ref())
            .map_err(|_| malformed(reader, "invalid UTF-8 in an element name"))?;
        let role = self.child_role(ns, local, attributes)?;
        if role.collects_text() {
            self.text.clear();
        }
        self.stack.push(role);
        Ok(())
    }

    /// Counted without the reader's duplicate check, which is quadratic in the attribute count.
    fn check_attribute_counts(
        &mut self,
        reader: &NsReader<&[u8]>,
        start: &BytesStart,
    ) -> Result<(), SoapParseError> {
        let (mut count, mut declarations) = (0, 0);
        for attribute in start.attributes().with_checks(false) {
            count += 1;
            if count > self.limits.max_attributes_per_element {
                return Err(SoapParseError::TooManyAttributes {
                    position: reader.buffer_position(),
                    max: self.limits.max_attributes_per_element,
                });
            }
            if let Ok(attribute) = attribute {
                if attribute.key.as_namespace_binding().is_some() {
                    declarations += 1;
                }
            }
        }
        self.in_scope += declarations;
        if self.in_scope > MAX_NAMESPACE_DECLARATIONS {
            return Err(SoapParseError::TooManyNamespaces);
        }
        self.declared.push(declarations);
        Ok(())
    }

    fn child_role(
        &mut self,
        ns: Ns,
        local: &str,
        attributes: XsiAttributes,
    ) -> Result<Role, SoapParseError> {
        let Some(parent) = self.stack.last_mut() else {
            return self.root_role(ns, local);
        };
        let role = match (&*parent, ns, local) {
            (Role::Envelope, Ns::Envelope, "Body") => Role::Body,
            (Role::Body, Ns::Outbound, "notifications") => {
                self.notifications_seen = true;
                Role::Notifications
            }
            (Role::Notifications, Ns::Outbound, "OrganizationId") => Role::OrganizationId,
            (Role::Notifications, Ns::Outbound, "ActionId") => Role::ActionId,
            (Role::Notifications, Ns::Outbound, "EnterpriseUrl") => Role::EnterpriseUrl,
            (Role::Notifications, Ns::Outbound, "PartnerUrl") => Role::PartnerUrl,
            (Role::Notifications, Ns::Outbound, "SessionId") => Role::SessionId,
            (Role::Notifications, Ns::Outbound, "Notification") => self.open_notification()?,
            (Role::Notification, Ns::Outbound, "Id") => Role::NotificationId,
            (Role::Notification, Ns::Outbound, "sObject") => self.open_sobject(attributes)?,
            (Role::SObject, Ns::SObject, name) => self.open_field(name, attributes.xsi_nil)?,
            (Role::Field { .. }, _, _) => {
                if let Role::Field { has_children, .. } = parent {
                    *has_children = true;
                }
                Role::Ignored
            }
            _ => Role::Ignored,
        };
        Ok(role)
    }

    fn root_role(&mut self, ns: Ns, local: &str) -> Result<Role, SoapParseError> {
        self.root_seen = true;
        match (ns, local) {
            (Ns::Envelope, "Envelope") => Ok(Role::Envelope),
            _ => Err(SoapParseError::NotSoapEnvelope),
        }
    }

    fn open_notification(&mut self) -> Result<Role, SoapParseError> {
        if self.notifications.len() >= MAX_NOTIFICATIONS {
            return Err(SoapParseError::TooManyNotifications);
        }
        self.draft = NotificationDraft::default();
        Ok(Role::Notification)
    }

    fn open_sobject(&mut self, attributes: XsiAttributes) -> Result<Role, SoapParseError> {
        let index = self.notifications.len();
        let qname = attributes
            .xsi_type
            .ok_or(SoapParseError::MissingSObjectType { index })?;
        // The type is a QName such as `sf:Opportunity`; only its local part names the object.
        let type_name = qname.rsplit(':').next().unwrap_or_default();
        if !is_api_name(type_name) {
            return Err(SoapParseError::InvalidSObjectType { index });
        }
        self.draft.sobject = Some(SObjectDraft {
            type_name: type_name.to_string(),
            fields: BTreeMap::new(),
        });
        Ok(Role::SObject)
    }

    fn open_field(&mut self, name: &str, nil: bool) -> Result<Role, SoapParseError> {
        let index = self.notifications.len();
        let field_count = self.draft.sobject.as_ref().map_or(0, |s| s.fields.len());
        if field_count >= MAX_FIELDS_PER_SOBJECT {
            return Err(SoapParseError::TooManyFields { index });
        }
        Ok(Role::Field {
            name: name.to_string(),
            nil,
            has_children: false,
        })
    }

    fn text(&mut self, text: &str) {
        match self.stack.last() {
            Some(Role::SessionId) => {
                // Only the fact that a token was sent is kept, never the token.
                self.session_id_present |= !text.trim().is_empty();
            }
            Some(role) if role.collects_text() => self.text.push_str(text),
            _ => {}
        }
    }

    fn close(&mut self) -> Result<(), SoapParseError> {
        self.in_scope -= self.declared.pop().unwrap_or(0);
        let Some(role) = self.stack.pop() else {
            return Ok(());
        };
        let text = std::mem::take(&mut self.text);
        match role {
            Role::OrganizationId => self.organization_id = non_empty(&text),
            Role::ActionId => self.action_id = non_empty(&text),
            Role::EnterpriseUrl => self.enterprise_url = non_empty(&text),
            Role::PartnerUrl => self.partner_url = non_empty(&text),
            Role::NotificationId => self.draft.id = non_empty(&text),
            Role::Field {
                name,
                nil,
                has_children: false,
            } => {
                if let Some(sobject) = self.draft.sobject.as_mut() {
                    sobject.fields.insert(name, (!nil).then_some(text));
                }
            }
            Role::Notification => self.finish_notification()?,
            _ => {}
        }
        Ok(())
    }

    fn finish_notification(&mut self) -> Result<(), SoapParseError> {
        let index = self.notifications.len();
        let draft = std::mem::take(&mut self.draft);
        let id = draft
            .id
            .ok_or(SoapParseError::MissingNotificationId { index })?;
        let sobject = draft
            .sobject
            .ok_or(SoapParseError::MissingSObject { index })?;
        self.notifications.push(Notification {
            id,
            sobject_type: sobject.type_name,
            fields: sobject.fields,
        });
        Ok(())
    }

    fn finish(self, position: u64) -> Result<OutboundMessage, SoapParseError> {
        if !self.stack.is_empty() {
            return Err(SoapParseError::Truncated { position });
        }
        if !self.root_seen {
            return Err(SoapParseError::NotSoapEnvelope);
        }
        if !self.notifications_seen {
            return Err(SoapParseError::MissingNotifications);
        }
        let organization_id = self
            .organization_id
            .ok_or(SoapParseError::MissingOrganizationId)?;
        if !is_salesforce_id(&organization_id) {
            return Err(SoapParseError::InvalidOrganizationId);
        }
        Ok(OutboundMessage {
            organization_id,
            action_id: self.action_id,
            enterprise_url: self.enterprise_url,
            partner_url: self.partner_url,
            session_id_present: self.session_id_present,
            notifications: self.notifications,
        })
    }
}

fn non_empty(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// Salesforce API names: letters, digits and underscores (`Referral_Partner__c`).
fn is_api_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D7F00000107XsUAI</OrganizationId>
   <ActionId>04k7F0000008V3hQAE</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://ap5.salesforce.com/services/Soap/c/47.0/00D7F00000107Xs</EnterpriseUrl>
   <PartnerUrl>https://ap5.salesforce.com/services/Soap/u/47.0/00D7F00000107Xs</PartnerUrl>
   <Notification>
    <Id>04l7F000008aeAyQAI</Id>
    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>0067F000003pmdWQAQ</sf:Id>
     <sf:AccountId>0017F000007ydJmQAI</sf:AccountId>
     <sf:Amount>120000.0</sf:Amount>
     <sf:CloseDate>2017-04-03</sf:CloseDate>
     <sf:LeadSource>Phone Inquiry</sf:LeadSource>
     <sf:Name>Express Logistics SLA</sf:Name>
     <sf:StageName>Perception Analysis</sf:StageName>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#;

    fn envelope(notifications_body: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D7F00000107XsUAI</OrganizationId>
   {notifications_body}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#
        )
    }

    fn notification(id: &str) -> String {
        format!(
            r#"<Notification><Id>{id}</Id><sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>00Q000000000001</sf:Id></sObject></Notification>"#
        )
    }

    fn fields(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn parses_the_real_example() {
        let message = parse_outbound_message(REAL_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(message.organization_id, "00D7F00000107XsUAI");
        assert_eq!(message.action_id.as_deref(), Some("04k7F0000008V3hQAE"));
        assert_eq!(
            message.enterprise_url.as_deref(),
            Some("https://ap5.salesforce.com/services/Soap/c/47.0/00D7F00000107Xs")
        );
        assert_eq!(
            message.partner_url.as_deref(),
            Some("https://ap5.salesforce.com/services/Soap/u/47.0/00D7F00000107Xs")
        );
        assert!(!message.session_id_present);
        assert_eq!(
            message.notifications,
            vec![Notification {
                id: "04l7F000008aeAyQAI".into(),
                sobject_type: "Opportunity".into(),
                fields: fields(&[
                    ("Id", Some("0067F000003pmdWQAQ")),
                    ("AccountId", Some("0017F000007ydJmQAI")),
                    ("Amount", Some("120000.0")),
                    ("CloseDate", Some("2017-04-03")),
                    ("LeadSource", Some("Phone Inquiry")),
                    ("Name", Some("Express Logistics SLA")),
                    ("StageName", Some("Perception Analysis")),
                ]),
            }]
        );
    }

    #[test]
    fn two_notifications_with_another_prefix_custom_and_nil_fields() {
        let body = envelope(
            r#"<Notification>
    <Id>04l000000000001AAA</Id>
    <sObject xsi:type="sf1:Contact" xmlns:sf1="urn:sobject.enterprise.soap.sforce.com">
     <sf1:Id>0037F00000AbCdEQAZ</sf1:Id>
     <sf1:Email>ana@northwind.io</sf1:Email>
     <sf1:Referral_Source__c>Partner &amp; Co &#233;</sf1:Referral_Source__c>
     <sf1:Phone xsi:nil="true"/>
    </sObject>
   </Notification>
   <Notification>
    <Id>04l000000000002AAA</Id>
    <sObject xsi:type="sf1:Opportunity" xmlns:sf1="urn:sobject.enterprise.soap.sforce.com">
     <sf1:Id>0067F000003pmdWQAQ</sf1:Id>
     <sf1:StageName><![CDATA[Closed <Won>]]></sf1:StageName>
    </sObject>
   </Notification>"#,
        );
        let message = parse_outbound_message(body.as_bytes()).unwrap();
        assert_eq!(message.notifications.len(), 2);
        let contact = &message.notifications[0];
        assert_eq!(contact.id, "04l000000000001AAA");
        assert_eq!(contact.sobject_type, "Contact");
        assert_eq!(
            contact.fields,
            fields(&[
                ("Id", Some("0037F00000AbCdEQAZ")),
                ("Email", Some("ana@northwind.io")),
                ("Referral_Source__c", Some("Partner & Co é")),
                ("Phone", None),
            ])
        );
        let opportunity = &message.notifications[1];
        assert_eq!(opportunity.sobject_type, "Opportunity");
        assert_eq!(
            opportunity.fields.get("StageName"),
            Some(&Some("Closed <Won>".to_string()))
        );
    }

    #[test]
    fn default_namespace_fields_and_prefixed_outbound_elements() {
        let body = r#"<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/">
 <env:Body>
  <out:notifications xmlns:out="http://soap.sforce.com/2005/09/outbound" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
   <out:OrganizationId>00D7F00000107Xs</out:OrganizationId>
   <out:Notification>
    <out:Id>04l000000000003AAA</out:Id>
    <out:sObject i:type="Contact" xmlns="urn:sobject.enterprise.soap.sforce.com">
     <Id>0037F00000AbCdEQAZ</Id>
     <Referral_Source__c>ACME-7</Referral_Source__c>
     <Title i:nil="true"/>
     <Unrelated xmlns="urn:other">ignored</Unrelated>
    </out:sObject>
   </out:Notification>
  </out:notifications>
 </env:Body>
</env:Envelope>"#;
        let message = parse_outbound_message(body.as_bytes()).unwrap();
        assert_eq!(message.organization_id, "00D7F00000107Xs");
        let contact = &message.notifications[0];
        assert_eq!(contact.sobject_type, "Contact");
        assert_eq!(
            contact.fields,
            fields(&[
                ("Id", Some("0037F00000AbCdEQAZ")),
                ("Referral_Source__c", Some("ACME-7")),
                ("Title", None),
            ])
        );
    }

    #[test]
    fn elements_with_the_right_name_in_the_wrong_namespace_are_ignored() {
        let body = envelope(
            r#"<Notification><Id>04l000000000001AAA</Id>
      <sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.partner.soap.sforce.com"><sf:Id>x</sf:Id></sObject>
    </Notification>"#,
        );
        let message = parse_outbound_message(body.as_bytes()).unwrap();
        assert!(message.notifications[0].fields.is_empty());
        let wrong_ns = REAL_EXAMPLE.replace(
            "http://soap.sforce.com/2005/09/outbound",
            "http://example.com/outbound",
        );
        assert_eq!(
            parse_outbound_message(wrong_ns.as_bytes()),
            Err(SoapParseError::MissingNotifications)
        );
    }

    #[test]
    fn session_id_is_only_reported_as_present() {
        let body = REAL_EXAMPLE.replace(
            r#"<SessionId xsi:nil="true"/>"#,
            "<SessionId>00D7F!AQ0AQSecretToken</SessionId>",
        );
        let message = parse_outbound_message(body.as_bytes()).unwrap();
        assert!(message.session_id_present);
        assert!(!format!("{message:?}").contains("SecretToken"));
        let json = message.notifications[0].to_json(&message.organization_id, None);
        assert!(!json.contains("SecretToken"));
    }

    #[test]
    fn doctype_and_billion_laughs_are_rejected() {
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><x>&lol3;</x></soapenv:Envelope>"#;
        assert_eq!(
            parse_outbound_message(laughs.as_bytes()),
            Err(SoapParseError::Doctype)
        );
        let simple = format!(
            "<!DOCTYPE Envelope>{}",
            REAL_EXAMPLE.replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "")
        );
        assert_eq!(
            parse_outbound_message(simple.as_bytes()),
            Err(SoapParseError::Doctype)
        );
    }

    #[test]
    fn unknown_entities_are_rejected_in_text_and_attributes() {
        let in_text = REAL_EXAMPLE.replace("Phone Inquiry", "Phone &custom; Inquiry");
        assert!(matches!(
            parse_outbound_message(in_text.as_bytes()),
            Err(SoapParseError::UnknownEntity { .. })
        ));
        let in_attribute = REAL_EXAMPLE.replace("sf:Opportunity", "sf:&custom;");
        assert!(matches!(
            parse_outbound_message(in_attribute.as_bytes()),
            Err(SoapParseError::UnknownEntity { .. })
        ));
        let unterminated = REAL_EXAMPLE.replace("Phone Inquiry", "Phone & Inquiry");
        assert!(matches!(
            parse_outbound_message(unterminated.as_bytes()),
            Err(SoapParseError::UnknownEntity { .. })
        ));
    }

    #[test]
    fn more_than_one_hundred_notifications_are_rejected() {
        let many: String = (0..101)
            .map(|i| notification(&format!("04l{i:015}")))
            .collect();
        assert_eq!(
            parse_outbound_message(envelope(&many).as_bytes()),
            Err(SoapParseError::TooManyNotifications)
        );
        let enough: String = (0..100)
            .map(|i| notification(&format!("04l{i:015}")))
            .collect();
        let message = parse_outbound_message(envelope(&enough).as_bytes()).unwrap();
        assert_eq!(message.notifications.len(), 100);
    }

    #[test]
    fn missing_organization_id_is_rejected() {
        let body = REAL_EXAMPLE.replace("<OrganizationId>00D7F00000107XsUAI</OrganizationId>", "");
        let error = parse_outbound_message(body.as_bytes()).unwrap_err();
        assert_eq!(error, SoapParseError::MissingOrganizationId);
        assert_eq!(error.to_string(), "notifications is missing OrganizationId");
    }

    #[test]
    fn malformed_organization_id_is_rejected() {
        for bad in ["00D7F00000107X", "00D7F00000107Xs-AI", "00D7F0000010 XsUAI"] {
            let body = REAL_EXAMPLE.replace("00D7F00000107XsUAI</", &format!("{bad}</"));
            assert_eq!(
                parse_outbound_message(body.as_bytes()),
                Err(SoapParseError::InvalidOrganizationId),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_notification_parts_are_named() {
        let no_id = REAL_EXAMPLE.replace("<Id>04l7F000008aeAyQAI</Id>", "");
        assert_eq!(
            parse_outbound_message(no_id.as_bytes()),
            Err(SoapParseError::MissingNotificationId { index: 0 })
        );
        let no_sobject = envelope("<Notification><Id>04l000000000001AAA</Id></Notification>");
        assert_eq!(
            parse_outbound_message(no_sobject.as_bytes()),
            Err(SoapParseError::MissingSObject { index: 0 })
        );
        let no_type = REAL_EXAMPLE.replace(r#" xsi:type="sf:Opportunity""#, "");
        assert_eq!(
            parse_outbound_message(no_type.as_bytes()),
            Err(SoapParseError::MissingSObjectType { index: 0 })
        );
    }

    #[test]
    fn non_soap_xml_is_rejected() {
        let rss = br#"<?xml version="1.0"?><rss version="2.0"><channel/></rss>"#;
        assert_eq!(
            parse_outbound_message(rss),
            Err(SoapParseError::NotSoapEnvelope)
        );
        let soap12 = REAL_EXAMPLE.replace(
            "http://schemas.xmlsoap.org/soap/envelope/",
            "http://www.w3.org/2003/05/soap-envelope",
        );
        assert_eq!(
            parse_outbound_message(soap12.as_bytes()),
            Err(SoapParseError::NotSoapEnvelope)
        );
        assert_eq!(
            parse_outbound_message(b""),
            Err(SoapParseError::NotSoapEnvelope)
        );
        assert_eq!(
            parse_outbound_message(br#"{"json": true}"#),
            Err(SoapParseError::NotSoapEnvelope)
        );
    }

    #[test]
    fn truncated_xml_is_rejected_with_a_position() {
        for cut in [REAL_EXAMPLE.len() / 2, REAL_EXAMPLE.len() - 3, 700] {
            let error = parse_outbound_message(&REAL_EXAMPLE.as_bytes()[..cut]).unwrap_err();
            assert!(
                matches!(
                    error,
                    SoapParseError::Truncated { .. } | SoapParseError::MalformedXml { .. }
                ),
                "{cut}: {error}"
            );
            assert!(error.to_string().contains("at byte"), "{error}");
        }
        let mismatched = REAL_EXAMPLE.replace("</sf:Name>", "</sf:Nome>");
        let error = parse_outbound_message(mismatched.as_bytes()).unwrap_err();
        assert!(
            matches!(error, SoapParseError::MalformedXml { .. }),
            "{error}"
        );
    }

    #[test]
    fn undeclared_prefix_is_malformed() {
        let body =
            REAL_EXAMPLE.replace(r#" xmlns:sf="urn:sobject.enterprise.soap.sforce.com""#, "");
        assert!(matches!(
            parse_outbound_message(body.as_bytes()),
            Err(SoapParseError::MalformedXml { .. })
        ));
    }

    #[test]
    fn nesting_and_field_count_are_capped() {
        let deep = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        let body = REAL_EXAMPLE.replace("Phone Inquiry", &deep);
        assert_eq!(
            parse_outbound_message(body.as_bytes()),
            Err(SoapParseError::TooDeep)
        );
        let many: String = (0..=MAX_FIELDS_PER_SOBJECT)
            .map(|i| format!("<sf:F{i}__c>x</sf:F{i}__c>"))
            .collect();
        let body = REAL_EXAMPLE.replace("<sf:Name>", &format!("{many}<sf:Name>"));
        assert_eq!(
            parse_outbound_message(body.as_bytes()),
            Err(SoapParseError::TooManyFields { index: 0 })
        );
    }

    #[test]
    fn org_ids_match_on_their_first_fifteen_characters() {
        assert!(org_id_matches("00D7F00000107Xs", "00D7F00000107XsUAI"));
        assert!(org_id_matches("00D7F00000107XsUAI", "00D7F00000107Xs"));
        assert!(org_id_matches("00D7F00000107XsUAI", "00D7F00000107XsUAI"));
        assert!(!org_id_matches("00D7F00000107XS", "00D7F00000107XsUAI"));
        assert!(!org_id_matches("00D7F00000107Xt", "00D7F00000107XsUAI"));
        assert!(!org_id_matches("", ""));
        assert!(!org_id_matches("00D7F00000107Xs", "00D7F00000107Xs1"));
        assert!(!org_id_matches("00D7F00000107Xé", "00D7F00000107Xé"));
    }

    #[test]
    fn eighteen_character_ids_must_carry_their_checksum() {
        assert!(is_salesforce_id("00D7F00000107XsUAI"));
        assert!(is_salesforce_id("00D000000000001EAA"));
        // Same first 15 characters, wrong suffix: not an id, so it matches nothing.
        assert!(!is_salesforce_id("00D7F00000107XsAAA"));
        assert!(!org_id_matches("00D7F00000107XsUAI", "00D7F00000107XsAAA"));
        assert!(!org_id_matches("00D7F00000107Xs", "00D7F00000107XsAAA"));
        let message = REAL_EXAMPLE.replace("00D7F00000107XsUAI", "00D7F00000107XsAAA");
        assert_eq!(
            parse_outbound_message(message.as_bytes()),
            Err(SoapParseError::InvalidOrganizationId)
        );
    }

    #[test]
    fn attributes_and_namespace_declarations_are_bounded() {
        let attributes: String = (0..40).map(|i| format!(" a{i}=\"x\"")).collect();
        let crowded =
            REAL_EXAMPLE.replacen("<soapenv:Body>", &format!("<soapenv:Body{attributes}>"), 1);
        assert!(matches!(
            parse_outbound_message(crowded.as_bytes()),
            Err(SoapParseError::TooManyAttributes { max: 32, .. })
        ));
        let roomy = SoapLimits {
            max_attributes_per_element: 64,
        };
        assert!(parse_outbound_message_with(crowded.as_bytes(), roomy).is_ok());

        let declarations: String = (0..30)
            .map(|i| format!(" xmlns:p{i}=\"urn:p{i}\""))
            .collect();
        let nested = format!("<x{declarations}>").repeat(3) + "</x>".repeat(3).as_str();
        let namespaced =
            REAL_EXAMPLE.replacen("<soapenv:Body>", &format!("<soapenv:Body>{nested}"), 1);
        assert_eq!(
            parse_outbound_message(namespaced.as_bytes()),
            Err(SoapParseError::TooManyNamespaces)
        );
    }

    #[test]
    fn ack_is_exact() {
        assert_eq!(
            ack_response(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body><notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\"><Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
        );
    }

    #[test]
    fn fault_escapes_its_message() {
        let fault = fault_response(FaultCode::Client, "bad <tag> & \"quote\" 'x'\u{0}");
        assert!(fault.contains("<faultcode>soapenv:Client</faultcode>"));
        assert!(fault.contains(
            "<faultstring>bad &lt;tag&gt; &amp; &quot;quote&quot; &apos;x&apos;\u{FFFD}</faultstring>"
        ));
        assert!(fault_response(FaultCode::Server, "x")
            .contains("<faultcode>soapenv:Server</faultcode>"));
        let mut reader = NsReader::from_reader(fault.as_bytes());
        loop {
            match reader.read_event() {
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("fault is not well-formed: {e}"),
            }
        }
    }

    #[test]
    fn notification_json_is_stable() {
        let message = parse_outbound_message(REAL_EXAMPLE.as_bytes()).unwrap();
        let json =
            message.notifications[0].to_json("00D7F00000107XsUAI", Some("04k7F0000008V3hQAE"));
        assert!(json.starts_with(
            r#"{"organization_id":"00D7F00000107XsUAI","action_id":"04k7F0000008V3hQAE","notification_id":"04l7F000008aeAyQAI","sobject_type":"Opportunity","fields":{"AccountId":"0017F000007ydJmQAI","Amount":"120000.0""#
        ), "{json}");
        let mut nil = message.notifications[0].clone();
        nil.fields.insert("Phone".into(), None);
        assert!(nil.to_json("o", None).contains(r#""action_id":null"#));
        assert!(nil.to_json("o", None).contains(r#""Phone":null"#));
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let inputs: [&[u8]; 8] = [
            b"<",
            b"<soapenv:Envelope",
            b"</a>",
            b"<a xmlns:b='x' b:c='1' b:c='2'/>",
            b"\xff\xfe<\x00a\x00>",
            b"<?xml version='1.0' encoding='UTF-16'?><a/>",
            b"<![CDATA[x",
            b"<a>&#0;&#xD800;&#99999999999;</a>",
        ];
        for input in inputs {
            assert!(parse_outbound_message(input).is_err());
        }
        for value in [
            "&#0;",
            "&#xD800;",
            "&#99999999999;",
            "&#x;",
            "&;",
            "\u{0}<![CDATA[",
            "<b>",
        ] {
            let body = REAL_EXAMPLE.replace("Phone Inquiry", value);
            assert!(parse_outbound_message(body.as_bytes()).is_err(), "{value}");
        }
        let second_root = format!("{REAL_EXAMPLE}<soapenv:Envelope xmlns:soapenv=\"x\"/>");
        assert!(matches!(
            parse_outbound_message(second_root.as_bytes()),
            Err(SoapParseError::MalformedXml { .. })
        ));
    }
}

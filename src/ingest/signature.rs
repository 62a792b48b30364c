//! Webhook signatures: verifying (and, for the `sign` command and tests, producing) every inbound
//! scheme — HubSpot v1/v2/v3, Standard Webhooks, Stripe-style and plain HMAC-SHA256 — over the RAW
//! body bytes. Comparisons are constant-time, each source may have several secrets (rotation: any
//! one matching is enough), and timestamped schemes are checked against a tolerance window.
//!
//! Time is always passed in, never read here: HubSpot functions take Unix MILLISECONDS (that is
//! what HubSpot puts in its timestamp header), the other schemes take Unix SECONDS.
//! Empty secrets are ignored, so a source whose secrets are all empty fails with `NoSecret`.
//! Errors never carry a secret, a received signature or a computed one.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        header: &'static str,
        reason: &'static str,
    },
    #[error("timestamp outside the allowed window (too old)")]
    Stale,
    #[error("timestamp outside the allowed window (in the future)")]
    Future,
    #[error("signature does not match")]
    Mismatch,
    #[error("signature version {0} is not accepted")]
    VersionNotAccepted(String),
    #[error("no secret configured")]
    NoSecret,
}

impl SignatureError {
    /// Stable snake_case code for metrics labels and logs.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader { .. } => "malformed_header",
            Self::Stale => "stale_timestamp",
            Self::Future => "future_timestamp",
            Self::Mismatch => "signature_mismatch",
            Self::VersionNotAccepted(_) => "version_not_accepted",
            Self::NoSecret => "no_secret",
        }
    }
}

/// A configured secret that cannot be used (for config validation).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SecretError {
    #[error("secret is empty")]
    Empty,
    #[error("secret is not valid base64 (after an optional whsec_ prefix)")]
    NotBase64,
}

/// Read access to request headers. Names passed in are always lowercase; matching them
/// case-insensitively is the implementor's job. With repeated headers, return the first.
pub trait HeaderSource {
    fn header(&self, name: &str) -> Option<&str>;
}

impl<H: HeaderSource + ?Sized> HeaderSource for &H {
    fn header(&self, name: &str) -> Option<&str> {
        (**self).header(name)
    }
}

impl HeaderSource for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl<const N: usize> HeaderSource for [(&str, &str); N] {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl HeaderSource for [(String, String)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

// ---------------------------------------------------------------------------------------------
// HubSpot

pub const HUBSPOT_SIGNATURE: &str = "x-hubspot-signature";
pub const HUBSPOT_SIGNATURE_VERSION: &str = "x-hubspot-signature-version";
pub const HUBSPOT_SIGNATURE_V3: &str = "x-hubspot-signature-v3";
pub const HUBSPOT_REQUEST_TIMESTAMP: &str = "x-hubspot-request-timestamp";
/// HubSpot rejects v3 requests older than five minutes; we use the same window.
pub const HUBSPOT_V3_DEFAULT_TOLERANCE_MS: i64 = 300_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HubSpotVersion {
    V1,
    V2,
    V3,
}

impl HubSpotVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[error("unknown HubSpot signature version (expected v1, v2 or v3)")]
pub struct UnknownHubSpotVersion;

impl std::str::FromStr for HubSpotVersion {
    type Err = UnknownHubSpotVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            v if v.eq_ignore_ascii_case("v1") => Ok(Self::V1),
            v if v.eq_ignore_ascii_case("v2") => Ok(Self::V2),
            v if v.eq_ignore_ascii_case("v3") => Ok(Self::V3),
            _ => Err(UnknownHubSpotVersion),
        }
    }
}

/// One HubSpot request as received. `uri` is the full public URL HubSpot called, query included.
#[derive(Clone, Copy)]
pub struct HubSpotRequest<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub body: &'a [u8],
    pub headers: &'a dyn HeaderSource,
}

/// Verifies a HubSpot request, returning the version that matched. `tolerance_ms` and
/// `now_unix_ms` are milliseconds. A v3 header is preferred when v3 is accepted, and its failure
/// is final: falling back to v1/v2 would let an attacker strip v3 to dodge the replay window.
pub fn verify_hubspot(
    req: &HubSpotRequest<'_>,
    secrets: &[&str],
    accepted_versions: &[HubSpotVersion],
    tolerance_ms: i64,
    now_unix_ms: i64,
) -> Result<HubSpotVersion, SignatureError> {
    hubspot_claim(
        req.headers,
        secrets,
        accepted_versions,
        tolerance_ms,
        now_unix_ms,
    )?
    .verify(req.method, req.uri, req.body)
}

/// What a HubSpot request's headers claim, checked as far as the headers alone allow (a secret
/// configured, the headers present and well formed, the version accepted, the timestamp inside
/// the window), so a request that cannot pass is refused before its body is read.
/// [`HubSpotClaim::verify`] finishes the check against the body.
#[derive(Debug)]
pub struct HubSpotClaim<'a> {
    version: HubSpotVersion,
    secrets: Vec<&'a str>,
    provided: Vec<u8>,
    /// v3 only: the timestamp header as sent (it is signed as text).
    timestamp: Option<&'a str>,
}

/// See [`HubSpotClaim`]; the rules are those of [`verify_hubspot`].
pub fn hubspot_claim<'a>(
    headers: &'a dyn HeaderSource,
    secrets: &[&'a str],
    accepted_versions: &[HubSpotVersion],
    tolerance_ms: i64,
    now_unix_ms: i64,
) -> Result<HubSpotClaim<'a>, SignatureError> {
    let secrets = usable_secrets(secrets)?;
    let v3_signature = present(headers, HUBSPOT_SIGNATURE_V3);
    let v3_accepted = accepted_versions.contains(&HubSpotVersion::V3);

    if let (Some(signature), true) = (v3_signature, v3_accepted) {
        let timestamp = required(headers, HUBSPOT_REQUEST_TIMESTAMP)?;
        let timestamp_ms = parse_timestamp(timestamp, HUBSPOT_REQUEST_TIMESTAMP)?;
        check_window(timestamp_ms, now_unix_ms, tolerance_ms)?;
        let provided = STANDARD
            .decode(signature)
            .map_err(|_| SignatureError::MalformedHeader {
                header: HUBSPOT_SIGNATURE_V3,
                reason: "not base64",
            })?;
        return Ok(HubSpotClaim {
            version: HubSpotVersion::V3,
            secrets,
            provided: sha256_sized(provided)?,
            timestamp: Some(timestamp),
        });
    }

    let Some(signature) = present(headers, HUBSPOT_SIGNATURE) else {
        return Err(if v3_signature.is_some() {
            SignatureError::VersionNotAccepted(HubSpotVersion::V3.as_str().into())
        } else if v3_accepted {
            SignatureError::MissingHeader(HUBSPOT_SIGNATURE_V3)
        } else {
            SignatureError::MissingHeader(HUBSPOT_SIGNATURE)
        });
    };
    let version = match required(headers, HUBSPOT_SIGNATURE_VERSION)?.parse() {
        Ok(v @ (HubSpotVersion::V1 | HubSpotVersion::V2)) => v,
        _ => {
            return Err(SignatureError::MalformedHeader {
                header: HUBSPOT_SIGNATURE_VERSION,
                reason: "expected v1 or v2",
            })
        }
    };
    if !accepted_versions.contains(&version) {
        return Err(SignatureError::VersionNotAccepted(version.as_str().into()));
    }
    let provided = hex::decode(signature).map_err(|_| SignatureError::MalformedHeader {
        header: HUBSPOT_SIGNATURE,
        reason: "not hex",
    })?;
    Ok(HubSpotClaim {
        version,
        secrets,
        provided: sha256_sized(provided)?,
        timestamp: None,
    })
}

impl HubSpotClaim<'_> {
    /// Checks the signature over `method`, the full public `uri` HubSpot called, and `body`.
    pub fn verify(
        &self,
        method: &str,
        uri: &str,
        body: &[u8],
    ) -> Result<HubSpotVersion, SignatureError> {
        let matched = match (self.version, self.timestamp) {
            (HubSpotVersion::V3, Some(timestamp)) => {
                let uri = hubspot_v3_normalize_uri(uri);
                self.secrets.iter().any(|secret| {
                    hubspot_v3_mac(secret, method, &uri, body, timestamp)
                        .verify_slice(&self.provided)
                        .is_ok()
                })
            }
            (version, _) => self.secrets.iter().any(|secret| {
                let expected = hubspot_legacy_digest(version, secret, method, uri, body);
                bool::from(expected.as_slice().ct_eq(&self.provided))
            }),
        };
        if matched {
            Ok(self.version)
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Decodes only the percent-escapes HubSpot decodes before signing v3 (`: / ? @ ! $ ' ( ) * , ;`,
/// hex digits in either case); every other escape, `%20` included, stays as it is.
pub fn hubspot_v3_normalize_uri(uri: &str) -> String {
    const DECODED: &[u8] = b":/?@!$'()*,;";
    let bytes = uri.as_bytes();
    let mut out = String::with_capacity(uri.len());
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        let decoded = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex_value(hi)
                .zip(hex_value(lo))
                .map(|(hi, lo)| (hi << 4) | lo)
                .filter(|b| DECODED.contains(b)),
            _ => None,
        };
        match decoded {
            Some(b) => {
                out.push_str(&uri[copied..i]);
                out.push(char::from(b));
                i += 3;
                copied = i;
            }
            None => i += 1,
        }
    }
    out.push_str(&uri[copied..]);
    out
}

/// The headers HubSpot would send. `timestamp_ms` is used by v3 only; `uri` is the full URL.
pub fn sign_hubspot(
    version: HubSpotVersion,
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: i64,
) -> Vec<(String, String)> {
    match version {
        HubSpotVersion::V1 | HubSpotVersion::V2 => {
            let digest = hubspot_legacy_digest(version, secret, method, uri, body);
            vec![
                (HUBSPOT_SIGNATURE.into(), hex::encode(digest)),
                (HUBSPOT_SIGNATURE_VERSION.into(), version.as_str().into()),
            ]
        }
        HubSpotVersion::V3 => {
            let timestamp = timestamp_ms.to_string();
            let uri = hubspot_v3_normalize_uri(uri);
            let mac = hubspot_v3_mac(secret, method, &uri, body, &timestamp);
            vec![
                (
                    HUBSPOT_SIGNATURE_V3.into(),
                    STANDARD.encode(mac.finalize().into_bytes()),
                ),
                (HUBSPOT_REQUEST_TIMESTAMP.into(), timestamp),
            ]
        }
    }
}

fn hubspot_legacy_digest(
    version: HubSpotVersion,
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(secret.as_bytes());
    if version == HubSpotVersion::V2 {
        hasher.update(method.as_bytes());
        hasher.update(uri.as_bytes());
    }
    hasher.update(body);
    hasher.finalize().into()
}

fn hubspot_v3_mac(
    secret: &str,
    method: &str,
    normalized_uri: &str,
    body: &[u8],
    timestamp: &str,
) -> HmacSha256 {
    let mut mac = new_mac(secret.as_bytes());
    mac.update(method.as_bytes());
    mac.update(normalized_uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks (https://www.standardwebhooks.com)

pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
pub const STANDARD_WEBHOOKS_DEFAULT_TOLERANCE_SECS: i64 = 300;

// Some senders drop the padding from secrets; the key bytes are the same either way.
const LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The HMAC key of a Standard Webhooks secret: base64 after an optional `whsec_` prefix.
/// Config validation calls this so a bad secret is refused at startup rather than per request.
pub fn parse_standard_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    if encoded.is_empty() {
        return Err(SecretError::Empty);
    }
    match LENIENT_PADDING.decode(encoded) {
        Ok(key) if key.is_empty() => Err(SecretError::Empty),
        Ok(key) => Ok(key),
        Err(_) => Err(SecretError::NotBase64),
    }
}

/// Verifies a Standard Webhooks request and returns its `webhook-id` (the dedupe key).
/// Seconds throughout. Secrets that `parse_standard_secret` rejects are skipped.
pub fn verify_standard_webhooks(
    headers: &dyn HeaderSource,
    body: &[u8],
    secrets: &[&str],
    tolerance_secs: i64,
    now_unix_secs: i64,
) -> Result<String, SignatureError> {
    standard_webhooks_claim(headers, secrets, tolerance_secs, now_unix_secs)?.verify(body)
}

/// The headers-only part of [`verify_standard_webhooks`] (see [`HubSpotClaim`] for why).
#[derive(Debug)]
pub struct StandardWebhooksClaim<'h> {
    keys: Vec<Vec<u8>>,
    id: &'h str,
    timestamp: &'h str,
    provided: Vec<Vec<u8>>,
}

pub fn standard_webhooks_claim<'h>(
    headers: &'h dyn HeaderSource,
    secrets: &[&str],
    tolerance_secs: i64,
    now_unix_secs: i64,
) -> Result<StandardWebhooksClaim<'h>, SignatureError> {
    let keys: Vec<Vec<u8>> = secrets
        .iter()
        .filter_map(|s| parse_standard_secret(s).ok())
        .collect();
    if keys.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let id = required(headers, WEBHOOK_ID)?;
    let timestamp = required(headers, WEBHOOK_TIMESTAMP)?;
    let signatures = required(headers, WEBHOOK_SIGNATURE)?;
    let timestamp_secs = parse_timestamp(timestamp, WEBHOOK_TIMESTAMP)?;
    check_window(timestamp_secs, now_unix_secs, tolerance_secs)?;

    // Entries with other version prefixes (`v1a,` is asymmetric), bad base64 or the wrong length
    // cannot match; with none left, no body can.
    let provided: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .filter(|sig| sig.len() == SHA256_LEN)
        .collect();
    if provided.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    Ok(StandardWebhooksClaim {
        keys,
        id,
        timestamp,
        provided,
    })
}

impl StandardWebhooksClaim<'_> {
    /// Checks the signature over the body; returns the `webhook-id`.
    pub fn verify(&self, body: &[u8]) -> Result<String, SignatureError> {
        let matched = self.keys.iter().any(|key| {
            let mac = standard_webhooks_mac(key, self.id, self.timestamp, body);
            self.provided
                .iter()
                .any(|sig| mac.clone().verify_slice(sig).is_ok())
        });
        if matched {
            Ok(self.id.to_string())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

pub fn sign_standard_webhooks(
    secret: &str,
    id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> Result<Vec<(String, String)>, SecretError> {
    let key = parse_standard_secret(secret)?;
    let timestamp = timestamp_secs.to_string();
    let mac = standard_webhooks_mac(&key, id, &timestamp, body);
    let signature = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    Ok(vec![
        (WEBHOOK_ID.into(), id.into()),
        (WEBHOOK_TIMESTAMP.into(), timestamp),
        (WEBHOOK_SIGNATURE.into(), signature),
    ])
}

fn standard_webhooks_mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = new_mac(key);
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

// ---------------------------------------------------------------------------------------------
// Stripe-style

pub const STRIPE_SIGNATURE: &str = "stripe-signature";
pub const STRIPE_DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Verifies `Stripe-Signature: t=…,v1=…[,v1=…]`. Seconds throughout. The secret's UTF-8 bytes
/// are the key as-is, `whsec_` prefix included (unlike Standard Webhooks).
pub fn verify_stripe(
    headers: &dyn HeaderSource,
    body: &[u8],
    secrets: &[&str],
    tolerance_secs: i64,
    now_unix_secs: i64,
) -> Result<(), SignatureError> {
    stripe_claim(headers, secrets, tolerance_secs, now_unix_secs)?.verify(body)
}

/// The headers-only part of [`verify_stripe`] (see [`HubSpotClaim`] for why).
#[derive(Debug)]
pub struct StripeClaim<'a> {
    secrets: Vec<&'a str>,
    timestamp: &'a str,
    provided: Vec<Vec<u8>>,
}

pub fn stripe_claim<'a>(
    headers: &'a dyn HeaderSource,
    secrets: &[&'a str],
    tolerance_secs: i64,
    now_unix_secs: i64,
) -> Result<StripeClaim<'a>, SignatureError> {
    let secrets = usable_secrets(secrets)?;
    let value = required(headers, STRIPE_SIGNATURE)?;
    let malformed = |reason| SignatureError::MalformedHeader {
        header: STRIPE_SIGNATURE,
        reason,
    };
    let mut timestamp = None;
    let mut provided = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, val) = item
            .split_once('=')
            .ok_or_else(|| malformed("expected key=value pairs"))?;
        match key {
            "t" if timestamp.is_some() => return Err(malformed("more than one t")),
            "t" => timestamp = Some(val),
            // A v1 value that is not hex can never match; other keys (v0, future schemes) are ignored.
            "v1" => provided.extend(hex::decode(val).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| malformed("missing t"))?;
    let timestamp_secs = timestamp
        .parse::<i64>()
        .map_err(|_| malformed("t is not a Unix timestamp"))?;
    if provided.is_empty() {
        return Err(malformed("no valid v1 signature"));
    }
    check_window(timestamp_secs, now_unix_secs, tolerance_secs)?;
    provided.retain(|sig| sig.len() == SHA256_LEN);
    if provided.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    Ok(StripeClaim {
        secrets,
        timestamp,
        provided,
    })
}

impl StripeClaim<'_> {
    pub fn verify(&self, body: &[u8]) -> Result<(), SignatureError> {
        let matched = self.secrets.iter().any(|secret| {
            let mac = stripe_mac(secret, self.timestamp, body);
            self.provided
                .iter()
                .any(|sig| mac.clone().verify_slice(sig).is_ok())
        });
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

pub fn sign_stripe(secret: &str, timestamp_secs: i64, body: &[u8]) -> Vec<(String, String)> {
    let timestamp = timestamp_secs.to_string();
    let signature = hex::encode(stripe_mac(secret, &timestamp, body).finalize().into_bytes());
    vec![(
        STRIPE_SIGNATURE.into(),
        format!("t={timestamp},v1={signature}"),
    )]
}

fn stripe_mac(secret: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = new_mac(secret.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

// ---------------------------------------------------------------------------------------------
// Plain HMAC-SHA256

/// Names the header in errors: the configured name is not `'static`, and the caller knows it.
pub const HMAC_HEADER_LABEL: &str = "(configured signature header)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacEncoding {
    #[default]
    Hex,
    Base64,
}

/// How a product source signs its webhooks (`sources.<name>.scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProductScheme {
    StandardWebhooks,
    Stripe,
    /// An HMAC-SHA256 of the body in a header the source names.
    HmacSha256,
}

impl ProductScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard-webhooks",
            Self::Stripe => "stripe",
            Self::HmacSha256 => "hmac-sha256",
        }
    }
}

/// Verifies an HMAC-SHA256 of the raw body (key = secret bytes) carried in `header_name`
/// (lowercase), optionally prefixed `sha256=` as GitHub does. No timestamp, so no replay window.
pub fn verify_hmac_sha256(
    headers: &dyn HeaderSource,
    header_name: &str,
    body: &[u8],
    secrets: &[&str],
    encoding: HmacEncoding,
) -> Result<(), SignatureError> {
    hmac_sha256_claim(headers, header_name, secrets, encoding)?.verify(body)
}

/// The headers-only part of [`verify_hmac_sha256`] (see [`HubSpotClaim`] for why).
#[derive(Debug)]
pub struct HmacClaim<'a> {
    secrets: Vec<&'a str>,
    provided: Vec<u8>,
}

pub fn hmac_sha256_claim<'a>(
    headers: &dyn HeaderSource,
    header_name: &str,
    secrets: &[&'a str],
    encoding: HmacEncoding,
) -> Result<HmacClaim<'a>, SignatureError> {
    let secrets = usable_secrets(secrets)?;
    let value =
        present(headers, header_name).ok_or(SignatureError::MissingHeader(HMAC_HEADER_LABEL))?;
    let encoded = value.strip_prefix("sha256=").unwrap_or(value);
    let provided = match encoding {
        HmacEncoding::Hex => hex::decode(encoded).map_err(|_| "not hex"),
        HmacEncoding::Base64 => STANDARD.decode(encoded).map_err(|_| "not base64"),
    }
    .map_err(|reason| SignatureError::MalformedHeader {
        header: HMAC_HEADER_LABEL,
        reason,
    })?;
    Ok(HmacClaim {
        secrets,
        provided: sha256_sized(provided)?,
    })
}

impl HmacClaim<'_> {
    pub fn verify(&self, body: &[u8]) -> Result<(), SignatureError> {
        let matched = self
            .secrets
            .iter()
            .any(|secret| body_mac(secret, body).verify_slice(&self.provided).is_ok());
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

pub fn sign_hmac_sha256(
    header_name: &str,
    secret: &str,
    body: &[u8],
    encoding: HmacEncoding,
) -> Vec<(String, String)> {
    let tag = body_mac(secret, body).finalize().into_bytes();
    let value = match encoding {
        HmacEncoding::Hex => hex::encode(tag),
        HmacEncoding::Base64 => STANDARD.encode(tag),
    };
    vec![(header_name.to_ascii_lowercase(), value)]
}

fn body_mac(secret: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = new_mac(secret.as_bytes());
    mac.update(body);
    mac
}

// ---------------------------------------------------------------------------------------------
// Shared

fn new_mac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// An empty secret would make v1 a bare hash of the body and HMAC keys guessable.
fn usable_secrets<'a>(secrets: &[&'a str]) -> Result<Vec<&'a str>, SignatureError> {
    let usable: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    if usable.is_empty() {
        Err(SignatureError::NoSecret)
    } else {
        Ok(usable)
    }
}

/// Every scheme here signs with HMAC-SHA256 (or SHA-256 for HubSpot v1/v2): 32 bytes.
const SHA256_LEN: usize = 32;

/// A signature of any other length cannot match whatever the body is.
fn sha256_sized(provided: Vec<u8>) -> Result<Vec<u8>, SignatureError> {
    if provided.len() == SHA256_LEN {
        Ok(provided)
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A header with a non-blank value; a blank one is treated as absent.
fn present<'h>(headers: &'h dyn HeaderSource, name: &str) -> Option<&'h str> {
    headers
        .header(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn required<'h>(
    headers: &'h dyn HeaderSource,
    name: &'static str,
) -> Result<&'h str, SignatureError> {
    present(headers, name).ok_or(SignatureError::MissingHeader(name))
}

fn parse_timestamp(value: &str, header: &'static str) -> Result<i64, SignatureError> {
    value.parse().map_err(|_| SignatureError::MalformedHeader {
        header,
        reason: "not a Unix timestamp",
    })
}

/// Both directions: a far-future timestamp would otherwise stay replayable until it goes stale.
fn check_window(timestamp: i64, now: i64, tolerance: i64) -> Result<(), SignatureError> {
    let tolerance = tolerance.max(0);
    if now.saturating_sub(timestamp) > tolerance {
        Err(SignatureError::Stale)
    } else if timestamp.saturating_sub(now) > tolerance {
        Err(SignatureError::Future)
    } else {
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HS_SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const HS_DOCS_V1_BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    const HS_SDK_BODY: &str = "{'example_field':'example_value'}";
    const HS_SDK_URI: &str = "https://www.example.com/webhook_uri";
    const HS_V3_SECRET: &str = "cfc68c0b-4b4e-4ef8-b764-95350e4ea479";
    const HS_V3_URI: &str = "https://webhook.site/335453f5-94b3-49d9-b684-a55354d4b8df";
    const HS_V3_BODY: &str = r#"[{"eventId":531833541,"subscriptionId":3923621,"portalId":48807704,"appId":16111050,"occurredAt":1752613920733,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":138017612137,"changeFlag":"CREATED","changeSource":"CRM_UI","sourceId":"userId:76023669"}]"#;
    const HS_V3_TS: i64 = 1_752_613_922_216;
    const ALL: &[HubSpotVersion] = &[HubSpotVersion::V1, HubSpotVersion::V2, HubSpotVersion::V3];
    const TOL_MS: i64 = HUBSPOT_V3_DEFAULT_TOLERANCE_MS;

    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1_614_265_330;
    const SW_BODY: &str = r#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const ST_SECRET: &str = "whsec_test_secret";
    const ST_TS: i64 = 1_614_265_330;
    const ST_BODY: &str = r#"{"id":"evt_test","object":"event"}"#;
    const ST_SIG: &str = "fbd6bf5496b9d6310e422a2c072578f95f5eb492111ab57a5510e9cd79c1b304";

    fn value<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers.header(name).expect("header produced by sign")
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(headers: &mut Vec<(String, String)>, name: &str, val: &str) {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        headers.push((name.to_string(), val.to_string()));
    }

    fn hubspot(
        method: &str,
        uri: &str,
        body: &str,
        headers: &[(String, String)],
        secrets: &[&str],
        accepted: &[HubSpotVersion],
        now_ms: i64,
    ) -> Result<HubSpotVersion, SignatureError> {
        let req = HubSpotRequest {
            method,
            uri,
            body: body.as_bytes(),
            headers: &headers,
        };
        verify_hubspot(&req, secrets, accepted, TOL_MS, now_ms)
    }

    fn hs_sign(
        v: HubSpotVersion,
        secret: &str,
        method: &str,
        uri: &str,
        body: &str,
        ts: i64,
    ) -> Vec<(String, String)> {
        sign_hubspot(v, secret, method, uri, body.as_bytes(), ts)
    }

    // --- official vectors ---------------------------------------------------------------------

    #[test]
    fn hubspot_v1_docs_vector() {
        let expected = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
        let headers = hs_sign(
            HubSpotVersion::V1,
            HS_SECRET,
            "POST",
            HS_SDK_URI,
            HS_DOCS_V1_BODY,
            0,
        );
        assert_eq!(value(&headers, HUBSPOT_SIGNATURE), expected);
        assert_eq!(value(&headers, HUBSPOT_SIGNATURE_VERSION), "v1");
        let received = h(&[
            ("X-HubSpot-Signature", expected),
            ("X-HubSpot-Signature-Version", "v1"),
        ]);
        let got = hubspot(
            "POST",
            HS_SDK_URI,
            HS_DOCS_V1_BODY,
            &received,
            &[HS_SECRET],
            ALL,
            0,
        );
        assert_eq!(got, Ok(HubSpotVersion::V1));
    }

    #[test]
    fn hubspot_v2_docs_get_vector() {
        let expected = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e";
        let uri = "https://www.example.com/webhook_uri";
        let headers = hs_sign(HubSpotVersion::V2, HS_SECRET, "GET", uri, "", 0);
        assert_eq!(value(&headers, HUBSPOT_SIGNATURE), expected);
        let received = h(&[
            (HUBSPOT_SIGNATURE, expected),
            (HUBSPOT_SIGNATURE_VERSION, "v2"),
        ]);
        assert_eq!(
            hubspot("GET", uri, "", &received, &[HS_SECRET], ALL, 0),
            Ok(HubSpotVersion::V2)
        );
    }

    #[test]
    fn hubspot_python_sdk_vectors() {
        let ts = 15_000_000;
        let cases = [
            (
                HubSpotVersion::V1,
                HUBSPOT_SIGNATURE,
                "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750",
            ),
            (
                HubSpotVersion::V2,
                HUBSPOT_SIGNATURE,
                "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383",
            ),
            (
                HubSpotVersion::V3,
                HUBSPOT_SIGNATURE_V3,
                "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
            ),
        ];
        for (version, header, expected) in cases {
            let headers = hs_sign(version, HS_SECRET, "POST", HS_SDK_URI, HS_SDK_BODY, ts);
            assert_eq!(value(&headers, header), expected, "{version:?}");
            let got = hubspot(
                "POST",
                HS_SDK_URI,
                HS_SDK_BODY,
                &headers,
                &[HS_SECRET],
                &[version],
                ts,
            );
            assert_eq!(got, Ok(version));
        }
        let received = h(&[
            (
                HUBSPOT_SIGNATURE_V3,
                "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
            ),
            (HUBSPOT_REQUEST_TIMESTAMP, "15000000"),
        ]);
        let got = hubspot(
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            &received,
            &[HS_SECRET],
            ALL,
            ts,
        );
        assert_eq!(got, Ok(HubSpotVersion::V3));
    }

    #[test]
    fn hubspot_v3_docs_vector() {
        let expected = "gbj1XPRvUt0noT7i7fXfTzOD4sLzQmf0VT28ZYq0EYg=";
        let headers = hs_sign(
            HubSpotVersion::V3,
            HS_V3_SECRET,
            "POST",
            HS_V3_URI,
            HS_V3_BODY,
            HS_V3_TS,
        );
        assert_eq!(value(&headers, HUBSPOT_SIGNATURE_V3), expected);
        assert_eq!(value(&headers, HUBSPOT_REQUEST_TIMESTAMP), "1752613922216");
        let received = h(&[
            ("X-HubSpot-Signature-v3", expected),
            ("X-HubSpot-Request-Timestamp", "1752613922216"),
        ]);
        let got = hubspot(
            "POST",
            HS_V3_URI,
            HS_V3_BODY,
            &received,
            &[HS_V3_SECRET],
            ALL,
            HS_V3_TS + 1_000,
        );
        assert_eq!(got, Ok(HubSpotVersion::V3));
    }

    #[test]
    fn standard_webhooks_vector_with_and_without_prefix() {
        let headers = sign_standard_webhooks(SW_SECRET, SW_ID, SW_TS, SW_BODY.as_bytes()).unwrap();
        assert_eq!(value(&headers, WEBHOOK_SIGNATURE), SW_SIG);
        let unprefixed = SW_SECRET.strip_prefix("whsec_").unwrap();
        let again = sign_standard_webhooks(unprefixed, SW_ID, SW_TS, SW_BODY.as_bytes()).unwrap();
        assert_eq!(value(&again, WEBHOOK_SIGNATURE), SW_SIG);

        let received = h(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", SW_SIG),
        ]);
        for secret in [SW_SECRET, unprefixed] {
            let got =
                verify_standard_webhooks(&received, SW_BODY.as_bytes(), &[secret], 300, SW_TS);
            assert_eq!(got, Ok(SW_ID.to_string()));
        }
    }

    #[test]
    fn stripe_vector_uses_secret_string_as_key() {
        let headers = sign_stripe(ST_SECRET, ST_TS, ST_BODY.as_bytes());
        assert_eq!(
            value(&headers, STRIPE_SIGNATURE),
            format!("t=1614265330,v1={ST_SIG}")
        );
        let received = h(&[("Stripe-Signature", &format!("t=1614265330,v1={ST_SIG}"))]);
        assert_eq!(
            verify_stripe(&received, ST_BODY.as_bytes(), &[ST_SECRET], 300, ST_TS),
            Ok(())
        );
    }

    // --- HubSpot behaviour ----------------------------------------------------------------------

    #[test]
    fn hubspot_rotation_second_secret_matches() {
        for version in [HubSpotVersion::V1, HubSpotVersion::V2, HubSpotVersion::V3] {
            let headers = hs_sign(
                version,
                "new-secret",
                "POST",
                HS_SDK_URI,
                HS_SDK_BODY,
                1_000,
            );
            let got = hubspot(
                "POST",
                HS_SDK_URI,
                HS_SDK_BODY,
                &headers,
                &["old-secret", "new-secret"],
                ALL,
                1_000,
            );
            assert_eq!(got, Ok(version));
            let got = hubspot(
                "POST",
                HS_SDK_URI,
                HS_SDK_BODY,
                &headers,
                &["old-secret"],
                ALL,
                1_000,
            );
            assert_eq!(got, Err(SignatureError::Mismatch));
        }
    }

    #[test]
    fn hubspot_tampered_body_is_rejected() {
        for version in [HubSpotVersion::V1, HubSpotVersion::V2, HubSpotVersion::V3] {
            let headers = hs_sign(version, HS_SECRET, "POST", HS_SDK_URI, HS_SDK_BODY, 1_000);
            let got = hubspot(
                "POST",
                HS_SDK_URI,
                "{'example_field':'other'}",
                &headers,
                &[HS_SECRET],
                ALL,
                1_000,
            );
            assert_eq!(got, Err(SignatureError::Mismatch), "{version:?}");
        }
    }

    #[test]
    fn hubspot_tampered_uri_is_rejected() {
        for version in [HubSpotVersion::V2, HubSpotVersion::V3] {
            let headers = hs_sign(version, HS_SECRET, "POST", HS_SDK_URI, HS_SDK_BODY, 1_000);
            let got = hubspot(
                "POST",
                "https://www.example.com/other",
                HS_SDK_BODY,
                &headers,
                &[HS_SECRET],
                ALL,
                1_000,
            );
            assert_eq!(got, Err(SignatureError::Mismatch), "{version:?}");
        }
    }

    #[test]
    fn hubspot_v3_stale_and_future() {
        let ts = 10_000_000;
        let headers = hs_sign(
            HubSpotVersion::V3,
            HS_SECRET,
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            ts,
        );
        let at = |now| {
            hubspot(
                "POST",
                HS_SDK_URI,
                HS_SDK_BODY,
                &headers,
                &[HS_SECRET],
                ALL,
                now,
            )
        };
        assert_eq!(at(ts + TOL_MS), Ok(HubSpotVersion::V3));
        assert_eq!(at(ts + TOL_MS + 1), Err(SignatureError::Stale));
        assert_eq!(at(ts - TOL_MS), Ok(HubSpotVersion::V3));
        assert_eq!(at(ts - TOL_MS - 1), Err(SignatureError::Future));
    }

    #[test]
    fn hubspot_v3_failure_is_final_even_with_valid_v1() {
        let mut headers = hs_sign(
            HubSpotVersion::V1,
            HS_SECRET,
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            0,
        );
        let forged = hs_sign(
            HubSpotVersion::V3,
            "wrong",
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            1_000,
        );
        headers.extend(forged);
        let got = hubspot(
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            &headers,
            &[HS_SECRET],
            ALL,
            1_000,
        );
        assert_eq!(got, Err(SignatureError::Mismatch));
        // With v3 not accepted, its header is ignored and v1 decides.
        let v1_only = [HubSpotVersion::V1];
        let got = hubspot(
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            &headers,
            &[HS_SECRET],
            &v1_only,
            1_000,
        );
        assert_eq!(got, Ok(HubSpotVersion::V1));
    }

    #[test]
    fn hubspot_version_not_accepted() {
        let v1 = hs_sign(
            HubSpotVersion::V1,
            HS_SECRET,
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            0,
        );
        let got = hubspot(
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            &v1,
            &[HS_SECRET],
            &[HubSpotVersion::V3],
            0,
        );
        assert_eq!(got, Err(SignatureError::VersionNotAccepted("v1".into())));
        assert_eq!(got.unwrap_err().reason_code(), "version_not_accepted");

        let v3 = hs_sign(
            HubSpotVersion::V3,
            HS_SECRET,
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            0,
        );
        let got = hubspot(
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            &v3,
            &[HS_SECRET],
            &[HubSpotVersion::V1],
            0,
        );
        assert_eq!(got, Err(SignatureError::VersionNotAccepted("v3".into())));
    }

    #[test]
    fn hubspot_missing_and_malformed_headers() {
        let none = h(&[]);
        let got = hubspot("POST", HS_SDK_URI, HS_SDK_BODY, &none, &[HS_SECRET], ALL, 0);
        assert_eq!(
            got,
            Err(SignatureError::MissingHeader(HUBSPOT_SIGNATURE_V3))
        );
        let got = hubspot(
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            &none,
            &[HS_SECRET],
            &[HubSpotVersion::V1],
            0,
        );
        assert_eq!(got, Err(SignatureError::MissingHeader(HUBSPOT_SIGNATURE)));

        let mut v1 = hs_sign(
            HubSpotVersion::V1,
            HS_SECRET,
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            0,
        );
        v1.retain(|(k, _)| k != HUBSPOT_SIGNATURE_VERSION);
        let got = hubspot("POST", HS_SDK_URI, HS_SDK_BODY, &v1, &[HS_SECRET], ALL, 0);
        assert_eq!(
            got,
            Err(SignatureError::MissingHeader(HUBSPOT_SIGNATURE_VERSION))
        );
        set(&mut v1, HUBSPOT_SIGNATURE_VERSION, "v9");
        let got = hubspot("POST", HS_SDK_URI, HS_SDK_BODY, &v1, &[HS_SECRET], ALL, 0);
        assert_eq!(got.unwrap_err().reason_code(), "malformed_header");
        set(&mut v1, HUBSPOT_SIGNATURE_VERSION, "v1");
        set(&mut v1, HUBSPOT_SIGNATURE, "zz-not-hex");
        let got = hubspot("POST", HS_SDK_URI, HS_SDK_BODY, &v1, &[HS_SECRET], ALL, 0);
        assert_eq!(got.unwrap_err().reason_code(), "malformed_header");

        let mut v3 = hs_sign(
            HubSpotVersion::V3,
            HS_SECRET,
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            0,
        );
        v3.retain(|(k, _)| k != HUBSPOT_REQUEST_TIMESTAMP);
        let got = hubspot("POST", HS_SDK_URI, HS_SDK_BODY, &v3, &[HS_SECRET], ALL, 0);
        assert_eq!(
            got,
            Err(SignatureError::MissingHeader(HUBSPOT_REQUEST_TIMESTAMP))
        );
        set(&mut v3, HUBSPOT_REQUEST_TIMESTAMP, "yesterday");
        let got = hubspot("POST", HS_SDK_URI, HS_SDK_BODY, &v3, &[HS_SECRET], ALL, 0);
        assert_eq!(got.unwrap_err().reason_code(), "malformed_header");
        set(&mut v3, HUBSPOT_REQUEST_TIMESTAMP, "0");
        set(&mut v3, HUBSPOT_SIGNATURE_V3, "not base64!");
        let got = hubspot("POST", HS_SDK_URI, HS_SDK_BODY, &v3, &[HS_SECRET], ALL, 0);
        assert_eq!(got.unwrap_err().reason_code(), "malformed_header");
    }

    #[test]
    fn hubspot_no_secret() {
        let v1 = hs_sign(HubSpotVersion::V1, "", "POST", HS_SDK_URI, HS_SDK_BODY, 0);
        for secrets in [&[][..], &[""][..]] {
            let got = hubspot("POST", HS_SDK_URI, HS_SDK_BODY, &v1, secrets, ALL, 0);
            assert_eq!(got, Err(SignatureError::NoSecret));
        }
    }

    #[test]
    fn hubspot_v3_uri_decoding_rule() {
        assert_eq!(
            hubspot_v3_normalize_uri(
                "https://x.test/a%3Ab%3ac%20d%2Fe%2fq%3Fr%40%21%24%27%28%29%2A%2C%3B"
            ),
            "https://x.test/a:b:c%20d/e/q?r@!$'()*,;"
        );
        assert_eq!(
            hubspot_v3_normalize_uri("/p?q=%2B%25%3D%253A%"),
            "/p?q=%2B%25%3D%253A%"
        );
        assert_eq!(hubspot_v3_normalize_uri("/ü%3a%2"), "/ü:%2");

        let raw = "https://x.test/hook?email=a%40b.test&t=a%3ab%20c";
        let mac = hubspot_v3_mac(
            HS_SECRET,
            "POST",
            "https://x.test/hook?email=a@b.test&t=a:b%20c",
            b"{}",
            "1000",
        );
        let sig = STANDARD.encode(mac.finalize().into_bytes());
        let received = h(&[
            (HUBSPOT_SIGNATURE_V3, &sig),
            (HUBSPOT_REQUEST_TIMESTAMP, "1000"),
        ]);
        assert_eq!(
            hubspot("POST", raw, "{}", &received, &[HS_SECRET], ALL, 1_000),
            Ok(HubSpotVersion::V3)
        );

        let over_space = hubspot_v3_mac(
            HS_SECRET,
            "POST",
            "https://x.test/hook?email=a@b.test&t=a:b c",
            b"{}",
            "1000",
        );
        let sig = STANDARD.encode(over_space.finalize().into_bytes());
        let received = h(&[
            (HUBSPOT_SIGNATURE_V3, &sig),
            (HUBSPOT_REQUEST_TIMESTAMP, "1000"),
        ]);
        assert_eq!(
            hubspot("POST", raw, "{}", &received, &[HS_SECRET], ALL, 1_000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn hubspot_sign_verify_round_trip_with_encoded_uri() {
        let uri = "https://x.test/hook%3Fa?x=%20%3A";
        for version in [HubSpotVersion::V1, HubSpotVersion::V2, HubSpotVersion::V3] {
            let headers = hs_sign(version, HS_SECRET, "PUT", uri, "body", 42_000);
            assert_eq!(
                hubspot("PUT", uri, "body", &headers, &[HS_SECRET], ALL, 42_000),
                Ok(version)
            );
        }
    }

    #[test]
    fn hubspot_version_parses_from_config_strings() {
        assert_eq!("v1".parse(), Ok(HubSpotVersion::V1));
        assert_eq!("V2".parse(), Ok(HubSpotVersion::V2));
        assert_eq!("v3".parse(), Ok(HubSpotVersion::V3));
        assert_eq!("v9".parse::<HubSpotVersion>(), Err(UnknownHubSpotVersion));
        assert_eq!(HubSpotVersion::V3.as_str(), "v3");
    }

    // --- Standard Webhooks behaviour ------------------------------------------------------------

    fn sw_received(sig: &str) -> Vec<(String, String)> {
        h(&[
            (WEBHOOK_ID, SW_ID),
            (WEBHOOK_TIMESTAMP, "1614265330"),
            (WEBHOOK_SIGNATURE, sig),
        ])
    }

    #[test]
    fn standard_webhooks_rotation_and_multiple_signatures() {
        let other = "whsec_c2Vjb25kLXNlY3JldC1rZXktYnl0ZXM=";
        let received = sw_received(SW_SIG);
        let got = verify_standard_webhooks(
            &received,
            SW_BODY.as_bytes(),
            &[other, SW_SECRET],
            300,
            SW_TS,
        );
        assert_eq!(got, Ok(SW_ID.to_string()));
        let got = verify_standard_webhooks(&received, SW_BODY.as_bytes(), &[other], 300, SW_TS);
        assert_eq!(got, Err(SignatureError::Mismatch));

        let several = sw_received(&format!("v1a,AAAA v1,bm90LWl0 {SW_SIG}"));
        let got = verify_standard_webhooks(&several, SW_BODY.as_bytes(), &[SW_SECRET], 300, SW_TS);
        assert_eq!(got, Ok(SW_ID.to_string()));
    }

    #[test]
    fn standard_webhooks_ignores_other_version_prefixes() {
        let b64 = SW_SIG.strip_prefix("v1,").unwrap();
        let received = sw_received(&format!("v1a,{b64} v2,{b64}"));
        let got = verify_standard_webhooks(&received, SW_BODY.as_bytes(), &[SW_SECRET], 300, SW_TS);
        assert_eq!(got, Err(SignatureError::Mismatch));
    }

    #[test]
    fn standard_webhooks_tampered_body() {
        let got = verify_standard_webhooks(
            &sw_received(SW_SIG),
            br#"{"test": 1}"#,
            &[SW_SECRET],
            300,
            SW_TS,
        );
        assert_eq!(got, Err(SignatureError::Mismatch));
    }

    #[test]
    fn standard_webhooks_stale_and_future() {
        let received = sw_received(SW_SIG);
        let at =
            |now| verify_standard_webhooks(&received, SW_BODY.as_bytes(), &[SW_SECRET], 300, now);
        assert!(at(SW_TS + 300).is_ok());
        assert_eq!(at(SW_TS + 301), Err(SignatureError::Stale));
        assert!(at(SW_TS - 300).is_ok());
        assert_eq!(at(SW_TS - 301), Err(SignatureError::Future));
    }

    #[test]
    fn standard_webhooks_missing_and_malformed_headers() {
        for name in [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE] {
            let mut received = sw_received(SW_SIG);
            received.retain(|(k, _)| k != name);
            let got =
                verify_standard_webhooks(&received, SW_BODY.as_bytes(), &[SW_SECRET], 300, SW_TS);
            assert_eq!(got, Err(SignatureError::MissingHeader(name)));
        }
        let mut received = sw_received(SW_SIG);
        set(&mut received, WEBHOOK_TIMESTAMP, "2021-02-25");
        let got = verify_standard_webhooks(&received, SW_BODY.as_bytes(), &[SW_SECRET], 300, SW_TS);
        assert_eq!(got.unwrap_err().reason_code(), "malformed_header");
    }

    #[test]
    fn standard_webhooks_secret_parsing() {
        assert_eq!(parse_standard_secret(SW_SECRET).map(|k| k.len()), Ok(24));
        assert_eq!(
            parse_standard_secret("whsec_c2Vjb25k"),
            Ok(b"second".to_vec())
        );
        assert_eq!(parse_standard_secret("c2Vjb25kLQ"), Ok(b"second-".to_vec()));
        assert_eq!(
            parse_standard_secret("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
        assert_eq!(parse_standard_secret(""), Err(SecretError::Empty));
        assert_eq!(parse_standard_secret("whsec_"), Err(SecretError::Empty));
        assert!(sign_standard_webhooks("whsec_%%%", SW_ID, SW_TS, b"").is_err());

        let got = verify_standard_webhooks(
            &sw_received(SW_SIG),
            SW_BODY.as_bytes(),
            &["whsec_%%%", ""],
            300,
            SW_TS,
        );
        assert_eq!(got, Err(SignatureError::NoSecret));
    }

    #[test]
    fn standard_webhooks_round_trip() {
        let secret = "whsec_c2Vjb25kLXNlY3JldC1rZXktYnl0ZXM=";
        let headers =
            sign_standard_webhooks(secret, "msg_1", 1_700_000_000, b"\x00raw\xffbytes").unwrap();
        let got =
            verify_standard_webhooks(&headers, b"\x00raw\xffbytes", &[secret], 300, 1_700_000_000);
        assert_eq!(got, Ok("msg_1".to_string()));
    }

    // --- Stripe behaviour -----------------------------------------------------------------------

    fn stripe(value: &str, body: &str, secrets: &[&str], now: i64) -> Result<(), SignatureError> {
        verify_stripe(
            &h(&[(STRIPE_SIGNATURE, value)]),
            body.as_bytes(),
            secrets,
            300,
            now,
        )
    }

    #[test]
    fn stripe_rotation_multiple_v1_and_ignored_keys() {
        let value = format!("t={ST_TS},v1={},v1={ST_SIG},v0=abcd,x=y", "00".repeat(32));
        assert_eq!(stripe(&value, ST_BODY, &[ST_SECRET], ST_TS), Ok(()));
        assert_eq!(
            stripe(&value, ST_BODY, &["whsec_old", ST_SECRET], ST_TS),
            Ok(())
        );
        assert_eq!(
            stripe(&value, ST_BODY, &["whsec_old"], ST_TS),
            Err(SignatureError::Mismatch)
        );
        // v0 is never trusted, even when it carries the right value.
        let v0_only = format!("t={ST_TS},v0={ST_SIG}");
        assert_eq!(
            stripe(&v0_only, ST_BODY, &[ST_SECRET], ST_TS)
                .unwrap_err()
                .reason_code(),
            "malformed_header"
        );
    }

    #[test]
    fn stripe_tampered_body() {
        let value = format!("t={ST_TS},v1={ST_SIG}");
        assert_eq!(
            stripe(&value, r#"{"id":"evt_other"}"#, &[ST_SECRET], ST_TS),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stripe_timestamp_is_signed() {
        let value = format!("t={},v1={ST_SIG}", ST_TS + 1);
        assert_eq!(
            stripe(&value, ST_BODY, &[ST_SECRET], ST_TS),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stripe_stale_and_future() {
        let value = format!("t={ST_TS},v1={ST_SIG}");
        assert_eq!(stripe(&value, ST_BODY, &[ST_SECRET], ST_TS + 300), Ok(()));
        assert_eq!(
            stripe(&value, ST_BODY, &[ST_SECRET], ST_TS + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(stripe(&value, ST_BODY, &[ST_SECRET], ST_TS - 300), Ok(()));
        assert_eq!(
            stripe(&value, ST_BODY, &[ST_SECRET], ST_TS - 301),
            Err(SignatureError::Future)
        );
    }

    #[test]
    fn stripe_missing_and_malformed_header() {
        let got = verify_stripe(&h(&[]), ST_BODY.as_bytes(), &[ST_SECRET], 300, ST_TS);
        assert_eq!(got, Err(SignatureError::MissingHeader(STRIPE_SIGNATURE)));
        for bad in [
            "garbage".to_string(),
            format!("v1={ST_SIG}"),
            format!("t=yesterday,v1={ST_SIG}"),
            format!("t={ST_TS},t={ST_TS},v1={ST_SIG}"),
            format!("t={ST_TS}"),
            format!("t={ST_TS},v1=not-hex"),
        ] {
            let err = stripe(&bad, ST_BODY, &[ST_SECRET], ST_TS).unwrap_err();
            assert_eq!(err.reason_code(), "malformed_header", "{bad}");
        }
        assert_eq!(
            stripe(&format!("t={ST_TS},v1={ST_SIG}"), ST_BODY, &[], ST_TS),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn stripe_round_trip() {
        let headers = sign_stripe("sk_rotating", 1_700_000_000, b"{}");
        assert_eq!(
            verify_stripe(&headers, b"{}", &["sk_rotating"], 300, 1_700_000_100),
            Ok(())
        );
    }

    // --- plain HMAC behaviour -------------------------------------------------------------------

    #[test]
    fn hmac_round_trip_both_encodings() {
        for encoding in [HmacEncoding::Hex, HmacEncoding::Base64] {
            let headers = sign_hmac_sha256("X-Signature", "k1", b"payload", encoding);
            assert_eq!(headers[0].0, "x-signature");
            let got =
                verify_hmac_sha256(&headers, "x-signature", b"payload", &["k0", "k1"], encoding);
            assert_eq!(got, Ok(()), "{encoding:?}");
            let got = verify_hmac_sha256(&headers, "x-signature", b"payload!", &["k1"], encoding);
            assert_eq!(got, Err(SignatureError::Mismatch));
            let got = verify_hmac_sha256(&headers, "x-signature", b"payload", &["k0"], encoding);
            assert_eq!(got, Err(SignatureError::Mismatch));
        }
    }

    #[test]
    fn hmac_accepts_github_style_prefix() {
        let headers = sign_hmac_sha256("x-hub-signature-256", "k", b"{}", HmacEncoding::Hex);
        let received = h(&[("X-Hub-Signature-256", &format!("sha256={}", headers[0].1))]);
        assert_eq!(
            verify_hmac_sha256(
                &received,
                "x-hub-signature-256",
                b"{}",
                &["k"],
                HmacEncoding::Hex
            ),
            Ok(())
        );
    }

    #[test]
    fn hmac_missing_and_malformed_header() {
        let got = verify_hmac_sha256(&h(&[]), "x-signature", b"{}", &["k"], HmacEncoding::Hex);
        assert_eq!(got, Err(SignatureError::MissingHeader(HMAC_HEADER_LABEL)));
        let bad = h(&[("x-signature", "xyz")]);
        let got = verify_hmac_sha256(&bad, "x-signature", b"{}", &["k"], HmacEncoding::Hex);
        assert_eq!(got.unwrap_err().reason_code(), "malformed_header");
        let got = verify_hmac_sha256(&bad, "x-signature", b"{}", &[""], HmacEncoding::Hex);
        assert_eq!(got, Err(SignatureError::NoSecret));
    }

    // --- errors -----------------------------------------------------------------------------------

    #[test]
    fn reason_codes() {
        let cases = [
            (SignatureError::MissingHeader("x"), "missing_header"),
            (
                SignatureError::MalformedHeader {
                    header: "x",
                    reason: "y",
                },
                "malformed_header",
            ),
            (SignatureError::Stale, "stale_timestamp"),
            (SignatureError::Future, "future_timestamp"),
            (SignatureError::Mismatch, "signature_mismatch"),
            (
                SignatureError::VersionNotAccepted("v1".into()),
                "version_not_accepted",
            ),
            (SignatureError::NoSecret, "no_secret"),
        ];
        for (err, code) in cases {
            assert_eq!(err.reason_code(), code);
        }
    }

    #[test]
    fn errors_never_show_secrets_or_signatures() {
        let secret = "s3cr3t-value-that-must-not-leak";
        let sw_secret = "whsec_czNjcjN0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==";
        let hs = hs_sign(
            HubSpotVersion::V3,
            secret,
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            0,
        );
        let hs_v1 = hs_sign(
            HubSpotVersion::V1,
            secret,
            "POST",
            HS_SDK_URI,
            HS_SDK_BODY,
            0,
        );
        let sw = sign_standard_webhooks(sw_secret, "msg", 0, b"{}").unwrap();
        let st = sign_stripe(secret, 0, b"{}");
        let hm = sign_hmac_sha256("x-sig", secret, b"{}", HmacEncoding::Hex);
        let sensitive = [
            secret.to_string(),
            sw_secret.to_string(),
            value(&hs, HUBSPOT_SIGNATURE_V3).to_string(),
            value(&hs_v1, HUBSPOT_SIGNATURE).to_string(),
            value(&sw, WEBHOOK_SIGNATURE).to_string(),
            value(&st, STRIPE_SIGNATURE)
                .split_once("v1=")
                .unwrap()
                .1
                .to_string(),
            hm[0].1.clone(),
        ];
        let errors = [
            hubspot("POST", HS_SDK_URI, "x", &hs, &[secret], ALL, 0).unwrap_err(),
            hubspot(
                "POST",
                HS_SDK_URI,
                HS_SDK_BODY,
                &hs,
                &[secret],
                ALL,
                10_000_000,
            )
            .unwrap_err(),
            hubspot("POST", HS_SDK_URI, "x", &hs_v1, &[secret], ALL, 0).unwrap_err(),
            hubspot(
                "POST",
                HS_SDK_URI,
                HS_SDK_BODY,
                &hs_v1,
                &[secret],
                &[HubSpotVersion::V2],
                0,
            )
            .unwrap_err(),
            verify_standard_webhooks(&sw, b"x", &[sw_secret], 300, 0).unwrap_err(),
            verify_standard_webhooks(&sw, b"{}", &[sw_secret], 300, -1_000).unwrap_err(),
            verify_stripe(&st, b"x", &[secret], 300, 0).unwrap_err(),
            verify_stripe(&st, b"{}", &[secret], 300, 1_000).unwrap_err(),
            verify_hmac_sha256(&hm, "x-sig", b"x", &[secret], HmacEncoding::Hex).unwrap_err(),
            verify_hmac_sha256(&hm, "x-sig", b"{}", &[secret], HmacEncoding::Base64).unwrap_err(),
        ];
        for err in &errors {
            let shown = format!("{err} {err:?}");
            for s in &sensitive {
                assert!(!shown.contains(s.as_str()), "{shown}");
            }
        }
    }

    #[test]
    fn header_sources_match_case_insensitively() {
        let arr = [("Webhook-Id", "a")];
        assert_eq!(arr.header("webhook-id"), Some("a"));
        assert_eq!(arr.as_slice().header("WEBHOOK-ID"), Some("a"));
        let owned = h(&[("Webhook-Id", "b")]);
        assert_eq!(owned.header("webhook-id"), Some("b"));
        let slice: &[(&str, &str)] = &arr;
        let through_ref: &dyn HeaderSource = &slice;
        assert_eq!(through_ref.header("webhook-id"), Some("a"));
        assert_eq!(owned.header("webhook-timestamp"), None);
    }
}

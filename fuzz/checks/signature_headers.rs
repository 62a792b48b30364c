//! Signature headers (`ingest::signature`): every verifier must answer Ok or an error for any
//! header values and body, never panic, and whatever the matching `sign_*` function produces for
//! an arbitrary body, method, URL or message id must verify.
//!
//! Input: newline-separated lines, one per entry of `LINES` (method, URL, then the header values
//! in that order; a missing line is a missing header), and everything after the last of those
//! lines is the body. Secrets and clocks are fixed to the reference test vectors, so seeds built
//! from them exercise the success paths too.

use referral_sync::ingest::signature::{
    hubspot_v3_normalize_uri, parse_standard_secret, sign_hmac_sha256, sign_hubspot,
    sign_standard_webhooks, sign_stripe, verify_hmac_sha256, verify_hubspot,
    verify_standard_webhooks, verify_stripe, HmacEncoding, HubSpotRequest, HubSpotVersion,
    SignatureError, HUBSPOT_V3_DEFAULT_TOLERANCE_MS, STANDARD_WEBHOOKS_DEFAULT_TOLERANCE_SECS,
    STRIPE_DEFAULT_TOLERANCE_SECS,
};

/// What each input line is: the request method, its full URL, then header values.
const LINES: &[&str] = &[
    ":method",
    ":uri",
    "x-hubspot-signature",
    "x-hubspot-signature-version",
    "x-hubspot-signature-v3",
    "x-hubspot-request-timestamp",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "stripe-signature",
    "x-signature",
];

/// HubSpot docs v1/v2 secret and the v3 docs example's secret.
const HUBSPOT_SECRETS: &[&str] = &[
    "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
    "cfc68c0b-4b4e-4ef8-b764-95350e4ea479",
];
/// The v3 docs example's `X-HubSpot-Request-Timestamp`.
const HUBSPOT_NOW_MS: i64 = 1_752_613_922_216;
/// Standard Webhooks' official vector, plus one secret that is not base64 (skipped).
const STANDARD_SECRETS: &[&str] = &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64"];
const STRIPE_SECRETS: &[&str] = &["whsec_test_secret"];
const HMAC_SECRETS: &[&str] = &["", "hmac-fuzz-secret"];
/// Both the Standard Webhooks and the Stripe vectors are signed at this second.
const NOW_SECS: i64 = 1_614_265_330;
const ALL_VERSIONS: &[HubSpotVersion] =
    &[HubSpotVersion::V1, HubSpotVersion::V2, HubSpotVersion::V3];

pub fn check(data: &[u8]) {
    let mut parts = data.splitn(LINES.len() + 1, |&b| b == b'\n');
    let mut lines: Vec<String> = Vec::new();
    for _ in LINES {
        match parts.next() {
            Some(line) => lines.push(String::from_utf8_lossy(line).into_owned()),
            None => break,
        }
    }
    let body = parts.next().unwrap_or_default();
    let method = lines.first().map_or("POST", String::as_str);
    let uri = lines.get(1).map_or("", String::as_str);
    let headers: Vec<(String, String)> = LINES
        .iter()
        .zip(&lines)
        .skip(2)
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();

    verify_all(&headers, method, uri, body, HUBSPOT_NOW_MS, NOW_SECS, 1);
    // Extreme clocks and windows must not overflow.
    verify_all(&headers, method, uri, body, i64::MIN, i64::MAX, i64::MAX);
    verify_all(&headers, method, uri, body, i64::MAX, i64::MIN, -1);

    for line in &lines {
        check_normalize_uri(line);
        if let Ok(key) = parse_standard_secret(line) {
            assert!(!key.is_empty(), "a usable secret has key bytes");
        }
    }
    round_trips(method, uri, lines.get(6).map(String::as_str), body);
}

fn verify_all(
    headers: &Vec<(String, String)>,
    method: &str,
    uri: &str,
    body: &[u8],
    now_ms: i64,
    now_secs: i64,
    tolerance_scale: i64,
) {
    let request = HubSpotRequest {
        method,
        uri,
        body,
        headers,
    };
    for accepted in [
        ALL_VERSIONS,
        &[HubSpotVersion::V1, HubSpotVersion::V2][..],
        &[],
    ] {
        let _ = verify_hubspot(
            &request,
            HUBSPOT_SECRETS,
            accepted,
            HUBSPOT_V3_DEFAULT_TOLERANCE_MS.saturating_mul(tolerance_scale),
            now_ms,
        );
    }
    let result = verify_standard_webhooks(
        headers,
        body,
        STANDARD_SECRETS,
        STANDARD_WEBHOOKS_DEFAULT_TOLERANCE_SECS.saturating_mul(tolerance_scale),
        now_secs,
    );
    if let Ok(id) = result {
        assert!(!id.is_empty() && id.trim() == id, "webhook id {id:?}");
    }
    let _ = verify_stripe(
        headers,
        body,
        STRIPE_SECRETS,
        STRIPE_DEFAULT_TOLERANCE_SECS.saturating_mul(tolerance_scale),
        now_secs,
    );
    for encoding in [HmacEncoding::Hex, HmacEncoding::Base64] {
        let _ = verify_hmac_sha256(headers, "x-signature", body, HMAC_SECRETS, encoding);
    }
    assert_eq!(
        verify_hmac_sha256(headers, "x-signature", body, &[""], HmacEncoding::Hex),
        Err(SignatureError::NoSecret)
    );
}

/// Decodes only a fixed set of escapes, so it never grows the text and applying it twice changes
/// nothing more.
fn check_normalize_uri(uri: &str) {
    let once = hubspot_v3_normalize_uri(uri);
    assert!(once.len() <= uri.len());
    if !uri.contains('%') {
        assert_eq!(once, uri);
    }
    assert_eq!(
        hubspot_v3_normalize_uri(&once),
        once,
        "not idempotent for {uri:?}"
    );
}

/// What this module signs, it verifies: for any body, method, URL and (header-safe) message id.
fn round_trips(method: &str, uri: &str, id: Option<&str>, body: &[u8]) {
    let secret = HUBSPOT_SECRETS[1];
    for version in ALL_VERSIONS {
        let headers = sign_hubspot(*version, secret, method, uri, body, HUBSPOT_NOW_MS);
        let request = HubSpotRequest {
            method,
            uri,
            body,
            headers: &headers,
        };
        assert_eq!(
            verify_hubspot(
                &request,
                &[secret],
                ALL_VERSIONS,
                HUBSPOT_V3_DEFAULT_TOLERANCE_MS,
                HUBSPOT_NOW_MS
            ),
            Ok(*version),
            "{version:?} signed by sign_hubspot does not verify"
        );
    }

    // Header values are trimmed when read, so only an id that is already trimmed round-trips.
    let id = id
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .unwrap_or("msg_fuzz");
    let headers = sign_standard_webhooks(STANDARD_SECRETS[0], id, NOW_SECS, body)
        .expect("the vector's secret is valid");
    assert_eq!(
        verify_standard_webhooks(&headers, body, STANDARD_SECRETS, 300, NOW_SECS).as_deref(),
        Ok(id)
    );

    let headers = sign_stripe(STRIPE_SECRETS[0], NOW_SECS, body);
    assert_eq!(
        verify_stripe(&headers, body, STRIPE_SECRETS, 300, NOW_SECS),
        Ok(())
    );

    for encoding in [HmacEncoding::Hex, HmacEncoding::Base64] {
        let headers = sign_hmac_sha256("X-Signature", HMAC_SECRETS[1], body, encoding);
        assert_eq!(
            verify_hmac_sha256(&headers, "x-signature", body, HMAC_SECRETS, encoding),
            Ok(())
        );
    }
}

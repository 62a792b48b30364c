//! Signed, expiring partner-portal links: `{base}/partners/{code}?token={expires}.{signature}`,
//! where `expires` is a Unix time in seconds and `signature` the unpadded base64url HMAC-SHA256
//! of `partner-portal\n{code}\n{expires}` keyed by `portal.link_secret`. The code is inside the
//! signature, so a token opens one partner's page only; the expiry too, so it cannot be
//! stretched. Nothing is stored: any replica with the same secret checks any link, and changing
//! the secret revokes them all.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::{Millis, DAY, SECOND};
use crate::config::{Secret, Settings};

type HmacSha256 = Hmac<Sha256>;

/// Why a link opens nothing. The portal answers every one of them with the same 403; the reason
/// is for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the portal is off (portal.link_secret is empty)")]
    PortalOff,
    #[error("no token")]
    Missing,
    #[error("the token is not <expiry>.<signature>")]
    Malformed,
    #[error("the link has expired")]
    Expired,
    #[error("the signature does not match this partner")]
    BadSignature,
}

/// Why a link could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("portal.link_secret is not set: set it (at least 32 random characters) to make portal links")]
    NoSecret,
    #[error(
        "set portal.base_url (or server.public_base_url) to the origin partners open links on"
    )]
    NoBaseUrl,
    #[error("portal.base_url `{0}` is not a URL links can be built on")]
    BadBaseUrl(String),
    #[error("a link is valid for 1 to 366 days, not {0}")]
    Days(i64),
}

fn mac(secret: &Secret, code: &str, expires: i64) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("partner-portal\n{code}\n{expires}").as_bytes());
    mac
}

/// The token for `code`, valid until `expires_at` (rounded down to the second).
pub fn token(secret: &Secret, code: &str, expires_at: Millis) -> String {
    let expires = expires_at.div_euclid(SECOND);
    let signature = mac(secret, code, expires).finalize().into_bytes();
    format!(
        "{expires}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Whether `token` opens `code`'s page at `now`. The signature is compared in constant time.
pub fn verify(
    secret: &Secret,
    code: &str,
    token: Option<&str>,
    now: Millis,
) -> Result<(), Refused> {
    if secret.is_empty() {
        return Err(Refused::PortalOff);
    }
    let token = token.filter(|t| !t.is_empty()).ok_or(Refused::Missing)?;
    let (expires, signature) = token.split_once('.').ok_or(Refused::Malformed)?;
    let expires: i64 = expires.parse().map_err(|_| Refused::Malformed)?;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Refused::Malformed)?;
    mac(secret, code, expires)
        .verify_slice(&signature)
        .map_err(|_| Refused::BadSignature)?;
    if expires.saturating_mul(SECOND) <= now {
        return Err(Refused::Expired);
    }
    Ok(())
}

/// The full link for `code`, valid for `days` days from `now`, on `portal.base_url` (or
/// `server.public_base_url`, or `fallback_base` — the console passes the origin it is served on).
pub fn link(
    settings: &Settings,
    code: &str,
    days: i64,
    now: Millis,
    fallback_base: Option<&str>,
) -> Result<String, LinkError> {
    if settings.portal.link_secret.is_empty() {
        return Err(LinkError::NoSecret);
    }
    if !(1..=366).contains(&days) {
        return Err(LinkError::Days(days));
    }
    let base = settings
        .portal_base_url()
        .or(fallback_base)
        .ok_or(LinkError::NoBaseUrl)?;
    let mut url = url::Url::parse(base).map_err(|_| LinkError::BadBaseUrl(base.to_string()))?;
    url.path_segments_mut()
        .map_err(|_| LinkError::BadBaseUrl(base.to_string()))?
        .pop_if_empty()
        .push("partners")
        .push(code);
    url.query_pairs_mut().append_pair(
        "token",
        &token(&settings.portal.link_secret, code, now + days * DAY),
    );
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_795_168_800_000;

    fn secret() -> Secret {
        Secret::new("a-portal-link-secret-of-32-chars!!")
    }

    #[test]
    fn a_token_opens_its_own_code_until_it_expires() {
        let t = token(&secret(), "ACME-7", NOW + DAY);
        assert_eq!(verify(&secret(), "ACME-7", Some(&t), NOW), Ok(()));
        assert_eq!(
            verify(&secret(), "ACME-7", Some(&t), NOW + DAY),
            Err(Refused::Expired)
        );
        assert_eq!(
            verify(&secret(), "BETA-1", Some(&t), NOW),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(
                &Secret::new("another-secret-of-at-least-32-chars"),
                "ACME-7",
                Some(&t),
                NOW
            ),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn altered_tokens_are_refused() {
        let t = token(&secret(), "ACME-7", NOW + DAY);
        let (expires, signature) = t.split_once('.').unwrap();
        let later = format!("{}.{signature}", expires.parse::<i64>().unwrap() + 86_400);
        assert_eq!(
            verify(&secret(), "ACME-7", Some(&later), NOW),
            Err(Refused::BadSignature),
            "a stretched expiry breaks the signature"
        );
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(verify(&secret(), "ACME-7", Some(&flipped), NOW).is_err());
        for bad in ["", "123", "abc.def", "123.!!!"] {
            assert!(
                verify(&secret(), "ACME-7", Some(bad), NOW).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            verify(&secret(), "ACME-7", None, NOW),
            Err(Refused::Missing)
        );
        assert_eq!(
            verify(&Secret::default(), "ACME-7", Some(&t), NOW),
            Err(Refused::PortalOff)
        );
    }

    #[test]
    fn links_are_built_on_the_portal_origin_with_the_code_encoded() {
        let mut settings = crate::config::Settings::shipped_defaults();
        assert_eq!(
            link(&settings, "ACME-7", 30, NOW, None),
            Err(LinkError::NoSecret)
        );
        settings.portal.link_secret = secret();
        assert_eq!(
            link(&settings, "ACME-7", 30, NOW, None),
            Err(LinkError::NoBaseUrl)
        );
        assert_eq!(
            link(&settings, "ACME-7", 0, NOW, None),
            Err(LinkError::Days(0))
        );
        settings.server.public_base_url = "https://hooks.example.com".into();
        let hooks = link(&settings, "ACME-7", 30, NOW, None).unwrap();
        assert!(hooks.starts_with("https://hooks.example.com/partners/ACME-7?token="));
        settings.portal.base_url = "https://example.com/referrals/".into();
        let url = link(&settings, "A B/7", 30, NOW, None).unwrap();
        assert!(
            url.starts_with("https://example.com/referrals/partners/A%20B%2F7?token="),
            "{url}"
        );
        let token = url.split("token=").nth(1).unwrap();
        assert_eq!(verify(&secret(), "A B/7", Some(token), NOW), Ok(()));
        assert_eq!(
            verify(&secret(), "A B/7", Some(token), NOW + 30 * DAY),
            Err(Refused::Expired)
        );
    }
}

//! API keys: `Authorization: Bearer <key>`; keys are configured as SHA-256 hex hashes with a role.
//! Extracting [`ReadAccess`] needs any valid key (else 401); [`AdminAccess`] needs an `admin` key
//! (a `read` key gets 403). Comparison is constant-time over the hashes. The console's sign-in
//! checks keys with the same [`find_key`].

use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AdminKey, Settings};
use crate::error::ApiError;
use crate::startup::AppState;

/// The caller, as the audit log names it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: String,
    pub admin: bool,
}

pub struct ReadAccess(pub Caller);
pub struct AdminAccess(pub Caller);

impl Caller {
    /// The caller a configured key stands for.
    pub fn of(key: &AdminKey) -> Caller {
        Caller {
            actor: key
                .name
                .clone()
                .unwrap_or_else(|| format!("api-key:{}", &key.hash[..8])),
            admin: key.role == "admin",
        }
    }
}

/// The configured key `presented` is, if any: its SHA-256 compared with every configured hash.
pub fn find_key<'s>(settings: &'s Settings, presented: &str) -> Option<&'s AdminKey> {
    key_by_hash(settings, &hex::encode(Sha256::digest(presented.as_bytes())))
}

/// The configured key with this SHA-256 hex hash, if any; constant-time over every key.
pub fn key_by_hash<'s>(settings: &'s Settings, digest: &str) -> Option<&'s AdminKey> {
    let mut found = None;
    for key in &settings.admin.keys {
        if bool::from(
            key.hash
                .to_ascii_lowercase()
                .as_bytes()
                .ct_eq(digest.as_bytes()),
        ) {
            found = Some(key);
        }
    }
    found
}

fn caller(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))?;
    let presented = crate::routes::authorization(req, "Bearer").ok_or_else(|| {
        ApiError::Unauthorized("missing API key: send Authorization: Bearer <key>".into())
    })?;
    let key = find_key(&state.settings, presented)
        .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))?;
    Ok(Caller::of(key))
}

impl FromRequest for ReadAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(caller(req).map(ReadAccess))
    }
}

impl FromRequest for AdminAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(caller(req).and_then(|c| {
            if c.admin {
                Ok(AdminAccess(c))
            } else {
                Err(ApiError::Forbidden(
                    "this action needs an admin key; this key is read-only".into(),
                ))
            }
        }))
    }
}

//! Console sign-in and sessions. Sign-in exchanges one of `admin.keys` (checked exactly as the API
//! checks a bearer key) for a session: a random token in a cookie (HttpOnly, SameSite=Strict,
//! Secure when served over https), its SHA-256 in `console_sessions` with the key's hash and a
//! CSRF token. Every replica reads the same table, and each request looks the key up again, so a
//! key removed from the configuration, or a sign-out on any replica, ends the session everywhere.
//!
//! The extractors carry the rules, so a handler cannot forget one: [`ConsoleUser`] needs a live
//! session; [`ConsoleForm`] also a form whose `csrf` field matches the session's; [`AdminForm`]
//! also an admin key. The sign-in form itself is protected by a double-submit token (a cookie
//! that only this origin can set, repeated in the form).

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use askama::Template;
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::MINUTE;
use crate::routes::admin::auth::{find_key, key_by_hash, Caller};
use crate::startup::AppState;
use crate::store::ConsoleSessionRow;
use crate::web::{html, random_token, see_other, FormFields, WebError};

/// The session cookie.
pub const SESSION_COOKIE: &str = "rs_console";
/// The sign-in form's double-submit token.
const SIGN_IN_COOKIE: &str = "rs_console_signin";
/// Both cookies are sent to the console's paths only.
const COOKIE_PATH: &str = "/console";

/// Someone signed in to the console.
#[derive(Debug, Clone)]
pub struct ConsoleUser {
    /// As the audit log names them (the key's `name`).
    pub actor: String,
    pub admin: bool,
    /// The token every form of this session must carry.
    pub csrf: String,
    token_hash: String,
}

impl ConsoleUser {
    pub fn role(&self) -> &'static str {
        if self.admin {
            "admin"
        } else {
            "read"
        }
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn state_of(req: &HttpRequest) -> Result<web::Data<AppState>, WebError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| WebError::Internal(anyhow::anyhow!("app state missing")))
}

/// Whether the browser reached us over https (directly, or as the proxy says, or as the public
/// URL promises): then cookies are `Secure`.
fn over_https(req: &HttpRequest, state: &AppState) -> bool {
    req.connection_info().scheme() == "https"
        || state
            .settings
            .server
            .public_base_url
            .starts_with("https://")
}

fn cookie<'c>(req: &HttpRequest, state: &AppState, name: &'c str, value: String) -> Cookie<'c> {
    Cookie::build(name, value)
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_https(req, state))
        .finish()
}

fn removal<'c>(req: &HttpRequest, state: &AppState, name: &'c str) -> Cookie<'c> {
    let mut c = cookie(req, state, name, String::new());
    c.make_removal();
    c
}

/// The session the request's cookie opens, if any.
async fn session_of(req: &HttpRequest, state: &AppState) -> Result<Option<ConsoleUser>, WebError> {
    let Some(token) = req.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    let token_hash = sha256_hex(token.value());
    let Some(row) = state
        .store
        .console_session(&token_hash, state.clock.now())
        .await?
    else {
        return Ok(None);
    };
    let Some(key) = key_by_hash(&state.settings, &row.key_hash) else {
        return Ok(None);
    };
    let caller = Caller::of(key);
    Ok(Some(ConsoleUser {
        actor: caller.actor,
        admin: caller.admin,
        csrf: row.csrf_token,
        token_hash,
    }))
}

impl FromRequest for ConsoleUser {
    type Error = WebError;
    type Future = LocalBoxFuture<'static, Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state_of(&req)?;
            session_of(&req, &state).await?.ok_or(WebError::SignIn {
                post: req.method() != actix_web::http::Method::GET
                    && req.method() != actix_web::http::Method::HEAD,
            })
        })
    }
}

/// A console form post from a live session with the session's CSRF token.
pub struct ConsoleForm {
    pub user: ConsoleUser,
    pub fields: FormFields,
}

/// A console form post that changes something: [`ConsoleForm`] from an admin session.
pub struct AdminForm {
    pub user: ConsoleUser,
    pub fields: FormFields,
}

fn same_token(given: Option<&str>, expected: &str) -> bool {
    given.is_some_and(|g| {
        !expected.is_empty() && bool::from(g.as_bytes().ct_eq(expected.as_bytes()))
    })
}

async fn console_form(
    req: HttpRequest,
    fields: LocalBoxFuture<'static, Result<FormFields, WebError>>,
    need_admin: bool,
) -> Result<ConsoleForm, WebError> {
    let state = state_of(&req)?;
    let user = session_of(&req, &state)
        .await?
        .ok_or(WebError::SignIn { post: true })?;
    if need_admin && !user.admin {
        return Err(WebError::Forbidden(
            "this needs an admin key; you signed in with a read-only key".into(),
        ));
    }
    let fields = fields.await?;
    if !same_token(fields.get("csrf"), &user.csrf) {
        tracing::warn!(
            actor = %user.actor,
            path = %crate::telemetry::untrusted(req.path()),
            "console form refused: CSRF token missing or wrong"
        );
        return Err(WebError::Forbidden(
            "this form has no valid CSRF token; reload the page and try again".into(),
        ));
    }
    Ok(ConsoleForm { user, fields })
}

impl FromRequest for ConsoleForm {
    type Error = WebError;
    type Future = LocalBoxFuture<'static, Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let fields = FormFields::from_request(req, payload);
        Box::pin(console_form(req.clone(), fields, false))
    }
}

impl FromRequest for AdminForm {
    type Error = WebError;
    type Future = LocalBoxFuture<'static, Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let fields = FormFields::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let ConsoleForm { user, fields } = console_form(req, fields, true).await?;
            Ok(AdminForm { user, fields })
        })
    }
}

#[derive(Template)]
#[template(path = "console/templates/sign_in.html")]
struct SignInPage<'a> {
    csrf: &'a str,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    signed_out: Option<String>,
}

/// `GET /console`: the sign-in page, or the Program page for someone signed in.
pub async fn get_console(
    req: HttpRequest,
    query: web::Query<SignInQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    if session_of(&req, &state).await?.is_some() {
        return Ok(see_other("/console/program"));
    }
    let notice = query.signed_out.is_some().then_some("You are signed out.");
    sign_in_page(&req, &state, actix_web::http::StatusCode::OK, notice, None)
}

/// The sign-in form with a fresh double-submit token in its cookie and its hidden field.
fn sign_in_page(
    req: &HttpRequest,
    state: &AppState,
    status: actix_web::http::StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<HttpResponse, WebError> {
    let csrf = random_token()?;
    let body = SignInPage {
        csrf: &csrf,
        notice,
        error,
    }
    .render()?;
    let mut response = html(status, body);
    let mut c = cookie(req, state, SIGN_IN_COOKIE, csrf);
    c.set_max_age(CookieDuration::hours(1));
    response
        .add_cookie(&c)
        .map_err(|e| WebError::Internal(e.into()))?;
    Ok(response)
}

/// `POST /console/sign-in`: `key` (an admin or read key) and `csrf` (the sign-in cookie's token).
pub async fn post_sign_in(
    req: HttpRequest,
    fields: FormFields,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    use actix_web::http::StatusCode;
    let expected = req
        .cookie(SIGN_IN_COOKIE)
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    if !same_token(fields.get("csrf"), &expected) {
        return sign_in_page(
            &req,
            &state,
            StatusCode::FORBIDDEN,
            None,
            Some("The sign-in form expired. Enter your key again."),
        );
    }
    let Some(key) = fields
        .text("key")
        .and_then(|presented| find_key(&state.settings, presented))
    else {
        tracing::warn!("console sign-in refused: not a configured key");
        return sign_in_page(
            &req,
            &state,
            StatusCode::UNAUTHORIZED,
            None,
            Some("That key is not one of admin.keys."),
        );
    };
    // A new sign-in replaces whatever session this browser had.
    if let Some(previous) = req.cookie(SESSION_COOKIE) {
        state
            .store
            .close_console_session(&sha256_hex(previous.value()))
            .await?;
    }
    let token = random_token()?;
    let now = state.clock.now();
    let lifetime = i64::from(state.settings.console.session_minutes) * MINUTE;
    state
        .store
        .open_console_session(
            &ConsoleSessionRow {
                token_hash: sha256_hex(&token),
                key_hash: key.hash.to_ascii_lowercase(),
                csrf_token: random_token()?,
                created_at: now,
                expires_at: now + lifetime,
            },
            now,
        )
        .await?;
    let caller = Caller::of(key);
    tracing::info!(actor = %caller.actor, role = if caller.admin { "admin" } else { "read" }, "console sign-in");
    let mut response = see_other("/console/program");
    let mut session = cookie(&req, &state, SESSION_COOKIE, token);
    session.set_max_age(CookieDuration::seconds(lifetime / 1000));
    for c in [session, removal(&req, &state, SIGN_IN_COOKIE)] {
        response
            .add_cookie(&c)
            .map_err(|e| WebError::Internal(e.into()))?;
    }
    Ok(response)
}

/// `POST /console/sign-out`: ends the session on every replica and clears the cookie.
pub async fn post_sign_out(
    req: HttpRequest,
    form: ConsoleForm,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    state
        .store
        .close_console_session(&form.user.token_hash)
        .await?;
    tracing::info!(actor = %form.user.actor, "console sign-out");
    let mut response = see_other("/console?signed_out=1");
    response
        .add_cookie(&removal(&req, &state, SESSION_COOKIE))
        .map_err(|e| WebError::Internal(e.into()))?;
    Ok(response)
}

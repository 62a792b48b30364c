//! `referral-sync sign`: print the signature headers a sender would attach to a body, for any
//! supported scheme, so a user can exercise their setup with curl. The secret comes from the
//! configuration (by source) unless `--secret` is given.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::config::Settings;
use crate::domain::Crm;
use crate::ingest::signature::{self, HmacEncoding, HubSpotVersion, ProductScheme};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheme {
    HubspotV3,
    HubspotV2,
    HubspotV1,
    StandardWebhooks,
    Stripe,
    HmacSha256,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// What to sign for: `hubspot`, `salesforce` (JSON callouts) or a product source name from
    /// `[sources.<name>]`. Picks the scheme, the secret and the URL from the configuration.
    #[arg(long, default_value = Crm::HubSpot.as_str())]
    pub source: String,
    /// Override the scheme (for HubSpot: hubspot-v3, hubspot-v2 or hubspot-v1).
    #[arg(long, value_enum)]
    pub scheme: Option<Scheme>,
    /// The secret to sign with, instead of the configured one (beware of shell history).
    #[arg(long, env = "REFERRAL_SYNC_SIGN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the exact body; `-` or omitted reads standard input.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    /// The URL the request will be sent to (HubSpot v2/v3 sign it). Defaults to the configured
    /// public URL, else the local server.
    #[arg(long)]
    pub url: Option<String>,
    /// HTTP method (HubSpot signs it).
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Message id for Standard Webhooks (`webhook-id`); defaults to a new random one.
    #[arg(long)]
    pub id: Option<String>,
    /// Print a complete curl command instead of header lines.
    #[arg(long)]
    pub curl: bool,
}

pub fn run(settings: &Settings, args: SignArgs, now_ms: i64) -> anyhow::Result<String> {
    let body = read_body(args.body.as_deref())?;
    let base = if settings.server.public_base_url.is_empty() {
        format!("http://{}", settings.server.bind)
    } else {
        settings
            .server
            .public_base_url
            .trim_end_matches('/')
            .to_string()
    };
    let (default_scheme, configured_secret, path, header, encoding) = match args.source.parse() {
        Ok(Crm::HubSpot) => (
            Scheme::HubspotV3,
            settings
                .hubspot
                .client_secrets
                .first()
                .map(|s| s.expose().to_string()),
            "/webhooks/hubspot".to_string(),
            None,
            HmacEncoding::default(),
        ),
        Ok(Crm::Salesforce) => (
            Scheme::StandardWebhooks,
            settings
                .salesforce
                .callout_secrets
                .first()
                .map(|s| s.expose().to_string()),
            "/webhooks/salesforce".to_string(),
            None,
            HmacEncoding::default(),
        ),
        Err(_) => {
            let name = args.source.as_str();
            let Some(src) = settings.sources.get(name) else {
                bail!("no source `{name}`: use hubspot, salesforce or a name from [sources.*]");
            };
            let scheme = match src.scheme {
                ProductScheme::StandardWebhooks => Scheme::StandardWebhooks,
                ProductScheme::Stripe => Scheme::Stripe,
                ProductScheme::HmacSha256 => Scheme::HmacSha256,
            };
            (
                scheme,
                src.secrets.first().map(|s| s.expose().to_string()),
                format!("/webhooks/signup/{name}"),
                src.header.clone(),
                src.encoding,
            )
        }
    };
    let scheme = args.scheme.unwrap_or(default_scheme);
    let Some(secret) = args.secret.or(configured_secret) else {
        bail!(
            "no secret configured for `{}`; pass --secret or set it in the configuration",
            args.source
        );
    };
    let url = args.url.unwrap_or_else(|| format!("{base}{path}"));
    let now_secs = now_ms / 1000;
    let headers = match scheme {
        Scheme::HubspotV3 | Scheme::HubspotV2 | Scheme::HubspotV1 => {
            let version = match scheme {
                Scheme::HubspotV1 => HubSpotVersion::V1,
                Scheme::HubspotV2 => HubSpotVersion::V2,
                _ => HubSpotVersion::V3,
            };
            signature::sign_hubspot(version, &secret, &args.method, &url, &body, now_ms)
        }
        Scheme::StandardWebhooks => {
            let id = args
                .id
                .unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple()));
            signature::sign_standard_webhooks(&secret, &id, now_secs, &body)
                .map_err(|e| anyhow::anyhow!("the secret is not a whsec_ base64 secret: {e}"))?
        }
        Scheme::Stripe => signature::sign_stripe(&secret, now_secs, &body),
        Scheme::HmacSha256 => {
            let header = header.unwrap_or_else(|| "X-Signature".into());
            signature::sign_hmac_sha256(&header, &secret, &body, encoding)
        }
    };
    Ok(if args.curl {
        curl_command(&args.method, &url, &headers, args.body.as_deref(), &body)?
    } else {
        headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
    })
}

/// A curl command line for `sh` that sends exactly `body` with `headers`. Every argument is
/// single-quoted, so a quote or `$(…)` in the URL, an id or a file name stays text. The body goes
/// as `@FILE` when it came from a file; from standard input, inline when it is text, else through
/// `printf` octal escapes, so the bytes sent are the bytes signed.
fn curl_command(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body_file: Option<&std::path::Path>,
    body: &[u8],
) -> anyhow::Result<String> {
    let mut args = vec![
        "curl".to_string(),
        "-sS".into(),
        "-X".into(),
        shell_quote(method),
        shell_quote(url),
        "-H".into(),
        shell_quote("content-type: application/json"),
    ];
    for (name, value) in headers {
        args.push("-H".into());
        args.push(shell_quote(&format!("{name}: {value}")));
    }
    args.push("--data-binary".into());
    let mut pipe_from = None;
    match body_file.filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let path = path.to_str().ok_or_else(|| {
                anyhow::anyhow!("the body file's name is not UTF-8; rename it or pipe the body in")
            })?;
            args.push(shell_quote(&format!("@{path}")));
        }
        None => match std::str::from_utf8(body) {
            Ok(text) if !text.contains('\0') => args.push(shell_quote(text)),
            _ => {
                args.push("@-".into());
                pipe_from = Some(printf_octal(body));
            }
        },
    }
    let curl = args.join(" ");
    Ok(match pipe_from {
        Some(printf) => format!("{printf} | {curl}\n"),
        None => format!("{curl}\n"),
    })
}

/// `text` as one POSIX shell word: single quotes, each `'` written as `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A `printf` that writes `bytes` exactly: every byte as a `\NNN` octal escape.
fn printf_octal(bytes: &[u8]) -> String {
    let escaped: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
    format!("printf '{escaped}'")
}

fn read_body(path: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).with_context(|| format!("could not read {}", p.display()))
        }
        _ => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("could not read the body from stdin")?;
            Ok(body)
        }
    }
}

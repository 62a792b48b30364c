//! `referral-sync sign`: print the signature headers a sender would attach to a body, for any
//! supported scheme, so a user can exercise their setup with curl. The secret comes from the
//! configuration (by source) unless `--secret` is given.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::config::Settings;
use crate::ingest::signature::{self, HmacEncoding, HubSpotVersion};

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
    #[arg(long, default_value = "hubspot")]
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
    let (default_scheme, configured_secret, path, header, encoding) = match args.source.as_str() {
        "hubspot" => (
            Scheme::HubspotV3,
            settings
                .hubspot
                .client_secrets
                .first()
                .map(|s| s.expose().to_string()),
            "/webhooks/hubspot".to_string(),
            None,
            None,
        ),
        "salesforce" => (
            Scheme::StandardWebhooks,
            settings
                .salesforce
                .callout_secrets
                .first()
                .map(|s| s.expose().to_string()),
            "/webhooks/salesforce".to_string(),
            None,
            None,
        ),
        name => {
            let Some(src) = settings.sources.get(name) else {
                bail!("no source `{name}`: use hubspot, salesforce or a name from [sources.*]");
            };
            let scheme = match src.scheme.as_str() {
                "standard-webhooks" => Scheme::StandardWebhooks,
                "stripe" => Scheme::Stripe,
                _ => Scheme::HmacSha256,
            };
            (
                scheme,
                src.secrets.first().map(|s| s.expose().to_string()),
                format!("/webhooks/signup/{name}"),
                src.header.clone(),
                src.encoding.clone(),
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
            let encoding = match encoding.as_deref() {
                Some("base64") => HmacEncoding::Base64,
                _ => HmacEncoding::Hex,
            };
            signature::sign_hmac_sha256(&header, &secret, &body, encoding)
        }
    };
    Ok(if args.curl {
        let mut cmd = format!("curl -sS -X {} '{url}'", args.method);
        cmd.push_str(" -H 'content-type: application/json'");
        for (name, value) in &headers {
            cmd.push_str(&format!(" -H '{name}: {value}'"));
        }
        let body_arg = match &args.body {
            Some(p) if p.as_os_str() != "-" => format!(" --data-binary @{}", p.display()),
            _ => format!(
                " --data-binary '{}'",
                String::from_utf8_lossy(&body).replace('\'', "'\\''")
            ),
        };
        cmd.push_str(&body_arg);
        cmd.push('\n');
        cmd
    } else {
        headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
    })
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

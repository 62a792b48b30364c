//! Configuration: the settings tree, its layered loading (SPEC §8) and a validation pass that
//! reports every problem at once, each naming its key. Secrets are wrapped in [`Secret`], which
//! never prints its value — not in `Debug`, not when the effective config is shown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::domain::channel::Channel;
use crate::domain::market::Market;
use crate::domain::moment::MomentKind;
use crate::domain::payout::InstallmentAt;
use crate::domain::stage::CanonicalStage;
use crate::domain::Crm;
use crate::ingest::signature::{HmacEncoding, HubSpotVersion, ProductScheme};

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variable prefix: `REFERRAL_SYNC__SERVER__BIND`.
pub const ENV_PREFIX: &str = "REFERRAL_SYNC";

/// Settings that are lists, given in one environment variable separated by commas.
const ENV_LIST_KEYS: [&str; 7] = [
    "hubspot.client_secrets",
    "hubspot.signature_versions",
    "salesforce.organization_ids",
    "salesforce.callout_secrets",
    "renewals.hubspot_pipelines",
    "renewals.salesforce_types",
    "moments.kinds",
];

/// A secret setting. Its value is reachable only through [`Secret::expose`]; `Debug` and
/// `Serialize` show `[redacted]` (or an empty string when unset, so "not configured" stays visible).
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_empty() { "" } else { "[redacted]" })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub workers: WorkerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub ingest: IngestSettings,
    pub processing: ProcessingSettings,
    pub outbox: OutboxSettings,
    pub hubspot: HubSpotSettings,
    pub salesforce: SalesforceSettings,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSettings>,
    pub rewards: RewardSettings,
    pub renewals: RenewalSettings,
    pub channels: ChannelSettings,
    pub moments: MomentSettings,
    pub fraud: FraudSettings,
    #[serde(default)]
    pub programs: BTreeMap<String, ProgramSettings>,
    pub admin: AdminSettings,
    pub console: ConsoleSettings,
    pub portal: PortalSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    pub bind: String,
    pub public_base_url: String,
    pub body_limit_bytes: usize,
    /// A webhook body must arrive within this long, or the request is answered 408.
    pub body_read_timeout_ms: u64,
    /// Bytes buffered at once, over all requests, for webhook bodies whose signature is not
    /// checked yet; a request that would go over is answered 503 with Retry-After.
    pub unverified_body_budget_bytes: usize,
    pub workers: usize,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkerSettings {
    /// Run background workers in this process (false: an API-only replica).
    pub enabled: bool,
    /// First delay before a failed worker is restarted; it doubles up to `restart_backoff_max_secs`.
    pub restart_backoff_initial_ms: u64,
    pub restart_backoff_max_secs: u64,
}

impl WorkerSettings {
    pub fn backoff(&self) -> crate::supervisor::Backoff {
        crate::supervisor::Backoff {
            initial: std::time::Duration::from_millis(self.restart_backoff_initial_ms),
            max: std::time::Duration::from_secs(self.restart_backoff_max_secs),
        }
    }
}

/// The fewest pooled connections that let every report run: the funnel with its comparison
/// reads on 4 at once ([`crate::store::Store::begin_reads`]), plus SQLite's gate.
pub const MIN_CONNECTIONS: u32 = 5;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines, for a terminal.
    Pretty,
    /// One JSON object a line, for a log pipeline.
    Json,
}

/// Which market's program a referral earns under when referee and referrer differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramBy {
    RefereeMarket,
    ReferrerMarket,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    pub level: String,
    /// Request-controlled text in a log line is cut to this many characters.
    pub max_field_chars: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct IngestSettings {
    pub max_batch_events: usize,
    pub max_wait_micros: u64,
    pub writers_postgres: usize,
    pub timestamp_tolerance_secs: u64,
    /// Attributes allowed on one element of a Salesforce SOAP message.
    pub xml_max_attributes: usize,
    /// Benchmark ceiling only: answer after verification without storing.
    pub discard_after_verify: bool,
}

/// The inbox processor (README "Processing").
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProcessingSettings {
    /// Events applied per transaction, and rechecks settled per reconcile round.
    pub batch_events: u16,
    /// Partitions one processor locks per batch (of 64), so others find partitions free.
    pub partitions_per_batch: u8,
    /// Processors per process on PostgreSQL (SQLite always runs one: it has one writer).
    pub processors: usize,
    /// `/readyz` answers 503 when no processing round completed for this long.
    pub stuck_after_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OutboxSettings {
    pub batch_records: u32,
    pub lease_secs: u64,
    pub request_timeout_secs: u64,
    pub retry_schedule_secs: Vec<u64>,
    pub hubspot_requests_per_10s: u32,
    pub salesforce_requests_per_10s: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HubSpotSettings {
    pub client_secrets: Vec<Secret>,
    pub signature_versions: Vec<HubSpotVersion>,
    pub access_token: Secret,
    pub api_base_url: String,
    pub properties: CrmFieldNames,
    /// Pipeline id → stage id → canonical stage.
    #[serde(default)]
    pub pipelines: BTreeMap<String, BTreeMap<String, CanonicalStage>>,
}

/// Names of the referral properties (HubSpot) or fields (Salesforce) the service writes (SPEC §5).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CrmFieldNames {
    /// HubSpot only: the property group.
    #[serde(default)]
    pub group: Option<String>,
    pub referral_source: String,
    pub referral_code: String,
    pub referred_by: String,
    pub referrer_tier: String,
    pub referral_market: String,
    pub referral_first_touch_at: String,
    pub reward_status: String,
    pub reward_amount: String,
    pub reward_currency: String,
    pub reward_hold_until: String,
    /// The referee's side of a two-sided reward, on the referee's contact.
    pub referee_reward_status: String,
    pub referee_reward_amount: String,
    pub referee_reward_currency: String,
    /// An advocacy moment on a contact: its kind, and when it happened.
    pub ask_moment: String,
    pub ask_at: String,
    /// Salesforce only: the Platform Event published when a reward becomes eligible.
    #[serde(default = "default_reward_event")]
    pub reward_event: String,
}

fn default_reward_event() -> String {
    "Referral_Reward__e".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SalesforceSettings {
    pub organization_ids: Vec<String>,
    pub outbound_token: Secret,
    pub callout_secrets: Vec<Secret>,
    pub login_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(deserialize_with = "version_text")]
    pub api_version: String,
    pub fields: CrmFieldNames,
    /// `StageName` → canonical stage.
    #[serde(default)]
    pub stages: BTreeMap<String, CanonicalStage>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SourceSettings {
    pub scheme: ProductScheme,
    /// A list, or (from an environment variable) a comma-separated string.
    #[serde(default, deserialize_with = "secrets_list")]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub header: Option<String>,
    /// How an `hmac-sha256` signature is written.
    #[serde(default)]
    pub encoding: HmacEncoding,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RewardSettings {
    pub program_by: ProgramBy,
    pub default_market: String,
}

/// Which won deals are renewals of an existing customer rather than new business: HubSpot deals
/// in these pipelines, Salesforce Opportunities of these `Type`s.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RenewalSettings {
    pub hubspot_pipelines: Vec<String>,
    pub salesforce_types: Vec<String>,
}

impl RenewalSettings {
    /// Whether `deal` is a renewal (or expansion) deal by this configuration.
    pub fn is_renewal(&self, deal: &crate::store::CrmRecord) -> bool {
        self.is_renewal_of(
            deal.crm,
            deal.pipeline.as_deref(),
            deal.deal_type.as_deref(),
        )
    }

    /// [`RenewalSettings::is_renewal`] for a deal of `crm` known by its pipeline and type.
    pub fn is_renewal_of(&self, crm: Crm, pipeline: Option<&str>, deal_type: Option<&str>) -> bool {
        match crm {
            Crm::HubSpot => pipeline.is_some_and(|p| self.hubspot_pipelines.iter().any(|h| h == p)),
            Crm::Salesforce => {
                deal_type.is_some_and(|t| self.salesforce_types.iter().any(|s| s == t))
            }
        }
    }
}

/// The channel baseline (SPEC §4): the market and channel of deals no referral touches.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ChannelSettings {
    /// HubSpot pipeline id → market.
    pub market_by_pipeline: BTreeMap<String, String>,
    /// Deal currency (ISO code) → market, for deals whose pipeline names none.
    pub market_by_currency: BTreeMap<String, String>,
    /// HubSpot `hs_analytics_source` value → channel.
    pub hubspot_sources: BTreeMap<String, Channel>,
    /// Salesforce `LeadSource` value → channel.
    pub salesforce_sources: BTreeMap<String, Channel>,
}

impl ChannelSettings {
    /// The market of a deal no referral touches: by its pipeline, else by its currency.
    pub fn market_of(&self, pipeline: Option<&str>, currency: Option<&str>) -> Option<String> {
        pipeline
            .and_then(|p| self.market_by_pipeline.get(p))
            .or_else(|| {
                let currency = currency?.trim().to_ascii_uppercase();
                self.market_by_currency
                    .iter()
                    .find(|(c, _)| c.to_ascii_uppercase() == currency)
                    .map(|(_, m)| m)
            })
            .map(|m| m.trim().to_ascii_uppercase())
    }

    /// The channel of a deal no referral touches, from its CRM source value.
    pub fn channel_of(&self, crm: Crm, source: Option<&str>) -> Channel {
        let Some(source) = source.map(str::trim).filter(|s| !s.is_empty()) else {
            return Channel::Unknown;
        };
        let mapping = match crm {
            Crm::HubSpot => &self.hubspot_sources,
            Crm::Salesforce => &self.salesforce_sources,
        };
        mapping.get(source).copied().unwrap_or(Channel::Other)
    }
}

/// Advocacy moments (SPEC §4): when a contact is marked as a good moment to ask for a referral.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MomentSettings {
    pub enabled: bool,
    /// The lowest NPS score that is a moment (0–10); a contact whose latest score is 6 or less
    /// is never marked.
    pub nps_min: u8,
    /// A contact marked less than this many days before (or after) a moment is not marked again.
    pub cooldown_days: u32,
    /// Which kinds of moment mark a contact.
    pub kinds: Vec<MomentKind>,
}

impl MomentSettings {
    pub fn marks(&self, kind: MomentKind) -> bool {
        self.enabled && self.kinds.contains(&kind)
    }
}

/// Fraud-check parameters (SPEC §4); which flags block is per program (`block_on`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FraudSettings {
    pub free_mail_domains: Vec<String>,
    pub disposable_domains: Vec<String>,
    pub shared_ip_min_others: u32,
    pub shared_ip_window_days: u32,
    pub velocity_max_referrals: u32,
    pub velocity_window_days: u32,
}

/// One market's reward program, in the shape RevOps writes (SPEC §8). Amounts are decimal strings.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProgramSettings {
    pub currency: String,
    #[serde(default = "default_success_stage")]
    pub success_stage: CanonicalStage,
    #[serde(default = "default_window_days")]
    pub attribution_window_days: u32,
    #[serde(default = "default_hold_days")]
    pub hold_days: u32,
    #[serde(default)]
    pub min_deal_amount: Option<Decimal>,
    #[serde(default)]
    pub approval_threshold: Option<Decimal>,
    pub reward: RewardRule,
    #[serde(default)]
    pub referee_reward: Option<RewardRule>,
    #[serde(default = "default_tiers")]
    pub tiers: Vec<TierSettings>,
    #[serde(default)]
    pub fx: BTreeMap<String, Decimal>,
    #[serde(default = "default_block_on")]
    pub block_on: Vec<String>,
    /// A share of the referred customer's later revenue (paid invoices, won renewals).
    #[serde(default)]
    pub recurring: Option<RecurringRule>,
    /// A statement is due this many days after the end of its month.
    #[serde(default = "default_payout_terms_days")]
    pub payout_terms_days: u32,
    /// Pay a won deal's reward in installments; empty pays it whole once payable.
    #[serde(default)]
    pub payout_schedule: Vec<InstallmentSettings>,
}

/// `recurring = { percent, months, cap }`: each payment of a referred customer within `months`
/// calendar months of its first won deal earns the referrer `percent` of it (times the tier
/// multiplier); `cap` bounds what one customer's recurring rewards add up to.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RecurringRule {
    pub percent: Decimal,
    pub months: u32,
    #[serde(default)]
    pub cap: Option<Decimal>,
}

/// One installment of `payout_schedule`: `share` of the reward, payable when `at` is reached.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct InstallmentSettings {
    pub at: InstallmentAt,
    pub share: Decimal,
}

/// How a reward is computed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RewardRule {
    PercentOfDeal {
        percent: Decimal,
        #[serde(default)]
        cap: Option<Decimal>,
    },
    Flat {
        amount: Decimal,
    },
    Credit {
        amount: Decimal,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TierSettings {
    pub name: String,
    pub min_successful: u32,
    pub multiplier: Decimal,
}

/// Source names are dynamic, so their `secrets` can't be registered for the environment layer's
/// list parsing: accept `REFERRAL_SYNC__SOURCES__APP__SECRETS=new,old` as well as a TOML list.
fn secrets_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Secret::new)
            .collect(),
        OneOrMany::Many(v) => v.into_iter().map(Secret::new).collect(),
    })
}

/// `REFERRAL_SYNC__SALESFORCE__API_VERSION=62.0` reaches the settings as the number 62.0 (the
/// environment layer parses values), so a version may arrive as a number as well as a string.
fn version_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Version {
        Text(String),
        Number(f64),
    }
    Ok(match Version::deserialize(d)? {
        Version::Text(text) => text,
        Version::Number(number) => format!("{number:.1}"),
    })
}

fn default_success_stage() -> CanonicalStage {
    CanonicalStage::Won
}
fn default_window_days() -> u32 {
    365
}
fn default_hold_days() -> u32 {
    30
}
fn default_payout_terms_days() -> u32 {
    30
}
fn default_block_on() -> Vec<String> {
    vec!["self_referral".into()]
}
fn default_tiers() -> Vec<TierSettings> {
    [
        ("bronze", 1, "1.0"),
        ("silver", 3, "1.5"),
        ("gold", 5, "2.0"),
    ]
    .into_iter()
    .map(|(name, min, mult)| TierSettings {
        name: name.into(),
        min_successful: min,
        multiplier: mult.parse().expect("literal decimal"),
    })
    .collect()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminSettings {
    pub keys: Vec<AdminKey>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminKey {
    pub hash: String,
    pub role: String,
    /// Who this key belongs to; recorded as the actor in the audit log.
    #[serde(default)]
    pub name: Option<String>,
}

/// The RevOps console (`/console`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConsoleSettings {
    /// A console session ends this long after sign-in, whatever happens in between.
    pub session_minutes: u32,
    /// Where HubSpot records open (`…/contacts/{portal}/record/…`); EU portals use app-eu1.
    pub hubspot_app_url: String,
    /// Where Salesforce records open (`…/lightning/r/{Object}/{Id}/view`); empty: the login URL.
    pub salesforce_app_url: String,
}

/// The partner portal (`/partners/{code}?token=…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PortalSettings {
    /// Keys the HMAC of every partner link; empty turns the portal off (every link is refused).
    pub link_secret: Secret,
    /// The origin partner links are built on; empty: `server.public_base_url`.
    pub base_url: String,
    /// How long a link made without `--days` stays valid.
    pub link_days: u32,
}

impl Settings {
    /// The origin partner links are built on, if one is configured.
    pub fn portal_base_url(&self) -> Option<&str> {
        [&self.portal.base_url, &self.server.public_base_url]
            .into_iter()
            .map(|u| u.trim_end_matches('/'))
            .find(|u| !u.is_empty())
    }
}

/// The fraud flags a program may block on (SPEC §4).
pub const FRAUD_FLAGS: &[&str] = &[
    "self_referral",
    "shared_ip",
    "existing_customer",
    "disposable_domain",
    "velocity",
];

/// Why the configuration could not be used: every problem, each naming its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read the configuration: {0}")]
    Load(String),
    #[error("the configuration has {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// One line per problem, for `check-config`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Load(m) => vec![m.clone()],
            Self::Invalid(p) => p.clone(),
        }
    }
}

/// Where configuration comes from; `Default` reads the real process environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// `--config FILE`.
    pub file: Option<PathBuf>,
    /// Directory holding `default.toml` and `{env}.toml`; `REFERRAL_SYNC_CONFIG_DIR` or `./config`.
    pub dir: Option<PathBuf>,
    /// Environment variables to apply; `None` means the process environment.
    pub env: Option<BTreeMap<String, String>>,
}

impl Settings {
    /// The property (HubSpot) or field (Salesforce) names the service writes in `crm`.
    pub fn field_names(&self, crm: Crm) -> &CrmFieldNames {
        match crm {
            Crm::HubSpot => &self.hubspot.properties,
            Crm::Salesforce => &self.salesforce.fields,
        }
    }

    /// Load and validate, refusing a configuration with any problem.
    pub fn load(sources: &ConfigSources) -> Result<Settings, ConfigError> {
        let (settings, mut problems) = Self::load_unvalidated(sources)?;
        problems.extend(settings.validate());
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Layer the sources (SPEC §8); returns the settings plus unknown-key problems.
    fn load_unvalidated(sources: &ConfigSources) -> Result<(Settings, Vec<String>), ConfigError> {
        use config::{Config, Environment, File, FileFormat};
        let env: BTreeMap<String, String> = match &sources.env {
            Some(e) => e.clone(),
            None => std::env::vars().collect(),
        };
        let dir = sources
            .dir
            .clone()
            .or_else(|| env.get("REFERRAL_SYNC_CONFIG_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config"));

        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        let on_disk_default = dir.join("default.toml");
        if on_disk_default.is_file() {
            builder = builder.add_source(toml_file(&on_disk_default)?);
        }
        if let Some(name) = env.get("REFERRAL_SYNC_ENV").filter(|n| !n.is_empty()) {
            let overlay = dir.join(format!("{name}.toml"));
            if !overlay.is_file() {
                return Err(ConfigError::Load(format!(
                    "REFERRAL_SYNC_ENV={name} but {} does not exist",
                    overlay.display()
                )));
            }
            builder = builder.add_source(toml_file(&overlay)?);
        }
        if let Some(file) = &sources.file {
            if !file.is_file() {
                return Err(ConfigError::Load(format!(
                    "--config {}: no such file",
                    file.display()
                )));
            }
            builder = builder.add_source(toml_file(file)?);
        }
        // Secrets (and URLs) are taken from the environment as they are: parsed, an all-digit
        // secret would become a number that no longer fits, and leading zeros would be lost.
        let (verbatim, parsed): (BTreeMap<_, _>, BTreeMap<_, _>) = env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(k, _)| is_verbatim_env_key(k));
        let mut environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(parsed.into_iter().collect()));
        for key in ENV_LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        builder = builder.add_source(environment);
        for (env_key, value) in verbatim {
            let key = env_key[ENV_PREFIX.len() + 2..]
                .to_ascii_lowercase()
                .replace("__", ".");
            let value: config::Value = if ENV_LIST_KEYS.contains(&key.as_str()) {
                value
                    .split(',')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
                    .into()
            } else {
                value.into()
            };
            builder = builder.set_override(&key, value).map_err(|_| {
                ConfigError::Invalid(vec![format!("{env_key}: not a usable setting name")])
            })?;
        }
        if let Some(url) = env.get("DATABASE_URL").filter(|u| !u.is_empty()) {
            builder = builder
                .set_override("database.url", url.as_str())
                .map_err(|e| ConfigError::Load(e.to_string()))?;
        }
        let merged: serde_json::Value = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;

        deserialize_reporting_every_name(merged)
    }

    /// Cross-field and value checks; one message per problem, each starting with its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.server.bind.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "server.bind: `{}` is not an address like 127.0.0.1:8080",
                self.server.bind
            ));
        }
        if !self.server.public_base_url.is_empty() && !is_http_url(&self.server.public_base_url) {
            p.push("server.public_base_url: must be an http(s) URL such as https://referrals.example.com".into());
        }
        if self.server.body_limit_bytes < 1024 {
            p.push("server.body_limit_bytes: must be at least 1024".into());
        }
        if self.server.body_read_timeout_ms == 0 {
            p.push("server.body_read_timeout_ms: must be at least 1".into());
        }
        if self.server.unverified_body_budget_bytes < self.server.body_limit_bytes {
            p.push("server.unverified_body_budget_bytes: must be at least server.body_limit_bytes, or the largest allowed body could never be read".into());
        }
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            p.push("database.url: must start with sqlite: or postgres://".into());
        }
        let w = &self.workers;
        if w.restart_backoff_initial_ms == 0 {
            p.push("workers.restart_backoff_initial_ms: must be at least 1".into());
        }
        if w.restart_backoff_max_secs.saturating_mul(1000) < w.restart_backoff_initial_ms {
            p.push("workers.restart_backoff_max_secs: must not be shorter than workers.restart_backoff_initial_ms".into());
        }
        if self.database.max_connections < MIN_CONNECTIONS {
            p.push(format!(
                "database.max_connections: must be at least {MIN_CONNECTIONS} (a report with its \
                 comparison reads on 4 connections at once, and on SQLite a 5th holds writers \
                 back while those start), not {}",
                self.database.max_connections
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.level).is_err() {
            p.push(format!(
                "telemetry.level: `{}` is not a valid log filter",
                self.telemetry.level
            ));
        }
        if !(16..=65_536).contains(&self.telemetry.max_field_chars) {
            p.push("telemetry.max_field_chars: must be between 16 and 65536".into());
        }
        if self.ingest.max_batch_events == 0 {
            p.push("ingest.max_batch_events: must be at least 1".into());
        }
        if !(4..=1_000).contains(&self.ingest.xml_max_attributes) {
            p.push("ingest.xml_max_attributes: must be between 4 and 1000 (parsing work grows with its square)".into());
        }
        if self.ingest.writers_postgres == 0 {
            p.push("ingest.writers_postgres: must be at least 1".into());
        }
        let pr = &self.processing;
        if pr.batch_events == 0 {
            p.push("processing.batch_events: must be at least 1".into());
        }
        if pr.partitions_per_batch == 0
            || i32::from(pr.partitions_per_batch) > crate::store::PARTITIONS
        {
            p.push(format!(
                "processing.partitions_per_batch: must be between 1 and {}",
                crate::store::PARTITIONS
            ));
        }
        if pr.processors == 0 {
            p.push("processing.processors: must be at least 1".into());
        }
        if pr.stuck_after_secs < 10 {
            p.push(
                "processing.stuck_after_secs: must be at least 10 (a busy round may take seconds)"
                    .into(),
            );
        }
        let o = &self.outbox;
        if o.batch_records == 0 || o.batch_records > 200 {
            p.push("outbox.batch_records: must be between 1 and 200".into());
        }
        if o.lease_secs <= o.request_timeout_secs {
            p.push("outbox.lease_secs: must exceed outbox.request_timeout_secs, or a slow call outlives its lease".into());
        }
        if o.retry_schedule_secs.is_empty() {
            p.push("outbox.retry_schedule_secs: needs at least one delay".into());
        }
        if o.hubspot_requests_per_10s == 0 || o.salesforce_requests_per_10s == 0 {
            p.push("outbox.*_requests_per_10s: must be at least 1".into());
        }
        self.validate_hubspot(&mut p);
        self.validate_salesforce(&mut p);
        self.validate_sources(&mut p);
        self.validate_rewards(&mut p);
        self.validate_channels(&mut p);
        if self.moments.nps_min > 10 {
            p.push("moments.nps_min: must be an NPS score, 0 to 10".into());
        }
        for (i, key) in self.admin.keys.iter().enumerate() {
            if key.hash.len() != 64 || !key.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                p.push(format!(
                    "admin.keys[{i}].hash: must be the 64-character SHA-256 hex of the key"
                ));
            }
            if !matches!(key.role.as_str(), "read" | "admin") {
                p.push(format!(
                    "admin.keys[{i}].role: `{}` is not one of read, admin",
                    key.role
                ));
            }
        }
        self.validate_web(&mut p);
        p
    }

    fn validate_web(&self, p: &mut Vec<String>) {
        let c = &self.console;
        if !(5..=10_080).contains(&c.session_minutes) {
            p.push("console.session_minutes: must be between 5 and 10080 (a week)".into());
        }
        if !is_http_url(&c.hubspot_app_url) {
            p.push("console.hubspot_app_url: must be an http(s) URL".into());
        }
        if !c.salesforce_app_url.is_empty() && !is_http_url(&c.salesforce_app_url) {
            p.push("console.salesforce_app_url: must be an http(s) URL".into());
        }
        let portal = &self.portal;
        if !portal.link_secret.is_empty() && portal.link_secret.expose().len() < 32 {
            p.push("portal.link_secret: use at least 32 random characters".into());
        }
        if !portal.base_url.is_empty() && !is_http_url(&portal.base_url) {
            p.push(
                "portal.base_url: must be an http(s) URL such as https://referrals.example.com"
                    .into(),
            );
        }
        if !(1..=366).contains(&portal.link_days) {
            p.push("portal.link_days: must be between 1 and 366".into());
        }
    }

    fn validate_hubspot(&self, p: &mut Vec<String>) {
        let hs = &self.hubspot;
        if hs.signature_versions.is_empty() {
            p.push("hubspot.signature_versions: must name at least one of v1, v2, v3".into());
        }
        if hs.client_secrets.iter().any(Secret::is_empty) {
            p.push("hubspot.client_secrets: an entry is empty".into());
        }
        if !is_http_url(&hs.api_base_url) {
            p.push("hubspot.api_base_url: must be an http(s) URL".into());
        }
    }

    fn validate_salesforce(&self, p: &mut Vec<String>) {
        let sf = &self.salesforce;
        for id in &sf.organization_ids {
            if !crate::ingest::salesforce::is_salesforce_id(id) {
                p.push(format!(
                    "salesforce.organization_ids: `{id}` is not a 15-character organization id, or an 18-character one with its checksum suffix"
                ));
            }
        }
        if !sf.organization_ids.is_empty() && sf.outbound_token.is_empty() {
            p.push("salesforce.outbound_token: required when salesforce.organization_ids is set (Outbound Messages carry no signature)".into());
        }
        if !sf.outbound_token.is_empty() && sf.outbound_token.expose().len() < 16 {
            p.push("salesforce.outbound_token: use at least 16 random characters".into());
        }
        for (i, s) in sf.callout_secrets.iter().enumerate() {
            if crate::ingest::signature::parse_standard_secret(s.expose()).is_err() {
                p.push(format!(
                    "salesforce.callout_secrets[{i}]: not a whsec_ base64 secret"
                ));
            }
        }
        if !sf.login_url.is_empty() && !is_http_url(&sf.login_url) {
            p.push("salesforce.login_url: must be an http(s) URL".into());
        }
        if crate::crm::salesforce::version_segment(&sf.api_version).is_none() {
            p.push(format!(
                "salesforce.api_version: `{}` is not like 62.0 or v62.0",
                sf.api_version
            ));
        }
    }

    fn validate_channels(&self, p: &mut Vec<String>) {
        let c = &self.channels;
        for (name, markets) in [
            ("market_by_pipeline", &c.market_by_pipeline),
            ("market_by_currency", &c.market_by_currency),
        ] {
            for (key, market) in markets {
                if let Err(e) = Market::parse(market) {
                    p.push(format!("channels.{name}.{key}: `{market}` {e}"));
                }
            }
        }
        for currency in c.market_by_currency.keys() {
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
                p.push(format!(
                    "channels.market_by_currency: `{currency}` is not a 3-letter ISO code like USD"
                ));
            }
        }
        let mappable = Channel::ALL
            .into_iter()
            .filter(|c| c.is_mappable())
            .map(Channel::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        for (name, sources) in [
            ("hubspot_sources", &c.hubspot_sources),
            ("salesforce_sources", &c.salesforce_sources),
        ] {
            for (value, channel) in sources {
                if !channel.is_mappable() {
                    p.push(format!(
                        "channels.{name}.\"{value}\": `{channel}` is not a channel a CRM source maps to ({mappable}; `referral` is for deals linked to a referral)"
                    ));
                }
            }
        }
    }

    fn validate_sources(&self, p: &mut Vec<String>) {
        for (name, src) in &self.sources {
            let key = format!("sources.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                p.push(format!(
                    "{key}: source names may use only a-z, 0-9, - and _ (they appear in the URL)"
                ));
            }
            if src.secrets.is_empty() || src.secrets.iter().any(Secret::is_empty) {
                p.push(format!(
                    "{key}.secrets: at least one non-empty secret is required"
                ));
            }
            match src.scheme {
                ProductScheme::StandardWebhooks => {
                    for (i, s) in src.secrets.iter().enumerate() {
                        if crate::ingest::signature::parse_standard_secret(s.expose()).is_err() {
                            p.push(format!("{key}.secrets[{i}]: not a whsec_ base64 secret"));
                        }
                    }
                }
                ProductScheme::Stripe => {}
                ProductScheme::HmacSha256 => {
                    if src.header.as_deref().is_none_or(str::is_empty) {
                        p.push(format!(
                            "{key}.header: required for scheme hmac-sha256 (the header carrying the signature)"
                        ));
                    }
                }
            }
        }
    }

    fn validate_rewards(&self, p: &mut Vec<String>) {
        for (market, prog) in &self.programs {
            let key = format!("programs.{market}");
            if prog.currency.len() != 3 || !prog.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                p.push(format!(
                    "{key}.currency: `{}` is not a 3-letter ISO code like USD",
                    prog.currency
                ));
            }
            validate_rule(&format!("{key}.reward"), &prog.reward, p);
            if let Some(r) = &prog.referee_reward {
                validate_rule(&format!("{key}.referee_reward"), r, p);
            }
            if prog.tiers.is_empty() {
                p.push(format!("{key}.tiers: at least one tier is required"));
            }
            let mut last = 0;
            for (i, t) in prog.tiers.iter().enumerate() {
                if t.min_successful <= last && i > 0 || t.min_successful == 0 {
                    p.push(format!(
                        "{key}.tiers[{i}].min_successful: must be at least 1 and increase from tier to tier"
                    ));
                }
                if t.multiplier <= Decimal::ZERO {
                    p.push(format!("{key}.tiers[{i}].multiplier: must be positive"));
                }
                last = t.min_successful;
            }
            for (cur, rate) in &prog.fx {
                if *rate <= Decimal::ZERO {
                    p.push(format!("{key}.fx.{cur}: rate must be positive"));
                }
            }
            for flag in &prog.block_on {
                if !FRAUD_FLAGS.contains(&flag.as_str()) {
                    p.push(format!(
                        "{key}.block_on: `{flag}` is not one of {}",
                        FRAUD_FLAGS.join(", ")
                    ));
                }
            }
            for (name, amount) in [
                ("min_deal_amount", prog.min_deal_amount),
                ("approval_threshold", prog.approval_threshold),
            ] {
                if amount.is_some_and(|a| a < Decimal::ZERO) {
                    p.push(format!("{key}.{name}: must not be negative"));
                }
            }
            if let Some(r) = &prog.recurring {
                if r.percent <= Decimal::ZERO || r.percent > Decimal::ONE_HUNDRED {
                    p.push(format!(
                        "{key}.recurring.percent: must be above 0 and at most 100"
                    ));
                }
                if r.months == 0 || r.months > 1200 {
                    p.push(format!(
                        "{key}.recurring.months: must be between 1 and 1200"
                    ));
                }
                if r.cap.is_some_and(|c| c <= Decimal::ZERO) {
                    p.push(format!("{key}.recurring.cap: must be positive"));
                }
            }
            if prog.payout_terms_days > 3650 {
                p.push(format!("{key}.payout_terms_days: must be at most 3650"));
            }
            validate_schedule(&format!("{key}.payout_schedule"), &prog.payout_schedule, p);
        }
    }

    /// Whether a won renewal can be an advocacy moment: the kind is on and `[renewals]` names any.
    pub fn renewal_moments(&self) -> bool {
        self.moments.marks(MomentKind::Renewal)
            && !(self.renewals.hubspot_pipelines.is_empty()
                && self.renewals.salesforce_types.is_empty())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render: {e}"))
    }

    /// `config/default.toml` as shipped, with nothing from the environment (unit tests).
    #[cfg(test)]
    pub fn shipped_defaults() -> Settings {
        Settings::load(&ConfigSources {
            file: None,
            dir: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/config").into()),
            env: Some(BTreeMap::new()),
        })
        .expect("config/default.toml is valid")
    }

    /// True when the database URL names SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.database.url.expose().starts_with("sqlite:")
    }
}

/// Shares above 0, each moment once, adding up to exactly 1 (the whole reward, never more).
fn validate_schedule(key: &str, schedule: &[InstallmentSettings], p: &mut Vec<String>) {
    if schedule.is_empty() {
        return;
    }
    for (i, step) in schedule.iter().enumerate() {
        if step.share <= Decimal::ZERO || step.share > Decimal::ONE {
            p.push(format!("{key}[{i}].share: must be above 0 and at most 1"));
        }
        if schedule[..i].iter().any(|earlier| earlier.at == step.at) {
            p.push(format!(
                "{key}[{i}].at: `{}` appears twice (one installment per moment)",
                step.at
            ));
        }
    }
    let total: Decimal = schedule.iter().map(|s| s.share).sum();
    if total != Decimal::ONE {
        p.push(format!(
            "{key}: the shares add up to {}, not 1",
            total.normalize()
        ));
    }
}

fn validate_rule(key: &str, rule: &RewardRule, p: &mut Vec<String>) {
    match rule {
        RewardRule::PercentOfDeal { percent, cap } => {
            if *percent <= Decimal::ZERO || *percent > Decimal::ONE_HUNDRED {
                p.push(format!("{key}.percent: must be above 0 and at most 100"));
            }
            if cap.is_some_and(|c| c <= Decimal::ZERO) {
                p.push(format!("{key}.cap: must be positive"));
            }
        }
        RewardRule::Flat { amount } | RewardRule::Credit { amount } => {
            if *amount <= Decimal::ZERO {
                p.push(format!("{key}.amount: must be positive"));
            }
        }
    }
}

/// A TOML file as a config source, its syntax checked first: the TOML parser's own error quotes
/// the offending line, which may hold a secret, so only the position and the complaint are told.
fn toml_file(
    path: &Path,
) -> Result<config::File<config::FileSourceString, config::FileFormat>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Load(format!("{}: could not be read: {e}", path.display())))?;
    if let Err(e) = text.parse::<toml::Table>() {
        let at = e.span().map_or(0, |span| span.start).min(text.len());
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        return Err(ConfigError::Load(format!(
            "{}: not valid TOML at line {line}, column {column}: {}",
            path.display(),
            e.message().trim()
        )));
    }
    Ok(config::File::from_str(&text, config::FileFormat::Toml))
}

/// Environment keys taken verbatim (never parsed as numbers or booleans): secrets, tokens and URLs,
/// by the last segment of their name (`…__CLIENT_SECRETS`, `…__ACCESS_TOKEN`, `DATABASE…__URL`).
fn is_verbatim_env_key(env_key: &str) -> bool {
    let last = env_key
        .rsplit("__")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    ["secret", "secrets", "token", "tokens", "url"]
        .iter()
        .any(|suffix| last == *suffix || last.ends_with(&format!("_{suffix}")))
}

/// A deserialization complaint without the value that caused it (it may be a secret): serde's
/// messages quote it (`invalid type: string "…", expected …`); only what was expected and the
/// kind of thing found are kept.
/// Problems one configuration may report before reading stops.
const MAX_PROBLEMS: usize = 100;

/// Deserialize the merged sources into [`Settings`], with the unknown keys as problems. serde
/// stops at the first bad value, but SPEC §8 wants every problem at once, and the commonest one
/// is a word the field does not know (a scheme, a stage, a format): such a value is reported and
/// replaced by a word the field accepts, and reading goes on. The placeholder is never used: any
/// problem refuses the whole configuration. Any other bad value ends the reading there.
fn deserialize_reporting_every_name(
    mut merged: serde_json::Value,
) -> Result<(Settings, Vec<String>), ConfigError> {
    let mut problems = Vec::new();
    while problems.len() < MAX_PROBLEMS {
        let mut unknown = Vec::new();
        let result: Result<Settings, _> = serde_path_to_error::deserialize(
            serde_ignored::Deserializer::new(&merged, &mut |path: serde_ignored::Path<'_>| {
                // An optional table's path shows `?` for "present"; the key is what people wrote.
                let key = path.to_string().replace(".?.", ".");
                unknown.push(format!("{key}: unknown key"))
            }),
        );
        let e = match result {
            Ok(settings) => {
                problems.extend(unknown);
                return Ok((settings, problems));
            }
            Err(e) => e,
        };
        let message = e.inner().to_string();
        problems.push(format!(
            "{}: {}",
            e.path(),
            describe_without_value(&message)
        ));
        let placeholder = first_expected_name(&message);
        let replaced = placeholder.is_some_and(|name| replace_at(&mut merged, e.path(), name));
        if !replaced {
            break;
        }
    }
    Err(ConfigError::Invalid(problems))
}

/// The first name serde's "unknown variant `x`, expected one of `a`, `b`" offers.
fn first_expected_name(message: &str) -> Option<&str> {
    if !message.starts_with("unknown variant ") {
        return None;
    }
    let expected = &message[message.find(", expected ")? + ", expected ".len()..];
    expected.split('`').nth(1)
}

/// Put `name` where `path` points in `value`; false when the path does not lead to a value.
fn replace_at(value: &mut serde_json::Value, path: &serde_path_to_error::Path, name: &str) -> bool {
    use serde_path_to_error::Segment;
    let mut at = value;
    for segment in path.iter() {
        let next = match segment {
            Segment::Map { key } => at.get_mut(key.as_str()),
            Segment::Seq { index } => at.get_mut(*index),
            Segment::Enum { .. } | Segment::Unknown => None,
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    *at = serde_json::Value::String(name.to_string());
    true
}

fn describe_without_value(message: &str) -> String {
    let expected = message
        .rfind(", expected ")
        .map(|i| &message[i + ", expected ".len()..]);
    if let (Some(found), Some(expected)) = (message.strip_prefix("invalid type: "), expected) {
        let kind = found
            .split(['"', '`', ','])
            .next()
            .unwrap_or_default()
            .trim();
        return format!("expected {expected}, found {kind} (value not shown)");
    }
    if message.starts_with("invalid value: ") || message.starts_with("unknown variant ") {
        return match expected {
            Some(expected) => format!("invalid value (not shown), expected {expected}"),
            None => "invalid value (not shown)".into(),
        };
    }
    if message.starts_with("missing field ")
        || message.starts_with("invalid length ")
        || message.starts_with("data did not match any variant")
    {
        return message.to_string();
    }
    "invalid value (not shown)".into()
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://"))
        && s.split("://").nth(1).is_some_and(|rest| !rest.is_empty())
}

/// Show a database URL without its password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{}{user}:[redacted]{}", &url[..scheme_end + 3], &url[at..])
            } else {
                url.to_string()
            }
        }
        _ => url.to_string(),
    }
}

fn serialize_redacted_url<S: Serializer>(url: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url.expose()))
}

/// The SQLite file path of a `sqlite:` URL, if it names a file.
pub fn sqlite_path(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}

#[cfg(test)]
mod renewal_tests {
    use super::RenewalSettings;
    use crate::domain::Crm;
    use crate::store::{CrmRecord, RecordKey};

    fn deal(crm: &str, pipeline: Option<&str>, deal_type: Option<&str>) -> CrmRecord {
        let crm: Crm = crm.parse().unwrap();
        let mut deal = CrmRecord::bare(RecordKey::new(crm, crm.deal_type(), "1"), "");
        deal.pipeline = pipeline.map(Into::into);
        deal.deal_type = deal_type.map(Into::into);
        deal
    }

    #[test]
    fn renewals_are_told_by_hubspot_pipeline_and_salesforce_type() {
        let renewals = RenewalSettings {
            hubspot_pipelines: vec!["renewals".into()],
            salesforce_types: vec!["Renewal".into()],
        };
        assert!(renewals.is_renewal(&deal("hubspot", Some("renewals"), None)));
        assert!(!renewals.is_renewal(&deal("hubspot", Some("default"), Some("Renewal"))));
        assert!(renewals.is_renewal(&deal("salesforce", None, Some("Renewal"))));
        assert!(!renewals.is_renewal(&deal("salesforce", Some("renewals"), Some("New Customer"))));
        assert!(!RenewalSettings::default().is_renewal(&deal("hubspot", Some("renewals"), None)));
    }
}

//! The command line (SPEC §7): `referral-sync [--config FILE] <command>`; no command serves.

pub mod crm_setup;
#[cfg(feature = "demo")]
mod demo;
mod output;
mod partners;
mod sign;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::clock::SystemClock;
use crate::config::{ConfigSources, Settings};
use crate::startup::{cancel_on_signal, Application};
use crate::store::Store;
use output::{out, outln};

#[derive(Debug, Parser)]
#[command(
    name = "referral-sync",
    version,
    about = "Write-once referral attribution and rewards, synced to HubSpot and Salesforce."
)]
pub struct Cli {
    /// A TOML file overlaid on config/default.toml (and config/$REFERRAL_SYNC_ENV.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and background workers (the default).
    Serve {
        /// Don't apply database migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// CRM administration.
    Crm {
        #[command(subcommand)]
        action: CrmCommand,
    },
    /// Re-queue dead CRM deliveries and failed/unmapped inbox events (after fixing their cause).
    Replay {
        /// Only these dead deliveries (comma-separated outbox ids).
        #[arg(long, value_delimiter = ',')]
        ids: Vec<i64>,
        /// Only dead deliveries created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only inbox events, not deliveries.
        #[arg(long, conflicts_with = "deliveries_only")]
        inbox_only: bool,
        /// Only deliveries, not inbox events.
        #[arg(long)]
        deliveries_only: bool,
    },
    /// Referrer administration.
    Partners {
        #[command(subcommand)]
        action: PartnersCommand,
    },
    /// Print the referral funnel (with --compare, next to every other deal; with --by referrer,
    /// the per-referrer scorecards instead).
    Report(ReportArgs),
    /// Print a month's payout statements, one per referrer and currency (gathering them first).
    Payouts {
        /// The month, YYYY-MM (UTC).
        #[arg(long)]
        period: String,
        /// table, csv or json.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Only statements in this currency (e.g. USD).
        #[arg(long)]
        currency: Option<String>,
        /// Only this referrer's statements (referrer code).
        #[arg(long)]
        referrer: Option<String>,
    },
    /// Print signature headers for a body, to test a setup with curl.
    Sign(sign::SignArgs),
    /// Play the whole story against a built-in CRM sandbox and print what happened.
    #[cfg(feature = "demo")]
    Demo,
    /// Exit 0 if the local server answers /readyz (for Docker HEALTHCHECK).
    Healthcheck {
        /// Base URL to check; defaults to http://<server.bind>.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// table, csv or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Only this market (e.g. US).
    #[arg(long)]
    market: Option<String>,
    /// Only this source (link, code, intro, pool).
    #[arg(long)]
    source: Option<String>,
    /// First touch at or after this RFC 3339 time.
    #[arg(long)]
    from: Option<String>,
    /// First touch before this RFC 3339 time.
    #[arg(long)]
    to: Option<String>,
    /// One scorecard per referrer instead of the funnel.
    #[arg(long, value_enum)]
    by: Option<ReportBy>,
    /// Add referred vs non-referred deals (created in the period) per market and channel, and
    /// the participation rate; with --format csv, the comparison alone.
    #[arg(long, conflicts_with = "by")]
    compare: bool,
}

impl Command {
    /// Commands whose output a person reads: only real problems belong between their lines.
    fn prints_for_a_person(&self) -> bool {
        match self {
            Command::Report(_) | Command::Payouts { .. } => true,
            #[cfg(feature = "demo")]
            Command::Demo => true,
            _ => false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PartnersCommand {
    /// Import referrers from a CSV file with the header code,name,email,company_domain,market,kind.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Print a signed partner-portal link for CODE (valid for portal.link_days, or --days).
    Link {
        /// The referrer's code.
        code: String,
        /// Days the link stays valid (1-366).
        #[arg(long)]
        days: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CrmCommand {
    /// Create the HubSpot properties (idempotent) and check the Salesforce fields exist.
    Setup,
}

/// Parse the arguments and run the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = ConfigSources {
        file: cli.config.clone(),
        ..Default::default()
    };
    let command = cli.command.unwrap_or(Command::Serve { no_migrate: false });
    if let Command::CheckConfig = command {
        return check_config(&sources);
    }
    if let Command::Sign(args) = command {
        return match Settings::load(&sources)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|s| sign::run(&s, args, crate::clock::Clock::now(&SystemClock)))
        {
            Ok(text) => match out!("{text}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => exit_for_output_error(&e),
            },
            Err(e) => {
                eprintln!("referral-sync sign: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let settings = match Settings::load(&sources) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("referral-sync: invalid configuration");
            for problem in e.problems() {
                eprintln!("  {problem}");
            }
            return ExitCode::from(2);
        }
    };
    let mut telemetry = settings.telemetry.clone();
    if command.prints_for_a_person() {
        telemetry.level = "error".into();
    }
    crate::telemetry::init(&telemetry);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("referral-sync: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let grace = std::time::Duration::from_secs(settings.server.shutdown_grace_secs);
    let result = runtime.block_on(async move {
        match command {
            Command::Serve { no_migrate } => serve(settings, !no_migrate).await,
            Command::Migrate => migrate(settings).await,
            Command::Healthcheck { url } => healthcheck(&settings, url).await,
            Command::Replay {
                ids,
                since,
                inbox_only,
                deliveries_only,
            } => {
                replay(
                    settings,
                    ReplayScope {
                        ids,
                        since,
                        inbox: !deliveries_only,
                        deliveries: !inbox_only,
                    },
                )
                .await
            }
            Command::Report(args) => report(&settings, args).await,
            Command::Payouts {
                period,
                format,
                currency,
                referrer,
            } => payouts(&settings, &period, format, currency, referrer).await,
            #[cfg(feature = "demo")]
            Command::Demo => demo::run(&std::path::PathBuf::from("config/example.toml")).await,
            Command::Crm {
                action: CrmCommand::Setup,
            } => {
                let (lines, ok) = crm_setup::run(&settings).await;
                for line in lines {
                    outln!("{line}")?;
                }
                if ok {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("CRM setup is incomplete (see above)"))
                }
            }
            Command::Partners {
                action: PartnersCommand::Link { code, days },
            } => {
                let store = Store::connect(&settings.database).await?;
                store.migrate().await?;
                let url = partners::link(&store, &settings, &code, days).await?;
                store.close().await;
                outln!("{url}")
            }
            Command::Partners {
                action: PartnersCommand::Import { file },
            } => {
                let store = Store::connect(&settings.database).await?;
                store.migrate().await?;
                let n = partners::import(&store, &file).await?;
                outln!("imported {n} referrer(s) from {}", file.display())?;
                Ok(())
            }
            Command::CheckConfig => unreachable!("handled before loading"),
            other => Err(anyhow::anyhow!(
                "`{}` is not implemented yet",
                command_name(&other)
            )),
        }
    });
    // Whatever a blocking task is still doing (the SQLite inbox writer waiting on a lock), the
    // process ends within the grace period instead of waiting for it.
    runtime.shutdown_timeout(grace);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("referral-sync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A reader that went away (`| head -1`) is not a failure; any other write error is.
fn exit_for_output_error(e: &anyhow::Error) -> ExitCode {
    if output::is_stdout_closed(e) {
        ExitCode::SUCCESS
    } else {
        eprintln!("referral-sync: {e:#}");
        ExitCode::FAILURE
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Serve { .. } => "serve",
        Command::Migrate => "migrate",
        Command::CheckConfig => "check-config",
        Command::Crm { .. } => "crm setup",
        Command::Replay { .. } => "replay",
        Command::Partners {
            action: PartnersCommand::Import { .. },
        } => "partners import",
        Command::Partners {
            action: PartnersCommand::Link { .. },
        } => "partners link",
        Command::Report(_) => "report",
        Command::Payouts { .. } => "payouts",
        Command::Sign(_) => "sign",
        #[cfg(feature = "demo")]
        Command::Demo => "demo",
        Command::Healthcheck { .. } => "healthcheck",
    }
}

fn check_config(sources: &ConfigSources) -> ExitCode {
    match Settings::load(sources) {
        Ok(settings) => {
            let printed =
                outln!("# configuration is valid; effective settings (secrets redacted):\n")
                    .and_then(|()| out!("{}", settings.to_redacted_toml()));
            match printed {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => exit_for_output_error(&e),
            }
        }
        Err(e) => {
            for problem in e.problems() {
                eprintln!("{problem}");
            }
            ExitCode::from(1)
        }
    }
}

async fn serve(settings: Settings, run_migrations: bool) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database).await?;
    if run_migrations {
        store.migrate().await?;
    }
    let app = Application::build(settings, store, Arc::new(SystemClock)).await?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    tracing::info!(port = app.port(), "referral-sync listening");
    app.run_until_stopped(shutdown).await
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database).await?;
    store.migrate().await?;
    outln!("migrations applied to {}", store.display_url())?;
    store.close().await;
    Ok(())
}

/// What `replay` re-queues.
struct ReplayScope {
    ids: Vec<i64>,
    since: Option<String>,
    inbox: bool,
    deliveries: bool,
}

async fn replay(settings: Settings, scope: ReplayScope) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database).await?;
    store.migrate().await?;
    if scope.deliveries {
        let since = match &scope.since {
            Some(s) => Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| anyhow::anyhow!("--since {s}: not an RFC 3339 time: {e}"))?
                    .timestamp_millis(),
            ),
            None => None,
        };
        let n = store
            .replay_dead(&scope.ids, since, crate::clock::Clock::now(&SystemClock))
            .await?;
        outln!("re-queued {n} dead deliver(y/ies); the running service delivers them")?;
    }
    if !scope.inbox {
        store.close().await;
        return Ok(());
    }
    let requeued = store.requeue_inbox().await?;
    let processor = crate::processing::InboxProcessor::new(
        store.clone(),
        Arc::new(settings),
        Arc::new(SystemClock),
        Default::default(),
    );
    let processed = processor.drain().await?;
    let still = store.inbox_status_counts().await?;
    outln!("re-queued {requeued} inbox event(s); processed {processed}")?;
    for (status, n) in still {
        if status == "failed" || status == "unmapped" {
            outln!("  still {status}: {n} (see status_reason; fix the cause and replay again)")?;
        }
    }
    store.close().await;
    Ok(())
}

async fn report(settings: &Settings, args: ReportArgs) -> anyhow::Result<()> {
    use crate::reports::funnel::{self, FunnelFilter};
    use crate::reports::scorecard;
    let time = |name: &str, v: Option<String>| -> anyhow::Result<Option<i64>> {
        v.map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| t.timestamp_millis())
                .map_err(|e| anyhow::anyhow!("--{name} {v}: not an RFC 3339 time: {e}"))
        })
        .transpose()
    };
    let filter = FunnelFilter {
        market: args.market.map(|m| m.to_uppercase()),
        source: args.source,
        from: time("from", args.from)?,
        to: time("to", args.to)?,
    };
    let store = Store::connect(&settings.database).await?;
    if args.compare {
        let now = crate::clock::Clock::now(&SystemClock);
        let report = funnel::report_with_comparison(&store, settings, &filter, now).await?;
        print(args.format, &report, funnel::to_table, funnel::to_csv)?;
        store.close().await;
        return Ok(());
    }
    let facts = store.funnel_facts(&filter).await?;
    match args.by {
        Some(ReportBy::Referrer) => {
            let report = scorecard::compute(&facts, None);
            print(args.format, &report, scorecard::to_table, scorecard::to_csv)?;
        }
        None => {
            let report = funnel::compute(&facts);
            print(args.format, &report, funnel::to_table, funnel::to_csv)?;
        }
    }
    store.close().await;
    Ok(())
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// What `report --by` prints one row of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportBy {
    /// A scorecard per referrer.
    Referrer,
}

/// Print `report` in `format`: the terminal table, the CSV, or its JSON.
fn print<T: serde::Serialize>(
    format: OutputFormat,
    report: &T,
    table: fn(&T) -> String,
    csv: fn(&T) -> String,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => out!("{}", table(report))?,
        OutputFormat::Csv => out!("{}", csv(report))?,
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(report)?)?,
    }
    Ok(())
}

async fn payouts(
    settings: &Settings,
    period: &str,
    format: OutputFormat,
    currency: Option<String>,
    referrer: Option<String>,
) -> anyhow::Result<()> {
    use crate::payouts::{self, StatementFilter};
    let period: crate::domain::payout::Period = period
        .parse()
        .map_err(|e| anyhow::anyhow!("--period: {e}"))?;
    let store = Store::connect(&settings.database).await?;
    // Reading a period writes its statements: the schema must be current.
    store.migrate().await?;
    let filter = StatementFilter {
        currency: currency.map(|c| c.trim().to_ascii_uppercase()),
        referrer,
    };
    let now = crate::clock::Clock::now(&SystemClock);
    let read = payouts::read_period(&store, settings, period, &filter, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    print(format, &read, payouts::to_table, payouts::to_csv)?;
    store.close().await;
    Ok(())
}

async fn healthcheck(settings: &Settings, url: Option<String>) -> anyhow::Result<()> {
    let base = url.unwrap_or_else(|| {
        // A wildcard bind address is not something to connect to: use loopback on that port.
        let bind = settings
            .server
            .bind
            .replace("0.0.0.0", "127.0.0.1")
            .replace("[::]", "[::1]");
        format!("http://{bind}")
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("{}/readyz", base.trim_end_matches('/'));
    let response = client.get(&url).send().await?;
    if response.status().is_success() {
        outln!("ready")
    } else {
        anyhow::bail!("{url} answered {}", response.status())
    }
}

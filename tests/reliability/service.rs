//! The real `referral-sync` binary as a child process on a fixed loopback port, configured only
//! through its environment; started, SIGKILLed and restarted by the tests, and always killed when
//! its guard drops so a failing test leaves nothing running.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::repo_dir;
use crate::support::senders::{APP_SECRET, HUBSPOT_SECRET};

/// Lines of a service's log quoted when it fails to become ready or to run a command.
const LOG_TAIL_LINES: usize = 30;

/// What every process of one test shares: its database, the CRM sandbox and the programs file.
pub struct Shared {
    pub database_url: String,
    pub crm_base_url: String,
    /// The `--config` TOML file: see [`write_config_file`].
    pub config_file: PathBuf,
    /// Where each process's stdout and stderr go.
    pub log_dir: PathBuf,
}

/// `dir/reliability.toml`: the US program of `config/example.toml` (programs exist only in TOML)
/// and the `app` product source. The source's `secrets` list cannot come from the environment:
/// only fixed keys are split on commas there, so `REFERRAL_SYNC__SOURCES__APP__SECRETS` stays a
/// string and the service refuses the configuration.
pub fn write_config_file(dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(repo_dir().join("config/example.toml"))
        .expect("config/example.toml");
    let example: toml::Table = example.parse().expect("config/example.toml is TOML");
    let mut programs = toml::Table::new();
    programs.insert("US".into(), example["programs"]["US"].clone());
    let mut app = toml::Table::new();
    app.insert("scheme".into(), "standard-webhooks".into());
    app.insert("secrets".into(), vec![APP_SECRET].into());
    let mut sources = toml::Table::new();
    sources.insert("app".into(), app.into());
    let mut file = toml::Table::new();
    file.insert("programs".into(), programs.into());
    file.insert("sources".into(), sources.into());
    let path = dir.join("reliability.toml");
    std::fs::write(&path, toml::to_string(&file).expect("config TOML")).expect("write the config");
    path
}

/// A free loopback port (free until someone binds it; restarts reuse it at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One service process slot: a name, a port and, while running, the child.
pub struct Service {
    pub name: String,
    pub port: u16,
    log: PathBuf,
    command: Command,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: usize,
}

impl Service {
    /// A slot for `referral-sync [--config FILE] <args>`; nothing runs until [`Service::start`].
    pub fn new(name: &str, shared: &Shared, args: &[&str]) -> Service {
        let port = free_port();
        let log = shared.log_dir.join(format!("{name}.log"));
        let mut command = base_command(shared, port);
        command.args(args);
        Service {
            name: name.into(),
            port,
            log,
            command,
            child: None,
            starts: 0,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Inbox events this process applied, from its `inbox_processed_total` counters.
    pub async fn events_processed(&self, client: &reqwest::Client) -> u64 {
        let text = client
            .get(format!("{}/metrics", self.base_url()))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with("inbox_processed_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Start the process and wait (until `deadline`) for `GET /readyz` to answer 200.
    pub async fn start(&mut self, client: &reqwest::Client, deadline: Instant) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = append(&self.log);
        self.command
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        self.child = Some(self.command.spawn().expect("spawn referral-sync"));
        self.starts += 1;
        let ready = format!("{}/readyz", self.base_url());
        for _ in 0..10_000 {
            let answered = client
                .get(&ready)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if answered {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "{} (start {}) exited with {status} before it was ready; log tail:\n{}",
                    self.name,
                    self.starts,
                    tail(&self.log)
                );
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{} (start {}) was not ready at {ready} before the deadline; log tail:\n{}",
            self.name,
            self.starts,
            tail(&self.log)
        );
    }

    /// SIGKILL (no shutdown of any kind) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `referral-sync <args>` to completion (e.g. `migrate`), panicking with its output on failure.
pub fn run_to_completion(shared: &Shared, args: &[&str]) {
    let mut command = base_command(shared, free_port());
    let output = command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run referral-sync");
    assert!(
        output.status.success(),
        "referral-sync {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn base_command(shared: &Shared, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_referral-sync"));
    command.current_dir(repo_dir()).stdin(Stdio::null());
    // Only what this test sets may configure the process, whatever the developer's shell exports.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("REFERRAL_SYNC") || key == "DATABASE_URL" || key == "RUST_LOG" {
            command.env_remove(key.as_ref());
        }
    }
    command
        .env("DATABASE_URL", &shared.database_url)
        .env("REFERRAL_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("REFERRAL_SYNC__SERVER__PUBLIC_BASE_URL", "")
        .env("REFERRAL_SYNC__HUBSPOT__CLIENT_SECRETS", HUBSPOT_SECRET)
        .env("REFERRAL_SYNC__HUBSPOT__ACCESS_TOKEN", "pat-sandbox")
        .env("REFERRAL_SYNC__HUBSPOT__API_BASE_URL", &shared.crm_base_url)
        .env("REFERRAL_SYNC__TELEMETRY__LEVEL", "error")
        .env("REFERRAL_SYNC__OUTBOX__HUBSPOT_REQUESTS_PER_10S", "190")
        // A killed process's CRM leases stay taken until they expire: the default 120 s would
        // outlast the test's time budget, so the lease (and the call timeout it must exceed) is short.
        .env("REFERRAL_SYNC__OUTBOX__REQUEST_TIMEOUT_SECS", "4")
        .env("REFERRAL_SYNC__OUTBOX__LEASE_SECS", "5")
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(&shared.config_file);
    command
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

//! PostgreSQL for integration tests: every test gets a fresh, empty database, either on the server
//! named by `TEST_DATABASE_URL` or on a throwaway cluster that this test process starts once
//! (initdb into a temp dir, trust auth, durability off) and that a detached watchdog stops and
//! deletes when the process exits, however it exits.
//!
//! Only std and the PostgreSQL binaries are used: `initdb`/`pg_ctl` for the cluster (as the
//! `postgres` OS user when running as root), `createdb`/`dropdb` for the databases.

use std::env;
use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Superuser created by initdb and used in the cluster's URLs.
const SUPERUSER: &str = "postgres";
/// OS account that runs the server when the tests run as root.
const OS_USER: &str = "postgres";
/// Lines of the server log quoted when the cluster cannot start.
const LOG_TAIL_LINES: usize = 25;

/// A fresh, empty database on a PostgreSQL server for one test; dropped (best effort) when this value drops.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    name: String,
    maintenance_url: String,
    client_bin: Option<PathBuf>,
}

/// Why PostgreSQL tests can't run here (printed as "skipped: …").
#[derive(Debug)]
pub enum Availability {
    Available(TestDatabase),
    Unavailable(String),
}

/// Returns a new database: on the server of `TEST_DATABASE_URL` when set, otherwise on this
/// process's throwaway cluster, otherwise `Unavailable` with the reason.
pub fn test_database() -> Availability {
    match create_database() {
        Ok(db) => Availability::Available(db),
        Err(reason) => Availability::Unavailable(reason),
    }
}

/// Like [`test_database`], but when `REQUIRE_POSTGRES=1` an `Unavailable` becomes a panic with the
/// reason; otherwise returns `None` after printing "skipped: PostgreSQL not available (<reason>)".
pub fn require_or_skip() -> Option<TestDatabase> {
    match test_database() {
        Availability::Available(db) => Some(db),
        Availability::Unavailable(reason) => {
            if env::var("REQUIRE_POSTGRES").is_ok_and(|v| v.trim() == "1") {
                panic!("PostgreSQL is required (REQUIRE_POSTGRES=1) but not available: {reason}");
            }
            eprintln!("skipped: PostgreSQL not available ({reason})");
            None
        }
    }
}

impl TestDatabase {
    fn dropdb(&self, force: bool) -> bool {
        let mut args = vec![
            format!("--maintenance-db={}", self.maintenance_url),
            "--no-password".to_string(),
            "--if-exists".to_string(),
        ];
        // A pool the test forgot to close would otherwise make DROP DATABASE fail.
        if force {
            args.push("--force".to_string());
        }
        args.push(self.name.clone());
        run_client(self.client_bin.as_deref(), "dropdb", &args).is_ok()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // `--force` needs PostgreSQL 13 on both ends; an older TEST_DATABASE_URL server gets a plain drop.
        if !self.dropdb(true) {
            self.dropdb(false);
        }
    }
}

fn create_database() -> Result<TestDatabase, String> {
    if let Some(url) = env::var_os("TEST_DATABASE_URL").filter(|u| !u.is_empty()) {
        let url = url
            .into_string()
            .map_err(|_| "TEST_DATABASE_URL is not valid UTF-8".to_string())?;
        let bin = pg_bin_dir("createdb");
        return create_on_server(url.trim(), bin, true);
    }
    let cluster = CLUSTER
        .get_or_init(Cluster::start)
        .as_ref()
        .map_err(Clone::clone)?;
    create_on_server(&cluster.server_url(), Some(cluster.bin.clone()), false)
}

/// Creates `rs_test_<unique>` on the server of `server_url`, connecting to the URL's own database;
/// with `fallback`, also tries `postgres` since a user-given URL may name a database that is absent.
fn create_on_server(
    server_url: &str,
    client_bin: Option<PathBuf>,
    fallback: bool,
) -> Result<TestDatabase, String> {
    let name = unique_name("rs_test");
    let url = with_database(server_url, &name).ok_or_else(|| {
        format!(
            "TEST_DATABASE_URL must look like postgres://user:pass@host:port/db, got {}",
            redact(server_url)
        )
    })?;
    let mut candidates = vec![server_url.to_string()];
    if fallback {
        if let Some(alt) = with_database(server_url, "postgres").filter(|u| u != server_url) {
            candidates.push(alt);
        }
    }
    let mut errors = Vec::new();
    for maintenance_url in candidates {
        let args = [
            format!("--maintenance-db={maintenance_url}"),
            "--no-password".to_string(),
            name.clone(),
        ];
        match run_client(client_bin.as_deref(), "createdb", &args) {
            Ok(_) => {
                return Ok(TestDatabase {
                    url,
                    name,
                    maintenance_url,
                    client_bin,
                })
            }
            Err(e) if !errors.contains(&e) => errors.push(e),
            Err(_) => {}
        }
    }
    Err(format!(
        "could not create database {name} on {}: {}",
        redact(server_url),
        errors.join("; ")
    ))
}

/// Runs a client binary (as whoever we are: it connects over TCP, so root is fine).
fn run_client(bin: Option<&Path>, program: &str, args: &[String]) -> Result<Output, String> {
    let mut cmd = Command::new(bin.map_or_else(|| PathBuf::from(program), |b| b.join(program)));
    cmd.args(args);
    // An unreachable TEST_DATABASE_URL host must not hang the test run.
    if env::var_os("PGCONNECT_TIMEOUT").is_none() {
        cmd.env("PGCONNECT_TIMEOUT", "10");
    }
    run(&mut cmd, program)
}

/// The throwaway cluster of this test process.
struct Cluster {
    bin: PathBuf,
    port: u16,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

impl Cluster {
    fn server_url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.port)
    }

    fn start() -> Result<Cluster, String> {
        let bin = pg_bin_dir("initdb").ok_or(
            "no PostgreSQL server binaries found (no initdb under PG_BIN_DIR, \
             /usr/lib/postgresql/*/bin or PATH); install PostgreSQL or set TEST_DATABASE_URL",
        )?;
        if !bin.join("initdb").is_file() || !bin.join("pg_ctl").is_file() {
            return Err(format!("no initdb and pg_ctl in {}", bin.display()));
        }
        let run_as = RunAs::detect()?;
        let dir = make_temp_dir(&run_as)?;
        // Spawned before anything can be left running, so even a half-started cluster is cleaned up.
        if let Err(e) = spawn_watchdog(&dir, &bin, &run_as) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        let data = dir.join("data");
        let log = dir.join("server.log");
        let data_s = data.to_string_lossy().into_owned();

        let mut initdb = run_as.command(&[
            bin.join("initdb").to_string_lossy().into_owned(),
            "-D".into(),
            data_s.clone(),
            "-U".into(),
            SUPERUSER.into(),
            "--auth=trust".into(),
            "--no-sync".into(),
            "--encoding=UTF8".into(),
            // The host's LANG may name a locale that is not installed; C also sorts deterministically.
            "--locale=C".into(),
        ]);
        run(initdb.current_dir(&dir), "initdb")?;

        let settings = format!(
            "\n# referral-sync test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 200\n",
            dir.to_string_lossy().replace('\'', "''")
        );
        let conf = data.join("postgresql.conf");
        fs::read_to_string(&conf)
            .and_then(|old| fs::write(&conf, old + settings.as_str()))
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;

        // The free port is only free until someone else binds it (another test binary, say), so a
        // lost race is retried on a new port.
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let port = free_port()?;
            let log_start = fs::metadata(&log).map_or(0, |m| m.len() as usize);
            let mut pg_ctl = run_as.command(&[
                bin.join("pg_ctl").to_string_lossy().into_owned(),
                "-D".into(),
                data_s.clone(),
                "-l".into(),
                log.to_string_lossy().into_owned(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "-o".into(),
                format!("-p {port}"),
                "start".into(),
            ]);
            match run(pg_ctl.current_dir(&dir), "pg_ctl start") {
                Ok(_) => return Ok(Cluster { bin, port }),
                Err(e) => {
                    let text = read_log(&log);
                    let this_attempt = text.get(log_start..).unwrap_or(&text);
                    let port_taken = this_attempt.contains("could not bind")
                        || this_attempt.contains("could not create any TCP/IP sockets");
                    if !(port_taken && attempt < ATTEMPTS) {
                        return Err(format!(
                            "PostgreSQL test cluster in {} did not start: {e}\n\
                             --- tail of {} ---\n{}",
                            dir.display(),
                            log.display(),
                            tail(&text, LOG_TAIL_LINES)
                        ));
                    }
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// Who runs initdb and pg_ctl: ourselves, or the `postgres` OS user when we are root.
enum RunAs {
    Me,
    Postgres { uid: u32, gid: u32, via_su: bool },
}

impl RunAs {
    fn detect() -> Result<RunAs, String> {
        if command_stdout("id", &["-u"]).as_deref() != Some("0") {
            return Ok(RunAs::Me);
        }
        let id = |flag: &str| command_stdout("id", &[flag, OS_USER]).and_then(|s| s.parse().ok());
        let (Some(uid), Some(gid)) = (id("-u"), id("-g")) else {
            return Err(format!(
                "running as root, which PostgreSQL refuses, and there is no `{OS_USER}` OS user to run it as"
            ));
        };
        let via_su = if find_on_path("runuser").is_some() {
            false
        } else if find_on_path("su").is_some() {
            true
        } else {
            return Err("running as root, and neither runuser nor su is available".into());
        };
        Ok(RunAs::Postgres { uid, gid, via_su })
    }

    fn command(&self, argv: &[String]) -> Command {
        let mut cmd = match self {
            RunAs::Me => {
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..]);
                cmd
            }
            RunAs::Postgres { via_su: false, .. } => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", OS_USER, "--"]).args(argv);
                cmd
            }
            RunAs::Postgres { via_su: true, .. } => {
                let mut cmd = Command::new("su");
                cmd.args([OS_USER, "-s", "/bin/sh", "-c", &shell_words(argv)]);
                cmd
            }
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The same as [`RunAs::command`], as a line for `sh -c`.
    fn shell(&self, argv: &[String]) -> String {
        match self {
            RunAs::Me => shell_words(argv),
            RunAs::Postgres { via_su: false, .. } => {
                format!("runuser -u {OS_USER} -- {}", shell_words(argv))
            }
            RunAs::Postgres { via_su: true, .. } => format!(
                "su {OS_USER} -s /bin/sh -c {}",
                sh_quote(&shell_words(argv))
            ),
        }
    }
}

/// A new directory for the cluster, owned by whoever runs the server.
fn make_temp_dir(run_as: &RunAs) -> Result<PathBuf, String> {
    let mut base = env::temp_dir();
    if let RunAs::Postgres { .. } = run_as {
        // The server user must be able to reach its directory; root's private TMPDIR would not do.
        let reachable = fs::metadata(&base).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
        if !reachable {
            base = PathBuf::from("/tmp");
        }
    }
    let dir = loop {
        let dir = base.join(unique_name("rs-pg"));
        match fs::create_dir(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    };
    if let RunAs::Postgres { uid, gid, .. } = run_as {
        if let Err(e) = std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)) {
            let _ = fs::remove_dir(&dir);
            return Err(format!("cannot hand {} to {OS_USER}: {e}", dir.display()));
        }
    }
    Ok(dir)
}

/// Statics are never dropped, so a detached shell waits for this process to end (however it
/// ends, SIGKILL included) and then stops the cluster and deletes its directory.
fn spawn_watchdog(dir: &Path, bin: &Path, run_as: &RunAs) -> Result<(), String> {
    let stop = run_as.shell(&[
        bin.join("pg_ctl").to_string_lossy().into_owned(),
        "-D".into(),
        dir.join("data").to_string_lossy().into_owned(),
        "stop".into(),
        "-m".into(),
        "immediate".into(),
        "-w".into(),
    ]);
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = sh_quote(&dir.to_string_lossy()),
    );
    let detached = |cmd: &mut Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of our process group, so Ctrl-C on the test run does not kill it too.
            .process_group(0);
    };
    // `setsid --fork` leaves the terminal's session as well and returns at once, so it can be reaped.
    let mut setsid = Command::new("setsid");
    setsid.args(["--fork", "sh", "-c", &script]);
    detached(&mut setsid);
    if setsid.status().is_ok_and(|s| s.success()) {
        return Ok(());
    }
    let mut sh = Command::new("sh");
    sh.args(["-c", &script]);
    detached(&mut sh);
    sh.spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the cluster's cleanup watchdog (sh): {e}"))
}

/// Runs `cmd`, turning a failure into a message with its output.
fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what} ({:?}): {e}", cmd.get_program()))?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    Err(format!("{what} failed ({}): {text}", output.status))
}

fn command_stdout(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/<version>/bin` holding `program`, else the
/// directory on PATH that holds it.
fn pg_bin_dir(program: &str) -> Option<PathBuf> {
    if let Some(dir) = env::var_os("PG_BIN_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(version) = version_key(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let bin = entry.path().join("bin");
        if bin.join(program).is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
        .or_else(|| find_on_path(program)?.parent().map(Path::to_path_buf))
}

/// "15" → [15], "9.6" → [9, 6]; anything else is not a version directory.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free loopback port: {e}"))
}

/// `<prefix>_<pid>_<counter>_<nanos>`: lowercase, digits and underscores only when `prefix` is, so
/// a valid unquoted identifier well under PostgreSQL's 63 bytes.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// `url` with its database replaced by `database`, keeping scheme, credentials, host and query.
fn with_database(url: &str, database: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let scheme = &url[..url.len() - rest.len()];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let query = rest[authority_end..].split_once('?').map(|(_, q)| q);
    Some(match query {
        Some(q) => format!("{scheme}{authority}/{database}?{q}"),
        None => format!("{scheme}{authority}/{database}"),
    })
}

/// `url` without its password, for messages that may end up in CI logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn read_log(log: &Path) -> String {
    fs::read(log)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|e| format!("(cannot read the server log: {e})"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

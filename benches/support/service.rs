//! The real `referral-sync` binary for benchmarks: `serve` on a free port with a throwaway SQLite
//! database (unless given another URL), waited for until `/readyz` answers, stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Service {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts `binary serve` with logs at error level, then `env` on top.
    pub fn start(binary: &str, database_url: Option<String>, env: &[(&str, String)]) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url =
            database_url.unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.path().display()));
        let child = Command::new(binary)
            .arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("DATABASE_URL", url)
            .env("REFERRAL_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("REFERRAL_SYNC__TELEMETRY__LEVEL", "error")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("REFERRAL_SYNC_ENV")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start referral-sync");
        let service = Service {
            child,
            port,
            _dir: dir,
        };
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reqwest::blocking::get(&ready).is_ok_and(|r| r.status().is_success()) {
                return service;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not become ready");
    }

    /// A `/proc/<pid>/status` memory figure in KiB (`VmRSS`, `VmHWM`, …).
    pub fn memory_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(&format!("{field}:")))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

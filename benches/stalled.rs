//! Stalled-sender benchmark (SPEC §10: resident memory bounded under unauthenticated slow or
//! stalled senders): the real `referral-sync` binary, attacked by N connections that each declare
//! a 1 MiB HubSpot body, send all of it but the last byte, and stall. Prints one JSON line per run
//! with the server's RSS before, its peak, and RSS at the end of the hold, plus how the attackers'
//! requests ended (answered, closed by the server, or still open).
//!
//! Two attacks:
//!   unsigned — no signature headers at all (the case in the hardening report);
//!   forged   — well-formed HubSpot v3 headers with a fresh timestamp and a signature that matches
//!              nothing: they pass every check that needs no body, so the body is read.
//!
//! RSS includes memory the allocator keeps after the connections that used it are gone; the
//! connections the server still holds at the end are counted separately.
//!
//! Run: `scripts/stalled-senders.sh` (raises the open-files limit, then `cargo bench --bench
//! stalled`). Env: STALL_CONNECTIONS=200,1000, STALL_MODES=unsigned,forged, STALL_HOLD_SECS=30,
//! STALL_BINARY=path to measure another build of the service (e.g. an older release).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use support::service::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY_BYTES: usize = 1024 * 1024;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn start_server() -> Service {
    let binary = std::env::var("STALL_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_referral-sync").to_string());
    Service::start(
        &binary,
        None,
        &[(
            "REFERRAL_SYNC__HUBSPOT__CLIENT_SECRETS",
            "stall-bench-secret".into(),
        )],
    )
}

#[derive(Default)]
struct Outcomes {
    answered: AtomicUsize,
    closed_without_answer: AtomicUsize,
    still_open: AtomicUsize,
}

/// One attacker: headers, all but the last byte of the body, then silence until `hold` ends.
async fn attack(port: u16, forged: bool, hold: Duration, outcomes: Arc<Outcomes>) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        outcomes
            .closed_without_answer
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut head = format!(
        "POST /webhooks/hubspot HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {BODY_BYTES}\r\n"
    );
    if forged {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let signature = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        head.push_str(&format!(
            "X-HubSpot-Signature-v3: {signature}\r\nX-HubSpot-Request-Timestamp: {now}\r\n"
        ));
    }
    head.push_str("\r\n");
    let body = vec![b' '; BODY_BYTES - 1];
    let sent = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await
    };
    // A server that stops reading leaves the rest in the socket buffers; that is a stall too.
    let _ = tokio::time::timeout(hold, sent).await;
    let mut answer = [0u8; 512];
    let read = tokio::time::timeout(hold, stream.read(&mut answer)).await;
    let counter = match read {
        Ok(Ok(n)) if n > 0 => &outcomes.answered,
        Ok(_) => &outcomes.closed_without_answer,
        Err(_) => &outcomes.still_open,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn run(connections: usize, mode: &str, hold: Duration) -> serde_json::Value {
    let server = start_server();
    let before_kib = server.memory_kib("VmRSS");
    let before_fds = open_fds(&server);
    let outcomes = Arc::new(Outcomes::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let attackers: Vec<_> = (0..connections)
        .map(|_| {
            runtime.spawn(attack(
                server.port,
                mode == "forged",
                hold,
                outcomes.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    let mut peak_kib = before_kib;
    while started.elapsed() < hold {
        peak_kib = peak_kib.max(server.memory_kib("VmRSS"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let end_kib = server.memory_kib("VmRSS");
    let end_fds = open_fds(&server);
    runtime.block_on(async {
        for a in attackers {
            let _ = a.await;
        }
    });
    let healthz_ok = reqwest::blocking::get(format!("http://127.0.0.1:{}/healthz", server.port))
        .is_ok_and(|r| r.status().is_success());
    serde_json::json!({
        "benchmark": "stalled_senders",
        "mode": mode,
        "connections": connections,
        "body_bytes": BODY_BYTES - 1,
        "hold_secs": hold.as_secs(),
        "rss_before_mib": mib(before_kib),
        "rss_peak_mib": mib(peak_kib),
        "rss_end_of_hold_mib": mib(end_kib),
        "server_connections_open_at_end_of_hold": end_fds.saturating_sub(before_fds),
        "answered": outcomes.answered.load(Ordering::Relaxed),
        "closed_without_answer": outcomes.closed_without_answer.load(Ordering::Relaxed),
        "still_open_at_end": outcomes.still_open.load(Ordering::Relaxed),
        "healthz_ok_after": healthz_ok,
    })
}

/// File descriptors the server holds: its connections, beyond a constant few.
fn open_fds(server: &Service) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).map_or(0, |d| d.count())
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn main() {
    let hold = Duration::from_secs(env_or("STALL_HOLD_SECS", "30").parse().unwrap_or(30));
    for mode in env_or("STALL_MODES", "unsigned,forged").split(',') {
        for connections in env_or("STALL_CONNECTIONS", "200,1000").split(',') {
            let connections: usize = connections.trim().parse().expect("a connection count");
            println!("{}", run(connections, mode.trim(), hold));
        }
    }
}

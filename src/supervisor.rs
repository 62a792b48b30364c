//! Background-worker supervision. Every long-running worker (inbox processor, outbox worker, hold
//! timer, and whatever replaces them) runs under [`Supervisor::supervise`], which:
//!
//! - runs the worker as its own task, so a panic is caught instead of silently ending it;
//! - restarts it after a backoff (`initial`, doubling up to `max`) when it panics, fails or returns
//!   before shutdown, logging why (the panic message or the error chain);
//! - counts `worker_restarts_total{worker}` and sets `worker_up{worker}` (1 or 0);
//! - keeps each worker's state in a [`WorkerRegistry`], which `/readyz` reads: a worker that is
//!   down makes the replica unready (503 naming it) until it runs again.
//!
//! A worker is a factory `FnMut(CancellationToken) -> impl Future<Output = anyhow::Result<()>>`:
//! each (re)start calls it for a fresh future, which must return `Ok(())` once the token is
//! cancelled. Anything else (an `Err`, an early return, a panic) is a failure.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A boxed worker factory, for workers chosen at run time (see `Application::add_worker`).
pub type WorkerFactory =
    Box<dyn FnMut(CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> + Send>;

/// Restart delays: `initial` after the first failure, doubling up to `max`. A run that lasted at
/// least `max` counts as healthy, so its failure starts again from `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before restart number `failures` (1-based) of a run of consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .saturating_mul(1u32 << doublings)
            .min(self.max.max(self.initial))
    }
}

/// One worker's state as `/readyz` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    Running,
    /// Failed; restarts after the backoff. `restarts` counts the restarts done so far.
    Down {
        restarts: u64,
    },
    /// Ended at shutdown.
    Stopped,
}

/// Every supervised worker's state, shared with the HTTP handlers. Cloning shares it.
#[derive(Clone)]
pub struct WorkerRegistry(Arc<watch::Sender<BTreeMap<String, WorkerState>>>);

impl Default for WorkerRegistry {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(BTreeMap::new())))
    }
}

impl WorkerRegistry {
    fn set(&self, name: &str, state: WorkerState) {
        metrics::gauge!("worker_up", "worker" => name.to_string()).set(
            if state == WorkerState::Running {
                1.0
            } else {
                0.0
            },
        );
        self.0.send_modify(|workers| {
            workers.insert(name.to_string(), state);
        });
    }

    /// Names of the registered workers that are not running, in name order.
    pub fn not_running(&self) -> Vec<String> {
        self.0
            .borrow()
            .iter()
            .filter(|(_, state)| **state != WorkerState::Running)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every supervised worker and its state, in name order.
    pub fn states(&self) -> BTreeMap<String, WorkerState> {
        self.0.borrow().clone()
    }

    /// The state of `name`, if it was ever supervised.
    pub fn state(&self, name: &str) -> Option<WorkerState> {
        self.0.borrow().get(name).cloned()
    }

    /// Wait until `done` holds for the states (tests use it instead of polling).
    pub async fn wait_until(&self, done: impl FnMut(&BTreeMap<String, WorkerState>) -> bool) {
        let mut states = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = states.wait_for(done).await;
    }
}

/// Starts workers under supervision; they stop when `stop` is cancelled.
#[derive(Clone)]
pub struct Supervisor {
    registry: WorkerRegistry,
    stop: CancellationToken,
    backoff: Backoff,
}

impl Supervisor {
    pub fn new(registry: WorkerRegistry, stop: CancellationToken, backoff: Backoff) -> Self {
        Self {
            registry,
            stop,
            backoff,
        }
    }

    /// Run the worker `make_worker` builds, under `name` (a metric label: snake_case), until the
    /// stop token is cancelled, restarting it with backoff whenever it fails. The handle ends
    /// when the worker has stopped for good.
    pub fn supervise<F, Fut>(&self, name: &str, mut make_worker: F) -> JoinHandle<()>
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.to_string();
        let Self {
            registry,
            stop,
            backoff,
        } = self.clone();
        registry.set(&name, WorkerState::Running);
        tokio::spawn(async move {
            let (mut failures, mut restarts) = (0u32, 0u64);
            loop {
                let started = Instant::now();
                let cause = match tokio::spawn(make_worker(stop.clone())).await {
                    Ok(Ok(())) if stop.is_cancelled() => {
                        registry.set(&name, WorkerState::Stopped);
                        return;
                    }
                    Ok(Ok(())) => "it returned before shutdown".to_string(),
                    Ok(Err(e)) => format!("it failed: {e:#}"),
                    Err(e) if e.is_panic() => {
                        format!("it panicked: {}", panic_message(e.into_panic().as_ref()))
                    }
                    Err(e) => format!("its task was cancelled: {e}"),
                };
                if stop.is_cancelled() {
                    // Not restarted, but not dropped silently either.
                    tracing::error!(worker = %name, cause = %cause, "background worker ended badly during shutdown");
                    registry.set(&name, WorkerState::Stopped);
                    return;
                }
                if started.elapsed() >= backoff.max {
                    failures = 0;
                }
                failures += 1;
                let delay = backoff.delay(failures);
                registry.set(&name, WorkerState::Down { restarts });
                tracing::error!(
                    worker = %name,
                    cause = %cause,
                    restart_in_ms = delay.as_millis() as u64,
                    "background worker stopped; restarting it"
                );
                tokio::select! {
                    _ = stop.cancelled() => {
                        registry.set(&name, WorkerState::Stopped);
                        return;
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
                restarts += 1;
                metrics::counter!("worker_restarts_total", "worker" => name.clone()).increment(1);
                registry.set(&name, WorkerState::Running);
                tracing::info!(worker = %name, restarts, "background worker restarted");
            }
        })
    }
}

/// The text a panic was raised with (`panic!("…")`, `expect("…")`), when it has one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(3),
        };
        let delays: Vec<u64> = (1..=6).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000, 3000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(3));
    }

    /// Collects formatted log lines, so a test can read what the supervisor logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // A current-thread runtime runs every task on this thread, under this thread's subscriber.
    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_is_logged_with_its_message_even_at_shutdown() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let registry = WorkerRegistry::default();
        let stop = CancellationToken::new();
        let supervisor = Supervisor::new(
            registry.clone(),
            stop.clone(),
            Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(1),
            },
        );
        let (started, mut runs) = tokio::sync::mpsc::unbounded_channel();
        let mut run = 0;

        let handle = supervisor.supervise("flaky", move |stop: CancellationToken| {
            run += 1;
            let (run, started) = (run, started.clone());
            async move {
                let _ = started.send(run);
                if run == 1 {
                    panic!("lost the connection to the database");
                }
                stop.cancelled().await;
                panic!("could not flush on the way out");
            }
        });
        assert_eq!(runs.recv().await, Some(1));
        assert_eq!(runs.recv().await, Some(2), "restarted after the panic");
        stop.cancel();
        handle.await.unwrap();

        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("it panicked: lost the connection to the database"),
            "{text}"
        );
        assert!(text.contains("background worker restarted"), "{text}");
        assert!(
            text.contains("ended badly during shutdown")
                && text.contains("could not flush on the way out"),
            "{text}"
        );
        assert_eq!(registry.state("flaky"), Some(WorkerState::Stopped));
    }
}

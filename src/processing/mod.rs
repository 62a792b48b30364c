//! The inbox processor: turns stored events into the attribution ledger, in two steps.
//!
//! 1. **Facts** ([`facts`]): a batch of pending events from the partitions this processor holds
//!    is decoded, applied in arrival order in memory, and written with one statement per table,
//!    in one transaction with the events' new status (`processed`, `ignored`, `unmapped`,
//!    `failed` with the reason). Partitions are locked for that transaction only, and skipped
//!    when another processor holds them, so processors in one process and replicas on one
//!    PostgreSQL work disjoint partitions at the same time.
//! 2. **Reconcile** ([`reconcile`]): links, milestones, rewards, the tamper guard and advocacy
//!    moments for what the facts may have changed, from the committed facts, by one processor at
//!    a time.
//!
//! When idle, a processor also refreshes the channel baseline's rollup
//! ([`InboxProcessor::refresh_baseline`]).
//!
//! README "Processing" explains the partition key and why the rules hold across partitions.

pub mod decode;
mod facts;
mod moments;
mod reconcile;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::{Millis, SharedClock, SECOND};
use crate::config::Settings;
use crate::store::{BackendKind, InboxStatus, Recheck, Store, StoreError, Tx};
use decode::GuardedNames;

/// After a recheck fails on its own, it waits this long before it is tried again.
const RECHECK_RETRY_AFTER: Millis = 60 * SECOND;

/// The baseline rollup is refreshed when a processor is idle, and at least this often while it
/// is busy, so reports stay fast under sustained load (they are exact either way).
const BASELINE_REFRESH_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct InboxProcessor {
    store: Store,
    settings: Arc<Settings>,
    clock: SharedClock,
    names: GuardedNames,
    wake: Arc<Notify>,
    outbox_wake: Option<Arc<Notify>>,
    health: ProcessingHealth,
}

/// When this process's processors last completed a round, and the last error if the rounds since
/// failed, for `/readyz`: a processor that is alive but makes no progress (its database refuses
/// every round) is as unready as one that is down. Shared by every clone of a processor.
#[derive(Clone, Default)]
pub struct ProcessingHealth(Arc<std::sync::Mutex<HealthState>>);

#[derive(Default)]
struct HealthState {
    last_round_at: Option<Millis>,
    last_error: Option<String>,
}

impl ProcessingHealth {
    fn completed(&self, at: Millis) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.last_round_at = Some(at);
        s.last_error = None;
    }

    fn failed(&self, error: &StoreError) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.last_error = Some(format!("{error:#}"));
    }

    /// Why processing counts as stalled at `now`: no round completed for more than `after` ms
    /// (counted from `started` before the first one).
    pub fn stalled(&self, now: Millis, started: Millis, after: Millis) -> Option<String> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let since = s.last_round_at.unwrap_or(started);
        (now - since > after).then(|| {
            format!(
                "inbox processing has completed no round for {} s{}",
                (now - since) / 1000,
                s.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            )
        })
    }
}

/// What one [`InboxProcessor::tick`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Inbox events applied.
    pub events: usize,
    /// Reconcile-queue entries settled.
    pub rechecks: usize,
}

impl TickReport {
    pub fn is_idle(&self) -> bool {
        self.events == 0 && self.rechecks == 0
    }
}

impl InboxProcessor {
    pub fn new(
        store: Store,
        settings: Arc<Settings>,
        clock: SharedClock,
        wake: Arc<Notify>,
    ) -> Self {
        let names = GuardedNames {
            hubspot_referral_source: settings.hubspot.properties.referral_source.clone(),
            salesforce_referral_source: settings.salesforce.fields.referral_source.clone(),
        };
        Self {
            store,
            settings,
            clock,
            names,
            wake,
            outbox_wake: None,
            health: ProcessingHealth::default(),
        }
    }

    /// This processor's (and its clones') progress, for `/readyz`.
    pub fn health(&self) -> ProcessingHealth {
        self.health.clone()
    }

    /// Wake the outbox worker after each round that may have queued CRM writes or reads.
    pub fn notify_outbox(mut self, wake: Arc<Notify>) -> Self {
        self.outbox_wake = Some(wake);
        self
    }

    /// How many processors this deployment's settings run in one process: one on SQLite, whose
    /// single writer would serialise more anyway.
    pub fn processors(&self) -> usize {
        match self.store.kind() {
            BackendKind::Sqlite => 1,
            BackendKind::Postgres => self.settings.processing.processors.max(1),
        }
    }

    /// One batch of facts, then one reconcile round.
    pub async fn tick(&self) -> Result<TickReport, StoreError> {
        let round = async {
            let events = self.apply_facts().await?;
            let rechecks = self.reconcile().await?;
            Ok(TickReport { events, rechecks })
        };
        let report = round.await;
        match &report {
            Ok(_) => self.health.completed(self.clock.now()),
            Err(e) => self.health.failed(e),
        }
        report
    }

    /// Process until nothing is pending (tests and `replay`). Returns the events applied.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let report = self.tick().await?;
            if report.is_idle() {
                return Ok(total);
            }
            total += report.events;
        }
    }

    /// The background loop: process, then wait for new events (or poll, for other replicas'
    /// ingest and for rechecks that are due later). The baseline rollup is refreshed in the
    /// pauses, so it never slows a burst down.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut refreshed = std::time::Instant::now();
        loop {
            let idle = match self.tick().await {
                Ok(report) => report.is_idle(),
                Err(e) => {
                    tracing::error!(error = ?e, "inbox processing failed; retrying");
                    true
                }
            };
            if idle || refreshed.elapsed() >= BASELINE_REFRESH_EVERY {
                refreshed = std::time::Instant::now();
                if let Err(e) = self.store.refresh_statistics().await {
                    tracing::error!(error = ?e, "refreshing the planner's statistics failed");
                }
                match self.refresh_baseline().await {
                    Ok(n) if n > 0 && idle => continue,
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = ?e, "refreshing the baseline rollup failed"),
                }
            }
            if !idle {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {},
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
            }
        }
    }

    /// Move one batch of deals marked since their last count to where the channel baseline
    /// counts them now ([`crate::store::Tx::refresh_baseline`]); returns how many.
    pub async fn refresh_baseline(&self) -> Result<usize, StoreError> {
        let started = std::time::Instant::now();
        let mut tx = self.store.begin_batch().await?;
        let limit = i64::from(self.settings.processing.batch_events);
        let n = tx.refresh_baseline(limit).await?;
        if n == 0 {
            tx.rollback().await?;
            return Ok(0);
        }
        tx.commit().await?;
        metrics::counter!("baseline_refreshed_total").increment(n as u64);
        metrics::histogram!("processing_batch_seconds", "step" => "baseline")
            .record(started.elapsed().as_secs_f64());
        Ok(n)
    }

    /// Refresh the baseline rollup until no deal is marked (tests, benchmarks).
    pub async fn drain_baseline(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            match self.refresh_baseline().await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// The facts step for one batch; returns how many events it applied.
    #[tracing::instrument(name = "inbox_facts", skip_all, fields(events))]
    async fn apply_facts(&self) -> Result<usize, StoreError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let mut tx = self.store.begin_batch().await?;
        let events = self.pending(&mut tx).await?;
        if events.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        tracing::Span::current().record("events", events.len());
        let outcome = facts::apply(&mut tx, &self.settings, &self.names, &events, now).await;
        let applied = match settle(tx, outcome).await? {
            Ok(applied) => applied,
            Err(refused) => {
                tracing::warn!(error = ?refused, events = events.len(), "a batch was refused; applying its events one by one");
                return self.apply_facts_one_by_one().await;
            }
        };
        for outcome in &applied.outcomes {
            metrics::counter!("inbox_processed_total", "status" => outcome.status.as_str())
                .increment(1);
        }
        for event in &events {
            metrics::histogram!("inbox_processing_lag_seconds")
                .record((now - event.event.received_at).max(0) as f64 / 1000.0);
        }
        metrics::histogram!("processing_batch_seconds", "step" => "facts")
            .record(started.elapsed().as_secs_f64());
        if applied.queued_reads {
            self.wake_outbox();
        }
        Ok(events.len())
    }

    async fn pending(&self, tx: &mut Tx) -> Result<Vec<crate::store::InboxEvent>, StoreError> {
        let p = &self.settings.processing;
        let partitions = tx.lock_partitions(p.partitions_per_batch.into()).await?;
        tx.pending_events(partitions.as_deref(), p.batch_events.into())
            .await
    }

    /// A batch the database refused: each event in a savepoint of its own, so the one to blame
    /// fails alone with the database's reason and the others are applied.
    async fn apply_facts_one_by_one(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut tx = self.store.begin_batch().await?;
        let events = self.pending(&mut tx).await?;
        one_by_one(
            tx,
            &events,
            |mut tx, event| async move {
                let one = std::slice::from_ref(event);
                let applied = facts::apply(&mut tx, &self.settings, &self.names, one, now).await;
                (tx, applied.map(drop))
            },
            |mut tx, event, e| async move {
                tracing::warn!(event = event.id, error = ?e, "inbox event failed");
                let failed = crate::store::InboxOutcome {
                    id: event.id,
                    status: InboxStatus::Failed,
                    reason: Some(format!("the database refused this event's changes: {e}")),
                };
                let written = tx.set_outcomes(&[failed], now).await;
                if written.is_ok() {
                    metrics::counter!("inbox_processed_total", "status" => "failed").increment(1);
                }
                (tx, written)
            },
        )
        .await?;
        self.wake_outbox();
        Ok(events.len())
    }

    /// A transaction holding the reconcile lock and the rechecks due at `now`; `None` (nothing
    /// held) when another processor is running a round.
    async fn due_rechecks(&self, now: Millis) -> Result<Option<(Tx, Vec<Recheck>)>, StoreError> {
        let mut tx = self.store.begin_batch().await?;
        if !tx.try_lock_reconcile().await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let batch = i64::from(self.settings.processing.batch_events);
        let rechecks = tx.due_rechecks(now, batch).await?;
        Ok(Some((tx, rechecks)))
    }

    /// One reconcile round, if no other processor is running one; returns the rechecks settled.
    #[tracing::instrument(name = "reconcile_round", skip_all, fields(rechecks))]
    async fn reconcile(&self) -> Result<usize, StoreError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let Some((mut tx, rechecks)) = self.due_rechecks(now).await? else {
            return Ok(0);
        };
        if rechecks.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        tracing::Span::current().record("rechecks", rechecks.len());
        let outcome = reconcile::round(&mut tx, &self.settings, &rechecks, now).await;
        let done = match settle(tx, outcome).await? {
            Ok(done) => done,
            Err(refused) => {
                tracing::warn!(error = ?refused, "a reconcile round failed; rechecking one by one");
                return self.reconcile_one_by_one().await;
            }
        };
        metrics::counter!("reconcile_rechecks_total").increment(done.rechecks as u64);
        metrics::counter!("reconcile_failures_total").increment(done.failures.len() as u64);
        metrics::histogram!("processing_batch_seconds", "step" => "reconcile")
            .record(started.elapsed().as_secs_f64());
        if done.queued_writes {
            self.wake_outbox();
        }
        Ok(done.rechecks)
    }

    /// A round that failed as a whole: each recheck in a savepoint of its own; one that fails
    /// again is queued for later with its error, and the others go through.
    async fn reconcile_one_by_one(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let Some((tx, rechecks)) = self.due_rechecks(now).await? else {
            return Ok(0);
        };
        one_by_one(
            tx,
            &rechecks,
            |mut tx, recheck| async move {
                let one = std::slice::from_ref(recheck);
                let settled = reconcile::round(&mut tx, &self.settings, one, now).await;
                (tx, settled.map(drop))
            },
            |mut tx, recheck, e| async move {
                tracing::error!(recheck = recheck.id, subject = %recheck.subject, error = ?e, "a recheck failed; retrying later");
                metrics::counter!("reconcile_failures_total").increment(1);
                let queued = async {
                    tx.queue_retry(
                        &recheck.to_new()?,
                        recheck.attempts + 1,
                        &format!("{e:#}"),
                        now + RECHECK_RETRY_AFTER,
                        now,
                    )
                    .await?;
                    tx.delete_rechecks(&[recheck.id]).await
                }
                .await;
                (tx, queued)
            },
        )
        .await?;
        self.wake_outbox();
        Ok(rechecks.len())
    }

    fn wake_outbox(&self) {
        if let Some(wake) = &self.outbox_wake {
            wake.notify_one();
        }
    }

    /// Keep the backlog gauges current until shutdown.
    pub async fn report_backlog(self, shutdown: CancellationToken) {
        loop {
            self.update_gauges().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            }
        }
    }

    /// Refresh the backlog gauges: pending events, the oldest one's age, queued rechecks.
    pub async fn update_gauges(&self) {
        let now = self.clock.now();
        if let Ok((pending, oldest)) = self.store.inbox_backlog().await {
            metrics::gauge!("inbox_pending").set(pending as f64);
            metrics::gauge!("inbox_oldest_pending_seconds")
                .set(oldest.map_or(0, |t| (now - t).max(0)) as f64 / 1000.0);
        }
        if let Ok((queued, failing)) = self.store.reconcile_backlog().await {
            metrics::gauge!("reconcile_queue").set(queued as f64);
            metrics::gauge!("reconcile_queue_failing").set(failing as f64);
        }
        if let Ok(marked) = self.store.baseline_backlog().await {
            metrics::gauge!("baseline_marked_deals").set(marked as f64);
        }
    }
}

/// Run `apply` on each item in a savepoint of its own, then commit: an item whose error the input
/// is to blame for has its changes rolled back to its savepoint and goes to `failed`, and the
/// others are kept; any other error rolls the whole transaction back and is returned. Each step
/// takes the transaction and hands it back with its outcome.
async fn one_by_one<'a, T, Apply, Applied, Fail, Failed>(
    mut tx: Tx,
    items: &'a [T],
    mut apply: Apply,
    mut failed: Fail,
) -> Result<(), StoreError>
where
    Apply: FnMut(Tx, &'a T) -> Applied,
    Applied: Future<Output = (Tx, Result<(), StoreError>)>,
    Fail: FnMut(Tx, &'a T, StoreError) -> Failed,
    Failed: Future<Output = (Tx, Result<(), StoreError>)>,
{
    for item in items {
        tx.savepoint().await?;
        let outcome;
        (tx, outcome) = apply(tx, item).await;
        match outcome {
            Ok(()) => tx.release_savepoint().await?,
            Err(e) if blames_the_input(&e) => {
                tx.rollback_to_savepoint().await?;
                let handled;
                (tx, handled) = failed(tx, item, e).await;
                handled?;
            }
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        }
    }
    tx.commit().await
}

/// Commit `tx` when `outcome` is a success; otherwise roll it back at once — dropping it would
/// leave its partition and reconcile locks held until the connection is next used — and hand
/// back the error the input is to blame for (`Ok(Err(_))`), or fail with one that a retry of the
/// same batch cures.
async fn settle<T>(
    tx: Tx,
    outcome: Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    match outcome {
        Ok(value) => {
            tx.commit().await?;
            Ok(Ok(value))
        }
        Err(e) => {
            tx.rollback().await?;
            if blames_the_input(&e) {
                Ok(Err(e))
            } else {
                Err(e)
            }
        }
    }
}

/// Whether an error comes from what the events or rechecks hold (a constraint or a value the
/// database refuses, data that cannot be decoded) rather than from the database being unable to
/// work now (connection lost, deadlock, shutdown), which a retry of the same batch cures.
fn blames_the_input(e: &StoreError) -> bool {
    match e {
        StoreError::Corrupt(_) => true,
        StoreError::Database(sqlx::Error::Database(db)) => {
            !matches!(db.kind(), sqlx::error::ErrorKind::Other)
                || db.code().is_some_and(|c| c.starts_with("22"))
        }
        StoreError::Database(sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => true,
        _ => false,
    }
}

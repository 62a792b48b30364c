//! Group commit for the inbox. Request handlers hand their verified events to [`InboxWriter`]; a
//! writer takes every request already waiting (up to a maximum) and stores them in ONE transaction,
//! then answers each request. Full durability (an fsync per commit) is paid once per group instead of
//! once per request, and no request is acknowledged before its events are committed.
//!
//! On SQLite, which serialises writes anyway, the writer is one thread with a connection of its
//! own that calls SQLite directly; on PostgreSQL, a few tasks share the pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::config::IngestSettings;
use crate::store::{
    BackendKind, Ingested, NewInboxEvent, SqliteInboxConnection, Store, StoreError,
};

/// Requests waiting for a writer; beyond this, handlers wait (backpressure) rather than queue more.
const QUEUE_DEPTH: usize = 8192;

struct Job {
    events: Vec<NewInboxEvent>,
    reply: Reply,
}

type Reply = oneshot::Sender<Result<Vec<Ingested>, Arc<StoreError>>>;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the inbox is not accepting events (shutting down)")]
    Closed,
    #[error("the inbox could not store the events")]
    Store(#[source] Arc<StoreError>),
}

/// Handle used by request handlers; cheap to clone.
#[derive(Clone)]
pub struct InboxWriter {
    jobs: mpsc::Sender<Job>,
}

impl InboxWriter {
    /// Start the writer tasks. They run until every `InboxWriter` clone is dropped, after storing
    /// whatever was already queued.
    pub fn start(
        store: Store,
        settings: &IngestSettings,
        stored: Arc<Notify>,
    ) -> (InboxWriter, Vec<JoinHandle<()>>) {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let limits = GroupLimits {
            max_events: settings.max_batch_events.max(1),
            max_wait: Duration::from_micros(settings.max_wait_micros),
        };
        match store.open_sqlite_inbox_connection() {
            Ok(Some(connection)) => {
                let writer = tokio::task::spawn_blocking(move || {
                    write_groups_on_thread(connection, queue, limits, stored)
                });
                return (InboxWriter { jobs }, vec![writer]);
            }
            Ok(None) => {}
            // Rare: the file the pool just opened is unreadable, or lacks the schema (`serve
            // --no-migrate` before `migrate`). The pool path still works, or says why per request.
            Err(e) => {
                tracing::error!(error = ?e, "could not open the inbox writer's SQLite connection; using the pool")
            }
        }
        let queue = Arc::new(Mutex::new(queue));
        let writers = match store.kind() {
            BackendKind::Sqlite => 1,
            BackendKind::Postgres => settings.writers_postgres.max(1),
        };
        let handles = (0..writers)
            .map(|_| {
                tokio::spawn(write_groups(
                    store.clone(),
                    queue.clone(),
                    limits,
                    stored.clone(),
                ))
            })
            .collect();
        (InboxWriter { jobs }, handles)
    }

    /// Store `events` durably; returns per event whether it was new or a duplicate.
    pub async fn append(&self, events: Vec<NewInboxEvent>) -> Result<Vec<Ingested>, AppendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { events, reply })
            .await
            .map_err(|_| AppendError::Closed)?;
        answer
            .await
            .map_err(|_| AppendError::Closed)?
            .map_err(AppendError::Store)
    }
}

#[derive(Clone, Copy)]
struct GroupLimits {
    max_events: usize,
    max_wait: Duration,
}

async fn write_groups(
    store: Store,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    limits: GroupLimits,
    stored: Arc<Notify>,
) {
    loop {
        // Holding the queue lock only while gathering lets another writer gather the next group
        // while this one commits.
        let group = {
            let mut queue = queue.lock().await;
            match gather(&mut queue, limits).await {
                Some(group) => group,
                None => return,
            }
        };
        if commit(&store, group).await {
            stored.notify_one();
        }
    }
}

/// Wait for one job, then take every job already queued (and, with `max_wait`, those arriving
/// shortly after) until the group holds `max_events`. `None` once the channel is closed and empty.
async fn gather(queue: &mut mpsc::Receiver<Job>, limits: GroupLimits) -> Option<Vec<Job>> {
    let first = queue.recv().await?;
    let mut events = first.events.len();
    let mut group = vec![first];
    let deadline = Instant::now() + limits.max_wait;
    while events < limits.max_events {
        let next = match queue.try_recv() {
            Ok(job) => job,
            Err(_) if limits.max_wait.is_zero() => break,
            Err(_) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, queue.recv()).await {
                    Ok(Some(job)) => job,
                    _ => break,
                }
            }
        };
        events += next.events.len();
        group.push(next);
    }
    Some(group)
}

/// The SQLite writer: a blocking loop on its own thread, until every [`InboxWriter`] is dropped.
fn write_groups_on_thread(
    mut connection: SqliteInboxConnection,
    mut queue: mpsc::Receiver<Job>,
    limits: GroupLimits,
    stored: Arc<Notify>,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut events = first.events.len();
        let mut group = vec![first];
        let mut take_waiting = |group: &mut Vec<Job>| {
            while events < limits.max_events {
                let Ok(job) = queue.try_recv() else { break };
                events += job.events.len();
                group.push(job);
            }
            events >= limits.max_events
        };
        let full = take_waiting(&mut group);
        if !full && !limits.max_wait.is_zero() {
            std::thread::sleep(limits.max_wait);
            take_waiting(&mut group);
        }
        let (all, replies) = split_group(group);
        let started = Instant::now();
        let result = connection.append(&all);
        if answer(all.len(), started, result, replies) {
            stored.notify_one();
        }
    }
}

/// The events of a group in one list, and per request how many of them are its own.
type Replies = Vec<(usize, Reply)>;

fn split_group(group: Vec<Job>) -> (Vec<NewInboxEvent>, Replies) {
    let mut all = Vec::with_capacity(group.iter().map(|j| j.events.len()).sum());
    let mut replies = Vec::with_capacity(group.len());
    for job in group {
        replies.push((job.events.len(), job.reply));
        all.extend(job.events);
    }
    (all, replies)
}

/// Store one group and answer every request in it; returns whether the commit succeeded.
async fn commit(store: &Store, group: Vec<Job>) -> bool {
    let (all, replies) = split_group(group);
    let started = Instant::now();
    let result = store.append_inbox(&all).await;
    answer(all.len(), started, result, replies)
}

/// Record the group's metrics and answer each request with its own events' outcomes.
fn answer(
    events: usize,
    started: Instant,
    result: Result<Vec<Ingested>, StoreError>,
    replies: Replies,
) -> bool {
    metrics::histogram!("inbox_group_commit_events").record(events as f64);
    metrics::histogram!("inbox_group_commit_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(outcomes) => {
            let mut rest = outcomes.as_slice();
            for (count, reply) in replies {
                let (mine, tail) = rest.split_at(count);
                rest = tail;
                let _ = reply.send(Ok(mine.to_vec()));
            }
            true
        }
        Err(e) => {
            tracing::error!(error = ?e, events, "inbox commit failed; requests answered 503");
            let e = Arc::new(e);
            for (_, reply) in replies {
                let _ = reply.send(Err(e.clone()));
            }
            false
        }
    }
}

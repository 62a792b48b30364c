//! The delivery worker: claims due CRM records by lease, merges each record's pending property
//! updates into one, sends them in batches (HubSpot ≤ 100 of one object type, Salesforce ≤ 200
//! grouped into ≤ 10 sObject-type chunks per call) under the per-account rate limit, and records
//! each outcome — delivered, retry later, or dead with the CRM's error. No transaction is open
//! during an HTTP call; a worker whose lease ran out cannot complete a record (the store fences
//! every finish).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::limiter::RollingLimiter;
use super::retry::next_delay;
use crate::clock::{Millis, SharedClock};
use crate::config::Settings;
use crate::crm::fields::{referral_fields, ValueKind};
use crate::crm::hubspot::{self, HubSpotClient};
use crate::crm::salesforce::{self, SalesforceClient};
use crate::crm::{http_client, CallError};
use crate::domain::{Crm, EventSource};
use crate::outbox::{CommandKind, CrmCommand};
use crate::store::{ClaimedRecord, DeliveryResult, NewInboxEvent, OutboxRow, Store, StoreError};

const ROWS_PER_RECORD: i64 = 100;
/// When a CRM has no credentials configured, look again this much later.
const NOT_CONFIGURED_RETRY: Millis = 3_600_000;

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Records claimed this round.
    pub records: usize,
    /// CRM API calls made.
    pub calls: usize,
}

#[derive(Clone)]
pub struct OutboxWorker {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    store: Store,
    settings: Arc<Settings>,
    clock: SharedClock,
    hubspot: Option<HubSpotClient>,
    salesforce: Option<SalesforceClient>,
    hubspot_limit: Mutex<RollingLimiter>,
    salesforce_limit: Mutex<RollingLimiter>,
    /// Woken when a read result lands in the inbox.
    inbox_wake: Arc<Notify>,
}

/// One thing to send for a claimed record: the record's first run of property updates (merged),
/// or its first other write. Later rows wait for the next round, which keeps per-record order.
struct Segment {
    head_id: i64,
    /// When this worker's claim on the record ends.
    lease_until: Millis,
    /// The record's previous claim may have reached the CRM (see [`ClaimedRecord::in_doubt`]).
    in_doubt: bool,
    attempts: usize,
    crm: Crm,
    account: String,
    object_type: String,
    object_id: String,
    /// What to send; `Err` when the stored row could not be read (dead-lettered with why).
    kind: CommandKind,
    command: Result<CrmCommand, String>,
    row_ids: Vec<i64>,
}

impl Segment {
    fn is_update(&self) -> bool {
        matches!(self.command, Ok(CrmCommand::UpdateProperties { .. }))
    }

    /// The merged properties of an update (empty for any other command).
    fn properties(&self) -> BTreeMap<String, String> {
        match &self.command {
            Ok(CrmCommand::UpdateProperties { properties }) => properties.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// A property update whose previous attempt may have reached the CRM: until a read settles
    /// that, every retry or deferral keeps the claim so the doubt survives to the next claim.
    fn may_have_landed(&self) -> bool {
        self.in_doubt && self.is_update()
    }
}

impl OutboxWorker {
    pub fn new(
        store: Store,
        settings: Arc<Settings>,
        clock: SharedClock,
        inbox_wake: Arc<Notify>,
    ) -> Self {
        let http = http_client(Duration::from_secs(settings.outbox.request_timeout_secs));
        let hubspot = (!settings.hubspot.access_token.is_empty()).then(|| {
            HubSpotClient::new(
                http.clone(),
                &settings.hubspot.api_base_url,
                settings.hubspot.access_token.clone(),
            )
        });
        let sf = &settings.salesforce;
        let salesforce = (!sf.login_url.is_empty() && !sf.client_id.is_empty()).then(|| {
            let numbers = referral_fields(&sf.fields)
                .into_iter()
                .filter(|f| f.kind == ValueKind::Number)
                .map(|f| f.name.to_string());
            SalesforceClient::new(
                http,
                &sf.login_url,
                &sf.client_id,
                sf.client_secret.clone(),
                &sf.api_version,
            )
            .with_number_fields(numbers)
        });
        let inner = Inner {
            id: format!("outbox-{}", uuid::Uuid::new_v4().simple()),
            hubspot_limit: Mutex::new(RollingLimiter::new(
                settings.outbox.hubspot_requests_per_10s,
                10_000,
            )),
            salesforce_limit: Mutex::new(RollingLimiter::new(
                settings.outbox.salesforce_requests_per_10s,
                10_000,
            )),
            store,
            settings,
            clock,
            hubspot,
            salesforce,
            inbox_wake,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Deliver one round of due records.
    #[tracing::instrument(name = "delivery_round", skip_all, fields(records))]
    pub async fn tick(&self) -> Result<TickReport, StoreError> {
        let me = &self.inner;
        let now = me.clock.now();
        let lease_until = now + me.settings.outbox.lease_secs as Millis * 1000;
        let claimed = me
            .store
            .claim_records(
                &me.id,
                now,
                lease_until,
                i64::from(me.settings.outbox.batch_records),
                ROWS_PER_RECORD,
            )
            .await?;
        tracing::Span::current().record("records", claimed.len());
        let mut report = TickReport {
            records: claimed.len(),
            calls: 0,
        };
        let (updates, singles) = segments(claimed, lease_until);
        for ((crm, account), group) in updates {
            let mut to_send = Vec::with_capacity(group.len());
            for s in group {
                if !s.in_doubt {
                    to_send.push(s);
                    continue;
                }
                let (calls, still_to_send) = self.settle_in_doubt(s).await?;
                report.calls += calls;
                to_send.extend(still_to_send);
            }
            // HubSpot batches are per object type; a Salesforce collection may mix types, but
            // each change of type starts a new chunk and a request may hold at most 10 chunks.
            let (records, types) = match crm {
                Crm::HubSpot => (hubspot::BATCH_LIMIT, 1),
                Crm::Salesforce => (salesforce::BATCH_LIMIT, salesforce::MAX_CHUNKS),
            };
            for call in calls(to_send, records, types) {
                report.calls += self.send_updates(crm, &account, call).await?;
            }
        }
        for s in singles {
            report.calls += self.send_single(s).await?;
        }
        self.update_gauges().await;
        Ok(report)
    }

    /// Run rounds until nothing is claimable now (tests, demo).
    pub async fn drain(&self) -> Result<TickReport, StoreError> {
        let mut total = TickReport::default();
        loop {
            let r = self.tick().await?;
            if r.records == 0 {
                return Ok(total);
            }
            total.records += r.records;
            total.calls += r.calls;
        }
    }

    pub async fn run(self, shutdown: CancellationToken, wake: Arc<Notify>) {
        loop {
            let busy = match self.tick().await {
                Ok(r) => r.records > 0,
                Err(e) => {
                    tracing::error!(error = ?e, "outbox round failed; retrying");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {},
                _ = tokio::time::sleep(Duration::from_millis(250)) => {},
            }
        }
    }

    /// `Some(now)` when a call started now could outlast the claim on `segments` (a round that
    /// claimed many records can run long when the CRM is slow). Another worker may take a record
    /// whose claim ran out, so those are handed back unsent instead: a write sent after that
    /// could land twice, or after a newer one.
    fn lease_runs_out(&self, segments: &[Segment]) -> Option<Millis> {
        let now = self.inner.clock.now();
        let call_limit = self.inner.settings.outbox.request_timeout_secs as Millis * 1000;
        segments
            .iter()
            .any(|s| now + call_limit >= s.lease_until)
            .then_some(now)
    }

    fn acquire(&self, crm: Crm, account: &str, now: Millis) -> Result<(), Millis> {
        let limiter = match crm {
            Crm::HubSpot => &self.inner.hubspot_limit,
            Crm::Salesforce => &self.inner.salesforce_limit,
        };
        limiter
            .lock()
            .expect("limiter lock")
            .try_acquire(&format!("{crm}:{account}"), now)
    }

    /// Send merged property updates for up to one batch of records; returns API calls made.
    #[tracing::instrument(name = "crm_write", skip_all, fields(crm = crm.as_str(), account = account, records = chunk.len()))]
    async fn send_updates(
        &self,
        crm: Crm,
        account: &str,
        chunk: Vec<Segment>,
    ) -> Result<usize, StoreError> {
        if let Some(now) = self.lease_runs_out(&chunk) {
            return self.defer_all(chunk, now).await.map(|_| 0);
        }
        let now = self.inner.clock.now();
        if let Err(free_at) = self.acquire(crm, account, now) {
            return self.defer_all(chunk, free_at).await.map(|_| 0);
        }
        let result = match crm {
            Crm::HubSpot => match &self.inner.hubspot {
                None => return self.defer_unconfigured(chunk, now).await,
                Some(client) => {
                    let inputs: Vec<(String, hubspot::Properties)> = chunk
                        .iter()
                        .map(|s| (s.object_id.clone(), s.properties()))
                        .collect();
                    if inputs.len() == 1 {
                        client
                            .update(&chunk[0].object_type, &inputs[0].0, &inputs[0].1)
                            .await
                            .map(|_| BTreeMap::new())
                    } else {
                        client.batch_update(&chunk[0].object_type, &inputs).await
                    }
                }
            },
            Crm::Salesforce => match &self.inner.salesforce {
                None => return self.defer_unconfigured(chunk, now).await,
                Some(client) => {
                    if chunk.len() == 1 {
                        let s = &chunk[0];
                        client
                            .update(&s.object_type, &s.object_id, &s.properties())
                            .await
                            .map(|_| BTreeMap::new())
                    } else {
                        let records: Vec<(String, String, salesforce::Fields)> = chunk
                            .iter()
                            .map(|s| (s.object_type.clone(), s.object_id.clone(), s.properties()))
                            .collect();
                        client.composite_update(&records).await
                    }
                }
            },
        };
        match result {
            Ok(failed) => {
                let mut delivered = Vec::with_capacity(chunk.len());
                for s in chunk {
                    match failed.get(&s.object_id).cloned() {
                        Some(outcome) => self.finish(s, Some(outcome)).await?,
                        None => delivered.push((s.head_id, s.row_ids)),
                    }
                }
                self.finish_delivered(&delivered).await?;
                Ok(1)
            }
            // A batch refused as a whole may hide one bad record: send them one by one so only
            // that record is dead-lettered.
            Err(CallError::Permanent { .. }) if chunk.len() > 1 => {
                let mut calls = 1;
                for s in chunk {
                    calls += Box::pin(self.send_updates(crm, account, vec![s])).await?;
                }
                Ok(calls)
            }
            Err(e) => {
                for s in chunk {
                    self.finish(s, Some(e.clone())).await?;
                }
                Ok(1)
            }
        }
    }

    /// A merged property update whose previous attempt may have reached the CRM (its worker died
    /// or lost its lease mid-call): read the record, and when it already holds every value, record
    /// the rows as delivered instead of writing them again. Returns the calls made and the segment
    /// when it still has to be sent. Notes and Platform Events cannot be checked this way; they stay
    /// at-least-once.
    async fn settle_in_doubt(&self, s: Segment) -> Result<(usize, Option<Segment>), StoreError> {
        if let Some(now) = self.lease_runs_out(std::slice::from_ref(&s)) {
            return self.defer_all(vec![s], now).await.map(|_| (0, None));
        }
        let me = &self.inner;
        let now = me.clock.now();
        if let Err(free_at) = self.acquire(s.crm, &s.account, now) {
            // Deferring keeps the claim, and so the doubt, until the limiter has room.
            self.defer_all(vec![s], free_at).await?;
            return Ok((0, None));
        }
        let wanted = s.properties();
        let names: Vec<&str> = wanted.keys().map(String::as_str).collect();
        let current = match (s.crm, &me.hubspot, &me.salesforce) {
            (Crm::HubSpot, Some(client), _) => client
                .read(&s.object_type, &s.object_id, &names)
                .await
                .map(|record| record.get("properties").cloned().unwrap_or(Value::Null)),
            (Crm::Salesforce, _, Some(client)) => {
                client.read(&s.object_type, &s.object_id, &names).await
            }
            // Not configured: the normal path defers it.
            _ => return Ok((0, Some(s))),
        };
        let crm = s.crm.as_str();
        match current {
            Ok(current) if holds_all(&current, &wanted) => {
                metrics::counter!("outbox_in_doubt_total", "crm" => crm, "outcome" => "already_applied")
                    .increment(1);
                self.finish(s, None).await?;
                Ok((1, None))
            }
            // Settled: the write did not land, so from here on it is an ordinary write (a deferral
            // must not bring the doubt back, or each round would spend its call on the read).
            Ok(_) => {
                metrics::counter!("outbox_in_doubt_total", "crm" => crm, "outcome" => "resent")
                    .increment(1);
                Ok((
                    1,
                    Some(Segment {
                        in_doubt: false,
                        ..s
                    }),
                ))
            }
            // The CRM could not answer now (rate limit, outage): ask again later, still in doubt
            // (a retry of a segment in doubt keeps its claim). Writing instead would turn a 429
            // here into a repeat once the write's own retry cleared the doubt.
            Err(e @ CallError::Retry { .. }) => {
                self.finish(s, Some(e)).await?;
                Ok((1, None))
            }
            // The record cannot be read (gone, or no access): the write's own answer will say more.
            Err(CallError::Permanent { message, .. }) => {
                tracing::warn!(crm = %crm, object = %s.object_id, %message, "could not check a write in doubt; sending it again");
                metrics::counter!("outbox_in_doubt_total", "crm" => crm, "outcome" => "unchecked")
                    .increment(1);
                Ok((
                    1,
                    Some(Segment {
                        in_doubt: false,
                        ..s
                    }),
                ))
            }
        }
    }

    /// A note, a Platform Event or a read: one call per row.
    #[tracing::instrument(
        name = "crm_call",
        skip_all,
        fields(crm = %s.crm, record = %format_args!("{}:{}", s.object_type, s.object_id), kind = %s.kind, attempt = s.attempts)
    )]
    async fn send_single(&self, s: Segment) -> Result<usize, StoreError> {
        let command = match &s.command {
            Ok(command) => command.clone(),
            Err(why) => {
                let outcome = CallError::Permanent {
                    status: None,
                    message: why.clone(),
                };
                self.finish(s, Some(outcome)).await?;
                return Ok(0);
            }
        };
        if let Some(now) = self.lease_runs_out(std::slice::from_ref(&s)) {
            return self.defer_all(vec![s], now).await.map(|_| 0);
        }
        let me = &self.inner;
        let now = me.clock.now();
        if let Err(free_at) = self.acquire(s.crm, &s.account, now) {
            return self.defer_all(vec![s], free_at).await.map(|_| 0);
        }
        let outcome = match (s.crm, command, &me.hubspot, &me.salesforce) {
            (Crm::HubSpot, CrmCommand::CreateNote { body, timestamp }, Some(client), _) => client
                .create_note(&s.object_id, &body, timestamp)
                .await
                .err(),
            (Crm::HubSpot, CrmCommand::ReadRecord {}, Some(client), _) => {
                self.read_hubspot(client, &s, now).await.err()
            }
            (Crm::Salesforce, CrmCommand::PublishEvent { event, fields }, _, Some(client)) => {
                client.publish_event(&event, &fields).await.err()
            }
            (Crm::HubSpot, _, None, _) | (Crm::Salesforce, _, _, None) => {
                return self.defer_unconfigured(vec![s], now).await;
            }
            (crm, command, _, _) => Some(CallError::Permanent {
                status: None,
                message: format!("no delivery for {} to {crm}", command.kind()),
            }),
        };
        self.finish(s, outcome).await?;
        Ok(1)
    }

    /// Read a HubSpot record and hand the answer to the inbox processor as a snapshot event.
    async fn read_hubspot(
        &self,
        client: &HubSpotClient,
        s: &Segment,
        now: Millis,
    ) -> Result<(), CallError> {
        let me = &self.inner;
        let guarded = me.settings.hubspot.properties.referral_source.as_str();
        let properties: Vec<&str> = match s.object_type.as_str() {
            "deal" => vec![
                "dealname",
                "amount",
                "deal_currency_code",
                "pipeline",
                "dealstage",
                "createdate",
                crate::processing::decode::HUBSPOT_DEAL_SOURCE,
                guarded,
            ],
            _ => vec!["email", "createdate", guarded],
        };
        let mut answer = client
            .read(&s.object_type, &s.object_id, &properties)
            .await?;
        if let Some(obj) = answer.as_object_mut() {
            obj.insert("portalId".into(), json!(s.account));
        }
        let object_key = format!("hubspot:{}:{}", s.object_type, s.object_id);
        let event = NewInboxEvent {
            partition_no: crate::ingest::partition_of(&object_key),
            source: EventSource::HubSpotApi,
            dedupe_key: format!("read:{}", s.head_id),
            event_type: format!("{}.snapshot", s.object_type),
            object_key: Some(object_key),
            occurred_at: Some(now),
            received_at: now,
            meta: r#"{"via":"api_read"}"#.into(),
            payload: answer.to_string(),
        };
        me.store
            .record_read_result(&event)
            .await
            .map_err(|e| CallError::Retry {
                status: None,
                message: format!("could not store the read result: {e}"),
                retry_after: None,
            })?;
        me.inbox_wake.notify_one();
        Ok(())
    }

    /// Put `segments` back for later: their CRM has no client configured, so none was sent.
    async fn defer_unconfigured(
        &self,
        segments: Vec<Segment>,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.defer_all(segments, now + NOT_CONFIGURED_RETRY)
            .await
            .map(|_| 0)
    }

    async fn defer_all(&self, segments: Vec<Segment>, retry_at: Millis) -> Result<(), StoreError> {
        for s in segments {
            self.inner
                .store
                .finish_delivery(
                    &self.inner.id,
                    s.head_id,
                    &DeliveryResult::Defer {
                        retry_at,
                        keep_claim: s.may_have_landed(),
                    },
                    self.inner.clock.now(),
                )
                .await?;
        }
        Ok(())
    }

    async fn finish(&self, s: Segment, outcome: Option<CallError>) -> Result<(), StoreError> {
        let me = &self.inner;
        let now = me.clock.now();
        let result = match outcome {
            None => DeliveryResult::Delivered { row_ids: s.row_ids },
            Some(CallError::Retry {
                status,
                message,
                retry_after,
            }) => {
                match next_delay(
                    &me.settings.outbox.retry_schedule_secs,
                    s.attempts,
                    retry_after,
                    jitter_seed(),
                ) {
                    Some(delay) => {
                        metrics::counter!("outbox_retries_total", "crm" => s.crm.as_str())
                            .increment(1);
                        DeliveryResult::Retry {
                            // No status (the call timed out or broke after it may have been
                            // sent) or a gateway's 502/504: the CRM may have carried it out.
                            keep_claim: s.may_have_landed()
                                || (s.is_update()
                                    && matches!(status, None | Some(502) | Some(504))),
                            status: status.map(i64::from),
                            error: message,
                            retry_at: now + delay,
                        }
                    }
                    None => {
                        metrics::counter!("outbox_dead_total", "crm" => s.crm.as_str())
                            .increment(1);
                        DeliveryResult::Dead {
                            row_ids: s.row_ids,
                            status: status.map(i64::from),
                            error: format!("gave up after {} attempts: {message}", s.attempts + 1),
                        }
                    }
                }
            }
            Some(CallError::Permanent { status, message }) => {
                metrics::counter!("outbox_dead_total", "crm" => s.crm.as_str()).increment(1);
                tracing::warn!(crm = %s.crm, object = %s.object_id, %message, "CRM refused a write; dead-lettered");
                DeliveryResult::Dead {
                    row_ids: s.row_ids,
                    status: status.map(i64::from),
                    error: message,
                }
            }
        };
        if !me
            .store
            .finish_delivery(&me.id, s.head_id, &result, now)
            .await?
        {
            tracing::warn!(record = %s.object_id, "lease lost before finishing; another worker owns the record");
        }
        Ok(())
    }

    /// [`Self::finish`] for many records the CRM took, in one transaction.
    async fn finish_delivered(&self, delivered: &[(i64, Vec<i64>)]) -> Result<(), StoreError> {
        let me = &self.inner;
        for head in me
            .store
            .finish_delivered(&me.id, delivered, me.clock.now())
            .await?
        {
            tracing::warn!(
                head,
                "lease lost before finishing; another worker owns the record"
            );
        }
        Ok(())
    }

    async fn update_gauges(&self) {
        if let Ok((depth, oldest)) = self
            .inner
            .store
            .outbox_backlog(self.inner.clock.now())
            .await
        {
            metrics::gauge!("outbox_pending").set(depth as f64);
            metrics::gauge!("outbox_oldest_pending_seconds").set(oldest as f64 / 1000.0);
        }
    }
}

/// A fresh seed for the retry jitter, so replicas that failed together retry apart.
fn jitter_seed() -> u64 {
    u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

/// Pack segments into calls of at most `max_records` records and `max_types` object types,
/// grouped by type (each record appears once, so their order across records is free).
fn calls(mut segments: Vec<Segment>, max_records: usize, max_types: usize) -> Vec<Vec<Segment>> {
    // Stable: within a type, records keep their claim order.
    segments.sort_by(|a, b| a.object_type.cmp(&b.object_type));
    let mut calls: Vec<Vec<Segment>> = Vec::new();
    let mut types = 0;
    for s in segments {
        let new_type = calls
            .last()
            .and_then(|call| call.last())
            .is_none_or(|last| last.object_type != s.object_type);
        let full = calls
            .last()
            .is_none_or(|call| call.len() == max_records || (new_type && types == max_types));
        if full {
            calls.push(Vec::new());
            types = 0;
        }
        if full || new_type {
            types += 1;
        }
        calls.last_mut().expect("a call was just started").push(s);
    }
    calls
}

/// Split claimed records into merged property updates (grouped by CRM account) and single writes.
#[allow(clippy::type_complexity)]
fn segments(
    claimed: Vec<ClaimedRecord>,
    lease_until: Millis,
) -> (BTreeMap<(Crm, String), Vec<Segment>>, Vec<Segment>) {
    let mut updates: BTreeMap<(Crm, String), Vec<Segment>> = BTreeMap::new();
    let mut singles = Vec::new();
    for record in claimed {
        let Some(head) = record.rows.first() else {
            continue;
        };
        // A count that cannot be one is stored data this code did not write: the row is
        // dead-lettered with why, like a command that cannot be read.
        let attempts = usize::try_from(head.attempts)
            .map_err(|_| format!("stored attempt count {} is not a count", head.attempts));
        let base = |row: &OutboxRow| Segment {
            head_id: record.head_id,
            lease_until,
            in_doubt: record.in_doubt,
            attempts: *attempts.as_ref().unwrap_or(&0),
            crm: row.crm,
            account: row.account.clone(),
            object_type: row.object_type.clone(),
            object_id: row.object_id.clone(),
            kind: row.kind,
            command: match &attempts {
                Ok(_) => row.command().map_err(|e| e.to_string()),
                Err(why) => Err(why.clone()),
            },
            row_ids: vec![row.id],
        };
        if head.kind != CommandKind::UpdateProperties {
            singles.push(base(head));
            continue;
        }
        // Merge the run of consecutive property updates; later values win. A row that cannot
        // be read ends the run and goes out alone (to be dead-lettered with why).
        let mut merged = BTreeMap::new();
        let mut row_ids = Vec::new();
        for row in &record.rows {
            match row.command() {
                Ok(CrmCommand::UpdateProperties { properties }) => merged.extend(properties),
                _ => break,
            }
            row_ids.push(row.id);
        }
        if row_ids.is_empty() || attempts.is_err() {
            singles.push(base(head));
            continue;
        }
        let mut segment = base(head);
        segment.command = Ok(CrmCommand::update(merged));
        segment.row_ids = row_ids;
        updates
            .entry((head.crm, head.account.clone()))
            .or_default()
            .push(segment);
    }
    (updates, singles)
}

/// Whether a record as the CRM returned it (`current`: property or field name → value) already
/// holds every wanted value. CRMs answer numbers as numbers or reformatted text ("50000.0" for
/// "50000.00") and empty values as null, so numbers compare as decimals and null as "".
fn holds_all(current: &Value, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(name, want)| {
        let have = match current.get(name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        };
        have == *want
            || (plain_number(&have)
                && plain_number(want)
                && matches!(
                    (Decimal::from_str(&have), Decimal::from_str(want)),
                    (Ok(a), Ok(b)) if a == b
                ))
    })
}

/// A number written the plain way (`-12`, `0.5`, `50000.00`): no sign but `-`, no leading zero,
/// no separators. Only such text compares as a decimal, so "02139" (a zip code) never matches
/// "2139": a false match would record a write as delivered that never landed.
fn plain_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && (whole == "0" || !whole.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn segment(object_type: &str, n: usize) -> Segment {
        Segment {
            head_id: n as i64,
            lease_until: 0,
            in_doubt: false,
            attempts: 0,
            crm: Crm::Salesforce,
            account: String::new(),
            object_type: object_type.into(),
            object_id: n.to_string(),
            kind: CommandKind::UpdateProperties,
            command: Ok(CrmCommand::update(BTreeMap::new())),
            row_ids: vec![n as i64],
        }
    }

    fn shape(calls: &[Vec<Segment>]) -> Vec<Vec<String>> {
        calls
            .iter()
            .map(|call| call.iter().map(|s| s.object_type.clone()).collect())
            .collect()
    }

    #[test]
    fn calls_group_records_by_type_within_the_record_and_type_limits() {
        let alternating: Vec<Segment> = (0..6)
            .map(|n| segment(if n % 2 == 0 { "Contact" } else { "Opportunity" }, n))
            .collect();
        let packed = calls(alternating, 200, 10);
        assert_eq!(
            shape(&packed),
            [[
                "Contact",
                "Contact",
                "Contact",
                "Opportunity",
                "Opportunity",
                "Opportunity"
            ]]
        );
        // Within a type, records keep their order.
        let ids: Vec<&str> = packed[0].iter().map(|s| s.object_id.as_str()).collect();
        assert_eq!(ids, ["0", "2", "4", "1", "3", "5"]);

        // Twelve types of one record each: ten chunks, then the rest.
        let many: Vec<Segment> = (0..12)
            .map(|n| segment(&format!("T{n:02}__c"), n))
            .collect();
        let sizes: Vec<usize> = calls(many, 200, 10).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 2]);

        let one_type: Vec<Segment> = (0..250).map(|n| segment("Contact", n)).collect();
        let sizes: Vec<usize> = calls(one_type, 200, 10).iter().map(Vec::len).collect();
        assert_eq!(sizes, [200, 50]);

        // HubSpot: one object type per batch.
        let mixed: Vec<Segment> = (0..3)
            .map(|n| segment(if n == 1 { "deal" } else { "contact" }, n))
            .collect();
        assert_eq!(
            shape(&calls(mixed, 100, 1)),
            [vec!["contact", "contact"], vec!["deal"]]
        );
    }

    #[test]
    fn a_record_holding_every_value_needs_no_write() {
        let current =
            json!({"referral_source": "partner", "referral_code": "ACME-7", "other": "x"});
        assert!(holds_all(
            &current,
            &wanted(&[("referral_source", "partner"), ("referral_code", "ACME-7")])
        ));
    }

    #[test]
    fn one_different_or_missing_value_means_the_write_did_not_land() {
        let current = json!({"referral_source": "partner", "referral_code": "ACME-6"});
        assert!(!holds_all(
            &current,
            &wanted(&[("referral_source", "partner"), ("referral_code", "ACME-7")])
        ));
        assert!(!holds_all(
            &json!({"referral_source": "partner"}),
            &wanted(&[("referral_source", "partner"), ("referral_code", "ACME-7")])
        ));
    }

    #[test]
    fn only_plain_numbers_compare_as_decimals() {
        for (have, want) in [
            ("2139", "02139"),
            ("1000", "1_000"),
            ("5", "+5"),
            ("7", "7."),
        ] {
            assert!(
                !holds_all(&json!({ "p": have }), &wanted(&[("p", want)])),
                "{have:?} must not match {want:?}"
            );
        }
        assert!(holds_all(&json!({"p": "-0.50"}), &wanted(&[("p", "-0.5")])));
    }

    #[test]
    fn numbers_compare_as_decimals_and_null_as_empty() {
        let current =
            json!({"Referral_Reward_Amount__c": 50000.0, "amount": "1200.50", "note": null});
        assert!(holds_all(
            &current,
            &wanted(&[
                ("Referral_Reward_Amount__c", "50000.00"),
                ("amount", "1200.5"),
                ("note", "")
            ])
        ));
        assert!(!holds_all(
            &current,
            &wanted(&[("Referral_Reward_Amount__c", "50000.01")])
        ));
    }
}

//! What must hold once the service has settled: the inbox holds every acknowledged event exactly
//! once and processed all of them, one reward per deal and beneficiary, every linked record's
//! referral context in the CRM, and per-record write order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crm_sandbox::{RecordedWrite, SandboxState};
use referral_sync::config::Secret;
use referral_sync::store::{InboxStatus, Store};

use crate::support::default_settings;
use crate::traffic::{EventKey, Story, Traffic};

/// Items quoted in a failure message; the counts are always complete.
const SHOWN: usize = 10;

pub async fn connect(database_url: &str) -> Store {
    let mut settings = default_settings();
    settings.database.url = Secret::new(database_url.to_string());
    Store::connect(&settings.database)
        .await
        .expect("connect to the service's database")
}

/// Inbox and outbox counts by status, when nothing was pending any more.
pub struct Settled {
    pub inbox: BTreeMap<String, i64>,
    pub outbox: BTreeMap<String, usize>,
    pub waited: Duration,
}

/// Poll until no inbox event and no outbox row is pending, or panic at `deadline` with what is
/// still pending and why.
pub async fn wait_until_settled(store: &Store, deadline: Instant) -> Settled {
    let start = Instant::now();
    for _ in 0..100_000 {
        let inbox: BTreeMap<String, i64> = store
            .inbox_status_counts()
            .await
            .expect("inbox counts")
            .into_iter()
            .collect();
        // Read in the order work flows: events queue rechecks in the transaction that applies
        // them, rechecks queue CRM writes in theirs, and CRM reads land back in the inbox — so
        // the inbox and the queue are read again after the outbox.
        let (rechecks, _) = store.reconcile_backlog().await.expect("reconcile queue");
        let rows = store.outbox_rows(None).await.expect("outbox rows");
        let pending_inbox = inbox.get("pending").copied().unwrap_or(0);
        let pending_rows: Vec<_> = rows
            .iter()
            .filter(|r| r.status.as_str() == "pending")
            .collect();
        let still_quiet = || async {
            let (rechecks, _) = store.reconcile_backlog().await.expect("reconcile queue");
            let pending = store.inbox_backlog().await.expect("inbox backlog").0;
            rechecks == 0 && pending == 0
        };
        if pending_inbox == 0 && rechecks == 0 && pending_rows.is_empty() && still_quiet().await {
            let mut outbox = BTreeMap::new();
            for r in &rows {
                *outbox.entry(r.status.to_string()).or_default() += 1;
            }
            return Settled {
                inbox,
                outbox,
                waited: start.elapsed(),
            };
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = pending_rows
                .iter()
                .take(SHOWN)
                .map(|r| {
                    format!(
                        "#{} {} {}/{} {} attempts={} last_status={:?} last_error={:?} next_attempt_at={}",
                        r.id, r.crm, r.object_type, r.object_id, r.kind, r.attempts,
                        r.last_status, r.last_error, r.next_attempt_at
                    )
                })
                .collect();
            panic!(
                "not settled after {:?}: {pending_inbox} inbox events, {rechecks} rechecks and {} \
                 outbox rows still pending (inbox by status {inbox:?}); first pending rows:\n{}",
                start.elapsed(),
                pending_rows.len(),
                shown.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!("the deadline ends the loop first")
}

/// (a) every acknowledged event is in the inbox exactly once, and nothing else is; (b) every
/// stored event was processed or ignored. Returns the number of stored events.
pub async fn inbox_holds_each_acknowledged_event_once(store: &Store, traffic: &Traffic) -> usize {
    let events = store
        .list_inbox(None, 10_000_000)
        .await
        .expect("list the inbox");
    let mut stored: BTreeMap<EventKey, Vec<i64>> = BTreeMap::new();
    for e in &events {
        stored
            .entry((e.event.source.to_string(), e.event.dedupe_key.clone()))
            .or_default()
            .push(e.id);
    }
    let missing: Vec<&EventKey> = traffic
        .acked
        .keys()
        .filter(|k| !stored.contains_key(*k))
        .collect();
    let repeated: Vec<(&EventKey, &Vec<i64>)> =
        stored.iter().filter(|(_, ids)| ids.len() > 1).collect();
    let unexpected: Vec<&EventKey> = stored
        .keys()
        .filter(|k| !traffic.acked.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && unexpected.is_empty(),
        "inbox vs acknowledged events ({} acknowledged, {} stored): {} acknowledged but missing {:?}; \
         {} stored more than once {:?}; {} stored but never sent {:?}",
        traffic.acked.len(),
        events.len(),
        missing.len(),
        first(&missing),
        repeated.len(),
        first(&repeated),
        unexpected.len(),
        first(&unexpected),
    );

    let unfinished: Vec<String> = events
        .iter()
        .filter(|e| !matches!(e.status, InboxStatus::Processed | InboxStatus::Ignored))
        .map(|e| {
            format!(
                "#{} {} {} {} {:?} ({:?}, {} attempts)",
                e.id,
                e.event.source,
                e.event.dedupe_key,
                e.event.event_type,
                e.status,
                e.status_reason,
                e.attempts
            )
        })
        .collect();
    assert!(
        unfinished.is_empty(),
        "{} of {} inbox events are neither processed nor ignored: {:#?}",
        unfinished.len(),
        events.len(),
        first(&unfinished)
    );
    events.len()
}

/// (c) exactly one reward per (deal, beneficiary), and a referrer and a referee reward for every
/// won deal (the US program is two-sided). Returns the rewards' count.
pub async fn one_reward_per_deal_and_beneficiary(store: &Store, stories: &[Story]) -> usize {
    let rewards = store.rewards(None, 1_000_000).await.expect("rewards");
    let mut by_key: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in &rewards {
        by_key
            .entry((r.line.deal_id.clone(), r.line.beneficiary.to_string()))
            .or_default()
            .push(r.id.clone());
    }
    let doubled: Vec<_> = by_key.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} (deal, beneficiary) pairs have more than one reward, of {} rewards: {:?}",
        doubled.len(),
        rewards.len(),
        first(&doubled)
    );
    let expected: BTreeSet<&str> = ["referee", "referrer"].into();
    let without: Vec<(String, BTreeSet<&str>)> = stories
        .iter()
        .filter_map(|s| {
            let deal = s.deal();
            let got: BTreeSet<&str> = rewards
                .iter()
                .filter(|r| r.line.deal_id == deal)
                .map(|r| r.line.beneficiary.as_str())
                .collect();
            (got != expected).then_some((deal, got))
        })
        .collect();
    assert!(
        without.is_empty(),
        "{} of {} won deals lack a referrer and a referee reward (deal, beneficiaries found): {:?}",
        without.len(),
        stories.len(),
        first(&without)
    );
    rewards.len()
}

/// (d) every linked contact and deal carries its referral context in the CRM, and each deal its
/// referrer reward's status.
pub async fn every_record_has_its_context(store: &Store, crm: &SandboxState, stories: &[Story]) {
    let rewards = store.rewards(None, 1_000_000).await.expect("rewards");
    let mut wrong = Vec::new();
    for s in stories {
        let first_touch = s.first_touch_at.to_string();
        let context = [
            ("referral_source", "link".to_string()),
            ("referral_code", s.referral_code()),
            ("referral_market", "US".to_string()),
            ("referral_first_touch_at", first_touch),
        ];
        let reward_status = rewards
            .iter()
            .find(|r| r.line.deal_id == s.deal() && r.line.beneficiary.as_str() == "referrer")
            .map(|r| r.line.status.to_string());
        for (object_type, id) in [("contacts", s.contact()), ("deals", s.deal())] {
            let Some(props) = crm.hubspot_object(object_type, &id) else {
                wrong.push(format!("{object_type}/{id}: never written"));
                continue;
            };
            let mut expected = context.to_vec();
            if object_type == "deals" {
                expected.push((
                    "referral_reward_status",
                    reward_status.clone().unwrap_or_default(),
                ));
            }
            for (name, value) in expected {
                let got = props.get(name).map(String::as_str);
                if got != Some(value.as_str()) {
                    wrong.push(format!(
                        "{object_type}/{id}: {name} = {got:?}, expected {value:?}"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong or missing values on {} stories' contacts and deals: {:#?}",
        wrong.len(),
        stories.len(),
        first(&wrong)
    );
}

/// What the CRM's write journal says about delivery.
pub struct WriteReport {
    pub writes: usize,
    pub records: usize,
    /// Writes whose properties equal an earlier write's to the same record (at-least-once resends).
    pub exact_repeats: usize,
    pub repeated_records: Vec<String>,
    /// CRM API answers by status (429s show a restarted process's rate limiter starting empty).
    pub requests_by_status: BTreeMap<u16, usize>,
}

/// (e) per-record order: for each record and property, once a value has been replaced by another,
/// it never comes back; and no write reached the CRM twice (a record whose delivery a kill cut
/// short is read back before it is sent again).
pub fn writes_kept_record_order_and_none_repeated(crm: &SandboxState) -> WriteReport {
    let writes = crm.writes();
    let mut by_record: BTreeMap<String, Vec<&RecordedWrite>> = BTreeMap::new();
    for w in &writes {
        by_record
            .entry(format!("{:?}:{}/{}", w.crm, w.object_type, w.id))
            .or_default()
            .push(w);
    }
    let mut exact_repeats = 0;
    let mut repeated_records = Vec::new();
    let mut out_of_order = Vec::new();
    for (record, list) in &by_record {
        let mut repeats_here = 0;
        for (i, w) in list.iter().enumerate() {
            if list[..i]
                .iter()
                .any(|earlier| earlier.properties == w.properties)
            {
                repeats_here += 1;
            }
        }
        if repeats_here > 0 {
            exact_repeats += repeats_here;
            repeated_records.push(format!("{record} ×{repeats_here}"));
        }
        let mut history: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for w in list {
            for (name, value) in &w.properties {
                let seen = history.entry(name).or_default();
                if seen.last() != Some(&value.as_str()) {
                    seen.push(value);
                }
            }
        }
        for (name, values) in history {
            let distinct: BTreeSet<&&str> = values.iter().collect();
            if distinct.len() != values.len() {
                out_of_order.push(format!("{record} {name}: {values:?}"));
            }
        }
    }
    assert!(
        out_of_order.is_empty(),
        "{} record properties got an older value back after a newer one (values in order of \
         application): {:#?}",
        out_of_order.len(),
        first(&out_of_order)
    );
    assert_eq!(
        exact_repeats, 0,
        "property writes that reached the CRM twice: {repeated_records:?}"
    );
    let mut requests_by_status = BTreeMap::new();
    for r in crm.requests() {
        *requests_by_status.entry(r.status).or_default() += 1;
    }
    WriteReport {
        requests_by_status,
        writes: writes.len(),
        records: by_record.len(),
        exact_repeats,
        repeated_records,
    }
}

fn first<T>(items: &[T]) -> &[T] {
    &items[..items.len().min(SHOWN)]
}

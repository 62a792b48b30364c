//! The second step of processing: the derived state — which referral each CRM record is linked
//! to (with its frozen attribution copy), the referrals' qualified/won milestones, rewards, and
//! the tamper guard — brought in line with the committed facts, for the subjects the reconcile
//! queue names. It runs one round at a time per deployment (a lock on PostgreSQL, the single
//! writer on SQLite), so links, tier counts and the one-reward rule have one writer, whichever
//! partitions the facts came from.
//!
//! The rules, all stated on the current facts, so applying them again changes nothing:
//! - a person takes the earliest first touch among the one it carries, its email's referral and
//!   the records merged into it;
//! - a deal (unless deleted) takes the earliest first touch among the one it carries, its live
//!   associated people's and its account's people's, and the deals merged into it;
//! - a linked deal's referral gets `qualified_at`/`won_at` from the deal's stage history, and its
//!   rewards follow the deal's current stage ([`crate::rewards::engine::on_deal_stage`]);
//! - a referred customer's paid invoice has its recurring line, and each refund of it its
//!   adjustment ([`crate::rewards::engine::on_invoice`]), whichever arrived first;
//! - a linked record whose CRM shows another referral source than recorded gets it restored;
//! - advocacy moments are decided ([`super::moments`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::moments;
use crate::attribution::writeback;
use crate::clock::{Millis, MINUTE};
use crate::config::Settings;
use crate::domain::stage::CanonicalStage;
use crate::domain::{Crm, RecordKind};
use crate::rewards::engine as rewards;
use crate::store::{
    Attribution, AuditRecord, CrmRecord, GuardDetail, Invoice, InvoiceReferral, LinkedFacts,
    MilestoneFill, NewOutbox, NewRecheck, Recheck, RecheckKind, RecordKey, RecordLink, Referral,
    Refund, StoreError, Tx,
};

/// What one round did.
#[derive(Debug, Default)]
pub(super) struct Reconciled {
    /// Rechecks taken off the queue.
    pub rechecks: usize,
    /// CRM writes queued (the outbox worker should look).
    pub queued_writes: bool,
    /// Deals and invoices whose rewards could not be settled, with the error (queued again for
    /// later).
    pub failures: Vec<(NewRecheck, String)>,
}

/// After a failure, a deal's recheck waits this long before it is tried again.
const RETRY_AFTER: Millis = MINUTE;

/// Bring the derived state in line for `rechecks`, then delete them, all in `tx`.
pub(super) async fn round(
    tx: &mut Tx,
    settings: &Settings,
    rechecks: &[Recheck],
    now: Millis,
) -> Result<Reconciled, StoreError> {
    let mut emails = BTreeSet::new();
    let mut subjects = BTreeSet::new();
    let mut invoices = BTreeSet::new();
    let mut guards = Vec::new();
    let mut moment_emails = BTreeSet::new();
    let mut won = BTreeSet::new();
    for r in rechecks {
        match r.kind()? {
            RecheckKind::Email => {
                emails.insert(r.subject.clone());
            }
            RecheckKind::Record => {
                subjects.insert(parse_subject(&r.subject)?);
            }
            RecheckKind::Guard => {
                let key = parse_subject(&r.subject)?;
                let detail: GuardDetail =
                    serde_json::from_str(r.detail.as_deref().unwrap_or_default()).map_err(|e| {
                        StoreError::Corrupt(format!("guard recheck {} detail: {e}", r.id))
                    })?;
                subjects.insert(key.clone());
                guards.push((key, detail));
            }
            RecheckKind::Invoice => {
                invoices.insert(r.subject.clone());
            }
            RecheckKind::Moment => {
                moment_emails.insert(r.subject.clone());
            }
            RecheckKind::Won => {
                won.insert(parse_subject(&r.subject)?);
            }
        }
    }
    let mut state = State::new(settings, now);
    state.load_people_by_email(tx, &emails).await?;
    state.load_records(tx, &subjects).await?;
    let people: BTreeSet<RecordKey> = state
        .records
        .values()
        .filter(|r| kind(r) == Some(RecordKind::Person))
        .filter(|r| {
            emails.contains(r.email.as_deref().unwrap_or_default()) || subjects.contains(&r.key())
        })
        .map(CrmRecord::key)
        .collect();
    let linked_people = state.link_people(tx, &people).await?;
    let mut deals: BTreeSet<RecordKey> = subjects
        .iter()
        .filter(|k| kind_of_key(k) == Some(RecordKind::Deal))
        .cloned()
        .collect();
    deals.extend(state.deals_of(tx, &linked_people).await?);
    let settled = state.link_deals(tx, &deals).await?;
    state.guard(tx, &guards).await?;
    let changed_meanwhile = state.write_links(tx).await?;
    state.milestones(tx, &settled).await?;
    state.context_writes(tx).await?;
    state.write_audit_and_outbox(tx).await?;
    let asks = moments::settle(tx, settings, moment_emails, &won, now).await?;
    tx.enqueue_all(&asks, now).await?;
    let mut done = Reconciled {
        rechecks: rechecks.len(),
        queued_writes: !state.outbox.is_empty() || !asks.is_empty(),
        failures: Vec::new(),
    };
    let mut work = state.deal_work(tx, &settled).await?;
    work.extend(state.invoice_work(tx, &invoices).await?);
    done.failures = state.settle(tx, &work).await?;
    done.queued_writes |= !work.is_empty();
    let mut again: Vec<NewRecheck> = changed_meanwhile
        .into_iter()
        .map(|k| NewRecheck {
            kind: RecheckKind::Record,
            subject: k.label(),
            detail: None,
        })
        .collect();
    again.sort_by(|a, b| a.subject.cmp(&b.subject));
    tx.queue_rechecks(&again, now).await?;
    for (retry, error) in &done.failures {
        tx.queue_retry(retry, 1, error, now + RETRY_AFTER, now)
            .await?;
    }
    tx.delete_rechecks(&rechecks.iter().map(|r| r.id).collect::<Vec<_>>())
        .await?;
    Ok(done)
}

fn parse_subject(subject: &str) -> Result<RecordKey, StoreError> {
    RecordKey::parse_label(subject)
        .ok_or_else(|| StoreError::Corrupt(format!("recheck subject `{subject}` is not a record")))
}

fn kind_of_key(key: &RecordKey) -> Option<RecordKind> {
    key.crm.kind_of(&key.object_type)
}

fn kind(record: &CrmRecord) -> Option<RecordKind> {
    kind_of_key(&record.key())
}

/// A first touch a record could take, and where it comes from.
#[derive(Debug, Clone)]
struct Candidate {
    referral_id: String,
    attribution: Attribution,
    from: From,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    /// What the record carries already.
    Current,
    /// Its email's referral, or its people's.
    Referral,
    /// A record merged into it.
    Merged,
}

/// The earliest first touch wins; on a tie, what the record carries stays.
fn earliest(candidates: impl IntoIterator<Item = Candidate>) -> Option<Candidate> {
    candidates.into_iter().fold(None, |best, c| match best {
        Some(b) if b.attribution.first_touch_at <= c.attribution.first_touch_at => Some(b),
        _ => Some(c),
    })
}

struct State<'a> {
    settings: &'a Settings,
    now: Millis,
    referrals_by_email: HashMap<String, Referral>,
    referrals_by_id: HashMap<String, Referral>,
    records: HashMap<RecordKey, CrmRecord>,
    /// Links this round writes, in key order.
    links: BTreeMap<RecordKey, RecordLink>,
    audits: Vec<AuditRecord>,
    /// Restores, in guard order (context writes are added before them).
    outbox: Vec<NewOutbox>,
    /// Deals merged into each surviving deal this round looked at.
    merged_deals: HashMap<RecordKey, Vec<RecordKey>>,
    /// Deals whose link moved from one referral to another this round, with the one they left.
    relinked: Vec<(RecordKey, String)>,
}

impl<'a> State<'a> {
    fn new(settings: &'a Settings, now: Millis) -> Self {
        Self {
            settings,
            now,
            referrals_by_email: HashMap::new(),
            referrals_by_id: HashMap::new(),
            records: HashMap::new(),
            links: BTreeMap::new(),
            audits: Vec::new(),
            outbox: Vec::new(),
            merged_deals: HashMap::new(),
            relinked: Vec::new(),
        }
    }

    fn keep_records(&mut self, found: Vec<CrmRecord>) -> Vec<RecordKey> {
        found
            .into_iter()
            .map(|r| {
                let key = r.key();
                self.records.entry(key.clone()).or_insert(r);
                key
            })
            .collect()
    }

    fn keep_referrals(&mut self, found: Vec<Referral>) {
        for r in found {
            self.referrals_by_email
                .insert(r.email().to_string(), r.clone());
            self.referrals_by_id.insert(r.id().to_string(), r);
        }
    }

    /// The referrals of `emails` and the people carrying those emails.
    async fn load_people_by_email(
        &mut self,
        tx: &mut Tx,
        emails: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
        let found = tx.referrals_by_emails(&emails).await?;
        self.keep_referrals(found);
        let referred: Vec<&str> = emails
            .iter()
            .copied()
            .filter(|e| self.referrals_by_email.contains_key(*e))
            .collect();
        let people = tx.people_with_emails(&referred).await?;
        self.keep_records(people);
        Ok(())
    }

    async fn load_records(
        &mut self,
        tx: &mut Tx,
        keys: &BTreeSet<RecordKey>,
    ) -> Result<(), StoreError> {
        let missing: Vec<RecordKey> = keys
            .iter()
            .filter(|k| !self.records.contains_key(*k))
            .cloned()
            .collect();
        let found = tx.records(&missing).await?;
        self.keep_records(found);
        Ok(())
    }

    /// Load the referrals these records are linked to, and those of these emails.
    async fn load_referrals<'k>(
        &mut self,
        tx: &mut Tx,
        ids: impl IntoIterator<Item = &'k str>,
        emails: impl IntoIterator<Item = &'k str>,
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = ids
            .into_iter()
            .filter(|id| !self.referrals_by_id.contains_key(*id))
            .collect();
        let emails: Vec<&str> = emails
            .into_iter()
            .filter(|e| !self.referrals_by_email.contains_key(*e))
            .collect();
        let mut found = tx.referrals_by_ids(&ids).await?;
        found.extend(tx.referrals_by_emails(&emails).await?);
        self.keep_referrals(found);
        Ok(())
    }

    /// Records of the same type merged into each of `survivors`.
    async fn merged_into(
        &mut self,
        tx: &mut Tx,
        survivors: &BTreeSet<RecordKey>,
    ) -> Result<HashMap<RecordKey, Vec<RecordKey>>, StoreError> {
        let mut by_type: BTreeMap<(Crm, String), Vec<&str>> = BTreeMap::new();
        for k in survivors {
            by_type
                .entry((k.crm, k.object_type.clone()))
                .or_default()
                .push(&k.object_id);
        }
        let mut merged: HashMap<RecordKey, Vec<RecordKey>> = HashMap::new();
        for ((crm, object_type), ids) in by_type {
            let found = tx
                .records_merged_into(crm, &[object_type.as_str()], &ids)
                .await?;
            for r in found {
                let survivor = RecordKey::new(
                    crm,
                    &object_type,
                    r.merged_into.as_deref().unwrap_or_default(),
                );
                merged.entry(survivor).or_default().push(r.key());
                self.records.entry(r.key()).or_insert(r);
            }
        }
        let ids: Vec<String> = merged
            .values()
            .flatten()
            .filter_map(|k| self.records.get(k)?.referral_id.clone())
            .collect();
        self.load_referrals(tx, ids.iter().map(String::as_str), [])
            .await?;
        Ok(merged)
    }

    /// A candidate from a record linked to a referral: the referral's attribution, with the
    /// record's first-touch time when it comes from a merged record (what it carried).
    fn candidate_of(&self, record: &CrmRecord, from: From) -> Option<Candidate> {
        let referral_id = record.referral_id.as_deref()?;
        let referral = self.referrals_by_id.get(referral_id)?;
        let mut attribution = referral.attribution().clone();
        if from == From::Merged {
            attribution.first_touch_at = record.first_touch_at?;
        }
        Some(Candidate {
            referral_id: referral_id.to_string(),
            attribution,
            from,
        })
    }

    /// Candidates from the links of `records` (missing or unlinked ones offer none).
    fn candidates(&self, records: Option<&Vec<RecordKey>>, from: From) -> Vec<Candidate> {
        records
            .into_iter()
            .flatten()
            .filter_map(|k| self.candidate_of(self.records.get(k)?, from))
            .collect()
    }

    /// Give each of `keys` the earliest of what it carries and what `offer` puts forward for it
    /// (with the reason to audit a relink), until nothing changes: a record linked in one pass
    /// may be what another should take in the next (a merged record, a deal's person).
    fn until_stable<'k>(
        &mut self,
        keys: impl IntoIterator<Item = &'k RecordKey> + Clone,
        offer: impl Fn(&Self, &RecordKey, &CrmRecord) -> (Vec<Candidate>, Option<&'static str>),
    ) {
        let rounds = keys.clone().into_iter().count() + 1;
        for _ in 0..rounds {
            let mut changed = false;
            for key in keys.clone() {
                let Some(record) = self.records.get(key) else {
                    continue;
                };
                let (offered, relink_reason) = offer(self, key, record);
                if let Some(best) = earliest(Self::current(record).into_iter().chain(offered)) {
                    changed |= self.link(key, best, relink_reason);
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn current(record: &CrmRecord) -> Option<Candidate> {
        let (referral_id, attribution) = record.attribution()?;
        Some(Candidate {
            referral_id,
            attribution,
            from: From::Current,
        })
    }

    /// Give `key` the link `best` if it is not what the record carries. A merged record's first
    /// touch taking over is audited, and so is a relink when `relink_reason` is given.
    /// Returns whether the link changed.
    fn link(&mut self, key: &RecordKey, best: Candidate, relink_reason: Option<&str>) -> bool {
        let Some(record) = self.records.get_mut(key) else {
            return false;
        };
        if best.from == From::Current
            || (record.referral_id.as_deref() == Some(best.referral_id.as_str())
                && record.first_touch_at == Some(best.attribution.first_touch_at))
        {
            return false;
        }
        let previous = record.referral_id.clone();
        if let Some(left) = previous.as_ref().filter(|p| **p != best.referral_id) {
            if kind_of_key(key) == Some(RecordKind::Deal) {
                self.relinked.push((key.clone(), left.clone()));
            }
        }
        let action = match (best.from, &previous, relink_reason) {
            (From::Merged, _, _) => Some((
                "merge_kept_earliest",
                "merged records keep the earliest first touch",
            )),
            (_, Some(_), Some(reason)) => Some(("deal_relinked", reason)),
            _ => None,
        };
        if let Some((action, reason)) = action {
            self.audits.push(AuditRecord {
                actor: "system".into(),
                action: action.into(),
                entity_type: "crm_record".into(),
                entity_id: key.label(),
                old_value: previous,
                new_value: Some(best.referral_id.clone()),
                reason: Some(reason.into()),
            });
        }
        record.referral_id = Some(best.referral_id.clone());
        record.referrer_code = best.attribution.referrer_code.clone();
        record.source = best.attribution.source.clone();
        record.market = best.attribution.market.clone();
        record.first_touch_at = Some(best.attribution.first_touch_at);
        record.linked_at = Some(self.now);
        self.links.insert(
            key.clone(),
            RecordLink::new(key, &best.referral_id, &best.attribution),
        );
        true
    }

    /// `keys` and, transitively, the records they were merged into: a merged record's first
    /// touch may be the one its survivor should keep.
    async fn with_survivors(
        &mut self,
        tx: &mut Tx,
        keys: &BTreeSet<RecordKey>,
    ) -> Result<BTreeSet<RecordKey>, StoreError> {
        let mut all = keys.clone();
        let mut frontier = keys.clone();
        while !frontier.is_empty() {
            self.load_records(tx, &frontier).await?;
            frontier = frontier
                .iter()
                .filter_map(|k| {
                    let into = self.records.get(k)?.merged_into.as_deref()?;
                    Some(RecordKey {
                        object_id: into.to_string(),
                        ..k.clone()
                    })
                })
                .filter(|survivor| all.insert(survivor.clone()))
                .collect();
        }
        Ok(all)
    }

    /// Link each person to the earliest first touch among what it carries, its email's referral
    /// and the people merged into it. Returns the people linked afterwards.
    async fn link_people(
        &mut self,
        tx: &mut Tx,
        people: &BTreeSet<RecordKey>,
    ) -> Result<Vec<RecordKey>, StoreError> {
        let people = self.with_survivors(tx, people).await?;
        let emails: Vec<String> = people
            .iter()
            .filter_map(|k| self.records.get(k)?.email.clone())
            .collect();
        let carried: Vec<String> = people
            .iter()
            .filter_map(|k| self.records.get(k)?.referral_id.clone())
            .collect();
        self.load_referrals(
            tx,
            carried.iter().map(String::as_str),
            emails.iter().map(String::as_str),
        )
        .await?;
        let merged = self.merged_into(tx, &people).await?;
        // Until nothing changes: a merged record linked in this pass may be what its survivor
        // should keep in the next.
        self.until_stable(&people, |state, key, person| {
            let by_email = person
                .email
                .as_deref()
                .and_then(|e| state.referrals_by_email.get(e))
                .map(|r| Candidate {
                    referral_id: r.id().to_string(),
                    attribution: r.attribution().clone(),
                    from: From::Referral,
                });
            let mut offered: Vec<Candidate> = by_email.into_iter().collect();
            offered.extend(state.candidates(merged.get(key), From::Merged));
            (offered, None)
        });
        Ok(people
            .into_iter()
            .filter(|k| self.records.get(k).is_some_and(|r| r.referral_id.is_some()))
            .collect())
    }

    /// The deals of these (linked) people: associated ones, and in Salesforce their account's.
    async fn deals_of(
        &mut self,
        tx: &mut Tx,
        people: &[RecordKey],
    ) -> Result<BTreeSet<RecordKey>, StoreError> {
        let mut deals = BTreeSet::new();
        for crm in Crm::ALL {
            let ids: Vec<&str> = people
                .iter()
                .filter(|k| k.crm == crm)
                .map(|k| k.object_id.as_str())
                .collect();
            for (deal_id, _) in tx.deals_of_people(crm, &ids).await? {
                deals.insert(RecordKey::new(crm, crm.deal_type(), &deal_id));
            }
            let accounts: Vec<String> = people
                .iter()
                .filter(|k| k.crm == crm)
                .filter_map(|k| self.records.get(k)?.parent_id.clone())
                .collect();
            let accounts: Vec<&str> = accounts.iter().map(String::as_str).collect();
            let found = tx
                .records_with_parents(crm, &[crm.deal_type()], &accounts)
                .await?;
            deals.extend(self.keep_records(found));
        }
        Ok(deals)
    }

    /// Link each deal to the earliest first touch among what it carries, its people's and the
    /// deals merged into it. Returns the deals linked afterwards (not deleted), whose milestones
    /// and rewards follow from their stage.
    async fn link_deals(
        &mut self,
        tx: &mut Tx,
        deals: &BTreeSet<RecordKey>,
    ) -> Result<Vec<RecordKey>, StoreError> {
        let deals = &self.with_survivors(tx, deals).await?;
        let mut people_of: HashMap<RecordKey, Vec<RecordKey>> = HashMap::new();
        for crm in Crm::ALL {
            let of_crm: Vec<&RecordKey> = deals.iter().filter(|k| k.crm == crm).collect();
            let ids: Vec<&str> = of_crm.iter().map(|k| k.object_id.as_str()).collect();
            let associated = tx.people_of_deals(crm, &ids).await?;
            let person_ids: Vec<&str> = associated.iter().map(|(_, p)| p.as_str()).collect();
            let found = tx
                .records_by_ids(crm, crm.person_types(), &person_ids)
                .await?;
            let mut by_id: HashMap<String, Vec<RecordKey>> = HashMap::new();
            for key in self.keep_records(found) {
                by_id.entry(key.object_id.clone()).or_default().push(key);
            }
            for (deal_id, person_id) in &associated {
                let deal = RecordKey::new(crm, crm.deal_type(), deal_id);
                people_of
                    .entry(deal)
                    .or_default()
                    .extend(by_id.get(person_id).cloned().unwrap_or_default());
            }
            let accounts: Vec<String> = of_crm
                .iter()
                .filter_map(|k| self.records.get(*k)?.parent_id.clone())
                .collect();
            let accounts: Vec<&str> = accounts.iter().map(String::as_str).collect();
            let found = tx
                .records_with_parents(crm, crm.person_types(), &accounts)
                .await?;
            let in_accounts = self.keep_records(found);
            for deal in &of_crm {
                let Some(account) = self.records.get(*deal).and_then(|d| d.parent_id.clone())
                else {
                    continue;
                };
                let members = in_accounts
                    .iter()
                    .filter(|p| {
                        self.records.get(*p).and_then(|r| r.parent_id.as_deref())
                            == Some(account.as_str())
                    })
                    .cloned();
                people_of
                    .entry((*deal).clone())
                    .or_default()
                    .extend(members);
            }
        }
        let carried: Vec<String> = people_of
            .values()
            .flatten()
            .chain(deals.iter())
            .filter_map(|k| self.records.get(k)?.referral_id.clone())
            .collect();
        self.load_referrals(tx, carried.iter().map(String::as_str), [])
            .await?;
        let merged = self.merged_into(tx, deals).await?;
        self.merged_deals = merged.clone();
        self.until_stable(deals, |state, key, deal| {
            if deal.deleted_at.is_some() {
                return (Vec::new(), None);
            }
            let mut offered = state.candidates(people_of.get(key), From::Referral);
            offered.extend(state.candidates(merged.get(key), From::Merged));
            (
                offered,
                Some("a contact with an earlier first touch joined the deal"),
            )
        });
        let settled = deals
            .iter()
            .filter(|k| {
                self.records
                    .get(*k)
                    .is_some_and(|r| r.referral_id.is_some() && r.deleted_at.is_none())
            })
            .cloned()
            .collect();
        Ok(settled)
    }

    /// Tamper guard: a linked record showing another referral source gets the recorded one back.
    async fn guard(
        &mut self,
        tx: &mut Tx,
        guards: &[(RecordKey, GuardDetail)],
    ) -> Result<(), StoreError> {
        let emptied: Vec<RecordKey> = guards
            .iter()
            .filter(|(_, d)| d.value.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let mut first_write_pending: HashSet<RecordKey> = tx
            .with_pending_outbox(&emptied, crate::outbox::CommandKind::UpdateProperties)
            .await?
            .into_iter()
            .collect();
        // A context write queued by this round is pending too.
        first_write_pending.extend(self.links.keys().cloned());
        for (key, detail) in guards {
            let Some(record) = self.records.get(key) else {
                continue;
            };
            // Not ours to guard, or our own value echoed back.
            if record.referral_id.is_none() || detail.value == record.source {
                continue;
            }
            // Before our first write lands the field is simply empty: that is not tampering.
            if detail.value.is_none() && first_write_pending.contains(key) {
                continue;
            }
            let recorded = record.source.clone().unwrap_or_default();
            self.outbox
                .push(writeback::restore_write(self.settings, record, &recorded));
            self.audits.push(AuditRecord {
                actor: format!(
                    "crm:{}",
                    detail.change_source.as_deref().unwrap_or("unknown")
                ),
                action: "tamper_restored".into(),
                entity_type: "crm_record".into(),
                entity_id: key.label(),
                old_value: detail.value.clone(),
                new_value: Some(recorded),
                reason: Some("referral source is write-once".into()),
            });
            metrics::counter!("tamper_restores_total", "crm" => record.crm.as_str()).increment(1);
        }
        Ok(())
    }

    /// `qualified_at` / `won_at` of the referrals whose deals this round looked at or relinked,
    /// from the stage history of every deal linked to them now: the first time one reached a
    /// stage from `qualified` up (not `lost`), and `won`. Stated on current links, so a deal that
    /// was linked to a later first touch for a while leaves no milestone behind there.
    async fn milestones(&mut self, tx: &mut Tx, deals: &[RecordKey]) -> Result<(), StoreError> {
        let mut affected: BTreeSet<String> = deals
            .iter()
            .filter_map(|k| self.records.get(k)?.referral_id.clone())
            .collect();
        affected.extend(self.relinked.iter().map(|(_, left)| left.clone()));
        if affected.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = affected.iter().map(String::as_str).collect();
        self.load_referrals(tx, ids.iter().copied(), []).await?;
        let linked = tx.deals_linked_to(&ids).await?;
        let referral_of: HashMap<(Crm, String), String> = linked
            .iter()
            .filter_map(|k| {
                let referral = match self.records.get(k) {
                    Some(r) => r.referral_id.clone()?,
                    None => return None,
                };
                Some(((k.crm, k.object_id.clone()), referral))
            })
            .collect();
        // Deals not loaded this round keep the link the database has.
        let unloaded: Vec<RecordKey> = linked
            .iter()
            .filter(|k| !self.records.contains_key(*k))
            .cloned()
            .collect();
        let mut referral_of = referral_of;
        for r in tx.records(&unloaded).await? {
            if let Some(referral) = r.referral_id.clone() {
                referral_of.insert((r.crm, r.object_id.clone()), referral);
            }
        }
        let mut derived: BTreeMap<String, MilestoneFill> = affected
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    MilestoneFill {
                        id: id.clone(),
                        qualified_at: None,
                        won_at: None,
                    },
                )
            })
            .collect();
        for change in tx.stage_histories(&linked).await? {
            let Some(fill) = referral_of
                .get(&(change.crm, change.deal_id.clone()))
                .and_then(|id| derived.get_mut(id))
            else {
                continue;
            };
            let Some(stage) = change
                .stage
                .as_deref()
                .and_then(|s| s.parse::<CanonicalStage>().ok())
            else {
                continue;
            };
            let first = |known: Option<Millis>| {
                Some(known.map_or(change.occurred_at, |k| k.min(change.occurred_at)))
            };
            if stage.is_qualified() {
                fill.qualified_at = first(fill.qualified_at);
            }
            if stage == CanonicalStage::Won {
                fill.won_at = first(fill.won_at);
            }
        }
        let changed: Vec<MilestoneFill> = derived
            .into_values()
            .filter(|f| {
                self.referrals_by_id
                    .get(&f.id)
                    .is_none_or(|r| r.qualified_at != f.qualified_at || r.won_at != f.won_at)
            })
            .collect();
        // Written now: the tiers of this round's context writes count these wins.
        tx.set_milestones(&changed, self.now).await
    }

    /// The referral context of every record linked this round, queued before any restore.
    async fn context_writes(&mut self, tx: &mut Tx) -> Result<(), StoreError> {
        let codes: BTreeSet<String> = self
            .links
            .values()
            .filter_map(|l| l.referrer_code.clone())
            .collect();
        let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
        let names: HashMap<String, Option<String>> = tx
            .referrers_by_codes(&codes)
            .await?
            .into_iter()
            .map(|r| (r.facts.code, r.facts.name))
            .collect();
        let successes: HashMap<String, u32> = tx
            .successful_referrals_of(&codes)
            .await?
            .into_iter()
            .map(|(code, n)| Ok((code, crate::store::rule_count(n)?)))
            .collect::<Result<_, StoreError>>()?;
        let mut writes = Vec::with_capacity(self.links.len());
        for (key, link) in &self.links {
            let Some(record) = self.records.get(key) else {
                continue;
            };
            let attribution = Attribution {
                referrer_code: link.referrer_code.clone(),
                source: link.source.clone(),
                market: link.market.clone(),
                first_touch_at: link.first_touch_at,
            };
            let code = link.referrer_code.as_deref().unwrap_or_default();
            writes.push(writeback::context_properties(
                self.settings,
                record,
                &attribution,
                names.get(code).cloned().flatten().as_deref(),
                successes.get(code).copied().unwrap_or(0),
            ));
        }
        writes.append(&mut self.outbox);
        self.outbox = writes;
        Ok(())
    }

    /// Write the links. Returns the deals whose facts changed between this round's read and its
    /// link (a batch committed meanwhile): they are rechecked.
    async fn write_links(&mut self, tx: &mut Tx) -> Result<Vec<RecordKey>, StoreError> {
        let links: Vec<RecordLink> = self.links.values().cloned().collect();
        let after: Vec<LinkedFacts> = tx.link_records(&links, self.now).await?;
        let changed = after
            .into_iter()
            .filter_map(|f| {
                let key = RecordKey {
                    crm: f.crm,
                    object_type: f.object_type.clone(),
                    object_id: f.object_id.clone(),
                };
                let read = self.records.get(&key)?;
                let same = read.stage_occurred_at == f.stage_occurred_at
                    && read.amount == f.amount
                    && read.deleted_at == f.deleted_at;
                (!same).then_some(key)
            })
            .collect();
        Ok(changed)
    }

    async fn write_audit_and_outbox(&mut self, tx: &mut Tx) -> Result<(), StoreError> {
        tx.audit_all(&self.audits, self.now).await?;
        tx.enqueue_all(&self.outbox, self.now).await
    }

    /// Rewards follow each linked deal's current stage. Only deals at a program's success stage,
    /// or with rewards already, are handed to the reward engine.
    async fn deal_work(
        &mut self,
        tx: &mut Tx,
        deals: &[RecordKey],
    ) -> Result<Vec<Work>, StoreError> {
        // A deal relinked to an earlier first touch has its reward decided again for that
        // referral, unless it was already announced as eligible, approved or paid.
        let mut moved = Vec::new();
        for (deal, left) in &self.relinked {
            for reward in tx
                .withdraw_unsettled_rewards(deal.crm, &deal.object_id, false)
                .await?
            {
                moved.push(AuditRecord {
                    actor: "system".into(),
                    action: "reward_withdrawn".into(),
                    entity_type: "reward".into(),
                    entity_id: reward.id.clone(),
                    old_value: serde_json::to_string(&reward).ok(),
                    new_value: None,
                    reason: Some(format!(
                        "deal {} moved from referral {left} to an earlier first touch",
                        deal.object_id
                    )),
                });
            }
        }
        // A merged deal's rewards follow it into its survivor (unless the survivor has its own),
        // so winning the survivor again earns nothing twice.
        for survivor in deals {
            for merged in self.merged_deals.get(survivor).into_iter().flatten() {
                for reward in tx
                    .move_deal_rewards(
                        survivor.crm,
                        &merged.object_id,
                        &survivor.object_id,
                        self.now,
                    )
                    .await?
                {
                    moved.push(AuditRecord {
                        actor: "system".into(),
                        action: "reward_moved".into(),
                        entity_type: "reward".into(),
                        entity_id: reward.id,
                        old_value: Some(merged.object_id.clone()),
                        new_value: Some(survivor.object_id.clone()),
                        reason: Some("the deal was merged".into()),
                    });
                }
            }
        }
        tx.audit_all(&moved, self.now).await?;
        let with_rewards: HashSet<(Crm, String)> =
            tx.deals_with_rewards(deals).await?.into_iter().collect();
        let codes: BTreeSet<String> = deals
            .iter()
            .filter_map(|k| self.records.get(k)?.referrer_code.clone())
            .collect();
        let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
        let referrer_markets: HashMap<String, Option<String>> = tx
            .referrers_by_codes(&codes)
            .await?
            .into_iter()
            .map(|r| (r.facts.code, r.facts.market))
            .collect();
        let mut due = Vec::new();
        for key in deals {
            let Some(deal) = self.records.get(key) else {
                continue;
            };
            let Some(stage) = deal
                .stage
                .as_deref()
                .and_then(|s| s.parse::<CanonicalStage>().ok())
            else {
                continue;
            };
            let has_rewards = with_rewards.contains(&(deal.crm, deal.object_id.clone()));
            let at_success = deal
                .referral_id
                .as_deref()
                .and_then(|id| self.referrals_by_id.get(id))
                .and_then(|referral| {
                    let market = deal
                        .referrer_code
                        .as_deref()
                        .and_then(|c| referrer_markets.get(c).cloned().flatten());
                    rewards::program_for(self.settings, referral, market.as_deref())
                })
                .is_some_and(|(_, program)| program.success_stage == stage);
            if !has_rewards && !at_success {
                continue;
            }
            due.push(Work::Deal(Box::new(deal.clone()), stage));
        }
        Ok(due)
    }

    /// Invoices of referred customers, with their refunds (the referral each belongs to is
    /// recorded on it: by its email, or by the CRM record it names).
    async fn invoice_work(
        &mut self,
        tx: &mut Tx,
        ids: &BTreeSet<String>,
    ) -> Result<Vec<Work>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let invoices = tx.invoices(&ids).await?;
        let mut refunds: HashMap<String, Vec<Refund>> = HashMap::new();
        for r in tx.refunds_of(&ids).await? {
            refunds.entry(r.invoice_id.clone()).or_default().push(r);
        }
        let emails: Vec<&str> = invoices
            .iter()
            .filter(|i| i.referral_id.is_none())
            .filter_map(|i| i.email.as_deref())
            .collect();
        self.load_referrals(tx, [], emails).await?;
        let named: Vec<RecordKey> = invoices
            .iter()
            .filter(|i| i.referral_id.is_none())
            .filter_map(|i| RecordKey::parse_label(i.crm_id.as_deref()?))
            .collect();
        let named: BTreeSet<RecordKey> = named.into_iter().collect();
        self.load_records(tx, &named).await?;
        let mut found = Vec::new();
        let mut work = Vec::new();
        for invoice in invoices {
            let referral = invoice.referral_id.clone().or_else(|| {
                let by_email = invoice
                    .email
                    .as_deref()
                    .and_then(|e| self.referrals_by_email.get(e))
                    .map(|r| r.id().to_string());
                let by_record = invoice
                    .crm_id
                    .as_deref()
                    .and_then(RecordKey::parse_label)
                    .and_then(|k| self.records.get(&k)?.referral_id.clone());
                by_email.or(by_record)
            });
            let Some(referral) = referral else {
                continue;
            };
            if invoice.referral_id.is_none() {
                found.push(InvoiceReferral {
                    invoice_id: invoice.invoice_id.clone(),
                    referral_id: referral.clone(),
                });
            }
            let of_invoice = refunds.remove(&invoice.invoice_id).unwrap_or_default();
            work.push(Work::Invoice(Box::new(InvoiceWork {
                invoice,
                referral_id: referral,
                refunds: of_invoice,
            })));
        }
        tx.set_invoice_referrals(&found).await?;
        Ok(work)
    }

    /// Hand each deal and invoice to the reward engine, all in one savepoint; only when one fails,
    /// again one savepoint each, so the one that fails is retried later without undoing the rest.
    async fn settle(
        &mut self,
        tx: &mut Tx,
        work: &[Work],
    ) -> Result<Vec<(NewRecheck, String)>, StoreError> {
        if work.is_empty() {
            return Ok(Vec::new());
        }
        tx.savepoint().await?;
        let mut failed = false;
        for w in work {
            if self.apply(tx, w).await.is_err() {
                failed = true;
                break;
            }
        }
        if !failed {
            tx.release_savepoint().await?;
            return Ok(Vec::new());
        }
        tx.rollback_to_savepoint().await?;
        let mut failures = Vec::new();
        for w in work {
            tx.savepoint().await?;
            match self.apply(tx, w).await {
                Ok(()) => tx.release_savepoint().await?,
                Err(e) => {
                    tx.rollback_to_savepoint().await?;
                    let retry = w.recheck();
                    tracing::warn!(subject = %retry.subject, error = ?e, "settling rewards failed; retrying later");
                    failures.push((retry, format!("{e:#}")));
                }
            }
        }
        Ok(failures)
    }

    async fn apply(&self, tx: &mut Tx, work: &Work) -> Result<(), StoreError> {
        match work {
            Work::Deal(deal, stage) => {
                let at = deal.stage_occurred_at.unwrap_or(self.now);
                rewards::on_deal_stage(tx, self.settings, deal, *stage, at, self.now).await
            }
            Work::Invoice(w) => {
                let refunds: Vec<&Refund> = w.refunds.iter().collect();
                rewards::on_invoice(
                    tx,
                    self.settings,
                    &w.invoice,
                    &w.referral_id,
                    &refunds,
                    self.now,
                )
                .await
            }
        }
    }
}

/// What the reward engine is handed in a round.
enum Work {
    /// A linked deal at its current stage.
    Deal(Box<CrmRecord>, CanonicalStage),
    /// A referred customer's invoice.
    Invoice(Box<InvoiceWork>),
}

/// An invoice with the referral it belongs to and its refunds.
struct InvoiceWork {
    invoice: Invoice,
    referral_id: String,
    refunds: Vec<Refund>,
}

impl Work {
    /// The recheck that brings this work back after a failure.
    fn recheck(&self) -> NewRecheck {
        match self {
            Work::Deal(deal, _) => NewRecheck {
                kind: RecheckKind::Record,
                subject: deal.key().label(),
                detail: None,
            },
            Work::Invoice(w) => NewRecheck {
                kind: RecheckKind::Invoice,
                subject: w.invoice.invoice_id.clone(),
                detail: None,
            },
        }
    }
}

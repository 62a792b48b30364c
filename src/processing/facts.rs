//! The first step of processing: what a batch of stored events *says* — referrers, first touches
//! and touches, CRM records and their facts, associations, stage history, paid and refunded
//! invoices, advocacy moments, API reads to make —
//! applied in arrival order in memory and written with one statement per table. Nothing here
//! decides links or rewards: every fact that may change them queues a recheck for the reconcile
//! step in the same transaction ([`crate::store::NewRecheck`]).
//!
//! Applying an event cannot fail once it is decoded: a payload that cannot be read fails alone,
//! with its reason, at decoding. A write the database refuses fails the batch, and the processor
//! then applies the batch's events one at a time to find the one to blame.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::decode::{self, CrmChange, DecodeError, Decoded, GuardedNames, RecordKind, RecordRef};
use crate::attribution::writeback;
use crate::clock::Millis;
use crate::config::Settings;
use crate::domain::stage::CanonicalStage;
use crate::domain::Crm;
use crate::ingest::product::{
    InvoicePaid, InvoiceRefunded, PartnerData, ProductEvent, ProductPayload, ReferralData,
    ReferralSource,
};
use crate::store::{
    Association, Attribution, GuardDetail, InboxEvent, InboxOutcome, InboxStatus, NewInvoice,
    NewMoment, NewOutbox, NewRecheck, NewReferral, NewRefund, NewStageChange, NewTouch,
    RecheckKind, RecordFacts, RecordKey, RefereeFill, ReferrerFacts, ReferrerUpsert, StoreError,
    Tx,
};

/// What applying a batch's facts did.
#[derive(Debug, Default)]
pub(super) struct FactsApplied {
    pub outcomes: Vec<InboxOutcome>,
    /// Whether CRM reads were queued (the outbox worker should look).
    pub queued_reads: bool,
}

/// Decode, load what the rules need, apply in arrival order, write.
pub(super) async fn apply(
    tx: &mut Tx,
    settings: &Settings,
    names: &GuardedNames,
    events: &[InboxEvent],
    now: Millis,
) -> Result<FactsApplied, StoreError> {
    let decoded: Vec<Result<Decoded, DecodeError>> = events
        .iter()
        .map(|e| decode::decode(&e.event, names))
        .collect();
    let mut batch = Batch::load(tx, settings, &decoded, now).await?;
    for (event, d) in events.iter().zip(decoded) {
        let _span = tracing::debug_span!(
            "inbox_event",
            id = event.id,
            source = %event.event.source,
            kind = %event.event.event_type
        )
        .entered();
        let outcome = match d {
            Err(e) => Outcome::failed(e.to_string()),
            Ok(Decoded::Ignore(reason)) => Outcome::ignored(reason),
            Ok(Decoded::Product(p)) => batch.product(event, p),
            Ok(Decoded::Crm { at, changes }) => changes
                .into_iter()
                .map(|c| batch.crm(event, c, at))
                .fold(Outcome::processed(), Outcome::worst),
        };
        batch.outcomes.push(InboxOutcome {
            id: event.id,
            status: outcome.status,
            reason: outcome.reason,
        });
    }
    batch.write(tx).await
}

/// What processing decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status: InboxStatus,
    reason: Option<String>,
}

impl Outcome {
    fn processed() -> Self {
        Self {
            status: InboxStatus::Processed,
            reason: None,
        }
    }
    fn ignored(reason: impl Into<String>) -> Self {
        Self {
            status: InboxStatus::Ignored,
            reason: Some(reason.into()),
        }
    }
    fn unmapped(reason: impl Into<String>) -> Self {
        Self {
            status: InboxStatus::Unmapped,
            reason: Some(reason.into()),
        }
    }
    fn failed(reason: impl Into<String>) -> Self {
        Self {
            status: InboxStatus::Failed,
            reason: Some(reason.into()),
        }
    }
    /// Of one event's changes, the first that was not simply processed decides.
    fn worst(self, next: Outcome) -> Outcome {
        if self.status == InboxStatus::Processed {
            next
        } else {
            self
        }
    }
}

/// One entry of a deal's stage history as the batch sees it.
#[derive(Debug, Clone)]
struct HistoryEntry {
    stage_id: String,
    mapped: bool,
    occurred_at: Millis,
}

/// A referral as claims in this batch see it.
#[derive(Debug, Clone)]
struct KnownReferral {
    id: String,
}

/// A record whose link decides whether a fact needs a recheck: only linked records have derived
/// state to keep in line. Read back from the write itself (see [`Tx::apply_record_facts`]).
#[derive(Debug, Clone)]
enum IfLinked {
    Recheck(RecordKey),
    Guard(RecordKey, GuardDetail),
}

struct Batch<'a> {
    settings: &'a Settings,
    now: Millis,
    // Read before applying.
    /// Per deal `(crm, deal id)`: stage history as stored, plus this batch's changes.
    histories: HashMap<(Crm, String), Vec<HistoryEntry>>,
    stored_pipelines: HashMap<RecordKey, String>,
    referrals: HashMap<String, KnownReferral>,
    referrer_markets: HashMap<String, Option<String>>,
    deals_of_merged_people: HashMap<(Crm, String), Vec<String>>,
    people_of_merged_deals: HashMap<(Crm, String), Vec<String>>,
    /// Invoice ids and refund keys recorded already (and by this batch).
    known_invoices: HashSet<String>,
    known_refunds: HashSet<String>,
    // To write.
    referrers: BTreeMap<String, ReferrerUpsert>,
    new_referrals: Vec<NewReferral>,
    fills: BTreeMap<String, RefereeFill>,
    touches: Vec<NewTouch>,
    records: BTreeMap<RecordKey, RecordFacts>,
    if_linked: Vec<IfLinked>,
    associations: BTreeMap<(Crm, String, String), Association>,
    stage_changes: BTreeMap<(RecordKey, String, Millis), NewStageChange>,
    invoices: Vec<NewInvoice>,
    refunds: Vec<NewRefund>,
    rechecks: Vec<NewRecheck>,
    queued: HashSet<(RecheckKind, String)>,
    moments: Vec<NewMoment>,
    outbox: Vec<NewOutbox>,
    outcomes: Vec<InboxOutcome>,
}

impl<'a> Batch<'a> {
    /// Read, in a few set-based queries, the state the batch's rules consult.
    async fn load(
        tx: &mut Tx,
        settings: &'a Settings,
        decoded: &[Result<Decoded, DecodeError>],
        now: Millis,
    ) -> Result<Batch<'a>, StoreError> {
        let mut staged_deals: Vec<RecordKey> = Vec::new();
        let mut emails: Vec<&str> = Vec::new();
        let mut codes: Vec<&str> = Vec::new();
        let mut merged_people: HashMap<Crm, Vec<&str>> = HashMap::new();
        let mut merged_deals: HashMap<Crm, Vec<&str>> = HashMap::new();
        let mut invoice_ids: Vec<&str> = Vec::new();
        let mut refund_keys: Vec<String> = Vec::new();
        for d in decoded.iter().flatten() {
            match d {
                Decoded::Crm { changes, .. } => {
                    for c in changes {
                        match c {
                            CrmChange::Stage { deal, .. } => staged_deals.push(deal.key()),
                            CrmChange::Merged {
                                primary,
                                merged_ids,
                            } => match primary.kind {
                                RecordKind::Person => &mut merged_people,
                                RecordKind::Deal => &mut merged_deals,
                            }
                            .entry(primary.crm)
                            .or_default()
                            .extend(merged_ids.iter().map(String::as_str)),
                            _ => {}
                        }
                    }
                }
                Decoded::Product(p) => match &p.payload {
                    ProductPayload::ReferralCreated(d) | ProductPayload::SignupCreated(d) => {
                        emails.push(&d.email);
                        codes.extend(d.referral_code.as_deref());
                    }
                    ProductPayload::SignupActivated(a) => emails.push(&a.email),
                    ProductPayload::InvoicePaid(i) => invoice_ids.push(&i.invoice_id),
                    ProductPayload::InvoiceRefunded(r) => refund_keys.push(r.key()),
                    _ => {}
                },
                Decoded::Ignore(_) => {}
            }
        }
        staged_deals.sort();
        staged_deals.dedup();
        let mut histories: HashMap<(Crm, String), Vec<HistoryEntry>> = HashMap::new();
        for h in tx.stage_histories(&staged_deals).await? {
            histories
                .entry((h.crm, h.deal_id))
                .or_default()
                .push(HistoryEntry {
                    stage_id: h.stage_id,
                    mapped: h.stage.is_some(),
                    occurred_at: h.occurred_at,
                });
        }
        let stored_pipelines = tx
            .records(&staged_deals)
            .await?
            .into_iter()
            .filter_map(|r| {
                let key = r.key();
                r.pipeline.map(|p| (key, p))
            })
            .collect();
        let referrals = tx
            .referrals_by_emails(&emails)
            .await?
            .into_iter()
            .map(|r| {
                (
                    r.first_touch.email,
                    KnownReferral {
                        id: r.first_touch.id,
                    },
                )
            })
            .collect();
        let referrer_markets = tx
            .referrers_by_codes(&codes)
            .await?
            .into_iter()
            .map(|r| (r.facts.code, r.facts.market))
            .collect();
        let mut deals_of_merged_people: HashMap<(Crm, String), Vec<String>> = HashMap::new();
        for (crm, ids) in merged_people {
            for (deal_id, person_id) in tx.deals_of_people(crm, &ids).await? {
                deals_of_merged_people
                    .entry((crm, person_id))
                    .or_default()
                    .push(deal_id);
            }
        }
        let mut people_of_merged_deals: HashMap<(Crm, String), Vec<String>> = HashMap::new();
        for (crm, ids) in merged_deals {
            for (deal_id, person_id) in tx.people_of_deals(crm, &ids).await? {
                people_of_merged_deals
                    .entry((crm, deal_id))
                    .or_default()
                    .push(person_id);
            }
        }
        // Only batches carrying invoices pay for these reads.
        let known_invoices = tx.known_invoices(&invoice_ids).await?.into_iter().collect();
        let refund_keys: Vec<&str> = refund_keys.iter().map(String::as_str).collect();
        let known_refunds = tx.known_refunds(&refund_keys).await?.into_iter().collect();
        Ok(Batch {
            settings,
            now,
            histories,
            stored_pipelines,
            referrals,
            referrer_markets,
            deals_of_merged_people,
            people_of_merged_deals,
            known_invoices,
            known_refunds,
            referrers: BTreeMap::new(),
            new_referrals: Vec::new(),
            fills: BTreeMap::new(),
            touches: Vec::new(),
            records: BTreeMap::new(),
            if_linked: Vec::new(),
            associations: BTreeMap::new(),
            stage_changes: BTreeMap::new(),
            invoices: Vec::new(),
            refunds: Vec::new(),
            rechecks: Vec::new(),
            queued: HashSet::new(),
            moments: Vec::new(),
            outbox: Vec::new(),
            outcomes: Vec::with_capacity(decoded.len()),
        })
    }

    // ---- product events ------------------------------------------------------------------------

    fn product(&mut self, event: &InboxEvent, product: ProductEvent) -> Outcome {
        let at = product.occurred_at_ms;
        match product.payload {
            ProductPayload::PartnerInvited(p) => self.referrer(&p, false, at),
            ProductPayload::PartnerJoined(p) => self.referrer(&p, true, at),
            ProductPayload::ReferralCreated(d) => {
                self.claim(event, "referral.created", d, ReferralSource::Intro, at)
            }
            ProductPayload::SignupCreated(d) => {
                self.claim(event, "signup.created", d, ReferralSource::Code, at)
            }
            ProductPayload::SignupActivated(a) => match self.referrals.get(&a.email) {
                Some(r) => {
                    let fill = RefereeFill {
                        id: r.id.clone(),
                        activated_at: Some(at),
                        ..Default::default()
                    };
                    self.fill(fill);
                    Outcome::processed()
                }
                None => Outcome::ignored("activation for an email with no referral"),
            },
            ProductPayload::InvoicePaid(i) => self.invoice_paid(event, i),
            ProductPayload::InvoiceRefunded(r) => self.invoice_refunded(event, r),
            ProductPayload::Moment(m) => {
                let mut moment =
                    NewMoment::new(format!("event:{}", event.id), &m.email, m.kind, at);
                moment.score = m.score.map(i64::from);
                moment.milestone = m.milestone;
                self.moments.push(moment);
                self.recheck(RecheckKind::Moment, m.email, None);
                Outcome::processed()
            }
            ProductPayload::Unknown => {
                Outcome::ignored(format!("unknown event type {}", event.event.event_type))
            }
        }
    }

    /// A paid invoice is recorded once per invoice id; whether it earns a recurring reward is the
    /// reconcile step's to decide.
    fn invoice_paid(&mut self, event: &InboxEvent, i: InvoicePaid) -> Outcome {
        if !self.known_invoices.insert(i.invoice_id.clone()) {
            return Outcome::ignored(format!("invoice {} was recorded already", i.invoice_id));
        }
        self.recheck(RecheckKind::Invoice, i.invoice_id.clone(), None);
        self.invoices.push(NewInvoice {
            invoice_id: i.invoice_id,
            email: i.email,
            crm_id: i.crm_id,
            amount: i.amount.to_string(),
            currency: i.currency,
            paid_at: i.paid_at,
            period_start: i.period_start,
            period_end: i.period_end,
            inbox_event_id: event.id,
        });
        Outcome::processed()
    }

    /// A refund is recorded once; it may arrive before its invoice (another partition), which the
    /// reconcile step matches whatever the order.
    fn invoice_refunded(&mut self, event: &InboxEvent, r: InvoiceRefunded) -> Outcome {
        let key = r.key();
        if !self.known_refunds.insert(key.clone()) {
            return Outcome::ignored(format!("refund {key} was recorded already"));
        }
        self.recheck(RecheckKind::Invoice, r.invoice_id.clone(), None);
        self.refunds.push(NewRefund {
            refund_key: key,
            invoice_id: r.invoice_id,
            amount: r.amount.to_string(),
            currency: r.currency,
            refunded_at: r.refunded_at,
            inbox_event_id: event.id,
        });
        Outcome::processed()
    }

    fn referrer(&mut self, p: &PartnerData, joined: bool, at: Millis) -> Outcome {
        let facts = ReferrerFacts {
            code: p.code.clone(),
            name: p.name.clone(),
            email: p.email.clone(),
            company_domain: p.company_domain.clone(),
            market: p.market.clone(),
            kind: p.kind.as_str().to_string(),
        };
        if let Some(market) = &facts.market {
            self.referrer_markets
                .insert(facts.code.clone(), Some(market.clone()));
        }
        let upsert = ReferrerUpsert::new(facts, joined, at);
        match self.referrers.get_mut(&upsert.facts.code) {
            Some(existing) => existing.absorb(upsert),
            None => {
                self.referrers.insert(upsert.facts.code.clone(), upsert);
            }
        }
        Outcome::processed()
    }

    /// A referral claim: the first for an email becomes its write-once first touch; any later
    /// claim is kept as a touch with outcome `kept_original`.
    fn claim(
        &mut self,
        event: &InboxEvent,
        kind: &str,
        d: ReferralData,
        default_source: ReferralSource,
        at: Millis,
    ) -> Outcome {
        let referrer_market = d
            .referral_code
            .as_ref()
            .and_then(|code| self.referrer_markets.get(code).cloned().flatten());
        let market = d
            .market
            .clone()
            .or(referrer_market)
            .unwrap_or_else(|| self.settings.rewards.default_market.clone());
        let claimed = Attribution {
            referrer_code: d.referral_code.clone(),
            source: Some(d.source.unwrap_or(default_source).as_str().to_string()),
            market: Some(market),
            first_touch_at: at,
        };
        let (referral_id, outcome) = match self.referrals.get(&d.email) {
            Some(r) => (r.id.clone(), "kept_original"),
            None if d.referral_code.is_none() => {
                return Outcome::ignored(
                    "signup without a referral code and no earlier referral for this email",
                );
            }
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                self.new_referrals.push(NewReferral {
                    id: id.clone(),
                    email: d.email.clone(),
                    attribution: claimed.clone(),
                });
                self.referrals
                    .insert(d.email.clone(), KnownReferral { id: id.clone() });
                // People the CRMs already told us about get linked by the reconcile step.
                self.recheck(RecheckKind::Email, d.email.clone(), None);
                (id, "first_touch")
            }
        };
        self.touches.push(NewTouch {
            referral_id: referral_id.clone(),
            inbox_event_id: Some(event.id),
            kind: kind.to_string(),
            referrer_code: claimed.referrer_code,
            source: claimed.source,
            market: claimed.market,
            occurred_at: at,
            outcome: outcome.to_string(),
        });
        self.fill(RefereeFill {
            id: referral_id,
            name: d.name,
            company: d.company,
            utm: (!d.utm.is_empty())
                .then(|| serde_json::to_string(&d.utm).expect("a map of strings serialises")),
            ip: d.ip.map(|ip| ip.to_string()),
            signed_up_at: (kind == "signup.created").then_some(at),
            activated_at: None,
        });
        Outcome::processed()
    }

    fn fill(&mut self, fill: RefereeFill) {
        match self.fills.get_mut(&fill.id) {
            Some(existing) => existing.absorb(fill),
            None => {
                self.fills.insert(fill.id.clone(), fill);
            }
        }
    }

    // ---- CRM events ----------------------------------------------------------------------------

    fn crm(&mut self, event: &InboxEvent, change: CrmChange, at: Millis) -> Outcome {
        match change {
            CrmChange::Upsert {
                record,
                created_at,
                email,
                parent_id,
            } => {
                let key = record.key();
                if let Some(email) = &email {
                    self.recheck(RecheckKind::Email, email.as_str().to_string(), None);
                }
                self.facts(
                    &record,
                    Some(at),
                    RecordFacts {
                        crm_created_at: created_at,
                        email: email.map(|e| e.into_string()),
                        parent_id,
                        ..RecordFacts::new(&key)
                    },
                );
                self.if_linked.push(IfLinked::Recheck(key));
            }
            CrmChange::Stage {
                deal,
                pipeline,
                stage_id,
                is_won,
                is_closed,
            } => return self.stage(event, &deal, pipeline, stage_id, is_won, is_closed, at),
            CrmChange::DealFields {
                deal,
                pipeline,
                amount,
                currency,
                deal_type,
                crm_source,
            } => {
                let key = deal.key();
                self.facts(
                    &deal,
                    Some(at),
                    RecordFacts {
                        pipeline,
                        amount,
                        currency,
                        deal_type,
                        crm_source,
                        ..RecordFacts::new(&key)
                    },
                );
                self.if_linked.push(IfLinked::Recheck(key));
            }
            CrmChange::Associate {
                crm,
                deal_id,
                person_id,
                removed,
            } => {
                let deal = RecordKey::new(crm, crm.deal_type(), &deal_id);
                if !removed {
                    // A deal known only from an association still gets its row.
                    self.records
                        .entry(deal.clone())
                        .or_insert_with(|| RecordFacts::new(&deal));
                }
                self.associate(crm, deal_id, person_id, removed, at);
                self.recheck(RecheckKind::Record, deal.label(), None);
                // A won renewal's people are only known once associated.
                if !removed && self.settings.renewal_moments() {
                    self.recheck(RecheckKind::Won, deal.label(), None);
                }
            }
            CrmChange::DealAccount { deal, account_id } => {
                let key = deal.key();
                self.facts(
                    &deal,
                    Some(at),
                    RecordFacts {
                        parent_id: Some(account_id),
                        ..RecordFacts::new(&key)
                    },
                );
                self.recheck(RecheckKind::Record, key.label(), None);
            }
            CrmChange::GuardedValue {
                record,
                value,
                change_source,
            } => {
                let key = record.key();
                self.facts(&record, Some(at), RecordFacts::new(&key));
                self.if_linked.push(IfLinked::Guard(
                    key,
                    GuardDetail {
                        value,
                        change_source,
                    },
                ));
            }
            CrmChange::Deleted { record } => self.deleted(&record, Some(at)),
            CrmChange::Restored { record } => self.deleted(&record, None),
            CrmChange::Merged {
                primary,
                merged_ids,
            } => self.merged(&primary, &merged_ids, at),
            CrmChange::NeedsRead { record } => {
                self.outbox.push(writeback::read_record(&record));
            }
        }
        Outcome::processed()
    }

    /// Record what an event at `at` (CRM time) says about `record`.
    fn facts(&mut self, record: &RecordRef, at: Option<Millis>, mut facts: RecordFacts) {
        facts.account = record.account.clone();
        facts.seen_at = at;
        match self.records.get_mut(&facts.key()) {
            Some(existing) => existing.absorb(facts),
            None => {
                self.records.insert(facts.key(), facts);
            }
        }
    }

    fn deleted(&mut self, record: &RecordRef, at: Option<Millis>) {
        let key = record.key();
        self.facts(
            record,
            at,
            RecordFacts {
                deleted: Some(at),
                ..RecordFacts::new(&key)
            },
        );
        self.if_linked.push(IfLinked::Recheck(key));
    }

    fn associate(
        &mut self,
        crm: Crm,
        deal_id: String,
        person_id: String,
        removed: bool,
        at: Millis,
    ) {
        let id = (crm, deal_id, person_id);
        let association = Association {
            crm,
            deal_id: id.1.clone(),
            contact_id: id.2.clone(),
            removed,
            occurred_at: at,
        };
        match self.associations.get_mut(&id) {
            // The store ignores a report older than the one it has; so does the batch.
            Some(known) if known.occurred_at > at => {}
            _ => {
                self.associations.insert(id, association);
            }
        }
    }

    /// Merged records point at the survivor; a merged person's deals, and a merged deal's people,
    /// are associated with the survivor. Which first touch the survivor keeps, and the merged
    /// deal's rewards, are the reconcile step's to settle.
    fn merged(&mut self, primary: &RecordRef, merged_ids: &[String], at: Millis) {
        let survivor = primary.key();
        self.facts(primary, Some(at), RecordFacts::new(&survivor));
        for id in merged_ids.iter().filter(|id| **id != primary.id) {
            let merged = RecordKey::new(primary.crm, &primary.object_type, id);
            self.facts(
                primary,
                Some(at),
                RecordFacts {
                    merged_into: Some(primary.id.clone()),
                    ..RecordFacts::new(&merged)
                },
            );
            let key = (primary.crm, id.clone());
            match primary.kind {
                RecordKind::Person => {
                    let deals = self.deals_of_merged_people.get(&key).cloned();
                    for deal_id in deals.unwrap_or_default() {
                        self.associate(primary.crm, deal_id, primary.id.clone(), false, at);
                    }
                }
                RecordKind::Deal => {
                    let people = self.people_of_merged_deals.get(&key).cloned();
                    for person_id in people.unwrap_or_default() {
                        self.associate(primary.crm, primary.id.clone(), person_id, false, at);
                    }
                }
            }
        }
        self.recheck(RecheckKind::Record, survivor.label(), None);
    }

    #[allow(clippy::too_many_arguments)]
    fn stage(
        &mut self,
        event: &InboxEvent,
        deal: &RecordRef,
        pipeline: Option<String>,
        stage_id: String,
        is_won: Option<bool>,
        is_closed: Option<bool>,
        at: Millis,
    ) -> Outcome {
        let key = deal.key();
        self.facts(deal, Some(at), RecordFacts::new(&key));
        let pipeline = pipeline
            .or_else(|| self.records.get(&key).and_then(|r| r.pipeline.clone()))
            .or_else(|| self.stored_pipelines.get(&key).cloned());
        let history = self
            .histories
            .entry((key.crm, key.object_id.clone()))
            .or_default();
        // Snapshots (Salesforce messages, API reads) repeat the current stage: only a change from
        // the stage in force at that time is history.
        let in_force = history
            .iter()
            .enumerate()
            .filter(|(_, h)| h.mapped && h.occurred_at <= at)
            .max_by_key(|(i, h)| (h.occurred_at, *i))
            .map(|(_, h)| h.stage_id.as_str());
        if in_force == Some(stage_id.as_str()) {
            return Outcome::processed();
        }
        let mapped = map_stage(
            self.settings,
            deal.crm,
            pipeline.as_deref(),
            &stage_id,
            is_won,
            is_closed,
        );
        match history
            .iter_mut()
            .find(|h| h.stage_id == stage_id && h.occurred_at == at)
        {
            Some(known) => known.mapped |= mapped.is_some(),
            None => history.push(HistoryEntry {
                stage_id: stage_id.clone(),
                mapped: mapped.is_some(),
                occurred_at: at,
            }),
        }
        let change = NewStageChange {
            crm: key.crm,
            deal_id: key.object_id.clone(),
            pipeline: pipeline.clone(),
            stage_id: stage_id.clone(),
            stage: mapped.map(|s| s.as_str().to_string()),
            occurred_at: at,
            inbox_event_id: event.id,
        };
        match self
            .stage_changes
            .get_mut(&(key.clone(), stage_id.clone(), at))
        {
            Some(known) => {
                known.stage = known.stage.take().or(change.stage);
                known.pipeline = known.pipeline.take().or(change.pipeline);
            }
            None => {
                self.stage_changes
                    .insert((key.clone(), stage_id.clone(), at), change);
            }
        }
        let Some(stage) = mapped else {
            return Outcome::unmapped(unmapped_reason(deal.crm, pipeline.as_deref(), &stage_id));
        };
        if stage == CanonicalStage::Won && self.settings.renewal_moments() {
            self.recheck(RecheckKind::Won, key.label(), None);
        }
        let reached = |yes: bool| yes.then_some(at);
        self.facts(
            deal,
            Some(at),
            RecordFacts {
                stage_id: Some(stage_id),
                stage: Some(stage.as_str().to_string()),
                stage_at: Some(at),
                qualified_at: reached(stage.is_qualified()),
                won_at: reached(stage == CanonicalStage::Won),
                lost_at: reached(stage == CanonicalStage::Lost),
                ..RecordFacts::new(&key)
            },
        );
        self.if_linked.push(IfLinked::Recheck(key));
        Outcome::processed()
    }

    fn recheck(&mut self, kind: RecheckKind, subject: String, detail: Option<String>) {
        // Rechecks read state, not events: one per subject per batch is enough (guards excepted:
        // each observed value is checked).
        if kind == RecheckKind::Guard || self.queued.insert((kind, subject.clone())) {
            self.rechecks.push(NewRecheck {
                kind,
                subject,
                detail,
            });
        }
    }

    // ---- writing -------------------------------------------------------------------------------

    /// One statement per table, in the same table order as the reconcile step (referrals before
    /// records), with rows in key order, so two transactions never wait on each other in a cycle.
    async fn write(mut self, tx: &mut Tx) -> Result<FactsApplied, StoreError> {
        let now = self.now;
        let referrers: Vec<ReferrerUpsert> =
            std::mem::take(&mut self.referrers).into_values().collect();
        tx.upsert_referrers(&referrers, now).await?;
        tx.insert_referrals(&self.new_referrals, now).await?;
        let fills: Vec<RefereeFill> = std::mem::take(&mut self.fills).into_values().collect();
        tx.fill_referees(&fills, now).await?;
        tx.insert_touches(&self.touches, now).await?;
        let records: Vec<RecordFacts> = std::mem::take(&mut self.records).into_values().collect();
        let linked: HashSet<RecordKey> = tx
            .apply_record_facts(&records, now)
            .await?
            .into_iter()
            .filter_map(|(key, referral)| referral.map(|_| key))
            .collect();
        for watch in std::mem::take(&mut self.if_linked) {
            match watch {
                IfLinked::Recheck(key) if linked.contains(&key) => {
                    self.recheck(RecheckKind::Record, key.label(), None)
                }
                IfLinked::Guard(key, detail) if linked.contains(&key) => self.recheck(
                    RecheckKind::Guard,
                    key.label(),
                    Some(serde_json::to_string(&detail).expect("plain data serialises")),
                ),
                _ => {}
            }
        }
        let associations: Vec<Association> = std::mem::take(&mut self.associations)
            .into_values()
            .collect();
        tx.apply_associations(&associations).await?;
        // A deal's people decide who its customers are (the baseline's participation).
        let mut deals: Vec<RecordKey> = associations
            .iter()
            .map(|a| RecordKey::new(a.crm, a.crm.deal_type(), &a.deal_id))
            .collect();
        deals.sort();
        deals.dedup();
        tx.mark_for_baseline(&deals).await?;
        let changes: Vec<NewStageChange> = std::mem::take(&mut self.stage_changes)
            .into_values()
            .collect();
        tx.append_stage_changes(&changes, now).await?;
        tx.insert_invoices(&self.invoices, now).await?;
        tx.insert_refunds(&self.refunds, now).await?;
        tx.insert_moments(&self.moments, now).await?;
        tx.queue_rechecks(&self.rechecks, now).await?;
        tx.enqueue_all(&self.outbox, now).await?;
        tx.set_outcomes(&self.outcomes, now).await?;
        Ok(FactsApplied {
            queued_reads: !self.outbox.is_empty(),
            outcomes: self.outcomes,
        })
    }
}

/// Config mapping first; for Salesforce, `IsWon`/`IsClosed` decide stages the config omits.
fn map_stage(
    settings: &Settings,
    crm: Crm,
    pipeline: Option<&str>,
    stage_id: &str,
    is_won: Option<bool>,
    is_closed: Option<bool>,
) -> Option<CanonicalStage> {
    let name = match crm {
        Crm::HubSpot => match pipeline {
            Some(p) => settings
                .hubspot
                .pipelines
                .get(p)
                .and_then(|m| m.get(stage_id)),
            // Pipeline not known yet: a stage id mapped the same way everywhere is unambiguous.
            None => {
                let found: Vec<&CanonicalStage> = settings
                    .hubspot
                    .pipelines
                    .values()
                    .filter_map(|m| m.get(stage_id))
                    .collect();
                found
                    .first()
                    .copied()
                    .filter(|first| found.iter().all(|f| f == first))
            }
        },
        Crm::Salesforce => settings.salesforce.stages.get(stage_id),
    };
    name.copied().or(match (is_won, is_closed) {
        (Some(true), _) => Some(CanonicalStage::Won),
        (_, Some(true)) => Some(CanonicalStage::Lost),
        _ => None,
    })
}

fn unmapped_reason(crm: Crm, pipeline: Option<&str>, stage_id: &str) -> String {
    match (crm, pipeline) {
        (Crm::HubSpot, Some(p)) => format!(
            "HubSpot stage `{stage_id}` of pipeline `{p}` has no mapping (add it under hubspot.pipelines.{p})"
        ),
        (Crm::HubSpot, None) => {
            format!("HubSpot stage `{stage_id}` is not in any hubspot.pipelines mapping")
        }
        (Crm::Salesforce, _) => format!(
            "Salesforce stage `{stage_id}` has no mapping (add it under salesforce.stages)"
        ),
    }
}

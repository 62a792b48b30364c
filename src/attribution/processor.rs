//! The inbox processor: takes stored events in arrival order and applies each one's consequences —
//! ledger changes plus the CRM writes they cause — in one transaction with the event's new status
//! (`processed`, `ignored`, `unmapped` or `failed` with the reason). On PostgreSQL an advisory lock
//! lets exactly one replica process at a time, so read-then-write rules (link a deal once its
//! contact is linked) never race. Order within a CRM record follows the CRM's occurrence time:
//! stage updates only move forward in time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::decode::{self, CrmChange, Decoded, GuardedNames, RecordKind, RecordRef};
use super::writeback;
use crate::clock::{Millis, SharedClock};
use crate::config::Settings;
use crate::domain::stage::CanonicalStage;
use crate::ingest::product::{
    PartnerData, ProductEvent, ProductPayload, ReferralData, ReferralSource,
};
use crate::rewards::engine as rewards;
use crate::store::{
    Attribution, CrmRecord, InboxEvent, InboxStatus, Milestone, NewAudit, RecordKey,
    RefereeDetails, ReferrerFacts, Store, StoreError, Tx,
};

/// Events handled per transaction.
const BATCH: i64 = 200;
/// Advisory-lock key of the inbox processor (any constant unique to this job).
const INBOX_LOCK: i64 = 0x7265_6673_796e_6301;

/// What processing decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: InboxStatus,
    pub reason: Option<String>,
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
}

#[derive(Clone)]
pub struct InboxProcessor {
    store: Store,
    settings: Arc<Settings>,
    clock: SharedClock,
    names: GuardedNames,
    wake: Arc<Notify>,
    outbox_wake: Option<Arc<Notify>>,
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
        }
    }

    /// Wake the outbox worker after each batch that may have queued CRM writes.
    pub fn notify_outbox(mut self, wake: Arc<Notify>) -> Self {
        self.outbox_wake = Some(wake);
        self
    }

    /// Process one batch; returns how many events it handled (0: nothing pending, or another
    /// replica holds the processor lock).
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let mut tx = self.store.begin().await?;
        if !tx.try_exclusive(INBOX_LOCK).await? {
            return Ok(0);
        }
        let events = tx.pending_inbox(BATCH).await?;
        let now = self.clock.now();
        for event in &events {
            tx.savepoint().await?;
            match self.apply(&mut tx, event, now).await {
                Ok(outcome) => {
                    tx.release_savepoint().await?;
                    tx.set_inbox_status(event.id, outcome.status, outcome.reason.as_deref(), now)
                        .await?;
                    metrics::counter!("inbox_processed_total", "status" => outcome.status.as_str())
                        .increment(1);
                    metrics::histogram!("inbox_processing_lag_seconds")
                        .record((now - event.received_at).max(0) as f64 / 1000.0);
                }
                Err(e) => {
                    tx.rollback_to_savepoint().await?;
                    tracing::warn!(event = event.id, error = %e, "inbox event failed");
                    tx.set_inbox_status(event.id, InboxStatus::Failed, Some(&e.to_string()), now)
                        .await?;
                    metrics::counter!("inbox_processed_total", "status" => "failed").increment(1);
                }
            }
        }
        tx.commit().await?;
        if !events.is_empty() {
            if let Some(wake) = &self.outbox_wake {
                wake.notify_one();
            }
        }
        Ok(events.len())
    }

    /// Process until nothing is pending (tests and `replay`).
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.tick().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// The background loop: process, then wait for new events (or poll, for other replicas' ingest).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let handled = match self.tick().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = ?e, "inbox processing failed; retrying");
                    0
                }
            };
            if handled > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {},
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
            }
        }
    }

    async fn apply(
        &self,
        tx: &mut Tx,
        event: &InboxEvent,
        now: Millis,
    ) -> Result<Outcome, ApplyError> {
        match decode::decode(event, &self.names).map_err(|e| ApplyError::Invalid(e.to_string()))? {
            Decoded::Ignore(reason) => Ok(Outcome::ignored(reason)),
            Decoded::Product(product) => self.apply_product(tx, event, product, now).await,
            Decoded::Crm { at, changes } => {
                let mut outcome = Outcome::processed();
                for change in changes {
                    let step = self.apply_crm(tx, event, change, at, now).await?;
                    if step.status != InboxStatus::Processed {
                        outcome = step;
                    }
                }
                Ok(outcome)
            }
        }
    }

    // ---- product events ----------------------------------------------------------------------

    async fn apply_product(
        &self,
        tx: &mut Tx,
        event: &InboxEvent,
        product: ProductEvent,
        now: Millis,
    ) -> Result<Outcome, ApplyError> {
        let at = product.occurred_at_ms;
        match product.payload {
            ProductPayload::PartnerInvited(p) => {
                tx.upsert_referrer(&referrer_facts(&p), false, at, now)
                    .await?;
                Ok(Outcome::processed())
            }
            ProductPayload::PartnerJoined(p) => {
                tx.upsert_referrer(&referrer_facts(&p), true, at, now)
                    .await?;
                Ok(Outcome::processed())
            }
            ProductPayload::ReferralCreated(d) => {
                self.claim(
                    tx,
                    event,
                    "referral.created",
                    d,
                    ReferralSource::Intro,
                    at,
                    now,
                )
                .await
            }
            ProductPayload::SignupCreated(d) => {
                self.claim(
                    tx,
                    event,
                    "signup.created",
                    d,
                    ReferralSource::Code,
                    at,
                    now,
                )
                .await
            }
            ProductPayload::SignupActivated(a) => match tx.referral_by_email(&a.email).await? {
                Some(r) => {
                    tx.set_referral_milestone(&r.id, Milestone::Activated, at)
                        .await?;
                    Ok(Outcome::processed())
                }
                None => Ok(Outcome::ignored("activation for an email with no referral")),
            },
            ProductPayload::Unknown => Ok(Outcome::ignored(format!(
                "unknown event type {}",
                event.event_type
            ))),
        }
    }

    /// A referral claim: the first for an email becomes its write-once first touch; any later
    /// claim is kept as a touch with outcome `kept_original`.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        tx: &mut Tx,
        event: &InboxEvent,
        kind: &str,
        d: ReferralData,
        default_source: ReferralSource,
        at: Millis,
        now: Millis,
    ) -> Result<Outcome, ApplyError> {
        let referrer = match &d.referral_code {
            Some(code) => tx.referrer(code).await?,
            None => None,
        };
        let claimed = Attribution {
            referrer_code: d.referral_code.clone(),
            source: Some(d.source.unwrap_or(default_source).as_str().to_string()),
            market: d
                .market
                .clone()
                .or_else(|| referrer.as_ref().and_then(|r| r.market.clone()))
                .or_else(|| Some(self.settings.rewards.default_market.clone())),
            first_touch_at: at,
        };
        let details = RefereeDetails {
            name: d.name.clone(),
            company: d.company.clone(),
            utm: (!d.utm.is_empty()).then(|| serde_json::to_string(&d.utm).unwrap_or_default()),
            ip: d.ip.map(|ip| ip.to_string()),
            signed_up_at: (kind == "signup.created").then_some(at),
        };
        let existing = tx.referral_by_email(&d.email).await?;
        let referral = match existing {
            Some(r) => {
                tx.insert_touch(&r.id, Some(event.id), kind, &claimed, "kept_original", now)
                    .await?;
                tx.fill_referee_details(&r.id, &details, now).await?;
                return Ok(Outcome::processed());
            }
            None if claimed.referrer_code.is_none() => {
                return Ok(Outcome::ignored(
                    "signup without a referral code and no earlier referral for this email",
                ));
            }
            None => {
                let (referral, new) = tx.insert_referral(&d.email, &claimed, now).await?;
                let outcome = if new { "first_touch" } else { "kept_original" };
                tx.insert_touch(&referral.id, Some(event.id), kind, &claimed, outcome, now)
                    .await?;
                tx.fill_referee_details(&referral.id, &details, now).await?;
                referral
            }
        };
        // People the CRMs already told us about get linked now.
        for person in tx.people_by_email(&referral.email).await? {
            self.link_person(tx, &person, now).await?;
        }
        Ok(Outcome::processed())
    }

    // ---- CRM changes -------------------------------------------------------------------------

    async fn apply_crm(
        &self,
        tx: &mut Tx,
        event: &InboxEvent,
        change: CrmChange,
        at: Millis,
        now: Millis,
    ) -> Result<Outcome, ApplyError> {
        match change {
            CrmChange::Upsert {
                record,
                created_at,
                email,
                parent_id,
            } => {
                let email = email.map(|e| crate::ingest::product::normalize_email(&e));
                let stored = tx
                    .upsert_record(
                        &key(&record),
                        &record.account,
                        created_at,
                        email.as_deref(),
                        parent_id.as_deref(),
                        now,
                    )
                    .await?;
                match record.kind {
                    RecordKind::Person => self.link_person(tx, &stored, now).await?,
                    RecordKind::Deal => self.link_deal(tx, &stored, now).await?,
                }
            }
            CrmChange::Stage {
                deal,
                pipeline,
                stage_id,
                is_won,
                is_closed,
            } => {
                return self
                    .apply_stage(
                        tx, event, &deal, pipeline, &stage_id, is_won, is_closed, at, now,
                    )
                    .await;
            }
            CrmChange::DealFields {
                deal,
                pipeline,
                amount,
                currency,
            } => {
                let k = key(&deal);
                tx.upsert_record(&k, &deal.account, None, None, None, now)
                    .await?;
                tx.set_deal_fields(
                    &k,
                    pipeline.as_deref(),
                    amount.as_deref(),
                    currency.as_deref(),
                    now,
                )
                .await?;
            }
            CrmChange::Associate {
                crm,
                deal_id,
                person_id,
                removed,
            } => {
                tx.set_association(crm.as_str(), &deal_id, &person_id, removed, at)
                    .await?;
                if !removed {
                    let deal_type = if crm == decode::Crm::HubSpot {
                        "deal"
                    } else {
                        "Opportunity"
                    };
                    let k = RecordKey {
                        crm: crm.as_str().into(),
                        object_type: deal_type.into(),
                        object_id: deal_id,
                    };
                    let deal = tx.upsert_record(&k, "", None, None, None, now).await?;
                    self.link_deal(tx, &deal, now).await?;
                }
            }
            CrmChange::DealAccount { deal, account_id } => {
                let k = key(&deal);
                tx.upsert_record(&k, &deal.account, None, None, None, now)
                    .await?;
                tx.set_parent(&k, &account_id).await?;
                if let Some(stored) = tx.record(&k).await? {
                    self.link_deal(tx, &stored, now).await?;
                }
            }
            CrmChange::GuardedValue {
                record,
                value,
                change_source,
            } => {
                self.guard(tx, &record, value, change_source, now).await?;
            }
            CrmChange::Deleted { record } => tx.mark_deleted(&key(&record), Some(at)).await?,
            CrmChange::Restored { record } => tx.mark_deleted(&key(&record), None).await?,
            CrmChange::Merged {
                primary,
                merged_ids,
            } => self.merge(tx, &primary, &merged_ids, now).await?,
            CrmChange::NeedsRead { record } => {
                tx.enqueue(&writeback::read_record(&record), now).await?;
            }
        }
        Ok(Outcome::processed())
    }

    /// Link a person to the referral of its email (if any) and pass the link on to its deals.
    async fn link_person(
        &self,
        tx: &mut Tx,
        person: &CrmRecord,
        now: Millis,
    ) -> Result<(), ApplyError> {
        let Some(email) = person.email.as_deref() else {
            return Ok(());
        };
        let Some(referral) = tx.referral_by_email(&email.to_lowercase()).await? else {
            return Ok(());
        };
        // A person already carrying an earlier first touch (e.g. from a merge) keeps it.
        let keeps_earlier = person.referral_id.is_some()
            && person
                .first_touch_at
                .is_some_and(|t| t <= referral.first_touch_at);
        if person.referral_id.as_deref() != Some(referral.id.as_str()) && !keeps_earlier {
            let attribution = referral.attribution();
            tx.link_record(&person.key(), &referral.id, &attribution, now)
                .await?;
            let write = writeback::context_write(tx, &self.settings, person, &attribution).await?;
            tx.enqueue(&write, now).await?;
        }
        for deal_id in tx.person_deals(&person.crm, &person.object_id).await? {
            let k = RecordKey {
                crm: person.crm.clone(),
                object_type: deal_type(&person.crm).into(),
                object_id: deal_id,
            };
            if let Some(deal) = tx.record(&k).await? {
                self.link_deal(tx, &deal, now).await?;
            }
        }
        if let Some(account) = person.parent_id.as_deref() {
            for deal in tx.deals_of_account(&person.crm, account).await? {
                self.link_deal(tx, &deal, now).await?;
            }
        }
        Ok(())
    }

    /// Link a deal to the earliest first touch among its people; the deal keeps a frozen copy.
    async fn link_deal(
        &self,
        tx: &mut Tx,
        deal: &CrmRecord,
        now: Millis,
    ) -> Result<(), ApplyError> {
        if deal.deleted_at.is_some() {
            return Ok(());
        }
        let mut people = Vec::new();
        for person_id in tx.deal_people(&deal.crm, &deal.object_id).await? {
            for object_type in person_types(&deal.crm) {
                let k = RecordKey {
                    crm: deal.crm.clone(),
                    object_type: (*object_type).into(),
                    object_id: person_id.clone(),
                };
                if let Some(p) = tx.record(&k).await? {
                    people.push(p);
                }
            }
        }
        if let Some(account) = deal.parent_id.as_deref() {
            people.extend(tx.people_of_account(&deal.crm, account).await?);
        }
        let mut earliest: Option<crate::store::Referral> = None;
        for person in people {
            let Some(referral_id) = person.referral_id.as_deref() else {
                continue;
            };
            if let Some(r) = tx.referral(referral_id).await? {
                if earliest
                    .as_ref()
                    .is_none_or(|e| r.first_touch_at < e.first_touch_at)
                {
                    earliest = Some(r);
                }
            }
        }
        let Some(referral) = earliest else {
            return Ok(());
        };
        match deal.referral_id.as_deref() {
            Some(current) if current == referral.id => return Ok(()),
            Some(current) => {
                // Only an earlier first touch may take over a linked deal.
                let current_first = deal.first_touch_at.unwrap_or(Millis::MAX);
                if referral.first_touch_at >= current_first {
                    return Ok(());
                }
                tx.audit(
                    &NewAudit {
                        actor: "system",
                        action: "deal_relinked",
                        entity_type: "crm_record",
                        entity_id: &record_label(deal),
                        old_value: Some(current.to_string()),
                        new_value: Some(referral.id.clone()),
                        reason: Some("a contact with an earlier first touch joined the deal"),
                    },
                    now,
                )
                .await?;
            }
            None => {}
        }
        let attribution = referral.attribution();
        tx.link_record(&deal.key(), &referral.id, &attribution, now)
            .await?;
        let write = writeback::context_write(tx, &self.settings, deal, &attribution).await?;
        tx.enqueue(&write, now).await?;
        // A deal linked after it moved (e.g. associated late) still gets its milestones and reward.
        if let Some(stage) = deal
            .stage
            .as_deref()
            .and_then(|s| s.parse::<CanonicalStage>().ok())
        {
            let at = deal.stage_occurred_at.unwrap_or(now);
            if stage == CanonicalStage::Won {
                tx.set_referral_milestone(&referral.id, Milestone::Won, at)
                    .await?;
            }
            if let Some(linked) = tx.record(&deal.key()).await? {
                rewards::on_deal_stage(tx, &self.settings, &linked, stage, at, now).await?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_stage(
        &self,
        tx: &mut Tx,
        event: &InboxEvent,
        deal: &RecordRef,
        pipeline: Option<String>,
        stage_id: &str,
        is_won: Option<bool>,
        is_closed: Option<bool>,
        at: Millis,
        now: Millis,
    ) -> Result<Outcome, ApplyError> {
        let k = key(deal);
        let stored = tx
            .upsert_record(&k, &deal.account, None, None, None, now)
            .await?;
        let pipeline = pipeline.or(stored.pipeline.clone());
        // Snapshots (Salesforce messages, API reads) repeat the current stage: only a change
        // from the stage in force at that time is history.
        if tx.stage_at(&k.crm, &k.object_id, at).await?.as_deref() == Some(stage_id) {
            return Ok(Outcome::processed());
        }
        let mapped = self.map_stage(deal.crm, pipeline.as_deref(), stage_id, is_won, is_closed);
        let stage_name = mapped.map(|s| s.as_str());
        tx.record_stage_change(
            &k.crm,
            &k.object_id,
            pipeline.as_deref(),
            stage_id,
            stage_name,
            at,
            event.id,
            now,
        )
        .await?;
        let Some(stage) = mapped else {
            return Ok(Outcome::unmapped(match (deal.crm, pipeline) {
                (decode::Crm::HubSpot, Some(p)) => format!(
                    "HubSpot stage `{stage_id}` of pipeline `{p}` has no mapping (add it under hubspot.pipelines.{p})"
                ),
                (decode::Crm::HubSpot, None) => format!(
                    "HubSpot stage `{stage_id}` is not in any hubspot.pipelines mapping"
                ),
                (decode::Crm::Salesforce, _) => format!(
                    "Salesforce stage `{stage_id}` has no mapping (add it under salesforce.stages)"
                ),
            }));
        };
        let moved = tx
            .set_stage_if_newer(&k, stage_id, stage.as_str(), at, now)
            .await?;
        if let (true, Some(referral_id)) = (moved, stored.referral_id.as_deref()) {
            if stage >= CanonicalStage::Qualified && stage != CanonicalStage::Lost {
                tx.set_referral_milestone(referral_id, Milestone::Qualified, at)
                    .await?;
            }
            if stage == CanonicalStage::Won {
                tx.set_referral_milestone(referral_id, Milestone::Won, at)
                    .await?;
            }
            if let Some(deal) = tx.record(&k).await? {
                rewards::on_deal_stage(tx, &self.settings, &deal, stage, at, now).await?;
            }
        }
        Ok(Outcome::processed())
    }

    /// Config mapping first; for Salesforce, `IsWon`/`IsClosed` decide stages the config omits.
    fn map_stage(
        &self,
        crm: decode::Crm,
        pipeline: Option<&str>,
        stage_id: &str,
        is_won: Option<bool>,
        is_closed: Option<bool>,
    ) -> Option<CanonicalStage> {
        let name = match crm {
            decode::Crm::HubSpot => match pipeline {
                Some(p) => self
                    .settings
                    .hubspot
                    .pipelines
                    .get(p)
                    .and_then(|m| m.get(stage_id)),
                // Pipeline not known yet: a stage id mapped the same way everywhere is unambiguous.
                None => {
                    let found: Vec<&String> = self
                        .settings
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
            decode::Crm::Salesforce => self.settings.salesforce.stages.get(stage_id),
        };
        name.and_then(|n| n.parse().ok())
            .or(match (is_won, is_closed) {
                (Some(true), _) => Some(CanonicalStage::Won),
                (_, Some(true)) => Some(CanonicalStage::Lost),
                _ => None,
            })
    }

    /// Tamper guard: a linked record showing another referral source gets the recorded one back.
    async fn guard(
        &self,
        tx: &mut Tx,
        record: &RecordRef,
        observed: Option<String>,
        change_source: Option<String>,
        now: Millis,
    ) -> Result<(), ApplyError> {
        let k = key(record);
        let Some(stored) = tx.record(&k).await? else {
            return Ok(());
        };
        if stored.referral_id.is_none() || observed == stored.source {
            return Ok(()); // not ours to guard, or our own value echoed back
        }
        // Before our first write lands the field is simply empty: that is not tampering.
        if observed.is_none()
            && tx
                .has_pending_outbox(&k, writeback::UPDATE_PROPERTIES)
                .await?
        {
            return Ok(());
        }
        let recorded = stored.source.clone().unwrap_or_default();
        tx.enqueue(
            &writeback::restore_write(&self.settings, &stored, &recorded),
            now,
        )
        .await?;
        let actor = format!("crm:{}", change_source.as_deref().unwrap_or("unknown"));
        tx.audit(
            &NewAudit {
                actor: &actor,
                action: "tamper_restored",
                entity_type: "crm_record",
                entity_id: &record_label(&stored),
                old_value: observed,
                new_value: Some(recorded),
                reason: Some("referral source is write-once"),
            },
            now,
        )
        .await?;
        metrics::counter!("tamper_restores_total", "crm" => record.crm.as_str()).increment(1);
        Ok(())
    }

    /// Merged records keep the earliest first touch among them.
    async fn merge(
        &self,
        tx: &mut Tx,
        primary: &RecordRef,
        merged_ids: &[String],
        now: Millis,
    ) -> Result<(), ApplyError> {
        let pk = key(primary);
        tx.upsert_record(&pk, &primary.account, None, None, None, now)
            .await?;
        for id in merged_ids {
            let mk = RecordKey {
                object_id: id.clone(),
                ..pk.clone()
            };
            let Some(merged) = tx.record(&mk).await? else {
                continue;
            };
            tx.mark_merged(&mk, &primary.id).await?;
            match primary.kind {
                RecordKind::Person => {
                    for deal_id in tx.person_deals(&pk.crm, id).await? {
                        tx.set_association(&pk.crm, &deal_id, &primary.id, false, now)
                            .await?;
                    }
                }
                RecordKind::Deal => {
                    for person_id in tx.deal_people(&pk.crm, id).await? {
                        tx.set_association(&pk.crm, &primary.id, &person_id, false, now)
                            .await?;
                    }
                    for moved in tx.move_deal_rewards(&pk.crm, id, &primary.id, now).await? {
                        tx.audit(
                            &NewAudit {
                                actor: "system",
                                action: "reward_moved",
                                entity_type: "reward",
                                entity_id: &moved.id,
                                old_value: Some(id.clone()),
                                new_value: Some(primary.id.clone()),
                                reason: Some("the deal was merged"),
                            },
                            now,
                        )
                        .await?;
                    }
                }
            }
            let current = tx
                .record(&pk)
                .await?
                .ok_or_else(|| ApplyError::Invalid("merge target vanished".into()))?;
            let (Some(merged_referral), Some(merged_first)) =
                (merged.referral_id.as_deref(), merged.first_touch_at)
            else {
                continue;
            };
            if current.first_touch_at.is_some_and(|t| t <= merged_first) {
                continue;
            }
            let Some(referral) = tx.referral(merged_referral).await? else {
                continue;
            };
            let attribution = Attribution {
                first_touch_at: merged_first,
                ..referral.attribution()
            };
            tx.link_record(&pk, &referral.id, &attribution, now).await?;
            tx.audit(
                &NewAudit {
                    actor: "system",
                    action: "merge_kept_earliest",
                    entity_type: "crm_record",
                    entity_id: &record_label(&current),
                    old_value: current.referral_id.clone(),
                    new_value: Some(referral.id.clone()),
                    reason: Some("merged records keep the earliest first touch"),
                },
                now,
            )
            .await?;
            let write =
                writeback::context_write(tx, &self.settings, &current, &attribution).await?;
            tx.enqueue(&write, now).await?;
        }
        if let Some(stored) = tx.record(&pk).await? {
            match primary.kind {
                RecordKind::Person => self.link_person(tx, &stored, now).await?,
                RecordKind::Deal => self.link_deal(tx, &stored, now).await?,
            }
        }
        Ok(())
    }
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(String),
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
}

fn referrer_facts(p: &PartnerData) -> ReferrerFacts {
    ReferrerFacts {
        code: p.code.clone(),
        name: p.name.clone(),
        email: p.email.clone(),
        company_domain: p.company_domain.clone(),
        market: p.market.clone(),
        kind: p.kind.as_str().to_string(),
    }
}

fn key(r: &RecordRef) -> RecordKey {
    RecordKey {
        crm: r.crm.as_str().into(),
        object_type: r.object_type.clone(),
        object_id: r.id.clone(),
    }
}

fn deal_type(crm: &str) -> &'static str {
    if crm == "hubspot" {
        "deal"
    } else {
        "Opportunity"
    }
}

fn person_types(crm: &str) -> &'static [&'static str] {
    if crm == "hubspot" {
        &["contact"]
    } else {
        &["Contact", "Lead"]
    }
}

fn record_label(r: &CrmRecord) -> String {
    format!("{}:{}:{}", r.crm, r.object_type, r.object_id)
}

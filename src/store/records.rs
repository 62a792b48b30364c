//! CRM records (contacts, leads, deals, opportunities), deal ↔ person associations and the deals'
//! append-only stage history. Facts arrive from the inbox processor a batch at a time and are
//! written with one statement per table ([`Tx::apply_record_facts`] and friends); the links to
//! referrals are written by the reconcile step ([`Tx::link_records`]).

use serde::Serialize;

use super::bulk::{self, Col, Param};
use super::tx::{on_tx, Tx};
use super::{on_pool, qualified, BackendKind, Store, StoreError};
use crate::clock::Millis;
use crate::domain::Crm;
use crate::store::referrals::Attribution;

/// A CRM record. For deals, the attribution columns are the frozen copy taken at link time.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CrmRecord {
    pub crm: Crm,
    pub object_type: String,
    pub object_id: String,
    pub account: String,
    pub referral_id: Option<String>,
    pub email: Option<String>,
    pub referrer_code: Option<String>,
    pub source: Option<String>,
    pub market: Option<String>,
    pub first_touch_at: Option<i64>,
    pub linked_at: Option<i64>,
    pub pipeline: Option<String>,
    pub stage_id: Option<String>,
    pub stage: Option<String>,
    pub stage_occurred_at: Option<i64>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub parent_id: Option<String>,
    pub merged_into: Option<String>,
    pub deleted_at: Option<i64>,
    pub crm_created_at: Option<i64>,
    /// Salesforce `Opportunity.Type`.
    pub deal_type: Option<String>,
    /// Where a deal came from as the CRM says it (HubSpot `hs_analytics_source`, Salesforce
    /// `LeadSource`).
    pub crm_source: Option<String>,
    /// When a deal first reached `qualified` (or beyond), `won` and `lost`, in CRM time.
    pub qualified_at: Option<i64>,
    pub won_at: Option<i64>,
    pub lost_at: Option<i64>,
    /// A person's first win among their live deals (kept by the baseline's refresh).
    pub customer_since: Option<i64>,
}

/// Identifies a CRM record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, sqlx::FromRow)]
pub struct RecordKey {
    pub crm: Crm,
    pub object_type: String,
    pub object_id: String,
}

impl RecordKey {
    pub fn new(crm: Crm, object_type: &str, object_id: &str) -> Self {
        Self {
            crm,
            object_type: object_type.to_string(),
            object_id: object_id.to_string(),
        }
    }

    /// `crm:object_type:object_id`, as audited and queued.
    pub fn label(&self) -> String {
        format!("{}:{}:{}", self.crm, self.object_type, self.object_id)
    }

    /// The inverse of [`RecordKey::label`].
    pub fn parse_label(label: &str) -> Option<Self> {
        let mut parts = label.splitn(3, ':');
        let (crm, object_type, object_id) = (parts.next()?, parts.next()?, parts.next()?);
        let crm = crm.parse().ok()?;
        (!object_type.is_empty() && !object_id.is_empty()).then(|| Self {
            crm,
            object_type: object_type.to_string(),
            object_id: object_id.to_string(),
        })
    }
}

impl CrmRecord {
    /// A record known by its key and account only, everything else not (yet) read.
    pub fn bare(key: RecordKey, account: &str) -> Self {
        Self {
            crm: key.crm,
            object_type: key.object_type,
            object_id: key.object_id,
            account: account.to_string(),
            referral_id: None,
            email: None,
            referrer_code: None,
            source: None,
            market: None,
            first_touch_at: None,
            linked_at: None,
            pipeline: None,
            stage_id: None,
            stage: None,
            stage_occurred_at: None,
            amount: None,
            currency: None,
            parent_id: None,
            merged_into: None,
            deleted_at: None,
            crm_created_at: None,
            deal_type: None,
            crm_source: None,
            qualified_at: None,
            won_at: None,
            lost_at: None,
            customer_since: None,
        }
    }

    pub fn key(&self) -> RecordKey {
        RecordKey {
            crm: self.crm,
            object_type: self.object_type.clone(),
            object_id: self.object_id.clone(),
        }
    }

    /// The attribution copy this record carries, when it is linked.
    pub fn attribution(&self) -> Option<(String, Attribution)> {
        let referral_id = self.referral_id.clone()?;
        Some((
            referral_id,
            Attribution {
                referrer_code: self.referrer_code.clone(),
                source: self.source.clone(),
                market: self.market.clone(),
                first_touch_at: self.first_touch_at?,
            },
        ))
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StageChange {
    pub id: i64,
    pub crm: Crm,
    pub deal_id: String,
    pub pipeline: Option<String>,
    pub stage_id: String,
    pub stage: Option<String>,
    pub occurred_at: i64,
    pub recorded_at: i64,
}

/// What a batch of events said about one record; `None` means "not mentioned". Applied with the
/// rules of [`Tx::apply_record_facts`].
#[derive(Debug, Clone, Serialize)]
pub struct RecordFacts {
    pub crm: Crm,
    pub object_type: String,
    pub object_id: String,
    /// Portal or org id; empty when the events did not say.
    pub account: String,
    pub email: Option<String>,
    pub parent_id: Option<String>,
    pub crm_created_at: Option<Millis>,
    /// The earliest CRM time of an event about the record: a deal's creation time when the CRM
    /// never said it (a deal first heard of by a stage change), so no deal is won before it was
    /// created.
    pub seen_at: Option<Millis>,
    pub pipeline: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub deal_type: Option<String>,
    pub crm_source: Option<String>,
    /// The latest mapped stage in CRM time, with its time.
    pub stage_id: Option<String>,
    pub stage: Option<String>,
    pub stage_at: Option<Millis>,
    /// The first times (in CRM time) the deal reached `qualified` or beyond, `won`, `lost`.
    pub qualified_at: Option<Millis>,
    pub won_at: Option<Millis>,
    pub lost_at: Option<Millis>,
    /// `Some(Some(t))` deleted at `t`, `Some(None)` restored.
    #[serde(skip)]
    pub deleted: Option<Option<Millis>>,
    pub merged_into: Option<String>,
}

impl RecordFacts {
    pub fn new(key: &RecordKey) -> Self {
        Self {
            crm: key.crm,
            object_type: key.object_type.clone(),
            object_id: key.object_id.clone(),
            account: String::new(),
            email: None,
            parent_id: None,
            crm_created_at: None,
            seen_at: None,
            pipeline: None,
            amount: None,
            currency: None,
            deal_type: None,
            stage_id: None,
            stage: None,
            stage_at: None,
            crm_source: None,
            qualified_at: None,
            won_at: None,
            lost_at: None,
            deleted: None,
            merged_into: None,
        }
    }

    pub fn key(&self) -> RecordKey {
        RecordKey {
            crm: self.crm,
            object_type: self.object_type.clone(),
            object_id: self.object_id.clone(),
        }
    }

    /// Add what a later event says: later values win, except the creation time (the first one
    /// known stays), the earliest event time, the stage (the latest in CRM time wins) and the times a stage was first
    /// reached (the earliest wins).
    pub fn absorb(&mut self, later: RecordFacts) {
        if !later.account.is_empty() {
            self.account = later.account;
        }
        self.email = later.email.or(self.email.take());
        self.parent_id = later.parent_id.or(self.parent_id.take());
        self.crm_created_at = self.crm_created_at.or(later.crm_created_at);
        self.pipeline = later.pipeline.or(self.pipeline.take());
        self.amount = later.amount.or(self.amount.take());
        self.currency = later.currency.or(self.currency.take());
        self.deal_type = later.deal_type.or(self.deal_type.take());
        self.crm_source = later.crm_source.or(self.crm_source.take());
        let earliest = |a: Option<Millis>, b: Option<Millis>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.seen_at = earliest(self.seen_at, later.seen_at);
        self.qualified_at = earliest(self.qualified_at, later.qualified_at);
        self.won_at = earliest(self.won_at, later.won_at);
        self.lost_at = earliest(self.lost_at, later.lost_at);
        if let Some(at) = later.stage_at {
            if self.stage_at.is_none_or(|current| current <= at) {
                self.stage_id = later.stage_id;
                self.stage = later.stage;
                self.stage_at = Some(at);
            }
        }
        if later.deleted.is_some() {
            self.deleted = later.deleted;
        }
        self.merged_into = later.merged_into.or(self.merged_into.take());
    }
}

/// A deal ↔ person association as the CRM reported it at `occurred_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Association {
    pub crm: Crm,
    pub deal_id: String,
    pub contact_id: String,
    pub removed: bool,
    pub occurred_at: Millis,
}

/// A stage change to append to a deal's history.
#[derive(Debug, Clone, Serialize)]
pub struct NewStageChange {
    pub crm: Crm,
    pub deal_id: String,
    pub pipeline: Option<String>,
    pub stage_id: String,
    /// The canonical stage, `None` while the stage is unmapped.
    pub stage: Option<String>,
    pub occurred_at: Millis,
    pub inbox_event_id: i64,
}

/// A (re)link of a record to a referral, with the attribution copy it takes.
#[derive(Debug, Clone, Serialize)]
pub struct RecordLink {
    pub crm: Crm,
    pub object_type: String,
    pub object_id: String,
    pub referral_id: String,
    pub referrer_code: Option<String>,
    pub source: Option<String>,
    pub market: Option<String>,
    pub first_touch_at: Millis,
}

impl RecordLink {
    pub fn new(key: &RecordKey, referral_id: &str, a: &Attribution) -> Self {
        Self {
            crm: key.crm,
            object_type: key.object_type.clone(),
            object_id: key.object_id.clone(),
            referral_id: referral_id.to_string(),
            referrer_code: a.referrer_code.clone(),
            source: a.source.clone(),
            market: a.market.clone(),
            first_touch_at: a.first_touch_at,
        }
    }
}

/// The facts of a deal as they were when [`Tx::link_records`] wrote its link, so the caller can
/// tell whether a concurrent batch changed them after it read them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LinkedFacts {
    pub crm: Crm,
    pub object_type: String,
    pub object_id: String,
    pub stage_occurred_at: Option<i64>,
    pub amount: Option<String>,
    pub deleted_at: Option<i64>,
}

pub(super) const RECORD_COLUMNS: &str =
    "crm, object_type, object_id, account, referral_id, email, \
     referrer_code, source, market, first_touch_at, linked_at, pipeline, stage_id, stage, \
     stage_occurred_at, amount, currency, parent_id, merged_into, deleted_at, crm_created_at, \
     deal_type, crm_source, qualified_at, won_at, lost_at, customer_since";

/// True for a deal's row: written wherever a statement sets `baseline_dirty`, so the channel
/// baseline's rollup ([`super::baseline`]) looks at it again. People are marked when they are
/// deleted or merged away (their customer facts end).
const IS_DEAL: &str = "object_type IN ('deal', 'Opportunity')";

pub(super) const KEY_COLUMNS: [(&str, Col); 3] = [
    ("crm", Col::Text),
    ("object_type", Col::Text),
    ("object_id", Col::Text),
];

#[derive(Serialize)]
struct CrmIds<'a> {
    crm: &'a str,
    id: &'a str,
}

impl Tx {
    /// Create records or add facts to them, one statement for the whole batch (`facts` has one
    /// entry per record, see [`RecordFacts::absorb`]). Known facts are kept unless a fact replaces
    /// them; the current stage moves only forward in CRM time; the first times a stage was
    /// reached only move earlier. A deal's row is marked for the baseline rollup. Returns each record's link as it
    /// is after the write — on PostgreSQL after any concurrent link of the same row committed —
    /// so the caller can queue derived work for linked records.
    pub async fn apply_record_facts(
        &mut self,
        facts: &[RecordFacts],
        now: Millis,
    ) -> Result<Vec<(RecordKey, Option<String>)>, StoreError> {
        if facts.is_empty() {
            return Ok(Vec::new());
        }
        // The first time a stage was reached: the earlier of what is known and what is new.
        let earliest = |column: &str| {
            format!(
                "CASE WHEN crm_records.{column} IS NULL OR excluded.{column} < crm_records.{column} \
                 THEN COALESCE(excluded.{column}, crm_records.{column}) ELSE crm_records.{column} END"
            )
        };
        let linked: Vec<(Crm, String, String, Option<String>)> = self.bulk_fetch(
            &format!(
                "INSERT INTO crm_records (crm, object_type, object_id, account, email, parent_id, \
                 crm_created_at, pipeline, amount, currency, deal_type, crm_source, stage_id, \
                 stage, stage_occurred_at, qualified_at, won_at, lost_at, merged_into, \
                 baseline_dirty, created_at, updated_at) \
             SELECT r.crm, r.object_type, r.object_id, COALESCE(r.account, ''), r.email, \
                 r.parent_id, CASE WHEN r.{IS_DEAL} THEN COALESCE(r.crm_created_at, r.seen_at) \
                     ELSE r.crm_created_at END, r.pipeline, r.amount, r.currency, r.deal_type, \
                 r.crm_source, r.stage_id, r.stage, r.stage_at, r.qualified_at, r.won_at, \
                 r.lost_at, r.merged_into, r.{IS_DEAL} OR r.merged_into IS NOT NULL, $2, $2 \
             FROM {{rows}} WHERE true \
             ON CONFLICT (crm, object_type, object_id) DO UPDATE SET \
                 account = CASE WHEN excluded.account <> '' THEN excluded.account \
                     ELSE crm_records.account END, \
                 email = COALESCE(excluded.email, crm_records.email), \
                 parent_id = COALESCE(excluded.parent_id, crm_records.parent_id), \
                 crm_created_at = {crm_created_at}, \
                 pipeline = COALESCE(excluded.pipeline, crm_records.pipeline), \
                 amount = COALESCE(excluded.amount, crm_records.amount), \
                 currency = COALESCE(excluded.currency, crm_records.currency), \
                 deal_type = COALESCE(excluded.deal_type, crm_records.deal_type), \
                 crm_source = COALESCE(excluded.crm_source, crm_records.crm_source), \
                 stage_id = CASE WHEN excluded.stage_occurred_at >= COALESCE(crm_records.stage_occurred_at, excluded.stage_occurred_at) \
                     THEN excluded.stage_id ELSE crm_records.stage_id END, \
                 stage = CASE WHEN excluded.stage_occurred_at >= COALESCE(crm_records.stage_occurred_at, excluded.stage_occurred_at) \
                     THEN excluded.stage ELSE crm_records.stage END, \
                 stage_occurred_at = CASE WHEN excluded.stage_occurred_at >= COALESCE(crm_records.stage_occurred_at, excluded.stage_occurred_at) \
                     THEN excluded.stage_occurred_at ELSE crm_records.stage_occurred_at END, \
                 qualified_at = {qualified_at}, won_at = {won_at}, lost_at = {lost_at}, \
                 merged_into = COALESCE(excluded.merged_into, crm_records.merged_into), \
                 baseline_dirty = crm_records.baseline_dirty OR excluded.baseline_dirty, \
                 updated_at = excluded.updated_at \
             RETURNING crm, object_type, object_id, referral_id",
                crm_created_at = earliest("crm_created_at"),
                qualified_at = earliest("qualified_at"),
                won_at = earliest("won_at"),
                lost_at = earliest("lost_at"),
            ),
            &[
                ("crm", Col::Text),
                ("object_type", Col::Text),
                ("object_id", Col::Text),
                ("account", Col::Text),
                ("email", Col::Text),
                ("parent_id", Col::Text),
                ("crm_created_at", Col::BigInt),
                ("seen_at", Col::BigInt),
                ("pipeline", Col::Text),
                ("amount", Col::Text),
                ("currency", Col::Text),
                ("deal_type", Col::Text),
                ("crm_source", Col::Text),
                ("stage_id", Col::Text),
                ("stage", Col::Text),
                ("stage_at", Col::BigInt),
                ("qualified_at", Col::BigInt),
                ("won_at", Col::BigInt),
                ("lost_at", Col::BigInt),
                ("merged_into", Col::Text),
            ],
            facts,
            &[Param::Int(now)],
        )
        .await?;
        let deletions: Vec<(&RecordFacts, Option<Millis>)> = facts
            .iter()
            .filter_map(|f| f.deleted.map(|d| (f, d)))
            .collect();
        if !deletions.is_empty() {
            #[derive(Serialize)]
            struct Deletion<'a> {
                crm: Crm,
                object_type: &'a str,
                object_id: &'a str,
                deleted_at: Option<Millis>,
            }
            let rows: Vec<Deletion> = deletions
                .iter()
                .map(|(f, at)| Deletion {
                    crm: f.crm,
                    object_type: &f.object_type,
                    object_id: &f.object_id,
                    deleted_at: *at,
                })
                .collect();
            self.bulk_execute(
                "UPDATE crm_records SET deleted_at = r.deleted_at, baseline_dirty = TRUE \
                 FROM {rows} \
                 WHERE crm_records.crm = r.crm AND crm_records.object_type = r.object_type \
                   AND crm_records.object_id = r.object_id",
                &[
                    ("crm", Col::Text),
                    ("object_type", Col::Text),
                    ("object_id", Col::Text),
                    ("deleted_at", Col::BigInt),
                ],
                &rows,
                &[],
            )
            .await?;
        }
        Ok(linked
            .into_iter()
            .map(|(crm, object_type, object_id, referral_id)| {
                (
                    RecordKey {
                        crm,
                        object_type,
                        object_id,
                    },
                    referral_id,
                )
            })
            .collect())
    }

    /// Create the record or add the facts given (known facts are kept).
    pub async fn upsert_record(
        &mut self,
        key: &RecordKey,
        account: &str,
        crm_created_at: Option<Millis>,
        email: Option<&str>,
        parent_id: Option<&str>,
        now: Millis,
    ) -> Result<CrmRecord, StoreError> {
        let facts = RecordFacts {
            account: account.to_string(),
            crm_created_at,
            email: email.map(str::to_string),
            parent_id: parent_id.map(str::to_string),
            ..RecordFacts::new(key)
        };
        self.apply_record_facts(&[facts], now).await?;
        self.record(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt("record vanished after upsert".into()))
    }

    /// Set a deal's pipeline, amount and currency where given.
    pub async fn set_deal_fields(
        &mut self,
        key: &RecordKey,
        pipeline: Option<&str>,
        amount: Option<&str>,
        currency: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let facts = RecordFacts {
            pipeline: pipeline.map(str::to_string),
            amount: amount.map(str::to_string),
            currency: currency.map(str::to_string),
            ..RecordFacts::new(key)
        };
        self.apply_record_facts(&[facts], now).await.map(|_| ())
    }

    /// Mark a record deleted at `deleted_at`, or restored (`None`).
    pub async fn mark_deleted(
        &mut self,
        key: &RecordKey,
        deleted_at: Option<Millis>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let facts = RecordFacts {
            deleted: Some(deleted_at),
            ..RecordFacts::new(key)
        };
        self.apply_record_facts(&[facts], now).await.map(|_| ())
    }

    /// Write links (and their attribution copies), one statement for all. Returns the linked
    /// records' current deal facts, read under the row lock the write takes, so a concurrent
    /// batch's change to them cannot go unnoticed.
    pub async fn link_records(
        &mut self,
        links: &[RecordLink],
        now: Millis,
    ) -> Result<Vec<LinkedFacts>, StoreError> {
        self.bulk_fetch(
            &format!(
                "UPDATE crm_records SET referral_id = r.referral_id, \
                     referrer_code = r.referrer_code, source = r.source, market = r.market, \
                     first_touch_at = r.first_touch_at, linked_at = $2, updated_at = $2, \
                     baseline_dirty = baseline_dirty OR crm_records.{IS_DEAL} \
                 FROM {{rows}} WHERE crm_records.crm = r.crm \
                     AND crm_records.object_type = r.object_type \
                     AND crm_records.object_id = r.object_id \
                 RETURNING crm_records.crm, crm_records.object_type, crm_records.object_id, \
                     crm_records.stage_occurred_at, crm_records.amount, crm_records.deleted_at"
            ),
            &[
                ("crm", Col::Text),
                ("object_type", Col::Text),
                ("object_id", Col::Text),
                ("referral_id", Col::Text),
                ("referrer_code", Col::Text),
                ("source", Col::Text),
                ("market", Col::Text),
                ("first_touch_at", Col::BigInt),
            ],
            links,
            &[Param::Int(now)],
        )
        .await
    }

    /// Link one record (admin override refresh).
    pub async fn link_record(
        &mut self,
        key: &RecordKey,
        referral_id: &str,
        attribution: &Attribution,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.link_records(&[RecordLink::new(key, referral_id, attribution)], now)
            .await
            .map(|_| ())
    }

    /// Mark deals for the baseline's refresh (their people changed).
    pub async fn mark_for_baseline(&mut self, deals: &[RecordKey]) -> Result<(), StoreError> {
        self.bulk_execute(
            "UPDATE crm_records SET baseline_dirty = TRUE FROM {rows} \
             WHERE crm_records.crm = r.crm AND crm_records.object_type = r.object_type \
                 AND crm_records.object_id = r.object_id AND NOT crm_records.baseline_dirty",
            &KEY_COLUMNS,
            deals,
            &[],
        )
        .await?;
        Ok(())
    }

    /// Upsert associations; a report older than the stored one for the same pair is ignored.
    pub async fn apply_associations(
        &mut self,
        associations: &[Association],
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO crm_associations (crm, deal_id, contact_id, removed, occurred_at) \
             SELECT r.crm, r.deal_id, r.contact_id, r.removed, r.occurred_at FROM {rows} WHERE true \
             ON CONFLICT (crm, deal_id, contact_id) DO UPDATE SET removed = excluded.removed, \
                 occurred_at = excluded.occurred_at \
             WHERE crm_associations.occurred_at <= excluded.occurred_at",
            &[
                ("crm", Col::Text),
                ("deal_id", Col::Text),
                ("contact_id", Col::Text),
                ("removed", Col::Bool),
                ("occurred_at", Col::BigInt),
            ],
            associations,
            &[],
        )
        .await?;
        Ok(())
    }

    /// Append stage changes; replaying a change maps a row that was unmapped.
    pub async fn append_stage_changes(
        &mut self,
        changes: &[NewStageChange],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO stage_history (crm, deal_id, pipeline, stage_id, stage, occurred_at, \
                 recorded_at, inbox_event_id) \
             SELECT r.crm, r.deal_id, r.pipeline, r.stage_id, r.stage, r.occurred_at, $2, \
                 r.inbox_event_id FROM {rows} WHERE true \
             ON CONFLICT (crm, deal_id, stage_id, occurred_at) DO UPDATE SET \
                 stage = COALESCE(stage_history.stage, excluded.stage), \
                 pipeline = COALESCE(stage_history.pipeline, excluded.pipeline)",
            &[
                ("crm", Col::Text),
                ("deal_id", Col::Text),
                ("pipeline", Col::Text),
                ("stage_id", Col::Text),
                ("stage", Col::Text),
                ("occurred_at", Col::BigInt),
                ("inbox_event_id", Col::BigInt),
            ],
            changes,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    // ---- reads ---------------------------------------------------------------------------------

    pub async fn record(&mut self, key: &RecordKey) -> Result<Option<CrmRecord>, StoreError> {
        Ok(self
            .records(std::slice::from_ref(key))
            .await?
            .into_iter()
            .next())
    }

    /// The stored records among `keys`.
    pub async fn records(&mut self, keys: &[RecordKey]) -> Result<Vec<CrmRecord>, StoreError> {
        // PostgreSQL plans a join with the JSON rows (100 by its guess) as a hash join over the
        // whole table while its statistics call the table small, which they do for a table that
        // grew since the last ANALYZE: a lookup per key by primary key is never worse.
        let sql = match self.kind() {
            BackendKind::Postgres => format!(
                "SELECT c.* FROM {{rows}} CROSS JOIN LATERAL (SELECT {RECORD_COLUMNS} \
                 FROM crm_records WHERE crm = r.crm AND object_type = r.object_type \
                 AND object_id = r.object_id) c"
            ),
            BackendKind::Sqlite => format!(
                "SELECT {} FROM {{rows}} JOIN crm_records c ON c.crm = r.crm \
                 AND c.object_type = r.object_type AND c.object_id = r.object_id",
                qualified(RECORD_COLUMNS, "c")
            ),
        };
        self.bulk_fetch(&sql, &KEY_COLUMNS, keys, &[]).await
    }

    /// People (contacts, leads) in any CRM with one of these normalised emails.
    pub async fn people_with_emails(
        &mut self,
        emails: &[&str],
    ) -> Result<Vec<CrmRecord>, StoreError> {
        self.bulk_fetch(
            &format!(
                "SELECT {} FROM {{rows}} JOIN crm_records c ON c.email = r.v \
                 WHERE c.object_type IN ('contact', 'Contact', 'Lead') \
                 ORDER BY c.crm, c.object_id",
                qualified(RECORD_COLUMNS, "c")
            ),
            &bulk::LIST,
            &bulk::list(emails),
            &[],
        )
        .await
    }

    /// Records of one CRM by id among the given object types (a person id from an association
    /// names no object type: in Salesforce it may be a Contact or a Lead).
    pub async fn records_by_ids(
        &mut self,
        crm: Crm,
        object_types: &[&str],
        ids: &[&str],
    ) -> Result<Vec<CrmRecord>, StoreError> {
        let keys: Vec<RecordKey> = ids
            .iter()
            .flat_map(|id| object_types.iter().map(move |t| RecordKey::new(crm, t, id)))
            .collect();
        self.records(&keys).await
    }

    /// Records of `crm` and these object types whose parent (Salesforce account) is one of
    /// `parents`.
    pub async fn records_with_parents(
        &mut self,
        crm: Crm,
        object_types: &[&str],
        parents: &[&str],
    ) -> Result<Vec<CrmRecord>, StoreError> {
        self.records_by_column(crm, object_types, "parent_id", parents)
            .await
    }

    /// Records of `crm` and these object types merged into one of `survivors`.
    pub async fn records_merged_into(
        &mut self,
        crm: Crm,
        object_types: &[&str],
        survivors: &[&str],
    ) -> Result<Vec<CrmRecord>, StoreError> {
        self.records_by_column(crm, object_types, "merged_into", survivors)
            .await
    }

    async fn records_by_column(
        &mut self,
        crm: Crm,
        object_types: &[&str],
        column: &'static str,
        values: &[&str],
    ) -> Result<Vec<CrmRecord>, StoreError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<CrmRecord> = self
            .bulk_fetch(
                &format!(
                "SELECT {} FROM {{rows}} JOIN crm_records c ON c.crm = r.crm AND c.{column} = r.id \
                 ORDER BY c.object_id",
                qualified(RECORD_COLUMNS, "c")
            ),
                &[("crm", Col::Text), ("id", Col::Text)],
                &values
                    .iter()
                    .map(|id| CrmIds {
                        crm: crm.as_str(),
                        id,
                    })
                    .collect::<Vec<_>>(),
                &[],
            )
            .await?;
        Ok(found
            .into_iter()
            .filter(|r| object_types.contains(&r.object_type.as_str()))
            .collect())
    }

    /// Live (not removed) associations of these deals of `crm`: `(deal_id, person_id)`.
    pub async fn people_of_deals(
        &mut self,
        crm: Crm,
        deal_ids: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.associations_by(crm, "deal_id", deal_ids).await
    }

    /// Live associations of these people of `crm`: `(deal_id, person_id)`.
    pub async fn deals_of_people(
        &mut self,
        crm: Crm,
        person_ids: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.associations_by(crm, "contact_id", person_ids).await
    }

    async fn associations_by(
        &mut self,
        crm: Crm,
        column: &'static str,
        ids: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.bulk_fetch(
            &format!(
                "SELECT a.deal_id, a.contact_id FROM {{rows}} JOIN crm_associations a \
                 ON a.crm = r.crm AND a.{column} = r.id WHERE a.removed = FALSE \
                 ORDER BY a.deal_id, a.contact_id"
            ),
            &[("crm", Col::Text), ("id", Col::Text)],
            &ids.iter()
                .map(|id| CrmIds {
                    crm: crm.as_str(),
                    id,
                })
                .collect::<Vec<_>>(),
            &[],
        )
        .await
    }

    /// The stage histories of these deals, each in CRM time order.
    pub async fn stage_histories(
        &mut self,
        deals: &[RecordKey],
    ) -> Result<Vec<StageChange>, StoreError> {
        self.bulk_fetch(
            "SELECT h.id, h.crm, h.deal_id, h.pipeline, h.stage_id, h.stage, h.occurred_at, \
                 h.recorded_at FROM {rows} JOIN stage_history h \
             ON h.crm = r.crm AND h.deal_id = r.object_id \
             ORDER BY h.crm, h.deal_id, h.occurred_at, h.id",
            &[("crm", Col::Text), ("object_id", Col::Text)],
            deals,
            &[],
        )
        .await
    }

    /// The deals linked to these referrals.
    pub async fn deals_linked_to(
        &mut self,
        referral_ids: &[&str],
    ) -> Result<Vec<RecordKey>, StoreError> {
        self.bulk_fetch(
            "SELECT c.crm, c.object_type, c.object_id FROM {rows} JOIN crm_records c \
             ON c.referral_id = r.v WHERE c.object_type IN ('deal', 'Opportunity') \
             ORDER BY c.crm, c.object_type, c.object_id",
            &bulk::LIST,
            &bulk::list(referral_ids),
            &[],
        )
        .await
    }

    /// Every CRM record linked to a referral.
    pub async fn records_linked_to(
        &mut self,
        referral_id: &str,
    ) -> Result<Vec<CrmRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM crm_records WHERE referral_id = $1 \
             ORDER BY crm, object_type, object_id"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(referral_id)
            .fetch_all(c)
            .await?))
    }
}

/// Read-only views for the admin API, reports and tests.
impl Store {
    pub async fn crm_record(&self, key: &RecordKey) -> Result<Option<CrmRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM crm_records WHERE crm = $1 AND object_type = $2 AND object_id = $3"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(key.crm)
            .bind(&key.object_type)
            .bind(&key.object_id)
            .fetch_optional(p)
            .await?))
    }

    pub async fn records_of_referral(
        &self,
        referral_id: &str,
    ) -> Result<Vec<CrmRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM crm_records WHERE referral_id = $1 ORDER BY crm, object_type, object_id"
        );
        self.fetch_all_by(&sql, referral_id).await
    }

    /// A deal's stage history in CRM occurrence order.
    pub async fn stage_history(
        &self,
        crm: Crm,
        deal_id: &str,
    ) -> Result<Vec<StageChange>, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT id, crm, deal_id, pipeline, stage_id, stage, occurred_at, recorded_at \
             FROM stage_history WHERE crm = $1 AND deal_id = $2 ORDER BY occurred_at, id"
        )
        .bind(crm)
        .bind(deal_id)
        .fetch_all(p)
        .await?))
    }
}

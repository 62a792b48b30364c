//! The attribution ledger's SQL: referrers, referrals and their touches, CRM records and their
//! links, deal associations, stage history, outbox rows and the audit log. Every method runs inside
//! a caller's [`Tx`], so the inbox processor commits a whole event's consequences at once.

use serde::Serialize;

use super::inbox::{InboxEvent, InboxRow, InboxStatus, INBOX_COLUMNS};
use super::tx::{on_tx, Tx};
use super::{on_pool, Store, StoreError};
use crate::clock::Millis;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Referrer {
    pub id: String,
    pub code: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub company_domain: Option<String>,
    pub market: Option<String>,
    pub kind: String,
    pub status: String,
    pub invited_at: Option<i64>,
    pub joined_at: Option<i64>,
}

/// A referrer as announced by a product event.
#[derive(Debug, Clone, Default)]
pub struct ReferrerFacts {
    pub code: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub company_domain: Option<String>,
    pub market: Option<String>,
    pub kind: String,
}

/// The write-once first touch of one referee.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Referral {
    pub id: String,
    pub email: String,
    pub referee_name: Option<String>,
    pub referee_company: Option<String>,
    pub referrer_code: Option<String>,
    pub source: Option<String>,
    pub market: Option<String>,
    pub first_touch_at: i64,
    pub utm: String,
    pub signup_ip: Option<String>,
    pub signed_up_at: Option<i64>,
    pub activated_at: Option<i64>,
    pub qualified_at: Option<i64>,
    pub won_at: Option<i64>,
}

/// Facts a claim (referral.created / signup.created) carries besides the attribution.
#[derive(Debug, Clone, Default)]
pub struct RefereeDetails {
    pub name: Option<String>,
    pub company: Option<String>,
    pub utm: Option<String>,
    pub ip: Option<String>,
    pub signed_up_at: Option<Millis>,
}

/// Who referred, how and where: the attribution a touch claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribution {
    pub referrer_code: Option<String>,
    pub source: Option<String>,
    pub market: Option<String>,
    pub first_touch_at: Millis,
}

impl Referral {
    pub fn attribution(&self) -> Attribution {
        Attribution {
            referrer_code: self.referrer_code.clone(),
            source: self.source.clone(),
            market: self.market.clone(),
            first_touch_at: self.first_touch_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Touch {
    pub id: i64,
    pub referral_id: String,
    pub inbox_event_id: Option<i64>,
    pub kind: String,
    pub referrer_code: Option<String>,
    pub source: Option<String>,
    pub market: Option<String>,
    pub occurred_at: i64,
    pub outcome: String,
    pub recorded_at: i64,
}

/// A CRM record. For deals, the attribution columns are the frozen copy taken at link time.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CrmRecord {
    pub crm: String,
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
}

/// Identifies a CRM record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    pub crm: String,
    pub object_type: String,
    pub object_id: String,
}

impl CrmRecord {
    pub fn key(&self) -> RecordKey {
        RecordKey {
            crm: self.crm.clone(),
            object_type: self.object_type.clone(),
            object_id: self.object_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StageChange {
    pub id: i64,
    pub crm: String,
    pub deal_id: String,
    pub pipeline: Option<String>,
    pub stage_id: String,
    pub stage: Option<String>,
    pub occurred_at: i64,
    pub recorded_at: i64,
}

/// A CRM write or read waiting in (or done with) the outbox.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub crm: String,
    pub account: String,
    pub object_type: String,
    pub object_id: String,
    pub kind: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// A new outbox row.
#[derive(Debug, Clone)]
pub struct NewOutbox {
    pub crm: String,
    pub account: String,
    pub object_type: String,
    pub object_id: String,
    pub kind: String,
    pub payload: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub reason: Option<String>,
}

/// A new audit entry.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub reason: Option<&'a str>,
}

pub(super) const REFERRER_COLUMNS: &str =
    "id, code, name, email, company_domain, market, kind, status, invited_at, joined_at";
pub(super) const REFERRAL_COLUMNS: &str =
    "id, email, referee_name, referee_company, referrer_code, source, \
     market, first_touch_at, utm, signup_ip, signed_up_at, activated_at, qualified_at, won_at";
pub(super) const RECORD_COLUMNS: &str =
    "crm, object_type, object_id, account, referral_id, email, \
     referrer_code, source, market, first_touch_at, linked_at, pipeline, stage_id, stage, \
     stage_occurred_at, amount, currency, parent_id, merged_into, deleted_at, crm_created_at";
pub(super) const TOUCH_COLUMNS: &str =
    "id, referral_id, inbox_event_id, kind, referrer_code, source, market, \
     occurred_at, outcome, recorded_at";
pub(super) const OUTBOX_COLUMNS: &str =
    "id, crm, account, object_type, object_id, kind, payload, status, \
     attempts, next_attempt_at, last_status, last_error, created_at, delivered_at";

impl Tx {
    // ---- inbox -------------------------------------------------------------------------------

    /// The oldest pending inbox events, in arrival order.
    pub async fn pending_inbox(&mut self, limit: i64) -> Result<Vec<InboxEvent>, StoreError> {
        let sql = format!(
            "SELECT {INBOX_COLUMNS} FROM inbox_events WHERE status = 'pending' ORDER BY id LIMIT $1"
        );
        let rows: Vec<InboxRow> = on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(limit)
            .fetch_all(c)
            .await?);
        rows.into_iter().map(InboxEvent::try_from).collect()
    }

    pub async fn set_inbox_status(
        &mut self,
        id: i64,
        status: InboxStatus,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| sqlx::query(
            "UPDATE inbox_events SET status = $2, status_reason = $3, attempts = attempts + 1, \
             processed_at = $4 WHERE id = $1"
        )
        .bind(id)
        .bind(status.as_str())
        .bind(reason)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected());
        Ok(())
    }

    // ---- referrers ---------------------------------------------------------------------------

    /// Create or complete a referrer. Known facts are kept unless the event brings new ones;
    /// `joined` never goes back to `invited`.
    pub async fn upsert_referrer(
        &mut self,
        facts: &ReferrerFacts,
        joined: bool,
        at: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (status, invited_at, joined_at) = if joined {
            ("joined", None, Some(at))
        } else {
            ("invited", Some(at), None)
        };
        on_tx!(self, |c| {
            sqlx::query(
            "INSERT INTO referrers (id, code, name, email, company_domain, market, kind, status, \
                 invited_at, joined_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
             ON CONFLICT (code) DO UPDATE SET \
                 name = COALESCE(excluded.name, referrers.name), \
                 email = COALESCE(excluded.email, referrers.email), \
                 company_domain = COALESCE(excluded.company_domain, referrers.company_domain), \
                 market = COALESCE(excluded.market, referrers.market), \
                 kind = excluded.kind, \
                 status = CASE WHEN referrers.status = 'joined' THEN 'joined' ELSE excluded.status END, \
                 invited_at = COALESCE(referrers.invited_at, excluded.invited_at), \
                 joined_at = COALESCE(referrers.joined_at, excluded.joined_at), \
                 updated_at = excluded.updated_at"
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&facts.code)
        .bind(&facts.name)
        .bind(&facts.email)
        .bind(&facts.company_domain)
        .bind(&facts.market)
        .bind(&facts.kind)
        .bind(status)
        .bind(invited_at)
        .bind(joined_at)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    pub async fn referrer(&mut self, code: &str) -> Result<Option<Referrer>, StoreError> {
        let sql = format!("SELECT {REFERRER_COLUMNS} FROM referrers WHERE code = $1");
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(code)
            .fetch_optional(c)
            .await?))
    }

    // ---- referrals and touches ---------------------------------------------------------------

    pub async fn referral_by_email(&mut self, email: &str) -> Result<Option<Referral>, StoreError> {
        let sql = format!("SELECT {REFERRAL_COLUMNS} FROM referrals WHERE email = $1");
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(email)
            .fetch_optional(c)
            .await?))
    }

    pub async fn referral(&mut self, id: &str) -> Result<Option<Referral>, StoreError> {
        let sql = format!("SELECT {REFERRAL_COLUMNS} FROM referrals WHERE id = $1");
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(c)
            .await?))
    }

    /// Record the first touch for `email`. If one exists already (the unique email wins), that one
    /// is returned unchanged: first touch is write-once.
    pub async fn insert_referral(
        &mut self,
        email: &str,
        attribution: &Attribution,
        now: Millis,
    ) -> Result<(Referral, bool), StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let inserted = on_tx!(self, |c| sqlx::query(
            "INSERT INTO referrals (id, email, referrer_code, source, market, first_touch_at, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (email) DO NOTHING"
        )
        .bind(&id)
        .bind(email)
        .bind(&attribution.referrer_code)
        .bind(&attribution.source)
        .bind(&attribution.market)
        .bind(attribution.first_touch_at)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected());
        let referral = self
            .referral_by_email(email)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("referral for {email} vanished")))?;
        Ok((referral, inserted == 1))
    }

    /// Fill referee details the referral does not have yet; never touches the attribution.
    pub async fn fill_referee_details(
        &mut self,
        referral_id: &str,
        d: &RefereeDetails,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| sqlx::query(
            "UPDATE referrals SET \
                 referee_name = COALESCE(referee_name, $2), \
                 referee_company = COALESCE(referee_company, $3), \
                 utm = CASE WHEN utm = '{}' AND $4 IS NOT NULL THEN $4 ELSE utm END, \
                 signup_ip = COALESCE(signup_ip, $5), \
                 signed_up_at = COALESCE(signed_up_at, $6), \
                 updated_at = $7 \
             WHERE id = $1"
        )
        .bind(referral_id)
        .bind(&d.name)
        .bind(&d.company)
        .bind(&d.utm)
        .bind(&d.ip)
        .bind(d.signed_up_at)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Replace the attribution (admin override only; the caller audits it).
    pub async fn set_attribution(
        &mut self,
        referral_id: &str,
        a: &Attribution,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query(
            "UPDATE referrals SET referrer_code = $2, source = $3, market = $4, updated_at = $5 WHERE id = $1"
        )
        .bind(referral_id)
        .bind(&a.referrer_code)
        .bind(&a.source)
        .bind(&a.market)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// Every CRM record linked to a referral.
    pub async fn records_linked_to(
        &mut self,
        referral_id: &str,
    ) -> Result<Vec<CrmRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM crm_records WHERE referral_id = $1 ORDER BY crm, object_type, object_id"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(referral_id)
            .fetch_all(c)
            .await?))
    }

    /// Set a milestone (`activated_at`, `qualified_at`, `won_at`) if it is not set yet.
    pub async fn set_referral_milestone(
        &mut self,
        referral_id: &str,
        milestone: Milestone,
        at: Millis,
    ) -> Result<bool, StoreError> {
        let column = milestone.column();
        let sql = format!(
            "UPDATE referrals SET {column} = $2, updated_at = $2 WHERE id = $1 AND {column} IS NULL"
        );
        let n = on_tx!(self, |c| sqlx::query(&sql)
            .bind(referral_id)
            .bind(at)
            .execute(c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    pub async fn insert_touch(
        &mut self,
        referral_id: &str,
        inbox_event_id: Option<i64>,
        kind: &str,
        claimed: &Attribution,
        outcome: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query(
            "INSERT INTO touches (referral_id, inbox_event_id, kind, referrer_code, source, market, \
                 occurred_at, outcome, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (referral_id, inbox_event_id) DO NOTHING"
        )
        .bind(referral_id)
        .bind(inbox_event_id)
        .bind(kind)
        .bind(&claimed.referrer_code)
        .bind(&claimed.source)
        .bind(&claimed.market)
        .bind(claimed.first_touch_at)
        .bind(outcome)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// Number of referrals of `code` that reached won (successful referrals).
    pub async fn successful_referrals(&mut self, code: &str) -> Result<i64, StoreError> {
        let (n,): (i64,) = on_tx!(self, |c| sqlx::query_as(
            "SELECT COUNT(*) FROM referrals WHERE referrer_code = $1 AND won_at IS NOT NULL"
        )
        .bind(code)
        .fetch_one(c)
        .await?);
        Ok(n)
    }

    // ---- CRM records -------------------------------------------------------------------------

    pub async fn record(&mut self, key: &RecordKey) -> Result<Option<CrmRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM crm_records \
             WHERE crm = $1 AND object_type = $2 AND object_id = $3"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(&key.crm)
            .bind(&key.object_type)
            .bind(&key.object_id)
            .fetch_optional(c)
            .await?))
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
        on_tx!(self, |c| {
            sqlx::query(
            "INSERT INTO crm_records (crm, object_type, object_id, account, email, parent_id, \
                 crm_created_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (crm, object_type, object_id) DO UPDATE SET \
                 account = CASE WHEN excluded.account <> '' THEN excluded.account ELSE crm_records.account END, \
                 email = COALESCE(excluded.email, crm_records.email), \
                 parent_id = COALESCE(excluded.parent_id, crm_records.parent_id), \
                 crm_created_at = COALESCE(crm_records.crm_created_at, excluded.crm_created_at), \
                 updated_at = excluded.updated_at"
        )
        .bind(&key.crm)
        .bind(&key.object_type)
        .bind(&key.object_id)
        .bind(account)
        .bind(email)
        .bind(parent_id)
        .bind(crm_created_at)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected()
        });
        self.record(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt("record vanished after upsert".into()))
    }

    /// Link a record to a referral with a copy of its attribution (frozen, for deals).
    pub async fn link_record(
        &mut self,
        key: &RecordKey,
        referral_id: &str,
        attribution: &Attribution,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query(
            "UPDATE crm_records SET referral_id = $4, referrer_code = $5, source = $6, market = $7, \
                 first_touch_at = $8, linked_at = $9, updated_at = $9 \
             WHERE crm = $1 AND object_type = $2 AND object_id = $3"
        )
        .bind(&key.crm)
        .bind(&key.object_type)
        .bind(&key.object_id)
        .bind(referral_id)
        .bind(&attribution.referrer_code)
        .bind(&attribution.source)
        .bind(&attribution.market)
        .bind(attribution.first_touch_at)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// People (contacts, leads) in any CRM with this normalised email.
    pub async fn people_by_email(&mut self, email: &str) -> Result<Vec<CrmRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM crm_records WHERE LOWER(email) = $1 \
             AND object_type IN ('contact', 'Contact', 'Lead') ORDER BY crm, object_id"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(email)
            .fetch_all(c)
            .await?))
    }

    /// Salesforce contacts of one account.
    pub async fn people_of_account(
        &mut self,
        crm: &str,
        account_id: &str,
    ) -> Result<Vec<CrmRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM crm_records WHERE crm = $1 AND parent_id = $2 \
             AND object_type IN ('contact', 'Contact', 'Lead') ORDER BY object_id"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(crm)
            .bind(account_id)
            .fetch_all(c)
            .await?))
    }

    /// Deals of `crm` whose `parent_id` (the Opportunity's account) is `account_id`.
    pub async fn deals_of_account(
        &mut self,
        crm: &str,
        account_id: &str,
    ) -> Result<Vec<CrmRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM crm_records WHERE crm = $1 AND parent_id = $2 \
             AND object_type IN ('deal', 'Opportunity') ORDER BY object_id"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(crm)
            .bind(account_id)
            .fetch_all(c)
            .await?))
    }

    pub async fn set_parent(&mut self, key: &RecordKey, parent_id: &str) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query(
            "UPDATE crm_records SET parent_id = $4 WHERE crm = $1 AND object_type = $2 AND object_id = $3"
        )
        .bind(&key.crm)
        .bind(&key.object_type)
        .bind(&key.object_id)
        .bind(parent_id)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    pub async fn set_deal_fields(
        &mut self,
        key: &RecordKey,
        pipeline: Option<&str>,
        amount: Option<&str>,
        currency: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query(
            "UPDATE crm_records SET pipeline = COALESCE($4, pipeline), amount = COALESCE($5, amount), \
                 currency = COALESCE($6, currency), updated_at = $7 \
             WHERE crm = $1 AND object_type = $2 AND object_id = $3"
        )
        .bind(&key.crm)
        .bind(&key.object_type)
        .bind(&key.object_id)
        .bind(pipeline)
        .bind(amount)
        .bind(currency)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// Move the deal's current stage only if this change is not older than the current one.
    pub async fn set_stage_if_newer(
        &mut self,
        key: &RecordKey,
        stage_id: &str,
        stage: &str,
        at: Millis,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = on_tx!(self, |c| {
            sqlx::query(
            "UPDATE crm_records SET stage_id = $4, stage = $5, stage_occurred_at = $6, updated_at = $7 \
             WHERE crm = $1 AND object_type = $2 AND object_id = $3 \
               AND (stage_occurred_at IS NULL OR stage_occurred_at <= $6)"
        )
        .bind(&key.crm)
        .bind(&key.object_type)
        .bind(&key.object_id)
        .bind(stage_id)
        .bind(stage)
        .bind(at)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(n == 1)
    }

    /// Append to the stage history; a replay of the same change maps an unmapped row.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_stage_change(
        &mut self,
        crm: &str,
        deal_id: &str,
        pipeline: Option<&str>,
        stage_id: &str,
        stage: Option<&str>,
        at: Millis,
        inbox_event_id: i64,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| sqlx::query(
            "INSERT INTO stage_history (crm, deal_id, pipeline, stage_id, stage, occurred_at, \
                 recorded_at, inbox_event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (crm, deal_id, stage_id, occurred_at) DO UPDATE SET \
                 stage = COALESCE(stage_history.stage, excluded.stage), \
                 pipeline = COALESCE(stage_history.pipeline, excluded.pipeline)"
        )
        .bind(crm)
        .bind(deal_id)
        .bind(pipeline)
        .bind(stage_id)
        .bind(stage)
        .bind(at)
        .bind(now)
        .bind(inbox_event_id)
        .execute(c)
        .await?
        .rows_affected());
        Ok(())
    }

    /// The stage id in force for a deal at time `at` (the latest change not after it).
    pub async fn stage_at(
        &mut self,
        crm: &str,
        deal_id: &str,
        at: Millis,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = on_tx!(self, |c| {
            sqlx::query_as(
            "SELECT stage_id FROM stage_history WHERE crm = $1 AND deal_id = $2 AND occurred_at <= $3 \
             AND stage IS NOT NULL ORDER BY occurred_at DESC, id DESC LIMIT 1"
        )
        .bind(crm)
        .bind(deal_id)
        .bind(at)
        .fetch_optional(c)
        .await?
        });
        Ok(row.map(|(s,)| s))
    }

    pub async fn mark_deleted(
        &mut self,
        key: &RecordKey,
        deleted_at: Option<Millis>,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query(
            "UPDATE crm_records SET deleted_at = $4 WHERE crm = $1 AND object_type = $2 AND object_id = $3"
        )
        .bind(&key.crm)
        .bind(&key.object_type)
        .bind(&key.object_id)
        .bind(deleted_at)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    pub async fn mark_merged(&mut self, key: &RecordKey, into: &str) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query(
            "UPDATE crm_records SET merged_into = $4 WHERE crm = $1 AND object_type = $2 AND object_id = $3"
        )
        .bind(&key.crm)
        .bind(&key.object_type)
        .bind(&key.object_id)
        .bind(into)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    // ---- associations ------------------------------------------------------------------------

    pub async fn set_association(
        &mut self,
        crm: &str,
        deal_id: &str,
        person_id: &str,
        removed: bool,
        at: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| sqlx::query(
            "INSERT INTO crm_associations (crm, deal_id, contact_id, removed, occurred_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (crm, deal_id, contact_id) DO UPDATE SET removed = excluded.removed, \
                 occurred_at = excluded.occurred_at \
             WHERE crm_associations.occurred_at <= excluded.occurred_at"
        )
        .bind(crm)
        .bind(deal_id)
        .bind(person_id)
        .bind(removed)
        .bind(at)
        .execute(c)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Person ids currently associated with a deal.
    pub async fn deal_people(
        &mut self,
        crm: &str,
        deal_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_tx!(self, |c| {
            sqlx::query_as(
            "SELECT contact_id FROM crm_associations WHERE crm = $1 AND deal_id = $2 AND removed = FALSE \
             ORDER BY contact_id"
        )
        .bind(crm)
        .bind(deal_id)
        .fetch_all(c)
        .await?
        });
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Deal ids currently associated with a person.
    pub async fn person_deals(
        &mut self,
        crm: &str,
        person_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_tx!(self, |c| {
            sqlx::query_as(
            "SELECT deal_id FROM crm_associations WHERE crm = $1 AND contact_id = $2 AND removed = FALSE \
             ORDER BY deal_id"
        )
        .bind(crm)
        .bind(person_id)
        .fetch_all(c)
        .await?
        });
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    // ---- outbox and audit ----------------------------------------------------------------------

    pub async fn enqueue(&mut self, row: &NewOutbox, now: Millis) -> Result<i64, StoreError> {
        let (id,): (i64,) = on_tx!(self, |c| {
            sqlx::query_as(
            "INSERT INTO outbox (crm, account, object_type, object_id, kind, payload, next_attempt_at, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id"
        )
        .bind(&row.crm)
        .bind(&row.account)
        .bind(&row.object_type)
        .bind(&row.object_id)
        .bind(&row.kind)
        .bind(&row.payload)
        .bind(now)
        .fetch_one(c)
        .await?
        });
        Ok(id)
    }

    /// Whether an undelivered write of `kind` waits for this record.
    pub async fn has_pending_outbox(
        &mut self,
        key: &RecordKey,
        kind: &str,
    ) -> Result<bool, StoreError> {
        let (n,): (i64,) = on_tx!(self, |c| {
            sqlx::query_as(
            "SELECT COUNT(*) FROM outbox WHERE crm = $1 AND object_type = $2 AND object_id = $3 \
             AND kind = $4 AND status = 'pending'"
        )
        .bind(&key.crm)
        .bind(&key.object_type)
        .bind(&key.object_id)
        .bind(kind)
        .fetch_one(c)
        .await?
        });
        Ok(n > 0)
    }

    pub async fn audit(&mut self, entry: &NewAudit<'_>, now: Millis) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query(
            "INSERT INTO audit_log (at, actor, action, entity_type, entity_id, old_value, new_value, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(now)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.entity_type)
        .bind(entry.entity_id)
        .bind(&entry.old_value)
        .bind(&entry.new_value)
        .bind(entry.reason)
        .execute(c)
        .await?
        .rows_affected()
        });
        Ok(())
    }
}

/// Funnel milestones kept on a referral.
#[derive(Debug, Clone, Copy)]
pub enum Milestone {
    Activated,
    Qualified,
    Won,
}

impl Milestone {
    fn column(self) -> &'static str {
        match self {
            Self::Activated => "activated_at",
            Self::Qualified => "qualified_at",
            Self::Won => "won_at",
        }
    }
}

/// Read-only views for the admin API, reports and tests.
impl Store {
    pub async fn referral_by_email(&self, email: &str) -> Result<Option<Referral>, StoreError> {
        let sql = format!("SELECT {REFERRAL_COLUMNS} FROM referrals WHERE email = $1");
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(email)
            .fetch_optional(p)
            .await?))
    }

    pub async fn referrer_by_code(&self, code: &str) -> Result<Option<Referrer>, StoreError> {
        let sql = format!("SELECT {REFERRER_COLUMNS} FROM referrers WHERE code = $1");
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(code)
            .fetch_optional(p)
            .await?))
    }

    pub async fn touches(&self, referral_id: &str) -> Result<Vec<Touch>, StoreError> {
        let sql = format!("SELECT {TOUCH_COLUMNS} FROM touches WHERE referral_id = $1 ORDER BY id");
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(referral_id)
            .fetch_all(p)
            .await?))
    }

    pub async fn crm_record(&self, key: &RecordKey) -> Result<Option<CrmRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM crm_records WHERE crm = $1 AND object_type = $2 AND object_id = $3"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(&key.crm)
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
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(referral_id)
            .fetch_all(p)
            .await?))
    }

    /// A deal's stage history in CRM occurrence order.
    pub async fn stage_history(
        &self,
        crm: &str,
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

    /// Outbox rows for one record (or all), oldest first.
    pub async fn outbox_rows(&self, key: Option<&RecordKey>) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE ($1 IS NULL OR (crm = $1 AND object_type = $2 \
             AND object_id = $3)) ORDER BY id"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(key.map(|k| k.crm.clone()))
            .bind(key.map(|k| k.object_type.clone()))
            .bind(key.map(|k| k.object_id.clone()))
            .fetch_all(p)
            .await?))
    }

    pub async fn audit_entries(
        &self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT id, at, actor, action, entity_type, entity_id, old_value, new_value, reason \
             FROM audit_log WHERE entity_type = $1 AND entity_id = $2 ORDER BY id"
        )
        .bind(entity_type)
        .bind(entity_id)
        .fetch_all(p)
        .await?))
    }

    /// Put failed and unmapped inbox events back in the queue (after the cause is fixed).
    pub async fn requeue_inbox(&self) -> Result<u64, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query(
            "UPDATE inbox_events SET status = 'pending', status_reason = NULL \
             WHERE status IN ('failed', 'unmapped')"
        )
        .execute(p)
        .await?
        .rows_affected()))
    }
}

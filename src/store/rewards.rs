//! Rewards' SQL. A reward is unique per (deal, beneficiary) by constraint, so reprocessing an event
//! or two replicas racing can never create a second one; status changes are conditional updates
//! (`WHERE status IN (…)`), so a transition happens once or not at all.

use serde::Serialize;

use super::bulk::Col;
use super::records::RecordKey;
use super::tx::{on_tx, Tx};
use super::{on_pool, Store, StoreError};
use crate::clock::Millis;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Reward {
    pub id: String,
    pub crm: String,
    pub deal_id: String,
    pub beneficiary: String,
    pub referral_id: String,
    pub referrer_code: Option<String>,
    pub market: String,
    pub status: String,
    pub kind: String,
    pub amount: String,
    pub currency: String,
    pub tier: Option<String>,
    pub deal_amount: Option<String>,
    pub deal_currency: Option<String>,
    pub fx_rate: Option<String>,
    pub calculation: String,
    pub flags: String,
    pub review_reason: Option<String>,
    pub won_at: i64,
    pub hold_until: Option<i64>,
    pub decided_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A reward to create.
#[derive(Debug, Clone)]
pub struct NewReward {
    pub crm: String,
    pub deal_id: String,
    pub beneficiary: String,
    pub referral_id: String,
    pub referrer_code: Option<String>,
    pub market: String,
    pub status: String,
    pub kind: String,
    pub amount: String,
    pub currency: String,
    pub tier: Option<String>,
    pub deal_amount: Option<String>,
    pub deal_currency: Option<String>,
    pub fx_rate: Option<String>,
    pub calculation: String,
    pub flags: String,
    pub review_reason: Option<String>,
    pub won_at: Millis,
    pub hold_until: Option<Millis>,
}

pub(super) const REWARD_COLUMNS: &str = "id, crm, deal_id, beneficiary, referral_id, referrer_code, market, \
     status, kind, amount, currency, tier, deal_amount, deal_currency, fx_rate, calculation, flags, \
     review_reason, won_at, hold_until, decided_by, created_at, updated_at";

impl Tx {
    /// Create the reward unless one exists for (deal, beneficiary); `None` when it existed.
    pub async fn insert_reward(
        &mut self,
        r: &NewReward,
        now: Millis,
    ) -> Result<Option<Reward>, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let sql = format!(
            "INSERT INTO rewards (id, crm, deal_id, beneficiary, referral_id, referrer_code, market, \
                 status, kind, amount, currency, tier, deal_amount, deal_currency, fx_rate, calculation, \
                 flags, review_reason, won_at, hold_until, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
                 $19, $20, $21, $21) \
             ON CONFLICT (crm, deal_id, beneficiary) DO NOTHING RETURNING {REWARD_COLUMNS}"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(&id)
            .bind(&r.crm)
            .bind(&r.deal_id)
            .bind(&r.beneficiary)
            .bind(&r.referral_id)
            .bind(&r.referrer_code)
            .bind(&r.market)
            .bind(&r.status)
            .bind(&r.kind)
            .bind(&r.amount)
            .bind(&r.currency)
            .bind(&r.tier)
            .bind(&r.deal_amount)
            .bind(&r.deal_currency)
            .bind(&r.fx_rate)
            .bind(&r.calculation)
            .bind(&r.flags)
            .bind(&r.review_reason)
            .bind(r.won_at)
            .bind(r.hold_until)
            .bind(now)
            .fetch_optional(c)
            .await?))
    }

    pub async fn deal_rewards(
        &mut self,
        crm: &str,
        deal_id: &str,
    ) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM rewards WHERE crm = $1 AND deal_id = $2 ORDER BY beneficiary DESC"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(crm)
            .bind(deal_id)
            .fetch_all(c)
            .await?))
    }

    /// A merged deal's rewards follow it into the deal it was merged into, so the survivor
    /// winning again earns nothing twice, unless the survivor has rewards of its own (two won
    /// deals merged keep both). Returns the rewards moved.
    pub async fn move_deal_rewards(
        &mut self,
        crm: &str,
        from_deal: &str,
        to_deal: &str,
        now: Millis,
    ) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "UPDATE rewards SET deal_id = $3, updated_at = $4 \
             WHERE crm = $1 AND deal_id = $2 \
               AND NOT EXISTS (SELECT 1 FROM rewards AS own WHERE own.crm = $1 AND own.deal_id = $3) \
             RETURNING {REWARD_COLUMNS}"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(crm)
            .bind(from_deal)
            .bind(to_deal)
            .bind(now)
            .fetch_all(c)
            .await?))
    }

    /// Delete a deal's rewards that are still `pending` or `needs_review` (nothing announced as
    /// eligible, nothing approved or paid), returning them: when the deal's link moves to an
    /// earlier first touch, its reward is decided again for that referral.
    pub async fn withdraw_unsettled_rewards(
        &mut self,
        crm: &str,
        deal_id: &str,
    ) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "DELETE FROM rewards WHERE crm = $1 AND deal_id = $2 \
               AND status IN ('pending', 'needs_review') RETURNING {REWARD_COLUMNS}"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(crm)
            .bind(deal_id)
            .fetch_all(c)
            .await?))
    }

    /// Move a reward from one of `from` to `to`; `None` if it was not in one of `from` (or is
    /// unknown). `hold_until` is replaced only when given.
    pub async fn transition_reward(
        &mut self,
        id: &str,
        from: &[&str],
        to: &str,
        decided_by: Option<&str>,
        hold_until: Option<Millis>,
        now: Millis,
    ) -> Result<Option<Reward>, StoreError> {
        let allowed: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        // `status IN (…)` with a variable list: a small OR chain over bound values.
        let placeholders: Vec<String> = (0..allowed.len())
            .map(|i| format!("status = ${}", i + 6))
            .collect();
        let sql = format!(
            "UPDATE rewards SET status = $2, decided_by = COALESCE($3, decided_by), \
                 hold_until = COALESCE($4, hold_until), updated_at = $5 \
             WHERE id = $1 AND ({}) RETURNING {REWARD_COLUMNS}",
            placeholders.join(" OR ")
        );
        Ok(on_tx!(self, |c| {
            let mut q = sqlx::query_as(&sql)
                .bind(id)
                .bind(to)
                .bind(decided_by)
                .bind(hold_until)
                .bind(now);
            for s in &allowed {
                q = q.bind(s);
            }
            q.fetch_optional(c).await?
        }))
    }

    /// The deals among `deals` that have at least one reward.
    pub async fn deals_with_rewards(
        &mut self,
        deals: &[RecordKey],
    ) -> Result<Vec<(String, String)>, StoreError> {
        if deals.is_empty() {
            return Ok(Vec::new());
        }
        self.bulk_fetch(
            "SELECT DISTINCT w.crm, w.deal_id FROM {rows} JOIN rewards w \
             ON w.crm = r.crm AND w.deal_id = r.object_id",
            &[("crm", Col::Text), ("object_id", Col::Text)],
            deals,
            &[],
        )
        .await
    }

    /// Pending rewards whose hold has ended.
    pub async fn due_holds(&mut self, now: Millis, limit: i64) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM rewards WHERE status = 'pending' AND hold_until <= $1 \
             ORDER BY hold_until, id LIMIT $2"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(now)
            .bind(limit)
            .fetch_all(c)
            .await?))
    }

    pub async fn reward(&mut self, id: &str) -> Result<Option<Reward>, StoreError> {
        let sql = format!("SELECT {REWARD_COLUMNS} FROM rewards WHERE id = $1");
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(c)
            .await?))
    }

    /// Signup IPs and first-touch times of a referrer's other referees first touched in `[from, to]`.
    pub async fn referee_ips(
        &mut self,
        code: &str,
        except_referral: &str,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on_tx!(self, |c| sqlx::query_as(
            "SELECT signup_ip, first_touch_at FROM referrals \
             WHERE referrer_code = $1 AND first_touch_at >= $3 AND first_touch_at <= $4 \
               AND id <> $2 AND signup_ip IS NOT NULL"
        )
        .bind(code)
        .bind(except_referral)
        .bind(from)
        .bind(to)
        .fetch_all(c)
        .await?))
    }

    /// Referrals of a referrer whose first touch falls in `[from, to]`.
    pub async fn referrals_between(
        &mut self,
        code: &str,
        from: Millis,
        to: Millis,
    ) -> Result<i64, StoreError> {
        let (n,): (i64,) = on_tx!(self, |c| {
            sqlx::query_as(
            "SELECT COUNT(*) FROM referrals WHERE referrer_code = $1 AND first_touch_at >= $2 AND first_touch_at <= $3"
        )
        .bind(code)
        .bind(from)
        .bind(to)
        .fetch_one(c)
        .await?
        });
        Ok(n)
    }

    /// Whether the CRMs knew a person with this email before `before`.
    pub async fn person_known_before(
        &mut self,
        email: &str,
        before: Millis,
    ) -> Result<bool, StoreError> {
        let (n,): (i64,) = on_tx!(self, |c| sqlx::query_as(
            "SELECT COUNT(*) FROM crm_records WHERE email = $1 AND crm_created_at < $2 \
             AND object_type IN ('contact', 'Contact', 'Lead')"
        )
        .bind(email)
        .bind(before)
        .fetch_one(c)
        .await?);
        Ok(n > 0)
    }
}

impl Store {
    /// How many rewards are in each status (for the `rewards{status}` gauge).
    pub async fn reward_status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT status, COUNT(*) FROM rewards GROUP BY status ORDER BY status"
        )
        .fetch_all(p)
        .await?))
    }

    pub async fn rewards(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM rewards WHERE ($1 IS NULL OR status = $1) ORDER BY created_at, id LIMIT $2"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(status)
            .bind(limit)
            .fetch_all(p)
            .await?))
    }

    pub async fn rewards_of_deal(
        &self,
        crm: &str,
        deal_id: &str,
    ) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM rewards WHERE crm = $1 AND deal_id = $2 ORDER BY beneficiary DESC"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(crm)
            .bind(deal_id)
            .fetch_all(p)
            .await?))
    }
}

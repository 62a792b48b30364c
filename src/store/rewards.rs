//! Rewards' SQL. A deal's own reward line is unique per (deal, beneficiary), and every other line
//! (a recurring reward, an adjustment) per (source, beneficiary), by constraint, so reprocessing
//! an event or two replicas racing can never create a second one; status changes are conditional
//! updates (`WHERE status IN (…)`), so a transition happens once or not at all.

use rust_decimal::Decimal;
use serde::Serialize;

use super::bulk::Col;
use super::records::RecordKey;
use super::tx::{on_tx, Tx};
use super::{on_pool, qualified, Store, StoreError};
use crate::clock::Millis;
use crate::domain::reward::{Beneficiary, LineKind, RewardMove, RewardStatus};
use crate::domain::Crm;

/// A stored reward line: the line (as made, its status as it is now) with its id and what the
/// store keeps about it since.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Reward {
    pub id: String,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub line: NewReward,
    pub decided_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the line became payable in full (eligible, or approved after review).
    pub payable_at: Option<i64>,
}

impl Reward {
    pub fn amount(&self) -> Result<Decimal, StoreError> {
        let amount = &self.line.amount;
        amount
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("reward {}: amount `{amount}`: {e}", self.id)))
    }

    /// A deal's own line: the reward its win earned (first win or renewal), not one made by
    /// something else (an invoice, a refund, a clawback).
    pub fn is_deals_own(&self) -> bool {
        self.line.source_key.is_none()
    }
}

/// A reward to create.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NewReward {
    pub crm: Crm,
    pub deal_id: String,
    pub beneficiary: Beneficiary,
    pub referral_id: String,
    pub referrer_code: Option<String>,
    pub market: String,
    pub status: RewardStatus,
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
    pub line_kind: LineKind,
    /// `None` for a deal's own line (its win); what else made the line otherwise:
    /// `invoice:<id>`, `refund:<key>`, `clawback:<reward id>`.
    pub source_key: Option<String>,
    /// The line an adjustment takes back.
    pub adjusts: Option<String>,
    /// JSON: the `payout_schedule` installments fixed when the line was made; `None` pays it
    /// whole.
    pub payout_schedule: Option<String>,
}

pub(super) const REWARD_COLUMNS: &str = "id, crm, deal_id, beneficiary, referral_id, referrer_code, market, \
     status, kind, amount, currency, tier, deal_amount, deal_currency, fx_rate, calculation, flags, \
     review_reason, won_at, hold_until, decided_by, created_at, updated_at, line_kind, source_key, \
     adjusts, payable_at, payout_schedule";

impl Tx {
    /// Create the line unless its deal (a deal's own line) or its source (any other line) already
    /// has one for the beneficiary; `None` when it existed.
    pub async fn insert_reward(
        &mut self,
        r: &NewReward,
        now: Millis,
    ) -> Result<Option<Reward>, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let conflict = if r.source_key.is_some() {
            "(source_key, beneficiary) WHERE source_key IS NOT NULL"
        } else {
            "(crm, deal_id, beneficiary) WHERE source_key IS NULL"
        };
        let sql = format!(
            "INSERT INTO rewards (id, crm, deal_id, beneficiary, referral_id, referrer_code, market, \
                 status, kind, amount, currency, tier, deal_amount, deal_currency, fx_rate, calculation, \
                 flags, review_reason, won_at, hold_until, created_at, updated_at, line_kind, \
                 source_key, adjusts, payout_schedule, payable_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
                 $19, $20, $21, $21, $22, $23, $24, $25, \
                 CASE WHEN $8 IN ('eligible', 'approved') THEN $21 END) \
             ON CONFLICT {conflict} DO NOTHING RETURNING {REWARD_COLUMNS}"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(&id)
            .bind(r.crm)
            .bind(&r.deal_id)
            .bind(r.beneficiary)
            .bind(&r.referral_id)
            .bind(&r.referrer_code)
            .bind(&r.market)
            .bind(r.status)
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
            .bind(r.line_kind.as_str())
            .bind(&r.source_key)
            .bind(&r.adjusts)
            .bind(&r.payout_schedule)
            .fetch_optional(c)
            .await?))
    }

    /// Every line written to this deal: its own, the recurring rewards it anchors, adjustments.
    pub async fn deal_rewards(
        &mut self,
        crm: Crm,
        deal_id: &str,
    ) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM rewards WHERE crm = $1 AND deal_id = $2 \
             ORDER BY beneficiary DESC, created_at, id"
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
        crm: Crm,
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

    /// Delete a deal's own lines that are still `pending` or `needs_review` (nothing announced as
    /// eligible, nothing approved or paid, no share in a payout statement, nothing adjusting
    /// them), returning them: when the deal's link moves to an earlier first touch, its reward is
    /// decided again for that referral. With `only_without_deal_amount`, only the lines decided
    /// while the deal had no amount (decided again once it has one).
    pub async fn withdraw_unsettled_rewards(
        &mut self,
        crm: Crm,
        deal_id: &str,
        only_without_deal_amount: bool,
    ) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "DELETE FROM rewards WHERE crm = $1 AND deal_id = $2 AND source_key IS NULL \
               AND status IN ('pending', 'needs_review') \
               AND ($3 = 0 OR (status = 'needs_review' AND deal_amount IS NULL)) \
               AND NOT EXISTS (SELECT 1 FROM payout_lines l WHERE l.reward_id = rewards.id) \
               AND NOT EXISTS (SELECT 1 FROM rewards a WHERE a.adjusts = rewards.id) \
             RETURNING {REWARD_COLUMNS}"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(crm)
            .bind(deal_id)
            .bind(i64::from(only_without_deal_amount))
            .fetch_all(c)
            .await?))
    }

    /// Apply `step` to a reward; `None` if the reward is not in a status the step starts from (or
    /// is unknown). `hold_until` is replaced only when given.
    pub async fn transition_reward(
        &mut self,
        id: &str,
        step: RewardMove,
        decided_by: Option<&str>,
        hold_until: Option<Millis>,
        now: Millis,
    ) -> Result<Option<Reward>, StoreError> {
        let (allowed, to) = step.transition();
        // `status IN (…)` with a variable list: a small OR chain over bound values.
        let placeholders: Vec<String> = (0..allowed.len())
            .map(|i| format!("status = ${}", i + 6))
            .collect();
        // A line becomes payable when it enters `eligible` or `approved` from a state that was
        // not; `approved` after `eligible` keeps the earlier moment.
        let sql = format!(
            "UPDATE rewards SET status = $2, decided_by = COALESCE($3, decided_by), \
                 hold_until = COALESCE($4, hold_until), updated_at = $5, \
                 payable_at = CASE WHEN $2 IN ('eligible', 'approved') \
                                    AND status NOT IN ('eligible', 'approved') THEN $5 \
                                   ELSE payable_at END \
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
            for s in allowed {
                q = q.bind(*s);
            }
            q.fetch_optional(c).await?
        }))
    }

    /// The deals among `deals` that have at least one reward.
    pub async fn deals_with_rewards(
        &mut self,
        deals: &[RecordKey],
    ) -> Result<Vec<(Crm, String)>, StoreError> {
        self.bulk_fetch(
            "SELECT DISTINCT w.crm, w.deal_id FROM {rows} JOIN rewards w \
             ON w.crm = r.crm AND w.deal_id = r.object_id",
            &[("crm", Col::Text), ("object_id", Col::Text)],
            deals,
            &[],
        )
        .await
    }

    /// Every line of a referral (any deal, any kind), oldest first.
    pub async fn referral_lines(&mut self, referral_id: &str) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM rewards WHERE referral_id = $1 ORDER BY created_at, id"
        );
        Ok(on_tx!(self, |c| sqlx::query_as(&sql)
            .bind(referral_id)
            .fetch_all(c)
            .await?))
    }

    /// The adjustments taking back any of `lines`.
    pub async fn adjustments_of(&mut self, lines: &[&str]) -> Result<Vec<Reward>, StoreError> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {} FROM {{rows}} JOIN rewards w ON w.adjusts = r.v ORDER BY w.created_at, w.id",
            qualified(REWARD_COLUMNS, "w")
        );
        self.bulk_fetch(&sql, &super::bulk::LIST, &super::bulk::list(lines), &[])
            .await
    }

    /// Successful referrals of a referrer won at or before `at` (the tier at that moment).
    pub async fn successful_referrals_at(
        &mut self,
        code: &str,
        at: Millis,
    ) -> Result<i64, StoreError> {
        let (n,): (i64,) = on_tx!(self, |c| sqlx::query_as(
            "SELECT COUNT(*) FROM referrals WHERE referrer_code = $1 AND won_at <= $2"
        )
        .bind(code)
        .bind(at)
        .fetch_one(c)
        .await?);
        Ok(n)
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
    pub async fn reward_status_counts(&self) -> Result<Vec<(RewardStatus, i64)>, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT status, COUNT(*) FROM rewards GROUP BY status ORDER BY status"
        )
        .fetch_all(p)
        .await?))
    }

    pub async fn rewards(
        &self,
        status: Option<RewardStatus>,
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
        crm: Crm,
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

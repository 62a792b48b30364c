//! What the RevOps console and the partner portal keep and read beyond the admin API's queries:
//! console sessions (migration 0007), conversion per day of first touch, the outbox and inbox as
//! the Deliveries page groups them, and one partner's own referrals, deals and rewards.

use super::inbox::INBOX_COLUMNS;
use super::outbox::{OutboxRow, OUTBOX_COLUMNS};
use super::referrals::{Referral, REFERRAL_COLUMNS};
use super::reports::{FunnelFilter, REFERRAL_FILTER};
use super::rewards::{Reward, REWARD_COLUMNS};
use super::tx::on_tx;
use super::{count, on_pool, InboxEvent, Store, StoreError};
use crate::clock::Millis;

/// A console session as stored: the cookie's token only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsoleSessionRow {
    pub token_hash: String,
    /// The `admin.keys` hash the session was opened with.
    pub key_hash: String,
    pub csrf_token: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// Referrals of one market whose first touch fell on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayGroup {
    pub market: Option<String>,
    /// Days since the epoch.
    pub day: i64,
    pub referrals: u64,
    pub won: u64,
}

/// How the Deliveries page groups the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its first attempt.
    Pending,
    /// Waiting after a failed attempt (the CRM's error is on the row).
    Retrying,
    /// Refused by the CRM; waits for a replay.
    Dead,
}

impl DeliveryState {
    fn condition(self) -> &'static str {
        match self {
            Self::Pending => "status = 'pending' AND last_error IS NULL",
            Self::Retrying => "status = 'pending' AND last_error IS NOT NULL",
            Self::Dead => "status = 'dead'",
        }
    }
}

/// How many CRM writes are in each [`DeliveryState`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub retrying: i64,
    pub dead: i64,
}

impl Store {
    /// Store a new session, dropping every expired one on the way.
    pub async fn open_console_session(
        &self,
        session: &ConsoleSessionRow,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        on_tx!(tx, |c| {
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO console_sessions (token_hash, key_hash, csrf_token, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&session.token_hash)
            .bind(&session.key_hash)
            .bind(&session.csrf_token)
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(&mut *c)
            .await?
            .rows_affected()
        });
        tx.commit().await
    }

    /// The session with this token hash, unless it has expired.
    pub async fn console_session(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> Result<Option<ConsoleSessionRow>, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT token_hash, key_hash, csrf_token, created_at, expires_at \
             FROM console_sessions WHERE token_hash = $1 AND expires_at > $2"
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(p)
        .await?))
    }

    /// End a session (sign-out); ending one that is gone is not an error.
    pub async fn close_console_session(&self, token_hash: &str) -> Result<(), StoreError> {
        on_pool!(self, |p| sqlx::query(
            "DELETE FROM console_sessions WHERE token_hash = $1"
        )
        .bind(token_hash)
        .execute(p)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Referrals and won referrals per market and day of first touch, for the funnel's filter.
    /// Grouped by the expression of the `referrals_by_day` index, which SQLite then reads in
    /// order without sorting; days fold into months in Rust.
    pub async fn conversion_by_day(
        &self,
        filter: &FunnelFilter,
    ) -> Result<Vec<DayGroup>, StoreError> {
        let sql = format!(
            "SELECT r.market, r.first_touch_at / 86400000, COUNT(*), COUNT(r.won_at) \
             FROM referrals r WHERE {REFERRAL_FILTER} \
             GROUP BY r.market, r.first_touch_at / 86400000"
        );
        let rows: Vec<(Option<String>, i64, i64, i64)> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(&filter.market)
            .bind(&filter.source)
            .bind(filter.from)
            .bind(filter.to)
            .fetch_all(p)
            .await?);
        rows.into_iter()
            .map(|(market, day, referrals, won)| {
                Ok(DayGroup {
                    market,
                    day,
                    referrals: count(referrals)?,
                    won: count(won)?,
                })
            })
            .collect()
    }

    /// How many CRM writes wait, retry or are dead.
    pub async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        let (pending, retrying, dead): (i64, i64, i64) = on_pool!(self, |p| sqlx::query_as(
            "SELECT COUNT(CASE WHEN status = 'pending' AND last_error IS NULL THEN 1 END), \
                    COUNT(CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 1 END), \
                    COUNT(CASE WHEN status = 'dead' THEN 1 END) \
             FROM outbox WHERE status IN ('pending', 'dead')"
        )
        .fetch_one(p)
        .await?);
        Ok(DeliveryCounts {
            pending,
            retrying,
            dead,
        })
    }

    /// The oldest `limit` CRM writes in `state`.
    pub async fn deliveries_in(
        &self,
        state: DeliveryState,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {} ORDER BY id LIMIT $1",
            state.condition()
        );
        self.fetch_all_by(&sql, limit).await
    }

    /// Inbox events parked as `unmapped` (a configuration gap) or `failed`, oldest first.
    pub async fn parked_inbox_events(&self, limit: i64) -> Result<Vec<InboxEvent>, StoreError> {
        let sql = format!(
            "SELECT {INBOX_COLUMNS} FROM inbox_events \
             WHERE status IN ('unmapped', 'failed') ORDER BY id LIMIT $1"
        );
        self.fetch_all_by(&sql, limit).await
    }

    /// How many inbox events are parked as `unmapped` and how many `failed`.
    pub async fn parked_inbox_counts(&self) -> Result<(i64, i64), StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT COUNT(CASE WHEN status = 'unmapped' THEN 1 END), \
                    COUNT(CASE WHEN status = 'failed' THEN 1 END) \
             FROM inbox_events WHERE status IN ('unmapped', 'failed')"
        )
        .fetch_one(p)
        .await?))
    }

    /// Referrals and won referrals per referrer code, for the codes from `first` to `last` (one
    /// page of the referrer list).
    pub async fn referral_counts_between(
        &self,
        first: &str,
        last: &str,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT referrer_code, COUNT(*), COUNT(won_at) FROM referrals \
             WHERE referrer_code >= $1 AND referrer_code <= $2 GROUP BY referrer_code"
        )
        .bind(first)
        .bind(last)
        .fetch_all(p)
        .await?))
    }

    /// One referrer's referrals, newest first touch first.
    pub async fn partner_referrals(
        &self,
        code: &str,
        limit: i64,
    ) -> Result<Vec<Referral>, StoreError> {
        let sql = format!(
            "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE referrer_code = $1 \
             ORDER BY first_touch_at DESC, id DESC LIMIT $2"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(code)
            .bind(limit)
            .fetch_all(p)
            .await?))
    }

    /// The canonical stage (`None` while unmapped) of every live deal linked to a referral of
    /// `code`, by referral id.
    pub async fn partner_deal_stages(
        &self,
        code: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
            "SELECT d.referral_id, d.stage FROM referrals r JOIN crm_records d ON d.referral_id = r.id \
             WHERE r.referrer_code = $1 AND d.object_type IN ('deal', 'Opportunity') \
               AND d.deleted_at IS NULL AND d.merged_into IS NULL"
        )
        .bind(code)
        .fetch_all(p)
        .await?
        }))
    }

    /// The rewards `code` earns as the referrer (never the referees' side), oldest first.
    pub async fn partner_rewards(&self, code: &str) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM rewards WHERE referrer_code = $1 \
             AND beneficiary = 'referrer' ORDER BY created_at, id"
        );
        self.fetch_all_by(&sql, code).await
    }
}

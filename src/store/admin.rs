//! Read queries behind the admin API: paginated lists with filters. Pagination is by keyset
//! (`after` = the last id or code of the previous page), which stays fast and stable as data grows.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Encode, FromRow, Postgres, Sqlite, Type};

use super::outbox::{OutboxRow, OUTBOX_COLUMNS};
use super::referrals::{Referral, Referrer, REFERRAL_COLUMNS, REFERRER_COLUMNS};
use super::rewards::{Reward, REWARD_COLUMNS};
use super::{on_pool, Store, StoreError};
use crate::clock::Millis;

/// Filters of `GET /api/v1/referrals`.
#[derive(Debug, Clone, Default)]
pub struct ReferralFilter {
    pub market: Option<String>,
    pub source: Option<String>,
    pub referrer_code: Option<String>,
    pub since: Option<Millis>,
}

impl Store {
    pub async fn list_referrers(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Referrer>, StoreError> {
        let sql = format!(
            "SELECT {REFERRER_COLUMNS} FROM referrers WHERE ($1 IS NULL OR code > $1) ORDER BY code LIMIT $2"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?))
    }

    /// Referrals and won referrals of one referrer.
    pub async fn referrer_counts(&self, code: &str) -> Result<(i64, i64), StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT COUNT(*), COUNT(won_at) FROM referrals WHERE referrer_code = $1"
        )
        .bind(code)
        .fetch_one(p)
        .await?))
    }

    pub async fn list_referrals(
        &self,
        filter: &ReferralFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Referral>, StoreError> {
        // Ids are UUIDv7: ordering by id is ordering by creation.
        let sql = format!(
            "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE ($1 IS NULL OR market = $1) \
             AND ($2 IS NULL OR source = $2) AND ($3 IS NULL OR referrer_code = $3) \
             AND ($4 IS NULL OR first_touch_at >= $4) AND ($5 IS NULL OR id > $5) ORDER BY id LIMIT $6"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(&filter.market)
            .bind(&filter.source)
            .bind(&filter.referrer_code)
            .bind(filter.since)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?))
    }

    pub async fn referral(&self, id: &str) -> Result<Option<Referral>, StoreError> {
        let sql = format!("SELECT {REFERRAL_COLUMNS} FROM referrals WHERE id = $1");
        self.fetch_optional_by(&sql, id).await
    }

    pub async fn rewards_of_referral(&self, referral_id: &str) -> Result<Vec<Reward>, StoreError> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM rewards WHERE referral_id = $1 ORDER BY created_at, id"
        );
        self.fetch_all_by(&sql, referral_id).await
    }

    pub async fn list_rewards(
        &self,
        status: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Reward>, StoreError> {
        // Owned, so one bound covers both id types (text here, integer for deliveries).
        let after = after.map(str::to_owned);
        self.page_by_status("rewards", REWARD_COLUMNS, status, after, limit)
            .await
    }

    pub async fn reward_by_id(&self, id: &str) -> Result<Option<Reward>, StoreError> {
        let sql = format!("SELECT {REWARD_COLUMNS} FROM rewards WHERE id = $1");
        self.fetch_optional_by(&sql, id).await
    }

    pub async fn list_deliveries(
        &self,
        status: Option<&str>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.page_by_status("outbox", OUTBOX_COLUMNS, status, after, limit)
            .await
    }

    /// A page of `table` in id order after `after`, only rows in `status` when one is given.
    async fn page_by_status<O, Id>(
        &self,
        table: &str,
        columns: &str,
        status: Option<&str>,
        after: Option<Id>,
        limit: i64,
    ) -> Result<Vec<O>, StoreError>
    where
        O: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
        Id: Send
            + for<'q> Encode<'q, Sqlite>
            + Type<Sqlite>
            + for<'q> Encode<'q, Postgres>
            + Type<Postgres>,
    {
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE ($1 IS NULL OR status = $1) \
             AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        );
        Ok(on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(status)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?))
    }
}

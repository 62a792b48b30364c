//! The funnel report's SQL: the few small aggregates [`crate::reports::funnel::compute`] turns into
//! the report. Referrals are counted in SQL, grouped finely enough that everything the report needs
//! (distinct referrers, repeat referrers, the market matrix, totals across groups) can still be
//! derived exactly; money is decimal text, summed exactly in Rust. Indexes:
//! `migrations/*/0002_report_indexes.sql`.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{on_pool, BackendKind, Store, StoreError};
use crate::clock::Millis;

/// Which referrals a report covers. `None` means no restriction; `market`/`source` `"unknown"`
/// also matches referrals without one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelFilter {
    pub market: Option<String>,
    pub source: Option<String>,
    /// First touch at or after (epoch ms).
    pub from: Option<Millis>,
    /// First touch before (epoch ms). Partners are counted as of this time.
    pub to: Option<Millis>,
}

/// Everything the funnel report is computed from, as read in one snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunnelFacts {
    pub filter: FunnelFilter,
    pub referral_groups: Vec<ReferralGroup>,
    pub partners: Vec<PartnerGroup>,
    pub days_to_win: Vec<DaysToWinGroup>,
    pub revenue: Vec<MoneyGroup>,
    pub reward_cost: Vec<MoneyGroup>,
}

/// The referrals of one referrer (or of none) in one market and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralGroup {
    pub referrer_code: Option<String>,
    /// The referrer's own market; `None` when unknown or the code has no referrer.
    pub referrer_market: Option<String>,
    pub market: Option<String>,
    pub source: Option<String>,
    pub referrals: u64,
    pub qualified: u64,
    pub won: u64,
}

/// Referrers of one market: every one counts as invited (joining implies an invitation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerGroup {
    pub market: Option<String>,
    pub invited: u64,
    pub joined: u64,
}

/// How many won referrals of a market and source took `tenths` tenths of a day from first touch
/// to won (rounded half away from zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaysToWinGroup {
    pub market: Option<String>,
    pub source: Option<String>,
    pub tenths: i64,
    pub referrals: u64,
}

/// The sum of amounts in `currency` for a market and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyGroup {
    pub market: Option<String>,
    pub source: Option<String>,
    pub currency: Option<String>,
    pub amount: Decimal,
}

/// A CRM amount this large is a data-entry error, and could overflow the sums.
const MAX_DEAL_AMOUNT: i64 = 1_000_000_000_000_000_000;

/// Joins a group's amounts into one text (ASCII unit separator), so a few rows carry them all.
const SEPARATOR: char = '\u{1f}';

/// The referral filter over `referrals` aliased `r`, on parameters $1..$4.
pub(super) const REFERRAL_FILTER: &str = "($1 IS NULL OR COALESCE(r.market, 'unknown') = $1) \
     AND ($2 IS NULL OR COALESCE(r.source, 'unknown') = $2) \
     AND ($3 IS NULL OR r.first_touch_at >= $3) \
     AND ($4 IS NULL OR r.first_touch_at < $4)";

type GroupRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
);
/// Market, source, currency, the amounts joined by [`SEPARATOR`].
type MoneyRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Store {
    /// Read the facts of the funnel report for `filter`, in one read-only snapshot.
    pub async fn funnel_facts(&self, filter: &FunnelFilter) -> Result<FunnelFacts, StoreError> {
        // Grouped by the raw columns, in the order of the `referrals_report` index, so SQLite
        // streams the index without sorting a million rows; labels are normalised in Rust.
        let groups_sql = format!(
            "SELECT g.referrer_code, p.market, g.market, g.source, g.n, g.q, g.w \
             FROM (SELECT r.referrer_code, r.market, r.source, COUNT(*) AS n, \
                       COUNT(r.qualified_at) AS q, COUNT(r.won_at) AS w \
                   FROM referrals r WHERE {REFERRAL_FILTER} \
                   GROUP BY r.referrer_code, r.market, r.source) g \
             LEFT JOIN referrers p ON p.code = g.referrer_code"
        );
        let partners_sql = "SELECT market, COUNT(*), \
                 COUNT(CASE WHEN status = 'joined' \
                       AND ($2 IS NULL OR COALESCE(joined_at, created_at) < $2) THEN 1 END) \
             FROM referrers \
             WHERE ($1 IS NULL OR COALESCE(market, 'unknown') = $1) \
               AND ($2 IS NULL OR COALESCE(invited_at, joined_at, created_at) < $2) \
             GROUP BY market";
        // Rounding to tenths of a day before the percentile gives the same result as after it
        // (rounding is monotonic and nearest-rank picks a value), and keeps the result small.
        let days_sql = format!(
            "SELECT r.market, r.source, \
                 CASE WHEN r.won_at >= r.first_touch_at \
                      THEN (r.won_at - r.first_touch_at + 4320000) / 8640000 \
                      ELSE -((r.first_touch_at - r.won_at + 4320000) / 8640000) END, \
                 COUNT(*) \
             FROM referrals r WHERE r.won_at IS NOT NULL AND {REFERRAL_FILTER} \
             GROUP BY 1, 2, 3"
        );
        // Amounts are decimal text: SQLite's SUM would turn them into floating point, so each
        // group's amounts come back joined into one text and are summed exactly in Rust. Fetching
        // them row by row instead costs more than all the SQL.
        let (concat, position, separator) = match self.kind() {
            BackendKind::Sqlite => ("group_concat", "instr", "char(31)"),
            BackendKind::Postgres => ("string_agg", "strpos", "chr(31)"),
        };
        // A deal at stage won has made its referral won, so the few won referrals drive the
        // lookups. CROSS JOIN fixes that order on SQLite; PostgreSQL plans it as an inner join.
        let revenue_sql = format!(
            "SELECT r.market, r.source, d.currency, {concat}(d.amount, {separator}) \
             FROM referrals r CROSS JOIN crm_records d \
             WHERE r.won_at IS NOT NULL AND {REFERRAL_FILTER} \
               AND d.referral_id = r.id AND d.stage = 'won' \
               AND d.object_type IN ('deal', 'Opportunity') \
               AND d.deleted_at IS NULL AND d.merged_into IS NULL \
               AND d.amount IS NOT NULL AND {position}(d.amount, {separator}) = 0 \
             GROUP BY r.market, r.source, d.currency"
        );
        // Recurring revenue: referred customers' paid invoices, refunds taken off.
        let recurring_sql = format!(
            "SELECT r.market, r.source, i.currency, {concat}(i.amount, {separator}) \
             FROM invoices i CROSS JOIN referrals r \
             WHERE r.id = i.referral_id AND {REFERRAL_FILTER} \
             GROUP BY r.market, r.source, i.currency \
             UNION ALL \
             SELECT r.market, r.source, f.currency, {concat}('-' || f.amount, {separator}) \
             FROM invoice_refunds f CROSS JOIN invoices i CROSS JOIN referrals r \
             WHERE i.invoice_id = f.invoice_id AND r.id = i.referral_id AND {REFERRAL_FILTER} \
             GROUP BY r.market, r.source, f.currency"
        );
        // A reward exists from the program's success stage on, which need not be won.
        let cost_sql = format!(
            "SELECT r.market, r.source, w.currency, {concat}(w.amount, {separator}) \
             FROM rewards w CROSS JOIN referrals r \
             WHERE w.status NOT IN ('reversed', 'rejected') AND r.id = w.referral_id \
               AND {REFERRAL_FILTER} \
             GROUP BY r.market, r.source, w.currency"
        );
        let begin = match self.kind() {
            BackendKind::Sqlite => "BEGIN",
            BackendKind::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        };
        let (groups, partners, days, revenue, cost) = on_pool!(self, |pool| {
            let mut tx = pool.begin_with(begin).await?;
            macro_rules! filtered {
                ($sql:expr) => {
                    sqlx::query_as($sql)
                        .bind(&filter.market)
                        .bind(&filter.source)
                        .bind(filter.from)
                        .bind(filter.to)
                        .fetch_all(&mut *tx)
                        .await?
                };
            }
            let groups: Vec<GroupRow> = filtered!(&groups_sql);
            let partners: Vec<(Option<String>, i64, i64)> = sqlx::query_as(partners_sql)
                .bind(&filter.market)
                .bind(filter.to)
                .fetch_all(&mut *tx)
                .await?;
            let days: Vec<(Option<String>, Option<String>, i64, i64)> = filtered!(&days_sql);
            let mut revenue: Vec<MoneyRow> = filtered!(&revenue_sql);
            revenue.extend(filtered!(&recurring_sql));
            let cost: Vec<MoneyRow> = filtered!(&cost_sql);
            tx.commit().await?;
            (groups, partners, days, revenue, cost)
        });

        let max_deal = Decimal::from(MAX_DEAL_AMOUNT);
        let mut unreadable = 0usize;
        let revenue = revenue
            .into_iter()
            .map(|(market, source, currency, amounts)| {
                let mut sum = Decimal::ZERO;
                for text in amounts.as_deref().unwrap_or_default().split(SEPARATOR) {
                    match Decimal::from_str(text.trim()) {
                        Ok(amount) if amount.abs() < max_deal => sum = sum.saturating_add(amount),
                        _ => unreadable += 1,
                    }
                }
                MoneyGroup {
                    market,
                    source,
                    currency,
                    amount: sum,
                }
            })
            .collect();
        if unreadable > 0 {
            tracing::warn!(
                amounts = unreadable,
                "won deal amounts that are not plausible decimals were left out of the revenue"
            );
        }
        let reward_cost = cost
            .into_iter()
            .map(|(market, source, currency, amounts)| {
                let mut sum = Decimal::ZERO;
                for text in amounts.as_deref().unwrap_or_default().split(SEPARATOR) {
                    let amount = Decimal::from_str(text.trim()).map_err(|_| {
                        StoreError::Corrupt(format!("reward amount `{text}` is not a decimal"))
                    })?;
                    sum = sum.saturating_add(amount);
                }
                Ok(MoneyGroup {
                    market,
                    source,
                    currency,
                    amount: sum,
                })
            })
            .collect::<Result<_, StoreError>>()?;

        Ok(FunnelFacts {
            filter: filter.clone(),
            referral_groups: groups
                .into_iter()
                .map(
                    |(code, referrer_market, market, source, n, q, w)| ReferralGroup {
                        referrer_code: code,
                        referrer_market,
                        market,
                        source,
                        referrals: count_of(n),
                        qualified: count_of(q),
                        won: count_of(w),
                    },
                )
                .collect(),
            partners: partners
                .into_iter()
                .map(|(market, invited, joined)| PartnerGroup {
                    market,
                    invited: count_of(invited),
                    joined: count_of(joined),
                })
                .collect(),
            days_to_win: days
                .into_iter()
                .map(|(market, source, tenths, n)| DaysToWinGroup {
                    market,
                    source,
                    tenths,
                    referrals: count_of(n),
                })
                .collect(),
            revenue,
            reward_cost,
        })
    }
}

fn count_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

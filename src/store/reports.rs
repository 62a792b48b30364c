//! The funnel report's SQL: the few small aggregates [`crate::reports::funnel::compute`] turns into
//! the report. Referrals are counted in SQL, grouped finely enough that everything the report needs
//! (distinct referrers, repeat referrers, the market matrix, totals across groups) can still be
//! derived exactly; money is decimal text, summed exactly in Rust. Indexes:
//! `migrations/*/0002_report_indexes.sql`.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::baseline::BaselineFacts;
use super::moments::{self, AskOutcome};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::FromRow;

use super::tx::on_tx;
use super::{count, BackendKind, Store, StoreError, Tx};
use crate::clock::Millis;
use crate::domain::referrer::PartnerKind;

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

/// A [`FunnelFilter`] in SQL: over `referrals` aliased `r`, on parameters $1..$4 (bound by
/// `Tx::filtered`).
pub(super) const REFERRAL_FILTER: &str = "($1 IS NULL OR COALESCE(r.market, 'unknown') = $1) \
     AND ($2 IS NULL OR COALESCE(r.source, 'unknown') = $2) \
     AND ($3 IS NULL OR r.first_touch_at >= $3) \
     AND ($4 IS NULL OR r.first_touch_at < $4)";

/// Everything the funnel report is computed from, as read in one snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunnelFacts {
    pub filter: FunnelFilter,
    pub referral_groups: Vec<ReferralGroup>,
    pub partners: Vec<PartnerGroup>,
    pub days_to_win: Vec<DaysToWinGroup>,
    pub revenue: Vec<MoneyGroup>,
    pub reward_cost: Vec<MoneyGroup>,
    /// Referral asks made in the period, per moment kind, and what followed.
    pub asks: Vec<AskOutcome>,
}

/// The referrals of one referrer (or of none) in one market and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralGroup {
    pub referrer_code: Option<String>,
    /// The referrer's own market; `None` when unknown or the code has no referrer.
    pub referrer_market: Option<String>,
    /// `None` when the code has no referrer (or there is no code).
    pub referrer_kind: Option<PartnerKind>,
    pub referrer_name: Option<String>,
    pub market: Option<String>,
    pub source: Option<String>,
    pub referrals: u64,
    pub qualified: u64,
    pub won: u64,
}

/// Referrers of one market and kind: every one counts as invited (joining implies an
/// invitation); `active` are the joined ones with a referral in the period (whatever the
/// referee's market), so a market's activation never counts another market's partners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerGroup {
    pub market: Option<String>,
    pub kind: PartnerKind,
    pub invited: u64,
    pub joined: u64,
    pub active: u64,
}

/// Where a group of referrals came from: their market and source, and their referrer's code
/// (`None` where unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralOrigin {
    pub market: Option<String>,
    pub source: Option<String>,
    pub referrer_code: Option<String>,
}

/// How many won referrals of one origin took `tenths` tenths of a day from first touch to won
/// (rounded half away from zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaysToWinGroup {
    pub origin: ReferralOrigin,
    pub tenths: i64,
    pub referrals: u64,
}

/// The sum of amounts in `currency` of the referrals of one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyGroup {
    pub origin: ReferralOrigin,
    pub currency: Option<String>,
    pub amount: Decimal,
}

/// A CRM amount this large is a data-entry error, and could overflow the sums.
const MAX_DEAL_AMOUNT: i64 = 1_000_000_000_000_000_000;

/// Joins a group's amounts into one text (ASCII unit separator), so a few rows carry them all.
const SEPARATOR: char = '\u{1f}';

/// Code, the referrer's market, kind and name, market, source, counts.
type GroupRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
);
/// Market, source, referrer code, tenths of a day, count.
type DaysRow = (Option<String>, Option<String>, Option<String>, i64, i64);
/// Market, source, referrer code, currency, the amounts joined by [`SEPARATOR`].
type MoneyRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// A money row's group with its joined amounts summed, each as `amount` reads it (`None`: left
/// out of the sum).
fn money_group(
    row: MoneyRow,
    mut amount: impl FnMut(&str) -> Result<Option<Decimal>, StoreError>,
) -> Result<MoneyGroup, StoreError> {
    let (market, source, referrer_code, currency, amounts) = row;
    let mut sum = Decimal::ZERO;
    for text in amounts.split(SEPARATOR) {
        if let Some(amount) = amount(text.trim())? {
            sum = sum.saturating_add(amount);
        }
    }
    Ok(MoneyGroup {
        origin: ReferralOrigin {
            market,
            source,
            referrer_code,
        },
        currency,
        amount: sum,
    })
}

impl Store {
    /// Read the facts of the funnel report for `filter`, in one read-only snapshot.
    pub async fn funnel_facts(&self, filter: &FunnelFilter) -> Result<FunnelFacts, StoreError> {
        let readers = self.begin_reads::<2>().await?;
        self.funnel_facts_in(readers, filter).await
    }

    /// The facts of the funnel report and of its comparison (see [`Store::baseline_facts`]),
    /// read side by side in one snapshot.
    pub async fn funnel_and_baseline_facts(
        &self,
        filter: &FunnelFilter,
        as_of: Millis,
    ) -> Result<(FunnelFacts, BaselineFacts), StoreError> {
        let [first, second, third, fourth] = self.begin_reads::<4>().await?;
        tokio::try_join!(
            self.funnel_facts_in([first, second], filter),
            self.baseline_facts_in([third, fourth], filter, as_of)
        )
    }

    /// [`Store::funnel_facts`], read by two readers of one snapshot.
    async fn funnel_facts_in(
        &self,
        readers: [Tx; 2],
        filter: &FunnelFilter,
    ) -> Result<FunnelFacts, StoreError> {
        // Grouped by the raw columns, in the order of the `referrals_report` index, so SQLite
        // streams the index without sorting a million rows; labels are normalised in Rust.
        let groups_sql = format!(
            "SELECT g.referrer_code, p.market, p.kind, p.name, g.market, g.source, g.n, g.q, g.w \
             FROM (SELECT r.referrer_code, r.market, r.source, COUNT(*) AS n, \
                       COUNT(r.qualified_at) AS q, COUNT(r.won_at) AS w \
                   FROM referrals r WHERE {REFERRAL_FILTER} \
                   GROUP BY r.referrer_code, r.market, r.source) g \
             LEFT JOIN referrers p ON p.code = g.referrer_code"
        );
        // A partner is active in its own market when it referred anyone in the period (through
        // the filter's source): one index probe per partner, stopping at the first referral.
        let partners_sql = "SELECT p.market, p.kind, COUNT(*), \
                 COUNT(CASE WHEN p.status = 'joined' \
                       AND ($2 IS NULL OR COALESCE(p.joined_at, p.created_at) < $2) THEN 1 END), \
                 COUNT(CASE WHEN p.status = 'joined' \
                       AND ($2 IS NULL OR COALESCE(p.joined_at, p.created_at) < $2) \
                       AND EXISTS (SELECT 1 FROM referrals r WHERE r.referrer_code = p.code \
                           AND ($3 IS NULL OR COALESCE(r.source, 'unknown') = $3) \
                           AND ($4 IS NULL OR r.first_touch_at >= $4) \
                           AND ($2 IS NULL OR r.first_touch_at < $2)) THEN 1 END) \
             FROM referrers p \
             WHERE ($1 IS NULL OR COALESCE(p.market, 'unknown') = $1) \
               AND ($2 IS NULL OR COALESCE(p.invited_at, p.joined_at, p.created_at) < $2) \
             GROUP BY p.market, p.kind";
        // Rounded to tenths of a day in SQL: percentiles of the rounded values are the rounded
        // percentiles closely enough for a report, and the result stays small.
        let days_sql = format!(
            "SELECT r.market, r.source, r.referrer_code, \
                 CASE WHEN r.won_at >= r.first_touch_at \
                      THEN (r.won_at - r.first_touch_at + 4320000) / 8640000 \
                      ELSE -((r.first_touch_at - r.won_at + 4320000) / 8640000) END, \
                 COUNT(*) \
             FROM referrals r WHERE r.won_at IS NOT NULL AND {REFERRAL_FILTER} \
             GROUP BY 1, 2, 3, 4"
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
            "SELECT r.market, r.source, r.referrer_code, d.currency, {concat}(d.amount, {separator}) \
             FROM referrals r CROSS JOIN crm_records d \
             WHERE r.won_at IS NOT NULL AND {REFERRAL_FILTER} \
               AND d.referral_id = r.id AND d.stage = 'won' \
               AND d.object_type IN ('deal', 'Opportunity') \
               AND d.deleted_at IS NULL AND d.merged_into IS NULL \
               AND d.amount IS NOT NULL AND {position}(d.amount, {separator}) = 0 \
             GROUP BY r.market, r.source, r.referrer_code, d.currency"
        );
        // Recurring revenue: referred customers' paid invoices, refunds taken off.
        let recurring_sql = format!(
            "SELECT r.market, r.source, r.referrer_code, i.currency, \
                 {concat}(i.amount, {separator}) \
             FROM invoices i CROSS JOIN referrals r \
             WHERE r.id = i.referral_id AND {REFERRAL_FILTER} \
             GROUP BY r.market, r.source, r.referrer_code, i.currency \
             UNION ALL \
             SELECT r.market, r.source, r.referrer_code, f.currency, \
                 {concat}('-' || f.amount, {separator}) \
             FROM invoice_refunds f CROSS JOIN invoices i CROSS JOIN referrals r \
             WHERE i.invoice_id = f.invoice_id AND r.id = i.referral_id AND {REFERRAL_FILTER} \
             GROUP BY r.market, r.source, r.referrer_code, f.currency"
        );
        // A reward exists from the program's success stage on, which need not be won.
        let cost_sql = format!(
            "SELECT r.market, r.source, r.referrer_code, w.currency, {concat}(w.amount, {separator}) \
             FROM rewards w CROSS JOIN referrals r \
             WHERE w.status NOT IN ('reversed', 'rejected') AND r.id = w.referral_id \
               AND {REFERRAL_FILTER} \
             GROUP BY r.market, r.source, r.referrer_code, w.currency"
        );
        // Two chains of about equal cost (groups and cost; partners, days and revenue), each on
        // its own connection, in one snapshot: on SQLite each read runs on its connection's own
        // thread, so the report takes the longer chain instead of their sum.
        let [mut first, mut second] = readers;
        let first_chain = async {
            let groups: Vec<GroupRow> = first.filtered(&groups_sql, filter).await?;
            let cost: Vec<MoneyRow> = first.filtered(&cost_sql, filter).await?;
            let asks: Vec<(String, i64, i64)> =
                on_tx!(first, |c| sqlx::query_as(moments::ASK_OUTCOMES_SQL)
                    .bind(filter.from)
                    .bind(filter.to)
                    .bind(moments::ASK_FOLLOW_UP)
                    .fetch_all(c)
                    .await?);
            first.rollback().await?;
            Ok::<_, StoreError>((groups, cost, asks))
        };
        let second_chain = async {
            let partners: Vec<(Option<String>, String, i64, i64, i64)> =
                on_tx!(second, |c| sqlx::query_as(partners_sql)
                    .bind(&filter.market)
                    .bind(filter.to)
                    .bind(&filter.source)
                    .bind(filter.from)
                    .fetch_all(c)
                    .await?);
            let days: Vec<DaysRow> = second.filtered(&days_sql, filter).await?;
            let mut revenue: Vec<MoneyRow> = second.filtered(&revenue_sql, filter).await?;
            revenue.extend(second.filtered::<MoneyRow>(&recurring_sql, filter).await?);
            second.rollback().await?;
            Ok::<_, StoreError>((partners, days, revenue))
        };
        let ((groups, cost, asks), (partners, days, revenue)) =
            tokio::try_join!(first_chain, second_chain)?;

        let max_deal = Decimal::from(MAX_DEAL_AMOUNT);
        let mut unreadable = 0usize;
        let revenue = revenue
            .into_iter()
            .map(|row| {
                money_group(row, |text| match Decimal::from_str(text) {
                    Ok(amount) if amount.abs() < max_deal => Ok(Some(amount)),
                    _ => {
                        unreadable += 1;
                        Ok(None)
                    }
                })
            })
            .collect::<Result<_, StoreError>>()?;
        if unreadable > 0 {
            tracing::warn!(
                amounts = unreadable,
                "won deal amounts that are not plausible decimals were left out of the revenue"
            );
        }
        let reward_cost = cost
            .into_iter()
            .map(|row| {
                money_group(row, |text| {
                    Decimal::from_str(text).map(Some).map_err(|_| {
                        StoreError::Corrupt(format!("reward amount `{text}` is not a decimal"))
                    })
                })
            })
            .collect::<Result<_, StoreError>>()?;

        let referral_groups = groups
            .into_iter()
            .map(
                |(code, referrer_market, kind, name, market, source, n, q, w)| {
                    Ok(ReferralGroup {
                        referrer_code: code,
                        referrer_market,
                        referrer_kind: kind.as_deref().map(partner_kind).transpose()?,
                        referrer_name: name,
                        market,
                        source,
                        referrals: count(n)?,
                        qualified: count(q)?,
                        won: count(w)?,
                    })
                },
            )
            .collect::<Result<_, StoreError>>()?;
        let partners = partners
            .into_iter()
            .map(|(market, kind, invited, joined, active)| {
                Ok(PartnerGroup {
                    market,
                    kind: partner_kind(&kind)?,
                    invited: count(invited)?,
                    joined: count(joined)?,
                    active: count(active)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(FunnelFacts {
            filter: filter.clone(),
            referral_groups,
            partners,
            days_to_win: days
                .into_iter()
                .map(|(market, source, referrer_code, tenths, n)| {
                    Ok(DaysToWinGroup {
                        origin: ReferralOrigin {
                            market,
                            source,
                            referrer_code,
                        },
                        tenths,
                        referrals: count(n)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            revenue,
            reward_cost,
            asks: moments::ask_outcomes(asks)?,
        })
    }
}

impl Tx {
    /// The rows `sql` selects with `filter` bound as [`REFERRAL_FILTER`]'s parameters.
    async fn filtered<O>(&mut self, sql: &str, filter: &FunnelFilter) -> Result<Vec<O>, StoreError>
    where
        O: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        Ok(on_tx!(self, |c| sqlx::query_as::<_, O>(sql)
            .bind(&filter.market)
            .bind(&filter.source)
            .bind(filter.from)
            .bind(filter.to)
            .fetch_all(c)
            .await?))
    }
}

/// A referrer kind read back from the database.
fn partner_kind(text: &str) -> Result<PartnerKind, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("referrer kind `{text}` is not a known kind")))
}

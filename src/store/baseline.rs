//! The channel baseline (SPEC §4): every deal, referred or not, kept as a few facts on its
//! `crm_records` row (created, pipeline, currency, amount, the CRM's source value, the first
//! times it reached qualified, won and lost), so referred deals can be compared with all others.
//!
//! Counting millions of deals per report would be too slow, so deals created per day are counted
//! ahead in `deal_cohorts` (one row per cohort and UTC day of creation). The rollup is derived
//! state, kept exact this way: every statement that writes a deal's row marks it
//! `baseline_dirty`; [`Tx::refresh_baseline`] takes marked deals, moves their count from the
//! cohort they were counted in (`baseline_rolled`) to the one they belong to now, and clears the
//! mark. A report ([`Store::baseline_facts`]) reads, in one snapshot, the rollup for the whole
//! days of its period, corrects it for the deals still marked, and counts the deals created in
//! the period's partial days directly; so it is exact however far the refresh has got. Won deals
//! are counted ahead the same way: per cohort and day of creation in `deal_wins` (with their
//! exact amount sum and a histogram of days to won), and the non-referred ones per cohort, deal
//! type and day of the first win in `deal_acquisitions` (revenue per customer after 12 months).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::bulk::Col;
use super::reports::FunnelFilter;
use super::tx::{on_tx, TxInner};
use super::{count, on_pool, BackendKind, Store, StoreError, Tx};
use crate::clock::{Millis, DAY};
use crate::domain::Crm;

/// What a deal is counted under: referred or not (with the referral's market and source), and
/// the raw facts the report maps to a market and a channel (`[channels]` may change; counts
/// never need recounting for it).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::FromRow,
)]
pub struct Cohort {
    pub crm: Crm,
    pub referred: bool,
    /// The referral's market and source (referred deals only).
    pub market: Option<String>,
    pub source: Option<String>,
    pub pipeline: Option<String>,
    /// Upper-cased; `None` when blank.
    pub currency: Option<String>,
    pub crm_source: Option<String>,
}

impl Cohort {
    /// The key of a rollup row (`deal_cohorts.cohort`).
    pub fn key(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    fn of_key(key: &str) -> Result<Self, StoreError> {
        serde_json::from_str(key)
            .map_err(|e| StoreError::Corrupt(format!("deal cohort `{key}`: {e}")))
    }

    /// The cohort as the rollup keeps it: referral facts for referred deals only, the currency
    /// upper-cased.
    pub fn normalised(mut self) -> Self {
        if !self.referred {
            self.market = None;
            self.source = None;
        }
        self.currency = self
            .currency
            .map(|c| c.trim().to_ascii_uppercase())
            .filter(|c| !c.is_empty());
        self
    }
}

/// What a deal adds to the rollup: its cohort, the UTC day it was created, whether it reached
/// qualified, and what it adds to the won rollups while it is won. Kept on the deal's row
/// (`baseline_rolled`) once counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rolled {
    pub cohort: Cohort,
    pub day: i64,
    pub qualified: bool,
    /// Absent in what rows counted before the won rollups existed (those rows were marked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub won: Option<Won>,
}

/// What a live won deal adds to the won rollups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Won {
    pub deal_type: Option<String>,
    /// Tenths of a day from creation to the first win, rounded half up; `None` when the win
    /// time is not known.
    pub tenths: Option<i64>,
    /// The UTC day of the first win, when known.
    pub day: Option<i64>,
    /// The amount, when it is a plausible decimal.
    pub amount: Option<Decimal>,
}

/// A cohort and a deal type: what `deal_acquisitions` counts customers under (a renewal is no
/// new customer, and `[renewals]` may name deal types).
#[derive(Serialize, Deserialize)]
struct AcquiredKey {
    #[serde(flatten)]
    cohort: Cohort,
    deal_type: Option<String>,
}

impl Rolled {
    /// As `baseline_rolled` holds it.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    /// Where a won deal counts: its `deal_wins` key and day, and, when it is not referred and
    /// its win time is known, its `deal_acquisitions` key and day.
    fn won_keys(&self) -> Option<(&Won, RollupKey, Option<RollupKey>)> {
        let won = self.won.as_ref()?;
        let acquired = won.day.filter(|_| !self.cohort.referred).map(|day| {
            let key = AcquiredKey {
                cohort: self.cohort.clone(),
                deal_type: won.deal_type.clone(),
            };
            (
                serde_json::to_string(&key).expect("plain data serialises"),
                day,
            )
        });
        Some((won, (self.cohort.key(), self.day), acquired))
    }
}

/// A won rollup row's key: cohort (as text) and day.
type RollupKey = (String, i64);

/// Won deals of one rollup row (or of many summed): how many, how many with an amount, the
/// amounts' exact sum, and deals per tenths of a day from creation to the first win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct WonCounts {
    deals: i64,
    priced: i64,
    amount: Decimal,
    tenths: BTreeMap<i64, i64>,
}

impl WonCounts {
    fn add(&mut self, won: &Won, sign: i64) {
        self.deals += sign;
        if let Some(amount) = won.amount {
            self.priced += sign;
            let signed = if sign < 0 { -amount } else { amount };
            self.amount = self.amount.saturating_add(signed);
        }
        if let Some(tenths) = won.tenths {
            *self.tenths.entry(tenths).or_default() += sign;
        }
    }

    fn merge(&mut self, other: &WonCounts) {
        self.deals += other.deals;
        self.priced += other.priced;
        self.amount = self.amount.saturating_add(other.amount);
        for (tenths, n) in &other.tenths {
            *self.tenths.entry(*tenths).or_default() += n;
        }
        self.tenths.retain(|_, n| *n != 0);
    }
}

/// A row of a won rollup as stored (`tenths` is empty text in `deal_acquisitions`).
#[derive(Debug, Serialize, sqlx::FromRow)]
struct WonRow {
    cohort: String,
    day: i64,
    deals: i64,
    priced: i64,
    amount: String,
    tenths: String,
}

/// Separates the rows' amounts and histograms when a report reads a cohort's rows summed.
const UNIT: char = '\u{1f}';

impl WonRow {
    /// What the row counts; a report's summed row holds every row's amount and histogram
    /// joined by [`UNIT`].
    fn counts(&self, table: &WonTable) -> Result<WonCounts, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!(
                "{} of {} `{}` (day {}): {e}",
                what, table.name, self.cohort, self.day
            ))
        };
        let mut counts = WonCounts {
            deals: self.deals,
            priced: self.priced,
            ..WonCounts::default()
        };
        for amount in self.amount.split(UNIT) {
            let amount = Decimal::from_str(amount).map_err(|e| corrupt("amount", &e))?;
            counts.amount = counts.amount.saturating_add(amount);
        }
        if table.histogram {
            for tenths in self.tenths.split(UNIT) {
                let row: BTreeMap<i64, i64> =
                    serde_json::from_str(tenths).map_err(|e| corrupt("tenths", &e))?;
                for (tenths, n) in row {
                    *counts.tenths.entry(tenths).or_default() += n;
                }
            }
            counts.tenths.retain(|_, n| *n != 0);
        }
        Ok(counts)
    }
}

/// One of the two won rollups: its table, its day column, whether it keeps days to won.
struct WonTable {
    name: &'static str,
    day: &'static str,
    histogram: bool,
}

const DEAL_WINS: WonTable = WonTable {
    name: "deal_wins",
    day: "created_day",
    histogram: true,
};
const DEAL_ACQUISITIONS: WonTable = WonTable {
    name: "deal_acquisitions",
    day: "won_day",
    histogram: false,
};

impl WonTable {
    /// The row's columns as `WonRow` reads them (`r`: the rows of a bulk statement).
    fn select(&self, alias: &str) -> String {
        let day = self.day;
        let tenths = if self.histogram {
            format!("{alias}.tenths")
        } else {
            "''".into()
        };
        format!(
            "{alias}.cohort, {alias}.{day} AS day, {alias}.deals, {alias}.priced, \
             {alias}.amount, {tenths} AS tenths"
        )
    }

    /// Its rows of the days in `[$1, $2)`, summed per cohort (one row each, read as a
    /// [`WonRow`]): reading every day's row costs more than the SQL.
    fn summed(&self, backend: BackendKind) -> String {
        let (name, day) = (self.name, self.day);
        let concat = |column: &str| match backend {
            BackendKind::Sqlite => format!("group_concat({column}, char(31))"),
            BackendKind::Postgres => format!("string_agg({column}, chr(31))"),
        };
        let tenths = if self.histogram {
            concat("tenths")
        } else {
            "''".into()
        };
        format!(
            "SELECT cohort, MIN({day}) AS day, CAST(SUM(deals) AS BIGINT) AS deals, \
                 CAST(SUM(priced) AS BIGINT) AS priced, {} AS amount, {tenths} AS tenths \
             FROM {name} WHERE {day} >= $1 AND {day} < $2 GROUP BY cohort",
            concat("amount")
        )
    }
}

/// The plausible decimal an amount's text holds, if any (as the funnel's revenue reads them).
fn plausible_amount(text: &str) -> Option<Decimal> {
    let max = Decimal::from(1_000_000_000_000_000_000i64);
    Decimal::from_str(text.trim())
        .ok()
        .filter(|a| a.abs() < max)
}

/// A deal's row as the baseline sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct DealState {
    crm: Crm,
    object_type: String,
    object_id: String,
    referral_id: Option<String>,
    market: Option<String>,
    source: Option<String>,
    pipeline: Option<String>,
    currency: Option<String>,
    crm_source: Option<String>,
    created: i64,
    qualified_at: Option<i64>,
    deleted_at: Option<i64>,
    merged_into: Option<String>,
    baseline_rolled: Option<String>,
    /// At stage won now.
    won: bool,
    won_at: Option<i64>,
    deal_type: Option<String>,
    amount: Option<String>,
}

impl DealState {
    fn is_deal(&self) -> bool {
        matches!(self.object_type.as_str(), "deal" | "Opportunity")
    }

    /// What the deal counts for now: nothing once deleted or merged away (nor for a person,
    /// whose row is marked for its customer facts).
    fn contribution(&self) -> Option<Rolled> {
        if !self.is_deal() || self.deleted_at.is_some() || self.merged_into.is_some() {
            return None;
        }
        Some(Rolled {
            cohort: Cohort {
                crm: self.crm,
                referred: self.referral_id.is_some(),
                market: self.market.clone(),
                source: self.source.clone(),
                pipeline: self.pipeline.clone(),
                currency: self.currency.clone(),
                crm_source: self.crm_source.clone(),
            }
            .normalised(),
            day: self.created.div_euclid(DAY),
            qualified: self.qualified_at.is_some(),
            won: self.won.then(|| Won {
                deal_type: self.deal_type.clone(),
                // Rounded half up (and towards zero for a win before creation, as SQL divides).
                tenths: self
                    .won_at
                    .map(|at| (at - self.created + DAY / 20) / (DAY / 10)),
                day: self.won_at.map(|at| at.div_euclid(DAY)),
                amount: self.amount.as_deref().and_then(plausible_amount),
            }),
        })
    }

    /// What the rollup counts for it.
    fn rolled(&self) -> Result<Option<Rolled>, StoreError> {
        self.baseline_rolled
            .as_deref()
            .map(|text| {
                serde_json::from_str(text).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "baseline_rolled of {}:{}:{}: {e}",
                        self.crm, self.object_type, self.object_id
                    ))
                })
            })
            .transpose()
    }
}

/// When a deal was created: the CRM's time, else when the service first heard of it.
const CREATED: &str = "COALESCE(crm_created_at, created_at)";
/// A deal that counts: not deleted, not merged away. The won index's predicate includes it.
const LIVE_DEAL: &str = "object_type IN ('deal', 'Opportunity') AND deleted_at IS NULL \
     AND merged_into IS NULL";
const DEAL_STATE: &str = "crm, object_type, object_id, referral_id, market, source, pipeline, \
     currency, crm_source, COALESCE(crm_created_at, created_at) AS created, qualified_at, \
     deleted_at, merged_into, baseline_rolled, COALESCE(stage = 'won', FALSE) AS won, won_at, \
     deal_type, amount";
/// Advisory-lock key of the rollup refresh (one refresh at a time per deployment).
const REFRESH_LOCK: i64 = 0x7265_6673_796e_6303;

/// A CRM person, by CRM and id (a Salesforce id names a Contact or a Lead by itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, sqlx::FromRow)]
struct PersonKey {
    crm: Crm,
    id: String,
}

/// The keys of the deals among `records` (`deals`), or of the people.
fn keys_of(records: &[DealState], deals: bool) -> Vec<PersonKey> {
    records
        .iter()
        .filter(|r| r.is_deal() == deals)
        .map(|r| PersonKey {
            crm: r.crm,
            id: r.object_id.clone(),
        })
        .collect()
}

/// A person with one of its live won deals (none: the deal columns are empty).
#[derive(Debug, Clone, sqlx::FromRow)]
struct PersonDeal {
    crm: Crm,
    id: String,
    /// Deleted or merged away.
    gone: bool,
    deal_crm: Option<Crm>,
    /// False without a deal.
    referred: bool,
    market: Option<String>,
    source: Option<String>,
    pipeline: Option<String>,
    currency: Option<String>,
    crm_source: Option<String>,
    won_at: Option<i64>,
}

/// A person's customer facts: since their first won deal, counted in that deal's cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Customer {
    since: Millis,
    cohort: Cohort,
}

const PERSON_TYPES: &str = "('contact', 'Contact', 'Lead')";
/// A [`PersonKey`] as bulk statements carry it.
const PERSON_COLUMNS: [(&str, Col); 2] = [("crm", Col::Text), ("id", Col::Text)];
/// A [`WonRow`] as bulk statements carry it.
const WON_ROW_COLUMNS: [(&str, Col); 6] = [
    ("cohort", Col::Text),
    ("day", Col::BigInt),
    ("deals", Col::BigInt),
    ("priced", Col::BigInt),
    ("amount", Col::Text),
    ("tenths", Col::Text),
];

/// A rollup change: deals and qualified deals to add to a cohort's day.
#[derive(Serialize)]
struct CohortDelta {
    cohort: String,
    created_day: i64,
    deals: i64,
    qualified: i64,
}

#[derive(Serialize)]
struct Cleared {
    crm: Crm,
    object_type: String,
    object_id: String,
    rolled: Option<String>,
}

impl Tx {
    /// Move up to `limit` marked deals' counts to their current cohorts and clear their marks;
    /// returns how many were taken (0: nothing marked, or another replica is refreshing). On
    /// PostgreSQL rows a batch is writing right now are skipped, and taken next time.
    pub async fn refresh_baseline(&mut self, limit: i64) -> Result<usize, StoreError> {
        let dirty_sql = format!(
            "SELECT {DEAL_STATE} FROM crm_records WHERE baseline_dirty \
             ORDER BY crm, object_type, object_id LIMIT $1"
        );
        let deals: Vec<DealState> = match &mut self.inner {
            TxInner::Sqlite(t) => {
                sqlx::query_as(&dirty_sql)
                    .bind(limit)
                    .fetch_all(&mut **t)
                    .await?
            }
            TxInner::Postgres(t) => {
                let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(REFRESH_LOCK)
                    .fetch_one(&mut **t)
                    .await?;
                if !got {
                    return Ok(0);
                }
                sqlx::query_as(&format!("{dirty_sql} FOR UPDATE SKIP LOCKED"))
                    .bind(limit)
                    .fetch_all(&mut **t)
                    .await?
            }
        };
        if deals.is_empty() {
            return Ok(0);
        }
        // The people of these deals (associated now or before) and the marked people: their
        // customer facts follow their won deals. On PostgreSQL a person a batch is writing is
        // skipped like a marked deal, and so are the deals of such a person: they stay marked
        // for the next refresh, so the refresh never waits on a batch.
        let deal_keys = keys_of(&deals, true);
        let people_of: Vec<(PersonKey, PersonKey)> = self.people_ever_of(&deal_keys).await?;
        let mut people: BTreeSet<PersonKey> = people_of.iter().map(|(_, p)| p.clone()).collect();
        people.extend(keys_of(&deals, false));
        let people: Vec<PersonKey> = people.into_iter().collect();
        let busy = self.busy_people(&people).await?;
        let blocked: BTreeSet<&PersonKey> = people_of
            .iter()
            .filter(|(_, p)| busy.contains(p))
            .map(|(deal, _)| deal)
            .collect();
        let taken = |d: &DealState| {
            let key = PersonKey {
                crm: d.crm,
                id: d.object_id.clone(),
            };
            if d.is_deal() {
                !blocked.contains(&key)
            } else {
                !busy.contains(&key)
            }
        };
        let mut deltas: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
        let mut wins: BTreeMap<RollupKey, WonCounts> = BTreeMap::new();
        let mut acquisitions: BTreeMap<RollupKey, WonCounts> = BTreeMap::new();
        let mut cleared = Vec::with_capacity(deals.len());
        for deal in deals.iter().filter(|d| taken(d)) {
            let now = deal.contribution();
            let before = deal.rolled()?;
            if now != before {
                for (rolled, sign) in [(&before, -1), (&now, 1)] {
                    if let Some(r) = rolled {
                        let d = deltas.entry((r.cohort.key(), r.day)).or_default();
                        d.0 += sign;
                        d.1 += sign * i64::from(r.qualified);
                        if let Some((won, win, acquired)) = r.won_keys() {
                            wins.entry(win).or_default().add(won, sign);
                            if let Some(key) = acquired {
                                acquisitions.entry(key).or_default().add(won, sign);
                            }
                        }
                    }
                }
            }
            cleared.push(Cleared {
                crm: deal.crm,
                object_type: deal.object_type.clone(),
                object_id: deal.object_id.clone(),
                rolled: now.as_ref().map(Rolled::to_text),
            });
        }
        let deltas: Vec<CohortDelta> = deltas
            .into_iter()
            .filter(|(_, (deals, qualified))| *deals != 0 || *qualified != 0)
            .map(|((cohort, created_day), (deals, qualified))| CohortDelta {
                cohort,
                created_day,
                deals,
                qualified,
            })
            .collect();
        let delta_columns = [
            ("cohort", Col::Text),
            ("created_day", Col::BigInt),
            ("deals", Col::BigInt),
            ("qualified", Col::BigInt),
        ];
        self.bulk_execute(
            "INSERT INTO deal_cohorts (cohort, created_day, deals, qualified) \
             SELECT r.cohort, r.created_day, r.deals, r.qualified FROM {rows} WHERE true \
             ON CONFLICT (cohort, created_day) DO UPDATE SET \
                 deals = deal_cohorts.deals + excluded.deals, \
                 qualified = deal_cohorts.qualified + excluded.qualified",
            &delta_columns,
            &deltas,
            &[],
        )
        .await?;
        self.bulk_execute(
            "DELETE FROM deal_cohorts WHERE deals = 0 \
             AND (cohort, created_day) IN (SELECT r.cohort, r.created_day FROM {rows})",
            &delta_columns,
            &deltas,
            &[],
        )
        .await?;
        self.apply_won(&DEAL_WINS, wins).await?;
        self.apply_won(&DEAL_ACQUISITIONS, acquisitions).await?;
        #[derive(Serialize)]
        struct CustomerRow {
            crm: Crm,
            id: String,
            since: Option<Millis>,
            cohort: Option<String>,
        }
        let free: Vec<PersonKey> = people.into_iter().filter(|p| !busy.contains(p)).collect();
        let customers: Vec<CustomerRow> = self
            .customers_now(&free)
            .await?
            .into_iter()
            .map(|(key, customer)| CustomerRow {
                crm: key.crm,
                id: key.id,
                since: customer.as_ref().map(|c| c.since),
                cohort: customer.map(|c| c.cohort.key()),
            })
            .collect();
        self.bulk_execute(
            &format!(
                "UPDATE crm_records SET customer_since = r.since, customer_cohort = r.cohort \
                 FROM {{rows}} WHERE crm_records.crm = r.crm AND crm_records.object_id = r.id \
                     AND crm_records.object_type IN {PERSON_TYPES}"
            ),
            &[
                PERSON_COLUMNS[0],
                PERSON_COLUMNS[1],
                ("since", Col::BigInt),
                ("cohort", Col::Text),
            ],
            &customers,
            &[],
        )
        .await?;
        self.bulk_execute(
            "UPDATE crm_records SET baseline_dirty = FALSE, baseline_rolled = r.rolled \
             FROM {rows} WHERE crm_records.crm = r.crm \
                 AND crm_records.object_type = r.object_type \
                 AND crm_records.object_id = r.object_id",
            &[
                ("crm", Col::Text),
                ("object_type", Col::Text),
                ("object_id", Col::Text),
                ("rolled", Col::Text),
            ],
            &cleared,
            &[],
        )
        .await?;
        Ok(cleared.len())
    }

    /// Add `deltas` to a won rollup's rows: read, add up and write back, since SQL cannot add
    /// decimal text exactly on SQLite (one refresh runs at a time, so nothing writes between).
    async fn apply_won(
        &mut self,
        table: &WonTable,
        deltas: BTreeMap<RollupKey, WonCounts>,
    ) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct Key<'a> {
            cohort: &'a str,
            day: i64,
        }
        let keys: Vec<Key> = deltas
            .keys()
            .map(|(cohort, day)| Key { cohort, day: *day })
            .collect();
        let key_columns = [WON_ROW_COLUMNS[0], WON_ROW_COLUMNS[1]];
        let (name, day) = (table.name, table.day);
        let stored: Vec<WonRow> = self
            .bulk_fetch(
                &format!(
                    "SELECT {} FROM {{rows}} JOIN {name} w \
                     ON w.cohort = r.cohort AND w.{day} = r.day",
                    table.select("w")
                ),
                &key_columns,
                &keys,
                &[],
            )
            .await?;
        let mut now = deltas;
        for row in stored {
            let counts = row.counts(table)?;
            if let Some(delta) = now.get_mut(&(row.cohort, row.day)) {
                delta.merge(&counts);
            }
        }
        let (mut kept, mut gone) = (Vec::new(), Vec::new());
        for ((cohort, day), counts) in &now {
            if counts.deals == 0 {
                gone.push(Key { cohort, day: *day });
                continue;
            }
            kept.push(WonRow {
                cohort: cohort.clone(),
                day: *day,
                deals: counts.deals,
                priced: counts.priced,
                amount: counts.amount.to_string(),
                tenths: serde_json::to_string(&counts.tenths).expect("plain data serialises"),
            });
        }
        let (column, value, update) = if table.histogram {
            (", tenths", ", r.tenths", ", tenths = excluded.tenths")
        } else {
            ("", "", "")
        };
        self.bulk_execute(
            &format!(
                "INSERT INTO {name} (cohort, {day}, deals, priced, amount{column}) \
                 SELECT r.cohort, r.day, r.deals, r.priced, r.amount{value} FROM {{rows}} \
                 WHERE true ON CONFLICT (cohort, {day}) DO UPDATE SET deals = excluded.deals, \
                     priced = excluded.priced, amount = excluded.amount{update}"
            ),
            &WON_ROW_COLUMNS,
            &kept,
            &[],
        )
        .await?;
        self.bulk_execute(
            &format!(
                "DELETE FROM {name} WHERE (cohort, {day}) IN (SELECT r.cohort, r.day FROM {{rows}})"
            ),
            &key_columns,
            &gone,
            &[],
        )
        .await?;
        Ok(())
    }

    /// The rows `sql` selects for each `[from, to)` of `ranges` (bound as `$1`, `$2`).
    async fn rows_between<O>(
        &mut self,
        sql: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<O>, StoreError>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let mut rows = Vec::new();
        for (from, to) in ranges {
            rows.extend(on_tx!(self, |c| sqlx::query_as::<_, O>(sql)
                .bind(from)
                .bind(to)
                .fetch_all(c)
                .await?));
        }
        Ok(rows)
    }

    /// The people among `people` another transaction is writing right now (PostgreSQL; SQLite
    /// has one writer). The others are locked for this transaction.
    async fn busy_people(
        &mut self,
        people: &[PersonKey],
    ) -> Result<BTreeSet<PersonKey>, StoreError> {
        if self.kind() == super::BackendKind::Sqlite || people.is_empty() {
            return Ok(BTreeSet::new());
        }
        let join = format!(
            "FROM {{rows}} JOIN crm_records c ON c.crm = r.crm AND c.object_id = r.id \
                 AND c.object_type IN {PERSON_TYPES}"
        );
        let columns = PERSON_COLUMNS;
        let existing: Vec<PersonKey> = self
            .bulk_fetch(
                &format!("SELECT c.crm, c.object_id AS id {join}"),
                &columns,
                people,
                &[],
            )
            .await?;
        let locked: BTreeSet<PersonKey> = self
            .bulk_fetch::<_, PersonKey>(
                &format!(
                    "SELECT c.crm, c.object_id AS id {join} \
                     ORDER BY c.crm, c.object_type, c.object_id FOR UPDATE OF c SKIP LOCKED"
                ),
                &columns,
                people,
                &[],
            )
            .await?
            .into_iter()
            .collect();
        Ok(existing
            .into_iter()
            .filter(|p| !locked.contains(p))
            .collect())
    }

    /// Every person ever associated with these deals, with the deal (removed associations too:
    /// a person who left a won deal may be a customer no more).
    async fn people_ever_of(
        &mut self,
        deals: &[PersonKey],
    ) -> Result<Vec<(PersonKey, PersonKey)>, StoreError> {
        let found: Vec<(Crm, String, String)> = self
            .bulk_fetch(
                "SELECT DISTINCT a.crm, a.deal_id, a.contact_id FROM {rows} \
                 JOIN crm_associations a ON a.crm = r.crm AND a.deal_id = r.id",
                &PERSON_COLUMNS,
                deals,
                &[],
            )
            .await?;
        Ok(found
            .into_iter()
            .map(|(crm, deal, person)| (PersonKey { crm, id: deal }, PersonKey { crm, id: person }))
            .collect())
    }

    /// What these people's customer facts are now, from their live won deals.
    async fn customers_now(
        &mut self,
        people: &[PersonKey],
    ) -> Result<Vec<(PersonKey, Option<Customer>)>, StoreError> {
        let rows: Vec<PersonDeal> = self
            .bulk_fetch(
                &format!(
                    "SELECT r.crm, r.id, (p.deleted_at IS NOT NULL OR p.merged_into IS NOT NULL) \
                         AS gone, d.crm AS deal_crm, d.referral_id IS NOT NULL AS referred, \
                         d.market, d.source, d.pipeline, d.currency, d.crm_source, d.won_at \
                     FROM {{rows}} \
                     JOIN crm_records p ON p.crm = r.crm AND p.object_id = r.id \
                         AND p.object_type IN {PERSON_TYPES} \
                     LEFT JOIN crm_associations a ON a.crm = r.crm AND a.contact_id = r.id \
                         AND a.removed = FALSE \
                     LEFT JOIN crm_records d ON d.crm = a.crm AND d.object_id = a.deal_id \
                         AND d.object_type IN ('deal', 'Opportunity') AND d.stage = 'won' \
                         AND d.deleted_at IS NULL AND d.merged_into IS NULL \
                     ORDER BY r.crm, r.id"
                ),
                &PERSON_COLUMNS,
                people,
                &[],
            )
            .await?;
        let mut found: BTreeMap<PersonKey, Option<Customer>> = BTreeMap::new();
        for row in rows {
            let key = PersonKey {
                crm: row.crm,
                id: row.id.clone(),
            };
            let customer = found.entry(key).or_default();
            if row.gone {
                continue;
            }
            let (Some(deal_crm), Some(won_at)) = (row.deal_crm, row.won_at) else {
                continue;
            };
            if customer.as_ref().is_some_and(|c| c.since <= won_at) {
                continue;
            }
            *customer = Some(Customer {
                since: won_at,
                cohort: Cohort {
                    crm: deal_crm,
                    referred: row.referred,
                    market: row.market,
                    source: row.source,
                    pipeline: row.pipeline,
                    currency: row.currency,
                    crm_source: row.crm_source,
                }
                .normalised(),
            });
        }
        // People without a row (only associated so far) are no customers.
        for person in people {
            found.entry(person.clone()).or_default();
        }
        Ok(found.into_iter().collect())
    }

    /// The facts of the participation rate as of `to`, correcting the people's rows for what
    /// `dirty` (the rows marked in this snapshot) changed.
    async fn participation_facts(
        &mut self,
        dirty: &[DealState],
        to: Millis,
    ) -> Result<ParticipationFacts, StoreError> {
        let referred_by_then = "EXISTS (SELECT 1 FROM referrals x \
             WHERE x.referrer_code = p.code AND x.first_touch_at < $1)";
        let customers: Vec<(String, i64)> = on_tx!(self, |c| sqlx::query_as(
            "SELECT customer_cohort, COUNT(*) FROM crm_records \
             WHERE customer_since IS NOT NULL AND customer_since < $1 GROUP BY customer_cohort"
        )
        .bind(to)
        .fetch_all(c)
        .await?);
        let referring_emails: Vec<(String,)> = on_tx!(self, |c| sqlx::query_as(&format!(
            "SELECT DISTINCT p.email FROM referrers p \
             WHERE p.email IS NOT NULL AND {referred_by_then}"
        ))
        .bind(to)
        .fetch_all(c)
        .await?);
        let referring_emails: std::collections::HashSet<String> =
            referring_emails.into_iter().map(|(e,)| e).collect();
        let referring: Vec<(String, i64)> = on_tx!(self, |c| sqlx::query_as(&format!(
            "SELECT c.customer_cohort, COUNT(*) FROM crm_records c \
             WHERE c.customer_since IS NOT NULL AND c.customer_since < $1 \
                 AND c.object_type IN {PERSON_TYPES} \
                 AND c.email IN (SELECT p.email FROM referrers p \
                     WHERE p.email IS NOT NULL AND {referred_by_then}) \
             GROUP BY c.customer_cohort"
        ))
        .bind(to)
        .fetch_all(c)
        .await?);
        // People the refresh has not caught up with: marked people and those of marked deals.
        let mut stale: BTreeSet<PersonKey> = keys_of(dirty, false).into_iter().collect();
        for (_, person) in self.people_ever_of(&keys_of(dirty, true)).await? {
            stale.insert(person);
        }
        let stale: Vec<PersonKey> = stale.into_iter().collect();
        #[derive(sqlx::FromRow)]
        struct Stored {
            crm: Crm,
            id: String,
            email: Option<String>,
            customer_since: Option<i64>,
            customer_cohort: Option<String>,
        }
        let stored: Vec<Stored> = self
            .bulk_fetch(
                &format!(
                    "SELECT c.crm, c.object_id AS id, c.email, c.customer_since, \
                         c.customer_cohort FROM {{rows}} JOIN crm_records c \
                     ON c.crm = r.crm AND c.object_id = r.id AND c.object_type IN {PERSON_TYPES}"
                ),
                &PERSON_COLUMNS,
                &stale,
                &[],
            )
            .await?;
        let now: BTreeMap<PersonKey, Option<Customer>> =
            self.customers_now(&stale).await?.into_iter().collect();
        let mut corrections = Vec::new();
        let mut live: BTreeMap<PersonKey, bool> = BTreeMap::new();
        for row in stored {
            let key = PersonKey {
                crm: row.crm,
                id: row.id,
            };
            let before = match (row.customer_since, row.customer_cohort) {
                (Some(since), Some(cohort)) if since < to => Some(Cohort::of_key(&cohort)?),
                _ => None,
            };
            let after = now
                .get(&key)
                .cloned()
                .flatten()
                .filter(|c| c.since < to)
                .map(|c| c.cohort);
            live.insert(key, after.is_some());
            corrections.push(CustomerCorrection {
                before,
                after,
                referring: row
                    .email
                    .as_ref()
                    .is_some_and(|e| referring_emails.contains(e)),
            });
        }
        // Declared customers count unless a CRM customer has their email.
        let declared: Vec<DeclaredRow> = on_tx!(self, |c| {
            sqlx::query_as(&format!(
                "SELECT p.market, p.code, {referred_by_then}, c.crm, c.object_id, c.customer_since \
                 FROM referrers p LEFT JOIN crm_records c ON c.email = p.email \
                     AND c.object_type IN {PERSON_TYPES} \
                 WHERE p.kind = 'customer' AND COALESCE(p.joined_at, p.invited_at, p.created_at) < $1 \
                 ORDER BY p.code"
            ))
            .bind(to)
            .fetch_all(c)
            .await?
        });
        let mut by_code: BTreeMap<String, (Option<String>, bool, bool)> = BTreeMap::new();
        for (market, code, referred, crm, id, since) in declared {
            let entry = by_code.entry(code).or_insert((market, referred, false));
            if let (Some(crm), Some(id)) = (crm, id) {
                let key = PersonKey { crm, id };
                entry.2 |= match live.get(&key) {
                    Some(customer) => *customer,
                    None => since.is_some_and(|s| s < to),
                };
            }
        }
        let cohorts = |rows: Vec<(String, i64)>| -> Result<Vec<(Cohort, u64)>, StoreError> {
            rows.into_iter()
                .map(|(key, n)| Ok((Cohort::of_key(&key)?, count(n)?)))
                .collect()
        };
        Ok(ParticipationFacts {
            customers: cohorts(customers)?,
            referring: cohorts(referring)?,
            corrections,
            declared: by_code
                .into_values()
                .filter(|(_, _, customer)| !customer)
                .map(|(market, referred, _)| (market, referred))
                .collect(),
        })
    }
}

/// Deals created in a report's period, and how many of them reached qualified, per cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortCount {
    pub cohort: Cohort,
    pub deals: i64,
    pub qualified: i64,
}

/// Won deals created in the period, per cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WonGroup {
    pub cohort: Cohort,
    pub deals: u64,
    /// Deals per tenths of a day from creation to the first win (deals whose win time is not
    /// known are left out).
    pub days: Vec<(i64, u64)>,
    /// Deals with an amount that is a decimal, and the sum of those amounts.
    pub priced: u64,
    pub amount: Decimal,
}

/// Customers without a referral, acquired (won) in the period at least 12 months before the
/// report: each is a single deal (the CRMs' companies are not kept), per cohort and deal type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerGroup {
    pub cohort: Cohort,
    pub deal_type: Option<String>,
    pub customers: u64,
    /// Their won amounts, in the cohort's currency.
    pub amount: Decimal,
}

/// Won deals of referred customers (their referrals), first won in the period at least 12
/// months before the report, won within 12 months of that first win: those of one referral
/// market and source, CRM, pipeline, deal type and currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferredCustomerDeals {
    /// A referred cohort: the referral's market and source, the deals' CRM, pipeline and
    /// currency.
    pub cohort: Cohort,
    pub deal_type: Option<String>,
    /// Each deal's referral and amount (`None` when it is not a decimal).
    pub deals: Vec<(String, Option<Decimal>)>,
}

/// What the participation rate is computed from (as of the period's end). Customers are the CRM
/// people of won deals — each counted where its first won deal is (`customer_cohort`, kept on
/// the person's row by the refresh) — and referrers the product declared customers who are no
/// CRM customer; referring ones referred anyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParticipationFacts {
    /// Customers as the rows say, per cohort of their first won deal.
    pub customers: Vec<(Cohort, u64)>,
    /// Of those, the ones whose email is a referrer's who referred.
    pub referring: Vec<(Cohort, u64)>,
    /// People whose customer facts the refresh has not caught up with: what the rows count for
    /// them (taken off) and what they are now (added).
    pub corrections: Vec<CustomerCorrection>,
    /// Declared customers who are no CRM customer: their referrer market, and whether they
    /// referred.
    pub declared: Vec<(Option<String>, bool)>,
}

/// One person whose customer facts changed since the refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerCorrection {
    /// The cohort the rows count the person in (a customer by then), and the one now.
    pub before: Option<Cohort>,
    pub after: Option<Cohort>,
    /// Whether the person's email is a referrer's who referred.
    pub referring: bool,
}

/// Everything the referred vs non-referred comparison is computed from, in one snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaselineFacts {
    pub filter: FunnelFilter,
    /// When the report was made: customers count for revenue per customer after 12 months once
    /// their first win is that old.
    pub as_of: Millis,
    pub cohorts: Vec<CohortCount>,
    pub won: Vec<WonGroup>,
    pub revenue_12m: CustomerRevenue,
    pub participation: ParticipationFacts,
}

/// What revenue per customer after 12 months is computed from: customers first won in the
/// period at least 12 months before the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerRevenue {
    /// Without a referral: single won deals.
    pub non_referred: Vec<CustomerGroup>,
    /// Referred customers (their referrals): won deals of their first 12 months ...
    pub referred_deals: Vec<ReferredCustomerDeals>,
    /// ... and invoices paid in them, with their refunds.
    pub referred_invoices: Vec<ReferredPayments>,
}

/// Payments of referred customers (paid invoices, refunds negative) of one referral market and
/// source and one currency: each with its referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferredPayments {
    pub referral: ReferralChannel,
    pub currency: String,
    pub payments: Vec<(String, Decimal)>,
}

/// The referral market and source referred customers' money is read per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralChannel {
    pub market: Option<String>,
    pub source: Option<String>,
}

/// A group's `referral id, unit separator, amount` entries, joined by the record separator,
/// each with its amount read by `amount`.
fn per_referral<T>(
    joined: &str,
    amount: impl Fn(&str) -> Result<T, StoreError>,
) -> Result<Vec<(String, T)>, StoreError> {
    joined
        .split('\u{1e}')
        .map(|entry| {
            let (referral_id, text) = entry
                .split_once(UNIT)
                .ok_or_else(|| StoreError::Corrupt(format!("referred customer entry `{entry}`")))?;
            Ok((referral_id.to_string(), amount(text)?))
        })
        .collect()
}

/// A declared customer (market, code, whether they referred) with one person of their email
/// (CRM, id, customer since), if any.
type DeclaredRow = (
    Option<String>,
    String,
    bool,
    Option<Crm>,
    Option<String>,
    Option<i64>,
);

/// Far enough to mean "no bound" for epoch milliseconds and days.
const OPEN: i64 = 1 << 60;

/// Deals of one cohort (as the rows hold it) created in a part of the period, and how many of
/// them reached qualified.
#[derive(sqlx::FromRow)]
struct CohortCountRow {
    #[sqlx(flatten)]
    cohort: Cohort,
    deals: i64,
    qualified: i64,
}
/// Referral market and source, currency, whether refunds, the payments joined.
type InvoicesRow = (Option<String>, Option<String>, String, bool, String);
type ReferredRevenueRow = (
    Option<String>,
    Option<String>,
    Crm,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// The whole UTC days inside `[from, to)`, and the parts of the period outside them.
fn split_period(from: Option<Millis>, to: Option<Millis>) -> ((i64, i64), Vec<(i64, i64)>) {
    let first = from.map_or(-OPEN, |f| {
        f.div_euclid(DAY) + i64::from(f.rem_euclid(DAY) != 0)
    });
    let end = to.map_or(OPEN, |t| t.div_euclid(DAY));
    if first >= end {
        return ((0, 0), vec![(from.unwrap_or(-OPEN), to.unwrap_or(OPEN))]);
    }
    let mut edges = Vec::new();
    if let Some(f) = from.filter(|f| *f < first * DAY) {
        edges.push((f, first * DAY));
    }
    if let Some(t) = to.filter(|t| *t > end * DAY) {
        edges.push((end * DAY, t));
    }
    ((first, end), edges)
}

impl Store {
    /// Read the facts of the referred vs non-referred comparison for `filter` (deals created in
    /// its period; market and source are applied by the report, which maps markets), as of
    /// `as_of`, in one read-only snapshot.
    pub async fn baseline_facts(
        &self,
        filter: &FunnelFilter,
        as_of: Millis,
    ) -> Result<BaselineFacts, StoreError> {
        let readers = self.begin_reads::<2>().await?;
        self.baseline_facts_in(readers, filter, as_of).await
    }

    /// [`Store::baseline_facts`], read by two readers of one snapshot.
    pub(super) async fn baseline_facts_in(
        &self,
        readers: [Tx; 2],
        filter: &FunnelFilter,
        as_of: Millis,
    ) -> Result<BaselineFacts, StoreError> {
        let ((first_day, end_day), edges) = split_period(filter.from, filter.to);
        let (from, to) = (filter.from.unwrap_or(-OPEN), filter.to.unwrap_or(OPEN));
        let cutoff = as_of - 365 * DAY;
        // Customers without a referral: won in the period, at least 12 months before `as_of`.
        let ((acquired_first, acquired_end), acquired_edges) =
            split_period(filter.from, Some(to.min(cutoff + 1)));
        let rollup_sql =
            "SELECT cohort, CAST(SUM(deals) AS BIGINT), CAST(SUM(qualified) AS BIGINT) \
             FROM deal_cohorts \
             WHERE created_day >= $1 AND created_day < $2 GROUP BY cohort";
        let dirty_sql = format!("SELECT {DEAL_STATE} FROM crm_records WHERE baseline_dirty");
        let edge_sql = format!(
            "SELECT crm, referral_id IS NOT NULL AS referred, market, source, pipeline, currency, \
                 crm_source, COUNT(*) AS deals, COUNT(qualified_at) AS qualified FROM crm_records \
             WHERE {LIVE_DEAL} AND {CREATED} >= $1 AND {CREATED} < $2 \
             GROUP BY crm, referral_id IS NOT NULL, market, source, pipeline, currency, crm_source"
        );
        let won_created_sql = format!(
            "SELECT {DEAL_STATE} FROM crm_records \
             WHERE stage = 'won' AND {LIVE_DEAL} AND {CREATED} >= $1 AND {CREATED} < $2"
        );
        let won_at_sql = format!(
            "SELECT {DEAL_STATE} FROM crm_records \
             WHERE stage = 'won' AND {LIVE_DEAL} AND won_at >= $1 AND won_at < $2"
        );
        // A referral is a customer from its first win; its won deals of the following 12 months
        // are its revenue.
        // Joined per group (referral id, unit separator, amount; deals by the record separator):
        // fetching a row per deal costs more than the SQL. An amount holding a separator is no
        // decimal anyway; referral ids are the service's own.
        let (concat, position, unit, record) = match self.kind() {
            BackendKind::Sqlite => ("group_concat", "instr", "char(31)", "char(30)"),
            BackendKind::Postgres => ("string_agg", "strpos", "chr(31)", "chr(30)"),
        };
        let referred_revenue_sql = format!(
            "SELECT r.market, r.source, d.crm, d.pipeline, d.deal_type, d.currency, \
                 {concat}(r.id || {unit} || CASE WHEN {position}(d.amount, {unit}) = 0 \
                     AND {position}(d.amount, {record}) = 0 THEN d.amount ELSE '' END, {record}) \
             FROM referrals r CROSS JOIN crm_records d \
             WHERE r.won_at IS NOT NULL AND r.won_at >= $1 AND r.won_at < $2 \
                 AND r.won_at <= $3 AND d.referral_id = r.id AND d.stage = 'won' \
                 AND d.object_type IN ('deal', 'Opportunity') AND d.deleted_at IS NULL \
                 AND d.merged_into IS NULL AND d.won_at < r.won_at + {} \
             GROUP BY r.market, r.source, d.crm, d.pipeline, d.deal_type, d.currency",
            365 * DAY
        );
        let customers_12m = format!(
            "r.won_at IS NOT NULL AND r.won_at >= $1 AND r.won_at < $2 AND r.won_at <= $3 \
             AND i.referral_id = r.id AND i.paid_at < r.won_at + {}",
            365 * DAY
        );
        let referred_invoices_sql = format!(
            "SELECT r.market, r.source, i.currency, FALSE AS refund, \
                 {concat}(r.id || {unit} || i.amount, {record}) \
             FROM referrals r CROSS JOIN invoices i WHERE {customers_12m} \
             GROUP BY r.market, r.source, i.currency \
             UNION ALL \
             SELECT r.market, r.source, f.currency, TRUE AS refund, \
                 {concat}(r.id || {unit} || f.amount, {record}) \
             FROM referrals r CROSS JOIN invoices i CROSS JOIN invoice_refunds f \
             WHERE {customers_12m} AND f.invoice_id = i.invoice_id \
             GROUP BY r.market, r.source, f.currency"
        );
        // Two chains of about equal cost: the referred customers' money, and the rollups with
        // what they have not caught up with.
        let [mut first, mut second] = readers;
        let first_chain = async {
            let referred_revenue: Vec<ReferredRevenueRow> =
                on_tx!(first, |c| sqlx::query_as(&referred_revenue_sql)
                    .bind(from)
                    .bind(to)
                    .bind(cutoff)
                    .fetch_all(c)
                    .await?);
            let invoices: Vec<InvoicesRow> =
                on_tx!(first, |c| sqlx::query_as(&referred_invoices_sql)
                    .bind(from)
                    .bind(to)
                    .bind(cutoff)
                    .fetch_all(c)
                    .await?);
            let rollup: Vec<(String, i64, i64)> = on_tx!(first, |c| sqlx::query_as(rollup_sql)
                .bind(first_day)
                .bind(end_day)
                .fetch_all(c)
                .await?);
            let wins_rows: Vec<WonRow> = first
                .rows_between(&DEAL_WINS.summed(self.kind()), &[(first_day, end_day)])
                .await?;
            first.rollback().await?;
            Ok::<_, StoreError>((referred_revenue, invoices, rollup, wins_rows))
        };
        let second_chain = async {
            let dirty: Vec<DealState> =
                on_tx!(second, |c| sqlx::query_as(&dirty_sql).fetch_all(c).await?);
            let edge_counts: Vec<CohortCountRow> = second.rows_between(&edge_sql, &edges).await?;
            let acquisitions_rows: Vec<WonRow> = second
                .rows_between(
                    &DEAL_ACQUISITIONS.summed(self.kind()),
                    &[(acquired_first, acquired_end)],
                )
                .await?;
            let won_in_edges: Vec<DealState> =
                second.rows_between(&won_created_sql, &edges).await?;
            let acquired_in_edges: Vec<DealState> =
                second.rows_between(&won_at_sql, &acquired_edges).await?;
            let participation = second.participation_facts(&dirty, to).await?;
            second.rollback().await?;
            Ok::<_, StoreError>((
                dirty,
                edge_counts,
                acquisitions_rows,
                won_in_edges,
                acquired_in_edges,
                participation,
            ))
        };
        let (
            (referred_revenue, invoices, rollup, wins_rows),
            (dirty, edge_counts, acquisitions_rows, won_in_edges, acquired_in_edges, participation),
        ) = tokio::try_join!(first_chain, second_chain)?;
        let mut counts: HashMap<Cohort, (i64, i64)> = HashMap::new();
        for (key, deals, qualified) in rollup {
            let c = counts.entry(Cohort::of_key(&key)?).or_default();
            c.0 += deals;
            c.1 += qualified;
        }
        let mut wins: HashMap<String, WonCounts> = HashMap::new();
        let mut acquired: HashMap<String, WonCounts> = HashMap::new();
        for (table, rows, sums) in [
            (&DEAL_WINS, &wins_rows, &mut wins),
            (&DEAL_ACQUISITIONS, &acquisitions_rows, &mut acquired),
        ] {
            for row in rows {
                let counts = row.counts(table)?;
                match sums.get_mut(&row.cohort) {
                    Some(sum) => sum.merge(&counts),
                    None => {
                        sums.insert(row.cohort.clone(), counts);
                    }
                }
            }
        }
        let in_full_days = |day: i64| day >= first_day && day < end_day;
        let in_acquired_days = |day: i64| day >= acquired_first && day < acquired_end;
        // Rows the refresh has not caught up with: what the rollups count for them comes off,
        // what they are now goes on (in whole days; partial days are read as they are now).
        for deal in &dirty {
            for (rolled, sign) in [(deal.rolled()?, -1), (deal.contribution(), 1)] {
                let Some(r) = rolled else { continue };
                if let Some((won, (win, day), acquisition)) = r.won_keys() {
                    if in_full_days(day) {
                        wins.entry(win).or_default().add(won, sign);
                    }
                    if let Some((key, _)) = acquisition.filter(|(_, day)| in_acquired_days(*day)) {
                        acquired.entry(key).or_default().add(won, sign);
                    }
                }
                if in_full_days(r.day) {
                    let c = counts.entry(r.cohort).or_default();
                    c.0 += sign;
                    c.1 += sign * i64::from(r.qualified);
                }
            }
        }
        for rolled in won_in_edges.iter().filter_map(DealState::contribution) {
            if let Some((won, (win, _), _)) = rolled.won_keys() {
                wins.entry(win).or_default().add(won, 1);
            }
        }
        for rolled in acquired_in_edges.iter().filter_map(DealState::contribution) {
            if let Some((won, _, Some((key, _)))) = rolled.won_keys() {
                acquired.entry(key).or_default().add(won, 1);
            }
        }
        for row in edge_counts {
            let c = counts.entry(row.cohort.normalised()).or_default();
            c.0 += row.deals;
            c.1 += row.qualified;
        }
        let mut cohorts: Vec<CohortCount> = counts
            .into_iter()
            .filter(|(_, (deals, _))| *deals != 0)
            .map(|(cohort, (deals, qualified))| CohortCount {
                cohort,
                deals,
                qualified,
            })
            .collect();
        cohorts.sort_by(|a, b| a.cohort.cmp(&b.cohort));

        let mut won_groups = Vec::new();
        for (key, won) in wins.into_iter().filter(|(_, w)| w.deals != 0) {
            won_groups.push(WonGroup {
                cohort: Cohort::of_key(&key)?,
                deals: count(won.deals)?,
                days: won
                    .tenths
                    .into_iter()
                    .map(|(tenths, n)| Ok((tenths, count(n)?)))
                    .collect::<Result<_, StoreError>>()?,
                priced: count(won.priced)?,
                amount: won.amount,
            });
        }
        won_groups.sort_by(|a, b| a.cohort.cmp(&b.cohort));
        let mut customers = Vec::new();
        for (key, won) in acquired.into_iter().filter(|(_, w)| w.deals != 0) {
            let AcquiredKey { cohort, deal_type } = serde_json::from_str(&key)
                .map_err(|e| StoreError::Corrupt(format!("deal acquisition `{key}`: {e}")))?;
            customers.push(CustomerGroup {
                cohort,
                deal_type,
                customers: count(won.deals)?,
                amount: won.amount,
            });
        }
        customers.sort_by(|a, b| (&a.cohort, &a.deal_type).cmp(&(&b.cohort, &b.deal_type)));
        let referred_customers = referred_revenue
            .into_iter()
            .map(
                |(market, source, crm, pipeline, deal_type, currency, joined)| {
                    Ok(ReferredCustomerDeals {
                        cohort: Cohort {
                            crm,
                            referred: true,
                            market,
                            source,
                            pipeline,
                            currency,
                            crm_source: None,
                        }
                        .normalised(),
                        deal_type,
                        deals: per_referral(&joined, |amount| Ok(plausible_amount(amount)))?,
                    })
                },
            )
            .collect::<Result<_, StoreError>>()?;
        let referred_invoices = invoices
            .into_iter()
            .map(|(market, source, currency, refund, joined)| {
                let payments = per_referral(&joined, |amount| {
                    let amount = Decimal::from_str(amount).map_err(|e| {
                        StoreError::Corrupt(format!("invoice amount `{amount}`: {e}"))
                    })?;
                    Ok(if refund { -amount } else { amount })
                })?;
                Ok(ReferredPayments {
                    referral: ReferralChannel { market, source },
                    currency,
                    payments,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(BaselineFacts {
            filter: filter.clone(),
            as_of,
            cohorts,
            won: won_groups,
            revenue_12m: CustomerRevenue {
                non_referred: customers,
                referred_deals: referred_customers,
                referred_invoices,
            },
            participation,
        })
    }

    /// Deals marked for the rollup and not refreshed yet.
    pub async fn baseline_backlog(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as::<_, (i64,)>(
            "SELECT COUNT(*) FROM crm_records WHERE baseline_dirty"
        )
        .fetch_one(p)
        .await?)
        .0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_splits_into_whole_days_and_its_partial_edges() {
        let h = DAY / 24;
        // Whole days 1 and 2, edges [day 0 + 6h, day 1) and [day 3, day 3 + 6h).
        assert_eq!(
            split_period(Some(6 * h), Some(3 * DAY + 6 * h)),
            ((1, 3), vec![(6 * h, DAY), (3 * DAY, 3 * DAY + 6 * h)])
        );
        // Aligned: no edges.
        assert_eq!(split_period(Some(DAY), Some(3 * DAY)), ((1, 3), vec![]));
        // Within one day: no whole day, the period itself is counted directly.
        assert_eq!(
            split_period(Some(DAY + h), Some(DAY + 2 * h)),
            ((0, 0), vec![(DAY + h, DAY + 2 * h)])
        );
        // Open: every day.
        assert_eq!(split_period(None, None), ((-OPEN, OPEN), vec![]));
        // Before the epoch.
        assert_eq!(
            split_period(Some(-DAY - h), None),
            ((-1, OPEN), vec![(-DAY - h, -DAY)])
        );
    }

    #[test]
    fn cohorts_keep_referral_facts_for_referred_deals_only() {
        let c = Cohort {
            crm: Crm::HubSpot,
            referred: false,
            market: Some("US".into()),
            source: Some("link".into()),
            pipeline: None,
            currency: Some(" usd ".into()),
            crm_source: None,
        }
        .normalised();
        assert_eq!((c.market, c.source), (None, None));
        assert_eq!(c.currency.as_deref(), Some("USD"));
        let key = Cohort {
            crm: Crm::HubSpot,
            referred: true,
            market: Some("US".into()),
            source: None,
            pipeline: None,
            currency: Some("  ".into()),
            crm_source: None,
        }
        .normalised();
        assert_eq!(key.currency, None);
        assert_eq!(key.market.as_deref(), Some("US"));
        assert_eq!(Cohort::of_key(&key.key()).unwrap(), key);
    }

    #[test]
    fn a_cohorts_summed_won_rows_add_up_their_amounts_and_histograms() {
        let row = WonRow {
            cohort: "c".into(),
            day: 3,
            deals: 4,
            priced: 3,
            amount: "10.50\u{1f}2\u{1f}0".into(),
            tenths: "{\"210\":1}\u{1f}{\"210\":1,\"5\":1}\u{1f}{}".into(),
        };
        let counts = row.counts(&DEAL_WINS).unwrap();
        assert_eq!((counts.deals, counts.priced), (4, 3));
        assert_eq!(counts.amount, Decimal::new(1250, 2));
        assert_eq!(counts.tenths, BTreeMap::from([(5, 1), (210, 2)]));
        let broken = WonRow {
            amount: "ten".into(),
            ..row
        };
        let error = broken.counts(&DEAL_WINS).unwrap_err().to_string();
        assert!(error.contains("amount of deal_wins `c`"), "{error}");
    }

    #[test]
    fn amounts_are_plausible_decimals_only() {
        assert_eq!(plausible_amount(" 1000.10 "), Some(Decimal::new(100010, 2)));
        assert_eq!(plausible_amount("lots"), None);
        assert_eq!(plausible_amount(""), None);
        assert_eq!(plausible_amount("1e30"), None);
        assert_eq!(
            plausible_amount("1000000000000000000"),
            None,
            "beyond any deal"
        );
    }
}

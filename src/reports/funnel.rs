//! The referral funnel report (SPEC §6): per referee market × source, plus totals and a
//! referrer-market × referee-market matrix. [`compute`] turns the store's [`FunnelFacts`] into a
//! [`FunnelReport`] without I/O; [`to_csv`] and [`to_table`] format it.
//!
//! Definitions, for every row (the referrals of one market and source whose first touch is in the
//! filter's period):
//! - partners: every referrer of the row's market counts as invited (joining implies an invitation),
//!   `joined` ones as joined, both as of the period's end; referrers have no source, so every source
//!   row of a market repeats the market's figures, and the totals use all referrers; a market with
//!   partners but no referrals gets one row, source `all` (or the filter's source);
//! - active referrers: distinct referrer codes among the row's referrals, so a referrer whose
//!   referees are in another market counts there (see the matrix), and activation can exceed 1;
//! - repeat rate: of those referrers with ≥1 won referral in the row, the share with ≥2;
//! - days to win: first touch → won in days to 1 dp, nearest-rank median and p90;
//! - revenue: amounts of the won referrals' deals now at stage `won` (not deleted or merged away),
//!   per deal currency (`unknown` when the CRM gave none; amounts that are not decimals are left
//!   out), plus the referred customers' paid invoices net of refunds (recurring revenue); reward
//!   cost: reward lines neither `reversed` nor `rejected` (recurring rewards included, adjustments
//!   taken off), per reward currency; ROI only for currencies with both and a non-zero cost.
//!
//! Rates are ratios rounded half away from zero to 4 dp (`None` when the denominator is 0); ROI to
//! 4 dp; cost per acquisition to 2 dp. A missing market or source reads `unknown`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

pub use crate::store::{FunnelFacts, FunnelFilter};
use crate::store::{Store, StoreError};

const UNKNOWN: &str = "unknown";
const ALL: &str = "all";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelReport {
    pub rows: Vec<FunnelRow>,
    pub matrix: Vec<MatrixCell>,
    /// Market `all`, source `all`.
    pub totals: FunnelRow,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelRow {
    pub market: String,
    pub source: String,
    pub partners_invited: u64,
    pub partners_joined: u64,
    /// joined / invited.
    pub partner_acceptance: Option<Decimal>,
    pub active_referrers: u64,
    /// active referrers / joined.
    pub partner_activation: Option<Decimal>,
    pub referrals: u64,
    pub qualified: u64,
    pub won: u64,
    /// qualified / referrals.
    pub qualification_rate: Option<Decimal>,
    /// won / referrals.
    pub conversion_rate: Option<Decimal>,
    /// referrers with ≥2 won / referrers with ≥1 won.
    pub repeat_rate: Option<Decimal>,
    pub median_days_to_win: Option<Decimal>,
    pub p90_days_to_win: Option<Decimal>,
    pub revenue: BTreeMap<String, Decimal>,
    pub reward_cost: BTreeMap<String, Decimal>,
    /// (revenue − cost) / cost, per currency with both.
    pub roi: BTreeMap<String, Decimal>,
    /// cost / won, per currency.
    pub cost_per_acquisition: BTreeMap<String, Decimal>,
}

/// Referrals from referrers of one market to referees of another (or the same) market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatrixCell {
    pub referrer_market: String,
    pub referee_market: String,
    pub referrals: u64,
    pub won: u64,
}

/// Read the facts for `filter` and compute the report.
pub async fn report(store: &Store, filter: &FunnelFilter) -> Result<FunnelReport, StoreError> {
    Ok(compute(&store.funnel_facts(filter).await?))
}

/// Everything one row (or the totals) is computed from.
#[derive(Default)]
struct Acc {
    referrals: u64,
    qualified: u64,
    won: u64,
    /// Won referrals per referrer code; every referrer with a referral is present.
    referrers: HashMap<String, u64>,
    /// Won referrals per tenths of a day to win.
    days: BTreeMap<i64, u64>,
    revenue: BTreeMap<String, Decimal>,
    cost: BTreeMap<String, Decimal>,
}

impl Acc {
    fn finish(self, market: String, source: String, invited: u64, joined: u64) -> FunnelRow {
        let won_once = self.referrers.values().filter(|w| **w >= 1).count() as u64;
        let won_twice = self.referrers.values().filter(|w| **w >= 2).count() as u64;
        let active = self.referrers.len() as u64;
        let roi = self
            .revenue
            .iter()
            .filter_map(|(currency, revenue)| {
                let cost = self.cost.get(currency)?;
                let roi = (*revenue - *cost).checked_div(*cost)?;
                Some((currency.clone(), fixed(roi, 4)))
            })
            .collect();
        let cost_per_acquisition = if self.won == 0 {
            BTreeMap::new()
        } else {
            self.cost
                .iter()
                .filter_map(|(currency, cost)| {
                    let cpa = cost.checked_div(Decimal::from(self.won))?;
                    Some((currency.clone(), fixed(cpa, 2)))
                })
                .collect()
        };
        FunnelRow {
            market,
            source,
            partners_invited: invited,
            partners_joined: joined,
            partner_acceptance: ratio(joined, invited),
            active_referrers: active,
            partner_activation: ratio(active, joined),
            referrals: self.referrals,
            qualified: self.qualified,
            won: self.won,
            qualification_rate: ratio(self.qualified, self.referrals),
            conversion_rate: ratio(self.won, self.referrals),
            repeat_rate: ratio(won_twice, won_once),
            median_days_to_win: nearest_rank(&self.days, 50),
            p90_days_to_win: nearest_rank(&self.days, 90),
            revenue: money(self.revenue),
            reward_cost: money(self.cost),
            roi,
            cost_per_acquisition,
        }
    }
}

/// Compute the report from the store's facts. Pure: no I/O, no clock.
pub fn compute(facts: &FunnelFacts) -> FunnelReport {
    let mut rows: BTreeMap<(String, String), Acc> = BTreeMap::new();
    let mut totals = Acc::default();
    let mut matrix: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();

    for g in &facts.referral_groups {
        let market = label(g.market.as_deref());
        let source = label(g.source.as_deref());
        let cell = matrix
            .entry((label(g.referrer_market.as_deref()), market.clone()))
            .or_default();
        cell.0 += g.referrals;
        cell.1 += g.won;
        let row = rows.entry((market, source)).or_default();
        for acc in [row, &mut totals] {
            acc.referrals += g.referrals;
            acc.qualified += g.qualified;
            acc.won += g.won;
            if let Some(code) = &g.referrer_code {
                *acc.referrers.entry(code.clone()).or_default() += g.won;
            }
        }
    }
    for d in &facts.days_to_win {
        let key = (label(d.market.as_deref()), label(d.source.as_deref()));
        let row = rows.entry(key).or_default();
        for acc in [row, &mut totals] {
            *acc.days.entry(d.tenths).or_default() += d.referrals;
        }
    }
    for (groups, is_cost) in [(&facts.revenue, false), (&facts.reward_cost, true)] {
        for m in groups {
            let key = (label(m.market.as_deref()), label(m.source.as_deref()));
            let row = rows.entry(key).or_default();
            for acc in [row, &mut totals] {
                let sums = if is_cost {
                    &mut acc.cost
                } else {
                    &mut acc.revenue
                };
                let sum = sums.entry(currency(m.currency.as_deref())).or_default();
                *sum = sum.saturating_add(m.amount);
            }
        }
    }

    let mut partners: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in &facts.partners {
        let entry = partners.entry(label(p.market.as_deref())).or_default();
        entry.0 += p.invited;
        entry.1 += p.joined;
    }
    // A market with partners but no referrals still shows its partner funnel.
    let source_all = facts
        .filter
        .source
        .clone()
        .unwrap_or_else(|| ALL.to_string());
    for market in partners.keys() {
        if !rows.keys().any(|(m, _)| m == market) {
            rows.insert((market.clone(), source_all.clone()), Acc::default());
        }
    }

    let all_partners = partners
        .values()
        .fold((0, 0), |(i, j), (pi, pj)| (i + pi, j + pj));
    FunnelReport {
        rows: rows
            .into_iter()
            .map(|((market, source), acc)| {
                let (invited, joined) = partners.get(&market).copied().unwrap_or_default();
                acc.finish(market, source, invited, joined)
            })
            .collect(),
        matrix: matrix
            .into_iter()
            .map(
                |((referrer_market, referee_market), (referrals, won))| MatrixCell {
                    referrer_market,
                    referee_market,
                    referrals,
                    won,
                },
            )
            .collect(),
        totals: totals.finish(ALL.into(), ALL.into(), all_partners.0, all_partners.1),
    }
}

fn label(value: Option<&str>) -> String {
    value.unwrap_or(UNKNOWN).to_string()
}

/// ISO codes compare case-insensitively; a blank code is unknown.
fn currency(value: Option<&str>) -> String {
    match value.map(str::trim) {
        Some(c) if !c.is_empty() => c.to_ascii_uppercase(),
        _ => UNKNOWN.to_string(),
    }
}

/// `d` rounded half away from zero to exactly `dp` decimals.
fn fixed(d: Decimal, dp: u32) -> Decimal {
    let mut d = d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    d.rescale(dp);
    d
}

fn ratio(numerator: u64, denominator: u64) -> Option<Decimal> {
    if denominator == 0 {
        return None;
    }
    let r = Decimal::from(numerator).checked_div(Decimal::from(denominator))?;
    Some(fixed(r, 4))
}

/// Sums keep their own precision, shown with at least cents.
fn money(sums: BTreeMap<String, Decimal>) -> BTreeMap<String, Decimal> {
    sums.into_iter()
        .map(|(currency, mut sum)| {
            if sum.scale() < 2 {
                sum.rescale(2);
            }
            (currency, sum)
        })
        .collect()
}

/// The nearest-rank `percent` percentile of a histogram of tenths of a day, in days.
fn nearest_rank(tenths: &BTreeMap<i64, u64>, percent: u64) -> Option<Decimal> {
    let n: u64 = tenths.values().sum();
    if n == 0 {
        return None;
    }
    let rank = (percent * n).div_ceil(100).max(1);
    let mut seen = 0;
    for (value, count) in tenths {
        seen += count;
        if seen >= rank {
            return Some(Decimal::new(*value, 1));
        }
    }
    None
}

const COLUMNS: [&str; 19] = [
    "market",
    "source",
    "partners_invited",
    "partners_joined",
    "partner_acceptance",
    "active_referrers",
    "partner_activation",
    "referrals",
    "qualified",
    "won",
    "qualification_rate",
    "conversion_rate",
    "repeat_rate",
    "median_days_to_win",
    "p90_days_to_win",
    "revenue",
    "reward_cost",
    "roi",
    "cost_per_acquisition",
];

/// One field per column: rates as ratios, money as `USD 3000.00; RUB 50000.00`.
fn csv_fields(row: &FunnelRow) -> [String; 19] {
    let opt = |d: &Option<Decimal>| d.map(|d| d.to_string()).unwrap_or_default();
    let map = |m: &BTreeMap<String, Decimal>| {
        m.iter()
            .map(|(currency, v)| format!("{currency} {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    [
        row.market.clone(),
        row.source.clone(),
        row.partners_invited.to_string(),
        row.partners_joined.to_string(),
        opt(&row.partner_acceptance),
        row.active_referrers.to_string(),
        opt(&row.partner_activation),
        row.referrals.to_string(),
        row.qualified.to_string(),
        row.won.to_string(),
        opt(&row.qualification_rate),
        opt(&row.conversion_rate),
        opt(&row.repeat_rate),
        opt(&row.median_days_to_win),
        opt(&row.p90_days_to_win),
        map(&row.revenue),
        map(&row.reward_cost),
        map(&row.roi),
        map(&row.cost_per_acquisition),
    ]
}

/// A cell a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a
/// carriage return) gets a leading `'`, as OWASP recommends for CSV injection; the CSV writer
/// then quotes it where needed. Markets and sources are validated where they enter, but this is
/// the last line before a spreadsheet. No numeric cell here starts with one of those characters
/// (amounts are written as `USD -12.50`), so numbers are never touched.
pub(crate) fn neutralize_formula(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// A header line, one line per row, then the totals row (RFC 4180 quoting where needed, formula
/// cells neutralised).
pub fn to_csv(report: &FunnelReport) -> String {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing to memory cannot fail, and every record has the header's length.
    let write = |out: &mut csv::Writer<Vec<u8>>, fields: &[String]| {
        out.write_record(fields).expect("CSV to memory");
    };
    write(&mut out, &COLUMNS.map(String::from));
    for row in report.rows.iter().chain([&report.totals]) {
        write(&mut out, &csv_fields(row).map(neutralize_formula));
    }
    let bytes = out.into_inner().expect("CSV to memory");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

/// An aligned text table for the terminal (rates as percentages), then the market matrix.
pub fn to_table(report: &FunnelReport) -> String {
    let header = [
        "Market",
        "Source",
        "Invited",
        "Joined",
        "Accept",
        "Active",
        "Activation",
        "Referrals",
        "Qualified",
        "Won",
        "Qualif.",
        "Conv.",
        "Repeat",
        "Median d",
        "P90 d",
        "Revenue",
        "Reward cost",
        "ROI",
        "Cost/acq.",
    ]
    .map(String::from);
    let cells = |row: &FunnelRow| -> [String; 19] {
        let pct = |d: &Option<Decimal>| d.map(percent).unwrap_or_else(|| "-".into());
        let days = |d: &Option<Decimal>| d.map(|d| d.to_string()).unwrap_or_else(|| "-".into());
        let map = |m: &BTreeMap<String, Decimal>, as_percent: bool| {
            if m.is_empty() {
                return "-".to_string();
            }
            m.iter()
                .map(|(currency, v)| {
                    let v = if as_percent {
                        percent(*v)
                    } else {
                        v.to_string()
                    };
                    format!("{currency} {v}")
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        [
            row.market.clone(),
            row.source.clone(),
            row.partners_invited.to_string(),
            row.partners_joined.to_string(),
            pct(&row.partner_acceptance),
            row.active_referrers.to_string(),
            pct(&row.partner_activation),
            row.referrals.to_string(),
            row.qualified.to_string(),
            row.won.to_string(),
            pct(&row.qualification_rate),
            pct(&row.conversion_rate),
            pct(&row.repeat_rate),
            days(&row.median_days_to_win),
            days(&row.p90_days_to_win),
            map(&row.revenue, false),
            map(&row.reward_cost, false),
            map(&row.roi, true),
            map(&row.cost_per_acquisition, false),
        ]
    };
    let body: Vec<[String; 19]> = report.rows.iter().map(cells).collect();
    let mut out = render(&header, &body, &[cells(&report.totals)], 2);

    let matrix_header = ["Referrer market", "Referee market", "Referrals", "Won"].map(String::from);
    let matrix: Vec<[String; 4]> = report
        .matrix
        .iter()
        .map(|c| {
            [
                c.referrer_market.clone(),
                c.referee_market.clone(),
                c.referrals.to_string(),
                c.won.to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&render(&matrix_header, &matrix, &[], 2));
    out
}

/// 0.4286 → `42.9%`.
fn percent(ratio: Decimal) -> String {
    format!("{}%", fixed(ratio * Decimal::ONE_HUNDRED, 1))
}

/// Columns sized to their widest cell; the first `text_columns` are left-aligned, the rest
/// (numbers) right-aligned; `footer` rows follow a rule.
fn render<const N: usize>(
    header: &[String; N],
    body: &[[String; N]],
    footer: &[[String; N]],
    text_columns: usize,
) -> String {
    let mut widths = [0usize; N];
    for row in std::iter::once(header).chain(body).chain(footer) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, row: &[String; N]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i < text_columns {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    };
    let rule = |out: &mut String| {
        let total = widths.iter().sum::<usize>() + 2 * N.saturating_sub(1);
        let _ = writeln!(out, "{}", "-".repeat(total));
    };
    let mut out = String::new();
    line(&mut out, header);
    rule(&mut out);
    for row in body {
        line(&mut out, row);
    }
    if !footer.is_empty() {
        rule(&mut out);
        for row in footer {
            line(&mut out, row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DaysToWinGroup, MoneyGroup, PartnerGroup, ReferralGroup};

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn group(
        code: Option<&str>,
        market: &str,
        source: &str,
        n: u64,
        q: u64,
        w: u64,
    ) -> ReferralGroup {
        ReferralGroup {
            referrer_code: code.map(String::from),
            referrer_market: Some(market.into()),
            market: Some(market.into()),
            source: Some(source.into()),
            referrals: n,
            qualified: q,
            won: w,
        }
    }

    fn days(market: &str, source: &str, tenths: i64, n: u64) -> DaysToWinGroup {
        DaysToWinGroup {
            market: Some(market.into()),
            source: Some(source.into()),
            tenths,
            referrals: n,
        }
    }

    fn money(currency: &str, amount: &str) -> MoneyGroup {
        MoneyGroup {
            market: Some("US".into()),
            source: Some("link".into()),
            currency: Some(currency.into()),
            amount: d(amount),
        }
    }

    #[test]
    fn empty_facts_give_an_all_none_totals_row() {
        let report = compute(&FunnelFacts::default());

        assert!(report.rows.is_empty());
        assert!(report.matrix.is_empty());
        let t = &report.totals;
        assert_eq!((t.market.as_str(), t.source.as_str()), ("all", "all"));
        assert_eq!((t.referrals, t.won, t.partners_invited), (0, 0, 0));
        for rate in [
            t.partner_acceptance,
            t.partner_activation,
            t.qualification_rate,
            t.conversion_rate,
            t.repeat_rate,
            t.median_days_to_win,
            t.p90_days_to_win,
        ] {
            assert_eq!(rate, None);
        }
        assert!(t.roi.is_empty() && t.cost_per_acquisition.is_empty());
    }

    #[test]
    fn zero_denominators_are_none_and_zero_numerators_are_zero() {
        // 3 referrals, none qualified or won, by one referrer; no partners known.
        let facts = FunnelFacts {
            referral_groups: vec![group(Some("A"), "US", "link", 3, 0, 0)],
            reward_cost: vec![money("USD", "10.00")],
            ..Default::default()
        };

        let row = &compute(&facts).rows[0];

        assert_eq!(row.qualification_rate, Some(d("0.0000")));
        assert_eq!(row.conversion_rate, Some(d("0.0000")));
        assert_eq!(row.partner_acceptance, None, "no partners invited");
        assert_eq!(row.partner_activation, None, "no partners joined");
        assert_eq!(row.repeat_rate, None, "no referrer has a win");
        assert_eq!(row.median_days_to_win, None);
        assert!(
            row.cost_per_acquisition.is_empty(),
            "no won referral to divide by"
        );
        assert!(row.roi.is_empty(), "cost but no revenue");
    }

    #[test]
    fn rates_round_half_away_from_zero_to_four_places() {
        // 2/3 = 0.66666… → 0.6667; 1/8 = 0.125 → 0.1250; 1/3 → 0.3333.
        let facts = FunnelFacts {
            referral_groups: vec![
                group(Some("A"), "US", "link", 3, 2, 1),
                group(Some("B"), "US", "code", 8, 1, 0),
            ],
            ..Default::default()
        };

        let r = compute(&facts);

        let code = &r.rows[0];
        let link = &r.rows[1];
        assert_eq!(
            (code.source.as_str(), link.source.as_str()),
            ("code", "link")
        );
        assert_eq!(link.qualification_rate.unwrap().to_string(), "0.6667");
        assert_eq!(link.conversion_rate.unwrap().to_string(), "0.3333");
        assert_eq!(code.qualification_rate.unwrap().to_string(), "0.1250");
        assert_eq!(ratio(1, 20_000), Some(d("0.0001")), "0.00005 rounds up");
    }

    #[test]
    fn percentiles_of_one_value_are_that_value() {
        let facts = FunnelFacts {
            days_to_win: vec![days("US", "link", 123, 1)],
            ..Default::default()
        };

        let row = &compute(&facts).rows[0];

        assert_eq!(row.median_days_to_win.unwrap().to_string(), "12.3");
        assert_eq!(row.p90_days_to_win.unwrap().to_string(), "12.3");
    }

    #[test]
    fn percentiles_of_ten_values_use_nearest_rank() {
        // Days 1..=10: median rank ⌈0.5·10⌉ = 5 → 5.0 (not 5.5); p90 rank ⌈0.9·10⌉ = 9 → 9.0.
        let facts = FunnelFacts {
            days_to_win: (1..=10)
                .map(|day| days("US", "link", day * 10, 1))
                .collect(),
            ..Default::default()
        };

        let row = &compute(&facts).rows[0];

        assert_eq!(row.median_days_to_win, Some(d("5.0")));
        assert_eq!(row.p90_days_to_win, Some(d("9.0")));
    }

    #[test]
    fn percentiles_count_repeated_durations_and_merge_in_totals() {
        // US/link: 0.5 ×3, 2.0 ×1 → n=4, median rank 2 → 0.5, p90 rank 4 → 2.0.
        // RU/code: 7.0 ×1. Totals: 0.5 ×3, 2.0, 7.0 → n=5, median rank 3 → 0.5, p90 rank 5 → 7.0.
        let facts = FunnelFacts {
            days_to_win: vec![
                days("US", "link", 5, 3),
                days("US", "link", 20, 1),
                days("RU", "code", 70, 1),
            ],
            ..Default::default()
        };

        let r = compute(&facts);

        let us = r.rows.iter().find(|x| x.market == "US").unwrap();
        assert_eq!(us.median_days_to_win, Some(d("0.5")));
        assert_eq!(us.p90_days_to_win, Some(d("2.0")));
        assert_eq!(r.totals.median_days_to_win, Some(d("0.5")));
        assert_eq!(r.totals.p90_days_to_win, Some(d("7.0")));
    }

    #[test]
    fn roi_needs_revenue_and_a_non_zero_cost_in_the_same_currency() {
        // USD: revenue 1500.00 + 1500.00 = 3000.00, cost 500.00 → ROI (3000 − 500) / 500 = 5.0000.
        // EUR: revenue 100, cost 0.00 → no ROI. RUB: cost only → no ROI. Won = 2 → CPA USD 250.00,
        // EUR 0.00, RUB 3333.33 / 2 = 1666.665 → 1666.67 (half away from zero).
        let facts = FunnelFacts {
            referral_groups: vec![group(Some("A"), "US", "link", 4, 2, 2)],
            revenue: vec![
                money("USD", "1500.00"),
                money("USD", "1500.00"),
                money("eur", "100"),
            ],
            reward_cost: vec![
                money("USD", "500.00"),
                money("EUR", "0.00"),
                money("RUB", "3333.33"),
            ],
            ..Default::default()
        };

        let row = &compute(&facts).rows[0];

        assert_eq!(row.revenue.get("USD"), Some(&d("3000.00")));
        assert_eq!(row.revenue.get("EUR").unwrap().to_string(), "100.00");
        assert_eq!(row.roi, BTreeMap::from([("USD".to_string(), d("5.0000"))]));
        assert_eq!(row.roi["USD"].to_string(), "5.0000");
        assert_eq!(row.cost_per_acquisition["USD"].to_string(), "250.00");
        assert_eq!(row.cost_per_acquisition["EUR"].to_string(), "0.00");
        assert_eq!(row.cost_per_acquisition["RUB"].to_string(), "1666.67");
    }

    #[test]
    fn referrers_are_distinct_across_rows_in_the_totals() {
        // A: 1 win in US/link and 1 in US/code → no repeat in either row, a repeat in the totals.
        // B: 2 referrals in US/link, no win. No code: counted as referrals, not as a referrer.
        // Partners: US 4 invited, 2 joined; RU 1 invited, 0 joined, no referrals.
        let facts = FunnelFacts {
            referral_groups: vec![
                group(Some("A"), "US", "link", 1, 1, 1),
                group(Some("A"), "US", "code", 1, 1, 1),
                group(Some("B"), "US", "link", 2, 0, 0),
                group(None, "US", "link", 1, 0, 0),
            ],
            partners: vec![
                PartnerGroup {
                    market: Some("US".into()),
                    invited: 4,
                    joined: 2,
                },
                PartnerGroup {
                    market: Some("RU".into()),
                    invited: 1,
                    joined: 0,
                },
            ],
            ..Default::default()
        };

        let r = compute(&facts);

        let keys: Vec<_> = r
            .rows
            .iter()
            .map(|x| (x.market.as_str(), x.source.as_str()))
            .collect();
        assert_eq!(keys, [("RU", "all"), ("US", "code"), ("US", "link")]);
        let ru = &r.rows[0];
        assert_eq!((ru.partners_invited, ru.partners_joined), (1, 0));
        assert_eq!(ru.partner_acceptance, Some(d("0.0000")));
        assert_eq!((ru.referrals, ru.partner_activation), (0, None));
        let link = &r.rows[2];
        assert_eq!((link.referrals, link.active_referrers, link.won), (4, 2, 1));
        assert_eq!(link.partner_acceptance, Some(d("0.5000")), "US: 2 / 4");
        assert_eq!(
            link.partner_activation,
            Some(d("1.0000")),
            "A, B / 2 joined"
        );
        assert_eq!(link.repeat_rate, Some(d("0.0000")), "A has 1 win here");
        let t = &r.totals;
        assert_eq!((t.partners_invited, t.partners_joined), (5, 2));
        assert_eq!(
            (t.referrals, t.qualified, t.won, t.active_referrers),
            (5, 2, 2, 2)
        );
        assert_eq!(t.repeat_rate, Some(d("1.0000")), "A: 2 wins overall");
    }

    #[test]
    fn missing_labels_read_unknown_and_feed_the_matrix() {
        let facts = FunnelFacts {
            referral_groups: vec![
                ReferralGroup {
                    referrer_code: Some("X".into()),
                    referrer_market: None,
                    market: None,
                    source: None,
                    referrals: 2,
                    qualified: 0,
                    won: 1,
                },
                ReferralGroup {
                    referrer_market: Some("US".into()),
                    ..group(Some("Y"), "RU", "intro", 1, 1, 0)
                },
            ],
            revenue: vec![MoneyGroup {
                currency: Some("  ".into()),
                ..money("USD", "5")
            }],
            ..Default::default()
        };

        let r = compute(&facts);

        let keys: Vec<_> = r
            .rows
            .iter()
            .map(|x| (x.market.as_str(), x.source.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("RU", "intro"), ("US", "link"), ("unknown", "unknown")]
        );
        assert_eq!(r.totals.revenue.get("unknown"), Some(&d("5.00")));
        assert_eq!(
            r.matrix,
            [
                MatrixCell {
                    referrer_market: "US".into(),
                    referee_market: "RU".into(),
                    referrals: 1,
                    won: 0
                },
                MatrixCell {
                    referrer_market: "unknown".into(),
                    referee_market: "unknown".into(),
                    referrals: 2,
                    won: 1
                },
            ]
        );
    }

    fn sample() -> FunnelReport {
        // US/link: 7 referrals, 3 qualified, 1 won; USD revenue 3000.00 and RUB 50000.00.
        let facts = FunnelFacts {
            referral_groups: vec![group(Some("A"), "US", "link", 7, 3, 1)],
            partners: vec![PartnerGroup {
                market: Some("US".into()),
                invited: 3,
                joined: 2,
            }],
            days_to_win: vec![days("US", "link", 421, 1)],
            revenue: vec![money("USD", "3000.00"), money("RUB", "50000.00")],
            reward_cost: vec![money("USD", "300.00")],
            ..Default::default()
        };
        compute(&facts)
    }

    #[test]
    fn csv_has_a_header_each_row_and_the_totals() {
        let csv = to_csv(&sample());

        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines.len(), 4, "header, US/link, totals, final newline");
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "US,link,3,2,0.6667,1,0.5000,7,3,1,0.4286,0.1429,0.0000,42.1,42.1,\
             RUB 50000.00; USD 3000.00,USD 300.00,USD 9.0000,USD 300.00"
        );
        assert!(lines[2].starts_with("all,all,3,2,0.6667,1,"));
        assert_eq!(lines[3], "");
    }

    #[test]
    fn csv_quotes_fields_that_need_it() {
        let mut report = sample();
        report.rows[0].source = "partner, \"vip\"".into();

        let csv = to_csv(&report);

        assert!(csv.contains("US,\"partner, \"\"vip\"\"\",3,"));
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
        let mut report = sample();
        let formulas = [
            "=HYPERLINK(\"http://x\")",
            "+1+1",
            "-2+3",
            "@SUM(1+1)",
            "\tcmd",
            "\rcmd",
        ];
        let rows = report.rows.clone();
        report.rows = formulas
            .iter()
            .map(|f| FunnelRow {
                market: f.to_string(),
                source: f.to_string(),
                ..rows[0].clone()
            })
            .collect();
        let csv = to_csv(&report);
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        for (record, formula) in reader.records().zip(formulas) {
            let record = record.unwrap();
            assert_eq!(&record[0], format!("'{formula}"));
            assert_eq!(&record[1], format!("'{formula}"));
        }
        assert!(csv.contains("\"'=HYPERLINK(\"\"http://x\"\")\""), "{csv}");
    }

    #[test]
    fn table_aligns_columns_and_shows_percentages() {
        let table = to_table(&sample());

        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("Market  Source  Invited  Joined  Accept"));
        assert!(lines[1].chars().all(|c| c == '-'));
        assert!(lines[2].starts_with("US      link          3       2   66.7%"));
        assert!(lines[2].contains("42.9%"), "qualification 3/7");
        assert!(lines[2].contains("RUB 50000.00; USD 3000.00"));
        assert!(lines[2].contains("USD 900.0%"), "ROI 9.0000");
        assert!(lines[4].starts_with("all     all"));
        let header_width = lines[0].find("Won").unwrap() + 3;
        let row_won_end = lines[2][..header_width].trim_end().len();
        assert_eq!(row_won_end, header_width, "numbers end under their header");
        assert!(table.contains("Referrer market  Referee market  Referrals  Won"));
        assert!(table.contains("US               US                      7    1"));
    }

    #[test]
    fn table_shows_a_dash_when_there_is_nothing_to_show() {
        let table = to_table(&compute(&FunnelFacts::default()));

        let totals = table.lines().nth(3).unwrap();
        assert!(totals.starts_with("all     all"));
        assert!(totals.contains(" -  "));
    }

    #[test]
    fn serialises_decimals_as_strings() {
        let json = serde_json::to_value(sample()).unwrap();

        assert_eq!(json["rows"][0]["conversion_rate"], "0.1429");
        assert_eq!(json["rows"][0]["revenue"]["USD"], "3000.00");
        assert_eq!(json["rows"][0]["referrals"], 7);
        assert_eq!(json["totals"]["market"], "all");
        assert!(json["totals"]["repeat_rate"].is_string());
    }
}

//! The referral funnel report (SPEC §6): per referee market, per market × source and per market
//! × referrer kind (customer / partner / creator: user referrals next to partner referrals), plus
//! totals and a referrer-market × referee-market matrix. [`compute`] turns the store's
//! [`FunnelFacts`] into a [`FunnelReport`] without I/O; [`to_csv`] and [`to_table`] format it.
//!
//! With a source in the filter, market and kind rows are labelled with it and there are no
//! source rows.
//!
//! Definitions, for every row (the referrals of one market, source or referrer kind whose first
//! touch is in the filter's period):
//! - partners (market rows: the market's referrers; kind rows: the market's referrers of that
//!   kind; source rows: none, since referrers have no source): every one counts as invited
//!   (joining implies an invitation), `joined` ones as joined, both as of the period's end;
//!   `partners_active` are the joined ones with a referral in the period, wherever their
//!   referees are. A partner counts in its own market only, so activation never exceeds 100%;
//!   cross-market referrals show in the matrix;
//! - active referrers: distinct referrer codes among the row's referrals, in any market;
//! - repeat rate: of those referrers with ≥1 won referral in the row, the share with ≥2;
//! - days to win: first touch → won in days to 1 dp; median as usual (the mean of the two
//!   middle values for an even count), p90 by nearest rank (both stated in the report);
//! - revenue: amounts of the won referrals' deals now at stage `won` (not deleted or merged away),
//!   per deal currency (`unknown` when the CRM gave none; amounts that are not decimals are left
//!   out), plus the referred customers' paid invoices net of refunds (recurring revenue); reward
//!   cost: reward lines neither `reversed` nor `rejected` (recurring rewards included, adjustments
//!   taken off), per reward currency; ROI only for currencies with both and a non-zero cost.
//!
//! Rates are ratios rounded half away from zero to 4 dp (`None` when the denominator is 0); ROI to
//! 4 dp; cost per acquisition to 2 dp. A missing market, source or kind reads `unknown`.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde::Serialize;

use super::compare::{self, Comparison};
use super::format::{
    self, add_money, currency, fixed, label, money, money_cell, money_text, opt_cell, opt_text,
    pct_text, ratio, render, Histogram, PercentileMethods, ALL, PERCENTILE_METHODS, UNKNOWN,
};
use crate::clock::Millis;
use crate::config::Settings;
use crate::domain::moment::MomentKind;
pub use crate::store::{FunnelFacts, FunnelFilter};
use crate::store::{ReferralOrigin, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelReport {
    /// Per market: the market row (source and kind `all`), its source rows, its kind rows.
    pub rows: Vec<FunnelRow>,
    pub matrix: Vec<MatrixCell>,
    /// Market, source and kind `all`.
    pub totals: FunnelRow,
    /// How `median_days_to_win` and `p90_days_to_win` are computed.
    pub percentiles: PercentileMethods,
    /// Referral asks made in the period at advocacy moments, per kind (whatever the market and
    /// source filters).
    pub asks: Vec<AskRow>,
    /// Referred vs non-referred deals, when asked for ([`report_with_comparison`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelRow {
    pub market: String,
    /// A source, or `all` (the filter's source, when given) on market and kind rows.
    pub source: String,
    /// `customer`, `partner`, `creator` (`unknown`: no referrer), or `all` on market and source
    /// rows.
    pub referrer_kind: String,
    /// Partner figures, on market and kind rows; `None` on source rows.
    pub partners_invited: Option<u64>,
    pub partners_joined: Option<u64>,
    /// joined / invited.
    pub partner_acceptance: Option<Decimal>,
    /// Joined partners with a referral in the period.
    pub partners_active: Option<u64>,
    /// active / joined.
    pub partner_activation: Option<Decimal>,
    /// Distinct referrers with a referral in this row.
    pub active_referrers: u64,
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

/// The referral asks made at one kind of advocacy moment, and how many a referral by the person
/// asked followed within 30 days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AskRow {
    pub moment: String,
    pub asks: u64,
    pub led_to_referral: u64,
    /// led to a referral / asks.
    pub referral_rate: Option<Decimal>,
}

/// Read the facts for `filter` and compute the report.
pub async fn report(store: &Store, filter: &FunnelFilter) -> Result<FunnelReport, StoreError> {
    Ok(compute(&store.funnel_facts(filter).await?))
}

/// The report with the referred vs non-referred comparison (SPEC §6 `compare=true`), made at
/// `as_of`, both read side by side in one snapshot.
pub async fn report_with_comparison(
    store: &Store,
    settings: &Settings,
    filter: &FunnelFilter,
    as_of: Millis,
) -> Result<FunnelReport, StoreError> {
    let (facts, baseline) = store.funnel_and_baseline_facts(filter, as_of).await?;
    let mut report = compute(&facts);
    report.comparison = Some(compare::compute(settings, &baseline)?);
    Ok(report)
}

/// Partner counts of a market or kind row: invited, joined, active.
#[derive(Debug, Clone, Copy, Default)]
struct Partners {
    invited: u64,
    joined: u64,
    active: u64,
}

/// Everything one row (or the totals, or a scorecard) is computed from.
#[derive(Default)]
pub(super) struct Acc {
    pub referrals: u64,
    pub qualified: u64,
    pub won: u64,
    /// Won referrals per referrer code; every referrer with a referral is present.
    referrers: HashMap<String, u64>,
    pub days: Histogram,
    pub revenue: BTreeMap<String, Decimal>,
    pub cost: BTreeMap<String, Decimal>,
    partners: Option<Partners>,
}

impl Acc {
    pub fn add_referrals(&mut self, code: Option<&str>, referrals: u64, qualified: u64, won: u64) {
        self.referrals += referrals;
        self.qualified += qualified;
        self.won += won;
        if let Some(code) = code {
            *self.referrers.entry(code.to_string()).or_default() += won;
        }
    }

    fn add_partners(&mut self, invited: u64, joined: u64, active: u64) {
        let p = self.partners.get_or_insert_with(Partners::default);
        p.invited += invited;
        p.joined += joined;
        p.active += active;
    }

    /// cost / won, per currency, to 2 dp.
    pub fn cost_per_acquisition(&self) -> BTreeMap<String, Decimal> {
        if self.won == 0 {
            return BTreeMap::new();
        }
        self.cost
            .iter()
            .filter_map(|(currency, cost)| {
                let cpa = cost.checked_div(Decimal::from(self.won))?;
                Some((currency.clone(), fixed(cpa, 2)))
            })
            .collect()
    }

    fn finish(self, market: String, source: String, referrer_kind: String) -> FunnelRow {
        let won_once = self.referrers.values().filter(|w| **w >= 1).count() as u64;
        let won_twice = self.referrers.values().filter(|w| **w >= 2).count() as u64;
        let partners = self.partners;
        FunnelRow {
            market,
            source,
            referrer_kind,
            partners_invited: partners.map(|p| p.invited),
            partners_joined: partners.map(|p| p.joined),
            partner_acceptance: partners.and_then(|p| ratio(p.joined, p.invited)),
            partners_active: partners.map(|p| p.active),
            partner_activation: partners.and_then(|p| ratio(p.active, p.joined)),
            active_referrers: self.referrers.len() as u64,
            referrals: self.referrals,
            qualified: self.qualified,
            won: self.won,
            qualification_rate: ratio(self.qualified, self.referrals),
            conversion_rate: ratio(self.won, self.referrals),
            repeat_rate: ratio(won_twice, won_once),
            median_days_to_win: self.days.median(),
            p90_days_to_win: self.days.nearest_rank(90),
            roi: format::roi(&self.revenue, &self.cost),
            cost_per_acquisition: self.cost_per_acquisition(),
            revenue: money(self.revenue),
            reward_cost: money(self.cost),
        }
    }
}

/// Which rows of a market a figure goes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Market,
    Source(String),
    Kind(String),
}

/// The kind label of each referrer code among the facts' referral groups.
pub(super) fn kinds_of(facts: &FunnelFacts) -> HashMap<&str, String> {
    facts
        .referral_groups
        .iter()
        .filter_map(|g| {
            let code = g.referrer_code.as_deref()?;
            Some((code, kind_label(g)))
        })
        .collect()
}

fn kind_label(g: &crate::store::ReferralGroup) -> String {
    label(g.referrer_kind.map(|k| k.as_str()))
}

/// Compute the report from the store's facts. Pure: no I/O, no clock.
pub fn compute(facts: &FunnelFacts) -> FunnelReport {
    let mut rows: BTreeMap<(String, Group), Acc> = BTreeMap::new();
    let mut totals = Acc::default();
    let mut matrix: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let kinds = kinds_of(facts);
    let kind_of = |code: Option<&str>| {
        code.and_then(|c| kinds.get(c).cloned())
            .unwrap_or_else(|| UNKNOWN.to_string())
    };
    // Each figure goes to its market's row, its source or kind row, and the totals.
    let targets = |market: String, source: String, kind: String| {
        [Group::Market, Group::Source(source), Group::Kind(kind)].map(|g| (market.clone(), g))
    };

    for g in &facts.referral_groups {
        let market = label(g.market.as_deref());
        let cell = matrix
            .entry((label(g.referrer_market.as_deref()), market.clone()))
            .or_default();
        cell.0 += g.referrals;
        cell.1 += g.won;
        for key in targets(market, label(g.source.as_deref()), kind_label(g)) {
            rows.entry(key).or_default().add_referrals(
                g.referrer_code.as_deref(),
                g.referrals,
                g.qualified,
                g.won,
            );
        }
        totals.add_referrals(g.referrer_code.as_deref(), g.referrals, g.qualified, g.won);
    }
    let targets_of = |o: &ReferralOrigin| {
        targets(
            label(o.market.as_deref()),
            label(o.source.as_deref()),
            kind_of(o.referrer_code.as_deref()),
        )
    };
    for d in &facts.days_to_win {
        let keys = targets_of(&d.origin);
        for key in keys {
            rows.entry(key).or_default().days.add(d.tenths, d.referrals);
        }
        totals.days.add(d.tenths, d.referrals);
    }
    for (groups, is_cost) in [(&facts.revenue, false), (&facts.reward_cost, true)] {
        for m in groups {
            let keys = targets_of(&m.origin);
            let currency = currency(m.currency.as_deref());
            let sums = |acc: &mut Acc| {
                let sums = if is_cost {
                    &mut acc.cost
                } else {
                    &mut acc.revenue
                };
                add_money(sums, &currency, m.amount);
            };
            for key in keys {
                sums(rows.entry(key).or_default());
            }
            sums(&mut totals);
        }
    }
    for p in &facts.partners {
        let market = label(p.market.as_deref());
        for group in [Group::Market, Group::Kind(p.kind.as_str().to_string())] {
            rows.entry((market.clone(), group))
                .or_default()
                .add_partners(p.invited, p.joined, p.active);
        }
        totals.add_partners(p.invited, p.joined, p.active);
    }
    // Every market with a figure has its market row, with partner figures (zero if none).
    let markets: Vec<String> = rows.keys().map(|(m, _)| m.clone()).collect();
    for market in markets {
        rows.entry((market.clone(), Group::Market))
            .or_default()
            .partners
            .get_or_insert_with(Partners::default);
        for kind in rows
            .keys()
            .filter(|(m, g)| *m == market && matches!(g, Group::Kind(_)))
            .cloned()
            .collect::<Vec<_>>()
        {
            rows.get_mut(&kind)
                .expect("listed")
                .partners
                .get_or_insert_with(Partners::default);
        }
    }
    totals.partners.get_or_insert_with(Partners::default);

    let source_all = facts
        .filter
        .source
        .clone()
        .unwrap_or_else(|| ALL.to_string());
    // With a source in the filter, a market row holds exactly that source's referrals: its
    // source row would repeat it.
    if facts.filter.source.is_some() {
        rows.retain(|(_, group), _| !matches!(group, Group::Source(_)));
    }
    FunnelReport {
        rows: rows
            .into_iter()
            .map(|((market, group), acc)| match group {
                Group::Market => acc.finish(market, source_all.clone(), ALL.into()),
                Group::Source(source) => acc.finish(market, source, ALL.into()),
                Group::Kind(kind) => acc.finish(market, source_all.clone(), kind),
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
        totals: totals.finish(ALL.into(), ALL.into(), ALL.into()),
        percentiles: PERCENTILE_METHODS,
        asks: MomentKind::ALL
            .into_iter()
            .map(|kind| {
                let outcome = facts.asks.iter().find(|a| a.kind == kind);
                let (asks, led) = outcome.map_or((0, 0), |a| (a.asks, a.led_to_referral));
                AskRow {
                    moment: kind.as_str().to_string(),
                    asks,
                    led_to_referral: led,
                    referral_rate: ratio(led, asks),
                }
            })
            .collect(),
        comparison: None,
    }
}

const COLUMNS: [&str; 22] = [
    "market",
    "source",
    "referrer_kind",
    "partners_invited",
    "partners_joined",
    "partner_acceptance",
    "partners_active",
    "partner_activation",
    "active_referrers",
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
    "note",
];

/// One field per column: rates as ratios, money as `USD 3000.00; RUB 50000.00`.
fn csv_fields(row: &FunnelRow) -> [String; 22] {
    [
        row.market.clone(),
        row.source.clone(),
        row.referrer_kind.clone(),
        opt_cell(&row.partners_invited),
        opt_cell(&row.partners_joined),
        opt_cell(&row.partner_acceptance),
        opt_cell(&row.partners_active),
        opt_cell(&row.partner_activation),
        row.active_referrers.to_string(),
        row.referrals.to_string(),
        row.qualified.to_string(),
        row.won.to_string(),
        opt_cell(&row.qualification_rate),
        opt_cell(&row.conversion_rate),
        opt_cell(&row.repeat_rate),
        opt_cell(&row.median_days_to_win),
        opt_cell(&row.p90_days_to_win),
        money_cell(&row.revenue),
        money_cell(&row.reward_cost),
        money_cell(&row.roi),
        money_cell(&row.cost_per_acquisition),
        String::new(),
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
/// cells neutralised), whose `note` says how the percentiles are computed. A report with a
/// comparison is the comparison's CSV instead (one table per file; the funnel's CSV is the same
/// request without it).
pub fn to_csv(report: &FunnelReport) -> String {
    if let Some(comparison) = &report.comparison {
        return compare::to_csv(comparison);
    }
    let mut rows: Vec<[String; 22]> = report.rows.iter().map(csv_fields).collect();
    let mut totals = csv_fields(&report.totals);
    totals[21] = percentile_note(&report.percentiles);
    rows.push(totals);
    format::to_csv(&COLUMNS, &rows)
}

fn percentile_note(p: &PercentileMethods) -> String {
    format!("median: {}; p90: {}", p.median, p.p90)
}

/// An aligned text table for the terminal (rates as percentages), the market matrix, and how
/// the percentiles are computed.
pub fn to_table(report: &FunnelReport) -> String {
    let header = [
        "Market",
        "Source",
        "Kind",
        "Invited",
        "Joined",
        "Accept",
        "Active p.",
        "Activation",
        "Referrers",
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
    ];
    let cells = |row: &FunnelRow| -> [String; 21] {
        [
            row.market.clone(),
            row.source.clone(),
            row.referrer_kind.clone(),
            opt_text(&row.partners_invited),
            opt_text(&row.partners_joined),
            pct_text(&row.partner_acceptance),
            opt_text(&row.partners_active),
            pct_text(&row.partner_activation),
            row.active_referrers.to_string(),
            row.referrals.to_string(),
            row.qualified.to_string(),
            row.won.to_string(),
            pct_text(&row.qualification_rate),
            pct_text(&row.conversion_rate),
            pct_text(&row.repeat_rate),
            opt_text(&row.median_days_to_win),
            opt_text(&row.p90_days_to_win),
            money_text(&row.revenue, false),
            money_text(&row.reward_cost, false),
            money_text(&row.roi, true),
            money_text(&row.cost_per_acquisition, false),
        ]
    };
    let body: Vec<[String; 21]> = report.rows.iter().map(cells).collect();
    let mut out = render(&header, &body, &[cells(&report.totals)], 3);

    let matrix_header = ["Referrer market", "Referee market", "Referrals", "Won"];
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
    out.push('\n');
    out.push_str(&format!(
        "Days to win: {}.\n",
        percentile_note(&report.percentiles)
    ));
    let asks: Vec<[String; 4]> = report
        .asks
        .iter()
        .map(|a| {
            [
                a.moment.clone(),
                a.asks.to_string(),
                a.led_to_referral.to_string(),
                pct_text(&a.referral_rate),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&render(
        &["Ask moment", "Asks", "Referral within 30 d", "Rate"],
        &asks,
        &[],
        1,
    ));
    if let Some(comparison) = &report.comparison {
        out.push_str("\nReferred vs non-referred deals (created in the period)\n\n");
        out.push_str(&compare::to_table(comparison));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::referrer::PartnerKind;
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
            referrer_market: code.map(|_| market.into()),
            referrer_kind: code.map(|_| PartnerKind::Partner),
            referrer_name: None,
            market: Some(market.into()),
            source: Some(source.into()),
            referrals: n,
            qualified: q,
            won: w,
        }
    }

    fn origin(market: &str, source: &str, referrer_code: &str) -> ReferralOrigin {
        ReferralOrigin {
            market: Some(market.into()),
            source: Some(source.into()),
            referrer_code: Some(referrer_code.into()),
        }
    }

    fn days(market: &str, source: &str, tenths: i64, n: u64) -> DaysToWinGroup {
        DaysToWinGroup {
            origin: origin(market, source, "A"),
            tenths,
            referrals: n,
        }
    }

    fn money(currency: &str, amount: &str) -> MoneyGroup {
        MoneyGroup {
            origin: origin("US", "link", "A"),
            currency: Some(currency.into()),
            amount: d(amount),
        }
    }

    fn partners(
        market: &str,
        kind: PartnerKind,
        invited: u64,
        joined: u64,
        active: u64,
    ) -> PartnerGroup {
        PartnerGroup {
            market: Some(market.into()),
            kind,
            invited,
            joined,
            active,
        }
    }

    fn row<'a>(r: &'a FunnelReport, market: &str, source: &str, kind: &str) -> &'a FunnelRow {
        r.rows
            .iter()
            .find(|x| x.market == market && x.source == source && x.referrer_kind == kind)
            .unwrap_or_else(|| panic!("no row {market}/{source}/{kind} in {:#?}", r.rows))
    }

    #[test]
    fn empty_facts_give_an_all_none_totals_row() {
        let report = compute(&FunnelFacts::default());

        assert!(report.rows.is_empty());
        assert!(report.matrix.is_empty());
        let t = &report.totals;
        assert_eq!(
            (
                t.market.as_str(),
                t.source.as_str(),
                t.referrer_kind.as_str()
            ),
            ("all", "all", "all")
        );
        assert_eq!((t.referrals, t.won, t.partners_invited), (0, 0, Some(0)));
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

        let r = compute(&facts);
        let row = row(&r, "US", "link", "all");

        assert_eq!(row.qualification_rate, Some(d("0.0000")));
        assert_eq!(row.conversion_rate, Some(d("0.0000")));
        assert_eq!(
            row.partner_acceptance, None,
            "no partner figures on a source row"
        );
        assert_eq!(row.repeat_rate, None, "no referrer has a win");
        assert_eq!(row.median_days_to_win, None);
        assert!(row.cost_per_acquisition.is_empty(), "no won referral");
        assert!(row.roi.is_empty(), "cost but no revenue");
        let market = &r.rows[0];
        assert_eq!(
            (market.source.as_str(), market.referrer_kind.as_str()),
            ("all", "all")
        );
        assert_eq!(
            (market.partners_invited, market.partner_acceptance),
            (Some(0), None)
        );
    }

    #[test]
    fn partners_count_in_their_own_market_only() {
        // A US partner referred a RU prospect: RU's partners are its own two (one joined, not
        // active), so RU activation is 0 of 1, never 2.0; the US has A, joined and active.
        // The matrix shows the cross-market referral.
        let facts = FunnelFacts {
            referral_groups: vec![ReferralGroup {
                referrer_market: Some("US".into()),
                ..group(Some("A"), "RU", "link", 1, 0, 0)
            }],
            partners: vec![
                partners("US", PartnerKind::Partner, 1, 1, 1),
                partners("RU", PartnerKind::Partner, 2, 1, 0),
            ],
            ..Default::default()
        };

        let r = compute(&facts);

        let ru = row(&r, "RU", "all", "all");
        assert_eq!((ru.partners_joined, ru.partners_active), (Some(1), Some(0)));
        assert_eq!(ru.partner_activation, Some(d("0.0000")));
        assert_eq!(ru.active_referrers, 1, "A referred here, from the US");
        let us = row(&r, "US", "all", "all");
        assert_eq!(us.partner_activation, Some(d("1.0000")));
        assert_eq!(us.referrals, 0);
        assert_eq!(
            r.matrix,
            [MatrixCell {
                referrer_market: "US".into(),
                referee_market: "RU".into(),
                referrals: 1,
                won: 0
            }]
        );
        assert_eq!(
            r.totals.partner_activation,
            Some(d("0.5000")),
            "1 of 2 joined"
        );
    }

    #[test]
    fn kind_rows_split_referrals_and_partners_by_referrer_kind() {
        // US: customer C (2 referrals, 1 won), partner P (1 referral), no referrer (1 pool).
        // Partners: 3 customers invited, 2 joined, 1 active; 1 partner invited, joined, active.
        let facts = FunnelFacts {
            referral_groups: vec![
                ReferralGroup {
                    referrer_kind: Some(PartnerKind::Customer),
                    ..group(Some("C"), "US", "link", 2, 1, 1)
                },
                group(Some("P"), "US", "code", 1, 1, 0),
                group(None, "US", "pool", 1, 0, 0),
            ],
            partners: vec![
                partners("US", PartnerKind::Customer, 3, 2, 1),
                partners("US", PartnerKind::Partner, 1, 1, 1),
            ],
            days_to_win: vec![DaysToWinGroup {
                origin: origin("US", "link", "C"),
                ..days("US", "link", 75, 1)
            }],
            ..Default::default()
        };

        let r = compute(&facts);

        let keys: Vec<(&str, &str, &str)> = r
            .rows
            .iter()
            .map(|x| {
                (
                    x.market.as_str(),
                    x.source.as_str(),
                    x.referrer_kind.as_str(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("US", "all", "all"),
                ("US", "code", "all"),
                ("US", "link", "all"),
                ("US", "pool", "all"),
                ("US", "all", "customer"),
                ("US", "all", "partner"),
                ("US", "all", "unknown"),
            ]
        );
        let customers = row(&r, "US", "all", "customer");
        assert_eq!((customers.referrals, customers.won), (2, 1));
        assert_eq!(customers.partner_acceptance, Some(d("0.6667")));
        assert_eq!(customers.partner_activation, Some(d("0.5000")));
        assert_eq!(customers.median_days_to_win, Some(d("7.5")));
        let none = row(&r, "US", "all", "unknown");
        assert_eq!((none.referrals, none.active_referrers), (1, 0));
        assert_eq!(none.partners_invited, Some(0));
        let market = row(&r, "US", "all", "all");
        assert_eq!(
            (market.partners_invited, market.partners_active),
            (Some(4), Some(2))
        );
        assert_eq!(market.referrals, 4);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        // 10, 15, 20, 30 days: median (15 + 20) / 2 = 17.5; p90 rank ceil(3.6) = 4 → 30.0.
        let facts = FunnelFacts {
            days_to_win: [100, 150, 200, 300]
                .into_iter()
                .map(|t| days("US", "link", t, 1))
                .collect(),
            ..Default::default()
        };

        let r = compute(&facts);

        assert_eq!(r.totals.median_days_to_win, Some(d("17.5")));
        assert_eq!(r.totals.p90_days_to_win, Some(d("30.0")));
        assert!(r.percentiles.p90.contains("nearest rank"));
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

        let r = compute(&facts);
        let row = row(&r, "US", "link", "all");

        assert_eq!(row.revenue.get("USD"), Some(&d("3000.00")));
        assert_eq!(row.revenue.get("EUR").unwrap().to_string(), "100.00");
        assert_eq!(row.roi, BTreeMap::from([("USD".to_string(), d("5.0000"))]));
        assert_eq!(row.cost_per_acquisition["USD"].to_string(), "250.00");
        assert_eq!(row.cost_per_acquisition["EUR"].to_string(), "0.00");
        assert_eq!(row.cost_per_acquisition["RUB"].to_string(), "1666.67");
    }

    #[test]
    fn referrers_are_distinct_across_rows_in_the_totals() {
        // A: 1 win in US/link and 1 in US/code → no repeat in either row, a repeat in the totals.
        let facts = FunnelFacts {
            referral_groups: vec![
                group(Some("A"), "US", "link", 1, 1, 1),
                group(Some("A"), "US", "code", 1, 1, 1),
                group(Some("B"), "US", "link", 2, 0, 0),
            ],
            ..Default::default()
        };

        let r = compute(&facts);

        let link = row(&r, "US", "link", "all");
        assert_eq!((link.referrals, link.active_referrers, link.won), (3, 2, 1));
        assert_eq!(link.repeat_rate, Some(d("0.0000")), "A has 1 win here");
        assert_eq!(r.totals.repeat_rate, Some(d("1.0000")), "A: 2 wins overall");
        assert_eq!(r.totals.active_referrers, 2);
    }

    fn sample() -> FunnelReport {
        // US/link: 7 referrals, 3 qualified, 1 won; USD revenue 3000.00 and RUB 50000.00.
        let facts = FunnelFacts {
            referral_groups: vec![group(Some("A"), "US", "link", 7, 3, 1)],
            partners: vec![partners("US", PartnerKind::Partner, 3, 2, 1)],
            days_to_win: vec![days("US", "link", 421, 1)],
            revenue: vec![money("USD", "3000.00"), money("RUB", "50000.00")],
            reward_cost: vec![money("USD", "300.00")],
            ..Default::default()
        };
        compute(&facts)
    }

    #[test]
    fn csv_has_a_header_each_row_and_the_totals_with_the_percentile_methods() {
        let csv = to_csv(&sample());

        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines.len(),
            6,
            "header, US market/link/partner rows, totals, final newline"
        );
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(
            lines[2],
            "US,link,all,,,,,,1,7,3,1,0.4286,0.1429,0.0000,42.1,42.1,\
             RUB 50000.00; USD 3000.00,USD 300.00,USD 9.0000,USD 300.00,"
        );
        assert!(lines[1].starts_with("US,all,all,3,2,0.6667,1,0.5000,1,7,"));
        assert!(lines[4].starts_with("all,all,all,3,2,0.6667,1,0.5000,1,7,"));
        assert!(lines[4].ends_with(",median: the middle value; the mean of the two middle values when the count is even; p90: nearest rank: the ceil(0.9 * n)-th smallest value"));
        assert_eq!(lines[5], "");
    }

    #[test]
    fn csv_neutralises_formula_cells() {
        let mut report = sample();
        report.rows[1].source = "=HYPERLINK(\"http://x\")".into();

        let csv = to_csv(&report);

        assert!(
            csv.contains("US,\"'=HYPERLINK(\"\"http://x\"\")\",all,"),
            "{csv}"
        );
    }

    #[test]
    fn table_aligns_columns_and_shows_percentages() {
        let table = to_table(&sample());

        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("Market  Source  Kind     Invited  Joined  Accept"));
        assert!(lines[1].chars().all(|c| c == '-'));
        assert!(lines[2].starts_with("US      all     all            3       2   66.7%"));
        assert!(lines[3].starts_with("US      link    all            -       -       -"));
        assert!(lines[3].contains("42.9%"), "qualification 3/7");
        assert!(lines[3].contains("RUB 50000.00; USD 3000.00"));
        assert!(lines[3].contains("USD 900.0%"), "ROI 9.0000");
        assert!(lines[6].starts_with("all     all     all"));
        assert!(table.contains("Referrer market  Referee market  Referrals  Won"));
        assert!(table.contains("US               US                      7    1"));
        assert!(table.contains("p90: nearest rank"));
    }

    #[test]
    fn serialises_decimals_as_strings() {
        let json = serde_json::to_value(sample()).unwrap();

        assert_eq!(json["rows"][1]["conversion_rate"], "0.1429");
        assert_eq!(json["rows"][1]["revenue"]["USD"], "3000.00");
        assert_eq!(json["rows"][1]["referrals"], 7);
        assert_eq!(json["rows"][1]["partners_invited"], serde_json::Value::Null);
        assert_eq!(json["totals"]["market"], "all");
        assert!(json["totals"]["repeat_rate"].is_string());
        assert!(json["percentiles"]["median"].is_string());
    }
}

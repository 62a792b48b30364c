//! Referral volume next to referral quality, per referrer (`GET /api/v1/reports/referrers`,
//! `report --by referrer`): how many referrals each referrer brought (volume), and how many of
//! them qualified and were won, how fast, for how much revenue and at what reward cost (quality).
//! Computed from the same [`FunnelFacts`] as the funnel, with the funnel's definitions.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde::Serialize;

use super::format::{
    self, add_money, currency, label, money, money_cell, money_text, opt_cell, opt_text, pct_text,
    ratio, render, PercentileMethods, PERCENTILE_METHODS,
};
use super::funnel::{kinds_of, Acc};
use crate::domain::referrer::PartnerKind;
use crate::store::FunnelFacts;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScorecardReport {
    /// One per referrer with a referral in the period, by code.
    pub referrers: Vec<ReferrerScorecard>,
    pub percentiles: PercentileMethods,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferrerScorecard {
    pub referrer_code: String,
    pub name: Option<String>,
    /// The referrer's own market.
    pub market: String,
    /// `customer`, `partner`, `creator`; `unknown` for a code no referrer was registered with.
    pub referrer_kind: String,
    pub referrals: u64,
    pub qualified: u64,
    pub won: u64,
    /// qualified / referrals.
    pub qualified_rate: Option<Decimal>,
    /// won / referrals.
    pub win_rate: Option<Decimal>,
    pub median_days_to_win: Option<Decimal>,
    pub p90_days_to_win: Option<Decimal>,
    pub revenue: BTreeMap<String, Decimal>,
    pub reward_cost: BTreeMap<String, Decimal>,
    /// (revenue − cost) / cost, per currency with both.
    pub roi: BTreeMap<String, Decimal>,
}

/// The scorecards of the facts' referrers, optionally of one kind. Pure: no I/O, no clock.
pub fn compute(facts: &FunnelFacts, kind: Option<PartnerKind>) -> ScorecardReport {
    let mut accs: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut who: HashMap<&str, (Option<&str>, Option<&str>)> = HashMap::new();
    for g in &facts.referral_groups {
        let Some(code) = g.referrer_code.as_deref() else {
            continue;
        };
        accs.entry(code)
            .or_default()
            .add_referrals(None, g.referrals, g.qualified, g.won);
        who.insert(
            code,
            (g.referrer_name.as_deref(), g.referrer_market.as_deref()),
        );
    }
    for d in &facts.days_to_win {
        if let Some(acc) = d
            .origin
            .referrer_code
            .as_deref()
            .and_then(|c| accs.get_mut(c))
        {
            acc.days.add(d.tenths, d.referrals);
        }
    }
    for (groups, is_cost) in [(&facts.revenue, false), (&facts.reward_cost, true)] {
        for m in groups {
            if let Some(acc) = m
                .origin
                .referrer_code
                .as_deref()
                .and_then(|c| accs.get_mut(c))
            {
                let sums = if is_cost {
                    &mut acc.cost
                } else {
                    &mut acc.revenue
                };
                add_money(sums, &currency(m.currency.as_deref()), m.amount);
            }
        }
    }
    let kinds = kinds_of(facts);
    let wanted = kind.map(|k| k.as_str().to_string());
    ScorecardReport {
        referrers: accs
            .into_iter()
            .filter_map(|(code, acc)| {
                let referrer_kind = kinds.get(code).cloned().unwrap_or_else(|| label(None));
                if wanted.as_ref().is_some_and(|w| *w != referrer_kind) {
                    return None;
                }
                let (name, market) = who.get(code).copied().unwrap_or_default();
                Some(ReferrerScorecard {
                    referrer_code: code.to_string(),
                    name: name.map(str::to_string),
                    market: label(market),
                    referrer_kind,
                    referrals: acc.referrals,
                    qualified: acc.qualified,
                    won: acc.won,
                    qualified_rate: ratio(acc.qualified, acc.referrals),
                    win_rate: ratio(acc.won, acc.referrals),
                    median_days_to_win: acc.days.median(),
                    p90_days_to_win: acc.days.nearest_rank(90),
                    roi: format::roi(&acc.revenue, &acc.cost),
                    revenue: money(acc.revenue),
                    reward_cost: money(acc.cost),
                })
            })
            .collect(),
        percentiles: PERCENTILE_METHODS,
    }
}

const COLUMNS: [&str; 15] = [
    "referrer_code",
    "name",
    "market",
    "referrer_kind",
    "referrals",
    "qualified",
    "won",
    "qualified_rate",
    "win_rate",
    "median_days_to_win",
    "p90_days_to_win",
    "revenue",
    "reward_cost",
    "roi",
    "note",
];

/// A header line and one line per referrer; the first line's `note` says how the percentiles
/// are computed.
pub fn to_csv(report: &ScorecardReport) -> String {
    let rows: Vec<[String; 15]> = report
        .referrers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let note_cell = if i == 0 {
                note(&report.percentiles)
            } else {
                String::new()
            };
            let mut cells = cells(s, Layout::Csv).into_iter().chain([note_cell]);
            std::array::from_fn(|_| cells.next().unwrap_or_default())
        })
        .collect();
    format::to_csv(&COLUMNS, &rows)
}

/// Where a scorecard's cells go: the CSV keeps plain values for spreadsheets, the terminal
/// table formats them for reading.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Csv,
    Table,
}

/// One referrer's cells, in the order both layouts share.
fn cells(s: &ReferrerScorecard, layout: Layout) -> [String; 14] {
    let csv = layout == Layout::Csv;
    let rate = |r: &Option<Decimal>| if csv { opt_cell(r) } else { pct_text(r) };
    let days = |d: &Option<Decimal>| if csv { opt_cell(d) } else { opt_text(d) };
    let money = |m: &BTreeMap<String, Decimal>, as_percent: bool| {
        if csv {
            money_cell(m)
        } else {
            money_text(m, as_percent)
        }
    };
    [
        s.referrer_code.clone(),
        s.name.clone().unwrap_or_default(),
        s.market.clone(),
        s.referrer_kind.clone(),
        s.referrals.to_string(),
        s.qualified.to_string(),
        s.won.to_string(),
        rate(&s.qualified_rate),
        rate(&s.win_rate),
        days(&s.median_days_to_win),
        days(&s.p90_days_to_win),
        money(&s.revenue, false),
        money(&s.reward_cost, false),
        money(&s.roi, true),
    ]
}

fn note(p: &PercentileMethods) -> String {
    format!("median: {}; p90: {}", p.median, p.p90)
}

/// An aligned text table for the terminal, then how the percentiles are computed.
pub fn to_table(report: &ScorecardReport) -> String {
    let header = [
        "Referrer",
        "Name",
        "Market",
        "Kind",
        "Referrals",
        "Qualified",
        "Won",
        "Qualif.",
        "Win rate",
        "Median d",
        "P90 d",
        "Revenue",
        "Reward cost",
        "ROI",
    ];
    let body: Vec<[String; 14]> = report
        .referrers
        .iter()
        .map(|s| cells(s, Layout::Table))
        .collect();
    let mut out = render(&header, &body, &[], 4);
    out.push_str(&format!("\nDays to win: {}.\n", note(&report.percentiles)));
    out
}

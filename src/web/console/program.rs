//! The Program page (`/console/program`): the funnel per market × source with the SPEC §6 rates
//! ([`crate::reports::funnel`]), drawn as a funnel per market, conversion by month of first touch
//! and the referrer-market × referee-market heat map; filters for market, source and period; and
//! `/console/program.csv`, the CSV of the same filter (the report's CSV, formula cells
//! neutralised). Beside the funnel, for the same filters: referred vs non-referred deals per
//! market and channel with the participation rate per market ([`crate::reports::compare`], as
//! `GET /api/v1/reports/funnel?compare=true`), and the top referrers' scorecards
//! ([`crate::reports::scorecard`], as `GET /api/v1/reports/referrers`), each with its CSV
//! (`/console/comparison.csv`, `/console/referrers.csv`).

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

use super::{Chrome, ConsoleUser, Section};
use crate::clock::DAY;
use crate::domain::market::Market;
use crate::reports::compare::{self, Comparison, ComparisonRow, ParticipationRow};
use crate::reports::funnel::{self, FunnelFilter, FunnelReport, FunnelRow};
use crate::reports::scorecard::{self, ReferrerScorecard, ScorecardReport};
use crate::startup::AppState;
use crate::store::DayGroup;
use crate::web::charts::{self, FunnelChart, FunnelCounts, HeatMap, LineChart, MonthCounts};
use crate::web::{format_count, format_money_map, format_percent, page_builder, render, WebError};

/// The filters as the form sends them: empty fields mean "all".
#[derive(Debug, Default, Deserialize)]
pub struct ProgramQuery {
    pub market: Option<String>,
    pub source: Option<String>,
    /// First touch on or after this day (UTC), `YYYY-MM-DD`.
    pub from: Option<String>,
    /// First touch on or before this day (UTC), `YYYY-MM-DD`.
    pub to: Option<String>,
}

/// The filters, checked, as the form shows them and as the report reads them.
pub struct Filters {
    pub report: FunnelFilter,
    pub market: String,
    pub source: String,
    pub from: String,
    pub to: String,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn day_start(name: &str, text: &str) -> Result<i64, WebError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| {
            WebError::Invalid(format!(
                "{name} must be a date like 2026-11-20, not `{text}`"
            ))
        })
}

impl Filters {
    pub fn parse(q: &ProgramQuery) -> Result<Self, WebError> {
        let market = match given(&q.market) {
            None => None,
            Some(m) if m.eq_ignore_ascii_case("unknown") => Some("unknown".to_string()),
            Some(m) => Some(
                Market::parse(m)
                    .map_err(|e| WebError::Invalid(format!("market {e}")))?
                    .into_string(),
            ),
        };
        let sources = crate::attribution::overrides::SOURCES;
        let source = match given(&q.source) {
            None => None,
            Some(s) if sources.contains(&s) || s == "unknown" => Some(s.to_string()),
            Some(_) => {
                return Err(WebError::Invalid(format!(
                    "source must be one of {}, or unknown",
                    sources.join(", ")
                )))
            }
        };
        let from = given(&q.from).map(|t| day_start("from", t)).transpose()?;
        // "To" is the last day shown, so the report runs to the start of the next one.
        let to = given(&q.to)
            .map(|t| day_start("to", t).map(|ms| ms + DAY))
            .transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if f >= t {
                return Err(WebError::Invalid(
                    "from must be on or before to".to_string(),
                ));
            }
        }
        Ok(Self {
            market: market.clone().unwrap_or_default(),
            source: source.clone().unwrap_or_default(),
            from: given(&q.from).unwrap_or_default().to_string(),
            to: given(&q.to).unwrap_or_default().to_string(),
            report: FunnelFilter {
                market,
                source,
                from,
                to,
            },
        })
    }

    /// The query string that repeats these filters (for the CSV link).
    pub fn query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("market", &self.market),
            ("source", &self.source),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if !value.is_empty() {
                q.append_pair(name, value);
            }
        }
        q.finish()
    }
}

/// One funnel row as the table shows it.
pub struct RowView {
    pub market: String,
    pub source: String,
    /// The referrer kind, or `all`.
    pub kind: String,
    pub invited: String,
    pub joined: String,
    pub acceptance: String,
    pub active: String,
    pub activation: String,
    pub referrals: String,
    pub qualified: String,
    pub won: String,
    pub qualification: String,
    pub conversion: String,
    pub repeat: String,
    pub median_days: String,
    pub p90_days: String,
    pub revenue: String,
    pub reward_cost: String,
    pub roi: String,
    pub cost_per_acquisition: String,
}

impl RowView {
    fn of(row: &FunnelRow) -> Self {
        let days = |d: Option<rust_decimal::Decimal>| d.map_or("–".into(), |d| d.to_string());
        let roi = if row.roi.is_empty() {
            "–".to_string()
        } else {
            row.roi
                .iter()
                .map(|(currency, ratio)| format!("{currency} {}", format_percent(Some(*ratio))))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        Self {
            market: row.market.clone(),
            source: row.source.clone(),
            kind: row.referrer_kind.clone(),
            invited: row
                .partners_invited
                .map_or_else(|| "–".into(), format_count),
            joined: row.partners_joined.map_or_else(|| "–".into(), format_count),
            acceptance: format_percent(row.partner_acceptance),
            active: format_count(row.active_referrers),
            activation: format_percent(row.partner_activation),
            referrals: format_count(row.referrals),
            qualified: format_count(row.qualified),
            won: format_count(row.won),
            qualification: format_percent(row.qualification_rate),
            conversion: format_percent(row.conversion_rate),
            repeat: format_percent(row.repeat_rate),
            median_days: days(row.median_days_to_win),
            p90_days: days(row.p90_days_to_win),
            revenue: format_money_map(&row.revenue),
            reward_cost: format_money_map(&row.reward_cost),
            roi,
            cost_per_acquisition: format_money_map(&row.cost_per_acquisition),
        }
    }
}

/// A day count (`12.5`), or `–` when there is none.
fn days(d: Option<rust_decimal::Decimal>) -> String {
    d.map_or("–".into(), |d| d.to_string())
}

/// One referred vs non-referred row as the table shows it.
pub struct CompareView {
    pub market: String,
    pub channel: String,
    pub created: String,
    pub qualified: String,
    pub won: String,
    pub conversion: String,
    pub win_rate: String,
    pub median_days: String,
    pub p90_days: String,
    pub average_won: String,
    pub customers_12m: String,
    pub revenue_12m: String,
}

impl CompareView {
    fn of(row: &ComparisonRow) -> Self {
        Self {
            market: row.market.clone(),
            channel: row.channel.clone(),
            created: format_count(row.deals_created),
            qualified: format_count(row.deals_qualified),
            won: format_count(row.deals_won),
            conversion: format_percent(row.conversion_rate),
            win_rate: format_percent(row.win_rate_from_qualified),
            median_days: days(row.median_days_to_won),
            p90_days: days(row.p90_days_to_won),
            average_won: format_money_map(&row.average_won_amount),
            customers_12m: format_count(row.customers_12m),
            revenue_12m: format_money_map(&row.revenue_per_customer_12m),
        }
    }
}

pub struct ParticipationView {
    pub market: String,
    pub customers: String,
    pub referring: String,
    pub rate: String,
}

impl ParticipationView {
    fn of(row: &ParticipationRow) -> Self {
        Self {
            market: row.market.clone(),
            customers: format_count(row.customers),
            referring: format_count(row.referring_customers),
            rate: format_percent(row.participation_rate),
        }
    }
}

/// One referrer's scorecard as the table shows it.
pub struct ScorecardView {
    pub code: String,
    pub name: String,
    pub market: String,
    pub kind: String,
    pub referrals: String,
    pub qualified_rate: String,
    pub won: String,
    pub win_rate: String,
    pub median_days: String,
    pub revenue: String,
    pub reward_cost: String,
    pub roi: String,
}

impl ScorecardView {
    fn of(s: &ReferrerScorecard) -> Self {
        Self {
            code: s.referrer_code.clone(),
            name: s.name.clone().unwrap_or_default(),
            market: s.market.clone(),
            kind: s.referrer_kind.clone(),
            referrals: format_count(s.referrals),
            qualified_rate: format_percent(s.qualified_rate),
            won: format_count(s.won),
            win_rate: format_percent(s.win_rate),
            median_days: days(s.median_days_to_win),
            revenue: format_money_map(&s.revenue),
            reward_cost: format_money_map(&s.reward_cost),
            roi: roi_text(&s.roi),
        }
    }
}

fn roi_text(roi: &BTreeMap<String, rust_decimal::Decimal>) -> String {
    if roi.is_empty() {
        return "–".to_string();
    }
    roi.iter()
        .map(|(currency, ratio)| format!("{currency} {}", format_percent(Some(*ratio))))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Scorecards shown on the page; the CSV has every referrer.
pub const TOP_REFERRERS: usize = 20;

/// The `n` referrers with the most won referrals, then the most referrals, then by code. Revenue
/// cannot rank them: it is per currency, and currencies are never added together.
pub fn top_referrers(report: &ScorecardReport, n: usize) -> Vec<&ReferrerScorecard> {
    let mut all: Vec<&ReferrerScorecard> = report.referrers.iter().collect();
    all.sort_by(|a, b| {
        b.won
            .cmp(&a.won)
            .then(b.referrals.cmp(&a.referrals))
            .then_with(|| a.referrer_code.cmp(&b.referrer_code))
    });
    all.truncate(n);
    all
}

pub struct Choice {
    pub value: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "console/templates/program.html")]
pub struct ProgramPage {
    pub chrome: Chrome,
    pub filters: Filters,
    pub markets: Vec<Choice>,
    pub sources: Vec<Choice>,
    pub rows: Vec<RowView>,
    pub totals: RowView,
    pub funnels: Vec<FunnelChart>,
    pub conversion: Option<LineChart>,
    pub heat: Option<HeatMap>,
    pub csv_href: String,
    pub comparison: Vec<CompareView>,
    pub comparison_totals: Vec<CompareView>,
    pub participation: Vec<ParticipationView>,
    pub comparison_csv_href: String,
    pub scorecards: Vec<ScorecardView>,
    /// Referrers with a referral in the period (the CSV has them all).
    pub referrers: String,
    pub referrers_csv_href: String,
}

/// Referrals per market and month (`2026-11`), and every month from the first to the last.
pub fn months_of(
    days: &[DayGroup],
) -> (Vec<String>, BTreeMap<String, BTreeMap<String, MonthCounts>>) {
    let mut by_market: BTreeMap<String, BTreeMap<String, MonthCounts>> = BTreeMap::new();
    let mut span: Option<(NaiveDate, NaiveDate)> = None;
    for d in days {
        let Some(date) = chrono::DateTime::from_timestamp_millis(d.day.saturating_mul(DAY))
            .map(|t| t.date_naive())
        else {
            continue;
        };
        let first = date.with_day(1).unwrap_or(date);
        span = Some(match span {
            None => (first, first),
            Some((lo, hi)) => (lo.min(first), hi.max(first)),
        });
        let market = d.market.clone().unwrap_or_else(|| "unknown".into());
        let month = by_market
            .entry(market)
            .or_default()
            .entry(first.format("%Y-%m").to_string())
            .or_default();
        month.referrals += d.referrals;
        month.won += d.won;
    }
    let mut months = Vec::new();
    if let Some((mut month, last)) = span {
        while month <= last {
            months.push(month.format("%Y-%m").to_string());
            month = month
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(last.succ_opt().unwrap_or(last));
        }
    }
    (months, by_market)
}

/// Referrals, qualified and won per market, over its sources.
fn market_counts(report: &FunnelReport) -> BTreeMap<String, FunnelCounts> {
    let mut counts: BTreeMap<String, FunnelCounts> = BTreeMap::new();
    for row in &report.rows {
        let c = counts.entry(row.market.clone()).or_default();
        c.referrals += row.referrals;
        c.qualified += row.qualified;
        c.won += row.won;
    }
    counts
}

fn choices(values: impl IntoIterator<Item = String>, selected: &str) -> Vec<Choice> {
    let set: BTreeSet<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
    set.into_iter()
        .map(|value| Choice {
            selected: value == selected,
            value,
        })
        .collect()
}

/// `GET /console/program`.
pub async fn get_program(
    user: ConsoleUser,
    query: web::Query<ProgramQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let filters = Filters::parse(&query)?;
    // The API's reads, on their own connections at once: the page waits for the slowest, not
    // for all. The scorecards are computed from the funnel's facts.
    let ((facts, baseline), days) = futures_util::try_join!(
        state
            .store
            .funnel_and_baseline_facts(&filters.report, state.clock.now()),
        state.store.conversion_by_day(&filters.report),
    )?;
    let report = funnel::compute(&facts);
    let Comparison {
        rows: comparison_rows,
        totals: comparison_totals,
        participation,
        ..
    } = compare::compute(&state.settings, &baseline)?;
    let scorecards = scorecard::compute(&facts, None);
    let (months, by_market) = months_of(&days);
    let markets = choices(
        state
            .settings
            .programs
            .keys()
            .cloned()
            .chain(report.rows.iter().map(|r| r.market.clone()))
            .chain(report.matrix.iter().map(|c| c.referrer_market.clone()))
            .chain([filters.market.clone()]),
        &filters.market,
    );
    let sources = choices(
        crate::attribution::overrides::SOURCES
            .iter()
            .map(|s| s.to_string()),
        &filters.source,
    );
    let cells: Vec<(String, String, u64, u64)> = report
        .matrix
        .iter()
        .map(|c| {
            (
                c.referrer_market.clone(),
                c.referee_market.clone(),
                c.referrals,
                c.won,
            )
        })
        .collect();
    let page = ProgramPage {
        chrome: Chrome::new(Section::Program, &user),
        csv_href: format!("/console/program.csv?{}", filters.query()),
        markets,
        sources,
        rows: report.rows.iter().map(RowView::of).collect(),
        totals: RowView::of(&report.totals),
        funnels: market_counts(&report)
            .into_iter()
            .map(|(market, counts)| charts::funnel_chart(&market, counts))
            .collect(),
        conversion: (!months.is_empty()).then(|| charts::conversion_chart(&months, &by_market)),
        heat: (!cells.is_empty()).then(|| charts::heat_map(&cells)),
        comparison: comparison_rows.iter().map(CompareView::of).collect(),
        comparison_totals: comparison_totals.iter().map(CompareView::of).collect(),
        participation: participation.iter().map(ParticipationView::of).collect(),
        comparison_csv_href: format!("/console/comparison.csv?{}", filters.query()),
        scorecards: top_referrers(&scorecards, TOP_REFERRERS)
            .into_iter()
            .map(ScorecardView::of)
            .collect(),
        referrers: format_count(scorecards.referrers.len() as u64),
        referrers_csv_href: format!("/console/referrers.csv?{}", filters.query()),
        filters,
    };
    render(&page)
}

/// `GET /console/program.csv`: the funnel of the same filters as CSV.
pub async fn get_program_csv(
    _: ConsoleUser,
    query: web::Query<ProgramQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let filters = Filters::parse(&query)?;
    let report = funnel::report(&state.store, &filters.report).await?;
    Ok(csv("funnel.csv", funnel::to_csv(&report)))
}

/// `GET /console/comparison.csv`: referred vs non-referred deals of the same filters, as the
/// API's `compare=true` CSV.
pub async fn get_comparison_csv(
    _: ConsoleUser,
    query: web::Query<ProgramQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let filters = Filters::parse(&query)?;
    let baseline = state
        .store
        .baseline_facts(&filters.report, state.clock.now())
        .await?;
    let comparison = compare::compute(&state.settings, &baseline)?;
    Ok(csv("comparison.csv", compare::to_csv(&comparison)))
}

/// `GET /console/referrers.csv`: every referrer's scorecard for the same filters, as
/// `GET /api/v1/reports/referrers?format=csv`.
pub async fn get_referrers_csv(
    _: ConsoleUser,
    query: web::Query<ProgramQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let filters = Filters::parse(&query)?;
    let facts = state.store.funnel_facts(&filters.report).await?;
    let report = scorecard::compute(&facts, None);
    Ok(csv("referrers.csv", scorecard::to_csv(&report)))
}

/// A CSV download named `filename`.
fn csv(filename: &str, body: String) -> HttpResponse {
    page_builder(StatusCode::OK)
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(market: &str, source: &str, from: &str, to: &str) -> ProgramQuery {
        let some = |s: &str| Some(s.to_string());
        ProgramQuery {
            market: some(market),
            source: some(source),
            from: some(from),
            to: some(to),
        }
    }

    #[test]
    fn filters_are_checked_and_the_last_day_is_included() {
        let f = Filters::parse(&q(" us ", "link", "2026-11-01", "2026-11-30")).unwrap();
        assert_eq!(f.report.market.as_deref(), Some("US"));
        assert_eq!(f.report.from, Some(1_793_491_200_000));
        assert_eq!(f.report.to, Some(1_793_491_200_000 + 30 * DAY));
        assert_eq!(
            f.query(),
            "market=US&source=link&from=2026-11-01&to=2026-11-30"
        );

        let empty = Filters::parse(&ProgramQuery::default()).unwrap();
        assert_eq!(empty.report, FunnelFilter::default());
        assert_eq!(empty.query(), "");

        for bad in [
            q("=SUM(1)", "", "", ""),
            q("", "tv", "", ""),
            q("", "", "yesterday", ""),
            q("", "", "2026-12-01", "2026-11-01"),
        ] {
            assert!(matches!(Filters::parse(&bad), Err(WebError::Invalid(_))));
        }
    }

    #[test]
    fn the_top_referrers_are_those_with_the_most_wins_then_referrals() {
        let card = |code: &str, referrals, won| ReferrerScorecard {
            referrer_code: code.into(),
            name: None,
            market: "US".into(),
            referrer_kind: "partner".into(),
            referrals,
            qualified: 0,
            won,
            qualified_rate: None,
            win_rate: None,
            median_days_to_win: None,
            p90_days_to_win: None,
            revenue: BTreeMap::new(),
            reward_cost: BTreeMap::new(),
            roi: BTreeMap::new(),
        };
        let report = ScorecardReport {
            referrers: vec![
                card("A", 9, 1),
                card("B", 2, 2),
                card("C", 5, 2),
                card("D", 5, 2),
                card("E", 1, 0),
            ],
            percentiles: crate::reports::format::PERCENTILE_METHODS,
        };
        let codes = |n| -> Vec<String> {
            top_referrers(&report, n)
                .iter()
                .map(|s| s.referrer_code.clone())
                .collect()
        };
        assert_eq!(codes(3), ["C", "D", "B"]);
        assert_eq!(codes(9), ["C", "D", "B", "A", "E"]);
    }

    #[test]
    fn days_fold_into_every_month_of_the_span() {
        let day = |y, m, d| {
            NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_millis()
                / DAY
        };
        let g = |market: Option<&str>, day: i64, referrals, won| DayGroup {
            market: market.map(String::from),
            day,
            referrals,
            won,
        };
        let (months, by_market) = months_of(&[
            g(Some("US"), day(2026, 11, 30), 3, 1),
            g(Some("US"), day(2026, 11, 1), 2, 0),
            g(None, day(2027, 2, 14), 1, 1),
        ]);

        assert_eq!(months, ["2026-11", "2026-12", "2027-01", "2027-02"]);
        assert_eq!(
            by_market["US"]["2026-11"],
            MonthCounts {
                referrals: 5,
                won: 1
            }
        );
        assert_eq!(by_market["unknown"]["2027-02"].won, 1);
    }
}

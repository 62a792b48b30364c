//! Charts as SVG geometry computed on the server: a funnel per market, conversion by month as
//! lines, and the referrer-market × referee-market heat map. Each chart is plain data (positions
//! in whole pixels, labels as text) that a template draws, so every label goes through the
//! template engine's escaping and the page needs no script. Pixel positions are the only floating
//! point here; every figure shown as text comes from exact counts and decimals.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::{format_count, format_percent};

/// CSS classes of the data series (colours in `web.css`), reused in turn.
const SERIES: [&str; 6] = [
    "series-0", "series-1", "series-2", "series-3", "series-4", "series-5",
];

/// A label and its position along an axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    pub pos: u32,
    pub label: String,
}

/// A rectangle in whole pixels: a funnel bar, a heat-map cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Referrals → qualified → won of one market, as horizontal bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelChart {
    pub market: String,
    pub width: u32,
    pub height: u32,
    pub label_width: u32,
    pub bars: Vec<FunnelBar>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelBar {
    pub label: &'static str,
    pub class: &'static str,
    pub rect: Rect,
    pub text_y: u32,
    pub value_x: u32,
    /// `1,234 (42.9%)`.
    pub value: String,
}

/// Counts of one market's funnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunnelCounts {
    pub referrals: u64,
    pub qualified: u64,
    pub won: u64,
}

/// Bars whose lengths are their share of the market's referrals.
pub fn funnel_chart(market: &str, counts: FunnelCounts) -> FunnelChart {
    const FUNNEL_LABEL: u32 = 76;
    const FUNNEL_BAR: u32 = 230;
    const FUNNEL_ROW: u32 = 28;
    const FUNNEL_BAR_HEIGHT: u32 = 20;
    let steps = [
        ("Referrals", "bar-referrals", counts.referrals),
        ("Qualified", "bar-qualified", counts.qualified),
        ("Won", "bar-won", counts.won),
    ];
    let bars = steps
        .iter()
        .enumerate()
        .map(|(i, (label, class, n))| {
            let share = ratio(*n, counts.referrals);
            let width = scaled(share, FUNNEL_BAR).max(u32::from(*n > 0));
            let y = 4 + i as u32 * FUNNEL_ROW;
            let value = if i == 0 {
                format_count(*n)
            } else {
                format!(
                    "{} ({})",
                    format_count(*n),
                    format_percent(exact_ratio(*n, counts.referrals))
                )
            };
            FunnelBar {
                label,
                class,
                rect: Rect {
                    x: FUNNEL_LABEL,
                    y,
                    width,
                    height: FUNNEL_BAR_HEIGHT,
                },
                text_y: y + 14,
                value_x: FUNNEL_LABEL + width + 6,
                value,
            }
        })
        .collect();
    FunnelChart {
        market: market.to_string(),
        width: FUNNEL_LABEL + FUNNEL_BAR + 110,
        height: 8 + steps.len() as u32 * FUNNEL_ROW,
        label_width: FUNNEL_LABEL - 8,
        bars,
    }
}

/// One line per market: conversion (won ÷ referrals) of the referrals first touched each month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineChart {
    pub width: u32,
    pub height: u32,
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub label: String,
    pub class: &'static str,
    /// The `points` of a polyline.
    pub points: String,
    pub dots: Vec<Dot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dot {
    pub x: u32,
    pub y: u32,
    /// What hovering the point shows.
    pub title: String,
}

/// Referrals and won referrals of one month (`2026-11`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonthCounts {
    pub referrals: u64,
    pub won: u64,
}

/// `months` lists every month shown, in order; `by_market` the counts each market had in them
/// (a month a market has no referrals in leaves a gap in its line's points).
pub fn conversion_chart(
    months: &[String],
    by_market: &BTreeMap<String, BTreeMap<String, MonthCounts>>,
) -> LineChart {
    const LINE_WIDTH: u32 = 760;
    const LINE_HEIGHT: u32 = 250;
    // Room on the right for the last month's label, which is centred on its point.
    let (left, right, top, bottom) = (48, LINE_WIDTH - 32, 12, LINE_HEIGHT - 28);
    let max_percent = by_market
        .values()
        .flat_map(|m| m.values())
        .map(|c| ratio(c.won, c.referrals) * 100.0)
        .fold(0.0_f64, f64::max);
    // The y axis runs to the next multiple of 10% above the highest point (at least 10%).
    let top_percent = ((max_percent / 10.0).ceil() * 10.0).clamp(10.0, 100.0);
    let x_of = |i: usize| -> u32 {
        if months.len() <= 1 {
            (left + right) / 2
        } else {
            left + ((right - left) as f64 * i as f64 / (months.len() - 1) as f64).round() as u32
        }
    };
    let y_of = |percent: f64| -> u32 {
        bottom - ((bottom - top) as f64 * (percent / top_percent).min(1.0)).round() as u32
    };
    // At most ~12 month labels, so they never overlap.
    let every = months.len().div_ceil(12).max(1);
    let x_ticks = months
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, m)| Tick {
            pos: x_of(i),
            label: m.clone(),
        })
        .collect();
    let y_ticks = (0..=4)
        .map(|k| {
            let percent = top_percent * f64::from(k) / 4.0;
            Tick {
                pos: y_of(percent),
                label: format!("{percent:.0}%"),
            }
        })
        .collect();
    let series = by_market
        .iter()
        .enumerate()
        .map(|(n, (market, counts))| {
            let dots: Vec<Dot> = months
                .iter()
                .enumerate()
                .filter_map(|(i, month)| {
                    let c = counts.get(month).filter(|c| c.referrals > 0)?;
                    Some(Dot {
                        x: x_of(i),
                        y: y_of(ratio(c.won, c.referrals) * 100.0),
                        title: format!(
                            "{market} {month}: {} of {} won ({})",
                            format_count(c.won),
                            format_count(c.referrals),
                            format_percent(exact_ratio(c.won, c.referrals))
                        ),
                    })
                })
                .collect();
            Series {
                label: market.clone(),
                class: SERIES[n % SERIES.len()],
                points: dots
                    .iter()
                    .map(|d| format!("{},{}", d.x, d.y))
                    .collect::<Vec<_>>()
                    .join(" "),
                dots,
            }
        })
        .collect();
    LineChart {
        width: LINE_WIDTH,
        height: LINE_HEIGHT,
        left,
        right,
        top,
        bottom,
        x_ticks,
        y_ticks,
        series,
    }
}

/// Referrer markets down, referee markets across; the darker a cell, the more referrals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeatMap {
    pub width: u32,
    pub height: u32,
    pub rows: Vec<Tick>,
    pub columns: Vec<Tick>,
    pub cells: Vec<HeatCell>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeatCell {
    pub rect: Rect,
    /// `fill-opacity`, 0.12–1.00; empty cells are drawn in the neutral colour instead.
    pub opacity: String,
    pub empty: bool,
    pub text_x: u32,
    pub text_y: u32,
    /// Dark text on light cells, light text on dark ones.
    pub light_text: bool,
    pub label: String,
    pub title: String,
}

/// `cells` are (referrer market, referee market, referrals, won).
pub fn heat_map(cells: &[(String, String, u64, u64)]) -> HeatMap {
    const HEAT_LABEL: u32 = 90;
    const HEAT_HEADER: u32 = 24;
    const HEAT_CELL_W: u32 = 96;
    const HEAT_CELL_H: u32 = 40;
    let mut rows: Vec<&str> = cells.iter().map(|c| c.0.as_str()).collect();
    let mut columns: Vec<&str> = cells.iter().map(|c| c.1.as_str()).collect();
    rows.sort_unstable();
    rows.dedup();
    columns.sort_unstable();
    columns.dedup();
    let max = cells.iter().map(|c| c.2).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rows.len() * columns.len());
    for (r, row) in rows.iter().enumerate() {
        for (c, column) in columns.iter().enumerate() {
            let (referrals, won) = cells
                .iter()
                .find(|cell| cell.0 == *row && cell.1 == *column)
                .map_or((0, 0), |cell| (cell.2, cell.3));
            let share = ratio(referrals, max);
            let x = HEAT_LABEL + c as u32 * HEAT_CELL_W;
            let y = HEAT_HEADER + r as u32 * HEAT_CELL_H;
            out.push(HeatCell {
                rect: Rect {
                    x,
                    y,
                    width: HEAT_CELL_W - 2,
                    height: HEAT_CELL_H - 2,
                },
                opacity: format!("{:.2}", 0.12 + 0.88 * share),
                empty: referrals == 0,
                text_x: x + (HEAT_CELL_W - 2) / 2,
                text_y: y + HEAT_CELL_H / 2 + 3,
                light_text: share > 0.5,
                label: format!("{} · {} won", format_count(referrals), format_count(won)),
                title: format!(
                    "referrers in {row} → referees in {column}: {} referrals, {} won",
                    format_count(referrals),
                    format_count(won)
                ),
            });
        }
    }
    HeatMap {
        width: HEAT_LABEL + columns.len() as u32 * HEAT_CELL_W + 4,
        height: HEAT_HEADER + rows.len() as u32 * HEAT_CELL_H + 4,
        rows: rows
            .iter()
            .enumerate()
            .map(|(r, label)| Tick {
                pos: HEAT_HEADER + r as u32 * HEAT_CELL_H + HEAT_CELL_H / 2 + 3,
                label: label.to_string(),
            })
            .collect(),
        columns: columns
            .iter()
            .enumerate()
            .map(|(c, label)| Tick {
                pos: HEAT_LABEL + c as u32 * HEAT_CELL_W + (HEAT_CELL_W - 2) / 2,
                label: label.to_string(),
            })
            .collect(),
        cells: out,
    }
}

/// `n / of` for geometry (0 when `of` is 0).
fn ratio(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

/// `n / of` exactly, for the figures printed beside the geometry.
fn exact_ratio(n: u64, of: u64) -> Option<Decimal> {
    (of > 0).then(|| Decimal::from(n) / Decimal::from(of))
}

fn scaled(share: f64, length: u32) -> u32 {
    (share.clamp(0.0, 1.0) * f64::from(length)).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn funnel_bars_are_proportional_and_labelled_exactly() {
        let chart = funnel_chart(
            "US",
            FunnelCounts {
                referrals: 1_000,
                qualified: 250,
                won: 1,
            },
        );

        let widths: Vec<u32> = chart.bars.iter().map(|b| b.rect.width).collect();
        // The referrals' bar spans the 230 px bar area; a quarter of it, rounded up, is 58.
        assert_eq!(widths, [230, 58, 1]);
        assert_eq!(chart.bars[0].value, "1,000");
        assert_eq!(chart.bars[1].value, "250 (25.0%)");
        assert_eq!(
            chart.bars[2].value, "1 (0.1%)",
            "a bar never vanishes when it counts something"
        );
        let empty = funnel_chart("RU", FunnelCounts::default());
        assert!(empty.bars.iter().all(|b| b.rect.width == 0));
    }

    #[test]
    fn conversion_lines_skip_empty_months_and_scale_to_the_highest_point() {
        let months: Vec<String> = ["2026-01", "2026-02", "2026-03"].map(String::from).to_vec();
        let mut by_market = BTreeMap::new();
        by_market.insert(
            "US".to_string(),
            BTreeMap::from([
                (
                    "2026-01".to_string(),
                    MonthCounts {
                        referrals: 10,
                        won: 3,
                    },
                ),
                (
                    "2026-03".to_string(),
                    MonthCounts {
                        referrals: 4,
                        won: 1,
                    },
                ),
            ]),
        );

        let chart = conversion_chart(&months, &by_market);

        let us = &chart.series[0];
        assert_eq!(us.dots.len(), 2, "February has no referrals");
        assert_eq!(us.dots[0].x, chart.left);
        assert_eq!(us.dots[1].x, chart.right);
        // 30% is the highest point, so the axis ends at 30% and that point is at the top.
        assert_eq!(us.dots[0].y, chart.top);
        assert_eq!(chart.y_ticks.last().unwrap().label, "30%");
        assert_eq!(us.dots[0].title, "US 2026-01: 3 of 10 won (30.0%)");
        assert_eq!(us.points.split(' ').count(), 2);
    }

    #[test]
    fn the_heat_map_has_every_pair_and_shades_by_referrals() {
        let chart = heat_map(&[
            ("US".into(), "US".into(), 900, 90),
            ("US".into(), "RU".into(), 100, 5),
            ("RU".into(), "RU".into(), 450, 40),
        ]);

        assert_eq!(chart.rows.len(), 2);
        assert_eq!(chart.columns.len(), 2);
        assert_eq!(chart.cells.len(), 4, "RU → US is shown, empty");
        let ru_us = &chart.cells[1];
        assert!(ru_us.empty);
        let us_us = chart
            .cells
            .iter()
            .find(|c| c.label.starts_with("900"))
            .unwrap();
        assert_eq!(us_us.opacity, "1.00");
        assert!(us_us.light_text);
        assert_eq!(
            us_us.title,
            "referrers in US → referees in US: 900 referrals, 90 won"
        );
    }
}

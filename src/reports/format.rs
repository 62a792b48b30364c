//! What every report shares: rounding of rates and money, the percentiles of a histogram, and
//! the CSV and terminal-table writers (CSV cells a spreadsheet would run are neutralised here,
//! once, for every report).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

pub const UNKNOWN: &str = "unknown";
pub const ALL: &str = "all";

/// How the reports' percentiles are defined; every report that shows them says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PercentileMethods {
    pub median: &'static str,
    pub p90: &'static str,
}

pub const PERCENTILE_METHODS: PercentileMethods = PercentileMethods {
    median: "the middle value; the mean of the two middle values when the count is even",
    p90: "nearest rank: the ceil(0.9 * n)-th smallest value",
};

/// A missing market, source or kind reads `unknown`.
pub fn label(value: Option<&str>) -> String {
    value.unwrap_or(UNKNOWN).to_string()
}

/// ISO codes compare case-insensitively; a blank code is unknown.
pub fn currency(value: Option<&str>) -> String {
    match value.map(str::trim) {
        Some(c) if !c.is_empty() => c.to_ascii_uppercase(),
        _ => UNKNOWN.to_string(),
    }
}

/// `d` rounded half away from zero to exactly `dp` decimals.
pub fn fixed(d: Decimal, dp: u32) -> Decimal {
    let mut d = d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    d.rescale(dp);
    d
}

/// `numerator / denominator` to 4 dp; `None` when the denominator is 0.
pub fn ratio(numerator: u64, denominator: u64) -> Option<Decimal> {
    if denominator == 0 {
        return None;
    }
    let r = Decimal::from(numerator).checked_div(Decimal::from(denominator))?;
    Some(fixed(r, 4))
}

/// Sums keep their own precision, shown with at least cents.
pub fn money(sums: BTreeMap<String, Decimal>) -> BTreeMap<String, Decimal> {
    sums.into_iter()
        .map(|(currency, mut sum)| {
            if sum.scale() < 2 {
                sum.rescale(2);
            }
            (currency, sum)
        })
        .collect()
}

/// Add `amount` to the sum of `currency`.
pub fn add_money(sums: &mut BTreeMap<String, Decimal>, currency: &str, amount: Decimal) {
    let sum = sums.entry(currency.to_string()).or_default();
    *sum = sum.saturating_add(amount);
}

/// (revenue − cost) / cost to 4 dp, per currency with both and a non-zero cost.
pub fn roi(
    revenue: &BTreeMap<String, Decimal>,
    cost: &BTreeMap<String, Decimal>,
) -> BTreeMap<String, Decimal> {
    revenue
        .iter()
        .filter_map(|(currency, revenue)| {
            let cost = cost.get(currency)?;
            let roi = (*revenue - *cost).checked_div(*cost)?;
            Some((currency.clone(), fixed(roi, 4)))
        })
        .collect()
}

/// A histogram of durations in tenths of a day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram(BTreeMap<i64, u64>);

impl Histogram {
    pub fn add(&mut self, tenths: i64, count: u64) {
        *self.0.entry(tenths).or_default() += count;
    }

    pub fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// The `rank`-th smallest value (1-based), in tenths.
    fn nth(&self, rank: u64) -> Option<i64> {
        let mut seen = 0;
        for (value, count) in &self.0 {
            seen += count;
            if seen >= rank {
                return Some(*value);
            }
        }
        None
    }

    /// The usual median, in days: the middle value, or the mean of the two middle values.
    pub fn median(&self) -> Option<Decimal> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        if n % 2 == 1 {
            return Some(Decimal::new(self.nth(n.div_ceil(2))?, 1));
        }
        let sum = self.nth(n / 2)? + self.nth(n / 2 + 1)?;
        Some(if sum % 2 == 0 {
            Decimal::new(sum / 2, 1)
        } else {
            Decimal::new(sum * 5, 2)
        })
    }

    /// The nearest-rank `percent` percentile, in days.
    pub fn nearest_rank(&self, percent: u64) -> Option<Decimal> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (percent * n).div_ceil(100).max(1);
        self.nth(rank).map(|t| Decimal::new(t, 1))
    }
}

/// 0.4286 → `42.9%`.
pub fn percent(ratio: Decimal) -> String {
    format!("{}%", fixed(ratio * Decimal::ONE_HUNDRED, 1))
}

/// An optional value for a CSV cell: empty when absent.
pub fn opt_cell<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map(T::to_string).unwrap_or_default()
}

/// Sums per currency for a CSV cell: `USD 3000.00; RUB 50000.00`.
pub fn money_cell(sums: &BTreeMap<String, Decimal>) -> String {
    sums.iter()
        .map(|(currency, v)| format!("{currency} {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// For the terminal: `-` for nothing, rates as percentages.
pub fn pct_text(value: &Option<Decimal>) -> String {
    value.map(percent).unwrap_or_else(|| "-".into())
}

pub fn opt_text<T: ToString>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map(T::to_string)
        .unwrap_or_else(|| "-".into())
}

/// Sums per currency for the terminal, as percentages when `as_percent`.
pub fn money_text(sums: &BTreeMap<String, Decimal>, as_percent: bool) -> String {
    if sums.is_empty() {
        return "-".to_string();
    }
    sums.iter()
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
}

/// A cell a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a
/// carriage return) gets a leading `'`, as OWASP recommends for CSV injection; the CSV writer
/// then quotes it where needed. Markets and sources are validated where they enter, but this is
/// the last line before a spreadsheet. No numeric cell of a report starts with one of those
/// characters (amounts are written as `USD -12.50`), so numbers are never touched.
pub fn neutralize_formula(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// A header line, then one line per row (RFC 4180 quoting where needed, CRLF line ends, formula
/// cells neutralised).
pub fn to_csv<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing to memory cannot fail, and every record has the header's length.
    out.write_record(header).expect("CSV to memory");
    for row in rows {
        out.write_record(row.iter().cloned().map(neutralize_formula))
            .expect("CSV to memory");
    }
    let bytes = out.into_inner().expect("CSV to memory");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

/// Columns sized to their widest cell; the first `text_columns` are left-aligned, the rest
/// (numbers) right-aligned; `footer` rows follow a rule.
pub fn render<const N: usize>(
    header: &[&str; N],
    body: &[[String; N]],
    footer: &[[String; N]],
    text_columns: usize,
) -> String {
    let header = header.map(String::from);
    let mut widths = [0usize; N];
    for row in std::iter::once(&header).chain(body).chain(footer) {
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
    line(&mut out, &header);
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

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn histogram(days_in_tenths: &[i64]) -> Histogram {
        let mut h = Histogram::default();
        for t in days_in_tenths {
            h.add(*t, 1);
        }
        h
    }

    #[test]
    fn the_median_is_the_usual_one() {
        // [10, 15, 20, 30]: (15 + 20) / 2 = 17.5, where nearest rank would say 15.
        let even = histogram(&[100, 150, 200, 300]);
        assert_eq!(even.median(), Some(d("17.5")));
        assert_eq!(even.nearest_rank(50), Some(d("15.0")));
        // [10.1, 30.2]: 20.15 exactly; [10.1, 30.1]: 20.1.
        assert_eq!(histogram(&[101, 302]).median(), Some(d("20.15")));
        assert_eq!(histogram(&[101, 301]).median().unwrap().to_string(), "20.1");
        // Odd counts: the middle value.
        assert_eq!(
            histogram(&[10, 20, 990]).median().unwrap().to_string(),
            "2.0"
        );
        assert_eq!(Histogram::default().median(), None);
    }

    #[test]
    fn p90_is_nearest_rank() {
        // Days 1..=10: rank ceil(0.9 * 10) = 9 → 9.0; of 11 values rank 10.
        let ten: Vec<i64> = (1..=10).map(|d| d * 10).collect();
        assert_eq!(histogram(&ten).nearest_rank(90), Some(d("9.0")));
        let eleven: Vec<i64> = (1..=11).map(|d| d * 10).collect();
        assert_eq!(histogram(&eleven).nearest_rank(90), Some(d("10.0")));
        let mut repeated = Histogram::default();
        repeated.add(5, 3);
        repeated.add(20, 1);
        assert_eq!(repeated.nearest_rank(90), Some(d("2.0")));
        assert_eq!(repeated.median(), Some(d("0.5")));
    }

    #[test]
    fn rates_round_half_away_from_zero_to_four_places() {
        assert_eq!(ratio(2, 3).unwrap().to_string(), "0.6667");
        assert_eq!(ratio(1, 8).unwrap().to_string(), "0.1250");
        assert_eq!(ratio(1, 20_000), Some(d("0.0001")), "0.00005 rounds up");
        assert_eq!(ratio(1, 0), None);
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
        let formulas = [
            "=HYPERLINK(\"http://x\")",
            "+1+1",
            "-2+3",
            "@SUM(1+1)",
            "\tcmd",
            "\rcmd",
        ];
        let rows: Vec<[String; 2]> = formulas
            .iter()
            .map(|f| [f.to_string(), "1".to_string()])
            .collect();
        let csv = to_csv(&["cell", "n"], &rows);
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        for (record, formula) in reader.records().zip(formulas) {
            assert_eq!(&record.unwrap()[0], format!("'{formula}"));
        }
        assert!(csv.contains("\"'=HYPERLINK(\"\"http://x\"\")\""), "{csv}");
    }
}

//! Referrals as a channel (SPEC §4 "Channel baseline"): referred deals next to every other deal,
//! per market and channel, and the participation rate of customers, computed from the store's
//! [`BaselineFacts`] without I/O.
//!
//! Definitions, for the deals created in the filter's period (a deal's creation is the CRM's
//! time, or when the service first heard of it):
//! - channel: `referral` for deals linked to a referral; any other deal takes the channel
//!   `[channels]` maps its CRM source value to (`other` when unmapped, `unknown` without one);
//!   `non_referred` rows add up every channel but `referral`;
//! - market: a referred deal's referral market; any other deal's by `[channels]
//!   market_by_pipeline`, else `market_by_currency`, else `unknown`;
//! - conversion: won / created; win rate from qualified: won / qualified (deals that reached
//!   `qualified` or beyond); a deal counts as won while its stage is `won`;
//! - days to won: creation → first win, in days to 1 dp, median and p90 as in the funnel;
//! - average won amount: per deal currency, the won deals' amounts / the won deals with one;
//! - revenue per customer after 12 months: customers first won in the period at least 12 months
//!   before the report; a referred customer is its referral, any other a single deal (HubSpot and
//!   Salesforce companies are not kept, so renewals cannot be tied to a non-referred customer);
//!   revenue is the customer's won new-business deals (not renewals by `[renewals]`) within 12
//!   months of the first win, plus its invoices paid in those months net of their refunds
//!   (referred customers: invoices are tied to referrals); per currency, divided by the customers
//!   with revenue in that currency;
//! - participation (as of the period's end): customers are the CRM people of won deals, each in
//!   the market of its first won deal, and the referrers the product declared customers who are
//!   no CRM customer (in their own market); participating ones have referred anyone (a person by
//!   their email).
//!
//! The market filter selects rows by market; the source filter restricts referred deals to that
//! referral source (other deals have none).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;
use serde::Serialize;

use super::format::{
    self, add_money, currency, fixed, money, money_cell, money_text, opt_cell, opt_text, pct_text,
    ratio, render, Histogram, PercentileMethods, ALL, PERCENTILE_METHODS, UNKNOWN,
};
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::store::{self, BaselineFacts, Cohort, ReferredCustomerDeals, StoreError};

/// The channel label of rows that add up every channel but `referral`.
pub const NON_REFERRED: &str = "non_referred";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Per market: `referral`, `non_referred`, then each other channel.
    pub rows: Vec<ComparisonRow>,
    /// The same over every market (market `all`).
    pub totals: Vec<ComparisonRow>,
    /// Per market, then `all`.
    pub participation: Vec<ParticipationRow>,
    pub percentiles: PercentileMethods,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    pub market: String,
    pub channel: String,
    pub deals_created: u64,
    pub deals_qualified: u64,
    pub deals_won: u64,
    /// won / created.
    pub conversion_rate: Option<Decimal>,
    /// won / qualified.
    pub win_rate_from_qualified: Option<Decimal>,
    pub median_days_to_won: Option<Decimal>,
    pub p90_days_to_won: Option<Decimal>,
    /// The won deals' amounts, per currency.
    pub won_amount: BTreeMap<String, Decimal>,
    /// won amount / won deals with an amount, per currency, to 2 dp.
    pub average_won_amount: BTreeMap<String, Decimal>,
    /// Customers first won in the period at least 12 months ago.
    pub customers_12m: u64,
    /// Their first 12 months' revenue / the customers with revenue in that currency, per
    /// currency, to 2 dp.
    pub revenue_per_customer_12m: BTreeMap<String, Decimal>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParticipationRow {
    pub market: String,
    pub customers: u64,
    /// Customers who referred at least once.
    pub referring_customers: u64,
    /// referring / customers.
    pub participation_rate: Option<Decimal>,
}

#[derive(Default)]
struct Acc {
    created: i64,
    qualified: i64,
    won: u64,
    days: Histogram,
    won_amount: BTreeMap<String, Decimal>,
    priced: BTreeMap<String, u64>,
    customers: u64,
    /// Customers with revenue in each currency.
    paying: BTreeMap<String, u64>,
    revenue_12m: BTreeMap<String, Decimal>,
}

impl Acc {
    /// The row; created and qualified deals are the rollup's counts with the corrections for
    /// deals it has not caught up with, so a negative sum means the rollup is not what the
    /// refresh wrote: an error naming the row, not 0.
    fn finish(self, market: String, channel: String) -> Result<ComparisonRow, StoreError> {
        let count = |what: &str, n: i64| {
            store::count(n).map_err(|_| {
                StoreError::Corrupt(format!(
                    "the channel baseline counts {n} {what} in market {market}, channel {channel}"
                ))
            })
        };
        let average = |sums: &BTreeMap<String, Decimal>, by: &dyn Fn(&str) -> u64| {
            sums.iter()
                .filter_map(|(currency, sum)| {
                    let n = by(currency);
                    let avg = sum.checked_div(Decimal::from(n)).filter(|_| n > 0)?;
                    Some((currency.clone(), fixed(avg, 2)))
                })
                .collect::<BTreeMap<_, _>>()
        };
        let created = count("deals created", self.created)?;
        let qualified = count("deals qualified", self.qualified)?;
        Ok(ComparisonRow {
            conversion_rate: ratio(self.won, created),
            win_rate_from_qualified: ratio(self.won, qualified),
            median_days_to_won: self.days.median(),
            p90_days_to_won: self.days.nearest_rank(90),
            average_won_amount: average(&self.won_amount, &|c| {
                self.priced.get(c).copied().unwrap_or(0)
            }),
            revenue_per_customer_12m: average(&self.revenue_12m, &|c| {
                self.paying.get(c).copied().unwrap_or(0)
            }),
            won_amount: money(self.won_amount),
            customers_12m: self.customers,
            market,
            channel,
            deals_created: created,
            deals_qualified: qualified,
            deals_won: self.won,
        })
    }
}

/// Where a cohort's deals are reported: market and channel.
fn place(settings: &Settings, cohort: &Cohort) -> (String, Channel) {
    if cohort.referred {
        return (format::label(cohort.market.as_deref()), Channel::Referral);
    }
    let market = settings
        .channels
        .market_of(cohort.pipeline.as_deref(), cohort.currency.as_deref())
        .unwrap_or_else(|| UNKNOWN.to_string());
    let channel = settings
        .channels
        .channel_of(cohort.crm, cohort.crm_source.as_deref());
    (market, channel)
}

/// Compute the comparison from the store's facts. Pure: no I/O, no clock. Counts that add up to
/// less than nothing are an error ([`StoreError::Corrupt`]).
pub fn compute(settings: &Settings, facts: &BaselineFacts) -> Result<Comparison, StoreError> {
    let filter = &facts.filter;
    let wanted = |market: &str, cohort: &Cohort| {
        filter.market.as_ref().is_none_or(|m| m == market)
            && (!cohort.referred
                || filter
                    .source
                    .as_ref()
                    .is_none_or(|s| *s == format::label(cohort.source.as_deref())))
    };
    let mut rows: BTreeMap<(String, RowChannel), Acc> = BTreeMap::new();
    let mut totals: BTreeMap<RowChannel, Acc> = BTreeMap::new();
    // Each figure goes to its market's channel row and, for other channels, its non-referred
    // row; and to the same rows of the totals.
    let mut each = |cohort: &Cohort, f: &mut dyn FnMut(&mut Acc)| {
        let (market, channel) = place(settings, cohort);
        if !wanted(&market, cohort) {
            return;
        }
        let mut targets = vec![RowChannel::of(channel)];
        if channel != Channel::Referral {
            targets.push(RowChannel::NonReferred);
        }
        for target in targets {
            f(rows.entry((market.clone(), target)).or_default());
            f(totals.entry(target).or_default());
        }
    };
    for c in &facts.cohorts {
        each(&c.cohort, &mut |acc| {
            acc.created += c.deals;
            acc.qualified += c.qualified;
        });
    }
    for w in &facts.won {
        let currency = currency(w.cohort.currency.as_deref());
        each(&w.cohort, &mut |acc| {
            acc.won += w.deals;
            for (tenths, deals) in &w.days {
                acc.days.add(*tenths, *deals);
            }
            if w.priced > 0 {
                add_money(&mut acc.won_amount, &currency, w.amount);
                *acc.priced.entry(currency.clone()).or_default() += w.priced;
            }
        });
    }
    let renewals = &settings.renewals;
    let is_renewal = |cohort: &Cohort, deal_type: &Option<String>| {
        renewals.is_renewal_of(cohort.crm, cohort.pipeline.as_deref(), deal_type.as_deref())
    };
    for g in &facts.revenue_12m.non_referred {
        // A renewal is no new customer; without a referral, it cannot be tied to one.
        if is_renewal(&g.cohort, &g.deal_type) {
            continue;
        }
        let currency = currency(g.cohort.currency.as_deref());
        each(&g.cohort, &mut |acc| {
            acc.customers += g.customers;
            *acc.paying.entry(currency.clone()).or_default() += g.customers;
            add_money(&mut acc.revenue_12m, &currency, g.amount);
        });
    }
    // A referred customer counts once, and once in each currency it paid new business in.
    // Each customer is counted where its first deal read is (the referral's market and source
    // are the same for all), then summed per cohort before the rows take them.
    let mut referred: HashMap<&str, (&ReferredCustomerDeals, BTreeMap<String, Decimal>)> =
        HashMap::new();
    for g in &facts.revenue_12m.referred_deals {
        let renewal = is_renewal(&g.cohort, &g.deal_type);
        let currency = currency(g.cohort.currency.as_deref());
        for (referral_id, amount) in &g.deals {
            let (_, revenue) = referred
                .entry(referral_id)
                .or_insert_with(|| (g, BTreeMap::new()));
            if let Some(amount) = amount.filter(|_| !renewal) {
                add_money(revenue, &currency, amount);
            }
        }
    }
    // Recurring revenue: the customers' invoices of their first 12 months, net of refunds.
    for g in &facts.revenue_12m.referred_invoices {
        let currency = currency(Some(&g.currency));
        for (referral_id, amount) in &g.payments {
            if let Some((_, revenue)) = referred.get_mut(referral_id.as_str()) {
                add_money(revenue, &currency, *amount);
            }
        }
    }
    type CustomerSums = (u64, BTreeMap<String, u64>, BTreeMap<String, Decimal>);
    let mut by_cohort: BTreeMap<Cohort, CustomerSums> = BTreeMap::new();
    for (g, revenue) in referred.into_values() {
        // A referred customer's row is its referral's: the deals' pipeline and currency do not
        // place it.
        let key = Cohort {
            pipeline: None,
            currency: None,
            crm_source: None,
            ..g.cohort.clone()
        };
        let (customers, paying, sums) = by_cohort.entry(key).or_default();
        *customers += 1;
        for (currency, amount) in revenue {
            *paying.entry(currency.clone()).or_default() += 1;
            add_money(sums, &currency, amount);
        }
    }
    for (cohort, (customers, paying, sums)) in by_cohort {
        each(&cohort, &mut |acc| {
            acc.customers += customers;
            for (currency, n) in &paying {
                *acc.paying.entry(currency.clone()).or_default() += n;
            }
            for (currency, amount) in &sums {
                add_money(&mut acc.revenue_12m, currency, *amount);
            }
        });
    }
    // Every market shows its referral and non-referred rows, even when one side is empty.
    let markets: BTreeSet<String> = rows.keys().map(|(m, _)| m.clone()).collect();
    for market in markets {
        for side in [RowChannel::Referral, RowChannel::NonReferred] {
            rows.entry((market.clone(), side)).or_default();
        }
    }
    for side in [RowChannel::Referral, RowChannel::NonReferred] {
        totals.entry(side).or_default();
    }

    Ok(Comparison {
        rows: rows
            .into_iter()
            .map(|((market, channel), acc)| acc.finish(market, channel.label()))
            .collect::<Result<_, _>>()?,
        totals: totals
            .into_iter()
            .map(|(channel, acc)| acc.finish(ALL.into(), channel.label()))
            .collect::<Result<_, _>>()?,
        participation: participation(settings, facts)?,
        percentiles: PERCENTILE_METHODS,
    })
}

/// A comparison row's channel: `referral` first, then `non_referred`, then the other channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RowChannel {
    Referral,
    NonReferred,
    Channel(Channel),
}

impl RowChannel {
    fn of(channel: Channel) -> Self {
        match channel {
            Channel::Referral => Self::Referral,
            other => Self::Channel(other),
        }
    }

    fn label(self) -> String {
        match self {
            Self::Referral => Channel::Referral.as_str().to_string(),
            Self::NonReferred => NON_REFERRED.to_string(),
            Self::Channel(c) => c.as_str().to_string(),
        }
    }
}

/// Customers and referring customers per market: the rows' counts with the corrections for people
/// the refresh has not caught up with, so a negative sum means the rows are not what the refresh
/// wrote: an error naming the market, not 0.
fn participation(
    settings: &Settings,
    facts: &BaselineFacts,
) -> Result<Vec<ParticipationRow>, StoreError> {
    let p = &facts.participation;
    let mut markets: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut add = |market: String, customers: i64, referring: i64| {
        if facts.filter.market.as_ref().is_some_and(|m| *m != market) {
            return;
        }
        for key in [market, ALL.to_string()] {
            let m = markets.entry(key).or_default();
            m.0 += customers;
            m.1 += referring;
        }
    };
    let market_of = |cohort: &Cohort| place(settings, cohort).0;
    let signed = |n: u64| {
        i64::try_from(n)
            .map_err(|_| StoreError::Corrupt(format!("{n} customers are more than a count holds")))
    };
    for (cohort, n) in &p.customers {
        add(market_of(cohort), signed(*n)?, 0);
    }
    for (cohort, n) in &p.referring {
        add(market_of(cohort), 0, signed(*n)?);
    }
    for c in &p.corrections {
        for (cohort, sign) in [(&c.before, -1), (&c.after, 1)] {
            if let Some(cohort) = cohort {
                add(market_of(cohort), sign, sign * i64::from(c.referring));
            }
        }
    }
    for (market, referred) in &p.declared {
        add(format::label(market.as_deref()), 1, i64::from(*referred));
    }
    markets.entry(ALL.to_string()).or_default();
    let mut rows: Vec<ParticipationRow> = markets
        .into_iter()
        .map(|(market, (customers, referring))| {
            let count = |what: &str, n: i64| {
                store::count(n).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "the channel baseline counts {n} {what} in market {market}"
                    ))
                })
            };
            let customers = count("customers", customers)?;
            let referring = count("referring customers", referring)?;
            Ok(ParticipationRow {
                participation_rate: ratio(referring, customers),
                market,
                customers,
                referring_customers: referring,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    // `all` last.
    rows.sort_by_key(|r| (r.market == ALL, r.market.clone()));
    Ok(rows)
}

const COLUMNS: [&str; 13] = [
    "market",
    "channel",
    "deals_created",
    "deals_qualified",
    "deals_won",
    "conversion_rate",
    "win_rate_from_qualified",
    "median_days_to_won",
    "p90_days_to_won",
    "won_amount",
    "average_won_amount",
    "customers_12m",
    "revenue_per_customer_12m",
];

fn fields(row: &ComparisonRow) -> [String; 13] {
    [
        row.market.clone(),
        row.channel.clone(),
        row.deals_created.to_string(),
        row.deals_qualified.to_string(),
        row.deals_won.to_string(),
        opt_cell(&row.conversion_rate),
        opt_cell(&row.win_rate_from_qualified),
        opt_cell(&row.median_days_to_won),
        opt_cell(&row.p90_days_to_won),
        money_cell(&row.won_amount),
        money_cell(&row.average_won_amount),
        row.customers_12m.to_string(),
        money_cell(&row.revenue_per_customer_12m),
    ]
}

/// The comparison as CSV: a header, the rows per market, then the totals.
pub fn to_csv(comparison: &Comparison) -> String {
    let rows: Vec<[String; 13]> = comparison
        .rows
        .iter()
        .chain(&comparison.totals)
        .map(fields)
        .collect();
    format::to_csv(&COLUMNS, &rows)
}

/// The comparison and the participation rates as terminal tables.
pub fn to_table(comparison: &Comparison) -> String {
    let header = [
        "Market",
        "Channel",
        "Created",
        "Qualified",
        "Won",
        "Conv.",
        "Win/qualif.",
        "Median d",
        "P90 d",
        "Won amount",
        "Avg won",
        "Customers 12m",
        "Revenue/customer 12m",
    ];
    let cells = |row: &ComparisonRow| -> [String; 13] {
        [
            row.market.clone(),
            row.channel.clone(),
            row.deals_created.to_string(),
            row.deals_qualified.to_string(),
            row.deals_won.to_string(),
            pct_text(&row.conversion_rate),
            pct_text(&row.win_rate_from_qualified),
            opt_text(&row.median_days_to_won),
            opt_text(&row.p90_days_to_won),
            money_text(&row.won_amount, false),
            money_text(&row.average_won_amount, false),
            row.customers_12m.to_string(),
            money_text(&row.revenue_per_customer_12m, false),
        ]
    };
    let body: Vec<[String; 13]> = comparison.rows.iter().map(cells).collect();
    let footer: Vec<[String; 13]> = comparison.totals.iter().map(cells).collect();
    let mut out = render(&header, &body, &footer, 2);
    let participation: Vec<[String; 4]> = comparison
        .participation
        .iter()
        .map(|p| {
            [
                p.market.clone(),
                p.customers.to_string(),
                p.referring_customers.to_string(),
                pct_text(&p.participation_rate),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&render(
        &["Market", "Customers", "Referring", "Participation"],
        &participation,
        &[],
        1,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Crm;
    use crate::store::{CohortCount, CustomerCorrection};

    fn referred_in(market: &str) -> Cohort {
        Cohort {
            crm: Crm::HubSpot,
            referred: true,
            market: Some(market.into()),
            source: Some("link".into()),
            pipeline: None,
            currency: None,
            crm_source: None,
        }
    }

    #[test]
    fn deals_that_add_up_to_less_than_nothing_are_an_error_naming_their_row() {
        let settings = Settings::shipped_defaults();
        let mut facts = BaselineFacts {
            cohorts: vec![CohortCount {
                cohort: referred_in("US"),
                deals: 2,
                qualified: 1,
            }],
            ..BaselineFacts::default()
        };
        let comparison = compute(&settings, &facts).unwrap();
        let row = comparison
            .rows
            .iter()
            .find(|r| r.market == "US" && r.channel == "referral")
            .unwrap();
        assert_eq!((row.deals_created, row.deals_qualified), (2, 1));

        // A correction taking off more deals than the rollup holds.
        facts.cohorts.push(CohortCount {
            cohort: referred_in("US"),
            deals: -3,
            qualified: 0,
        });
        let e = compute(&settings, &facts).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
        assert!(
            e.to_string()
                .contains("counts -1 deals created in market US, channel referral"),
            "{e}"
        );
    }

    #[test]
    fn customers_that_add_up_to_less_than_nothing_are_an_error_naming_their_market() {
        let settings = Settings::shipped_defaults();
        let mut facts = BaselineFacts::default();
        facts.participation.customers = vec![(referred_in("US"), 1)];
        let comparison = compute(&settings, &facts).unwrap();
        let us = comparison
            .participation
            .iter()
            .find(|p| p.market == "US")
            .unwrap();
        assert_eq!((us.customers, us.referring_customers), (1, 0));

        // Two people taken off a market whose rows count one customer.
        let gone = CustomerCorrection {
            before: Some(referred_in("US")),
            after: None,
            referring: false,
        };
        facts.participation.corrections = vec![gone.clone(), gone];
        let e = compute(&settings, &facts).unwrap_err();
        assert!(
            e.to_string().contains("counts -1 customers in market US"),
            "{e}"
        );
    }
}

//! The funnel report (SPEC §6) over a small hand-made ledger on both backends: every figure of every
//! row, the totals and the market matrix is checked against values worked out by hand below, then
//! the filters (market, source, period, partners as of the period's end).

use referral_sync::clock::{DAY, HOUR};
use referral_sync::domain::referrer::PartnerKind;
use referral_sync::domain::reward::LineKind;
use referral_sync::reports::scorecard::{self, ReferrerScorecard};
use referral_sync::reports::{self, FunnelFilter, FunnelReport, FunnelRow};
use referral_sync::store::{
    Attribution, MilestoneFill, NewReward, RecordFacts, RecordKey, Referral, ReferrerFacts, Store,
    Tx,
};
use rust_decimal::Decimal;

use crate::both_backends;
use crate::support::{test_store, Backend, T0};

both_backends!(
    funnel_figures_match_the_hand_computed_values,
    funnel_filters_by_market_source_and_period,
    referrer_scorecards_separate_volume_from_quality,
);

// The ledger, all times from T0 (first touches an hour apart, so periods can split them):
//
// Referrers  A US partner  invited −30d, joined −20d  B US customer joined −10d (imported, never
//            C US partner  invited −5d                 invited)
//            D RU creator  invited −30d, joined −25d   E RU partner  invited +100d
// → partners US 3 invited / 2 joined (0.6667), RU 2 / 1 (0.5000), all 5 / 3 (0.6000). A, B and D
//   referred in the period: active in their own markets (D, RU, also referred a US prospect).
//
// Referral  referrer source market  touch  qualified  won after        deals (won unless noted)
// a1        A        link   US      +0h    yes        10d 3h  = 10.1   HubSpot 101 USD 1000.00; 107
//                                                                      USD 9999.00 deleted (no)
// a2        A        link   US      +1h    yes        30d 3h36 = 30.15 HubSpot 102 USD 2000.00 and
//                                                     → 30.2 (half up) 109 USD 500.00
// b1        B        link   US      +2h    -          -
// b2        B        code   US      +3h    yes        45d 12h = 45.5   HubSpot 103 EUR 500.50
// b3        B        code   US      +4h    yes        -                HubSpot 104 USD 999.00 at
//                                                                      proposal (no)
// d1        D (RU)   intro  US      +5h    yes        20d = 20.0       Salesforce Opportunity 006D1
//                                                                      USD 4000.00
// d2        D        link   RU      +6h    yes        60d = 60.0       HubSpot 105 RUB 50000.00; 108
//                                                                      "lots" (not a decimal: no)
// d3        D        link   RU      +7h    -          -
// p1        (none)   pool   RU      +8h    -          -
// u1        A        (none) (none)  +9h    -          -
//
// Rewards: a1 referrer USD 100.00 eligible; a2 referrer USD 200.00 pending, referee USD 50.00
// reversed (no); b2 referrer USD 80.00 approved (the EUR deal converted); d1 referrer USD 400.00
// paid; d2 referrer RUB 5000.00 paid, referee RUB 1000.00 rejected (no).

const A_CODE: &str = "ACME-7";

/// The funnel milestones seeded here, as the reconcile step would set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Milestone {
    Qualified,
    Won,
}

struct Ledger {
    tx: Tx,
}

impl Ledger {
    async fn referrer(
        &mut self,
        code: &str,
        (market, kind): (&str, &str),
        invited: Option<i64>,
        joined: Option<i64>,
    ) {
        let facts = ReferrerFacts {
            code: code.into(),
            market: Some(market.into()),
            kind: kind.into(),
            ..Default::default()
        };
        if let Some(at) = invited {
            self.tx
                .upsert_referrer(&facts, false, at, at)
                .await
                .unwrap();
        }
        if let Some(at) = joined {
            self.tx.upsert_referrer(&facts, true, at, at).await.unwrap();
        }
    }

    async fn referral(
        &mut self,
        name: &str,
        code: Option<&str>,
        source: Option<&str>,
        market: Option<&str>,
        touch: i64,
    ) -> Referral {
        let attribution = Attribution {
            referrer_code: code.map(String::from),
            source: source.map(String::from),
            market: market.map(String::from),
            first_touch_at: touch,
        };
        let email = format!("{name}@referee.example");
        let (referral, new) = self
            .tx
            .insert_referral(&email, &attribution, touch)
            .await
            .unwrap();
        assert!(new);
        referral
    }

    async fn milestone(&mut self, r: &Referral, milestone: Milestone, at: i64) {
        let now = self
            .tx
            .referral(r.id())
            .await
            .unwrap()
            .expect("seeded referral");
        let fill = MilestoneFill {
            id: r.id().to_string(),
            qualified_at: if milestone == Milestone::Qualified {
                Some(at)
            } else {
                now.qualified_at
            },
            won_at: if milestone == Milestone::Won {
                Some(at)
            } else {
                now.won_at
            },
        };
        self.tx.set_milestones(&[fill], at).await.unwrap();
    }

    #[allow(clippy::too_many_arguments)]
    async fn deal(
        &mut self,
        crm: &str,
        object_type: &str,
        id: &str,
        r: &Referral,
        stage: &str,
        amount: &str,
        currency: &str,
        at: i64,
    ) -> RecordKey {
        let key = RecordKey {
            crm: crm.parse().unwrap(),
            object_type: object_type.into(),
            object_id: id.into(),
        };
        let tx = &mut self.tx;
        tx.upsert_record(&key, "", Some(at), None, None, at)
            .await
            .unwrap();
        tx.link_record(&key, r.id(), r.attribution(), at)
            .await
            .unwrap();
        tx.set_deal_fields(&key, Some("default"), Some(amount), Some(currency), at)
            .await
            .unwrap();
        let staged = RecordFacts {
            stage_id: Some(stage.into()),
            stage: Some(stage.into()),
            stage_at: Some(at),
            ..RecordFacts::new(&key)
        };
        tx.apply_record_facts(&[staged], at).await.unwrap();
        key
    }

    #[allow(clippy::too_many_arguments)]
    async fn reward(
        &mut self,
        deal: &RecordKey,
        beneficiary: &str,
        r: &Referral,
        market: &str,
        status: &str,
        amount: &str,
        currency: &str,
        at: i64,
    ) {
        let reward = NewReward {
            crm: deal.crm,
            deal_id: deal.object_id.clone(),
            beneficiary: beneficiary.parse().unwrap(),
            referral_id: r.id().to_string(),
            referrer_code: r.attribution().referrer_code.clone(),
            market: market.into(),
            status: status.parse().unwrap(),
            kind: "flat".into(),
            amount: amount.into(),
            currency: currency.into(),
            tier: None,
            deal_amount: None,
            deal_currency: None,
            fx_rate: None,
            calculation: "{}".into(),
            flags: "[]".into(),
            review_reason: None,
            won_at: at,
            hold_until: None,
            line_kind: LineKind::Reward,
            source_key: None,
            adjusts: None,
            payout_schedule: None,
        };
        assert!(self.tx.insert_reward(&reward, at).await.unwrap().is_some());
    }
}

async fn seed(store: &Store) {
    let mut l = Ledger {
        tx: store.begin().await.unwrap(),
    };
    let partner = |market| (market, "partner");
    l.referrer(
        A_CODE,
        partner("US"),
        Some(T0 - 30 * DAY),
        Some(T0 - 20 * DAY),
    )
    .await;
    l.referrer("B", ("US", "customer"), None, Some(T0 - 10 * DAY))
        .await;
    l.referrer("C", partner("US"), Some(T0 - 5 * DAY), None)
        .await;
    l.referrer(
        "D",
        ("RU", "creator"),
        Some(T0 - 30 * DAY),
        Some(T0 - 25 * DAY),
    )
    .await;
    l.referrer("E", partner("RU"), Some(T0 + 100 * DAY), None)
        .await;

    let (us, ru) = (Some("US"), Some("RU"));
    let (hubspot, salesforce) = ("hubspot", "salesforce");
    let q = Milestone::Qualified;

    let a1 = l.referral("a1", Some(A_CODE), Some("link"), us, T0).await;
    let won = T0 + 10 * DAY + 3 * HOUR;
    l.milestone(&a1, q, T0 + DAY).await;
    l.milestone(&a1, Milestone::Won, won).await;
    let deal = l
        .deal(hubspot, "deal", "101", &a1, "won", "1000.00", "USD", won)
        .await;
    l.reward(
        &deal, "referrer", &a1, "US", "eligible", "100.00", "USD", won,
    )
    .await;
    let deleted = l
        .deal(hubspot, "deal", "107", &a1, "won", "9999.00", "USD", won)
        .await;
    l.tx.mark_deleted(&deleted, Some(won), won).await.unwrap();

    let a2 = l
        .referral("a2", Some(A_CODE), Some("link"), us, T0 + HOUR)
        .await;
    let won = T0 + HOUR + 30 * DAY + 3 * HOUR + 36 * 60_000;
    l.milestone(&a2, q, T0 + DAY).await;
    l.milestone(&a2, Milestone::Won, won).await;
    let deal = l
        .deal(hubspot, "deal", "102", &a2, "won", "2000.00", "USD", won)
        .await;
    l.reward(
        &deal, "referrer", &a2, "US", "pending", "200.00", "USD", won,
    )
    .await;
    l.reward(&deal, "referee", &a2, "US", "reversed", "50.00", "USD", won)
        .await;
    l.deal(hubspot, "deal", "109", &a2, "won", "500.00", "USD", won)
        .await;

    l.referral("b1", Some("B"), Some("link"), us, T0 + 2 * HOUR)
        .await;

    let b2 = l
        .referral("b2", Some("B"), Some("code"), us, T0 + 3 * HOUR)
        .await;
    let won = T0 + 3 * HOUR + 45 * DAY + 12 * HOUR;
    l.milestone(&b2, q, T0 + DAY).await;
    l.milestone(&b2, Milestone::Won, won).await;
    let deal = l
        .deal(hubspot, "deal", "103", &b2, "won", "500.50", "EUR", won)
        .await;
    l.reward(
        &deal, "referrer", &b2, "US", "approved", "80.00", "USD", won,
    )
    .await;

    let b3 = l
        .referral("b3", Some("B"), Some("code"), us, T0 + 4 * HOUR)
        .await;
    l.milestone(&b3, q, T0 + DAY).await;
    l.deal(
        hubspot,
        "deal",
        "104",
        &b3,
        "proposal",
        "999.00",
        "USD",
        T0 + DAY,
    )
    .await;

    let d1 = l
        .referral("d1", Some("D"), Some("intro"), us, T0 + 5 * HOUR)
        .await;
    let won = T0 + 5 * HOUR + 20 * DAY;
    l.milestone(&d1, q, T0 + DAY).await;
    l.milestone(&d1, Milestone::Won, won).await;
    let deal = l
        .deal(
            salesforce,
            "Opportunity",
            "006D1",
            &d1,
            "won",
            "4000.00",
            "USD",
            won,
        )
        .await;
    l.reward(&deal, "referrer", &d1, "US", "paid", "400.00", "USD", won)
        .await;

    let d2 = l
        .referral("d2", Some("D"), Some("link"), ru, T0 + 6 * HOUR)
        .await;
    let won = T0 + 6 * HOUR + 60 * DAY;
    l.milestone(&d2, q, T0 + DAY).await;
    l.milestone(&d2, Milestone::Won, won).await;
    let deal = l
        .deal(hubspot, "deal", "105", &d2, "won", "50000.00", "RUB", won)
        .await;
    l.reward(&deal, "referrer", &d2, "RU", "paid", "5000.00", "RUB", won)
        .await;
    l.reward(
        &deal, "referee", &d2, "RU", "rejected", "1000.00", "RUB", won,
    )
    .await;
    l.deal(hubspot, "deal", "108", &d2, "won", "lots", "RUB", won)
        .await;

    l.referral("d3", Some("D"), Some("link"), ru, T0 + 7 * HOUR)
        .await;
    l.referral("p1", None, Some("pool"), ru, T0 + 8 * HOUR)
        .await;
    l.referral("u1", Some(A_CODE), None, None, T0 + 9 * HOUR)
        .await;
    l.tx.commit().await.unwrap();
}

/// Sums per currency as `EUR 2.00 USD 1.00`, `-` for none.
pub(crate) fn money(m: &std::collections::BTreeMap<String, Decimal>) -> String {
    if m.is_empty() {
        return "-".to_string();
    }
    let parts: Vec<String> = m.iter().map(|(c, v)| format!("{c} {v}")).collect();
    parts.join(" ")
}

/// Every figure of a row on one line: `-` for `None`, currencies as `USD 1.00 EUR 2.00`.
fn line(r: &FunnelRow) -> String {
    let opt = |v: Option<Decimal>| v.map_or("-".to_string(), |v| v.to_string());
    let count = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let map = money;
    format!(
        "{}/{}/{} | partners {} {} {} {} {} | active {} | referrals {} {} {} | rates {} {} {} \
         | days {} {} | revenue {} | cost {} | roi {} | cpa {}",
        r.market,
        r.source,
        r.referrer_kind,
        count(r.partners_invited),
        count(r.partners_joined),
        opt(r.partner_acceptance),
        count(r.partners_active),
        opt(r.partner_activation),
        r.active_referrers,
        r.referrals,
        r.qualified,
        r.won,
        opt(r.qualification_rate),
        opt(r.conversion_rate),
        opt(r.repeat_rate),
        opt(r.median_days_to_win),
        opt(r.p90_days_to_win),
        map(&r.revenue),
        map(&r.reward_cost),
        map(&r.roi),
        map(&r.cost_per_acquisition),
    )
}

fn lines(report: &FunnelReport) -> Vec<String> {
    report.rows.iter().map(line).collect()
}

/// `market/source/kind` of every row, in order.
fn keys(report: &FunnelReport) -> Vec<String> {
    report
        .rows
        .iter()
        .map(|r| format!("{}/{}/{}", r.market, r.source, r.referrer_kind))
        .collect()
}

fn matrix(report: &FunnelReport) -> Vec<(&str, &str, u64, u64)> {
    report
        .matrix
        .iter()
        .map(|c| {
            (
                c.referrer_market.as_str(),
                c.referee_market.as_str(),
                c.referrals,
                c.won,
            )
        })
        .collect()
}

async fn funnel_figures_match_the_hand_computed_values(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };
    seed(&store).await;

    let report = reports::report(&store, &FunnelFilter::default())
        .await
        .unwrap();

    assert_eq!(
        lines(&report),
        [
            // RU: d2 (won), d3, p1. Partners D (joined, active) and E (invited only). Referrer D
            // has one win here: repeat 0/1. ROI (50000 − 5000) / 5000 = 9; CPA 5000 / 1. The
            // rejected reward and the amount "lots" are out.
            "RU/all/all | partners 2 1 0.5000 1 1.0000 | active 1 | referrals 3 1 1 \
             | rates 0.3333 0.3333 0.0000 | days 60.0 60.0 | revenue RUB 50000.00 \
             | cost RUB 5000.00 | roi RUB 9.0000 | cpa RUB 5000.00",
            // RU/link: d2, d3. Source rows carry no partner figures.
            "RU/link/all | partners - - - - - | active 1 | referrals 2 1 1 \
             | rates 0.5000 0.5000 0.0000 | days 60.0 60.0 | revenue RUB 50000.00 \
             | cost RUB 5000.00 | roi RUB 9.0000 | cpa RUB 5000.00",
            // RU/pool: p1 without a referrer.
            "RU/pool/all | partners - - - - - | active 0 | referrals 1 0 0 \
             | rates 0.0000 0.0000 - | days - - | revenue - | cost - | roi - | cpa -",
            // RU creators: D and its d2, d3.
            "RU/all/creator | partners 1 1 1.0000 1 1.0000 | active 1 | referrals 2 1 1 \
             | rates 0.5000 0.5000 0.0000 | days 60.0 60.0 | revenue RUB 50000.00 \
             | cost RUB 5000.00 | roi RUB 9.0000 | cpa RUB 5000.00",
            // RU partners: E, invited only, no referrals.
            "RU/all/partner | partners 1 0 0.0000 0 - | active 0 | referrals 0 0 0 \
             | rates - - - | days - - | revenue - | cost - | roi - | cpa -",
            // p1 has no referrer, so no kind: no partners to count.
            "RU/all/unknown | partners 0 0 - 0 - | active 0 | referrals 1 0 0 \
             | rates 0.0000 0.0000 - | days - - | revenue - | cost - | roi - | cpa -",
            // US: a1 a2 b1 b2 b3 d1; 5 qualified, 4 won. Partners A, B joined and active, C
            // invited: activation 2 / 2 — D, active here from RU, counts in RU only (see the
            // matrix), though it is one of the 3 referrers with US referrals. Repeat: A 2 wins, B
            // and D 1: 1 / 3. Days 10.1 20.0 30.2 45.5: median (20.0 + 30.2) / 2 = 25.1, p90 rank
            // ceil(3.6) = 4 → 45.5. USD revenue 1000 + 2500 + 4000 = 7500, cost 100 + 200 + 80 +
            // 400 = 780: ROI 6720 / 780 = 8.6153… → 8.6154, CPA 780 / 4 = 195.
            "US/all/all | partners 3 2 0.6667 2 1.0000 | active 3 | referrals 6 5 4 \
             | rates 0.8333 0.6667 0.3333 | days 25.1 45.5 | revenue EUR 500.50 USD 7500.00 \
             | cost USD 780.00 | roi USD 8.6154 | cpa USD 195.00",
            // US/code: b2 (won, EUR deal, USD reward), b3 (qualified, deal at proposal: no
            // revenue). No currency has both revenue and cost: no ROI; CPA USD 80 / 1.
            "US/code/all | partners - - - - - | active 1 | referrals 2 2 1 \
             | rates 1.0000 0.5000 0.0000 | days 45.5 45.5 | revenue EUR 500.50 \
             | cost USD 80.00 | roi - | cpa USD 80.00",
            // US/intro: d1, a US referee of the RU creator D; a Salesforce Opportunity.
            "US/intro/all | partners - - - - - | active 1 | referrals 1 1 1 \
             | rates 1.0000 1.0000 0.0000 | days 20.0 20.0 | revenue USD 4000.00 \
             | cost USD 400.00 | roi USD 9.0000 | cpa USD 400.00",
            // US/link: a1, a2 (both won, by A: repeat 1/1), b1. Days 10.1, 30.2: median
            // (10.1 + 30.2) / 2 = 20.15, p90 rank ceil(1.8) = 2 → 30.2. Revenue 1000 + 2000 + 500
            // (the deleted 9999 is out) = 3500; cost 100 + 200 (the reversed 50 is out) = 300;
            // ROI (3500 − 300) / 300 = 10.66… → 10.6667; CPA 300 / 2.
            "US/link/all | partners - - - - - | active 2 | referrals 3 2 2 \
             | rates 0.6667 0.6667 1.0000 | days 20.15 30.2 | revenue USD 3500.00 \
             | cost USD 300.00 | roi USD 10.6667 | cpa USD 150.00",
            // US creators: none are US partners; D's d1 is here.
            "US/all/creator | partners 0 0 - 0 - | active 1 | referrals 1 1 1 \
             | rates 1.0000 1.0000 0.0000 | days 20.0 20.0 | revenue USD 4000.00 \
             | cost USD 400.00 | roi USD 9.0000 | cpa USD 400.00",
            // US customers: B, joined and active; b1 b2 b3.
            "US/all/customer | partners 1 1 1.0000 1 1.0000 | active 1 | referrals 3 2 1 \
             | rates 0.6667 0.3333 0.0000 | days 45.5 45.5 | revenue EUR 500.50 \
             | cost USD 80.00 | roi - | cpa USD 80.00",
            // US partners: A (joined, active) and C (invited); a1 a2.
            "US/all/partner | partners 2 1 0.5000 1 1.0000 | active 1 | referrals 2 2 2 \
             | rates 1.0000 1.0000 1.0000 | days 20.15 30.2 | revenue USD 3500.00 \
             | cost USD 300.00 | roi USD 10.6667 | cpa USD 150.00",
            // u1: A's referral without market or source; no partners are in market "unknown".
            "unknown/all/all | partners 0 0 - 0 - | active 1 | referrals 1 0 0 \
             | rates 0.0000 0.0000 - | days - - | revenue - | cost - | roi - | cpa -",
            "unknown/unknown/all | partners - - - - - | active 1 | referrals 1 0 0 \
             | rates 0.0000 0.0000 - | days - - | revenue - | cost - | roi - | cpa -",
            "unknown/all/partner | partners 0 0 - 0 - | active 1 | referrals 1 0 0 \
             | rates 0.0000 0.0000 - | days - - | revenue - | cost - | roi - | cpa -",
        ]
    );
    // Totals: 10 referrals, 6 qualified (0.6), 5 won (0.5); A, B, D joined and active of 3
    // joined. Wins per referrer across rows: A 2, B 1, D 2 (one US, one RU) → repeat 2 / 3.
    // Days 10.1 20.0 30.2 45.5 60.0: median 30.2, p90 rank ceil(4.5) = 5 → 60.0.
    // USD revenue 7500, cost 780: ROI 8.6154, CPA 780 / 5 = 156; RUB ROI 9, CPA 5000 / 5 = 1000;
    // EUR has revenue only.
    assert_eq!(
        line(&report.totals),
        "all/all/all | partners 5 3 0.6000 3 1.0000 | active 3 | referrals 10 6 5 \
         | rates 0.6000 0.5000 0.6667 | days 30.2 60.0 \
         | revenue EUR 500.50 RUB 50000.00 USD 7500.00 | cost RUB 5000.00 USD 780.00 \
         | roi RUB 9.0000 USD 8.6154 | cpa RUB 1000.00 USD 156.00"
    );
    // Referrer market → referee market: A and B (US) referred a1 a2 b1 b2 b3 (3 won) and u1 (no
    // market); D (RU) referred d1 in the US (won) and d2 d3 in RU (1 won); p1 has no referrer.
    assert_eq!(
        matrix(&report),
        [
            ("RU", "RU", 2, 1),
            ("RU", "US", 1, 1),
            ("US", "US", 5, 3),
            ("US", "unknown", 1, 0),
            ("unknown", "RU", 1, 0),
        ]
    );
    // No market, kind or total shows an activation above 100%.
    assert!(report
        .rows
        .iter()
        .chain([&report.totals])
        .filter_map(|r| r.partner_activation)
        .all(|a| a <= Decimal::ONE));

    let csv = reports::to_csv(&report);
    let csv_lines: Vec<&str> = csv.lines().collect();
    assert_eq!(csv_lines.len(), 1 + 16 + 1, "header, sixteen rows, totals");
    assert_eq!(
        csv_lines[10],
        "US,link,all,,,,,,2,3,2,2,0.6667,0.6667,1.0000,20.15,30.2,USD 3500.00,\
         USD 300.00,USD 10.6667,USD 150.00,"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["totals"]["revenue"]["EUR"], "500.50");
    assert_eq!(json["rows"][2]["repeat_rate"], serde_json::Value::Null);
    assert_eq!(json["rows"][1]["partners_joined"], serde_json::Value::Null);
    assert!(json["percentiles"]["p90"]
        .as_str()
        .unwrap()
        .contains("nearest rank"));
    let table = reports::to_table(&report);
    assert!(table
        .lines()
        .any(|l| l.starts_with("all ") && l.contains("66.7%")));
}

async fn funnel_filters_by_market_source_and_period(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };
    seed(&store).await;
    let report = |filter: FunnelFilter| {
        let store = store.clone();
        async move { reports::report(&store, &filter).await.unwrap() }
    };

    // US, first touch in [T0, T0 + 2h): a1 and a2; b1 (at T0 + 2h exactly) is out. Partners as of
    // T0 + 2h: A, B, C invited, A and B joined; only A referred in the period.
    let us_early = report(FunnelFilter {
        market: Some("US".into()),
        from: Some(T0),
        to: Some(T0 + 2 * HOUR),
        ..Default::default()
    })
    .await;
    let figures = "active 1 | referrals 2 2 2 | rates 1.0000 1.0000 1.0000 | days 20.15 30.2 \
                   | revenue USD 3500.00 | cost USD 300.00 | roi USD 10.6667 | cpa USD 150.00";
    assert_eq!(
        lines(&us_early),
        [
            format!("US/all/all | partners 3 2 0.6667 1 0.5000 | {figures}"),
            format!("US/link/all | partners - - - - - | {figures}"),
            "US/all/customer | partners 1 1 1.0000 0 0.0000 | active 0 | referrals 0 0 0 \
             | rates - - - | days - - | revenue - | cost - | roi - | cpa -"
                .to_string(),
            format!("US/all/partner | partners 2 1 0.5000 1 1.0000 | {figures}"),
        ]
    );
    assert_eq!(
        line(&us_early.totals).replace("all/all/all", "US/all/all"),
        line(&us_early.rows[0])
    );
    assert_eq!(matrix(&us_early), [("US", "US", 2, 2)]);

    // RU before T0 + 1d: d2, d3, p1. E is invited only at T0 + 100d, so RU has D alone.
    let ru = report(FunnelFilter {
        market: Some("RU".into()),
        to: Some(T0 + DAY),
        ..Default::default()
    })
    .await;
    let heads: Vec<String> = lines(&ru)
        .iter()
        .map(|l| l.split(" | ").take(4).collect::<Vec<_>>().join(" | "))
        .collect();
    assert_eq!(
        heads,
        [
            "RU/all/all | partners 1 1 1.0000 1 1.0000 | active 1 | referrals 3 1 1",
            "RU/link/all | partners - - - - - | active 1 | referrals 2 1 1",
            "RU/pool/all | partners - - - - - | active 0 | referrals 1 0 0",
            "RU/all/creator | partners 1 1 1.0000 1 1.0000 | active 1 | referrals 2 1 1",
            "RU/all/unknown | partners 0 0 - 0 - | active 0 | referrals 1 0 0",
        ]
    );
    assert_eq!(
        (ru.totals.partners_invited, ru.totals.referrals),
        (Some(1), 3)
    );

    // Source pool: p1 in RU. No partner referred through it: none is active. Every market still
    // shows its partners, on its market and kind rows, labelled with the source (a source row
    // would repeat the market row).
    let pool = report(FunnelFilter {
        source: Some("pool".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        keys(&pool),
        [
            "RU/pool/all",
            "RU/pool/creator",
            "RU/pool/partner",
            "RU/pool/unknown",
            "US/pool/all",
            "US/pool/customer",
            "US/pool/partner",
        ]
    );
    assert_eq!(
        line(&pool.rows[4]),
        "US/pool/all | partners 3 2 0.6667 0 0.0000 | active 0 | referrals 0 0 0 \
         | rates - - - | days - - | revenue - | cost - | roi - | cpa -"
    );
    assert_eq!(
        (pool.totals.partners_invited, pool.totals.referrals),
        (Some(5), 1)
    );
    assert_eq!(matrix(&pool), [("unknown", "RU", 1, 0)]);

    // "unknown" selects the referrals without a market (u1), and no partner has that market.
    let unknown = report(FunnelFilter {
        market: Some("unknown".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        keys(&unknown),
        [
            "unknown/all/all",
            "unknown/unknown/all",
            "unknown/all/partner"
        ]
    );
    assert_eq!(unknown.totals.partners_invited, Some(0));

    // A period with nothing in it: no referrals; the US and RU still show their partners.
    let empty = report(FunnelFilter {
        from: Some(T0 + 365 * DAY),
        ..Default::default()
    })
    .await;
    assert_eq!(empty.totals.referrals, 0);
    assert_eq!(empty.totals.conversion_rate, None);
    assert!(empty
        .rows
        .iter()
        .all(|r| r.referrals == 0 && r.source == "all"));
    assert_eq!(
        keys(&empty),
        [
            "RU/all/all",
            "RU/all/creator",
            "RU/all/partner",
            "US/all/all",
            "US/all/customer",
            "US/all/partner",
        ]
    );
    assert!(empty.matrix.is_empty());
}

/// A scorecard on one line, like [`line`].
fn card(s: &ReferrerScorecard) -> String {
    let opt = |v: Option<Decimal>| v.map_or("-".to_string(), |v| v.to_string());
    let map = money;
    format!(
        "{} {} {} | referrals {} {} {} | rates {} {} | days {} {} | revenue {} | cost {} | roi {}",
        s.referrer_code,
        s.market,
        s.referrer_kind,
        s.referrals,
        s.qualified,
        s.won,
        opt(s.qualified_rate),
        opt(s.win_rate),
        opt(s.median_days_to_win),
        opt(s.p90_days_to_win),
        map(&s.revenue),
        map(&s.reward_cost),
        map(&s.roi),
    )
}

async fn referrer_scorecards_separate_volume_from_quality(backend: Backend) {
    let Some((store, _db)) = test_store(backend).await else {
        return;
    };
    seed(&store).await;
    let facts = store.funnel_facts(&FunnelFilter::default()).await.unwrap();

    let all = scorecard::compute(&facts, None);
    let creators = scorecard::compute(&facts, Some(PartnerKind::Creator));

    let cards: Vec<String> = all.referrers.iter().map(card).collect();
    assert_eq!(
        cards,
        [
            // A: a1, a2 (won in 10.1 and 30.2 days: median 20.15), u1. Revenue 1000 + 2500,
            // cost 100 + 200: ROI 3200 / 300 = 10.6667.
            "ACME-7 US partner | referrals 3 2 2 | rates 0.6667 0.6667 | days 20.15 30.2 \
             | revenue USD 3500.00 | cost USD 300.00 | roi USD 10.6667",
            // B: b1, b2 (won, EUR deal, USD reward), b3 (qualified only): as many referrals as A,
            // half the wins.
            "B US customer | referrals 3 2 1 | rates 0.6667 0.3333 | days 45.5 45.5 \
             | revenue EUR 500.50 | cost USD 80.00 | roi -",
            // D (RU): d1 in the US (20.0 days), d2 in RU (60.0 days), d3: median 40.0.
            "D RU creator | referrals 3 2 2 | rates 0.6667 0.6667 | days 40.0 60.0 \
             | revenue RUB 50000.00 USD 4000.00 | cost RUB 5000.00 USD 400.00 \
             | roi RUB 9.0000 USD 9.0000",
        ]
    );
    assert_eq!(creators.referrers.len(), 1);
    assert_eq!(creators.referrers[0].referrer_code, "D");
    let csv = scorecard::to_csv(&all);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "header and three referrers: p1 has none");
    assert!(
        lines[2].starts_with("B,,US,customer,3,2,1,0.6667,0.3333,45.5,45.5,EUR 500.50,USD 80.00,,")
    );
}

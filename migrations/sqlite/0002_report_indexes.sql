-- Indexes for the funnel report (src/store/reports.rs), which must cover 1,000,000 referrals in
-- under a second. Never edit an applied migration: add a new file instead.

-- Referrals grouped by referrer, market and source: SQLite streams this covering index in GROUP BY
-- order instead of sorting the table.
CREATE INDEX referrals_report ON referrals (referrer_code, market, source, first_touch_at,
                                            qualified_at, won_at);
-- Won referrals only (a small share), for the days-to-win distribution.
CREATE INDEX referrals_won ON referrals (market, source, first_touch_at, won_at)
    WHERE won_at IS NOT NULL;
-- Won deals only, covering what revenue reads.
CREATE INDEX crm_records_won ON crm_records (referral_id, object_type, currency, amount, deleted_at,
                                             merged_into)
    WHERE stage = 'won';
-- Reward cost without reading the wide reward rows (calculation JSON).
CREATE INDEX rewards_cost ON rewards (referral_id, status, currency, amount);

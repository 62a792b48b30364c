-- Indexes for the funnel report (src/store/reports.rs), which must cover 1,000,000 referrals in
-- under a second. Never edit an applied migration: add a new file instead.

-- Every referral, covering what the report counts per (referrer, market, source): an index-only
-- scan reads this instead of the wide table.
CREATE INDEX referrals_report ON referrals (referrer_code, market, source, first_touch_at,
                                            qualified_at, won_at);
-- Won referrals only (a small share): days to win, and the referrals whose won deals make revenue.
CREATE INDEX referrals_won ON referrals (market, source, first_touch_at, won_at, id)
    WHERE won_at IS NOT NULL;
-- Won deals only, covering what revenue reads.
CREATE INDEX crm_records_won ON crm_records (referral_id, stage, object_type, currency, amount,
                                             deleted_at, merged_into)
    WHERE stage = 'won';
-- Reward cost without reading the wide reward rows (the calculation JSON).
CREATE INDEX rewards_cost ON rewards (referral_id, status, currency, amount);

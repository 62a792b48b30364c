-- Referrals as a channel (README "Reports"): scorecards per referrer, the channel baseline of
-- every deal, advocacy moments. Never edit an applied migration: add a new file.

-- Won referrals by referrer: days to win, revenue and reward cost per referrer and kind
-- (referrals_won, migration 0002, has no referrer).
CREATE INDEX referrals_won_by_referrer ON referrals (market, source, referrer_code,
                                                     first_touch_at, won_at, id)
    WHERE won_at IS NOT NULL;

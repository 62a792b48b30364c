-- Renewals (README "Programs and rewards") and indexes that keep reward decisions bounded. Never
-- edit an applied migration: add a new file.

-- Salesforce Opportunity.Type, so a renewal can be told from new business by configuration
-- (`[renewals]`); HubSpot renewals are told by their pipeline.
ALTER TABLE crm_records ADD COLUMN deal_type TEXT;

-- What the reward engine reads per decision stays bounded as a referrer's history grows: its
-- referrals near a first touch (velocity and shared-IP windows), and its successful referrals
-- (the tier).
CREATE INDEX referrals_by_referrer_and_time ON referrals (referrer_code, first_touch_at);
CREATE INDEX referrals_won_by_referrer ON referrals (referrer_code) WHERE won_at IS NOT NULL;

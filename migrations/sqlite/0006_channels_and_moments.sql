-- Referrals as a channel (README "Reports"): scorecards per referrer, the channel baseline of
-- every deal, advocacy moments. Never edit an applied migration: add a new file.

-- Won referrals by referrer: days to win, revenue and reward cost per referrer and kind
-- (referrals_won, migration 0002, has no referrer; referrals_won_by_referrer, 0004, only it).
CREATE INDEX referrals_won_by_market_and_referrer ON referrals (market, source, referrer_code,
                                                                first_touch_at, won_at, id)
    WHERE won_at IS NOT NULL;

-- The channel baseline: what every deal, referred or not, needs to be compared with the others.
-- Where the deal came from as the CRM says it (HubSpot hs_analytics_source, Salesforce
-- LeadSource), and the first times (CRM time) it reached qualified (or beyond), won and lost.
ALTER TABLE crm_records ADD COLUMN crm_source TEXT;
ALTER TABLE crm_records ADD COLUMN qualified_at BIGINT;
ALTER TABLE crm_records ADD COLUMN won_at BIGINT;
ALTER TABLE crm_records ADD COLUMN lost_at BIGINT;
UPDATE crm_records SET
    qualified_at = (SELECT MIN(h.occurred_at) FROM stage_history h
                    WHERE h.crm = crm_records.crm AND h.deal_id = crm_records.object_id
                      AND h.stage IN ('qualified', 'demo', 'proposal', 'negotiation', 'won')),
    won_at = (SELECT MIN(h.occurred_at) FROM stage_history h
              WHERE h.crm = crm_records.crm AND h.deal_id = crm_records.object_id
                AND h.stage = 'won'),
    lost_at = (SELECT MIN(h.occurred_at) FROM stage_history h
               WHERE h.crm = crm_records.crm AND h.deal_id = crm_records.object_id
                 AND h.stage = 'lost')
    WHERE object_type IN ('deal', 'Opportunity');

-- The rollup of deals per cohort and UTC day of creation (src/store/baseline.rs): a deal's row is
-- marked whenever it is written, and the refresh moves its count to where it belongs now.
-- Existing deals start marked, so the first refresh counts them.
ALTER TABLE crm_records ADD COLUMN baseline_dirty BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE crm_records ADD COLUMN baseline_rolled TEXT;
UPDATE crm_records SET baseline_dirty = TRUE WHERE object_type IN ('deal', 'Opportunity');
CREATE INDEX crm_records_baseline_dirty ON crm_records (crm, object_type, object_id)
    WHERE baseline_dirty;
CREATE TABLE deal_cohorts (
    cohort      TEXT   NOT NULL,                -- JSON: crm, referred, market, source, pipeline,
                                                --       currency, crm_source
    created_day BIGINT NOT NULL,                -- UTC days since 1970-01-01
    deals       BIGINT NOT NULL,
    qualified   BIGINT NOT NULL,
    PRIMARY KEY (cohort, created_day)
);
-- Deals by creation time: the partial days at a report period's edges.
CREATE INDEX crm_records_deals_by_created ON crm_records ((COALESCE(crm_created_at, created_at)))
    WHERE object_type IN ('deal', 'Opportunity');
-- Won deals (a small share), covering what the comparison reads of them, in its GROUP BY order.
CREATE INDEX crm_records_won_baseline ON crm_records (crm, (referral_id IS NULL), market, source,
    pipeline, currency, crm_source, deal_type,
    ((won_at - COALESCE(crm_created_at, created_at) + 4320000) / 8640000),
    crm_created_at, created_at, won_at, amount)
    WHERE stage = 'won' AND object_type IN ('deal', 'Opportunity') AND deleted_at IS NULL
      AND merged_into IS NULL;
-- People: since when they are a customer (their first won deal) and that deal's cohort, kept by
-- the same refresh (participation counts customers per market without walking every won deal).
ALTER TABLE crm_records ADD COLUMN customer_since BIGINT;
ALTER TABLE crm_records ADD COLUMN customer_cohort TEXT;
CREATE INDEX crm_records_customers ON crm_records (customer_cohort, customer_since)
    WHERE customer_since IS NOT NULL;
-- Referrers by email: participation (customers who referred) and advocacy moments.
CREATE INDEX referrers_by_email ON referrers (email) WHERE email IS NOT NULL;

-- Advocacy moments (src/store/moments.rs): what the product or the CRM said that makes a customer
-- worth asking for a referral now, and what the reconcile step decided about each.
CREATE TABLE advocacy_moments (
    id          INTEGER PRIMARY KEY,
    key         TEXT   NOT NULL UNIQUE,         -- event:<inbox id> | renewal:<crm>:<deal>:<email>
    email       TEXT   NOT NULL,                -- normalised
    kind        TEXT   NOT NULL,                -- nps | onboarding | usage | renewal
    occurred_at BIGINT NOT NULL,
    score       BIGINT,                         -- nps: 0-10
    milestone   TEXT,                           -- usage
    status      TEXT   NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'asked', 'skipped')),
    reason      TEXT,                           -- why it was skipped
    recorded_at BIGINT NOT NULL,
    decided_at  BIGINT
);
CREATE INDEX advocacy_moments_by_email ON advocacy_moments (email, occurred_at);
-- The asks made: one per moment that marked its contacts.
CREATE TABLE referral_asks (
    id         INTEGER PRIMARY KEY,
    moment_id  BIGINT NOT NULL UNIQUE REFERENCES advocacy_moments (id),
    email      TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    asked_at   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX referral_asks_by_email ON referral_asks (email, asked_at);
CREATE INDEX referral_asks_by_time ON referral_asks (asked_at);

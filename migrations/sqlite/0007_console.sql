-- The RevOps console and the partner portal (README "Console and partner portal"). Never edit an
-- applied migration: add a new file instead.

-- Console sessions, kept in the database so that every replica knows them and signing out ends a
-- session everywhere. The cookie holds a random token; only its SHA-256 is stored, so a copy of
-- the database opens no session. The role is not stored: each request looks up `key_hash` in
-- admin.keys, so a key removed from the configuration (or turned read-only) takes effect at once.
CREATE TABLE console_sessions (
    token_hash TEXT   PRIMARY KEY,
    key_hash   TEXT   NOT NULL,
    csrf_token TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- Conversion by month of first touch (the console's Program page): referrals per market and day,
-- read in index order with no sort, and covering the report's filters (source, period).
CREATE INDEX referrals_by_day ON referrals (market, (first_touch_at / 86400000), source,
                                            first_touch_at, won_at);

-- A partner's own rewards (the portal).
CREATE INDEX rewards_by_referrer ON rewards (referrer_code);

-- Parked and failed inbox events (the console's Deliveries page): a few rows among millions.
CREATE INDEX inbox_events_parked ON inbox_events (id) WHERE status IN ('unmapped', 'failed');

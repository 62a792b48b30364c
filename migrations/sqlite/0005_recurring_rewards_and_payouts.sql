-- Recurring rewards, clawbacks and payout statements (README "Programs and rewards"). Never edit an
-- applied migration: add a new file instead.

-- Reward lines beyond the one a won deal earns: recurring rewards (a paid invoice, a won renewal)
-- and negative adjustments (a refund, a deal lost after its hold). A deal's own line is still one
-- per (deal, beneficiary); every other line is one per (source, beneficiary). SQLite cannot drop
-- a table constraint, so the table is rebuilt with the same rows.
CREATE TABLE rewards_0005 (
    id              TEXT   PRIMARY KEY,
    crm             TEXT   NOT NULL,
    deal_id         TEXT   NOT NULL,               -- the deal the line is written to
    beneficiary     TEXT   NOT NULL CHECK (beneficiary IN ('referrer', 'referee')),
    referral_id     TEXT   NOT NULL REFERENCES referrals (id),
    referrer_code   TEXT,
    market          TEXT   NOT NULL,
    status          TEXT   NOT NULL CHECK (status IN ('pending', 'eligible', 'approved', 'paid',
                                                      'reversed', 'needs_review', 'rejected')),
    kind            TEXT   NOT NULL,               -- percent_of_deal | flat | credit | recurring | adjustment
    amount          TEXT   NOT NULL,               -- negative for adjustments
    currency        TEXT   NOT NULL,
    tier            TEXT,
    deal_amount     TEXT,
    deal_currency   TEXT,
    fx_rate         TEXT,
    calculation     TEXT   NOT NULL,               -- JSON: every input of the calculation
    flags           TEXT   NOT NULL DEFAULT '[]',  -- JSON array of fraud flags
    review_reason   TEXT,
    won_at          BIGINT NOT NULL,               -- the win, payment or clawback that made the line
    hold_until      BIGINT,
    decided_by      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    line_kind       TEXT   NOT NULL DEFAULT 'reward', -- reward | recurring | adjustment
    source_key      TEXT,                          -- NULL for a deal's own line; invoice:<id>,
                                                   -- refund:<key>, clawback:<reward id> otherwise
    adjusts         TEXT,                          -- the line an adjustment takes back
    payable_at      BIGINT,                        -- when it became payable in full
    payout_schedule TEXT                           -- JSON installments fixed when the line was made
);
INSERT INTO rewards_0005 (id, crm, deal_id, beneficiary, referral_id, referrer_code, market, status,
        kind, amount, currency, tier, deal_amount, deal_currency, fx_rate, calculation, flags,
        review_reason, won_at, hold_until, decided_by, created_at, updated_at, payable_at)
    SELECT id, crm, deal_id, beneficiary, referral_id, referrer_code, market, status, kind, amount,
        currency, tier, deal_amount, deal_currency, fx_rate, calculation, flags, review_reason,
        won_at, hold_until, decided_by, created_at, updated_at,
        CASE WHEN status IN ('eligible', 'approved', 'paid') THEN updated_at END
    FROM rewards;
DROP TABLE rewards;
ALTER TABLE rewards_0005 RENAME TO rewards;
CREATE UNIQUE INDEX rewards_one_per_deal ON rewards (crm, deal_id, beneficiary)
    WHERE source_key IS NULL;
CREATE UNIQUE INDEX rewards_one_per_source ON rewards (source_key, beneficiary)
    WHERE source_key IS NOT NULL;
CREATE INDEX rewards_by_deal ON rewards (crm, deal_id);
CREATE INDEX rewards_by_status ON rewards (status, hold_until);
CREATE INDEX rewards_by_referral ON rewards (referral_id);
CREATE INDEX rewards_by_adjusted ON rewards (adjusts) WHERE adjusts IS NOT NULL;
CREATE INDEX rewards_cost ON rewards (referral_id, status, currency, amount);

-- Paid invoices of the product's customers (`invoice.paid`), once per invoice id: a replayed event
-- changes nothing. `referral_id` is derived (the reconcile step finds the referred customer).
CREATE TABLE invoices (
    invoice_id     TEXT   PRIMARY KEY,
    email          TEXT,                           -- normalised
    crm_id         TEXT,                           -- or a CRM record: crm:object_type:object_id
    amount         TEXT   NOT NULL,
    currency       TEXT   NOT NULL,
    paid_at        BIGINT NOT NULL,
    period_start   BIGINT,
    period_end     BIGINT,
    referral_id    TEXT   REFERENCES referrals (id),
    inbox_event_id BIGINT REFERENCES inbox_events (id),
    recorded_at    BIGINT NOT NULL
);
CREATE INDEX invoices_by_email ON invoices (email) WHERE email IS NOT NULL;
CREATE INDEX invoices_by_crm_id ON invoices (crm_id) WHERE crm_id IS NOT NULL;
CREATE INDEX invoices_by_referral ON invoices (referral_id) WHERE referral_id IS NOT NULL;

-- Refunds (`invoice.refunded`), full or partial; a refund may arrive before its invoice.
CREATE TABLE invoice_refunds (
    refund_key     TEXT   PRIMARY KEY,             -- the sender's refund_id, else invoice_id@refunded_at
    invoice_id     TEXT   NOT NULL,
    amount         TEXT   NOT NULL,
    currency       TEXT   NOT NULL,
    refunded_at    BIGINT NOT NULL,
    inbox_event_id BIGINT REFERENCES inbox_events (id),
    recorded_at    BIGINT NOT NULL
);
CREATE INDEX invoice_refunds_by_invoice ON invoice_refunds (invoice_id);

-- Payout statements: one per (referrer, currency, calendar month UTC). Open ones are gathered
-- again whenever their period is read; a paid one is frozen with its transfer reference.
CREATE TABLE payouts (
    id            TEXT   PRIMARY KEY,
    period        TEXT   NOT NULL,                 -- YYYY-MM
    referrer_code TEXT   NOT NULL,
    currency      TEXT   NOT NULL,
    status        TEXT   NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid')),
    due_date      TEXT   NOT NULL,                 -- YYYY-MM-DD: end of period + payout_terms_days
    total         TEXT,                            -- frozen when paid
    reference     TEXT,
    paid_at       BIGINT,
    paid_by       TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (referrer_code, currency, period)
);
CREATE INDEX payouts_by_period ON payouts (period, status);

-- What a statement pays: a reward line whole (installment 0) or one share of its payout schedule
-- (installment 1, 2, …). A line or share is in at most one statement, whatever races.
CREATE TABLE payout_lines (
    reward_id   TEXT    NOT NULL REFERENCES rewards (id),
    installment BIGINT  NOT NULL,
    payout_id   TEXT    NOT NULL REFERENCES payouts (id),
    kind        TEXT    NOT NULL,                  -- reward | recurring | adjustment
    amount      TEXT    NOT NULL,
    payable_at  BIGINT  NOT NULL,
    PRIMARY KEY (reward_id, installment)
);
CREATE INDEX payout_lines_by_payout ON payout_lines (payout_id);

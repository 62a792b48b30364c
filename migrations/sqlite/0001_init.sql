-- referral-sync initial schema (SQLite). Times are epoch milliseconds (BIGINT); money is decimal text.
-- Never edit an applied migration: add a new file instead.

-- Every verified webhook event, stored before it is acknowledged. One row per event (batches split).
CREATE TABLE inbox_events (
    id            INTEGER PRIMARY KEY,            -- arrival order
    source        TEXT    NOT NULL,               -- hubspot | salesforce | salesforce-callout | signup:<name>
    dedupe_key    TEXT    NOT NULL,               -- sender's identity for the event
    event_type    TEXT    NOT NULL,
    object_key    TEXT,                           -- the CRM record it concerns, e.g. hubspot:deal:123
    occurred_at   BIGINT,                         -- sender's occurrence time
    received_at   BIGINT  NOT NULL,
    meta          TEXT    NOT NULL DEFAULT '{}',  -- JSON: headers that matter (never secrets)
    payload       TEXT    NOT NULL,               -- the raw event
    status        TEXT    NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'processed', 'ignored', 'unmapped', 'failed')),
    status_reason TEXT,
    attempts      BIGINT  NOT NULL DEFAULT 0,
    processed_at  BIGINT,
    UNIQUE (source, dedupe_key)
);
-- Only the work queue is indexed by status: settled events cost nothing here.
CREATE INDEX inbox_events_pending ON inbox_events (id) WHERE status = 'pending';

-- People and companies who refer (partners, customers, creators).
CREATE TABLE referrers (
    id             TEXT   PRIMARY KEY,
    code           TEXT   NOT NULL UNIQUE,
    name           TEXT,
    email          TEXT,
    company_domain TEXT,
    market         TEXT,
    kind           TEXT   NOT NULL DEFAULT 'partner' CHECK (kind IN ('customer', 'partner', 'creator')),
    status         TEXT   NOT NULL CHECK (status IN ('invited', 'joined')),
    invited_at     BIGINT,
    joined_at      BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- One referral per referee identity; its referrer/source/market/first_touch_at are the write-once
-- first touch (changed only by an audited admin override).
CREATE TABLE referrals (
    id              TEXT   PRIMARY KEY,
    email           TEXT   NOT NULL UNIQUE,       -- normalised (trimmed, lowercased)
    referee_name    TEXT,
    referee_company TEXT,
    referrer_code   TEXT,
    source          TEXT,                          -- link | code | intro | pool
    market          TEXT,
    first_touch_at  BIGINT NOT NULL,
    utm             TEXT   NOT NULL DEFAULT '{}',
    signup_ip       TEXT,
    signed_up_at    BIGINT,
    activated_at    BIGINT,
    qualified_at    BIGINT,
    won_at          BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX referrals_by_referrer ON referrals (referrer_code);
CREATE INDEX referrals_by_market_source ON referrals (market, source, first_touch_at);

-- Every attribution signal for a referral, including the ones that lost to the first touch.
CREATE TABLE touches (
    id             INTEGER PRIMARY KEY,
    referral_id    TEXT   NOT NULL REFERENCES referrals (id),
    inbox_event_id BIGINT REFERENCES inbox_events (id),
    kind           TEXT   NOT NULL,                -- referral.created | signup.created | admin_override | merge
    referrer_code  TEXT,
    source         TEXT,
    market         TEXT,
    occurred_at    BIGINT NOT NULL,
    outcome        TEXT   NOT NULL CHECK (outcome IN ('first_touch', 'kept_original', 'override')),
    recorded_at    BIGINT NOT NULL,
    UNIQUE (referral_id, inbox_event_id)
);
CREATE INDEX touches_by_referral ON touches (referral_id, id);

-- CRM records (contacts, leads, deals, opportunities) and the referral each is linked to. Deals keep a
-- frozen copy of the attribution taken when they were linked.
CREATE TABLE crm_records (
    crm               TEXT   NOT NULL CHECK (crm IN ('hubspot', 'salesforce')),
    object_type       TEXT   NOT NULL,             -- contact | deal | lead | opportunity | account
    object_id         TEXT   NOT NULL,
    account           TEXT   NOT NULL DEFAULT '',  -- HubSpot portal id / Salesforce org id
    referral_id       TEXT   REFERENCES referrals (id),
    email             TEXT,
    referrer_code     TEXT,
    source            TEXT,
    market            TEXT,
    first_touch_at    BIGINT,
    linked_at         BIGINT,
    pipeline          TEXT,
    stage_id          TEXT,
    stage             TEXT,                        -- canonical stage, NULL while unmapped
    stage_occurred_at BIGINT,
    amount            TEXT,
    currency          TEXT,
    parent_id         TEXT,                        -- Salesforce Contact.AccountId
    merged_into       TEXT,
    deleted_at        BIGINT,
    crm_created_at    BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (crm, object_type, object_id)
);
CREATE INDEX crm_records_by_referral ON crm_records (referral_id);
CREATE INDEX crm_records_by_email ON crm_records (crm, email);

-- Deal ↔ contact associations as the CRM reported them.
CREATE TABLE crm_associations (
    crm         TEXT    NOT NULL,
    deal_id     TEXT    NOT NULL,
    contact_id  TEXT    NOT NULL,
    removed     BOOLEAN NOT NULL DEFAULT FALSE,
    occurred_at BIGINT  NOT NULL,
    PRIMARY KEY (crm, deal_id, contact_id)
);
CREATE INDEX crm_associations_by_contact ON crm_associations (crm, contact_id);

-- Append-only stage history of deals, ordered by the CRM's occurrence time.
CREATE TABLE stage_history (
    id             INTEGER PRIMARY KEY,
    crm            TEXT   NOT NULL,
    deal_id        TEXT   NOT NULL,
    pipeline       TEXT,
    stage_id       TEXT   NOT NULL,
    stage          TEXT,
    occurred_at    BIGINT NOT NULL,
    recorded_at    BIGINT NOT NULL,
    inbox_event_id BIGINT REFERENCES inbox_events (id),
    UNIQUE (crm, deal_id, stage_id, occurred_at)
);
CREATE INDEX stage_history_by_deal ON stage_history (crm, deal_id, occurred_at);

-- Rewards: at most one per (deal, beneficiary), whatever is replayed.
CREATE TABLE rewards (
    id             TEXT   PRIMARY KEY,
    crm            TEXT   NOT NULL,
    deal_id        TEXT   NOT NULL,
    beneficiary    TEXT   NOT NULL CHECK (beneficiary IN ('referrer', 'referee')),
    referral_id    TEXT   NOT NULL REFERENCES referrals (id),
    referrer_code  TEXT,
    market         TEXT   NOT NULL,
    status         TEXT   NOT NULL CHECK (status IN ('pending', 'eligible', 'approved', 'paid',
                                                     'reversed', 'needs_review', 'rejected')),
    kind           TEXT   NOT NULL,                -- percent_of_deal | flat | credit
    amount         TEXT   NOT NULL,
    currency       TEXT   NOT NULL,
    tier           TEXT,
    deal_amount    TEXT,
    deal_currency  TEXT,
    fx_rate        TEXT,
    calculation    TEXT   NOT NULL,                -- JSON: every input of the calculation
    flags          TEXT   NOT NULL DEFAULT '[]',   -- JSON array of fraud flags
    review_reason  TEXT,
    won_at         BIGINT NOT NULL,
    hold_until     BIGINT,
    decided_by     TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (crm, deal_id, beneficiary)
);
CREATE INDEX rewards_by_status ON rewards (status, hold_until);
CREATE INDEX rewards_by_referral ON rewards (referral_id);

-- Writes to the CRMs, made in the same transaction as the change that caused them.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    crm             TEXT    NOT NULL,
    account         TEXT    NOT NULL DEFAULT '',
    object_type     TEXT    NOT NULL,
    object_id       TEXT    NOT NULL,
    kind            TEXT    NOT NULL,              -- update_properties | create_note | platform_event | read_*
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead', 'coalesced')),
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    locked_by       TEXT,
    locked_until    BIGINT,
    last_status     BIGINT ,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_by_record ON outbox (crm, object_type, object_id, id);

-- Who changed what, when and why: overrides, approvals, tamper restores.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    entity_type TEXT   NOT NULL,
    entity_id   TEXT   NOT NULL,
    old_value   TEXT,
    new_value   TEXT,
    reason      TEXT
);
CREATE INDEX audit_log_by_entity ON audit_log (entity_type, entity_id, id);

-- Partitioned processing (README "Processing"). Never edit an applied migration: add a new file.

-- Every event belongs to one of 64 partitions, chosen at ingest from the record (or email) it
-- concerns. SQLite has one writer, so one processor applies every partition in arrival order; the
-- column keeps the schema the same as PostgreSQL's, where processors split the partitions.
-- Existing events land in partition 0.
ALTER TABLE inbox_events ADD COLUMN partition_no INTEGER NOT NULL DEFAULT 0;

-- What the facts of a batch may have changed for the derived state (links, milestones, rewards,
-- the tamper guard): one row per email, record or observed referral-source value. The reconcile
-- step reads committed facts for each entry and brings the derived state in line, then deletes
-- the entry.
CREATE TABLE reconcile_queue (
    id          INTEGER PRIMARY KEY,
    kind        TEXT   NOT NULL,                -- a RecheckKind (src/store/reconcile.rs)
    subject     TEXT   NOT NULL,                -- a normalised email, or crm:object_type:object_id
    detail      TEXT,                           -- guard: JSON {"value", "change_source"}
    enqueued_at BIGINT NOT NULL,
    not_before  BIGINT NOT NULL DEFAULT 0,      -- retry time after a failure
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT
);
CREATE INDEX reconcile_queue_due ON reconcile_queue (not_before, id);

-- People are found by their normalised email (trimmed, lowercased), which is what is stored now.
UPDATE crm_records SET email = LOWER(TRIM(email))
    WHERE email IS NOT NULL AND email <> LOWER(TRIM(email));
DROP INDEX crm_records_by_email;
CREATE INDEX crm_records_by_email ON crm_records (email) WHERE email IS NOT NULL;
-- Salesforce accounts (a deal's people and a person's deals) and merges.
CREATE INDEX crm_records_by_parent ON crm_records (crm, parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX crm_records_by_merged_into ON crm_records (crm, merged_into)
    WHERE merged_into IS NOT NULL;

-- The outbox's pending rows by record: a delivery claim finds each record's head among them
-- (store/outbox.rs `claim_heads_sql`). Without it, PostgreSQL planned the claim as a scan of every
-- pending row per pending row whenever its statistics were taken while pending rows were rare,
-- which is when a backlog (a CRM outage, a burst) starts. Never edit an applied migration.
CREATE INDEX outbox_pending_by_record ON outbox (crm, object_type, object_id, id)
    WHERE status = 'pending';

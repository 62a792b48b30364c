-- Won deals counted ahead like created deals (SPEC §4 baseline): the comparison read every won
-- deal per report, which grew with the CRM's history. Derived state, kept exact by the baseline
-- refresh (store/baseline.rs) from what each deal's row says it was counted as.

-- Won deals per cohort and UTC day of creation: how many, how many with a decimal amount, their
-- exact sum (decimal text), and the days from creation to the first win as a histogram
-- (JSON object: tenths of a day -> deals; deals whose win time is not known are left out).
CREATE TABLE deal_wins (
    cohort      TEXT   NOT NULL,                -- as deal_cohorts.cohort
    created_day BIGINT NOT NULL,
    deals       BIGINT NOT NULL,
    priced      BIGINT NOT NULL,
    amount      TEXT   NOT NULL,
    tenths      TEXT   NOT NULL,
    PRIMARY KEY (cohort, created_day)
);
-- Non-referred won deals per cohort, deal type and UTC day of the first win: the customers of
-- revenue per customer after 12 months, and their won amounts (decimal text).
CREATE TABLE deal_acquisitions (
    cohort    TEXT   NOT NULL,                  -- JSON: the deal_cohorts fields and deal_type
    won_day   BIGINT NOT NULL,
    deals     BIGINT NOT NULL,                  -- each a customer of its own
    priced    BIGINT NOT NULL,
    amount    TEXT   NOT NULL,
    PRIMARY KEY (cohort, won_day)
);
-- Live won deals by the time of their first win: a period's partial days.
CREATE INDEX crm_records_won_at ON crm_records (won_at)
    WHERE stage = 'won' AND object_type IN ('deal', 'Opportunity') AND deleted_at IS NULL
      AND merged_into IS NULL;
-- Reports no longer walk the won deals.
DROP INDEX crm_records_won_baseline;
-- Every live won deal is counted into the new rollups by the next refreshes; until then reports
-- correct for the marked ones, as for any change.
UPDATE crm_records SET baseline_dirty = TRUE
    WHERE stage = 'won' AND object_type IN ('deal', 'Opportunity') AND deleted_at IS NULL
      AND merged_into IS NULL;

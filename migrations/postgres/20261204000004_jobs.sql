-- The durable job queue (PROTOCOL.md §6.4): archive passes, webhook deliveries.
CREATE TABLE jobs (
    -- UUIDv7: sorts by creation, the keyset of the newest-first listing
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    -- queued, running, done, dead
    state       TEXT NOT NULL,
    payload     JSONB NOT NULL,
    -- attempts started; also fences an attempt's outcome against a newer attempt
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    run_at      TIMESTAMPTZ NOT NULL,
    -- while running: when another worker may take the job up (its worker died)
    lease_until TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
-- due jobs, in run order
CREATE INDEX jobs_due ON jobs (state, run_at);

-- The durable job queue (PROTOCOL.md §6.4): archive passes, webhook deliveries.
CREATE TABLE jobs (
    -- UUIDv7: sorts by creation, the keyset of the newest-first listing
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    -- queued, running, done, dead
    state       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    -- attempts started; also fences an attempt's outcome against a newer attempt
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    run_at      TEXT NOT NULL,
    -- while running: when another worker may take the job up (its worker died)
    lease_until TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;
-- due jobs, in run order
CREATE INDEX jobs_due ON jobs (state, run_at);

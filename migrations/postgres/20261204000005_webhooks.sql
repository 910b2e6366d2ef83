-- Webhooks (PROTOCOL.md §6.4): which events of which rooms go to which URL. Deliveries are jobs
-- (`jobs`, kind `webhook`) inserted in the transaction of the change that causes them.
CREATE TABLE webhooks (
    -- UUIDv7
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    -- array of event names
    events      JSONB NOT NULL,
    -- array of room ids; NULL = every room
    rooms       JSONB,
    secret      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX webhooks_by_creator ON webhooks (created_by, id);

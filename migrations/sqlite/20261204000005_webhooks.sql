-- Webhooks (PROTOCOL.md §6.4): which events of which rooms go to which URL. Deliveries are jobs
-- (`jobs`, kind `webhook`) inserted in the transaction of the change that causes them.
CREATE TABLE webhooks (
    -- UUIDv7
    id          TEXT PRIMARY KEY NOT NULL,
    url         TEXT NOT NULL,
    -- JSON array of event names
    events      TEXT NOT NULL,
    -- JSON array of room ids; NULL = every room
    rooms       TEXT,
    secret      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX webhooks_by_creator ON webhooks (created_by, id);

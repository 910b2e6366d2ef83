-- Sensors and their readings (PROTOCOL.md §6.1).
CREATE TABLE sensors (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    private     INTEGER NOT NULL DEFAULT 0,
    owner_id    TEXT NOT NULL,
    metadata    TEXT,
    created_at  TEXT NOT NULL,
    -- the greatest ts written so far, ms since the epoch; advanced with each batch
    last_ts     INTEGER
) WITHOUT ROWID;
-- "my private sensors" when listing sensors
CREATE INDEX sensors_by_owner ON sensors (owner_id, id);

-- Clustered on (sensor, ts): a range of one sensor, its newest N and its buckets are range
-- scans of one b-tree; a second reading of a (sensor, ts) replaces the first.
CREATE TABLE readings (
    sensor      TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    value       REAL NOT NULL,
    tags        TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (sensor, ts)
) WITHOUT ROWID;
-- retention deletes by age across sensors
CREATE INDEX readings_by_ts ON readings (ts);

-- Sensors and their readings (PROTOCOL.md §6.1).
CREATE TABLE sensors (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    private     BOOLEAN NOT NULL DEFAULT FALSE,
    owner_id    TEXT NOT NULL,
    metadata    JSONB,
    created_at  TIMESTAMPTZ NOT NULL,
    -- the greatest ts written so far, ms since the epoch; advanced with each batch
    last_ts     BIGINT
);
-- "my private sensors" when listing sensors
CREATE INDEX sensors_by_owner ON sensors (owner_id, id);

-- Partitioned by day on ts (ms since the epoch): partitions `readings_dYYYYMMDD` are created
-- ahead by the maintenance task (and on demand for older days a batch reaches), and retention
-- drops whole partitions. The key (sensor, ts) serves ranges, newest N and buckets per sensor.
CREATE TABLE readings (
    sensor      TEXT NOT NULL,
    ts          BIGINT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    tags        JSONB NOT NULL DEFAULT '{}',
    PRIMARY KEY (sensor, ts)
) PARTITION BY RANGE (ts);

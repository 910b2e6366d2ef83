-- Accounts. ids are UUIDv7 (time-ordered), so "newest first" is `ORDER BY id DESC`, a keyset
-- scan of the primary key.
CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL,
    -- stored in lower case: unique and looked up as given
    email           TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    bio             TEXT NOT NULL DEFAULT '',
    role            TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    metadata        JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    -- +1 on every update: the L2 cache keeps the highest version it has seen
    version         BIGINT NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
-- usernames are unique whatever their case, and logins look them up the same way
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));
CREATE UNIQUE INDEX users_email ON users (email);

ALTER TABLE rooms ADD COLUMN metadata JSONB CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object');

-- the admin audit listing filters by actor or by target, newest first
DROP INDEX audit_log_by_target;
CREATE INDEX audit_log_by_actor ON audit_log (actor_id, id);
CREATE INDEX audit_log_by_target ON audit_log (target, id);

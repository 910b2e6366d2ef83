-- Rooms, memberships and their durable, ordered message history.
CREATE TABLE rooms (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    private     BOOLEAN NOT NULL DEFAULT FALSE,
    owner_id    TEXT NOT NULL,
    -- changes only when the history is reset (a wiped database, a room created again)
    epoch       TEXT NOT NULL,
    -- the seq of the newest committed message; the row lock taken to advance it orders writers
    -- of one room across every tsunagi process
    last_seq    BIGINT NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE room_members (
    room_id     TEXT NOT NULL REFERENCES rooms(id),
    user_id     TEXT NOT NULL,
    added_by    TEXT NOT NULL,
    added_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
-- "the private rooms I belong to" when listing rooms
CREATE INDEX room_members_by_user ON room_members (user_id, room_id);
-- "the private rooms I own" when listing rooms
CREATE INDEX rooms_by_owner ON rooms (owner_id, id);

-- The primary key (room_id, seq) serves history, sync and "newest N" as index range scans.
CREATE TABLE messages (
    room_id     TEXT NOT NULL REFERENCES rooms(id),
    seq         BIGINT NOT NULL,
    id          TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    content     TEXT NOT NULL,
    client_id   TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (room_id, seq)
);
CREATE UNIQUE INDEX messages_by_id ON messages (id);
-- idempotent retries: one message per (user, room, client_id)
CREATE UNIQUE INDEX messages_idempotency ON messages (room_id, user_id, client_id)
    WHERE client_id IS NOT NULL;

-- Who changed which room or membership, when, from what to what; written in the same transaction.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    old_value   JSONB,
    new_value   JSONB
);
CREATE INDEX audit_log_by_target ON audit_log (target, at);

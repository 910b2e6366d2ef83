-- Rooms, memberships and their durable, ordered message history.
CREATE TABLE rooms (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    private     INTEGER NOT NULL DEFAULT 0,
    owner_id    TEXT NOT NULL,
    -- changes only when the history is reset (a wiped database, a room created again)
    epoch       TEXT NOT NULL,
    -- the seq of the newest committed message; advanced in the same transaction as the insert
    last_seq    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE room_members (
    room_id     TEXT NOT NULL REFERENCES rooms(id),
    user_id     TEXT NOT NULL,
    added_by    TEXT NOT NULL,
    added_at    TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
-- "the private rooms I belong to" when listing rooms
CREATE INDEX room_members_by_user ON room_members (user_id, room_id);

-- Clustered on (room_id, seq): history, sync and "newest N" are range scans of one b-tree.
CREATE TABLE messages (
    room_id     TEXT NOT NULL REFERENCES rooms(id),
    seq         INTEGER NOT NULL,
    id          TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    content     TEXT NOT NULL,
    client_id   TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_by_id ON messages (id);
-- idempotent retries: one message per (user, room, client_id)
CREATE UNIQUE INDEX messages_idempotency ON messages (room_id, user_id, client_id)
    WHERE client_id IS NOT NULL;

-- Who changed which room or membership, when, from what to what; written in the same transaction.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    old_value   TEXT,
    new_value   TEXT
);

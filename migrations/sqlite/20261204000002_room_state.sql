-- Shared room state (PROTOCOL.md §6.2): versioned JSON documents per room and key.
CREATE TABLE room_state (
    room_id     TEXT NOT NULL REFERENCES rooms(id),
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (room_id, key)
) WITHOUT ROWID;

-- +1 with every state write of the room, in the same transaction: orders the room's `state`
-- events for every socket, whichever instance published them.
ALTER TABLE rooms ADD COLUMN state_seq INTEGER NOT NULL DEFAULT 0;

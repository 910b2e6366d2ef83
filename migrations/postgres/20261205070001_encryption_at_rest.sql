-- Encryption at rest (PROTOCOL.md §7): beside each column that may hold a sealed value, the id
-- of the key it is sealed under; NULL = plaintext (written before encryption was on). A column
-- of its own, not a marker in the text: a client's content could forge a marker. Sealed values
-- are base64 text; in the jsonb columns (state value, job payload) a JSON string of it.
-- (Nullable without a default: no table rewrite.)
ALTER TABLE messages ADD COLUMN content_key TEXT;
ALTER TABLE room_state ADD COLUMN value_key TEXT;
ALTER TABLE jobs ADD COLUMN payload_key TEXT;

-- The key ids values are stored under (hot, cold, state, jobs): registered by the first write
-- of each process, unregistered by `tsunagi rekey` once no value is left under one. The start
-- check reads this small table instead of scanning the big ones.
CREATE TABLE encryption_keys_in_use (
    key_id          TEXT PRIMARY KEY,
    registered_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

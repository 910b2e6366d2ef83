-- Hot and cold history (PROTOCOL.md §6.3): the messages with seq <= archived_seq live in cold
-- storage (another database), those above it here. Advanced by the archiver in the same
-- transaction that deletes the moved rows, after their copies are committed in cold storage:
-- a reader that reads the marker with the hot rows (one snapshot) finds every message once.
ALTER TABLE rooms ADD COLUMN archived_seq INTEGER NOT NULL DEFAULT 0;

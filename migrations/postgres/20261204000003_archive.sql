-- Hot and cold history (PROTOCOL.md §6.3): the messages with seq <= archived_seq live in cold
-- storage (an archive table partitioned by month, here or in another database), those above it
-- here. Advanced by the archiver under the room row's lock in the same transaction that deletes
-- the moved rows, after their copies are committed in cold storage: a reader that reads the
-- marker with the hot rows (one statement, one snapshot) finds every message once.
ALTER TABLE rooms ADD COLUMN archived_seq BIGINT NOT NULL DEFAULT 0;

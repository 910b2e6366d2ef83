-- When the user's role last changed (RFC 3339): tokens issued before it carry a stale role
-- claim, so the stored role wins for them. NULL: never changed, the claim stands.
ALTER TABLE users ADD COLUMN role_changed_at TEXT;

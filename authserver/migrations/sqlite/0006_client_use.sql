-- When a registered client was first looked up for an authorization or a token: a client never
-- used is deleted after `registration.unused_client_seconds`. Clients registered before this
-- column existed count as used (they may be in use; the purge must not guess).
ALTER TABLE clients ADD COLUMN last_used_at INTEGER;
UPDATE clients SET last_used_at = created_at;
CREATE INDEX IF NOT EXISTS clients_unused ON clients (created_at) WHERE last_used_at IS NULL;

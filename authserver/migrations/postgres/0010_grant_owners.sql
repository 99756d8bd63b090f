-- Whose a grant is, as columns: the admin command revokes every grant of a client or of a user
-- with an indexed query instead of reading every grant's JSON. Rows written before this
-- migration are filled in from their JSON.
ALTER TABLE codes ADD COLUMN client_id TEXT;
ALTER TABLE codes ADD COLUMN subject TEXT;
UPDATE codes SET client_id = CAST(grant_json AS jsonb) ->> 'client_id',
                 subject = CAST(grant_json AS jsonb) -> 'user' ->> 'subject';
CREATE INDEX IF NOT EXISTS codes_client ON codes (client_id);
CREATE INDEX IF NOT EXISTS codes_subject ON codes (subject);
ALTER TABLE refresh_tokens ADD COLUMN client_id TEXT;
ALTER TABLE refresh_tokens ADD COLUMN subject TEXT;
UPDATE refresh_tokens SET client_id = CAST(grant_json AS jsonb) ->> 'client_id',
                          subject = CAST(grant_json AS jsonb) -> 'user' ->> 'subject';
CREATE INDEX IF NOT EXISTS refresh_tokens_client ON refresh_tokens (client_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_subject ON refresh_tokens (subject);

-- When an administrator revoked a client. The row stays (unusable: every lookup skips it) so
-- that a second revocation is recognised as done rather than taken for a mistyped id.
ALTER TABLE clients ADD COLUMN revoked_at BIGINT;

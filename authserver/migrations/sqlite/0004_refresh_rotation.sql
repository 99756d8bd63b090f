-- Refresh rotation in one transaction, with a grace for retries and an absolute family lifetime.
-- `family_issued_at`: when the family's first refresh token was issued (the absolute lifetime
-- counts from it); families that predate this migration count from the upgrade.
ALTER TABLE refresh_tokens ADD COLUMN family_issued_at INTEGER NOT NULL DEFAULT 0;
UPDATE refresh_tokens SET family_issued_at = CAST(strftime('%s', 'now') AS INTEGER);
-- When the token was rotated, and its successor: the successor's hash, and the successor itself
-- AES-GCM sealed under a key derived from this (old) token, so that only a holder of the old
-- token can recover it during the reuse grace, and a database dump reveals nothing usable.
ALTER TABLE refresh_tokens ADD COLUMN used_at INTEGER;
ALTER TABLE refresh_tokens ADD COLUMN successor_sha256 TEXT;
ALTER TABLE refresh_tokens ADD COLUMN successor_sealed BLOB;

-- ID-JAGs (enterprise-managed authorization) already exchanged: each is good for one token
-- (RFC 7523 §3, `jti`), remembered until it expires. The key is SHA-256 of its issuer and `jti`.
CREATE TABLE IF NOT EXISTS used_assertions (
    key_sha256  TEXT PRIMARY KEY NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS used_assertions_expiry ON used_assertions (expires_at);

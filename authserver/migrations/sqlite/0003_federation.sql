-- Upstream logins between the redirect to the identity provider and its callback (single use).
CREATE TABLE IF NOT EXISTS upstream_logins (
    state_sha256   TEXT PRIMARY KEY NOT NULL,
    request_id     TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    expires_at     INTEGER NOT NULL
);

-- The upstream session behind a grant family, AES-GCM encrypted.
CREATE TABLE IF NOT EXISTS upstream_tokens (
    family_id   TEXT PRIMARY KEY NOT NULL,
    sealed      BLOB NOT NULL,
    updated_at  INTEGER NOT NULL
);

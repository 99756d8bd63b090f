-- Authorization requests waiting for consent and login, bound to the browser that started them.
CREATE TABLE IF NOT EXISTS auth_requests (
    id          TEXT PRIMARY KEY NOT NULL,
    browser_id  TEXT NOT NULL,
    params      TEXT NOT NULL,
    consented   INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL
);

-- Which browser approved which client for which scopes (consent is asked once per client).
CREATE TABLE IF NOT EXISTS consents (
    browser_id  TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (browser_id, client_id)
);

-- Authorization codes (stored hashed), single use; a replay revokes the family they started.
CREATE TABLE IF NOT EXISTS codes (
    code_sha256  TEXT PRIMARY KEY NOT NULL,
    grant_json   TEXT NOT NULL,
    family_id    TEXT NOT NULL,
    expires_at   INTEGER NOT NULL,
    used         INTEGER NOT NULL DEFAULT 0
);

-- Refresh tokens (stored hashed), rotated on every use; reuse of a rotated one revokes the family.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_sha256  TEXT PRIMARY KEY NOT NULL,
    family_id     TEXT NOT NULL,
    grant_json    TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    used          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);

-- Revoked grant families: every code and refresh token of a family dies with it.
CREATE TABLE IF NOT EXISTS revoked_families (
    family_id   TEXT PRIMARY KEY NOT NULL,
    revoked_at  INTEGER NOT NULL,
    reason      TEXT NOT NULL
);

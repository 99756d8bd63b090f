-- Registered OAuth clients (RFC 7591). Metadata is kept as the JSON the client registered.
CREATE TABLE IF NOT EXISTS clients (
    client_id      TEXT PRIMARY KEY NOT NULL,
    secret_sha256  TEXT,
    metadata       TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

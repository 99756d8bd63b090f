-- Login comes before consent now: a pending request holds who signed in (and their sealed
-- upstream session) until they approve; "consented" has no meaning any more.
ALTER TABLE auth_requests ADD COLUMN signed_in TEXT;
ALTER TABLE auth_requests DROP COLUMN consented;

-- Consent is remembered per user, client and MCP resource (it was per browser and client, so
-- approving a client for one MCP server approved it for all). Old rows name no user or resource
-- and cannot be carried over: those users are asked once more.
DROP TABLE IF EXISTS consents;
CREATE TABLE consents (
    subject     TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    resource    TEXT NOT NULL,
    scope       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (subject, client_id, resource)
);
-- "Has anyone ever approved this client?" decides whether its errors may be redirected.
CREATE INDEX consents_client ON consents (client_id);

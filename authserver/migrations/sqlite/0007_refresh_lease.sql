-- A federated refresh asks the identity provider before it claims its token; the lease keeps a
-- second request for the same token (a retry, a concurrent tab, another replica) from asking
-- the provider with the same upstream session meanwhile (a provider that rotates its refresh
-- tokens would take the second use for a replay and end the session).
ALTER TABLE refresh_tokens ADD COLUMN leased_until INTEGER;

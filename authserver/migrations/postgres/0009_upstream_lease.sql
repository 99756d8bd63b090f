-- A token exchange for a backend that trusts the identity provider asks the provider with the
-- family's upstream refresh token; the lease keeps a second exchange of the same sign-in (a
-- concurrent request, another replica) from asking with the same refresh token meanwhile (a
-- provider that rotates its refresh tokens would take the second use for a replay).
ALTER TABLE upstream_tokens ADD COLUMN leased_until BIGINT;

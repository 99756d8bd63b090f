//! The one implementation of the store over SQL, stamped out for each database: the statements
//! are written once in the dialect SQLite and PostgreSQL share (`$n` parameters, `ON CONFLICT`
//! upserts, `DELETE … RETURNING`), so the two backends cannot drift apart.

/// A refresh token's row; its grant's client and subject are columns too (for the admin command).
pub(super) const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens \
     (token_sha256, family_id, grant_json, expires_at, family_issued_at, client_id, subject) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Implements `Store` for `$store`, a struct with a sqlx `pool` of either database whose rows
/// are `$row`; `$client` and `$subject` are the database's expressions for a grant's client and
/// subject in its `grant_json` (JSON functions are the one thing the two dialects spell apart).
macro_rules! sql_store {
    ($store:ident, $row:ty, client = $client:literal, subject = $subject:literal) => {
        impl $crate::store::Store for $store {
            async fn save_client(&self, client: &StoredClient) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO clients (client_id, secret_sha256, metadata, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&client.client_id)
                    .bind(&client.secret_sha256)
                    .bind(client.metadata.to_string())
                    .bind(client.created_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn client(&self, client_id: &str) -> Result<Option<StoredClient>, StoreError> {
                let row = sqlx::query("SELECT client_id, secret_sha256, metadata, created_at, last_used_at FROM clients WHERE client_id = $1 AND revoked_at IS NULL")
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| Self::stored_client(&row)).transpose()
            }

            async fn save_request(
                &self,
                id: &str,
                browser_id: &str,
                request: &PendingRequest,
                expires_at: i64,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO auth_requests (id, browser_id, params, expires_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(browser_id)
                .bind(serde_json::to_string(request)?)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn request(&self, id: &str, now: i64) -> Result<Option<StoredRequest>, StoreError> {
                let row = sqlx::query("SELECT browser_id, params, signed_in FROM auth_requests WHERE id = $1 AND expires_at > $2")
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let params: String = row.try_get("params")?;
                let signed_in: Option<String> = row.try_get("signed_in")?;
                Ok(Some(StoredRequest {
                    browser_id: row.try_get("browser_id")?,
                    request: serde_json::from_str(&params)?,
                    signed_in: signed_in.map(|s| serde_json::from_str(&s)).transpose()?,
                }))
            }

            async fn save_sign_in(&self, id: &str, signed_in: &$crate::store::SignedIn) -> Result<(), StoreError> {
                sqlx::query("UPDATE auth_requests SET signed_in = $1 WHERE id = $2")
                    .bind(serde_json::to_string(signed_in)?)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_request(&self, id: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM auth_requests WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn consent(
                &self,
                subject: &str,
                client_id: &str,
                resource: &str,
            ) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("SELECT scope FROM consents WHERE subject = $1 AND client_id = $2 AND resource = $3")
                    .bind(subject)
                    .bind(client_id)
                    .bind(resource)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|row| row.try_get("scope")).transpose()?)
            }

            async fn save_consent(
                &self,
                subject: &str,
                client_id: &str,
                resource: &str,
                scope: &str,
                now: i64,
            ) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO consents (subject, client_id, resource, scope, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject, client_id, resource) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at")
                    .bind(subject)
                    .bind(client_id)
                    .bind(resource)
                    .bind(scope)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn save_code(
                &self,
                code_sha256: &str,
                grant: &Grant,
                family_id: &str,
                expires_at: i64,
            ) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO codes (code_sha256, grant_json, family_id, expires_at, client_id, subject) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(code_sha256)
                    .bind(serde_json::to_string(grant)?)
                    .bind(family_id)
                    .bind(expires_at)
                    .bind(&grant.client_id)
                    .bind(&grant.user.subject)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn redeem_code(&self, code_sha256: &str, now: i64) -> Result<Redeemed, StoreError> {
                self.redeem("codes", "code_sha256", code_sha256, now).await
            }

            async fn save_refresh(
                &self,
                token_sha256: &str,
                grant: &Grant,
                family_id: &str,
                expires_at: i64,
                family_issued_at: i64,
            ) -> Result<(), StoreError> {
                sqlx::query($crate::store::sql::INSERT_REFRESH)
                    .bind(token_sha256)
                    .bind(family_id)
                    .bind(serde_json::to_string(grant)?)
                    .bind(expires_at)
                    .bind(family_issued_at)
                    .bind(&grant.client_id)
                    .bind(&grant.user.subject)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn find_refresh(
                &self,
                token_sha256: &str,
                now: i64,
            ) -> Result<Option<$crate::oauth::token::StoredRefresh>, StoreError> {
                let row = sqlx::query(
                    "SELECT r.grant_json, r.family_id, r.expires_at, r.family_issued_at, r.used, r.used_at, \
                     r.successor_sealed, s.grant_json AS successor_grant, s.used AS successor_used, \
                     s.expires_at AS successor_expires_at, \
                     (SELECT COUNT(*) FROM revoked_families f WHERE f.family_id = r.family_id) AS revoked \
                     FROM refresh_tokens r LEFT JOIN refresh_tokens s ON s.token_sha256 = r.successor_sha256 \
                     WHERE r.token_sha256 = $1",
                )
                .bind(token_sha256)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let used = row.try_get::<i64, _>("used")? != 0;
                let successor_grant: Option<String> = row.try_get("successor_grant")?;
                let successor_sealed: Option<Vec<u8>> = row.try_get("successor_sealed")?;
                let successor = match (successor_grant, successor_sealed) {
                    (Some(grant), Some(sealed)) => Some($crate::oauth::token::Successor {
                        grant: serde_json::from_str(&grant)?,
                        sealed,
                        live: row.try_get::<Option<i64>, _>("successor_used")? == Some(0)
                            && row.try_get::<Option<i64>, _>("successor_expires_at")?.is_some_and(|at| at > now),
                    }),
                    _ => None,
                };
                Ok(Some($crate::oauth::token::StoredRefresh {
                    grant: serde_json::from_str(&row.try_get::<String, _>("grant_json")?)?,
                    family_id: row.try_get("family_id")?,
                    expires_at: row.try_get("expires_at")?,
                    family_issued_at: row.try_get("family_issued_at")?,
                    family_revoked: row.try_get::<i64, _>("revoked")? != 0,
                    // Rotated before rotation times were kept: long ago, past any grace.
                    used_at: used.then(|| row.try_get::<Option<i64>, _>("used_at")).transpose()?.map(Option::unwrap_or_default),
                    successor,
                }))
            }

            async fn lease_refresh(
                &self,
                token_sha256: &str,
                now: i64,
                until: i64,
            ) -> Result<bool, StoreError> {
                // One conditional UPDATE: of two requests (or replicas), one takes the lease.
                let taken = sqlx::query(
                    "UPDATE refresh_tokens SET leased_until = $3 \
                     WHERE token_sha256 = $1 AND used = 0 AND (leased_until IS NULL OR leased_until <= $2)",
                )
                .bind(token_sha256)
                .bind(now)
                .bind(until)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(taken == 1)
            }

            async fn release_refresh_lease(&self, token_sha256: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE refresh_tokens SET leased_until = NULL WHERE token_sha256 = $1")
                    .bind(token_sha256)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn rotate_refresh(
                &self,
                old_sha256: &str,
                rotation: &$crate::store::Rotation<'_>,
                now: i64,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                // One conditional UPDATE: of two requests (or replicas), one claims the token.
                let claimed = sqlx::query(
                    "UPDATE refresh_tokens SET used = 1, used_at = $2, successor_sha256 = $3, successor_sealed = $4 \
                     WHERE token_sha256 = $1 AND used = 0 AND expires_at > $2 \
                     AND family_id NOT IN (SELECT family_id FROM revoked_families)",
                )
                .bind(old_sha256)
                .bind(now)
                .bind(rotation.successor_sha256)
                .bind(rotation.successor_sealed)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !claimed {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query($crate::store::sql::INSERT_REFRESH)
                    .bind(rotation.successor_sha256)
                    .bind(rotation.family_id)
                    .bind(serde_json::to_string(rotation.grant)?)
                    .bind(rotation.expires_at)
                    .bind(rotation.family_issued_at)
                    .bind(&rotation.grant.client_id)
                    .bind(&rotation.grant.user.subject)
                    .execute(&mut *tx)
                    .await?;
                if let Some(sealed) = rotation.upstream_sealed {
                    sqlx::query("INSERT INTO upstream_tokens (family_id, sealed, updated_at) VALUES ($1, $2, $3) ON CONFLICT (family_id) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at")
                        .bind(rotation.family_id)
                        .bind(sealed)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn refresh_family(
                &self,
                token_sha256: &str,
            ) -> Result<Option<(String, String)>, StoreError> {
                let row =
                    sqlx::query("SELECT family_id, grant_json FROM refresh_tokens WHERE token_sha256 = $1")
                        .bind(token_sha256)
                        .fetch_optional(&self.pool)
                        .await?;
                let Some(row) = row else { return Ok(None) };
                let grant: Grant = serde_json::from_str(&row.try_get::<String, _>("grant_json")?)?;
                Ok(Some((row.try_get("family_id")?, grant.client_id)))
            }

            async fn revoke_family(
                &self,
                family_id: &str,
                reason: &str,
                now: i64,
            ) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO revoked_families (family_id, revoked_at, reason) VALUES ($1, $2, $3) ON CONFLICT (family_id) DO NOTHING")
                    .bind(family_id)
                    .bind(now)
                    .bind(reason)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn save_upstream_login(
                &self,
                state_sha256: &str,
                login: &UpstreamLogin,
                expires_at: i64,
            ) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO upstream_logins (state_sha256, request_id, nonce, pkce_verifier, expires_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(state_sha256)
                    .bind(&login.request_id)
                    .bind(&login.nonce)
                    .bind(&login.pkce_verifier)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn take_upstream_login(
                &self,
                state_sha256: &str,
                now: i64,
            ) -> Result<Option<UpstreamLogin>, StoreError> {
                let row = sqlx::query(
                    "DELETE FROM upstream_logins WHERE state_sha256 = $1 RETURNING request_id, nonce, pkce_verifier, expires_at",
                )
                .bind(state_sha256)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                if row.try_get::<i64, _>("expires_at")? <= now {
                    return Ok(None);
                }
                Ok(Some(UpstreamLogin {
                    request_id: row.try_get("request_id")?,
                    nonce: row.try_get("nonce")?,
                    pkce_verifier: row.try_get("pkce_verifier")?,
                }))
            }

            async fn save_upstream_tokens(
                &self,
                family_id: &str,
                sealed: &[u8],
                now: i64,
            ) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO upstream_tokens (family_id, sealed, updated_at) VALUES ($1, $2, $3) ON CONFLICT (family_id) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at")
                    .bind(family_id)
                    .bind(sealed)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn upstream_tokens(&self, family_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query("SELECT sealed FROM upstream_tokens WHERE family_id = $1")
                    .bind(family_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|row| row.try_get("sealed")).transpose()?)
            }

            async fn use_assertion(&self, key_sha256: &str, expires_at: i64, now: i64) -> Result<bool, StoreError> {
                // A record already dead (not yet purged) gives way; a live one is a replay.
                let stored = sqlx::query("INSERT INTO used_assertions (key_sha256, expires_at) VALUES ($1, $2) ON CONFLICT (key_sha256) DO UPDATE SET expires_at = excluded.expires_at WHERE used_assertions.expires_at <= $3")
                    .bind(key_sha256)
                    .bind(expires_at)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(stored == 1)
            }

            async fn family_revoked(&self, family_id: &str) -> Result<bool, StoreError> {
                let row = sqlx::query("SELECT 1 AS revoked FROM revoked_families WHERE family_id = $1")
                    .bind(family_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn lease_upstream(
                &self,
                family_id: &str,
                now: i64,
                until: i64,
            ) -> Result<bool, StoreError> {
                // One conditional UPDATE: of two requests (or replicas), one takes the lease.
                let taken = sqlx::query(
                    "UPDATE upstream_tokens SET leased_until = $3 \
                     WHERE family_id = $1 AND (leased_until IS NULL OR leased_until <= $2)",
                )
                .bind(family_id)
                .bind(now)
                .bind(until)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(taken == 1)
            }

            async fn save_leased_upstream(
                &self,
                family_id: &str,
                sealed: &[u8],
                now: i64,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE upstream_tokens SET sealed = $2, updated_at = $3, leased_until = NULL WHERE family_id = $1")
                    .bind(family_id)
                    .bind(sealed)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn release_upstream_lease(&self, family_id: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE upstream_tokens SET leased_until = NULL WHERE family_id = $1")
                    .bind(family_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn put_client(&self, client: &StoredClient) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO clients (client_id, secret_sha256, metadata, created_at, last_used_at) VALUES ($1, $2, $3, $4, $4) \
                     ON CONFLICT (client_id) DO UPDATE SET secret_sha256 = excluded.secret_sha256, metadata = excluded.metadata, \
                     last_used_at = excluded.last_used_at",
                )
                .bind(&client.client_id)
                .bind(&client.secret_sha256)
                .bind(client.metadata.to_string())
                .bind(client.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }

        impl $store {
            fn stored_client(row: &$row) -> Result<StoredClient, StoreError> {
                let metadata: String = row.try_get("metadata")?;
                Ok(StoredClient {
                    client_id: row.try_get("client_id")?,
                    secret_sha256: row.try_get("secret_sha256")?,
                    metadata: serde_json::from_str(&metadata)?,
                    created_at: row.try_get("created_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                })
            }

            /// Marks a single-use credential used in one statement (so two replicas or two requests
            /// cannot both redeem it), then tells what was found.
            async fn redeem(
                &self,
                table: &str,
                key: &str,
                hash: &str,
                now: i64,
            ) -> Result<Redeemed, StoreError> {
                let claimed = sqlx::query(&format!(
                    "UPDATE {table} SET used = 1 WHERE {key} = $1 AND used = 0 AND expires_at > $2 \
                     AND family_id NOT IN (SELECT family_id FROM revoked_families)"
                ))
                .bind(hash)
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected()
                    == 1;
                let row = sqlx::query(&format!(
                    "SELECT grant_json, family_id, used FROM {table} WHERE {key} = $1"
                ))
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else {
                    return Ok(Redeemed::Invalid);
                };
                let family_id: String = row.try_get("family_id")?;
                if claimed {
                    let grant: Grant = serde_json::from_str(&row.try_get::<String, _>("grant_json")?)?;
                    return Ok(Redeemed::Fresh {
                        grant: Box::new(grant),
                        family_id,
                    });
                }
                let used: i64 = row.try_get("used")?;
                Ok(if used != 0 {
                    Redeemed::Replayed { family_id }
                } else {
                    Redeemed::Invalid
                })
            }
        }

        impl $crate::store::Administration for $store {
            async fn fill_owners(&self) -> Result<u64, StoreError> {
                let mut filled = 0;
                for statement in [
                    concat!("UPDATE codes SET client_id = ", $client, ", subject = ", $subject, " WHERE client_id IS NULL OR subject IS NULL"),
                    concat!("UPDATE refresh_tokens SET client_id = ", $client, ", subject = ", $subject, " WHERE client_id IS NULL OR subject IS NULL"),
                ] {
                    filled += sqlx::query(statement).execute(&self.pool).await?.rows_affected();
                }
                Ok(filled)
            }

            async fn clients(&self) -> Result<Vec<$crate::store::ListedClient>, StoreError> {
                let rows = sqlx::query(
                    "SELECT client_id, secret_sha256, metadata, created_at, last_used_at, revoked_at \
                     FROM clients ORDER BY created_at, client_id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::store::ListedClient {
                            client: Self::stored_client(row)?,
                            revoked_at: row.try_get("revoked_at")?,
                        })
                    })
                    .collect()
            }

            async fn revoke_client(
                &self,
                client_id: &str,
                now: i64,
            ) -> Result<$crate::store::ClientState, StoreError> {
                let revoked = sqlx::query(
                    "UPDATE clients SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL",
                )
                .bind(client_id)
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if revoked == 1 {
                    return Ok($crate::store::ClientState::RevokedNow);
                }
                let before = sqlx::query("SELECT revoked_at FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match before.map(|row| row.try_get::<Option<i64>, _>("revoked_at")).transpose()?.flatten() {
                    Some(at) => $crate::store::ClientState::RevokedBefore(at),
                    None => $crate::store::ClientState::Unknown,
                })
            }

            async fn live_families(
                &self,
                owner: $crate::store::Owner<'_>,
                now: i64,
            ) -> Result<Vec<$crate::store::LiveFamily>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT r.family_id, r.client_id, r.subject, r.grant_json, r.family_issued_at, r.expires_at, \
                     (SELECT MAX(p.used_at) FROM refresh_tokens p WHERE p.family_id = r.family_id) AS refreshed_at \
                     FROM refresh_tokens r WHERE r.{column} = $1 AND r.used = 0 AND r.expires_at > $2 \
                     AND r.family_id NOT IN (SELECT family_id FROM revoked_families) \
                     ORDER BY r.family_issued_at, r.family_id",
                    column = owner.column(),
                ))
                .bind(owner.id())
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let grant: Grant = serde_json::from_str(&row.try_get::<String, _>("grant_json")?)?;
                        Ok($crate::store::LiveFamily {
                            family_id: row.try_get("family_id")?,
                            client_id: grant.client_id,
                            subject: grant.user.subject,
                            resource: grant.resource,
                            scope: grant.scope,
                            signed_in_at: row.try_get("family_issued_at")?,
                            refreshed_at: row.try_get("refreshed_at")?,
                            expires_at: row.try_get("expires_at")?,
                        })
                    })
                    .collect()
            }

            async fn revoke_families(
                &self,
                owner: $crate::store::Owner<'_>,
                reason: &str,
                now: i64,
            ) -> Result<u64, StoreError> {
                // One statement: a family rotated or signed in meanwhile is either seen here or
                // started after the revocation; an unused code's family is revoked with the rest,
                // so the code cannot start a refresh family later.
                let revoked = sqlx::query(&format!(
                    "INSERT INTO revoked_families (family_id, revoked_at, reason) \
                     SELECT family_id, $2, $3 FROM refresh_tokens WHERE {column} = $1 AND used = 0 AND expires_at > $2 \
                     UNION SELECT family_id, $2, $3 FROM codes WHERE {column} = $1 AND used = 0 AND expires_at > $2 \
                     ON CONFLICT (family_id) DO NOTHING",
                    column = owner.column(),
                ))
                .bind(owner.id())
                .bind(now)
                .bind(reason)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(revoked)
            }

            async fn consents(
                &self,
                owner: $crate::store::Owner<'_>,
            ) -> Result<Vec<$crate::store::StoredConsent>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT subject, client_id, resource, scope, created_at FROM consents \
                     WHERE {column} = $1 ORDER BY created_at, client_id, resource",
                    column = owner.column(),
                ))
                .bind(owner.id())
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::store::StoredConsent {
                            subject: row.try_get("subject")?,
                            client_id: row.try_get("client_id")?,
                            resource: row.try_get("resource")?,
                            scope: row.try_get("scope")?,
                            approved_at: row.try_get("created_at")?,
                        })
                    })
                    .collect()
            }

            async fn delete_consents(&self, owner: $crate::store::Owner<'_>) -> Result<u64, StoreError> {
                let deleted = sqlx::query(&format!(
                    "DELETE FROM consents WHERE {column} = $1",
                    column = owner.column(),
                ))
                .bind(owner.id())
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(deleted)
            }
        }

        impl $crate::store::Housekeeping for $store {
            async fn purge(
                &self,
                cutoffs: $crate::store::PurgeCutoffs,
            ) -> Result<$crate::store::Purged, StoreError> {
                // One short statement per table (no long write lock); the order matters: tokens
                // before the upstream sessions and revocations that outlive them.
                let statements: [(&str, i64); 9] = [
                    ("DELETE FROM auth_requests WHERE expires_at <= $1", cutoffs.now),
                    ("DELETE FROM upstream_logins WHERE expires_at <= $1", cutoffs.now),
                    ("DELETE FROM used_assertions WHERE expires_at <= $1", cutoffs.now),
                    ("DELETE FROM codes WHERE expires_at <= $1", cutoffs.dead_before),
                    (
                        "DELETE FROM refresh_tokens WHERE family_id IN \
                         (SELECT family_id FROM refresh_tokens GROUP BY family_id HAVING MAX(expires_at) <= $1) \
                         OR family_id IN (SELECT family_id FROM revoked_families WHERE revoked_at <= $1)",
                        cutoffs.dead_before,
                    ),
                    (
                        "DELETE FROM upstream_tokens WHERE family_id IN (SELECT family_id FROM revoked_families) \
                         OR (updated_at <= $1 AND family_id NOT IN (SELECT family_id FROM refresh_tokens))",
                        cutoffs.dead_before,
                    ),
                    (
                        "DELETE FROM revoked_families WHERE revoked_at <= $1 \
                         AND family_id NOT IN (SELECT family_id FROM refresh_tokens) \
                         AND family_id NOT IN (SELECT family_id FROM codes)",
                        cutoffs.dead_before,
                    ),
                    (
                        "DELETE FROM clients WHERE last_used_at IS NULL AND created_at <= $1",
                        cutoffs.unused_clients_before,
                    ),
                    (
                        "DELETE FROM consents WHERE created_at <= $1 \
                         AND client_id NOT IN (SELECT client_id FROM clients WHERE revoked_at IS NULL) \
                         AND client_id NOT LIKE 'https://%' AND client_id NOT LIKE 'http://%'",
                        cutoffs.now,
                    ),
                ];
                let mut counts = [0u64; 9];
                for ((statement, cutoff), count) in statements.iter().zip(counts.iter_mut()) {
                    *count = sqlx::query(statement)
                        .bind(cutoff)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                }
                let [auth_requests, upstream_logins, used_assertions, codes, refresh_tokens, upstream_tokens, revoked_families, clients, consents] =
                    counts;
                Ok($crate::store::Purged {
                    auth_requests,
                    upstream_logins,
                    used_assertions,
                    codes,
                    refresh_tokens,
                    upstream_tokens,
                    revoked_families,
                    clients,
                    consents,
                })
            }

            async fn client_used(&self, client_id: &str, now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE clients SET last_used_at = $2 WHERE client_id = $1")
                    .bind(client_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use sql_store;

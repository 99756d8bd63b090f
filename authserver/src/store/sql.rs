//! The one implementation of the store over SQL, stamped out for each database: the statements
//! are written once in the dialect SQLite and PostgreSQL share (`$n` parameters, `ON CONFLICT`
//! upserts, `DELETE … RETURNING`), so the two backends cannot drift apart.

/// Implements `Store` for `$store`, a struct with a sqlx `pool` of either database.
macro_rules! sql_store {
    ($store:ident) => {
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
                let row = sqlx::query("SELECT client_id, secret_sha256, metadata, created_at FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let metadata: String = row.try_get("metadata")?;
                Ok(Some(StoredClient {
                    client_id: row.try_get("client_id")?,
                    secret_sha256: row.try_get("secret_sha256")?,
                    metadata: serde_json::from_str(&metadata)?,
                    created_at: row.try_get("created_at")?,
                }))
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
                let row = sqlx::query("SELECT browser_id, params, consented FROM auth_requests WHERE id = $1 AND expires_at > $2")
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let params: String = row.try_get("params")?;
                Ok(Some(StoredRequest {
                    browser_id: row.try_get("browser_id")?,
                    request: serde_json::from_str(&params)?,
                    consented: row.try_get::<i64, _>("consented")? != 0,
                }))
            }

            async fn mark_consented(&self, id: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE auth_requests SET consented = 1 WHERE id = $1")
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
                browser_id: &str,
                client_id: &str,
            ) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("SELECT scope FROM consents WHERE browser_id = $1 AND client_id = $2")
                    .bind(browser_id)
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|row| row.try_get("scope")).transpose()?)
            }

            async fn save_consent(
                &self,
                browser_id: &str,
                client_id: &str,
                scope: &str,
                now: i64,
            ) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO consents (browser_id, client_id, scope, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (browser_id, client_id) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at")
                    .bind(browser_id)
                    .bind(client_id)
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
                sqlx::query("INSERT INTO codes (code_sha256, grant_json, family_id, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(code_sha256)
                    .bind(serde_json::to_string(grant)?)
                    .bind(family_id)
                    .bind(expires_at)
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
            ) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO refresh_tokens (token_sha256, family_id, grant_json, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(token_sha256)
                    .bind(family_id)
                    .bind(serde_json::to_string(grant)?)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn redeem_refresh(&self, token_sha256: &str, now: i64) -> Result<Redeemed, StoreError> {
                self.redeem("refresh_tokens", "token_sha256", token_sha256, now)
                    .await
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

            async fn release_refresh(&self, token_sha256: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE refresh_tokens SET used = 0 WHERE token_sha256 = $1")
                    .bind(token_sha256)
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

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }

        impl $store {
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

        impl $crate::store::Housekeeping for $store {
            async fn purge(
                &self,
                cutoffs: $crate::store::PurgeCutoffs,
            ) -> Result<$crate::store::Purged, StoreError> {
                // One short statement per table (no long write lock); the order matters: tokens
                // before the upstream sessions and revocations that outlive them.
                let statements: [(&str, i64); 7] = [
                    ("DELETE FROM auth_requests WHERE expires_at <= $1", cutoffs.now),
                    ("DELETE FROM upstream_logins WHERE expires_at <= $1", cutoffs.now),
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
                ];
                let mut counts = [0u64; 7];
                for ((statement, cutoff), count) in statements.iter().zip(counts.iter_mut()) {
                    *count = sqlx::query(statement)
                        .bind(cutoff)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                }
                let [auth_requests, upstream_logins, codes, refresh_tokens, upstream_tokens, revoked_families, clients] =
                    counts;
                Ok($crate::store::Purged {
                    auth_requests,
                    upstream_logins,
                    codes,
                    refresh_tokens,
                    upstream_tokens,
                    revoked_families,
                    clients,
                })
            }

            async fn client_used(&self, client_id: &str, now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE clients SET last_used_at = $2 WHERE client_id = $1 AND last_used_at IS NULL")
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

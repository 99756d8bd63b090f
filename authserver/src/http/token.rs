//! `/oauth/token` (RFC 6749 §3.2) and `/oauth/revoke` (RFC 7009): authorization codes with PKCE,
//! rotating refresh tokens whose reuse revokes the family, and `client_credentials` for
//! confidential machine clients (seed 004), whose tokens carry the client as `sub`.
//!
//! The handlers parse, ask `oauth::token` for the decision, and carry it out. A refresh is
//! decided on what the store holds before anything is written; the old token is claimed and its
//! successor stored in one transaction, so nothing a client still holds is burnt by a refusal,
//! a storage error or a crash, and a retry whose answer was lost gets the same successor back.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map};
use sha2::{Digest, Sha256};

use crate::crypto::Sealer;
use crate::http::metrics::grant_label;
use crate::http::{hex, random_token, AppState, Lookup, Metrics};
use crate::idp::oidc::{UpstreamError, UpstreamTokens};
use crate::oauth::grant::{access_claims, Grant, User};
use crate::oauth::introspect::{Context as IntrospectionContext, Found};
use crate::oauth::token::{
    decide_client_credentials, decide_code, decide_refresh, Ask, CodeAsk, Credential,
    MachineClient, RefreshDecision, RefreshPolicy, Refusal,
};
use crate::oauth::{ErrorCode, OAuthError, Scope};
use crate::store::{Rotation, Store, StoreError, StoredClient};

/// The largest body the token, revocation and introspection endpoints read (a token request is
/// a few hundred bytes).
pub const BODY_LIMIT: usize = 16 * 1024;

/// Labels the key a refresh token's successor is sealed under (derived from the old token).
const SUCCESSOR_KEY_LABEL: &str = "mcp-mesh-auth refresh successor v1";

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

/// A form body, or RFC 6749 §5.2 `invalid_request` JSON when it is not one (wrong content type,
/// too large, not decodable): never axum's plain-text 413/415/422.
pub struct OAuthForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OAuthForm<T> {
    type Rejection = OAuthError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Form::<T>::from_request(request, state).await {
            Ok(Form(value)) => Ok(Self(value)),
            Err(rejection) => {
                let error = malformed(&rejection);
                tracing::info!(status = %rejection.status(), reason = %error.description, "malformed request refused");
                Err(error)
            }
        }
    }
}

fn malformed(rejection: &FormRejection) -> OAuthError {
    OAuthError::invalid_request(match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the body is larger than {BODY_LIMIT} bytes"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "the body must be application/x-www-form-urlencoded".to_owned()
        }
        _ => format!("the body is not a valid form: {}", rejection.body_text()),
    })
}

pub async fn token<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    OAuthForm(request): OAuthForm<TokenRequest>,
) -> Response {
    let started = Instant::now();
    let grant_type = grant_label(request.grant_type.as_deref());
    match grant(&state, &headers, &request).await {
        Ok(response) => {
            state
                .metrics
                .token_answered(grant_type, Ok(()), started.elapsed());
            response
        }
        Err(error) => {
            state
                .metrics
                .token_answered(grant_type, Err(error.code), started.elapsed());
            tracing::warn!(
                client_id = %caller(&headers, request.client_id.as_deref()),
                grant_type = request.grant_type.as_deref().unwrap_or("-"),
                error = %error.code,
                reason = %error.description,
                "token request refused"
            );
            error.into_response()
        }
    }
}

async fn grant<S: Store>(
    state: &Arc<AppState<S>>,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<Response, OAuthError> {
    match request.grant_type.as_deref() {
        Some("client_credentials") => client_credentials(state, headers, request).await,
        Some("authorization_code") => authorization_code(state, headers, request).await,
        Some("refresh_token") => refresh(state, headers, request).await,
        Some(other) => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!("grant type `{other}` is not supported here"),
        )),
        None => Err(OAuthError::invalid_request("grant_type is required")),
    }
}

async fn client_credentials<S: Store>(
    state: &Arc<AppState<S>>,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<Response, OAuthError> {
    let client = authenticate(
        state,
        headers,
        request.client_id.as_deref(),
        request.client_secret.as_deref(),
    )
    .await?;
    let machine = MachineClient {
        may_use_grant: client.metadata["grant_types"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "client_credentials")),
        scope: Scope::from_stored(client.metadata["scope"].as_str().unwrap_or_default()),
    };
    let asked = asked_scope(request)?;
    let (scope, resource) = decide_client_credentials(
        &machine,
        asked.as_ref(),
        request.resource.as_deref(),
        &state.config.resources,
    )?;
    let now = state.clock.now();
    let lifetime = state.config.lifetimes.access_seconds;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(state.config.issuer_str()));
    claims.insert("sub".into(), json!(client.client_id));
    claims.insert("aud".into(), json!(resource));
    claims.insert("client_id".into(), json!(client.client_id));
    claims.insert("scope".into(), json!(scope.to_string()));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + lifetime as i64));
    claims.insert("jti".into(), json!(random_token(16)));
    let access_token = sign(state, claims).await?;
    tracing::debug!(client_id = %client.client_id, resource = %resource, "client_credentials token issued");
    Ok(answer_json(
        json!({"access_token": access_token, "token_type": "Bearer",
                     "expires_in": lifetime, "scope": scope.to_string()}),
    ))
}

async fn authorization_code<S: Store>(
    state: &Arc<AppState<S>>,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<Response, OAuthError> {
    let client = identify(
        state,
        headers,
        request.client_id.as_deref(),
        request.client_secret.as_deref(),
    )
    .await?;
    let (Some(code), Some(code_verifier)) =
        (request.code.as_deref(), request.code_verifier.as_deref())
    else {
        return Err(OAuthError::invalid_request(
            "code and code_verifier are required",
        ));
    };
    let scope = asked_scope(request)?;
    let ask = CodeAsk {
        grant: Ask {
            client_id: &client.client_id,
            scope: scope.as_ref(),
            resource: request.resource.as_deref(),
        },
        redirect_uri: request.redirect_uri.as_deref(),
        code_verifier,
    };
    let now = state.clock.now();
    let redeemed = state
        .store
        .redeem_code(&sha256_hex(code), now)
        .await
        .map_err(|err| store_failure(state, err))?;
    let (grant, family_id) = match decide_code(redeemed, &ask) {
        Ok(decided) => decided,
        Err(refusal) => return Err(refuse(state, refusal).await),
    };
    let access_token = sign_access(state, &grant).await?;
    let refresh_token = if grant.has_scope("offline_access") {
        let token = random_token(32);
        let expires_at = refresh_policy(state).expiry(now, now);
        state
            .store
            .save_refresh(&sha256_hex(&token), &grant, &family_id, expires_at, now)
            .await
            .map_err(|err| store_failure(state, err))?;
        Some(token)
    } else {
        None
    };
    Ok(issued(
        state,
        &grant,
        access_token,
        refresh_token.as_deref(),
    ))
}

async fn refresh<S: Store>(
    state: &Arc<AppState<S>>,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<Response, OAuthError> {
    let client = identify(
        state,
        headers,
        request.client_id.as_deref(),
        request.client_secret.as_deref(),
    )
    .await?;
    let Some(token) = request.refresh_token.as_deref() else {
        return Err(OAuthError::invalid_request("refresh_token is required"));
    };
    let scope = asked_scope(request)?;
    let ask = Ask {
        client_id: &client.client_id,
        scope: scope.as_ref(),
        resource: request.resource.as_deref(),
    };
    let token_hash = sha256_hex(token);
    let policy = refresh_policy(state);
    // A request that loses the claim to a concurrent one looks again, and then finds the
    // winner's successor to hand back; one that finds the provider being asked for this token
    // by another waits for that answer (at most `LEASE_WAITS` polls).
    let mut claims_lost = 0;
    let mut waits = 0;
    while claims_lost < 2 {
        let now = state.clock.now();
        let found = state
            .store
            .find_refresh(&token_hash, now)
            .await
            .map_err(|err| store_failure(state, err))?;
        let (mut grant, access_scope, family_id, family_issued_at, expires_at) =
            match decide_refresh(found, &ask, &policy, now) {
                Err(refusal) => return Err(refuse(state, refusal).await),
                Ok(RefreshDecision::Resend { grant, sealed }) => {
                    return resend(state, token, &grant, &sealed).await
                }
                Ok(RefreshDecision::Rotate {
                    grant,
                    access_scope,
                    family_id,
                    family_issued_at,
                    expires_at,
                }) => (grant, access_scope, family_id, family_issued_at, expires_at),
            };
        let federated = state.upstream.federated().is_some();
        if federated {
            let leased = state
                .store
                .lease_refresh(&token_hash, now, now + LEASE_SECONDS)
                .await
                .map_err(|err| store_failure(state, err))?;
            if !leased {
                waits += 1;
                if waits > LEASE_WAITS {
                    return Err(OAuthError::new(
                        ErrorCode::TemporarilyUnavailable,
                        "another request is refreshing this token; try again shortly",
                    ));
                }
                tokio::time::sleep(LEASE_POLL).await;
                continue;
            }
        }
        let upstream_sealed = match recheck_upstream(state, &family_id, &grant.user).await {
            Ok(Some((user, sealed))) => {
                grant.user = user;
                Some(sealed)
            }
            Ok(None) => None,
            Err(UpstreamCheck::NoSession) => {
                tracing::warn!(client_id = %client.client_id, "a federated family has no stored upstream session: refresh refused");
                return Err(Refusal::NoUpstreamSession.into());
            }
            Err(UpstreamCheck::Failed(err)) if !err.ends_session() => {
                state.metrics.upstream_failed(&err);
                // Nothing was claimed: the same refresh token works once the IdP answers again.
                tracing::warn!(error = %err, client_id = %client.client_id, "the identity provider could not re-check a refresh; nothing revoked");
                if let Err(err) = state.store.release_refresh_lease(&token_hash).await {
                    tracing::warn!(error = %err, "could not release a refresh lease (it expires by itself)");
                }
                let description = if err.is_transient() {
                    "the identity provider is unreachable; try again shortly"
                } else {
                    "the identity provider could not re-check the session; try again shortly"
                };
                return Err(OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    description,
                ));
            }
            Err(UpstreamCheck::Failed(err)) => {
                state.metrics.upstream_failed(&err);
                tracing::info!(error = %err, client_id = %client.client_id, "upstream refused the refresh");
                if claimed_meanwhile(state, &token_hash).await? {
                    // A concurrent refresh rotated the token (and the upstream session with it).
                    continue;
                }
                revoke_family(state, &family_id, "upstream session ended")
                    .await
                    .map_err(|err| store_failure(state, err))?;
                return Err(OAuthError::invalid_grant(
                    "the identity provider ended the session; sign in again",
                ));
            }
        };
        let access = Grant {
            scope: access_scope,
            ..grant.clone()
        };
        let access_token = sign_access(state, &access).await?;
        let successor = random_token(32);
        let successor_sealed =
            Sealer::derived(SUCCESSOR_KEY_LABEL, token.as_bytes()).seal(successor.as_bytes());
        let rotation = Rotation {
            successor_sha256: &sha256_hex(&successor),
            successor_sealed: &successor_sealed,
            grant: &grant,
            family_id: &family_id,
            expires_at,
            family_issued_at,
            upstream_sealed: upstream_sealed.as_deref(),
        };
        let rotated = state
            .store
            .rotate_refresh(&token_hash, &rotation, now)
            .await
            .map_err(|err| store_failure(state, err))?;
        if rotated {
            return Ok(issued(state, &access, access_token, Some(&successor)));
        }
        claims_lost += 1;
    }
    Err(Refusal::Unknown(Credential::RefreshToken).into())
}

/// How long a federated refresh holds its token while it asks the identity provider: the
/// request timeout, so a lease outlives no request that could still use it.
const LEASE_SECONDS: i64 = 30;
/// How often, and how many times, a request for a token another request holds looks again.
const LEASE_POLL: std::time::Duration = std::time::Duration::from_millis(50);
const LEASE_WAITS: u32 = 500;

/// The answer to a retry within the grace: a fresh access token and the successor the first
/// attempt stored, which only the old token can unseal.
async fn resend<S: Store>(
    state: &Arc<AppState<S>>,
    token: &str,
    grant: &Grant,
    sealed: &[u8],
) -> Result<Response, OAuthError> {
    let successor = Sealer::derived(SUCCESSOR_KEY_LABEL, token.as_bytes())
        .open(sealed)
        .ok()
        .and_then(|plain| String::from_utf8(plain).ok())
        .ok_or_else(|| {
            tracing::error!("a stored refresh successor does not open with its refresh token");
            OAuthError::server_error()
        })?;
    let access_token = sign_access(state, grant).await?;
    tracing::info!(client_id = %grant.client_id, "refresh retried within the grace: successor resent");
    Ok(issued(state, grant, access_token, Some(&successor)))
}

/// Whether a refresh token was rotated since it was looked at.
async fn claimed_meanwhile<S: Store>(
    state: &AppState<S>,
    token_hash: &str,
) -> Result<bool, OAuthError> {
    let found = state
        .store
        .find_refresh(token_hash, state.clock.now())
        .await
        .map_err(|err| store_failure(state, err))?;
    Ok(found.is_some_and(|found| found.used_at.is_some()))
}

/// Why the upstream re-check did not give a user.
enum UpstreamCheck {
    /// Federated, but no upstream session is kept for the family (or it cannot be opened).
    NoSession,
    Failed(UpstreamError),
}

/// Asks the identity provider whether the user is still who they were (and in which groups),
/// with the upstream session kept for this family: the user as they are now and the session as
/// the upstream left it, sealed, for the rotation to store. `None`: logins are not federated.
/// The one place a refresh calls the upstream.
async fn recheck_upstream<S: Store>(
    state: &AppState<S>,
    family_id: &str,
    user: &User,
) -> Result<Option<(User, Vec<u8>)>, UpstreamCheck> {
    let Some(federated) = state.upstream.federated() else {
        return Ok(None);
    };
    let sealer = state.sealer.as_ref().ok_or(UpstreamCheck::NoSession)?;
    let sealed = match state.store.upstream_tokens(family_id).await {
        Ok(Some(sealed)) => sealed,
        Ok(None) => return Err(UpstreamCheck::NoSession),
        Err(err) => {
            return Err(UpstreamCheck::Failed(UpstreamError::Unreachable {
                issuer: "the database".into(),
                detail: err.to_string(),
            }))
        }
    };
    let tokens: UpstreamTokens = sealer
        .open(&sealed)
        .ok()
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .ok_or_else(|| {
            tracing::error!(
                "a stored upstream session cannot be decrypted (was encryption_key_file changed?)"
            );
            UpstreamCheck::NoSession
        })?;
    let (fresh, tokens) = federated
        .refresh(&tokens, user)
        .await
        .map_err(UpstreamCheck::Failed)?;
    let plain = serde_json::to_vec(&tokens).map_err(|err| {
        UpstreamCheck::Failed(UpstreamError::Other {
            error: "unserialisable".into(),
            description: err.to_string(),
        })
    })?;
    Ok(Some((fresh, sealer.seal(&plain))))
}

/// A refusal as answered, once its effect is carried out: a replay revokes its family (before
/// the answer goes out, so the client cannot race it with the successor).
async fn refuse<S: Store>(state: &AppState<S>, refusal: Refusal) -> OAuthError {
    if let Some(family_id) = refusal.family_to_revoke() {
        if let Err(err) = revoke_family(state, family_id, &refusal.to_string()).await {
            return store_failure(state, err);
        }
    }
    refusal.into()
}

/// The refresh lifetimes of the configuration.
fn refresh_policy<S>(state: &AppState<S>) -> RefreshPolicy {
    let lifetimes = &state.config.lifetimes;
    let seconds = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    RefreshPolicy {
        sliding: seconds(lifetimes.refresh_seconds),
        absolute: seconds(lifetimes.refresh_absolute_seconds),
        reuse_grace: seconds(lifetimes.refresh_reuse_grace_seconds),
    }
}

fn asked_scope(request: &TokenRequest) -> Result<Option<Scope>, OAuthError> {
    request
        .scope
        .as_deref()
        .map(Scope::parse)
        .transpose()
        .map_err(|err| OAuthError::invalid_scope(err.to_string()))
}

async fn sign_access<S: Store>(state: &AppState<S>, grant: &Grant) -> Result<String, OAuthError> {
    let now = u64::try_from(state.clock.now()).unwrap_or_default();
    sign(
        state,
        access_claims(&state.config.issuance(), grant, now, random_token(16)),
    )
    .await
}

async fn sign<S: Store>(
    state: &AppState<S>,
    claims: Map<String, serde_json::Value>,
) -> Result<String, OAuthError> {
    state.keys.sign("at+jwt", claims).await.map_err(|err| {
        tracing::error!(error = %err, "could not sign an access token");
        OAuthError::server_error()
    })
}

/// The token response for `grant` (RFC 6749 §5.1).
fn issued<S>(
    state: &AppState<S>,
    grant: &Grant,
    access_token: String,
    refresh_token: Option<&str>,
) -> Response {
    let mut body = json!({"access_token": access_token, "token_type": "Bearer",
                          "expires_in": state.config.lifetimes.access_seconds, "scope": grant.scope});
    if let Some(refresh_token) = refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    tracing::debug!(client_id = %grant.client_id, subject = %grant.user.subject, "tokens issued");
    answer_json(body)
}

fn answer_json(body: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

/// The form of RFC 7009 revocation and RFC 7662 introspection: one token, and the caller's
/// client credentials when they are not in `Authorization` (`token_type_hint` is ignored: both
/// kinds of token are told apart without it).
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The answer of a revocation or introspection endpoint; a refusal is logged with the caller
/// and the reason (never the token) before it is answered.
fn answer(
    result: Result<Response, OAuthError>,
    headers: &HeaderMap,
    form: &TokenForm,
    what: &str,
) -> Response {
    result.unwrap_or_else(|error| {
        tracing::warn!(
            client_id = %caller(headers, form.client_id.as_deref()),
            error = %error.code,
            reason = %error.description,
            "{what} refused"
        );
        error.into_response()
    })
}

/// RFC 7009: revoking a refresh token revokes its family. Access tokens are self-contained JWTs
/// that simply expire (`unsupported_token_type`, §2.2.1, for one of ours); the answer is 200 for
/// anything unknown (§2.2). `token_type_hint` is not needed to tell the two apart.
pub async fn revoke<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    OAuthForm(request): OAuthForm<TokenForm>,
) -> Response {
    let result = revocation(&state, &headers, &request).await;
    answer(result, &headers, &request, "revocation")
}

async fn revocation<S: Store>(
    state: &Arc<AppState<S>>,
    headers: &HeaderMap,
    request: &TokenForm,
) -> Result<Response, OAuthError> {
    let client = identify(
        state,
        headers,
        request.client_id.as_deref(),
        request.client_secret.as_deref(),
    )
    .await?;
    let Some(token) = request.token.as_deref() else {
        return Err(OAuthError::invalid_request("token is required"));
    };
    let found = state
        .store
        .refresh_family(&sha256_hex(token))
        .await
        .map_err(|err| store_failure(state, err))?;
    match found {
        Some((family_id, owner)) if owner == client.client_id => {
            revoke_family(state, &family_id, "revoked by the client")
                .await
                .map_err(|err| store_failure(state, err))?;
        }
        // Another client's token: not revoked, and nothing told (§2.1: the client is refused).
        Some(_) => {
            tracing::warn!(client_id = %client.client_id, "revocation of another client's refresh token ignored")
        }
        None if state.keys.verify("at+jwt", token).await.is_some() => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedTokenType,
                "access tokens are short-lived JWTs and are not revoked; revoke the refresh token",
            ))
        }
        None => {}
    }
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response())
}

/// RFC 7662: for confidential clients (resource servers) that authenticate (§2.1). Access tokens
/// are checked against the server's own keys and clock, refresh tokens looked up by hash;
/// `token_type_hint` is not needed to find either and is ignored (§2.1 allows it).
pub async fn introspect<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    OAuthForm(request): OAuthForm<TokenForm>,
) -> Response {
    let result = introspection(&state, &headers, &request).await;
    answer(result, &headers, &request, "introspection")
}

async fn introspection<S: Store>(
    state: &Arc<AppState<S>>,
    headers: &HeaderMap,
    request: &TokenForm,
) -> Result<Response, OAuthError> {
    let client = authenticate(
        state,
        headers,
        request.client_id.as_deref(),
        request.client_secret.as_deref(),
    )
    .await?;
    let Some(token) = request.token.as_deref() else {
        return Err(OAuthError::invalid_request("token is required"));
    };
    let found = match state.keys.verify("at+jwt", token).await {
        Some(claims) => Found::Access(claims),
        None => match state
            .store
            .find_refresh(&sha256_hex(token), state.clock.now())
            .await
            .map_err(|err| store_failure(state, err))?
        {
            Some(stored) => Found::Refresh(Box::new(stored)),
            None => Found::Nothing,
        },
    };
    let context = IntrospectionContext {
        issuer: state.config.issuer_str(),
        resources: &state.config.resources,
        caller: &client.client_id,
        policy: &refresh_policy(state),
        now: state.clock.now(),
    };
    let answer = crate::oauth::introspect::introspect(found, &context);
    tracing::debug!(client_id = %client.client_id, active = %answer["active"], "token introspected");
    Ok(answer_json(answer))
}

/// The calling client: confidential ones authenticate, public ones name themselves.
async fn identify<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    client_id: Option<&str>,
    client_secret: Option<&str>,
) -> Result<StoredClient, OAuthError> {
    if headers.contains_key(header::AUTHORIZATION) || client_secret.is_some() {
        return authenticate(state, headers, client_id, client_secret).await;
    }
    let client_id = client_id.ok_or_else(invalid_client)?;
    match state.find_client(client_id).await {
        Lookup::Found(client) if client.secret_sha256.is_none() => Ok(client),
        Lookup::StoreDown(err) => Err(store_failure(state, err)),
        // The client's own host is down: a retry may work, so not `invalid_client` (which
        // clients take as final and drop their sessions over).
        Lookup::Unreachable(reason) => {
            Err(OAuthError::new(ErrorCode::TemporarilyUnavailable, reason))
        }
        _ => Err(invalid_client()),
    }
}

/// Revokes a grant family: every code and refresh token of it stops working.
async fn revoke_family<S: Store>(
    state: &AppState<S>,
    family_id: &str,
    reason: &str,
) -> Result<(), StoreError> {
    state
        .store
        .revoke_family(family_id, reason, state.clock.now())
        .await?;
    Metrics::bump(&state.metrics.families_revoked);
    tracing::warn!(reason, "grant family revoked");
    Ok(())
}

fn store_failure<S>(state: &AppState<S>, err: StoreError) -> OAuthError {
    tracing::error!(error = %err, "storage failure at the token endpoint");
    state.metrics.database_failed("token");
    OAuthError::unavailable()
}

/// `client_secret_basic` or `client_secret_post`; a failure is RFC 6749's `invalid_client` (401).
async fn authenticate<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    client_id: Option<&str>,
    client_secret: Option<&str>,
) -> Result<StoredClient, OAuthError> {
    let (client_id, secret) = match (basic(headers), client_id, client_secret) {
        (Some(credentials), _, _) => credentials.ok_or_else(invalid_client)?,
        (None, Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        _ => return Err(invalid_client()),
    };
    let client = state
        .store
        .client(&client_id)
        .await
        .map_err(|err| store_failure(state, err))?
        .ok_or_else(invalid_client)?;
    let presented = sha256_hex(&secret);
    match &client.secret_sha256 {
        Some(stored) if constant_time_eq(stored.as_bytes(), presented.as_bytes()) => {
            // A machine client that only ever authenticates here is in use too.
            state.mark_used(&client).await;
            Ok(client)
        }
        _ => Err(invalid_client()),
    }
}

fn invalid_client() -> OAuthError {
    OAuthError::invalid_client(
        "client authentication failed (unknown client, wrong secret, or a public client)",
    )
}

/// The Basic credentials of a request, if it has an `Authorization: Basic` header (`None`
/// inside when they do not decode).
fn basic(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(decode_basic)
}

/// Who a request says it comes from, for a log line (never the secret).
fn caller(headers: &HeaderMap, client_id: Option<&str>) -> String {
    basic(headers)
        .flatten()
        .map(|(id, _)| id)
        .or_else(|| client_id.map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}

/// RFC 6749 §2.3.1: both parts are form-urlencoded inside the Basic credentials.
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let encoded = STANDARD.encode("my%20client:s%3Acret");
        assert_eq!(
            decode_basic(&encoded),
            Some(("my client".into(), "s:cret".into()))
        );
        assert_eq!(decode_basic("!!!"), None);
    }

    #[test]
    fn secrets_compare_in_constant_time_shape() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn unknown_parameters_are_ignored_not_fatal() {
        let request: TokenRequest =
            serde_urlencoded_from("grant_type=client_credentials&audience=x");
        assert_eq!(request.grant_type.as_deref(), Some("client_credentials"));
    }

    mod through_the_router {
        use axum::body::Body;
        use axum::http::Request;
        use axum::Router;
        use serde_json::{json, Value};
        use tower::ServiceExt;

        use crate::config::{Config, FileConfig, Overrides};
        use crate::http::{hex, router, Upstream};
        use crate::keys::KeyRing;
        use crate::store::{SqliteStore, Store, StoredClient};

        const RESOURCE: &str = "https://mcp.example.com/mcp";

        /// The router over a fresh SQLite store holding a machine client `m2m` (secret `s3cret`)
        /// and a public client `app`.
        async fn app() -> (tempfile::TempDir, Router) {
            let (dir, app, _) = app_at(std::sync::Arc::new(crate::oauth::SystemClock)).await;
            (dir, app)
        }

        /// The router over a fresh store (also returned) holding a confidential `m2m` client
        /// and a public `app`, both registered at the clock's "now".
        async fn app_at(
            clock: std::sync::Arc<dyn crate::oauth::Clock>,
        ) -> (tempfile::TempDir, Router, SqliteStore) {
            app_with(clock, Upstream::new(None), None).await
        }

        /// As [`app_at`], with an identity provider and the sealer of upstream sessions.
        async fn app_with(
            clock: std::sync::Arc<dyn crate::oauth::Clock>,
            upstream: Upstream,
            sealer: Option<crate::crypto::Sealer>,
        ) -> (tempfile::TempDir, Router, SqliteStore) {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&format!("sqlite://{}/auth.db", dir.path().display()))
                .await
                .unwrap();
            let secret = hex(&sha2::Sha256::digest(b"s3cret"));
            for (id, secret, metadata) in [
                (
                    "m2m",
                    Some(secret),
                    json!({"grant_types": ["client_credentials"], "scope": "mcp:tools"}),
                ),
                (
                    "app",
                    None,
                    json!({"redirect_uris": ["http://127.0.0.1/cb"]}),
                ),
            ] {
                let client = StoredClient {
                    client_id: id.into(),
                    secret_sha256: secret,
                    metadata,
                    created_at: clock.now(),
                    last_used_at: None,
                };
                store.save_client(&client).await.unwrap();
            }
            let file: FileConfig = serde_yaml::from_str(&format!(
                "issuer: https://auth.example.com\nresources: [{RESOURCE}]\n"
            ))
            .unwrap();
            let config = Config::resolve(file, Overrides::default()).unwrap();
            (
                dir,
                router(
                    config,
                    KeyRing::ephemeral(),
                    store.clone(),
                    upstream,
                    sealer,
                    clock,
                ),
                store,
            )
        }

        async fn post(
            app: &Router,
            path: &str,
            content_type: &str,
            body: impl Into<Body>,
        ) -> (u16, Value) {
            let request = Request::post(path)
                .header("content-type", content_type)
                .header(
                    "authorization",
                    format!("Basic {}", STANDARD.encode("m2m:s3cret")),
                )
                .body(body.into())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        }

        async fn form(app: &Router, path: &str, body: &str) -> (u16, Value) {
            post(
                app,
                path,
                "application/x-www-form-urlencoded",
                body.to_owned(),
            )
            .await
        }

        use super::super::*;

        #[tokio::test]
        async fn malformed_bodies_are_rfc_6749_invalid_request_on_every_endpoint() {
            let (_dir, app) = app().await;
            for path in ["/oauth/token", "/oauth/revoke", "/oauth/introspect"] {
                let (status, body) = post(&app, path, "application/json", "{}").await;
                assert_eq!(
                    (status, body["error"].as_str()),
                    (400, Some("invalid_request")),
                    "{path}: JSON"
                );
                let huge = format!("token={}", "a".repeat(BODY_LIMIT));
                let (status, body) = form(&app, path, &huge).await;
                assert_eq!(
                    (status, body["error"].as_str()),
                    (400, Some("invalid_request")),
                    "{path}: too large"
                );
                let (status, body) = form(&app, path, "token=a&token=b").await;
                assert_eq!(
                    (status, body["error"].as_str()),
                    (400, Some("invalid_request")),
                    "{path}: a field twice"
                );
            }
        }

        #[tokio::test]
        async fn introspection_answers_authenticated_confidential_clients_only() {
            let (_dir, app) = app().await;
            let (status, issued) =
                form(&app, "/oauth/token", "grant_type=client_credentials").await;
            assert_eq!(status, 200, "{issued}");
            let token = issued["access_token"].as_str().unwrap();
            let (status, answer) = form(&app, "/oauth/introspect", &format!("token={token}")).await;
            assert_eq!(status, 200);
            assert_eq!(
                (answer["active"].as_bool(), answer["aud"].as_str()),
                (Some(true), Some(RESOURCE))
            );
            let (_, answer) = form(&app, "/oauth/introspect", "token=not-a-token").await;
            assert_eq!(answer, json!({"active": false}));
            let public = Request::post("/oauth/introspect")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={token}&client_id=app")))
                .unwrap();
            let response = app.clone().oneshot(public).await.unwrap();
            assert_eq!(
                response.status().as_u16(),
                401,
                "a public client may not introspect"
            );
            let wrong = Request::post("/oauth/introspect")
                .header("content-type", "application/x-www-form-urlencoded")
                .header(
                    "authorization",
                    format!("Basic {}", STANDARD.encode("m2m:wrong")),
                )
                .body(Body::from(format!("token={token}")))
                .unwrap();
            assert_eq!(
                app.clone().oneshot(wrong).await.unwrap().status().as_u16(),
                401
            );
        }

        #[tokio::test]
        async fn an_access_token_is_introspected_inactive_from_its_expiry_on() {
            let clock = std::sync::Arc::new(crate::oauth::clock::ManualClock::at(1_000_000));
            let (_dir, app, _) = app_at(clock.clone()).await;
            let (_, issued) = form(&app, "/oauth/token", "grant_type=client_credentials").await;
            let token = issued["access_token"].as_str().unwrap().to_owned();
            let lifetime = issued["expires_in"].as_i64().unwrap();
            clock.advance(lifetime - 1);
            let (_, answer) = form(&app, "/oauth/introspect", &format!("token={token}")).await;
            assert_eq!(answer["active"], json!(true), "one second before expiry");
            clock.advance(1);
            let (_, answer) = form(&app, "/oauth/introspect", &format!("token={token}")).await;
            assert_eq!(answer, json!({"active": false}), "at expiry");
        }

        #[tokio::test]
        async fn a_machine_client_that_only_authenticates_is_not_purged_as_unused() {
            use crate::oauth::Clock;
            use crate::store::housekeeping::{Housekeeping, PurgeCutoffs};
            const WEEK: u64 = 7 * 24 * 3600;
            let clock = std::sync::Arc::new(crate::oauth::clock::ManualClock::at(1_000_000));
            let (_dir, app, store) = app_at(clock.clone()).await;
            let (status, _) = form(&app, "/oauth/token", "grant_type=client_credentials").await;
            assert_eq!(status, 200);
            clock.advance(2 * WEEK as i64);
            let purged = store
                .purge(PurgeCutoffs::at(clock.now(), WEEK))
                .await
                .unwrap();
            assert_eq!(purged.clients, 1, "the public client nobody used goes");
            assert!(
                store.client("m2m").await.unwrap().is_some(),
                "the machine client stays"
            );
        }

        /// A provider that rotates its refresh tokens and takes a second use of one for a replay
        /// (Auth0, Keycloak, Okta without a grace): it ends the session of any second caller.
        struct RotatingProvider(std::sync::Arc<std::sync::atomic::AtomicUsize>);

        impl crate::idp::IdentityProvider for RotatingProvider {
            fn is_federated(&self) -> bool {
                true
            }

            fn start(&self) -> crate::idp::BoxFuture<'_, Result<crate::idp::Start, UpstreamError>> {
                Box::pin(async { Err(UpstreamError::NotFederated) })
            }

            fn finish<'a>(
                &'a self,
                _code: &'a str,
                _nonce: &'a str,
                _verifier: &'a str,
            ) -> crate::idp::BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>>
            {
                Box::pin(async { Err(UpstreamError::NotFederated) })
            }

            fn refresh<'a>(
                &'a self,
                _tokens: &'a UpstreamTokens,
                previous: &'a User,
            ) -> crate::idp::BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>>
            {
                Box::pin(async move {
                    let uses = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if uses > 0 {
                        return Err(UpstreamError::SessionEnded("refresh token reused".into()));
                    }
                    let rotated = UpstreamTokens {
                        refresh_token: Some("upstream-2".into()),
                    };
                    Ok((previous.clone(), rotated))
                })
            }
        }

        #[tokio::test]
        async fn concurrent_federated_refreshes_ask_the_provider_once_and_share_one_successor() {
            let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let sealer = crate::crypto::Sealer::derived("test", b"upstream sessions");
            let upstream_session = serde_json::to_vec(&UpstreamTokens {
                refresh_token: Some("upstream-1".into()),
            })
            .unwrap();
            let sealed = sealer.seal(&upstream_session);
            let (_dir, app, store) = app_with(
                std::sync::Arc::new(crate::oauth::SystemClock),
                Upstream::new(Some(Box::new(RotatingProvider(calls.clone())))),
                Some(sealer),
            )
            .await;
            let now = crate::oauth::Clock::now(&crate::oauth::SystemClock);
            let grant = Grant {
                client_id: "m2m".into(),
                resource: RESOURCE.into(),
                scope: "mcp:tools offline_access".into(),
                user: User {
                    subject: "okta|alice".into(),
                    email: None,
                    name: None,
                    groups: vec!["mcp-developers".into()],
                    roles: vec![],
                },
                redirect_uri: String::new(),
                code_challenge: String::new(),
            };
            store
                .save_refresh(&sha256_hex("rt-1"), &grant, "fam", now + 3600, now)
                .await
                .unwrap();
            store
                .save_upstream_tokens("fam", &sealed, now)
                .await
                .unwrap();
            let mut requests = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let app = app.clone();
                requests.spawn(async move {
                    form(
                        &app,
                        "/oauth/token",
                        "grant_type=refresh_token&refresh_token=rt-1",
                    )
                    .await
                });
            }
            let answers = requests.join_all().await;
            let successors: std::collections::BTreeSet<String> = answers
                .iter()
                .map(|(status, body)| {
                    assert_eq!(*status, 200, "{body}");
                    body["refresh_token"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(successors.len(), 1, "one successor for every request");
            assert_eq!(
                calls.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "the provider was asked once, with the one upstream session"
            );
        }

        #[tokio::test]
        async fn revocation_refuses_access_tokens_and_accepts_unknown_ones() {
            let (_dir, app) = app().await;
            let (_, issued) = form(&app, "/oauth/token", "grant_type=client_credentials").await;
            let token = issued["access_token"].as_str().unwrap();
            let (status, body) = form(&app, "/oauth/revoke", &format!("token={token}")).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("unsupported_token_type"))
            );
            let (status, _) = form(&app, "/oauth/revoke", "token=unknown").await;
            assert_eq!(
                status, 200,
                "RFC 7009 §2.2: unknown tokens are not an error"
            );
        }
    }

    fn serde_urlencoded_from(text: &str) -> TokenRequest {
        let pairs: Map<String, Value> = url::form_urlencoded::parse(text.as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        serde_json::from_value(Value::Object(pairs)).unwrap()
    }
}

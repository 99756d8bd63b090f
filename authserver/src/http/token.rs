//! `/oauth/token` (RFC 6749 §3.2) and `/oauth/revoke` (RFC 7009): authorization codes with PKCE,
//! rotating refresh tokens whose reuse revokes the family, `client_credentials` for
//! confidential machine clients (seed 004), whose tokens carry the client as `sub`, and the
//! `jwt-bearer` grant with an enterprise ID-JAG (RFC 7523, enterprise-managed authorization).
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
use crate::idp::enterprise::VerifyError;
use crate::idp::oidc::{BackendToken, UpstreamError, UpstreamTokens};
use crate::idp::Federated;
use crate::oauth::client_assertion::{self, Presenter, CLIENT_ASSERTION_TYPE};
use crate::oauth::exchange::{self, Backend, Decision, Subject};
use crate::oauth::grant::{access_claims, Grant, User, SESSION_CLAIM};
use crate::oauth::id_jag::{self, Assertion, AssertionError, Expectations, JWT_BEARER};
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
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    assertion: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    requested_token_type: Option<String>,
    audience: Option<String>,
    actor_token: Option<String>,
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
        Some(JWT_BEARER) => jwt_bearer(state, headers, request).await,
        Some(exchange::GRANT_TYPE) => token_exchange(state, headers, request).await,
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
    let client = authenticate_request(state, headers, request).await?;
    let machine = MachineClient {
        may_use_grant: registered_for(&client, "client_credentials"),
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
    if let Some(groups) = state.machines.groups(&client.client_id) {
        claims.insert("groups".into(), json!(groups));
    }
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

/// RFC 7523 §2.1 with an ID-JAG: a confidential client registered for the grant presents an
/// assertion its enterprise identity provider signed for this server, this client, one of our
/// resources and some scopes; the answer is an access token for that resource and the scopes
/// the request, the assertion and the client share, with no refresh token (the ID-JAG draft: a
/// fresh ID-JAG replaces it). No browser and no consent page: the IdP's policy was the consent.
async fn jwt_bearer<S: Store>(
    state: &Arc<AppState<S>>,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<Response, OAuthError> {
    let Some(enterprise) = state.enterprise.as_ref() else {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "enterprise-managed authorization (ID-JAG) is not enabled here",
        ));
    };
    let client = authenticate_request(state, headers, request).await?;
    if !registered_for(&client, JWT_BEARER) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            format!("this client is not registered for `{JWT_BEARER}`"),
        ));
    }
    let Some(assertion) = request.assertion.as_deref() else {
        return Err(OAuthError::invalid_request(
            "assertion is required: the ID-JAG from the identity provider",
        ));
    };
    let assertion = Assertion::parse(assertion)?;
    let issuer = enterprise.issuer(assertion.issuer()?)?;
    issuer.verify(&assertion).await.map_err(|err| match err {
        VerifyError::Refused(refusal) => OAuthError::from(refusal),
        VerifyError::Unreachable { .. } => {
            tracing::warn!(error = %err, "an ID-JAG could not be checked");
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the identity provider's signing keys could not be fetched; try again shortly",
            )
        }
    })?;
    let registered = client.metadata["scope"].as_str().map(Scope::from_stored);
    let expect = Expectations {
        issuer: state.config.issuer_str(),
        client_id: &client.client_id,
        resources: &state.config.resources,
        scopes: &state.config.scopes,
        registered: registered.as_ref(),
        max_lifetime: enterprise.max_assertion_seconds,
    };
    let asked = asked_scope(request)?;
    let ask = id_jag::Ask {
        resource: request.resource.as_deref(),
        scope: asked.as_ref(),
    };
    let now = state.clock.now();
    let decision = id_jag::decide(&assertion, &expect, &ask, &issuer.mapping(), now)?;
    let fresh = state
        .store
        .use_assertion(&decision.replay_key, decision.replay_until, now)
        .await
        .map_err(|err| store_failure(state, err))?;
    if !fresh {
        return Err(AssertionError::Replayed.into());
    }
    // No sign-in here, so no `sid`; the client acts for the user the enterprise IdP named
    // (RFC 8693 §4.1 `act`), which policies see as `context.actor`.
    let issued_at = u64::try_from(now).unwrap_or_default();
    let mut claims = access_claims(
        &state.config.issuance(),
        &decision.grant,
        issued_at,
        random_token(16),
    );
    claims.insert("act".into(), json!({"sub": decision.grant.client_id}));
    let access_token = sign(state, claims).await?;
    tracing::info!(client_id = %client.client_id, issuer = %issuer.issuer(), resource = %decision.grant.resource, "ID-JAG exchanged");
    Ok(issued(state, &decision.grant, access_token, None))
}

/// Whether a registered client listed `grant_type` among its `grant_types`.
fn registered_for(client: &StoredClient, grant_type: &str) -> bool {
    client.metadata["grant_types"]
        .as_array()
        .is_some_and(|grants| grants.iter().any(|g| g == grant_type))
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
    let access_token = sign_access(state, &grant, &family_id).await?;
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
                Ok(RefreshDecision::Resend {
                    grant,
                    family_id,
                    sealed,
                }) => return resend(state, token, &grant, &family_id, &sealed).await,
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
            // One lease for every use of the sign-in's upstream refresh token: a token exchange
            // for a backend of this sign-in may be asking the provider with it right now, and a
            // provider that rotates refresh tokens takes a second use for a replay.
            if !take_upstream_lease(state, &family_id, now).await? {
                release_refresh_lease(state, &token_hash).await;
                waits += 1;
                if waits > LEASE_WAITS {
                    return Err(OAuthError::new(
                        ErrorCode::TemporarilyUnavailable,
                        "another request is using this sign-in's upstream session; try again shortly",
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
                release_refresh_lease(state, &token_hash).await;
                release_upstream_lease(state, &family_id).await;
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
                release_upstream_lease(state, &family_id).await;
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
        let access_token = sign_access(state, &access, &family_id).await?;
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
            .map_err(|err| store_failure(state, err));
        // After the rotation stored the provider's answer (a rotated upstream refresh token), so
        // the next holder reads that one.
        if federated {
            release_upstream_lease(state, &family_id).await;
        }
        if rotated? {
            return Ok(issued(state, &access, access_token, Some(&successor)));
        }
        claims_lost += 1;
    }
    Err(Refusal::Unknown(Credential::RefreshToken).into())
}

/// Takes the sign-in's upstream-session lease (the one token exchange takes too): `false` while
/// another request holds it. A sign-in with no stored session needs none (its refresh is refused
/// for that, further on).
async fn take_upstream_lease<S: Store>(
    state: &AppState<S>,
    family_id: &str,
    now: i64,
) -> Result<bool, OAuthError> {
    let taken = state
        .store
        .lease_upstream(family_id, now, now + LEASE_SECONDS)
        .await
        .map_err(|err| store_failure(state, err))?;
    if taken {
        return Ok(true);
    }
    let kept = state
        .store
        .upstream_tokens(family_id)
        .await
        .map_err(|err| store_failure(state, err))?;
    Ok(kept.is_none())
}

/// Gives a lease back; one not given back expires by itself after [`LEASE_SECONDS`].
async fn release_upstream_lease<S: Store>(state: &AppState<S>, family_id: &str) {
    if let Err(err) = state.store.release_upstream_lease(family_id).await {
        tracing::warn!(error = %err, "could not release an upstream-session lease (it expires by itself)");
    }
}

async fn release_refresh_lease<S: Store>(state: &AppState<S>, token_hash: &str) {
    if let Err(err) = state.store.release_refresh_lease(token_hash).await {
        tracing::warn!(error = %err, "could not release a refresh lease (it expires by itself)");
    }
}

/// How long a federated refresh holds its token (and a token exchange its sign-in's upstream
/// session) while it asks the identity provider: the request timeout, so a lease outlives no
/// request that could still use it.
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
    family_id: &str,
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
    let access_token = sign_access(state, grant, family_id).await?;
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

/// An access token for `grant`, naming the sign-in (`family_id`) it comes from.
async fn sign_access<S: Store>(
    state: &AppState<S>,
    grant: &Grant,
    family_id: &str,
) -> Result<String, OAuthError> {
    let now = u64::try_from(state.clock.now()).unwrap_or_default();
    let mut claims = access_claims(&state.config.issuance(), grant, now, random_token(16));
    claims.insert(SESSION_CLAIM.into(), json!(family_id));
    sign(state, claims).await
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

/// RFC 8693 token exchange: an authenticated client the configuration lists for the backend it
/// names presents the caller's access token and gets one for the backend (see
/// `oauth::exchange`). The subject token's sign-in is looked up only once its signature holds.
async fn token_exchange<S: Store>(
    state: &Arc<AppState<S>>,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<Response, OAuthError> {
    let client = authenticate_request(state, headers, request).await?;
    let scope = asked_scope(request)?;
    let subject = match request.subject_token.as_deref() {
        None => Subject::Absent,
        Some(token) => match state.keys.verify("at+jwt", token).await {
            None => Subject::Unverified,
            Some(claims) => {
                let session_revoked = match claims.get(SESSION_CLAIM).and_then(|s| s.as_str()) {
                    Some(family_id) => state
                        .store
                        .family_revoked(family_id)
                        .await
                        .map_err(|err| store_failure(state, err))?,
                    None => false,
                };
                Subject::Verified {
                    claims,
                    session_revoked,
                }
            }
        },
    };
    let ask = exchange::Ask {
        client_id: &client.client_id,
        subject_token_type: request.subject_token_type.as_deref(),
        requested_token_type: request.requested_token_type.as_deref(),
        audience: request.audience.as_deref(),
        resource: request.resource.as_deref(),
        scope: scope.as_ref(),
        actor_token: request.actor_token.is_some(),
    };
    let policy = state.config.exchange_policy();
    match exchange::decide(&policy, &ask, subject, state.clock.now(), random_token(16))? {
        Decision::Sign {
            claims,
            expires_in,
            scope,
            issued_token_type,
        } => {
            let (subject, audience) = (claims.get("sub").cloned(), claims.get("aud").cloned());
            let access_token = sign(state, claims).await?;
            tracing::debug!(client_id = %client.client_id, ?subject, ?audience, "token exchanged");
            Ok(answer_json(
                json!({"access_token": access_token, "issued_token_type": issued_token_type,
                                  "token_type": "Bearer", "expires_in": expires_in, "scope": scope}),
            ))
        }
        Decision::Upstream { backend, session } => {
            upstream_exchange(state, &client.client_id, backend, &session).await
        }
    }
}

/// The identity provider's access token for `backend`, for the user of the sign-in `session`:
/// the one kept while it has more than a minute to live, else a fresh one asked with the
/// sign-in's upstream refresh token, under a lease, so that concurrent exchanges of one sign-in
/// (a gateway's first burst of calls, several replicas) ask the provider once: a provider that
/// rotates refresh tokens takes a second use for a replay. The provider's token goes to the
/// gateway the configuration lists for this backend, never to the MCP client.
async fn upstream_exchange<S: Store>(
    state: &AppState<S>,
    client_id: &str,
    backend: &Backend,
    session: &str,
) -> Result<Response, OAuthError> {
    let (Some(federated), Some(sealer)) = (state.upstream.federated(), state.sealer.as_ref())
    else {
        tracing::error!(
            "an `issuer: upstream` audience without a federated upstream and its encryption key"
        );
        return Err(OAuthError::server_error());
    };
    let asked = backend.upstream_request();
    let mut waits = 0;
    loop {
        let now = state.clock.now();
        let tokens = kept_session(state, sealer, session).await?;
        if let Some(kept) = tokens.backend_token(&backend.audience, &asked, now) {
            return Ok(upstream_answer(client_id, backend, kept, now));
        }
        let leased = state
            .store
            .lease_upstream(session, now, now + LEASE_SECONDS)
            .await
            .map_err(|err| store_failure(state, err))?;
        if !leased {
            waits += 1;
            if waits > LEASE_WAITS {
                return Err(OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "another request is fetching this token; try again shortly",
                ));
            }
            tokio::time::sleep(LEASE_POLL).await;
            continue;
        }
        let fetched = fetch_leased(state, federated, sealer, backend, session, now).await;
        return fetched.map(|token| upstream_answer(client_id, backend, &token, now));
    }
}

/// Fetches a backend token under the sign-in's lease, and gives the lease back whatever
/// happens: with the upstream session as the provider left it (a rotated refresh token, the
/// new backend token kept), or untouched.
async fn fetch_leased<S: Store>(
    state: &AppState<S>,
    federated: Federated<'_>,
    sealer: &Sealer,
    backend: &Backend,
    session: &str,
    now: i64,
) -> Result<BackendToken, OAuthError> {
    let fetched = fetch_backend_token(state, federated, sealer, backend, session, now).await;
    let stored = match &fetched {
        Ok((_, Some(kept))) => match serde_json::to_vec(kept) {
            Ok(plain) => {
                state
                    .store
                    .save_leased_upstream(session, &sealer.seal(&plain), now)
                    .await
            }
            Err(err) => {
                tracing::error!(error = %err, "an upstream session could not be serialized");
                state.store.release_upstream_lease(session).await
            }
        },
        _ => state.store.release_upstream_lease(session).await,
    };
    if let Err(err) = stored {
        // Unstored, a rotated upstream refresh token is lost and the user signs in again once
        // the provider refuses the old one; a lease not given back expires by itself.
        tracing::error!(error = %err, "could not store the upstream session after a backend token was fetched");
    }
    fetched.map(|(token, _)| token)
}

/// The backend token, read again under the lease (the previous holder may just have kept a
/// fresh one) or asked of the provider, with the session to store if the provider was asked.
async fn fetch_backend_token<S: Store>(
    state: &AppState<S>,
    federated: Federated<'_>,
    sealer: &Sealer,
    backend: &Backend,
    session: &str,
    now: i64,
) -> Result<(BackendToken, Option<UpstreamTokens>), OAuthError> {
    let asked = backend.upstream_request();
    let tokens = kept_session(state, sealer, session).await?;
    if let Some(kept) = tokens.backend_token(&backend.audience, &asked, now) {
        return Ok((kept.clone(), None));
    }
    let (access, mut kept) = federated
        .backend_token(
            &tokens,
            backend.upstream_resource.as_deref(),
            &backend.upstream_scopes,
        )
        .await
        .map_err(|err| {
            state.metrics.upstream_failed(&err);
            tracing::warn!(error = %err, audience = %backend.audience, "the identity provider did not issue a backend token");
            err.for_exchange()
        })?;
    let lifetime = access
        .expires_in
        .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
    let token = BackendToken {
        access_token: access.access_token,
        expires_at: now.saturating_add(lifetime),
        scope: access.scope,
        asked,
    };
    kept.keep(&backend.audience, token.clone(), now);
    Ok((token, Some(kept)))
}

/// The upstream session kept for a sign-in, opened.
async fn kept_session<S: Store>(
    state: &AppState<S>,
    sealer: &Sealer,
    session: &str,
) -> Result<UpstreamTokens, OAuthError> {
    let sealed = state
        .store
        .upstream_tokens(session)
        .await
        .map_err(|err| store_failure(state, err))?
        .ok_or_else(|| {
            OAuthError::invalid_grant(
                "the sign-in behind the subject_token kept no session with the identity provider; the user must sign in again",
            )
        })?;
    sealer
        .open(&sealed)
        .ok()
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .ok_or_else(|| {
            tracing::error!(
                "a stored upstream session cannot be decrypted (was encryption_key_file changed?)"
            );
            OAuthError::server_error()
        })
}

/// The RFC 8693 §2.2.1 answer with the provider's token (its lifetime unknown: no `expires_in`).
fn upstream_answer(client_id: &str, backend: &Backend, token: &BackendToken, now: i64) -> Response {
    let mut body = json!({"access_token": token.access_token, "issued_token_type": exchange::ACCESS_TOKEN_TYPE,
                          "token_type": "Bearer"});
    if token.expires_at > now {
        body["expires_in"] = json!(token.expires_at - now);
    }
    if let Some(scope) = &token.scope {
        body["scope"] = json!(scope);
    }
    tracing::debug!(client_id, audience = %backend.audience, "token exchanged for the identity provider's");
    answer_json(body)
}

/// Stores the gateways `token_exchange.gateways` declares (their secret hashed, as a
/// registration's), so that they authenticate like any confidential client; run at start.
pub async fn provision_gateways<S: Store>(
    store: &S,
    config: &crate::config::Config,
    now: i64,
) -> anyhow::Result<()> {
    /// A secret shorter than this is refused: it would be guessable.
    const MIN_SECRET_BYTES: usize = 16;
    for gateway in &config.token_exchange.gateways {
        let path = &gateway.client_secret_file;
        let secret = std::fs::read_to_string(path)
            .map_err(|err| {
                anyhow::anyhow!(
                    "token_exchange.gateways: `{}`: client_secret_file {}: {err}",
                    gateway.client_id,
                    path.display()
                )
            })?
            .trim()
            .to_owned();
        if secret.len() < MIN_SECRET_BYTES {
            anyhow::bail!(
                "token_exchange.gateways: `{}`: client_secret_file {} holds {} bytes; use at least {MIN_SECRET_BYTES} random ones (`openssl rand -base64 32`)",
                gateway.client_id,
                path.display(),
                secret.len()
            );
        }
        let client = StoredClient {
            client_id: gateway.client_id.clone(),
            secret_sha256: Some(sha256_hex(&secret)),
            metadata: json!({"client_name": "token exchange gateway (token_exchange.gateways)",
                             "grant_types": [exchange::GRANT_TYPE],
                             "token_endpoint_auth_method": "client_secret_basic"}),
            created_at: now,
            last_used_at: Some(now),
        };
        store.put_client(&client).await?;
        tracing::info!(client_id = %client.client_id, "token exchange gateway client stored");
    }
    Ok(())
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
    // The backends of token exchange are served too: a backend may introspect its tokens.
    let served: Vec<String> = state
        .config
        .resources
        .iter()
        .chain(
            state
                .config
                .token_exchange
                .audiences
                .iter()
                .map(|b| &b.audience),
        )
        .cloned()
        .collect();
    let context = IntrospectionContext {
        issuer: state.config.issuer_str(),
        resources: &served,
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
/// The client a request authenticates as (RFC 6749 §2.3): with a JWT it signed or its workload
/// platform signed (RFC 7523 §2.2), or with its secret; never with both.
async fn authenticate_request<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<StoredClient, OAuthError> {
    match (
        request.client_assertion_type.as_deref(),
        request.client_assertion.as_deref(),
    ) {
        (None, None) => {
            authenticate(
                state,
                headers,
                request.client_id.as_deref(),
                request.client_secret.as_deref(),
            )
            .await
        }
        (Some(CLIENT_ASSERTION_TYPE), Some(assertion)) => {
            if basic(headers).is_some() || request.client_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "authenticate with one method only: a client assertion or a secret",
                ));
            }
            by_assertion(state, assertion, request.client_id.as_deref()).await
        }
        (Some(other), Some(_)) => Err(OAuthError::invalid_client(format!(
            "client_assertion_type `{}` is not supported; use `{CLIENT_ASSERTION_TYPE}`",
            other.chars().take(100).collect::<String>()
        ))),
        _ => Err(OAuthError::invalid_request(
            "client_assertion and client_assertion_type go together",
        )),
    }
}

/// A machine client's JWT authentication: the presenter's keys verify it, `oauth::
/// client_assertion` judges its claims, and a key-signed one is spent (its `jti` remembered).
async fn by_assertion<S: Store>(
    state: &AppState<S>,
    text: &str,
    client_id: Option<&str>,
) -> Result<StoredClient, OAuthError> {
    let refused = |err: AssertionError| {
        tracing::info!(reason = %err, "client assertion refused");
        // Who is registered, and with which keys, is not told: an unknown client, a workload
        // bound to none and a wrong key answer alike (the log has the detail).
        let description = match err {
            AssertionError::UnknownClient(_)
            | AssertionError::UnboundWorkload { .. }
            | AssertionError::UnknownKey(_)
            | AssertionError::BadSignature => {
                "the client assertion is not signed by a registered machine client's key or a workload bound to one".to_owned()
            }
            other => other.to_string(),
        };
        OAuthError::invalid_client(description)
    };
    let assertion = client_assertion::parse(text).map_err(refused)?;
    let presenter = Presenter::of(&assertion, &state.machines.platforms()).map_err(refused)?;
    let verified = state
        .machines
        .verify(&assertion, &presenter)
        .await
        .map_err(|err| match err {
            VerifyError::Refused(refusal) => refused(refusal),
            VerifyError::Unreachable { .. } => {
                tracing::warn!(error = %err, "a client assertion could not be checked");
                OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the keys that sign this client's assertions could not be fetched; try again shortly",
                )
            }
        })?;
    if client_id.is_some_and(|id| id != verified.client.client_id) {
        return Err(OAuthError::invalid_client(
            "client_id is not the client the assertion authenticates",
        ));
    }
    let expect = client_assertion::Expectations {
        issuer: state.config.issuer_str(),
        max_lifetime: verified.max_lifetime,
    };
    let now = state.clock.now();
    let accepted =
        client_assertion::decide(&assertion, &expect, verified.single_use, now).map_err(refused)?;
    if let Some((key, until)) = accepted.replay {
        let fresh = state
            .store
            .use_assertion(&key, until, now)
            .await
            .map_err(|err| store_failure(state, err))?;
        if !fresh {
            return Err(refused(AssertionError::Replayed));
        }
    }
    Ok(verified.client)
}

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
            app_with(clock, Upstream::new(None), None, "").await
        }

        /// As [`app_at`], with an identity provider, the sealer of upstream sessions and more
        /// configuration (YAML).
        async fn app_with(
            clock: std::sync::Arc<dyn crate::oauth::Clock>,
            upstream: Upstream,
            sealer: Option<crate::crypto::Sealer>,
            yaml: &str,
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
                (
                    "agent",
                    Some(hex(&sha2::Sha256::digest(b"agent-secret"))),
                    json!({"grant_types": [JWT_BEARER]}),
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
                "issuer: https://auth.example.com\nresources: [{RESOURCE}]\n{yaml}"
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
            post_as(app, Some("m2m:s3cret"), path, content_type, body).await
        }

        /// A POST with `credentials` (`id:secret`) as Basic authentication, if any.
        async fn post_as(
            app: &Router,
            credentials: Option<&str>,
            path: &str,
            content_type: &str,
            body: impl Into<Body>,
        ) -> (u16, Value) {
            let mut request = Request::post(path).header("content-type", content_type);
            if let Some(credentials) = credentials {
                request = request.header(
                    "authorization",
                    format!("Basic {}", STANDARD.encode(credentials)),
                );
            }
            let request = request.body(body.into()).unwrap();
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
            assert_eq!(
                purged.clients, 2,
                "the public client and the enterprise agent nobody used go"
            );
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
                        ..UpstreamTokens::default()
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
                ..UpstreamTokens::default()
            })
            .unwrap();
            let sealed = sealer.seal(&upstream_session);
            let (_dir, app, store) = app_with(
                std::sync::Arc::new(crate::oauth::SystemClock),
                Upstream::new(Some(Box::new(RotatingProvider(calls.clone())))),
                Some(sealer),
                "",
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

        /// The claims of a JWT in a token answer.
        fn payload(token: &Value) -> Value {
            let part = token.as_str().unwrap().split('.').nth(1).unwrap();
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(part)
                    .unwrap(),
            )
            .unwrap()
        }

        /// The authorization server metadata document.
        async fn metadata(app: &Router) -> Value {
            let request = Request::get("/.well-known/oauth-authorization-server")
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }

        mod id_jag {
            use super::*;
            use crate::idp::enterprise::testing::{JwksServer, Key};
            use crate::oauth::clock::ManualClock;
            use crate::oauth::id_jag::ID_JAG_TYP;

            const T0: i64 = 1_700_000_000;
            const IDP: &str = "https://idp.example.com/oauth2/default";

            fn claims(jti: &str) -> Value {
                json!({"iss": IDP, "sub": "00u1alice", "aud": "https://auth.example.com",
                       "client_id": "agent", "jti": jti, "iat": T0, "exp": T0 + 300,
                       "resource": RESOURCE, "scope": "mcp:tools mcp:admin",
                       "groups": ["mcp-developers", "Everyone"]})
            }

            fn exchange_body(assertion: &str, extra: &str) -> String {
                format!("grant_type={JWT_BEARER}&assertion={assertion}{extra}")
            }

            async fn exchange(app: &Router, as_client: Option<&str>, body: &str) -> (u16, Value) {
                post_as(
                    app,
                    as_client,
                    "/oauth/token",
                    "application/x-www-form-urlencoded",
                    body.to_owned(),
                )
                .await
            }

            #[tokio::test]
            async fn an_id_jag_is_exchanged_once_for_a_token_of_its_user_resource_and_scope() {
                let idp = Key::new("idp-1");
                let jwks = JwksServer::start(&[&idp]).await;
                let clock = std::sync::Arc::new(ManualClock::at(T0 + 5));
                let yaml = format!(
                    "scopes: [mcp:tools, mcp:admin, offline_access]\ngroups: {{prefix: mcp-}}\n\
                     enterprise: {{issuers: [{{issuer: \"{IDP}\", jwks_uri: \"{}\", allow_http_issuer: true, groups_claim: groups}}]}}\n",
                    jwks.url
                );
                let (_dir, app, _) =
                    app_with(clock.clone(), Upstream::new(None), None, &yaml).await;
                let header = json!({"typ": ID_JAG_TYP, "kid": "idp-1"});
                let agent = Some("agent:agent-secret");

                let good = idp.sign(header.clone(), &claims("j-1"));
                let body = exchange_body(&good, "&scope=mcp:tools+offline_access");
                let (status, issued) = exchange(&app, agent, &body).await;
                assert_eq!(status, 200, "{issued}");
                assert_eq!(issued["scope"], "mcp:tools", "asked ∩ granted ∩ offered");
                assert!(
                    issued.get("refresh_token").is_none(),
                    "a fresh ID-JAG replaces it"
                );
                let token = payload(&issued["access_token"]);
                assert_eq!(token["aud"], RESOURCE);
                assert_eq!(token["sub"], "00u1alice");
                assert_eq!(token["client_id"], "agent");
                assert_eq!(token["iss"], "https://auth.example.com");
                assert_eq!(
                    token["groups"],
                    json!(["mcp-developers"]),
                    "prefix-filtered"
                );

                let (status, replayed) = exchange(&app, agent, &body).await;
                assert_eq!(
                    (status, replayed["error"].as_str()),
                    (400, Some("invalid_grant"))
                );
                assert!(replayed["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("already used"));

                let refused = |assertion: String, who: Option<&'static str>| {
                    let app = app.clone();
                    async move {
                        let (status, body) =
                            exchange(&app, who, &exchange_body(&assertion, "")).await;
                        (
                            status,
                            body["error"].as_str().unwrap_or_default().to_owned(),
                            body["error_description"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        )
                    }
                };
                let forged = Key::new("idp-1").sign(header.clone(), &claims("j-2"));
                let (status, error, why) = refused(forged, agent).await;
                assert_eq!((status, error.as_str()), (400, "invalid_grant"));
                assert!(why.contains("signature"), "{why}");

                let mut stranger = claims("j-3");
                stranger["iss"] = json!("https://evil.example.com");
                let (_, error, why) = refused(idp.sign(header.clone(), &stranger), agent).await;
                assert_eq!(error, "invalid_grant");
                assert!(why.contains("not a trusted"), "{why}");

                let (_, error, _) = refused(
                    idp.sign(json!({"typ": "JWT", "kid": "idp-1"}), &claims("j-4")),
                    agent,
                )
                .await;
                assert_eq!(error, "invalid_grant", "an ID token is no ID-JAG");

                let (status, error, _) =
                    refused(idp.sign(header.clone(), &claims("j-5")), Some("m2m:s3cret")).await;
                assert_eq!(
                    (status, error.as_str()),
                    (400, "unauthorized_client"),
                    "not registered for the grant"
                );

                let public = format!(
                    "{}&client_id=app",
                    exchange_body(&idp.sign(header.clone(), &claims("j-6")), "")
                );
                let (status, public) = exchange(&app, None, &public).await;
                assert_eq!(
                    (status, public["error"].as_str()),
                    (401, Some("invalid_client")),
                    "confidential clients only"
                );

                clock.advance(300 + crate::oauth::id_jag::CLOCK_SKEW_SECONDS);
                let (_, error, why) =
                    refused(idp.sign(header.clone(), &claims("j-7")), agent).await;
                assert_eq!(error, "invalid_grant");
                assert!(why.contains("expired"), "{why}");

                let advertised = metadata(&app).await;
                assert!(advertised["grant_types_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(JWT_BEARER)));
                assert_eq!(
                    advertised["authorization_grant_profiles_supported"],
                    json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
                );
                jwks.stop();
            }

            #[tokio::test]
            async fn without_an_enterprise_section_the_grant_is_unsupported_and_not_advertised() {
                let (_dir, app) = app().await;
                let assertion = Key::new("k").sign(json!({"typ": ID_JAG_TYP}), &claims("j"));
                let (status, body) = exchange(
                    &app,
                    Some("agent:agent-secret"),
                    &exchange_body(&assertion, ""),
                )
                .await;
                assert_eq!(
                    (status, body["error"].as_str()),
                    (400, Some("unsupported_grant_type"))
                );
                let advertised = metadata(&app).await;
                assert!(!advertised["grant_types_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(JWT_BEARER)));
                assert!(advertised
                    .get("authorization_grant_profiles_supported")
                    .is_none());
            }
        }

        mod machine_clients {
            use super::*;
            use crate::idp::enterprise::testing::{JwksServer, Key};
            use crate::oauth::client_assertion::CLIENT_ASSERTION_TYPE;
            use crate::oauth::clock::ManualClock;

            const T0: i64 = 1_700_000_000;
            const ISSUER: &str = "https://auth.example.com";
            const K8S: &str = "https://kubernetes.example.com";
            const SALES: &str = "system:serviceaccount:agents:sales";

            fn body(assertion: &str) -> String {
                format!("grant_type=client_credentials&client_assertion_type={CLIENT_ASSERTION_TYPE}&client_assertion={assertion}")
            }

            async fn token(app: &Router, body: String) -> (u16, Value) {
                post_as(
                    app,
                    None,
                    "/oauth/token",
                    "application/x-www-form-urlencoded",
                    body,
                )
                .await
            }

            /// A machine client `reporter` with its own key, and `sales` bound to a workload of
            /// a platform whose keys `platform_jwks` serves.
            async fn machines(key: &Key, platform_jwks: &str) -> Router {
                let clock = std::sync::Arc::new(ManualClock::at(T0));
                let yaml = format!(
                    "workload_identity: {{issuers: [{{issuer: \"{K8S}\", jwks_uri: \"{platform_jwks}\", allow_http_issuer: true}}]}}\n\
                     machine_clients:\n\
                     - {{client_id: reporter, groups: [mcp-platform], jwks: {{keys: [{}]}}}}\n\
                     - {{client_id: sales, scope: mcp:tools, workload: {{issuer: \"{K8S}\", subject: \"{SALES}\"}}}}\n",
                    key.jwk()
                );
                app_with(clock, Upstream::new(None), None, &yaml).await.1
            }

            #[tokio::test]
            async fn a_client_signs_for_itself_once_per_assertion_and_gets_its_groups() {
                let (own, platform) = (Key::new("reporter-1"), Key::new("k8s-1"));
                let jwks = JwksServer::start(&[&platform]).await;
                let app = machines(&own, &jwks.url).await;
                let assertion = own.sign(json!({"typ": "JWT", "kid": "reporter-1"}),
                    &json!({"iss": "reporter", "sub": "reporter", "aud": ISSUER, "iat": T0, "exp": T0 + 60, "jti": "a-1"}));
                let (status, issued) = token(&app, body(&assertion)).await;
                assert_eq!(status, 200, "{issued}");
                let claims = payload(&issued["access_token"]);
                assert_eq!(
                    (claims["sub"].as_str(), claims["client_id"].as_str()),
                    (Some("reporter"), Some("reporter"))
                );
                assert_eq!(claims["groups"], json!(["mcp-platform"]));
                assert_eq!(issued["scope"], "mcp:tools");
                let (status, replayed) = token(&app, body(&assertion)).await;
                assert_eq!(
                    (status, replayed["error"].as_str()),
                    (401, Some("invalid_client"))
                );
                assert!(replayed["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("already used"));

                let forged = Key::new("reporter-1").sign(json!({"typ": "JWT", "kid": "reporter-1"}),
                    &json!({"iss": "reporter", "sub": "reporter", "aud": ISSUER, "iat": T0, "exp": T0 + 60, "jti": "a-2"}));
                let (status, refused) = token(&app, body(&forged)).await;
                assert_eq!(
                    (status, refused["error"].as_str()),
                    (401, Some("invalid_client")),
                    "{refused}"
                );
                let stranger = own.sign(json!({"kid": "reporter-1"}),
                    &json!({"iss": "nobody", "sub": "nobody", "aud": ISSUER, "exp": T0 + 60, "jti": "a-3"}));
                let (status, refused) = token(&app, body(&stranger)).await;
                assert_eq!(
                    (status, refused["error"].as_str()),
                    (401, Some("invalid_client")),
                    "{refused}"
                );
                let with_secret = format!("{}&client_secret=x", body(&assertion));
                let (status, refused) = token(&app, with_secret).await;
                assert_eq!(
                    (status, refused["error"].as_str()),
                    (400, Some("invalid_request")),
                    "{refused}"
                );
            }

            #[tokio::test]
            async fn a_workload_token_of_a_trusted_platform_authenticates_its_bound_client() {
                let (own, platform) = (Key::new("reporter-1"), Key::new("k8s-1"));
                let jwks = JwksServer::start(&[&platform]).await;
                let app = machines(&own, &jwks.url).await;
                let projected = |subject: &str| {
                    platform.sign(json!({"kid": "k8s-1"}),
                    &json!({"iss": K8S, "sub": subject, "aud": [ISSUER], "iat": T0 - 60, "exp": T0 + 3540}))
                };
                let sales = projected(SALES);
                for _ in 0..2 {
                    let (status, issued) = token(&app, body(&sales)).await;
                    assert_eq!(
                        status, 200,
                        "a projected token is reused until it expires: {issued}"
                    );
                    assert_eq!(payload(&issued["access_token"])["sub"], "sales");
                }
                let (status, refused) =
                    token(&app, body(&projected("system:serviceaccount:agents:other"))).await;
                assert_eq!(
                    (status, refused["error"].as_str()),
                    (401, Some("invalid_client"))
                );
                assert!(
                    refused["error_description"]
                        .as_str()
                        .unwrap()
                        .contains("a workload bound to one"),
                    "{refused}"
                );
                let (status, refused) =
                    token(&app, format!("{}&client_id=reporter", body(&sales))).await;
                assert_eq!(
                    (status, refused["error"].as_str()),
                    (401, Some("invalid_client")),
                    "{refused}"
                );
                let advertised = metadata(&app).await;
                assert!(advertised["token_endpoint_auth_methods_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("private_key_jwt")));
                assert!(
                    advertised["token_endpoint_auth_signing_alg_values_supported"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("ES256"))
                );
            }
        }

        /// A provider that issues backend tokens slowly, counting how often it is asked, and
        /// rotates the refresh token it is given (only the one kept at sign-in).
        struct BackendTokens(std::sync::Arc<std::sync::atomic::AtomicUsize>);

        impl crate::idp::IdentityProvider for BackendTokens {
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
                _previous: &'a User,
            ) -> crate::idp::BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>>
            {
                Box::pin(async { Err(UpstreamError::NotFederated) })
            }

            fn backend_token<'a>(
                &'a self,
                tokens: &'a UpstreamTokens,
                resource: Option<&'a str>,
                _scopes: &'a [String],
            ) -> crate::idp::BoxFuture<
                'a,
                Result<(crate::idp::oidc::UpstreamAccess, UpstreamTokens), UpstreamError>,
            > {
                Box::pin(async move {
                    let call = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if tokens.refresh_token.as_deref() != Some("upstream-1") {
                        return Err(UpstreamError::SessionEnded("refresh token reused".into()));
                    }
                    let access = crate::idp::oidc::UpstreamAccess {
                        access_token: format!("idp-token-{call}-for-{}", resource.unwrap_or("-")),
                        expires_in: Some(3600),
                        scope: None,
                    };
                    Ok((access, tokens.rotated(Some("upstream-2".into()))))
                })
            }
        }

        #[tokio::test]
        async fn concurrent_exchanges_of_one_sign_in_ask_the_provider_once() {
            let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let sealer = crate::crypto::Sealer::derived("test", b"upstream sessions");
            let session = UpstreamTokens {
                refresh_token: Some("upstream-1".into()),
                ..UpstreamTokens::default()
            };
            let sealed = sealer.seal(&serde_json::to_vec(&session).unwrap());
            let yaml = "upstream: {type: oidc, issuer_url: https://idp.example.com, client_id: c, client_secret_file: /s}\n\
                        encryption_key_file: /k\n\
                        token_exchange: {audiences: [{audience: https://jira/mcp, clients: [m2m], scopes: [mcp:tools], \
                        issuer: upstream, upstream_resource: https://jira}]}\n";
            let (_dir, app, store) = app_with(
                std::sync::Arc::new(crate::oauth::SystemClock),
                Upstream::new(Some(Box::new(BackendTokens(calls.clone())))),
                Some(sealer),
                yaml,
            )
            .await;
            let now = crate::oauth::Clock::now(&crate::oauth::SystemClock);
            let grant = Grant {
                client_id: "m2m".into(),
                resource: RESOURCE.into(),
                scope: "mcp:tools".into(),
                user: User {
                    subject: "okta|alice".into(),
                    email: None,
                    name: None,
                    groups: vec![],
                    roles: vec![],
                },
                redirect_uri: "http://127.0.0.1/cb".into(),
                code_challenge: base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(b"verifier")),
            };
            store
                .save_code(&sha256_hex("code-1"), &grant, "fam", now + 60)
                .await
                .unwrap();
            store
                .save_upstream_tokens("fam", &sealed, now)
                .await
                .unwrap();
            let (status, signed_in) = form(
                &app,
                "/oauth/token",
                "grant_type=authorization_code&code=code-1&code_verifier=verifier&redirect_uri=http://127.0.0.1/cb",
            )
            .await;
            assert_eq!(status, 200, "{signed_in}");
            let subject_token = signed_in["access_token"].as_str().unwrap().to_owned();
            let mut requests = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (app, body) = (
                    app.clone(),
                    format!(
                        "grant_type={}&subject_token={subject_token}&subject_token_type={}&audience=https://jira/mcp",
                        exchange::GRANT_TYPE,
                        exchange::ACCESS_TOKEN_TYPE
                    ),
                );
                requests.spawn(async move { form(&app, "/oauth/token", &body).await });
            }
            let issued: std::collections::BTreeSet<String> = requests
                .join_all()
                .await
                .into_iter()
                .map(|(status, body)| {
                    assert_eq!(status, 200, "{body}");
                    body["access_token"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(
                issued.into_iter().collect::<Vec<_>>(),
                ["idp-token-0-for-https://jira"],
                "one token for every request"
            );
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
            let kept = store.upstream_tokens("fam").await.unwrap().unwrap();
            let kept: UpstreamTokens = serde_json::from_slice(
                &crate::crypto::Sealer::derived("test", b"upstream sessions")
                    .open(&kept)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(
                kept.refresh_token.as_deref(),
                Some("upstream-2"),
                "the rotated refresh token is kept"
            );
        }

        /// A provider whose upstream refresh token is good once (it rotates on every use, with no
        /// grace), whether the use is a refresh or a backend token; it records a second use.
        struct OneUseSession {
            current: std::sync::Arc<std::sync::Mutex<String>>,
            reused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        }

        impl OneUseSession {
            async fn spend(
                &self,
                tokens: &UpstreamTokens,
            ) -> Result<UpstreamTokens, UpstreamError> {
                let presented = tokens.refresh_token.clone().unwrap_or_default();
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let mut current = self.current.lock().unwrap();
                if *current != presented {
                    self.reused
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return Err(UpstreamError::SessionEnded("refresh token reused".into()));
                }
                *current = format!("{presented}+");
                Ok(tokens.rotated(Some(current.clone())))
            }
        }

        impl crate::idp::IdentityProvider for OneUseSession {
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
                tokens: &'a UpstreamTokens,
                previous: &'a User,
            ) -> crate::idp::BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>>
            {
                Box::pin(async move { Ok((previous.clone(), self.spend(tokens).await?)) })
            }

            fn backend_token<'a>(
                &'a self,
                tokens: &'a UpstreamTokens,
                _resource: Option<&'a str>,
                _scopes: &'a [String],
            ) -> crate::idp::BoxFuture<
                'a,
                Result<(crate::idp::oidc::UpstreamAccess, UpstreamTokens), UpstreamError>,
            > {
                Box::pin(async move {
                    let rotated = self.spend(tokens).await?;
                    let access = crate::idp::oidc::UpstreamAccess {
                        access_token: "idp-backend-token".into(),
                        expires_in: Some(3600),
                        scope: None,
                    };
                    Ok((access, rotated))
                })
            }
        }

        #[tokio::test]
        async fn a_refresh_and_an_exchange_of_one_sign_in_never_spend_its_upstream_token_twice() {
            let current = std::sync::Arc::new(std::sync::Mutex::new("upstream-1".to_owned()));
            let reused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let sealer = crate::crypto::Sealer::derived("test", b"upstream sessions");
            let session = UpstreamTokens {
                refresh_token: Some("upstream-1".into()),
                ..UpstreamTokens::default()
            };
            let sealed = sealer.seal(&serde_json::to_vec(&session).unwrap());
            let yaml = "upstream: {type: oidc, issuer_url: https://idp.example.com, client_id: c, client_secret_file: /s}\n\
                        encryption_key_file: /k\n\
                        token_exchange: {audiences: [{audience: https://jira/mcp, clients: [m2m], scopes: [mcp:tools], \
                        issuer: upstream, upstream_resource: https://jira}]}\n";
            let provider = OneUseSession {
                current: current.clone(),
                reused: reused.clone(),
            };
            let (_dir, app, store) = app_with(
                std::sync::Arc::new(crate::oauth::SystemClock),
                Upstream::new(Some(Box::new(provider))),
                Some(sealer),
                yaml,
            )
            .await;
            let now = crate::oauth::Clock::now(&crate::oauth::SystemClock);
            let grant = Grant {
                client_id: "app".into(),
                resource: RESOURCE.into(),
                scope: "mcp:tools offline_access".into(),
                user: User {
                    subject: "okta|alice".into(),
                    email: None,
                    name: None,
                    groups: vec![],
                    roles: vec![],
                },
                redirect_uri: "http://127.0.0.1/cb".into(),
                code_challenge: base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(b"verifier")),
            };
            store
                .save_code(&sha256_hex("code-2"), &grant, "fam-2", now + 60)
                .await
                .unwrap();
            store
                .save_upstream_tokens("fam-2", &sealed, now)
                .await
                .unwrap();
            let (status, signed_in) = post_as(
                &app,
                None,
                "/oauth/token",
                "application/x-www-form-urlencoded",
                "grant_type=authorization_code&client_id=app&code=code-2&code_verifier=verifier&redirect_uri=http://127.0.0.1/cb",
            )
            .await;
            assert_eq!(status, 200, "{signed_in}");
            let (access, refresh) = (
                signed_in["access_token"].as_str().unwrap().to_owned(),
                signed_in["refresh_token"].as_str().unwrap().to_owned(),
            );
            let exchange_body = format!(
                "grant_type={}&subject_token={access}&subject_token_type={}&audience=https://jira/mcp",
                exchange::GRANT_TYPE,
                exchange::ACCESS_TOKEN_TYPE
            );
            let refresh_body =
                format!("grant_type=refresh_token&client_id=app&refresh_token={refresh}");
            let (exchanged, refreshed) = tokio::join!(
                form(&app, "/oauth/token", &exchange_body),
                post_as(
                    &app,
                    None,
                    "/oauth/token",
                    "application/x-www-form-urlencoded",
                    refresh_body
                ),
            );
            assert_eq!(exchanged.0, 200, "{}", exchanged.1);
            assert_eq!(refreshed.0, 200, "the sign-in survives: {}", refreshed.1);
            assert_eq!(
                reused.load(std::sync::atomic::Ordering::SeqCst),
                0,
                "the provider saw no token twice"
            );
            let kept = store.upstream_tokens("fam-2").await.unwrap().unwrap();
            let kept: UpstreamTokens = serde_json::from_slice(
                &crate::crypto::Sealer::derived("test", b"upstream sessions")
                    .open(&kept)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(
                kept.refresh_token.as_deref(),
                Some(current.lock().unwrap().as_str()),
                "the provider's latest refresh token is the one kept"
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

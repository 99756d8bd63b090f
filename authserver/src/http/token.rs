//! `/oauth/token` (RFC 6749 §3.2) and `/oauth/revoke` (RFC 7009): authorization codes with PKCE,
//! rotating refresh tokens whose reuse revokes the family, and `client_credentials` for
//! confidential machine clients (seed 004), whose tokens carry the client as `sub`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map};
use sha2::{Digest, Sha256};

use crate::http::{hex, now, oauth_error, random_token, AppState, Lookup, Metrics};
use crate::idp::oidc::{Federated, UpstreamError, UpstreamTokens};
use crate::oauth::grant::{access_claims, Grant, User};
use crate::store::{Redeemed, Store, StoredClient};

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

pub async fn token<S: Store>(
    state: State<Arc<AppState<S>>>,
    headers: HeaderMap,
    form: Form<TokenRequest>,
) -> Response {
    let counters = Arc::clone(&state.0);
    let response = grant(state, headers, form).await;
    if !response.status().is_success() {
        Metrics::bump(&counters.metrics.token_errors);
    }
    response
}

async fn grant<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Form(request): Form<TokenRequest>,
) -> Response {
    match request.grant_type.as_deref() {
        Some("client_credentials") => client_credentials(&state, &headers, request).await,
        Some("authorization_code") => authorization_code(&state, &headers, request).await,
        Some("refresh_token") => refresh(&state, &headers, request).await,
        Some(other) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant type `{other}` is not supported here"),
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
    }
}

async fn client_credentials<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    request: TokenRequest,
) -> Response {
    let client = match authenticate(state, headers, &request).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let allowed_grant = client.metadata["grant_types"]
        .as_array()
        .is_some_and(|g| g.iter().any(|g| g == "client_credentials"));
    if !allowed_grant {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client is not registered for client_credentials",
        );
    }
    let config = &state.config;
    let resource = match request.resource.as_deref() {
        Some(resource) if config.resources.iter().any(|r| r == resource) => resource.to_owned(),
        Some(resource) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                &format!("`{resource}` is not a resource of this server"),
            )
        }
        None if config.resources.len() == 1 => config.resources[0].clone(),
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "name the MCP resource with the `resource` parameter (RFC 8707)",
            )
        }
    };
    let registered: Vec<&str> = client.metadata["scope"]
        .as_str()
        .map(|s| s.split_ascii_whitespace().collect())
        .unwrap_or_default();
    let requested: Vec<&str> = request
        .scope
        .as_deref()
        .map(|s| s.split_ascii_whitespace().collect())
        .unwrap_or_else(|| registered.clone());
    if let Some(scope) = requested
        .iter()
        .find(|s| !registered.contains(s) || **s == "offline_access")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("scope `{scope}` is not granted to this client"),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let lifetime = config.lifetimes.access_seconds;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(config.issuer_str()));
    claims.insert("sub".into(), json!(client.client_id));
    claims.insert("aud".into(), json!(resource));
    claims.insert("client_id".into(), json!(client.client_id));
    claims.insert("scope".into(), json!(requested.join(" ")));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + lifetime));
    claims.insert("jti".into(), json!(random_token(16)));
    let access_token = match state.keys.sign("at+jwt", claims) {
        Ok(token) => token,
        Err(err) => {
            tracing::error!(error = %err, "could not sign an access token");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the token could not be signed",
            );
        }
    };
    Metrics::bump(&state.metrics.tokens_issued);
    tracing::info!(client_id = %client.client_id, resource = %resource, "client_credentials token issued");
    let body = json!({"access_token": access_token, "token_type": "Bearer", "expires_in": lifetime, "scope": requested.join(" ")});
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

async fn authorization_code<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    request: TokenRequest,
) -> Response {
    let client = match identify(state, headers, &request).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let (Some(code), Some(verifier)) = (request.code.as_deref(), request.code_verifier.as_deref())
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code and code_verifier are required",
        );
    };
    let redeemed = state
        .store
        .redeem_code(&hex(&Sha256::digest(code.as_bytes())), now())
        .await;
    // RFC 6749 §4.1.2: a code used twice revokes what it issued.
    let (grant, family_id) =
        match checked_grant(state, redeemed, &client, &request, "authorization code").await {
            Ok(found) => found,
            Err(response) => return response,
        };
    if request.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return invalid_grant("redirect_uri does not match the authorization request");
    }
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.code_challenge {
        return invalid_grant("the PKCE code_verifier does not match the code_challenge");
    }
    issue(state, grant, &family_id).await
}

async fn refresh<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    request: TokenRequest,
) -> Response {
    let client = match identify(state, headers, &request).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let Some(token) = request.refresh_token.as_deref() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is required",
        );
    };
    let token_hash = hex(&Sha256::digest(token.as_bytes()));
    let redeemed = state.store.redeem_refresh(&token_hash, now()).await;
    let (mut grant, family_id) =
        match checked_grant(state, redeemed, &client, &request, "refresh token").await {
            Ok(found) => found,
            Err(response) => return response,
        };
    if let Some(narrower) = request.scope.as_deref() {
        if let Some(extra) = narrower
            .split_ascii_whitespace()
            .find(|s| !grant.has_scope(s))
        {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                &format!("scope `{extra}` was not granted"),
            );
        }
        grant.scope = narrower.to_owned();
    }
    if let Some(federated) = state.upstream.federated() {
        match recheck_upstream(state, &federated, &family_id, &grant.user).await {
            Ok(Some(user)) => grant.user = user,
            Ok(None) => {}
            Err(err) if err.is_transient() => {
                // Nothing is lost: the client's refresh token works again once the IdP is back.
                let _ = state.store.release_refresh(&token_hash).await;
                tracing::warn!(error = %err, "upstream unreachable during refresh");
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    &err.to_string(),
                );
            }
            Err(err) => {
                let _ = revoke_family(state, &family_id, "upstream session ended").await;
                tracing::info!(error = %err, client_id = %client.client_id, "upstream refused the refresh");
                return invalid_grant(&err.to_string());
            }
        }
    }
    issue(state, grant, &family_id).await
}

/// Asks the identity provider whether the user is still who they were (and in which groups),
/// with the upstream refresh token kept for this family. `None`: the family has no upstream
/// session (issued before federation was configured).
async fn recheck_upstream<S: Store>(
    state: &AppState<S>,
    federated: &Federated<'_>,
    family_id: &str,
    user: &User,
) -> Result<Option<User>, UpstreamError> {
    let sealer = state.sealer.as_ref();
    let sealed = match state.store.upstream_tokens(family_id).await {
        Ok(Some(sealed)) => sealed,
        Ok(None) => return Ok(None),
        Err(err) => {
            return Err(UpstreamError::Unreachable {
                issuer: "the database".into(),
                detail: err.to_string(),
            })
        }
    };
    let tokens: UpstreamTokens = sealer
        .and_then(|sealer| sealer.open(&sealed).ok())
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .ok_or_else(|| UpstreamError::Other {
            error: "undecryptable".into(),
            description:
                "the stored upstream session cannot be decrypted (was encryption_key_file changed?)"
                    .into(),
        })?;
    let (fresh, tokens) = federated.refresh(&tokens, user).await?;
    if let Some(sealer) = sealer {
        let sealed = sealer.seal(&serde_json::to_vec(&tokens).unwrap_or_default());
        if let Err(err) = state
            .store
            .save_upstream_tokens(family_id, &sealed, now())
            .await
        {
            return Err(UpstreamError::Unreachable {
                issuer: "the database".into(),
                detail: err.to_string(),
            });
        }
    }
    Ok(Some(fresh))
}

/// What a redeemed code or refresh token (`kind`) stands for, once it is known to be fresh, the
/// caller's, and for the resource asked for. A replay revokes the family it belongs to.
async fn checked_grant<S: Store>(
    state: &AppState<S>,
    redeemed: Result<Redeemed, crate::store::StoreError>,
    client: &StoredClient,
    request: &TokenRequest,
    kind: &str,
) -> Result<(Grant, String), Response> {
    let (grant, family_id) = match redeemed.map_err(store_failure)? {
        Redeemed::Fresh { grant, family_id } => (*grant, family_id),
        Redeemed::Replayed { family_id } => {
            let _ = revoke_family(state, &family_id, &format!("{kind} used twice")).await;
            tracing::warn!(client_id = %client.client_id, "{kind} used twice: its family is revoked");
            return Err(invalid_grant(&format!(
                "the {kind} was already used; sign in again"
            )));
        }
        Redeemed::Invalid => {
            return Err(invalid_grant(&format!(
                "the {kind} is unknown, expired or revoked; sign in again"
            )))
        }
    };
    if grant.client_id != client.client_id {
        return Err(invalid_grant(&format!(
            "the {kind} was issued to another client"
        )));
    }
    if request
        .resource
        .as_deref()
        .is_some_and(|r| r != grant.resource)
    {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource differs from the one authorized",
        ));
    }
    Ok((grant, family_id))
}

/// An access token for `grant`, and a rotated refresh token when `offline_access` was granted.
async fn issue<S: Store>(state: &AppState<S>, grant: Grant, family_id: &str) -> Response {
    let config = &state.config;
    let claims = access_claims(config, &grant, now() as u64, random_token(16));
    let access_token = match state.keys.sign("at+jwt", claims) {
        Ok(token) => token,
        Err(err) => {
            tracing::error!(error = %err, "could not sign an access token");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the token could not be signed",
            );
        }
    };
    let mut body = json!({"access_token": access_token, "token_type": "Bearer",
                          "expires_in": config.lifetimes.access_seconds, "scope": grant.scope});
    if grant.has_scope("offline_access") {
        let refresh_token = random_token(32);
        let expires_at = now() + config.lifetimes.refresh_seconds as i64;
        if let Err(err) = state
            .store
            .save_refresh(
                &hex(&Sha256::digest(refresh_token.as_bytes())),
                &grant,
                family_id,
                expires_at,
            )
            .await
        {
            return store_failure(err);
        }
        body["refresh_token"] = json!(refresh_token);
    }
    Metrics::bump(&state.metrics.tokens_issued);
    tracing::info!(client_id = %grant.client_id, subject = %grant.user.subject, "tokens issued");
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

#[derive(Debug, Deserialize)]
pub struct RevokeRequest {
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 7009: revoking a refresh token revokes its family. Access tokens are self-contained JWTs
/// and simply expire; the answer is 200 either way (§2.2).
pub async fn revoke<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Form(request): Form<RevokeRequest>,
) -> Response {
    let as_token_request = TokenRequest {
        grant_type: None,
        client_id: request.client_id.clone(),
        client_secret: request.client_secret.clone(),
        scope: None,
        resource: None,
        code: None,
        redirect_uri: None,
        code_verifier: None,
        refresh_token: None,
    };
    let client = match identify(&state, &headers, &as_token_request).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let Some(token) = request.token.as_deref() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    match state
        .store
        .refresh_family(&hex(&Sha256::digest(token.as_bytes())))
        .await
    {
        Ok(Some((family_id, owner))) if owner == client.client_id => {
            if let Err(err) = revoke_family(&state, &family_id, "revoked by the client").await {
                return store_failure(err);
            }
        }
        Ok(_) => {}
        Err(err) => return store_failure(err),
    }
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

/// The calling client: confidential ones authenticate, public ones name themselves.
async fn identify<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<StoredClient, Response> {
    let has_credentials =
        headers.contains_key(header::AUTHORIZATION) || request.client_secret.is_some();
    if has_credentials {
        return authenticate(state, headers, request).await;
    }
    let Some(client_id) = request.client_id.as_deref() else {
        return Err(invalid_client(false));
    };
    match state.find_client(client_id).await {
        Lookup::Found(client) if client.secret_sha256.is_none() => Ok(client),
        Lookup::StoreDown(err) => Err(store_failure(err)),
        _ => Err(invalid_client(false)),
    }
}

/// Revokes a grant family: every code and refresh token of it stops working.
async fn revoke_family<S: Store>(
    state: &AppState<S>,
    family_id: &str,
    reason: &str,
) -> Result<(), crate::store::StoreError> {
    state.store.revoke_family(family_id, reason, now()).await?;
    Metrics::bump(&state.metrics.families_revoked);
    tracing::warn!(reason, "grant family revoked");
    Ok(())
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn store_failure(err: crate::store::StoreError) -> Response {
    tracing::error!(error = %err, "storage failure at the token endpoint");
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "storage is unavailable; try again",
    )
}

/// `client_secret_basic` or `client_secret_post`; a failure is RFC 6749's `invalid_client` (401).
async fn authenticate<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<StoredClient, Response> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    let (client_id, secret) = match (basic, &request.client_id, &request.client_secret) {
        (Some(encoded), _, _) => decode_basic(encoded).ok_or_else(|| invalid_client(true))?,
        (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
        _ => return Err(invalid_client(false)),
    };
    let client = match state.store.client(&client_id).await {
        Ok(Some(client)) => client,
        Ok(None) => return Err(invalid_client(basic.is_some())),
        Err(err) => {
            tracing::error!(error = %err, "client lookup failed");
            return Err(oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "try again",
            ));
        }
    };
    let presented = hex(&Sha256::digest(secret.as_bytes()));
    match &client.secret_sha256 {
        Some(stored) if constant_time_eq(stored.as_bytes(), presented.as_bytes()) => Ok(client),
        _ => Err(invalid_client(basic.is_some())),
    }
}

fn invalid_client(basic: bool) -> Response {
    let mut response = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed (unknown client, wrong secret, or a public client)",
    );
    if basic {
        if let Ok(value) = header::HeaderValue::from_str("Basic realm=\"oauth\"") {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
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

    fn serde_urlencoded_from(text: &str) -> TokenRequest {
        let pairs: Map<String, Value> = url::form_urlencoded::parse(text.as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        serde_json::from_value(Value::Object(pairs)).unwrap()
    }
}

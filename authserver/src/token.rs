//! `/oauth/token`. So far the `client_credentials` grant of confidential clients (machine-to-
//! machine callers, as in seed 004): the token carries the client as `sub` and the requested
//! RFC 8707 resource as `aud`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map};
use sha2::{Digest, Sha256};

use crate::app::{hex, oauth_error, random_token, AppState};
use crate::store::{Store, StoredClient};

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
}

pub async fn token<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Form(request): Form<TokenRequest>,
) -> Response {
    match request.grant_type.as_deref() {
        Some("client_credentials") => client_credentials(&state, &headers, request).await,
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

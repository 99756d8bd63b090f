//! The HTTP surface: metadata, JWKS, registration, health and metrics; the browser flow and the
//! token endpoint are in their own modules.

pub mod authorize;
pub mod pages;
pub mod token;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::client_documents::{self, MetadataFetcher};
use crate::config::Config;
use crate::crypto::Sealer;
use crate::idp::{Federated, IdentityProvider};
use crate::keys::KeyRing;
use crate::oauth::registration::{self, Policy};
use crate::oauth::{Clock, OAuthError, SystemClock};
use crate::store::StoreError;
use crate::store::{Store, StoredClient};

/// Where users log in: the configured identity provider, if any.
pub struct Upstream(Option<Box<dyn IdentityProvider>>);

impl Upstream {
    pub fn new(provider: Option<Box<dyn IdentityProvider>>) -> Self {
        Self(provider)
    }

    pub fn provider(&self) -> Option<&dyn IdentityProvider> {
        self.0.as_deref()
    }

    /// The provider logins are federated to, if any.
    pub fn federated(&self) -> Option<Federated<'_>> {
        self.provider()
            .filter(|provider| provider.is_federated())
            .map(Federated)
    }
}

pub struct AppState<S> {
    pub config: Config,
    pub keys: KeyRing,
    pub store: S,
    pub upstream: Upstream,
    /// Encrypts upstream tokens at rest (with an `oidc` upstream).
    pub sealer: Option<Sealer>,
    pub client_documents: MetadataFetcher,
    limiter: RateLimiter,
    pub metrics: Metrics,
    /// Where every decision takes "now" from (a manual clock in tests).
    pub clock: Box<dyn Clock>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    registrations: AtomicU64,
    registrations_refused: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub token_errors: AtomicU64,
    pub logins_failed: AtomicU64,
    pub consents_denied: AtomicU64,
    pub families_revoked: AtomicU64,
}

impl Metrics {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Registrations per source address and minute.
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn allow(&self, source: IpAddr) -> bool {
        let Ok(mut windows) = self.windows.lock() else {
            return false;
        };
        let now = Instant::now();
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start).as_secs() < 60);
        }
        let (start, count) = windows.entry(source).or_insert((now, 0));
        if now.duration_since(*start).as_secs() >= 60 {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.per_minute
    }
}

pub fn router<S: Store>(
    config: Config,
    keys: KeyRing,
    store: S,
    upstream: Upstream,
    sealer: Option<Sealer>,
) -> Router {
    let limiter = RateLimiter::new(config.registration.per_minute);
    let issuer_path = config.issuer.path().trim_end_matches('/').to_owned();
    let client_documents = MetadataFetcher::new(config.client_metadata.clone());
    let state = Arc::new(AppState {
        config,
        keys,
        store,
        upstream,
        sealer,
        client_documents,
        limiter,
        metrics: Metrics::default(),
        clock: Box::new(SystemClock),
    });
    let mut app = Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::<S>),
        )
        .route("/.well-known/openid-configuration", get(metadata::<S>))
        .route("/.well-known/jwks.json", get(jwks::<S>))
        .route("/oauth/register", post(register::<S>))
        .route(
            "/oauth/token",
            post(token::token::<S>).layer(DefaultBodyLimit::max(token::BODY_LIMIT)),
        )
        .route(
            "/oauth/revoke",
            post(token::revoke::<S>).layer(DefaultBodyLimit::max(token::BODY_LIMIT)),
        )
        .route(
            "/oauth/introspect",
            post(token::introspect::<S>).layer(DefaultBodyLimit::max(token::BODY_LIMIT)),
        )
        .route("/oauth/authorize", get(authorize::authorize::<S>))
        .route(
            "/oauth/consent",
            get(authorize::consent_page::<S>).post(authorize::consent_submit::<S>),
        )
        .route(
            "/oauth/login",
            get(authorize::login_page::<S>).post(authorize::login_submit::<S>),
        )
        .route("/oauth/callback", get(authorize::callback::<S>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready::<S>))
        .route("/metrics", get(metrics::<S>));
    if !issuer_path.is_empty() {
        // RFC 8414 §3.1 path insertion, and the OIDC form appended to the issuer.
        app = app
            .route(
                &format!("/.well-known/oauth-authorization-server{issuer_path}"),
                get(metadata::<S>),
            )
            .route(
                &format!("/.well-known/openid-configuration{issuer_path}"),
                get(metadata::<S>),
            )
            .route(
                &format!("{issuer_path}/.well-known/openid-configuration"),
                get(metadata::<S>),
            );
    }
    app.with_state(state)
}

async fn metadata<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    let config = &state.config;
    let document = json!({
        "issuer": config.issuer_str(),
        "authorization_endpoint": config.endpoint("/oauth/authorize"),
        "token_endpoint": config.endpoint("/oauth/token"),
        "registration_endpoint": config.endpoint("/oauth/register"),
        "revocation_endpoint": config.endpoint("/oauth/revoke"),
        "jwks_uri": config.endpoint("/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint": config.endpoint("/oauth/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": config.scopes,
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
        "subject_types_supported": ["public"],
    });
    (
        [
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        Json(document),
    )
        .into_response()
}

async fn jwks<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    (
        [
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        Json(state.keys.jwks()),
    )
        .into_response()
}

async fn register<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let source = headers
        .get("x-envoy-external-address")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(peer.ip());
    if !state.limiter.allow(source) {
        state
            .metrics
            .registrations_refused
            .fetch_add(1, Ordering::Relaxed);
        return oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "too many registrations from this address; retry in a minute",
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(err) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                &format!("the body is not JSON: {err}"),
            )
        }
    };
    let policy = Policy {
        confidential_clients: state.config.registration.confidential_clients,
        scopes: &state.config.scopes,
    };
    let registration = match registration::validate(&request, &policy) {
        Ok(registration) => registration,
        Err(err) => {
            state
                .metrics
                .registrations_refused
                .fetch_add(1, Ordering::Relaxed);
            return oauth_error(StatusCode::BAD_REQUEST, err.code(), &err.to_string());
        }
    };
    let client_id = random_token(16);
    let secret = registration.confidential.then(|| random_token(32));
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let stored = StoredClient {
        client_id: client_id.clone(),
        secret_sha256: secret.as_ref().map(|s| hex(&Sha256::digest(s.as_bytes()))),
        metadata: Value::Object(registration.metadata.clone()),
        created_at: issued_at,
    };
    if let Err(err) = state.store.save_client(&stored).await {
        tracing::error!(error = %err, "could not store a registered client");
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the client could not be stored; try again",
        );
    }
    state.metrics.registrations.fetch_add(1, Ordering::Relaxed);
    tracing::info!(client_id = %client_id, client_name = ?registration.metadata.get("client_name"), "client registered");
    let mut response = registration.metadata;
    response.insert("client_id".into(), json!(client_id));
    response.insert("client_id_issued_at".into(), json!(issued_at));
    if let Some(secret) = secret {
        response.insert("client_secret".into(), json!(secret));
        response.insert("client_secret_expires_at".into(), json!(0));
    }
    (
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(Value::Object(response)),
    )
        .into_response()
}

async fn ready<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {err}"),
        )
            .into_response(),
    }
}

async fn metrics<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    let m = &state.metrics;
    let counters = [
        (
            "registrations_total",
            "clients registered",
            &m.registrations,
        ),
        (
            "registrations_refused_total",
            "registrations refused (invalid or rate-limited)",
            &m.registrations_refused,
        ),
        (
            "tokens_issued_total",
            "access tokens issued",
            &m.tokens_issued,
        ),
        (
            "token_errors_total",
            "token requests refused",
            &m.token_errors,
        ),
        (
            "logins_failed_total",
            "failed upstream logins",
            &m.logins_failed,
        ),
        (
            "consents_denied_total",
            "consents denied",
            &m.consents_denied,
        ),
        (
            "families_revoked_total",
            "grant families revoked (replay, reuse or revocation)",
            &m.families_revoked,
        ),
    ];
    let body: String = counters
        .iter()
        .map(|(name, help, value)| {
            format!(
                "# HELP mcp_authserver_{name} {help}\n# TYPE mcp_authserver_{name} counter\nmcp_authserver_{name} {}\n",
                value.load(Ordering::Relaxed)
            )
        })
        .collect();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

impl IntoResponse for OAuthError {
    /// The one conversion of a protocol error to HTTP: RFC 6749 §5.2 JSON, never cached, and
    /// `WWW-Authenticate` on a 401 (§5.2: the client authenticated, or should have).
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = oauth_error(status, self.code.as_str(), &self.description);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"oauth\""),
            );
        }
        response
    }
}

/// An RFC 6749 §5.2 / RFC 7591 §3.2.2 error body.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// A random URL-safe string of `bytes` bytes of entropy.
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// What a `client_id` names.
pub enum Lookup {
    Found(StoredClient),
    Unknown,
    /// A metadata document that could not be used, and why.
    Refused(String),
    StoreDown(StoreError),
}

impl<S: Store> AppState<S> {
    /// A registered client, or the client a metadata document URL describes.
    pub async fn find_client(&self, client_id: &str) -> Lookup {
        if client_documents::is_document_url(client_id) {
            return match self.client_documents.document(client_id).await {
                Ok(document) => Lookup::Found(StoredClient {
                    client_id: client_id.to_owned(),
                    secret_sha256: None,
                    metadata: document,
                    created_at: 0,
                }),
                Err(err) => {
                    tracing::info!(error = %err, "client metadata document refused");
                    Lookup::Refused(err.to_string())
                }
            };
        }
        match self.store.client(client_id).await {
            Ok(Some(client)) => Lookup::Found(client),
            Ok(None) => Lookup::Unknown,
            Err(err) => Lookup::StoreDown(err),
        }
    }
}

/// Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_limited_per_source_address() {
        let limiter = RateLimiter::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(limiter.allow(a) && limiter.allow(a));
        assert!(!limiter.allow(a), "the third in a minute is refused");
        assert!(limiter.allow(b), "another address has its own budget");
    }
}

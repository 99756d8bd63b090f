//! The HTTP surface: metadata, JWKS, registration, health and metrics; the browser flow and the
//! token endpoint are in their own modules.

pub mod authorize;
pub mod cors;
pub mod limiter;
pub mod metrics;
pub mod pages;
pub mod serve;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::client_documents::{self, MetadataError, MetadataFetcher};
use crate::config::Config;
use crate::crypto::Sealer;
use crate::http::limiter::{source_address, RateLimiter};
use crate::idp::enterprise::Enterprise;
use crate::idp::machine::MachineClients;
use crate::idp::{Federated, IdentityProvider};
use crate::keys::KeyRing;
use crate::oauth::id_jag::{ASSERTION_ALGORITHMS, ID_JAG_PROFILE, JWT_BEARER};
use crate::oauth::registration::{self, ClientMetadata, Policy};
use crate::oauth::{Clock, ErrorCode, OAuthError};
use crate::store::housekeeping::needs_use_mark;
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
    /// The identity providers whose ID-JAGs the `jwt-bearer` grant accepts, if configured.
    pub enterprise: Option<Enterprise>,
    /// The operator's machine clients and the workload platforms that authenticate them.
    pub machines: MachineClients,
    limiter: RateLimiter,
    pub metrics: Metrics,
    /// Where every decision takes "now" from (a manual clock in tests).
    pub clock: Arc<dyn Clock>,
    /// The pages a person sees, with the configured branding.
    pub pages: pages::Pages,
}

pub use metrics::Metrics;

pub fn router<S: Store>(
    config: Config,
    keys: KeyRing,
    store: S,
    upstream: Upstream,
    sealer: Option<Sealer>,
    clock: Arc<dyn Clock>,
) -> Router {
    let limiter = RateLimiter::new(config.registration.per_minute);
    let limits = config.server.clone();
    let issuer_path = config.issuer_path().to_owned();
    let client_documents = MetadataFetcher::new(config.client_metadata.clone());
    let enterprise = config.enterprise.as_ref().map(Enterprise::new);
    let machines = MachineClients::new(&config);
    let pages = pages::Pages::new(&config.branding);
    let state = Arc::new(AppState {
        config,
        keys,
        store,
        upstream,
        sealer,
        client_documents,
        enterprise,
        machines,
        limiter,
        metrics: Metrics::default(),
        clock,
        pages,
    });
    // The protocol endpoints, at the root and, for an issuer with a path, under the path too:
    // a proxy that keeps the prefix (`/auth/oauth/token`) and one that strips it (the shipped
    // Envoy and Istio routes send `/oauth/*` and `/.well-known/*` as they are) both reach them.
    let endpoints = Router::new()
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
        .route("/oauth/callback", get(authorize::callback::<S>));
    let mut app = endpoints.clone();
    if !issuer_path.is_empty() {
        // RFC 8414 §3.1 path insertion at the root; the OIDC form (the well-known path appended
        // to the issuer) comes with the nested copy.
        app = app
            .nest(&issuer_path, endpoints)
            .route(
                &format!("/.well-known/oauth-authorization-server{issuer_path}"),
                get(metadata::<S>),
            )
            .route(
                &format!("/.well-known/openid-configuration{issuer_path}"),
                get(metadata::<S>),
            );
    }
    // Probes and metrics are for the cluster, not for clients: only at the root, so a proxy
    // forwarding the issuer's prefix does not publish them.
    app = app
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready::<S>))
        .route("/metrics", get(metrics::<S>));
    app.with_state(state.clone())
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            limits.body_timeout_seconds,
        )))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(limits.request_timeout_seconds),
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            framework_answers::<S>,
        ))
        .layer(cors::layer())
}

/// The routes of the authorization flow that a person's browser is sent to.
const PAGE_ROUTES: [&str; 4] = [
    "/oauth/authorize",
    "/oauth/login",
    "/oauth/consent",
    "/oauth/callback",
];

/// The routes programs call: OAuth clients, resource servers, probes, scrapers.
fn is_api_route(route: &str) -> bool {
    matches!(
        route,
        "/oauth/token" | "/oauth/register" | "/oauth/revoke" | "/oauth/introspect"
    ) || route.starts_with("/.well-known/")
        || matches!(route, "/healthz" | "/readyz" | "/metrics")
}

/// Whether a person reads the answer to a request for `path`: the flow's pages (under the
/// issuer's path too), and any other address a browser asks for as a page (`Accept:
/// text/html`) that is not an API endpoint.
fn for_person(path: &str, issuer_path: &str, headers: &HeaderMap) -> bool {
    let route = path.strip_prefix(issuer_path).unwrap_or(path);
    if PAGE_ROUTES.contains(&route) {
        return true;
    }
    let asks_for_html = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|value| value.to_str().is_ok_and(|v| v.contains("text/html")));
    !is_api_route(route) && asks_for_html
}

/// The answers the framework gives on its own (an extractor's rejection, a body over the limit,
/// a request over time, a method the route does not take, no such route) are plain text or
/// empty. A person gets a page instead (with the branding and the same status); an OAuth
/// client gets RFC 6749 §5.2 JSON (`json_errors`). Handler answers (pages, JSON) pass through.
async fn framework_answers<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let person = for_person(
        request.uri().path(),
        state.config.issuer_path(),
        request.headers(),
    );
    let response = next.run(request).await;
    let status = response.status();
    let framework = (status.is_client_error() || status.is_server_error())
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_none_or(|value| value.as_bytes().starts_with(b"text/plain"));
    if !framework {
        return response;
    }
    if person {
        let (parts, body) = response.into_parts();
        let said = axum::body::to_bytes(body, 1024).await.unwrap_or_default();
        tracing::info!(status = %status, reason = ?String::from_utf8_lossy(&said), "request refused before its handler; answered with a page");
        return state.pages.framework(status, &parts.headers);
    }
    json_errors(response)
}

/// A framework answer for a program: RFC 6749 §5.2 JSON with a description that says what to
/// fix, for the statuses an OAuth client can cause; any other stays as it is.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    let description = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than this server accepts",
        StatusCode::REQUEST_TIMEOUT => "the request was not received and answered in time",
        StatusCode::BAD_REQUEST
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => {
            "the request body could not be read as the endpoint expects"
        }
        _ => return response,
    };
    oauth_error(status, ErrorCode::InvalidRequest.as_str(), description)
}

async fn metadata<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    let config = &state.config;
    let mut grant_types = vec!["authorization_code", "refresh_token", "client_credentials"];
    if state.enterprise.is_some() {
        grant_types.push(JWT_BEARER);
    }
    // Token exchange only where some backend may be exchanged for: a grant no client can use
    // is not advertised.
    if !config.token_exchange.audiences.is_empty() {
        grant_types.push(crate::oauth::exchange::GRANT_TYPE);
    }
    let mut auth_methods = vec!["none", "client_secret_basic", "client_secret_post"];
    if state.machines.any() {
        auth_methods.push("private_key_jwt");
    }
    let mut document = json!({
        "issuer": config.issuer_str(),
        "authorization_endpoint": config.endpoint("/oauth/authorize"),
        "token_endpoint": config.endpoint("/oauth/token"),
        "registration_endpoint": config.endpoint("/oauth/register"),
        "revocation_endpoint": config.endpoint("/oauth/revoke"),
        "jwks_uri": config.endpoint("/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint": config.endpoint("/oauth/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": config.scopes,
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
        "subject_types_supported": ["public"],
    });
    // The ID-JAG draft, "Authorization Server Metadata": the profile, never which issuers are
    // trusted (that would publish the federation's topology).
    if state.enterprise.is_some() {
        document["authorization_grant_profiles_supported"] = json!([ID_JAG_PROFILE]);
    }
    // The MCP client-credentials extension: with JWT client authentication, the algorithms.
    if state.machines.any() {
        document["token_endpoint_auth_signing_alg_values_supported"] = json!(ASSERTION_ALGORITHMS);
    }
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
    let source = source_address(peer.ip(), &headers, state.config.server.trusted_proxy_hops);
    let issued_at = state.clock.now();
    if !state.limiter.allow(source, issued_at) {
        state.metrics.registration_refused("rate_limited");
        return OAuthError::new(
            ErrorCode::SlowDown,
            "too many registrations from this address; retry in a minute",
        )
        .into_response();
    }
    let policy = Policy {
        confidential_clients: state.config.registration.confidential_clients,
        scopes: &state.config.scopes,
        jwt_bearer: state.enterprise.is_some(),
    };
    let registration = match ClientMetadata::parse(&body)
        .and_then(|metadata| registration::validate(metadata, &policy))
    {
        Ok(registration) => registration,
        Err(err) => {
            let err = OAuthError::from(err);
            state.metrics.registration_refused(err.code.as_str());
            return err.into_response();
        }
    };
    let client_id = random_token(16);
    let secret = registration.confidential.then(|| random_token(32));
    let metadata = registration.metadata.to_json();
    let stored = StoredClient {
        client_id: client_id.clone(),
        secret_sha256: secret.as_ref().map(|s| hex(&Sha256::digest(s.as_bytes()))),
        metadata: Value::Object(metadata.clone()),
        created_at: issued_at,
        last_used_at: None,
    };
    if let Err(err) = state.store.save_client(&stored).await {
        tracing::error!(error = %err, "could not store a registered client");
        state.metrics.database_failed("registration");
        return OAuthError::unavailable().into_response();
    }
    state.metrics.registered();
    tracing::info!(client_id = %client_id, client_name = ?registration.metadata.client_name, "client registered");
    let mut response = metadata;
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

/// Longest the readiness probe waits for the identity provider's discovery: under the probe's
/// own timeout (`timeoutSeconds: 3` in the shipped manifest), so a provider that does not
/// answer reads as not ready rather than as a probe that hangs.
const READINESS_IDP_BUDGET: Duration = Duration::from_secs(2);

/// Whether the database answers and a login can start (see `IdentityProvider::readiness`). The
/// cause of a failure goes to the log only: the probe is unauthenticated and the error text can
/// name hosts, users and files.
async fn ready<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    if let Err(err) = state.store.ping().await {
        tracing::warn!(error = %err, "readiness probe: database unavailable");
        state.metrics.database_failed("readiness");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
    }
    if let Some(provider) = state.upstream.provider() {
        let verdict = tokio::time::timeout(READINESS_IDP_BUDGET, provider.readiness()).await;
        let cause = match verdict {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some(format!(
                "no answer within {}s",
                READINESS_IDP_BUDGET.as_secs()
            )),
        };
        if let Some(cause) = cause {
            tracing::warn!(error = %cause, "readiness probe: identity provider unreachable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "identity provider unreachable",
            )
                .into_response();
        }
    }
    (StatusCode::OK, "ready").into_response()
}

async fn metrics<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
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
    /// A metadata document that is unusable as published (not a URL, invalid), and why.
    Refused(String),
    /// A metadata document that could not be retrieved (for the visitor: no more than that,
    /// whatever the reason). Possibly passing: not a reason to call the client unknown.
    Unreachable(String),
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
                    last_used_at: None,
                }),
                Err(err) => {
                    tracing::info!(error = %err, "client metadata document refused");
                    match err {
                        MetadataError::Fetch { .. } | MetadataError::PrivateAddress { .. } => {
                            Lookup::Unreachable(err.public_description())
                        }
                        MetadataError::NotAUrl(_) | MetadataError::Invalid { .. } => {
                            Lookup::Refused(err.public_description())
                        }
                    }
                }
            };
        }
        match self.store.client(client_id).await {
            Ok(Some(client)) => {
                self.mark_used(&client).await;
                Lookup::Found(client)
            }
            Ok(None) => Lookup::Unknown,
            Err(err) => Lookup::StoreDown(err),
        }
    }

    /// Records that a registered client was used (found for a flow, or authenticated), so the
    /// purge of never-used registrations spares it and `admin clients list` shows it in use.
    /// Failing to record that must not fail the request.
    pub async fn mark_used(&self, client: &StoredClient) {
        let now = self.clock.now();
        if needs_use_mark(client.last_used_at, now) {
            if let Err(err) = self.store.client_used(&client.client_id, now).await {
                tracing::warn!(error = %err, "could not record that a client was used");
            }
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Overrides};
    use crate::store::SqliteStore;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn app(yaml: &str) -> (Router, SqliteStore) {
        let file: FileConfig = serde_yaml::from_str(&format!(
            "issuer: http://auth.test\nresources: [http://auth.test/mcp]\n{yaml}"
        ))
        .unwrap();
        let config = Config::resolve(file, Overrides::default()).unwrap();
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let app = router(
            config,
            KeyRing::ephemeral(),
            store.clone(),
            Upstream::new(None),
            None,
            Arc::new(crate::oauth::SystemClock),
        );
        (app, store)
    }

    fn post(path: &str, peer: &str, body: impl Into<Vec<u8>>) -> Request<Body> {
        let body = body.into();
        let mut request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        let peer: SocketAddr = format!("{peer}:5000").parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (parts.status, parts.headers, value)
    }

    const CLIENT: &str = r#"{"redirect_uris": ["http://127.0.0.1:8765/cb"]}"#;

    #[tokio::test]
    async fn a_client_written_address_header_buys_no_fresh_registration_budget() {
        let (app, _store) = app("registration: {per_minute: 2}").await;
        for spoofed in ["1.1.1.1", "2.2.2.2"] {
            let mut request = post("/oauth/register", "10.0.0.5", CLIENT);
            request
                .headers_mut()
                .insert("x-envoy-external-address", spoofed.parse().unwrap());
            request
                .headers_mut()
                .insert("x-forwarded-for", spoofed.parse().unwrap());
            assert_eq!(send(&app, request).await.0, StatusCode::CREATED);
        }
        let mut request = post("/oauth/register", "10.0.0.5", CLIENT);
        request
            .headers_mut()
            .insert("x-forwarded-for", "3.3.3.3".parse().unwrap());
        let (status, _, body) = send(&app, request).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"], "slow_down");
        let other_peer = send(&app, post("/oauth/register", "10.0.0.6", CLIENT)).await;
        assert_eq!(other_peer.0, StatusCode::CREATED);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_as_json_on_every_endpoint() {
        let (app, _store) = app("server: {max_body_bytes: 1024}").await;
        for path in ["/oauth/register", "/oauth/token", "/oauth/revoke"] {
            let (status, headers, body) =
                send(&app, post(path, "10.0.0.5", vec![b' '; 2048])).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            assert_eq!(body["error"], "invalid_request", "{path}");
        }
    }

    #[tokio::test]
    async fn registered_metadata_is_bounded_and_unknown_fields_are_dropped() {
        let (app, store) = app("").await;
        let huge =
            json!({"redirect_uris": ["http://127.0.0.1/cb"], "client_name": "a".repeat(60_000)});
        let (status, _, body) =
            send(&app, post("/oauth/register", "10.0.0.5", huge.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_client_metadata");
        assert!(body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("client_name:"));
        let extra = json!({"redirect_uris": ["http://127.0.0.1/cb"], "jwks": {"keys": []}});
        let (status, _, body) =
            send(&app, post("/oauth/register", "10.0.0.5", extra.to_string())).await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(body.get("jwks").is_none());
        let stored = store
            .client(body["client_id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(stored.metadata.get("jwks").is_none());
    }

    #[tokio::test]
    async fn a_database_outage_is_503_and_readyz_keeps_the_cause_to_the_log() {
        let (app, store) = app("").await;
        let ready = Request::get("/readyz").body(Body::empty()).unwrap();
        assert_eq!(send(&app, ready).await.0, StatusCode::OK);
        store.close().await;
        let ready = Request::get("/readyz").body(Body::empty()).unwrap();
        let (status, _, body) = send(&app, ready).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, Value::String("database unavailable".into()));
        let (status, _, body) = send(&app, post("/oauth/register", "10.0.0.5", CLIENT)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "temporarily_unavailable");
    }

    #[tokio::test]
    async fn metrics_say_why_registrations_were_refused() {
        let (app, _store) = app("registration: {per_minute: 1}").await;
        let insecure = r#"{"redirect_uris": ["http://app.example.com/cb"]}"#;
        assert_eq!(
            send(&app, post("/oauth/register", "10.0.0.5", insecure))
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            send(&app, post("/oauth/register", "10.0.0.5", CLIENT))
                .await
                .0,
            StatusCode::TOO_MANY_REQUESTS
        );
        let (status, headers, body) =
            send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let text = body.as_str().unwrap();
        assert!(text.contains(
            "mcp_authserver_registrations_refused_total{reason=\"invalid_redirect_uri\"} 1\n"
        ));
        assert!(text
            .contains("mcp_authserver_registrations_refused_total{reason=\"rate_limited\"} 1\n"));
        assert!(text.contains("mcp_authserver_registrations_total 0\n"));
    }

    /// A request as a browser sends it: asking for a page.
    fn browser(method: &str, path: &str, body: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn every_error_a_browser_meets_is_a_branded_page_and_programs_keep_their_json() {
        let (app, _store) = app("server: {max_body_bytes: 1024}\nbranding: {name: Acme MCP}").await;
        let big = "x".repeat(2048);
        for (method, path, body, status) in [
            // The extractor's rejection (a repeated parameter), with and without a browser's Accept.
            (
                "GET",
                "/oauth/consent?request=a&request=b",
                "",
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/oauth/callback?state=a&state=b",
                "",
                StatusCode::BAD_REQUEST,
            ),
            // A method the route does not take.
            (
                "POST",
                "/oauth/authorize",
                "",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            ("DELETE", "/oauth/login", "", StatusCode::METHOD_NOT_ALLOWED),
            // A body over the limit, refused before the handler.
            (
                "POST",
                "/oauth/login",
                big.as_str(),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            // No such page.
            ("GET", "/oauth/logn", "", StatusCode::NOT_FOUND),
            ("GET", "/", "", StatusCode::NOT_FOUND),
        ] {
            let (status_seen, headers, page) = send(&app, browser(method, path, body)).await;
            assert_eq!(status_seen, status, "{method} {path}");
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "{method} {path}"
            );
            let page = page.as_str().unwrap().to_owned();
            assert!(
                page.contains("<span id=\"brand-name\">Acme MCP</span>"),
                "{method} {path}: {page}"
            );
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            if status == StatusCode::METHOD_NOT_ALLOWED {
                assert!(headers.contains_key(header::ALLOW), "{method} {path}");
            }
        }
        // The flow's pages are pages whoever asks.
        let plain = Request::get("/oauth/login?request=a&request=b")
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = send(&app, plain).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        // Programs: JSON on the API, an unknown address left empty.
        let (status, headers, body) = send(&app, browser("POST", "/oauth/token", &big)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("invalid_request"))
        );
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let (status, headers, _) = send(&app, browser("GET", "/oauth/token", "")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            !headers.contains_key(header::CONTENT_TYPE),
            "an API route stays the framework's answer"
        );
        let api = Request::get("/oauth/logn").body(Body::empty()).unwrap();
        let (status, headers, _) = send(&app, api).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!headers.contains_key(header::CONTENT_TYPE));
    }

    #[tokio::test]
    async fn under_an_issuer_path_the_flows_framework_answers_are_pages_too() {
        let file: FileConfig = serde_yaml::from_str(
            "issuer: http://auth.test/auth\nresources: [http://auth.test/mcp]\n",
        )
        .unwrap();
        let config = Config::resolve(file, Overrides::default()).unwrap();
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let app = router(
            config,
            KeyRing::ephemeral(),
            store,
            Upstream::new(None),
            None,
            Arc::new(crate::oauth::SystemClock),
        );
        let request = Request::get("/auth/oauth/consent?request=a&request=b")
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = send(&app, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }

    #[tokio::test]
    async fn a_request_that_is_not_json_gets_a_json_error() {
        let (app, _store) = app("").await;
        let (status, _, body) = send(&app, post("/oauth/register", "10.0.0.5", "{not json")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_client_metadata");
    }
}

//! Federating the login to an OpenID provider (Okta's custom authorization servers, Entra ID,
//! any OIDC issuer) with the `openidconnect` crate: discovery, PKCE, state, nonce and ID token
//! validation are its job. This module maps what the provider says about the user — subject,
//! email, name, groups, roles — from wherever the configuration says it is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreProviderMetadata,
    CoreTokenResponse, CoreTokenType,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

pub(crate) use mcp_mesh_claims::lookup;

use crate::idp::{BoxFuture, IdentityProvider, Start};
use crate::oauth::grant::User;
use crate::oauth::identity::ClaimMapping;
pub(crate) use crate::oauth::identity::{strings, verified_email};
use crate::oauth::{ErrorCode, OAuthError};

/// The `oidc` upstream section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Where the provider sends users back; default `<issuer>/oauth/callback`.
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// Extra authorization request parameters (e.g. `prompt`, `domain_hint`).
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// The claim that identifies a user stably (Entra ID: `oid`).
    #[serde(default = "default_subject")]
    pub subject_claim: String,
    /// Claim of the groups: a name, a URL-style key or a dot path.
    pub groups_claim: Option<String>,
    /// Claim of the roles (Entra ID app roles: `roles`).
    pub roles_claim: Option<String>,
    /// Where claims are looked for, in order.
    #[serde(default = "default_sources")]
    pub claims_from: Vec<ClaimSource>,
    /// Development only: allow an `http://` issuer.
    #[serde(default)]
    pub allow_http_issuer: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClaimSource {
    IdToken,
    AccessToken,
    Userinfo,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "offline_access"]
        .map(String::from)
        .to_vec()
}

fn default_subject() -> String {
    "sub".into()
}

fn default_sources() -> Vec<ClaimSource> {
    vec![
        ClaimSource::IdToken,
        ClaimSource::AccessToken,
        ClaimSource::Userinfo,
    ]
}

/// A provider failure, with what the administrator (or the user) must do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the identity provider at {issuer} is unreachable ({detail}); check its URL and this server's network and DNS")]
    Unreachable { issuer: String, detail: String },
    #[error("the identity provider refused this server's client credentials (invalid_client): check client_id and that client_secret_file holds the app's current secret, and the token endpoint auth method ({method})")]
    InvalidClient { method: String },
    #[error("the identity provider refused the grant (invalid_grant: {detail}); check that the app's sign-in redirect URI is exactly {redirect_uri} and, for offline_access on Okta, that the Refresh Token grant is enabled on the app")]
    InvalidGrant {
        detail: String,
        redirect_uri: String,
    },
    #[error("the identity provider ended the session (invalid_grant: {0}): the user was disabled, unassigned or their grant revoked; they must sign in again")]
    SessionEnded(String),
    #[error("the user is not assigned to this application at the identity provider: assign the user (or a group of theirs) to the app")]
    NotAssigned,
    #[error("the user denied access at the identity provider")]
    Denied,
    #[error("the identity provider answered `{error}`: {description}")]
    Other { error: String, description: String },
    #[error("the ID token from the identity provider is not valid: {0}")]
    IdToken(String),
    #[error("the identity provider issued no refresh token: request offline_access and, on Okta, enable the Refresh Token grant on the app")]
    NoRefreshToken,
    #[error("the `dev` upstream signs users in with its own form: it has no callback and no upstream session")]
    NotFederated,
}

impl UpstreamError {
    /// Worth a retry later: nothing about the grant is known to be wrong.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// The provider said the user's session is over (their grant revoked, the user disabled or
    /// unassigned): the only refresh failures that end our grant family. Anything else — an
    /// outage page, `temporarily_unavailable`, a rotated client secret, keys mid-rotation, a rate
    /// limit — says nothing against the user, and revoking on it would log everyone out during a
    /// provider incident.
    pub fn ends_session(&self) -> bool {
        matches!(self, Self::SessionEnded(_) | Self::NotAssigned)
    }

    /// The OAuth error our client sees: a code and a fixed description. The variant's own text
    /// (provider answers, error chains, our redirect URI) is for the log only.
    pub fn for_client(&self) -> OAuthError {
        let (code, description) = match self {
            Self::Unreachable { .. } => (
                ErrorCode::TemporarilyUnavailable,
                "the identity provider could not be reached; try again shortly",
            ),
            Self::NotAssigned => (
                ErrorCode::AccessDenied,
                "the user is not assigned to this application at the identity provider",
            ),
            Self::Denied => (
                ErrorCode::AccessDenied,
                "the user denied access at the identity provider",
            ),
            _ => (
                ErrorCode::ServerError,
                "the sign-in at the identity provider failed; the authorization server's log has the cause",
            ),
        };
        OAuthError::new(code, description)
    }

    /// The OAuth error a gateway sees when no backend token could be had from the provider: a
    /// session that ended, or that kept no refresh token, is the user's to mend (sign in again);
    /// an outage is worth a retry; anything else is the operator's, and the log has it.
    pub fn for_exchange(&self) -> OAuthError {
        match self {
            Self::Unreachable { .. } => OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the identity provider could not be reached; try again shortly",
            ),
            Self::SessionEnded(_) | Self::NotAssigned => OAuthError::invalid_grant(
                "the identity provider ended the user's session; they must sign in again",
            ),
            Self::NoRefreshToken => OAuthError::invalid_grant(
                "the user's sign-in kept no refresh token of the identity provider (it issues them for offline_access), so none of its tokens can be had for this backend",
            ),
            _ => OAuthError::new(
                ErrorCode::ServerError,
                "the identity provider did not issue a token for this backend; the authorization server's log has the cause",
            ),
        }
    }
}

/// What is kept (encrypted) of a user's upstream session, to re-check them on refresh and to
/// get their tokens for backends that trust the provider (token exchange). Its `Debug` shows no
/// token, so a stray `?tokens` in a log line leaks nothing.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTokens {
    pub refresh_token: Option<String>,
    /// The provider's access tokens for backends, by backend audience, kept until shortly
    /// before they expire so that each exchange does not cost a provider round trip.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, BackendToken>,
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("backends", &self.backends)
            .finish()
    }
}

/// An access token the provider issued for a backend (its `Debug` without the token).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendToken {
    pub access_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub scope: Option<String>,
    /// What was asked of the provider (see `Backend::upstream_request`): a token asked for
    /// other scopes or another resource than the configuration now names is not reused.
    pub asked: String,
}

impl std::fmt::Debug for BackendToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendToken")
            .field("access_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("asked", &self.asked)
            .finish()
    }
}

/// A kept backend token is reused only while it has more than this to live, so the backend
/// (and the gateway's cache of it) never gets one about to expire.
pub const BACKEND_TOKEN_MARGIN_SECONDS: i64 = 60;

/// An access token from the provider's token endpoint, as it answered.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamAccess {
    pub access_token: String,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
}

impl UpstreamTokens {
    /// The session after a refresh: the provider's new refresh token if it rotated it (else the
    /// one kept), and the backend tokens kept so far.
    pub fn rotated(&self, refresh_token: Option<String>) -> Self {
        Self {
            refresh_token: refresh_token.or_else(|| self.refresh_token.clone()),
            backends: self.backends.clone(),
        }
    }

    /// The token kept for `audience`, if it was asked as `asked` and lives long enough.
    pub fn backend_token(&self, audience: &str, asked: &str, now: i64) -> Option<&BackendToken> {
        self.backends.get(audience).filter(|kept| {
            kept.asked == asked && kept.expires_at > now + BACKEND_TOKEN_MARGIN_SECONDS
        })
    }

    /// Keeps `token` for `audience` (if it lives long enough to be reused), dropping the tokens
    /// that have expired meanwhile.
    pub fn keep(&mut self, audience: &str, token: BackendToken, now: i64) {
        self.backends.retain(|_, kept| kept.expires_at > now);
        if token.expires_at > now + BACKEND_TOKEN_MARGIN_SECONDS {
            self.backends.insert(audience.to_owned(), token);
        }
    }
}

/// The secrets of one upstream login between the redirect and the callback.
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

pub struct OidcUpstream {
    settings: OidcSettings,
    secret: String,
    redirect_uri: String,
    http: reqwest::Client,
    /// Discovery (with the provider's JWKS) and when it was fetched.
    metadata: RwLock<Option<(Instant, CoreProviderMetadata)>>,
}

/// The provider's metadata and keys are fetched again after this, so its key rotations are seen.
const METADATA_TTL: Duration = Duration::from_secs(600);

impl OidcUpstream {
    pub fn new(settings: OidcSettings, issuer: &str) -> Result<Self, String> {
        check_issuer(&settings)?;
        let secret = read_secret(&settings.client_secret_file)?;
        let redirect_uri = settings
            .redirect_uri
            .clone()
            .unwrap_or_else(|| default_redirect_uri(issuer));
        let http = http_client()?;
        Ok(Self {
            settings,
            secret,
            redirect_uri,
            http,
            metadata: RwLock::new(None),
        })
    }

    /// Discovery, once it succeeds; retried on every login until then.
    async fn metadata(&self) -> Result<CoreProviderMetadata, UpstreamError> {
        if let Some((fetched, metadata)) = self.metadata.read().await.as_ref() {
            if fetched.elapsed() < METADATA_TTL {
                return Ok(metadata.clone());
            }
        }
        let issuer = IssuerUrl::new(self.settings.issuer_url.clone())
            .map_err(|err| self.unreachable(err.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|err| self.unreachable(error_chain(&err)))?;
        *self.metadata.write().await = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    fn unreachable(&self, detail: String) -> UpstreamError {
        UpstreamError::Unreachable {
            issuer: self.settings.issuer_url.clone(),
            detail,
        }
    }

    async fn client(&self) -> Result<ConfiguredClient, UpstreamError> {
        let metadata = self.metadata().await?;
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|err| self.unreachable(err.to_string()))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.secret.clone())),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(match self.settings.auth_method {
            AuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            AuthMethod::ClientSecretPost => AuthType::RequestBody,
        });
        Ok(client)
    }

    /// The provider's authorization URL for a new login, and its secrets to keep until the callback.
    async fn begin(&self) -> Result<(String, Pending), UpstreamError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        for (name, value) in &self.settings.extra_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let (url, state, nonce) = request.url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        };
        Ok((url.to_string(), pending))
    }

    /// Exchanges the callback's code: verified ID token, user, and the tokens to keep.
    async fn exchange(
        &self,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<(User, UpstreamTokens), UpstreamError> {
        let client = self.client().await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|err| self.unreachable(err.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|err| self.token_error(err, false))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| UpstreamError::IdToken("the token response has no id_token".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        if let Err(err) = id_token.claims(&client.id_token_verifier(), &nonce) {
            // Perhaps the provider rotated its keys: discover again next time.
            *self.metadata.write().await = None;
            return Err(UpstreamError::IdToken(err.to_string()));
        }
        let id_claims = payload(&id_token.to_string());
        let user = self
            .user(&client, &id_claims, response.access_token().secret())
            .await?;
        let tokens = UpstreamTokens {
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            ..UpstreamTokens::default()
        };
        if tokens.refresh_token.is_none()
            && self.settings.scopes.iter().any(|s| s == "offline_access")
        {
            tracing::warn!("the identity provider issued no refresh token although offline_access was requested (Okta: enable the Refresh Token grant on the app)");
        }
        Ok((user, tokens))
    }

    /// Re-checks the user with the upstream refresh token: their current identity and groups,
    /// and the tokens to keep from now on.
    async fn recheck(
        &self,
        tokens: &UpstreamTokens,
        previous: &User,
    ) -> Result<(User, UpstreamTokens), UpstreamError> {
        let client = self.client().await?;
        let (response, kept) = self.refreshed(&client, tokens, None, &[]).await?;
        let id_claims = match response.id_token() {
            Some(id_token) => {
                id_token
                    .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
                    .map_err(|err| UpstreamError::IdToken(err.to_string()))?;
                payload(&id_token.to_string())
            }
            None => Map::new(),
        };
        let user = self
            .user(&client, &id_claims, response.access_token().secret())
            .await?;
        let user = super::same_person(previous, user)?;
        Ok((user, kept))
    }

    /// The provider's access token for a backend, for the user of `tokens`: a refresh-token
    /// grant asking `resource` (RFC 8707) and `scopes`, if given. Only bearer tokens: one bound
    /// to a key (DPoP, mTLS) would be useless to the backend it is handed to.
    async fn backend_access(
        &self,
        tokens: &UpstreamTokens,
        resource: Option<&str>,
        scopes: &[String],
    ) -> Result<(UpstreamAccess, UpstreamTokens), UpstreamError> {
        let client = self.client().await?;
        let (response, kept) = self.refreshed(&client, tokens, resource, scopes).await?;
        if *response.token_type() != CoreTokenType::Bearer {
            return Err(UpstreamError::Other {
                error: "unsupported_token_type".into(),
                description: format!(
                    "the provider issued a `{}` token, not a bearer token",
                    response.token_type().as_ref()
                ),
            });
        }
        let scope = response.scopes().map(|scopes| {
            scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        });
        let access = UpstreamAccess {
            access_token: response.access_token().secret().clone(),
            expires_in: response.expires_in().map(|d| d.as_secs()),
            scope,
        };
        Ok((access, kept))
    }

    /// A refresh-token grant with the kept session: the provider's answer, and the session to
    /// keep from now on (with its refresh token rotated, if the provider rotates them).
    async fn refreshed(
        &self,
        client: &ConfiguredClient,
        tokens: &UpstreamTokens,
        resource: Option<&str>,
        scopes: &[String],
    ) -> Result<(CoreTokenResponse, UpstreamTokens), UpstreamError> {
        let refresh_token = tokens
            .refresh_token
            .clone()
            .ok_or(UpstreamError::NoRefreshToken)?;
        let refresh_token = RefreshToken::new(refresh_token);
        let mut request = client
            .exchange_refresh_token(&refresh_token)
            .map_err(|err| self.unreachable(err.to_string()))?
            .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())));
        if let Some(resource) = resource {
            request = request.add_extra_param("resource", resource.to_owned());
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|err| self.token_error(err, true))?;
        let kept = tokens.rotated(response.refresh_token().map(|t| t.secret().clone()));
        Ok((response, kept))
    }

    /// The user as the configured sources describe them (first source with a claim wins).
    async fn user(
        &self,
        client: &ConfiguredClient,
        id_claims: &Map<String, Value>,
        access_token: &str,
    ) -> Result<User, UpstreamError> {
        let mut sources: Vec<Map<String, Value>> = Vec::new();
        for source in &self.settings.claims_from {
            match source {
                ClaimSource::IdToken => sources.push(id_claims.clone()),
                ClaimSource::AccessToken => sources.push(payload(access_token)),
                ClaimSource::Userinfo => {
                    if let Some(endpoint) = client.user_info_url() {
                        sources.push(self.userinfo(endpoint.as_str(), access_token).await);
                    }
                }
            }
        }
        if id_claims.contains_key("_claim_names") {
            tracing::warn!("the identity provider sent a groups overage link instead of groups (Entra ID: use app roles or filter the groups claim to the app's groups)");
        }
        Ok(self.mapping().user(&sources))
    }

    /// Where this provider's claims name the user (shared with enterprise ID-JAGs).
    fn mapping(&self) -> ClaimMapping<'_> {
        ClaimMapping {
            subject: &self.settings.subject_claim,
            groups: self.settings.groups_claim.as_deref(),
            roles: self.settings.roles_claim.as_deref(),
        }
    }

    async fn userinfo(&self, endpoint: &str, access_token: &str) -> Map<String, Value> {
        let response = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                response.json().await.unwrap_or_default()
            }
            Ok(response) => {
                tracing::info!(status = %response.status(), "userinfo refused the access token; its claims are not used");
                Map::new()
            }
            Err(err) => {
                tracing::warn!(error = %err, "userinfo unreachable; its claims are not used");
                Map::new()
            }
        }
    }

    fn token_error<RE: std::error::Error + 'static>(
        &self,
        err: RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
        refreshing: bool,
    ) -> UpstreamError {
        map_token_error(
            err,
            refreshing,
            self.settings.auth_method,
            &self.redirect_uri,
            &self.settings.issuer_url,
        )
    }
}

impl IdentityProvider for OidcUpstream {
    fn is_federated(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'_, Result<Start, UpstreamError>> {
        Box::pin(async move {
            let (url, pending) = self.begin().await?;
            Ok(Start::Redirect { url, pending })
        })
    }

    /// Ready once discovery has been fetched, even if it is now older than its refresh time: a
    /// provider that goes down later leaves the server ready (token refreshes of machine
    /// clients and the JWKS the filters fetch need no provider, and logins get a clear page),
    /// while a server that never reached it (a wrong `issuer_url`, no route, no DNS) is kept
    /// out of rotation, so a bad rollout stops there.
    fn readiness(&self) -> BoxFuture<'_, Result<(), UpstreamError>> {
        Box::pin(async move {
            if self.metadata.read().await.is_some() {
                return Ok(());
            }
            self.metadata().await.map(|_| ())
        })
    }

    fn finish<'a>(
        &'a self,
        code: &'a str,
        nonce: &'a str,
        pkce_verifier: &'a str,
    ) -> BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>> {
        Box::pin(self.exchange(code, nonce, pkce_verifier))
    }

    fn refresh<'a>(
        &'a self,
        tokens: &'a UpstreamTokens,
        previous: &'a User,
    ) -> BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>> {
        Box::pin(self.recheck(tokens, previous))
    }

    fn backend_token<'a>(
        &'a self,
        tokens: &'a UpstreamTokens,
        resource: Option<&'a str>,
        scopes: &'a [String],
    ) -> BoxFuture<'a, Result<(UpstreamAccess, UpstreamTokens), UpstreamError>> {
        Box::pin(self.backend_access(tokens, resource, scopes))
    }
}

/// Maps an error the provider sent to the callback.
pub fn callback_error(error: &str, description: &str) -> UpstreamError {
    let lower = description.to_ascii_lowercase();
    match error {
        "access_denied" if lower.contains("not assigned") => UpstreamError::NotAssigned,
        "access_denied" => UpstreamError::Denied,
        _ => UpstreamError::Other {
            error: error.to_owned(),
            description: description.to_owned(),
        },
    }
}

type ConfiguredClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The upstream client secret, from its file (a Kubernetes Secret mount, typically).
pub(crate) fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let secret = std::fs::read_to_string(path)
        .map_err(|err| format!("upstream.client_secret_file {}: {err}", path.display()))?
        .trim()
        .to_owned();
    if secret.is_empty() {
        return Err(format!(
            "upstream.client_secret_file {} is empty",
            path.display()
        ));
    }
    Ok(secret)
}

pub(crate) fn default_redirect_uri(issuer: &str) -> String {
    format!("{issuer}/oauth/callback")
}

/// The client for provider calls: no redirects followed (they would leave the configured
/// endpoints), a bounded time.
pub(crate) fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| err.to_string())
}

/// Turns a token endpoint failure into advice: which side is wrong and what to check.
pub(crate) fn map_token_error<RE, T>(
    err: RequestTokenError<RE, openidconnect::StandardErrorResponse<T>>,
    refreshing: bool,
    auth_method: AuthMethod,
    redirect_uri: &str,
    issuer: &str,
) -> UpstreamError
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponseType + AsRef<str> + std::fmt::Display + 'static,
{
    match err {
        RequestTokenError::ServerResponse(response) => {
            let detail = response.error_description().cloned().unwrap_or_default();
            match response.error().as_ref() {
                "invalid_client" | "unauthorized_client" => UpstreamError::InvalidClient {
                    method: format!("{auth_method:?}"),
                },
                "invalid_grant" if refreshing => UpstreamError::SessionEnded(detail),
                "invalid_grant" => UpstreamError::InvalidGrant {
                    detail,
                    redirect_uri: redirect_uri.to_owned(),
                },
                other => UpstreamError::Other {
                    error: other.to_owned(),
                    description: detail,
                },
            }
        }
        RequestTokenError::Request(err) => UpstreamError::Unreachable {
            issuer: issuer.to_owned(),
            detail: error_chain(&err),
        },
        other => UpstreamError::Other {
            error: "invalid_response".into(),
            description: error_chain(&other),
        },
    }
}

/// Okta's org authorization server cannot put groups into access tokens meant for other
/// resource servers; only custom authorization servers (`/oauth2/<id>`) work.
fn check_issuer(settings: &OidcSettings) -> Result<(), String> {
    let url = url::Url::parse(&settings.issuer_url)
        .map_err(|err| format!("upstream.issuer_url: {err}"))?;
    if url.scheme() != "https" && !settings.allow_http_issuer {
        return Err(
            "upstream.issuer_url must be https (allow_http_issuer is for local tests only)".into(),
        );
    }
    let host = url.host_str().unwrap_or_default();
    let okta = host.ends_with(".okta.com")
        || host.ends_with(".oktapreview.com")
        || host.ends_with(".okta-emea.com");
    if okta && !url.path().starts_with("/oauth2/") {
        return Err(format!(
            "upstream.issuer_url `{}` is Okta's org authorization server, which cannot add a groups claim to access tokens for other resource servers: use a custom authorization server, https://{host}/oauth2/default or https://{host}/oauth2/<id>",
            settings.issuer_url
        ));
    }
    Ok(())
}

/// The claims of a JWT whose signature was checked elsewhere (or that came straight from the
/// token endpoint); an opaque token gives none.
fn payload(token: &str) -> Map<String, Value> {
    token
        .split('.')
        .nth(1)
        .and_then(|part| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A provider on a closed local port, for tests of what an outage looks like.
#[cfg(test)]
pub(crate) fn unreachable_for_tests(dir: &std::path::Path) -> OidcUpstream {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap();
    let secret = dir.join("upstream-secret");
    std::fs::write(&secret, "s").unwrap();
    let settings = serde_json::from_value(serde_json::json!({
        "issuer_url": format!("http://127.0.0.1:{port}/oauth2/default"),
        "client_id": "c", "client_secret_file": secret, "allow_http_issuer": true,
    }))
    .unwrap();
    OidcUpstream::new(settings, "https://auth.example.com").unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(issuer: &str) -> OidcSettings {
        serde_json::from_value(
            json!({"issuer_url": issuer, "client_id": "c", "client_secret_file": "/x"}),
        )
        .unwrap()
    }

    #[test]
    fn okta_org_servers_are_refused_with_the_reason() {
        let err = check_issuer(&settings("https://dev-1.okta.com")).unwrap_err();
        assert!(err.contains("custom authorization server"), "{err}");
        assert!(check_issuer(&settings("https://dev-1.okta.com/oauth2/default")).is_ok());
        assert!(check_issuer(&settings("https://login.microsoftonline.com/t/v2.0")).is_ok());
        assert!(
            check_issuer(&settings("http://127.0.0.1/x")).is_err(),
            "http only with the dev switch"
        );
    }

    #[test]
    fn callback_errors_say_what_to_do() {
        assert_eq!(
            callback_error(
                "access_denied",
                "User is not assigned to the client application."
            ),
            UpstreamError::NotAssigned
        );
        assert!(UpstreamError::NotAssigned
            .to_string()
            .contains("assign the user"));
        assert_eq!(
            callback_error("access_denied", "End-User aborted interaction"),
            UpstreamError::Denied
        );
        assert!(UpstreamError::Unreachable {
            issuer: "i".into(),
            detail: "d".into()
        }
        .is_transient());
    }

    #[test]
    fn only_an_ended_session_ends_a_family_not_an_outage_or_a_misconfiguration() {
        assert!(UpstreamError::SessionEnded("revoked".into()).ends_session());
        assert!(UpstreamError::NotAssigned.ends_session());
        for passing in [
            UpstreamError::Unreachable {
                issuer: "i".into(),
                detail: "d".into(),
            },
            UpstreamError::Other {
                error: "temporarily_unavailable".into(),
                description: "maintenance".into(),
            },
            UpstreamError::InvalidClient {
                method: "client_secret_basic".into(),
            },
            UpstreamError::IdToken("unknown kid".into()),
        ] {
            assert!(!passing.ends_session(), "{passing}");
        }
    }

    #[test]
    fn a_client_is_told_the_kind_of_failure_never_its_detail() {
        let detailed = [
            UpstreamError::InvalidGrant {
                detail: "PKCE verification failed".into(),
                redirect_uri: "https://auth.internal/oauth/callback".into(),
            },
            UpstreamError::Other {
                error: "server_error".into(),
                description: "db01.internal:5432 timeout".into(),
            },
            UpstreamError::Unreachable {
                issuer: "https://idp.internal".into(),
                detail: "dns error: no record".into(),
            },
            UpstreamError::IdToken("signature by unknown key k1".into()),
        ];
        for err in detailed {
            let told = err.for_client();
            for secret in ["internal", "PKCE", "dns", "k1"] {
                assert!(!told.description.contains(secret), "{told} leaks {secret}");
            }
        }
        assert_eq!(
            UpstreamError::Unreachable {
                issuer: "i".into(),
                detail: "d".into()
            }
            .for_client()
            .code,
            ErrorCode::TemporarilyUnavailable
        );
        assert_eq!(
            UpstreamError::NotAssigned.for_client().code,
            ErrorCode::AccessDenied
        );
    }

    #[test]
    fn a_backend_token_is_reused_until_a_minute_before_it_expires_and_only_as_asked() {
        let token = |expires_at: i64| BackendToken {
            access_token: "access-secret".into(),
            expires_at,
            scope: None,
            asked: "https://api scope".into(),
        };
        let mut tokens = UpstreamTokens {
            refresh_token: Some("rt".into()),
            ..UpstreamTokens::default()
        };
        tokens.keep("https://b/mcp", token(1000), 100);
        assert!(
            !format!("{tokens:?}").contains("access-secret"),
            "no token in Debug"
        );
        tokens.keep("https://old/mcp", token(150), 100);
        let margin = BACKEND_TOKEN_MARGIN_SECONDS;
        assert!(
            !tokens.backends.contains_key("https://old/mcp"),
            "too short-lived to keep"
        );
        assert!(tokens
            .backend_token("https://b/mcp", "https://api scope", 1000 - margin - 1)
            .is_some());
        assert!(tokens
            .backend_token("https://b/mcp", "https://api scope", 1000 - margin)
            .is_none());
        assert!(
            tokens
                .backend_token("https://b/mcp", "https://api other", 100)
                .is_none(),
            "asked for other scopes since"
        );
        let rotated = tokens.rotated(Some("rt2".into()));
        assert_eq!(rotated.refresh_token.as_deref(), Some("rt2"));
        assert_eq!(rotated.backends, tokens.backends, "kept across a refresh");
        assert_eq!(tokens.rotated(None).refresh_token.as_deref(), Some("rt"));
        tokens.keep("https://c/mcp", token(2000), 1001);
        assert!(
            !tokens.backends.contains_key("https://b/mcp"),
            "expired ones are dropped"
        );
        let before: UpstreamTokens = serde_json::from_str(r#"{"refresh_token": "rt"}"#).unwrap();
        assert!(
            before.backends.is_empty(),
            "sessions stored before exchange"
        );
    }

    #[test]
    fn a_gateway_is_told_whether_to_retry_sign_in_again_or_ask_the_operator() {
        assert_eq!(
            UpstreamError::SessionEnded("revoked".into())
                .for_exchange()
                .code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            UpstreamError::NoRefreshToken.for_exchange().code,
            ErrorCode::InvalidGrant
        );
        let outage = UpstreamError::Unreachable {
            issuer: "https://idp.internal".into(),
            detail: "dns".into(),
        };
        assert_eq!(
            outage.for_exchange().code,
            ErrorCode::TemporarilyUnavailable
        );
        let misconfigured = UpstreamError::Other {
            error: "invalid_target".into(),
            description: "resource db01.internal not granted".into(),
        }
        .for_exchange();
        assert_eq!(misconfigured.code, ErrorCode::ServerError);
        assert!(!misconfigured.description.contains("internal"));
    }

    #[test]
    fn an_opaque_access_token_has_no_claims() {
        assert!(payload("opaque-token").is_empty());
        let jwt = format!("h.{}.s", URL_SAFE_NO_PAD.encode(r#"{"groups":["g"]}"#));
        assert_eq!(payload(&jwt)["groups"], json!(["g"]));
    }
}

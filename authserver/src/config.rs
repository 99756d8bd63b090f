//! The server's configuration: a YAML file, overridden by flags and environment variables, with
//! secrets read from files so that Kubernetes Secret mounts work.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::client_documents::FetchPolicy;
use crate::idp::UpstreamConfig;
use crate::oauth::exchange::{Backend, TokenSource};
use crate::oauth::Scope;

/// A configuration the server refuses to start with; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("`{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub issuer: Option<String>,
    pub listen: Option<SocketAddr>,
    pub database: Option<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub signing_keys: Vec<PathBuf>,
    #[serde(default)]
    pub lifetimes: Lifetimes,
    #[serde(default)]
    pub groups: GroupsConfig,
    #[serde(default)]
    pub branding: BrandingFile,
    #[serde(default)]
    pub registration: RegistrationConfig,
    pub upstream: Option<UpstreamConfig>,
    #[serde(default)]
    pub client_metadata: FetchPolicy,
    /// 32-byte key (raw or base64) that encrypts upstream tokens at rest; required with `oidc`.
    pub encryption_key_file: Option<PathBuf>,
    #[serde(default)]
    pub server: ServerConfig,
    /// Enterprise-managed authorization: the identity providers whose ID-JAGs are accepted.
    pub enterprise: Option<EnterpriseConfig>,
    /// The platforms whose workload tokens authenticate machine clients.
    pub workload_identity: Option<WorkloadIdentityConfig>,
    /// Machine clients registered by the operator, authenticating with a key or as a workload.
    #[serde(default)]
    pub machine_clients: Vec<MachineClientConfig>,
    #[serde(default)]
    pub token_exchange: TokenExchangeConfig,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Only upstream groups starting with this go into tokens (Okta's `mcp-` convention).
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifetimes {
    pub access_seconds: u64,
    pub refresh_seconds: u64,
    pub code_seconds: u64,
    /// No refresh token outlives this, counted from its family's first issue (rotation slides
    /// `refresh_seconds` only up to here).
    pub refresh_absolute_seconds: u64,
    /// A rotated refresh token presented again within this many seconds (its answer lost to a
    /// crash or a timeout) gets its successor back instead of revoking the family; 0 disables.
    pub refresh_reuse_grace_seconds: u64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access_seconds: 3600,
            refresh_seconds: 7 * 24 * 3600,
            code_seconds: 600,
            refresh_absolute_seconds: 30 * 24 * 3600,
            refresh_reuse_grace_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Whether RFC 7591 registration may create confidential clients (with a secret).
    pub confidential_clients: bool,
    /// Registrations allowed per source address and minute.
    pub per_minute: u32,
    /// A registered client never used for this long is deleted: every SDK connection may
    /// register a fresh client, and most are never seen again.
    pub unused_client_seconds: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            confidential_clients: false,
            per_minute: 20,
            unused_client_seconds: 7 * 24 * 3600,
        }
    }
}

/// How the server holds connections, what it accepts in a request, and how it keeps its
/// database small.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Proxies in front of the server that append the address they received a request from to
    /// `X-Forwarded-For`; 0 (the default) accounts requests to the TCP peer.
    pub trusted_proxy_hops: usize,
    /// Time to receive a request's headers; it also closes a keep-alive connection left idle.
    pub header_read_timeout_seconds: u64,
    /// Longest wait for the next piece of a request body.
    pub body_timeout_seconds: u64,
    /// Longest time from a request's headers to its answer (reading the body included).
    pub request_timeout_seconds: u64,
    /// Largest request body on any endpoint.
    pub max_body_bytes: usize,
    /// Connections served at once; past this the server stops accepting until one closes.
    pub max_connections: usize,
    /// After SIGTERM or SIGINT, how long in-flight requests may take before the process exits.
    pub shutdown_grace_seconds: u64,
    /// How often expired codes, requests, logins, dead grants and unused clients are deleted;
    /// 0 turns the purge off.
    pub purge_interval_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            trusted_proxy_hops: 0,
            header_read_timeout_seconds: 10,
            body_timeout_seconds: 10,
            request_timeout_seconds: 30,
            max_body_bytes: 64 * 1024,
            max_connections: 512,
            shutdown_grace_seconds: 10,
            purge_interval_seconds: 3600,
        }
    }
}

impl ServerConfig {
    /// A zero timeout or limit would refuse every request (or never time out): refused.
    fn check(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            (
                "server.header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            ("server.body_timeout_seconds", self.body_timeout_seconds),
            (
                "server.request_timeout_seconds",
                self.request_timeout_seconds,
            ),
            ("server.max_body_bytes", self.max_body_bytes as u64),
            ("server.max_connections", self.max_connections as u64),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Enterprise-managed authorization (Okta cross-app access, the MCP `enterprise-managed-
/// authorization` extension): the `jwt-bearer` grant accepts an ID-JAG from one of `issuers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseConfig {
    pub issuers: Vec<EnterpriseIssuer>,
    /// An ID-JAG living longer than this (`exp - iat`) is refused: its `jti` is remembered until
    /// it expires, and an assertion meant to be exchanged at once has no use for a long life.
    #[serde(default = "default_max_assertion_seconds")]
    pub max_assertion_seconds: u64,
}

fn default_max_assertion_seconds() -> u64 {
    3600
}

/// One enterprise identity provider whose ID-JAGs are trusted. Its claims are mapped like the
/// `oidc` upstream's (`subject_claim`, `groups_claim`, `roles_claim`), and `groups.prefix`
/// applies, so the same Cedar policies decide for its users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseIssuer {
    /// The `iss` of its ID-JAGs, exactly.
    pub issuer: String,
    /// Where its signing keys are; default: `jwks_uri` of its OpenID discovery document.
    pub jwks_uri: Option<String>,
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    pub groups_claim: Option<String>,
    pub roles_claim: Option<String>,
    /// Development only: an `http://` issuer and keys URL.
    #[serde(default)]
    pub allow_http_issuer: bool,
}

fn default_subject_claim() -> String {
    "sub".into()
}

impl EnterpriseConfig {
    /// Refuses a section that would trust nothing, or what is not an issuer: a typo here must
    /// stop the server, not accept or refuse every assertion in silence.
    fn check(&self, our_issuer: &str) -> Result<(), ConfigError> {
        if self.issuers.is_empty() {
            return Err(invalid(
                "enterprise.issuers",
                "list at least one identity provider (or remove `enterprise`)",
            ));
        }
        if self.max_assertion_seconds == 0 {
            return Err(invalid(
                "enterprise.max_assertion_seconds",
                "must be at least 1",
            ));
        }
        check_trusted_issuers("enterprise.issuers", &self.issuers, our_issuer)
    }
}

/// Refuses what is not a trusted issuer: a URL that is not https (unless `allow_http_issuer`),
/// this server itself (an authorization server never takes its own tokens for grants or client
/// authentication: any token of ours would become a wider one), one listed twice.
fn check_trusted_issuers(
    field: &'static str,
    issuers: &[EnterpriseIssuer],
    our_issuer: &str,
) -> Result<(), ConfigError> {
    let ours = our_issuer.trim_end_matches('/');
    for (index, entry) in issuers.iter().enumerate() {
        for (what, text) in std::iter::once(("issuer", &entry.issuer))
            .chain(entry.jwks_uri.iter().map(|uri| ("jwks_uri", uri)))
        {
            let url = Url::parse(text)
                .map_err(|err| invalid(field, format!("{what} `{text}` is not a URL: {err}")))?;
            if url.scheme() != "https" && !(entry.allow_http_issuer && url.scheme() == "http") {
                return Err(invalid(
                    field,
                    format!(
                        "{what} `{text}` must be https (allow_http_issuer is for local tests only)"
                    ),
                ));
            }
        }
        if entry.issuer.trim_end_matches('/') == ours {
            return Err(invalid(
                field,
                format!("`{}` is this server's own issuer", entry.issuer),
            ));
        }
        if issuers[..index]
            .iter()
            .any(|other| other.issuer == entry.issuer)
        {
            return Err(invalid(
                field,
                format!("`{}` is listed twice", entry.issuer),
            ));
        }
    }
    Ok(())
}

/// Workload identity: tokens a platform issues to its workloads (Kubernetes service-account
/// tokens projected for this server's issuer, SPIFFE JWT-SVIDs) authenticate the machine clients
/// bound to them, so an agent running as a workload needs no secret and no browser.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentityConfig {
    /// The platforms' token issuers, with the same keys as `enterprise.issuers` (the claim
    /// mappings aside: a workload's groups are its machine client's).
    pub issuers: Vec<EnterpriseIssuer>,
    /// A workload token living longer than this (`exp - iat`) is refused: it is reused until it
    /// expires, so a stolen one is good that long (Kubernetes projects tokens for an hour by
    /// default; `expirationSeconds` may shorten it to ten minutes).
    #[serde(default = "default_max_workload_token_seconds")]
    pub max_token_seconds: u64,
}

fn default_max_workload_token_seconds() -> u64 {
    3600
}

/// The grant types a machine client may use: there is no user to send to a browser.
const MACHINE_GRANTS: [&str; 3] = [
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "urn:ietf:params:oauth:grant-type:token-exchange",
];

/// A machine client registered by the operator (the MCP client-credentials extension wants them
/// registered out of band): it authenticates with a JWT (`private_key_jwt`, RFC 7523 §2.2) signed
/// by its own key (`jwks` or `jwks_uri`), or as a workload (`workload`), never with a secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineClientConfig {
    pub client_id: String,
    pub client_name: Option<String>,
    #[serde(default = "default_machine_grants")]
    pub grant_types: Vec<String>,
    /// The scopes its tokens may carry (space-separated); default: every scope offered but
    /// `offline_access`.
    pub scope: Option<String>,
    /// Put in its tokens' `groups` claim, so Cedar policies name the client's group.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Its public keys (a JWK set).
    pub jwks: Option<serde_json::Value>,
    /// Where its public keys are published.
    pub jwks_uri: Option<String>,
    /// The workload it runs as.
    pub workload: Option<WorkloadBinding>,
    /// Development only: an `http://` `jwks_uri`.
    #[serde(default)]
    pub allow_http_jwks_uri: bool,
}

fn default_machine_grants() -> Vec<String> {
    vec!["client_credentials".to_owned()]
}

/// A workload, as its platform's tokens name it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadBinding {
    /// One of `workload_identity.issuers`.
    pub issuer: String,
    /// The token's `sub`, e.g. `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
}

/// Each machine client has a unique id, exactly one way to authenticate, public keys only, and
/// grant types a machine can use; a workload is bound to one client, of a trusted platform.
fn check_machine_clients(
    clients: &[MachineClientConfig],
    workload: Option<&WorkloadIdentityConfig>,
) -> Result<(), ConfigError> {
    const FIELD: &str = "machine_clients";
    for (index, client) in clients.iter().enumerate() {
        let id = &client.client_id;
        if id.trim().is_empty() || id.len() > 128 {
            return Err(invalid(
                FIELD,
                format!("client_id `{id}` must be 1 to 128 characters"),
            ));
        }
        if clients[..index].iter().any(|other| &other.client_id == id) {
            return Err(invalid(FIELD, format!("client_id `{id}` is listed twice")));
        }
        let ways = [
            client.jwks.is_some(),
            client.jwks_uri.is_some(),
            client.workload.is_some(),
        ];
        if ways.iter().filter(|way| **way).count() != 1 {
            return Err(invalid(
                FIELD,
                format!("client `{id}` needs exactly one of `jwks`, `jwks_uri` or `workload`"),
            ));
        }
        if let Some(jwks) = &client.jwks {
            check_public_jwks(id, jwks)?;
        }
        if let Some(uri) = &client.jwks_uri {
            let url = Url::parse(uri).map_err(|err| {
                invalid(
                    FIELD,
                    format!("client `{id}`: jwks_uri `{uri}` is not a URL: {err}"),
                )
            })?;
            if url.scheme() != "https" && !(client.allow_http_jwks_uri && url.scheme() == "http") {
                return Err(invalid(
                    FIELD,
                    format!("client `{id}`: jwks_uri `{uri}` must be https (allow_http_jwks_uri is for local tests only)"),
                ));
            }
        }
        if let Some(binding) = &client.workload {
            let trusted =
                workload.is_some_and(|w| w.issuers.iter().any(|i| i.issuer == binding.issuer));
            if !trusted {
                return Err(invalid(
                    FIELD,
                    format!(
                        "client `{id}`: workload issuer `{}` is not in `workload_identity.issuers`",
                        binding.issuer
                    ),
                ));
            }
            if let Some(other) = clients[..index]
                .iter()
                .find(|c| c.workload.as_ref() == Some(binding))
            {
                return Err(invalid(
                    FIELD,
                    format!(
                        "client `{id}`: workload `{}` is already bound to `{}`",
                        binding.subject, other.client_id
                    ),
                ));
            }
        }
        if client.grant_types.is_empty() {
            return Err(invalid(
                FIELD,
                format!("client `{id}`: list its grant_types"),
            ));
        }
        if let Some(grant) = client
            .grant_types
            .iter()
            .find(|g| !MACHINE_GRANTS.contains(&g.as_str()))
        {
            return Err(invalid(
                FIELD,
                format!(
                    "client `{id}`: grant type `{grant}` is not one a machine client can use ({})",
                    MACHINE_GRANTS.join(", ")
                ),
            ));
        }
        if let Some(scope) = &client.scope {
            crate::oauth::Scope::parse(scope)
                .map_err(|err| invalid(FIELD, format!("client `{id}`: scope: {err}")))?;
        }
    }
    Ok(())
}

/// A JWK set of public keys: one pasted with its private part (`d`, or a symmetric `k`) would
/// put the client's secret in the server's configuration.
fn check_public_jwks(id: &str, jwks: &serde_json::Value) -> Result<(), ConfigError> {
    let keys = jwks["keys"]
        .as_array()
        .filter(|keys| !keys.is_empty())
        .ok_or_else(|| {
            invalid(
                "machine_clients",
                format!("client `{id}`: jwks must be a JWK set with at least one key in `keys`"),
            )
        })?;
    for key in keys {
        if key.get("d").is_some() || key.get("k").is_some() || key["kty"] == "oct" {
            return Err(invalid(
                "machine_clients",
                format!("client `{id}`: jwks holds a private or symmetric key; give the public key only"),
            ));
        }
    }
    serde_json::from_value::<openidconnect::core::CoreJsonWebKeySet>(jwks.clone()).map_err(
        |err| {
            invalid(
                "machine_clients",
                format!("client `{id}`: jwks is not a JWK set: {err}"),
            )
        },
    )?;
    Ok(())
}

/// RFC 8693 token exchange (`token_exchange`): which gateway clients may exchange a caller's
/// access token for a token of which backend, with which scopes. Nothing is exchanged unless
/// an audience lists the client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenExchangeConfig {
    /// Longest life of an issued token; never past the subject token's `exp` either.
    pub lifetime_seconds: u64,
    /// The longest `act` chain an issued token may carry. 1 (the default): a token minted by
    /// exchange is refused as a subject token; more lets backends exchange again, each actor
    /// nested in the next.
    pub max_actor_chain: usize,
    /// Confidential clients declared here rather than registered (the gateways), so their
    /// client IDs are known before the server starts; stored (or updated) at every start.
    pub gateways: Vec<GatewayClient>,
    pub audiences: Vec<Backend>,
}

/// A gateway client: its ID and the file holding its secret (a Kubernetes Secret mount).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayClient {
    pub client_id: String,
    pub client_secret_file: PathBuf,
}

/// The longest actor chain the filter names to policies (its `context.actor_chain`).
const MAX_ACTOR_CHAIN: usize = 8;

impl Default for TokenExchangeConfig {
    fn default() -> Self {
        Self {
            lifetime_seconds: 300,
            max_actor_chain: 1,
            gateways: Vec::new(),
            audiences: Vec::new(),
        }
    }
}

impl TokenExchangeConfig {
    /// Refuses a section that could issue a token nobody meant: every audience names its
    /// clients and scopes (scopes the server issues, never `offline_access`), no audience is
    /// an MCP resource of this server (tokens for those come from a sign-in), and `upstream`
    /// needs an `oidc` upstream to ask.
    fn check(
        &self,
        resources: &[String],
        scopes: &[String],
        upstream: Option<&UpstreamConfig>,
    ) -> Result<(), ConfigError> {
        if self.lifetime_seconds == 0 {
            return Err(invalid(
                "token_exchange.lifetime_seconds",
                "must be at least 1",
            ));
        }
        if !(1..=MAX_ACTOR_CHAIN).contains(&self.max_actor_chain) {
            return Err(invalid(
                "token_exchange.max_actor_chain",
                format!(
                    "`{}` must be between 1 and {MAX_ACTOR_CHAIN}",
                    self.max_actor_chain
                ),
            ));
        }
        for (index, gateway) in self.gateways.iter().enumerate() {
            let id = &gateway.client_id;
            if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
                return Err(invalid(
                    "token_exchange.gateways",
                    format!("client_id `{id}` must be 1 to 200 printable characters"),
                ));
            }
            if self.gateways[..index].iter().any(|g| &g.client_id == id) {
                return Err(invalid(
                    "token_exchange.gateways",
                    format!("client_id `{id}` is declared twice"),
                ));
            }
        }
        for (index, backend) in self.audiences.iter().enumerate() {
            check_backend(
                backend,
                &self.audiences[..index],
                resources,
                scopes,
                upstream,
            )?;
        }
        Ok(())
    }
}

fn check_backend(
    backend: &Backend,
    earlier: &[Backend],
    resources: &[String],
    scopes: &[String],
    upstream: Option<&UpstreamConfig>,
) -> Result<(), ConfigError> {
    const FIELD: &str = "token_exchange.audiences";
    let audience = &backend.audience;
    let fail = |reason: String| Err(invalid(FIELD, format!("`{audience}`: {reason}")));
    if audience.is_empty() {
        return Err(invalid(FIELD, "an entry has an empty `audience`"));
    }
    if earlier.iter().any(|b| &b.audience == audience) {
        return fail("listed twice".into());
    }
    if resources.contains(audience) {
        return fail(
            "is one of `resources`: tokens for an MCP resource come from a user's sign-in, not from exchange".into(),
        );
    }
    if backend.clients.is_empty() {
        return fail("`clients` is empty: list the client IDs that may exchange for it".into());
    }
    if backend.scopes.is_empty() {
        return fail("`scopes` is empty: list the scopes its tokens may carry".into());
    }
    for scope in &backend.scopes {
        if let Err(err) = Scope::parse(scope) {
            return fail(format!("scopes: {err}"));
        }
        if scope == "offline_access" {
            return fail(
                "scopes: `offline_access` cannot be exchanged (no refresh token is issued)".into(),
            );
        }
        if !scopes.contains(scope) {
            return fail(format!(
                "scopes: `{scope}` is not in `scopes`, so no subject token can carry it"
            ));
        }
    }
    match backend.issuer {
        TokenSource::SelfSigned => {
            if !backend.upstream_scopes.is_empty() || backend.upstream_resource.is_some() {
                return fail(
                    "`upstream_scopes` and `upstream_resource` are for `issuer: upstream`".into(),
                );
            }
        }
        TokenSource::Upstream => {
            if !matches!(upstream, Some(UpstreamConfig::Oidc(_))) {
                return fail(
                    "`issuer: upstream` needs an `upstream` of type `oidc`: its refresh tokens get the user's tokens for the backend".into(),
                );
            }
            if let Some(resource) = &backend.upstream_resource {
                if let Err(err) = Url::parse(resource) {
                    return fail(format!(
                        "upstream_resource `{resource}` is not a URL: {err}"
                    ));
                }
            }
            for scope in &backend.upstream_scopes {
                if let Err(err) = Scope::parse(scope) {
                    return fail(format!("upstream_scopes: {err}"));
                }
            }
        }
    }
    Ok(())
}

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub issuer: Option<String>,
    pub listen: Option<SocketAddr>,
    pub database: Option<String>,
    pub resources: Vec<String>,
    pub signing_keys: Vec<PathBuf>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub issuer: Url,
    pub listen: SocketAddr,
    pub database: String,
    pub resources: Vec<String>,
    pub scopes: Vec<String>,
    pub signing_keys: Vec<PathBuf>,
    pub lifetimes: Lifetimes,
    pub groups: GroupsConfig,
    pub branding: Branding,
    pub registration: RegistrationConfig,
    pub upstream: Option<UpstreamConfig>,
    pub client_metadata: FetchPolicy,
    pub encryption_key_file: Option<PathBuf>,
    pub server: ServerConfig,
    pub enterprise: Option<EnterpriseConfig>,
    pub workload_identity: Option<WorkloadIdentityConfig>,
    pub machine_clients: Vec<MachineClientConfig>,
    pub token_exchange: TokenExchangeConfig,
}

impl Config {
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                serde_yaml::from_str::<FileConfig>(&text).map_err(|err| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: err.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        Self::resolve(file, overrides)
    }

    pub fn resolve(file: FileConfig, overrides: Overrides) -> Result<Self, ConfigError> {
        let issuer_text = overrides
            .issuer
            .or(file.issuer)
            .ok_or_else(|| invalid("issuer", "required: the URL clients reach this server at"))?;
        let issuer = Url::parse(&issuer_text)
            .map_err(|err| invalid("issuer", format!("`{issuer_text}` is not a URL: {err}")))?;
        if !matches!(issuer.scheme(), "https" | "http")
            || issuer.query().is_some()
            || issuer.fragment().is_some()
        {
            return Err(invalid(
                "issuer",
                format!("`{issuer_text}` must be an http(s) URL without query or fragment"),
            ));
        }
        check_issuer_path(&issuer_text, issuer.path())?;
        let resources = if overrides.resources.is_empty() {
            file.resources
        } else {
            overrides.resources
        };
        if resources.is_empty() {
            return Err(invalid(
                "resources",
                "list at least one MCP resource URL tokens may be issued for",
            ));
        }
        for resource in &resources {
            let url = Url::parse(resource)
                .map_err(|err| invalid("resources", format!("`{resource}` is not a URL: {err}")))?;
            if url.fragment().is_some() {
                return Err(invalid(
                    "resources",
                    format!("`{resource}` must not have a fragment (RFC 8707)"),
                ));
            }
        }
        let lifetimes = file.lifetimes;
        if lifetimes.access_seconds == 0
            || lifetimes.refresh_seconds == 0
            || lifetimes.code_seconds == 0
            || lifetimes.refresh_absolute_seconds == 0
        {
            return Err(invalid(
                "lifetimes",
                "every lifetime must be at least one second",
            ));
        }
        if lifetimes.code_seconds > 600 {
            return Err(invalid(
                "lifetimes.code_seconds",
                "authorization codes live at most 600 seconds (RFC 6749 §4.1.2)",
            ));
        }
        let scopes = if file.scopes.is_empty() {
            vec!["mcp:tools".to_owned(), "offline_access".to_owned()]
        } else {
            file.scopes
        };
        file.server.check()?;
        if let Some(enterprise) = &file.enterprise {
            enterprise.check(issuer.as_str())?;
        }
        if let Some(workload) = &file.workload_identity {
            check_trusted_issuers(
                "workload_identity.issuers",
                &workload.issuers,
                issuer.as_str(),
            )?;
        }
        check_machine_clients(&file.machine_clients, file.workload_identity.as_ref())?;
        for client in &file.machine_clients {
            // One namespace of client ids: a gateway and a machine client of one id would be
            // one principal (`client_id`, `act.sub`) to policies.
            if let Some(gateway) = file
                .token_exchange
                .gateways
                .iter()
                .find(|g| g.client_id == client.client_id)
            {
                return Err(invalid(
                    "machine_clients",
                    format!(
                        "client_id `{}` is also a token_exchange gateway",
                        gateway.client_id
                    ),
                ));
            }
            let offered = client
                .scope
                .iter()
                .flat_map(|scope| scope.split_ascii_whitespace())
                .find(|scope| !scopes.iter().any(|s| s == scope));
            if let Some(scope) = offered {
                return Err(invalid(
                    "machine_clients",
                    format!(
                        "client `{}`: scope `{scope}` is not one of `scopes` this server offers",
                        client.client_id
                    ),
                ));
            }
        }
        file.token_exchange
            .check(&resources, &scopes, file.upstream.as_ref())?;
        // Without the key no upstream session is kept, so refreshes could never be re-checked
        // with the identity provider (a user removed from a group upstream would keep it here).
        if matches!(
            file.upstream,
            Some(UpstreamConfig::Oidc(_) | UpstreamConfig::OAuth2(_))
        ) && file.encryption_key_file.is_none()
        {
            return Err(invalid(
                "encryption_key_file",
                "required with an `oidc` or `oauth2` upstream: upstream tokens are stored encrypted",
            ));
        }
        Ok(Self {
            issuer,
            listen: overrides
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9000))),
            database: overrides
                .database
                .or(file.database)
                .unwrap_or_else(|| "sqlite://authserver.db?mode=rwc".to_owned()),
            resources,
            scopes,
            signing_keys: if overrides.signing_keys.is_empty() {
                file.signing_keys
            } else {
                overrides.signing_keys
            },
            lifetimes,
            groups: file.groups,
            branding: file.branding.check()?,
            registration: file.registration,
            upstream: file.upstream,
            client_metadata: file.client_metadata,
            encryption_key_file: file.encryption_key_file,
            server: file.server,
            enterprise: file.enterprise,
            workload_identity: file.workload_identity,
            machine_clients: file.machine_clients,
            token_exchange: file.token_exchange,
        })
    }

    /// The issuer without a trailing slash, as it appears in `iss` and in metadata.
    pub fn issuer_str(&self) -> &str {
        self.issuer.as_str().trim_end_matches('/')
    }

    /// What access tokens take from this configuration.
    pub fn issuance(&self) -> crate::oauth::grant::Issuance<'_> {
        crate::oauth::grant::Issuance {
            issuer: self.issuer_str(),
            access_seconds: self.lifetimes.access_seconds,
            group_prefix: self.groups.prefix.as_deref().unwrap_or(""),
        }
    }

    /// What a token exchange takes from this configuration.
    pub fn exchange_policy(&self) -> crate::oauth::exchange::Policy<'_> {
        crate::oauth::exchange::Policy {
            issuance: crate::oauth::grant::Issuance {
                access_seconds: self.token_exchange.lifetime_seconds,
                ..self.issuance()
            },
            resources: &self.resources,
            backends: &self.token_exchange.audiences,
            max_actor_chain: self.token_exchange.max_actor_chain,
        }
    }

    /// `<issuer><path>`: an endpoint under the issuer.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer_str())
    }

    /// The issuer's path without a trailing slash: "" for an issuer at a host's root, "/auth"
    /// for `https://host/auth`. The endpoints are served under it as well as at the root.
    pub fn issuer_path(&self) -> &str {
        self.issuer.path().trim_end_matches('/')
    }

    /// `<issuer path><path>`: where a browser is sent or a form posts to. Relative to the origin
    /// and never to the request path, so it is right whether the proxy in front keeps the
    /// issuer's path prefix or strips it: the browser only ever sees the public URL.
    pub fn local_path(&self, path: &str) -> String {
        format!("{}{path}", self.issuer_path())
    }
}

/// The issuer's path becomes a route prefix: only plain segments (letters, digits, `-._~`), so
/// that it can neither be read as a route pattern (`{id}`, `*rest`) nor hide an empty segment,
/// and none starting with a dot, so that it cannot land on the well-known routes themselves.
fn check_issuer_path(issuer_text: &str, path: &str) -> Result<(), ConfigError> {
    let path = path.trim_end_matches('/');
    let plain = |segment: &str| {
        !segment.is_empty()
            && !segment.starts_with('.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    };
    if path.is_empty() || path.split('/').skip(1).all(plain) {
        Ok(())
    } else {
        Err(invalid(
            "issuer",
            format!(
                "`{issuer_text}`: its path must be plain segments (letters, digits, `-._~`, not starting with a dot) separated by single slashes"
            ),
        ))
    }
}

/// `branding`: how the login, consent and error pages present the server. Every key is
/// optional; without any the pages look as they always did.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BrandingFile {
    /// The product's name, in every page's header and title.
    pub name: Option<String>,
    /// An `https` image URL shown in the header (the pages' CSP allows images from its origin
    /// only).
    pub logo_url: Option<String>,
    /// `#rrggbb`: the main button and the header's rule.
    pub primary_color: Option<String>,
    /// `#rrggbb`: the page's background (the text turns light on a dark one).
    pub background_color: Option<String>,
    /// An `https` or `mailto:` URL offered on every page as where to get help.
    pub support_url: Option<String>,
}

/// The checked branding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branding {
    pub name: Option<String>,
    pub logo: Option<Url>,
    pub primary: Option<Colour>,
    pub background: Option<Colour>,
    pub support: Option<Url>,
}

/// A colour given as `#rrggbb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour(pub [u8; 3]);

/// Longest product name: it has to fit a header on a phone.
const MAX_BRAND_NAME: usize = 60;
/// Longest logo or support URL (a data: URI is refused, so a URL is short).
const MAX_BRAND_URL: usize = 2048;

impl BrandingFile {
    /// Refuses a value the pages could not show safely or as meant, naming the key and quoting
    /// the value.
    fn check(self) -> Result<Branding, ConfigError> {
        let name = match self.name {
            Some(name) => {
                let trimmed = name.trim();
                if trimmed.is_empty()
                    || trimmed.chars().count() > MAX_BRAND_NAME
                    || trimmed.chars().any(char::is_control)
                {
                    return Err(invalid(
                        "branding.name",
                        format!("`{}` must be 1 to {MAX_BRAND_NAME} characters of text, without control characters", name.escape_debug()),
                    ));
                }
                Some(trimmed.to_owned())
            }
            None => None,
        };
        let logo = self
            .logo_url
            .map(|text| {
                brand_url(&text, &["https"]).map_err(|reason| {
                    invalid(
                        "branding.logo_url",
                        format!("`{text}` {reason}; host the image on an https origin (data: URIs are refused: they would bloat every page)"),
                    )
                })
            })
            .transpose()?;
        let support = self
            .support_url
            .map(|text| {
                brand_url(&text, &["https", "mailto"])
                    .map_err(|reason| invalid("branding.support_url", format!("`{text}` {reason}")))
            })
            .transpose()?;
        Ok(Branding {
            name,
            logo,
            primary: self
                .primary_color
                .map(|text| Colour::parse("branding.primary_color", &text))
                .transpose()?,
            background: self
                .background_color
                .map(|text| Colour::parse("branding.background_color", &text))
                .transpose()?,
            support,
        })
    }
}

/// `text` as a URL of one of `schemes`, without credentials; the reason it is not one.
fn brand_url(text: &str, schemes: &[&str]) -> Result<Url, String> {
    if text.len() > MAX_BRAND_URL {
        return Err(format!("is longer than {MAX_BRAND_URL} bytes"));
    }
    let url = Url::parse(text).map_err(|err| format!("is not a URL ({err})"))?;
    if !schemes.contains(&url.scheme()) {
        let schemes: Vec<String> = schemes.iter().map(|s| format!("{s}:")).collect();
        return Err(format!("must be an {} URL", schemes.join(" or ")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".to_owned());
    }
    if url.scheme() == "https" && url.host_str().is_none() {
        return Err("has no host".to_owned());
    }
    Ok(url)
}

impl Colour {
    fn parse(field: &'static str, text: &str) -> Result<Self, ConfigError> {
        let refused = || {
            invalid(
                field,
                format!("`{text}` is not a colour: write it as #rrggbb, e.g. #0b5fff"),
            )
        };
        let hex = text.strip_prefix('#').ok_or_else(refused)?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused());
        }
        let channel = |at: usize| u8::from_str_radix(&hex[at..at + 2], 16).map_err(|_| refused());
        Ok(Self([channel(0)?, channel(2)?, channel(4)?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> FileConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let config = Config::resolve(
            file("issuer: http://localhost:8080\nresources: [http://localhost:8080/mcp]\n"),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.issuer_str(), "http://localhost:8080");
        assert_eq!(config.lifetimes.access_seconds, 3600);
        assert_eq!(config.scopes, ["mcp:tools", "offline_access"]);
        assert_eq!(config.server.trusted_proxy_hops, 0, "the peer, unless told");
        assert_eq!(config.server.max_body_bytes, 64 * 1024);
        assert_eq!(config.server.shutdown_grace_seconds, 10);
        assert_eq!(config.server.purge_interval_seconds, 3600);
        assert_eq!(config.registration.unused_client_seconds, 7 * 24 * 3600);
        assert_eq!(
            config.endpoint("/oauth/token"),
            "http://localhost:8080/oauth/token"
        );
    }

    #[test]
    fn an_issuer_with_a_path_puts_every_endpoint_and_link_under_it() {
        for issuer in ["http://host:8080/auth", "http://host:8080/auth/"] {
            let config = Config::resolve(
                file(&format!(
                    "issuer: {issuer}\nresources: [http://host:8080/mcp]\n"
                )),
                Overrides::default(),
            )
            .unwrap();
            assert_eq!(config.issuer_str(), "http://host:8080/auth");
            assert_eq!(config.issuer_path(), "/auth");
            assert_eq!(
                config.endpoint("/oauth/register"),
                "http://host:8080/auth/oauth/register"
            );
            assert_eq!(
                config.local_path("/oauth/login?request=r"),
                "/auth/oauth/login?request=r"
            );
        }
        let root = Config::resolve(
            file("issuer: http://host\nresources: [http://host/mcp]\n"),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(root.issuer_path(), "");
        assert_eq!(root.local_path("/oauth/consent"), "/oauth/consent");
    }

    #[test]
    fn an_issuer_path_that_is_not_plain_segments_is_refused() {
        for issuer in [
            "http://host/a//b",
            "http://host/%7Bid%7D",
            "http://host/a/*rest",
            "http://host/a:b",
            "http://host/.well-known/openid-configuration",
        ] {
            let err = Config::resolve(
                file(&format!(
                    "issuer: \"{issuer}\"\nresources: [http://host/mcp]\n"
                )),
                Overrides::default(),
            )
            .unwrap_err();
            assert!(err.to_string().starts_with("`issuer`"), "{issuer}: {err}");
            assert!(
                err.to_string().contains("plain segments"),
                "{issuer}: {err}"
            );
        }
        let nested = Config::resolve(
            file("issuer: http://host/tenants/a-1\nresources: [http://host/mcp]\n"),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(nested.issuer_path(), "/tenants/a-1");
    }

    #[test]
    fn branding_is_checked_and_absent_by_default() {
        let plain = Config::resolve(
            file("issuer: http://a\nresources: [http://a/mcp]\n"),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(plain.branding, Branding::default());
        let branded = Config::resolve(
            file(
                "issuer: http://a\nresources: [http://a/mcp]\nbranding: {name: \" Acme MCP \", \
                 logo_url: \"https://cdn.acme.example/logo.svg\", primary_color: \"#0B5fff\", \
                 background_color: \"#101820\", support_url: \"mailto:help@acme.example\"}\n",
            ),
            Overrides::default(),
        )
        .unwrap();
        let branding = branded.branding;
        assert_eq!(branding.name.as_deref(), Some("Acme MCP"));
        assert_eq!(
            branding.logo.map(String::from).as_deref(),
            Some("https://cdn.acme.example/logo.svg")
        );
        assert_eq!(branding.primary, Some(Colour([0x0b, 0x5f, 0xff])));
        assert_eq!(branding.background, Some(Colour([0x10, 0x18, 0x20])));
        assert_eq!(
            branding.support.map(|u| u.scheme().to_owned()).as_deref(),
            Some("mailto")
        );
    }

    #[test]
    fn a_bad_branding_value_is_refused_naming_the_key_and_quoting_the_value() {
        for (yaml, field, quoted) in [
            ("primary_color: red", "branding.primary_color", "`red`"),
            (
                "primary_color: \"#0b5ff\"",
                "branding.primary_color",
                "`#0b5ff`",
            ),
            (
                "background_color: \"#gg0000\"",
                "branding.background_color",
                "`#gg0000`",
            ),
            (
                "logo_url: http://cdn.example/logo.png",
                "branding.logo_url",
                "`http://cdn.example/logo.png`",
            ),
            (
                "logo_url: \"data:image/png;base64,AAAA\"",
                "branding.logo_url",
                "data: URIs are refused",
            ),
            (
                "logo_url: \"https://user:pw@cdn.example/l.png\"",
                "branding.logo_url",
                "user name or password",
            ),
            (
                "support_url: \"javascript:alert(1)\"",
                "branding.support_url",
                "`javascript:alert(1)`",
            ),
            ("name: \"  \"", "branding.name", "1 to 60 characters"),
            (
                "name: \"a\\u001b[2Jb\"",
                "branding.name",
                "without control characters",
            ),
        ] {
            let err = Config::resolve(
                file(&format!(
                    "issuer: http://a\nresources: [http://a/mcp]\nbranding: {{{yaml}}}\n"
                )),
                Overrides::default(),
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(&format!("`{field}`")), "{yaml}: {text}");
            assert!(text.contains(quoted), "{yaml}: {text}");
        }
        assert!(
            serde_yaml::from_str::<FileConfig>("branding: {colour: red}\n")
                .unwrap_err()
                .to_string()
                .contains("unknown field `colour`")
        );
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let overrides = Overrides {
            issuer: Some("https://auth.example.com".into()),
            ..Overrides::default()
        };
        let config = Config::resolve(
            file("issuer: http://localhost:8080\nresources: [x:/mcp]\n"),
            overrides,
        )
        .unwrap();
        assert_eq!(config.issuer_str(), "https://auth.example.com");
    }

    #[test]
    fn machine_clients_need_one_public_way_to_authenticate_and_machine_grants() {
        let resolve = |sections: &str| {
            let yaml = format!(
                "issuer: https://auth.example.com\nresources: [https://auth.example.com/mcp]\n\
                 workload_identity: {{issuers: [{{issuer: https://k8s.example.com}}]}}\n{sections}"
            );
            Config::resolve(serde_yaml::from_str(&yaml).unwrap(), Overrides::default())
                .map_err(|err| err.to_string())
        };
        let key = r#"{kty: EC, crv: P-256, x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let ok = resolve(&format!(
            "machine_clients:\n- {{client_id: a, jwks: {{keys: [{key}]}}}}\n\
             - {{client_id: b, workload: {{issuer: https://k8s.example.com, subject: system:serviceaccount:x:y}}}}\n"
        ))
        .unwrap();
        assert_eq!(ok.machine_clients[0].grant_types, ["client_credentials"]);
        for (clients, says) in [
            ("- {client_id: a}".to_owned(), "exactly one of"),
            (format!("- {{client_id: a, jwks: {{keys: [{key}]}}, jwks_uri: https://a.example.com/jwks}}"), "exactly one of"),
            (format!("- {{client_id: a, jwks: {{keys: [{key}]}}}}\n- {{client_id: a, jwks: {{keys: [{key}]}}}}"), "listed twice"),
            ("- {client_id: a, jwks: {keys: [{kty: oct, k: c2VjcmV0}]}}".to_owned(), "private or symmetric"),
            (format!("- {{client_id: a, jwks: {{keys: [{}]}}}}", key.replace("}", ", d: c2VjcmV0}")), "private or symmetric"),
            ("- {client_id: a, jwks: {keys: []}}".to_owned(), "at least one key"),
            ("- {client_id: a, jwks_uri: http://a.example.com/jwks}".to_owned(), "must be https"),
            ("- {client_id: a, workload: {issuer: https://other.example.com, subject: s}}".to_owned(), "not in `workload_identity.issuers`"),
            ("- {client_id: a, workload: {issuer: https://k8s.example.com, subject: s}}\n- {client_id: b, workload: {issuer: https://k8s.example.com, subject: s}}".to_owned(), "already bound"),
            (format!("- {{client_id: a, grant_types: [authorization_code], jwks: {{keys: [{key}]}}}}"), "not one a machine client can use"),
        ] {
            let err = resolve(&format!("machine_clients:\n{clients}\n")).unwrap_err();
            assert!(err.starts_with("`machine_clients`") && err.contains(says), "{clients}: {err}");
        }
        let err = resolve(&format!(
            "machine_clients:\n- {{client_id: a, scope: mcp:everything, jwks: {{keys: [{key}]}}}}\n"
        ))
        .unwrap_err();
        assert!(err.contains("not one of `scopes`"), "{err}");
        let err = resolve(&format!(
            "machine_clients:\n- {{client_id: gw, jwks: {{keys: [{key}]}}}}\n\
             token_exchange: {{gateways: [{{client_id: gw, client_secret_file: /s}}]}}\n"
        ))
        .unwrap_err();
        assert!(err.contains("also a token_exchange gateway"), "{err}");
        let own = "issuer: https://auth.example.com\nresources: [https://auth.example.com/mcp]\n\
                   workload_identity: {issuers: [{issuer: https://auth.example.com}]}\n";
        let err =
            Config::resolve(serde_yaml::from_str(own).unwrap(), Overrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("this server's own issuer"),
            "{err}"
        );
    }

    #[test]
    fn an_enterprise_section_must_trust_real_issuers_other_than_this_server() {
        let resolve = |enterprise: &str| {
            Config::resolve(
                file(&format!(
                    "issuer: https://auth.example.com\nresources: [https://auth.example.com/mcp]\nenterprise: {enterprise}\n"
                )),
                Overrides::default(),
            )
        };
        let config = resolve(
            "{issuers: [{issuer: https://acme.okta.com/oauth2/default, groups_claim: groups}]}",
        )
        .unwrap();
        let enterprise = config.enterprise.unwrap();
        assert_eq!(enterprise.max_assertion_seconds, 3600);
        assert_eq!(enterprise.issuers[0].subject_claim, "sub");
        assert_eq!(enterprise.issuers[0].jwks_uri, None, "discovered");
        for (section, why) in [
            ("{issuers: []}", "at least one"),
            ("{issuers: [{issuer: http://idp.example.com}]}", "must be https"),
            ("{issuers: [{issuer: https://idp.example.com, jwks_uri: http://idp.example.com/k}]}", "must be https"),
            ("{issuers: [{issuer: not a url}]}", "is not a URL"),
            ("{issuers: [{issuer: \"https://auth.example.com/\"}]}", "own issuer"),
            ("{issuers: [{issuer: https://a.example.com}, {issuer: https://a.example.com}]}", "listed twice"),
            ("{issuers: [{issuer: https://a.example.com}], max_assertion_seconds: 0}", "at least 1"),
        ] {
            let err = resolve(section).unwrap_err().to_string();
            assert!(err.starts_with("`enterprise."), "{section}: {err}");
            assert!(err.contains(why), "{section}: {err}");
        }
        assert!(
            resolve("{issuers: [{issuer: http://127.0.0.1:9100/oauth2/default, allow_http_issuer: true}]}").is_ok(),
            "http for local tests"
        );
        assert!(serde_yaml::from_str::<FileConfig>(
            "enterprise: {issuers: [{issuer: x, group_claim: g}]}\n"
        )
        .unwrap_err()
        .to_string()
        .contains("unknown field `group_claim`"));
    }

    #[test]
    fn token_exchange_is_off_by_default_and_a_backend_gets_what_it_lists() {
        let base = "issuer: http://a\nresources: [http://a/mcp]\n";
        let config = Config::resolve(file(base), Overrides::default()).unwrap();
        assert!(config.token_exchange.audiences.is_empty());
        assert_eq!(
            (
                config.token_exchange.lifetime_seconds,
                config.token_exchange.max_actor_chain
            ),
            (300, 1)
        );
        let config = Config::resolve(
            file(&format!(
                "{base}token_exchange:\n  gateways: [{{client_id: mesh-gateway, client_secret_file: /s}}]\n  audiences:\n  - {{audience: https://gh/mcp, clients: [mesh-gateway], scopes: [mcp:tools]}}\n"
            )),
            Overrides::default(),
        )
        .unwrap();
        let policy = config.exchange_policy();
        assert_eq!(policy.backends[0].issuer, TokenSource::SelfSigned);
        assert_eq!(policy.issuance.access_seconds, 300, "the exchange lifetime");
        assert_eq!(policy.issuance.issuer, "http://a");
    }

    #[test]
    fn a_token_exchange_section_that_could_issue_what_nobody_meant_is_refused() {
        let oidc = "upstream: {type: oidc, issuer_url: https://idp.example.com, client_id: c, client_secret_file: /s}\nencryption_key_file: /k\n";
        let refused = |section: &str, extra: &str| {
            Config::resolve(
                file(&format!(
                    "issuer: http://a\nresources: [http://a/mcp]\n{extra}token_exchange:\n{section}"
                )),
                Overrides::default(),
            )
            .unwrap_err()
            .to_string()
        };
        let audience = |fields: &str| {
            format!("  audiences:\n  - {{audience: https://gh/mcp, clients: [gw], scopes: [mcp:tools]{fields}}}\n")
        };
        for (section, extra, expected) in [
            ("  lifetime_seconds: 0\n".to_owned(), "", "`token_exchange.lifetime_seconds`"),
            ("  max_actor_chain: 9\n".to_owned(), "", "`9` must be between 1 and 8"),
            (
                "  gateways: [{client_id: gw, client_secret_file: /a}, {client_id: gw, client_secret_file: /b}]\n".to_owned(),
                "",
                "client_id `gw` is declared twice",
            ),
            (
                "  audiences:\n  - {audience: http://a/mcp, clients: [gw], scopes: [mcp:tools]}\n".to_owned(),
                "",
                "`http://a/mcp`: is one of `resources`",
            ),
            (
                "  audiences:\n  - {audience: https://gh/mcp, clients: [], scopes: [mcp:tools]}\n".to_owned(),
                "",
                "`https://gh/mcp`: `clients` is empty",
            ),
            (
                "  audiences:\n  - {audience: https://gh/mcp, clients: [gw], scopes: [offline_access]}\n".to_owned(),
                "",
                "`offline_access` cannot be exchanged",
            ),
            (
                "  audiences:\n  - {audience: https://gh/mcp, clients: [gw], scopes: [mcp:admin]}\n".to_owned(),
                "",
                "`mcp:admin` is not in `scopes`",
            ),
            (audience(", issuer: upstream"), "", "needs an `upstream` of type `oidc`"),
            (audience(", upstream_scopes: [x]"), "", "are for `issuer: upstream`"),
            (
                audience(", issuer: upstream, upstream_resource: not-a-url"),
                oidc,
                "upstream_resource `not-a-url` is not a URL",
            ),
            (
                format!("{}  - {{audience: https://gh/mcp, clients: [gw], scopes: [mcp:tools]}}\n", audience("")),
                "",
                "`https://gh/mcp`: listed twice",
            ),
        ] {
            let err = refused(&section, extra);
            assert!(err.contains(expected), "{section}: {err}");
        }
        let typo = serde_yaml::from_str::<FileConfig>(&format!(
            "token_exchange:\n{}",
            audience(", issuer: elsewhere")
        ))
        .unwrap_err()
        .to_string();
        assert!(
            typo.contains("token_exchange.audiences[0].issuer: unknown variant `elsewhere`"),
            "{typo}"
        );
        assert!(
            Config::resolve(
                file(&format!(
                    "issuer: http://a\nresources: [http://a/mcp]\n{oidc}token_exchange:\n{}",
                    audience(", issuer: upstream, upstream_resource: https://api.example.com, upstream_scopes: [repo]")
                )),
                Overrides::default(),
            )
            .is_ok(),
            "an upstream backend with an oidc upstream"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err =
            Config::resolve(file("resources: [http://a/mcp]\n"), Overrides::default()).unwrap_err();
        assert!(err.to_string().starts_with("`issuer`"), "{err}");
        let err = Config::resolve(file("issuer: http://a\n"), Overrides::default()).unwrap_err();
        assert!(err.to_string().starts_with("`resources`"), "{err}");
        let err = Config::resolve(
            file("issuer: ftp://a\nresources: [http://a/mcp]\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("http(s)"), "{err}");
        let err = Config::resolve(
            file("issuer: http://a\nresources: [http://a/mcp]\nlifetimes: {code_seconds: 3600}\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("`lifetimes.code_seconds`"),
            "{err}"
        );
        let err = Config::resolve(
            file("issuer: http://a\nresources: [http://a/mcp]\nupstream: {type: oauth2, authorization_url: http://idp/a, token_url: http://idp/t, userinfo_url: http://idp/u, client_id: c, client_secret_file: /s}\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("`encryption_key_file`"),
            "an oauth2 upstream keeps sessions too: {err}"
        );
        let err = Config::resolve(
            file("issuer: http://a\nresources: [http://a/mcp]\nserver: {max_connections: 0}\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("`server.max_connections`"),
            "{err}"
        );
        assert!(serde_yaml::from_str::<FileConfig>("isuer: x\n")
            .unwrap_err()
            .to_string()
            .contains("unknown field `isuer`"));
    }
}

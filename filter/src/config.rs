//! The plugin configuration: parsed, checked and turned into what the request path needs.
//!
//! Everything that can be wrong with a configuration is found here, at configure time, so that
//! Envoy refuses a bad configuration with a message instead of the filter failing per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use crate::authz::{Authorizer, CedarConfigError, CedarSettings};
use crate::binding::{BindingKey, BindingKeyError};
use crate::cors::{CorsConfigError, CorsPolicy, CorsSettings};
use crate::exchange::{ExchangeConfigError, ExchangeSettings, RawExchange};
use crate::jwks::{JwksError, KeySet};
use crate::operation::{ExtraMethods, MethodConfigError};
use crate::tool_scopes::ToolScopes;
use crate::verify::TokenPolicy;

const DEFAULT_MCP_PATH: &str = "/mcp";
const DEFAULT_CLOCK_SKEW_SECONDS: u32 = 60;
const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
const DEFAULT_JWKS_REFRESH_SECONDS: u32 = 300;
const DEFAULT_JWKS_TIMEOUT_MS: u32 = 5_000;
const DEFAULT_UNKNOWN_KID_COOLDOWN_SECONDS: u32 = 30;
const DEFAULT_JWKS_WAIT_MS: u64 = 5_000;
const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 10_000;
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// `denial_help` travels in every denial's body: a sentence or a URL, not a document.
const MAX_DENIAL_HELP_BYTES: usize = 1024;

/// A configuration the filter refuses, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the plugin configuration is not valid: {0}")]
    Syntax(String),
    #[error("`{field}` = `{value}` is not an absolute http(s) URL: {reason}")]
    BadUrl {
        field: String,
        value: String,
        reason: String,
    },
    #[error("`issuers` is empty: configure at least one trusted token issuer")]
    NoIssuer,
    #[error("issuer `{0}` needs exactly one of `jwks` (fetched from a cluster) or `jwks_inline`")]
    KeySource(String),
    #[error("issuer `{0}`: with `jwt_authn`, Envoy verifies the signatures; remove its `jwks`/`jwks_inline` (give them to the jwt_authn provider)")]
    KeysWithJwtAuthn(String),
    #[error("`jwks_inline` of issuer `{issuer}` is unusable: {source}")]
    InlineJwks { issuer: String, source: JwksError },
    #[error("`{field}` = `{value}` must be a path starting with `/`")]
    BadPath { field: String, value: String },
    #[error(
        "public path `{0}` covers the MCP path; the MCP endpoint would be served without a token"
    )]
    PublicPathCoversMcp(String),
    #[error("`{field}`: {reason}")]
    OutOfRange { field: String, reason: String },
    #[error("{0}")]
    Cedar(#[from] CedarConfigError),
    #[error("`identity_headers` key `{0}` is not a usable header name (lowercase token, not a pseudo, hop-by-hop or authorization header)")]
    BadHeaderName(String),
    #[error("{0}")]
    BindingKey(#[from] BindingKeyError),
    #[error("{0}")]
    Methods(#[from] MethodConfigError),
    #[error("{0}")]
    Cors(#[from] CorsConfigError),
    #[error("{0}")]
    Exchange(#[from] ExchangeConfigError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    resource: String,
    audiences: Option<Vec<String>>,
    #[serde(default)]
    authorization_servers: Vec<String>,
    #[serde(default)]
    issuers: Vec<RawIssuer>,
    #[serde(default)]
    scopes_supported: Vec<String>,
    #[serde(default)]
    required_scopes: Vec<String>,
    resource_name: Option<String>,
    mcp_path: Option<String>,
    #[serde(default)]
    extra_mcp_paths: Vec<String>,
    #[serde(default)]
    public_paths: Vec<String>,
    clock_skew_seconds: Option<u32>,
    max_token_bytes: Option<usize>,
    #[serde(default)]
    identity_headers: BTreeMap<String, String>,
    jwks_wait_ms: Option<u64>,
    token_cache_entries: Option<usize>,
    cedar: Option<CedarSettings>,
    server_name: Option<String>,
    max_body_bytes: Option<usize>,
    max_response_bytes: Option<usize>,
    #[serde(default)]
    tool_scopes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    headers_stop_iteration: bool,
    binding_key: Option<String>,
    jwt_authn: Option<JwtAuthnSettings>,
    #[serde(default)]
    methods: BTreeMap<String, Value>,
    denial_help: Option<String>,
    stats_prefix: Option<String>,
    cors: Option<CorsSettings>,
    token_exchange: Option<RawExchange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    jwks: Option<RawRemoteJwks>,
    jwks_inline: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteJwks {
    cluster: String,
    path: String,
    authority: Option<String>,
    refresh_seconds: Option<u32>,
    timeout_ms: Option<u32>,
    unknown_kid_cooldown_seconds: Option<u32>,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    Inline(Arc<KeySet>),
    Remote(RemoteJwks),
    /// Envoy's `jwt_authn` verifies this issuer's signatures (`jwt_authn` mode).
    Envoy,
}

/// Where Envoy's `jwt_authn` leaves the payload it verified (`payload_in_metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthnSettings {
    /// The dynamic metadata namespace, `envoy.filters.http.jwt_authn` unless changed.
    pub metadata_namespace: String,
    /// The provider's `payload_in_metadata` key.
    pub payload_in_metadata: String,
}

/// A JWKS fetched through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub refresh_seconds: u32,
    pub timeout_ms: u32,
    /// A token naming an unknown `kid` triggers a refetch at most this often, so that a flood of
    /// forged `kid`s cannot turn into a flood of JWKS requests.
    pub unknown_kid_cooldown_seconds: u32,
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub issuer: String,
    pub keys: KeySource,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct FilterConfig {
    pub resource: String,
    /// The absolute URL of the protected resource metadata, as `WWW-Authenticate` advertises it.
    pub resource_metadata_url: String,
    /// The paths the metadata document is served at.
    pub metadata_paths: Vec<String>,
    /// The metadata document, rendered once.
    pub metadata_document: String,
    pub required_scopes: Vec<String>,
    pub mcp_path: String,
    /// Other paths the upstream serves its MCP endpoint at; a `POST` anywhere else is refused.
    pub extra_mcp_paths: Vec<String>,
    pub public_paths: Vec<String>,
    pub token_policy: TokenPolicy,
    pub issuers: Vec<IssuerConfig>,
    /// `(header, claim)`: upstream headers that carry a claim of the verified token.
    pub identity_headers: Vec<(String, String)>,
    pub jwks_wait_ms: u64,
    pub token_cache_entries: usize,
    /// Cedar authorization of MCP calls; without a `cedar` section the filter authenticates only.
    pub authorizer: Option<Arc<Authorizer>>,
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
    pub tool_scopes: ToolScopes,
    /// Envoy's `allow_on_headers_stop_iteration` is set: response headers of a list answer may
    /// wait for its body, so an answer that cannot be filtered becomes a 500.
    pub headers_stop_iteration: bool,
    /// Seals server-issued ids (tasks, sessions) to their caller; `None` when not configured.
    pub binding_key: Option<BindingKey>,
    /// Trust the claims Envoy's `jwt_authn` verified instead of verifying tokens here.
    pub jwt_authn: Option<JwtAuthnSettings>,
    /// Methods beyond MCP's own that the operator allows or has authorised (`methods`).
    pub methods: ExtraMethods,
    /// Text or URL for end users, sent in the `data` of every authorization denial.
    pub denial_help: Option<String>,
    /// The statistics instance name (`mcp_auth.<stats_prefix>.*`); `None`: the plugin's name.
    pub stats_prefix: Option<String>,
    /// The browser origins that may call the endpoint (`cors`); `None`: no origin may.
    pub cors: Option<CorsPolicy>,
    /// Backends that get a token of their own, exchanged for the caller's (`token_exchange`).
    pub token_exchange: Option<ExchangeSettings>,
}

impl FilterConfig {
    /// Parses and checks a configuration; a `token_exchange.client_secret_env` is read from the
    /// process environment (the VM's: Envoy's `vm_config.environment_variables`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_json_with_env(bytes, |name| std::env::var(name).ok())
    }

    /// [`FilterConfig::from_json`] with the environment read through `env`.
    pub fn from_json_with_env(
        bytes: &[u8],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|err| ConfigError::Syntax(err.to_string()))?;
        Self::from_raw(raw, env)
    }

    fn from_raw(raw: RawConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let resource = http_url("resource", &raw.resource)?;
        for server in &raw.authorization_servers {
            http_url("authorization_servers", server)?;
        }
        if raw.issuers.is_empty() {
            return Err(ConfigError::NoIssuer);
        }
        if let Some(settings) = &raw.jwt_authn {
            for (field, value) in [
                ("jwt_authn.metadata_namespace", &settings.metadata_namespace),
                (
                    "jwt_authn.payload_in_metadata",
                    &settings.payload_in_metadata,
                ),
            ] {
                if value.trim().is_empty() {
                    return Err(out_of_range(
                        field,
                        "name where jwt_authn puts the verified payload (its `payload_in_metadata`)",
                    ));
                }
            }
        }
        let envoy_verifies = raw.jwt_authn.is_some();
        let issuers = raw
            .issuers
            .into_iter()
            .map(|raw| issuer(raw, envoy_verifies))
            .collect::<Result<Vec<_>, _>>()?;

        let mcp_path = raw.mcp_path.unwrap_or_else(|| DEFAULT_MCP_PATH.to_owned());
        path("mcp_path", &mcp_path)?;
        for extra in &raw.extra_mcp_paths {
            path("extra_mcp_paths", extra)?;
        }
        for public in &raw.public_paths {
            path("public_paths", public)?;
            if mcp_path.starts_with(public.as_str()) || public == "/" {
                return Err(ConfigError::PublicPathCoversMcp(public.clone()));
            }
        }

        let resource_path = resource.path().trim_end_matches('/');
        let origin = resource.origin().ascii_serialization();
        let resource_metadata_url = format!("{origin}{METADATA_PATH}{resource_path}");
        let mut metadata_paths = vec![
            METADATA_PATH.to_owned(),
            format!("{METADATA_PATH}{mcp_path}"),
        ];
        let resource_path_form = format!("{METADATA_PATH}{resource_path}");
        if !metadata_paths.contains(&resource_path_form) {
            metadata_paths.push(resource_path_form);
        }

        let mut metadata = json!({
            "resource": raw.resource,
            "authorization_servers": raw.authorization_servers,
            "bearer_methods_supported": ["header"],
        });
        if !raw.scopes_supported.is_empty() {
            metadata["scopes_supported"] = json!(raw.scopes_supported);
        }
        if let Some(name) = &raw.resource_name {
            metadata["resource_name"] = json!(name);
        }

        let clock_skew = raw.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECONDS);
        if clock_skew > 600 {
            return Err(out_of_range("clock_skew_seconds", "at most 600 seconds"));
        }
        let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if !(256..=1024 * 1024).contains(&max_token_bytes) {
            return Err(out_of_range("max_token_bytes", "between 256 and 1048576"));
        }
        let token_cache_entries = raw
            .token_cache_entries
            .unwrap_or(DEFAULT_TOKEN_CACHE_ENTRIES);
        if token_cache_entries == 0 {
            return Err(out_of_range("token_cache_entries", "at least 1"));
        }
        let jwks_wait_ms = raw.jwks_wait_ms.unwrap_or(DEFAULT_JWKS_WAIT_MS);
        if !(100..=60_000).contains(&jwks_wait_ms) {
            return Err(out_of_range("jwks_wait_ms", "between 100 and 60000"));
        }

        let identity_headers = raw
            .identity_headers
            .into_iter()
            .map(|(header, claim)| {
                if usable_header_name(&header) {
                    Ok((header, claim))
                } else {
                    Err(ConfigError::BadHeaderName(header))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;

        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(out_of_range("max_body_bytes", "between 1024 and 67108864"));
        }
        let max_response_bytes = raw.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if !(1024..=256 * 1024 * 1024).contains(&max_response_bytes) {
            return Err(out_of_range(
                "max_response_bytes",
                "between 1024 and 268435456",
            ));
        }
        let authorizer = raw
            .cedar
            .map(|settings| Authorizer::new(settings, raw.server_name.as_deref()))
            .transpose()?
            .map(Arc::new);

        if let Some(help) = &raw.denial_help {
            if help.trim().is_empty() || help.len() > MAX_DENIAL_HELP_BYTES {
                return Err(out_of_range(
                    "denial_help",
                    "a text or URL of 1 to 1024 bytes for end users who are denied",
                ));
            }
        }

        let audiences = raw.audiences.unwrap_or_else(|| vec![raw.resource.clone()]);
        if audiences.is_empty() {
            return Err(out_of_range(
                "audiences",
                "list at least one accepted `aud` value",
            ));
        }

        Ok(Self {
            resource: raw.resource,
            resource_metadata_url,
            metadata_paths,
            metadata_document: metadata.to_string(),
            required_scopes: raw.required_scopes,
            mcp_path,
            extra_mcp_paths: raw.extra_mcp_paths,
            public_paths: raw.public_paths,
            token_policy: TokenPolicy {
                audiences,
                clock_skew_seconds: i64::from(clock_skew),
                max_token_bytes,
            },
            issuers,
            identity_headers,
            jwks_wait_ms,
            token_cache_entries,
            authorizer,
            max_body_bytes,
            max_response_bytes,
            tool_scopes: ToolScopes::new(raw.tool_scopes),
            headers_stop_iteration: raw.headers_stop_iteration,
            binding_key: raw
                .binding_key
                .as_deref()
                .map(BindingKey::from_base64)
                .transpose()?,
            methods: ExtraMethods::from_config(raw.methods)?,
            jwt_authn: raw.jwt_authn,
            denial_help: raw.denial_help,
            stats_prefix: stats_prefix(raw.stats_prefix)?,
            cors: raw.cors.map(CorsPolicy::from_settings).transpose()?,
            token_exchange: raw
                .token_exchange
                .map(|section| ExchangeSettings::from_raw(section, env))
                .transpose()?,
        })
    }
}

fn issuer(raw: RawIssuer, envoy_verifies: bool) -> Result<IssuerConfig, ConfigError> {
    let url = http_url("issuers[].issuer", &raw.issuer)?;
    let keys = match (raw.jwks, raw.jwks_inline) {
        (None, None) if envoy_verifies => KeySource::Envoy,
        _ if envoy_verifies => return Err(ConfigError::KeysWithJwtAuthn(raw.issuer)),
        (Some(remote), None) => KeySource::Remote(remote_jwks(remote, &url)?),
        (None, Some(inline)) => {
            KeySource::Inline(Arc::new(KeySet::from_value(&inline).map_err(|source| {
                ConfigError::InlineJwks {
                    issuer: raw.issuer.clone(),
                    source,
                }
            })?))
        }
        _ => return Err(ConfigError::KeySource(raw.issuer)),
    };
    Ok(IssuerConfig {
        issuer: raw.issuer,
        keys,
    })
}

fn remote_jwks(raw: RawRemoteJwks, issuer: &Url) -> Result<RemoteJwks, ConfigError> {
    if raw.cluster.trim().is_empty() {
        return Err(out_of_range(
            "issuers[].jwks.cluster",
            "name the Envoy cluster that reaches the JWKS",
        ));
    }
    path("issuers[].jwks.path", &raw.path)?;
    let refresh_seconds = raw.refresh_seconds.unwrap_or(DEFAULT_JWKS_REFRESH_SECONDS);
    if !(1..=86_400).contains(&refresh_seconds) {
        return Err(out_of_range(
            "issuers[].jwks.refresh_seconds",
            "between 1 and 86400",
        ));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_JWKS_TIMEOUT_MS);
    if !(100..=60_000).contains(&timeout_ms) {
        return Err(out_of_range(
            "issuers[].jwks.timeout_ms",
            "between 100 and 60000",
        ));
    }
    let authority = match raw.authority {
        Some(authority) => authority,
        None => issuer.host_str().unwrap_or_default().to_owned(),
    };
    Ok(RemoteJwks {
        cluster: raw.cluster,
        path: raw.path,
        authority,
        refresh_seconds,
        timeout_ms,
        unknown_kid_cooldown_seconds: raw
            .unknown_kid_cooldown_seconds
            .unwrap_or(DEFAULT_UNKNOWN_KID_COOLDOWN_SECONDS.min(refresh_seconds)),
    })
}

fn http_url(field: &str, value: &str) -> Result<Url, ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        field: field.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(value).map_err(|err| bad(&err.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(bad(
            "the scheme must be https (or http for local development)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if url.fragment().is_some() {
        return Err(bad("it must not have a fragment"));
    }
    Ok(url)
}

fn path(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.starts_with('/') && !value.contains(['?', '#', ' ']) {
        Ok(())
    } else {
        Err(ConfigError::BadPath {
            field: field.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// One segment of a statistics name: Envoy's tag regexes split names on `.`, Prometheus allows
/// `[a-zA-Z0-9_]` in labels.
fn stats_prefix(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    match raw {
        Some(name)
            if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Err(out_of_range(
                "stats_prefix",
                &format!("`{name}` must be letters, digits and `_` only (it is one segment of a stats name)"),
            ))
        }
        other => Ok(other),
    }
}

fn out_of_range(field: &str, reason: &str) -> ConfigError {
    ConfigError::OutOfRange {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

fn usable_header_name(name: &str) -> bool {
    const FORBIDDEN: [&str; 8] = [
        "authorization",
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
        "te",
        "upgrade",
        "cookie",
    ];
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !FORBIDDEN.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_keys;

    fn base() -> Value {
        json!({
            "resource": "https://mcp.example.com/mcp",
            "authorization_servers": ["https://mcp.example.com"],
            "issuers": [{"issuer": "https://mcp.example.com",
                         "jwks": {"cluster": "authserver", "path": "/.well-known/jwks.json"}}],
        })
    }

    fn parse(value: &Value) -> Result<FilterConfig, ConfigError> {
        FilterConfig::from_json(value.to_string().as_bytes())
    }

    #[test]
    fn defaults_follow_the_resource() {
        let config = parse(&base()).unwrap();
        assert_eq!(
            config.token_policy.audiences,
            ["https://mcp.example.com/mcp"]
        );
        assert_eq!(config.mcp_path, "/mcp");
        assert_eq!(config.token_policy.clock_skew_seconds, 60);
        assert_eq!(
            config.resource_metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            config.metadata_paths,
            [
                "/.well-known/oauth-protected-resource",
                "/.well-known/oauth-protected-resource/mcp"
            ]
        );
        let KeySource::Remote(remote) = &config.issuers[0].keys else {
            panic!("remote expected")
        };
        assert_eq!(remote.authority, "mcp.example.com");
        assert_eq!(remote.refresh_seconds, 300);
    }

    #[test]
    fn metadata_document_has_what_clients_need() {
        let mut raw = base();
        raw["scopes_supported"] = json!(["mcp:tools"]);
        let doc: Value = serde_json::from_str(&parse(&raw).unwrap().metadata_document).unwrap();
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
        assert_eq!(
            doc["authorization_servers"],
            json!(["https://mcp.example.com"])
        );
        assert_eq!(doc["scopes_supported"], json!(["mcp:tools"]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let mut raw = base();
        raw["audience"] = json!("typo");
        let err = parse(&raw).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `audience`"),
            "{err}"
        );
        let mut raw = base();
        raw["issuers"][0]["jwks"]["refresh"] = json!(5);
        assert!(parse(&raw)
            .unwrap_err()
            .to_string()
            .contains("unknown field `refresh`"));
    }

    #[test]
    fn bad_urls_are_refused_with_the_field() {
        for (field, value) in [
            ("resource", "mcp.example.com/mcp"),
            ("resource", "ftp://x/mcp"),
        ] {
            let mut raw = base();
            raw[field] = json!(value);
            let err = parse(&raw).unwrap_err();
            assert!(matches!(err, ConfigError::BadUrl { .. }), "{err}");
            assert!(err.to_string().contains(value), "{err}");
        }
        let mut raw = base();
        raw["authorization_servers"] = json!(["not a url"]);
        assert!(matches!(parse(&raw), Err(ConfigError::BadUrl { .. })));
        let mut raw = base();
        raw["issuers"][0]["issuer"] = json!("example");
        assert!(matches!(parse(&raw), Err(ConfigError::BadUrl { .. })));
    }

    #[test]
    fn an_issuer_is_required() {
        let mut raw = base();
        raw["issuers"] = json!([]);
        assert_eq!(parse(&raw).unwrap_err(), ConfigError::NoIssuer);
        raw.as_object_mut().unwrap().remove("issuers");
        assert_eq!(parse(&raw).unwrap_err(), ConfigError::NoIssuer);
    }

    #[test]
    fn an_issuer_needs_exactly_one_key_source() {
        let mut raw = base();
        raw["issuers"][0]["jwks_inline"] = json!({"keys": []});
        assert!(matches!(parse(&raw), Err(ConfigError::KeySource(_))));
        raw["issuers"][0].as_object_mut().unwrap().remove("jwks");
        raw["issuers"][0]
            .as_object_mut()
            .unwrap()
            .remove("jwks_inline");
        assert!(matches!(parse(&raw), Err(ConfigError::KeySource(_))));
    }

    #[test]
    fn an_unparsable_inline_jwks_is_refused() {
        let mut raw = base();
        raw["issuers"][0] =
            json!({"issuer": "https://a.example.com", "jwks_inline": {"keys": [{"kty": "RSA"}]}});
        assert!(matches!(parse(&raw), Err(ConfigError::InlineJwks { .. })));
        raw["issuers"][0]["jwks_inline"] = json!({"keys": [test_keys::rsa().public_jwk("k")]});
        assert!(parse(&raw).is_ok());
    }

    #[test]
    fn a_public_path_may_not_expose_the_mcp_endpoint() {
        for public in ["/", "/m", "/mcp"] {
            let mut raw = base();
            raw["public_paths"] = json!(["/oauth/", public]);
            assert_eq!(
                parse(&raw).unwrap_err(),
                ConfigError::PublicPathCoversMcp(public.into())
            );
        }
    }

    #[test]
    fn paths_and_ranges_are_checked() {
        let mut raw = base();
        raw["mcp_path"] = json!("mcp");
        assert!(matches!(parse(&raw), Err(ConfigError::BadPath { .. })));
        let mut raw = base();
        raw["issuers"][0]["jwks"]["refresh_seconds"] = json!(0);
        assert!(matches!(parse(&raw), Err(ConfigError::OutOfRange { .. })));
        let mut raw = base();
        raw["max_token_bytes"] = json!(10);
        assert!(matches!(parse(&raw), Err(ConfigError::OutOfRange { .. })));
    }

    #[test]
    fn identity_headers_may_not_shadow_sensitive_headers() {
        let mut raw = base();
        raw["identity_headers"] = json!({"authorization": "sub"});
        assert!(matches!(parse(&raw), Err(ConfigError::BadHeaderName(_))));
        raw["identity_headers"] = json!({"X-Upper": "sub"});
        assert!(matches!(parse(&raw), Err(ConfigError::BadHeaderName(_))));
        raw["identity_headers"] = json!({"x-mcp-subject": "sub"});
        assert_eq!(
            parse(&raw).unwrap().identity_headers,
            [("x-mcp-subject".into(), "sub".into())]
        );
    }

    #[test]
    fn a_bad_cedar_policy_refuses_the_configuration_with_cedars_message() {
        let mut raw = base();
        raw["cedar"] =
            json!({"policies": ["permit(principal, action, resource) when { principal.x == };"]});
        let err = parse(&raw).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`cedar.policies[0]` does not parse"),
            "{err}"
        );
        raw["cedar"] = json!({"policies": ["permit(principal, action, resource);"], "polices": []});
        assert!(parse(&raw)
            .unwrap_err()
            .to_string()
            .contains("unknown field `polices`"));
        raw["cedar"] = json!({"policies": ["permit(principal, action, resource);"]});
        assert!(parse(&raw).unwrap().authorizer.is_some());
        assert!(parse(&base()).unwrap().authorizer.is_none());
    }

    #[test]
    fn the_jwt_authn_mode_names_its_metadata_and_leaves_keys_to_envoy() {
        let mut raw = base();
        raw["issuers"] = json!([{"issuer": "https://mcp.example.com"}]);
        assert!(
            matches!(parse(&raw), Err(ConfigError::KeySource(_))),
            "keys are needed without jwt_authn"
        );
        raw["jwt_authn"] = json!({"metadata_namespace": "envoy.filters.http.jwt_authn",
                                  "payload_in_metadata": "jwt_payload"});
        let config = parse(&raw).unwrap();
        assert!(matches!(config.issuers[0].keys, KeySource::Envoy));
        raw["jwt_authn"]["metadata_namespace"] = json!(" ");
        let err = parse(&raw).unwrap_err().to_string();
        assert!(err.contains("jwt_authn.metadata_namespace"), "{err}");
        raw["jwt_authn"] = json!({"payload_in_metadata": "jwt_payload"});
        assert!(parse(&raw)
            .unwrap_err()
            .to_string()
            .contains("metadata_namespace"));
        let mut keyed = base();
        keyed["jwt_authn"] = json!({"metadata_namespace": "ns", "payload_in_metadata": "k"});
        assert!(matches!(
            parse(&keyed),
            Err(ConfigError::KeysWithJwtAuthn(_))
        ));
    }

    #[test]
    fn a_binding_key_must_be_long_enough() {
        assert!(parse(&base()).unwrap().binding_key.is_none());
        let mut raw = base();
        raw["binding_key"] = json!("c2hvcnQ=");
        let err = parse(&raw).unwrap_err();
        assert!(err.to_string().contains("decodes to 5 bytes"), "{err}");
        raw["binding_key"] = json!("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
        assert!(parse(&raw).unwrap().binding_key.is_some());
    }

    #[test]
    fn a_bad_methods_entry_refuses_the_configuration() {
        let mut raw = base();
        raw["methods"] = json!({"x/y": "yes"});
        let err = parse(&raw).unwrap_err();
        assert!(
            err.to_string().starts_with("`methods.\"x/y\"` = `\"yes\"`"),
            "{err}"
        );
        raw["methods"] = json!({"x/y": "allow"});
        assert!(parse(&raw).is_ok());
    }

    #[test]
    fn denial_help_is_a_short_text() {
        assert_eq!(parse(&base()).unwrap().denial_help, None);
        let mut raw = base();
        raw["denial_help"] = json!("Ask for access in #mcp-access");
        assert_eq!(
            parse(&raw).unwrap().denial_help.as_deref(),
            Some("Ask for access in #mcp-access")
        );
        for bad in [json!(" "), json!("x".repeat(1025))] {
            raw["denial_help"] = bad;
            let err = parse(&raw).unwrap_err().to_string();
            assert!(err.starts_with("`denial_help`"), "{err}");
        }
    }

    #[test]
    fn a_policy_that_fails_the_schema_refuses_the_configuration_naming_it() {
        let mut raw = base();
        raw["cedar"] = json!({
            "schema": "entity THVGroup; entity Client in [THVGroup]; entity MCP; entity Tool in [MCP];
                       action call_tool appliesTo { principal: Client, resource: Tool };",
            "policies": ["permit(principal, action, resource);",
                         "@id(\"typo\")\npermit(\n  principal,\n  action == Action::\"call_tools\",\n  resource);"],
        });
        let err = parse(&raw).unwrap_err().to_string();
        assert_eq!(
            err,
            "the policies do not validate against `cedar.schema`: policy `typo` (`cedar.policies[1]` line 4): \
             unrecognized action `Action::\"call_tools\"`: did you mean `Action::\"call_tool\"`?"
        );
    }

    #[test]
    fn not_json_says_so() {
        assert!(matches!(
            FilterConfig::from_json(b"{"),
            Err(ConfigError::Syntax(_))
        ));
        assert!(matches!(
            FilterConfig::from_json(b""),
            Err(ConfigError::Syntax(_))
        ));
    }
}

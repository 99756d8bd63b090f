//! The server's configuration: a YAML file, overridden by flags and environment variables, with
//! secrets read from files so that Kubernetes Secret mounts work.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::client_documents::FetchPolicy;
use crate::idp::UpstreamConfig;

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
        file.server.check()?;
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
        let scopes = if file.scopes.is_empty() {
            vec!["mcp:tools".to_owned(), "offline_access".to_owned()]
        } else {
            file.scopes
        };
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

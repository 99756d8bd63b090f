//! Cross-origin access to the MCP endpoint, decided here rather than by the server behind.
//!
//! Browser-based MCP clients (the MCP Inspector, web agents) call the endpoint from another
//! origin: the browser first sends a preflight (`OPTIONS` with `Access-Control-Request-Method`,
//! no token), then the call itself, and shows the client only the response headers the answer
//! exposes (`WWW-Authenticate` to start the login, `Mcp-Session-Id` to keep the session).
//!
//! The filter owns this on the paths it protects: a preflight is answered here and never goes
//! upstream (it carries no token, so forwarding it would hand the server an unauthenticated
//! request), and on every answer, ours or the server's, the `Access-Control-*` headers are the
//! filter's: an origin the operator did not list gets none, whatever the server would have
//! said. Without a `cors` section no origin is listed, so browsers on other origins are refused.

use serde::Deserialize;

use crate::response::LocalResponse;

/// `cors.max_age_seconds` when not set: browsers cap it anyway (Chromium at 2 hours).
const DEFAULT_MAX_AGE_SECONDS: u32 = 600;
/// The methods of the Streamable HTTP transport.
const ALLOW_METHODS: &str = "GET, POST, DELETE";
/// The request headers MCP clients send. Listed one by one: `*` in `Allow-Headers` does not
/// cover `Authorization`.
const ALLOW_HEADERS: &str = "authorization, content-type, accept, mcp-session-id, \
                             mcp-protocol-version, mcp-method, mcp-name, last-event-id";
/// The response headers a browser client must read: the login hint, the session, the version.
const EXPOSE_HEADERS: &str = "www-authenticate, mcp-session-id, mcp-protocol-version";
/// The response headers only the filter may set on a cross-origin answer.
const OWNED_HEADERS: [&str; 6] = [
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
];

/// The `cors` section of the plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins (`scheme://host[:port]`) whose pages may call the endpoint, or `["*"]` for any.
    pub allowed_origins: Vec<String>,
    pub max_age_seconds: Option<u32>,
}

/// A `cors` section the filter refuses, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsConfigError {
    #[error("`cors.allowed_origins` is empty: list the origins of the browser clients (or remove `cors`)")]
    NoOrigin,
    #[error("`cors.allowed_origins` entry `{0}` is not an origin: write scheme://host[:port], without a path, a trailing slash or a wildcard")]
    NotAnOrigin(String),
    #[error(
        "`cors.allowed_origins` entry `null` is refused: any sandboxed page or local file sends it"
    )]
    NullOrigin,
    #[error("`cors.allowed_origins`: `*` allows every origin and must be the only entry")]
    StarWithOthers,
    #[error("`cors.max_age_seconds` = {0}: at most 86400")]
    MaxAge(u32),
}

/// Which origins may call the endpoint from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    origins: Origins,
    max_age: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    Any,
    /// Lowercase ASCII serialisations.
    Listed(Vec<String>),
}

impl CorsPolicy {
    pub fn from_settings(settings: CorsSettings) -> Result<Self, CorsConfigError> {
        let max_age = settings.max_age_seconds.unwrap_or(DEFAULT_MAX_AGE_SECONDS);
        if max_age > 86_400 {
            return Err(CorsConfigError::MaxAge(max_age));
        }
        let origins = match settings.allowed_origins.as_slice() {
            [] => return Err(CorsConfigError::NoOrigin),
            [star] if star == "*" => Origins::Any,
            listed => Origins::Listed(
                listed
                    .iter()
                    .map(|origin| checked_origin(origin))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self {
            origins,
            max_age: max_age.to_string(),
        })
    }

    fn allows(&self, origin: &str) -> Option<String> {
        match &self.origins {
            Origins::Any => Some("*".to_owned()),
            Origins::Listed(listed) => {
                let origin = origin.to_ascii_lowercase();
                listed.contains(&origin).then_some(origin)
            }
        }
    }
}

fn checked_origin(origin: &str) -> Result<String, CorsConfigError> {
    if origin == "*" {
        return Err(CorsConfigError::StarWithOthers);
    }
    if origin.eq_ignore_ascii_case("null") {
        return Err(CorsConfigError::NullOrigin);
    }
    let not_an_origin = || CorsConfigError::NotAnOrigin(origin.to_owned());
    // No wildcard subdomains: each origin is listed, so a new one is a reviewed change.
    if origin.contains('*') {
        return Err(not_an_origin());
    }
    let parsed = url::Url::parse(origin).map_err(|_| not_an_origin())?;
    let serialised = parsed.origin().ascii_serialization();
    if !matches!(parsed.scheme(), "http" | "https") || serialised != origin.to_ascii_lowercase() {
        return Err(not_an_origin());
    }
    Ok(serialised)
}

/// What the filter grants the request's origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Grant {
    /// No `Origin` header: not a cross-origin request from a browser; answers are left alone.
    #[default]
    NotCrossOrigin,
    /// The origin may read the answer; the value of `Access-Control-Allow-Origin`.
    Allowed(String),
    /// The origin is not listed (or sent twice): the answer carries no `Access-Control-*`.
    Refused,
}

impl Grant {
    /// The grant for a request with these `Origin` header values.
    pub fn of(policy: Option<&CorsPolicy>, origins: &[String]) -> Self {
        match origins {
            [] => Self::NotCrossOrigin,
            [origin] => policy
                .and_then(|policy| policy.allows(origin))
                .map_or(Self::Refused, Self::Allowed),
            // A browser sends one; two copies are a request crafted to see which one wins.
            _ => Self::Refused,
        }
    }

    /// The answer to a preflight on a protected path.
    pub fn preflight(&self, policy: Option<&CorsPolicy>) -> LocalResponse {
        let mut headers = vec![("cache-control".to_owned(), "no-store".to_owned())];
        match (self, policy) {
            (Self::Allowed(origin), Some(policy)) => {
                headers.extend([
                    ("access-control-allow-origin".to_owned(), origin.clone()),
                    (
                        "access-control-allow-methods".to_owned(),
                        ALLOW_METHODS.to_owned(),
                    ),
                    (
                        "access-control-allow-headers".to_owned(),
                        ALLOW_HEADERS.to_owned(),
                    ),
                    ("access-control-max-age".to_owned(), policy.max_age.clone()),
                    ("vary".to_owned(), "origin".to_owned()),
                ]);
                LocalResponse {
                    status: 204,
                    headers,
                    body: String::new(),
                }
            }
            _ => {
                headers.push(("content-type".to_owned(), "application/json".to_owned()));
                let description = "this origin may not call the MCP endpoint from a browser: \
                                   the operator lists allowed origins in the filter's `cors`";
                LocalResponse {
                    status: 403,
                    headers,
                    body: serde_json::json!({
                        "error": "cors_origin_refused",
                        "error_description": description,
                    })
                    .to_string(),
                }
            }
        }
    }

    /// The headers to add to a local answer (a refusal, an error) so that an allowed browser
    /// client can read it: without them a 401 is an opaque network error and the client never
    /// sees `WWW-Authenticate`.
    pub fn decorate(&self, response: &LocalResponse) -> LocalResponse {
        let mut response = response.clone();
        let Self::Allowed(origin) = self else {
            return response;
        };
        let has_own = response
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("access-control-allow-origin"));
        if !has_own {
            response.headers.extend(allowed_headers(origin));
        }
        response
    }

    /// The changes to make to the server's answer: the `Access-Control-*` headers it set are
    /// removed, and the filter's set when the origin is allowed. `None` for a request that is not
    /// cross-origin, whose answer is left untouched.
    pub fn upstream_changes(&self) -> Option<Vec<(&'static str, Option<String>)>> {
        let allowed = match self {
            Self::NotCrossOrigin => return None,
            Self::Allowed(origin) => allowed_headers(origin),
            Self::Refused => Vec::new(),
        };
        let mut changes: Vec<(&'static str, Option<String>)> =
            OWNED_HEADERS.iter().map(|name| (*name, None)).collect();
        for (name, value) in allowed {
            if let Some(slot) = changes.iter_mut().find(|(owned, _)| *owned == name) {
                slot.1 = Some(value);
            }
        }
        Some(changes)
    }

    /// Whether the answer varies with `Origin`: a cache must not serve one origin's answer
    /// (granted or refused) to another.
    pub fn varies(&self) -> bool {
        match self {
            Self::NotCrossOrigin => false,
            Self::Allowed(origin) => origin != "*",
            Self::Refused => true,
        }
    }
}

fn allowed_headers(origin: &str) -> Vec<(String, String)> {
    let mut headers = vec![
        ("access-control-allow-origin".to_owned(), origin.to_owned()),
        (
            "access-control-expose-headers".to_owned(),
            EXPOSE_HEADERS.to_owned(),
        ),
    ];
    if origin != "*" {
        headers.push(("vary".to_owned(), "origin".to_owned()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> Result<CorsPolicy, CorsConfigError> {
        CorsPolicy::from_settings(CorsSettings {
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            max_age_seconds: None,
        })
    }

    fn header<'a>(response: &'a LocalResponse, name: &str) -> Option<&'a str> {
        response
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn origins(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn origins_must_be_bare_origins() {
        assert!(policy(&["https://inspector.example.com"]).is_ok());
        assert!(policy(&["http://localhost:6274"]).is_ok());
        for bad in [
            "https://inspector.example.com/",
            "https://inspector.example.com/app",
            "inspector.example.com",
            "ftp://files.example.com",
            "https://*.example.com",
        ] {
            assert_eq!(
                policy(&[bad]),
                Err(CorsConfigError::NotAnOrigin(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(policy(&["null"]), Err(CorsConfigError::NullOrigin));
        assert_eq!(
            policy(&["*", "https://a.example"]),
            Err(CorsConfigError::StarWithOthers)
        );
        assert_eq!(policy(&[]), Err(CorsConfigError::NoOrigin));
        let long = CorsPolicy::from_settings(CorsSettings {
            allowed_origins: origins(&["*"]),
            max_age_seconds: Some(90_000),
        });
        assert_eq!(long, Err(CorsConfigError::MaxAge(90_000)));
    }

    #[test]
    fn only_a_single_listed_origin_is_granted() {
        let listed = policy(&["https://Inspector.example.com"]).unwrap();
        let grant = |values: &[&str]| Grant::of(Some(&listed), &origins(values));
        assert_eq!(grant(&[]), Grant::NotCrossOrigin);
        assert_eq!(
            grant(&["https://inspector.EXAMPLE.com"]),
            Grant::Allowed("https://inspector.example.com".into())
        );
        assert_eq!(grant(&["https://evil.example"]), Grant::Refused);
        assert_eq!(
            grant(&["https://inspector.example.com:8443"]),
            Grant::Refused
        );
        assert_eq!(grant(&["null"]), Grant::Refused);
        assert_eq!(
            grant(&["https://inspector.example.com", "https://evil.example"]),
            Grant::Refused
        );
        assert_eq!(
            Grant::of(None, &origins(&["https://inspector.example.com"])),
            Grant::Refused,
            "without a cors section no origin is allowed"
        );
        let any = policy(&["*"]).unwrap();
        assert_eq!(
            Grant::of(Some(&any), &origins(&["https://anything.example"])),
            Grant::Allowed("*".into())
        );
    }

    #[test]
    fn an_allowed_preflight_lists_what_mcp_clients_send() {
        let listed = policy(&["https://inspector.example.com"]).unwrap();
        let grant = Grant::of(Some(&listed), &origins(&["https://inspector.example.com"]));
        let answer = grant.preflight(Some(&listed));
        assert_eq!(answer.status, 204);
        assert_eq!(
            header(&answer, "access-control-allow-origin"),
            Some("https://inspector.example.com")
        );
        let allowed = header(&answer, "access-control-allow-headers").unwrap();
        for needed in ["authorization", "mcp-session-id", "mcp-protocol-version"] {
            assert!(allowed.contains(needed), "{needed} missing from {allowed}");
        }
        assert_eq!(header(&answer, "access-control-max-age"), Some("600"));
        assert_eq!(header(&answer, "vary"), Some("origin"));
    }

    #[test]
    fn a_refused_preflight_says_why_and_grants_nothing() {
        let listed = policy(&["https://inspector.example.com"]).unwrap();
        for grant in [
            Grant::of(Some(&listed), &origins(&["https://evil.example"])),
            Grant::of(None, &origins(&["https://inspector.example.com"])),
        ] {
            let answer = grant.preflight(Some(&listed));
            assert_eq!(answer.status, 403);
            assert!(
                answer.body.contains("cors_origin_refused"),
                "{}",
                answer.body
            );
            assert!(answer
                .headers
                .iter()
                .all(|(name, _)| !name.starts_with("access-control-")));
        }
    }

    #[test]
    fn local_answers_are_readable_by_an_allowed_origin_only() {
        let refusal = LocalResponse {
            status: 401,
            headers: vec![("www-authenticate".into(), "Bearer".into())],
            body: String::new(),
        };
        let allowed = Grant::Allowed("https://inspector.example.com".into()).decorate(&refusal);
        assert_eq!(
            header(&allowed, "access-control-allow-origin"),
            Some("https://inspector.example.com")
        );
        assert!(header(&allowed, "access-control-expose-headers")
            .unwrap()
            .contains("www-authenticate"));
        assert_eq!(Grant::Refused.decorate(&refusal), refusal);
        assert_eq!(Grant::NotCrossOrigin.decorate(&refusal), refusal);
    }

    #[test]
    fn the_servers_cors_headers_are_replaced_by_the_filters() {
        assert_eq!(Grant::NotCrossOrigin.upstream_changes(), None);
        let refused = Grant::Refused.upstream_changes().unwrap();
        assert_eq!(refused.len(), OWNED_HEADERS.len());
        assert!(refused.iter().all(|(_, value)| value.is_none()));
        let allowed = Grant::Allowed("https://inspector.example.com".into())
            .upstream_changes()
            .unwrap();
        let value = |name: &str| {
            allowed
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.clone())
        };
        assert_eq!(
            value("access-control-allow-origin").as_deref(),
            Some("https://inspector.example.com")
        );
        assert_eq!(value("access-control-allow-credentials"), None);
        assert!(value("access-control-expose-headers").is_some());
        assert!(Grant::Allowed("https://a.example".into()).varies());
        assert!(
            Grant::Refused.varies(),
            "a refusal cached for one origin must not reach another"
        );
        assert!(!Grant::Allowed("*".into()).varies());
    }
}

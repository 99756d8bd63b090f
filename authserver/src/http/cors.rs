//! CORS for browser-based MCP clients: a web app registers, exchanges codes, refreshes and
//! revokes from script, and reads the metadata and keys first (sending `MCP-Protocol-Version`,
//! which needs a preflight). Those endpoints take no cookie, so any origin may call them and no
//! credentials are ever allowed. The browser flow (authorize, login, consent) is navigation, not
//! script: it gets no CORS headers.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Whether scripts from any origin may call `path`. Matched by suffix, so the endpoints served
/// under an issuer's path (`/auth/oauth/token`) are open as at the root.
pub fn is_api_path(path: &str) -> bool {
    ["/oauth/register", "/oauth/token", "/oauth/revoke"]
        .iter()
        .any(|api| path.ends_with(api))
        || path.contains("/.well-known/")
}

/// The layer: preflights answered, `Access-Control-Allow-Origin` on the API paths only.
pub fn layer() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(
            |_origin: &HeaderValue, request: &axum::http::request::Parts| {
                is_api_path(request.uri.path())
            },
        ))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("mcp-protocol-version"),
        ])
        .max_age(Duration::from_secs(24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_and_metadata_are_open_to_scripts_and_the_browser_flow_is_not() {
        for path in [
            "/oauth/register",
            "/oauth/token",
            "/oauth/revoke",
            "/.well-known/oauth-authorization-server",
            "/.well-known/oauth-authorization-server/tenant",
            "/.well-known/jwks.json",
            "/tenant/.well-known/openid-configuration",
            "/tenant/.well-known/jwks.json",
            "/tenant/oauth/token",
            "/tenant/oauth/register",
        ] {
            assert!(is_api_path(path), "{path}");
        }
        for path in [
            "/oauth/authorize",
            "/oauth/login",
            "/oauth/consent",
            "/oauth/callback",
            "/tenant/oauth/authorize",
            "/tenant/oauth/consent",
            "/metrics",
            "/readyz",
        ] {
            assert!(!is_api_path(path), "{path}");
        }
    }
}

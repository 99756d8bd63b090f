//! The answers the filter gives itself: challenges (RFC 6750 / RFC 9728 / MCP authorization)
//! and the protected resource metadata document.

use serde_json::json;

use crate::config::FilterConfig;
use crate::rejection::Rejection;

/// A response the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Seconds a client should wait before retrying while the keys are unavailable.
const RETRY_AFTER_SECONDS: &str = "5";
/// Longest `error_description` put into a header; the JSON body carries the same text in full.
const MAX_HEADER_DESCRIPTION: usize = 200;

/// The answer to a request refused for `rejection`.
pub fn refusal(config: &FilterConfig, rejection: &Rejection) -> LocalResponse {
    let mut description = rejection.to_string();
    // The trusted issuers are public (the metadata names where to log in); naming them tells a
    // client with a token from the wrong tenant or environment what to get instead.
    if let Rejection::UntrustedIssuer(_) = rejection {
        let trusted: Vec<&str> = config.issuers.iter().map(|i| i.issuer.as_str()).collect();
        description.push_str(&format!("; trusted issuers: {}", trusted.join(", ")));
    }
    let (status, error) =
        match rejection {
            Rejection::MissingToken => (401, None),
            Rejection::TokenInQuery | Rejection::BadAuthorizationHeader => {
                (400, Some("invalid_request"))
            }
            Rejection::InsufficientScope(_) => (403, Some("insufficient_scope")),
            Rejection::KeysUnavailable(_) => return LocalResponse {
                status: 503,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("cache-control".into(), "no-store".into()),
                    ("retry-after".into(), RETRY_AFTER_SECONDS.into()),
                ],
                body: json!({"error": "temporarily_unavailable", "error_description": description})
                    .to_string(),
            },
            _ => (401, Some("invalid_token")),
        };
    let scope = match rejection {
        Rejection::InsufficientScope(needed) => needed.join(" "),
        _ => config.required_scopes.join(" "),
    };
    let mut challenge = format!(
        "Bearer resource_metadata=\"{}\"",
        config.resource_metadata_url
    );
    if !scope.is_empty() {
        challenge.push_str(&format!(", scope=\"{}\"", quoted(&scope)));
    }
    if let Some(error) = error {
        challenge.push_str(&format!(
            ", error=\"{error}\", error_description=\"{}\"",
            quoted(&description)
        ));
    }
    let body = json!({
        "error": error.unwrap_or("unauthorized"),
        "error_description": description,
        "resource_metadata": config.resource_metadata_url,
    });
    LocalResponse {
        status,
        headers: vec![
            ("www-authenticate".into(), challenge),
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: body.to_string(),
    }
}

/// A JSON-RPC error answer with HTTP `status`.
pub fn jsonrpc_error(
    status: u32,
    id: Option<&serde_json::Value>,
    code: i64,
    message: &str,
) -> LocalResponse {
    LocalResponse {
        status,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: crate::jsonrpc::error_body(id, code, message),
    }
}

/// The protected resource metadata document (RFC 9728), for `method`.
pub fn metadata(config: &FilterConfig, method: &str) -> LocalResponse {
    let cors = ("access-control-allow-origin".to_owned(), "*".to_owned());
    match method {
        "GET" | "HEAD" => LocalResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "public, max-age=300".into()),
                cors,
            ],
            body: if method == "GET" {
                config.metadata_document.clone()
            } else {
                String::new()
            },
        },
        "OPTIONS" => LocalResponse {
            status: 204,
            headers: vec![
                cors,
                (
                    "access-control-allow-methods".into(),
                    "GET, HEAD, OPTIONS".into(),
                ),
                ("access-control-allow-headers".into(), "*".into()),
            ],
            body: String::new(),
        },
        _ => LocalResponse {
            status: 405,
            headers: vec![("allow".into(), "GET, HEAD, OPTIONS".into())],
            body: String::new(),
        },
    }
}

/// Makes `text` safe inside an RFC 7230 quoted-string: no controls, quotes escaped, bounded.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_HEADER_DESCRIPTION));
    for ch in text
        .chars()
        .filter(|ch| !ch.is_control())
        .take(MAX_HEADER_DESCRIPTION)
    {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        if ch.is_ascii() {
            out.push(ch);
        } else {
            out.push('?');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn config(required_scopes: &[&str]) -> FilterConfig {
        FilterConfig::from_json(
            json!({
                "resource": "https://mcp.example.com/mcp",
                "authorization_servers": ["https://mcp.example.com"],
                "required_scopes": required_scopes,
                "issuers": [{"issuer": "https://mcp.example.com",
                             "jwks": {"cluster": "a", "path": "/jwks"}}],
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn header<'a>(response: &'a LocalResponse, name: &str) -> &'a str {
        &response.headers.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn a_request_without_token_gets_a_bare_challenge() {
        let response = refusal(&config(&[]), &Rejection::MissingToken);
        assert_eq!(response.status, 401);
        assert_eq!(
            header(&response, "www-authenticate"),
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        );
        let body: Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["error"], "unauthorized");
    }

    #[test]
    fn an_invalid_token_says_why_and_which_scope_to_ask_for() {
        let response = refusal(&config(&["mcp:tools"]), &Rejection::Expired);
        assert_eq!(response.status, 401);
        assert_eq!(
            header(&response, "www-authenticate"),
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", \
             scope=\"mcp:tools\", error=\"invalid_token\", error_description=\"the token expired\""
        );
        assert_eq!(header(&response, "cache-control"), "no-store");
    }

    #[test]
    fn missing_scope_is_a_step_up_challenge() {
        let response = refusal(
            &config(&["mcp:tools"]),
            &Rejection::InsufficientScope(vec!["mcp:admin".into()]),
        );
        assert_eq!(response.status, 403);
        let challenge = header(&response, "www-authenticate");
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(challenge.contains("scope=\"mcp:admin\""), "{challenge}");
    }

    #[test]
    fn attacker_text_cannot_break_out_of_the_header() {
        let response = refusal(
            &config(&[]),
            &Rejection::UntrustedIssuer("evil\"\r\nx-injected: 1".into()),
        );
        let challenge = header(&response, "www-authenticate");
        assert!(
            !challenge.contains('\r') && !challenge.contains('\n'),
            "{challenge}"
        );
        assert!(challenge.contains("evil\\\"x-injected"), "{challenge}");
    }

    #[test]
    fn an_untrusted_issuer_is_told_which_issuers_are_trusted() {
        let response = refusal(
            &config(&[]),
            &Rejection::UntrustedIssuer("https://other.example.com".into()),
        );
        assert_eq!(response.status, 401);
        let body: Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(
            body["error_description"],
            "issuer `https://other.example.com` is not trusted; trusted issuers: https://mcp.example.com"
        );
    }

    #[test]
    fn keys_unavailable_is_a_retryable_503() {
        let response = refusal(
            &config(&[]),
            &Rejection::KeysUnavailable("https://i".into()),
        );
        assert_eq!(response.status, 503);
        assert_eq!(header(&response, "retry-after"), "5");
    }

    #[test]
    fn metadata_is_served_to_get_and_preflight_only() {
        let config = config(&[]);
        let get = metadata(&config, "GET");
        assert_eq!(get.status, 200);
        assert_eq!(get.body, config.metadata_document);
        assert_eq!(metadata(&config, "OPTIONS").status, 204);
        assert_eq!(metadata(&config, "POST").status, 405);
    }
}

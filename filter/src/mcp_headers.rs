//! MCP 2026-07-28 routing headers: `Mcp-Method` and `Mcp-Name` must say what the body says.
//!
//! A proxy that routes or authorizes on the headers while the server executes the body would be
//! fooled by a mismatch, so any disagreement is refused (`400`, JSON-RPC `-32020`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};

/// The sentinel wrapping of a Base64-encoded header value.
const SENTINEL_PREFIX: &str = "=?base64?";
const SENTINEL_SUFFIX: &str = "?=";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMismatch {
    #[error(
        "Header mismatch: Mcp-Method header value '{header}' does not match body value '{body}'"
    )]
    Method { header: String, body: String },
    #[error(
        "Header mismatch: Mcp-Name header value '{header}' does not match body value '{body}'"
    )]
    Name { header: String, body: String },
    #[error("Header mismatch: Mcp-Name header is required for {0}")]
    NameMissing(String),
    #[error("Header mismatch: Mcp-Name header is not valid Base64 sentinel encoding")]
    BadEncoding,
}

/// Methods whose target is carried in `Mcp-Name`, and the body field it mirrors.
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Checks the headers a client sent against its message. Clients of 2025-11-25 send neither
/// header and pass; a client that sends `Mcp-Method` follows 2026-07-28 and must send both.
pub fn check(
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
    method: &str,
    params: &Map<String, Value>,
) -> Result<(), HeaderMismatch> {
    if let Some(header) = mcp_method {
        if header != method {
            return Err(HeaderMismatch::Method {
                header: header.to_owned(),
                body: method.to_owned(),
            });
        }
    }
    let Some(field) = name_field(method) else {
        return Ok(());
    };
    let body = params
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default();
    match mcp_name {
        Some(header) => {
            let decoded = decode(header)?;
            if decoded == body {
                Ok(())
            } else {
                Err(HeaderMismatch::Name {
                    header: decoded,
                    body: body.to_owned(),
                })
            }
        }
        None if mcp_method.is_some() => Err(HeaderMismatch::NameMissing(method.to_owned())),
        None => Ok(()),
    }
}

fn decode(header: &str) -> Result<String, HeaderMismatch> {
    match header
        .strip_prefix(SENTINEL_PREFIX)
        .and_then(|rest| rest.strip_suffix(SENTINEL_SUFFIX))
    {
        Some(encoded) => STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(HeaderMismatch::BadEncoding),
        None => Ok(header.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_2025_client_without_headers_passes() {
        assert!(check(None, None, "tools/call", &params(json!({"name": "echo"}))).is_ok());
    }

    #[test]
    fn matching_headers_pass() {
        let p = params(json!({"name": "echo"}));
        assert!(check(Some("tools/call"), Some("echo"), "tools/call", &p).is_ok());
        let p = params(json!({"uri": "file:///a b"}));
        assert!(check(
            Some("resources/read"),
            Some("file:///a b"),
            "resources/read",
            &p
        )
        .is_ok());
        assert!(check(Some("tools/list"), None, "tools/list", &Map::new()).is_ok());
    }

    #[test]
    fn a_mismatch_in_either_header_is_refused() {
        let p = params(json!({"name": "delete_namespace"}));
        assert!(matches!(
            check(Some("tools/list"), None, "tools/call", &p),
            Err(HeaderMismatch::Method { .. })
        ));
        let err = check(Some("tools/call"), Some("echo"), "tools/call", &p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Header mismatch: Mcp-Name header value 'echo' does not match body value 'delete_namespace'"
        );
    }

    #[test]
    fn a_2026_client_must_send_the_name() {
        let p = params(json!({"name": "echo"}));
        assert!(matches!(
            check(Some("tools/call"), None, "tools/call", &p),
            Err(HeaderMismatch::NameMissing(_))
        ));
    }

    #[test]
    fn base64_sentinel_values_are_decoded_before_comparing() {
        let p = params(json!({"name": "Hello, 世界"}));
        assert!(check(
            Some("tools/call"),
            Some("=?base64?SGVsbG8sIOS4lueVjA==?="),
            "tools/call",
            &p
        )
        .is_ok());
        assert_eq!(
            check(Some("tools/call"), Some("=?base64?!!!?="), "tools/call", &p),
            Err(HeaderMismatch::BadEncoding)
        );
    }
}

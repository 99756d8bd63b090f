//! Which authenticated requests an MCP server is meant to get, by method and path.
//!
//! The Streamable HTTP transport sends JSON-RPC messages with `POST` to one endpoint, opens
//! server-to-client streams with `GET` and ends sessions with `DELETE`. A `POST` elsewhere would
//! reach the upstream's other routes (or the same handler under another spelling of the path:
//! `/mcp/`, `/MCP`) without its body being authorised, so it is refused.

use serde_json::Value;

use crate::config::FilterConfig;
use crate::gate::RequestHead;
use crate::jsonrpc::{HEADER_MISMATCH, INVALID_REQUEST};
use crate::response::{self, LocalResponse};

#[derive(Debug)]
pub enum Route {
    /// A JSON-RPC message for the MCP endpoint: its body is authorised.
    Mcp,
    /// A request without a body. `stream`: a `GET`, whose event stream is watched.
    Bodiless {
        stream: bool,
    },
    Refuse(LocalResponse),
}

pub fn route(config: &FilterConfig, head: &RequestHead) -> Route {
    let path = head.path_only();
    if head.last_event_id {
        // A resumed stream replays earlier answers (list answers among them) that were filtered
        // on a stream the filter no longer has; replays are not re-cut, so they are refused.
        return refuse(
            400,
            "stream resumption (Last-Event-ID) is not supported behind mcp-mesh-auth: \
             send the request again instead",
            None,
        );
    }
    if let Some(name) = &head.repeated {
        // A routing header given twice disagrees with itself: MCP's HeaderMismatch.
        let code = if name.starts_with("mcp-") {
            HEADER_MISMATCH
        } else {
            INVALID_REQUEST
        };
        let message = format!(
            "the {} header came more than once: send it once",
            quote(name)
        );
        return Route::Refuse(response::jsonrpc_error(400, None, code, &message));
    }
    if head.method_override {
        return refuse(
            405,
            "method override headers (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override) \
             are not accepted: send the method itself",
            Some(("allow", "POST, GET, DELETE")),
        );
    }
    match head.method.as_str() {
        "POST" if is_mcp_path(config, path) => Route::Mcp,
        "POST" => refuse(
            404,
            &format!(
                "POST {} is not an MCP endpoint here: JSON-RPC messages go to {}; \
                 list other endpoints under `extra_mcp_paths` in the filter configuration",
                quote(path),
                config.mcp_path
            ),
            None,
        ),
        "GET" | "HEAD" | "DELETE" if !is_mcp_path(config, path) => refuse(
            404,
            &format!(
                "{} {} is not an MCP endpoint here: the MCP endpoint is {}; list other endpoints \
                 under `extra_mcp_paths` in the filter configuration",
                head.method,
                quote(path),
                config.mcp_path
            ),
            None,
        ),
        "GET" => Route::Bodiless { stream: true },
        "HEAD" | "DELETE" | "OPTIONS" => Route::Bodiless { stream: false },
        other => refuse(
            405,
            &format!(
                "method {} is not used by MCP: POST sends messages, GET opens a stream, \
                 DELETE ends a session",
                quote(other)
            ),
            Some(("allow", "POST, GET, DELETE")),
        ),
    }
}

fn is_mcp_path(config: &FilterConfig, path: &str) -> bool {
    path == config.mcp_path || config.extra_mcp_paths.iter().any(|extra| extra == path)
}

/// A client-chosen string in an error message: shortened, controls escaped.
fn quote(text: &str) -> String {
    let short: String = text.chars().take(100).collect();
    Value::String(short).to_string()
}

fn refuse(status: u32, message: &str, header: Option<(&str, &str)>) -> Route {
    let mut answer = response::jsonrpc_error(status, None, INVALID_REQUEST, message);
    if let Some((name, value)) = header {
        answer.headers.push((name.to_owned(), value.to_owned()));
    }
    Route::Refuse(answer)
}

//! Reading one JSON-RPC message from an MCP POST body, and writing JSON-RPC error answers.

use serde_json::{json, Map, Value};

use crate::unique_json;

/// JSON-RPC "Parse error".
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC "Invalid Request".
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC "Invalid params".
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC "Internal error".
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP 2026-07-28 `HeaderMismatch`: `Mcp-Method` / `Mcp-Name` disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// One JSON-RPC message a client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request (with `id`) or a notification (without).
    Call {
        id: Option<Value>,
        method: String,
        params: Map<String, Value>,
    },
    /// The client's answer to a request the server sent it (sampling, elicitation, roots).
    Reply,
}

/// Why a body is not one usable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("content type `{0}` is not application/json")]
    NotJson(String),
    #[error("the body is not valid JSON: {0}")]
    Parse(String),
    #[error("JSON-RPC batches are not supported: send one message per request")]
    Batch,
    #[error("not a JSON-RPC message: {0}")]
    Invalid(String),
}

impl RpcError {
    pub fn code(&self) -> i64 {
        match self {
            Self::NotJson(_) | Self::Parse(_) => PARSE_ERROR,
            Self::Batch | Self::Invalid(_) => INVALID_REQUEST,
        }
    }
}

/// Whether a `Content-Type` value is JSON (`application/json`, any parameters, or `+json`).
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Message, RpcError> {
    let content_type = content_type.unwrap_or_default();
    if !is_json_content_type(content_type) {
        return Err(RpcError::NotJson(content_type.to_owned()));
    }
    let value = unique_json::from_slice(body).map_err(|err| {
        if err.is_data() {
            RpcError::Invalid(err.to_string())
        } else {
            RpcError::Parse(err.to_string())
        }
    })?;
    let object = match value {
        Value::Object(object) => object,
        Value::Array(_) => return Err(RpcError::Batch),
        _ => {
            return Err(RpcError::Invalid(
                "the body is not a JSON object".to_owned(),
            ))
        }
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::Invalid("`jsonrpc` must be \"2.0\"".to_owned()));
    }
    let id = object.get("id").cloned();
    if let Some(id) = &id {
        if !matches!(id, Value::String(_) | Value::Number(_)) {
            return Err(RpcError::Invalid(
                "`id` must be a string or a number".to_owned(),
            ));
        }
    }
    match object.get("method") {
        Some(Value::String(method)) => {
            let params = match object.get("params") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(params)) => params.clone(),
                Some(_) => return Err(RpcError::Invalid("`params` must be an object".to_owned())),
            };
            Ok(Message::Call {
                id,
                method: method.clone(),
                params,
            })
        }
        Some(_) => Err(RpcError::Invalid("`method` must be a string".to_owned())),
        None if id.is_some() && (object.contains_key("result") || object.contains_key("error")) => {
            Ok(Message::Reply)
        }
        None => Err(RpcError::Invalid("no `method`".to_owned())),
    }
}

/// A JSON-RPC error answer for request `id` (`null` when unknown).
pub fn error_body(id: Option<&Value>, code: i64, message: &str) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn a_request_is_read_with_its_params() {
        let message = parse(
            JSON,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#,
        );
        let Ok(Message::Call { id, method, params }) = message else {
            panic!("{message:?}")
        };
        assert_eq!(
            (id, method.as_str(), params["name"].as_str()),
            (Some(json!(7)), "tools/call", Some("x"))
        );
    }

    #[test]
    fn a_notification_has_no_id() {
        let message = parse(
            JSON,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        )
        .unwrap();
        assert!(matches!(message, Message::Call { id: None, .. }));
    }

    #[test]
    fn a_client_reply_is_recognised() {
        assert_eq!(
            parse(JSON, br#"{"jsonrpc":"2.0","id":"s1","result":{}}"#),
            Ok(Message::Reply)
        );
    }

    #[test]
    fn batches_are_invalid_requests() {
        let err = parse(JSON, br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!((err.code(), err), (INVALID_REQUEST, RpcError::Batch));
    }

    #[test]
    fn unparsable_bodies_and_other_content_types_are_parse_errors() {
        assert_eq!(parse(JSON, b"{nope").unwrap_err().code(), PARSE_ERROR);
        assert_eq!(
            parse(Some("text/plain"), b"{}").unwrap_err().code(),
            PARSE_ERROR
        );
        assert_eq!(parse(None, b"{}").unwrap_err().code(), PARSE_ERROR);
        assert!(parse(
            Some("application/json; charset=utf-8"),
            br#"{"jsonrpc":"2.0","method":"ping","id":1}"#
        )
        .is_ok());
    }

    #[test]
    fn malformed_messages_are_invalid_requests() {
        for body in [
            &br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#[..],
            br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#""just a string""#,
        ] {
            assert_eq!(
                parse(JSON, body).unwrap_err().code(),
                INVALID_REQUEST,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_call_whose_meaning_depends_on_the_parser_is_an_invalid_request() {
        let err = parse(
            JSON,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ls","name":"delete_namespace"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), INVALID_REQUEST);
        assert!(err.to_string().contains("`name` appears twice"), "{err}");
    }

    #[test]
    fn error_bodies_carry_the_id() {
        let body: Value = serde_json::from_str(&error_body(Some(&json!(3)), 403, "no")).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc":"2.0","id":3,"error":{"code":403,"message":"no"}})
        );
        let body: Value = serde_json::from_str(&error_body(None, -32700, "x")).unwrap();
        assert_eq!(body["id"], Value::Null);
    }
}

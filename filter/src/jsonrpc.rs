//! Reading one JSON-RPC message from an MCP POST body, and writing JSON-RPC error answers.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::quote::quote;
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

/// The largest integer an IEEE double holds exactly, 2^53 − 1: beyond it a JavaScript client (or
/// any parser that reads numbers as doubles) would match an answer to a different id.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// A request id in its one canonical form.
///
/// JSON spells the same id many ways (`7`, `7.0`, `7e0`, `-0`): a filter that compares spellings
/// misses an answer the client will accept, and one that reads `7.0` as 7 disagrees with a client
/// that reads it as a float. So a request may only use a string or a safe integer, and answers
/// are matched by value (`RequestId::matches`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    Int(i64),
    Str(String),
}

impl RequestId {
    /// The id of a request as a client sent it; `None` for anything but a string or an integer
    /// (no fraction, no exponent) within ±`MAX_SAFE_INTEGER`.
    pub fn from_request(id: &Value) -> Option<Self> {
        match id {
            Value::String(text) => Some(Self::Str(text.clone())),
            Value::Number(number) => number
                .as_i64()
                .filter(|int| int.abs() <= MAX_SAFE_INTEGER)
                .map(Self::Int),
            _ => None,
        }
    }

    /// Whether the id of an answer (as the server wrote it) names this request. Numbers compare
    /// by value, so a server that writes `7` back as `7.0` or `7e0` still answers request 7; a
    /// string never matches a number (`"7"` is not 7).
    pub fn matches(&self, id: &Value) -> bool {
        match (self, id) {
            (Self::Str(expected), Value::String(got)) => expected == got,
            // Exact: a safe integer is a double without rounding.
            (Self::Int(expected), Value::Number(got)) => match got.as_i64() {
                Some(got) => got == *expected,
                None => got.as_f64() == Some(*expected as f64),
            },
            _ => false,
        }
    }

    /// The id as JSON, for answers that carry it back.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Int(int) => Value::from(*int),
            Self::Str(text) => Value::String(text.clone()),
        }
    }
}

/// The id as it appears in JSON: `7` or `"7"`.
impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

/// One JSON-RPC message a client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request (with `id`) or a notification (without).
    Call {
        id: Option<RequestId>,
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
    #[error(
        "`id` {0} is not allowed: a request id must be a string or an integer from \
         -9007199254740991 to 9007199254740991, written without fraction or exponent"
    )]
    BadId(String),
}

impl RpcError {
    pub fn code(&self) -> i64 {
        match self {
            Self::NotJson(_) | Self::Parse(_) => PARSE_ERROR,
            Self::Batch | Self::Invalid(_) | Self::BadId(_) => INVALID_REQUEST,
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
    let id = match object.get("id") {
        None => None,
        Some(id) => {
            Some(RequestId::from_request(id).ok_or_else(|| RpcError::BadId(id_as_sent(body, id)))?)
        }
    };
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

/// The `id` of `body` quoted as the client wrote it (`1e0`, not the `1.0` it parses to), so that
/// the error shows what to fix.
fn id_as_sent(body: &[u8], parsed: &Value) -> String {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
    }
    match serde_json::from_slice::<IdOnly<'_>>(body) {
        Ok(only) => quote(only.id.get()),
        Err(_) => quote(&parsed.to_string()),
    }
}

/// A JSON-RPC error answer for request `id` (`null` when unknown).
pub fn error_body(id: Option<&Value>, code: i64, message: &str) -> String {
    error_object(id, code, message).to_string()
}

/// A JSON-RPC error answer carrying `data` for the end user (the operator's `denial_help`).
pub fn error_body_with_data(id: Option<&Value>, code: i64, message: &str, data: Value) -> String {
    let mut object = error_object(id, code, message);
    object["error"]["data"] = data;
    object.to_string()
}

fn error_object(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    })
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
            (Some(RequestId::Int(7)), "tools/call", Some("x"))
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
    fn string_and_safe_integer_ids_are_accepted() {
        for (id, expected) in [
            ("7", RequestId::Int(7)),
            ("0", RequestId::Int(0)),
            ("-12", RequestId::Int(-12)),
            ("9007199254740991", RequestId::Int(MAX_SAFE_INTEGER)),
            ("-9007199254740991", RequestId::Int(-MAX_SAFE_INTEGER)),
            (r#""7""#, RequestId::Str("7".into())),
            (r#""""#, RequestId::Str(String::new())),
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let Ok(Message::Call { id: Some(got), .. }) = parse(JSON, body.as_bytes()) else {
                panic!("{id} refused")
            };
            assert_eq!(got, expected, "{id}");
        }
    }

    #[test]
    fn other_ids_are_invalid_requests_that_quote_the_id() {
        for id in [
            "7.0",
            "1e0",
            "-0.0",
            "-0",
            "true",
            "null",
            "[1]",
            r#"{"a":1}"#,
            "9007199254740992",
            "-9007199254740992",
            "18446744073709551616",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
            let err = parse(JSON, body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), INVALID_REQUEST, "{id}");
            let message = err.to_string();
            assert!(message.contains(&quote(id)), "{id}: {message}");
            assert!(message.contains("a string or an integer"), "{message}");
        }
    }

    #[test]
    fn an_answer_matches_its_request_by_value_not_spelling() {
        let seven = RequestId::Int(7);
        for spelling in ["7", "7.0", "7e0", "0.7e1", "700e-2"] {
            let id: Value = serde_json::from_str(spelling).unwrap();
            assert!(seven.matches(&id), "{spelling}");
        }
        for other in [r#""7""#, "7.5", "8", "null", "[7]"] {
            let id: Value = serde_json::from_str(other).unwrap();
            assert!(!seven.matches(&id), "{other}");
        }
        assert!(RequestId::Int(0).matches(&json!(-0.0)));
        let text = RequestId::Str("7".into());
        assert!(text.matches(&json!("7")) && !text.matches(&json!(7)));
        assert!(RequestId::Int(MAX_SAFE_INTEGER).matches(&json!(9_007_199_254_740_991.0)));
    }

    #[test]
    fn ids_display_and_travel_as_json() {
        assert_eq!(RequestId::Int(7).to_string(), "7");
        assert_eq!(RequestId::Str("a\"b".into()).to_string(), r#""a\"b""#);
        assert_eq!(RequestId::Int(-3).to_value(), json!(-3));
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

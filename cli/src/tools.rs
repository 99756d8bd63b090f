//! The tools of an MCP server: from a saved `tools/list` answer, or asked of the live server over
//! streamable HTTP (initialize, notifications/initialized, tools/list with every page).

use std::time::Duration;

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

use crate::CliError;

const PROTOCOL_VERSION: &str = "2025-06-18";
/// Enough pages for any real server; a server that keeps sending cursors is not followed forever.
const MAX_PAGES: usize = 100;

/// The tools of a saved answer: a JSON-RPC response, its `result`, or the bare `tools` array.
pub fn from_answer(answer: &Value) -> Result<Vec<Value>, CliError> {
    items(answer, "tools")
}

/// The `key` items (`tools`, `prompts`) of a saved list answer: a JSON-RPC response, its
/// `result`, or the bare array.
pub fn items(answer: &Value, key: &str) -> Result<Vec<Value>, CliError> {
    let items = answer
        .pointer(&format!("/result/{key}"))
        .or_else(|| answer.get(key))
        .unwrap_or(answer);
    items.as_array().cloned().ok_or_else(|| {
        CliError::Input(format!(
            "not a `{key}/list` answer: expected {{\"result\": {{\"{key}\": [...]}}}}, {{\"{key}\": [...]}} or [...]"
        ))
    })
}

/// What a server offers that types the schema's `arg_*` attributes.
#[derive(Debug, Default)]
pub struct Offered {
    pub tools: Vec<Value>,
    /// Its prompts (their arguments are strings), when it has the `prompts` capability.
    pub prompts: Vec<Value>,
}

/// Lists the tools and prompts of the server at `url`, presenting `token` as a bearer token.
pub fn from_server(url: &str, token: Option<&str>) -> Result<Offered, CliError> {
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|err| CliError::Server(format!("no HTTP client: {err}")))?;
    let mut session = Session {
        client,
        url,
        token,
        id: None,
        version: None,
        next_id: 1,
    };
    let init = session.call(
        "initialize",
        json!({"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
               "clientInfo": {"name": "mcp-mesh-auth", "version": env!("CARGO_PKG_VERSION")}}),
    )?;
    session.version = init
        .pointer("/protocolVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    session.notify("notifications/initialized")?;
    let tools = session.list("tools")?;
    let prompts = match init.pointer("/capabilities/prompts") {
        Some(_) => session.list("prompts")?,
        None => Vec::new(),
    };
    Ok(Offered { tools, prompts })
}

struct Session<'a> {
    client: Client,
    url: &'a str,
    token: Option<&'a str>,
    id: Option<String>,
    version: Option<String>,
    next_id: u64,
}

impl Session<'_> {
    fn post(&self, body: &Value) -> Result<Response, CliError> {
        let mut request = self
            .client
            .post(self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        if let Some(version) = &self.version {
            request = request.header("mcp-protocol-version", version);
        }
        request
            .send()
            .map_err(|err| CliError::Server(format!("POST {} failed: {err}", self.url)))
    }

    /// Every page of `<key>/list`.
    fn list(&mut self, key: &str) -> Result<Vec<Value>, CliError> {
        let method = format!("{key}/list");
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let result = self.call(&method, params)?;
            all.extend(items(&result, key)?);
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                return Ok(all);
            }
        }
        Err(CliError::Server(format!(
            "`{method}` at {} still had a next page after {MAX_PAGES} pages",
            self.url
        )))
    }

    /// A request, and its answer's `result` (from a JSON body or the SSE event answering it).
    fn call(&mut self, method: &str, params: Value) -> Result<Value, CliError> {
        let id = self.next_id;
        self.next_id += 1;
        let response =
            self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let status = response.status();
        if let Some(session) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
        {
            self.id = Some(session.to_owned());
        }
        let event_stream = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        let text = response
            .text()
            .map_err(|err| CliError::Server(format!("{method}: reading the answer: {err}")))?;
        if !status.is_success() {
            return Err(CliError::Server(format!(
                "{method} at {}: HTTP {status}: {}",
                self.url,
                text.chars().take(300).collect::<String>()
            )));
        }
        let answer = if event_stream {
            answer_in_events(&text, id)
        } else {
            serde_json::from_str(&text).ok()
        }
        .ok_or_else(|| CliError::Server(format!("{method}: no JSON-RPC answer with id {id}")))?;
        if let Some(error) = answer.get("error") {
            return Err(CliError::Server(format!("{method} failed: {error}")));
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| CliError::Server(format!("{method}: the answer has no `result`")))
    }

    fn notify(&self, method: &str) -> Result<(), CliError> {
        self.post(&json!({"jsonrpc": "2.0", "method": method}))
            .map(drop)
    }
}

/// The message answering request `id` in an SSE body (`data:` lines joined per event).
fn answer_in_events(text: &str, id: u64) -> Option<Value> {
    let normalized = text.replace("\r\n", "\n");
    normalized.split("\n\n").find_map(|event| {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| data.strip_prefix(' ').unwrap_or(data))
            .collect();
        let message: Value = serde_json::from_str(&data.join("\n")).ok()?;
        (message.get("id") == Some(&json!(id))).then_some(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_answer_may_be_the_response_the_result_or_the_list() {
        let tools = json!([{"name": "echo"}]);
        for answer in [
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}),
            json!({"tools": tools}),
            tools.clone(),
        ] {
            assert_eq!(
                from_answer(&answer).unwrap(),
                tools.as_array().unwrap().clone()
            );
        }
        let err = from_answer(&json!({"result": {}})).unwrap_err().to_string();
        assert!(err.contains("not a `tools/list` answer"), "{err}");
        let prompts = json!({"result": {"prompts": [{"name": "p"}]}});
        assert_eq!(items(&prompts, "prompts").unwrap(), [json!({"name": "p"})]);
    }

    #[test]
    fn the_answer_is_found_among_other_events() {
        let body = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\r\n\r\n\
                    event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\r\ndata: \"result\":{\"tools\":[]}}\r\n\r\n";
        assert_eq!(
            answer_in_events(body, 2),
            Some(json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": []}}))
        );
        assert_eq!(answer_in_events(body, 3), None);
    }
}

//! What one request needs beyond its headers: the body decision of an MCP POST, and the
//! filtering of a list answer on its way back.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};
use serde_json::Value;

use super::engine::{self, SharedEngine};
use crate::call_gate::{self, CallHeaders, CallVerdict, PendingList};
use crate::jsonrpc::{RequestId, INTERNAL_ERROR, INVALID_REQUEST};
use crate::list_decisions;
use crate::list_filter::{self, FilterError, Filtered, SseOutcome};
use crate::operation::Feature;
use crate::response;
use crate::verify::VerifiedToken;

pub type SharedStream = Rc<RefCell<StreamState>>;

#[derive(Default)]
pub struct StreamState {
    /// Answered locally: nothing more of the request may pass (see `engine::answer`).
    pub answered: bool,
    /// Held for its issuer's keys: nothing of the request may pass yet.
    pub held: bool,
    /// Body that arrived while held: `(size so far, complete)`. Only hosts that let body callbacks
    /// run behind stopped headers (Envoy's `allow_on_headers_stop_iteration`) report it.
    pub early_body: Option<(usize, bool)>,
    /// An authenticated MCP POST whose body is still to be decided.
    pub inspect: Option<Inspect>,
    /// A list request whose answer is to be filtered.
    list: Option<ListAnswer>,
}

#[derive(Clone)]
pub struct Inspect {
    pub identity: Rc<VerifiedToken>,
    pub headers: CallHeaders,
}

struct ListAnswer {
    identity: Rc<VerifiedToken>,
    pending: PendingList,
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Response headers not seen yet.
    Unknown,
    Json,
    Sse,
    /// The answer was filtered (or needs no filtering): the rest passes.
    Done,
}

pub fn on_request_body(
    engine: &SharedEngine,
    stream: &SharedStream,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    {
        let mut state = stream.borrow_mut();
        if state.answered {
            return Action::Pause;
        }
        if state.held {
            // Continuing here would let the held request through unauthenticated.
            state.early_body = Some((body_size, end_of_stream));
            return Action::Pause;
        }
    }
    let Some(inspect) = stream.borrow().inspect.clone() else {
        return Action::Continue;
    };
    let max = engine
        .try_borrow()
        .map(|e| e.config.max_body_bytes)
        .unwrap_or(0);
    if body_size > max {
        stream.borrow_mut().inspect = None;
        let message = format!("the request body is over the {max}-byte limit");
        return engine::answer(
            stream,
            &response::jsonrpc_error(413, None, INVALID_REQUEST, &message),
        );
    }
    if !end_of_stream {
        return Action::Pause;
    }
    match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
        Ok(body) => decide_body(engine, stream, inspect, &body.unwrap_or_default()),
        Err(_) => engine::answer(
            stream,
            &engine::internal_error("could not read the request body"),
        ),
    }
}

/// Decides an MCP POST on its complete body.
pub fn decide_body(
    engine: &SharedEngine,
    stream: &SharedStream,
    inspect: Inspect,
    body: &[u8],
) -> Action {
    stream.borrow_mut().inspect = None;
    let verdict = {
        let Ok(engine) = engine.try_borrow() else {
            return engine::answer(stream, &engine::internal_error("filter state busy"));
        };
        let Some(authz) = engine.config.authorizer.clone() else {
            return Action::Continue;
        };
        let (verdict, audit) = call_gate::decide(
            &engine.config,
            &authz,
            &engine.annotations,
            &inspect.identity,
            &inspect.headers,
            body,
        );
        if let Some(audit) = audit {
            engine.metrics.authorized(audit.allowed);
            log::info!("mcp-mesh-auth: audit {}", audit.to_json(&inspect.identity));
        }
        verdict
    };
    match verdict {
        CallVerdict::Pass(list) => {
            stream.borrow_mut().list = list.map(|pending| ListAnswer {
                identity: inspect.identity,
                pending,
                format: Format::Unknown,
            });
            Action::Continue
        }
        CallVerdict::Refuse(refusal) => engine::answer(stream, &refusal),
    }
}

pub fn on_response_headers(
    engine: &SharedEngine,
    stream: &SharedStream,
    end_of_stream: bool,
) -> Action {
    let mut state = stream.borrow_mut();
    let Some(list) = state.list.as_mut() else {
        return Action::Continue;
    };
    let header = |name: &str| {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
            .map(|value| String::from_utf8_lossy(&value).into_owned())
            .unwrap_or_default()
    };
    let success = header(":status").starts_with('2');
    if !success || end_of_stream {
        state.list = None;
        return Action::Continue;
    }
    list.format = if header("content-type")
        .to_ascii_lowercase()
        .starts_with("text/event-stream")
    {
        Format::Sse
    } else {
        Format::Json
    };
    // The body will change length.
    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", None);
    let hold = engine
        .try_borrow()
        .map(|e| e.config.headers_stop_iteration)
        .unwrap_or(false);
    if hold {
        Action::Pause
    } else {
        Action::Continue
    }
}

pub fn on_response_body(
    engine: &SharedEngine,
    stream: &SharedStream,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    let answer = match &stream.borrow().list {
        Some(list) if list.format != Format::Done && list.format != Format::Unknown => Answer {
            format: list.format,
            request_id: list.pending.request_id.clone(),
            feature: list.pending.feature,
            identity: Rc::clone(&list.identity),
        },
        _ => return Action::Continue,
    };
    let hold = engine
        .try_borrow()
        .map(|e| e.config.headers_stop_iteration)
        .unwrap_or(false);
    match filter_answer(engine, stream, &answer, body_size, end_of_stream) {
        Ok(action) => action,
        Err(reason) => fail(stream, &answer, hold, body_size, &reason),
    }
}

/// The list answer a stream is waiting for.
struct Answer {
    format: Format,
    request_id: RequestId,
    feature: Feature,
    identity: Rc<VerifiedToken>,
}

fn filter_answer(
    engine: &SharedEngine,
    stream: &SharedStream,
    answer: &Answer,
    body_size: usize,
    end_of_stream: bool,
) -> Result<Action, String> {
    let max = engine
        .try_borrow()
        .map(|e| e.config.max_response_bytes)
        .unwrap_or(0);
    if body_size > max {
        return Err(format!(
            "the list answer is over max_response_bytes ({max})"
        ));
    }
    if answer.format == Format::Json && !end_of_stream {
        return Ok(Action::Pause);
    }
    let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
        .map_err(|_| "could not read the list answer".to_owned())?
        .unwrap_or_default();
    let outcome = {
        let mut engine = engine
            .try_borrow_mut()
            .map_err(|_| "filter state busy".to_owned())?;
        filter(&mut engine, answer, &body).map_err(|err| err.to_string())?
    };
    let Some(filtered) = outcome else {
        return Ok(if end_of_stream {
            finish(stream)
        } else {
            Action::Pause
        });
    };
    if let Ok(engine) = engine.try_borrow() {
        engine.metrics.filtered(filtered.count.removed);
    }
    log::info!(
        "mcp-mesh-auth: audit {}",
        serde_json::json!({"subject": answer.identity.subject,
                           "method": format!("{}/list", answer.feature.list_key()),
                           "listed": filtered.count.kept, "removed": filtered.count.removed})
    );
    if let Some(body) = &filtered.body {
        hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, body)
            .map_err(|_| "could not rewrite the list answer".to_owned())?;
    }
    Ok(finish(stream))
}

/// Filters what has arrived; `Ok(None)` when the answer is not (completely) there yet.
fn filter(
    engine: &mut engine::Engine,
    answer: &Answer,
    body: &[u8],
) -> Result<Option<Filtered>, FilterError> {
    let engine::Engine {
        config,
        annotations,
        list_memo,
        ..
    } = engine;
    let Some(authz) = config.authorizer.as_deref() else {
        return Ok(None);
    };
    let identity = &answer.identity;
    let mut keep = |feature: Feature, items: &[Value]| {
        list_decisions::keep_listed(authz, list_memo, annotations, identity, feature, items)
    };
    match answer.format {
        Format::Sse => {
            match list_filter::filter_sse(body, &answer.request_id, answer.feature, &mut keep)? {
                SseOutcome::Pending => Ok(None),
                SseOutcome::Done(filtered) => Ok(Some(filtered)),
            }
        }
        _ => {
            list_filter::filter_json(body, &answer.request_id, answer.feature, &mut keep).map(Some)
        }
    }
}

fn finish(stream: &SharedStream) -> Action {
    if let Some(list) = stream.borrow_mut().list.as_mut() {
        list.format = Format::Done;
    }
    Action::Continue
}

/// Fails closed: a 500 when the response headers are still held, else the body becomes the
/// JSON-RPC error (the status is already on its way).
fn fail(
    stream: &SharedStream,
    answer: &Answer,
    hold: bool,
    body_size: usize,
    reason: &str,
) -> Action {
    log::error!("mcp-mesh-auth: a list answer could not be filtered and is withheld: {reason}");
    stream.borrow_mut().list = None;
    let message = "the list answer could not be checked against the authorization policy";
    let id = answer.request_id.to_value();
    let error = response::jsonrpc_error(500, Some(&id), INTERNAL_ERROR, message);
    if hold {
        return engine::answer(stream, &error);
    }
    let body = match answer.format {
        Format::Sse => format!("event: message\ndata: {}\n\n", error.body),
        _ => error.body,
    };
    let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, body.as_bytes());
    Action::Continue
}

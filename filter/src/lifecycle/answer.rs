//! The response side of a stream: list answers cut to what the caller may use, everything else
//! passed as it comes.

use serde_json::Value;

use super::{Host, Observation, Step, Stream, SESSION_HEADER};
use crate::binding::Purpose;
use crate::call_gate::PendingList;
use crate::engine::Engine;
use crate::jsonrpc::INTERNAL_ERROR;
use crate::list_decisions;
use crate::list_filter::{self, FilterError, Filtered, SseOutcome};
use crate::operation::Feature;
use crate::response;

/// The parts of a response head the lifecycle needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// `:status`, as sent.
    pub status: String,
    pub content_type: String,
    /// `Mcp-Session-Id`, when the server started a session.
    pub session_id: Option<String>,
}

/// What is to become of the response.
#[derive(Debug)]
pub(super) enum Answer {
    /// Passes as it comes.
    Pass,
    /// The answer to a `GET`.
    EventStream,
    /// A list request went upstream; its answer is awaited.
    List(PendingList),
    /// A list answer is arriving and will be cut.
    Cutting { pending: PendingList, sse: bool },
    /// Cutting failed after the head went on: the rest of the body is withheld.
    Withheld,
}

pub(super) fn on_headers(
    stream: &mut Stream,
    engine: &mut Engine,
    host: &mut dyn Host,
    head: &ResponseHead,
    end_of_stream: bool,
) -> Step {
    if let Err(reason) = seal_session(stream, engine, host, head) {
        return refuse_head(stream, host, &reason);
    }
    let pending = match std::mem::replace(&mut stream.answer, Answer::Pass) {
        Answer::List(pending) => pending,
        other => {
            stream.answer = other;
            return Step::Continue;
        }
    };
    // An error status or an empty answer carries no list.
    if !head.status.starts_with('2') || end_of_stream {
        return Step::Continue;
    }
    let sse = head
        .content_type
        .to_ascii_lowercase()
        .starts_with("text/event-stream");
    // The body will change length.
    if host.set_response_header("content-length", None).is_err() {
        return fail(
            stream,
            engine,
            host,
            &pending,
            sse,
            0,
            "could not clear content-length",
        );
    }
    stream.answer = Answer::Cutting { pending, sse };
    if engine.config.headers_stop_iteration {
        Step::Pause
    } else {
        Step::Continue
    }
}

/// Replaces the session id the server started by one sealed to the caller, so that no other
/// principal can use it (see `Stream::bind_session`).
fn seal_session(
    stream: &Stream,
    engine: &Engine,
    host: &mut dyn Host,
    head: &ResponseHead,
) -> Result<(), String> {
    let (Some(id), Some(key), Some(identity)) = (
        &head.session_id,
        &engine.config.binding_key,
        &stream.identity,
    ) else {
        return Ok(());
    };
    let subject = identity.subject.as_deref().unwrap_or_default();
    let sealed = key.seal(Purpose::Session, id, &identity.issuer, subject);
    host.set_response_header(SESSION_HEADER, Some(&sealed))
        .map_err(|err| err.to_string())
}

/// A response head that cannot be made safe: answered with a 500 instead.
fn refuse_head(stream: &mut Stream, host: &mut dyn Host, reason: &str) -> Step {
    log::error!("mcp-mesh-auth: a response is withheld: {reason}");
    stream.answer(host, &super::internal_error(reason))
}

pub(super) fn on_body(
    stream: &mut Stream,
    engine: &mut Engine,
    host: &mut dyn Host,
    body_size: usize,
    end_of_stream: bool,
) -> Step {
    match &stream.answer {
        Answer::Cutting { .. } => cut(stream, engine, host, body_size, end_of_stream),
        Answer::Withheld => withhold(host, body_size),
        _ => Step::Continue,
    }
}

pub(super) fn on_trailers(stream: &mut Stream, engine: &mut Engine, host: &mut dyn Host) -> Step {
    match &stream.answer {
        Answer::Cutting { .. } => cut(stream, engine, host, usize::MAX, true),
        _ => Step::Continue,
    }
}

/// Drops what arrives of a body whose answer failed.
fn withhold(host: &mut dyn Host, body_size: usize) -> Step {
    if body_size > 0 && host.replace_response_body(body_size, b"").is_err() {
        log::error!("mcp-mesh-auth: could not withhold the rest of a refused answer");
    }
    Step::Continue
}

fn cut(
    stream: &mut Stream,
    engine: &mut Engine,
    host: &mut dyn Host,
    body_size: usize,
    end_of_stream: bool,
) -> Step {
    let Answer::Cutting { pending, sse } = std::mem::replace(&mut stream.answer, Answer::Pass)
    else {
        return Step::Continue;
    };
    let max = engine.config.max_response_bytes;
    if body_size > max && body_size != usize::MAX {
        let reason = format!("the list answer is over max_response_bytes ({max})");
        return fail(stream, engine, host, &pending, sse, body_size, &reason);
    }
    if !sse && !end_of_stream {
        stream.answer = Answer::Cutting { pending, sse };
        return Step::Pause;
    }
    let body = match host.response_body(max.saturating_add(1)) {
        Ok(body) if body.len() > max => {
            let reason = format!("the list answer is over max_response_bytes ({max})");
            return fail(stream, engine, host, &pending, sse, body.len(), &reason);
        }
        Ok(body) => body,
        Err(err) => {
            return fail(
                stream,
                engine,
                host,
                &pending,
                sse,
                body_size,
                &err.to_string(),
            )
        }
    };
    let size = body.len();
    let outcome = match stream.identity.clone() {
        Some(identity) => filter(engine, &identity, &pending, sse, &body),
        None => Err(FilterError::NotJson("no caller".into())),
    };
    let filtered = match outcome {
        Ok(Some(filtered)) => filtered,
        Ok(None) if !end_of_stream => {
            stream.answer = Answer::Cutting { pending, sse };
            return Step::Pause;
        }
        Ok(None) => {
            let reason = "the answer ended without the list it was to carry";
            return fail(stream, engine, host, &pending, sse, size, reason);
        }
        Err(err) => return fail(stream, engine, host, &pending, sse, size, &err.to_string()),
    };
    host.observe(Observation::Filtered(filtered.removed));
    log::info!(
        "mcp-mesh-auth: audit {}",
        serde_json::json!({
            "subject": stream.identity.as_ref().and_then(|i| i.subject.as_deref()),
            "method": format!("{}/list", pending.feature.list_key()),
            "listed": filtered.kept, "removed": filtered.removed})
    );
    if let Some(new_body) = &filtered.body {
        if host.replace_response_body(size, new_body).is_err() {
            return fail(
                stream,
                engine,
                host,
                &pending,
                sse,
                size,
                "could not rewrite the list",
            );
        }
    }
    Step::Continue
}

/// Cuts what has arrived; `Ok(None)` when the answer is not (completely) there yet.
fn filter(
    engine: &mut Engine,
    identity: &crate::verify::VerifiedToken,
    pending: &PendingList,
    sse: bool,
    body: &[u8],
) -> Result<Option<Filtered>, FilterError> {
    let Engine {
        config,
        annotations,
        list_memo,
        ..
    } = engine;
    let Some(authz) = config.authorizer.as_deref() else {
        return Ok(Some(Filtered {
            body: None,
            removed: 0,
            kept: 0,
        }));
    };
    let mut keep = |feature: Feature, items: &[Value]| {
        list_decisions::keep_listed(authz, list_memo, annotations, identity, feature, items)
    };
    if sse {
        match list_filter::filter_sse(body, &pending.request_id, pending.feature, &mut keep)? {
            SseOutcome::Pending => Ok(None),
            SseOutcome::Done(filtered) => Ok(Some(filtered)),
        }
    } else {
        list_filter::filter_json(body, &pending.request_id, pending.feature, &mut keep)
    }
}

/// Fails closed: a 500 while the response head is still held here, else the body becomes the
/// JSON-RPC error (the status is already on its way) and the rest of it is withheld.
fn fail(
    stream: &mut Stream,
    engine: &Engine,
    host: &mut dyn Host,
    pending: &PendingList,
    sse: bool,
    body_size: usize,
    reason: &str,
) -> Step {
    log::error!("mcp-mesh-auth: a list answer could not be checked and is withheld: {reason}");
    let message = "the list answer could not be checked against the authorization policy";
    let error = response::jsonrpc_error(500, Some(&pending.request_id), INTERNAL_ERROR, message);
    if engine.config.headers_stop_iteration {
        return stream.answer(host, &error);
    }
    stream.answer = Answer::Withheld;
    let body = if sse {
        format!("event: message\ndata: {}\n\n", error.body)
    } else {
        error.body
    };
    if host
        .replace_response_body(body_size, body.as_bytes())
        .is_err()
    {
        log::error!("mcp-mesh-auth: could not replace a refused list answer");
    }
    Step::Continue
}

//! The response side of a stream: list answers cut to what the caller may use, task ids sealed
//! to their creator, answers on `GET` streams dropped, everything else passed as it comes.
//!
//! An event stream is cut event by event as it arrives ([`SseFilter`]); only an incomplete last
//! event is held back. A JSON answer, and an event stream whose answer needs task work, are
//! worked on whole at their end, whether that end is the last body chunk or the trailers.

use serde_json::Value;

use super::{Host, Observation, Step, Stream, SESSION_HEADER};
use crate::authz::CedarMode;
use crate::binding::Purpose;
use crate::call_gate::{AnswerWork, PendingAnswer};
use crate::engine::Engine;
use crate::jsonrpc::{RequestId, INTERNAL_ERROR};
use crate::list_decisions;
use crate::list_filter::{self, FilterError, Keep, SseFilter};
use crate::operation::Kind;
use crate::response;
use crate::sse;
use crate::tasks::{self, Owner};
use crate::telemetry::{Audit, Caller, Reason, Removed};
use crate::unique_json;

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
    /// The request went upstream; its answer needs work.
    Awaited(PendingAnswer),
    /// The answer to a `GET`: an event stream on it may carry no responses.
    EventStream,
    /// A JSON answer, buffered whole and worked on at its end (`error_status`: a non-2xx answer,
    /// worked on only if it carries a `result` after all).
    Whole {
        pending: PendingAnswer,
        error_status: bool,
    },
    /// An event stream cut as it arrives.
    Cutting(Box<Cutting>),
    /// Working on the answer failed after its head went on: the rest of the body is withheld.
    Withheld,
}

#[derive(Debug)]
pub(super) struct Cutting {
    /// `None` on a `GET` stream.
    pending: Option<PendingAnswer>,
    events: Events,
    /// Whether the cut list was logged (once, when its answer has passed).
    audited: bool,
    /// What the cut removed so far (in shadow mode: would have removed).
    removed: Removed,
    /// The start of what `Events::Worked` writes (see `sse::Output`).
    output: sse::Output,
    /// Bytes of the host's buffer already fed to the filter (the buffer grows while paused).
    consumed: usize,
    /// Filtered bytes not yet handed to the host.
    out: Vec<u8>,
    /// The response head waits here until the answer has passed.
    head_held: bool,
}

/// What is done to the events of a stream.
#[derive(Debug)]
enum Events {
    /// A list answer cut (or, on a `GET` stream, responses dropped).
    Cut(SseFilter),
    /// Each event worked on as it completes (see `work_event`): task ids sealed in the answer,
    /// lists and other requests' answers dropped; a server request the call waits on (a task's
    /// question among them) passes at once.
    Worked(sse::Splitter),
}

/// What went wrong with an answer, for the log; the client gets a generic error.
type Failure = String;

pub(super) fn on_headers(
    stream: &mut Stream,
    engine: &mut Engine,
    host: &mut dyn Host,
    head: &ResponseHead,
    end_of_stream: bool,
) -> Step {
    if let Err(reason) = seal_session(stream, engine, host, head) {
        log::error!("mcp-mesh-auth: a response is withheld: {reason}");
        return stream.answer(host, &super::internal_error(&reason));
    }
    let sse = head
        .content_type
        .to_ascii_lowercase()
        .starts_with("text/event-stream");
    let success = head.status.starts_with('2');
    let max = engine.config.max_response_bytes;
    let hold = engine.config.headers_stop_iteration;
    stream.answer = match std::mem::replace(&mut stream.answer, Answer::Pass) {
        Answer::EventStream if success && !end_of_stream && sse => {
            Answer::Cutting(Box::new(Cutting {
                pending: None,
                events: Events::Cut(SseFilter::without_answer(max)),
                audited: false,
                removed: Removed::default(),
                output: sse::Output::default(),
                consumed: 0,
                out: Vec::new(),
                head_held: false,
            }))
        }
        // An empty answer carries nothing to work on; an error status may still carry a
        // `result` a client would read, so it is looked at too.
        Answer::Awaited(pending) if !end_of_stream => match (&pending.work, sse) {
            (AnswerWork::Cut(kind), true) => {
                let filter = match RequestId::from_request(&pending.request_id) {
                    Some(id) => SseFilter::for_answer(id, *kind, max),
                    None => return fail(stream, engine, host, &pending, sse, 0, "bad id".into()),
                };
                Answer::Cutting(Box::new(Cutting {
                    pending: Some(pending),
                    events: Events::Cut(filter),
                    audited: false,
                    removed: Removed::default(),
                    output: sse::Output::default(),
                    consumed: 0,
                    out: Vec::new(),
                    head_held: hold,
                }))
            }
            // Other answers stream: a call waiting for input asks its question on this stream.
            (_, true) => Answer::Cutting(Box::new(Cutting {
                pending: Some(pending),
                events: Events::Worked(sse::Splitter::new(max)),
                audited: false,
                removed: Removed::default(),
                output: sse::Output::default(),
                consumed: 0,
                out: Vec::new(),
                head_held: false,
            })),
            (_, false) => Answer::Whole {
                pending,
                error_status: !success,
            },
        },
        _ => return Step::Continue,
    };
    // The body will change length.
    if host.set_response_header("content-length", None).is_err() {
        log::error!("mcp-mesh-auth: could not clear content-length of an answer to work on");
        return stream.answer(
            host,
            &super::internal_error("could not clear content-length"),
        );
    }
    match &stream.answer {
        Answer::Cutting(cutting) if !cutting.head_held => Step::Continue,
        _ if hold => Step::Pause,
        _ => Step::Continue,
    }
}

/// Replaces the session id the server started by one sealed to the caller, so that no other
/// principal can use it (see `Stream::bind_session`).
fn seal_session(
    stream: &Stream,
    engine: &Engine,
    host: &mut dyn Host,
    head: &ResponseHead,
) -> Result<(), Failure> {
    let (Some(id), Some(key), Some(identity)) = (
        &head.session_id,
        &engine.config.binding_key,
        &stream.identity,
    ) else {
        return Ok(());
    };
    // The same principal as Cedar and task ids use; without one no session can be bound.
    let owner = Owner::of(identity)
        .ok_or_else(|| "a session for a token without `sub` or `client_id`".to_owned())?;
    let sealed = key.seal(Purpose::Session, id, owner.issuer, owner.subject);
    host.set_response_header(SESSION_HEADER, Some(&sealed))
        .map_err(|err| err.to_string())
}

pub(super) fn on_body(
    stream: &mut Stream,
    engine: &mut Engine,
    host: &mut dyn Host,
    body_size: usize,
    end_of_stream: bool,
) -> Step {
    match &stream.answer {
        Answer::Whole { .. } if !end_of_stream => {
            let max = engine.config.max_response_bytes;
            if body_size <= max {
                return Step::Pause;
            }
            let reason = format!("the answer is over max_response_bytes ({max})");
            fail_answer(stream, engine, host, body_size, reason)
        }
        Answer::Whole { .. } => whole(stream, engine, host),
        Answer::Cutting(_) => cut(stream, engine, host, body_size, end_of_stream),
        Answer::Withheld => withhold(host, body_size),
        Answer::Pass | Answer::Awaited(_) | Answer::EventStream => Step::Continue,
    }
}

/// The response's trailers: the end of its body.
pub(super) fn on_trailers(stream: &mut Stream, engine: &mut Engine, host: &mut dyn Host) -> Step {
    match &stream.answer {
        Answer::Whole { .. } => whole(stream, engine, host),
        Answer::Cutting(_) => cut(stream, engine, host, 0, true),
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

/// Decides a list's items for the caller and notes in `removed` the ones it may not use; without
/// Cedar (no list is then cut) every item passes, and in shadow mode every item passes too.
fn keeper<'e>(
    engine: &'e mut Engine,
    identity: &'e crate::verify::VerifiedToken,
    removed: &'e mut Removed,
) -> impl FnMut(Kind, &[Value]) -> Vec<bool> + 'e {
    let Engine {
        config,
        annotations,
        list_memo,
        ..
    } = engine;
    let authz = config.authorizer.as_deref();
    move |kind: Kind, items: &[Value]| match authz {
        Some(authz) => {
            let keep =
                list_decisions::keep_listed(authz, list_memo, annotations, identity, kind, items);
            for (item, _) in items.iter().zip(&keep).filter(|(_, kept)| !**kept) {
                let name = item.get(kind.id_key()).and_then(Value::as_str);
                removed.add(name.unwrap_or("(unnamed)"));
            }
            match authz.mode {
                CedarMode::Enforce => keep,
                CedarMode::Shadow => vec![true; items.len()],
            }
        }
        None => vec![true; items.len()],
    }
}

/// An event stream, one chunk further.
fn cut(
    stream: &mut Stream,
    engine: &mut Engine,
    host: &mut dyn Host,
    body_size: usize,
    end_of_stream: bool,
) -> Step {
    let Answer::Cutting(mut cutting) = std::mem::replace(&mut stream.answer, Answer::Pass) else {
        return Step::Continue;
    };
    let Some(identity) = stream.identity.clone() else {
        let reason = "an answer to work on has no caller".to_owned();
        return fail_cutting(stream, engine, host, &cutting, body_size, reason);
    };
    let max = engine.config.max_response_bytes;
    let outcome = (|| -> Result<Option<usize>, Failure> {
        // The trailers callback has no size: what is buffered is all there is (nothing, when
        // the last chunk went on).
        let buffer = match host.response_body(if body_size == 0 { max } else { body_size }) {
            Ok(buffer) => buffer,
            Err(_) if body_size == 0 => Vec::new(),
            Err(err) => return Err(err.to_string()),
        };
        let fresh = buffer.get(cutting.consumed..).unwrap_or_default();
        let out = feed(&mut cutting, engine, &identity, fresh, end_of_stream)?;
        cutting.out.extend_from_slice(&out);
        let answered = match &cutting.events {
            Events::Cut(filter) => filter.answer().is_some(),
            Events::Worked(_) => true,
        };
        if cutting.head_held && !answered && !end_of_stream {
            if buffer.len() > max {
                return Err(format!("the answer is over max_response_bytes ({max})"));
            }
            cutting.consumed = buffer.len();
            return Ok(None);
        }
        Ok(Some(buffer.len()))
    })();
    match outcome {
        Ok(None) => {
            stream.answer = Answer::Cutting(cutting);
            Step::Pause
        }
        Ok(Some(size)) => {
            if let Events::Cut(filter) = &cutting.events {
                if let (Some(_), false) = (filter.answer(), cutting.audited) {
                    cutting.audited = true;
                    if let Some(PendingAnswer {
                        work: AnswerWork::Cut(kind),
                        ..
                    }) = &cutting.pending
                    {
                        let removed = std::mem::take(&mut cutting.removed);
                        audit_list(stream, engine, host, *kind, removed);
                    }
                }
            }
            let nothing_to_write = size == 0 && cutting.out.is_empty();
            if !nothing_to_write && host.replace_response_body(size, &cutting.out).is_err() {
                let reason = "could not rewrite the event stream".to_owned();
                return fail_cutting(stream, engine, host, &cutting, size, reason);
            }
            cutting.out.clear();
            cutting.consumed = 0;
            cutting.head_held = false;
            stream.answer = Answer::Cutting(cutting);
            Step::Continue
        }
        Err(reason) => {
            let size = host
                .response_body(max)
                .map(|b| b.len())
                .unwrap_or(body_size);
            fail_cutting(stream, engine, host, &cutting, size, reason)
        }
    }
}

/// Feeds fresh bytes of an event stream to its worker; returns what may go downstream now.
fn feed(
    cutting: &mut Cutting,
    engine: &mut Engine,
    identity: &crate::verify::VerifiedToken,
    fresh: &[u8],
    end_of_stream: bool,
) -> Result<Vec<u8>, Failure> {
    match &mut cutting.events {
        Events::Cut(filter) => {
            let dropped = filter.dropped();
            let mut keep = keeper(engine, identity, &mut cutting.removed);
            let keep: &mut Keep<'_> = &mut keep;
            let mut out = filter.feed(fresh, keep).map_err(|e| e.to_string())?;
            if end_of_stream {
                out.extend(filter.finish(keep).map_err(|e| e.to_string())?);
            }
            if filter.dropped() > dropped {
                log::info!(
                    "mcp-mesh-auth: {} response(s) that answer no request of this stream withheld",
                    filter.dropped() - dropped
                );
            }
            Ok(out)
        }
        Events::Worked(splitter) => {
            let Some(pending) = &cutting.pending else {
                return Ok(fresh.to_vec());
            };
            let output = &mut cutting.output;
            let mut out = Vec::with_capacity(fresh.len());
            let mut on_event = |event: sse::Event<'_>| -> Result<(), Failure> {
                output.push(&mut out, &work_event(engine, identity, pending, &event)?);
                Ok(())
            };
            splitter.feed(fresh, &mut on_event)?;
            if end_of_stream {
                splitter.finish(&mut on_event)?;
            }
            Ok(out)
        }
    }
}

/// One complete event of a stream answering a request that is not a list: a message that is
/// not JSON (or names a member twice) is dropped, as is a response to another request or one that
/// carries a list; the answer gets its task work; requests and notifications pass as they came.
fn work_event(
    engine: &Engine,
    identity: &crate::verify::VerifiedToken,
    pending: &PendingAnswer,
    event: &sse::Event<'_>,
) -> Result<Vec<u8>, Failure> {
    let Some(data) = event.data.as_deref() else {
        return Ok(event.raw.to_vec());
    };
    let Ok(mut message) = unique_json::from_slice(data.as_bytes()) else {
        log::info!("mcp-mesh-auth: an event that is not one JSON-RPC message is withheld");
        return Ok(Vec::new());
    };
    if message.get("method").is_some() {
        return Ok(event.raw.to_vec());
    }
    let answers = RequestId::from_request(&pending.request_id)
        .is_some_and(|id| message.get("id").is_some_and(|got| id.matches(got)));
    if let (true, None) = (answers, foreign_list(&message, &pending.work)) {
        if work_tasks(engine, identity, pending, &mut message)? {
            return Ok(sse::replace_data(event.raw, &message.to_string()));
        }
        return Ok(event.raw.to_vec());
    }
    log::info!("mcp-mesh-auth: a response that is not this request's answer is withheld");
    Ok(Vec::new())
}

/// The list member an answer carries that its request did not ask for (a list answer written to
/// another request's stream), if any.
fn foreign_list(message: &Value, work: &AnswerWork) -> Option<&'static str> {
    let result = message.get("result")?.as_object()?;
    [
        "tools",
        "prompts",
        "resources",
        "resourceTemplates",
        "tasks",
    ]
    .into_iter()
    .filter(|key| !(*key == "tasks" && *work == AnswerWork::OwnTasks))
    .find(|key| result.get(*key).is_some_and(Value::is_array))
}

/// Logs, counts and records the cut of one list, once: the answer has passed.
fn audit_list(stream: &Stream, engine: &Engine, host: &mut dyn Host, kind: Kind, removed: Removed) {
    let Some(identity) = &stream.identity else {
        return;
    };
    let audit = Audit {
        caller: Caller::of(identity),
        method: format!("{}/list", kind.list_key()),
        target: String::new(),
        policies: Vec::new(),
        reason: if removed.count > 0 {
            Reason::ListCut
        } else {
            Reason::ListWhole
        },
        detail: String::new(),
        shadow: engine
            .config
            .authorizer
            .as_deref()
            .is_some_and(|authz| authz.mode == CedarMode::Shadow),
        removed: Some(removed),
    };
    host.observe(Observation::Decided(&audit));
    log::info!("mcp-mesh-auth: audit {}", audit.to_json());
}

fn fail_cutting(
    stream: &mut Stream,
    engine: &Engine,
    host: &mut dyn Host,
    cutting: &Cutting,
    size: usize,
    reason: Failure,
) -> Step {
    match &cutting.pending {
        Some(pending) if cutting.head_held => {
            fail(stream, engine, host, pending, true, size, reason)
        }
        Some(pending) => {
            let pending = pending.clone();
            fail_after_head(stream, host, Some(&pending), true, size, reason)
        }
        None => fail_after_head(stream, host, None, true, size, reason),
    }
}

/// A buffered answer, complete: worked on and handed back.
fn whole(stream: &mut Stream, engine: &mut Engine, host: &mut dyn Host) -> Step {
    let Answer::Whole {
        pending,
        error_status,
    } = std::mem::replace(&mut stream.answer, Answer::Pass)
    else {
        return Step::Continue;
    };
    let max = engine.config.max_response_bytes;
    let body = match host.response_body(max.saturating_add(1)) {
        Ok(body) if body.len() > max => {
            let reason = format!("the answer is over max_response_bytes ({max})");
            return fail(stream, engine, host, &pending, false, body.len(), reason);
        }
        Ok(body) => body,
        Err(err) => return fail(stream, engine, host, &pending, false, 0, err.to_string()),
    };
    let Some(identity) = stream.identity.clone() else {
        let reason = "an answer to work on has no caller".to_owned();
        return fail(stream, engine, host, &pending, false, body.len(), reason);
    };
    if error_status && !carries_result(&body) {
        return Step::Continue;
    }
    let mut removed = Removed::default();
    let worked = work_message(engine, &identity, &pending, &body, &mut removed);
    if let (Ok(_), AnswerWork::Cut(kind)) = (&worked, &pending.work) {
        audit_list(stream, engine, host, *kind, removed);
    }
    match worked {
        Ok(None) => Step::Continue,
        Ok(Some(new_body)) => {
            if host.replace_response_body(body.len(), &new_body).is_err() {
                let reason = "could not rewrite the answer".to_owned();
                return fail(stream, engine, host, &pending, false, body.len(), reason);
            }
            Step::Continue
        }
        Err(reason) => fail(stream, engine, host, &pending, false, body.len(), reason),
    }
}

/// Whether an error answer carries a `result` after all (then it is worked on like any answer);
/// a body that is not JSON (an HTML error page) is no list a client would read, while an
/// ambiguous one (a member named twice) is worked on, and fails closed.
fn carries_result(body: &[u8]) -> bool {
    match unique_json::from_slice(body) {
        Ok(Value::Object(object)) => object.contains_key("result"),
        Ok(_) => false,
        Err(err) => err.is_data(),
    }
}

/// The work on one JSON answer; `Ok(None)`: it passes as it came.
fn work_message(
    engine: &mut Engine,
    identity: &crate::verify::VerifiedToken,
    pending: &PendingAnswer,
    body: &[u8],
    removed: &mut Removed,
) -> Result<Option<Vec<u8>>, Failure> {
    if let AnswerWork::Cut(kind) = pending.work {
        let id = RequestId::from_request(&pending.request_id)
            .ok_or_else(|| "the request id is not canonical".to_owned())?;
        let mut keep = keeper(engine, identity, removed);
        let filtered = list_filter::filter_json(body, &id, kind, &mut keep)
            .map_err(|err: FilterError| err.to_string())?;
        return Ok(filtered.body);
    }
    let mut message = unique_json::from_slice(body).map_err(|err| err.to_string())?;
    if let Some(list) = foreign_list(&message, &pending.work) {
        return Err(format!(
            "the answer carries a `{list}` list its request did not ask for"
        ));
    }
    if work_tasks(engine, identity, pending, &mut message)? {
        Ok(Some(message.to_string().into_bytes()))
    } else {
        Ok(None)
    }
}

/// Task work on the answer message: ids sealed to the caller, `tasks/list` cut to theirs.
fn work_tasks(
    engine: &Engine,
    identity: &crate::verify::VerifiedToken,
    pending: &PendingAnswer,
    message: &mut Value,
) -> Result<bool, Failure> {
    if matches!(pending.work, AnswerWork::Cut(_) | AnswerWork::Guard) {
        return Ok(false);
    }
    let key = engine
        .config
        .binding_key
        .as_ref()
        .ok_or_else(|| "no binding key to seal task ids with".to_owned())?;
    let owner = Owner::of(identity).ok_or_else(|| "the caller names no principal".to_owned())?;
    match &pending.work {
        AnswerWork::SealTasks { asked } => {
            tasks::seal_answer(key, owner, message, &pending.request_id, asked.as_deref())
                .map_err(|err| err.to_string())
        }
        AnswerWork::OwnTasks => {
            Ok(tasks::keep_own_tasks(key, owner, message, &pending.request_id) > 0)
        }
        AnswerWork::Cut(_) | AnswerWork::Guard => Ok(false),
    }
}

impl From<sse::EventTooLarge> for Failure {
    fn from(err: sse::EventTooLarge) -> Self {
        err.to_string()
    }
}

/// Fails closed on an answer whose head may still be held here.
fn fail_answer(
    stream: &mut Stream,
    engine: &Engine,
    host: &mut dyn Host,
    body_size: usize,
    reason: Failure,
) -> Step {
    match std::mem::replace(&mut stream.answer, Answer::Pass) {
        Answer::Whole { pending, .. } => {
            fail(stream, engine, host, &pending, false, body_size, reason)
        }
        _ => Step::Continue,
    }
}

/// Fails closed: a 500 while the response head is still held here, else the body becomes the
/// JSON-RPC error (the status is already on its way) and the rest of it is withheld.
fn fail(
    stream: &mut Stream,
    engine: &Engine,
    host: &mut dyn Host,
    pending: &PendingAnswer,
    sse: bool,
    body_size: usize,
    reason: Failure,
) -> Step {
    if engine.config.headers_stop_iteration {
        log::error!("mcp-mesh-auth: an answer could not be checked and is withheld: {reason}");
        let error = error_answer(Some(pending));
        return stream.answer(host, &error);
    }
    fail_after_head(stream, host, Some(pending), sse, body_size, reason)
}

fn fail_after_head(
    stream: &mut Stream,
    host: &mut dyn Host,
    pending: Option<&PendingAnswer>,
    sse: bool,
    body_size: usize,
    reason: Failure,
) -> Step {
    log::error!("mcp-mesh-auth: an answer could not be checked and is withheld: {reason}");
    stream.answer = Answer::Withheld;
    let error = error_answer(pending).body;
    let body = if sse {
        format!("event: message\ndata: {error}\n\n")
    } else {
        error
    };
    // Everything buffered goes, not only what was read: a tail left behind would follow the
    // error to the client uncut.
    let buffered = host
        .response_body(usize::MAX)
        .map_or(body_size, |all| all.len().max(body_size));
    if host
        .replace_response_body(buffered, body.as_bytes())
        .is_err()
    {
        log::error!("mcp-mesh-auth: could not replace a refused answer");
    }
    Step::Continue
}

fn error_answer(pending: Option<&PendingAnswer>) -> response::LocalResponse {
    let message = "the answer could not be checked against the authorization policy";
    let id = pending.map(|p| &p.request_id);
    response::jsonrpc_error(500, id, INTERNAL_ERROR, message)
}

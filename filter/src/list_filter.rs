//! Cutting `tools/list`, `prompts/list` and `resources/list` answers down to what the caller may
//! use, in `application/json` and `text/event-stream` answers alike.
//!
//! The answer is not rebuilt from a parsed tree: only the envelope, the list and each item's name
//! and hints are read, and the refused items are cut out of the original text. Input schemas, the
//! bulk of a tool list, are scanned but never allocated.
//!
//! Only a response (a message without `method`) whose id matches the request by value can be the
//! answer: a server-to-client request that happens to share the id is not. A list cut per caller
//! is marked `"cacheScope": "private"` (MCP 2026-07-28 caching hints, a member of `result`), so
//! that no cache serves one caller's list to another, whether or not something was cut.
//!
//! A member named twice makes an answer ambiguous (which `tools` or `name` would the client
//! believe?), so it fails closed instead of being filtered one way and read the other.

use std::ops::Range;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::jsonrpc::RequestId;
use crate::operation::{Feature, Kind};
use crate::quote::quote;
use crate::sse::{self, EventTooLarge};

/// Why an answer cannot be filtered; the answer is then replaced by an error (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("the answer has both `result` and `error`")]
    ResultAndError,
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    #[error("the answer is not UTF-8")]
    NotUtf8,
    #[error("the answer is ambiguous: {0}")]
    Ambiguous(String),
    #[error("the server sent a JSON-RPC batch ({0}); it must answer with one message at a time")]
    Batch(String),
    #[error("the body is not the answer to request {expected}: it is {got}")]
    NotTheAnswer { expected: String, got: String },
    #[error("the answer to request {0} has neither `result` nor `error`")]
    NoOutcome(String),
    #[error("the answer's `result` is {0}; a list result must be an object")]
    ResultNotObject(String),
    #[error("the answer's `{list}` is {got}; it must be an array")]
    NotAList { list: &'static str, got: String },
    #[error("the stream ended without the answer to request {0}")]
    NoAnswer(String),
    #[error(transparent)]
    EventTooLarge(#[from] EventTooLarge),
}

/// Decides, for the items of one list, which to keep (one flag per item, in order). Each item is
/// given as its head: an object with only its name (or uri) and its annotations.
pub type Keep<'a> = dyn FnMut(Kind, &[Value]) -> Vec<bool> + 'a;

/// How many items of a list answer were shown to the caller, and how many cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListCount {
    pub removed: usize,
    pub kept: usize,
}

/// What filtering made of a list answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The rewritten answer; `None` when it passes as it came (an error answer, or a list already
    /// marked private with nothing to cut).
    pub body: Option<Vec<u8>>,
    pub count: ListCount,
}

/// Filters a JSON answer, which must be the response to `request_id`: anything else (another
/// id, a request, a batch, no JSON) is an error, since the client would otherwise wait for an
/// answer that never passed the filter, or take one that did not.
pub fn filter_json(
    body: &[u8],
    request_id: &RequestId,
    kind: Kind,
    keep: &mut Keep<'_>,
) -> Result<Filtered, FilterError> {
    let text = std::str::from_utf8(body).map_err(|_| FilterError::NotUtf8)?;
    let not_the_answer = |got: String| FilterError::NotTheAnswer {
        expected: request_id.to_string(),
        got,
    };
    match read_message(text)? {
        Message::Response(envelope) if answers(&envelope, request_id) => {
            let cut = cut_answer(text, &envelope, request_id, kind, keep)?;
            Ok(Filtered {
                body: cut.text.map(String::into_bytes),
                count: cut.count,
            })
        }
        Message::Response(envelope) => Err(not_the_answer(match envelope.id.0 {
            Some(id) => format!("the answer to request {}", quote(id.get())),
            None => "a message without `id` or `method`".to_owned(),
        })),
        Message::Call => Err(not_the_answer(
            "a request or notification (it has `method`)".to_owned(),
        )),
        Message::Batch => Err(FilterError::Batch(quote(text))),
        Message::Other(reason) => Err(FilterError::NotJson(reason)),
    }
}

/// Filters an event stream as it arrives.
///
/// Events without data (comments, `id:`, `retry:`, an empty priming `data:`) and requests and
/// notifications (messages with `method`) pass byte for byte and in order; the answer, when one
/// is awaited, passes cut. Every other response is dropped and counted: on a GET stream, or after
/// the answer, a response can only be a replay of an answer the filter did not check (possibly an
/// unfiltered list). Data that is not JSON is dropped too: a lenient client might still read it
/// as an answer. A batch fails the stream.
#[derive(Debug)]
pub struct SseFilter {
    events: sse::Splitter,
    decide: Decide,
    /// The first error; the stream is broken from there on, and every later call repeats it.
    failed: Option<FilterError>,
}

impl SseFilter {
    /// A filter for the stream answering a POST: the response to `request_id` is the list answer
    /// to cut. Events (and incomplete events held back) over `max_event_bytes` are an error.
    pub fn for_answer(request_id: RequestId, kind: Kind, max_event_bytes: usize) -> Self {
        Self::new(Some((request_id, kind)), max_event_bytes)
    }

    /// A filter for a stream that answers no request (a GET stream): requests and notifications
    /// pass, every response is dropped.
    pub fn without_answer(max_event_bytes: usize) -> Self {
        Self::new(None, max_event_bytes)
    }

    fn new(awaited: Option<(RequestId, Kind)>, max_event_bytes: usize) -> Self {
        Self {
            events: sse::Splitter::new(max_event_bytes),
            decide: Decide {
                awaited,
                answer: None,
                dropped: 0,
                output: sse::Output::default(),
            },
            failed: None,
        }
    }

    /// Reads `chunk`; returns what may go downstream now: every event it completes, filtered.
    /// `keep` decides the answer's items (it is not called on a stream without answer).
    pub fn feed(&mut self, chunk: &[u8], keep: &mut Keep<'_>) -> Result<Vec<u8>, FilterError> {
        self.guarded(|events, decide| {
            let mut out = Vec::new();
            events.feed(chunk, |event| decide.event(event, keep, &mut out))?;
            Ok(out)
        })
    }

    /// Reads the end of the stream; returns the last events (a final `\r` may complete one).
    /// An incomplete last event is dropped, as the client drops it. Fails if an answer was
    /// awaited and never came: the client must not wait for it in silence.
    pub fn finish(&mut self, keep: &mut Keep<'_>) -> Result<Vec<u8>, FilterError> {
        self.guarded(|events, decide| {
            let mut out = Vec::new();
            events.finish(|event| decide.event(event, keep, &mut out))?;
            match &decide.awaited {
                Some((request_id, _)) => Err(FilterError::NoAnswer(request_id.to_string())),
                None => Ok(out),
            }
        })
    }

    /// The answer's item counts, once it has passed.
    pub fn answer(&self) -> Option<ListCount> {
        self.decide.answer
    }

    /// How many events were dropped (responses that are not the answer, data that is not JSON).
    pub fn dropped(&self) -> usize {
        self.decide.dropped
    }

    /// The bytes held back until their event completes.
    pub fn held(&self) -> &[u8] {
        self.events.held()
    }

    fn guarded(
        &mut self,
        run: impl FnOnce(&mut sse::Splitter, &mut Decide) -> Result<Vec<u8>, FilterError>,
    ) -> Result<Vec<u8>, FilterError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = run(&mut self.events, &mut self.decide);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }
}

/// What becomes of each event.
#[derive(Debug)]
struct Decide {
    /// The answer still to come, and the list it carries; `None` once it passed, or on a stream
    /// that answers nothing.
    awaited: Option<(RequestId, Kind)>,
    answer: Option<ListCount>,
    dropped: usize,
    output: sse::Output,
}

impl Decide {
    fn event(
        &mut self,
        event: sse::Event<'_>,
        keep: &mut Keep<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), FilterError> {
        let Some(data) = event.data.as_deref().filter(|data| !is_blank(data)) else {
            // Nothing the client would read as a message.
            self.output.push(out, event.raw);
            return Ok(());
        };
        let envelope = match read_message(data)? {
            Message::Call => {
                self.output.push(out, event.raw);
                return Ok(());
            }
            Message::Batch => return Err(FilterError::Batch(quote(data))),
            Message::Other(_) => {
                self.dropped += 1;
                return Ok(());
            }
            Message::Response(envelope) => envelope,
        };
        let awaited = self.awaited.as_ref();
        let Some((request_id, kind)) = awaited.filter(|(id, _)| answers(&envelope, id)) else {
            self.dropped += 1;
            return Ok(());
        };
        let cut = cut_answer(data, &envelope, request_id, *kind, keep)?;
        match cut.text {
            Some(text) => self.output.push(out, &sse::replace_data(event.raw, &text)),
            None => self.output.push(out, event.raw),
        }
        self.answer = Some(cut.count);
        self.awaited = None;
        Ok(())
    }
}

/// JSON's whitespace (not Unicode's: a no-break space is not JSON whitespace).
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

fn is_blank(text: &str) -> bool {
    text.trim_matches(JSON_WHITESPACE).is_empty()
}

/// The members of a JSON-RPC message the filter reads, each as its original text.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Member<'a>,
    #[serde(borrow)]
    method: Member<'a>,
    #[serde(borrow)]
    result: Member<'a>,
    #[serde(borrow)]
    error: Member<'a>,
}

/// The members of a list result the filter reads or rewrites.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ListResult<'a> {
    #[serde(borrow)]
    tools: Member<'a>,
    #[serde(borrow)]
    prompts: Member<'a>,
    #[serde(borrow)]
    resources: Member<'a>,
    #[serde(borrow, rename = "resourceTemplates")]
    resource_templates: Member<'a>,
    #[serde(borrow, rename = "cacheScope")]
    cache_scope: Member<'a>,
}

/// A member's text when the member is there, `null` included (a plain `Option` would read
/// `null` as absent).
#[derive(Default, Clone, Copy)]
struct Member<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Member<'a> {
    fn deserialize<D: Deserializer<'de>>(value: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(value).map(|raw| Self(Some(raw)))
    }
}

/// What an item is decided on.
#[derive(Deserialize)]
struct ItemHead {
    name: Option<Value>,
    uri: Option<Value>,
    #[serde(rename = "uriTemplate")]
    uri_template: Option<Value>,
    annotations: Option<Value>,
}

/// A JSON text as a JSON-RPC message, as far as the filter cares.
enum Message<'a> {
    /// A request or a notification (it has `method`): never an answer.
    Call,
    /// A message without `method`: a response.
    Response(Envelope<'a>),
    /// A JSON array.
    Batch,
    /// Not a JSON object or array (why).
    Other(String),
}

fn read_message(text: &str) -> Result<Message<'_>, FilterError> {
    match text.trim_start_matches(JSON_WHITESPACE).as_bytes().first() {
        Some(b'{') => {}
        Some(b'[') => return Ok(Message::Batch),
        _ => return Ok(Message::Other("not a JSON object".into())),
    }
    let envelope: Envelope<'_> = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(err) => return ambiguous_or(err, |err| Ok(Message::Other(err.to_string()))),
    };
    let Some(method) = envelope.method.0 else {
        return Ok(Message::Response(envelope));
    };
    if envelope.result.0.is_some() || envelope.error.0.is_some() {
        return Err(FilterError::Ambiguous(format!(
            "a message has `method` {} and a `result` or `error`",
            quote(method.get())
        )));
    }
    if !method.get().starts_with('"') {
        return Err(FilterError::Ambiguous(format!(
            "`method` is {}, not a string",
            quote(method.get())
        )));
    }
    Ok(Message::Call)
}

/// Whether a response answers `request_id` (compared by value: `7.0` answers 7, `"7"` does not).
fn answers(envelope: &Envelope<'_>, request_id: &RequestId) -> bool {
    envelope
        .id
        .0
        .and_then(|id| serde_json::from_str::<Value>(id.get()).ok())
        .is_some_and(|id| request_id.matches(&id))
}

/// A well-formed object that still does not deserialize repeats a member.
fn ambiguous_or<T>(
    err: serde_json::Error,
    otherwise: impl FnOnce(serde_json::Error) -> Result<T, FilterError>,
) -> Result<T, FilterError> {
    if err.is_data() {
        Err(FilterError::Ambiguous(err.to_string()))
    } else {
        otherwise(err)
    }
}

fn is_object(text: &str) -> bool {
    text.trim_start_matches(JSON_WHITESPACE).starts_with('{')
}

/// The answer with its list cut down.
struct Cut {
    /// The rewritten answer; `None` when it passes as it came.
    text: Option<String>,
    count: ListCount,
}

/// The `cacheScope` of a list cut per caller.
const PRIVATE: &str = "\"private\"";

/// Cuts the answer `text` (read as `envelope`) to the items `keep` allows and marks it private.
fn cut_answer(
    text: &str,
    envelope: &Envelope<'_>,
    request_id: &RequestId,
    kind: Kind,
    keep: &mut Keep<'_>,
) -> Result<Cut, FilterError> {
    let result = match (envelope.result.0, envelope.error.0) {
        (Some(_), Some(_)) => return Err(FilterError::ResultAndError),
        (Some(result), None) => result,
        // An error lists nothing.
        (None, Some(_)) => {
            return Ok(Cut {
                text: None,
                count: ListCount::default(),
            })
        }
        (None, None) => return Err(FilterError::NoOutcome(request_id.to_string())),
    };
    if !is_object(result.get()) {
        return Err(FilterError::ResultNotObject(quote(result.get())));
    }
    let members: ListResult<'_> = serde_json::from_str(result.get())
        .or_else(|err| ambiguous_or(err, |err| Err(FilterError::NotJson(err.to_string()))))?;
    let list = match kind {
        Kind::Item(Feature::Tool) => members.tools,
        Kind::Item(Feature::Prompt) => members.prompts,
        Kind::Item(Feature::Resource) => members.resources,
        Kind::ResourceTemplate => members.resource_templates,
    };
    let mut edits = Vec::new();
    let mut count = ListCount::default();
    if let Some(list) = list.0 {
        let (kept, removed) = cut_list(list, kind, keep)?;
        count = ListCount {
            removed,
            kept: kept.len(),
        };
        if removed > 0 {
            edits.push((span(text, list.get())?, join(&kept)));
        }
    }
    match members.cache_scope.0 {
        Some(scope) if scope.get() == PRIVATE => {}
        Some(scope) => edits.push((span(text, scope.get())?, PRIVATE.to_owned())),
        None => {
            let open = span(text, result.get())?.start + 1;
            let inside = result.get().get(1..result.get().len().saturating_sub(1));
            let empty = is_blank(inside.unwrap_or_default());
            let comma = if empty { "" } else { "," };
            edits.push((open..open, format!("\"cacheScope\":{PRIVATE}{comma}")));
        }
    }
    Ok(Cut {
        text: (!edits.is_empty()).then(|| apply(text, edits)),
        count,
    })
}

/// The items of `list` that `keep` allows, and how many it refused.
fn cut_list<'a>(
    list: &'a RawValue,
    kind: Kind,
    keep: &mut Keep<'_>,
) -> Result<(Vec<&'a RawValue>, usize), FilterError> {
    if !list.get().starts_with('[') {
        return Err(FilterError::NotAList {
            list: kind.list_key(),
            got: quote(list.get()),
        });
    }
    let items: Vec<&RawValue> =
        serde_json::from_str(list.get()).map_err(|err| FilterError::NotJson(err.to_string()))?;
    let heads = items
        .iter()
        .map(|item| head(item, kind))
        .collect::<Result<Vec<Value>, FilterError>>()?;
    let flags = keep(kind, &heads);
    let kept: Vec<&RawValue> = items
        .iter()
        .zip(flags.iter().copied().chain(std::iter::repeat(false)))
        .filter_map(|(item, keep)| keep.then_some(*item))
        .collect();
    let removed = items.len() - kept.len();
    Ok((kept, removed))
}

/// An item's name (or uri) and annotations; `null` for an item that is not an object (no
/// policy can allow it).
fn head(item: &RawValue, kind: Kind) -> Result<Value, FilterError> {
    if !is_object(item.get()) {
        return Ok(Value::Null);
    }
    let head: ItemHead = serde_json::from_str(item.get())
        .or_else(|err| ambiguous_or(err, |err| Err(FilterError::NotJson(err.to_string()))))?;
    let mut object = Map::new();
    let id = match kind {
        Kind::Item(Feature::Resource) => head.uri,
        Kind::Item(Feature::Tool | Feature::Prompt) => head.name,
        Kind::ResourceTemplate => head.uri_template,
    };
    if let Some(id) = id {
        object.insert(kind.id_key().to_owned(), id);
    }
    if let Some(annotations) = head.annotations {
        object.insert("annotations".to_owned(), annotations);
    }
    Ok(Value::Object(object))
}

/// Where `part` (a slice of `text`, as serde_json's raw values are) lies in `text`.
fn span(text: &str, part: &str) -> Result<Range<usize>, FilterError> {
    let start = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    let range = start..start.saturating_add(part.len());
    match text.get(range.clone()) {
        Some(found) if std::ptr::eq(found, part) => Ok(range),
        _ => Err(FilterError::NotJson(
            "a member is not inside the answer".into(),
        )),
    }
}

/// A JSON array of `items`.
fn join(items: &[&RawValue]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item.get());
    }
    out.push(']');
    out
}

/// `text` with each range replaced; the ranges do not overlap.
fn apply(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = String::with_capacity(text.len() + 32);
    let mut at = 0;
    for (range, replacement) in edits {
        out.push_str(text.get(at..range.start).unwrap_or_default());
        out.push_str(&replacement);
        at = range.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn only_named(allowed: &'static [&'static str]) -> impl FnMut(Kind, &[Value]) -> Vec<bool> {
        move |feature, items| {
            items
                .iter()
                .map(|item| {
                    item[feature.id_key()]
                        .as_str()
                        .is_some_and(|n| allowed.contains(&n))
                })
                .collect()
        }
    }

    fn int(id: i64) -> RequestId {
        RequestId::Int(id)
    }

    /// `body` as a JSON answer to request `id`, filtered down to the tools named in `allowed`.
    fn filter_tools(
        body: &str,
        id: RequestId,
        allowed: &'static [&'static str],
    ) -> Result<Filtered, FilterError> {
        filter_json(
            body.as_bytes(),
            &id,
            Kind::Item(Feature::Tool),
            &mut only_named(allowed),
        )
    }

    /// The rewritten answer, parsed.
    fn answer_of(filtered: Result<Filtered, FilterError>) -> Value {
        let body = filtered.unwrap().body.expect("a rewritten answer");
        serde_json::from_slice(&body).unwrap()
    }

    fn tools_answer(id: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": {
            "tools": [{"name": "echo"}, {"name": "get-env"}, {"name": "add"}],
            "nextCursor": "page-2"}})
    }

    #[test]
    fn a_json_list_keeps_only_allowed_items_and_the_cursor_and_is_private() {
        let body = tools_answer(json!(5)).to_string();
        let filtered = filter_tools(&body, int(5), &["echo", "add"]).unwrap();
        assert_eq!(
            filtered.count,
            ListCount {
                removed: 1,
                kept: 2
            }
        );
        let answer: Value = serde_json::from_slice(filtered.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            answer["result"],
            json!({"tools": [{"name": "echo"}, {"name": "add"}], "nextCursor": "page-2",
                   "cacheScope": "private"})
        );
    }

    #[test]
    fn resources_are_matched_by_uri() {
        let body = json!({"jsonrpc": "2.0", "id": "r", "result": {"resources": [{"uri": "a://1"}, {"uri": "a://2"}]}});
        let filtered = filter_json(
            body.to_string().as_bytes(),
            &RequestId::Str("r".into()),
            Kind::Item(Feature::Resource),
            &mut only_named(&["a://2"]),
        );
        assert_eq!(
            answer_of(filtered)["result"]["resources"],
            json!([{"uri": "a://2"}])
        );
    }

    #[test]
    fn the_answer_is_found_by_id_value_not_spelling() {
        for spelling in ["7", "7.0", "7e0", "0.7E1"] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{spelling},"result":{{"tools":[{{"name":"rm"}}]}}}}"#
            );
            let answer = answer_of(filter_tools(&body, int(7), &[]));
            assert_eq!(answer["result"]["tools"], json!([]), "{spelling}");
        }
    }

    #[test]
    fn a_body_that_is_not_the_answer_fails_closed() {
        for body in [
            tools_answer(json!(6)).to_string(),
            tools_answer(json!("5")).to_string(),
            r#"{"jsonrpc":"2.0","id":5,"method":"sampling/createMessage","params":{}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","result":{"tools":[]}}"#.to_owned(),
        ] {
            let err = filter_tools(&body, int(5), &[]).unwrap_err();
            assert!(
                matches!(err, FilterError::NotTheAnswer { .. }),
                "{body}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("the body is not the answer to request 5"),
                "{err}"
            );
        }
        let batch = format!("[{}]", tools_answer(json!(5)));
        assert!(matches!(
            filter_tools(&batch, int(5), &[]),
            Err(FilterError::Batch(_))
        ));
        assert!(matches!(
            filter_tools("<html>", int(5), &[]),
            Err(FilterError::NotJson(_))
        ));
        assert_eq!(
            filter_json(
                b"\xff",
                &int(5),
                Kind::Item(Feature::Tool),
                &mut only_named(&[])
            ),
            Err(FilterError::NotUtf8)
        );
    }

    #[test]
    fn result_and_error_together_fail_closed() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}, "error": {"code": 1, "message": "x"}});
        assert_eq!(
            filter_tools(&body.to_string(), int(1), &[]),
            Err(FilterError::ResultAndError)
        );
        let null_result =
            r#"{"jsonrpc":"2.0","id":1,"result":null,"error":{"code":1,"message":"x"}}"#;
        assert_eq!(
            filter_tools(null_result, int(1), &[]),
            Err(FilterError::ResultAndError)
        );
    }

    #[test]
    fn results_that_are_not_list_shaped_fail_closed() {
        for (body, expected) in [
            (
                r#"{"jsonrpc":"2.0","id":1}"#,
                "neither `result` nor `error`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":[{"name":"rm"}]}"#,
                "must be an object",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"rm":{}}}}"#,
                "`tools` is \"{\\\"rm\\\":{}}\"; it must be an array",
            ),
            (r#"{"jsonrpc":"2.0","id":1,"method":5}"#, "not a string"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
                "has `method`",
            ),
        ] {
            let err = filter_tools(body, int(1), &[]).unwrap_err();
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn an_error_answer_passes_unfiltered() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}})
            .to_string();
        assert_eq!(
            filter_tools(&body, int(1), &[]).unwrap().body,
            None,
            "passed as it came"
        );
    }

    #[test]
    fn an_answer_shown_whole_is_only_marked_private() {
        let body = "{ \"jsonrpc\":\"2.0\",\n  \"result\": {\"tools\": [ {\"name\": \"echo\", \"n\": 1.50} ]},\"id\":7 }";
        let filtered = filter_tools(body, int(7), &["echo"]).unwrap();
        assert_eq!(
            filtered.count,
            ListCount {
                removed: 0,
                kept: 1
            }
        );
        assert_eq!(
            String::from_utf8(filtered.body.unwrap()).unwrap(),
            "{ \"jsonrpc\":\"2.0\",\n  \"result\": {\"cacheScope\":\"private\",\"tools\": [ {\"name\": \"echo\", \"n\": 1.50} ]},\"id\":7 }"
        );
    }

    #[test]
    fn cache_scope_is_set_replaced_or_left_when_already_private() {
        let cases = [
            (
                r#"{"id":1,"result":{}}"#,
                Some(r#"{"id":1,"result":{"cacheScope":"private"}}"#),
            ),
            (
                r#"{"id":1,"result":{ }}"#,
                Some(r#"{"id":1,"result":{"cacheScope":"private" }}"#),
            ),
            (
                r#"{"id":1,"result":{"cacheScope":"public","ttlMs":60000,"tools":[]}}"#,
                Some(r#"{"id":1,"result":{"cacheScope":"private","ttlMs":60000,"tools":[]}}"#),
            ),
            (
                r#"{"id":1,"result":{"cacheScope":"private","tools":[]}}"#,
                None,
            ),
        ];
        for (body, expected) in cases {
            let filtered = filter_tools(body, int(1), &[]).unwrap();
            assert_eq!(
                filtered
                    .body
                    .map(|b| String::from_utf8(b).unwrap())
                    .as_deref(),
                expected,
                "{body}"
            );
        }
        let twice = r#"{"id":1,"result":{"cacheScope":"private","cacheScope":"public"}}"#;
        assert!(matches!(
            filter_tools(twice, int(1), &[]),
            Err(FilterError::Ambiguous(_))
        ));
    }

    #[test]
    fn only_the_refused_items_are_cut_from_the_text() {
        let body = r#"{"result":{"nextCursor":"c","tools":[{"name":"rm","inputSchema":{}},{"name":"ls","n":1.50}],"cacheScope":"private"},"id":1,"jsonrpc":"2.0"}"#;
        let filtered = filter_tools(body, int(1), &["ls"]).unwrap();
        assert_eq!(
            String::from_utf8(filtered.body.unwrap()).unwrap(),
            r#"{"result":{"nextCursor":"c","tools":[{"name":"ls","n":1.50}],"cacheScope":"private"},"id":1,"jsonrpc":"2.0"}"#
        );
    }

    #[test]
    fn a_list_or_an_item_name_given_twice_fails_closed() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"rm"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ls","na\u006de":"rm"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{"tools":[]}}"#,
        ] {
            assert!(
                matches!(
                    filter_tools(body, int(1), &["ls"]),
                    Err(FilterError::Ambiguous(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn an_item_that_is_not_an_object_is_cut() {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":["ls",{"name":"ls"}]}}"#;
        assert_eq!(
            answer_of(filter_tools(body, int(1), &["ls"]))["result"]["tools"],
            json!([{"name": "ls"}])
        );
    }

    // ---- event streams ----

    /// `stream` filtered whole (one chunk), for the answer to `id` allowing `allowed`.
    fn filter_stream(
        filter: &mut SseFilter,
        chunks: &[&[u8]],
        allowed: &'static [&'static str],
    ) -> Result<Vec<u8>, FilterError> {
        let mut keep = only_named(allowed);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(filter.feed(chunk, &mut keep)?);
        }
        out.extend(filter.finish(&mut keep)?);
        Ok(out)
    }

    fn answering(id: i64) -> SseFilter {
        SseFilter::for_answer(int(id), Kind::Item(Feature::Tool), 1 << 20)
    }

    fn event(data: &Value) -> String {
        format!("event: message\ndata: {data}\n\n")
    }

    fn progress() -> Value {
        json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}})
    }

    #[test]
    fn in_sse_only_the_answer_event_is_rewritten_and_order_is_kept() {
        let stream = format!(
            "id: 0\ndata:\n\n{}event: message\nid: 9\ndata: {}\n\n{}",
            event(&progress()),
            tools_answer(json!(3)),
            event(&progress()),
        );
        let mut filter = answering(3);
        let out = filter_stream(&mut filter, &[stream.as_bytes()], &["echo"]).unwrap();
        let answer = json!({"jsonrpc": "2.0", "id": 3, "result": {"cacheScope": "private",
            "tools": [{"name": "echo"}], "nextCursor": "page-2"}});
        let expected = format!(
            "id: 0\ndata:\n\n{}event: message\nid: 9\ndata: {}\n\n{}",
            event(&progress()),
            answer,
            event(&progress()),
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(
            filter.answer(),
            Some(ListCount {
                removed: 2,
                kept: 1
            })
        );
    }

    #[test]
    fn a_server_request_sharing_the_id_passes_and_the_answer_is_still_cut() {
        let request =
            json!({"jsonrpc": "2.0", "id": 3, "method": "elicitation/create", "params": {}});
        let stream = format!("{}{}", event(&request), event(&tools_answer(json!(3.0))));
        let mut filter = answering(3);
        let out = filter_stream(&mut filter, &[stream.as_bytes()], &[]).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with(&event(&request)), "{out}");
        assert!(out.contains(r#""tools":[]"#), "{out}");
        assert_eq!(
            filter.answer(),
            Some(ListCount {
                removed: 3,
                kept: 0
            })
        );
    }

    #[test]
    fn other_responses_and_a_second_answer_are_dropped() {
        let stream = format!(
            "{}{}{}{}data: not json\n\n",
            event(&tools_answer(json!(9))),
            event(&tools_answer(json!("3"))),
            event(&tools_answer(json!(3))),
            event(&tools_answer(json!(3))),
        );
        let mut filter = answering(3);
        let out = filter_stream(&mut filter, &[stream.as_bytes()], &["add"]).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches("data:").count(), 1, "{out}");
        assert!(
            out.contains(r#""id":3"#) && out.contains(r#"[{"name":"add"}]"#),
            "{out}"
        );
        assert_eq!(filter.dropped(), 4);
    }

    #[test]
    fn a_stream_that_ends_without_the_answer_fails() {
        let stream = format!("{}data: {}", event(&progress()), tools_answer(json!(3)));
        let mut filter = answering(3);
        let mut keep = only_named(&[]);
        let out = filter.feed(stream.as_bytes(), &mut keep).unwrap();
        assert_eq!(
            out,
            event(&progress()).as_bytes(),
            "the notification went on at once"
        );
        let err = filter.finish(&mut keep).unwrap_err();
        assert_eq!(err, FilterError::NoAnswer("3".into()));
        assert_eq!(
            err.to_string(),
            "the stream ended without the answer to request 3"
        );
        assert_eq!(
            filter.feed(b"\n\n", &mut keep),
            Err(err),
            "a failed stream stays failed"
        );
    }

    #[test]
    fn a_get_stream_passes_messages_to_the_client_and_drops_responses() {
        let ping = json!({"jsonrpc": "2.0", "id": "s1", "method": "ping"});
        let stream = format!(
            ": keep-alive\n\n{}{}{}retry: 500\n\n",
            event(&progress()),
            event(&tools_answer(json!(1))),
            event(&ping),
        );
        let mut filter = SseFilter::without_answer(1 << 20);
        let out = filter_stream(&mut filter, &[stream.as_bytes()], &[]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                ": keep-alive\n\n{}{}retry: 500\n\n",
                event(&progress()),
                event(&ping)
            )
        );
        assert_eq!((filter.dropped(), filter.answer()), (1, None));
    }

    #[test]
    fn a_batch_in_a_stream_fails_closed() {
        let stream = format!("data: [{}]\n\n", tools_answer(json!(3)));
        let err = filter_stream(&mut answering(3), &[stream.as_bytes()], &[]).unwrap_err();
        assert!(matches!(err, FilterError::Batch(_)), "{err:?}");
    }

    #[test]
    fn a_held_back_event_over_the_limit_fails() {
        let mut filter = SseFilter::for_answer(int(3), Kind::Item(Feature::Tool), 64);
        let err = filter_stream(&mut filter, &[&[b'x'; 65][..]], &[]).unwrap_err();
        assert!(matches!(err, FilterError::EventTooLarge(_)), "{err:?}");
    }

    #[test]
    fn a_pretty_printed_sse_answer_stays_one_event() {
        let answer = serde_json::to_string_pretty(&tools_answer(json!(2))).unwrap();
        let data: String = answer
            .lines()
            .map(|line| format!("data: {line}\n"))
            .collect();
        let stream = format!("event: message\n{data}\n");
        let out = filter_stream(&mut answering(2), &[stream.as_bytes()], &["add"]).unwrap();
        let events = events_of(&out);
        assert_eq!(events.len(), 1);
        let answer: Value = serde_json::from_str(events[0].1.as_deref().unwrap()).unwrap();
        assert_eq!(answer["result"]["tools"], json!([{"name": "add"}]));
        assert_eq!(answer["result"]["cacheScope"], "private");
    }

    // ---- the differential property: any split, same output; output = input minus refusals ----

    /// (raw event, data) of every event of `stream`.
    fn events_of(stream: &[u8]) -> Vec<(Vec<u8>, Option<String>)> {
        let mut events = Vec::new();
        let mut splitter = sse::Splitter::new(usize::MAX);
        let mut collect = |event: sse::Event<'_>| -> Result<(), EventTooLarge> {
            events.push((event.raw.to_vec(), event.data.map(|d| d.into_owned())));
            Ok(())
        };
        splitter.feed(stream, &mut collect).unwrap();
        splitter.finish(&mut collect).unwrap();
        events
    }

    /// What should become of one event of a sample.
    enum Fate {
        Pass,
        Drop,
        /// Cut: the answer's data, as JSON, once filtered.
        Cut(Value),
    }

    /// A sample stream: its events with their fate, each written with `eol` line ends.
    fn sample(eol: &str, bom: bool) -> (Vec<u8>, Vec<(Vec<u8>, Fate)>) {
        let tools = json!({"jsonrpc": "2.0", "id": 3.0, "result": {"ttlMs": 5000,
            "cacheScope": "public", "tools": [{"name": "añadir", "description": "日本語"},
            {"name": "rm"}, {"name": "echo", "inputSchema": {"type": "object"}}]}});
        let cut = json!({"jsonrpc": "2.0", "id": 3.0, "result": {"ttlMs": 5000,
            "cacheScope": "private", "tools": [{"name": "añadir", "description": "日本語"},
            {"name": "echo", "inputSchema": {"type": "object"}}]}});
        let pretty = serde_json::to_string_pretty(&tools).unwrap();
        let data_lines: String = pretty.lines().map(|l| format!("data: {l}{eol}")).collect();
        let server_request = json!({"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage"});
        let parts = vec![
            (
                format!(": stream opened{eol}retry: 1000{eol}{eol}"),
                Fate::Pass,
            ),
            (format!("id: 0{eol}data:{eol}{eol}"), Fate::Pass),
            (
                format!("event: message{eol}data: {}{eol}{eol}", progress()),
                Fate::Pass,
            ),
            (format!("data: {server_request}{eol}{eol}"), Fate::Pass),
            (
                format!("data: {}{eol}{eol}", tools_answer(json!(4))),
                Fate::Drop,
            ),
            (
                format!("event: message{eol}id: 7{eol}{data_lines}{eol}"),
                Fate::Cut(cut),
            ),
            (
                format!("data:{}{eol}{eol}", tools_answer(json!(3))),
                Fate::Drop,
            ),
            (
                format!("data: {}{eol}: bye{eol}{eol}", progress()),
                Fate::Pass,
            ),
        ];
        let mut stream = if bom {
            b"\xEF\xBB\xBF".to_vec()
        } else {
            Vec::new()
        };
        let mut fates = Vec::new();
        if bom {
            fates.push((b"\xEF\xBB\xBF".to_vec(), Fate::Pass));
        }
        for (text, fate) in parts {
            stream.extend_from_slice(text.as_bytes());
            fates.push((text.into_bytes(), fate));
        }
        (stream, fates)
    }

    /// The lines of an event other than its `data` lines.
    fn other_lines(raw: &[u8]) -> Vec<Vec<u8>> {
        let text = String::from_utf8_lossy(raw)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        text.split('\n')
            .filter(|line| !line.starts_with("data"))
            .map(|line| line.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn any_split_of_a_stream_gives_the_input_minus_what_was_refused() {
        for (eol, bom) in [("\n", false), ("\r\n", true), ("\r", false)] {
            let (stream, fates) = sample(eol, bom);
            let whole = filter_stream(&mut answering(3), &[&stream], &["añadir", "echo"]).unwrap();

            // The output, read as the client reads it, is the input minus the dropped events.
            let out_events = events_of(&whole);
            let kept: Vec<&(Vec<u8>, Fate)> = fates
                .iter()
                .filter(|(_, fate)| !matches!(fate, Fate::Drop))
                .collect();
            assert_eq!(out_events.len(), kept.len(), "{eol:?}");
            for ((raw, data), (input, fate)) in out_events.iter().zip(kept) {
                match fate {
                    Fate::Pass => assert_eq!(raw, input, "passed byte for byte"),
                    Fate::Drop => unreachable!(),
                    Fate::Cut(expected) => {
                        let got: Value = serde_json::from_str(data.as_deref().unwrap()).unwrap();
                        assert_eq!(&got, expected, "{eol:?}");
                        assert_eq!(other_lines(raw), other_lines(input), "fields kept");
                    }
                }
            }

            // Wherever the stream is cut into two chunks, or three, the output is the same.
            for cut in 0..=stream.len() {
                let (a, b) = stream.split_at(cut);
                let split = filter_stream(&mut answering(3), &[a, b], &["añadir", "echo"]);
                assert_eq!(split.as_ref(), Ok(&whole), "{eol:?} cut at {cut}");
                let third = cut / 3;
                let (a1, a2) = a.split_at(third);
                let three = filter_stream(&mut answering(3), &[a1, a2, b], &["añadir", "echo"]);
                assert_eq!(three.as_ref(), Ok(&whole), "{eol:?} cut at {third}, {cut}");
            }
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(
                filter_stream(&mut answering(3), &bytes, &["añadir", "echo"]),
                Ok(whole.clone()),
                "{eol:?} byte by byte"
            );
        }
    }

    #[test]
    fn a_chunk_costs_its_own_length_not_the_stream_so_far() {
        // Many events, fed one at a time: only the incomplete tail is ever held.
        let mut filter = SseFilter::without_answer(256);
        let mut keep = only_named(&[]);
        let one = event(&progress());
        for _ in 0..10_000 {
            let (a, b) = one.as_bytes().split_at(10);
            assert!(filter.feed(a, &mut keep).unwrap().is_empty());
            assert_eq!(filter.held(), a);
            assert_eq!(filter.feed(b, &mut keep).unwrap(), one.as_bytes());
            assert!(filter.held().is_empty());
        }
    }
}

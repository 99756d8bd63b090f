//! Cutting `tools/list`, `prompts/list` and `resources/list` answers down to what the caller may
//! use, in `application/json` and `text/event-stream` answers alike.
//!
//! The answer is not rebuilt from a parsed tree: only the envelope, the list and each item's name
//! and hints are read, and the refused items are cut out of the original text. Input schemas, the
//! bulk of a tool list, are scanned but never allocated, and an answer the caller may see whole
//! goes back byte for byte.
//!
//! A member named twice makes an answer ambiguous (which `tools` or `name` would the client
//! believe?), so it fails closed instead of being filtered one way and read the other.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::operation::Feature;
use crate::sse;

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
}

/// Decides, for the items of one list, which to keep (one flag per item, in order). Each item is
/// given as its head: an object with only its name (or uri) and its annotations.
pub type Keep<'a> = dyn FnMut(Feature, &[Value]) -> Vec<bool> + 'a;

/// What filtering made of an answer, and how many items it lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The rewritten answer; `None` when nothing was cut and the answer passes as it came.
    pub body: Option<Vec<u8>>,
    pub removed: usize,
    pub kept: usize,
}

/// Filters a JSON answer. `Ok(None)`: not an answer to this request (left untouched).
pub fn filter_json(
    body: &[u8],
    request_id: &Value,
    feature: Feature,
    keep: &mut Keep<'_>,
) -> Result<Option<Filtered>, FilterError> {
    let text = std::str::from_utf8(body).map_err(|_| FilterError::NotUtf8)?;
    let envelope = match envelope(text)? {
        Parsed::Message(envelope) => envelope,
        Parsed::NotAMessage(reason) => return Err(FilterError::NotJson(reason)),
    };
    Ok(
        filter_message(text, &envelope, request_id, feature, keep)?.map(|cut| Filtered {
            body: cut.text.map(String::into_bytes),
            removed: cut.removed,
            kept: cut.kept,
        }),
    )
}

/// What became of an event-stream buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseOutcome {
    /// The answer to this request is not complete in the buffer yet.
    Pending,
    /// The answer was found and filtered; the buffer with it rewritten, everything else as it was.
    Done(Filtered),
}

/// Looks for the event answering `request_id` among the complete events of `buffer`.
pub fn filter_sse(
    buffer: &[u8],
    request_id: &Value,
    feature: Feature,
    keep: &mut Keep<'_>,
) -> Result<SseOutcome, FilterError> {
    let text = std::str::from_utf8(buffer).map_err(|_| FilterError::NotUtf8)?;
    for event in sse::complete_events(text) {
        let Some(data) = event.data.as_deref().filter(|d| !d.trim().is_empty()) else {
            continue;
        };
        let Parsed::Message(envelope) = envelope(data)? else {
            continue;
        };
        if let Some(cut) = filter_message(data, &envelope, request_id, feature, keep)? {
            let body = cut.text.map(|data| {
                let mut body = String::with_capacity(buffer.len());
                body.push_str(&text[..event.start]);
                body.push_str(&sse::replace_data(&text[event.start..event.end], &data));
                body.push_str(&text[event.end..]);
                body.into_bytes()
            });
            return Ok(SseOutcome::Done(Filtered {
                body,
                removed: cut.removed,
                kept: cut.kept,
            }));
        }
    }
    Ok(SseOutcome::Pending)
}

/// The members of a JSON-RPC message the filter reads, each as its original text.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Member<'a>,
    #[serde(borrow)]
    result: Member<'a>,
    #[serde(borrow)]
    error: Member<'a>,
}

/// The lists a result may carry.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Lists<'a> {
    #[serde(borrow)]
    tools: Member<'a>,
    #[serde(borrow)]
    prompts: Member<'a>,
    #[serde(borrow)]
    resources: Member<'a>,
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
    annotations: Option<Value>,
}

enum Parsed<'a> {
    Message(Envelope<'a>),
    /// Not a JSON object (the reason says what it is instead).
    NotAMessage(String),
}

fn envelope(text: &str) -> Result<Parsed<'_>, FilterError> {
    if !is_object(text) {
        return Ok(Parsed::NotAMessage("not a JSON object".into()));
    }
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(envelope) => Ok(Parsed::Message(envelope)),
        Err(err) => ambiguous_or(err, |err| Ok(Parsed::NotAMessage(err.to_string()))),
    }
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
    text.trim_start().starts_with('{')
}

/// A message with its list cut down.
struct Cut {
    /// The message with the refused items cut out; `None` when none was refused.
    text: Option<String>,
    removed: usize,
    kept: usize,
}

/// Filters one JSON-RPC message if it answers `request_id` with a list; `None` when the message
/// is not that answer.
fn filter_message(
    text: &str,
    envelope: &Envelope<'_>,
    request_id: &Value,
    feature: Feature,
    keep: &mut Keep<'_>,
) -> Result<Option<Cut>, FilterError> {
    let same_id = envelope
        .id
        .0
        .and_then(|id| serde_json::from_str::<Value>(id.get()).ok())
        .is_some_and(|id| &id == request_id);
    if !same_id {
        return Ok(None);
    }
    let unchanged = || {
        Ok(Some(Cut {
            text: None,
            removed: 0,
            kept: 0,
        }))
    };
    let result = match (envelope.result.0, envelope.error.0) {
        (Some(_), Some(_)) => return Err(FilterError::ResultAndError),
        (None, _) => return unchanged(),
        (Some(result), None) => result,
    };
    let Some(list) = list_of(result, feature)? else {
        return unchanged();
    };
    let items: Vec<&RawValue> =
        serde_json::from_str(list.get()).map_err(|err| FilterError::NotJson(err.to_string()))?;
    let heads = items
        .iter()
        .map(|item| head(item, feature))
        .collect::<Result<Vec<Value>, FilterError>>()?;
    let flags = keep(feature, &heads);
    let kept: Vec<&RawValue> = items
        .iter()
        .zip(flags.iter().copied().chain(std::iter::repeat(false)))
        .filter_map(|(item, keep)| keep.then_some(*item))
        .collect();
    let removed = items.len() - kept.len();
    Ok(Some(Cut {
        text: (removed > 0)
            .then(|| splice(text, list.get(), &kept))
            .transpose()?,
        removed,
        kept: kept.len(),
    }))
}

/// The list of `feature` in a result; `None` when the result carries no such array.
fn list_of<'a>(
    result: &'a RawValue,
    feature: Feature,
) -> Result<Option<&'a RawValue>, FilterError> {
    if !is_object(result.get()) {
        return Ok(None);
    }
    let lists: Lists<'a> = serde_json::from_str(result.get())
        .or_else(|err| ambiguous_or(err, |err| Err(FilterError::NotJson(err.to_string()))))?;
    let list = match feature {
        Feature::Tool => lists.tools,
        Feature::Prompt => lists.prompts,
        Feature::Resource => lists.resources,
    };
    Ok(list
        .0
        .filter(|list| list.get().trim_start().starts_with('[')))
}

/// An item's name (or uri) and annotations; `null` for an item that is not an object (no
/// policy can allow it).
fn head(item: &RawValue, feature: Feature) -> Result<Value, FilterError> {
    if !is_object(item.get()) {
        return Ok(Value::Null);
    }
    let head: ItemHead = serde_json::from_str(item.get())
        .or_else(|err| ambiguous_or(err, |err| Err(FilterError::NotJson(err.to_string()))))?;
    let mut object = Map::new();
    let id = match feature {
        Feature::Resource => head.uri,
        Feature::Tool | Feature::Prompt => head.name,
    };
    if let Some(id) = id {
        object.insert(feature.id_key().to_owned(), id);
    }
    if let Some(annotations) = head.annotations {
        object.insert("annotations".to_owned(), annotations);
    }
    Ok(Value::Object(object))
}

/// `text` with the array `list` (a slice of it) replaced by one holding only `kept`.
fn splice(text: &str, list: &str, kept: &[&RawValue]) -> Result<String, FilterError> {
    let start = (list.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    let end = start.saturating_add(list.len());
    let (Some(before), Some(after)) = (text.get(..start), text.get(end..)) else {
        return Err(FilterError::NotJson(
            "the list is not inside the answer".into(),
        ));
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(before);
    out.push('[');
    for (i, item) in kept.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item.get());
    }
    out.push(']');
    out.push_str(after);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn only_named(allowed: &'static [&'static str]) -> impl FnMut(Feature, &[Value]) -> Vec<bool> {
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

    /// `body` as a JSON answer to request `id`, filtered down to the tools named in `allowed`.
    fn filter_tools(
        body: &str,
        id: Value,
        allowed: &'static [&'static str],
    ) -> Result<Option<Filtered>, FilterError> {
        filter_json(
            body.as_bytes(),
            &id,
            Feature::Tool,
            &mut only_named(allowed),
        )
    }

    /// The rewritten answer, parsed.
    fn answer_of(filtered: Result<Option<Filtered>, FilterError>) -> Value {
        let body = filtered.unwrap().unwrap().body.expect("a rewritten answer");
        serde_json::from_slice(&body).unwrap()
    }

    /// The event-stream buffer `buffer`, filtered down to the tools named in `allowed`.
    fn filter_tool_events(buffer: &str, id: Value, allowed: &'static [&'static str]) -> String {
        let outcome = filter_sse(
            buffer.as_bytes(),
            &id,
            Feature::Tool,
            &mut only_named(allowed),
        );
        let Ok(SseOutcome::Done(filtered)) = outcome else {
            panic!("expected the answer to be found: {outcome:?}")
        };
        String::from_utf8(filtered.body.expect("a rewritten buffer")).unwrap()
    }

    fn tools_answer(id: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": {
            "tools": [{"name": "echo"}, {"name": "get-env"}, {"name": "add"}],
            "nextCursor": "page-2"}})
    }

    #[test]
    fn a_json_list_keeps_only_allowed_items_and_the_cursor() {
        let body = tools_answer(json!(5)).to_string();
        let filtered = filter_tools(&body, json!(5), &["echo", "add"])
            .unwrap()
            .unwrap();
        assert_eq!((filtered.removed, filtered.kept), (1, 2));
        let answer: Value = serde_json::from_slice(filtered.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            answer["result"]["tools"],
            json!([{"name": "echo"}, {"name": "add"}])
        );
        assert_eq!(answer["result"]["nextCursor"], "page-2");
    }

    #[test]
    fn resources_are_matched_by_uri() {
        let body = json!({"jsonrpc": "2.0", "id": "r", "result": {"resources": [{"uri": "a://1"}, {"uri": "a://2"}]}});
        let filtered = filter_json(
            body.to_string().as_bytes(),
            &json!("r"),
            Feature::Resource,
            &mut only_named(&["a://2"]),
        );
        assert_eq!(
            answer_of(filtered)["result"]["resources"],
            json!([{"uri": "a://2"}])
        );
    }

    #[test]
    fn an_answer_to_another_request_is_left_alone() {
        let body = tools_answer(json!(6)).to_string();
        assert_eq!(filter_tools(&body, json!(5), &[]).unwrap(), None);
    }

    #[test]
    fn result_and_error_together_fail_closed() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}, "error": {"code": 1, "message": "x"}});
        assert_eq!(
            filter_tools(&body.to_string(), json!(1), &[]),
            Err(FilterError::ResultAndError)
        );
        let null_result =
            r#"{"jsonrpc":"2.0","id":1,"result":null,"error":{"code":1,"message":"x"}}"#;
        assert_eq!(
            filter_tools(null_result, json!(1), &[]),
            Err(FilterError::ResultAndError)
        );
    }

    #[test]
    fn an_error_answer_passes_unfiltered() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}})
            .to_string();
        let filtered = filter_tools(&body, json!(1), &[]).unwrap().unwrap();
        assert_eq!(filtered.body, None, "passed as it came");
    }

    #[test]
    fn garbage_is_not_json() {
        assert!(matches!(
            filter_tools("<html>", json!(1), &[]),
            Err(FilterError::NotJson(_))
        ));
    }

    #[test]
    fn an_answer_shown_whole_goes_back_byte_for_byte() {
        let body = "{ \"jsonrpc\":\"2.0\",\n  \"result\": {\"tools\": [ {\"name\": \"echo\", \"n\": 1.50} ]},\"id\":7 }";
        let filtered = filter_tools(body, json!(7), &["echo"]).unwrap().unwrap();
        assert_eq!(filtered.body, None, "passed as it came, not rewritten");
        assert_eq!((filtered.removed, filtered.kept), (0, 1));
    }

    #[test]
    fn only_the_refused_items_are_cut_from_the_text() {
        let body = r#"{"result":{"nextCursor":"c","tools":[{"name":"rm","inputSchema":{}},{"name":"ls","n":1.50}]},"id":1,"jsonrpc":"2.0"}"#;
        let filtered = filter_tools(body, json!(1), &["ls"]).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(filtered.body.unwrap()).unwrap(),
            r#"{"result":{"nextCursor":"c","tools":[{"name":"ls","n":1.50}]},"id":1,"jsonrpc":"2.0"}"#
        );
    }

    #[test]
    fn a_list_or_an_item_name_given_twice_fails_closed() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"rm"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ls","na\u006de":"rm"}]}}"#,
        ] {
            assert!(
                matches!(
                    filter_tools(body, json!(1), &["ls"]),
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
            answer_of(filter_tools(body, json!(1), &["ls"]))["result"]["tools"],
            json!([{"name": "ls"}])
        );
    }

    #[test]
    fn in_sse_only_the_answer_event_is_rewritten_and_order_is_kept() {
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}});
        let buffer = format!(
            "id: 0\ndata:\n\nevent: message\ndata: {progress}\n\nevent: message\nid: 9\ndata: {}\n\nevent: message\ndata: {{\"tail\":1}}\n\n",
            tools_answer(json!(3))
        );
        let text = filter_tool_events(&buffer, json!(3), &["echo"]);
        let events = sse::complete_events(&text);
        assert_eq!(events.len(), 4);
        assert_eq!(
            &text[..events[1].end],
            &buffer[..events[1].end],
            "events before the answer untouched"
        );
        assert!(
            text.ends_with("event: message\ndata: {\"tail\":1}\n\n"),
            "events after it untouched"
        );
        let answer: Value = serde_json::from_str(events[2].data.as_deref().unwrap()).unwrap();
        assert_eq!(answer["result"]["tools"], json!([{"name": "echo"}]));
        assert!(text[events[2].start..events[2].end].starts_with("event: message\nid: 9\n"));
    }

    #[test]
    fn a_pretty_printed_sse_answer_stays_one_event() {
        let answer = serde_json::to_string_pretty(&tools_answer(json!(2))).unwrap();
        let data: String = answer
            .lines()
            .map(|line| format!("data: {line}\n"))
            .collect();
        let text = filter_tool_events(&format!("event: message\n{data}\n"), json!(2), &["add"]);
        let events = sse::complete_events(&text);
        assert_eq!(events.len(), 1);
        let answer: Value = serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
        assert_eq!(answer["result"]["tools"], json!([{"name": "add"}]));
    }

    #[test]
    fn an_incomplete_answer_event_is_pending() {
        let buffer = format!("event: message\ndata: {}", tools_answer(json!(1)));
        assert_eq!(
            filter_sse(
                buffer.as_bytes(),
                &json!(1),
                Feature::Tool,
                &mut only_named(&[])
            )
            .unwrap(),
            SseOutcome::Pending
        );
    }
}

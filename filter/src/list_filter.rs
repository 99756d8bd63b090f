//! Cutting `tools/list`, `prompts/list` and `resources/list` answers down to what the caller may
//! use, in `application/json` and `text/event-stream` answers alike.

use serde_json::Value;

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
}

/// Decides, for the items of one list, which to keep (one flag per item, in order).
pub type Keep<'a> = dyn FnMut(Feature, &[Value]) -> Vec<bool> + 'a;

/// A rewritten answer and how many items it lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    pub body: Vec<u8>,
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
    let mut message: Value =
        serde_json::from_slice(body).map_err(|err| FilterError::NotJson(err.to_string()))?;
    Ok(
        filter_message(&mut message, request_id, feature, keep)?.map(|(removed, kept)| Filtered {
            body: message.to_string().into_bytes(),
            removed,
            kept,
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
        let Ok(mut message) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some((removed, kept)) = filter_message(&mut message, request_id, feature, keep)? {
            let mut body = String::with_capacity(buffer.len());
            body.push_str(&text[..event.start]);
            body.push_str(&sse::replace_data(
                &text[event.start..event.end],
                &message.to_string(),
            ));
            body.push_str(&text[event.end..]);
            return Ok(SseOutcome::Done(Filtered {
                body: body.into_bytes(),
                removed,
                kept,
            }));
        }
    }
    Ok(SseOutcome::Pending)
}

/// Filters one JSON-RPC message in place if it answers `request_id` with a list.
/// Returns `(removed, kept)`; `None` when the message is not that answer.
fn filter_message(
    message: &mut Value,
    request_id: &Value,
    feature: Feature,
    keep: &mut Keep<'_>,
) -> Result<Option<(usize, usize)>, FilterError> {
    let Some(object) = message.as_object_mut() else {
        return Ok(None);
    };
    if object.get("id") != Some(request_id) {
        return Ok(None);
    }
    match (object.contains_key("result"), object.contains_key("error")) {
        (true, true) => return Err(FilterError::ResultAndError),
        (false, _) => return Ok(Some((0, 0))),
        (true, false) => {}
    }
    let items = object
        .get_mut("result")
        .and_then(Value::as_object_mut)
        .and_then(|result| result.get_mut(feature.list_key()))
        .and_then(Value::as_array_mut);
    let Some(items) = items else {
        return Ok(Some((0, 0)));
    };
    let flags = keep(feature, items);
    let before = items.len();
    let mut index = 0;
    items.retain(|_| {
        let keep = flags.get(index).copied().unwrap_or(false);
        index += 1;
        keep
    });
    Ok(Some((before - items.len(), items.len())))
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

    fn tools_answer(id: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": {
            "tools": [{"name": "echo"}, {"name": "get-env"}, {"name": "add"}],
            "nextCursor": "page-2"}})
    }

    #[test]
    fn a_json_list_keeps_only_allowed_items_and_the_cursor() {
        let body = tools_answer(json!(5)).to_string();
        let filtered = filter_json(
            body.as_bytes(),
            &json!(5),
            Feature::Tool,
            &mut only_named(&["echo", "add"]),
        )
        .unwrap()
        .unwrap();
        let answer: Value = serde_json::from_slice(&filtered.body).unwrap();
        assert_eq!(
            answer["result"]["tools"],
            json!([{"name": "echo"}, {"name": "add"}])
        );
        assert_eq!(answer["result"]["nextCursor"], "page-2");
        assert_eq!((filtered.removed, filtered.kept), (1, 2));
    }

    #[test]
    fn resources_are_matched_by_uri() {
        let body = json!({"jsonrpc": "2.0", "id": "r", "result": {"resources": [{"uri": "a://1"}, {"uri": "a://2"}]}});
        let filtered = filter_json(
            body.to_string().as_bytes(),
            &json!("r"),
            Feature::Resource,
            &mut only_named(&["a://2"]),
        )
        .unwrap()
        .unwrap();
        let answer: Value = serde_json::from_slice(&filtered.body).unwrap();
        assert_eq!(answer["result"]["resources"], json!([{"uri": "a://2"}]));
    }

    #[test]
    fn an_answer_to_another_request_is_left_alone() {
        let body = tools_answer(json!(6)).to_string();
        assert_eq!(
            filter_json(
                body.as_bytes(),
                &json!(5),
                Feature::Tool,
                &mut only_named(&[])
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn result_and_error_together_fail_closed() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}, "error": {"code": 1, "message": "x"}});
        assert_eq!(
            filter_json(
                body.to_string().as_bytes(),
                &json!(1),
                Feature::Tool,
                &mut only_named(&[])
            ),
            Err(FilterError::ResultAndError)
        );
    }

    #[test]
    fn an_error_answer_passes_unfiltered() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}})
            .to_string();
        let filtered = filter_json(
            body.as_bytes(),
            &json!(1),
            Feature::Tool,
            &mut only_named(&[]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&filtered.body).unwrap(),
            serde_json::from_str::<Value>(&body).unwrap()
        );
    }

    #[test]
    fn garbage_is_not_json() {
        assert!(matches!(
            filter_json(b"<html>", &json!(1), Feature::Tool, &mut only_named(&[])),
            Err(FilterError::NotJson(_))
        ));
    }

    #[test]
    fn in_sse_only_the_answer_event_is_rewritten_and_order_is_kept() {
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}});
        let buffer = format!(
            "id: 0\ndata:\n\nevent: message\ndata: {progress}\n\nevent: message\nid: 9\ndata: {}\n\nevent: message\ndata: {{\"tail\":1}}\n\n",
            tools_answer(json!(3))
        );
        let SseOutcome::Done(filtered) = filter_sse(
            buffer.as_bytes(),
            &json!(3),
            Feature::Tool,
            &mut only_named(&["echo"]),
        )
        .unwrap() else {
            panic!("expected the answer to be found")
        };
        let text = String::from_utf8(filtered.body).unwrap();
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

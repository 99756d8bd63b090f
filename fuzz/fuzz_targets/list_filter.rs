//! List answers cut to what the caller may see, as one JSON body and as an event stream fed in
//! arbitrary chunks.
//!
//! Input: `[control] [n] [n chunk lengths] body`. `control` picks the list kind (bits 0-1), the
//! request id (bit 2: `1` or `"1"`), whether the stream answers a request (bit 3), the event
//! size limit (bit 4: small or none) and the refused initial (bits 5-7). The keep function
//! refuses every item whose name (or uri) starts with that letter, and every item that is not
//! an object.
//!
//! Checked (differentially, against serde_json reading the input): what passes parses; it is the
//! input minus exactly the refused items, marked private; no refused name is in any list that
//! passes; the stream gives the same bytes whole and in chunks. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_mesh_auth_filter::jsonrpc::RequestId;
use mcp_mesh_auth_filter::list_filter::{filter_json, FilterError, ListCount, SseFilter};
use mcp_mesh_auth_filter::operation::{Feature, Kind};
use mcp_mesh_auth_filter::sse::{Event, EventTooLarge, Splitter};
use serde_json::Value;

const KINDS: [Kind; 4] = [
    Kind::Item(Feature::Tool),
    Kind::Item(Feature::Prompt),
    Kind::Item(Feature::Resource),
    Kind::ResourceTemplate,
];
const BOM: &[u8] = b"\xEF\xBB\xBF";
const INITIALS: [char; 8] = ['a', 'e', 'g', 'p', 's', 'f', 'h', 'r'];

struct Setup {
    kind: Kind,
    request_id: RequestId,
    answers: bool,
    max_event_bytes: usize,
    initial: char,
}

/// What serde_json's `Value` reads of `text`: `Err(true)` where it cannot tell (a number out of
/// `f64` range, which the filter passes as text untouched, or nesting past its recursion
/// limit), `Err(false)` for text that is not JSON.
fn plain(text: &[u8]) -> Result<Value, bool> {
    serde_json::from_slice(text).map_err(|err| {
        let err = err.to_string();
        err.contains("number out of range") || err.contains("recursion limit")
    })
}

fn refused_name(head_id: &Value, initial: char) -> bool {
    head_id.as_str().is_some_and(|name| name.starts_with(initial))
}

/// The policy under test, on the heads the filter hands out.
fn keep_heads(initial: char, kind: Kind, heads: &[Value]) -> Vec<bool> {
    heads
        .iter()
        .map(|head| head.is_object() && !refused_name(&head[kind.id_key()], initial))
        .collect()
}

/// The same policy on an item as serde_json reads it from the input.
fn keeps_item(item: &Value, kind: Kind, initial: char) -> bool {
    item.is_object() && !refused_name(&item[kind.id_key()], initial)
}

/// The answer `input` is expected to become: its list without the refused items, `cacheScope`
/// private; an error answer as it came. Also the expected counts.
fn expected_cut(mut input: Value, kind: Kind, initial: char) -> (Value, ListCount, bool) {
    let object = input.as_object_mut().expect("an accepted answer is an object");
    if !object.contains_key("result") {
        assert!(object.contains_key("error"), "an accepted answer without result or error");
        return (input, ListCount::default(), false);
    }
    let result = object["result"].as_object_mut().expect("an accepted result is an object");
    let mut count = ListCount::default();
    if let Some(list) = result.get_mut(kind.list_key()) {
        let items = list.as_array_mut().expect("an accepted list is an array");
        let before = items.len();
        items.retain(|item| keeps_item(item, kind, initial));
        count = ListCount { removed: before - items.len(), kept: items.len() };
    }
    result.insert("cacheScope".into(), Value::from("private"));
    (input, count, true)
}

/// No item of any list in `answer` carries a refused name.
fn assert_nothing_refused(answer: &Value, kind: Kind, initial: char) {
    let Some(list) = answer.get("result").and_then(|r| r.get(kind.list_key())) else {
        return;
    };
    for item in list.as_array().expect("a list that passed is an array") {
        assert!(keeps_item(item, kind, initial), "refused item {item} passed");
    }
}

fn check_json(setup: &Setup, body: &[u8]) {
    let Setup { kind, request_id, initial, .. } = setup;
    let mut keep = |kind: Kind, heads: &[Value]| keep_heads(*initial, kind, heads);
    let Ok(filtered) = filter_json(body, request_id, *kind, &mut keep) else {
        return;
    };
    let input = match plain(body) {
        Ok(input) => input,
        Err(true) => return,
        Err(false) => panic!("accepted an answer that is not JSON"),
    };
    assert!(request_id.matches(&input["id"]), "accepted the answer to {}", input["id"]);
    assert!(input.get("method").is_none(), "accepted a request as the answer");
    let out_bytes = filtered.body.clone().unwrap_or_else(|| body.to_vec());
    let out = plain(&out_bytes).unwrap_or_else(|_| {
        panic!("filtered answer is not JSON: {}", String::from_utf8_lossy(&out_bytes))
    });
    let (expected, count, is_list) = expected_cut(input.clone(), *kind, *initial);
    assert_eq!(out, expected, "filtered answer differs from the input minus refused items");
    assert_eq!(filtered.count, count);
    if filtered.body.is_none() && is_list {
        // Passed as it came: only when nothing was cut and it was already private.
        assert_eq!(count.removed, 0);
        assert_eq!(input["result"]["cacheScope"], "private");
    }
    assert_nothing_refused(&out, *kind, *initial);
}

/// The chunks `body` is fed in, from the lengths in the input (the rest in one last chunk).
fn chunks<'a>(lengths: &[u8], mut body: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for &len in lengths {
        let len = (len as usize).min(body.len());
        let (head, rest) = body.split_at(len);
        out.push(head);
        body = rest;
    }
    out.push(body);
    out
}

/// One run of the SSE filter: each feed's output, then the first error if any, then `finish`.
struct Run {
    out: Vec<u8>,
    feed_failed: bool,
    finish: Option<Result<Vec<u8>, FilterError>>,
    answer: Option<ListCount>,
    dropped: usize,
}

fn run_sse(setup: &Setup, pieces: &[&[u8]]) -> Run {
    let mut filter = if setup.answers {
        SseFilter::for_answer(setup.request_id.clone(), setup.kind, setup.max_event_bytes)
    } else {
        SseFilter::without_answer(setup.max_event_bytes)
    };
    let initial = setup.initial;
    let answers = setup.answers;
    let mut keep = |kind: Kind, heads: &[Value]| {
        assert!(answers, "keep called on a stream that answers nothing");
        keep_heads(initial, kind, heads)
    };
    let mut out = Vec::new();
    for piece in pieces {
        match filter.feed(piece, &mut keep) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(_) => {
                // Broken from here on: every later call repeats the error.
                assert!(filter.feed(b"\n\n", &mut keep).is_err());
                assert!(filter.finish(&mut keep).is_err());
                return Run { out, feed_failed: true, finish: None, answer: None, dropped: 0 };
            }
        }
    }
    let finish = filter.finish(&mut keep);
    Run {
        out,
        feed_failed: false,
        finish: Some(finish),
        answer: filter.answer(),
        dropped: filter.dropped(),
    }
}

/// The events of `bytes` (a complete stream): those completed by feeding, and those by finishing.
fn events(bytes: &[u8]) -> (Vec<(Vec<u8>, Option<String>)>, Vec<(Vec<u8>, Option<String>)>) {
    let mut fed = Vec::new();
    let mut finished = Vec::new();
    let mut splitter = Splitter::new(usize::MAX);
    let own = |event: Event<'_>| (event.raw.to_vec(), event.data.map(|d| d.into_owned()));
    splitter
        .feed::<EventTooLarge>(bytes, |event| {
            fed.push(own(event));
            Ok(())
        })
        .unwrap();
    splitter
        .finish::<EventTooLarge>(|event| {
            finished.push(own(event));
            Ok(())
        })
        .unwrap();
    (fed, finished)
}

/// The non-empty lines of an event, without their ends.
fn lines(raw: &[u8]) -> Vec<&[u8]> {
    raw.split(|b| *b == b'\n' || *b == b'\r').filter(|line| !line.is_empty()).collect()
}

fn is_blank(data: &str) -> bool {
    data.trim_matches([' ', '\t', '\n', '\r']).is_empty()
}

/// What a correct filter makes of the input's events: `(raw, None)` for an event passed as it
/// came, `(_, Some(answer))` for the answer cut.
fn expected_events(
    setup: &Setup,
    input: impl IntoIterator<Item = (Vec<u8>, Option<String>)>,
    awaited: &mut bool,
    dropped: &mut usize,
    answer: &mut Option<ListCount>,
) -> Option<Vec<(Vec<u8>, Option<Value>)>> {
    let mut out = Vec::new();
    for (raw, data) in input {
        let Some(data) = data.filter(|data| !is_blank(data)) else {
            out.push((raw, None));
            continue;
        };
        let message = match plain(data.as_bytes()) {
            Ok(message) => message,
            Err(true) => return None,
            Err(false) => {
                *dropped += 1;
                continue;
            }
        };
        let Some(object) = message.as_object() else {
            assert!(!message.is_array(), "a batch passed");
            *dropped += 1;
            continue;
        };
        if object.contains_key("method") {
            out.push((raw, None));
            continue;
        }
        if *awaited && setup.request_id.matches(&message["id"]) {
            *awaited = false;
            let (cut, count, _) = expected_cut(message, setup.kind, setup.initial);
            *answer = Some(count);
            out.push((raw, Some(cut)));
        } else {
            *dropped += 1;
        }
    }
    Some(out)
}

fn check_sse(setup: &Setup, lengths: &[u8], body: &[u8]) {
    let whole = run_sse(setup, &[body]);
    let chunked = run_sse(setup, &chunks(lengths, body));
    // Where the stream was split never matters.
    assert_eq!(whole.feed_failed, chunked.feed_failed, "whole vs chunked: one failed");
    if whole.feed_failed {
        return;
    }
    assert_eq!(whole.out, chunked.out, "whole vs chunked: different bytes");
    match (&whole.finish, &chunked.finish) {
        (Some(Ok(a)), Some(Ok(b))) => assert_eq!(a, b, "whole vs chunked: different last events"),
        (Some(Err(a)), Some(Err(b))) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "whole vs chunked: {a} vs {b}"
        ),
        (a, b) => panic!("whole vs chunked: finish {a:?} vs {b:?}"),
    }
    assert_eq!(whole.answer, chunked.answer);
    assert_eq!(whole.dropped, chunked.dropped);

    // What passed, event by event, against what should have.
    let mut passed = whole.out.clone();
    let finished_ok = matches!(whole.finish, Some(Ok(_)));
    if let Some(Ok(last)) = &whole.finish {
        passed.extend_from_slice(last);
    }
    // The client skips a byte-order mark at the start of the stream it gets: one the filter read
    // inside the stream (a line of its own) must not become that start, or the line after it is
    // read by the client but was never read by the filter (regressions/list_filter).
    if passed.starts_with(BOM) && !body.starts_with(BOM) {
        panic!(
            "a byte-order mark inside the stream starts the filtered stream: {:?}",
            String::from_utf8_lossy(&passed)
        );
    }
    let (input_fed, input_finished) = events(body);
    let mut awaited = setup.answers;
    let mut dropped = 0;
    let mut answer = None;
    let Some(mut expected) =
        expected_events(setup, input_fed, &mut awaited, &mut dropped, &mut answer)
    else {
        return;
    };
    if finished_ok {
        let Some(last) =
            expected_events(setup, input_finished, &mut awaited, &mut dropped, &mut answer)
        else {
            return;
        };
        expected.extend(last);
        assert_eq!(whole.answer, answer, "answer counts");
        assert_eq!(whole.dropped, dropped, "dropped events");
        // A stream answering a request only ends well with its answer.
        assert!(!awaited, "the stream ended without the answer, and finish said nothing");
    }
    let (out_fed, out_finished) = events(&passed);
    // Output is complete events only: nothing is left over for `finish`. Events compare by their
    // lines: an event that ends with `\r` and an empty event (`\n`) that follows it once the
    // events between were dropped read as one `\r\n`, which the client sees the same way.
    let out_events: Vec<_> =
        out_fed.into_iter().chain(out_finished).filter(|(raw, _)| !lines(raw).is_empty()).collect();
    expected.retain(|(raw, _)| !lines(raw).is_empty());
    assert_eq!(
        out_events.len(),
        expected.len(),
        "events passed: {:?}",
        String::from_utf8_lossy(&passed)
    );
    for ((raw, data), (expected_raw, expected_answer)) in out_events.iter().zip(&expected) {
        match expected_answer {
            None => assert_eq!(lines(raw), lines(expected_raw), "an event did not pass as it came"),
            Some(cut) => {
                let data = data.as_deref().expect("the answer has data");
                let got = plain(data.as_bytes())
                    .unwrap_or_else(|_| panic!("the cut answer is not JSON: {data}"));
                assert_eq!(&got, cut, "the cut answer differs from the input minus refused");
            }
        }
        // Every message that passed parses, and lists nothing refused.
        if let Some(data) = data.as_deref().filter(|d| !is_blank(d)) {
            let message = plain(data.as_bytes())
                .unwrap_or_else(|_| panic!("an event's data is not JSON: {data}"));
            if message.get("method").is_none() {
                assert_nothing_refused(&message, setup.kind, setup.initial);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (n, rest) = rest.split_first().map_or((0, rest), |(n, rest)| (*n as usize % 16, rest));
    let n = n.min(rest.len());
    let (lengths, body) = rest.split_at(n);
    let setup = Setup {
        kind: KINDS[(control & 3) as usize],
        request_id: if control & 4 == 0 {
            RequestId::Int(1)
        } else {
            RequestId::Str("1".into())
        },
        answers: control & 8 == 0,
        max_event_bytes: if control & 16 == 0 { usize::MAX } else { 64 + 4 * n },
        initial: INITIALS[(control >> 5) as usize],
    };
    check_json(&setup, body);
    check_sse(&setup, lengths, body);
});

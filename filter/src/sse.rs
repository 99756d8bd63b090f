//! Server-sent events, as far as the filter needs them: find the complete events in a buffer,
//! with their byte ranges, and rebuild one event with new data.

/// One complete event of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Byte range of the event in the buffer, its terminating blank line included.
    pub start: usize,
    pub end: usize,
    /// The `data` lines joined with `\n` (`None` when the event has no data line).
    pub data: Option<String>,
}

/// The complete events at the start of `buffer` (an incomplete last event is left out).
pub fn complete_events(buffer: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let mut start = 0;
    let mut data: Option<String> = None;
    let mut has_lines = false;
    for (line, line_end) in lines(buffer) {
        if line.is_empty() {
            if has_lines {
                events.push(Event {
                    start,
                    end: line_end,
                    data: data.take(),
                });
            }
            start = line_end;
            has_lines = false;
            continue;
        }
        has_lines = true;
        if let Some(value) = field_value(line, "data") {
            match &mut data {
                Some(joined) => {
                    joined.push('\n');
                    joined.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    events
}

/// `event` with its data replaced by `data` (one `data:` line per line of it, so that text cut
/// from a pretty-printed answer stays one event), other fields (`event:`, `id:`, `retry:`,
/// comments) kept in place and order.
pub fn replace_data(event: &str, data: &str) -> String {
    let mut out = String::with_capacity(event.len() + data.len());
    let mut data_written = false;
    for (line, _) in lines(event) {
        if line.is_empty() {
            break;
        }
        if field_value(line, "data").is_some() {
            if !data_written {
                for data_line in data.split('\n') {
                    out.push_str("data: ");
                    out.push_str(data_line);
                    out.push('\n');
                }
                data_written = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// `(line without terminator, offset just past its terminator)`, for `\n`, `\r\n` and `\r` endings.
/// A last line without terminator is not yielded: it may still grow.
fn lines(buffer: &str) -> impl Iterator<Item = (&str, usize)> {
    let bytes = buffer.as_bytes();
    let mut position = 0;
    std::iter::from_fn(move || {
        let start = position;
        let offset = bytes[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')?;
        let line_end = start + offset;
        let mut next = line_end + 1;
        if bytes[line_end] == b'\r' {
            match bytes.get(next) {
                Some(b'\n') => next += 1,
                None => return None, // a `\r` at the very end may be half of `\r\n`
                _ => {}
            }
        }
        position = next;
        Some((&buffer[start..line_end], next))
    })
}

fn field_value<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(field)?;
    if rest.is_empty() {
        return Some("");
    }
    let value = rest.strip_prefix(':')?;
    Some(value.strip_prefix(' ').unwrap_or(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_events_and_leaves_the_tail() {
        let buffer = "event: message\nid: 1\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\ndata: partial";
        let events = complete_events(buffer);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(
            &buffer[events[0].start..events[0].end],
            "event: message\nid: 1\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(events[1].data.as_deref(), Some("x\ny"));
    }

    #[test]
    fn crlf_and_cr_line_endings_work() {
        assert_eq!(
            complete_events("data: a\r\n\r\ndata: b\r\rdata: c\r").len(),
            2
        );
    }

    #[test]
    fn an_event_without_data_is_still_an_event() {
        let events = complete_events(": keep-alive\n\n");
        assert_eq!(
            events,
            [Event {
                start: 0,
                end: 14,
                data: None
            }]
        );
    }

    #[test]
    fn a_priming_event_with_empty_data_is_kept_apart() {
        let events = complete_events("id: 0\ndata:\n\nevent: message\ndata: {}\n\n");
        assert_eq!(events[0].data.as_deref(), Some(""));
        assert_eq!(events[1].data.as_deref(), Some("{}"));
    }

    #[test]
    fn replacing_data_keeps_the_other_fields_in_order() {
        let event = "event: message\nid: 7\ndata: {\"old\":\ndata: 1}\nretry: 10\n\n";
        assert_eq!(
            replace_data(event, "{\"new\":2}"),
            "event: message\nid: 7\ndata: {\"new\":2}\nretry: 10\n\n"
        );
    }
}

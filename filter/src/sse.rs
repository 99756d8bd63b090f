//! Server-sent events, read the way a browser's `EventSource` reads them (WHATWG HTML §9.2.6),
//! one chunk at a time.
//!
//! The filter must see an event exactly as the client will: a `data:` line the client joins into
//! the answer but the filter misses (a `\r` line end, a byte-order mark, a field name split across
//! two chunks) would carry an unfiltered list past it. So lines end at `\n`, `\r\n` or `\r`; a
//! leading BOM is skipped; `data` lines are joined with `\n`; an event ends at a blank line, and
//! an event cut off by the end of the stream is never dispatched. Only complete lines are read,
//! so where the chunks were split does not matter.

use std::borrow::Cow;

/// The byte-order mark a client skips at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The start of a stream a filter writes. A client skips a byte-order mark only at the very start
/// of a stream: an event the filter read mid-stream (`\u{FEFF}data: …`, an unknown field that
/// dispatches nothing) would, once the events before it were dropped, begin the output, lose its
/// mark and be read as `data: …`, unfiltered. An empty line first keeps the mark mid-stream.
#[derive(Debug, Default)]
pub struct Output {
    started: bool,
}

impl Output {
    /// Appends an event's bytes to `out`.
    pub fn push(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // The stream's own leading mark is an event of its own (`Event::raw` is the mark alone).
        if !self.started && bytes.starts_with(BOM) && bytes.len() > BOM.len() {
            out.push(b'\n');
        }
        self.started = true;
        out.extend_from_slice(bytes);
    }
}

/// One complete event: its bytes as they came, and its data as the client will dispatch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event's bytes, from its first line to its terminating blank line included (or a
    /// byte-order mark on its own: it dispatches nothing).
    pub raw: &'a [u8],
    /// The `data` lines joined with `\n`, decoded as the client decodes them (invalid UTF-8 as
    /// U+FFFD); `None` when the event has no `data` line, which the client does not dispatch.
    pub data: Option<Cow<'a, str>>,
}

/// An event, or the part of one still held back, is over the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "an event of the stream is over {max} bytes (it starts {start}); raise the limit if events \
     this large are expected"
)]
pub struct EventTooLarge {
    pub max: usize,
    /// The beginning of the event, quoted.
    pub start: String,
}

/// Splits a stream into events as its chunks arrive, holding back only an incomplete last event.
///
/// Each chunk costs time in its own length plus the held-back part it completes: lines are
/// searched once, and a line is read once it is complete.
#[derive(Debug)]
pub struct Splitter {
    /// Held-back bytes: the incomplete event, from its start.
    buf: Vec<u8>,
    /// Where the line being read starts in `buf`.
    line_start: usize,
    /// How far `buf` has been searched for the end of that line.
    searched: usize,
    /// The `data` lines read so far, each followed by `\n` (the spec's data buffer).
    data: Vec<u8>,
    /// Whether a byte-order mark may still come (nothing but its prefix has been seen).
    at_start: bool,
    max_event_bytes: usize,
}

impl Splitter {
    /// A splitter that refuses events (and held-back parts) over `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            line_start: 0,
            searched: 0,
            data: Vec::new(),
            at_start: true,
            max_event_bytes,
        }
    }

    /// Reads `chunk`, handing every event it completes to `on_event`, in order.
    pub fn feed<E: From<EventTooLarge>>(
        &mut self,
        chunk: &[u8],
        on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.buf.extend_from_slice(chunk);
        self.split(false, on_event)
    }

    /// Reads the end of the stream: a last `\r` ends its line. Returns how many bytes of an
    /// incomplete event were left, which the client discards unread.
    pub fn finish<E: From<EventTooLarge>>(
        &mut self,
        on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.split(true, on_event)?;
        let left = self.buf.len();
        *self = Self::new(self.max_event_bytes);
        Ok(left)
    }

    /// The bytes held back, waiting for their event to complete.
    pub fn held(&self) -> &[u8] {
        &self.buf
    }

    fn split<E: From<EventTooLarge>>(
        &mut self,
        at_eof: bool,
        mut on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.at_start {
            if !at_eof && self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(());
            }
            self.at_start = false;
            if self.buf.starts_with(BOM) {
                on_event(Event {
                    raw: BOM,
                    data: None,
                })?;
                // Nothing has been searched yet: only `buf` moves.
                self.buf.drain(..BOM.len());
            }
        }
        // Where the event being read starts; events before it are dispatched.
        let mut event_start = 0;
        let result = loop {
            let (end, next) = match line_end(&self.buf, self.searched, at_eof) {
                LineEnd::Found { end, next } => (end, next),
                LineEnd::Incomplete { searched } => {
                    self.searched = searched;
                    break Ok(());
                }
            };
            let line = &self.buf[self.line_start..end];
            self.line_start = next;
            self.searched = next;
            if !line.is_empty() {
                if let Some((b"data", value)) = field(line) {
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                }
                continue;
            }
            let raw = &self.buf[event_start..next];
            event_start = next;
            if raw.len() > self.max_event_bytes {
                break Err(self.too_large(raw).into());
            }
            // The spec's dispatch: no data buffer, no event; else without its last `\n`.
            let data = self
                .data
                .split_last()
                .map(|(_, joined)| String::from_utf8_lossy(joined));
            let dispatched = on_event(Event { raw, data });
            self.data.clear();
            if let Err(err) = dispatched {
                break Err(err);
            }
        };
        self.consume(event_start);
        result?;
        if self.buf.len() > self.max_event_bytes {
            return Err(self.too_large(&self.buf).into());
        }
        Ok(())
    }

    /// Forgets the first `count` bytes of `buf` (dispatched events).
    fn consume(&mut self, count: usize) {
        self.buf.drain(..count);
        self.line_start -= count;
        self.searched -= count;
    }

    fn too_large(&self, event: &[u8]) -> EventTooLarge {
        EventTooLarge {
            max: self.max_event_bytes,
            start: crate::quote::quote_bytes(event),
        }
    }
}

enum LineEnd {
    /// The line ends at `end`; the next starts at `next` (past `\n`, `\r\n` or `\r`).
    Found { end: usize, next: usize },
    /// No line end yet; searching may resume at `searched`.
    Incomplete { searched: usize },
}

/// The end of the line in `bytes` searched from `from`. A `\r` as the last byte may be half of
/// `\r\n`, so it ends a line only at the end of the stream.
fn line_end(bytes: &[u8], from: usize, at_eof: bool) -> LineEnd {
    let rest = bytes.get(from..).unwrap_or_default();
    let Some(offset) = rest.iter().position(|b| matches!(b, b'\n' | b'\r')) else {
        return LineEnd::Incomplete {
            searched: bytes.len(),
        };
    };
    let end = from + offset;
    let next = match (bytes[end], bytes.get(end + 1)) {
        (b'\r', Some(b'\n')) => end + 2,
        (b'\r', None) if !at_eof => return LineEnd::Incomplete { searched: end },
        _ => end + 1,
    };
    LineEnd::Found { end, next }
}

/// A line's field name and value (one leading space dropped); `None` for a comment.
fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    if line.first() == Some(&b':') {
        return None;
    }
    Some(match line.iter().position(|b| *b == b':') {
        Some(colon) => {
            let value = &line[colon + 1..];
            (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[][..]),
    })
}

/// `event` (complete, as `Event::raw`) with its data replaced by `data`: one `data:` line per
/// line of it where the first `data` line was, so that text cut from a pretty-printed answer stays
/// one event; every other line (`event:`, `id:`, `retry:`, comments) kept as it came, in place.
pub fn replace_data(event: &[u8], data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + data.len());
    let mut data_written = false;
    let mut start = 0;
    while let LineEnd::Found { end, next } = line_end(event, start, true) {
        let line = &event[start..end];
        let whole_line = &event[start..next];
        start = next;
        if !matches!(field(line), Some((b"data", _))) {
            out.extend_from_slice(whole_line);
            continue;
        }
        if !data_written {
            for data_line in data.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(data_line.as_bytes());
                out.push(b'\n');
            }
            data_written = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_read_mid_stream_never_starts_the_output() {
        let mut out = Vec::new();
        let mut output = Output::default();
        output.push(&mut out, b"\xEF\xBB\xBFdata: x\n\n");
        output.push(&mut out, b"\xEF\xBB\xBFdata: y\n\n");
        assert_eq!(out, b"\n\xEF\xBB\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n");
        let (mut out, mut output) = (Vec::new(), Output::default());
        output.push(&mut out, BOM);
        output.push(&mut out, b"data: z\n\n");
        assert_eq!(
            out, b"\xEF\xBB\xBFdata: z\n\n",
            "the stream's own mark stays first"
        );
    }

    /// Events as (raw, data) pairs.
    type Seen = Vec<(Vec<u8>, Option<String>)>;

    /// The events of `stream` fed in `chunks`, then ended, and the bytes left.
    fn split(chunks: &[&[u8]]) -> (Seen, usize) {
        let mut splitter = Splitter::new(1 << 20);
        let mut events = Vec::new();
        let mut collect = |event: Event<'_>| -> Result<(), EventTooLarge> {
            events.push((event.raw.to_vec(), event.data.map(Cow::into_owned)));
            Ok(())
        };
        for chunk in chunks {
            splitter.feed(chunk, &mut collect).unwrap();
        }
        let left = splitter.finish(&mut collect).unwrap();
        (events, left)
    }

    fn data_of(stream: &[u8]) -> Vec<Option<String>> {
        split(&[stream])
            .0
            .into_iter()
            .map(|(_, data)| data)
            .collect()
    }

    #[test]
    fn events_come_whole_with_their_data_joined() {
        let stream = b"event: message\nid: 1\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\ndata: partial";
        let (events, left) = split(&[stream]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].0, b"event: message\nid: 1\ndata: {\"a\":1}\n\n");
        assert_eq!(events[0].1.as_deref(), Some("{\"a\":1}"));
        assert_eq!(events[1].1.as_deref(), Some("x\ny"));
        assert_eq!(
            left,
            b"data: partial".len(),
            "an unterminated event is not dispatched"
        );
    }

    #[test]
    fn lf_crlf_and_cr_all_end_lines() {
        assert_eq!(
            data_of(b"data: a\r\n\r\ndata: b\r\rdata: c\ndata:d\r\n\n"),
            [Some("a".into()), Some("b".into()), Some("c\nd".into())]
        );
    }

    #[test]
    fn a_cr_at_the_end_of_the_stream_ends_the_event() {
        assert_eq!(data_of(b"data: a\r\r"), [Some("a".into())]);
    }

    #[test]
    fn a_field_without_colon_or_space_is_read_as_the_spec_says() {
        assert_eq!(
            data_of(b"data\ndata:x\ndata:  y\n\n"),
            [Some("\nx\n y".into())]
        );
        assert_eq!(data_of(b"datum: x\n\n"), [None], "not a data field");
        assert_eq!(data_of(b": data: x\n\n"), [None], "a comment");
    }

    #[test]
    fn a_byte_order_mark_is_skipped_but_kept() {
        let (events, _) = split(&[b"\xEF\xBB", b"\xBFdata: x\n\n"]);
        assert_eq!(events[0], (BOM.to_vec(), None));
        assert_eq!(events[1], (b"data: x\n\n".to_vec(), Some("x".into())));
        assert_eq!(
            data_of(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"),
            [None, None],
            "one only"
        );
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let stream: &[u8] =
            "\u{feff}: hi\r\nevent: message\r\ndata: {\"é\":1}\r\n\r\nid: 2\rdata: ü\r\r\ndata: z\n\n"
                .as_bytes();
        let whole = split(&[stream]);
        assert_eq!(whole.0.len(), 4, "{whole:?}");
        for cut in 0..=stream.len() {
            assert_eq!(
                split(&[&stream[..cut], &stream[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(split(&bytes), whole, "byte by byte");
    }

    #[test]
    fn invalid_utf8_reads_as_the_replacement_character() {
        assert_eq!(data_of(b"data: a\xffb\n\n"), [Some("a\u{fffd}b".into())]);
    }

    #[test]
    fn an_event_over_the_limit_is_refused_held_or_whole() {
        let mut splitter = Splitter::new(16);
        let ignore = |_: Event<'_>| Ok::<(), EventTooLarge>(());
        assert!(splitter.feed(b"data: 0123456789\n\n", ignore).is_err());
        let mut splitter = Splitter::new(16);
        assert!(splitter.feed(b"data: 012345", ignore).is_ok());
        let err = splitter.feed(b"6789a", ignore).unwrap_err();
        assert_eq!(err.max, 16);
        assert!(err.to_string().contains("\"data: 0123456789a\""), "{err}");
    }

    #[test]
    fn replacing_data_keeps_the_other_lines_in_place() {
        let event = b"event: message\r\nid: 7\r\ndata: {\"old\":\r\ndata: 1}\r\nretry: 10\r\n\r\n";
        assert_eq!(
            replace_data(event, "{\"new\":\n2}"),
            b"event: message\r\nid: 7\r\ndata: {\"new\":\ndata: 2}\nretry: 10\r\n\r\n"
        );
    }
}

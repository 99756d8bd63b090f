//! Quoting untrusted input in error messages.
//!
//! Errors name the bad input so that whoever reads the log can find and fix it, but that input
//! comes from clients, servers and tokens: it is cut short (a megabyte of JSON is not a useful log
//! line) and escaped (a newline in it must not forge a second log line).

/// At most this many characters of the input are quoted.
const MAX_CHARS: usize = 80;

/// `text` as a quoted, escaped string of at most `MAX_CHARS` characters, `…` marking a cut.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// `bytes` quoted as by `quote`, invalid UTF-8 shown as U+FFFD.
pub fn quote_bytes(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(MAX_CHARS * 4)];
    quote(&String::from_utf8_lossy(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole_and_escaped() {
        assert_eq!(quote("7.0"), "\"7.0\"");
        assert_eq!(quote("a\nb\"c"), "\"a\\nb\\\"c\"");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let quoted = quote(&long);
        assert_eq!(quoted, format!("{:?}…", "é".repeat(MAX_CHARS)));
        assert_eq!(quote_bytes(&[b'x'; 1000]).chars().count(), MAX_CHARS + 3);
    }

    #[test]
    fn invalid_utf8_is_shown_not_refused() {
        assert_eq!(quote_bytes(b"a\xffb"), "\"a\u{fffd}b\"");
    }
}

//! The byte formats of the proxy-wasm ABI the adapter speaks without the SDK's wrappers (which
//! panic, and so trap the VM, on any status or input they did not expect): header maps and
//! property paths. Decoding never panics; a malformed map is an error.

/// A header map as the host serialises it: the pair count, each pair's key and value lengths
/// (all `u32` little-endian), then each key and value followed by a NUL.
pub fn decode_map(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let lengths = 4 + index * 8;
        let (key_len, value_len) = (word(lengths)?, word(lengths + 4)?);
        let key = bytes.get(data..data.checked_add(key_len)?)?;
        data = data.checked_add(key_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        pairs.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    Some(pairs)
}

/// A header map in the host's format (see `decode_map`).
pub fn encode_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = pairs
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum::<usize>()
        + 4;
    let mut bytes = Vec::with_capacity(size);
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    bytes.extend_from_slice(&len(pairs.len()));
    for (key, value) in pairs {
        bytes.extend_from_slice(&len(key.len()));
        bytes.extend_from_slice(&len(value.len()));
    }
    for (key, value) in pairs {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// A property path: its parts joined by NUL.
pub fn encode_path(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_survives_the_round_trip() {
        let pairs = [
            (":status", "200"),
            ("content-type", "text/event-stream"),
            ("x", ""),
        ];
        let decoded = decode_map(&encode_map(&pairs)).unwrap();
        let expected: Vec<(String, Vec<u8>)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(decoded, expected);
        assert_eq!(decode_map(&[]), Some(Vec::new()));
    }

    #[test]
    fn a_truncated_or_lying_map_is_an_error_not_a_panic() {
        let bytes = encode_map(&[("authorization", "Bearer x")]);
        for cut in 1..bytes.len() - 1 {
            assert_eq!(decode_map(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut lying = bytes.clone();
        lying[0] = 0xff;
        assert_eq!(decode_map(&lying), None);
    }

    #[test]
    fn a_property_path_is_nul_separated() {
        assert_eq!(encode_path(&["metadata"]), b"metadata");
        assert_eq!(encode_path(&["a", "b"]), b"a\0b");
    }
}

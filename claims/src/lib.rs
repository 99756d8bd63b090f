//! Reading a claim the way operators name it in configuration, shared by the filter (groups and
//! roles for Cedar) and the authorization server (groups, roles and subject from the upstream
//! provider), so that one setting means the same thing on both sides.

use serde_json::{Map, Value};

/// A claim by exact name first (URL-style keys such as `https://example.com/groups` contain
/// dots), else by dot path into nested objects (`realm_access.roles`).
pub fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        json!({
            "groups": ["a"],
            "https://example.com/groups": ["url"],
            "realm_access": {"roles": ["nested"]},
            "flat.with.dots": 1,
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn an_exact_name_wins_even_when_it_holds_dots() {
        assert_eq!(lookup(&claims(), "groups"), Some(&json!(["a"])));
        assert_eq!(
            lookup(&claims(), "https://example.com/groups"),
            Some(&json!(["url"]))
        );
        assert_eq!(lookup(&claims(), "flat.with.dots"), Some(&json!(1)));
    }

    #[test]
    fn a_dot_path_reads_nested_objects() {
        assert_eq!(
            lookup(&claims(), "realm_access.roles"),
            Some(&json!(["nested"]))
        );
        assert_eq!(lookup(&claims(), "realm_access.missing"), None);
        assert_eq!(lookup(&claims(), "groups.0"), None, "no array indexing");
        assert_eq!(lookup(&claims(), ""), None);
    }
}

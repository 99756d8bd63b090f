//! Per-tool required scopes (`tool_scopes: {"delete_*": ["mcp:admin"]}`), checked before Cedar
//! so that a client missing a scope is told which one to ask for (step-up), not just refused.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolScopes {
    rules: Vec<(String, Vec<String>)>,
}

impl ToolScopes {
    pub fn new(rules: BTreeMap<String, Vec<String>>) -> Self {
        Self {
            rules: rules.into_iter().collect(),
        }
    }

    /// Every scope a call of `tool` needs: the union over the patterns it matches.
    pub fn required_for(&self, tool: &str) -> Vec<String> {
        let mut needed: Vec<String> = Vec::new();
        for (pattern, scopes) in &self.rules {
            if glob_match(pattern, tool) {
                for scope in scopes {
                    if !needed.contains(scope) {
                        needed.push(scope.clone());
                    }
                }
            }
        }
        needed
    }
}

/// `*` matches any run of characters (also none); everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_patterns() {
        assert!(glob_match("delete_*", "delete_namespace"));
        assert!(glob_match("delete_*", "delete_"));
        assert!(!glob_match("delete_*", "undelete_x"));
        assert!(glob_match("*_pods", "get_pods"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxc"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(
            !glob_match("ab*ba", "aba"),
            "prefix and suffix may not overlap"
        );
    }

    #[test]
    fn scopes_of_every_matching_pattern_are_required() {
        let scopes = ToolScopes::new(BTreeMap::from([
            ("delete_*".to_owned(), vec!["mcp:admin".to_owned()]),
            ("*".to_owned(), vec!["mcp:tools".to_owned()]),
        ]));
        assert_eq!(
            scopes.required_for("delete_namespace"),
            ["mcp:tools", "mcp:admin"]
        );
        assert_eq!(scopes.required_for("get_pods"), ["mcp:tools"]);
        assert!(ToolScopes::default().required_for("x").is_empty());
    }
}

//! Tool annotations as the server itself declared them in its `tools/list` answers.
//!
//! Policies may read `resource.readOnlyHint` and the like; taking them from the client's request
//! would let a client declare its own destructive call read-only, so only the server's word counts.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::authz::ANNOTATION_HINTS;

/// Enough for any real server set; beyond it the oldest knowledge is dropped wholesale.
const MAX_TOOLS: usize = 10_000;

#[derive(Debug, Default)]
pub struct ToolAnnotations {
    by_tool: HashMap<String, Map<String, Value>>,
}

impl ToolAnnotations {
    /// Remembers the boolean hints of every tool of a `tools/list` answer.
    pub fn learn(&mut self, tools: &[Value]) {
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let hints: Map<String, Value> = tool
                .get("annotations")
                .and_then(Value::as_object)
                .map(|annotations| {
                    ANNOTATION_HINTS
                        .iter()
                        .filter_map(|hint| {
                            Some((
                                hint.to_string(),
                                Value::Bool(annotations.get(*hint)?.as_bool()?),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Clients list on every connect: known tools are the common case.
            if self.by_tool.get(name) == Some(&hints) {
                continue;
            }
            if self.by_tool.len() >= MAX_TOOLS && !self.by_tool.contains_key(name) {
                self.by_tool.clear();
            }
            self.by_tool.insert(name.to_owned(), hints);
        }
    }

    pub fn get(&self, tool: &str) -> Option<&Map<String, Value>> {
        self.by_tool.get(tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_boolean_hints_a_server_declared() {
        let mut cache = ToolAnnotations::default();
        cache.learn(&[
            json!({"name": "ls", "annotations": {"readOnlyHint": true, "title": "List", "destructiveHint": "no"}}),
            json!({"name": "rm", "annotations": {"destructiveHint": true}}),
            json!({"name": "bare"}),
        ]);
        assert_eq!(
            cache.get("ls"),
            Some(&json!({"readOnlyHint": true}).as_object().cloned().unwrap())
        );
        assert_eq!(cache.get("rm").unwrap()["destructiveHint"], true);
        assert!(cache.get("bare").unwrap().is_empty());
        assert!(cache.get("unknown").is_none());
    }

    #[test]
    fn a_later_answer_replaces_what_was_known() {
        let mut cache = ToolAnnotations::default();
        cache.learn(&[json!({"name": "t", "annotations": {"readOnlyHint": true}})]);
        cache.learn(&[json!({"name": "t", "annotations": {"readOnlyHint": false}})]);
        assert_eq!(cache.get("t").unwrap()["readOnlyHint"], false);
    }
}

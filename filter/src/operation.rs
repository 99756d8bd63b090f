//! What an MCP call asks for, in the terms of the Cedar contract (ToolHive's method mapping).

use serde_json::{Map, Value};

/// The three kinds of thing a policy can guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    Tool,
    Prompt,
    Resource,
}

impl Feature {
    /// The Cedar action for using one item.
    pub fn action(self) -> &'static str {
        match self {
            Self::Tool => "call_tool",
            Self::Prompt => "get_prompt",
            Self::Resource => "read_resource",
        }
    }

    /// The Cedar entity type of an item.
    pub fn entity_type(self) -> &'static str {
        match self {
            Self::Tool => "Tool",
            Self::Prompt => "Prompt",
            Self::Resource => "Resource",
        }
    }

    /// The `operation` attribute, and the word a denial names.
    pub fn operation(self) -> &'static str {
        match self {
            Self::Tool => "call",
            Self::Prompt => "get",
            Self::Resource => "read",
        }
    }

    /// The `feature` attribute.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Prompt => "prompt",
            Self::Resource => "resource",
        }
    }

    /// The array a `*/list` result carries its items in.
    pub fn list_key(self) -> &'static str {
        match self {
            Self::Tool => "tools",
            Self::Prompt => "prompts",
            Self::Resource => "resources",
        }
    }

    /// The field naming an item: `name`, or a resource's `uri`.
    pub fn id_key(self) -> &'static str {
        match self {
            Self::Tool | Self::Prompt => "name",
            Self::Resource => "uri",
        }
    }
}

/// How an MCP method is authorized.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation<'a> {
    /// Lifecycle and utility methods every authenticated caller may use.
    AlwaysAllowed,
    /// A listing: passes, and its answer is filtered item by item.
    List(Feature),
    /// Using one item, decided by Cedar.
    Use {
        feature: Feature,
        target: &'a str,
        arguments: Option<&'a Map<String, Value>>,
    },
    /// A use without its target (`params.name` / `params.uri` missing).
    MissingTarget(Feature),
    /// Any other method: denied.
    Unknown,
}

const ALWAYS_ALLOWED: [&str; 5] = [
    "initialize",
    "ping",
    "completion/complete",
    "logging/setLevel",
    "roots/list",
];

pub fn classify<'a>(method: &str, params: &'a Map<String, Value>) -> Operation<'a> {
    let feature = match method {
        m if ALWAYS_ALLOWED.contains(&m) || m.starts_with("notifications/") => {
            return Operation::AlwaysAllowed
        }
        "tools/list" => return Operation::List(Feature::Tool),
        "prompts/list" => return Operation::List(Feature::Prompt),
        "resources/list" => return Operation::List(Feature::Resource),
        "tools/call" => Feature::Tool,
        "prompts/get" => Feature::Prompt,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Feature::Resource,
        _ => return Operation::Unknown,
    };
    match params.get(feature.id_key()).and_then(Value::as_str) {
        Some(target) => Operation::Use {
            feature,
            target,
            arguments: params.get("arguments").and_then(Value::as_object),
        },
        None => Operation::MissingTarget(feature),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn lifecycle_methods_are_always_allowed() {
        let empty = Map::new();
        for method in [
            "initialize",
            "ping",
            "notifications/initialized",
            "notifications/cancelled",
            "completion/complete",
            "logging/setLevel",
            "roots/list",
        ] {
            assert_eq!(
                classify(method, &empty),
                Operation::AlwaysAllowed,
                "{method}"
            );
        }
    }

    #[test]
    fn lists_are_filtered_not_decided() {
        let empty = Map::new();
        assert_eq!(
            classify("tools/list", &empty),
            Operation::List(Feature::Tool)
        );
        assert_eq!(
            classify("prompts/list", &empty),
            Operation::List(Feature::Prompt)
        );
        assert_eq!(
            classify("resources/list", &empty),
            Operation::List(Feature::Resource)
        );
    }

    #[test]
    fn uses_map_to_their_action_and_target() {
        let call = params(json!({"name": "echo", "arguments": {"message": "hi"}}));
        let Operation::Use {
            feature,
            target,
            arguments,
        } = classify("tools/call", &call)
        else {
            panic!()
        };
        assert_eq!((feature.action(), target), ("call_tool", "echo"));
        assert_eq!(arguments.unwrap()["message"], "hi");
        let read = params(json!({"uri": "file:///a"}));
        for method in [
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
        ] {
            assert!(matches!(
                classify(method, &read),
                Operation::Use {
                    feature: Feature::Resource,
                    target: "file:///a",
                    ..
                }
            ));
        }
        let get = params(json!({"name": "greet"}));
        assert!(matches!(
            classify("prompts/get", &get),
            Operation::Use {
                feature: Feature::Prompt,
                ..
            }
        ));
    }

    #[test]
    fn anything_else_is_denied_by_default() {
        let empty = Map::new();
        for method in [
            "resources/templates/list",
            "sampling/createMessage",
            "tools/delete",
            "custom/x",
        ] {
            assert_eq!(classify(method, &empty), Operation::Unknown, "{method}");
        }
        assert_eq!(
            classify("tools/call", &empty),
            Operation::MissingTarget(Feature::Tool)
        );
    }
}

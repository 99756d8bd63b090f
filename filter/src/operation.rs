//! What an MCP call asks for, in the terms of the Cedar contract (ToolHive's method mapping).
//!
//! The method table: every client-to-server request and notification of MCP 2025-11-25 and
//! 2026-07-28 has one meaning here, so that "denied" always says why — a policy, no policy, or a
//! method the filter does not know. The README's "MCP methods" section is this table in prose.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::uri;

/// The three kinds of item a request uses (calls, gets, reads), each also listed.
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

/// What a Cedar `resource` entity is: an item a request uses, or a resource template, which is
/// only ever listed or completed (`resources/read` names a concrete URI, decided as a `Resource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Item(Feature),
    ResourceTemplate,
}

impl From<Feature> for Kind {
    fn from(feature: Feature) -> Self {
        Self::Item(feature)
    }
}

impl Kind {
    /// The Cedar action: a template is guarded as what it leads to, `read_resource`.
    pub fn action(self) -> &'static str {
        match self {
            Self::Item(feature) => feature.action(),
            Self::ResourceTemplate => Feature::Resource.action(),
        }
    }

    pub fn entity_type(self) -> &'static str {
        match self {
            Self::Item(feature) => feature.entity_type(),
            Self::ResourceTemplate => "ResourceTemplate",
        }
    }

    /// The `operation` attribute, and the word a denial names.
    pub fn operation(self) -> &'static str {
        match self {
            Self::Item(feature) => feature.operation(),
            Self::ResourceTemplate => Feature::Resource.operation(),
        }
    }

    /// The `feature` attribute.
    pub fn name(self) -> &'static str {
        match self {
            Self::Item(feature) => feature.name(),
            Self::ResourceTemplate => "resource_template",
        }
    }

    /// The array a list result carries its items in.
    pub fn list_key(self) -> &'static str {
        match self {
            Self::Item(feature) => feature.list_key(),
            Self::ResourceTemplate => "resourceTemplates",
        }
    }

    /// The field naming an item in a list.
    pub fn id_key(self) -> &'static str {
        match self {
            Self::Item(feature) => feature.id_key(),
            Self::ResourceTemplate => "uriTemplate",
        }
    }
}

/// One thing Cedar must permit.
#[derive(Debug, Clone, PartialEq)]
pub struct Use<'a> {
    pub kind: Kind,
    /// The entity id: a tool or prompt name, a canonical resource URI, a URI template.
    pub target: Cow<'a, str>,
    pub arguments: Option<&'a Map<String, Value>>,
}

/// How an MCP method is decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation<'a> {
    /// Lifecycle, ping, discovery, logging level, notifications: every authenticated caller.
    AlwaysAllowed,
    /// A listing: passes, and its answer is cut to what the caller may use.
    List(Kind),
    /// Decided by Cedar: every use must be permitted (one for a call, one per URI a
    /// `subscriptions/listen` asks updates for, none when it asks for none).
    Authorize(Vec<Use<'a>>),
    /// `tasks/get`, `tasks/result`, `tasks/cancel`: the sealed `params.taskId`, which must be the
    /// caller's own.
    Task(&'a str),
    /// `tasks/list`: passes, and its answer is cut to the caller's own tasks.
    TaskList,
    /// The params do not carry what the method needs (the text says what).
    Invalid(String),
    /// Neither MCP nor the `methods` configuration knows it: denied.
    Unknown,
}

/// Methods that every authenticated caller may use: nothing in them names an item.
const ALWAYS_ALLOWED: [&str; 4] = [
    // 2025-11-25 lifecycle; 2026-07-28 has no handshake but older clients still send it.
    "initialize",
    "ping",
    // 2026-07-28: capabilities and versions, before anything else.
    "server/discover",
    "logging/setLevel",
];

/// The decision for `method` by the MCP method table, then by the `methods` configuration.
pub fn classify<'a>(
    method: &str,
    params: &'a Map<String, Value>,
    extra: &ExtraMethods,
) -> Operation<'a> {
    if let Some(operation) = standard(method, params) {
        return operation;
    }
    match extra.entries.get(method) {
        Some(Extra::Allow) => Operation::AlwaysAllowed,
        Some(Extra::Authorize { feature, path }) => match lookup(params, path) {
            Some(target) => use_of(Kind::Item(*feature), target, None),
            None => Operation::Invalid(format!("{method} needs `params.{}`", path.join("."))),
        },
        None => Operation::Unknown,
    }
}

/// The MCP method table; `None` for a method MCP does not define for a client to send.
fn standard<'a>(method: &str, params: &'a Map<String, Value>) -> Option<Operation<'a>> {
    let needs = |feature: Feature| {
        let key = feature.id_key();
        match params.get(key).and_then(Value::as_str) {
            Some(target) => use_of(
                Kind::Item(feature),
                target,
                params.get("arguments").and_then(Value::as_object),
            ),
            None => Operation::Invalid(format!("{method} needs `params.{key}`")),
        }
    };
    Some(match method {
        m if ALWAYS_ALLOWED.contains(&m) || m.starts_with("notifications/") => {
            Operation::AlwaysAllowed
        }
        "tools/list" => Operation::List(Kind::Item(Feature::Tool)),
        "prompts/list" => Operation::List(Kind::Item(Feature::Prompt)),
        "resources/list" => Operation::List(Kind::Item(Feature::Resource)),
        "resources/templates/list" => Operation::List(Kind::ResourceTemplate),
        "tools/call" => needs(Feature::Tool),
        "prompts/get" => needs(Feature::Prompt),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            needs(Feature::Resource)
        }
        "completion/complete" => completion(params),
        "subscriptions/listen" => listen(params),
        "tasks/get" | "tasks/result" | "tasks/cancel" => {
            match params.get("taskId").and_then(Value::as_str) {
                Some(id) => Operation::Task(id),
                None => Operation::Invalid(format!("{method} needs `params.taskId`")),
            }
        }
        "tasks/list" => Operation::TaskList,
        _ => return None,
    })
}

/// One use of `target`; a resource URI is decided in its canonical spelling.
fn use_of<'a>(
    kind: Kind,
    target: &'a str,
    arguments: Option<&'a Map<String, Value>>,
) -> Operation<'a> {
    let target = if kind == Kind::Item(Feature::Resource) {
        match uri::canonical(target) {
            Ok(canonical) if canonical == target => Cow::Borrowed(target),
            Ok(canonical) => Cow::Owned(canonical),
            Err(err) => return Operation::Invalid(err.to_string()),
        }
    } else {
        Cow::Borrowed(target)
    };
    Operation::Authorize(vec![Use {
        kind,
        target,
        arguments,
    }])
}

/// `completion/complete` completes an argument of a prompt or a resource template: it is
/// decided as getting that prompt or reading that resource, so a forbidden prompt cannot be
/// probed through its completions.
fn completion(params: &Map<String, Value>) -> Operation<'_> {
    let reference = params.get("ref").and_then(Value::as_object);
    let field = |key: &str| reference.and_then(|r| r.get(key)).and_then(Value::as_str);
    match field("type") {
        Some("ref/prompt") => match field("name") {
            Some(name) => use_of(Kind::Item(Feature::Prompt), name, None),
            None => Operation::Invalid("completion/complete needs `params.ref.name`".into()),
        },
        Some("ref/resource") => match field("uri") {
            // `uri` is "the URI or URI template"; a template is named as it is listed.
            Some(template) if template.contains('{') => {
                use_of(Kind::ResourceTemplate, template, None)
            }
            Some(uri) => use_of(Kind::Item(Feature::Resource), uri, None),
            None => Operation::Invalid("completion/complete needs `params.ref.uri`".into()),
        },
        _ => Operation::Invalid(
            "completion/complete needs `params.ref.type` `ref/prompt` or `ref/resource`".into(),
        ),
    }
}

/// 2026-07-28 `subscriptions/listen`: updates of a resource are reading it, so every URI in
/// `notifications.resourceSubscriptions` must be readable (it replaces `resources/subscribe`).
fn listen(params: &Map<String, Value>) -> Operation<'_> {
    let uris = params
        .get("notifications")
        .and_then(|n| n.get("resourceSubscriptions"));
    let Some(uris) = uris else {
        return Operation::Authorize(Vec::new());
    };
    let invalid = || {
        Operation::Invalid(
            "subscriptions/listen needs `params.notifications.resourceSubscriptions` to be an array of URIs"
                .into(),
        )
    };
    let Some(uris) = uris.as_array() else {
        return invalid();
    };
    let mut uses = Vec::with_capacity(uris.len());
    for uri in uris {
        let Some(uri) = uri.as_str() else {
            return invalid();
        };
        match use_of(Kind::Item(Feature::Resource), uri, None) {
            Operation::Authorize(one) => uses.extend(one),
            other => return other,
        }
    }
    Operation::Authorize(uses)
}

fn lookup<'a>(params: &'a Map<String, Value>, path: &[String]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut object = params;
    for key in parents {
        object = object.get(key)?.as_object()?;
    }
    object.get(last)?.as_str()
}

/// Methods the operator added by name (`methods` in the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraMethods {
    entries: BTreeMap<String, Extra>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Extra {
    Allow,
    /// Decided as `feature`'s action on the entity named by the string at `params.<path>`.
    Authorize {
        feature: Feature,
        path: Vec<String>,
    },
}

/// A `methods` entry the filter refuses, quoted, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodConfigError {
    #[error("`methods.\"{0}\"`: `{0}` is an MCP method the filter already decides (see the README's method table); `methods` is for methods it does not know")]
    Standard(String),
    #[error("`methods.\"{method}\"` = `{entry}`: {reason}; write \"allow\" or {{\"authorize\": {{\"action\": \"call_tool\" | \"get_prompt\" | \"read_resource\", \"target\": \"params.<field>\"}}}}")]
    Entry {
        method: String,
        entry: String,
        reason: String,
    },
}

impl ExtraMethods {
    /// Checks the `methods` section: each entry is `"allow"` or an `authorize` naming a
    /// ToolHive action and where in `params` the target's name is.
    pub fn from_config(raw: BTreeMap<String, Value>) -> Result<Self, MethodConfigError> {
        let mut entries = BTreeMap::new();
        let no_params = Map::new();
        for (method, entry) in raw {
            if method.is_empty() || standard(&method, &no_params).is_some() {
                return Err(MethodConfigError::Standard(method));
            }
            let bad = |reason: &str| MethodConfigError::Entry {
                method: method.clone(),
                entry: entry.to_string(),
                reason: reason.to_owned(),
            };
            let extra = match &entry {
                Value::String(word) if word == "allow" => Extra::Allow,
                Value::Object(object) => {
                    let authorize = object
                        .get("authorize")
                        .and_then(Value::as_object)
                        .filter(|_| object.len() == 1)
                        .ok_or_else(|| bad("the only key of an object entry is `authorize`"))?;
                    if authorize.keys().any(|k| k != "action" && k != "target") {
                        return Err(bad("`authorize` takes only `action` and `target`"));
                    }
                    let feature = match authorize.get("action").and_then(Value::as_str) {
                        Some("call_tool") => Feature::Tool,
                        Some("get_prompt") => Feature::Prompt,
                        Some("read_resource") => Feature::Resource,
                        _ => {
                            return Err(bad(
                                "`action` must be call_tool, get_prompt or read_resource",
                            ))
                        }
                    };
                    let path: Vec<String> = authorize
                        .get("target")
                        .and_then(Value::as_str)
                        .and_then(|t| t.strip_prefix("params."))
                        .map(|p| p.split('.').map(str::to_owned).collect())
                        .filter(|p: &Vec<String>| p.iter().all(|k| !k.is_empty()))
                        .ok_or_else(|| {
                            bad("`target` must be a path into the params, such as `params.name`")
                        })?;
                    Extra::Authorize { feature, path }
                }
                _ => return Err(bad("not a method rule")),
            };
            entries.insert(method, extra);
        }
        Ok(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn of(method: &str, value: Value) -> Operation<'static> {
        let params = Box::leak(Box::new(params(value)));
        classify(method, params, &ExtraMethods::default())
    }

    fn one(kind: Kind, target: &str) -> Operation<'static> {
        Operation::Authorize(vec![Use {
            kind,
            target: Cow::Owned(target.to_owned()),
            arguments: None,
        }])
    }

    const TOOL: Kind = Kind::Item(Feature::Tool);
    const PROMPT: Kind = Kind::Item(Feature::Prompt);
    const RESOURCE: Kind = Kind::Item(Feature::Resource);

    #[test]
    fn lifecycle_discovery_and_logging_are_always_allowed() {
        for method in ["initialize", "ping", "server/discover", "logging/setLevel"] {
            assert_eq!(of(method, json!({})), Operation::AlwaysAllowed, "{method}");
        }
    }

    #[test]
    fn client_notifications_are_always_allowed() {
        for method in [
            "notifications/initialized",
            "notifications/cancelled",
            "notifications/progress",
            "notifications/roots/list_changed",
            "notifications/tasks/status",
        ] {
            assert_eq!(of(method, json!({})), Operation::AlwaysAllowed, "{method}");
        }
    }

    #[test]
    fn the_four_lists_are_cut_not_decided() {
        assert_eq!(of("tools/list", json!({})), Operation::List(TOOL));
        assert_eq!(of("prompts/list", json!({})), Operation::List(PROMPT));
        assert_eq!(of("resources/list", json!({})), Operation::List(RESOURCE));
        assert_eq!(
            of("resources/templates/list", json!({})),
            Operation::List(Kind::ResourceTemplate)
        );
    }

    #[test]
    fn tools_call_is_call_tool_on_the_tool_with_its_arguments() {
        let Operation::Authorize(uses) = of(
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "hi"}}),
        ) else {
            panic!()
        };
        assert_eq!(
            (uses[0].kind.action(), &*uses[0].target),
            ("call_tool", "echo")
        );
        assert_eq!(uses[0].arguments.unwrap()["message"], "hi");
    }

    #[test]
    fn prompts_get_is_get_prompt() {
        assert_eq!(
            of("prompts/get", json!({"name": "greet"})),
            one(PROMPT, "greet")
        );
    }

    #[test]
    fn resource_read_subscribe_unsubscribe_are_read_resource_on_the_canonical_uri() {
        for method in [
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
        ] {
            assert_eq!(
                of(method, json!({"uri": "TEST://x"})),
                one(RESOURCE, "test://x"),
                "{method}"
            );
        }
        assert_eq!(
            of("resources/read", json!({"uri": "file:///a/../secret"})),
            one(RESOURCE, "file:///secret")
        );
        assert!(matches!(
            of("resources/read", json!({"uri": "file:///a%zz"})),
            Operation::Invalid(message) if message.contains("file:///a%zz")
        ));
    }

    #[test]
    fn a_use_without_its_target_is_invalid_and_says_which_field() {
        assert_eq!(
            of("tools/call", json!({})),
            Operation::Invalid("tools/call needs `params.name`".into())
        );
        assert_eq!(
            of("resources/read", json!({"name": "x"})),
            Operation::Invalid("resources/read needs `params.uri`".into())
        );
    }

    #[test]
    fn completion_is_decided_on_what_it_completes() {
        assert_eq!(
            of(
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "secret"}, "argument": {"name": "a", "value": ""}})
            ),
            one(PROMPT, "secret")
        );
        assert_eq!(
            of(
                "completion/complete",
                json!({"ref": {"type": "ref/resource", "uri": "file:///{path}"}})
            ),
            one(Kind::ResourceTemplate, "file:///{path}")
        );
        assert_eq!(
            of(
                "completion/complete",
                json!({"ref": {"type": "ref/resource", "uri": "TEST://x"}})
            ),
            one(RESOURCE, "test://x")
        );
        assert!(matches!(
            of("completion/complete", json!({"ref": {"type": "ref/other"}})),
            Operation::Invalid(_)
        ));
    }

    #[test]
    fn subscriptions_listen_must_read_every_resource_it_follows() {
        assert_eq!(
            of(
                "subscriptions/listen",
                json!({"notifications": {"toolsListChanged": true}})
            ),
            Operation::Authorize(vec![])
        );
        let Operation::Authorize(uses) = of(
            "subscriptions/listen",
            json!({"notifications": {"resourceSubscriptions": ["file:///a", "TEST://x"]}}),
        ) else {
            panic!()
        };
        let targets: Vec<&str> = uses.iter().map(|u| &*u.target).collect();
        assert_eq!(targets, ["file:///a", "test://x"]);
        assert!(matches!(
            of(
                "subscriptions/listen",
                json!({"notifications": {"resourceSubscriptions": "file:///a"}})
            ),
            Operation::Invalid(_)
        ));
    }

    #[test]
    fn task_methods_carry_the_presented_task_id() {
        for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
            assert_eq!(
                of(method, json!({"taskId": "b1.m.aWQ"})),
                Operation::Task("b1.m.aWQ"),
                "{method}"
            );
            assert!(matches!(of(method, json!({})), Operation::Invalid(_)));
        }
        assert_eq!(of("tasks/list", json!({})), Operation::TaskList);
    }

    #[test]
    fn server_to_client_requests_and_inventions_are_unknown() {
        for method in [
            "sampling/createMessage",
            "elicitation/create",
            "roots/list",
            "tools/delete",
            "custom/x",
        ] {
            assert_eq!(of(method, json!({})), Operation::Unknown, "{method}");
        }
    }

    fn extra(raw: Value) -> Result<ExtraMethods, MethodConfigError> {
        ExtraMethods::from_config(serde_json::from_value(raw).unwrap())
    }

    #[test]
    fn configured_methods_are_allowed_or_authorized() {
        let extra = extra(json!({
            "x/ping": "allow",
            "x/run": {"authorize": {"action": "call_tool", "target": "params.job.name"}},
        }))
        .unwrap();
        let empty = Map::new();
        assert_eq!(classify("x/ping", &empty, &extra), Operation::AlwaysAllowed);
        let run = params(json!({"job": {"name": "build"}}));
        assert_eq!(classify("x/run", &run, &extra), one(TOOL, "build"));
        assert_eq!(
            classify("x/run", &empty, &extra),
            Operation::Invalid("x/run needs `params.job.name`".into())
        );
        assert_eq!(classify("x/other", &empty, &extra), Operation::Unknown);
    }

    #[test]
    fn bad_method_entries_are_refused_with_the_entry_quoted() {
        assert_eq!(
            extra(json!({"tools/call": "allow"})),
            Err(MethodConfigError::Standard("tools/call".into()))
        );
        for (entry, reason) in [
            (json!("permit"), "not a method rule"),
            (
                json!({"authorize": {"action": "delete", "target": "params.name"}}),
                "`action`",
            ),
            (
                json!({"authorize": {"action": "call_tool", "target": "name"}}),
                "`target`",
            ),
            (
                json!({"authorize": {"action": "call_tool", "target": "params."}}),
                "`target`",
            ),
            (json!({"allow": true}), "`authorize`"),
        ] {
            let err = extra(json!({"x/y": entry.clone()})).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&entry.to_string()), "{text}");
            assert!(text.contains(reason), "{text}");
        }
    }
}

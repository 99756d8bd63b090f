//! A Cedar schema for the filter's entity model (ToolHive's): the entity types, the actions the
//! filter asks, the `claim_*` attributes of the callers and the `arg_*` attributes of the tools.
//!
//! `cedar-policy-mcp-schema-generator` models one Cedar action per tool with the arguments in a
//! nested context record; the filter (and ToolHive) ask `Action::"call_tool"` on `Tool::"<name>"`
//! with flat `arg_<key>` attributes, so the schema is built here from the tools' `inputSchema`.

use std::collections::BTreeMap;

use cedar_policy::SchemaFragment;
use mcp_mesh_auth_filter::authz::ANNOTATION_HINTS;
use mcp_mesh_auth_filter::operation::{Feature, Kind};
use serde_json::{json, Map, Value};

use crate::CliError;

/// A Cedar attribute type, as the filter produces values (`claims::to_cedar`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CedarType {
    String,
    Long,
    Bool,
    Decimal,
    Set(Box<CedarType>),
    Record(BTreeMap<String, Attribute>),
}

/// An attribute: its type and whether every request carries it. A policy may read an optional
/// attribute only after `has`, which strict validation checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub kind: CedarType,
    pub required: bool,
}

impl CedarType {
    /// `String`, `Long`, `Bool`, `decimal`, `Set<…>` as written on the command line.
    pub fn parse(text: &str) -> Result<Self, CliError> {
        let text = text.trim();
        let bad = || {
            CliError::Usage(format!(
            "`{text}` is not a claim type: use String, Long, Bool, decimal or Set<…> (records come from --claims-from)"
        ))
        };
        match text {
            "String" => Ok(Self::String),
            "Long" => Ok(Self::Long),
            "Bool" | "Boolean" => Ok(Self::Bool),
            "decimal" => Ok(Self::Decimal),
            _ => {
                let inner = text
                    .strip_prefix("Set<")
                    .and_then(|rest| rest.strip_suffix('>'))
                    .ok_or_else(bad)?;
                Ok(Self::Set(Box::new(Self::parse(inner)?)))
            }
        }
    }

    /// The type the filter gives a claim value (`None` for `null`, which it drops).
    pub fn of_value(value: &Value) -> Option<Self> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(_) => Self::Bool,
            Value::String(_) => Self::String,
            Value::Number(number) => {
                let integral = number.is_i64()
                    || number
                        .as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.is_finite());
                if integral {
                    Self::Long
                } else {
                    Self::Decimal
                }
            }
            Value::Array(items) => Self::Set(Box::new(
                items
                    .iter()
                    .find_map(Self::of_value)
                    .unwrap_or(Self::String),
            )),
            Value::Object(fields) => Self::Record(
                fields
                    .iter()
                    .filter_map(|(name, value)| {
                        Some((
                            name.clone(),
                            Attribute {
                                kind: Self::of_value(value)?,
                                required: true,
                            },
                        ))
                    })
                    .collect(),
            ),
        })
    }

    fn to_json(&self) -> Value {
        match self {
            Self::String => json!({"type": "String"}),
            Self::Long => json!({"type": "Long"}),
            Self::Bool => json!({"type": "Boolean"}),
            Self::Decimal => json!({"type": "Extension", "name": "decimal"}),
            Self::Set(element) => json!({"type": "Set", "element": element.to_json()}),
            Self::Record(attributes) => record(attributes),
        }
    }
}

fn record(attributes: &BTreeMap<String, Attribute>) -> Value {
    let attributes: Map<String, Value> = attributes
        .iter()
        .map(|(name, attribute)| {
            let mut declared = attribute.kind.to_json();
            declared["required"] = Value::Bool(attribute.required);
            (name.clone(), declared)
        })
        .collect();
    json!({"type": "Record", "attributes": attributes})
}

/// What the schema is generated from.
#[derive(Debug, Default)]
pub struct SchemaInput {
    /// Claim name → type and presence.
    pub claims: BTreeMap<String, Attribute>,
    /// Claims also offered as `claimset_<name>` (the filter's `multi_valued_claims`).
    pub multi_valued: Vec<String>,
    pub group_entity_type: String,
    /// The tools of a `tools/list` answer.
    pub tools: Vec<Value>,
    /// The prompts of a `prompts/list` answer.
    pub prompts: Vec<Value>,
}

/// The schema in Cedar's JSON form, and what could not be declared (for a warning).
pub fn generate(input: &SchemaInput) -> (Value, Vec<String>) {
    let mut warnings = Vec::new();
    let mut claims: BTreeMap<String, Attribute> = BTreeMap::new();
    for (name, attribute) in &input.claims {
        claims.insert(format!("claim_{name}"), attribute.clone());
        if input.multi_valued.contains(name) {
            claims.insert(
                format!("claimset_{name}"),
                Attribute {
                    kind: CedarType::Set(Box::new(CedarType::String)),
                    required: attribute.required,
                },
            );
        }
    }
    // The delegation chain (`claims::delegation_attributes`): present only on delegated tokens.
    claims.insert("actor".to_owned(), optional(CedarType::String));
    claims.insert(
        "actor_chain".to_owned(),
        optional(CedarType::Set(Box::new(CedarType::String))),
    );
    let tool_arguments = tool_arguments(&input.tools, &mut warnings);

    let base = |kind: Kind| {
        let mut attributes = BTreeMap::new();
        for name in ["name", "operation", "feature"] {
            attributes.insert(name.to_owned(), required(CedarType::String));
        }
        if kind != Kind::Item(Feature::Tool) && kind != Kind::Item(Feature::Prompt) {
            attributes.insert(kind.id_key().to_owned(), required(CedarType::String));
        }
        attributes
    };
    let mut tool = base(Feature::Tool.into());
    for hint in ANNOTATION_HINTS {
        tool.insert(hint.to_owned(), optional(CedarType::Bool));
    }
    // Arguments are attributes of the item and of the context alike (`claims::argument_attributes`).
    let with_arguments = |mut item: BTreeMap<String, Attribute>,
                          arguments: BTreeMap<String, Attribute>| {
        item.extend(arguments.clone());
        let mut context = claims.clone();
        context.extend(arguments);
        (item, context)
    };
    let (tool, tool_context) = with_arguments(tool, tool_arguments);
    let (prompt, prompt_context) = with_arguments(
        base(Feature::Prompt.into()),
        prompt_arguments(&input.prompts),
    );

    let group = input.group_entity_type.as_str();
    let server = "MCP";
    let entity = |attributes: &BTreeMap<String, Attribute>| json!({"memberOfTypes": [server], "shape": record(attributes)});
    let item_types = [Kind::Item(Feature::Resource), Kind::ResourceTemplate];
    let mut entity_types = Map::new();
    entity_types.insert(group.to_owned(), json!({"memberOfTypes": [group]}));
    entity_types.insert(server.to_owned(), json!({}));
    entity_types.insert(
        "Client".to_owned(),
        json!({"memberOfTypes": [group], "shape": record(&claims)}),
    );
    entity_types.insert(Feature::Tool.entity_type().to_owned(), entity(&tool));
    entity_types.insert(Feature::Prompt.entity_type().to_owned(), entity(&prompt));
    for kind in item_types {
        entity_types.insert(kind.entity_type().to_owned(), entity(&base(kind)));
    }
    let action = |resources: Vec<&str>, context: &BTreeMap<String, Attribute>| {
        json!({"appliesTo": {"principalTypes": ["Client"], "resourceTypes": resources,
                             "context": record(context)}})
    };
    let actions = json!({
        Feature::Tool.action(): action(vec![Feature::Tool.entity_type()], &tool_context),
        Feature::Prompt.action(): action(vec![Feature::Prompt.entity_type()], &prompt_context),
        Feature::Resource.action(): action(
            vec![Feature::Resource.entity_type(), Kind::ResourceTemplate.entity_type()],
            &claims,
        ),
    });
    (
        json!({"": {"entityTypes": entity_types, "actions": actions}}),
        warnings,
    )
}

/// The schema in Cedar's human syntax.
pub fn to_cedarschema(schema: &Value) -> Result<String, CliError> {
    SchemaFragment::from_json_value(schema.clone())
        .map_err(|err| CliError::Schema(err.to_string()))?
        .to_cedarschema()
        .map(|text| {
            // Cedar qualifies its own types (`__cedar::String`); no type here shadows them.
            format!(
                "// The entity model of mcp-mesh-auth (ToolHive's), from `mcp-mesh-auth schema`.\n{}",
                text.replace("__cedar::", "")
            )
        })
        .map_err(|err| CliError::Schema(err.to_string()))
}

fn required(kind: CedarType) -> Attribute {
    Attribute {
        kind,
        required: true,
    }
}

fn optional(kind: CedarType) -> Attribute {
    Attribute {
        kind,
        required: false,
    }
}

/// Every tool's arguments as the filter offers them (`claims::argument_attributes`): scalars as
/// `arg_<key>`, objects and arrays as `arg_<key>_present`. Optional, since a call may omit any
/// and the attribute set is shared by all tools. A JSON-Schema `number` is declared `Long`: the
/// filter makes every integral number a Long, and a fraction (a `decimal`) then fails the
/// comparison at evaluation time, which denies.
fn tool_arguments(tools: &[Value], warnings: &mut Vec<String>) -> BTreeMap<String, Attribute> {
    let mut declared: BTreeMap<String, (CedarType, String)> = BTreeMap::new();
    let mut conflicting = Vec::new();
    for tool in tools {
        let tool_name = tool.get("name").and_then(Value::as_str).unwrap_or("?");
        let properties = tool
            .pointer("/inputSchema/properties")
            .and_then(Value::as_object);
        for (key, property) in properties.into_iter().flatten() {
            let Some((name, kind)) = argument(key, property) else {
                warnings.push(format!(
                    "tool `{tool_name}` argument `{key}` has no single JSON type ({property}); not declared"
                ));
                continue;
            };
            match declared.get(&name) {
                Some((earlier, _)) if *earlier == kind => {}
                Some((earlier, by)) => {
                    warnings.push(format!(
                        "`{name}` is {earlier:?} for tool `{by}` but {kind:?} for tool `{tool_name}`; not declared (a Cedar attribute has one type)"
                    ));
                    conflicting.push(name);
                }
                None => {
                    declared.insert(name, (kind, tool_name.to_owned()));
                }
            }
        }
    }
    declared
        .into_iter()
        .filter(|(name, _)| !conflicting.contains(name))
        .map(|(name, (kind, _))| (name, optional(kind)))
        .collect()
}

/// Every prompt argument as an optional `arg_<name>` String: MCP prompt arguments are strings.
fn prompt_arguments(prompts: &[Value]) -> BTreeMap<String, Attribute> {
    prompts
        .iter()
        .filter_map(|prompt| prompt.get("arguments")?.as_array())
        .flatten()
        .filter_map(|argument| argument.get("name")?.as_str())
        .map(|name| (format!("arg_{name}"), optional(CedarType::String)))
        .collect()
}

fn argument(key: &str, property: &Value) -> Option<(String, CedarType)> {
    let json_type = match property.get("type") {
        Some(Value::String(name)) => name.as_str(),
        Some(Value::Array(names)) => {
            let mut concrete = names
                .iter()
                .filter_map(Value::as_str)
                .filter(|n| *n != "null");
            let only = concrete.next()?;
            if concrete.next().is_some() {
                return None;
            }
            only
        }
        _ => {
            let strings = property
                .get("enum")
                .and_then(Value::as_array)
                .is_some_and(|values| values.iter().all(Value::is_string));
            if strings {
                "string"
            } else {
                return None;
            }
        }
    };
    let scalar = |kind| Some((format!("arg_{key}"), kind));
    match json_type {
        "string" => scalar(CedarType::String),
        "integer" | "number" => scalar(CedarType::Long),
        "boolean" => scalar(CedarType::Bool),
        "object" | "array" => Some((format!("arg_{key}_present"), CedarType::Bool)),
        _ => None,
    }
}

/// Claims from a sample token's payload: each present claim, required unless named in
/// `optional` (then declared with its sample type, to be read after `has`).
pub fn claims_from_sample(
    sample: &Map<String, Value>,
    optional_names: &[String],
) -> BTreeMap<String, Attribute> {
    sample
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.clone(),
                Attribute {
                    kind: CedarType::of_value(value)?,
                    required: !optional_names.contains(name),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_mesh_auth_filter::authz::{parse_policies, parse_schema, validate};

    fn everything_tools() -> Vec<Value> {
        serde_json::from_value(json!([
            {"name": "echo", "inputSchema": {"type": "object",
                "properties": {"message": {"type": "string"}}, "required": ["message"]}},
            {"name": "add", "inputSchema": {"type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}},
            {"name": "annotated", "annotations": {"readOnlyHint": true}, "inputSchema": {"type": "object",
                "properties": {"include": {"type": "boolean"}, "opts": {"type": "object"},
                               "level": {"enum": ["a", "b"]}, "odd": {"type": ["string", "integer"]}}}},
            {"name": "clash", "inputSchema": {"type": "object",
                "properties": {"message": {"type": "integer"}}}}
        ]))
        .unwrap()
    }

    fn input(claims: &[(&str, &str, bool)]) -> SchemaInput {
        SchemaInput {
            claims: claims
                .iter()
                .map(|(name, kind, required)| {
                    (
                        name.to_string(),
                        Attribute {
                            kind: CedarType::parse(kind).unwrap(),
                            required: *required,
                        },
                    )
                })
                .collect(),
            multi_valued: vec!["scope".into()],
            group_entity_type: "THVGroup".into(),
            tools: everything_tools(),
            prompts: serde_json::from_value(json!([
                {"name": "greet", "arguments": [{"name": "who", "required": true}]}
            ]))
            .unwrap(),
        }
    }

    /// Validates `policies` against the generated schema: the problems' messages.
    fn problems(input: &SchemaInput, policies: &[&str]) -> Vec<String> {
        let (schema, _) = generate(input);
        let schema = parse_schema(&Value::String(to_cedarschema(&schema).unwrap())).unwrap();
        let texts: Vec<String> = policies.iter().map(|p| p.to_string()).collect();
        let parsed = parse_policies(&texts).unwrap();
        validate(&parsed, &schema, &texts)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn toolhive_policies_validate_against_the_generated_schema() {
        let input = input(&[("sub", "String", true), ("roles", "Set<String>", false)]);
        let found = problems(
            &input,
            &[
                r#"permit(principal in THVGroup::"mcp-developers", action, resource);"#,
                r#"forbid(principal in THVGroup::"mcp-developers", action == Action::"call_tool", resource == Tool::"delete_namespace");"#,
                r#"permit(principal, action == Action::"call_tool", resource == Tool::"echo") when { context has arg_message && context.arg_message like "hi*" };"#,
                r#"permit(principal, action == Action::"call_tool", resource) when { resource has readOnlyHint && resource.readOnlyHint };"#,
                r#"permit(principal, action == Action::"call_tool", resource) when { principal has claim_roles && principal.claim_roles.contains("admin") };"#,
                r#"permit(principal, action == Action::"read_resource", resource is ResourceTemplate) when { resource.uriTemplate like "file:///pub/*" };"#,
                r#"permit(principal, action, resource in MCP::"everything") when { principal.claim_sub == "svc" && context has arg_opts_present };"#,
                r#"permit(principal, action == Action::"call_tool", resource) when { context has arg_a && context.arg_a > 2 && principal has claimset_scope && principal.claimset_scope.contains("x") };"#,
            ],
        );
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn a_typo_in_an_action_is_refused_with_a_suggestion() {
        let found = problems(
            &input(&[]),
            &[r#"@id("typo") permit(principal, action == Action::"call_tools", resource);"#],
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("policy `typo`"), "{}", found[0]);
        assert!(found[0].contains(r#"Action::"call_tools""#), "{}", found[0]);
        assert!(found[0].contains("did you mean"), "{}", found[0]);
        assert!(found[0].contains("call_tool"), "{}", found[0]);
    }

    #[test]
    fn toolhives_list_actions_are_explained() {
        let found = problems(
            &input(&[]),
            &[r#"permit(principal, action == Action::"list_tools", resource);"#],
        );
        assert!(found[0].contains("never asks it"), "{found:?}");
    }

    #[test]
    fn an_optional_claim_must_be_tested_with_has() {
        let input = input(&[("roles", "Set<String>", false), ("dept", "String", true)]);
        let unguarded = r#"permit(principal, action, resource) when { principal.claim_roles.contains("admin") };"#;
        let found = problems(&input, &[unguarded]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("claim_roles"), "{}", found[0]);
        let required = r#"permit(principal, action, resource) when { context.claim_dept == "x" };"#;
        assert!(problems(&input, &[required]).is_empty());
        let wrong_type =
            r#"permit(principal, action, resource) when { principal.claim_dept == 3 };"#;
        assert_eq!(problems(&input, &[wrong_type]).len(), 1);
    }

    #[test]
    fn arguments_are_typed_from_the_input_schema() {
        let input = input(&[]);
        let (schema, warnings) = generate(&input);
        let tool = &schema[""]["entityTypes"]["Tool"]["shape"]["attributes"];
        assert_eq!(tool["arg_a"]["type"], "Long");
        assert_eq!(tool["arg_include"]["type"], "Boolean");
        assert_eq!(tool["arg_opts_present"]["type"], "Boolean");
        assert_eq!(tool["arg_level"]["type"], "String");
        assert_eq!(tool["arg_a"]["required"], false);
        assert_eq!(tool["readOnlyHint"]["required"], false);
        assert!(tool.get("arg_odd").is_none());
        assert!(
            tool.get("arg_message").is_none(),
            "String for echo, Long for clash: not declared"
        );
        assert!(
            warnings.iter().any(|w| w.contains("arg_message")),
            "{warnings:?}"
        );
        assert!(warnings.iter().any(|w| w.contains("`odd`")), "{warnings:?}");
        let context = &schema[""]["actions"]["call_tool"]["appliesTo"]["context"]["attributes"];
        assert_eq!(context["arg_a"]["type"], "Long");
        let arg_in = problems(
            &input,
            &[
                r#"permit(principal, action == Action::"get_prompt", resource) when { context has arg_a };"#,
            ],
        );
        assert!(
            arg_in.is_empty(),
            "a `has` on an undeclared attribute is fine: {arg_in:?}"
        );
    }

    #[test]
    fn prompt_arguments_are_optional_strings_of_prompts_only() {
        let input = input(&[]);
        let (schema, _) = generate(&input);
        let prompt = &schema[""]["entityTypes"]["Prompt"]["shape"]["attributes"];
        assert_eq!(
            prompt["arg_who"],
            json!({"type": "String", "required": false})
        );
        let guarded = r#"permit(principal, action == Action::"get_prompt", resource == Prompt::"greet") when { context has arg_who && context.arg_who == "me" };"#;
        assert!(problems(&input, &[guarded]).is_empty());
        let unguarded = r#"permit(principal, action == Action::"get_prompt", resource) when { context.arg_who == "me" };"#;
        assert_eq!(
            problems(&input, &[unguarded]).len(),
            1,
            "optional: read after `has`"
        );
        let on_tools = r#"permit(principal, action == Action::"call_tool", resource) when { context.arg_who == "me" };"#;
        let found = problems(&input, &[on_tools]);
        assert_eq!(found.len(), 1, "a prompt's argument is not a tool's");
        assert!(found[0].contains("arg_who"), "{found:?}");
    }

    #[test]
    fn sample_claims_are_typed_and_optional_when_asked() {
        let sample = json!({"sub": "a", "groups": ["g"], "exp": 1, "ratio": 0.5, "nil": null,
                            "realm_access": {"roles": ["r"]}});
        let claims = claims_from_sample(sample.as_object().unwrap(), &["groups".into()]);
        assert_eq!(claims["sub"], required(CedarType::String));
        assert_eq!(
            claims["groups"],
            optional(CedarType::Set(Box::new(CedarType::String)))
        );
        assert_eq!(claims["exp"].kind, CedarType::Long);
        assert_eq!(claims["ratio"].kind, CedarType::Decimal);
        assert!(!claims.contains_key("nil"));
        assert!(matches!(claims["realm_access"].kind, CedarType::Record(_)));
        let input = SchemaInput {
            claims,
            multi_valued: vec![],
            group_entity_type: "THVGroup".into(),
            tools: vec![],
            prompts: vec![],
        };
        assert!(problems(
            &input,
            &[r#"permit(principal, action, resource) when { principal.claim_realm_access.roles.contains("r") };"#]
        )
        .is_empty());
    }

    #[test]
    fn claim_types_parse_as_written() {
        assert_eq!(
            CedarType::parse("Set<Long>").unwrap(),
            CedarType::Set(Box::new(CedarType::Long))
        );
        let err = CedarType::parse("Strnig").unwrap_err().to_string();
        assert!(err.contains("`Strnig`"), "{err}");
    }
}

//! Cedar authorization: policies and static entities loaded once, one decision per MCP use.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer as CedarAuthorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::claims;
use crate::operation::{Feature, Kind};
use crate::verify::VerifiedToken;

const DEFAULT_GROUP_ENTITY_TYPE: &str = "THVGroup";
/// The claims that name the principal, first present wins (a machine token has no `sub`).
pub const PRINCIPAL_CLAIMS: [&str; 4] = ["sub", "client_id", "cid", "azp"];
/// Tool annotations a policy may read; only booleans, only as the server declared them.
pub const ANNOTATION_HINTS: [&str; 4] = [
    "readOnlyHint",
    "destructiveHint",
    "idempotentHint",
    "openWorldHint",
];

/// The `cedar` section of the plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CedarSettings {
    #[serde(default)]
    pub policies: Vec<String>,
    pub entities: Option<Value>,
    /// A schema in Cedar syntax (string) or JSON (object); policies are validated against it.
    pub schema: Option<Value>,
    pub group_claim: Option<String>,
    pub role_claim: Option<String>,
    pub group_entity_type: Option<String>,
    pub multi_valued_claims: Option<Vec<String>>,
    /// `enforce` (the default) or `shadow`: see [`CedarMode`].
    #[serde(default)]
    pub mode: CedarMode,
}

/// Whether Cedar's decisions are carried out. `shadow` evaluates, logs and counts every decision
/// (marked `shadow`) but refuses no call and cuts no list, so that a team can roll a new policy
/// set out and compare before it bites. Authentication is never shadowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CedarMode {
    #[default]
    Enforce,
    Shadow,
}

/// Why the Cedar configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CedarConfigError {
    #[error("`cedar.policies` is empty: with no policy every call would be denied")]
    NoPolicies,
    #[error("`cedar.policies[{index}]` does not parse: {message}")]
    Policy { index: usize, message: String },
    #[error("`cedar.policies`: two policies have the id `{0}` (from `@id`)")]
    DuplicateId(String),
    #[error("`cedar.entities` is not valid Cedar JSON entities: {0}")]
    Entities(String),
    #[error("`cedar.schema` does not parse: {0}")]
    Schema(String),
    #[error("the policies do not validate against `cedar.schema`: {0}")]
    Validation(String),
    #[error("`cedar.group_entity_type` = `{0}` is not a Cedar entity type name")]
    GroupType(String),
    #[error("`server_name` = `{0}` cannot be an entity id")]
    ServerName(String),
}

/// Why a request cannot be put to Cedar (each is a deny).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("the token has no `sub`, `client_id`, `cid` or `azp` to name the principal")]
    NoPrincipal,
    #[error("the Cedar request could not be built: {0}")]
    Request(String),
    #[error("the token's delegation is unusable: {0}")]
    Delegation(String),
}

/// A decision and what made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that decided (permits when allowed, forbids when denied by one).
    pub policies: Vec<String>,
    /// Evaluation errors; any error denies (ToolHive's rule), even next to a permit.
    pub errors: Vec<String>,
    /// Why the request could not be put to Cedar at all (no policy decided; it denies).
    pub refused: Option<String>,
}

impl Decision {
    fn denied(reason: String) -> Self {
        Self {
            allowed: false,
            policies: Vec::new(),
            errors: Vec::new(),
            refused: Some(reason),
        }
    }

    /// Why, in one line for the audit log and `mcp-mesh-auth explain`: what decided, or that
    /// nothing did. `principal` is the caller's id (`Client::"alice"`).
    pub fn reason(&self, principal: &str, target: &Target<'_>) -> String {
        let kind = target.kind;
        let what = format!(
            "{principal} `{}` on {}::{:?}",
            kind.action(),
            kind.entity_type(),
            target.name
        );
        if let Some(refused) = &self.refused {
            format!(
                "no policy decided (the request could not be evaluated, which denies): {refused}"
            )
        } else if !self.errors.is_empty() {
            format!(
                "a policy failed to evaluate, which denies: {}",
                self.errors.join("; ")
            )
        } else if self.allowed {
            format!("permitted by {}", quoted_list(&self.policies))
        } else if self.policies.is_empty() {
            format!("no policy permits {what} (default deny)")
        } else {
            format!("{what} is forbidden by {}", quoted_list(&self.policies))
        }
    }
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The calling principal, built once per request.
pub struct Caller {
    pub uid: EntityUid,
    entity: Entity,
    context: Vec<(String, RestrictedExpression)>,
}

/// One item to decide on: a use (with arguments and known annotations) or a listed item.
pub struct Target<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub arguments: Option<&'a Map<String, Value>>,
    pub annotations: Option<&'a Map<String, Value>>,
}

pub struct Authorizer {
    policies: PolicySet,
    entities: Entities,
    group_type: EntityTypeName,
    group_claim: Option<String>,
    role_claim: Option<String>,
    multi_valued: Vec<String>,
    server: Option<EntityUid>,
    cedar: CedarAuthorizer,
    /// Whether a policy may read a claim that changes with every token (see `PER_TOKEN_CLAIMS`).
    reads_per_token_claims: bool,
    /// `cedar.mode`: whether denials are carried out.
    pub mode: CedarMode,
}

/// Claims every new token of the same principal changes. A decision that reads none of them is
/// the same for the principal's next token: list decisions are then remembered per principal and
/// claims, so a refreshed token does not pay the Cedar evaluations again.
pub const PER_TOKEN_CLAIMS: [&str; 5] = ["exp", "iat", "nbf", "jti", "auth_time"];

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("policies", &self.policies.policies().count())
            .field("group_type", &self.group_type.to_string())
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(
        settings: CedarSettings,
        server_name: Option<&str>,
    ) -> Result<Self, CedarConfigError> {
        let parsed = parse_policies(&settings.policies)?;
        if let Some(schema) = settings.schema.as_ref().map(parse_schema).transpose()? {
            let problems = validate(&parsed, &schema, &settings.policies);
            if !problems.is_empty() {
                let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
                return Err(CedarConfigError::Validation(messages.join("; ")));
            }
        }
        let policies = parsed.set;
        let entities = match settings.entities {
            Some(value) => Entities::from_json_value(value, None)
                .map_err(|err| CedarConfigError::Entities(err.to_string()))?,
            None => Entities::empty(),
        };
        let type_name = settings
            .group_entity_type
            .unwrap_or_else(|| DEFAULT_GROUP_ENTITY_TYPE.to_owned());
        let group_type = EntityTypeName::from_str(&type_name)
            .map_err(|_| CedarConfigError::GroupType(type_name.clone()))?;
        let server = server_name
            .map(|name| {
                entity_uid("MCP", name).ok_or_else(|| CedarConfigError::ServerName(name.to_owned()))
            })
            .transpose()?;
        Ok(Self {
            policies,
            entities,
            group_type,
            group_claim: settings.group_claim,
            role_claim: settings.role_claim,
            multi_valued: settings
                .multi_valued_claims
                .unwrap_or_else(|| vec!["scp".into(), "scope".into()]),
            server,
            cedar: CedarAuthorizer::new(),
            mode: settings.mode,
            // Conservative: any mention (`claim_exp`, `claimset_jti`, a string) counts.
            reads_per_token_claims: settings.policies.iter().any(|policy| {
                PER_TOKEN_CLAIMS
                    .iter()
                    .any(|claim| policy.contains(&format!("_{claim}")))
            }),
        })
    }

    /// The key decisions about `token`'s caller are remembered under: the token itself when a
    /// policy may read a per-token claim, else its claims without those (one key per principal
    /// and claim set, whatever the token).
    pub fn decision_key(&self, token: &VerifiedToken) -> [u8; 32] {
        if self.reads_per_token_claims {
            return token.digest;
        }
        let lasting: serde_json::Map<String, Value> = token
            .claims
            .iter()
            .filter(|(name, _)| !PER_TOKEN_CLAIMS.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        crate::verify::digest(&Value::Object(lasting).to_string())
    }

    /// The principal `Client::"<sub>"`, its claims and its groups.
    pub fn caller(&self, token: &VerifiedToken) -> Result<Caller, AuthzError> {
        let id = PRINCIPAL_CLAIMS
            .iter()
            .find_map(|claim| token.claims.get(*claim).and_then(Value::as_str))
            .ok_or(AuthzError::NoPrincipal)?;
        let uid = entity_uid("Client", id).ok_or(AuthzError::NoPrincipal)?;
        let mut context = claims::claim_attributes(&token.claims, &self.multi_valued);
        context
            .extend(claims::delegation_attributes(&token.claims).map_err(AuthzError::Delegation)?);
        let parents: HashSet<EntityUid> = claims::groups(
            &token.claims,
            self.group_claim.as_deref(),
            self.role_claim.as_deref(),
        )
        .iter()
        .map(|group| {
            EntityUid::from_type_name_and_id(self.group_type.clone(), EntityId::new(group))
        })
        .collect();
        let entity = Entity::new(uid.clone(), context.iter().cloned().collect(), parents)
            .map_err(|err| AuthzError::Request(err.to_string()))?;
        Ok(Caller {
            uid,
            entity,
            context,
        })
    }

    /// Decides one use of a tool, prompt or resource.
    pub fn decide(&self, caller: &Caller, target: &Target<'_>) -> Decision {
        self.decide_all(caller, std::slice::from_ref(target))
            .pop()
            .unwrap_or_else(|| Decision::denied("no decision".into()))
    }

    /// Decides several targets against one set of entities (one transitive closure for a list).
    pub fn decide_all(&self, caller: &Caller, targets: &[Target<'_>]) -> Vec<Decision> {
        let mut resources = Vec::with_capacity(targets.len());
        let mut seen = HashSet::new();
        let mut built = Vec::with_capacity(targets.len());
        for target in targets {
            let resource = self.resource(target);
            if let Ok((uid, entity)) = &resource {
                if seen.insert(uid.clone()) {
                    resources.push(entity.clone());
                }
            }
            built.push(resource.map(|(uid, _)| uid));
        }
        let entities = match self.entities.clone().add_entities(
            std::iter::once(caller.entity.clone()).chain(resources),
            None,
        ) {
            Ok(entities) => entities,
            Err(err) => {
                let reason = format!("entities: {err}");
                return targets
                    .iter()
                    .map(|_| Decision::denied(reason.clone()))
                    .collect();
            }
        };
        // Without arguments every request shares the caller's context: build it once.
        let shared = targets
            .iter()
            .all(|t| t.arguments.is_none())
            .then(|| Context::from_pairs(caller.context.iter().cloned()).ok())
            .flatten();
        targets
            .iter()
            .zip(built)
            .map(|(target, resource)| match resource {
                Ok(resource) => self.evaluate(caller, target, resource, &entities, shared.as_ref()),
                Err(reason) => Decision::denied(reason),
            })
            .collect()
    }

    fn resource(&self, target: &Target<'_>) -> Result<(EntityUid, Entity), String> {
        let kind = target.kind;
        let uid = entity_uid(kind.entity_type(), target.name)
            .ok_or_else(|| format!("`{}` cannot be an entity id", target.name))?;
        let mut attributes: HashMap<String, RestrictedExpression> = HashMap::new();
        attributes.insert(
            "name".into(),
            RestrictedExpression::new_string(target.name.to_owned()),
        );
        attributes.insert(
            "operation".into(),
            RestrictedExpression::new_string(kind.operation().into()),
        );
        attributes.insert(
            "feature".into(),
            RestrictedExpression::new_string(kind.name().into()),
        );
        // What the item is named by, under the name MCP gives it (`uri`, `uriTemplate`).
        if kind != Kind::Item(Feature::Tool) && kind != Kind::Item(Feature::Prompt) {
            attributes.insert(
                kind.id_key().into(),
                RestrictedExpression::new_string(target.name.to_owned()),
            );
        }
        if let Some(annotations) = target.annotations {
            for hint in ANNOTATION_HINTS {
                if let Some(flag) = annotations.get(hint).and_then(Value::as_bool) {
                    attributes.insert(hint.to_owned(), RestrictedExpression::new_bool(flag));
                }
            }
        }
        attributes.extend(claims::argument_attributes(target.arguments));
        let parents = self.server.iter().cloned().collect();
        let entity =
            Entity::new(uid.clone(), attributes, parents).map_err(|err| err.to_string())?;
        Ok((uid, entity))
    }

    fn evaluate(
        &self,
        caller: &Caller,
        target: &Target<'_>,
        resource: EntityUid,
        entities: &Entities,
        shared_context: Option<&Context>,
    ) -> Decision {
        let Some(action) = entity_uid("Action", target.kind.action()) else {
            return Decision::denied("bad action".into());
        };
        let context = match shared_context {
            Some(context) => Ok(context.clone()),
            None => Context::from_pairs(
                caller
                    .context
                    .iter()
                    .cloned()
                    .chain(claims::argument_attributes(target.arguments)),
            )
            .map_err(|err| err.to_string()),
        };
        let request = context.and_then(|context| {
            Request::new(caller.uid.clone(), action, resource, context, None)
                .map_err(|err| err.to_string())
        });
        let request = match request {
            Ok(request) => request,
            Err(reason) => return Decision::denied(reason),
        };
        let response = self.cedar.is_authorized(&request, &self.policies, entities);
        let diagnostics = response.diagnostics();
        let errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
        Decision {
            allowed: response.decision() == CedarDecision::Allow && errors.is_empty(),
            policies: diagnostics.reason().map(ToString::to_string).collect(),
            errors,
            refused: None,
        }
    }
}

fn entity_uid(type_name: &str, id: &str) -> Option<EntityUid> {
    Some(EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(type_name).ok()?,
        EntityId::new(id),
    ))
}

/// The configured policies as one set, and which text each came from, so that a message about a
/// policy can point at its file or `cedar.policies[i]` entry.
#[derive(Debug, Clone)]
pub struct ParsedPolicies {
    pub set: PolicySet,
    origins: HashMap<String, usize>,
}

impl ParsedPolicies {
    /// The index of the text policy `id` was written in.
    pub fn origin(&self, id: &str) -> Option<usize> {
        self.origins.get(id).copied()
    }
}

/// A policy the schema refuses: which one, where, what is wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// The policy id (`@id`, or `policies[i]#j`).
    pub policy: String,
    /// The index of the text the policy is in.
    pub text: Option<usize>,
    /// The 1-based line in that text the problem is at.
    pub line: Option<usize>,
    pub message: String,
    /// Cedar's suggestion (`did you mean …`), or ours.
    pub help: Option<String>,
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "policy `{}`", self.policy)?;
        match (self.text, self.line) {
            (Some(text), Some(line)) => write!(f, " (`cedar.policies[{text}]` line {line})")?,
            (Some(text), None) => write!(f, " (`cedar.policies[{text}]`)")?,
            _ => {}
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, ": {help}")?;
        }
        Ok(())
    }
}

/// ToolHive's list actions: a policy may name them, but this filter never asks them.
const TOOLHIVE_LIST_ACTIONS: [&str; 3] = ["list_tools", "list_prompts", "list_resources"];

/// Cedar's strict validation of every policy against `schema`; `texts` are the policy texts the
/// set was parsed from (for line numbers). Empty when all policies validate.
pub fn validate(parsed: &ParsedPolicies, schema: &Schema, texts: &[String]) -> Vec<SchemaProblem> {
    use miette::Diagnostic;
    let result = Validator::new(schema.clone()).validate(&parsed.set, ValidationMode::Strict);
    result
        .validation_errors()
        .map(|err| {
            let policy = err.policy_id().to_string();
            let text = parsed.origin(&policy);
            let offset = err.labels().and_then(|mut labels| labels.next()).map(|l| l.offset());
            let line = text
                .and_then(|index| texts.get(index))
                .zip(offset)
                .and_then(|(source, offset)| source.get(..offset))
                .map(|before| before.matches('\n').count() + 1);
            let message = err.to_string();
            // Cedar starts with "for policy `<id>`, "; the id is said once, first.
            let message = message
                .strip_prefix(&format!("for policy `{policy}`, "))
                .map(str::to_owned)
                .unwrap_or(message);
            let list_action = TOOLHIVE_LIST_ACTIONS
                .iter()
                .find(|action| message.contains(&format!("Action::\"{action}\"")));
            let help = match list_action {
                Some(action) => Some(format!(
                    "`{action}` is ToolHive's; mcp-mesh-auth never asks it: a list is cut item by item with the use action (`call_tool`, `get_prompt`, `read_resource`)"
                )),
                None => err.help().map(|help| help.to_string()),
            };
            SchemaProblem {
                policy,
                text,
                line,
                message,
                help,
            }
        })
        .collect()
}

/// All policy texts as one set; ids come from `@id("…")` or are `policies[i]#j`.
pub fn parse_policies(texts: &[String]) -> Result<ParsedPolicies, CedarConfigError> {
    if texts.is_empty() {
        return Err(CedarConfigError::NoPolicies);
    }
    let mut set = PolicySet::new();
    let mut origins = HashMap::new();
    for (index, text) in texts.iter().enumerate() {
        let parsed = PolicySet::from_str(text).map_err(|err| CedarConfigError::Policy {
            index,
            message: render_parse_error(&err),
        })?;
        for (position, policy) in parsed.policies().enumerate() {
            let id = policy
                .annotation("id")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("policies[{index}]#{position}"));
            set.add(policy.new_id(PolicyId::new(&id)))
                .map_err(|_| CedarConfigError::DuplicateId(id.clone()))?;
            origins.insert(id, index);
        }
        if parsed.templates().next().is_some() {
            return Err(CedarConfigError::Policy {
                index,
                message: "templates (with ?principal/?resource slots) are not supported".into(),
            });
        }
    }
    Ok(ParsedPolicies { set, origins })
}

fn render_parse_error(err: &cedar_policy::ParseErrors) -> String {
    let mut message = err.to_string();
    for detail in err.iter().skip(1) {
        message.push_str("; ");
        message.push_str(&detail.to_string());
    }
    message
}

/// A schema in Cedar syntax (a string) or JSON (anything else).
pub fn parse_schema(value: &Value) -> Result<Schema, CedarConfigError> {
    match value {
        Value::String(text) => Schema::from_cedarschema_str(text)
            .map(|(schema, _warnings)| schema)
            .map_err(|err| CedarConfigError::Schema(err.to_string())),
        other => Schema::from_json_value(other.clone())
            .map_err(|err| CedarConfigError::Schema(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The policies of seed 000 (ToolHive vMCP + Okta), verbatim.
    const SEED_000: [&str; 4] = [
        r#"permit(
principal in THVGroup::"mcp-developers",
action,
resource
);"#,
        r#"forbid(
principal in THVGroup::"mcp-developers",
action == Action::"call_tool",
resource == Tool::"delete_namespace"
);"#,
        r#"permit(
principal in THVGroup::"mcp-platform",
action,
resource
);"#,
        r#"permit(
principal in THVGroup::"mcp-admin",
action,
resource
);"#,
    ];

    fn authorizer(policies: &[&str], entities: Option<Value>) -> Authorizer {
        Authorizer::new(
            CedarSettings {
                policies: policies.iter().map(|p| p.to_string()).collect(),
                entities,
                schema: None,
                group_claim: None,
                role_claim: None,
                group_entity_type: None,
                multi_valued_claims: None,
                mode: CedarMode::Enforce,
            },
            Some("github"),
        )
        .unwrap()
    }

    fn token(claims: Value) -> VerifiedToken {
        VerifiedToken {
            issuer: "https://as".into(),
            subject: claims["sub"].as_str().map(str::to_owned),
            expires_at: 0,
            key_id: String::new(),
            digest: [0; 32],
            claims: claims.as_object().cloned().unwrap(),
        }
    }

    fn user(sub: &str, groups: &[&str]) -> VerifiedToken {
        token(json!({"sub": sub, "groups": groups}))
    }

    fn tool(name: &str) -> Target<'_> {
        Target {
            kind: Kind::Item(Feature::Tool),
            name,
            arguments: None,
            annotations: None,
        }
    }

    fn allowed(authz: &Authorizer, who: &VerifiedToken, target: &Target<'_>) -> bool {
        authz.decide(&authz.caller(who).unwrap(), target).allowed
    }

    #[test]
    fn an_agent_may_act_only_for_the_users_a_policy_names() {
        let authz = authorizer(
            &[
                r#"permit(principal in THVGroup::"mcp-developers", action == Action::"call_tool", resource == Tool::"search")
                 when { context has actor && context.actor == "agent-7" };"#,
                r#"forbid(principal, action, resource)
                 when { context has actor_chain && context.actor_chain.contains("untrusted-bot") };"#,
                r#"permit(principal == Client::"alice", action, resource) unless { context has actor };"#,
            ],
            None,
        );
        let delegated = |sub: &str, groups: &[&str], act: Value| {
            token(json!({"sub": sub, "groups": groups, "act": act}))
        };
        let agent = json!({"sub": "agent-7"});
        assert!(allowed(
            &authz,
            &delegated("bob", &["mcp-developers"], agent.clone()),
            &tool("search")
        ));
        assert!(!allowed(
            &authz,
            &delegated("bob", &["mcp-developers"], agent.clone()),
            &tool("delete")
        ));
        assert!(
            !allowed(
                &authz,
                &delegated("carol", &["sales"], agent.clone()),
                &tool("search")
            ),
            "the agent acts for developers only"
        );
        assert!(!allowed(
            &authz,
            &delegated("bob", &["mcp-developers"], json!({"sub": "agent-9"})),
            &tool("search")
        ));
        let through_bot = json!({"sub": "agent-7", "act": {"sub": "untrusted-bot"}});
        assert!(
            !allowed(
                &authz,
                &delegated("bob", &["mcp-developers"], through_bot),
                &tool("search")
            ),
            "an earlier actor in the chain counts too"
        );
        assert!(
            allowed(&authz, &user("alice", &[]), &tool("delete")),
            "alice herself"
        );
        assert!(
            !allowed(&authz, &delegated("alice", &[], agent), &tool("delete")),
            "but not an agent acting for her"
        );
        for odd in [
            json!("agent-7"),
            json!({"client_id": "agent-7"}),
            json!({"sub": 7}),
        ] {
            let caller = authz.caller(&token(
                json!({"sub": "bob", "groups": ["mcp-developers"], "act": odd}),
            ));
            assert!(
                matches!(caller, Err(AuthzError::Delegation(_))),
                "`act` names its actor in `sub`: {odd}"
            );
        }
        let mut deep = json!({"sub": "a0"});
        for i in 1..=8 {
            deep = json!({"sub": format!("a{i}"), "act": deep});
        }
        let caller = authz.caller(&token(json!({"sub": "alice", "act": deep})));
        assert!(
            matches!(caller, Err(AuthzError::Delegation(_))),
            "a chain past what policies see is refused, not cut"
        );
    }

    #[test]
    fn quick_reference_allow_a_group_all_tools() {
        let authz = authorizer(
            &[r#"permit(principal in THVGroup::"mcp-developers", action, resource);"#],
            None,
        );
        assert!(allowed(
            &authz,
            &user("alice", &["mcp-developers"]),
            &tool("get_pods")
        ));
        let prompt = Target {
            kind: Kind::Item(Feature::Prompt),
            name: "summarise",
            arguments: None,
            annotations: None,
        };
        assert!(allowed(
            &authz,
            &user("alice", &["mcp-developers"]),
            &prompt
        ));
        assert!(!allowed(
            &authz,
            &user("bob", &["mcp-sales"]),
            &tool("get_pods")
        ));
    }

    #[test]
    fn quick_reference_allow_a_specific_user() {
        let authz = authorizer(
            &[
                r#"permit(principal == Client::"user@example.com", action == Action::"call_tool", resource);"#,
            ],
            None,
        );
        assert!(allowed(
            &authz,
            &user("user@example.com", &[]),
            &tool("anything")
        ));
        assert!(!allowed(
            &authz,
            &user("other@example.com", &[]),
            &tool("anything")
        ));
        let prompt = Target {
            kind: Kind::Item(Feature::Prompt),
            name: "p",
            arguments: None,
            annotations: None,
        };
        assert!(
            !allowed(&authz, &user("user@example.com", &[]), &prompt),
            "only call_tool"
        );
    }

    #[test]
    fn quick_reference_allow_by_claim_value() {
        let authz = authorizer(
            &[
                r#"permit(principal, action == Action::"call_tool", resource) when { principal.claim_roles.contains("admin") };"#,
            ],
            None,
        );
        assert!(allowed(
            &authz,
            &token(json!({"sub": "a", "roles": ["admin"]})),
            &tool("x")
        ));
        assert!(!allowed(
            &authz,
            &token(json!({"sub": "b", "roles": ["viewer"]})),
            &tool("x")
        ));
        assert!(
            !allowed(&authz, &token(json!({"sub": "c"})), &tool("x")),
            "no claim: evaluation error, deny"
        );
    }

    #[test]
    fn quick_reference_restrict_to_one_tool() {
        let authz = authorizer(
            &[
                r#"permit(principal in THVGroup::"mcp-platform", action == Action::"call_tool", resource == Tool::"get_pods");"#,
            ],
            None,
        );
        assert!(allowed(
            &authz,
            &user("p", &["mcp-platform"]),
            &tool("get_pods")
        ));
        assert!(!allowed(
            &authz,
            &user("p", &["mcp-platform"]),
            &tool("delete_pods")
        ));
    }

    #[test]
    fn quick_reference_deny_a_group_one_tool() {
        let authz = authorizer(&SEED_000[..2], None);
        let dev = user("d", &["mcp-developers"]);
        assert!(allowed(&authz, &dev, &tool("get_pods")));
        let decision = authz.decide(&authz.caller(&dev).unwrap(), &tool("delete_namespace"));
        assert!(!decision.allowed);
        assert_eq!(
            decision.policies,
            ["policies[1]#0"],
            "the forbid decided, and is named for the log"
        );
    }

    #[test]
    fn quick_reference_admin_escape_hatch() {
        let authz = authorizer(
            &[r#"permit(principal in THVGroup::"mcp-admin", action, resource);"#],
            None,
        );
        assert!(allowed(
            &authz,
            &user("root", &["mcp-admin"]),
            &tool("delete_namespace")
        ));
        let read = Target {
            kind: Kind::Item(Feature::Resource),
            name: "file:///etc/passwd",
            arguments: None,
            annotations: None,
        };
        assert!(allowed(&authz, &user("root", &["mcp-admin"]), &read));
    }

    #[test]
    fn seed_000_policies_give_each_group_what_the_guide_promises() {
        let authz = authorizer(&SEED_000, None);
        let tools = ["get_pods", "list_repos", "delete_namespace"];
        for (groups, expected) in [
            (&["mcp-developers"][..], [true, true, false]),
            (&["mcp-platform"][..], [true, true, true]),
            (&["mcp-admin"][..], [true, true, true]),
            (&["Everyone"][..], [false, false, false]),
            (&[][..], [false, false, false]),
        ] {
            let who = user("u", groups);
            let got: Vec<bool> = tools
                .iter()
                .map(|t| allowed(&authz, &who, &tool(t)))
                .collect();
            assert_eq!(got, expected, "{groups:?}");
        }
    }

    #[test]
    fn argument_conditions_see_scalar_arguments() {
        let authz = authorizer(
            &[
                r#"permit(principal, action == Action::"call_tool", resource == Tool::"get_pods")
                 when { resource has arg_namespace && resource.arg_namespace == "dev" && context.arg_namespace == "dev" };"#,
            ],
            None,
        );
        let who = user("u", &[]);
        let dev = json!({"namespace": "dev"}).as_object().cloned().unwrap();
        let prod = json!({"namespace": "prod"}).as_object().cloned().unwrap();
        let call = |args| Target {
            kind: Kind::Item(Feature::Tool),
            name: "get_pods",
            arguments: Some(args),
            annotations: None,
        };
        assert!(allowed(&authz, &who, &call(&dev)));
        assert!(!allowed(&authz, &who, &call(&prod)));
        assert!(!allowed(&authz, &who, &tool("get_pods")));
    }

    /// `arguments` parsed from text, so that `0.0` stays the float it was written as.
    fn arguments(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn an_integral_number_is_a_long_however_it_is_spelled() {
        let authz = authorizer(
            &[
                "permit(principal, action, resource);",
                "forbid(principal, action, resource) when { context has arg_replicas && context.arg_replicas == 0 };",
                "forbid(principal, action, resource) when { context has arg_size && context.arg_size > 99 };",
            ],
            None,
        );
        let who = user("u", &[]);
        let decide = |args: &str| {
            let args = arguments(args);
            let call = Target {
                kind: Feature::Tool.into(),
                name: "scale",
                arguments: Some(&args),
                annotations: None,
            };
            allowed(&authz, &who, &call)
        };
        for zero in ["0", "-0", "0.0", "-0.0", "0e0", "0.0E+5", "0e-3"] {
            assert!(
                !decide(&format!(r#"{{"replicas": {zero}}}"#)),
                "replicas {zero} slips past the forbid"
            );
        }
        for size in ["100", "1.0e2", "1e2", "100.000", "9.2e18"] {
            assert!(!decide(&format!(r#"{{"size": {size}}}"#)), "size {size}");
        }
        for fine in [
            r#"{"replicas": 1}"#,
            r#"{"replicas": 0.5}"#,
            r#"{"size": 99}"#,
        ] {
            assert!(decide(fine), "{fine}");
        }
    }

    #[test]
    fn annotation_conditions_use_what_the_server_declared() {
        let authz = authorizer(
            &[
                r#"permit(principal, action == Action::"call_tool", resource) when { resource.readOnlyHint == true };"#,
            ],
            None,
        );
        let who = user("u", &[]);
        let read_only = json!({"readOnlyHint": true}).as_object().cloned().unwrap();
        let writes = json!({"readOnlyHint": false}).as_object().cloned().unwrap();
        let with = |annotations| Target {
            kind: Kind::Item(Feature::Tool),
            name: "t",
            arguments: None,
            annotations: Some(annotations),
        };
        assert!(allowed(&authz, &who, &with(&read_only)));
        assert!(!allowed(&authz, &who, &with(&writes)));
        assert!(
            !allowed(&authz, &who, &tool("t")),
            "unknown annotations: no attribute, deny"
        );
    }

    #[test]
    fn forbid_beats_permit() {
        let authz = authorizer(
            &[
                r#"permit(principal, action, resource); forbid(principal, action, resource == Tool::"rm");"#,
            ],
            None,
        );
        assert!(allowed(&authz, &user("u", &[]), &tool("ls")));
        assert!(!allowed(&authz, &user("u", &[]), &tool("rm")));
    }

    #[test]
    fn an_erroring_policy_denies_even_next_to_a_permit() {
        let authz = authorizer(
            &[
                r#"permit(principal, action, resource);"#,
                r#"@id("reads-missing") permit(principal, action, resource) when { principal.claim_department == "x" };"#,
            ],
            None,
        );
        let decision = authz.decide(&authz.caller(&user("u", &[])).unwrap(), &tool("t"));
        assert!(!decision.allowed);
        assert!(
            decision.errors.iter().any(|e| e.contains("reads-missing")),
            "{:?}",
            decision.errors
        );
    }

    #[test]
    fn group_hierarchies_come_from_static_entities() {
        let entities = json!([
            {"uid": {"type": "THVGroup", "id": "mcp-developers"}, "attrs": {},
             "parents": [{"type": "THVGroup", "id": "engineering"}]},
            {"uid": {"type": "THVGroup", "id": "engineering"}, "attrs": {}, "parents": []}
        ]);
        let authz = authorizer(
            &[r#"permit(principal in THVGroup::"engineering", action, resource);"#],
            Some(entities),
        );
        assert!(allowed(&authz, &user("d", &["mcp-developers"]), &tool("t")));
        assert!(!allowed(&authz, &user("s", &["mcp-sales"]), &tool("t")));
    }

    #[test]
    fn tools_have_the_server_as_parent() {
        let authz = authorizer(
            &[r#"permit(principal, action, resource in MCP::"github");"#],
            None,
        );
        assert!(allowed(&authz, &user("u", &[]), &tool("t")));
    }

    #[test]
    fn scope_sets_are_visible_to_policies() {
        let authz = authorizer(
            &[
                r#"permit(principal, action, resource) when { principal.claimset_scope.contains("mcp:admin") };"#,
            ],
            None,
        );
        assert!(allowed(
            &authz,
            &token(json!({"sub": "a", "scope": "openid mcp:admin"})),
            &tool("t")
        ));
        assert!(!allowed(
            &authz,
            &token(json!({"sub": "a", "scope": "openid"})),
            &tool("t")
        ));
    }

    #[test]
    fn a_machine_token_is_named_by_its_client_id() {
        let authz = authorizer(
            &[r#"permit(principal == Client::"svc-1", action, resource);"#],
            None,
        );
        assert!(allowed(
            &authz,
            &token(json!({"client_id": "svc-1"})),
            &tool("t")
        ));
        assert!(authz.caller(&token(json!({"aud": "x"}))).is_err());
    }

    #[test]
    fn one_list_decision_per_item() {
        let authz = authorizer(&SEED_000, None);
        let caller = authz.caller(&user("d", &["mcp-developers"])).unwrap();
        let items = [tool("get_pods"), tool("delete_namespace"), tool("get_pods")];
        let got: Vec<bool> = authz
            .decide_all(&caller, &items)
            .iter()
            .map(|d| d.allowed)
            .collect();
        assert_eq!(got, [true, false, true]);
    }

    fn settings(policies: &[&str]) -> CedarSettings {
        CedarSettings {
            policies: policies.iter().map(|p| p.to_string()).collect(),
            entities: None,
            schema: None,
            group_claim: None,
            role_claim: None,
            group_entity_type: None,
            multi_valued_claims: None,
            mode: CedarMode::Enforce,
        }
    }

    #[test]
    fn configuration_errors_say_what_to_fix() {
        assert_eq!(
            Authorizer::new(settings(&[]), None).err(),
            Some(CedarConfigError::NoPolicies)
        );
        let err = Authorizer::new(settings(&["permit(principal, action, resource)"]), None)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("`cedar.policies[0]` does not parse"),
            "{err}"
        );
        let dup = [
            r#"@id("a") permit(principal, action, resource);"#,
            r#"@id("a") forbid(principal, action, resource);"#,
        ];
        assert_eq!(
            Authorizer::new(settings(&dup), None).err(),
            Some(CedarConfigError::DuplicateId("a".into()))
        );
        let mut bad_entities = settings(&["permit(principal, action, resource);"]);
        bad_entities.entities = Some(json!([{"uid": "nope"}]));
        assert!(matches!(
            Authorizer::new(bad_entities, None),
            Err(CedarConfigError::Entities(_))
        ));
    }

    #[test]
    fn a_schema_validates_the_policies_at_configure_time() {
        let schema = r#"
            entity THVGroup;
            entity Client in [THVGroup];
            entity MCP;
            entity Tool in [MCP] { name: String };
            action call_tool appliesTo { principal: Client, resource: Tool };
        "#;
        let mut good = settings(&[
            r#"permit(principal in THVGroup::"g", action == Action::"call_tool", resource) when { resource.name == "x" };"#,
        ]);
        good.schema = Some(json!(schema));
        assert!(Authorizer::new(good, None).is_ok());
        let mut bad = settings(&[
            r#"permit(principal, action == Action::"call_tool", resource) when { resource.nmae == "x" };"#,
        ]);
        bad.schema = Some(json!(schema));
        let err = Authorizer::new(bad, None).err().unwrap();
        assert!(matches!(err, CedarConfigError::Validation(_)), "{err}");
        assert!(err.to_string().contains("nmae"), "{err}");
    }
}

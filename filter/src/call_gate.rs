//! The decision on one buffered MCP POST: parse, check the routing headers, map the method,
//! check per-tool scopes, ask Cedar. Pure, like `gate`; the adapter carries the verdict out.

use serde_json::{json, Value};

use crate::annotations::ToolAnnotations;
use crate::authz::{Authorizer, Target};
use crate::config::FilterConfig;
use crate::jsonrpc::{self, Message, RequestId, HEADER_MISMATCH, INVALID_PARAMS};
use crate::mcp_headers;
use crate::operation::{self, Feature, Operation};
use crate::rejection::Rejection;
use crate::response::{self, LocalResponse};
use crate::verify::VerifiedToken;

/// The request headers the body decision needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallHeaders {
    pub content_type: Option<String>,
    pub mcp_method: Option<String>,
    pub mcp_name: Option<String>,
}

/// A list request let through: its answer is to be filtered.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingList {
    pub feature: Feature,
    pub request_id: RequestId,
}

#[derive(Debug)]
pub enum CallVerdict {
    Pass(Option<PendingList>),
    Refuse(LocalResponse),
}

/// One authorization decision, for the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    pub method: String,
    pub target: String,
    pub allowed: bool,
    pub policies: Vec<String>,
    pub reason: String,
}

impl Audit {
    /// The structured audit line: who, which client, what, the decision and the deciding policies.
    pub fn to_json(&self, identity: &VerifiedToken) -> String {
        let claim = |name: &str| {
            identity
                .claims
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let client = ["client_id", "azp", "cid"]
            .iter()
            .map(|c| claim(c))
            .find(|c| !c.is_empty())
            .unwrap_or_default();
        json!({
            "subject": identity.subject.as_deref().unwrap_or_default(),
            "client_id": client,
            "method": self.method,
            "target": self.target,
            "decision": if self.allowed { "allow" } else { "deny" },
            "policies": self.policies,
            "reason": self.reason,
        })
        .to_string()
    }
}

pub fn decide(
    config: &FilterConfig,
    authz: Option<&Authorizer>,
    annotations: &ToolAnnotations,
    identity: &VerifiedToken,
    headers: &CallHeaders,
    body: &[u8],
) -> (CallVerdict, Option<Audit>) {
    let message = match jsonrpc::parse(headers.content_type.as_deref(), body) {
        Ok(message) => message,
        Err(err) => return (refuse(400, None, err.code(), &err.to_string()), None),
    };
    let Message::Call { id, method, params } = message else {
        return (CallVerdict::Pass(None), None);
    };
    if let Err(mismatch) = mcp_headers::check(
        headers.mcp_method.as_deref(),
        headers.mcp_name.as_deref(),
        &method,
        &params,
    ) {
        return (
            refuse(400, id.as_ref(), HEADER_MISMATCH, &mismatch.to_string()),
            None,
        );
    }
    let operation = operation::classify(&method, &params);
    let Some(authz) = authz else {
        // Without Cedar the filter authenticates, and applies `tool_scopes`, only.
        return match operation {
            Operation::Use {
                feature: Feature::Tool,
                target,
                ..
            } => match missing_tool_scopes(config, identity, target) {
                Some(refusal) => (CallVerdict::Refuse(refusal), None),
                None => (CallVerdict::Pass(None), None),
            },
            _ => (CallVerdict::Pass(None), None),
        };
    };
    match operation {
        Operation::AlwaysAllowed => (CallVerdict::Pass(None), None),
        Operation::List(feature) => (
            CallVerdict::Pass(id.map(|request_id| PendingList {
                feature,
                request_id,
            })),
            None,
        ),
        Operation::MissingTarget(feature) => {
            let message = format!("{method} needs `params.{}`", feature.id_key());
            (refuse(400, id.as_ref(), INVALID_PARAMS, &message), None)
        }
        Operation::Unknown => {
            let audit = Audit {
                method: method.clone(),
                target: String::new(),
                allowed: false,
                policies: vec![],
                reason: "method not allowed (default deny)".into(),
            };
            (
                refuse(
                    403,
                    id.as_ref(),
                    403,
                    "method denied by authorization policy",
                ),
                Some(audit),
            )
        }
        Operation::Use {
            feature,
            target,
            arguments,
        } => {
            if feature == Feature::Tool {
                if let Some(refusal) = missing_tool_scopes(config, identity, target) {
                    let audit = Audit {
                        method,
                        target: target.to_owned(),
                        allowed: false,
                        policies: vec![],
                        reason: "insufficient_scope".into(),
                    };
                    return (CallVerdict::Refuse(refusal), Some(audit));
                }
            }
            let known = if feature == Feature::Tool {
                annotations.get(target)
            } else {
                None
            };
            let decision = authz.caller(identity).map(|caller| {
                authz.decide(
                    &caller,
                    &Target {
                        feature,
                        name: target,
                        arguments,
                        annotations: known,
                    },
                )
            });
            let (allowed, policies, reason) = match decision {
                Ok(d) => (d.allowed, d.policies, d.errors.join("; ")),
                Err(err) => (false, vec![], err.to_string()),
            };
            let audit = Audit {
                method,
                target: target.to_owned(),
                allowed,
                policies,
                reason,
            };
            if allowed {
                (CallVerdict::Pass(None), Some(audit))
            } else {
                let message = format!("{} denied by authorization policy", feature.operation());
                (refuse(403, id.as_ref(), 403, &message), Some(audit))
            }
        }
    }
}

fn refuse(status: u32, id: Option<&RequestId>, code: i64, message: &str) -> CallVerdict {
    let id = id.map(RequestId::to_value);
    CallVerdict::Refuse(response::jsonrpc_error(status, id.as_ref(), code, message))
}

/// A step-up answer when the token lacks a scope `tool_scopes` requires for this tool.
fn missing_tool_scopes(
    config: &FilterConfig,
    identity: &VerifiedToken,
    tool: &str,
) -> Option<LocalResponse> {
    let needed = config.tool_scopes.required_for(tool);
    let granted = identity.scopes();
    if needed.iter().all(|scope| granted.contains(&scope.as_str())) {
        return None;
    }
    let mut ask: Vec<String> = config.required_scopes.clone();
    for scope in needed {
        if !ask.contains(&scope) {
            ask.push(scope);
        }
    }
    Some(response::refusal(
        config,
        &Rejection::InsufficientScope(ask),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    struct Fixture {
        config: FilterConfig,
        annotations: ToolAnnotations,
    }

    fn fixture(policies: &[&str]) -> Fixture {
        let raw = json!({
            "resource": "https://mcp.example.com/mcp",
            "issuers": [{"issuer": "https://mcp.example.com", "jwks": {"cluster": "a", "path": "/jwks"}}],
            "required_scopes": ["mcp:tools"],
            "tool_scopes": {"delete_*": ["mcp:admin"]},
            "cedar": {"policies": policies},
        });
        Fixture {
            config: FilterConfig::from_json(raw.to_string().as_bytes()).unwrap(),
            annotations: ToolAnnotations::default(),
        }
    }

    fn identity(groups: &[&str], scope: &str) -> VerifiedToken {
        let claims: Map<String, Value> =
            json!({"sub": "alice", "client_id": "vscode", "groups": groups, "scope": scope})
                .as_object()
                .cloned()
                .unwrap();
        VerifiedToken {
            issuer: "i".into(),
            subject: Some("alice".into()),
            expires_at: 0,
            key_id: String::new(),
            digest: [0; 32],
            claims,
        }
    }

    fn json_headers() -> CallHeaders {
        CallHeaders {
            content_type: Some("application/json".into()),
            ..CallHeaders::default()
        }
    }

    fn run(
        f: &Fixture,
        who: &VerifiedToken,
        headers: &CallHeaders,
        body: Value,
    ) -> (CallVerdict, Option<Audit>) {
        let authz = f.config.authorizer.as_deref();
        decide(
            &f.config,
            authz,
            &f.annotations,
            who,
            headers,
            body.to_string().as_bytes(),
        )
    }

    fn refused(verdict: CallVerdict) -> (u32, Value) {
        match verdict {
            CallVerdict::Refuse(response) => (
                response.status,
                serde_json::from_str(&response.body).unwrap(),
            ),
            CallVerdict::Pass(_) => panic!("expected a refusal"),
        }
    }

    const DEVS: &str = r#"permit(principal in THVGroup::"mcp-developers", action, resource);
                          forbid(principal in THVGroup::"mcp-developers", action == Action::"call_tool", resource == Tool::"get-env");"#;

    fn call(name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": name, "arguments": {}}})
    }

    #[test]
    fn an_allowed_call_passes_and_is_audited() {
        let f = fixture(&[DEVS]);
        let (verdict, audit) = run(
            &f,
            &identity(&["mcp-developers"], "mcp:tools"),
            &json_headers(),
            call("echo"),
        );
        assert!(matches!(verdict, CallVerdict::Pass(None)));
        let audit = audit.unwrap();
        assert!(audit.allowed);
        let line: Value = serde_json::from_str(&audit.to_json(&identity(&[], ""))).unwrap();
        assert_eq!(
            (
                line["subject"].as_str(),
                line["client_id"].as_str(),
                line["decision"].as_str()
            ),
            (Some("alice"), Some("vscode"), Some("allow"))
        );
        assert_eq!(line["target"], "echo");
    }

    #[test]
    fn a_denied_call_gets_the_jsonrpc_403_without_policy_names() {
        let f = fixture(&[DEVS]);
        let (verdict, audit) = run(
            &f,
            &identity(&["mcp-developers"], "mcp:tools"),
            &json_headers(),
            call("get-env"),
        );
        let (status, body) = refused(verdict);
        assert_eq!(status, 403);
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "id": 11, "error": {"code": 403, "message": "call denied by authorization policy"}})
        );
        assert_eq!(
            audit.unwrap().policies,
            ["policies[0]#1"],
            "the log names the forbid"
        );
    }

    #[test]
    fn a_user_in_no_group_is_denied_everything_but_lifecycle() {
        let f = fixture(&[DEVS]);
        let nobody = identity(&[], "mcp:tools");
        assert_eq!(
            refused(run(&f, &nobody, &json_headers(), call("echo")).0).0,
            403
        );
        let prompt =
            json!({"jsonrpc": "2.0", "id": 2, "method": "prompts/get", "params": {"name": "p"}});
        assert_eq!(
            refused(run(&f, &nobody, &json_headers(), prompt).0).1["error"]["message"],
            "get denied by authorization policy"
        );
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
        assert!(matches!(
            run(&f, &nobody, &json_headers(), init).0,
            CallVerdict::Pass(None)
        ));
    }

    #[test]
    fn lists_pass_and_are_marked_for_filtering() {
        let f = fixture(&[DEVS]);
        let list = json!({"jsonrpc": "2.0", "id": "l1", "method": "resources/list"});
        let (verdict, _) = run(&f, &identity(&[], ""), &json_headers(), list);
        let CallVerdict::Pass(Some(pending)) = verdict else {
            panic!()
        };
        assert_eq!(
            pending,
            PendingList {
                feature: Feature::Resource,
                request_id: RequestId::Str("l1".into())
            }
        );
    }

    #[test]
    fn unknown_methods_are_denied_by_default() {
        let f = fixture(&["permit(principal, action, resource);"]);
        let odd = json!({"jsonrpc": "2.0", "id": 3, "method": "resources/templates/list"});
        let (status, body) = refused(run(&f, &identity(&[], ""), &json_headers(), odd).0);
        assert_eq!((status, body["error"]["code"].as_i64()), (403, Some(403)));
    }

    #[test]
    fn a_batch_and_bad_json_are_400() {
        let f = fixture(&[DEVS]);
        let batch = json!([call("echo")]);
        let (status, body) = refused(run(&f, &identity(&[], ""), &json_headers(), batch).0);
        assert_eq!(
            (status, body["error"]["code"].as_i64()),
            (400, Some(-32600))
        );
        let authz = f.config.authorizer.as_deref();
        let (verdict, _) = decide(
            &f.config,
            authz,
            &f.annotations,
            &identity(&[], ""),
            &json_headers(),
            b"{oops",
        );
        assert_eq!(refused(verdict).1["error"]["code"], -32700);
        let text = CallHeaders {
            content_type: Some("text/plain".into()),
            ..CallHeaders::default()
        };
        assert_eq!(
            refused(run(&f, &identity(&[], ""), &text, call("echo")).0).1["error"]["code"],
            -32700
        );
    }

    #[test]
    fn a_header_body_mismatch_is_400_header_mismatch() {
        let f = fixture(&[DEVS]);
        let headers = CallHeaders {
            mcp_method: Some("tools/call".into()),
            mcp_name: Some("echo".into()),
            ..json_headers()
        };
        let (status, body) = refused(
            run(
                &f,
                &identity(&["mcp-developers"], "mcp:tools"),
                &headers,
                call("get-env"),
            )
            .0,
        );
        assert_eq!(
            (status, body["error"]["code"].as_i64()),
            (400, Some(-32020))
        );
        assert_eq!(body["id"], 11);
    }

    #[test]
    fn a_tool_scope_gap_is_a_step_up_before_cedar() {
        let f = fixture(&["permit(principal, action, resource);"]);
        let (verdict, audit) = run(
            &f,
            &identity(&[], "mcp:tools"),
            &json_headers(),
            call("delete_namespace"),
        );
        let CallVerdict::Refuse(response) = verdict else {
            panic!()
        };
        assert_eq!(response.status, 403);
        let challenge = &response
            .headers
            .iter()
            .find(|(n, _)| n == "www-authenticate")
            .unwrap()
            .1;
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(
            challenge.contains("scope=\"mcp:tools mcp:admin\""),
            "{challenge}"
        );
        assert_eq!(audit.unwrap().reason, "insufficient_scope");
        let (verdict, _) = run(
            &f,
            &identity(&[], "mcp:tools mcp:admin"),
            &json_headers(),
            call("delete_namespace"),
        );
        assert!(matches!(verdict, CallVerdict::Pass(None)));
    }

    #[test]
    fn annotations_come_from_the_servers_list_not_the_request() {
        let mut f = fixture(&[
            r#"permit(principal, action == Action::"call_tool", resource) when { resource.readOnlyHint == true };"#,
        ]);
        let who = identity(&[], "mcp:tools");
        let mut forged = call("rm");
        forged["params"]["annotations"] = json!({"readOnlyHint": true});
        assert_eq!(
            refused(run(&f, &who, &json_headers(), forged.clone()).0).0,
            403
        );
        f.annotations.learn(&[
            json!({"name": "ls", "annotations": {"readOnlyHint": true}}),
            json!({"name": "rm", "annotations": {"readOnlyHint": false}}),
        ]);
        assert!(matches!(
            run(&f, &who, &json_headers(), call("ls")).0,
            CallVerdict::Pass(None)
        ));
        assert_eq!(refused(run(&f, &who, &json_headers(), forged).0).0, 403);
    }

    #[test]
    fn client_replies_pass() {
        let f = fixture(&[DEVS]);
        let reply = json!({"jsonrpc": "2.0", "id": "server-1", "result": {}});
        assert!(matches!(
            run(&f, &identity(&[], ""), &json_headers(), reply).0,
            CallVerdict::Pass(None)
        ));
    }
}

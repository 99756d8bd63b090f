//! The decision on one buffered MCP POST: parse, check the routing headers, look the method up
//! in the method table, check per-tool scopes, ask Cedar, open bound task ids. Pure, like `gate`;
//! the adapter carries the verdict out, and does to the answer what `Forward::answer` says.

use serde_json::{json, Map, Value};

use crate::annotations::ToolAnnotations;
use crate::authz::{Authorizer, CedarMode, Decision, Target};
use crate::binding::BindingError;
use crate::config::FilterConfig;
use crate::jsonrpc::{self, Message, RequestId, HEADER_MISMATCH, INVALID_PARAMS};
use crate::mcp_headers;
use crate::operation::{self, Feature, Kind, Operation, Use};
use crate::rejection::Rejection;
use crate::response::{self, LocalResponse};
use crate::tasks::{self, Owner};
use crate::telemetry::{Audit, Caller, Reason};
use crate::verify::VerifiedToken;

/// JSON-RPC "Method not found".
pub const METHOD_NOT_FOUND: i64 = -32601;
/// HTTP status of a method the filter does not know. Not 403: nothing was decided about the
/// caller. Not 404: a 2025-11-25 client takes a 404 to a request with a session as "session
/// gone" and starts over. 400 with a JSON-RPC body is what 2026-07-28 clients recognise as a
/// modern server refusing a request (as for a header mismatch or an unsupported version).
pub const UNKNOWN_METHOD_STATUS: u32 = 400;
/// JSON-RPC code of a use Cedar denied (ToolHive's).
const DENIED: i64 = 403;

/// The request headers the body decision needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallHeaders {
    pub content_type: Option<String>,
    pub mcp_method: Option<String>,
    pub mcp_name: Option<String>,
}

/// What the adapter does to a request let through, and to its answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forward {
    /// Forward this body instead of the client's (a task method, its task id opened).
    pub body: Option<Vec<u8>>,
    /// The answer needs work before the client may see it.
    pub answer: Option<PendingAnswer>,
}

/// An answer to watch for: the message with `request_id`, in JSON or in an SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAnswer {
    pub request_id: Value,
    pub work: AnswerWork,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnswerWork {
    /// Cut the list to what the caller may use (`list_filter` with `list_decisions::keep_listed`).
    Cut(Kind),
    /// Seal the task ids with `tasks::seal_answer(key, owner, message, request_id, asked)`.
    SealTasks { asked: Option<String> },
    /// Keep only the caller's tasks with `tasks::keep_own_tasks`.
    OwnTasks,
    /// Nothing to change, but the answer may carry no list (`tools`, `prompts`, `resources`,
    /// `resourceTemplates`, `tasks`): one that does was meant for another request.
    Guard,
}

#[derive(Debug)]
pub enum CallVerdict {
    Pass(Forward),
    Refuse(LocalResponse),
}

/// The verdict on one MCP POST. Without an authorizer (no `cedar` section) the filter decides no
/// method: `tool_scopes` still apply and task ids are still bound when `binding_key` is set.
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
        return pass(Forward::default());
    };
    // The id as the answer and the refusals carry it (a canonical string or safe integer).
    let id = id.as_ref().map(RequestId::to_value);
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
    let call = Call {
        config,
        authz,
        identity,
        id: id.as_ref(),
        method: &method,
        params: &params,
    };
    let operation = operation::classify(&method, &params, &config.methods);
    let listing = matches!(operation, Operation::List(_));
    let (mut verdict, audit) = match operation {
        Operation::AlwaysAllowed => pass(Forward::default()),
        Operation::List(kind) => pass(Forward {
            body: None,
            answer: call.pending(authz.is_some(), AnswerWork::Cut(kind)),
        }),
        Operation::Invalid(message) => (refuse(400, id.as_ref(), INVALID_PARAMS, &message), None),
        Operation::Unknown if authz.is_none() => pass(Forward::default()),
        Operation::Unknown => {
            let message = format!(
                "method `{method}` is not known to mcp-mesh-auth; list it under `methods` in the filter configuration to allow or authorise it"
            );
            let audit = call.audit(String::new(), vec![], Reason::UnknownMethod);
            (
                refuse(
                    UNKNOWN_METHOD_STATUS,
                    id.as_ref(),
                    METHOD_NOT_FOUND,
                    &message,
                ),
                Some(audit),
            )
        }
        Operation::Authorize(uses) => call.authorize(annotations, &uses),
        Operation::Task(sealed) => call.task(sealed),
        Operation::TaskList => match (&config.binding_key, authz) {
            (Some(_), _) => pass(Forward {
                body: None,
                answer: call.pending(true, AnswerWork::OwnTasks),
            }),
            (None, None) => pass(Forward::default()),
            (None, Some(_)) => (call.no_binding_key(), None),
        },
    };
    // Any other answer must carry no list: a server that writes a list answer to the stream of
    // another request with the same id (clients may reuse ids) must not get it past uncut.
    if let (CallVerdict::Pass(forward), false, Some(_)) = (&mut verdict, listing, authz) {
        if forward.answer.is_none() {
            forward.answer = call.pending(true, AnswerWork::Guard);
        }
    }
    (verdict, audit)
}

/// One request being decided.
struct Call<'a> {
    config: &'a FilterConfig,
    authz: Option<&'a Authorizer>,
    identity: &'a VerifiedToken,
    id: Option<&'a Value>,
    method: &'a str,
    params: &'a Map<String, Value>,
}

impl Call<'_> {
    /// Answer work for a request (a notification has no answer).
    fn pending(&self, needed: bool, work: AnswerWork) -> Option<PendingAnswer> {
        self.id.filter(|_| needed).map(|request_id| PendingAnswer {
            request_id: request_id.clone(),
            work,
        })
    }

    fn audit(&self, target: String, policies: Vec<String>, reason: Reason) -> Audit {
        Audit {
            caller: Caller::of(self.identity),
            method: self.method.to_owned(),
            target,
            policies,
            reason,
            detail: String::new(),
            shadow: false,
            removed: None,
        }
    }

    /// Tool scopes first (a step-up names the scope to ask for), then Cedar: every use must be
    /// permitted. A task-augmented request's answer has its task id sealed.
    fn authorize(
        &self,
        annotations: &ToolAnnotations,
        uses: &[Use<'_>],
    ) -> (CallVerdict, Option<Audit>) {
        let targets = || {
            uses.iter()
                .map(|u| u.target.as_ref())
                .collect::<Vec<_>>()
                .join(" ")
        };
        for tool in uses.iter().filter(|u| u.kind == Kind::Item(Feature::Tool)) {
            if let Some(refusal) = missing_tool_scopes(self.config, self.identity, &tool.target) {
                let audit = self.audit(tool.target.to_string(), vec![], Reason::InsufficientScope);
                return (CallVerdict::Refuse(refusal), Some(audit));
            }
        }
        let task_augmented = self.params.get("task").is_some_and(Value::is_object);
        if task_augmented && self.config.binding_key.is_none() && self.authz.is_some() {
            return (self.no_binding_key(), None);
        }
        let forward = Forward {
            body: None,
            answer: self.pending(
                task_augmented && self.config.binding_key.is_some(),
                AnswerWork::SealTasks { asked: None },
            ),
        };
        let Some(authz) = self.authz else {
            return pass(forward);
        };
        let shadow = authz.mode == CedarMode::Shadow;
        let caller = match authz.caller(self.identity) {
            Ok(caller) => caller,
            Err(err) => {
                let message = match uses.first() {
                    Some(first) => format!(
                        "{} denied by authorization policy: no policy decided: {err}",
                        first.kind.operation()
                    ),
                    None => err.to_string(),
                };
                let mut audit = self.audit(targets(), vec![], Reason::UnusableCaller);
                audit.detail = format!("no policy decided: {err}");
                audit.shadow = shadow;
                if shadow {
                    return (CallVerdict::Pass(forward), Some(audit));
                }
                return (self.denied(&message), Some(audit));
            }
        };
        let items: Vec<Target<'_>> = uses
            .iter()
            .map(|u| Target {
                kind: u.kind,
                name: &u.target,
                arguments: u.arguments,
                // Hints as the server declared them in its list, never as the request claims.
                annotations: annotations
                    .get(&u.target)
                    .filter(|_| u.kind == Kind::Item(Feature::Tool)),
            })
            .collect();
        let decisions = authz.decide_all(&caller, &items);
        let policies: Vec<String> = decisions.iter().flat_map(|d| d.policies.clone()).collect();
        let principal = caller.uid.to_string();
        let allowed = decisions.iter().all(|d| d.allowed);
        // What decided: every permit of an allow; only the refused uses of a denial.
        let reason: Vec<String> = (decisions.iter().zip(&items))
            .filter(|(d, _)| allowed || !d.allowed)
            .map(|(d, item)| d.reason(&principal, item))
            .collect();
        let denied = uses.iter().zip(&decisions).find(|(_, d)| !d.allowed);
        let why = match denied {
            None => Reason::PolicyPermit,
            Some((_, decision)) => denial_reason(decision),
        };
        let mut audit = self.audit(targets(), policies, why);
        audit.detail = reason.join("; ");
        audit.shadow = shadow;
        match denied {
            None => (CallVerdict::Pass(forward), Some(audit)),
            // Shadow mode: the denial is logged and counted, the call goes on.
            Some(_) if shadow => (CallVerdict::Pass(forward), Some(audit)),
            Some((denied, decision)) => {
                let message = denial(denied, decision);
                (self.denied(&message), Some(audit))
            }
        }
    }

    /// A task method: the presented id must open for the caller; the server gets its own id.
    fn task(&self, sealed: &str) -> (CallVerdict, Option<Audit>) {
        let Some(key) = &self.config.binding_key else {
            return match self.authz {
                None => pass(Forward::default()),
                Some(_) => (self.no_binding_key(), None),
            };
        };
        let opened = Owner::of(self.identity)
            .ok_or_else(|| BindingError::Foreign(sealed.to_owned()))
            .and_then(|owner| tasks::open_id(key, owner, sealed));
        match opened {
            Ok(server_id) => {
                let forward = Forward {
                    body: Some(tasks::forward_request(
                        self.id,
                        self.method,
                        self.params,
                        &server_id,
                    )),
                    answer: self.pending(
                        true,
                        AnswerWork::SealTasks {
                            asked: Some(server_id),
                        },
                    ),
                };
                let audit = self.audit(sealed.to_owned(), vec![], Reason::OwnTask);
                (CallVerdict::Pass(forward), Some(audit))
            }
            Err(err) => {
                let status = match err {
                    BindingError::Malformed(_) => 400,
                    BindingError::Foreign(_) => 403,
                };
                let mut audit = self.audit(sealed.to_owned(), vec![], Reason::ForeignTask);
                audit.detail = err.to_string();
                (
                    refuse(status, self.id, INVALID_PARAMS, &err.to_string()),
                    Some(audit),
                )
            }
        }
    }

    /// An authorization denial; the operator's `denial_help` (whom to ask, a URL) goes in the
    /// error's `data` so that the end user's client can show it.
    fn denied(&self, message: &str) -> CallVerdict {
        let mut answer = response::jsonrpc_error(403, self.id, DENIED, message);
        if let Some(help) = &self.config.denial_help {
            answer.body =
                jsonrpc::error_body_with_data(self.id, DENIED, message, json!({"help": help}));
        }
        CallVerdict::Refuse(answer)
    }

    /// Tasks cannot be bound to their creator without a key: refused rather than left open.
    fn no_binding_key(&self) -> CallVerdict {
        let message = format!(
            "{} uses tasks, which mcp-mesh-auth binds to their creator: set `binding_key` (32+ random bytes, base64) in the filter configuration",
            self.method
        );
        refuse(403, self.id, DENIED, &message)
    }
}

fn pass(forward: Forward) -> (CallVerdict, Option<Audit>) {
    (CallVerdict::Pass(forward), None)
}

/// Why Cedar said no, as the logs and metrics label it (the same cases as [`denial`]).
fn denial_reason(decision: &Decision) -> Reason {
    if !decision.errors.is_empty() {
        Reason::PolicyError
    } else if !decision.policies.is_empty() {
        Reason::PolicyForbid
    } else {
        Reason::DefaultDeny
    }
}

/// Why Cedar said no, in words the caller can act on; which policy stays in the log.
fn denial(denied: &Use<'_>, decision: &Decision) -> String {
    let kind = denied.kind;
    let what = format!(
        "`{}` on `{}::{:?}`",
        kind.action(),
        kind.entity_type(),
        denied.target.as_ref()
    );
    let why = if decision.refused.is_some() {
        format!("no policy decided: {what} could not be evaluated, which denies (details in the filter log)")
    } else if !decision.errors.is_empty() {
        format!("a policy failed to evaluate for {what}, which denies (details in the filter log)")
    } else if !decision.policies.is_empty() {
        format!("a policy forbids {what}")
    } else {
        format!("no policy permits {what} (default deny)")
    };
    format!("{} denied by authorization policy: {why}", kind.operation())
}

fn refuse(status: u32, id: Option<&Value>, code: i64, message: &str) -> CallVerdict {
    CallVerdict::Refuse(response::jsonrpc_error(status, id, code, message))
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
    use serde_json::{json, Map};

    struct Fixture {
        config: FilterConfig,
        annotations: ToolAnnotations,
    }

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn fixture(policies: &[&str]) -> Fixture {
        let raw = json!({
            "resource": "https://mcp.example.com/mcp",
            "issuers": [{"issuer": "https://mcp.example.com", "jwks": {"cluster": "a", "path": "/jwks"}}],
            "required_scopes": ["mcp:tools"],
            "tool_scopes": {"delete_*": ["mcp:admin"]},
            "cedar": {"policies": policies},
            "binding_key": KEY,
            "methods": {"x/allowed": "allow",
                        "x/run": {"authorize": {"action": "call_tool", "target": "params.tool"}}},
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
        decide(
            &f.config,
            f.config.authorizer.as_deref(),
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

    /// What passes for a request that is not a list: its answer may carry none.
    fn guarded(id: i64) -> Forward {
        Forward {
            body: None,
            answer: Some(PendingAnswer {
                request_id: json!(id),
                work: AnswerWork::Guard,
            }),
        }
    }

    fn passed(verdict: CallVerdict) -> Forward {
        match verdict {
            CallVerdict::Pass(forward) => forward,
            CallVerdict::Refuse(response) => panic!("refused: {}", response.body),
        }
    }

    fn request(method: &str, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
    }

    const ALL: &str = r#"permit(principal in THVGroup::"mcp-developers", action, resource);"#;

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
        assert_eq!(passed(verdict), guarded(11));
        let audit = audit.unwrap();
        assert_eq!(audit.decision(), "allow");
        let line: Value = serde_json::from_str(&audit.to_json()).unwrap();
        assert_eq!(
            (
                line["subject"].as_str(),
                line["client_id"].as_str(),
                line["decision"].as_str()
            ),
            (Some("alice"), Some("vscode"), Some("allow"))
        );
        assert_eq!(line["target"], "echo");
        assert_eq!(line["reason"], "policy_permit");
        assert_eq!(line["detail"], "permitted by `policies[0]#0`");
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
            json!({"jsonrpc": "2.0", "id": 11, "error": {"code": 403, "message":
                "call denied by authorization policy: a policy forbids `call_tool` on `Tool::\"get-env\"`"}})
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
            "get denied by authorization policy: no policy permits `get_prompt` on `Prompt::\"p\"` (default deny)"
        );
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
        assert_eq!(
            passed(run(&f, &nobody, &json_headers(), init).0),
            guarded(1)
        );
    }

    fn shadow_fixture(policies: &[&str]) -> Fixture {
        let mut f = fixture(policies);
        let raw = json!({
            "resource": "https://mcp.example.com/mcp",
            "issuers": [{"issuer": "https://mcp.example.com", "jwks": {"cluster": "a", "path": "/jwks"}}],
            "required_scopes": ["mcp:tools"],
            "tool_scopes": {"delete_*": ["mcp:admin"]},
            "cedar": {"policies": policies, "mode": "shadow"},
            "binding_key": KEY,
        });
        f.config = FilterConfig::from_json(raw.to_string().as_bytes()).unwrap();
        f
    }

    #[test]
    fn a_default_deny_and_a_forbid_are_audited_with_their_reason() {
        let f = fixture(&[DEVS]);
        let (_, audit) = run(
            &f,
            &identity(&[], "mcp:tools"),
            &json_headers(),
            call("echo"),
        );
        let audit = audit.unwrap();
        assert_eq!(
            (audit.decision(), audit.reason, audit.shadow),
            ("deny", Reason::DefaultDeny, false)
        );
        let (_, audit) = run(
            &f,
            &identity(&["mcp-developers"], "mcp:tools"),
            &json_headers(),
            call("get-env"),
        );
        assert_eq!(audit.unwrap().reason, Reason::PolicyForbid);
        let (_, audit) = run(
            &f,
            &identity(&["mcp-developers"], "mcp:tools"),
            &json_headers(),
            call("echo"),
        );
        assert_eq!(audit.unwrap().reason, Reason::PolicyPermit);
    }

    #[test]
    fn in_shadow_mode_a_denied_call_passes_and_is_audited_as_a_shadow_deny() {
        let f = shadow_fixture(&[DEVS]);
        let (verdict, audit) = run(
            &f,
            &identity(&["mcp-developers"], "mcp:tools"),
            &json_headers(),
            call("get-env"),
        );
        assert_eq!(passed(verdict), guarded(11), "the call goes on");
        let audit = audit.unwrap();
        assert_eq!(
            (audit.decision(), audit.reason, audit.shadow),
            ("deny", Reason::PolicyForbid, true)
        );
        assert_eq!(audit.policies, ["policies[0]#1"]);
        let (verdict, audit) = run(
            &f,
            &identity(&[], "mcp:tools"),
            &json_headers(),
            call("echo"),
        );
        passed(verdict);
        assert_eq!(audit.unwrap().reason, Reason::DefaultDeny);
    }

    #[test]
    fn shadow_mode_does_not_shadow_scopes_or_unknown_methods() {
        let f = shadow_fixture(&[ALL]);
        let who = identity(&["mcp-developers"], "mcp:tools");
        let (verdict, audit) = run(&f, &who, &json_headers(), call("delete_all"));
        assert_eq!(refused(verdict).0, 403, "tool_scopes still step up");
        assert!(!audit.unwrap().shadow);
        let (verdict, audit) = run(&f, &who, &json_headers(), request("x/unknown", json!({})));
        assert_eq!(refused(verdict).0, UNKNOWN_METHOD_STATUS);
        assert!(!audit.unwrap().shadow);
    }

    #[test]
    fn a_default_deny_is_logged_with_who_what_and_that_no_policy_permitted_it() {
        let f = fixture(&[DEVS]);
        let (verdict, audit) = run(
            &f,
            &identity(&[], "mcp:tools"),
            &json_headers(),
            call("echo"),
        );
        assert_eq!(refused(verdict).0, 403);
        let audit = audit.unwrap();
        assert!(audit.policies.is_empty());
        assert_eq!(audit.reason, Reason::DefaultDeny);
        assert_eq!(
            audit.detail,
            r#"no policy permits Client::"alice" `call_tool` on Tool::"echo" (default deny)"#
        );
    }

    #[test]
    fn denial_help_travels_in_the_error_data_of_denials_only() {
        let mut f = fixture(&[DEVS]);
        f.config.denial_help = Some("https://wiki.example.com/mcp-access".into());
        let (_, body) = refused(
            run(
                &f,
                &identity(&[], "mcp:tools"),
                &json_headers(),
                call("echo"),
            )
            .0,
        );
        assert_eq!(
            body["error"]["data"],
            json!({"help": "https://wiki.example.com/mcp-access"})
        );
        assert_eq!(body["error"]["code"], 403);
        let unknown = request("x/unknown", json!({}));
        let (_, body) = refused(run(&f, &identity(&[], "mcp:tools"), &json_headers(), unknown).0);
        assert!(body["error"].get("data").is_none(), "not a denial: {body}");
    }

    #[test]
    fn a_refusal_no_policy_decided_says_so() {
        let f = fixture(&[ALL]);
        let mut nameless = identity(&["mcp-developers"], "mcp:tools");
        nameless.claims.remove("sub");
        nameless.claims.remove("client_id");
        let (verdict, audit) = run(&f, &nameless, &json_headers(), call("echo"));
        let (_, body) = refused(verdict);
        let message = body["error"]["message"].as_str().unwrap();
        assert_eq!(
            message,
            "call denied by authorization policy: no policy decided: the token has no `sub`, `client_id`, `cid` or `azp` to name the principal"
        );
        let audit = audit.unwrap();
        assert!(audit.policies.is_empty());
        assert_eq!(audit.reason, Reason::UnusableCaller);
        assert!(
            audit
                .detail
                .starts_with("no policy decided: the token has no `sub`"),
            "{}",
            audit.detail
        );
        let decision = Decision {
            allowed: false,
            policies: vec![],
            errors: vec![],
            refused: Some("entities: internal detail".into()),
        };
        let message = denial(
            &Use {
                kind: Kind::Item(Feature::Tool),
                target: "t".into(),
                arguments: None,
            },
            &decision,
        );
        assert_eq!(
            message,
            "call denied by authorization policy: no policy decided: `call_tool` on `Tool::\"t\"` could not be evaluated, which denies (details in the filter log)"
        );
    }

    #[test]
    fn lists_pass_and_are_marked_for_filtering() {
        let f = fixture(&[DEVS]);
        let list = json!({"jsonrpc": "2.0", "id": "l1", "method": "resources/list"});
        let (verdict, _) = run(&f, &identity(&[], ""), &json_headers(), list);
        assert_eq!(
            passed(verdict).answer,
            Some(PendingAnswer {
                request_id: json!("l1"),
                work: AnswerWork::Cut(Kind::Item(Feature::Resource)),
            })
        );
    }

    #[test]
    fn resource_templates_are_listed_and_cut_like_the_other_lists() {
        let f = fixture(&[ALL]);
        let list = request("resources/templates/list", json!({}));
        let (verdict, audit) = run(
            &f,
            &identity(&["mcp-developers"], ""),
            &json_headers(),
            list,
        );
        assert_eq!(
            passed(verdict).answer.unwrap().work,
            AnswerWork::Cut(Kind::ResourceTemplate)
        );
        assert!(audit.is_none());
    }

    #[test]
    fn unknown_methods_are_refused_as_unknown_not_as_denied() {
        let f = fixture(&["permit(principal, action, resource);"]);
        for method in ["sampling/createMessage", "roots/list", "x/y"] {
            let (verdict, audit) = run(
                &f,
                &identity(&[], ""),
                &json_headers(),
                request(method, json!({})),
            );
            let (status, body) = refused(verdict);
            assert_eq!(
                (status, body["error"]["code"].as_i64()),
                (400, Some(-32601))
            );
            let message = body["error"]["message"].as_str().unwrap();
            assert_eq!(
                message,
                format!("method `{method}` is not known to mcp-mesh-auth; list it under `methods` in the filter configuration to allow or authorise it")
            );
            assert_eq!(audit.unwrap().reason, Reason::UnknownMethod);
        }
    }

    #[test]
    fn the_standard_methods_of_both_revisions_pass_a_permit_all_policy() {
        let f = fixture(&[ALL]);
        let dev = identity(&["mcp-developers"], "mcp:tools");
        let task = f.config.binding_key.as_ref().unwrap().seal(
            crate::binding::Purpose::Task,
            "t1",
            "i",
            "alice",
        );
        for (method, params) in [
            ("initialize", json!({})),
            ("ping", json!({})),
            ("server/discover", json!({})),
            ("logging/setLevel", json!({"level": "info"})),
            ("tools/list", json!({})),
            ("prompts/list", json!({})),
            ("resources/list", json!({})),
            ("resources/templates/list", json!({})),
            ("tools/call", json!({"name": "echo"})),
            ("prompts/get", json!({"name": "p"})),
            ("resources/read", json!({"uri": "file:///a"})),
            ("resources/subscribe", json!({"uri": "file:///a"})),
            ("resources/unsubscribe", json!({"uri": "file:///a"})),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "p"}}),
            ),
            (
                "subscriptions/listen",
                json!({"notifications": {"resourceSubscriptions": ["file:///a"]}}),
            ),
            ("tasks/get", json!({"taskId": task})),
            ("tasks/result", json!({"taskId": task})),
            ("tasks/cancel", json!({"taskId": task})),
            ("tasks/list", json!({})),
            ("notifications/initialized", json!({})),
            ("notifications/tasks/status", json!({"taskId": "x"})),
        ] {
            let (verdict, _) = run(&f, &dev, &json_headers(), request(method, params));
            assert!(
                matches!(verdict, CallVerdict::Pass(_)),
                "{method}: {verdict:?}"
            );
        }
    }

    #[test]
    fn configured_methods_are_allowed_or_put_to_cedar() {
        let f = fixture(&[DEVS]);
        let dev = identity(&["mcp-developers"], "mcp:tools");
        assert!(matches!(
            run(
                &f,
                &identity(&[], ""),
                &json_headers(),
                request("x/allowed", json!({}))
            )
            .0,
            CallVerdict::Pass(_)
        ));
        assert!(matches!(
            run(
                &f,
                &dev,
                &json_headers(),
                request("x/run", json!({"tool": "echo"}))
            )
            .0,
            CallVerdict::Pass(_)
        ));
        let (status, body) = refused(
            run(
                &f,
                &dev,
                &json_headers(),
                request("x/run", json!({"tool": "get-env"})),
            )
            .0,
        );
        assert_eq!(status, 403);
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a policy forbids `call_tool` on `Tool::\"get-env\"`"));
    }

    #[test]
    fn a_completion_on_a_forbidden_prompt_is_denied() {
        let f = fixture(&[
            ALL,
            r#"forbid(principal, action == Action::"get_prompt", resource == Prompt::"secret");"#,
        ]);
        let dev = identity(&["mcp-developers"], "");
        let complete = |name: &str| {
            request(
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": name}, "argument": {"name": "a", "value": "x"}}),
            )
        };
        let (status, body) = refused(run(&f, &dev, &json_headers(), complete("secret")).0);
        assert_eq!(status, 403);
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`get_prompt` on `Prompt::\"secret\"`"));
        assert!(matches!(
            run(&f, &dev, &json_headers(), complete("open")).0,
            CallVerdict::Pass(_)
        ));
    }

    #[test]
    fn a_forbidden_resource_is_not_readable_under_another_spelling() {
        let f = fixture(&[
            ALL,
            r#"forbid(principal, action == Action::"read_resource", resource == Resource::"test://x");"#,
        ]);
        let dev = identity(&["mcp-developers"], "");
        for spelling in ["test://x", "TEST://x", "test://%78", "tEsT://X"] {
            let read = request("resources/read", json!({"uri": spelling}));
            let (status, _) = refused(run(&f, &dev, &json_headers(), read).0);
            assert_eq!(status, 403, "{spelling}");
        }
        let listen = request(
            "subscriptions/listen",
            json!({"notifications": {"resourceSubscriptions": ["file:///ok", "TEST://x"]}}),
        );
        assert_eq!(refused(run(&f, &dev, &json_headers(), listen).0).0, 403);
        let complete = request(
            "completion/complete",
            json!({"ref": {"type": "ref/resource", "uri": "TEST://x"}}),
        );
        assert_eq!(refused(run(&f, &dev, &json_headers(), complete).0).0, 403);
    }

    #[test]
    fn tool_scopes_apply_without_cedar_and_everything_else_passes() {
        let raw = json!({
            "resource": "https://mcp.example.com/mcp",
            "issuers": [{"issuer": "https://mcp.example.com", "jwks": {"cluster": "a", "path": "/jwks"}}],
            "tool_scopes": {"delete_*": ["mcp:admin"]},
        });
        let config = FilterConfig::from_json(raw.to_string().as_bytes()).unwrap();
        let who = identity(&[], "mcp:tools");
        let decide_body = |body: Value| {
            decide(
                &config,
                None,
                &ToolAnnotations::default(),
                &who,
                &json_headers(),
                body.to_string().as_bytes(),
            )
            .0
        };
        let CallVerdict::Refuse(step_up) = decide_body(call("delete_ns")) else {
            panic!("a missing tool scope is a step-up even without cedar")
        };
        assert_eq!(step_up.status, 403);
        for body in [
            call("echo"),
            request("tools/list", json!({})),
            request("x/unknown", json!({})),
        ] {
            assert_eq!(passed(decide_body(body)), Forward::default());
        }
    }

    #[test]
    fn a_task_is_used_only_by_its_creator() {
        let f = fixture(&[ALL]);
        let alice = identity(&["mcp-developers"], "");
        let mut bob = identity(&["mcp-developers"], "");
        bob.claims.insert("sub".into(), json!("bob"));
        let mut augmented = call("slow");
        augmented["params"]["task"] = json!({"ttl": 60000});
        let forward = passed(run(&f, &alice, &json_headers(), augmented).0);
        assert_eq!(
            forward.answer.unwrap().work,
            AnswerWork::SealTasks { asked: None },
            "the CreateTaskResult is sealed on its way back"
        );
        let key = f.config.binding_key.as_ref().unwrap();
        let sealed = key.seal(crate::binding::Purpose::Task, "t-1", "i", "alice");
        let get = request("tasks/get", json!({"taskId": sealed}));
        let forward = passed(run(&f, &alice, &json_headers(), get.clone()).0);
        let sent: Value = serde_json::from_slice(&forward.body.unwrap()).unwrap();
        assert_eq!(
            sent["params"]["taskId"], "t-1",
            "the server sees its own id"
        );
        assert_eq!(
            forward.answer.unwrap().work,
            AnswerWork::SealTasks {
                asked: Some("t-1".into())
            }
        );
        let (status, body) = refused(run(&f, &bob, &json_headers(), get).0);
        assert_eq!(
            (status, body["error"]["code"].as_i64()),
            (403, Some(-32602))
        );
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only its creator can use it"));
        let raw = request("tasks/result", json!({"taskId": "t-1"}));
        assert_eq!(refused(run(&f, &alice, &json_headers(), raw).0).0, 400);
        let list = request("tasks/list", json!({}));
        assert_eq!(
            passed(run(&f, &bob, &json_headers(), list).0)
                .answer
                .unwrap()
                .work,
            AnswerWork::OwnTasks
        );
    }

    #[test]
    fn without_a_binding_key_tasks_are_refused_with_what_to_set() {
        let raw = json!({
            "resource": "https://mcp.example.com/mcp",
            "issuers": [{"issuer": "https://mcp.example.com", "jwks": {"cluster": "a", "path": "/jwks"}}],
            "cedar": {"policies": [ALL]},
        });
        let config = FilterConfig::from_json(raw.to_string().as_bytes()).unwrap();
        let dev = identity(&["mcp-developers"], "");
        let mut augmented = call("slow");
        augmented["params"]["task"] = json!({});
        for body in [
            request("tasks/get", json!({"taskId": "t"})),
            request("tasks/list", json!({})),
            augmented,
        ] {
            let (verdict, _) = decide(
                &config,
                config.authorizer.as_deref(),
                &ToolAnnotations::default(),
                &dev,
                &json_headers(),
                body.to_string().as_bytes(),
            );
            let (status, reply) = refused(verdict);
            assert_eq!(status, 403);
            assert!(reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("set `binding_key`"));
        }
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
        let (verdict, _) = decide(
            &f.config,
            f.config.authorizer.as_deref(),
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
        assert_eq!(audit.unwrap().reason, Reason::InsufficientScope);
        let (verdict, _) = run(
            &f,
            &identity(&[], "mcp:tools mcp:admin"),
            &json_headers(),
            call("delete_namespace"),
        );
        assert_eq!(passed(verdict), guarded(11));
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
            CallVerdict::Pass(_)
        ));
        assert_eq!(refused(run(&f, &who, &json_headers(), forged).0).0, 403);
    }

    #[test]
    fn client_replies_pass() {
        let f = fixture(&[DEVS]);
        let reply = json!({"jsonrpc": "2.0", "id": "server-1", "result": {}});
        assert_eq!(
            passed(run(&f, &identity(&[], ""), &json_headers(), reply).0),
            Forward::default()
        );
    }
}

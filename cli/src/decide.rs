//! Decisions on a JSON-RPC request for given claims, taken by the filter's own decision path
//! (`call_gate::decide`, the function Envoy's requests go through), for `test` and `explain`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mcp_mesh_auth_filter::annotations::ToolAnnotations;
use mcp_mesh_auth_filter::call_gate::{self, AnswerWork, CallHeaders, CallVerdict};
use mcp_mesh_auth_filter::config::FilterConfig;
use mcp_mesh_auth_filter::list_decisions::{keep_listed, ListMemo};
use mcp_mesh_auth_filter::operation::{Feature, Kind};
use mcp_mesh_auth_filter::verify::{digest, VerifiedToken};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::CliError;

/// What the filter would do, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub allowed: bool,
    /// The deciding policies (`@id`): the permits of an allow, the forbids of a denial.
    pub policies: Vec<String>,
    pub reason: String,
    /// The JSON-RPC error the client would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
    /// For `tools/list` with the server's tools known: the tools the caller would see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed: Option<Vec<String>>,
}

/// What the filter would have learnt from the server: its tools (`--tools-file`), whose declared
/// annotations policies read and whose list a `tools/list` answer is cut from.
#[derive(Debug, Default)]
pub struct ServerTools {
    tools: Vec<Value>,
    annotations: ToolAnnotations,
}

impl ServerTools {
    pub fn new(tools: Vec<Value>) -> Self {
        let mut annotations = ToolAnnotations::default();
        annotations.learn(&tools);
        Self { tools, annotations }
    }

    /// The names of the tools `identity` keeps in a `tools/list` answer (`list_decisions`, as
    /// the filter cuts the answer); `None` when the tools are not known.
    fn listed(&self, config: &FilterConfig, identity: &VerifiedToken) -> Option<Vec<String>> {
        let authz = config.authorizer.as_deref()?;
        if self.tools.is_empty() {
            return None;
        }
        let kind = Kind::Item(Feature::Tool);
        let keep = keep_listed(
            authz,
            &mut ListMemo::new(self.tools.len()),
            &mut ToolAnnotations::default(),
            identity,
            kind,
            &self.tools,
        );
        Some(
            self.tools
                .iter()
                .zip(keep)
                .filter(|(_, kept)| *kept)
                .filter_map(|(tool, _)| Some(tool.get(kind.id_key())?.as_str()?.to_owned()))
                .collect(),
        )
    }
}

/// The filter's decision on `request` from a caller with `claims`. The claims are taken as
/// verified: the CLI checks policies, not tokens.
pub fn decide(
    config: &FilterConfig,
    server: &ServerTools,
    claims: Map<String, Value>,
    request: &Value,
) -> Outcome {
    let identity = VerifiedToken {
        issuer: claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
        expires_at: claims
            .get("exp")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        key_id: String::new(),
        digest: digest(&Value::Object(claims.clone()).to_string()),
        claims,
    };
    let headers = CallHeaders {
        content_type: Some("application/json".into()),
        ..CallHeaders::default()
    };
    let body = request.to_string();
    let (verdict, audit) = call_gate::decide(
        config,
        config.authorizer.as_deref(),
        &server.annotations,
        &identity,
        &headers,
        body.as_bytes(),
    );
    let (allowed, answer, listed) = match verdict {
        CallVerdict::Pass(forward) => {
            let cuts_tools = forward
                .answer
                .is_some_and(|pending| pending.work == AnswerWork::Cut(Kind::Item(Feature::Tool)));
            let listed = cuts_tools
                .then(|| server.listed(config, &identity))
                .flatten();
            (true, None, listed)
        }
        CallVerdict::Refuse(response) => (
            false,
            serde_json::from_str::<Value>(&response.body).ok(),
            None,
        ),
    };
    let reason = match (&audit, &answer, &listed) {
        (Some(audit), _, _) if !audit.detail.is_empty() => audit.detail.clone(),
        (_, Some(answer), _) => format!(
            "no policy decided: the filter refuses the request itself: {}",
            answer
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        (_, _, Some(listed)) => format!(
            "not decided by Cedar: `tools/list` passes, and its answer is cut to the tools the caller may use ({} of {})",
            listed.len(),
            server.tools.len()
        ),
        _ => {
            let method = request
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or_default();
            format!("not decided by Cedar: `{method}` passes (a list's answer is then cut to what the caller may use)")
        }
    };
    Outcome {
        allowed,
        policies: audit.map(|audit| audit.policies).unwrap_or_default(),
        reason,
        answer,
        listed,
    }
}

/// The claims of a JWT, decoded WITHOUT verifying its signature, issuer, audience or expiry.
pub fn unverified_claims(token: &str) -> Result<Map<String, Value>, CliError> {
    let bad = |why: &str| CliError::Input(format!("the token is not a JWT: {why}"));
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .ok_or_else(|| bad("expected header.payload.signature"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad("the payload is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(bad("the payload is not a JSON object")),
    }
}

/// One case of a policy test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// The token's claims (or give `token`).
    pub claims: Option<Map<String, Value>>,
    /// A JWT whose claims are used (not verified).
    pub token: Option<String>,
    /// The JSON-RPC request.
    pub request: Value,
    pub expect: Expect,
    /// The deciding policy ids expected (any order); omitted: not checked.
    pub policies: Option<Vec<String>>,
    /// For `tools/list`: the tools the caller sees (any order; needs `--tools-file`).
    pub listed: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub cases: Vec<Case>,
}

impl Case {
    pub fn claims(&self) -> Result<Map<String, Value>, CliError> {
        match (&self.claims, &self.token) {
            (Some(claims), None) => Ok(claims.clone()),
            (None, Some(token)) => unverified_claims(token),
            _ => Err(CliError::Input(format!(
                "case `{}`: give exactly one of `claims` or `token`",
                self.name
            ))),
        }
    }

    /// Why the outcome is not what the case expects; `None` when it is.
    pub fn check(&self, outcome: &Outcome) -> Option<String> {
        let got = if outcome.allowed {
            Expect::Allow
        } else {
            Expect::Deny
        };
        if got != self.expect {
            return Some(format!(
                "expected {:?}, got {got:?}: {}",
                self.expect, outcome.reason
            ));
        }
        let checks = [
            ("deciding policies", &self.policies, Some(&outcome.policies)),
            ("listed tools", &self.listed, outcome.listed.as_ref()),
        ];
        checks.into_iter().find_map(|(what, expected, got)| {
            let mut want = expected.clone()?;
            let mut have = got.cloned().unwrap_or_default();
            want.sort();
            have.sort();
            (want != have).then(|| {
                format!(
                    "expected {what} [{}], got [{}]: {}",
                    want.join(", "),
                    have.join(", "),
                    outcome.reason
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(policies: &[&str]) -> FilterConfig {
        let raw = json!({
            "resource": "https://mcp.invalid/mcp",
            "issuers": [{"issuer": "https://issuer.invalid"}],
            "jwt_authn": {"metadata_namespace": "n", "payload_in_metadata": "p"},
            "cedar": {"policies": policies},
            "denial_help": "ask #mcp-access",
        });
        FilterConfig::from_json(raw.to_string().as_bytes()).unwrap()
    }

    const POLICIES: [&str; 2] = [
        r#"@id("dev-all") permit(principal in THVGroup::"dev", action, resource);"#,
        r#"@id("no-delete") forbid(principal, action == Action::"call_tool", resource == Tool::"delete") unless { principal has claim_admin && principal.claim_admin };"#,
    ];

    fn call(tool: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn an_allow_names_the_permits() {
        let outcome = decide(
            &config(&POLICIES),
            &ServerTools::default(),
            claims(json!({"sub": "alice", "groups": ["dev"]})),
            &call("echo"),
        );
        assert!(outcome.allowed);
        assert_eq!(outcome.policies, ["dev-all"]);
        assert_eq!(outcome.reason, "permitted by `dev-all`");
    }

    #[test]
    fn a_forbid_names_itself_and_the_client_answer_carries_the_help() {
        let outcome = decide(
            &config(&POLICIES),
            &ServerTools::default(),
            claims(json!({"sub": "alice", "groups": ["dev"]})),
            &call("delete"),
        );
        assert!(!outcome.allowed);
        assert_eq!(outcome.policies, ["no-delete"]);
        assert!(
            outcome.reason.contains("forbidden by `no-delete`"),
            "{}",
            outcome.reason
        );
        let answer = outcome.answer.unwrap();
        assert_eq!(answer["error"]["code"], 403);
        assert_eq!(answer["error"]["data"]["help"], "ask #mcp-access");
    }

    #[test]
    fn a_default_deny_says_no_policy_permitted_whom_what() {
        let outcome = decide(
            &config(&POLICIES),
            &ServerTools::default(),
            claims(json!({"sub": "bob", "groups": ["sales"]})),
            &call("echo"),
        );
        assert!(!outcome.allowed);
        assert!(outcome.policies.is_empty());
        assert_eq!(
            outcome.reason,
            r#"no policy permits Client::"bob" `call_tool` on Tool::"echo" (default deny)"#
        );
    }

    #[test]
    fn a_refusal_no_policy_decided_says_so() {
        let outcome = decide(
            &config(&POLICIES),
            &ServerTools::default(),
            claims(json!({"groups": ["dev"]})),
            &call("echo"),
        );
        assert!(!outcome.allowed);
        assert!(
            outcome
                .reason
                .starts_with("no policy decided: the token has no `sub`"),
            "{}",
            outcome.reason
        );
        let missing_name = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}});
        let outcome = decide(
            &config(&POLICIES),
            &ServerTools::default(),
            claims(json!({"sub": "alice"})),
            &missing_name,
        );
        assert!(
            outcome.reason.starts_with("no policy decided"),
            "{}",
            outcome.reason
        );
    }

    #[test]
    fn a_list_passes_undecided() {
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        let outcome = decide(
            &config(&POLICIES),
            &ServerTools::default(),
            claims(json!({"sub": "bob"})),
            &list,
        );
        assert!(outcome.allowed);
        assert!(
            outcome.reason.starts_with("not decided by Cedar"),
            "{}",
            outcome.reason
        );
    }

    #[test]
    fn server_declared_annotations_are_used() {
        let config = config(&[
            r#"permit(principal, action == Action::"call_tool", resource) when { resource has readOnlyHint && resource.readOnlyHint };"#,
        ]);
        let server = ServerTools::new(vec![
            json!({"name": "ls", "annotations": {"readOnlyHint": true}}),
            json!({"name": "rm", "annotations": {"readOnlyHint": false}}),
        ]);
        let who = claims(json!({"sub": "u"}));
        assert!(decide(&config, &server, who.clone(), &call("ls")).allowed);
        assert!(!decide(&config, &ServerTools::default(), who, &call("ls")).allowed);
    }

    #[test]
    fn a_tools_list_shows_the_tools_the_caller_keeps() {
        let config = config(&[
            r#"permit(principal, action == Action::"call_tool", resource) when { resource has readOnlyHint && resource.readOnlyHint };"#,
        ]);
        let server = ServerTools::new(vec![
            json!({"name": "ls", "annotations": {"readOnlyHint": true}}),
            json!({"name": "rm", "annotations": {"readOnlyHint": false}}),
        ]);
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        let outcome = decide(&config, &server, claims(json!({"sub": "u"})), &list);
        assert_eq!(outcome.listed, Some(vec!["ls".to_owned()]));
        assert!(outcome.reason.ends_with("(1 of 2)"), "{}", outcome.reason);
        let case: Case = serde_yaml::from_str(
            "{name: sees rm, claims: {sub: u}, request: {jsonrpc: '2.0', id: 1, method: tools/list}, expect: allow, listed: [ls, rm]}",
        )
        .unwrap();
        let failure = case.check(&outcome).unwrap();
        assert!(
            failure.starts_with("expected listed tools [ls, rm], got [ls]"),
            "{failure}"
        );
    }

    #[test]
    fn a_jwt_is_decoded_without_verification() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","groups":["dev"]}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.bm90LWEtc2lnbmF0dXJl");
        assert_eq!(unverified_claims(&token).unwrap()["sub"], "alice");
        let err = unverified_claims("abc").unwrap_err().to_string();
        assert!(err.contains("not a JWT"), "{err}");
    }

    #[test]
    fn a_case_checks_the_decision_and_the_deciding_policies() {
        let file: CaseFile = serde_yaml::from_str(
            r#"
cases:
  - name: dev may not delete
    claims: {sub: alice, groups: [dev]}
    request: {jsonrpc: "2.0", id: 1, method: tools/call, params: {name: delete}}
    expect: deny
    policies: [no-delete]
  - name: wrongly expected
    claims: {sub: alice, groups: [dev]}
    request: {jsonrpc: "2.0", id: 1, method: tools/call, params: {name: echo}}
    expect: allow
    policies: [something-else]
"#,
        )
        .unwrap();
        let config = config(&POLICIES);
        let results: Vec<Option<String>> = file
            .cases
            .iter()
            .map(|case| {
                let outcome = decide(
                    &config,
                    &ServerTools::default(),
                    case.claims().unwrap(),
                    &case.request,
                );
                case.check(&outcome)
            })
            .collect();
        assert_eq!(results[0], None);
        let failure = results[1].as_deref().unwrap();
        assert!(
            failure.contains("expected deciding policies [something-else], got [dev-all]"),
            "{failure}"
        );
    }
}

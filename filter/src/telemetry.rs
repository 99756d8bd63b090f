//! What every decision leaves for the operator: the audit line, the fields Envoy's access logs
//! and CEL read (Envoy filter state `wasm.mcp_auth.*`), and the names of the counters. Pure: the
//! proxy adapter only writes what is built here.
//!
//! Envoy's Wasm host has no call that writes dynamic metadata: `proxy_set_property` writes filter
//! state under `wasm.<path>` (`Context::setProperty` in `source/extensions/common/wasm/context.cc`)
//! and the foreign functions offer `set_envoy_filter_state` and `declare_property`, nothing for
//! metadata. So the decision goes to filter state, which access logs read as
//! `%FILTER_STATE(wasm.mcp_auth.decision:PLAIN)%` and CEL as `filter_state['wasm.mcp_auth.decision']`.

use serde_json::{json, Value};

use crate::rejection::Rejection;
use crate::verify::VerifiedToken;

/// Names of a cut list shown in the audit line and the access log: enough to see what a policy
/// hides, bounded so that a list of thousands does not flood the log.
pub const REMOVED_NAMES_SHOWN: usize = 20;

/// Why a decision went the way it did, as a bounded label (a metric tag, an access log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A Cedar `permit` allowed it (and no `forbid` denied it).
    PolicyPermit,
    /// A Cedar `forbid` denied it.
    PolicyForbid,
    /// No policy permits it: Cedar's default deny.
    DefaultDeny,
    /// A policy failed to evaluate, which denies.
    PolicyError,
    /// The token could not be put to Cedar as a principal.
    UnusableCaller,
    /// `tool_scopes` asks for a scope the token lacks.
    InsufficientScope,
    /// The method is not in the filter's method table.
    UnknownMethod,
    /// A task method on the caller's own task.
    OwnTask,
    /// A task id that is not the caller's, or not one at all.
    ForeignTask,
    /// A list answer with items the caller may not use.
    ListCut,
    /// A list answer the caller may see whole.
    ListWhole,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::PolicyPermit,
        Reason::PolicyForbid,
        Reason::DefaultDeny,
        Reason::PolicyError,
        Reason::UnusableCaller,
        Reason::InsufficientScope,
        Reason::UnknownMethod,
        Reason::OwnTask,
        Reason::ForeignTask,
        Reason::ListCut,
        Reason::ListWhole,
    ];

    /// The decision this reason comes with: `allow` or `deny`.
    pub fn decision(self) -> &'static str {
        match self {
            Reason::PolicyPermit | Reason::OwnTask | Reason::ListCut | Reason::ListWhole => "allow",
            _ => "deny",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Reason::PolicyPermit => "policy_permit",
            Reason::PolicyForbid => "policy_forbid",
            Reason::DefaultDeny => "default_deny",
            Reason::PolicyError => "policy_error",
            Reason::UnusableCaller => "unusable_caller",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::UnknownMethod => "unknown_method",
            Reason::OwnTask => "own_task",
            Reason::ForeignTask => "foreign_task",
            Reason::ListCut => "list_cut",
            Reason::ListWhole => "list_whole",
        }
    }
}

/// Who asked, as the logs name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// `sub`, or the client id for a client-credentials token (the Cedar principal's id).
    pub principal: String,
    pub issuer: String,
    pub client_id: String,
}

impl Caller {
    pub fn of(identity: &VerifiedToken) -> Self {
        let claim = |name: &str| {
            identity
                .claims
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let client_id = ["client_id", "azp", "cid"]
            .iter()
            .map(|c| claim(c))
            .find(|c| !c.is_empty())
            .unwrap_or_default()
            .to_owned();
        Self {
            principal: identity
                .subject
                .clone()
                .unwrap_or_else(|| client_id.clone()),
            issuer: identity.issuer.clone(),
            client_id,
        }
    }
}

impl Caller {
    /// The filter state of every authenticated request: who, even where nothing is decided
    /// (`initialize`, a `GET` stream).
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        vec![
            ("mcp_auth.principal", self.principal.clone()),
            ("mcp_auth.issuer", self.issuer.clone()),
            ("mcp_auth.client_id", self.client_id.clone()),
        ]
    }
}

/// What a list cut removed (or, in shadow mode, would have).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub count: usize,
    /// The first [`REMOVED_NAMES_SHOWN`] names (tool and prompt names, resource URIs).
    pub names: Vec<String>,
}

impl Removed {
    pub fn add(&mut self, name: &str) {
        self.count += 1;
        if self.names.len() < REMOVED_NAMES_SHOWN {
            self.names.push(name.to_owned());
        }
    }
}

/// One authorization decision: on a call, or on the items of a list answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    pub caller: Caller,
    pub method: String,
    pub target: String,
    /// The deciding policies (`@id`, or `policies[i]#j`).
    pub policies: Vec<String>,
    pub reason: Reason,
    /// Evaluation errors or what else explains the reason, for the log only.
    pub detail: String,
    /// Decided by Cedar in shadow mode: logged and counted, not carried out.
    pub shadow: bool,
    /// For a list answer: what was (or would have been) cut.
    pub removed: Option<Removed>,
}

impl Audit {
    /// The decision as the access log and the metrics name it: `allow` or `deny` (in shadow
    /// mode: what would have been done).
    pub fn decision(&self) -> &'static str {
        self.reason.decision()
    }

    /// The structured audit line: who, which client, what, the decision and why.
    pub fn to_json(&self) -> String {
        let mut line = json!({
            "subject": self.caller.principal,
            "issuer": self.caller.issuer,
            "client_id": self.caller.client_id,
            "method": self.method,
            "target": self.target,
            "decision": self.decision(),
            "policies": self.policies,
            "reason": self.reason.label(),
            "shadow": self.shadow,
        });
        if !self.detail.is_empty() {
            line["detail"] = json!(self.detail);
        }
        if let Some(removed) = &self.removed {
            line["removed"] = json!(removed.count);
            line["removed_names"] = json!(removed.names);
        }
        line.to_string()
    }

    /// The filter state Envoy keeps for the stream (as `wasm.<key>`), one field per key so that
    /// an access log format picks what it needs.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let mut properties = self.caller.properties();
        properties.extend([
            ("mcp_auth.method", self.method.clone()),
            ("mcp_auth.target", self.target.clone()),
            ("mcp_auth.decision", self.decision().to_owned()),
            ("mcp_auth.policies", self.policies.join(",")),
            ("mcp_auth.reason", self.reason.label().to_owned()),
            ("mcp_auth.shadow", self.shadow.to_string()),
        ]);
        if let Some(removed) = &self.removed {
            properties.push(("mcp_auth.removed", removed.count.to_string()));
            properties.push(("mcp_auth.removed_names", removed.names.join(",")));
        }
        properties
    }

    /// The counter of this decision under `instance` (see [`decision_counter`]).
    pub fn counter(&self, instance: &str) -> String {
        decision_counter(instance, self.shadow, self.decision(), self.reason.label())
    }
}

/// The filter state of a request refused for its token.
pub fn rejection_properties(rejection: &Rejection) -> Vec<(&'static str, String)> {
    vec![
        ("mcp_auth.decision", "unauthenticated".to_owned()),
        ("mcp_auth.reason", rejection.reason().to_owned()),
        ("mcp_auth.shadow", "false".to_owned()),
    ]
}

/// `mcp_auth.<instance>.decisions_total.<mode>.<decision>.<reason>`: one name per label set, as
/// Envoy's `stats_tags` regexes (see `envoy/*.yaml`) turn into the Prometheus labels
/// `mcp_auth_instance`, `mode`, `decision` and `reason`.
pub fn decision_counter(instance: &str, shadow: bool, decision: &str, reason: &str) -> String {
    let mode = if shadow { "shadow" } else { "enforce" };
    format!("mcp_auth.{instance}.decisions_total.{mode}.{decision}.{reason}")
}

/// A statistics name segment from a plugin name: Envoy's tag regexes split on `.`, Prometheus
/// allows `[a-zA-Z0-9_]`.
pub fn instance_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() {
        "default".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(reason: Reason, shadow: bool) -> Audit {
        Audit {
            caller: Caller {
                principal: "alice".into(),
                issuer: "https://idp".into(),
                client_id: "vscode".into(),
            },
            method: "tools/call".into(),
            target: "delete".into(),
            policies: vec![],
            reason,
            detail: String::new(),
            shadow,
            removed: None,
        }
    }

    #[test]
    fn a_default_deny_is_logged_with_its_reason() {
        let line: Value =
            serde_json::from_str(&audit(Reason::DefaultDeny, false).to_json()).unwrap();
        assert_eq!(line["decision"], "deny");
        assert_eq!(line["reason"], "default_deny");
        assert_eq!(line["shadow"], false);
        assert_eq!(line["issuer"], "https://idp");
    }

    #[test]
    fn the_access_log_fields_carry_the_decision_and_the_shadow_marker() {
        let properties = audit(Reason::DefaultDeny, true).properties();
        let get = |key: &str| {
            properties
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("mcp_auth.decision"), Some("deny"));
        assert_eq!(get("mcp_auth.shadow"), Some("true"));
        assert_eq!(get("mcp_auth.principal"), Some("alice"));
        assert_eq!(get("mcp_auth.client_id"), Some("vscode"));
        assert_eq!(get("mcp_auth.target"), Some("delete"));
        assert_eq!(get("mcp_auth.removed"), None, "a call removes nothing");
    }

    #[test]
    fn counters_are_per_instance_and_labelled() {
        let a = audit(Reason::PolicyForbid, false).counter("team_a");
        let b = audit(Reason::PolicyForbid, true).counter("team_b");
        assert_eq!(
            a,
            "mcp_auth.team_a.decisions_total.enforce.deny.policy_forbid"
        );
        assert_eq!(
            b,
            "mcp_auth.team_b.decisions_total.shadow.deny.policy_forbid"
        );
    }

    #[test]
    fn the_removed_names_are_bounded_but_the_count_is_not() {
        let mut removed = Removed::default();
        for i in 0..REMOVED_NAMES_SHOWN + 5 {
            removed.add(&format!("tool{i}"));
        }
        assert_eq!(removed.count, REMOVED_NAMES_SHOWN + 5);
        assert_eq!(removed.names.len(), REMOVED_NAMES_SHOWN);
        assert_eq!(removed.names[0], "tool0");
    }

    #[test]
    fn instance_names_fit_a_stats_segment() {
        assert_eq!(
            instance_name("mcp_mesh_auth.team-a"),
            "mcp_mesh_auth_team_a"
        );
        assert_eq!(instance_name(""), "default");
    }
}

#[cfg(test)]
mod reason_tests {
    use super::Reason;

    #[test]
    fn only_permits_own_tasks_and_lists_allow() {
        let allowing: Vec<&str> = Reason::ALL
            .iter()
            .filter(|r| r.decision() == "allow")
            .map(|r| r.label())
            .collect();
        assert_eq!(
            allowing,
            ["policy_permit", "own_task", "list_cut", "list_whole"]
        );
    }
}

//! RFC 7662 token introspection: whether a token is active and, if it is, what it stands for.
//! Anything unknown, expired, revoked, rotated, for a resource this server does not serve, or
//! (for refresh tokens) another client's, is just `{"active": false}` (§2.2), so that the answer
//! tells a prober nothing.

use serde_json::{json, Map, Value};

use crate::oauth::token::{RefreshPolicy, StoredRefresh};

/// What a presented token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// An access token one of the server's keys signed, with its claims (times included).
    Access(Map<String, Value>),
    /// A refresh token as stored.
    Refresh(Box<StoredRefresh>),
    Nothing,
}

/// Who asks, and against what.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub issuer: &'a str,
    pub resources: &'a [String],
    /// The authenticated client asking (§2.1).
    pub caller: &'a str,
    pub policy: &'a RefreshPolicy,
    pub now: i64,
}

/// The introspection response (§2.2) for `found`.
pub fn introspect(found: Found, context: &Context<'_>) -> Value {
    let answer = match found {
        Found::Access(claims) => access(claims, context),
        Found::Refresh(stored) => refresh(*stored, context),
        Found::Nothing => None,
    };
    answer.unwrap_or_else(|| json!({"active": false}))
}

fn access(claims: Map<String, Value>, context: &Context<'_>) -> Option<Value> {
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    let ours = claims.get("iss").and_then(Value::as_str) == Some(context.issuer);
    let served = claims
        .get("aud")
        .and_then(Value::as_str)
        .is_some_and(|aud| context.resources.iter().any(|r| r == aud));
    let current = time("exp").is_some_and(|exp| exp > context.now)
        && time("nbf").is_none_or(|nbf| nbf <= context.now);
    if !(ours && served && current) {
        return None;
    }
    let mut answer = Map::new();
    answer.insert("active".into(), json!(true));
    answer.insert("token_type".into(), json!("Bearer"));
    for name in [
        "scope",
        "client_id",
        "sub",
        "aud",
        "iss",
        "exp",
        "iat",
        "nbf",
        "jti",
    ] {
        if let Some(value) = claims.get(name) {
            answer.insert(name.into(), value.clone());
        }
    }
    Some(Value::Object(answer))
}

fn refresh(stored: StoredRefresh, context: &Context<'_>) -> Option<Value> {
    let live = stored.grant.client_id == context.caller
        && !stored.family_revoked
        && stored.used_at.is_none()
        && stored.expires_at > context.now
        && stored
            .family_issued_at
            .saturating_add(context.policy.absolute)
            > context.now;
    live.then(|| {
        json!({
            "active": true,
            "scope": stored.grant.scope,
            "client_id": stored.grant.client_id,
            "sub": stored.grant.user.subject,
            "aud": stored.grant.resource,
            "iss": context.issuer,
            "exp": stored.expires_at,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::grant::{Grant, User};

    const NOW: i64 = 1_000_000;
    const POLICY: RefreshPolicy = RefreshPolicy {
        sliding: 100,
        absolute: 1000,
        reuse_grace: 30,
    };

    fn context<'a>(resources: &'a [String], caller: &'a str) -> Context<'a> {
        Context {
            issuer: "https://auth",
            resources,
            caller,
            policy: &POLICY,
            now: NOW,
        }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut claims = json!({"iss": "https://auth", "aud": "https://mcp/mcp", "sub": "dev:alice",
                                "client_id": "c1", "scope": "mcp:tools", "exp": NOW + 10, "nbf": NOW - 10,
                                "groups": ["g"]});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims.as_object().unwrap().clone()
    }

    fn stored() -> StoredRefresh {
        StoredRefresh {
            grant: Grant {
                client_id: "c1".into(),
                resource: "https://mcp/mcp".into(),
                scope: "mcp:tools offline_access".into(),
                user: User {
                    subject: "dev:alice".into(),
                    email: None,
                    name: None,
                    groups: vec![],
                    roles: vec![],
                },
                redirect_uri: String::new(),
                code_challenge: String::new(),
            },
            family_id: "fam".into(),
            expires_at: NOW + 10,
            family_issued_at: NOW - 10,
            family_revoked: false,
            used_at: None,
            successor: None,
        }
    }

    #[test]
    fn a_current_access_token_for_a_served_resource_is_active() {
        let resources = ["https://mcp/mcp".to_owned()];
        let answer = introspect(Found::Access(claims(json!({}))), &context(&resources, "rs"));
        assert_eq!(answer["active"], true);
        assert_eq!(answer["sub"], "dev:alice");
        assert_eq!(answer["scope"], "mcp:tools");
        assert_eq!(answer["token_type"], "Bearer");
        assert!(answer.get("groups").is_none(), "only the RFC 7662 members");
    }

    #[test]
    fn an_expired_premature_foreign_or_other_resource_access_token_is_inactive() {
        let resources = ["https://mcp/mcp".to_owned()];
        for extra in [
            json!({"exp": NOW}),
            json!({"nbf": NOW + 1}),
            json!({"iss": "https://elsewhere"}),
            json!({"aud": "https://other/mcp"}),
        ] {
            let answer = introspect(
                Found::Access(claims(extra.clone())),
                &context(&resources, "rs"),
            );
            assert_eq!(answer, json!({"active": false}), "{extra}");
        }
        assert_eq!(
            introspect(Found::Nothing, &context(&resources, "rs")),
            json!({"active": false})
        );
    }

    #[test]
    fn a_refresh_token_is_active_only_for_its_client_while_it_is_live() {
        let resources = ["https://mcp/mcp".to_owned()];
        let answer = introspect(
            Found::Refresh(Box::new(stored())),
            &context(&resources, "c1"),
        );
        assert_eq!(answer["active"], true);
        assert_eq!(answer["exp"], NOW + 10);
        let inactive = |stored: StoredRefresh, caller: &str| {
            introspect(
                Found::Refresh(Box::new(stored)),
                &context(&resources, caller),
            ) == json!({"active": false})
        };
        assert!(inactive(stored(), "c2"), "another client's");
        assert!(inactive(
            StoredRefresh {
                family_revoked: true,
                ..stored()
            },
            "c1"
        ));
        assert!(inactive(
            StoredRefresh {
                used_at: Some(NOW - 1),
                ..stored()
            },
            "c1"
        ));
        assert!(inactive(
            StoredRefresh {
                expires_at: NOW,
                ..stored()
            },
            "c1"
        ));
        assert!(inactive(
            StoredRefresh {
                family_issued_at: NOW - 1000,
                ..stored()
            },
            "c1"
        ));
    }
}

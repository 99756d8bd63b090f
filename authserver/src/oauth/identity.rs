//! Who a set of identity-provider claims describes: subject, verified email, name, groups and
//! roles, read from the claims the configuration names. A federated login (the `oidc` upstream)
//! and an enterprise ID-JAG go through this one mapping, so a user comes out the same — and the
//! same Cedar policies apply — whichever way they arrived.

use mcp_mesh_claims::lookup;
use serde_json::{Map, Value};

use crate::oauth::grant::User;

/// Which claims hold the user's identity (names, URL-style keys or dot paths, as `claims/` reads
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimMapping<'a> {
    /// The claim that identifies a user stably (`sub`; Entra ID: `oid`).
    pub subject: &'a str,
    pub groups: Option<&'a str>,
    pub roles: Option<&'a str>,
}

impl ClaimMapping<'_> {
    /// The user as `sources` describe them, the first source holding a claim winning. The
    /// subject is empty when no source names one; groups are not filtered here (the `groups.prefix`
    /// filter applies to every token, in `grant::access_claims`).
    pub fn user(&self, sources: &[Map<String, Value>]) -> User {
        let find = |claim: &str| {
            sources
                .iter()
                .find_map(|claims| lookup(claims, claim).cloned())
        };
        let text = |claim: &str| find(claim).and_then(|v| v.as_str().map(str::to_owned));
        let list = |claim: Option<&str>| claim.and_then(find).map(strings).unwrap_or_default();
        User {
            subject: text(self.subject).unwrap_or_default(),
            email: email_of(sources),
            name: text("name"),
            groups: list(self.groups),
            roles: list(self.roles),
        }
    }
}

/// The email address, only if the provider vouches for it (`email_verified`, OIDC Core §5.1;
/// some providers send the flag as a string). An unverified address is anyone's to type in, and
/// a policy or an MCP server matching on `email` would take it for the user's.
/// The address of the first source that has one, if that same source says it is verified: one
/// source's `email_verified` says nothing about another's `email`.
pub fn email_of(sources: &[Map<String, Value>]) -> Option<String> {
    sources
        .iter()
        .find_map(|claims| {
            lookup(claims, "email")
                .map(|email| verified_email(Some(email.clone()), lookup(claims, "email_verified")))
        })
        .flatten()
}

pub fn verified_email(email: Option<Value>, verified: Option<&Value>) -> Option<String> {
    let verified = match verified {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::String(flag)) => flag.eq_ignore_ascii_case("true"),
        _ => false,
    };
    match email {
        Some(Value::String(email)) if verified => Some(email),
        _ => None,
    }
}

/// An array of strings, or a space-separated string.
pub fn strings(value: Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Value::String(text) => text.split_ascii_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn the_first_source_with_a_claim_wins_and_groups_come_unfiltered() {
        let mapping = ClaimMapping {
            subject: "oid",
            groups: Some("groups"),
            roles: Some("realm_access.roles"),
        };
        let access = claims(json!({"groups": ["mcp-developers", "Everyone"]}));
        let id = claims(
            json!({"oid": "00u1", "name": "Alice", "groups": ["ignored"],
                               "realm_access": {"roles": ["admin"]},
                               "email": "alice@example.com", "email_verified": true}),
        );
        let user = mapping.user(&[access, id]);
        assert_eq!(user.subject, "00u1");
        assert_eq!(user.groups, ["mcp-developers", "Everyone"]);
        assert_eq!(user.roles, ["admin"]);
        assert_eq!(user.name.as_deref(), Some("Alice"));
        assert_eq!(user.email.as_deref(), Some("alice@example.com"));
        let nobody = mapping.user(&[claims(json!({"sub": "not-the-subject-claim"}))]);
        assert_eq!(
            nobody.subject, "",
            "only the configured subject claim names the user"
        );
        assert!(nobody.groups.is_empty() && nobody.roles.is_empty());
    }

    #[test]
    fn groups_may_be_arrays_strings_url_keys_or_dot_paths() {
        let claims = claims(
            json!({"groups": ["a", "b"], "scp": "x y", "https://example.com/roles": ["r"], "realm_access": {"roles": ["k"]}}),
        );
        assert_eq!(
            strings(lookup(&claims, "groups").unwrap().clone()),
            ["a", "b"]
        );
        assert_eq!(strings(lookup(&claims, "scp").unwrap().clone()), ["x", "y"]);
        assert_eq!(
            strings(
                lookup(&claims, "https://example.com/roles")
                    .unwrap()
                    .clone()
            ),
            ["r"]
        );
        assert_eq!(
            strings(lookup(&claims, "realm_access.roles").unwrap().clone()),
            ["k"]
        );
    }

    #[test]
    fn an_email_is_passed_on_only_when_the_provider_verified_it() {
        let email = || Some(json!("alice@example.com"));
        assert_eq!(
            verified_email(email(), Some(&json!(true))).as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            verified_email(email(), Some(&json!("true"))).as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(verified_email(email(), Some(&json!(false))), None);
        assert_eq!(verified_email(email(), Some(&json!("false"))), None);
        assert_eq!(verified_email(email(), None), None, "no flag, no email");
        assert_eq!(verified_email(None, Some(&json!(true))), None);
    }

    #[test]
    fn the_verified_flag_counts_only_for_the_address_of_its_own_source() {
        let id_token = claims(json!({"email": "ceo@example.com"}));
        let userinfo = claims(json!({"email": "me@example.com", "email_verified": true}));
        assert_eq!(email_of(&[id_token.clone(), userinfo.clone()]), None);
        assert_eq!(
            email_of(&[userinfo, id_token]).as_deref(),
            Some("me@example.com")
        );
    }
}

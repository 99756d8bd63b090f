//! What a code or refresh token stands for, and the access token it yields.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::oauth::Scope;

/// The person behind a grant, as the upstream login identified them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable per upstream user.
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A user's authorization of one client for one resource and scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub client_id: String,
    pub resource: String,
    pub scope: String,
    pub user: User,
    /// For codes: the redirect URI and PKCE challenge the code is bound to.
    #[serde(default)]
    pub redirect_uri: String,
    #[serde(default)]
    pub code_challenge: String,
}

impl Grant {
    pub fn has_scope(&self, scope: &str) -> bool {
        Scope::from_stored(&self.scope).contains(scope)
    }
}

/// The claim naming the sign-in (the grant family) an access token comes from, as OpenID
/// Connect's `sid` names a session: a token exchange finds the user's upstream session by it,
/// and refuses the token once the family is revoked.
pub const SESSION_CLAIM: &str = "sid";

/// What an access token takes from the server's configuration (kept apart from `Config` so the
/// protocol layer does not depend on how the server is configured).
#[derive(Debug, Clone, Copy)]
pub struct Issuance<'a> {
    pub issuer: &'a str,
    pub access_seconds: u64,
    /// Only groups with this prefix go into tokens ("" for all).
    pub group_prefix: &'a str,
}

/// What redeeming a single-use credential (code or refresh token) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    Fresh {
        grant: Box<Grant>,
        family_id: String,
    },
    /// Already used: a replay. The family should die.
    Replayed { family_id: String },
    /// Unknown, expired, or of a revoked family.
    Invalid,
}

/// The claims of an RFC 9068 access token for `grant`, issued at `now`.
pub fn access_claims(
    issuance: &Issuance<'_>,
    grant: &Grant,
    now: u64,
    jti: String,
) -> Map<String, Value> {
    let prefix = issuance.group_prefix;
    let groups: Vec<&String> = grant
        .user
        .groups
        .iter()
        .filter(|g| g.starts_with(prefix))
        .collect();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(issuance.issuer));
    claims.insert("sub".into(), json!(grant.user.subject));
    claims.insert("aud".into(), json!(grant.resource));
    claims.insert("client_id".into(), json!(grant.client_id));
    claims.insert("scope".into(), json!(grant.scope));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + issuance.access_seconds));
    claims.insert("jti".into(), json!(jti));
    if let Some(email) = &grant.user.email {
        claims.insert("email".into(), json!(email));
    }
    if let Some(name) = &grant.user.name {
        claims.insert("name".into(), json!(name));
    }
    // Absent rather than empty, so a policy engine looking for the first present of
    // `groups`/`roles` (ToolHive's rule) finds the roles of a roles-only provider (Entra ID).
    if !groups.is_empty() {
        claims.insert("groups".into(), json!(groups));
    }
    if !grant.user.roles.is_empty() {
        claims.insert("roles".into(), json!(grant.user.roles));
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_identity_and_prefix_filtered_groups() {
        let issuance = Issuance {
            issuer: "https://auth.example.com",
            access_seconds: 3600,
            group_prefix: "mcp-",
        };
        let grant = Grant {
            client_id: "c".into(),
            resource: "https://mcp.example.com/mcp".into(),
            scope: "mcp:tools offline_access".into(),
            user: User {
                subject: "okta|00u1".into(),
                email: Some("alice@example.com".into()),
                name: Some("Alice".into()),
                groups: vec!["mcp-developers".into(), "Everyone".into()],
                roles: vec![],
            },
            redirect_uri: String::new(),
            code_challenge: String::new(),
        };
        let claims = access_claims(&issuance, &grant, 100, "j".into());
        assert_eq!(claims["groups"], json!(["mcp-developers"]));
        assert_eq!(claims["aud"], "https://mcp.example.com/mcp");
        assert_eq!(claims["exp"], 3700);
        assert_eq!(claims["email"], "alice@example.com");
        assert!(!claims.contains_key("roles"));
        assert!(grant.has_scope("offline_access"));
    }
}

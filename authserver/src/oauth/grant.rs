//! What a code or refresh token stands for, and the access token it yields.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::Config;
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

/// The claims of an RFC 9068 access token for `grant`, issued at `now`.
pub fn access_claims(config: &Config, grant: &Grant, now: u64, jti: String) -> Map<String, Value> {
    let prefix = config.groups.prefix.as_deref().unwrap_or("");
    let groups: Vec<&String> = grant
        .user
        .groups
        .iter()
        .filter(|g| g.starts_with(prefix))
        .collect();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(config.issuer_str()));
    claims.insert("sub".into(), json!(grant.user.subject));
    claims.insert("aud".into(), json!(grant.resource));
    claims.insert("client_id".into(), json!(grant.client_id));
    claims.insert("scope".into(), json!(grant.scope));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + config.lifetimes.access_seconds));
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
    use crate::config::{FileConfig, Overrides};

    #[test]
    fn tokens_carry_identity_and_prefix_filtered_groups() {
        let file: FileConfig = serde_yaml::from_str(
            "issuer: https://auth.example.com\nresources: [https://mcp.example.com/mcp]\ngroups: {prefix: mcp-}\n",
        )
        .unwrap();
        let config = Config::resolve(file, Overrides::default()).unwrap();
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
        let claims = access_claims(&config, &grant, 100, "j".into());
        assert_eq!(claims["groups"], json!(["mcp-developers"]));
        assert_eq!(claims["aud"], "https://mcp.example.com/mcp");
        assert_eq!(claims["exp"], 3700);
        assert_eq!(claims["email"], "alice@example.com");
        assert!(!claims.contains_key("roles"));
        assert!(grant.has_scope("offline_access"));
    }
}

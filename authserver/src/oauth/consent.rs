//! Consent: when a remembered approval covers a request, and what the consent page tells the
//! person so that they know whom they let in, as whom, to what.

use url::Url;

use crate::oauth::grant::User;
use crate::oauth::Scope;

/// A remembered approval is keyed by (user, client, resource); it covers a request only when it
/// granted at least the scopes now asked. Approving a client for one MCP server says nothing
/// about another, nor about more scopes.
pub fn is_remembered(remembered: Option<&Scope>, asked: &Scope) -> bool {
    remembered.is_some_and(|granted| asked.is_subset(granted))
}

/// Longest client name kept and shown: a name is the client's own claim, and a pending request
/// must stay small whatever a metadata document says.
pub const MAX_CLIENT_NAME: usize = 100;

/// The client's self-chosen name as kept for the consent page: trimmed, `None` when blank, cut
/// to `MAX_CLIENT_NAME` characters (marked with an ellipsis).
pub fn client_name(raw: Option<&str>) -> Option<String> {
    let name = raw?.trim();
    if name.is_empty() {
        return None;
    }
    let mut chars = name.chars();
    let kept: String = chars.by_ref().take(MAX_CLIENT_NAME).collect();
    Some(if chars.next().is_some() {
        format!("{kept}…")
    } else {
        kept
    })
}

/// What the consent page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentView {
    /// Who is signed in.
    pub user: String,
    /// The name the client chose for itself (anyone can register any name).
    pub client_name: Option<String>,
    pub client_id: String,
    /// The host that vouches for the client: a metadata document's host, else the redirect host.
    pub client_host: String,
    /// The MCP server being granted.
    pub resource: String,
    /// Each scope with its description (`None`: unknown, shown raw).
    pub scopes: Vec<(String, Option<&'static str>)>,
}

/// The facts of a request that the consent page is built from.
pub struct ConsentFacts<'a> {
    pub user: &'a User,
    pub client_name: Option<&'a str>,
    pub client_id: &'a str,
    /// Whether `client_id` is a Client ID Metadata Document URL.
    pub client_id_is_document: bool,
    pub redirect_uri: &'a str,
    pub resource: &'a str,
    pub scope: &'a Scope,
}

pub fn view(facts: &ConsentFacts<'_>) -> ConsentView {
    let host_of = |url: &str| {
        Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| url.to_owned())
    };
    let client_host = if facts.client_id_is_document {
        host_of(facts.client_id)
    } else {
        host_of(facts.redirect_uri)
    };
    ConsentView {
        user: user_label(facts.user),
        client_name: client_name(facts.client_name),
        client_id: facts.client_id.to_owned(),
        client_host,
        resource: facts.resource.to_owned(),
        scopes: facts
            .scope
            .iter()
            .map(|token| (token.to_owned(), describe(token)))
            .collect(),
    }
}

/// "Alice (alice@example.com)", or whatever part of that is known, or the subject.
fn user_label(user: &User) -> String {
    match (&user.name, &user.email) {
        (Some(name), Some(email)) => format!("{name} ({email})"),
        (Some(name), None) => name.clone(),
        (None, Some(email)) => email.clone(),
        (None, None) => user.subject.clone(),
    }
}

/// What the scopes this server knows of let a client do, in words.
fn describe(token: &str) -> Option<&'static str> {
    Some(match token {
        "mcp:tools" => "Use the MCP server's tools as you",
        "offline_access" => "Keep access while you are away (a refresh token)",
        "openid" => "Know who you are",
        "profile" => "See your name",
        "email" => "See your email address",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            subject: "dev:alice".into(),
            email: Some("alice@example.com".into()),
            name: Some("Alice".into()),
            groups: vec![],
            roles: vec![],
        }
    }

    #[test]
    fn a_remembered_approval_covers_the_same_or_fewer_scopes_only() {
        let granted = Scope::parse("mcp:tools offline_access").unwrap();
        assert!(is_remembered(
            Some(&granted),
            &Scope::parse("mcp:tools").unwrap()
        ));
        assert!(is_remembered(Some(&granted), &granted));
        assert!(!is_remembered(
            Some(&granted),
            &Scope::parse("mcp:tools mcp:admin").unwrap()
        ));
        assert!(!is_remembered(None, &Scope::parse("mcp:tools").unwrap()));
    }

    #[test]
    fn the_page_names_user_client_resource_and_scopes() {
        let user = alice();
        let scope = Scope::parse("mcp:tools offline_access custom:thing").unwrap();
        let facts = ConsentFacts {
            user: &user,
            client_name: Some("Claude"),
            client_id: "abc",
            client_id_is_document: false,
            redirect_uri: "https://claude.ai/api/mcp/auth_callback",
            resource: "https://mcp.example.com/mcp",
            scope: &scope,
        };
        let view = view(&facts);
        assert_eq!(view.user, "Alice (alice@example.com)");
        assert!(describe("mcp:tools").is_some() && describe("offline_access").is_some());
        assert_eq!(view.client_host, "claude.ai");
        assert_eq!(view.resource, "https://mcp.example.com/mcp");
        assert_eq!(
            view.scopes,
            vec![
                ("custom:thing".to_owned(), None),
                ("mcp:tools".to_owned(), describe("mcp:tools")),
                ("offline_access".to_owned(), describe("offline_access")),
            ]
        );
    }

    #[test]
    fn a_metadata_document_client_is_named_by_the_documents_host() {
        let user = User {
            name: None,
            email: None,
            ..alice()
        };
        let scope = Scope::parse("mcp:tools").unwrap();
        let view = view(&ConsentFacts {
            user: &user,
            client_name: Some(" "),
            client_id: "https://vscode.dev/oauth/client.json",
            client_id_is_document: true,
            redirect_uri: "http://127.0.0.1:33418/",
            resource: "https://mcp.example.com/mcp",
            scope: &scope,
        });
        assert_eq!(view.client_host, "vscode.dev");
        assert_eq!(view.client_name, None, "a blank name is no name");
        let long = "n".repeat(MAX_CLIENT_NAME + 50);
        let kept = client_name(Some(&long)).unwrap();
        assert_eq!(kept.chars().count(), MAX_CLIENT_NAME + 1);
        assert!(kept.ends_with('…'));
        assert_eq!(client_name(Some(" Claude ")).as_deref(), Some("Claude"));
        assert_eq!(view.user, "dev:alice");
    }
}

//! What `/oauth/authorize` decides (RFC 6749 §4.1.1, PKCE RFC 7636, resource indicators RFC
//! 8707): whether a request is acceptable, and where its error may be sent. The HTTP handler only
//! parses the query, looks the client up and carries out the answer.

use crate::oauth::{ErrorCode, OAuthError, Scope};

/// Longest `state` kept for a pending request: an unauthenticated request must not be able to
/// make the server store kilobytes of attacker data. 512 bytes fit any client's nonce or JWT-ish
/// state.
pub const MAX_STATE: usize = 512;
/// Longest `scope` parameter.
pub const MAX_SCOPE: usize = 1024;
/// Longest `resource` (an MCP server URL) and `redirect_uri`.
pub const MAX_URI: usize = 2048;
/// An S256 `code_challenge` is the unpadded base64url of a SHA-256 digest: always 43 characters.
pub const S256_CHALLENGE_LEN: usize = 43;

/// The parameters of an authorization request as they arrived (empty ones as absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthorizeQuery<'a> {
    pub response_type: Option<&'a str>,
    pub code_challenge: Option<&'a str>,
    pub code_challenge_method: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub state: Option<&'a str>,
}

/// What the server offers, and what the client registered.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// The MCP servers this authorization server issues tokens for.
    pub resources: &'a [String],
    /// The scopes the server offers, in configuration order (the first is the default).
    pub scopes: &'a [String],
    /// The `scope` the client registered, if it did.
    pub registered: Option<&'a Scope>,
}

/// An acceptable request: what the code will be bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub code_challenge: String,
    pub resource: String,
    pub scope: Scope,
}

/// Checks an authorization request whose client and redirect URI are already known good.
pub fn check(query: &AuthorizeQuery<'_>, offer: &Offer<'_>) -> Result<Accepted, OAuthError> {
    if query.response_type != Some("code") {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedResponseType,
            "only response_type=code is supported",
        ));
    }
    too_long("state", query.state, MAX_STATE)?;
    too_long("scope", query.scope, MAX_SCOPE)?;
    too_long("resource", query.resource, MAX_URI)?;
    let Some(challenge) = query.code_challenge else {
        return Err(OAuthError::invalid_request(
            "PKCE is required: send code_challenge and code_challenge_method=S256",
        ));
    };
    if query.code_challenge_method != Some("S256") {
        return Err(OAuthError::invalid_request(
            "code_challenge_method must be S256 (plain is not accepted)",
        ));
    }
    let base64url = challenge
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if challenge.len() != S256_CHALLENGE_LEN || !base64url {
        return Err(OAuthError::invalid_request(format!(
            "code_challenge must be the {S256_CHALLENGE_LEN}-character unpadded base64url SHA-256 of the code_verifier (got {} characters)",
            challenge.len()
        )));
    }
    let Some(resource) = query.resource else {
        return Err(OAuthError::invalid_target(
            "the resource parameter (RFC 8707) is required: the MCP server URL",
        ));
    };
    if !offer.resources.iter().any(|r| r == resource) {
        return Err(OAuthError::invalid_target(
            "the resource is not an MCP server this authorization server issues tokens for",
        ));
    }
    let scope = requested_scope(query.scope, offer)?;
    Ok(Accepted {
        code_challenge: challenge.to_owned(),
        resource: resource.to_owned(),
        scope,
    })
}

fn too_long(name: &str, value: Option<&str>, limit: usize) -> Result<(), OAuthError> {
    match value {
        Some(value) if value.len() > limit => Err(OAuthError::invalid_request(format!(
            "{name} is {} bytes long; at most {limit} are accepted",
            value.len()
        ))),
        _ => Ok(()),
    }
}

/// The scope to grant: what was asked (or the client's registered scope, or the server's first
/// scope), each token within what the server offers and the client registered.
fn requested_scope(asked: Option<&str>, offer: &Offer<'_>) -> Result<Scope, OAuthError> {
    let offered: Scope = offer.scopes.iter().map(String::as_str).collect();
    let asked = match asked {
        Some(asked) => {
            Scope::parse(asked).map_err(|err| OAuthError::invalid_scope(err.to_string()))?
        }
        None => match offer.registered {
            Some(registered) => registered.clone(),
            None => offer.scopes.iter().take(1).map(String::as_str).collect(),
        },
    };
    let allowed = match offer.registered {
        Some(registered) => offered.intersection(registered),
        None => offered,
    };
    match asked.first_outside(&allowed) {
        Some(token) => Err(OAuthError::invalid_scope(format!(
            "scope `{token}` is not available to this client"
        ))),
        None => Ok(asked),
    }
}

/// The `state` to echo in a redirect: an over-long one (refused) is not sent back.
pub fn echoable_state(state: Option<&str>) -> Option<&str> {
    state.filter(|s| s.len() <= MAX_STATE)
}

/// Where the person at the browser stands when an error happens after the client's redirect URI
/// was found registered (before that, errors are always shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// They have not answered this client's consent page in this request (they may have signed
    /// in, or be on the way back from the identity provider).
    NotAnswered,
    /// They just answered this client's consent page.
    UserAnswered,
}

/// Where an error goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// To the client's redirect URI, with `error`, `state` and `iss` (RFC 6749 §4.1.2.1).
    Redirect,
    /// An error page at the authorization server.
    Page,
}

/// Errors go to the redirect URI only once the person at the browser has answered the client's
/// consent page in this very request. Anyone can register a client with any redirect URI, and
/// anyone can approve their own client once: redirecting errors on an earlier approval (by
/// whoever gave it) would still make this server an open redirector for a link an attacker sends
/// (RFC 9700 §4.11.2), so until then errors are a page at the server.
pub fn error_delivery(standing: Standing) -> Delivery {
    match standing {
        Standing::UserAnswered => Delivery::Redirect,
        Standing::NotAnswered => Delivery::Page,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn resources() -> Vec<String> {
        vec!["https://mcp.example.com/mcp".into()]
    }

    fn scopes() -> Vec<String> {
        vec!["mcp:tools".into(), "offline_access".into()]
    }

    fn good() -> AuthorizeQuery<'static> {
        AuthorizeQuery {
            response_type: Some("code"),
            code_challenge: Some(CHALLENGE),
            code_challenge_method: Some("S256"),
            resource: Some("https://mcp.example.com/mcp"),
            scope: Some("mcp:tools offline_access"),
            state: Some("st"),
        }
    }

    fn run(query: AuthorizeQuery<'_>, registered: Option<&Scope>) -> Result<Accepted, OAuthError> {
        let (resources, scopes) = (resources(), scopes());
        check(
            &query,
            &Offer {
                resources: &resources,
                scopes: &scopes,
                registered,
            },
        )
    }

    #[test]
    fn a_good_request_is_accepted_with_its_scope_as_a_set() {
        let accepted = run(good(), None).unwrap();
        assert_eq!(accepted.scope.to_string(), "mcp:tools offline_access");
        assert_eq!(accepted.code_challenge, CHALLENGE);
    }

    #[test]
    fn each_parameter_has_a_length_limit_naming_it() {
        let state = "s".repeat(MAX_STATE + 1);
        let err = run(
            AuthorizeQuery {
                state: Some(&state),
                ..good()
            },
            None,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.description.starts_with("state is 513 bytes"), "{err}");
        let scope = "a ".repeat(MAX_SCOPE);
        let err = run(
            AuthorizeQuery {
                scope: Some(&scope),
                ..good()
            },
            None,
        )
        .unwrap_err();
        assert!(err.description.starts_with("scope is"), "{err}");
        let resource = format!("https://mcp.example.com/{}", "x".repeat(MAX_URI));
        let err = run(
            AuthorizeQuery {
                resource: Some(&resource),
                ..good()
            },
            None,
        )
        .unwrap_err();
        assert!(err.description.starts_with("resource is"), "{err}");
        let state = "s".repeat(MAX_STATE);
        assert!(run(
            AuthorizeQuery {
                state: Some(&state),
                ..good()
            },
            None
        )
        .is_ok());
    }

    #[test]
    fn a_challenge_must_be_exactly_an_s256_digest() {
        for bad in [
            &CHALLENGE[..42],
            &format!("{CHALLENGE}A")[..],
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw.cM",
        ] {
            let err = run(
                AuthorizeQuery {
                    code_challenge: Some(bad),
                    ..good()
                },
                None,
            )
            .unwrap_err();
            assert!(err.description.contains("43-character"), "{bad}: {err}");
        }
        let err = run(
            AuthorizeQuery {
                code_challenge_method: Some("plain"),
                ..good()
            },
            None,
        )
        .unwrap_err();
        assert!(err.description.contains("S256"), "{err}");
    }

    #[test]
    fn resource_and_scope_must_be_offered_and_registered() {
        let err = run(
            AuthorizeQuery {
                resource: Some("https://other.example.com/mcp"),
                ..good()
            },
            None,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidTarget);
        let err = run(
            AuthorizeQuery {
                scope: Some("mcp:admin"),
                ..good()
            },
            None,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
        assert!(err.description.contains("`mcp:admin`"), "{err}");
        let registered = Scope::parse("mcp:tools").unwrap();
        let err = run(good(), Some(&registered)).unwrap_err();
        assert!(err.description.contains("`offline_access`"), "{err}");
        let defaulted = run(
            AuthorizeQuery {
                scope: None,
                ..good()
            },
            Some(&registered),
        )
        .unwrap();
        assert_eq!(defaulted.scope, registered);
        let first = run(
            AuthorizeQuery {
                scope: None,
                ..good()
            },
            None,
        )
        .unwrap();
        assert_eq!(first.scope.to_string(), "mcp:tools");
    }

    #[test]
    fn errors_are_redirected_only_once_the_person_answered_the_consent_page() {
        assert_eq!(error_delivery(Standing::NotAnswered), Delivery::Page);
        assert_eq!(error_delivery(Standing::UserAnswered), Delivery::Redirect);
    }

    #[test]
    fn an_over_long_state_is_not_echoed() {
        let long = "s".repeat(MAX_STATE + 1);
        assert_eq!(echoable_state(Some(&long)), None);
        assert_eq!(echoable_state(Some("st")), Some("st"));
    }
}

//! RFC 8693 token exchange: a gateway, authenticated as a confidential client, presents the
//! caller's access token (one this server issued) and names a backend; the backend gets a
//! short-lived token of its own that carries the same user, with the gateway as the actor
//! (§4.1 `act`). Backends thus learn who the caller is without ever receiving the caller's token
//! (the MCP specification forbids passing it through) and without a shared service account.
//!
//! Which clients may exchange for which backend, and with which scopes, is configuration
//! ([`Backend`]); what is decided here is a plain function of that, the request and the subject
//! token as the key ring found it, so every refusal and every claim of an issued token is a unit
//! test. Signing, the database and the upstream identity provider stay with the handler.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::oauth::grant::{access_claims, Grant, Issuance, User, SESSION_CLAIM};
use crate::oauth::registration::quoted;
use crate::oauth::{ErrorCode, OAuthError, Scope};

/// The grant type (RFC 8693 §2.1).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Actors a token of ours for an MCP resource may carry from its grant: the agent an ID-JAG
/// names (`act` = the client acting for the user).
const GRANT_ACTORS: usize = 1;
/// An OAuth access token (§3): what subject tokens are, and what is issued.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// A JWT (§3): our access tokens are JWTs, so a client may name them this way too.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// How far a subject token's `nbf` may lie ahead of this server's clock: it was signed by a
/// replica whose clock runs slightly ahead. `exp` gets no such leeway.
pub const CLOCK_SKEW_SECONDS: i64 = 30;

/// Who issues a backend's tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// This server, with its signing keys: for backends that verify against our JWKS.
    #[default]
    #[serde(rename = "self")]
    SelfSigned,
    /// The upstream identity provider, for the same user (with the refresh token of the user's
    /// sign-in): for backends that trust the provider rather than us.
    Upstream,
}

/// A backend tokens may be exchanged for: an entry of `token_exchange.audiences`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The backend's own audience: `aud` of the tokens issued for it, what its verifier checks.
    /// Requests name it with `audience` or `resource`.
    pub audience: String,
    /// The client IDs that may exchange tokens for it.
    pub clients: Vec<String>,
    /// The scopes its tokens may carry: of these, those the subject token has (or fewer, if
    /// the request asks). A subject token with none of them is refused.
    pub scopes: Vec<String>,
    #[serde(default)]
    pub issuer: TokenSource,
    /// `upstream` only: the scopes asked of the identity provider (none: those of the sign-in).
    #[serde(default)]
    pub upstream_scopes: Vec<String>,
    /// `upstream` only: the RFC 8707 resource asked of the identity provider, for one that
    /// supports resource indicators; it must have been granted at sign-in.
    pub upstream_resource: Option<String>,
}

impl Backend {
    /// What is asked of the identity provider for this backend, as one string: a kept upstream
    /// token is reused only while the configuration still asks for the same.
    pub fn upstream_request(&self) -> String {
        format!(
            "{} {}",
            self.upstream_resource.as_deref().unwrap_or("-"),
            self.upstream_scopes.join(" ")
        )
    }
}

/// What an exchange takes from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Our issuer and group prefix; `access_seconds` is the exchange lifetime.
    pub issuance: Issuance<'a>,
    /// The MCP resources: a subject token must be for one of them.
    pub resources: &'a [String],
    pub backends: &'a [Backend],
    /// The longest `act` chain an issued token may carry: 1 means a token minted by exchange is
    /// never a subject token again (no unbounded chains of delegation).
    pub max_actor_chain: usize,
}

/// The request (RFC 8693 §2.1), as sent, with the client that authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub client_id: &'a str,
    pub subject_token_type: Option<&'a str>,
    pub requested_token_type: Option<&'a str>,
    pub audience: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub scope: Option<&'a Scope>,
    /// Whether an `actor_token` was sent (not accepted: the actor is the client).
    pub actor_token: bool,
}

/// The subject token, as the key ring found it.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Absent,
    /// Sent, but no key of this server signed it as an access token (or it is no JWT at all).
    Unverified,
    /// Signed by one of our keys, with its claims (times not checked yet) and whether the
    /// sign-in it came from (its `sid`, the grant family) has been revoked.
    Verified {
        claims: Map<String, Value>,
        session_revoked: bool,
    },
}

/// What to issue.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'a> {
    /// Sign these claims: a token of ours for the backend.
    Sign {
        claims: Map<String, Value>,
        expires_in: u64,
        scope: String,
        issued_token_type: &'static str,
    },
    /// Fetch the identity provider's token for `backend`, for the user of the sign-in
    /// `session` (the grant family whose upstream session is kept).
    Upstream {
        backend: &'a Backend,
        session: String,
    },
}

/// Why an exchange is refused. The text is safe to show the client: it quotes only what the
/// client sent or what our own signed token says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("subject_token is required: the caller's access token")]
    NoSubjectToken,
    #[error("subject_token_type is required (RFC 8693 §2.1): {ACCESS_TOKEN_TYPE}")]
    NoSubjectTokenType,
    #[error("subject_token_type {0} is not accepted: present an access token this server issued, as {ACCESS_TOKEN_TYPE}")]
    SubjectTokenType(String),
    #[error("requested_token_type {0} cannot be issued for this backend: ask for {ACCESS_TOKEN_TYPE} or leave it out")]
    RequestedTokenType(String),
    #[error("actor_token is not accepted: the actor is the client that authenticates")]
    ActorToken,
    #[error("name the backend with `audience` or `resource`")]
    NoTarget,
    #[error("`audience` {audience} and `resource` {resource} name different backends: name one")]
    TwoTargets { audience: String, resource: String },
    #[error("this client may not exchange tokens: it is not among the clients of any audience in token_exchange.audiences")]
    UnauthorizedClient,
    #[error("{0} is not an audience this client may exchange tokens for")]
    Target(String),
    #[error("the subject_token is not an access token this server issued (unknown signature, key or type)")]
    Unverified,
    #[error("the subject_token was issued by {0}, not by this server")]
    OtherIssuer(String),
    #[error("the subject_token is for {0}, which is not a resource this server accepts subject tokens for")]
    OtherAudience(String),
    #[error("the subject_token has expired")]
    Expired,
    #[error("the subject_token is not valid yet")]
    Premature,
    #[error("the sign-in the subject_token comes from was revoked; the user must sign in again")]
    Revoked,
    #[error("the subject_token names no subject")]
    NoSubject,
    #[error("the subject_token already carries {depth} actor(s) and issued tokens may carry at most {max} (token_exchange.max_actor_chain): a token minted by exchange is not exchanged again")]
    Chain { depth: usize, max: usize },
    #[error("{0} trusts the identity provider, whose token only a user's own sign-in has: the subject_token comes from no sign-in (no `sid`)")]
    NoSession(String),
    #[error("scope {0} may not be exchanged for this backend: it must be in the subject_token and among the backend's scopes")]
    WiderScope(String),
    #[error("the subject_token carries none of the scopes ({0}) this backend's tokens may have")]
    NoCommonScope(String),
}

impl From<Refusal> for OAuthError {
    fn from(refusal: Refusal) -> Self {
        let code = match refusal {
            Refusal::NoSubjectToken
            | Refusal::NoSubjectTokenType
            | Refusal::SubjectTokenType(_)
            | Refusal::RequestedTokenType(_)
            | Refusal::ActorToken
            | Refusal::NoTarget
            | Refusal::TwoTargets { .. } => ErrorCode::InvalidRequest,
            Refusal::UnauthorizedClient => ErrorCode::UnauthorizedClient,
            // §2.2.2: unwilling to issue for the target.
            Refusal::Target(_) => ErrorCode::InvalidTarget,
            Refusal::WiderScope(_) | Refusal::NoCommonScope(_) => ErrorCode::InvalidScope,
            _ => ErrorCode::InvalidGrant,
        };
        OAuthError::new(code, refusal.to_string())
    }
}

/// Decides an exchange: the request's shape, then the client and the backend it names, then
/// the subject token, then the scope. `jti` is the issued token's ID.
pub fn decide<'p>(
    policy: &Policy<'p>,
    ask: &Ask<'_>,
    subject: Subject,
    now: i64,
    jti: String,
) -> Result<Decision<'p>, Refusal> {
    if subject == Subject::Absent {
        return Err(Refusal::NoSubjectToken);
    }
    match ask.subject_token_type {
        None => return Err(Refusal::NoSubjectTokenType),
        Some(ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE) => {}
        Some(other) => return Err(Refusal::SubjectTokenType(quoted(other))),
    }
    if ask.actor_token {
        return Err(Refusal::ActorToken);
    }
    let backend = target(policy, ask)?;
    let issued_token_type = match (ask.requested_token_type, backend.issuer) {
        (None | Some(ACCESS_TOKEN_TYPE), _) => ACCESS_TOKEN_TYPE,
        (Some(JWT_TOKEN_TYPE), TokenSource::SelfSigned) => JWT_TOKEN_TYPE,
        (Some(other), _) => return Err(Refusal::RequestedTokenType(quoted(other))),
    };
    let claims = verified(policy, subject, now)?;
    let scope = scope(backend, &claims, ask.scope)?;
    let session = claims.get(SESSION_CLAIM).and_then(Value::as_str);
    if backend.issuer == TokenSource::Upstream {
        let session = session.ok_or_else(|| Refusal::NoSession(quoted(&backend.audience)))?;
        return Ok(Decision::Upstream {
            backend,
            session: session.to_owned(),
        });
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let strings = |name: &str| -> Vec<String> {
        claims
            .get(name)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The same user mapping as the subject token, so the same policies apply at the backend.
    let grant = Grant {
        client_id: ask.client_id.to_owned(),
        resource: backend.audience.clone(),
        scope: scope.to_string(),
        user: User {
            subject: text("sub").unwrap_or_default(),
            email: text("email"),
            name: text("name"),
            groups: strings("groups"),
            roles: strings("roles"),
        },
        redirect_uri: String::new(),
        code_challenge: String::new(),
    };
    // Never past the subject token: the backend's token dies with the caller's.
    let subject_exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
    let expires_in = policy
        .issuance
        .access_seconds
        .min(u64::try_from(subject_exp - now).unwrap_or_default());
    let issuance = Issuance {
        access_seconds: expires_in,
        ..policy.issuance
    };
    let mut issued = access_claims(
        &issuance,
        &grant,
        u64::try_from(now).unwrap_or_default(),
        jti,
    );
    // §4.1: the current actor, with the subject token's own actors nested inside.
    let mut act = Map::new();
    act.insert("sub".into(), json!(ask.client_id));
    if let Some(prior) = claims.get("act") {
        act.insert("act".into(), prior.clone());
    }
    issued.insert("act".into(), Value::Object(act));
    if let Some(session) = session {
        issued.insert(SESSION_CLAIM.into(), json!(session));
    }
    Ok(Decision::Sign {
        claims: issued,
        expires_in,
        scope: scope.to_string(),
        issued_token_type,
    })
}

/// The backend the request names, if this client may exchange for it. A client allowed no
/// backend at all is `unauthorized_client`; one that names a backend it is not allowed (or one
/// that does not exist) is told the same either way, so the answer maps no configuration.
fn target<'p>(policy: &Policy<'p>, ask: &Ask<'_>) -> Result<&'p Backend, Refusal> {
    let named = match (ask.audience, ask.resource) {
        (None, None) => return Err(Refusal::NoTarget),
        (Some(audience), Some(resource)) if audience != resource => {
            return Err(Refusal::TwoTargets {
                audience: quoted(audience),
                resource: quoted(resource),
            })
        }
        (Some(named), _) | (None, Some(named)) => named,
    };
    let allowed = |backend: &Backend| backend.clients.iter().any(|c| c == ask.client_id);
    if !policy.backends.iter().any(allowed) {
        return Err(Refusal::UnauthorizedClient);
    }
    policy
        .backends
        .iter()
        .find(|backend| backend.audience == named && allowed(backend))
        .ok_or_else(|| Refusal::Target(quoted(named)))
}

/// The subject token's claims, if it is a current access token of ours for one of our
/// resources (or, where chains are allowed, for a backend), from a sign-in still standing,
/// naming a subject, and short enough a chain of actors to be extended by one.
fn verified(
    policy: &Policy<'_>,
    subject: Subject,
    now: i64,
) -> Result<Map<String, Value>, Refusal> {
    let Subject::Verified {
        claims,
        session_revoked,
    } = subject
    else {
        return Err(Refusal::Unverified);
    };
    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    if text("iss") != policy.issuance.issuer {
        return Err(Refusal::OtherIssuer(quoted(text("iss"))));
    }
    // A token for one of our resources may carry the one actor its grant named (the agent of an
    // ID-JAG); a token for a backend was minted by exchange, and its chain is what
    // `max_actor_chain` bounds — checked before the audience, since that is the reason to give.
    let aud = text("aud");
    let depth = actor_depth(&claims);
    let for_resource = policy.resources.iter().any(|r| r == aud);
    let (too_deep, max) = if for_resource {
        (depth > GRANT_ACTORS, GRANT_ACTORS)
    } else {
        (depth >= policy.max_actor_chain, policy.max_actor_chain)
    };
    if too_deep {
        return Err(Refusal::Chain { depth, max });
    }
    // A backend's token is exchanged again only where chains are allowed at all.
    let chains = policy.max_actor_chain > 1;
    let backend = chains && policy.backends.iter().any(|b| b.audience == aud);
    if !(for_resource || backend) {
        return Err(Refusal::OtherAudience(quoted(aud)));
    }
    if time("exp").is_none_or(|exp| exp <= now) {
        return Err(Refusal::Expired);
    }
    if time("nbf").is_some_and(|nbf| nbf > now + CLOCK_SKEW_SECONDS) {
        return Err(Refusal::Premature);
    }
    if session_revoked {
        return Err(Refusal::Revoked);
    }
    if text("sub").is_empty() {
        return Err(Refusal::NoSubject);
    }
    Ok(claims)
}

/// How many actors a token's `act` claim nests.
fn actor_depth(claims: &Map<String, Value>) -> usize {
    std::iter::successors(claims.get("act").and_then(Value::as_object), |actor| {
        actor.get("act").and_then(Value::as_object)
    })
    .count()
}

/// The issued scope: the backend's scopes the subject token has (never `offline_access`: no
/// refresh token is issued), or the narrower set the request asks.
fn scope(
    backend: &Backend,
    claims: &Map<String, Value>,
    asked: Option<&Scope>,
) -> Result<Scope, Refusal> {
    let configured: Scope = backend.scopes.iter().map(String::as_str).collect();
    let held = Scope::from_stored(claims.get("scope").and_then(Value::as_str).unwrap_or(""));
    let allowed = configured.intersection(&held).without("offline_access");
    let scope = match asked {
        Some(asked) => {
            if let Some(extra) = asked.first_outside(&allowed) {
                return Err(Refusal::WiderScope(quoted(extra)));
            }
            asked.clone()
        }
        None => allowed,
    };
    if scope == Scope::default() {
        return Err(Refusal::NoCommonScope(configured.to_string()));
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::clock::ManualClock;
    use crate::oauth::Clock;

    const ISSUER: &str = "https://auth.example.com";
    const RESOURCE: &str = "https://mcp.example.com/mcp";
    const GITHUB: &str = "https://github-mcp.internal/mcp";
    const JIRA: &str = "https://jira-mcp.internal/mcp";
    const NOW: i64 = 1_000_000;

    fn backends() -> Vec<Backend> {
        vec![
            Backend {
                audience: GITHUB.into(),
                clients: vec!["mesh-gateway".into()],
                scopes: vec!["mcp:tools".into(), "mcp:read".into()],
                issuer: TokenSource::SelfSigned,
                upstream_scopes: vec![],
                upstream_resource: None,
            },
            Backend {
                audience: JIRA.into(),
                clients: vec!["mesh-gateway".into(), "other-gateway".into()],
                scopes: vec!["mcp:tools".into()],
                issuer: TokenSource::Upstream,
                upstream_scopes: vec!["jira.read".into()],
                upstream_resource: Some("https://jira.example.com".into()),
            },
        ]
    }

    fn policy(backends: &[Backend], max_actor_chain: usize) -> Policy<'_> {
        Policy {
            issuance: Issuance {
                issuer: ISSUER,
                access_seconds: 300,
                group_prefix: "mcp-",
            },
            resources: std::slice::from_ref(&RESOURCES[0]),
            backends,
            max_actor_chain,
        }
    }

    static RESOURCES: std::sync::LazyLock<[String; 1]> =
        std::sync::LazyLock::new(|| [RESOURCE.to_owned()]);

    fn ask<'a>() -> Ask<'a> {
        Ask {
            client_id: "mesh-gateway",
            subject_token_type: Some(ACCESS_TOKEN_TYPE),
            requested_token_type: None,
            audience: Some(GITHUB),
            resource: None,
            scope: None,
            actor_token: false,
        }
    }

    /// Alice's access token for the MCP resource, as the code flow issues it, with `extra`
    /// claims replacing its own (`null` removes one).
    fn subject(extra: Value) -> Subject {
        Subject::Verified {
            claims: claims(extra),
            session_revoked: false,
        }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut claims = json!({
            "iss": ISSUER, "sub": "okta|alice", "aud": RESOURCE, "client_id": "claude-desktop",
            "scope": "mcp:tools offline_access", "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3540,
            "jti": "j1", "email": "alice@example.com", "name": "Alice",
            "groups": ["mcp-developers"], "roles": ["MCP.Developer"], "sid": "family-1",
        })
        .as_object()
        .cloned()
        .unwrap();
        for (name, value) in extra.as_object().unwrap() {
            if value.is_null() {
                claims.remove(name);
            } else {
                claims.insert(name.clone(), value.clone());
            }
        }
        claims
    }

    fn refused(policy: &Policy<'_>, ask: &Ask<'_>, subject: Subject) -> (Refusal, ErrorCode) {
        let refusal = decide(policy, ask, subject, NOW, "jti".into()).unwrap_err();
        let code = OAuthError::from(refusal.clone()).code;
        (refusal, code)
    }

    #[test]
    fn the_issued_token_carries_the_user_for_the_backend_with_the_gateway_as_actor() {
        let clock = ManualClock::at(NOW);
        let backends = backends();
        let Ok(Decision::Sign {
            claims,
            expires_in,
            scope,
            issued_token_type,
        }) = decide(
            &policy(&backends, 1),
            &ask(),
            subject(json!({})),
            clock.now(),
            "fresh".into(),
        )
        else {
            panic!("a good exchange is signed");
        };
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(
            claims["aud"], GITHUB,
            "for the backend, not the MCP resource"
        );
        assert_eq!(claims["sub"], "okta|alice");
        assert_eq!(claims["groups"], json!(["mcp-developers"]));
        assert_eq!(claims["roles"], json!(["MCP.Developer"]));
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["name"], "Alice");
        assert_eq!(claims["client_id"], "mesh-gateway");
        assert_eq!(claims["act"], json!({"sub": "mesh-gateway"}));
        assert_eq!(claims["sid"], "family-1", "the sign-in stays traceable");
        assert_eq!(claims["jti"], "fresh");
        assert_eq!(
            claims["scope"], "mcp:tools",
            "offline_access is never exchanged"
        );
        assert_eq!(
            (claims["iat"].as_i64(), claims["exp"].as_i64()),
            (Some(NOW), Some(NOW + 300))
        );
        assert_eq!((expires_in, scope.as_str()), (300, "mcp:tools"));
        assert_eq!(issued_token_type, ACCESS_TOKEN_TYPE);
    }

    #[test]
    fn the_issued_token_never_outlives_the_subject_token() {
        let backends = backends();
        let Ok(Decision::Sign {
            claims, expires_in, ..
        }) = decide(
            &policy(&backends, 1),
            &ask(),
            subject(json!({"exp": NOW + 42})),
            NOW,
            "j".into(),
        )
        else {
            panic!()
        };
        assert_eq!((expires_in, claims["exp"].as_i64()), (42, Some(NOW + 42)));
    }

    #[test]
    fn a_chained_exchange_nests_the_earlier_actor_when_configured_and_is_refused_otherwise() {
        let backends = backends();
        let minted =
            json!({"aud": GITHUB, "client_id": "mesh-gateway", "act": {"sub": "mesh-gateway"}});
        let (refusal, code) = refused(&policy(&backends, 1), &ask(), subject(minted.clone()));
        assert_eq!(refusal, Refusal::Chain { depth: 1, max: 1 });
        assert_eq!(code, ErrorCode::InvalidGrant);
        let Ok(Decision::Sign { claims, .. }) = decide(
            &policy(&backends, 2),
            &Ask {
                client_id: "mesh-gateway",
                ..ask()
            },
            subject(minted),
            NOW,
            "j".into(),
        ) else {
            panic!("two actors allowed")
        };
        assert_eq!(
            claims["act"],
            json!({"sub": "mesh-gateway", "act": {"sub": "mesh-gateway"}})
        );
        let deeper = json!({"act": {"sub": "b", "act": {"sub": "a"}}});
        assert_eq!(
            refused(&policy(&backends, 2), &ask(), subject(deeper)).0,
            Refusal::Chain { depth: 2, max: 1 },
            "a token for our resource carries at most its grant's agent"
        );
    }

    #[test]
    fn a_token_an_agent_got_for_a_user_is_exchanged_with_the_gateway_in_front() {
        let backends = backends();
        let Ok(Decision::Sign { claims, .. }) = decide(
            &policy(&backends, 1),
            &ask(),
            subject(json!({"act": {"sub": "agent-7"}})),
            NOW,
            "j".into(),
        ) else {
            panic!("an ID-JAG's token (its agent as actor) is exchangeable by default")
        };
        assert_eq!(
            claims["act"],
            json!({"sub": "mesh-gateway", "act": {"sub": "agent-7"}})
        );
    }

    #[test]
    fn a_malformed_request_is_invalid_request() {
        let backends = backends();
        let policy = policy(&backends, 1);
        let cases = [
            (ask(), Subject::Absent, Refusal::NoSubjectToken),
            (
                Ask {
                    subject_token_type: None,
                    ..ask()
                },
                subject(json!({})),
                Refusal::NoSubjectTokenType,
            ),
            (
                Ask {
                    subject_token_type: Some("urn:ietf:params:oauth:token-type:id_token"),
                    ..ask()
                },
                subject(json!({})),
                Refusal::SubjectTokenType(quoted("urn:ietf:params:oauth:token-type:id_token")),
            ),
            (
                Ask {
                    actor_token: true,
                    ..ask()
                },
                subject(json!({})),
                Refusal::ActorToken,
            ),
            (
                Ask {
                    audience: None,
                    ..ask()
                },
                subject(json!({})),
                Refusal::NoTarget,
            ),
            (
                Ask {
                    resource: Some(JIRA),
                    ..ask()
                },
                subject(json!({})),
                Refusal::TwoTargets {
                    audience: quoted(GITHUB),
                    resource: quoted(JIRA),
                },
            ),
            (
                Ask {
                    requested_token_type: Some("urn:ietf:params:oauth:token-type:refresh_token"),
                    ..ask()
                },
                subject(json!({})),
                Refusal::RequestedTokenType(quoted(
                    "urn:ietf:params:oauth:token-type:refresh_token",
                )),
            ),
            (
                Ask {
                    audience: Some(JIRA),
                    requested_token_type: Some(JWT_TOKEN_TYPE),
                    ..ask()
                },
                subject(json!({})),
                Refusal::RequestedTokenType(quoted(JWT_TOKEN_TYPE)),
            ),
        ];
        for (ask, subject, expected) in cases {
            let (refusal, code) = refused(&policy, &ask, subject);
            assert_eq!(refusal, expected);
            assert_eq!(code, ErrorCode::InvalidRequest, "{refusal}");
        }
    }

    #[test]
    fn either_token_type_names_our_access_tokens_and_the_target_may_be_a_resource() {
        let backends = backends();
        for (subject_token_type, requested, issued) in [
            (JWT_TOKEN_TYPE, None, ACCESS_TOKEN_TYPE),
            (ACCESS_TOKEN_TYPE, Some(JWT_TOKEN_TYPE), JWT_TOKEN_TYPE),
        ] {
            let ask = Ask {
                subject_token_type: Some(subject_token_type),
                requested_token_type: requested,
                audience: None,
                resource: Some(GITHUB),
                ..ask()
            };
            let decided = decide(
                &policy(&backends, 1),
                &ask,
                subject(json!({})),
                NOW,
                "j".into(),
            );
            let Ok(Decision::Sign {
                issued_token_type, ..
            }) = decided
            else {
                panic!("{decided:?}")
            };
            assert_eq!(issued_token_type, issued);
        }
    }

    #[test]
    fn a_client_not_listed_for_the_backend_is_refused_alike_for_unknown_backends() {
        let backends = backends();
        let policy = policy(&backends, 1);
        let stranger = Ask {
            client_id: "claude-desktop",
            ..ask()
        };
        assert_eq!(
            refused(&policy, &stranger, subject(json!({}))),
            (Refusal::UnauthorizedClient, ErrorCode::UnauthorizedClient)
        );
        let other = Ask {
            client_id: "other-gateway",
            ..ask()
        };
        let (not_allowed, code) = refused(&policy, &other, subject(json!({})));
        assert_eq!(code, ErrorCode::InvalidTarget);
        let unknown = Ask {
            audience: Some("https://nowhere/mcp"),
            ..other
        };
        let (missing, _) = refused(&policy, &unknown, subject(json!({})));
        assert_eq!(
            not_allowed.to_string().replace(GITHUB, "X"),
            missing.to_string().replace("https://nowhere/mcp", "X"),
            "one answer for not-yours and does-not-exist"
        );
    }

    #[test]
    fn a_bad_subject_token_is_invalid_grant() {
        let backends = backends();
        let policy = policy(&backends, 1);
        let cases = [
            (Subject::Unverified, Refusal::Unverified),
            (
                subject(json!({"iss": "https://evil.example.com"})),
                Refusal::OtherIssuer(quoted("https://evil.example.com")),
            ),
            (
                subject(json!({"aud": GITHUB})),
                Refusal::OtherAudience(quoted(GITHUB)),
            ),
            (subject(json!({"exp": NOW})), Refusal::Expired),
            (subject(json!({"exp": null})), Refusal::Expired),
            (
                subject(json!({"nbf": NOW + CLOCK_SKEW_SECONDS + 1})),
                Refusal::Premature,
            ),
            (subject(json!({"sub": ""})), Refusal::NoSubject),
            (
                Subject::Verified {
                    claims: claims(json!({})),
                    session_revoked: true,
                },
                Refusal::Revoked,
            ),
        ];
        for (subject, expected) in cases {
            let (refusal, code) = refused(&policy, &ask(), subject);
            assert_eq!(refusal, expected);
            assert_eq!(code, ErrorCode::InvalidGrant, "{refusal}");
        }
        assert!(
            decide(
                &policy,
                &ask(),
                subject(json!({"nbf": NOW + CLOCK_SKEW_SECONDS})),
                NOW,
                "j".into()
            )
            .is_ok(),
            "a replica's clock a little ahead"
        );
    }

    #[test]
    fn the_scope_is_the_backends_within_the_subject_tokens_or_narrower() {
        let backends = backends();
        let policy = policy(&backends, 1);
        let both = json!({"scope": "mcp:tools mcp:read mcp:admin"});
        let Ok(Decision::Sign { scope, .. }) =
            decide(&policy, &ask(), subject(both.clone()), NOW, "j".into())
        else {
            panic!()
        };
        assert_eq!(
            scope, "mcp:read mcp:tools",
            "mcp:admin is not the backend's"
        );
        let read = Scope::parse("mcp:read").unwrap();
        let narrower = Ask {
            scope: Some(&read),
            ..ask()
        };
        let Ok(Decision::Sign { scope, .. }) =
            decide(&policy, &narrower, subject(both.clone()), NOW, "j".into())
        else {
            panic!()
        };
        assert_eq!(scope, "mcp:read");
        let admin = Scope::parse("mcp:tools mcp:admin").unwrap();
        let wider = Ask {
            scope: Some(&admin),
            ..ask()
        };
        assert_eq!(
            refused(&policy, &wider, subject(both)),
            (
                Refusal::WiderScope(quoted("mcp:admin")),
                ErrorCode::InvalidScope
            )
        );
        let (refusal, code) = refused(&policy, &ask(), subject(json!({"scope": "offline_access"})));
        assert_eq!(refusal, Refusal::NoCommonScope("mcp:read mcp:tools".into()));
        assert_eq!(code, ErrorCode::InvalidScope);
    }

    #[test]
    fn an_upstream_backend_is_fetched_for_the_sign_in_of_the_subject_token() {
        let backends = backends();
        let policy = policy(&backends, 1);
        let jira = Ask {
            audience: Some(JIRA),
            ..ask()
        };
        assert_eq!(
            decide(&policy, &jira, subject(json!({})), NOW, "j".into()),
            Ok(Decision::Upstream {
                backend: &backends[1],
                session: "family-1".into()
            })
        );
        assert_eq!(
            refused(&policy, &jira, subject(json!({"sid": null}))),
            (Refusal::NoSession(quoted(JIRA)), ErrorCode::InvalidGrant),
            "a machine client's token has no upstream session"
        );
        assert_eq!(
            backends[1].upstream_request(),
            "https://jira.example.com jira.read"
        );
    }
}

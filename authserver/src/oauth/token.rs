//! What the token endpoint decides (RFC 6749 §4.1.3, §4.4, §6; RFC 7636; RFC 8707), as plain
//! functions over what the store found and what the client asked: no HTTP and no database, so
//! every grant and every refusal is a unit test.
//!
//! A refresh is decided *before* anything is written: the handler claims the old token and
//! stores its successor in one transaction only once the request is known to be good, so a bad
//! request, a storage error or a crash never burns a token the client still holds.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::oauth::grant::{Grant, Redeemed};
use crate::oauth::{ErrorCode, OAuthError, Scope};

/// Why a token request is refused. The `Display` text is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the {0} is unknown; sign in again")]
    Unknown(Credential),
    #[error("the {0} has expired; sign in again")]
    Expired(Credential),
    #[error("the {0} was revoked; sign in again")]
    Revoked(Credential),
    #[error("the {0} was issued to another client")]
    OtherClient(Credential),
    /// Used again after its rotation (or after its successor was used): the family must die.
    #[error("the {credential} was already used; sign in again")]
    Replayed {
        credential: Credential,
        family_id: String,
    },
    #[error("scope `{0}` was not granted")]
    WiderScope(String),
    #[error("resource `{0}` differs from the one authorized")]
    OtherResource(String),
    #[error("redirect_uri does not match the authorization request")]
    RedirectMismatch,
    #[error("the PKCE code_verifier does not match the code_challenge")]
    PkceMismatch,
    /// Federated, but no upstream session is kept for the family: groups could not be re-checked.
    #[error("the sign-in behind this refresh token cannot be re-checked with the identity provider; sign in again")]
    NoUpstreamSession,
}

/// A single-use credential, named in refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Code,
    RefreshToken,
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Code => "authorization code",
            Self::RefreshToken => "refresh token",
        })
    }
}

impl Refusal {
    /// The family a refusal kills (RFC 6749 §10.4 / OAuth 2.1 §4.3.1: reuse revokes).
    pub fn family_to_revoke(&self) -> Option<&str> {
        match self {
            Self::Replayed { family_id, .. } => Some(family_id),
            _ => None,
        }
    }
}

impl From<Refusal> for OAuthError {
    fn from(refusal: Refusal) -> Self {
        let code = match refusal {
            Refusal::WiderScope(_) => ErrorCode::InvalidScope,
            Refusal::OtherResource(_) => ErrorCode::InvalidTarget,
            _ => ErrorCode::InvalidGrant,
        };
        OAuthError::new(code, refusal.to_string())
    }
}

/// The lifetimes a refresh is decided under (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Each refresh token lives this long after its issue (sliding).
    pub sliding: i64,
    /// No refresh token of a family outlives this, counted from the family's first issue.
    pub absolute: i64,
    /// A rotated token presented again this soon after its rotation, while its successor is
    /// unused, gets that same successor back (a retry whose answer was lost); 0 disables.
    pub reuse_grace: i64,
}

impl RefreshPolicy {
    /// When a refresh token issued at `now` for a family first issued at `family_issued_at`
    /// expires: the sliding lifetime, capped by the absolute one.
    pub fn expiry(&self, now: i64, family_issued_at: i64) -> i64 {
        (now + self.sliding).min(family_issued_at.saturating_add(self.absolute))
    }
}

/// The token a rotated refresh token was replaced by, as the store found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Successor {
    pub grant: Grant,
    /// The successor token, sealed under a key only the old token yields.
    pub sealed: Vec<u8>,
    /// Unused and unexpired: the client has not moved on to it.
    pub live: bool,
}

/// A refresh token as the store found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRefresh {
    pub grant: Grant,
    pub family_id: String,
    pub expires_at: i64,
    pub family_issued_at: i64,
    pub family_revoked: bool,
    /// When it was rotated; `None` while it is unused.
    pub used_at: Option<i64>,
    pub successor: Option<Successor>,
}

/// What a client asks of a grant at the token endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub client_id: &'a str,
    /// A narrower scope (RFC 6749 §6); `None` keeps the granted one.
    pub scope: Option<&'a Scope>,
    /// RFC 8707: must name the resource the grant is for, if given.
    pub resource: Option<&'a str>,
}

/// What to do with a refresh request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Claim the token and replace it with a successor for `grant` expiring at `expires_at`.
    /// `grant` is the family's, scope unchanged (RFC 6749 §6: the new refresh token has the old
    /// one's scope); `access_scope` is what the access token gets (narrower if asked).
    Rotate {
        grant: Grant,
        access_scope: String,
        family_id: String,
        family_issued_at: i64,
        expires_at: i64,
    },
    /// A retry within the grace: answer with the sealed successor and an access token for `grant`.
    Resend {
        grant: Grant,
        family_id: String,
        sealed: Vec<u8>,
    },
}

/// Decides a refresh request on `found`, the token as stored (if it is known), at `now`.
pub fn decide_refresh(
    found: Option<StoredRefresh>,
    ask: &Ask<'_>,
    policy: &RefreshPolicy,
    now: i64,
) -> Result<RefreshDecision, Refusal> {
    let credential = Credential::RefreshToken;
    let found = found.ok_or(Refusal::Unknown(credential))?;
    if found.family_revoked {
        return Err(Refusal::Revoked(credential));
    }
    if let Some(used_at) = found.used_at {
        let within_grace = now < used_at.saturating_add(policy.reuse_grace);
        return match found.successor {
            Some(successor) if within_grace && successor.live => {
                let grant = checked(successor.grant, ask, credential)?;
                Ok(RefreshDecision::Resend {
                    grant,
                    family_id: found.family_id,
                    sealed: successor.sealed,
                })
            }
            _ => Err(Refusal::Replayed {
                credential,
                family_id: found.family_id,
            }),
        };
    }
    if found.expires_at <= now || found.family_issued_at.saturating_add(policy.absolute) <= now {
        return Err(Refusal::Expired(credential));
    }
    let access_scope = checked(found.grant.clone(), ask, credential)?.scope;
    Ok(RefreshDecision::Rotate {
        grant: found.grant,
        access_scope,
        expires_at: policy.expiry(now, found.family_issued_at),
        family_id: found.family_id,
        family_issued_at: found.family_issued_at,
    })
}

/// What a client presents with an authorization code.
#[derive(Debug, Clone, Copy)]
pub struct CodeAsk<'a> {
    pub grant: Ask<'a>,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: &'a str,
}

/// Decides an authorization code exchange on what redeeming the code found: the grant and its
/// family when the code is fresh, the client's, and bound to this redirect URI and verifier.
pub fn decide_code(redeemed: Redeemed, ask: &CodeAsk<'_>) -> Result<(Grant, String), Refusal> {
    let credential = Credential::Code;
    let (grant, family_id) = match redeemed {
        Redeemed::Fresh { grant, family_id } => (*grant, family_id),
        // RFC 6749 §4.1.2: a code used twice revokes what it issued.
        Redeemed::Replayed { family_id } => {
            return Err(Refusal::Replayed {
                credential,
                family_id,
            })
        }
        Redeemed::Invalid => return Err(Refusal::Unknown(credential)),
    };
    if ask.redirect_uri != Some(grant.redirect_uri.as_str()) {
        return Err(Refusal::RedirectMismatch);
    }
    if !pkce_matches(ask.code_verifier, &grant.code_challenge) {
        return Err(Refusal::PkceMismatch);
    }
    Ok((checked(grant, &ask.grant, credential)?, family_id))
}

/// RFC 7636 §4.6, S256: BASE64URL(SHA256(verifier)) == challenge.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

/// A confidential machine client (seed 004) as registered.
#[derive(Debug, Clone)]
pub struct MachineClient {
    /// Whether `client_credentials` is among its registered grant types.
    pub may_use_grant: bool,
    pub scope: Scope,
}

/// Decides a `client_credentials` request (RFC 6749 §4.4): the scope (the registered one by
/// default, never `offline_access`: there is no user to stay signed in) and the resource, one of
/// `resources` (RFC 8707; implied when the server has only one).
pub fn decide_client_credentials(
    client: &MachineClient,
    scope: Option<&Scope>,
    resource: Option<&str>,
    resources: &[String],
) -> Result<(Scope, String), OAuthError> {
    if !client.may_use_grant {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client is not registered for client_credentials",
        ));
    }
    let resource = match (resource, resources) {
        (Some(asked), _) if resources.iter().any(|r| r == asked) => asked.to_owned(),
        (Some(asked), _) => {
            return Err(OAuthError::invalid_target(format!(
                "`{asked}` is not a resource of this server"
            )))
        }
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(OAuthError::invalid_target(
                "name the MCP resource with the `resource` parameter (RFC 8707)",
            ))
        }
    };
    let scope = scope.unwrap_or(&client.scope);
    let allowed = client.scope.without("offline_access");
    if let Some(extra) = scope.first_outside(&allowed) {
        return Err(OAuthError::invalid_scope(format!(
            "scope `{extra}` is not granted to this client"
        )));
    }
    Ok((scope.clone(), resource))
}

/// `grant` as `ask` may use it: the caller's, for the same resource, narrowed to the scope asked.
fn checked(mut grant: Grant, ask: &Ask<'_>, credential: Credential) -> Result<Grant, Refusal> {
    if grant.client_id != ask.client_id {
        return Err(Refusal::OtherClient(credential));
    }
    if let Some(resource) = ask.resource.filter(|r| *r != grant.resource) {
        return Err(Refusal::OtherResource(resource.to_owned()));
    }
    if let Some(scope) = ask.scope {
        let granted = Scope::from_stored(&grant.scope);
        if let Some(extra) = scope.first_outside(&granted) {
            return Err(Refusal::WiderScope(extra.to_owned()));
        }
        grant.scope = scope.to_string();
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::grant::User;

    const NOW: i64 = 1_000_000;
    const POLICY: RefreshPolicy = RefreshPolicy {
        sliding: 7 * 86_400,
        absolute: 30 * 86_400,
        reuse_grace: 30,
    };

    fn grant(scope: &str) -> Grant {
        Grant {
            client_id: "c1".into(),
            resource: "https://mcp/mcp".into(),
            scope: scope.into(),
            user: User {
                subject: "dev:alice".into(),
                email: None,
                name: None,
                groups: vec![],
                roles: vec![],
            },
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: URL_SAFE_NO_PAD.encode(Sha256::digest(b"verifier")),
        }
    }

    fn fresh() -> StoredRefresh {
        StoredRefresh {
            grant: grant("mcp:tools offline_access"),
            family_id: "fam".into(),
            expires_at: NOW + 100,
            family_issued_at: NOW - 1000,
            family_revoked: false,
            used_at: None,
            successor: None,
        }
    }

    fn rotated(used_at: i64, live: bool) -> StoredRefresh {
        StoredRefresh {
            used_at: Some(used_at),
            successor: Some(Successor {
                grant: grant("mcp:tools offline_access"),
                sealed: b"sealed".to_vec(),
                live,
            }),
            ..fresh()
        }
    }

    fn ask<'a>(scope: Option<&'a Scope>) -> Ask<'a> {
        Ask {
            client_id: "c1",
            scope,
            resource: None,
        }
    }

    #[test]
    fn a_fresh_token_rotates_with_a_sliding_expiry_capped_by_the_absolute_lifetime() {
        let decision = decide_refresh(Some(fresh()), &ask(None), &POLICY, NOW).unwrap();
        let RefreshDecision::Rotate {
            grant: granted,
            expires_at,
            family_issued_at,
            ..
        } = decision
        else {
            panic!("{decision:?}")
        };
        assert_eq!(granted, grant("mcp:tools offline_access"));
        assert_eq!(expires_at, NOW + POLICY.sliding);
        assert_eq!(family_issued_at, NOW - 1000, "carried across rotations");
        let old_family = StoredRefresh {
            family_issued_at: NOW - 29 * 86_400,
            ..fresh()
        };
        let Ok(RefreshDecision::Rotate { expires_at, .. }) =
            decide_refresh(Some(old_family), &ask(None), &POLICY, NOW)
        else {
            panic!()
        };
        assert_eq!(
            expires_at,
            NOW + 86_400,
            "never beyond the absolute lifetime"
        );
    }

    #[test]
    fn a_family_past_its_absolute_lifetime_refreshes_no_more() {
        let old_family = StoredRefresh {
            family_issued_at: NOW - POLICY.absolute,
            expires_at: NOW + 100,
            ..fresh()
        };
        assert_eq!(
            decide_refresh(Some(old_family), &ask(None), &POLICY, NOW),
            Err(Refusal::Expired(Credential::RefreshToken))
        );
    }

    #[test]
    fn unknown_expired_revoked_and_other_clients_tokens_are_refused() {
        let refuse = |found, ask: &Ask<'_>| decide_refresh(found, ask, &POLICY, NOW).unwrap_err();
        let rt = Credential::RefreshToken;
        assert_eq!(refuse(None, &ask(None)), Refusal::Unknown(rt));
        let expired = StoredRefresh {
            expires_at: NOW,
            ..fresh()
        };
        assert_eq!(refuse(Some(expired), &ask(None)), Refusal::Expired(rt));
        let revoked = StoredRefresh {
            family_revoked: true,
            ..rotated(NOW - 1, true)
        };
        assert_eq!(refuse(Some(revoked), &ask(None)), Refusal::Revoked(rt));
        let other = Ask {
            client_id: "c2",
            ..ask(None)
        };
        assert_eq!(refuse(Some(fresh()), &other), Refusal::OtherClient(rt));
    }

    #[test]
    fn a_wider_scope_or_another_resource_is_refused_and_a_narrower_scope_granted() {
        let wider = Scope::parse("mcp:tools mcp:admin").unwrap();
        assert_eq!(
            decide_refresh(Some(fresh()), &ask(Some(&wider)), &POLICY, NOW),
            Err(Refusal::WiderScope("mcp:admin".into()))
        );
        let other = Ask {
            resource: Some("https://other/mcp"),
            ..ask(None)
        };
        let refusal = decide_refresh(Some(fresh()), &other, &POLICY, NOW).unwrap_err();
        assert_eq!(refusal, Refusal::OtherResource("https://other/mcp".into()));
        assert_eq!(OAuthError::from(refusal).code, ErrorCode::InvalidTarget);
        let narrower = Scope::parse("mcp:tools").unwrap();
        let Ok(RefreshDecision::Rotate {
            grant,
            access_scope,
            ..
        }) = decide_refresh(Some(fresh()), &ask(Some(&narrower)), &POLICY, NOW)
        else {
            panic!()
        };
        assert_eq!(access_scope, "mcp:tools", "the access token is narrowed");
        assert_eq!(
            grant.scope, "mcp:tools offline_access",
            "the family keeps its scope (RFC 6749 §6)"
        );
    }

    #[test]
    fn a_retry_within_the_grace_gets_the_same_successor() {
        assert_eq!(
            decide_refresh(Some(rotated(NOW - 29, true)), &ask(None), &POLICY, NOW),
            Ok(RefreshDecision::Resend {
                grant: grant("mcp:tools offline_access"),
                family_id: "fam".into(),
                sealed: b"sealed".to_vec()
            })
        );
        let wider = Scope::parse("mcp:admin").unwrap();
        assert_eq!(
            decide_refresh(
                Some(rotated(NOW - 1, true)),
                &ask(Some(&wider)),
                &POLICY,
                NOW
            ),
            Err(Refusal::WiderScope("mcp:admin".into())),
            "a retry is checked like the request it repeats"
        );
    }

    #[test]
    fn reuse_after_the_grace_or_after_the_successor_was_used_revokes_the_family() {
        for (stored, why) in [
            (rotated(NOW - 30, true), "after the grace"),
            (rotated(NOW - 1, false), "the client already moved on"),
            (
                StoredRefresh {
                    used_at: Some(NOW - 1),
                    ..fresh()
                },
                "rotated before successors were kept",
            ),
        ] {
            let refusal = decide_refresh(Some(stored), &ask(None), &POLICY, NOW).unwrap_err();
            assert_eq!(refusal.family_to_revoke(), Some("fam"), "{why}");
        }
        let no_grace = RefreshPolicy {
            reuse_grace: 0,
            ..POLICY
        };
        let refusal = decide_refresh(Some(rotated(NOW, true)), &ask(None), &no_grace, NOW);
        assert!(
            refusal.unwrap_err().family_to_revoke().is_some(),
            "0 disables the grace"
        );
    }

    #[test]
    fn a_code_needs_its_redirect_uri_and_pkce_verifier_and_a_replay_revokes() {
        let fresh = || Redeemed::Fresh {
            grant: Box::new(grant("mcp:tools")),
            family_id: "fam".into(),
        };
        let good = CodeAsk {
            grant: ask(None),
            redirect_uri: Some("http://127.0.0.1/cb"),
            code_verifier: "verifier",
        };
        assert_eq!(
            decide_code(fresh(), &good),
            Ok((grant("mcp:tools"), "fam".into()))
        );
        let wrong_redirect = CodeAsk {
            redirect_uri: Some("http://127.0.0.1/other"),
            ..good
        };
        assert_eq!(
            decide_code(fresh(), &wrong_redirect),
            Err(Refusal::RedirectMismatch)
        );
        let wrong_verifier = CodeAsk {
            code_verifier: "guess",
            ..good
        };
        assert_eq!(
            decide_code(fresh(), &wrong_verifier),
            Err(Refusal::PkceMismatch)
        );
        let other_client = CodeAsk {
            grant: Ask {
                client_id: "c2",
                ..ask(None)
            },
            ..good
        };
        assert_eq!(
            decide_code(fresh(), &other_client),
            Err(Refusal::OtherClient(Credential::Code))
        );
        let replay = decide_code(
            Redeemed::Replayed {
                family_id: "fam".into(),
            },
            &good,
        );
        assert_eq!(replay.unwrap_err().family_to_revoke(), Some("fam"));
        assert_eq!(
            decide_code(Redeemed::Invalid, &good),
            Err(Refusal::Unknown(Credential::Code))
        );
    }

    #[test]
    fn a_machine_client_gets_its_registered_scope_for_a_known_resource() {
        let resources = ["https://mcp/mcp".to_owned()];
        let client = MachineClient {
            may_use_grant: true,
            scope: Scope::parse("mcp:tools").unwrap(),
        };
        assert_eq!(
            decide_client_credentials(&client, None, None, &resources),
            Ok((client.scope.clone(), "https://mcp/mcp".into()))
        );
        let code = |scope: Option<&str>, resource: Option<&str>, client: &MachineClient| {
            let scope = scope.map(|s| Scope::parse(s).unwrap());
            decide_client_credentials(client, scope.as_ref(), resource, &resources)
                .unwrap_err()
                .code
        };
        assert_eq!(
            code(Some("mcp:admin"), None, &client),
            ErrorCode::InvalidScope
        );
        assert_eq!(
            code(Some("offline_access"), None, &client),
            ErrorCode::InvalidScope,
            "no user, no offline access"
        );
        assert_eq!(
            code(None, Some("https://other/mcp"), &client),
            ErrorCode::InvalidTarget
        );
        let not_m2m = MachineClient {
            may_use_grant: false,
            ..client
        };
        assert_eq!(code(None, None, &not_m2m), ErrorCode::UnauthorizedClient);
    }

    #[test]
    fn refusals_become_the_rfc_6749_codes() {
        assert_eq!(
            OAuthError::from(Refusal::WiderScope("x".into())).code,
            ErrorCode::InvalidScope
        );
        assert_eq!(
            OAuthError::from(Refusal::NoUpstreamSession).code,
            ErrorCode::InvalidGrant
        );
    }
}

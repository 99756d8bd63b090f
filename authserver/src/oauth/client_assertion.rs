//! Client authentication with a JWT (RFC 7523 §2.2 and §3, `private_key_jwt`): a machine client
//! proves who it is with an assertion signed by its own key instead of a shared secret, or, as a
//! workload (a Kubernetes service account, a SPIFFE JWT-SVID), with a token its platform's issuer
//! signed for this server, so no secret is ever handed out.
//!
//! Pure: [`Presenter::of`] says whose keys must verify the assertion (the client's own, when
//! `iss` is the client, or a trusted workload issuer's), and [`decide`] checks the verified
//! claims at an instant. The signature is checked by the caller.

use crate::oauth::id_jag::{
    check_audience, check_times, media_type, quoted, replay_key, string, Assertion, AssertionError,
    CLOCK_SKEW_SECONDS,
};

/// `client_assertion_type` of RFC 7523 §2.2.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The explicit type draft-ietf-oauth-rfc7523bis gives client assertions.
const CLIENT_ASSERTION_TYP: &str = "client-authentication+jwt";

/// Reads a client assertion: untyped or `JWT` (what the SDKs and Kubernetes send) or
/// `client-authentication+jwt`; never another explicitly typed JWT (an ID-JAG, an access token).
pub fn parse(assertion: &str) -> Result<Assertion, AssertionError> {
    Assertion::parse_typed(
        assertion,
        |typ| {
            typ.is_none_or(|typ| matches!(media_type(typ).as_str(), "jwt" | CLIENT_ASSERTION_TYP))
        },
        "a client assertion's must be absent, `JWT` or `client-authentication+jwt`",
    )
}

/// Who presents the assertion, which says whose keys verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presenter {
    /// `iss` and `sub` are the client's id: its own registered keys sign.
    Client(String),
    /// A trusted workload issuer signed it for the workload `subject`; the client is the one
    /// bound to that workload.
    Workload { issuer: String, subject: String },
}

impl Presenter {
    /// `workload_issuers`: the issuers of workload identity tokens this server trusts.
    pub fn of(assertion: &Assertion, workload_issuers: &[&str]) -> Result<Self, AssertionError> {
        let issuer = assertion.issuer()?;
        let subject = string(&assertion.claims, "sub")?;
        if workload_issuers.contains(&issuer) {
            return Ok(Self::Workload {
                issuer: issuer.to_owned(),
                subject: subject.to_owned(),
            });
        }
        if subject != issuer {
            return Err(AssertionError::SubjectNotIssuer(
                quoted(subject),
                quoted(issuer),
            ));
        }
        Ok(Self::Client(issuer.to_owned()))
    }
}

/// What this server accepts.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// This server's issuer: the only audience (draft-ietf-oauth-rfc7523bis; the token
    /// endpoint's URL, which RFC 7523 §3 also allowed, lets an assertion minted for an endpoint
    /// an attacker's metadata named be spent here).
    pub issuer: &'a str,
    pub max_lifetime: i64,
}

/// An assertion accepted as the client's authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// For a single-use assertion, its replay record: key, and until when to keep it.
    pub replay: Option<(String, i64)>,
}

/// Decides on an assertion whose signature verified, at `now`: RFC 7523 §3 (audience, expiry,
/// lifetime). A key-signed assertion is made for one request (`single_use`: its `jti` is
/// required and remembered, RFC 7523 §3 item 7); a workload token is the platform's credential,
/// reused until it expires as the platform hands it out, so it has no replay record.
pub fn decide(
    assertion: &Assertion,
    expect: &Expectations<'_>,
    single_use: bool,
    now: i64,
) -> Result<Accepted, AssertionError> {
    let claims = &assertion.claims;
    check_audience(claims.get("aud"), expect.issuer)?;
    // A reusable workload token must say when it was issued, so its whole life is bounded.
    check_times(claims, expect.max_lifetime, now, !single_use)?;
    if !single_use {
        return Ok(Accepted { replay: None });
    }
    let jti = string(claims, "jti")?;
    let exp = crate::oauth::id_jag::number(claims, "exp")?;
    Ok(Accepted {
        replay: Some((
            replay_key(assertion.issuer()?, jti),
            exp.saturating_add(CLOCK_SKEW_SECONDS),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::id_jag::tests::token;
    use serde_json::{json, Value};

    const NOW: i64 = 1_700_000_000;
    const ISSUER: &str = "https://auth.example.com";
    const TOKEN_ENDPOINT: &str = "https://auth.example.com/oauth/token";
    const K8S: &str = "https://kubernetes.default.svc.cluster.local";
    const EXPECT: Expectations<'static> = Expectations {
        issuer: ISSUER,
        max_lifetime: 3600,
    };

    fn signed_by_client(extra: Value) -> Value {
        let mut claims = json!({"iss": "agent-7", "sub": "agent-7", "aud": ISSUER,
                                "iat": NOW, "exp": NOW + 300, "jti": "j-1"});
        for (key, value) in extra.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(key);
            } else {
                claims[key] = value.clone();
            }
        }
        claims
    }

    fn assertion(claims: Value) -> Assertion {
        parse(&token(json!({"alg": "RS256", "typ": "JWT"}), claims)).unwrap()
    }

    #[test]
    fn only_untyped_jwt_or_client_authentication_types_are_client_assertions() {
        let claims = signed_by_client(json!({}));
        for typ in [
            json!("JWT"),
            json!("jwt"),
            json!("client-authentication+jwt"),
            json!("application/client-authentication+jwt"),
        ] {
            assert!(
                parse(&token(json!({"alg": "RS256", "typ": typ}), claims.clone())).is_ok(),
                "{typ}"
            );
        }
        assert!(
            parse(&token(json!({"alg": "ES256"}), claims.clone())).is_ok(),
            "untyped, as Kubernetes signs"
        );
        for typ in [json!("oauth-id-jag+jwt"), json!("at+jwt"), json!(1)] {
            let refused = parse(&token(json!({"alg": "RS256", "typ": typ}), claims.clone()));
            assert!(
                matches!(refused, Err(AssertionError::WrongType(..))),
                "{typ}: {refused:?}"
            );
        }
        assert!(
            matches!(
                parse(&token(json!({"alg": "HS256"}), claims)),
                Err(AssertionError::Algorithm(_))
            ),
            "a shared-secret MAC is not a key of the client's own"
        );
    }

    #[test]
    fn the_client_is_the_issuer_and_the_subject_unless_a_workload_issuer_signed() {
        let own = assertion(signed_by_client(json!({})));
        assert_eq!(
            Presenter::of(&own, &[K8S]),
            Ok(Presenter::Client("agent-7".into()))
        );
        let other = assertion(signed_by_client(json!({"sub": "agent-8"})));
        assert!(matches!(
            Presenter::of(&other, &[K8S]),
            Err(AssertionError::SubjectNotIssuer(..))
        ));
        let workload = assertion(signed_by_client(
            json!({"iss": K8S, "sub": "system:serviceaccount:agents:sales"}),
        ));
        assert_eq!(
            Presenter::of(&workload, &[K8S]),
            Ok(Presenter::Workload {
                issuer: K8S.into(),
                subject: "system:serviceaccount:agents:sales".into()
            })
        );
        assert!(
            matches!(
                Presenter::of(&workload, &[]),
                Err(AssertionError::SubjectNotIssuer(..))
            ),
            "an untrusted platform is just a client with a wrong sub"
        );
        let nobody = assertion(signed_by_client(json!({"sub": null})));
        assert_eq!(
            Presenter::of(&nobody, &[K8S]),
            Err(AssertionError::Missing("sub"))
        );
    }

    #[test]
    fn a_key_signed_assertion_is_for_this_server_current_and_used_once() {
        let accepted = decide(&assertion(signed_by_client(json!({}))), &EXPECT, true, NOW).unwrap();
        let (key, until) = accepted.replay.unwrap();
        assert_eq!(key.len(), 64);
        assert_eq!(until, NOW + 300 + CLOCK_SKEW_SECONDS);
        let endpoint = decide(
            &assertion(signed_by_client(json!({"aud": [TOKEN_ENDPOINT]}))),
            &EXPECT,
            true,
            NOW,
        );
        assert!(
            matches!(endpoint, Err(AssertionError::Audience(..))),
            "the issuer only (RFC 7523bis)"
        );
        let refused = |claims: Value| {
            decide(&assertion(signed_by_client(claims)), &EXPECT, true, NOW).unwrap_err()
        };
        assert!(matches!(
            refused(json!({"aud": "https://other.example.com"})),
            AssertionError::Audience(..)
        ));
        assert!(
            matches!(
                refused(json!({"aud": [ISSUER, "https://other.example.com"]})),
                AssertionError::Audience(..)
            ),
            "an assertion for several servers can be spent at each"
        );
        assert_eq!(
            refused(json!({"aud": null})),
            AssertionError::Missing("aud")
        );
        assert!(matches!(
            refused(json!({"exp": NOW - 61})),
            AssertionError::Expired(..)
        ));
        assert_eq!(
            refused(json!({"exp": null})),
            AssertionError::Missing("exp")
        );
        assert!(matches!(
            refused(json!({"iat": NOW + 120})),
            AssertionError::IssuedInFuture(..)
        ));
        assert!(
            matches!(
                refused(json!({"iat": null, "exp": NOW + 7200})),
                AssertionError::TooLong(..)
            ),
            "without iat the life is counted from now"
        );
        assert_eq!(
            refused(json!({"jti": null})),
            AssertionError::Missing("jti")
        );
    }

    #[test]
    fn a_workload_token_is_reused_until_it_expires() {
        let token = assertion(
            json!({"iss": K8S, "sub": "system:serviceaccount:agents:sales",
                                     "aud": [ISSUER], "iat": NOW - 600, "exp": NOW + 3000}),
        );
        assert_eq!(
            decide(&token, &EXPECT, false, NOW),
            Ok(Accepted { replay: None })
        );
        assert_eq!(
            decide(&token, &EXPECT, false, NOW),
            Ok(Accepted { replay: None })
        );
        assert!(matches!(
            decide(&token, &EXPECT, false, NOW + 3100),
            Err(AssertionError::Expired(..))
        ));
        let for_the_api_server = assertion(
            json!({"iss": K8S, "sub": "system:serviceaccount:agents:sales",
                                                  "aud": [K8S], "exp": NOW + 300}),
        );
        assert!(
            matches!(
                decide(&for_the_api_server, &EXPECT, false, NOW),
                Err(AssertionError::Audience(..))
            ),
            "a service account's default token (for the API server) is not accepted"
        );
    }
}

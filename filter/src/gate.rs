//! The per-request decision: answer locally, forward (with which headers changed), or wait for keys.
//!
//! It sees the request as plain data and returns a verdict; carrying the verdict out against the
//! proxy is the glue's job, so every path through here is tested on the host.

use std::rc::Rc;

use serde_json::{Map, Value};

use crate::call_gate::CallHeaders;
use crate::config::FilterConfig;
use crate::cors::Grant;
use crate::key_store::KeyStore;
use crate::rejection::Rejection;
use crate::response::{self, LocalResponse};
use crate::token_cache::TokenCache;
use crate::verify::{self, VerifiedToken};

/// The parts of a request the decision needs, owned so that a waiting request can keep them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    pub method: String,
    /// `:path`, query included.
    pub path: String,
    /// Every `Authorization` header value, in order.
    pub authorization: Vec<String>,
    /// Whether the request is a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
    pub is_preflight: bool,
    /// Every `Origin` header value, in order (a browser sends one on a cross-origin request).
    pub origins: Vec<String>,
    /// What the body decision needs of the headers (`Content-Type`, `Mcp-Method`, `Mcp-Name`).
    pub call: CallHeaders,
    /// Whether the request names another method in a header (`X-HTTP-Method-Override` and
    /// kin), which some frameworks obey.
    pub method_override: bool,
    /// A header the decision reads that came more than once (`Content-Type`, `Mcp-Method`,
    /// `Mcp-Name`): which copy the server believes is not ours to guess.
    pub repeated: Option<String>,
    /// Whether the request asks to resume a stream (`Last-Event-ID`).
    pub last_event_id: bool,
    /// Every `Mcp-Session-Id` header value, in order.
    pub session_ids: Vec<String>,
    /// What Envoy's `jwt_authn` verified, in the mode that trusts it (`jwt_authn` configured).
    pub envoy_verified: EnvoyVerified,
    /// The name of the Envoy route the request matched (`xds.route_name`), read only when
    /// `token_exchange` maps routes to backends.
    pub route_name: Option<String>,
}

/// The outcome of Envoy's `jwt_authn` for a request, as its dynamic metadata tells it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EnvoyVerified {
    /// Not read (the filter verifies tokens itself).
    #[default]
    NotRead,
    /// `jwt_authn` stored no payload: it verified no token.
    Nothing,
    Claims(Map<String, Value>),
    /// The metadata could not be read: the request is refused.
    Unreadable(String),
}

impl RequestHead {
    /// The path without its query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Verdict {
    /// Answer it here.
    Respond {
        response: LocalResponse,
        rejection: Option<Rejection>,
    },
    /// Let it through with these header changes.
    Forward(Forward),
    /// Hold it until the keys of issuer `issuer` (an index) change.
    Wait { issuer: usize },
}

/// Header changes for a request that goes upstream.
#[derive(Debug, Default)]
pub struct Forward {
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
    /// The caller, when the request was authenticated.
    pub identity: Option<Rc<VerifiedToken>>,
}

/// Whether a request that names an unknown `kid` may wait for a JWKS refetch. A request resumed
/// after such a refetch may not wait again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KidRefetch {
    Allowed,
    AlreadyTried,
}

pub fn decide(
    config: &FilterConfig,
    head: &RequestHead,
    keys: &mut KeyStore,
    cache: &mut TokenCache,
    now_ms: i64,
    kid_refetch: KidRefetch,
) -> Verdict {
    let (path, query) = head
        .path
        .split_once('?')
        .unwrap_or((head.path.as_str(), ""));
    if config.metadata_paths.iter().any(|p| p == path) {
        return Verdict::Respond {
            response: response::metadata(config, &head.method),
            rejection: None,
        };
    }
    let strip_identity: Vec<String> = config
        .identity_headers
        .iter()
        .map(|(h, _)| h.clone())
        .collect();
    if is_public(config, path) {
        return Verdict::Forward(Forward {
            remove: strip_identity,
            ..Forward::default()
        });
    }
    if head.is_preflight {
        // Answered here: a preflight carries no token, so it never reaches the server.
        let grant = Grant::of(config.cors.as_ref(), &head.origins);
        return Verdict::Respond {
            response: grant.preflight(config.cors.as_ref()),
            rejection: None,
        };
    }
    match authenticate(config, head, query, keys, cache, now_ms, kid_refetch) {
        Ok(identity) => {
            let mut remove = strip_identity;
            remove.push("authorization".to_owned());
            let set = identity_headers(config, &identity);
            Verdict::Forward(Forward {
                remove,
                set,
                identity: Some(identity),
            })
        }
        Err(Outcome::Wait(issuer)) => Verdict::Wait { issuer },
        Err(Outcome::Refuse(rejection)) => Verdict::Respond {
            response: response::refusal(config, &rejection),
            rejection: Some(rejection),
        },
    }
}

enum Outcome {
    Wait(usize),
    Refuse(Rejection),
}

impl From<Rejection> for Outcome {
    fn from(rejection: Rejection) -> Self {
        Self::Refuse(rejection)
    }
}

fn authenticate(
    config: &FilterConfig,
    head: &RequestHead,
    query: &str,
    keys: &mut KeyStore,
    cache: &mut TokenCache,
    now_ms: i64,
    kid_refetch: KidRefetch,
) -> Result<Rc<VerifiedToken>, Outcome> {
    if query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("access_token"))
    {
        return Err(Rejection::TokenInQuery.into());
    }
    let now = now_ms.div_euclid(1000);
    if config.jwt_authn.is_some() {
        return verified_by_envoy(config, head, now).map_err(Outcome::Refuse);
    }
    let token = bearer_token(&head.authorization)?;
    let identity = match cache.get(token, now) {
        Some(identity) => identity,
        None if cache.signature_failed(token, now) => return Err(Rejection::BadSignature.into()),
        None => {
            let verified = verify::verify(token, &config.token_policy, now, |iss| {
                keys.issuer_keys(iss)
            });
            match verified {
                Ok(verified) => {
                    let verified = Rc::new(verified);
                    cache.insert(Rc::clone(&verified), now);
                    verified
                }
                Err(rejection) => {
                    if rejection == Rejection::BadSignature {
                        cache.remember_failed_signature(token, now);
                    }
                    return Err(on_verify_error(rejection, token, keys, now_ms, kid_refetch));
                }
            }
        }
    };
    with_required_scopes(config, identity).map_err(Outcome::Refuse)
}

/// The caller Envoy's `jwt_authn` verified. Without a payload, a token that was presented is
/// one `jwt_authn` refused (it is configured to let such requests on, so that the answer is this
/// filter's MCP-shaped `401`).
fn verified_by_envoy(
    config: &FilterConfig,
    head: &RequestHead,
    now: i64,
) -> Result<Rc<VerifiedToken>, Rejection> {
    let claims = match &head.envoy_verified {
        EnvoyVerified::Claims(claims) => claims.clone(),
        EnvoyVerified::Unreadable(reason) => {
            return Err(Rejection::Malformed(format!(
                "jwt_authn metadata: {reason}"
            )))
        }
        EnvoyVerified::NotRead | EnvoyVerified::Nothing => {
            bearer_token(&head.authorization)?;
            return Err(Rejection::BadSignature);
        }
    };
    let trusted = |iss: &str| config.issuers.iter().any(|issuer| issuer.issuer == iss);
    let identity = verify::from_verified_claims(claims, &config.token_policy, now, trusted)?;
    with_required_scopes(config, Rc::new(identity))
}

/// The caller, if its token grants every `required_scopes` scope.
fn with_required_scopes(
    config: &FilterConfig,
    identity: Rc<VerifiedToken>,
) -> Result<Rc<VerifiedToken>, Rejection> {
    let granted = identity.scopes();
    if config
        .required_scopes
        .iter()
        .all(|scope| granted.contains(&scope.as_str()))
    {
        Ok(identity)
    } else {
        Err(Rejection::InsufficientScope(config.required_scopes.clone()))
    }
}

/// Turns "keys not loaded" and, once per cooldown, "unknown kid" into a wait for fresh keys.
fn on_verify_error(
    rejection: Rejection,
    token: &str,
    keys: &mut KeyStore,
    now_ms: i64,
    kid_refetch: KidRefetch,
) -> Outcome {
    let issuer_index = || unverified_issuer(token).and_then(|iss| keys.index_of(&iss));
    match &rejection {
        Rejection::KeysUnavailable(_) => match issuer_index() {
            Some(index) => {
                keys.want_first_keys(index, now_ms);
                Outcome::Wait(index)
            }
            None => Outcome::Refuse(rejection),
        },
        Rejection::UnknownKey(_) if kid_refetch == KidRefetch::Allowed => match issuer_index() {
            Some(index) if keys.refetch_for_unknown_kid(index, now_ms) => Outcome::Wait(index),
            _ => Outcome::Refuse(rejection),
        },
        _ => Outcome::Refuse(rejection),
    }
}

/// The `iss` of a token whose issuer lookup already succeeded in verification.
fn unverified_issuer(token: &str) -> Option<String> {
    let untrusted = jwt_compact::UntrustedToken::new(token).ok()?;
    let claims = untrusted
        .deserialize_claims_unchecked::<serde_json::Map<String, Value>>()
        .ok()?;
    claims.custom.get("iss")?.as_str().map(str::to_owned)
}

/// The token of the one `Authorization: Bearer` header. Another scheme counts as no token.
pub fn bearer_token(values: &[String]) -> Result<&str, Rejection> {
    let value = match values {
        [] => return Err(Rejection::MissingToken),
        [value] => value.trim(),
        _ => return Err(Rejection::BadAuthorizationHeader),
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(Rejection::BadAuthorizationHeader);
    }
    Ok(token)
}

/// A path outside the protected space. Paths with dot segments or encoded slashes/dots never
/// count as public, so that `/oauth/../mcp` cannot slip past when the proxy does not normalise.
fn is_public(config: &FilterConfig, path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let suspicious = lower.contains("/..")
        || lower.contains("/./")
        || lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains('\\');
    !suspicious
        && config
            .public_paths
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
}

/// The configured identity headers, filled from the token's claims.
fn identity_headers(config: &FilterConfig, identity: &VerifiedToken) -> Vec<(String, String)> {
    config
        .identity_headers
        .iter()
        .filter_map(|(header, claim)| {
            let value = match identity.claims.get(claim)? {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                _ => return None,
            };
            let safe = value.chars().all(|ch| !ch.is_control()) && value.len() <= 4096;
            safe.then(|| (header.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_keys;
    use serde_json::json;
    use std::sync::Arc;

    const NOW_MS: i64 = 1_800_000_000_000;
    const NOW: i64 = NOW_MS / 1000;

    struct Harness {
        config: FilterConfig,
        keys: KeyStore,
        cache: TokenCache,
    }

    fn harness(extra: Value) -> Harness {
        let mut raw = json!({
            "resource": "https://mcp.example.com/mcp",
            "authorization_servers": ["https://mcp.example.com"],
            "public_paths": ["/oauth/"],
            "identity_headers": {"x-mcp-subject": "sub", "x-mcp-groups": "groups"},
            "issuers": [
                {"issuer": "https://inline.example.com",
                 "jwks_inline": {"keys": [test_keys::rsa().public_jwk("r")]}},
                {"issuer": "https://remote.example.com",
                 "jwks": {"cluster": "idp", "path": "/jwks", "refresh_seconds": 60}},
            ],
        });
        for (key, value) in extra.as_object().unwrap() {
            raw[key] = value.clone();
        }
        let config = FilterConfig::from_json(raw.to_string().as_bytes()).unwrap();
        let keys = KeyStore::new(&config.issuers);
        Harness {
            config,
            keys,
            cache: TokenCache::new(100, 60),
        }
    }

    impl Harness {
        fn run(&mut self, head: &RequestHead) -> Verdict {
            decide(
                &self.config,
                head,
                &mut self.keys,
                &mut self.cache,
                NOW_MS,
                KidRefetch::Allowed,
            )
        }
    }

    fn token(iss: &str, kid: &str) -> String {
        test_keys::rsa().sign(
            &json!({"alg": "RS256", "kid": kid}),
            &json!({"iss": iss, "aud": "https://mcp.example.com/mcp", "sub": "alice",
                    "exp": NOW + 600, "groups": ["a", "b"], "scope": "mcp:tools"}),
        )
    }

    fn post(path: &str, authorization: &[String]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            path: path.into(),
            authorization: authorization.to_vec(),
            ..RequestHead::default()
        }
    }

    fn bearer(token: &str) -> Vec<String> {
        vec![format!("Bearer {token}")]
    }

    fn refused(verdict: Verdict) -> (u32, Rejection) {
        match verdict {
            Verdict::Respond {
                response,
                rejection: Some(rejection),
            } => (response.status, rejection),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_token_goes_upstream_without_authorization_and_with_identity() {
        let mut h = harness(json!({}));
        let Verdict::Forward(forward) = h.run(&post(
            "/mcp",
            &bearer(&token("https://inline.example.com", "r")),
        )) else {
            panic!("expected forward")
        };
        assert!(forward.remove.contains(&"authorization".to_owned()));
        assert!(
            forward.remove.contains(&"x-mcp-subject".to_owned()),
            "client copies stripped"
        );
        assert_eq!(
            forward.set,
            [
                ("x-mcp-groups".to_owned(), "a,b".to_owned()),
                ("x-mcp-subject".to_owned(), "alice".to_owned())
            ]
        );
    }

    #[test]
    fn the_second_request_is_served_from_the_cache() {
        let mut h = harness(json!({}));
        let auth = bearer(&token("https://inline.example.com", "r"));
        assert!(matches!(h.run(&post("/mcp", &auth)), Verdict::Forward(_)));
        assert_eq!(h.cache.len(), 1);
        assert!(matches!(h.run(&post("/mcp", &auth)), Verdict::Forward(_)));
        assert_eq!(h.cache.len(), 1);
    }

    #[test]
    fn no_token_is_401_and_another_scheme_counts_as_none() {
        let mut h = harness(json!({}));
        assert_eq!(
            refused(h.run(&post("/mcp", &[]))),
            (401, Rejection::MissingToken)
        );
        assert_eq!(
            refused(h.run(&post("/mcp", &["Basic YWxpY2U6cHc=".to_owned()]))),
            (401, Rejection::MissingToken)
        );
    }

    #[test]
    fn every_path_but_public_and_metadata_is_protected() {
        let mut h = harness(json!({}));
        assert_eq!(refused(h.run(&post("/anything", &[]))).0, 401);
        assert!(matches!(
            h.run(&post("/oauth/token", &[])),
            Verdict::Forward(_)
        ));
        assert_eq!(refused(h.run(&post("/oauth/../mcp", &[]))).0, 401);
        assert_eq!(refused(h.run(&post("/oauth/%2e%2e/mcp", &[]))).0, 401);
    }

    #[test]
    fn both_metadata_paths_are_answered_without_a_token() {
        let mut h = harness(json!({}));
        for path in [
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-protected-resource/mcp",
        ] {
            let head = RequestHead {
                method: "GET".into(),
                path: path.into(),
                ..RequestHead::default()
            };
            let Verdict::Respond {
                response,
                rejection: None,
            } = h.run(&head)
            else {
                panic!("{path}")
            };
            assert_eq!(response.status, 200);
        }
    }

    #[test]
    fn a_token_in_the_query_is_never_accepted() {
        let mut h = harness(json!({}));
        let tok = token("https://inline.example.com", "r");
        let path = format!("/mcp?access_token={tok}");
        assert_eq!(
            refused(h.run(&post(&path, &[]))),
            (400, Rejection::TokenInQuery)
        );
        assert_eq!(
            refused(h.run(&post(&path, &bearer(&tok)))),
            (400, Rejection::TokenInQuery)
        );
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let mut h = harness(json!({}));
        let tok = token("https://inline.example.com", "r");
        let twice = [format!("Bearer {tok}"), format!("Bearer {tok}")];
        assert_eq!(
            refused(h.run(&post("/mcp", &twice))).1,
            Rejection::BadAuthorizationHeader
        );
    }

    #[test]
    fn required_scopes_are_enforced_with_a_step_up() {
        let mut h = harness(json!({"required_scopes": ["mcp:tools", "mcp:admin"]}));
        let (status, rejection) = refused(h.run(&post(
            "/mcp",
            &bearer(&token("https://inline.example.com", "r")),
        )));
        assert_eq!(status, 403);
        assert!(matches!(rejection, Rejection::InsufficientScope(_)));
    }

    #[test]
    fn a_request_before_the_first_keys_waits_and_asks_for_them() {
        let mut h = harness(json!({}));
        let auth = bearer(&token("https://remote.example.com", "r"));
        assert!(matches!(
            h.run(&post("/mcp", &auth)),
            Verdict::Wait { issuer: 1 }
        ));
        assert!(h.keys.should_fetch(1, NOW_MS));
        let set = KeySetFixture::rsa();
        h.keys.keys_arrived(1, set, NOW_MS);
        assert!(matches!(h.run(&post("/mcp", &auth)), Verdict::Forward(_)));
    }

    #[test]
    fn an_unknown_kid_waits_for_one_refetch_then_is_refused() {
        let mut h = harness(json!({}));
        h.keys
            .keys_arrived(1, KeySetFixture::rsa(), NOW_MS - 10_000);
        let auth = bearer(&token("https://remote.example.com", "rotated"));
        assert!(matches!(
            h.run(&post("/mcp", &auth)),
            Verdict::Wait { issuer: 1 }
        ));
        let resumed = decide(
            &h.config,
            &post("/mcp", &auth),
            &mut h.keys,
            &mut h.cache,
            NOW_MS,
            KidRefetch::AlreadyTried,
        );
        assert_eq!(
            refused(resumed).1,
            Rejection::UnknownKey(Some("rotated".into()))
        );
        assert_eq!(
            refused(h.run(&post("/mcp", &auth))).0,
            401,
            "no second refetch within the cooldown"
        );
    }

    #[test]
    fn a_rotated_key_is_accepted_once_the_refetch_brings_it() {
        let mut h = harness(json!({}));
        h.keys
            .keys_arrived(1, KeySetFixture::rsa(), NOW_MS - 10_000);
        let auth = bearer(&token("https://remote.example.com", "rotated"));
        assert!(matches!(
            h.run(&post("/mcp", &auth)),
            Verdict::Wait { issuer: 1 }
        ));
        assert!(
            h.keys.should_fetch(1, NOW_MS),
            "the unknown kid asked for a refetch"
        );
        let mut rotated = test_keys::rsa().public_jwk("rotated");
        rotated["alg"] = json!("RS256");
        let set = crate::jwks::KeySet::from_value(&json!({"keys": [rotated]})).unwrap();
        h.keys.keys_arrived(1, Arc::new(set), NOW_MS);
        let resumed = decide(
            &h.config,
            &post("/mcp", &auth),
            &mut h.keys,
            &mut h.cache,
            NOW_MS,
            KidRefetch::AlreadyTried,
        );
        assert!(matches!(resumed, Verdict::Forward(_)));
        let old = bearer(&token("https://remote.example.com", "r"));
        assert_eq!(
            refused(h.run(&post("/mcp", &old))).1,
            Rejection::UnknownKey(Some("r".into())),
            "the retired key is gone"
        );
    }

    #[test]
    fn an_inline_issuer_never_waits_for_an_unknown_kid() {
        let mut h = harness(json!({}));
        let auth = bearer(&token("https://inline.example.com", "nope"));
        assert_eq!(
            refused(h.run(&post("/mcp", &auth))).1,
            Rejection::UnknownKey(Some("nope".into()))
        );
    }

    fn preflight(path: &str, origin: &str) -> RequestHead {
        RequestHead {
            method: "OPTIONS".into(),
            path: path.into(),
            is_preflight: true,
            origins: vec![origin.into()],
            ..RequestHead::default()
        }
    }

    #[test]
    fn a_preflight_on_a_protected_path_is_answered_here_without_a_token() {
        let cors = json!({"cors": {"allowed_origins": ["https://inspector.example.com"]}});
        let mut h = harness(cors);
        let answered = |verdict| match verdict {
            Verdict::Respond {
                response,
                rejection: None,
            } => response.status,
            other => panic!("a preflight went on: {other:?}"),
        };
        assert_eq!(
            answered(h.run(&preflight("/mcp", "https://inspector.example.com"))),
            204
        );
        assert_eq!(
            answered(h.run(&preflight("/mcp", "https://evil.example"))),
            403
        );
        assert_eq!(
            answered(h.run(&preflight("/elsewhere", "https://evil.example"))),
            403,
            "every protected path, not only the MCP one"
        );
        let mut without = harness(json!({}));
        assert_eq!(
            answered(without.run(&preflight("/mcp", "https://inspector.example.com"))),
            403,
            "no cors section: no origin"
        );
    }

    #[test]
    fn a_preflight_on_a_public_path_is_the_servers_business() {
        let mut h = harness(json!({"public_paths": ["/static/"]}));
        assert!(matches!(
            h.run(&preflight("/static/app.js", "https://any.example")),
            Verdict::Forward(Forward { identity: None, .. })
        ));
    }

    struct KeySetFixture;
    impl KeySetFixture {
        fn rsa() -> Arc<crate::jwks::KeySet> {
            Arc::new(
                crate::jwks::KeySet::from_value(
                    &json!({"keys": [test_keys::rsa().public_jwk("r")]}),
                )
                .unwrap(),
            )
        }
    }
}

//! Verifying a bearer JWT: structure, algorithm, key, signature, then claims.
//!
//! The order matters: nothing in the token is believed before its signature checks out, except
//! what is needed to pick the key (`alg`, `kid`, `iss`), and those are checked against a closed
//! list (algorithms) or the configuration (issuers) first.

use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::{Algorithm, AlgorithmExt, UntrustedToken};
use serde_json::{Map, Value};

use crate::algorithm::JwsAlgorithm;
use crate::es384::Es384;
use crate::jwks::{KeySet, PublicKey};
use crate::quote::quote;
use crate::rejection::Rejection;
use crate::unique_json;

/// The parts of the configuration that decide whether a token is acceptable.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub audiences: Vec<String>,
    pub clock_skew_seconds: i64,
    pub max_token_bytes: usize,
}

/// A protected header that asks for processing this filter does not do.
///
/// RFC 7515 §4.1.11: a recipient that does not understand every extension a token lists in
/// `crit` must reject the token; this filter implements none, so any `crit` is refused. RFC 7797
/// `b64: false` (an unencoded payload) changes what the signature covers, and is refused with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsupportedHeader {
    #[error(
        "the token's header marks {0} critical (`crit`), and this resource server implements no \
         JWS extension: the issuer must not add `crit` to access tokens"
    )]
    Critical(String),
    #[error("the token's `crit` header is {0}: RFC 7515 requires a non-empty array of names")]
    MalformedCrit(String),
    #[error(
        "the token's `b64` header is {0}: only base64url-encoded payloads (no `b64`, or `true`) \
         are accepted"
    )]
    UnencodedPayload(String),
}

/// What the filter knows of an issuer's keys when a token names it.
pub enum IssuerKeys<'a> {
    /// The issuer is not in the configuration.
    Untrusted,
    /// The issuer is trusted but its JWKS has not arrived yet.
    NotLoaded,
    Loaded(&'a KeySet),
}

/// A token whose signature and claims have been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub issuer: String,
    pub subject: Option<String>,
    pub expires_at: i64,
    /// The `kid` of the key that verified the token (empty when the token had none).
    pub key_id: String,
    pub claims: Map<String, Value>,
    /// SHA-256 of the token: keys per-token caches without keeping the token itself.
    pub digest: [u8; 32],
}

/// The key per-token caches use for `token`.
pub fn digest(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

impl VerifiedToken {
    /// The granted scopes, from an RFC 9068 `scope` string and/or an Okta-style `scp` array.
    pub fn scopes(&self) -> Vec<&str> {
        let mut scopes = Vec::new();
        for claim in ["scope", "scp"] {
            match self.claims.get(claim) {
                Some(Value::String(text)) => scopes.extend(text.split_ascii_whitespace()),
                Some(Value::Array(items)) => scopes.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
        scopes
    }
}

/// Verifies `token` at time `now` (Unix seconds).
pub fn verify<'k>(
    token: &str,
    policy: &TokenPolicy,
    now: i64,
    keys_of: impl FnOnce(&str) -> IssuerKeys<'k>,
) -> Result<VerifiedToken, Rejection> {
    if token.len() > policy.max_token_bytes {
        return Err(Rejection::Malformed(format!(
            "token is {} bytes, over the limit of {}",
            token.len(),
            policy.max_token_bytes
        )));
    }
    let untrusted = UntrustedToken::new(token)
        .map_err(|err| Rejection::Malformed(format!("not a compact JWS: {err}")))?;
    let alg = JwsAlgorithm::parse(untrusted.algorithm()).map_err(Rejection::AlgorithmRefused)?;
    check_type(untrusted.header().token_type.as_deref())?;
    check_extensions(token)?;

    let unverified = untrusted
        .deserialize_claims_unchecked::<Map<String, Value>>()
        .map_err(|err| Rejection::Malformed(format!("claims are not a JSON object: {err}")))?;
    let issuer = match unverified.custom.get("iss") {
        Some(Value::String(iss)) => iss.clone(),
        _ => {
            return Err(Rejection::Malformed(
                "the token has no `iss` claim".to_owned(),
            ))
        }
    };
    let key_set = match keys_of(&issuer) {
        IssuerKeys::Untrusted => return Err(Rejection::UntrustedIssuer(issuer)),
        IssuerKeys::NotLoaded => return Err(Rejection::KeysUnavailable(issuer)),
        IssuerKeys::Loaded(set) => set,
    };
    let kid = untrusted.header().key_id.clone();
    let jwk = key_set
        .select(kid.as_deref())
        .ok_or_else(|| Rejection::UnknownKey(kid.clone()))?;
    let kid = kid.unwrap_or_default();
    if alg.key_family() != jwk.key.family() || jwk.alg.is_some_and(|pinned| pinned != alg) {
        return Err(Rejection::KeyMismatch {
            alg: alg.to_string(),
            kid,
        });
    }

    let claims = verify_signature(&untrusted, alg, &jwk.key)?;
    let expires_at = check_times(&claims, now, policy.clock_skew_seconds)?;
    check_audience(&claims.custom, &policy.audiences)?;

    let subject = claims
        .custom
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(VerifiedToken {
        issuer,
        subject,
        expires_at,
        key_id: kid,
        claims: all_claims(claims),
        digest: digest(token),
    })
}

/// The claims of a token Envoy's `jwt_authn` verified (see `envoy_claims`): the signature is
/// Envoy's business, everything else is checked here as for a token the filter verified itself,
/// so both modes accept exactly the same tokens. `trusted` says whether an issuer is configured.
pub fn from_verified_claims(
    claims: Map<String, Value>,
    policy: &TokenPolicy,
    now: i64,
    trusted: impl FnOnce(&str) -> bool,
) -> Result<VerifiedToken, Rejection> {
    let issuer = match claims.get("iss") {
        Some(Value::String(iss)) => iss.clone(),
        _ => {
            return Err(Rejection::Malformed(
                "the token has no `iss` claim".to_owned(),
            ))
        }
    };
    if !trusted(&issuer) {
        return Err(Rejection::UntrustedIssuer(issuer));
    }
    let skew = policy.clock_skew_seconds;
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    let expires_at = time("exp").ok_or(Rejection::MissingExpiry)?;
    if now > expires_at.saturating_add(skew) {
        return Err(Rejection::Expired);
    }
    let in_future = |name: &str| time(name).is_some_and(|t| t > now.saturating_add(skew));
    if in_future("nbf") || in_future("iat") {
        return Err(Rejection::NotYetValid);
    }
    check_audience(&claims, &policy.audiences)?;
    let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
    // The token itself may be gone (jwt_authn drops it unless `forward` is set): per-token caches
    // key on the verified claims instead, which identify it as well.
    let digest = digest(&Value::Object(claims.clone()).to_string());
    Ok(VerifiedToken {
        issuer,
        subject,
        expires_at,
        key_id: String::new(),
        claims,
        digest,
    })
}

/// RFC 9068 access tokens say `at+jwt`; many IdPs (Okta among them) send `JWT` or nothing.
fn check_type(typ: Option<&str>) -> Result<(), Rejection> {
    match typ {
        None => Ok(()),
        Some(typ)
            if typ.eq_ignore_ascii_case("JWT")
                || typ.eq_ignore_ascii_case("at+jwt")
                || typ.eq_ignore_ascii_case("application/at+jwt") =>
        {
            Ok(())
        }
        Some(other) => Err(Rejection::TypeNotAccepted(other.to_owned())),
    }
}

/// Refuses a header with `crit` or a non-default `b64` (see `UnsupportedHeader`). `jwt-compact`
/// drops header members it does not know, so the header is read here a second time; repeated
/// members are refused too, as everywhere else untrusted JSON is read.
fn check_extensions(token: &str) -> Result<(), Rejection> {
    use base64::Engine;
    let encoded = token.split('.').next().unwrap_or_default();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|err| Rejection::Malformed(format!("header is not base64url: {err}")))?;
    let header = unique_json::from_slice(&header)
        .map_err(|err| Rejection::Malformed(format!("header: {err}")))?;
    let refuse = |reason: UnsupportedHeader| Err(Rejection::UnsupportedHeader(reason));
    match header.get("crit") {
        None => {}
        Some(Value::Array(names)) if !names.is_empty() && names.iter().all(Value::is_string) => {
            return refuse(UnsupportedHeader::Critical(quote(
                &Value::Array(names.clone()).to_string(),
            )));
        }
        Some(other) => return refuse(UnsupportedHeader::MalformedCrit(quote(&other.to_string()))),
    }
    match header.get("b64") {
        None | Some(Value::Bool(true)) => Ok(()),
        Some(other) => refuse(UnsupportedHeader::UnencodedPayload(quote(
            &other.to_string(),
        ))),
    }
}

type Claims = jwt_compact::Claims<Map<String, Value>>;

fn verify_signature(
    token: &UntrustedToken<'_>,
    alg: JwsAlgorithm,
    key: &PublicKey,
) -> Result<Claims, Rejection> {
    match (alg, key) {
        (
            JwsAlgorithm::Rs256
            | JwsAlgorithm::Rs384
            | JwsAlgorithm::Rs512
            | JwsAlgorithm::Ps256
            | JwsAlgorithm::Ps384
            | JwsAlgorithm::Ps512,
            PublicKey::Rsa(key),
        ) => validate(&Rsa::with_name(alg.name()), key, token),
        (JwsAlgorithm::Es256, PublicKey::P256(key)) => validate(&Es256, key, token),
        (JwsAlgorithm::Es384, PublicKey::P384(key)) => validate(&Es384, key, token),
        (JwsAlgorithm::EdDsa, PublicKey::Ed25519(key)) => validate(&Ed25519, key, token),
        _ => Err(Rejection::KeyMismatch {
            alg: alg.to_string(),
            kid: String::new(),
        }),
    }
}

fn validate<A: Algorithm>(
    alg: &A,
    key: &A::VerifyingKey,
    token: &UntrustedToken<'_>,
) -> Result<Claims, Rejection> {
    use jwt_compact::ValidationError as E;
    alg.validator::<Map<String, Value>>(key)
        .validate(token)
        .map(|token| token.claims().clone())
        .map_err(|err| match err {
            E::InvalidSignature | E::InvalidSignatureLen { .. } | E::MalformedSignature(_) => {
                Rejection::BadSignature
            }
            E::MalformedClaims(err) => Rejection::Malformed(format!("claims: {err}")),
            other => Rejection::Malformed(other.to_string()),
        })
}

/// `exp` is required; `nbf` and `iat` may not lie in the future; all within the allowed skew.
fn check_times(claims: &Claims, now: i64, skew: i64) -> Result<i64, Rejection> {
    let expires_at = claims
        .expiration
        .ok_or(Rejection::MissingExpiry)?
        .timestamp();
    if now > expires_at.saturating_add(skew) {
        return Err(Rejection::Expired);
    }
    let in_future = |moment: Option<chrono::DateTime<chrono::Utc>>| {
        moment.is_some_and(|moment| moment.timestamp() > now.saturating_add(skew))
    };
    if in_future(claims.not_before) || in_future(claims.issued_at) {
        return Err(Rejection::NotYetValid);
    }
    Ok(expires_at)
}

/// `jwt-compact` lifts the registered time claims out of the map; policies may read them, so they go back.
fn all_claims(claims: Claims) -> Map<String, Value> {
    let mut map = claims.custom;
    for (name, moment) in [
        ("exp", claims.expiration),
        ("nbf", claims.not_before),
        ("iat", claims.issued_at),
    ] {
        if let Some(moment) = moment {
            map.insert(name.to_owned(), Value::from(moment.timestamp()));
        }
    }
    map
}

/// `aud` may be one string or an array; one match with the configured audiences is enough.
fn check_audience(claims: &Map<String, Value>, audiences: &[String]) -> Result<(), Rejection> {
    let accepted = |aud: &Value| {
        aud.as_str()
            .is_some_and(|aud| audiences.iter().any(|a| a == aud))
    };
    let ok = match claims.get("aud") {
        Some(Value::Array(items)) => items.iter().any(accepted),
        Some(aud) => accepted(aud),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Rejection::WrongAudience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_keys::{self, TestKey};
    use serde_json::json;

    #[test]
    fn claims_envoy_verified_are_checked_like_the_filters_own() {
        let policy = TokenPolicy {
            audiences: vec!["https://mcp.example.com/mcp".into()],
            clock_skew_seconds: 60,
            max_token_bytes: 16384,
        };
        let good = json!({"iss": "https://auth.example.com", "aud": "https://mcp.example.com/mcp",
                          "sub": "alice", "exp": 1_800_000_600_i64});
        let check = |claims: Value| {
            let Value::Object(claims) = claims else {
                panic!()
            };
            from_verified_claims(claims, &policy, 1_800_000_000, |iss| {
                iss == "https://auth.example.com"
            })
        };
        let verified = check(good.clone()).unwrap();
        assert_eq!(verified.subject.as_deref(), Some("alice"));
        assert_eq!(verified.expires_at, 1_800_000_600);
        let with = |name: &str, value: Value| {
            let mut claims = good.clone();
            claims[name] = value;
            check(claims)
        };
        assert_eq!(
            with("iss", json!("https://evil")).unwrap_err(),
            Rejection::UntrustedIssuer("https://evil".into())
        );
        assert_eq!(
            with("aud", json!("https://other")).unwrap_err(),
            Rejection::WrongAudience
        );
        assert_eq!(
            with("exp", json!(1_799_999_000_i64)).unwrap_err(),
            Rejection::Expired
        );
        assert_eq!(
            with("nbf", json!(1_800_001_000_i64)).unwrap_err(),
            Rejection::NotYetValid
        );
        assert_eq!(
            with("exp", json!("soon")).unwrap_err(),
            Rejection::MissingExpiry
        );
    }

    const ISS: &str = "https://auth.example.com";
    const AUD: &str = "https://mcp.example.com/mcp";
    const NOW: i64 = 1_800_000_000;

    fn policy() -> TokenPolicy {
        TokenPolicy {
            audiences: vec![AUD.to_owned()],
            clock_skew_seconds: 60,
            max_token_bytes: 8192,
        }
    }

    fn claims() -> Value {
        json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 300, "iat": NOW - 10,
               "groups": ["mcp-developers"], "scope": "mcp:tools mcp:read"})
    }

    fn key_set(keys: &[(&TestKey, &str)]) -> KeySet {
        let keys: Vec<Value> = keys.iter().map(|(key, kid)| key.public_jwk(kid)).collect();
        KeySet::from_value(&json!({ "keys": keys })).unwrap()
    }

    fn check(token: &str, set: &KeySet) -> Result<VerifiedToken, Rejection> {
        check_at(token, set, NOW)
    }

    fn check_at(token: &str, set: &KeySet, now: i64) -> Result<VerifiedToken, Rejection> {
        verify(token, &policy(), now, |iss| {
            if iss == ISS {
                IssuerKeys::Loaded(set)
            } else {
                IssuerKeys::Untrusted
            }
        })
    }

    fn header(alg: &str, kid: &str) -> Value {
        json!({"alg": alg, "kid": kid, "typ": "at+jwt"})
    }

    #[test]
    fn every_supported_algorithm_verifies_with_its_key() {
        let rsa = test_keys::rsa();
        let (p256, p384, ed) = (test_keys::p256(), test_keys::p384(), test_keys::ed25519());
        let set = key_set(&[(&rsa, "r"), (&p256, "e256"), (&p384, "e384"), (&ed, "ed")]);
        let cases: [(&TestKey, &str, &str); 9] = [
            (&rsa, "RS256", "r"),
            (&rsa, "RS384", "r"),
            (&rsa, "RS512", "r"),
            (&rsa, "PS256", "r"),
            (&rsa, "PS384", "r"),
            (&rsa, "PS512", "r"),
            (&p256, "ES256", "e256"),
            (&p384, "ES384", "e384"),
            (&ed, "EdDSA", "ed"),
        ];
        for (key, alg, kid) in cases {
            let verified = check(&key.sign(&header(alg, kid), &claims()), &set)
                .unwrap_or_else(|err| panic!("{alg}: {err}"));
            assert_eq!(verified.subject.as_deref(), Some("alice"));
            assert_eq!(verified.key_id, kid);
            assert_eq!(verified.scopes(), ["mcp:tools", "mcp:read"]);
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let set = key_set(&[(&test_keys::rsa(), "r")]);
        let unsigned = format!(
            "{}.{}.",
            base64_url(&json!({"alg": "none", "kid": "r"})),
            base64_url(&claims())
        );
        assert!(matches!(
            check(&unsigned, &set),
            Err(Rejection::AlgorithmRefused(_))
        ));
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_refused() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let forged =
            test_keys::sign_hs256(&rsa.public_key_bytes(), &header("HS256", "r"), &claims());
        assert!(matches!(
            check(&forged, &set),
            Err(Rejection::AlgorithmRefused(_))
        ));
    }

    #[test]
    fn an_alg_that_does_not_fit_the_key_is_refused() {
        let (rsa, p256) = (test_keys::rsa(), test_keys::p256());
        let set = key_set(&[(&rsa, "r"), (&p256, "e")]);
        // A valid ES256 signature, but the header points at the RSA key.
        let token = p256.sign(&header("ES256", "r"), &claims());
        assert!(matches!(
            check(&token, &set),
            Err(Rejection::KeyMismatch { .. })
        ));
    }

    #[test]
    fn a_jwk_pinned_to_one_alg_refuses_the_others() {
        let rsa = test_keys::rsa();
        let mut jwk = rsa.public_jwk("r");
        jwk["alg"] = json!("RS256");
        let set = KeySet::from_value(&json!({"keys": [jwk]})).unwrap();
        assert!(check(&rsa.sign(&header("RS256", "r"), &claims()), &set).is_ok());
        let token = rsa.sign(&header("PS256", "r"), &claims());
        assert!(matches!(
            check(&token, &set),
            Err(Rejection::KeyMismatch { .. })
        ));
    }

    #[test]
    fn a_signature_by_another_key_fails() {
        let set = key_set(&[(&test_keys::rsa(), "r")]);
        let token = test_keys::rsa_b().sign(&header("RS256", "r"), &claims());
        assert_eq!(check(&token, &set), Err(Rejection::BadSignature));
    }

    #[test]
    fn a_tampered_payload_fails() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let token = rsa.sign(&header("RS256", "r"), &claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut forged = claims();
        forged["sub"] = json!("mallory");
        parts[1] = base64_url(&forged);
        assert_eq!(check(&parts.join("."), &set), Err(Rejection::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_malformed() {
        let set = key_set(&[(&test_keys::rsa(), "r")]);
        for junk in [
            "",
            "abc",
            "a.b",
            "a.b.c",
            "....",
            "eyJhbGciOiJSUzI1NiJ9.!!!.sig",
        ] {
            assert!(
                matches!(check(junk, &set), Err(Rejection::Malformed(_))),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn an_oversized_token_is_refused_before_parsing() {
        let set = key_set(&[(&test_keys::rsa(), "r")]);
        let huge = "a".repeat(9000);
        let err = check(&huge, &set).unwrap_err();
        assert!(err.to_string().contains("9000 bytes"), "{err}");
    }

    #[test]
    fn expiry_honours_the_skew_on_both_sides_of_the_edge() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let token = rsa.sign(&header("RS256", "r"), &claims());
        let exp = NOW + 300;
        assert!(check_at(&token, &set, exp + 60).is_ok(), "within skew");
        assert_eq!(check_at(&token, &set, exp + 61), Err(Rejection::Expired));
    }

    #[test]
    fn not_before_and_issued_at_honour_the_skew() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        for claim in ["nbf", "iat"] {
            let mut early = claims();
            early[claim] = json!(NOW + 60);
            let token = rsa.sign(&header("RS256", "r"), &early);
            assert!(check(&token, &set).is_ok(), "{claim} at the skew edge");
            early[claim] = json!(NOW + 61);
            let token = rsa.sign(&header("RS256", "r"), &early);
            assert_eq!(check(&token, &set), Err(Rejection::NotYetValid), "{claim}");
        }
    }

    #[test]
    fn exp_is_required() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let mut forever = claims();
        forever.as_object_mut().unwrap().remove("exp");
        let token = rsa.sign(&header("RS256", "r"), &forever);
        assert_eq!(check(&token, &set), Err(Rejection::MissingExpiry));
    }

    #[test]
    fn audience_may_be_a_string_or_an_array() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let mut c = claims();
        c["aud"] = json!(["other", AUD]);
        assert!(check(&rsa.sign(&header("RS256", "r"), &c), &set).is_ok());
        c["aud"] = json!("https://other.example.com/mcp");
        assert_eq!(
            check(&rsa.sign(&header("RS256", "r"), &c), &set),
            Err(Rejection::WrongAudience)
        );
        c["aud"] = json!(["a", "b"]);
        assert_eq!(
            check(&rsa.sign(&header("RS256", "r"), &c), &set),
            Err(Rejection::WrongAudience)
        );
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            check(&rsa.sign(&header("RS256", "r"), &c), &set),
            Err(Rejection::WrongAudience)
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let mut c = claims();
        c["iss"] = json!(format!("{ISS}/"));
        assert!(matches!(
            check(&rsa.sign(&header("RS256", "r"), &c), &set),
            Err(Rejection::UntrustedIssuer(_))
        ));
    }

    #[test]
    fn unknown_kid_is_reported_as_such() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let token = rsa.sign(&header("RS256", "rotated"), &claims());
        assert_eq!(
            check(&token, &set),
            Err(Rejection::UnknownKey(Some("rotated".into())))
        );
    }

    #[test]
    fn token_types() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        for typ in [json!("JWT"), json!("at+jwt"), json!("application/at+jwt")] {
            let token = rsa.sign(&json!({"alg": "RS256", "kid": "r", "typ": typ}), &claims());
            assert!(check(&token, &set).is_ok(), "{typ}");
        }
        let untyped = rsa.sign(&json!({"alg": "RS256", "kid": "r"}), &claims());
        assert!(check(&untyped, &set).is_ok());
        let id_token_like = rsa.sign(
            &json!({"alg": "RS256", "kid": "r", "typ": "dpop+jwt"}),
            &claims(),
        );
        assert!(matches!(
            check(&id_token_like, &set),
            Err(Rejection::TypeNotAccepted(_))
        ));
    }

    #[test]
    fn a_one_key_set_accepts_a_token_without_kid() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let token = rsa.sign(&json!({"alg": "RS256"}), &claims());
        assert_eq!(check(&token, &set).unwrap().key_id, "");
    }

    #[test]
    fn keys_not_loaded_yet_is_its_own_answer() {
        let rsa = test_keys::rsa();
        let token = rsa.sign(&header("RS256", "r"), &claims());
        let result = verify(&token, &policy(), NOW, |_| IssuerKeys::NotLoaded);
        assert_eq!(result, Err(Rejection::KeysUnavailable(ISS.into())));
    }

    #[test]
    fn okta_scp_arrays_count_as_scopes() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let mut c = claims();
        c.as_object_mut().unwrap().remove("scope");
        c["scp"] = json!(["openid", "mcp:tools"]);
        let token = rsa.sign(&header("RS256", "r"), &c);
        assert_eq!(
            check(&token, &set).unwrap().scopes(),
            ["openid", "mcp:tools"]
        );
    }

    #[test]
    fn a_critical_extension_is_refused_even_when_signed() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        for crit in [json!(["exp"]), json!(["b64"]), json!(["x-custom", "b64"])] {
            let header = json!({"alg": "RS256", "kid": "r", "crit": crit, "exp": 1, "x-custom": 1, "b64": true});
            let err = check(&rsa.sign(&header, &claims()), &set).unwrap_err();
            let Rejection::UnsupportedHeader(UnsupportedHeader::Critical(names)) = &err else {
                panic!("{crit}: {err:?}")
            };
            assert_eq!(names, &quote(&crit.to_string()));
            assert_eq!(err.reason(), "unsupported_header");
            assert!(err.to_string().contains("must not add `crit`"), "{err}");
        }
    }

    #[test]
    fn a_malformed_crit_is_refused() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        for crit in [
            json!([]),
            json!("b64"),
            json!([1]),
            json!(null),
            json!({"b64": true}),
        ] {
            let header = json!({"alg": "RS256", "kid": "r", "crit": crit});
            assert!(
                matches!(
                    check(&rsa.sign(&header, &claims()), &set),
                    Err(Rejection::UnsupportedHeader(
                        UnsupportedHeader::MalformedCrit(_)
                    ))
                ),
                "{crit}"
            );
        }
    }

    #[test]
    fn only_base64url_payloads_are_accepted() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let token = rsa.sign(&json!({"alg": "RS256", "kid": "r", "b64": true}), &claims());
        assert!(check(&token, &set).is_ok(), "b64: true is the default");
        for b64 in [json!(false), json!("false"), json!(0)] {
            let token = rsa.sign(&json!({"alg": "RS256", "kid": "r", "b64": b64}), &claims());
            assert!(
                matches!(
                    check(&token, &set),
                    Err(Rejection::UnsupportedHeader(
                        UnsupportedHeader::UnencodedPayload(_)
                    ))
                ),
                "{b64}"
            );
        }
    }

    #[test]
    fn a_header_member_given_twice_is_malformed() {
        let rsa = test_keys::rsa();
        let set = key_set(&[(&rsa, "r")]);
        let token = rsa.sign(&json!({"alg": "RS256", "kid": "r"}), &claims());
        let (_, rest) = token.split_once('.').unwrap();
        let twice = format!(
            "{}.{rest}",
            base64_raw(r#"{"alg":"RS256","kid":"r","crit":["x"],"crit":[]}"#)
        );
        let err = check(&twice, &set).unwrap_err();
        assert!(
            matches!(&err, Rejection::Malformed(m) if m.contains("appears twice")),
            "{err:?}"
        );
    }

    fn base64_raw(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    fn base64_url(value: &Value) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }
}

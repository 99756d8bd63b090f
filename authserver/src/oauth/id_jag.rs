//! Enterprise-managed authorization: the RFC 7523 `jwt-bearer` grant with an Identity Assertion
//! JWT Authorization Grant (ID-JAG, draft-ietf-oauth-identity-assertion-authz-grant, as profiled
//! by MCP's `enterprise-managed-authorization` extension). The enterprise IdP has already decided
//! that this user may use this client with this MCP server (its policy is the consent), so there
//! is no browser and no consent page here: what is decided is whether the assertion is genuine,
//! meant for us, for this client, current and unused, and what token it yields.
//!
//! Pure: [`Assertion::parse`] reads the compact JWS (the signature is checked by the caller with
//! the issuer's keys), [`decide`] checks the verified claims at a given instant and makes the
//! grant. Every refusal is an [`AssertionError`] that names what was wrong and quotes it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::oauth::grant::Grant;
use crate::oauth::identity::ClaimMapping;
use crate::oauth::{ErrorCode, OAuthError, Scope};

/// The grant type of RFC 7523 §2.1.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The profile advertised in `authorization_grant_profiles_supported`.
pub const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";
/// The JWS `typ` an ID-JAG must carry (RFC 8725 §3.11: explicit typing, so no other JWT the IdP
/// signs — an ID token, an access token — passes for one).
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// Leeway for `exp`, `iat` and `nbf` between the IdP's clock and ours.
pub const CLOCK_SKEW_SECONDS: i64 = 60;

/// The asymmetric algorithms accepted (`none` and HMAC never: an enterprise IdP's assertion is
/// checked against its published public keys only).
pub const ASSERTION_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Why an assertion is refused. The text is for the client (it quotes only what the client sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the assertion is not a signed JWT (compact JWS): {0}")]
    Malformed(String),
    #[error("the assertion's JWS `typ` is {0}; {1}")]
    WrongType(String, &'static str),
    #[error("the assertion is signed with {0}; accepted: RS256/384/512, PS256/384/512, ES256, ES384, EdDSA")]
    Algorithm(String),
    #[error("the assertion's JWS header has `crit` extensions this server does not understand")]
    Critical,
    #[error("the assertion's issuer {0} is not a trusted enterprise identity provider")]
    UnknownIssuer(String),
    #[error("the assertion is signed by key {0}, which its issuer does not publish")]
    UnknownKey(String),
    #[error("the assertion's signature does not verify with its issuer's keys")]
    BadSignature,
    #[error("the assertion has no `{0}` claim, or not of the right type")]
    Missing(&'static str),
    #[error("the assertion's `aud` is {0}; it must be this authorization server's issuer, {1}")]
    Audience(String, String),
    #[error("the assertion was issued to client {0}, not to the client that presented it")]
    OtherClient(String),
    #[error("the assertion expired at {0} (now {1})")]
    Expired(i64, i64),
    #[error(
        "the assertion is issued in the future ({0}; now {1}): check the identity provider's clock"
    )]
    IssuedInFuture(i64, i64),
    #[error("the assertion is not valid before {0} (now {1})")]
    NotYetValid(i64, i64),
    #[error("the assertion lives {0} seconds; this server accepts at most {1}")]
    TooLong(i64, i64),
    #[error(
        "the assertion is bound to a key (`cnf`); proof of possession (DPoP) is not supported here"
    )]
    ProofOfPossession,
    #[error("the assertion carries `authorization_details` (RFC 9396), which this server does not support")]
    AuthorizationDetails,
    #[error("the assertion's `scope` is not valid: {0}")]
    BadScope(String),
    #[error("the assertion's `{0}` claim names no user")]
    NoSubject(String),
    #[error("the assertion was already used; get a fresh one from the identity provider")]
    Replayed,
    #[error("a client assertion's `sub` ({0}) must be its `iss` ({1}): the client's own id (RFC 7523 §3)")]
    SubjectNotIssuer(String, String),
    #[error("no client is bound to workload {subject} of {issuer}")]
    UnboundWorkload { issuer: String, subject: String },
    #[error(
        "client {0} is not registered here, or does not authenticate with a key (private_key_jwt)"
    )]
    UnknownClient(String),
    #[error("the assertion's resource {0} is not an MCP server this authorization server issues tokens for")]
    ResourceNotOurs(String),
    #[error("the resource {0} is not among those the assertion grants ({1})")]
    ResourceNotGranted(String, String),
    #[error(
        "the assertion grants several of this server's resources ({0}): name one with `resource`"
    )]
    ResourceAmbiguous(String),
    #[error("no scope is left: the request asked {asked}, the assertion grants {granted}, this client may have {offered}")]
    NoScope {
        asked: String,
        granted: String,
        offered: String,
    },
}

impl AssertionError {
    /// An `iss` no configured issuer has (quoted, cut: it is the client's text).
    pub fn unknown_issuer(iss: &str) -> Self {
        Self::UnknownIssuer(quoted(iss))
    }

    /// A `kid` (or none) no published key of the issuer has.
    pub fn unknown_key(kid: Option<&str>) -> Self {
        Self::UnknownKey(kid.map_or_else(|| "(no kid)".to_owned(), quoted))
    }
}

impl From<AssertionError> for OAuthError {
    /// RFC 6749 §5.2 and RFC 7521 §4.1.1: a bad assertion is `invalid_grant`; a resource this
    /// server does not serve `invalid_target` (RFC 8707); nothing left to grant `invalid_scope`.
    fn from(err: AssertionError) -> Self {
        let code = match err {
            AssertionError::ResourceNotOurs(_)
            | AssertionError::ResourceNotGranted(..)
            | AssertionError::ResourceAmbiguous(_) => ErrorCode::InvalidTarget,
            AssertionError::NoScope { .. } => ErrorCode::InvalidScope,
            _ => ErrorCode::InvalidGrant,
        };
        OAuthError::new(code, err.to_string())
    }
}

/// A compact JWS, decoded but not yet verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub alg: String,
    pub kid: Option<String>,
    /// Untrusted until the signature over `signing_input` is checked.
    pub claims: Map<String, Value>,
    pub signing_input: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Assertion {
    /// Reads an ID-JAG and checks its header: three base64url parts, JSON objects, the ID-JAG
    /// `typ`, an accepted algorithm, no `crit`.
    pub fn parse(assertion: &str) -> Result<Self, AssertionError> {
        Self::parse_typed(
            assertion,
            is_id_jag_type,
            "an ID-JAG's must be `oauth-id-jag+jwt`",
        )
    }

    /// Reads a JWT of the kind `accepts_typ` recognises (explicit typing, RFC 8725 §3.11: an
    /// ID-JAG is never a client assertion and an access token neither), checked as [`Self::parse`]
    /// does; `expected` says, for the refusal, which `typ` would do.
    pub fn parse_typed(
        assertion: &str,
        accepts_typ: fn(Option<&str>) -> bool,
        expected: &'static str,
    ) -> Result<Self, AssertionError> {
        let malformed = |why: &str| AssertionError::Malformed(why.to_owned());
        let mut parts = assertion.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("it must have three dot-separated parts"));
        };
        let object = |part: &str, what: &str| -> Result<Map<String, Value>, AssertionError> {
            let bytes = URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| malformed(&format!("the {what} is not base64url")))?;
            serde_json::from_slice(&bytes)
                .map_err(|_| malformed(&format!("the {what} is not a JSON object")))
        };
        let header_fields = object(header, "header")?;
        let text = |name: &str| header_fields.get(name).and_then(Value::as_str);
        if !accepts_typ(text("typ")) || header_fields.get("typ").is_some_and(|t| !t.is_string()) {
            let found = header_fields
                .get("typ")
                .map_or_else(|| "absent".to_owned(), shown);
            return Err(AssertionError::WrongType(found, expected));
        }
        let alg = text("alg").unwrap_or_default();
        if !ASSERTION_ALGORITHMS.contains(&alg) {
            return Err(AssertionError::Algorithm(quoted(alg)));
        }
        if header_fields.contains_key("crit") {
            return Err(AssertionError::Critical);
        }
        Ok(Self {
            alg: alg.to_owned(),
            kid: text("kid").map(str::to_owned),
            claims: object(payload, "payload")?,
            signing_input: format!("{header}.{payload}").into_bytes(),
            signature: URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| malformed("the signature is not base64url"))?,
        })
    }

    /// The claimed issuer, which picks the keys to verify with.
    pub fn issuer(&self) -> Result<&str, AssertionError> {
        self.claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(AssertionError::Missing("iss"))
    }
}

fn is_id_jag_type(typ: Option<&str>) -> bool {
    typ.is_some_and(|typ| media_type(typ) == ID_JAG_TYP)
}

/// RFC 7515 §4.1.9: a media type, compared case-insensitively, `application/` optional.
pub(crate) fn media_type(typ: &str) -> String {
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").unwrap_or(&typ).to_owned()
}

/// What this server and the presenting client allow (from the configuration and the store).
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// This authorization server's issuer: the only `aud` accepted.
    pub issuer: &'a str,
    /// The authenticated client: the only `client_id` accepted.
    pub client_id: &'a str,
    /// The MCP servers tokens are issued for.
    pub resources: &'a [String],
    /// The scopes the server offers.
    pub scopes: &'a [String],
    /// The `scope` the client registered, if it did: its scopes stay within it.
    pub registered: Option<&'a Scope>,
    pub max_lifetime: i64,
}

impl Expectations<'_> {
    /// What this client may get: offered, within its registration, and never `offline_access`
    /// (no refresh token is issued for an ID-JAG).
    fn allowed_scopes(&self) -> Scope {
        let offered: Scope = self.scopes.iter().map(String::as_str).collect();
        match self.registered {
            Some(registered) => offered.intersection(registered),
            None => offered,
        }
        .without("offline_access")
    }
}

/// What the client asked for next to the assertion.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    pub resource: Option<&'a str>,
    pub scope: Option<&'a Scope>,
}

/// An accepted assertion: the grant to issue an access token for, and its replay record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub grant: Grant,
    /// Names the assertion among every issuer's (SHA-256 of its `iss` and `jti`).
    pub replay_key: String,
    /// Until when the assertion must be remembered: after this it is refused as expired anyway.
    pub replay_until: i64,
}

/// Decides on an assertion whose signature its issuer's keys verified, at `now`: RFC 7521 §5.2
/// and RFC 7523 §3 (issuer, audience, expiry, `jti`), the ID-JAG processing rules (`typ` was
/// checked at parse; `client_id` is the authenticated client; `resource` is one of ours), the
/// user mapped as the issuer's configuration says, and the scope the intersection of what was
/// asked, what the assertion grants and what this client may have. No refresh token is implied:
/// the ID-JAG draft says none should be issued (a fresh ID-JAG replaces it).
pub fn decide(
    assertion: &Assertion,
    expect: &Expectations<'_>,
    ask: &Ask<'_>,
    mapping: &ClaimMapping<'_>,
    now: i64,
) -> Result<Decision, AssertionError> {
    let claims = &assertion.claims;
    let issuer = assertion.issuer()?;
    check_audience(claims.get("aud"), expect.issuer)?;
    let client_id = string(claims, "client_id")?;
    if client_id != expect.client_id {
        return Err(AssertionError::OtherClient(quoted(client_id)));
    }
    check_times(claims, expect.max_lifetime, now, true)?;
    let jti = string(claims, "jti")?;
    if claims.contains_key("cnf") {
        return Err(AssertionError::ProofOfPossession);
    }
    if claims.contains_key("authorization_details") {
        return Err(AssertionError::AuthorizationDetails);
    }
    let resource = resource(claims.get("resource"), ask.resource, expect.resources)?;
    let scope = scope(claims.get("scope"), ask.scope, &expect.allowed_scopes())?;
    let user = mapping.user(std::slice::from_ref(claims));
    if user.subject.is_empty() {
        return Err(AssertionError::NoSubject(mapping.subject.to_owned()));
    }
    let exp = number(claims, "exp")?;
    Ok(Decision {
        grant: Grant {
            client_id: client_id.to_owned(),
            resource,
            scope: scope.to_string(),
            user,
            redirect_uri: String::new(),
            code_challenge: String::new(),
        },
        replay_key: replay_key(issuer, jti),
        replay_until: exp.saturating_add(CLOCK_SKEW_SECONDS),
    })
}

/// `aud` is our issuer, as a string or as an array of exactly that one string (the draft:
/// several audiences would let one assertion be spent at several servers).
pub(crate) fn check_audience(aud: Option<&Value>, issuer: &str) -> Result<(), AssertionError> {
    let ours = match aud {
        Some(Value::String(aud)) => aud == issuer,
        Some(Value::Array(items)) => {
            matches!(items.as_slice(), [Value::String(aud)] if aud == issuer)
        }
        _ => return Err(AssertionError::Missing("aud")),
    };
    match (ours, aud) {
        (true, _) => Ok(()),
        (false, Some(aud)) => Err(AssertionError::Audience(shown(aud), issuer.to_owned())),
        (false, None) => Err(AssertionError::Missing("aud")),
    }
}

/// `exp` is required, and `iat` where `iat_required` (the ID-JAG draft; RFC 7523 makes it
/// optional), `nbf` honoured if present, each with [`CLOCK_SKEW_SECONDS`] of leeway; and the
/// assertion lives no longer than `max_lifetime` (from `iat`, or from now without one).
pub(crate) fn check_times(
    claims: &Map<String, Value>,
    max_lifetime: i64,
    now: i64,
    iat_required: bool,
) -> Result<(), AssertionError> {
    let exp = number(claims, "exp")?;
    let iat = match claims.get("iat") {
        None if !iat_required => now,
        _ => number(claims, "iat")?,
    };
    if exp.saturating_add(CLOCK_SKEW_SECONDS) <= now {
        return Err(AssertionError::Expired(exp, now));
    }
    if iat > now.saturating_add(CLOCK_SKEW_SECONDS) {
        return Err(AssertionError::IssuedInFuture(iat, now));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_i64().ok_or(AssertionError::Missing("nbf"))?;
        if nbf > now.saturating_add(CLOCK_SKEW_SECONDS) {
            return Err(AssertionError::NotYetValid(nbf, now));
        }
    }
    let lifetime = exp.saturating_sub(iat);
    if lifetime > max_lifetime {
        return Err(AssertionError::TooLong(lifetime, max_lifetime));
    }
    Ok(())
}

/// The one resource the token is for: the assertion's `resource` (a string or an array, RFC
/// 8707 identifiers) narrowed to ours, and to the one the request names, if it names one.
fn resource(
    claim: Option<&Value>,
    asked: Option<&str>,
    ours: &[String],
) -> Result<String, AssertionError> {
    let granted: Vec<&str> = match claim {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().ok_or(AssertionError::Missing("resource")))
            .collect::<Result<_, _>>()?,
        _ => return Err(AssertionError::Missing("resource")),
    };
    let listed = || quoted(&granted.join(" "));
    if let Some(asked) = asked {
        if !granted.contains(&asked) {
            return Err(AssertionError::ResourceNotGranted(quoted(asked), listed()));
        }
        if !ours.iter().any(|r| r == asked) {
            return Err(AssertionError::ResourceNotOurs(quoted(asked)));
        }
        return Ok(asked.to_owned());
    }
    let mut usable = granted.iter().filter(|g| ours.iter().any(|r| r == *g));
    match (usable.next(), usable.next()) {
        (Some(only), None) => Ok((*only).to_owned()),
        (Some(_), Some(_)) => Err(AssertionError::ResourceAmbiguous(listed())),
        (None, _) => Err(AssertionError::ResourceNotOurs(listed())),
    }
}

/// What was asked (all the assertion grants, if nothing was), within the assertion's `scope` and
/// what this client may have. Tokens outside either are dropped (RFC 6749 §3.3: the answer's
/// `scope` says what was granted); nothing left is `invalid_scope`, never a token without scope.
fn scope(
    claim: Option<&Value>,
    asked: Option<&Scope>,
    allowed: &Scope,
) -> Result<Scope, AssertionError> {
    let granted = match claim {
        None => Scope::default(),
        Some(Value::String(wire)) => {
            Scope::parse(wire).map_err(|err| AssertionError::BadScope(err.to_string()))?
        }
        Some(_) => return Err(AssertionError::BadScope("it is not a string".into())),
    };
    let scope = asked
        .unwrap_or(&granted)
        .intersection(&granted)
        .intersection(allowed);
    if scope == Scope::default() {
        let show = |scope: &Scope| quoted(&scope.to_string());
        return Err(AssertionError::NoScope {
            asked: asked.map_or_else(|| "nothing".to_owned(), show),
            granted: show(&granted),
            offered: show(allowed),
        });
    }
    Ok(scope)
}

pub(crate) fn string<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, AssertionError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
        .ok_or(AssertionError::Missing(name))
}

/// A NumericDate (RFC 7519 §2), fractional seconds cut.
pub(crate) fn number(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<i64, AssertionError> {
    let value = claims.get(name).ok_or(AssertionError::Missing(name))?;
    value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        .ok_or(AssertionError::Missing(name))
}

/// An assertion's identity among all issuers': `jti` is unique per issuer only.
pub(crate) fn replay_key(issuer: &str, jti: &str) -> String {
    let mut digest = Sha256::new();
    for part in [issuer, jti] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A claim the client sent: a string as itself, anything else as JSON, quoted.
pub(crate) fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => quoted(text),
        other => quoted(&other.to_string()),
    }
}

/// A value the client sent, in backquotes and cut to a readable length.
pub(crate) fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oauth::clock::{Clock, ManualClock};
    use serde_json::json;

    const T0: i64 = 1_700_000_000;
    const ISSUER: &str = "https://auth.example.com";
    const IDP: &str = "https://acme.okta.com/oauth2/default";
    const MCP: &str = "https://mcp.example.com/mcp";

    /// A compact JWS of `header` and `claims` with a placeholder signature (the decisions here
    /// take the signature as checked).
    pub(crate) fn token(header: Value, claims: Value) -> String {
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.{}",
            part(&header),
            part(&claims),
            URL_SAFE_NO_PAD.encode(b"sig")
        )
    }

    fn claims() -> Value {
        json!({
            "iss": IDP, "sub": "00u1alice", "aud": ISSUER, "client_id": "agent",
            "jti": "j-1", "iat": T0, "exp": T0 + 300, "resource": MCP,
            "scope": "mcp:tools mcp:admin", "email": "alice@example.com", "email_verified": true,
            "groups": ["mcp-developers", "Everyone"],
        })
    }

    fn assertion(claims: Value) -> Assertion {
        Assertion::parse(&token(
            json!({"alg": "RS256", "typ": ID_JAG_TYP, "kid": "k1"}),
            claims,
        ))
        .unwrap()
    }

    fn with(changes: Value) -> Assertion {
        let mut base = claims();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                base.as_object_mut().unwrap().remove(name);
            } else {
                base[name] = value.clone();
            }
        }
        assertion(base)
    }

    struct Setup {
        resources: Vec<String>,
        scopes: Vec<String>,
        registered: Scope,
    }

    fn setup() -> Setup {
        let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        Setup {
            resources: owned(&[MCP, "https://mcp.example.com/other"]),
            scopes: owned(&["mcp:tools", "mcp:read", "mcp:admin", "offline_access"]),
            registered: Scope::parse("mcp:tools mcp:read offline_access").unwrap(),
        }
    }

    const MAPPING: ClaimMapping<'static> = ClaimMapping {
        subject: "sub",
        groups: Some("groups"),
        roles: None,
    };

    fn run(assertion: &Assertion, ask: Ask<'_>, now: i64) -> Result<Decision, AssertionError> {
        let setup = setup();
        let expect = Expectations {
            issuer: ISSUER,
            client_id: "agent",
            resources: &setup.resources,
            scopes: &setup.scopes,
            registered: Some(&setup.registered),
            max_lifetime: 3600,
        };
        decide(assertion, &expect, &ask, &MAPPING, now)
    }

    fn refused(assertion: &Assertion) -> AssertionError {
        run(assertion, Ask::default(), T0).unwrap_err()
    }

    #[test]
    fn a_good_assertion_yields_a_grant_for_its_user_resource_and_scope() {
        let clock = ManualClock::at(T0 + 10);
        let decision = run(&assertion(claims()), Ask::default(), clock.now()).unwrap();
        let grant = decision.grant;
        assert_eq!(
            (grant.client_id.as_str(), grant.resource.as_str()),
            ("agent", MCP)
        );
        assert_eq!(
            grant.scope, "mcp:tools",
            "what the client may have of the grant"
        );
        assert_eq!(grant.user.subject, "00u1alice");
        assert_eq!(grant.user.email.as_deref(), Some("alice@example.com"));
        assert_eq!(
            grant.user.groups,
            ["mcp-developers", "Everyone"],
            "mapped like a federated login; the prefix filter applies when the token is made"
        );
        assert_eq!(decision.replay_until, T0 + 300 + CLOCK_SKEW_SECONDS);
        assert_eq!(decision.replay_key.len(), 64);
    }

    #[test]
    fn the_header_must_say_id_jag_with_an_asymmetric_algorithm_and_no_crit() {
        let parse = |header: Value| Assertion::parse(&token(header, claims())).unwrap_err();
        assert_eq!(
            parse(json!({"alg": "RS256", "typ": "JWT"})),
            AssertionError::WrongType("`JWT`".into(), "an ID-JAG's must be `oauth-id-jag+jwt`")
        );
        assert_eq!(
            parse(json!({"alg": "RS256", "typ": "at+jwt"})),
            AssertionError::WrongType("`at+jwt`".into(), "an ID-JAG's must be `oauth-id-jag+jwt`"),
            "an access token of the IdP's is no grant"
        );
        assert_eq!(
            parse(json!({"alg": "RS256"})),
            AssertionError::WrongType("absent".into(), "an ID-JAG's must be `oauth-id-jag+jwt`")
        );
        assert!(Assertion::parse(&token(
            json!({"alg": "ES256", "typ": "application/OAuth-ID-JAG+JWT"}),
            claims()
        ))
        .is_ok());
        for alg in ["none", "HS256", ""] {
            assert!(matches!(
                parse(json!({"alg": alg, "typ": ID_JAG_TYP})),
                AssertionError::Algorithm(_)
            ));
        }
        assert_eq!(
            parse(json!({"alg": "RS256", "typ": ID_JAG_TYP, "crit": ["exp"]})),
            AssertionError::Critical
        );
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","typ":"{ID_JAG_TYP}"}}"#));
        let not_json = format!("{header}.bm90LWpzb24.c2ln");
        let not_base64 = format!("{header}.e30.c2ln!");
        for bad in ["a.b", "a.b.c.d.e", "!!.e30.c2ln", &not_json, &not_base64] {
            assert!(
                matches!(Assertion::parse(bad), Err(AssertionError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_audience_must_be_this_server_alone() {
        assert_eq!(
            refused(&with(json!({"aud": "https://other-as.example.com"}))),
            AssertionError::Audience("`https://other-as.example.com`".into(), ISSUER.into())
        );
        assert!(run(&with(json!({"aud": [ISSUER]})), Ask::default(), T0).is_ok());
        assert!(matches!(
            refused(&with(
                json!({"aud": [ISSUER, "https://other-as.example.com"]})
            )),
            AssertionError::Audience(..)
        ));
        assert_eq!(
            refused(&with(json!({"aud": null}))),
            AssertionError::Missing("aud")
        );
        let err = OAuthError::from(refused(&with(json!({"aud": "x"}))));
        assert_eq!(err.code, ErrorCode::InvalidGrant);
    }

    #[test]
    fn the_assertion_must_name_the_presenting_client() {
        let err = refused(&with(json!({"client_id": "someone-else"})));
        assert_eq!(err, AssertionError::OtherClient("`someone-else`".into()));
        assert_eq!(OAuthError::from(err).code, ErrorCode::InvalidGrant);
        assert_eq!(
            refused(&with(json!({"client_id": null}))),
            AssertionError::Missing("client_id")
        );
    }

    #[test]
    fn an_expired_or_future_or_long_lived_assertion_is_refused_with_leeway() {
        let clock = ManualClock::at(T0 + 300 + CLOCK_SKEW_SECONDS - 1);
        let good = assertion(claims());
        assert!(
            run(&good, Ask::default(), clock.now()).is_ok(),
            "within the leeway"
        );
        clock.advance(1);
        assert_eq!(
            run(&good, Ask::default(), clock.now()).unwrap_err(),
            AssertionError::Expired(T0 + 300, clock.now())
        );
        let early = ManualClock::at(T0 - CLOCK_SKEW_SECONDS);
        assert!(run(&good, Ask::default(), early.now()).is_ok());
        early.advance(-1);
        assert_eq!(
            run(&good, Ask::default(), early.now()).unwrap_err(),
            AssertionError::IssuedInFuture(T0, early.now())
        );
        assert_eq!(
            refused(&with(json!({"nbf": T0 + 600}))),
            AssertionError::NotYetValid(T0 + 600, T0)
        );
        assert_eq!(
            refused(&with(json!({"exp": T0 + 7200}))),
            AssertionError::TooLong(7200, 3600)
        );
        for claim in ["exp", "iat", "jti"] {
            assert_eq!(
                refused(&with(json!({claim: null}))),
                AssertionError::Missing(claim)
            );
        }
        assert_eq!(
            refused(&with(json!({"exp": "tomorrow"}))),
            AssertionError::Missing("exp")
        );
    }

    #[test]
    fn the_resource_must_be_one_of_ours_and_the_one_asked_for() {
        let other = "https://mcp.example.com/other";
        let err = refused(&with(json!({"resource": "https://evil.example.com/mcp"})));
        assert_eq!(
            err,
            AssertionError::ResourceNotOurs("`https://evil.example.com/mcp`".into())
        );
        assert_eq!(OAuthError::from(err).code, ErrorCode::InvalidTarget);
        assert_eq!(
            refused(&with(json!({"resource": null}))),
            AssertionError::Missing("resource")
        );
        let ask = |resource| Ask {
            resource: Some(resource),
            scope: None,
        };
        assert!(matches!(
            run(&assertion(claims()), ask(other), T0),
            Err(AssertionError::ResourceNotGranted(..))
        ));
        let both = with(json!({"resource": [MCP, other, "https://elsewhere.example.com"]}));
        assert!(matches!(
            run(&both, Ask::default(), T0),
            Err(AssertionError::ResourceAmbiguous(_))
        ));
        let picked = run(&both, ask(other), T0).unwrap();
        assert_eq!(
            picked.grant.resource, other,
            "the token is for that one only"
        );
        assert!(matches!(
            run(&both, ask("https://elsewhere.example.com"), T0),
            Err(AssertionError::ResourceNotOurs(_))
        ));
    }

    #[test]
    fn the_scope_is_the_intersection_of_the_request_the_assertion_and_the_client() {
        let scope = |asked: Option<&str>, granted: Value| {
            let asked = asked.map(|a| Scope::parse(a).unwrap());
            let ask = Ask {
                resource: None,
                scope: asked.as_ref(),
            };
            run(&with(json!({ "scope": granted })), ask, T0).map(|d| d.grant.scope)
        };
        assert_eq!(
            scope(
                Some("mcp:tools offline_access"),
                json!("mcp:tools mcp:admin")
            ),
            Ok("mcp:tools".into()),
            "offline_access: not in the grant; mcp:admin: not offered to this client"
        );
        assert_eq!(
            scope(None, json!("mcp:read mcp:tools openid")),
            Ok("mcp:read mcp:tools".into())
        );
        assert_eq!(
            scope(Some("mcp:read"), json!("mcp:read mcp:tools")),
            Ok("mcp:read".into())
        );
        let nothing = scope(Some("mcp:read"), json!("mcp:tools")).unwrap_err();
        assert_eq!(
            OAuthError::from(nothing.clone()).code,
            ErrorCode::InvalidScope
        );
        assert!(nothing.to_string().contains("`mcp:read`"), "{nothing}");
        assert!(
            matches!(
                run(&with(json!({"scope": null})), Ask::default(), T0),
                Err(AssertionError::NoScope { .. })
            ),
            "no scope claim grants nothing"
        );
        assert!(matches!(
            scope(None, json!(["mcp:tools"])),
            Err(AssertionError::BadScope(_))
        ));
    }

    #[test]
    fn proof_of_possession_authorization_details_and_a_missing_subject_are_refused() {
        assert_eq!(
            refused(&with(json!({"cnf": {"jkt": "abc"}}))),
            AssertionError::ProofOfPossession
        );
        assert_eq!(
            refused(&with(json!({"authorization_details": [{"type": "x"}]}))),
            AssertionError::AuthorizationDetails
        );
        assert_eq!(
            refused(&with(json!({"sub": null}))),
            AssertionError::NoSubject("sub".into())
        );
    }

    #[test]
    fn an_unverified_email_is_dropped_and_jtis_are_told_apart_per_issuer() {
        let decision = run(&with(json!({"email_verified": null})), Ask::default(), T0).unwrap();
        assert_eq!(decision.grant.user.email, None);
        assert_ne!(replay_key(IDP, "j-1"), replay_key("https://other", "j-1"));
        assert_ne!(replay_key("a", "bc"), replay_key("ab", "c"));
    }
}

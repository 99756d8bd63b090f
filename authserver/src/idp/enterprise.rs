//! The enterprise identity providers whose ID-JAGs the `jwt-bearer` grant accepts (the
//! `enterprise` section): each one's signing keys, fetched from its `jwks_uri` or its OpenID
//! discovery document with the `openidconnect` crate, cached, refetched when an assertion names a
//! key the cache lacks (the provider rotated), and checked against an assertion's signature. What
//! the verified assertion says is decided in `oauth::id_jag`.

use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreJsonWebKeySet, CoreJsonWebKeyUse, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{IssuerUrl, JsonWebKey, JsonWebKeySetUrl, SignatureVerificationError};
use tokio::sync::{Mutex, RwLock};

use crate::config::{EnterpriseConfig, EnterpriseIssuer};
use crate::idp::oidc::{error_chain, http_client};
use crate::oauth::id_jag::{Assertion, AssertionError};
use crate::oauth::identity::ClaimMapping;

/// Keys are fetched again after this, so a provider's planned rotations are seen.
const KEYS_TTL: Duration = Duration::from_secs(600);
/// An assertion naming a key the cache lacks refetches the keys at most this often: a stream of
/// made-up `kid`s must not turn this server into a load generator against the provider.
const UNKNOWN_KEY_COOLDOWN: Duration = Duration::from_secs(30);

/// The trusted issuers and the limits their assertions are held to.
pub struct Enterprise {
    issuers: Vec<TrustedIssuer>,
    pub max_assertion_seconds: i64,
}

impl Enterprise {
    pub fn new(config: &EnterpriseConfig) -> Self {
        Self {
            issuers: config
                .issuers
                .iter()
                .cloned()
                .map(TrustedIssuer::new)
                .collect(),
            max_assertion_seconds: i64::try_from(config.max_assertion_seconds).unwrap_or(i64::MAX),
        }
    }

    /// The issuer an assertion claims, if it is trusted (exact match, as RFC 8414 compares).
    pub fn issuer(&self, iss: &str) -> Result<&TrustedIssuer, AssertionError> {
        self.issuers
            .iter()
            .find(|trusted| trusted.settings.issuer == iss)
            .ok_or_else(|| AssertionError::unknown_issuer(iss))
    }
}

/// Why an assertion's signature could not be checked or was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Refused(#[from] AssertionError),
    /// No keys were ever fetched: a retry may work (`temporarily_unavailable`); the detail is for
    /// the log only.
    #[error("the signing keys of {issuer} could not be fetched ({detail}); check its jwks_uri or discovery document and this server's network")]
    Unreachable { issuer: String, detail: String },
}

/// One trusted identity provider and its cached keys.
pub struct TrustedIssuer {
    settings: EnterpriseIssuer,
    /// [`UNKNOWN_KEY_COOLDOWN`]; shorter in tests, which cannot wait for it.
    cooldown: Duration,
    keys: RwLock<Option<Keys>>,
    /// When the keys were last asked for, successfully or not; held while they are, so one
    /// request fetches and the others wait for its result.
    last_attempt: Mutex<Option<Instant>>,
}

/// The keys of the last successful fetch.
struct Keys {
    set: CoreJsonWebKeySet,
    fetched: Instant,
}

/// What an assertion's signature is, against one key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signature {
    Valid,
    Invalid,
    /// No key of the set has the assertion's `kid` and fits its algorithm.
    NoKey,
}

impl TrustedIssuer {
    pub(crate) fn new(settings: EnterpriseIssuer) -> Self {
        Self {
            settings,
            cooldown: UNKNOWN_KEY_COOLDOWN,
            keys: RwLock::new(None),
            last_attempt: Mutex::new(None),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Where this provider's assertions name the user: the same settings, read the same way,
    /// as the `oidc` upstream's.
    pub fn mapping(&self) -> ClaimMapping<'_> {
        ClaimMapping {
            subject: &self.settings.subject_claim,
            groups: self.settings.groups_claim.as_deref(),
            roles: self.settings.roles_claim.as_deref(),
        }
    }

    /// Checks `assertion`'s signature with this provider's keys; a key the cache lacks makes
    /// one refetch (unless the keys were asked for within the cooldown) before the assertion is
    /// refused.
    pub async fn verify(&self, assertion: &Assertion) -> Result<(), VerifyError> {
        let mut verdict = self.check(assertion).await?;
        if verdict == Signature::NoKey {
            self.refresh().await?;
            verdict = self.check(assertion).await?;
        }
        match verdict {
            Signature::Valid => Ok(()),
            Signature::Invalid => Err(AssertionError::BadSignature.into()),
            Signature::NoKey => Err(AssertionError::unknown_key(assertion.kid.as_deref()).into()),
        }
    }

    /// The verdict of the cached keys, refreshed first when they are older than [`KEYS_TTL`]
    /// (and used as they are if the refresh fails).
    async fn check(&self, assertion: &Assertion) -> Result<Signature, VerifyError> {
        let verdict = |keys: &Keys| check_signature(&keys.set, assertion);
        {
            let keys = self.keys.read().await;
            if let Some(keys) = keys.as_ref().filter(|k| k.fetched.elapsed() < KEYS_TTL) {
                return Ok(verdict(keys));
            }
        }
        self.refresh().await?;
        let keys = self.keys.read().await;
        keys.as_ref()
            .map(verdict)
            .ok_or_else(|| self.unreachable("no keys"))
    }

    /// Fetches the keys, unless they were asked for within the cooldown (by this request's
    /// predecessors, or by one it waited for): a stream of made-up `kid`s, or an outage, costs
    /// the provider one request per cooldown. A failed fetch keeps the keys there were — an
    /// outage does not stop assertions signed by keys already known — and is an error only when
    /// there are none.
    async fn refresh(&self) -> Result<(), VerifyError> {
        let mut last_attempt = self.last_attempt.lock().await;
        let have_keys = self.keys.read().await.is_some();
        if last_attempt.is_some_and(|at| at.elapsed() < self.cooldown) {
            return if have_keys {
                Ok(())
            } else {
                Err(self.unreachable("the last fetch failed moments ago"))
            };
        }
        *last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                tracing::info!(issuer = %self.settings.issuer, keys = set.keys().len(), "enterprise identity provider keys fetched");
                *self.keys.write().await = Some(Keys {
                    set,
                    fetched: Instant::now(),
                });
                Ok(())
            }
            Err(detail) if have_keys => {
                tracing::warn!(issuer = %self.settings.issuer, error = %detail, "enterprise identity provider keys could not be refreshed; the known ones stay in use");
                Ok(())
            }
            Err(detail) => Err(self.unreachable(&detail)),
        }
    }

    fn unreachable(&self, detail: &str) -> VerifyError {
        VerifyError::Unreachable {
            issuer: self.settings.issuer.clone(),
            detail: detail.to_owned(),
        }
    }

    /// The key set at `jwks_uri`, or at the one the discovery document names.
    async fn fetch(&self) -> Result<CoreJsonWebKeySet, String> {
        let http = http_client()?;
        match &self.settings.jwks_uri {
            Some(uri) => {
                let url = JsonWebKeySetUrl::new(uri.clone()).map_err(|err| err.to_string())?;
                CoreJsonWebKeySet::fetch_async(&url, &http)
                    .await
                    .map_err(|err| error_chain(&err))
            }
            None => {
                let issuer =
                    IssuerUrl::new(self.settings.issuer.clone()).map_err(|err| err.to_string())?;
                CoreProviderMetadata::discover_async(issuer, &http)
                    .await
                    .map(|metadata| metadata.jwks().clone())
                    .map_err(|err| error_chain(&err))
            }
        }
    }
}

/// Checks the signature with the keys whose `kid` is the assertion's (any key, if it names
/// none), that may sign (`use` absent or `sig`) and fit the algorithm (the JWK's own `alg`, if it
/// pins one, included).
pub(crate) fn check_signature(set: &CoreJsonWebKeySet, assertion: &Assertion) -> Signature {
    let Ok(alg) = serde_json::from_value::<CoreJwsSigningAlgorithm>(assertion.alg.clone().into())
    else {
        return Signature::NoKey;
    };
    let mut verdict = Signature::NoKey;
    let candidates = set.keys().iter().filter(|key| {
        let kid_fits = match &assertion.kid {
            Some(kid) => key.key_id().is_some_and(|id| id.as_str() == kid),
            None => true,
        };
        kid_fits && matches!(key.key_use(), None | Some(CoreJsonWebKeyUse::Signature))
    });
    for key in candidates {
        match key.verify_signature(&alg, &assertion.signing_input, &assertion.signature) {
            Ok(()) => return Signature::Valid,
            Err(SignatureVerificationError::CryptoError(_)) => verdict = Signature::Invalid,
            Err(_) => {}
        }
    }
    verdict
}

/// A real P-256 key pair for tests: its public JWK and tokens it signs.
#[cfg(test)]
pub(crate) mod testing {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    use serde_json::{json, Value};

    pub struct Key {
        signing: p256::ecdsa::SigningKey,
        pub kid: &'static str,
    }

    impl Key {
        pub fn new(kid: &'static str) -> Self {
            Self {
                signing: p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
                kid,
            }
        }

        pub fn jwk(&self) -> Value {
            let point = self.signing.verifying_key().to_encoded_point(false);
            let b64 = |bytes: Option<&p256::FieldBytes>| {
                URL_SAFE_NO_PAD.encode(bytes.map(|b| &b[..]).unwrap_or_default())
            };
            json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": self.kid,
                   "x": b64(point.x()), "y": b64(point.y())})
        }

        /// A compact ES256 JWS of `claims` under `header` (`alg` added).
        pub fn sign(&self, mut header: Value, claims: &Value) -> String {
            header["alg"] = json!("ES256");
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let signature: p256::ecdsa::Signature = self.signing.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
        }
    }

    /// A JWKS document served over HTTP on a local port, changeable while it is served.
    pub struct JwksServer {
        pub url: String,
        pub document: std::sync::Arc<std::sync::Mutex<Value>>,
        /// Requests served so far.
        pub fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl JwksServer {
        pub async fn start(keys: &[&Key]) -> Self {
            let document = std::sync::Arc::new(std::sync::Mutex::new(Self::keys(keys)));
            let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (served, counted) = (document.clone(), fetches.clone());
            let app = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let document = served.lock().unwrap().clone();
                    async move { axum::Json(document) }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            Self {
                url,
                document,
                fetches,
                task,
            }
        }

        fn keys(keys: &[&Key]) -> Value {
            json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
        }

        /// The provider rotates: from now on it publishes `keys`.
        pub fn publish(&self, keys: &[&Key]) {
            *self.document.lock().unwrap() = Self::keys(keys);
        }

        pub fn stop(&self) {
            self.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Key;
    use super::*;
    use serde_json::json;

    fn signed(key: &Key, kid: Option<&str>) -> Assertion {
        let mut header = json!({"typ": "oauth-id-jag+jwt"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        Assertion::parse(&key.sign(header, &json!({"iss": "https://idp"}))).unwrap()
    }

    fn set(keys: &[&Key]) -> CoreJsonWebKeySet {
        serde_json::from_value(json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}))
            .unwrap()
    }

    #[test]
    fn the_signature_verifies_only_with_the_named_published_key() {
        let (current, previous, stranger) = (Key::new("k2"), Key::new("k1"), Key::new("k2"));
        let published = set(&[&previous, &current]);
        assert_eq!(
            check_signature(&published, &signed(&current, Some("k2"))),
            Signature::Valid
        );
        assert_eq!(
            check_signature(&published, &signed(&previous, None)),
            Signature::Valid,
            "no kid: any published key"
        );
        assert_eq!(
            check_signature(&published, &signed(&stranger, Some("k2"))),
            Signature::Invalid,
            "another key under a published kid"
        );
        assert_eq!(
            check_signature(&published, &signed(&current, Some("k3"))),
            Signature::NoKey,
            "a kid the provider does not publish (yet)"
        );
        let mut tampered = signed(&current, Some("k2"));
        tampered.signing_input[3] ^= 1;
        assert_eq!(check_signature(&published, &tampered), Signature::Invalid);
        let mut wrong_alg = signed(&current, Some("k2"));
        wrong_alg.alg = "RS256".into();
        assert_eq!(
            check_signature(&published, &wrong_alg),
            Signature::NoKey,
            "an EC key never checks an RSA signature"
        );
    }

    #[test]
    fn an_encryption_key_never_checks_a_signature() {
        let key = Key::new("k1");
        let mut jwk = key.jwk();
        jwk["use"] = json!("enc");
        let published: CoreJsonWebKeySet =
            serde_json::from_value(json!({ "keys": [jwk] })).unwrap();
        assert_eq!(
            check_signature(&published, &signed(&key, Some("k1"))),
            Signature::NoKey
        );
    }

    fn trusted(jwks_uri: &str, cooldown: Duration) -> TrustedIssuer {
        let settings = serde_json::from_value(json!({
            "issuer": "https://idp.example.com", "jwks_uri": jwks_uri, "allow_http_issuer": true,
        }))
        .unwrap();
        TrustedIssuer {
            cooldown,
            ..TrustedIssuer::new(settings)
        }
    }

    #[tokio::test]
    async fn made_up_key_ids_cost_the_provider_one_fetch_per_cooldown() {
        let known = Key::new("k1");
        let jwks = testing::JwksServer::start(&[&known]).await;
        let issuer = trusted(&jwks.url, UNKNOWN_KEY_COOLDOWN);
        let fetches = || jwks.fetches.load(std::sync::atomic::Ordering::SeqCst);
        issuer.verify(&signed(&known, Some("k1"))).await.unwrap();
        for n in 0..5 {
            let forged = Key::new("made-up");
            assert!(matches!(
                issuer
                    .verify(&signed(&forged, Some(&format!("k{n}x"))))
                    .await,
                Err(VerifyError::Refused(AssertionError::UnknownKey(_)))
            ));
        }
        assert_eq!(fetches(), 1, "the first fetch, none for the made-up kids");
        jwks.stop();
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_and_known_keys_outlive_an_outage() {
        let (k1, k2) = (Key::new("k1"), Key::new("k2"));
        let jwks = testing::JwksServer::start(&[&k1]).await;
        let issuer = trusted(&jwks.url, Duration::ZERO);
        issuer.verify(&signed(&k1, Some("k1"))).await.unwrap();
        jwks.publish(&[&k2]);
        issuer.verify(&signed(&k2, Some("k2"))).await.unwrap();
        assert!(
            matches!(
                issuer.verify(&signed(&k1, Some("k1"))).await,
                Err(VerifyError::Refused(AssertionError::UnknownKey(_)))
            ),
            "a key the provider withdrew no longer verifies"
        );
        jwks.stop();
        issuer.verify(&signed(&k2, Some("k2"))).await.unwrap();
        assert!(
            matches!(
                issuer.verify(&signed(&Key::new("k3"), Some("k3"))).await,
                Err(VerifyError::Refused(AssertionError::UnknownKey(_)))
            ),
            "an outage leaves the known keys, refuses the unknown one"
        );
        let never_reached = trusted(&jwks.url, Duration::ZERO);
        assert!(matches!(
            never_reached.verify(&signed(&k2, Some("k2"))).await,
            Err(VerifyError::Unreachable { .. })
        ));
    }
}

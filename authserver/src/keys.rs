//! Signing keys: loaded from PEM files (the first signs, all are published so that a rotation
//! never breaks live tokens), or one ephemeral key when none is configured.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{
    Algorithm, AlgorithmExt, AlgorithmSignature, Claims, Header, Token, UntrustedToken,
};
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Map, Value};
use sha2::Sha256;
use tokio::sync::Semaphore;

const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path}: not a PEM RSA (PKCS#1/PKCS#8), P-256 or Ed25519 private key")]
    Unrecognised { path: PathBuf },
    #[error(
        "signing key {path}: RSA keys must have at least {MIN_RSA_BITS} bits, this one has {bits}"
    )]
    WeakRsa { path: PathBuf, bits: usize },
    #[error("signing key {path}: the RSA key is refused for signing: {reason}")]
    Ring { path: PathBuf, reason: String },
    #[error("could not sign a token: {0}")]
    Sign(String),
    #[error("{path} already exists: a signing key is never overwritten; choose another file name")]
    Exists { path: PathBuf },
    #[error("signing key {path}: cannot write it: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not generate a {algorithm} key: {reason}")]
    Generate {
        algorithm: &'static str,
        reason: String,
    },
}

enum Private {
    Rsa(Box<RsaKey>),
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_compact::KeyPair),
}

/// An RSA key: `ring` signs (about three times the pure-Rust `rsa` crate's rate, which matters
/// at milliseconds per signature), the `rsa` crate gives the JWK.
struct RsaKey {
    pair: RsaKeyPair,
    verifying: UnparsedPublicKey<Vec<u8>>,
    public: rsa::RsaPublicKey,
}

/// RS256 (RFC 7518 §3.3) over `ring`, for jwt-compact's token building and validation.
struct RingRs256;

/// An RS256 signature; empty when `ring` could not sign (see `sign`).
struct RingSignature(Vec<u8>);

impl AlgorithmSignature for RingSignature {
    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Ok(Self(slice.to_vec()))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

impl Algorithm for RingRs256 {
    type SigningKey = RsaKeyPair;
    type VerifyingKey = UnparsedPublicKey<Vec<u8>>;
    type Signature = RingSignature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("RS256")
    }

    /// The trait cannot fail; `ring` fails only on a broken random source, and then the
    /// signature is empty, which `sign` below turns into an error instead of a token.
    fn sign(&self, signing_key: &RsaKeyPair, message: &[u8]) -> RingSignature {
        let mut signature = vec![0; signing_key.public().modulus_len()];
        let signed = signing_key.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            message,
            &mut signature,
        );
        RingSignature(if signed.is_ok() {
            signature
        } else {
            Vec::new()
        })
    }

    fn verify_signature(
        &self,
        signature: &RingSignature,
        verifying_key: &UnparsedPublicKey<Vec<u8>>,
        message: &[u8],
    ) -> bool {
        verifying_key.verify(message, &signature.0).is_ok()
    }
}

struct Key {
    kid: String,
    private: Private,
    public_jwk: Value,
}

/// The server's signing keys; the first signs.
pub struct KeyRing {
    keys: Arc<Vec<Key>>,
    /// Whether the key was generated at start (tokens die with the process).
    pub ephemeral: bool,
    /// Signatures in progress, at most one per core: an RSA signature takes milliseconds of
    /// CPU, which must neither stall the async threads nor pile up unbounded.
    signers: Semaphore,
}

impl KeyRing {
    pub fn load(paths: &[PathBuf]) -> Result<Self, KeyError> {
        let keys = paths
            .iter()
            .map(|path| load_pem(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(keys, false))
    }

    fn new(keys: Vec<Key>, ephemeral: bool) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            keys: Arc::new(keys),
            ephemeral,
            signers: Semaphore::new(cores),
        }
    }

    /// One fresh P-256 key, for development only.
    pub fn ephemeral() -> Self {
        let private = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        Self::new(vec![key(Private::P256(private))], true)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Each key's `kid` and algorithm, in order (the first signs).
    pub fn describe(&self) -> Vec<KeyInfo> {
        self.keys.iter().map(Key::info).collect()
    }

    /// The JWKS document: every key, `kid` = RFC 7638 thumbprint.
    pub fn jwks(&self) -> Value {
        serde_json::json!({ "keys": self.keys.iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>() })
    }

    /// Signs `claims` as a JWT with `typ` (e.g. `at+jwt`) under the current key.
    pub async fn sign(&self, typ: &str, claims: Map<String, Value>) -> Result<String, KeyError> {
        let typ = typ.to_owned();
        self.off_thread(move |keys| sign(keys, &typ, claims)).await
    }

    /// The claims of a JWT of type `typ` that one of these keys signed (found by `kid`), the
    /// registered time claims included; `None` for anything else. Times are not checked here.
    pub async fn verify(&self, typ: &str, token: &str) -> Option<Map<String, Value>> {
        let (typ, token) = (typ.to_owned(), token.to_owned());
        self.off_thread(move |keys| Ok(verify(keys, &typ, &token)))
            .await
            .ok()
            .flatten()
    }

    /// Runs `work` over the keys on a blocking thread (so `/healthz` and every other request
    /// keep their async threads), at most one per core at a time.
    async fn off_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce(&[Key]) -> Result<T, KeyError> + Send + 'static,
    ) -> Result<T, KeyError> {
        let _permit = self
            .signers
            .acquire()
            .await
            .map_err(|err| KeyError::Sign(err.to_string()))?;
        let keys = Arc::clone(&self.keys);
        tokio::task::spawn_blocking(move || work(&keys))
            .await
            .map_err(|err| KeyError::Sign(err.to_string()))?
    }
}

fn verify(keys: &[Key], typ: &str, token: &str) -> Option<Map<String, Value>> {
    let untrusted = UntrustedToken::new(token).ok()?;
    if untrusted.header().token_type.as_deref() != Some(typ) {
        return None;
    }
    let kid = untrusted.header().key_id.as_deref()?;
    let key = keys.iter().find(|key| key.kid == kid)?;
    let token: Token<Map<String, Value>> = match &key.private {
        Private::Rsa(rsa) => RingRs256.validator(&rsa.verifying).validate(&untrusted),
        Private::P256(private) => Es256
            .validator(private.verifying_key())
            .validate(&untrusted),
        Private::Ed25519(pair) => Ed25519.validator(&pair.pk).validate(&untrusted),
    }
    .ok()?;
    let claims = token.claims();
    let mut map = claims.custom.clone();
    for (name, time) in [
        ("exp", claims.expiration),
        ("nbf", claims.not_before),
        ("iat", claims.issued_at),
    ] {
        if let Some(time) = time {
            map.insert(name.into(), Value::from(time.timestamp()));
        }
    }
    Some(map)
}

fn sign(keys: &[Key], typ: &str, claims: Map<String, Value>) -> Result<String, KeyError> {
    let key = keys
        .first()
        .ok_or_else(|| KeyError::Sign("no signing key".into()))?;
    let header = Header::empty()
        .with_key_id(key.kid.clone())
        .with_token_type(typ);
    let claims = Claims::new(claims);
    let token = match &key.private {
        Private::Rsa(rsa) => RingRs256.token(&header, &claims, &rsa.pair),
        Private::P256(private) => Es256.token(&header, &claims, private),
        Private::Ed25519(pair) => Ed25519.token(&header, &claims, &pair.sk),
    };
    match token {
        Ok(token) if token.ends_with('.') => Err(KeyError::Sign("the RSA signature failed".into())),
        Ok(token) => Ok(token),
        Err(err) => Err(KeyError::Sign(err.to_string())),
    }
}

fn algorithm(private: &Private) -> &'static str {
    match private {
        Private::Rsa(_) => "RS256",
        Private::P256(_) => "ES256",
        Private::Ed25519(_) => "EdDSA",
    }
}

fn load_pem(path: &Path) -> Result<Key, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let private = if let Ok(rsa) = rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(&pem))
    {
        let bits = rsa.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(KeyError::WeakRsa {
                path: path.to_owned(),
                bits,
            });
        }
        let der = rsa.to_pkcs8_der().map_err(|_| KeyError::Unrecognised {
            path: path.to_owned(),
        })?;
        let pair = RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(|err| KeyError::Ring {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
        let verifying = UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            pair.public().as_ref().to_vec(),
        );
        Private::Rsa(Box::new(RsaKey {
            pair,
            verifying,
            public: rsa.to_public_key(),
        }))
    } else if let Ok(ec) = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem) {
        Private::P256(ec)
    } else if let Ok(secret) = p256::SecretKey::from_sec1_pem(&pem) {
        Private::P256(secret.into())
    } else if let Ok(pair) = ed25519_compact::KeyPair::from_pem(&pem) {
        Private::Ed25519(pair)
    } else {
        return Err(KeyError::Unrecognised {
            path: path.to_owned(),
        });
    };
    Ok(key(private))
}

/// What the JWKS says of a key: its `kid` and the algorithm it signs with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub algorithm: &'static str,
}

impl Key {
    fn info(&self) -> KeyInfo {
        KeyInfo {
            kid: self.kid.clone(),
            algorithm: algorithm(&self.private),
        }
    }
}

/// The kinds of key the server signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// P-256 (ES256): small tokens, fast signing.
    P256,
    /// RSA 2048 (RS256), for verifiers that know nothing else.
    Rsa,
    /// Ed25519 (EdDSA).
    Ed25519,
}

/// Generates a key of `kind` into a new file at `path` (PKCS#8 PEM, readable by its owner only:
/// created 0600, never over an existing file), and describes it as the server will publish it.
pub fn generate(kind: KeyKind, path: &Path) -> Result<KeyInfo, KeyError> {
    let failed = |algorithm: &'static str, err: &dyn std::fmt::Display| KeyError::Generate {
        algorithm,
        reason: err.to_string(),
    };
    let pem: String = match kind {
        KeyKind::P256 => p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng)
            .to_pkcs8_pem(Default::default())
            .map_err(|err| failed("ES256", &err))?
            .to_string(),
        KeyKind::Rsa => rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, MIN_RSA_BITS)
            .map_err(|err| failed("RS256", &err))?
            .to_pkcs8_pem(Default::default())
            .map_err(|err| failed("RS256", &err))?
            .to_string(),
        KeyKind::Ed25519 => {
            let mut seed = [0u8; ed25519_compact::Seed::BYTES];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            ed25519_compact::KeyPair::try_from_seed(ed25519_compact::Seed::new(seed))
                .map_err(|err| failed("EdDSA", &err))?
                .sk
                .to_pem()
        }
    };
    write_private(path, pem.as_bytes())?;
    Ok(load_pem(path)?.info())
}

/// Creates `path` with `contents`, mode 0600, failing if it exists.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists {
            path: path.to_owned(),
        },
        _ => KeyError::Write {
            path: path.to_owned(),
            source,
        },
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
}

fn key(private: Private) -> Key {
    let jwk = match &private {
        Private::Rsa(key) => JsonWebKey::from(&key.public).into_owned_value(),
        Private::P256(key) => JsonWebKey::from(key.verifying_key()).into_owned_value(),
        Private::Ed25519(pair) => JsonWebKey::from(&pair.pk).into_owned_value(),
    };
    let (thumbprint, mut public_jwk) = jwk;
    let kid = URL_SAFE_NO_PAD.encode(thumbprint);
    if let Value::Object(fields) = &mut public_jwk {
        fields.insert("kid".into(), Value::String(kid.clone()));
        fields.insert("use".into(), Value::String("sig".into()));
        fields.insert("alg".into(), Value::String(algorithm(&private).into()));
    }
    Key {
        kid,
        private,
        public_jwk,
    }
}

/// A JWK's RFC 7638 SHA-256 thumbprint and its JSON form.
trait ThumbprintedValue {
    fn into_owned_value(self) -> (Vec<u8>, Value);
}

impl ThumbprintedValue for JsonWebKey<'_> {
    fn into_owned_value(self) -> (Vec<u8>, Value) {
        let thumbprint = self.thumbprint::<Sha256>().to_vec();
        (
            thumbprint,
            serde_json::to_value(&self).unwrap_or(Value::Null),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pem_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    #[tokio::test]
    async fn every_key_is_published_with_its_thumbprint_as_kid() {
        use rsa::pkcs8::EncodePrivateKey;
        let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let rsa_pem = pem_file(&rsa.to_pkcs8_pem(Default::default()).unwrap());
        let ec = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let ec_pem = pem_file(&ec.to_pkcs8_pem(Default::default()).unwrap());
        let ring = KeyRing::load(&[ec_pem.path().to_owned(), rsa_pem.path().to_owned()]).unwrap();
        let jwks = ring.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["alg"], "ES256");
        assert_eq!(keys[1]["alg"], "RS256");
        assert_eq!(
            keys[0]["kid"].as_str().unwrap().len(),
            43,
            "base64url SHA-256"
        );
        let token = ring.sign("at+jwt", Map::new()).await.unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (header["alg"].as_str(), header["typ"].as_str()),
            (Some("ES256"), Some("at+jwt"))
        );
        assert_eq!(header["kid"], keys[0]["kid"], "the first key signs");
        let mut claims = Map::new();
        claims.insert("exp".into(), Value::from(4_000_000_000i64));
        claims.insert("sub".into(), Value::from("alice"));
        let token = ring.sign("at+jwt", claims.clone()).await.unwrap();
        assert_eq!(ring.verify("at+jwt", &token).await, Some(claims));
        assert_eq!(ring.verify("id+jwt", &token).await, None, "another type");
        let other = KeyRing::ephemeral()
            .sign("at+jwt", Map::new())
            .await
            .unwrap();
        assert_eq!(
            ring.verify("at+jwt", &other).await,
            None,
            "another server's key"
        );
        let rsa_only = KeyRing::load(&[rsa_pem.path().to_owned()]).unwrap();
        let rsa_token = rsa_only.sign("at+jwt", Map::new()).await.unwrap();
        assert!(
            ring.verify("at+jwt", &rsa_token).await.is_some(),
            "a published older key verifies"
        );
        let independent = jwt_compact::alg::Rsa::rs256()
            .validator::<Map<String, Value>>(&rsa.to_public_key())
            .validate(&UntrustedToken::new(&rsa_token).unwrap());
        assert!(
            independent.is_ok(),
            "ring's RS256 verifies with the pure-Rust rsa crate"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_generated_key_is_private_never_overwrites_and_signs_as_described() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (kind, algorithm) in [
            (KeyKind::P256, "ES256"),
            (KeyKind::Rsa, "RS256"),
            (KeyKind::Ed25519, "EdDSA"),
        ] {
            let path = dir.path().join(format!("{algorithm}.pem"));
            let info = generate(kind, &path).unwrap();
            assert_eq!(info.algorithm, algorithm);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{algorithm}");
            let ring = KeyRing::load(std::slice::from_ref(&path)).unwrap();
            assert_eq!(ring.describe(), vec![info.clone()]);
            let token = ring.sign("at+jwt", Map::new()).await.unwrap();
            let header = UntrustedToken::new(&token).unwrap().header().clone();
            assert_eq!(header.key_id.as_deref(), Some(info.kid.as_str()));
            let before = std::fs::read(&path).unwrap();
            let err = generate(kind, &path).unwrap_err();
            assert!(matches!(err, KeyError::Exists { .. }), "{err}");
            assert!(err.to_string().contains("never overwritten"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), before, "the key is intact");
        }
        let err = generate(KeyKind::P256, &dir.path().join("no/such/dir.pem")).unwrap_err();
        assert!(matches!(err, KeyError::Write { .. }), "{err}");
    }

    #[test]
    fn a_weak_or_unknown_key_is_refused_by_path() {
        use rsa::pkcs8::EncodePrivateKey;
        let weak = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        let weak_pem = pem_file(&weak.to_pkcs8_pem(Default::default()).unwrap());
        let err = KeyRing::load(&[weak_pem.path().to_owned()]).err().unwrap();
        assert!(err.to_string().contains("1024"), "{err}");
        let junk = pem_file("-----BEGIN NOTHING-----\n-----END NOTHING-----\n");
        assert!(matches!(
            KeyRing::load(&[junk.path().to_owned()]),
            Err(KeyError::Unrecognised { .. })
        ));
        assert!(matches!(
            KeyRing::load(&["/nonexistent.pem".into()]),
            Err(KeyError::Read { .. })
        ));
    }
}

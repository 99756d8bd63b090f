//! Parsing a JWKS document into the public keys the filter verifies with.
//!
//! Keys the filter cannot or must not use (encryption keys, symmetric keys, short RSA moduli,
//! unknown curves) are skipped with a note rather than failing the whole set, because real
//! IdPs publish such keys next to their signing keys; a set with no usable key at all is an error.

use jwt_compact::alg::RsaPublicKey;
use jwt_compact::jwk::JsonWebKey;
use rsa::traits::PublicKeyParts;
use serde_json::Value;

use crate::algorithm::{JwsAlgorithm, KeyFamily};

/// RFC 7518 §3.3: RSA keys shorter than this must not be used.
const MIN_RSA_BITS: usize = 2048;

/// A verifying key of one of the supported families.
#[derive(Debug, Clone)]
pub enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_compact::PublicKey),
}

impl PublicKey {
    pub fn family(&self) -> KeyFamily {
        match self {
            Self::Rsa(_) => KeyFamily::Rsa,
            Self::P256(_) => KeyFamily::P256,
            Self::P384(_) => KeyFamily::P384,
            Self::Ed25519(_) => KeyFamily::Ed25519,
        }
    }
}

/// One usable key of a JWKS.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The `alg` the JWKS pins this key to, if any; a token must then use exactly it.
    pub alg: Option<JwsAlgorithm>,
    pub key: PublicKey,
}

/// The usable keys of one JWKS document.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

/// Why a JWKS document gave no keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is not a JSON object with a `keys` array: {0}")]
    NotAKeySet(String),
    #[error("the JWKS has no usable signing key ({})", skipped_summary(.0))]
    NoUsableKey(Vec<String>),
}

fn skipped_summary(skipped: &[String]) -> String {
    if skipped.is_empty() {
        "its `keys` array is empty".to_owned()
    } else {
        format!("skipped: {}", skipped.join("; "))
    }
}

impl KeySet {
    /// Parses a JWKS document, keeping every key the filter can verify with.
    pub fn from_json(document: &[u8]) -> Result<Self, JwksError> {
        let value: Value = serde_json::from_slice(document)
            .map_err(|err| JwksError::NotAKeySet(format!("invalid JSON: {err}")))?;
        Self::from_value(&value)
    }

    pub fn from_value(document: &Value) -> Result<Self, JwksError> {
        let entries = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JwksError::NotAKeySet("no `keys` array".to_owned()))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(key) => keys.push(key),
                Err(reason) => skipped.push(format!("key #{index}{}: {reason}", kid_label(entry))),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(skipped));
        }
        Ok(Self { keys })
    }

    /// Every key in the set.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// The key a token names with `kid`, or, for a token without `kid`, the only key of the set.
    pub fn select(&self, kid: Option<&str>) -> Option<&Jwk> {
        match kid {
            Some(kid) => self.keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn kid_label(entry: &Value) -> String {
    entry
        .get("kid")
        .and_then(Value::as_str)
        .map(|kid| format!(" (kid `{kid}`)"))
        .unwrap_or_default()
}

fn parse_key(entry: &Value) -> Result<Jwk, String> {
    let text = |field: &str| entry.get(field).and_then(Value::as_str);
    if let Some(usage) = text("use") {
        if usage != "sig" {
            return Err(format!("`use` is `{usage}`, not `sig`"));
        }
    }
    let alg = text("alg")
        .map(JwsAlgorithm::parse)
        .transpose()
        .map_err(|err| err.to_string())?;
    let jwk: JsonWebKey<'_> =
        serde_json::from_value(entry.clone()).map_err(|err| format!("not a public JWK: {err}"))?;
    let key = public_key(&jwk)?;
    if let Some(alg) = alg {
        if alg.key_family() != key.family() {
            return Err(format!("`alg` {alg} does not fit a {} key", key.family()));
        }
    }
    Ok(Jwk {
        kid: text("kid").map(str::to_owned),
        alg,
        key,
    })
}

fn public_key(jwk: &JsonWebKey<'_>) -> Result<PublicKey, String> {
    match jwk {
        JsonWebKey::Rsa { .. } => {
            let key = RsaPublicKey::try_from(jwk).map_err(|err| format!("bad RSA key: {err}"))?;
            let bits = key.n().bits();
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA modulus of {bits} bits is under {MIN_RSA_BITS}"
                ));
            }
            Ok(PublicKey::Rsa(key))
        }
        JsonWebKey::EllipticCurve { curve, x, y, .. } => match curve.as_ref() {
            "P-256" => p256::ecdsa::VerifyingKey::try_from(jwk)
                .map(PublicKey::P256)
                .map_err(|err| format!("bad P-256 key: {err}")),
            "P-384" => p384_key(x, y).map(PublicKey::P384),
            other => Err(format!(
                "curve `{other}` is not supported (use P-256 or P-384)"
            )),
        },
        JsonWebKey::KeyPair { curve, .. } if curve == "Ed25519" => {
            ed25519_compact::PublicKey::try_from(jwk)
                .map(PublicKey::Ed25519)
                .map_err(|err| format!("bad Ed25519 key: {err}"))
        }
        JsonWebKey::KeyPair { curve, .. } => Err(format!("OKP curve `{curve}` is not supported")),
        JsonWebKey::Symmetric { .. } => Err("symmetric (`oct`) keys are never used".to_owned()),
        _ => Err("unsupported key type".to_owned()),
    }
}

fn p384_key(x: &[u8], y: &[u8]) -> Result<p384::ecdsa::VerifyingKey, String> {
    if x.len() != 48 || y.len() != 48 {
        return Err("P-384 coordinates must be 48 bytes each".to_owned());
    }
    let mut sec1 = Vec::with_capacity(97);
    sec1.push(0x04);
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    let point =
        p384::EncodedPoint::from_bytes(&sec1).map_err(|err| format!("bad P-384 point: {err}"))?;
    p384::ecdsa::VerifyingKey::from_encoded_point(&point)
        .map_err(|err| format!("bad P-384 key: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_keys;
    use serde_json::json;

    #[test]
    fn keeps_every_supported_family() {
        let set = KeySet::from_value(&json!({"keys": [
            test_keys::rsa().public_jwk("r1"),
            test_keys::p256().public_jwk("e1"),
            test_keys::p384().public_jwk("e2"),
            test_keys::ed25519().public_jwk("o1"),
        ]}))
        .unwrap();
        let families: Vec<_> = set.keys().iter().map(|k| k.key.family()).collect();
        assert_eq!(
            families,
            [
                KeyFamily::Rsa,
                KeyFamily::P256,
                KeyFamily::P384,
                KeyFamily::Ed25519
            ]
        );
    }

    #[test]
    fn skips_unusable_keys_but_keeps_the_rest() {
        let mut enc = test_keys::rsa().public_jwk("enc");
        enc["use"] = json!("enc");
        let set = KeySet::from_value(&json!({"keys": [
            enc,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            test_keys::p256().public_jwk("sig"),
        ]}))
        .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            set.select(Some("sig")).map(|k| k.key.family()),
            Some(KeyFamily::P256)
        );
        assert!(set.select(Some("hmac")).is_none());
    }

    #[test]
    fn a_set_with_nothing_usable_says_why() {
        let err =
            KeySet::from_value(&json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}))
                .unwrap_err();
        assert!(err.to_string().contains("kid `h`"), "{err}");
        assert!(err.to_string().contains("symmetric"), "{err}");
        assert!(matches!(
            KeySet::from_json(b"[]"),
            Err(JwksError::NotAKeySet(_))
        ));
        assert!(matches!(
            KeySet::from_json(b"{\"keys\": []}"),
            Err(JwksError::NoUsableKey(_))
        ));
        assert!(matches!(
            KeySet::from_json(b"not json"),
            Err(JwksError::NotAKeySet(_))
        ));
    }

    #[test]
    fn short_rsa_keys_are_refused() {
        let err = KeySet::from_value(&json!({"keys": [test_keys::rsa_1024().public_jwk("weak")]}))
            .unwrap_err();
        assert!(err.to_string().contains("1024 bits"), "{err}");
    }

    #[test]
    fn an_alg_that_does_not_fit_the_key_is_refused() {
        let mut jwk = test_keys::rsa().public_jwk("r");
        jwk["alg"] = json!("ES256");
        assert!(KeySet::from_value(&json!({"keys": [jwk]})).is_err());
    }

    #[test]
    fn a_token_without_kid_only_matches_a_single_key_set() {
        let one = KeySet::from_value(&json!({"keys": [test_keys::rsa().public_jwk("a")]})).unwrap();
        assert!(one.select(None).is_some());
        let two = KeySet::from_value(&json!({"keys": [
            test_keys::rsa().public_jwk("a"), test_keys::p256().public_jwk("b")
        ]}))
        .unwrap();
        assert!(two.select(None).is_none());
    }
}

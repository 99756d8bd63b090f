//! Fixed key pairs and a token minter for the unit tests (host and wasm alike).
//!
//! The keys are checked in (`testdata/`) rather than generated, because RSA key generation in an
//! unoptimised wasm build takes long enough to dominate the test run.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};
use rsa::pkcs8::DecodePrivateKey;
use serde_json::{json, Value};

use crate::es384::Es384;

pub enum TestKey {
    Rsa(rsa::RsaPrivateKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_compact::KeyPair),
}

pub fn rsa() -> TestKey {
    TestKey::Rsa(
        rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../testdata/rsa2048.pem")).unwrap(),
    )
}

pub fn rsa_b() -> TestKey {
    TestKey::Rsa(
        rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../testdata/rsa2048-b.pem")).unwrap(),
    )
}

pub fn rsa_1024() -> TestKey {
    TestKey::Rsa(
        rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../testdata/rsa1024.pem")).unwrap(),
    )
}

pub fn p256() -> TestKey {
    TestKey::P256(
        p256::ecdsa::SigningKey::from_pkcs8_pem(include_str!("../testdata/p256.pem")).unwrap(),
    )
}

pub fn p384() -> TestKey {
    TestKey::P384(
        p384::ecdsa::SigningKey::from_pkcs8_pem(include_str!("../testdata/p384.pem")).unwrap(),
    )
}

pub fn ed25519() -> TestKey {
    let pem = include_str!("../testdata/ed25519.pem");
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body).unwrap();
    // A PKCS#8 Ed25519 key ends with its 32-byte seed.
    let seed = ed25519_compact::Seed::from_slice(&der[der.len() - 32..]).unwrap();
    TestKey::Ed25519(ed25519_compact::KeyPair::from_seed(seed))
}

impl TestKey {
    /// The public half as a JWK with `kid`.
    pub fn public_jwk(&self, kid: &str) -> Value {
        let mut jwk = match self {
            Self::Rsa(key) => serde_json::to_value(JsonWebKey::from(&key.to_public_key())).unwrap(),
            Self::P256(key) => serde_json::to_value(JsonWebKey::from(key.verifying_key())).unwrap(),
            Self::P384(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC", "crv": "P-384",
                    "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                    "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
                })
            }
            Self::Ed25519(pair) => serde_json::to_value(JsonWebKey::from(&pair.pk)).unwrap(),
        };
        jwk["kid"] = json!(kid);
        jwk
    }

    /// The DER bytes of the RSA public key, as an attacker would use them for an HMAC secret.
    pub fn public_key_bytes(&self) -> Vec<u8> {
        use rsa::pkcs8::EncodePublicKey;
        match self {
            Self::Rsa(key) => key.to_public_key().to_public_key_der().unwrap().into_vec(),
            _ => unimplemented!("only RSA keys are used for confusion tests"),
        }
    }

    /// Signs `claims` under `header` (which must name `alg`) with this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let alg = header["alg"].as_str().unwrap();
        let message = signing_input(header, claims);
        let signature: Vec<u8> = match self {
            Self::Rsa(key) => Rsa::with_name(alg)
                .sign(key, message.as_bytes())
                .as_bytes()
                .into_owned(),
            Self::P256(key) => Es256.sign(key, message.as_bytes()).as_bytes().into_owned(),
            Self::P384(key) => Es384.sign(key, message.as_bytes()).as_bytes().into_owned(),
            Self::Ed25519(pair) => Ed25519
                .sign(&pair.sk, message.as_bytes())
                .as_bytes()
                .into_owned(),
        };
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// An HS256 token whose secret is `secret`: the shape of an algorithm-confusion attack.
pub fn sign_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let message = signing_input(header, claims);
    let signature = Hs256.sign(&Hs256Key::new(secret), message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()))
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

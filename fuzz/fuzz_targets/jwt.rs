//! `verify::verify` on arbitrary tokens, and on valid tokens (signed here with the unit tests'
//! throw-away keys, filter/testdata) with their signature or text mutated.
//!
//! Input: `[mode] [token] rest`. Mode 0: `rest` is the token, as text. Mode 1: valid token
//! number `token`, its decoded signature edited by the ops in `rest` (3 bytes each: op, position,
//! value) and encoded again. Mode 2: the same ops edit the token's text instead.
//!
//! Never panics; never accepts a token whose signature bytes differ from the signature its
//! key made over exactly that header and payload.
#![no_main]

use std::sync::OnceLock;

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};
use libfuzzer_sys::fuzz_target;
use mcp_mesh_auth_filter::es384::Es384;
use mcp_mesh_auth_filter::jwks::KeySet;
use mcp_mesh_auth_filter::verify::{verify, IssuerKeys, TokenPolicy};
use p256::pkcs8::DecodePrivateKey;
use serde_json::{json, Value};

const ISS: &str = "https://auth.example.com";
const AUD: &str = "https://mcp.example.com/mcp";
const NOW: i64 = 1_800_000_000;

struct Fixture {
    keys: KeySet,
    policy: TokenPolicy,
    /// Valid tokens: `(signing input, signature bytes, token)`.
    tokens: Vec<(String, Vec<u8>, String)>,
}

/// Reads the signature the way a lenient decoder would: padding or not, trailing bits or not,
/// so that a re-spelling of the same bytes is not mistaken for a changed signature.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rsa = rsa::RsaPrivateKey::from_pkcs8_pem(include_str!(
            "../../filter/testdata/rsa2048.pem"
        ))
        .unwrap();
        let p256 = p256::ecdsa::SigningKey::from_pkcs8_pem(include_str!(
            "../../filter/testdata/p256.pem"
        ))
        .unwrap();
        let p384 = p384::ecdsa::SigningKey::from_pkcs8_pem(include_str!(
            "../../filter/testdata/p384.pem"
        ))
        .unwrap();
        let pem = include_str!("../../filter/testdata/ed25519.pem");
        let der = STANDARD
            .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .unwrap();
        // A PKCS#8 Ed25519 key ends with its 32-byte seed.
        let seed = ed25519_compact::Seed::from_slice(&der[der.len() - 32..]).unwrap();
        let ed = ed25519_compact::KeyPair::from_seed(seed);

        let with_kid = |mut jwk: Value, kid: &str| {
            jwk["kid"] = json!(kid);
            jwk
        };
        let p384_point = p384.verifying_key().to_encoded_point(false);
        let jwks = json!({"keys": [
            with_kid(serde_json::to_value(JsonWebKey::from(&rsa.to_public_key())).unwrap(), "rsa"),
            with_kid(serde_json::to_value(JsonWebKey::from(p256.verifying_key())).unwrap(), "p256"),
            {"kty": "EC", "crv": "P-384", "kid": "p384",
             "x": URL_SAFE_NO_PAD.encode(p384_point.x().unwrap()),
             "y": URL_SAFE_NO_PAD.encode(p384_point.y().unwrap())},
            with_kid(serde_json::to_value(JsonWebKey::from(&ed.pk)).unwrap(), "ed"),
        ]});
        let keys = KeySet::from_value(&jwks).unwrap();
        let policy = TokenPolicy {
            audiences: vec![AUD.to_owned()],
            clock_skew_seconds: 60,
            max_token_bytes: 8192,
        };

        let claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 300,
                            "iat": NOW - 10, "groups": ["mcp-developers"],
                            "scope": "mcp:tools mcp:read"});
        let mut tokens = Vec::new();
        for (alg, kid) in [
            ("RS256", "rsa"),
            ("RS512", "rsa"),
            ("PS256", "rsa"),
            ("ES256", "p256"),
            ("ES384", "p384"),
            ("EdDSA", "ed"),
        ] {
            let header = json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
            let input = signing_input(&header, &claims);
            let message = input.as_bytes();
            let signature: Vec<u8> = match alg {
                "ES256" => Es256.sign(&p256, message).as_bytes().into_owned(),
                "ES384" => Es384.sign(&p384, message).as_bytes().into_owned(),
                "EdDSA" => Ed25519.sign(&ed.sk, message).as_bytes().into_owned(),
                _ => Rsa::with_name(alg).sign(&rsa, message).as_bytes().into_owned(),
            };
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature));
            tokens.push((input, signature, token));
        }
        let fixture = Fixture { keys, policy, tokens };
        for (_, _, token) in &fixture.tokens {
            if let Err(err) = check(&fixture, token) {
                panic!("fixture token refused ({err}): {token}");
            }
        }
        fixture
    })
}

fn check(
    fixture: &Fixture,
    token: &str,
) -> Result<mcp_mesh_auth_filter::verify::VerifiedToken, mcp_mesh_auth_filter::rejection::Rejection>
{
    verify(token, &fixture.policy, NOW, |iss| {
        if iss == ISS {
            IssuerKeys::Loaded(&fixture.keys)
        } else if iss.starts_with(ISS) {
            IssuerKeys::NotLoaded
        } else {
            IssuerKeys::Untrusted
        }
    })
}

/// An accepted token is one of the fixture's: same signed text, same signature bytes.
fn assert_genuine(fixture: &Fixture, token: &str) {
    let (input, signature) = token.rsplit_once('.').expect("an accepted token has a signature");
    let signature = LENIENT
        .decode(signature)
        .unwrap_or_else(|err| panic!("accepted a signature that is not base64url ({err}): {token}"));
    let genuine = fixture
        .tokens
        .iter()
        .any(|(good_input, good_signature, _)| good_input == input && *good_signature == signature);
    assert!(genuine, "accepted a token the keys never signed: {token}");
}

/// Applies the edits in `ops` (3 bytes each) to `bytes`.
fn edit(bytes: &mut Vec<u8>, ops: &[u8], alphabet: Option<&[u8]>) {
    for op in ops.chunks_exact(3) {
        let (kind, at, value) = (op[0] % 6, op[1] as usize, op[2]);
        let value = match alphabet {
            Some(alphabet) => alphabet[value as usize % alphabet.len()],
            None => value,
        };
        let len = bytes.len();
        match kind {
            0 if len > 0 => bytes[at % len] ^= value.max(1),
            1 if len > 0 => bytes[at % len] = value,
            2 => bytes.insert(at % (len + 1), value),
            3 if len > 0 => {
                bytes.remove(at % len);
            }
            4 => bytes.truncate(at % (len + 1)),
            5 if len > 0 => {
                // Swap two bytes.
                let other = (at + value as usize) % len;
                bytes.swap(at % len, other);
            }
            _ => {}
        }
    }
}

const TEXT_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \t\"{}:,";

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            if check(fixture, &token).is_ok() {
                assert_genuine(fixture, &token);
            }
        }
        1 => {
            let Some((&which, ops)) = rest.split_first() else {
                return;
            };
            let (input, signature, _) = &fixture.tokens[which as usize % fixture.tokens.len()];
            let mut changed = signature.clone();
            edit(&mut changed, ops, None);
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&changed));
            let verdict = check(fixture, &token);
            if changed == *signature {
                assert!(verdict.is_ok(), "the genuine token was refused: {verdict:?}");
            } else {
                assert!(verdict.is_err(), "accepted a changed signature: {token}");
            }
        }
        _ => {
            let Some((&which, ops)) = rest.split_first() else {
                return;
            };
            let (_, _, token) = &fixture.tokens[which as usize % fixture.tokens.len()];
            let mut text = token.clone().into_bytes();
            edit(&mut text, ops, Some(TEXT_ALPHABET));
            let token = String::from_utf8(text).expect("edits keep ASCII");
            if check(fixture, &token).is_ok() {
                assert_genuine(fixture, &token);
            }
        }
    }
});

//! `ES384` for `jwt-compact`, which ships ES256 but not ES384.
//!
//! Okta and Entra ID can both be configured to sign with P-384, so the filter plugs the `p384`
//! crate into `jwt-compact`'s `Algorithm` trait and keeps one verification path for every `alg`.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

/// ECDSA over P-384 with SHA-384 (RFC 7518 §3.4).
#[derive(Debug, Default, Clone, Copy)]
pub struct Es384;

/// A fixed-size `r || s` ECDSA signature, as JWS encodes it.
#[derive(Debug)]
pub struct Es384Signature(Signature);

impl AlgorithmSignature for Es384Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(96);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Signature::from_slice(slice)
            .map(Self)
            .map_err(|err| anyhow::anyhow!("malformed ES384 signature: {err}"))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

impl Algorithm for Es384 {
    type SigningKey = SigningKey;
    type VerifyingKey = VerifyingKey;
    type Signature = Es384Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES384")
    }

    fn sign(&self, signing_key: &SigningKey, message: &[u8]) -> Es384Signature {
        Es384Signature(signing_key.sign(message))
    }

    fn verify_signature(
        &self,
        signature: &Es384Signature,
        verifying_key: &VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key.verify(message, &signature.0).is_ok()
    }
}

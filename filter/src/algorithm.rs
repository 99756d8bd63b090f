//! The JWS algorithms the filter accepts, and the ones it refuses on principle.
//!
//! The `alg` header is attacker-controlled, so it is parsed into a closed enum before any key is
//! touched: HMAC algorithms would let a public key be used as a shared secret (algorithm
//! confusion) and `none` carries no signature at all, so both are refused whatever the JWKS says.

use std::fmt;

/// An asymmetric JWS algorithm the filter can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsAlgorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

/// Why an `alg` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    #[error("algorithm `{0}` is refused: unsigned and symmetric (HMAC) tokens are never accepted")]
    Refused(String),
    #[error("algorithm `{0}` is not supported (use RS256/384/512, PS256/384/512, ES256, ES384 or EdDSA)")]
    Unsupported(String),
}

/// The family of key an algorithm needs; an `alg` must fit the key it is verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl JwsAlgorithm {
    /// Parses a JOSE `alg` value.
    pub fn parse(name: &str) -> Result<Self, AlgorithmError> {
        Ok(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "EdDSA" => Self::EdDsa,
            other
                if other.eq_ignore_ascii_case("none")
                    || other.to_ascii_uppercase().starts_with("HS") =>
            {
                return Err(AlgorithmError::Refused(other.to_owned()))
            }
            other => return Err(AlgorithmError::Unsupported(other.to_owned())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }

    pub fn key_family(self) -> KeyFamily {
        match self {
            Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512 => {
                KeyFamily::Rsa
            }
            Self::Es256 => KeyFamily::P256,
            Self::Es384 => KeyFamily::P384,
            Self::EdDsa => KeyFamily::Ed25519,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for KeyFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "RSA",
            Self::P256 => "EC P-256",
            Self::P384 => "EC P-384",
            Self::Ed25519 => "OKP Ed25519",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_name_round_trips() {
        for name in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ] {
            assert_eq!(JwsAlgorithm::parse(name).map(JwsAlgorithm::name), Ok(name));
        }
    }

    #[test]
    fn none_and_hmac_are_refused_in_any_spelling() {
        for name in ["none", "None", "NONE", "HS256", "HS384", "HS512", "hs256"] {
            assert!(
                matches!(JwsAlgorithm::parse(name), Err(AlgorithmError::Refused(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_algorithms_are_unsupported() {
        assert!(matches!(
            JwsAlgorithm::parse("ES512"),
            Err(AlgorithmError::Unsupported(_))
        ));
        assert!(matches!(
            JwsAlgorithm::parse("ES256K"),
            Err(AlgorithmError::Unsupported(_))
        ));
    }
}

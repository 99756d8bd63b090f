//! Why a request was not let through, in the words the client, the log and the counters use.

use crate::algorithm::AlgorithmError;
use crate::verify::UnsupportedHeader;

/// A reason to refuse a request at the authentication step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no bearer token in the Authorization header")]
    MissingToken,
    #[error(
        "access tokens in the query string are not accepted; send `Authorization: Bearer <token>`"
    )]
    TokenInQuery,
    #[error("the Authorization header must be one `Bearer <token>` value")]
    BadAuthorizationHeader,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("{0}")]
    AlgorithmRefused(AlgorithmError),
    #[error("{0}")]
    UnsupportedHeader(UnsupportedHeader),
    #[error("token type `{0}` is not accepted (expected no `typ`, `JWT` or `at+jwt`)")]
    TypeNotAccepted(String),
    #[error("issuer `{0}` is not trusted")]
    UntrustedIssuer(String),
    #[error("no signing key `{}` for this issuer", .0.as_deref().unwrap_or("(token has no kid)"))]
    UnknownKey(Option<String>),
    #[error("algorithm {alg} does not fit key `{kid}`")]
    KeyMismatch { alg: String, kid: String },
    #[error("signature verification failed")]
    BadSignature,
    #[error("the token has no `exp` claim")]
    MissingExpiry,
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's audience is not this resource")]
    WrongAudience,
    #[error("the token lacks the required scope `{}`", .0.join(" "))]
    InsufficientScope(Vec<String>),
    #[error("the signing keys of issuer `{0}` are not available yet")]
    KeysUnavailable(String),
}

impl Rejection {
    /// A short stable name: the counter suffix and the `reason=` field of the log line.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::TokenInQuery => "token_in_query",
            Self::BadAuthorizationHeader => "bad_authorization_header",
            Self::Malformed(_) => "malformed",
            Self::AlgorithmRefused(_) => "algorithm_refused",
            Self::UnsupportedHeader(_) => "unsupported_header",
            Self::TypeNotAccepted(_) => "bad_type",
            Self::UntrustedIssuer(_) => "untrusted_issuer",
            Self::UnknownKey(_) => "unknown_key",
            Self::KeyMismatch { .. } => "key_mismatch",
            Self::BadSignature => "bad_signature",
            Self::MissingExpiry => "missing_exp",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::KeysUnavailable(_) => "keys_unavailable",
        }
    }

    /// Every reason, so that a counter can be defined for each up front.
    pub const ALL_REASONS: [&'static str; 17] = [
        "missing_token",
        "token_in_query",
        "bad_authorization_header",
        "malformed",
        "algorithm_refused",
        "unsupported_header",
        "bad_type",
        "untrusted_issuer",
        "unknown_key",
        "key_mismatch",
        "bad_signature",
        "missing_exp",
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "insufficient_scope",
        "keys_unavailable",
    ];

    /// Whether the client presented a token, which decides if the challenge carries an error code
    /// (RFC 6750 §3.1: a request without credentials gets a bare challenge).
    pub fn token_was_presented(&self) -> bool {
        !matches!(self, Self::MissingToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once() {
        let all = [
            Rejection::MissingToken,
            Rejection::TokenInQuery,
            Rejection::BadAuthorizationHeader,
            Rejection::Malformed(String::new()),
            Rejection::AlgorithmRefused(AlgorithmError::Refused("none".into())),
            Rejection::UnsupportedHeader(UnsupportedHeader::MalformedCrit(String::new())),
            Rejection::TypeNotAccepted(String::new()),
            Rejection::UntrustedIssuer(String::new()),
            Rejection::UnknownKey(None),
            Rejection::KeyMismatch {
                alg: String::new(),
                kid: String::new(),
            },
            Rejection::BadSignature,
            Rejection::MissingExpiry,
            Rejection::Expired,
            Rejection::NotYetValid,
            Rejection::WrongAudience,
            Rejection::InsufficientScope(vec![]),
            Rejection::KeysUnavailable(String::new()),
        ];
        let reasons: Vec<_> = all.iter().map(Rejection::reason).collect();
        assert_eq!(reasons, Rejection::ALL_REASONS);
    }
}

//! The errors the protocol answers with (RFC 6749 §4.1.2.1 and §5.2, RFC 7591 §3.2.2, RFC 8707,
//! RFC 7009, RFC 6750), as types: a code is a variant, never a string literal, and each error
//! carries a description safe to show a client (no internal detail, no stored value).

use std::fmt;

/// An OAuth error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    UnsupportedTokenType,
    InvalidScope,
    InvalidTarget,
    AccessDenied,
    InvalidClientMetadata,
    InvalidRedirectUri,
    SlowDown,
    ServerError,
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The code as it goes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::AccessDenied => "access_denied",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::SlowDown => "slow_down",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status of a direct answer (token, registration, revocation endpoints).
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidClient => 401,
            Self::SlowDown => 429,
            Self::ServerError => 500,
            Self::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: a code and a description for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidScope, description)
    }

    pub fn invalid_target(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidTarget, description)
    }

    /// A storage or signing failure: the client learns to retry, the log gets the cause.
    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            "the server could not complete the request; try again",
        )
    }

    /// The database is unreachable: one answer for every path (503, retry later).
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "the server's storage is unavailable; try again shortly",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_statuses_the_rfcs_name() {
        assert_eq!(ErrorCode::InvalidClient.status(), 401);
        assert_eq!(ErrorCode::InvalidGrant.status(), 400);
        assert_eq!(ErrorCode::TemporarilyUnavailable.status(), 503);
        assert_eq!(
            OAuthError::invalid_scope("x").to_string(),
            "invalid_scope: x"
        );
    }
}

//! Where users log in: the built-in `dev` users file, an OpenID provider, or a plain OAuth 2.0
//! provider — each behind the one `IdentityProvider` trait, so the login, callback and refresh
//! handlers neither know nor match on which it is.

pub mod dev;
pub mod enterprise;
pub mod machine;
pub mod oauth2;
pub mod oidc;

use std::future::Future;
use std::pin::Pin;

use std::path::PathBuf;

use serde::Deserialize;

use crate::oauth::grant::User;
use oauth2::OAuth2Settings;
use oidc::OidcSettings;
use oidc::{Pending, UpstreamAccess, UpstreamError, UpstreamTokens};

/// A boxed future, so that the trait can be used as `dyn IdentityProvider` (one provider is
/// chosen by the configuration at start).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a login starts.
pub enum Start {
    /// Our own username and password form (the `dev` users file).
    Form,
    /// The provider's authorization URL, and the secrets its callback needs.
    Redirect { url: String, pending: Pending },
}

/// What a username and password typed into our own form find.
pub enum Password {
    Accepted(User),
    Refused,
    /// This provider signs users in elsewhere: our form is not offered.
    NotOffered,
}

/// One identity provider.
pub trait IdentityProvider: Send + Sync {
    /// Whether users sign in at another server and come back to `/oauth/callback` with an
    /// upstream session that each of our refreshes re-checks.
    fn is_federated(&self) -> bool;

    fn start(&self) -> BoxFuture<'_, Result<Start, UpstreamError>>;

    /// Whether a login can start: what `/readyz` reports. Providers whose endpoints are all in
    /// the configuration (checked at start) are ready; an OpenID provider is once its discovery
    /// has been fetched.
    fn readiness(&self) -> BoxFuture<'_, Result<(), UpstreamError>> {
        Box::pin(async { Ok(()) })
    }

    /// A username and password from our login form.
    fn check_password(&self, _username: &str, _password: &str) -> Password {
        Password::NotOffered
    }

    /// The callback's code exchanged for the user and the upstream session to keep.
    fn finish<'a>(
        &'a self,
        code: &'a str,
        nonce: &'a str,
        pkce_verifier: &'a str,
    ) -> BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>>;

    /// The user of a grant family re-checked with its upstream session: who they are now (and
    /// in which groups), and the session to keep from now on.
    fn refresh<'a>(
        &'a self,
        tokens: &'a UpstreamTokens,
        previous: &'a User,
    ) -> BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>>;

    /// The provider's access token for a backend that trusts it (token exchange), for the user
    /// whose session `tokens` is, asking `resource` (RFC 8707) and `scopes` if given; and the
    /// session to keep from now on. Only an OpenID provider issues them (the configuration
    /// allows `issuer: upstream` with no other).
    fn backend_token<'a>(
        &'a self,
        _tokens: &'a UpstreamTokens,
        _resource: Option<&'a str>,
        _scopes: &'a [String],
    ) -> BoxFuture<'a, Result<(UpstreamAccess, UpstreamTokens), UpstreamError>> {
        Box::pin(async { Err(UpstreamError::NotFederated) })
    }
}

/// A provider users are sent to, as the token endpoint sees it: its refresh, and its tokens
/// for backends.
#[derive(Clone, Copy)]
pub struct Federated<'a>(pub &'a dyn IdentityProvider);

impl Federated<'_> {
    pub async fn refresh(
        &self,
        tokens: &UpstreamTokens,
        previous: &User,
    ) -> Result<(User, UpstreamTokens), UpstreamError> {
        self.0.refresh(tokens, previous).await
    }

    pub async fn backend_token(
        &self,
        tokens: &UpstreamTokens,
        resource: Option<&str>,
        scopes: &[String],
    ) -> Result<(UpstreamAccess, UpstreamTokens), UpstreamError> {
        self.0.backend_token(tokens, resource, scopes).await
    }
}

/// The user a refresh found, checked to be the family's: a refresh that names no subject (no
/// new ID token, say) keeps the family's; one that names another is refused as an ended
/// session, so another person's groups are never merged into this family.
pub fn same_person(previous: &User, mut user: User) -> Result<User, UpstreamError> {
    if user.subject.is_empty() {
        user.subject.clone_from(&previous.subject);
    } else if user.subject != previous.subject {
        return Err(UpstreamError::SessionEnded(
            "the refreshed session names another subject".into(),
        ));
    }
    Ok(user)
}

/// Where users log in (the `upstream` section of the configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum UpstreamConfig {
    /// A built-in login page over a users file: for the local stack and tests only.
    Dev { users_file: PathBuf },
    /// An OpenID provider: Okta (custom authorization server), Entra ID, any OIDC issuer.
    Oidc(Box<OidcSettings>),
    /// A plain OAuth 2.0 provider: explicit endpoints, the user from userinfo.
    OAuth2(Box<OAuth2Settings>),
}

/// The provider the configuration names, if any.
pub fn from_config(
    upstream: Option<&UpstreamConfig>,
    issuer: &str,
) -> anyhow::Result<Option<Box<dyn IdentityProvider>>> {
    Ok(match upstream {
        Some(UpstreamConfig::Dev { users_file }) => {
            tracing::warn!("the `dev` upstream is for local use and tests, not production");
            Some(Box::new(dev::DevUsers::load(users_file)?))
        }
        Some(UpstreamConfig::Oidc(settings)) => Some(Box::new(
            oidc::OidcUpstream::new(settings.as_ref().clone(), issuer)
                .map_err(anyhow::Error::msg)?,
        )),
        Some(UpstreamConfig::OAuth2(settings)) => Some(Box::new(
            oauth2::OAuth2Upstream::new(settings.as_ref().clone(), issuer)
                .map_err(anyhow::Error::msg)?,
        )),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(subject: &str, groups: &[&str]) -> User {
        User {
            subject: subject.into(),
            email: None,
            name: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            roles: vec![],
        }
    }

    #[test]
    fn a_refresh_naming_another_subject_ends_the_session_and_none_keeps_ours() {
        let alice = user("alice", &["devs"]);
        let kept = same_person(&alice, user("", &["ops"])).unwrap();
        assert_eq!(
            (kept.subject.as_str(), kept.groups),
            ("alice", vec!["ops".to_owned()])
        );
        let err = same_person(&alice, user("mallory", &["admins"])).unwrap_err();
        assert!(err.ends_session(), "{err}");
    }
}

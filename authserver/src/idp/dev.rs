//! Where users log in. The built-in `dev` upstream is a login page over a users file, for the
//! local stack and tests; real deployments federate to an OpenID provider.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::idp::oidc::{UpstreamError as ProviderError, UpstreamTokens};
use crate::idp::{BoxFuture, IdentityProvider, Password, Start};
use crate::oauth::grant::User;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("users file {path}: {message}")]
    UsersFile { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<DevUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevUser {
    username: String,
    password: String,
    email: Option<String>,
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// The users of the `dev` upstream.
pub struct DevUsers {
    users: HashMap<String, DevUser>,
}

impl DevUsers {
    pub fn load(path: &Path) -> Result<Self, UpstreamError> {
        let fail = |message: String| UpstreamError::UsersFile {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
        let file: UsersFile = serde_yaml::from_str(&text).map_err(|err| fail(err.to_string()))?;
        let mut users = HashMap::new();
        for user in file.users {
            if user.username.is_empty() || user.password.is_empty() {
                return Err(fail("every user needs a username and a password".into()));
            }
            if users.contains_key(&user.username) {
                return Err(fail(format!("user `{}` is listed twice", user.username)));
            }
            users.insert(user.username.clone(), user);
        }
        Ok(Self { users })
    }

    /// The user, if `password` is theirs. The subject is stable: `dev:<username>`.
    fn authenticate(&self, username: &str, password: &str) -> Option<User> {
        let user = self.users.get(username)?;
        let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let expected: [u8; 32] = Sha256::digest(user.password.as_bytes()).into();
        if given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
        {
            return None;
        }
        Some(User {
            subject: format!("dev:{}", user.username),
            email: user.email.clone(),
            name: user.name.clone(),
            groups: user.groups.clone(),
            roles: user.roles.clone(),
        })
    }
}

/// Our own form over the users file; there is no upstream to call back from or re-check.
impl IdentityProvider for DevUsers {
    fn is_federated(&self) -> bool {
        false
    }

    fn start(&self) -> BoxFuture<'_, Result<Start, ProviderError>> {
        Box::pin(async { Ok(Start::Form) })
    }

    fn check_password(&self, username: &str, password: &str) -> Password {
        match self.authenticate(username, password) {
            Some(user) => Password::Accepted(user),
            None => Password::Refused,
        }
    }

    fn finish<'a>(
        &'a self,
        _code: &'a str,
        _nonce: &'a str,
        _pkce_verifier: &'a str,
    ) -> BoxFuture<'a, Result<(User, UpstreamTokens), ProviderError>> {
        Box::pin(async { Err(ProviderError::NotFederated) })
    }

    fn refresh<'a>(
        &'a self,
        _tokens: &'a UpstreamTokens,
        _previous: &'a User,
    ) -> BoxFuture<'a, Result<(User, UpstreamTokens), ProviderError>> {
        Box::pin(async { Err(ProviderError::NotFederated) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn users(yaml: &str) -> Result<DevUsers, UpstreamError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(yaml.as_bytes()).unwrap();
        DevUsers::load(file.path())
    }

    #[test]
    fn a_user_logs_in_with_their_password_only() {
        let users = users("users:\n- {username: alice, password: s3cret, email: a@x, name: Alice, groups: [mcp-developers]}\n").unwrap();
        let alice = users.authenticate("alice", "s3cret").unwrap();
        assert_eq!(
            (alice.subject.as_str(), alice.groups.as_slice()),
            ("dev:alice", &["mcp-developers".to_owned()][..])
        );
        assert!(users.authenticate("alice", "wrong").is_none());
        assert!(users.authenticate("mallory", "s3cret").is_none());
    }

    #[tokio::test]
    async fn the_dev_provider_signs_in_with_its_own_form_only() {
        let users = users("users:\n- {username: a, password: p}\n").unwrap();
        assert!(!users.is_federated());
        assert!(matches!(users.start().await, Ok(Start::Form)));
        assert!(
            matches!(users.check_password("a", "p"), Password::Accepted(u) if u.subject == "dev:a")
        );
        assert!(matches!(users.check_password("a", "x"), Password::Refused));
        assert!(matches!(
            users.finish("code", "nonce", "verifier").await,
            Err(ProviderError::NotFederated)
        ));
    }

    #[test]
    fn a_bad_users_file_names_itself() {
        assert!(users("users:\n- {username: a, password: ''}\n")
            .err()
            .unwrap()
            .to_string()
            .contains("password"));
        assert!(
            users("users:\n- {username: a, password: x}\n- {username: a, password: y}\n").is_err()
        );
        assert!(users("people: []\n").is_err());
    }
}

//! Federating the login to a plain OAuth 2.0 provider (no OpenID Connect): explicit endpoints,
//! the user from a userinfo endpoint through a field mapping. The `oauth2` crate does PKCE, state
//! and the token requests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, Scope,
    TokenResponse, TokenUrl,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::idp::oidc::{
    default_redirect_uri, error_chain, http_client, lookup, map_token_error, read_secret, strings,
    verified_email, AuthMethod, Pending, UpstreamError, UpstreamTokens,
};
use crate::idp::{BoxFuture, IdentityProvider, Start};
use crate::oauth::grant::User;

/// The `oauth2` upstream section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Settings {
    pub authorization_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Where the provider sends users back; default `<issuer>/oauth/callback`.
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub auth_method: AuthMethod,
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// Which userinfo fields hold what (names, URL-style keys or dot paths).
    #[serde(default)]
    pub fields: Fields,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fields {
    pub subject: String,
    pub email: String,
    /// The field that says the email address was verified. Without it (and without
    /// `trust_email`) no email is passed on: plain OAuth 2.0 has no standard for the flag.
    pub email_verified: Option<String>,
    /// The provider only ever returns addresses it verified (say, a company directory).
    pub trust_email: bool,
    pub name: String,
    pub groups: Option<String>,
    pub roles: Option<String>,
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            email: "email".into(),
            email_verified: None,
            trust_email: false,
            name: "name".into(),
            groups: None,
            roles: None,
        }
    }
}

impl Fields {
    /// The user's email from userinfo, if verified (by its flag field, or by `trust_email`).
    fn email_of(&self, info: &Map<String, Value>) -> Option<String> {
        let email = lookup(info, &self.email).cloned();
        if self.trust_email {
            return email.and_then(|v| v.as_str().map(str::to_owned));
        }
        let flag = self.email_verified.as_deref().and_then(|f| lookup(info, f));
        verified_email(email, flag)
    }
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

pub struct OAuth2Upstream {
    settings: OAuth2Settings,
    client: Client,
    redirect_uri: String,
    http: reqwest::Client,
}

impl OAuth2Upstream {
    pub fn new(settings: OAuth2Settings, issuer: &str) -> Result<Self, String> {
        let secret = read_secret(&settings.client_secret_file)?;
        let redirect_uri = settings
            .redirect_uri
            .clone()
            .unwrap_or_else(|| default_redirect_uri(issuer));
        let url_error = |field: &str, err: url::ParseError| format!("upstream.{field}: {err}");
        let client = BasicClient::new(ClientId::new(settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(secret))
            .set_auth_uri(
                AuthUrl::new(settings.authorization_url.clone())
                    .map_err(|e| url_error("authorization_url", e))?,
            )
            .set_token_uri(
                TokenUrl::new(settings.token_url.clone()).map_err(|e| url_error("token_url", e))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(redirect_uri.clone()).map_err(|e| url_error("redirect_uri", e))?,
            )
            .set_auth_type(match settings.auth_method {
                AuthMethod::ClientSecretBasic => AuthType::BasicAuth,
                AuthMethod::ClientSecretPost => AuthType::RequestBody,
            });
        url::Url::parse(&settings.userinfo_url).map_err(|e| url_error("userinfo_url", e))?;
        let http = http_client()?;
        Ok(Self {
            settings,
            client,
            redirect_uri,
            http,
        })
    }

    fn begin(&self) -> (String, Pending) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(CsrfToken::new_random)
            .set_pkce_challenge(challenge);
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        for (name, value) in &self.settings.extra_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let (url, state) = request.url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: String::new(),
            pkce_verifier: verifier.secret().clone(),
        };
        (url.to_string(), pending)
    }

    async fn exchange(
        &self,
        code: &str,
        pkce_verifier: &str,
    ) -> Result<(User, UpstreamTokens), UpstreamError> {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|err| self.token_error(err, false))?;
        let user = self.user(response.access_token().secret()).await?;
        Ok((
            user,
            UpstreamTokens {
                refresh_token: response.refresh_token().map(|t| t.secret().clone()),
                ..UpstreamTokens::default()
            },
        ))
    }

    async fn recheck(
        &self,
        tokens: &UpstreamTokens,
        previous: &User,
    ) -> Result<(User, UpstreamTokens), UpstreamError> {
        let refresh_token = RefreshToken::new(
            tokens
                .refresh_token
                .clone()
                .ok_or(UpstreamError::NoRefreshToken)?,
        );
        let response = self
            .client
            .exchange_refresh_token(&refresh_token)
            .request_async(&self.http)
            .await
            .map_err(|err| self.token_error(err, true))?;
        let user =
            super::same_person(previous, self.user(response.access_token().secret()).await?)?;
        let kept = tokens.rotated(response.refresh_token().map(|t| t.secret().clone()));
        Ok((user, kept))
    }

    /// The user from the userinfo endpoint: without it nothing is known, so its failure fails.
    async fn user(&self, access_token: &str) -> Result<User, UpstreamError> {
        let unreachable = |detail: String| UpstreamError::Unreachable {
            issuer: self.settings.userinfo_url.clone(),
            detail,
        };
        let response = self
            .http
            .get(&self.settings.userinfo_url)
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|err| unreachable(error_chain(&err)))?;
        if !response.status().is_success() {
            return Err(UpstreamError::Other {
                error: format!("userinfo HTTP {}", response.status()),
                description: "the userinfo endpoint refused the access token: check userinfo_url and the scopes".into(),
            });
        }
        let info: Map<String, Value> = response
            .json()
            .await
            .map_err(|err| unreachable(error_chain(&err)))?;
        let fields = &self.settings.fields;
        let text = |name: &str| {
            lookup(&info, name).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let list = |name: &Option<String>| {
            name.as_deref()
                .and_then(|n| lookup(&info, n))
                .cloned()
                .map(strings)
                .unwrap_or_default()
        };
        Ok(User {
            subject: text(&fields.subject).unwrap_or_default(),
            email: fields.email_of(&info),
            name: text(&fields.name),
            groups: list(&fields.groups),
            roles: list(&fields.roles),
        })
    }

    fn token_error<RE: std::error::Error + 'static>(
        &self,
        err: oauth2::RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
        refreshing: bool,
    ) -> UpstreamError {
        map_token_error(
            err,
            refreshing,
            self.settings.auth_method,
            &self.redirect_uri,
            &self.settings.token_url,
        )
    }
}

impl IdentityProvider for OAuth2Upstream {
    fn is_federated(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'_, Result<Start, UpstreamError>> {
        let (url, pending) = self.begin();
        Box::pin(async move { Ok(Start::Redirect { url, pending }) })
    }

    /// Plain OAuth 2.0 has no ID token, so no nonce to check.
    fn finish<'a>(
        &'a self,
        code: &'a str,
        _nonce: &'a str,
        pkce_verifier: &'a str,
    ) -> BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>> {
        Box::pin(self.exchange(code, pkce_verifier))
    }

    fn refresh<'a>(
        &'a self,
        tokens: &'a UpstreamTokens,
        previous: &'a User,
    ) -> BoxFuture<'a, Result<(User, UpstreamTokens), UpstreamError>> {
        Box::pin(self.recheck(tokens, previous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(yaml: &str) -> Fields {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn an_email_needs_a_verified_flag_field_or_an_explicit_trust() {
        let info = json!({"email": "a@x", "email_verified": true, "account": {"verified": false}});
        let info = info.as_object().unwrap();
        assert_eq!(
            fields("{}").email_of(info),
            None,
            "no flag field configured"
        );
        assert_eq!(
            fields("{email_verified: email_verified}")
                .email_of(info)
                .as_deref(),
            Some("a@x")
        );
        assert_eq!(
            fields("{email_verified: account.verified}").email_of(info),
            None
        );
        assert_eq!(
            fields("{trust_email: true}").email_of(info).as_deref(),
            Some("a@x")
        );
    }
}

//! The browser side of the authorization code flow: `/oauth/authorize`, the consent page, the
//! upstream login, and the redirect back with a code (RFC 6749 §4.1, PKCE RFC 7636, resource
//! indicators RFC 8707, `iss` RFC 9207).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::http::pages;
use crate::http::{hex, now, random_token, AppState, Lookup, Metrics, Upstream};
use crate::idp::oidc::callback_error;
use crate::oauth::grant::{Grant, User};
use crate::store::{PendingRequest, Store, StoredClient, UpstreamLogin};

/// The browser cookie binding a flow to the browser that started it.
const COOKIE: &str = "__Host-mcp-auth";
/// How long a person has to consent and sign in.
const REQUEST_SECONDS: i64 = 600;

pub async fn authorize<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    // Until client and redirect URI are known good, errors are shown, never redirected.
    let Some(client_id) = param("client_id") else {
        return pages::error(StatusCode::BAD_REQUEST, "The request has no client_id.");
    };
    let client = match state.find_client(client_id).await {
        Lookup::Found(client) => client,
        Lookup::Unknown => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "This client is not registered here. Register it again from your MCP client.",
            )
        }
        Lookup::Refused(reason) => return pages::error(StatusCode::BAD_REQUEST, &reason),
        Lookup::StoreDown(err) => return store_failure(err),
    };
    let registered = redirect_uris(&client);
    let redirect_uri = match param("redirect_uri") {
        Some(uri) if registered.iter().any(|r| redirect_matches(r, uri)) => uri.to_owned(),
        Some(_) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "The redirect_uri is not one this client registered.",
            )
        }
        None if registered.len() == 1 => registered[0].clone(),
        None => return pages::error(StatusCode::BAD_REQUEST, "The request has no redirect_uri."),
    };
    let back = Back {
        redirect_uri: &redirect_uri,
        state: param("state"),
        issuer: state.config.issuer_str(),
    };

    if param("response_type") != Some("code") {
        return back.error(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = param("code_challenge") else {
        return back.error(
            "invalid_request",
            "PKCE is required: send code_challenge and code_challenge_method=S256",
        );
    };
    if param("code_challenge_method") != Some("S256") {
        return back.error(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not accepted)",
        );
    }
    if !(43..=128).contains(&challenge.len())
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return back.error(
            "invalid_request",
            "code_challenge is not a valid S256 challenge",
        );
    }
    let Some(resource) = param("resource") else {
        return back.error(
            "invalid_target",
            "the resource parameter (RFC 8707) is required: the MCP server URL",
        );
    };
    if !state.config.resources.iter().any(|r| r == resource) {
        return back.error(
            "invalid_target",
            "the resource is not an MCP server this authorization server issues tokens for",
        );
    }
    let scope = match requested_scope(&state.config.scopes, &client, param("scope")) {
        Ok(scope) => scope,
        Err(scope) => {
            return back.error(
                "invalid_scope",
                &format!("scope `{scope}` is not available to this client"),
            )
        }
    };

    let (browser_id, new_browser) = match browser(&headers) {
        Some(id) => (id, false),
        None => (random_token(24), true),
    };
    let request_id = random_token(24);
    let pending = PendingRequest {
        client_id: client.client_id.clone(),
        client_name: client.metadata["client_name"]
            .as_str()
            .unwrap_or(&client.client_id)
            .to_owned(),
        redirect_uri: redirect_uri.clone(),
        state: param("state").map(str::to_owned),
        code_challenge: challenge.to_owned(),
        resource: resource.to_owned(),
        scope: scope.clone(),
    };
    if let Err(err) = state
        .store
        .save_request(&request_id, &browser_id, &pending, now() + REQUEST_SECONDS)
        .await
    {
        return store_failure(err);
    }
    let consented = match state.store.consent(&browser_id, &client.client_id).await {
        Ok(Some(given)) => scope
            .split_ascii_whitespace()
            .all(|s| given.split_ascii_whitespace().any(|g| g == s)),
        Ok(None) => false,
        Err(err) => return store_failure(err),
    };
    let next = if consented {
        if let Err(err) = state.store.mark_consented(&request_id).await {
            return store_failure(err);
        }
        format!("/oauth/login?request={request_id}")
    } else {
        format!("/oauth/consent?request={request_id}")
    };
    let mut response = see_other(&next);
    if new_browser {
        set_browser_cookie(&mut response, &browser_id);
    }
    response
}

#[derive(Deserialize)]
pub struct RequestRef {
    request: String,
}

pub async fn consent_page<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Query(query): Query<RequestRef>,
) -> Response {
    let (browser_id, pending) = match load(&state, &headers, &query.request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let host = Url::parse(&pending.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or(pending.redirect_uri.clone());
    let scopes: Vec<&str> = pending.scope.split_ascii_whitespace().collect();
    pages::consent(
        &pending.client_name,
        &host,
        &scopes,
        &query.request,
        &csrf(&browser_id, &query.request),
    )
}

#[derive(Deserialize)]
pub struct ConsentForm {
    request: String,
    csrf: String,
    approve: Option<String>,
    deny: Option<String>,
}

pub async fn consent_submit<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let (browser_id, pending) = match load(&state, &headers, &form.request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if form.csrf != csrf(&browser_id, &form.request) {
        return pages::error(
            StatusCode::FORBIDDEN,
            "This form was not issued to this browser. Start again from your MCP client.",
        );
    }
    let back = Back {
        redirect_uri: &pending.redirect_uri,
        state: pending.state.as_deref(),
        issuer: state.config.issuer_str(),
    };
    if form.deny.is_some() || form.approve.is_none() {
        let _ = state.store.delete_request(&form.request).await;
        Metrics::bump(&state.metrics.consents_denied);
        tracing::info!(client_id = %pending.client_id, "consent denied");
        return back.error("access_denied", "the user denied access");
    }
    if let Err(err) = state
        .store
        .save_consent(&browser_id, &pending.client_id, &pending.scope, now())
        .await
    {
        return store_failure(err);
    }
    if let Err(err) = state.store.mark_consented(&form.request).await {
        return store_failure(err);
    }
    see_other(&format!("/oauth/login?request={}", form.request))
}

pub async fn login_page<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Query(query): Query<RequestRef>,
) -> Response {
    let (browser_id, pending) = match load_consented(&state, &headers, &query.request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Upstream::Dev(_) = &state.upstream {
        return pages::login(&query.request, &csrf(&browser_id, &query.request), None);
    }
    let Some(federated) = state.upstream.federated() else {
        return pages::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No upstream login is configured (set `upstream` in the configuration).",
        );
    };
    match federated.begin().await {
        Ok((url, secrets)) => {
            let login = UpstreamLogin {
                request_id: query.request.clone(),
                nonce: secrets.nonce,
                pkce_verifier: secrets.pkce_verifier,
            };
            let key = hex(&Sha256::digest(secrets.state.as_bytes()));
            if let Err(err) = state
                .store
                .save_upstream_login(&key, &login, now() + REQUEST_SECONDS)
                .await
            {
                return store_failure(err);
            }
            see_other(&url)
        }
        Err(err) => {
            tracing::error!(error = %err, "upstream login could not start");
            let back = Back {
                redirect_uri: &pending.redirect_uri,
                state: pending.state.as_deref(),
                issuer: state.config.issuer_str(),
            };
            back.error(err.oauth_error(), &err.to_string())
        }
    }
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The identity provider's answer: verified by `openidconnect`, turned into our own code.
pub async fn callback<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(federated) = state.upstream.federated() else {
        return pages::error(StatusCode::NOT_FOUND, "No identity provider is configured.");
    };
    let Some(upstream_state) = query.state.as_deref() else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer has no state.",
        );
    };
    let login = match state.store.take_upstream_login(&hex(&Sha256::digest(upstream_state.as_bytes())), now()).await {
        Ok(Some(login)) => login,
        Ok(None) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "This sign-in answer was already used or has expired. Start again from your MCP client.",
            )
        }
        Err(err) => return store_failure(err),
    };
    let (_, pending) = match load_consented(&state, &headers, &login.request_id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let back = Back {
        redirect_uri: &pending.redirect_uri,
        state: pending.state.as_deref(),
        issuer: state.config.issuer_str(),
    };
    let outcome = match (&query.error, &query.code) {
        (Some(error), _) => Err(callback_error(
            error,
            query.error_description.as_deref().unwrap_or_default(),
        )),
        (None, Some(code)) => {
            federated
                .finish(code, &login.nonce, &login.pkce_verifier)
                .await
        }
        (None, None) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "The identity provider's answer has no code.",
            )
        }
    };
    let (user, tokens) = match outcome {
        Ok(found) => found,
        Err(err) => {
            Metrics::bump(&state.metrics.logins_failed);
            tracing::warn!(error = %err, client_id = %pending.client_id, "upstream login failed");
            let _ = state.store.delete_request(&login.request_id).await;
            return back.error(err.oauth_error(), &err.to_string());
        }
    };
    if user.subject.is_empty() {
        return back.error("server_error", "the identity provider did not send the configured subject_claim; check upstream.subject_claim");
    }
    let family_id = random_token(16);
    if let Some(sealer) = &state.sealer {
        let sealed = sealer.seal(&serde_json::to_vec(&tokens).unwrap_or_default());
        if let Err(err) = state
            .store
            .save_upstream_tokens(&family_id, &sealed, now())
            .await
        {
            return store_failure(err);
        }
    }
    issue_code(&state, &login.request_id, pending, user, &family_id).await
}

#[derive(Deserialize)]
pub struct LoginForm {
    request: String,
    csrf: String,
    username: String,
    password: String,
}

pub async fn login_submit<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let (browser_id, pending) = match load_consented(&state, &headers, &form.request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let token = csrf(&browser_id, &form.request);
    if form.csrf != token {
        return pages::error(
            StatusCode::FORBIDDEN,
            "This form was not issued to this browser. Start again from your MCP client.",
        );
    }
    let Upstream::Dev(users) = &state.upstream else {
        return pages::error(
            StatusCode::NOT_FOUND,
            "This server does not use the built-in login.",
        );
    };
    let Some(user) = users.authenticate(&form.username, &form.password) else {
        Metrics::bump(&state.metrics.logins_failed);
        tracing::info!("dev login failed");
        return pages::login(
            &form.request,
            &token,
            Some("Unknown user or wrong password."),
        );
    };
    issue_code(&state, &form.request, pending, user, &random_token(16)).await
}

/// Our own code for the logged-in user, sent back to the client's redirect URI.
async fn issue_code<S: Store>(
    state: &AppState<S>,
    request_id: &str,
    pending: PendingRequest,
    user: User,
    family_id: &str,
) -> Response {
    let code = random_token(32);
    let grant = Grant {
        client_id: pending.client_id.clone(),
        resource: pending.resource.clone(),
        scope: pending.scope.clone(),
        user,
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
    };
    let expires_at = now() + state.config.lifetimes.code_seconds as i64;
    if let Err(err) = state
        .store
        .save_code(
            &hex(&Sha256::digest(code.as_bytes())),
            &grant,
            family_id,
            expires_at,
        )
        .await
    {
        return store_failure(err);
    }
    let _ = state.store.delete_request(request_id).await;
    tracing::info!(client_id = %pending.client_id, subject = %grant.user.subject, "authorization code issued");
    let back = Back {
        redirect_uri: &pending.redirect_uri,
        state: pending.state.as_deref(),
        issuer: state.config.issuer_str(),
    };
    back.with(&[("code", &code)])
}

/// Where the answer to an authorization request goes.
struct Back<'a> {
    redirect_uri: &'a str,
    state: Option<&'a str>,
    issuer: &'a str,
}

impl Back<'_> {
    fn error(&self, error: &str, description: &str) -> Response {
        self.with(&[("error", error), ("error_description", description)])
    }

    /// The redirect URI with `pairs`, `state` and `iss` added to its query.
    fn with(&self, pairs: &[(&str, &str)]) -> Response {
        let Ok(mut url) = Url::parse(self.redirect_uri) else {
            return pages::error(StatusCode::BAD_REQUEST, "The redirect_uri is not a URL.");
        };
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in pairs {
                query.append_pair(name, value);
            }
            if let Some(state) = self.state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", self.issuer);
        }
        see_other(url.as_str())
    }
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn set_browser_cookie(response: &mut Response, browser_id: &str) {
    let cookie =
        format!("{COOKIE}={browser_id}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=31536000");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn browser(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| value.len() >= 16)
}

/// The form token: only the browser holding the (HttpOnly) cookie can know it.
fn csrf(browser_id: &str, request_id: &str) -> String {
    hex(&Sha256::digest(
        format!("{browser_id}:{request_id}").as_bytes(),
    ))
}

async fn load<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<(String, PendingRequest), Response> {
    let stored = match state.store.request(request_id, now()).await {
        Ok(Some(stored)) => stored,
        Ok(None) => {
            return Err(pages::error(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired or is unknown. Start again from your MCP client.",
            ))
        }
        Err(err) => return Err(store_failure(err)),
    };
    match browser(headers) {
        Some(browser_id) if browser_id == stored.browser_id => Ok((browser_id, stored.request)),
        _ => Err(pages::error(
            StatusCode::FORBIDDEN,
            "This sign-in was started in another browser. Start again from your MCP client.",
        )),
    }
}

async fn load_consented<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<(String, PendingRequest), Response> {
    let found = load(state, headers, request_id).await?;
    match state.store.request(request_id, now()).await {
        Ok(Some(stored)) if stored.consented => Ok(found),
        Ok(_) => Err(pages::error(
            StatusCode::FORBIDDEN,
            "Consent has not been given for this sign-in.",
        )),
        Err(err) => Err(store_failure(err)),
    }
}

/// Exact match, except that a loopback http redirect URI may use any port (RFC 8252 §7.3):
/// native clients listen wherever the OS lets them.
fn redirect_matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    let (Ok(mut registered), Ok(mut given)) = (Url::parse(registered), Url::parse(given)) else {
        return false;
    };
    let loopback = |url: &Url| {
        let host_is_loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        };
        url.scheme() == "http" && host_is_loopback
    };
    if !loopback(&registered) || !loopback(&given) {
        return false;
    }
    let _ = registered.set_port(None);
    let _ = given.set_port(None);
    registered == given
}

fn redirect_uris(client: &StoredClient) -> Vec<String> {
    client.metadata["redirect_uris"]
        .as_array()
        .map(|uris| {
            uris.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The scope to grant: what was asked (or the client's registered scope, or the server's
/// first scope), each within what the server offers and the client registered.
fn requested_scope(
    offered: &[String],
    client: &StoredClient,
    asked: Option<&str>,
) -> Result<String, String> {
    let registered: Option<Vec<&str>> = client.metadata["scope"]
        .as_str()
        .map(|s| s.split_ascii_whitespace().collect());
    let asked = match asked {
        Some(asked) => asked.to_owned(),
        None => registered
            .as_ref()
            .map(|r| r.join(" "))
            .unwrap_or_else(|| offered.first().cloned().unwrap_or_default()),
    };
    for scope in asked.split_ascii_whitespace() {
        let allowed = offered.iter().any(|o| o == scope)
            && registered.as_ref().is_none_or(|r| r.contains(&scope));
        if !allowed {
            return Err(scope.to_owned());
        }
    }
    Ok(asked)
}

fn store_failure(err: crate::store::StoreError) -> Response {
    tracing::error!(error = %err, "storage failure during authorization");
    pages::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The authorization server cannot reach its storage. Try again shortly.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_may_change_port_and_nothing_else() {
        assert!(redirect_matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:54321/callback"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1:1/callback",
            "http://127.0.0.1:2/callback"
        ));
        assert!(redirect_matches("http://[::1]:1/cb", "http://[::1]:9/cb"));
        assert!(!redirect_matches(
            "http://127.0.0.1:1/callback",
            "http://127.0.0.1:1/other"
        ));
        assert!(!redirect_matches(
            "https://app.example.com:1/cb",
            "https://app.example.com:2/cb"
        ));
        assert!(!redirect_matches(
            "http://localhost:1/cb",
            "http://127.0.0.1:1/cb"
        ));
        assert!(redirect_matches(
            "https://app.example.com/cb",
            "https://app.example.com/cb"
        ));
    }
}

//! The browser side of the authorization code flow: `/oauth/authorize`, the upstream login, the
//! consent page, and the redirect back with a code (RFC 6749 §4.1, PKCE RFC 7636, resource
//! indicators RFC 8707, `iss` RFC 9207). Login comes first so that consent is asked of, and
//! remembered for, a known user. The decisions are in `oauth::authorize` and `oauth::consent`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::client_documents;
use crate::http::pages::Pages;
use crate::http::{hex, random_token, AppState, Lookup, Metrics};
use crate::idp::oidc::callback_error;
use crate::idp::{Password, Start};
use crate::oauth::authorize::{self as decide, AuthorizeQuery, Delivery, Offer, Standing};
use crate::oauth::consent::{self, ConsentFacts};
use crate::oauth::grant::Grant;
use crate::oauth::{ErrorCode, OAuthError, Scope};
use crate::store::{PendingRequest, SignedIn, Store, StoredClient, UpstreamLogin};

/// The browser cookie binding a flow to the browser that started it.
const COOKIE: &str = "__Host-mcp-auth";
/// How long a person has to sign in and consent.
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
        return state
            .pages
            .error(StatusCode::BAD_REQUEST, "The request has no client_id.");
    };
    if client_id.len() > decide::MAX_URI {
        return state.pages.error(
            StatusCode::BAD_REQUEST,
            &format!(
                "The client_id is {} bytes long; at most {} are accepted.",
                client_id.len(),
                decide::MAX_URI
            ),
        );
    }
    let client = match state.find_client(client_id).await {
        Lookup::Found(client) => client,
        Lookup::Unknown => {
            return state.pages.error(
                StatusCode::BAD_REQUEST,
                "This client is not registered here. Register it again from your MCP client.",
            )
        }
        Lookup::Refused(reason) | Lookup::Unreachable(reason) => {
            return state.pages.error(StatusCode::BAD_REQUEST, &reason)
        }
        Lookup::StoreDown(err) => return store_failure(&state, err),
    };
    let registered = redirect_uris(&client);
    let redirect_uri = match param("redirect_uri") {
        Some(uri) if uri.len() > decide::MAX_URI => {
            return state.pages.error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "The redirect_uri is {} bytes long; at most {} are accepted.",
                    uri.len(),
                    decide::MAX_URI
                ),
            )
        }
        Some(uri) if registered.iter().any(|r| redirect_matches(r, uri)) => uri.to_owned(),
        Some(_) => {
            return state.pages.error(
                StatusCode::BAD_REQUEST,
                "The redirect_uri is not one this client registered.",
            )
        }
        None if registered.len() == 1 => registered[0].clone(),
        None => {
            return state
                .pages
                .error(StatusCode::BAD_REQUEST, "The request has no redirect_uri.")
        }
    };
    let back = Back {
        pages: &state.pages,
        redirect_uri: &redirect_uri,
        state: decide::echoable_state(param("state")),
        issuer: state.config.issuer_str(),
    };
    // A registered scope that does not parse allows nothing (fail closed).
    let registered_scope = client.metadata["scope"]
        .as_str()
        .map(|s| Scope::parse(s).unwrap_or_default());
    let query = AuthorizeQuery {
        response_type: param("response_type"),
        code_challenge: param("code_challenge"),
        code_challenge_method: param("code_challenge_method"),
        resource: param("resource"),
        scope: param("scope"),
        state: param("state"),
    };
    let offer = Offer {
        resources: &state.config.resources,
        scopes: &state.config.scopes,
        registered: registered_scope.as_ref(),
    };
    let accepted = match decide::check(&query, &offer) {
        Ok(accepted) => accepted,
        Err(err) => return refuse(&back, Standing::NotAnswered, err),
    };

    let (browser_id, new_browser) = match browser(&headers) {
        Some(id) => (id, false),
        None => (random_token(24), true),
    };
    let request_id = random_token(24);
    let pending = PendingRequest {
        client_id: client.client_id.clone(),
        client_name: consent::client_name(client.metadata["client_name"].as_str()),
        redirect_uri: redirect_uri.clone(),
        state: query.state.map(str::to_owned),
        code_challenge: accepted.code_challenge,
        resource: accepted.resource,
        scope: accepted.scope.to_string(),
    };
    if let Err(err) = state
        .store
        .save_request(
            &request_id,
            &browser_id,
            &pending,
            state.clock.now() + REQUEST_SECONDS,
        )
        .await
    {
        return store_failure(&state, err);
    }
    let mut response = see_other(
        &state
            .config
            .local_path(&format!("/oauth/login?request={request_id}")),
    );
    if new_browser {
        set_browser_cookie(&mut response, &browser_id);
    }
    response
}

/// The `?request=` of the login and consent pages; optional so that its absence gets a page
/// rather than the framework's plain-text rejection.
#[derive(Deserialize)]
pub struct RequestRef {
    request: Option<String>,
}

impl RequestRef {
    fn id(&self) -> Option<&str> {
        self.request.as_deref().filter(|r| !r.is_empty())
    }
}

fn no_request(pages: &Pages) -> Response {
    pages.error(
        StatusCode::BAD_REQUEST,
        "This page belongs to a sign-in and was opened without one. Start again from your MCP client.",
    )
}

/// A form that lacks fields was not posted by our page.
fn bad_form(pages: &Pages, rejection: FormRejection) -> Response {
    tracing::info!(error = %rejection, "malformed sign-in form");
    pages.error(
        StatusCode::BAD_REQUEST,
        "This form is incomplete. Start again from your MCP client.",
    )
}

pub async fn login_page<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Query(query): Query<RequestRef>,
) -> Response {
    let Some(request_id) = query.id() else {
        return no_request(&state.pages);
    };
    let (browser_id, pending, _) = match load(&state, &headers, request_id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(provider) = state.upstream.provider() else {
        return state.pages.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No upstream login is configured (set `upstream` in the configuration).",
        );
    };
    match provider.start().await {
        Ok(Start::Form) => state.pages.login(
            &state.config.local_path("/oauth/login"),
            request_id,
            &csrf(&browser_id, request_id),
            None,
        ),
        Ok(Start::Redirect {
            url,
            pending: secrets,
        }) => {
            let login = UpstreamLogin {
                request_id: request_id.to_owned(),
                nonce: secrets.nonce,
                pkce_verifier: secrets.pkce_verifier,
            };
            let key = hex(&Sha256::digest(secrets.state.as_bytes()));
            if let Err(err) = state
                .store
                .save_upstream_login(&key, &login, state.clock.now() + REQUEST_SECONDS)
                .await
            {
                return store_failure(&state, err);
            }
            see_other(&url)
        }
        // The person is here and can retry: a page, not an error sent to their client.
        Err(err) if err.is_transient() => {
            tracing::error!(error = %err, "upstream login could not start");
            state.pages.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity provider is unreachable; try again later.",
            )
        }
        Err(err) => {
            tracing::error!(error = %err, "upstream login could not start");
            let back = Back::of(&state, &pending);
            refuse(&back, Standing::NotAnswered, err.for_client())
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

/// The identity provider's answer: verified by `openidconnect`, then on to consent.
pub async fn callback<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(provider) = state.upstream.provider().filter(|p| p.is_federated()) else {
        return state
            .pages
            .error(StatusCode::NOT_FOUND, "No identity provider is configured.");
    };
    let Some(upstream_state) = query.state.as_deref() else {
        return state.pages.error(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer has no state.",
        );
    };
    let key = hex(&Sha256::digest(upstream_state.as_bytes()));
    let login = match state.store.take_upstream_login(&key, state.clock.now()).await {
        Ok(Some(login)) => login,
        Ok(None) => {
            return state.pages.error(
                StatusCode::BAD_REQUEST,
                "This sign-in answer was already used or has expired. Start again from your MCP client.",
            )
        }
        Err(err) => return store_failure(&state, err),
    };
    let (_, pending, _) = match load(&state, &headers, &login.request_id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let back = Back::of(&state, &pending);
    let outcome = match (&query.error, &query.code) {
        (Some(error), _) => Err(callback_error(
            error,
            query.error_description.as_deref().unwrap_or_default(),
        )),
        (None, Some(code)) => {
            provider
                .finish(code, &login.nonce, &login.pkce_verifier)
                .await
        }
        (None, None) => {
            return state.pages.error(
                StatusCode::BAD_REQUEST,
                "The identity provider's answer has no code.",
            )
        }
    };
    let (user, tokens) = match outcome {
        Ok(found) => found,
        Err(err) => {
            Metrics::bump(&state.metrics.logins_failed);
            state.metrics.upstream_failed(&err);
            tracing::warn!(error = %err, client_id = %pending.client_id, "upstream login failed");
            let _ = state.store.delete_request(&login.request_id).await;
            return refuse(&back, Standing::NotAnswered, err.for_client());
        }
    };
    if user.subject.is_empty() {
        tracing::error!("the identity provider did not send the configured subject_claim; check upstream.subject_claim");
        return refuse(&back, Standing::NotAnswered, OAuthError::server_error());
    }
    let sealed_upstream = match &state.sealer {
        Some(sealer) => match serde_json::to_vec(&tokens) {
            Ok(plain) => Some(STANDARD.encode(sealer.seal(&plain))),
            Err(err) => {
                tracing::error!(error = %err, "upstream tokens could not be serialized");
                return refuse(&back, Standing::NotAnswered, OAuthError::server_error());
            }
        },
        None => None,
    };
    let signed_in = SignedIn {
        user,
        sealed_upstream,
    };
    after_sign_in(&state, &login.request_id, pending, signed_in).await
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
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return bad_form(&state.pages, rejection),
    };
    let (browser_id, pending, _) = match load(&state, &headers, &form.request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let token = csrf(&browser_id, &form.request);
    if form.csrf != token {
        return state.pages.error(
            StatusCode::FORBIDDEN,
            "This form was not issued to this browser. Start again from your MCP client.",
        );
    }
    let password = match state.upstream.provider() {
        Some(provider) => provider.check_password(&form.username, &form.password),
        None => Password::NotOffered,
    };
    let user = match password {
        Password::Accepted(user) => user,
        Password::Refused => {
            Metrics::bump(&state.metrics.logins_failed);
            tracing::info!("dev login failed");
            return state.pages.login(
                &state.config.local_path("/oauth/login"),
                &form.request,
                &token,
                Some("Unknown user or wrong password."),
            );
        }
        Password::NotOffered => {
            return state.pages.error(
                StatusCode::NOT_FOUND,
                "This server does not use the built-in login.",
            )
        }
    };
    let signed_in = SignedIn {
        user,
        sealed_upstream: None,
    };
    after_sign_in(&state, &form.request, pending, signed_in).await
}

/// A signed-in user: straight to the code if they approved this client for this resource and
/// at least this scope before, else to the consent page.
async fn after_sign_in<S: Store>(
    state: &AppState<S>,
    request_id: &str,
    pending: PendingRequest,
    signed_in: SignedIn,
) -> Response {
    let remembered = match state
        .store
        .consent(
            &signed_in.user.subject,
            &pending.client_id,
            &pending.resource,
        )
        .await
    {
        Ok(scope) => scope.map(|s| Scope::from_stored(&s)),
        Err(err) => return store_failure(state, err),
    };
    if consent::is_remembered(remembered.as_ref(), &Scope::from_stored(&pending.scope)) {
        return issue_code(state, request_id, pending, signed_in).await;
    }
    if let Err(err) = state.store.save_sign_in(request_id, &signed_in).await {
        return store_failure(state, err);
    }
    see_other(
        &state
            .config
            .local_path(&format!("/oauth/consent?request={request_id}")),
    )
}

pub async fn consent_page<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Query(query): Query<RequestRef>,
) -> Response {
    let Some(request_id) = query.id() else {
        return no_request(&state.pages);
    };
    let (browser_id, pending, signed_in) = match load_signed_in(&state, &headers, request_id).await
    {
        Ok(found) => found,
        Err(response) => return response,
    };
    let scope = Scope::from_stored(&pending.scope);
    let view = consent::view(&ConsentFacts {
        user: &signed_in.user,
        client_name: pending.client_name.as_deref(),
        client_id: &pending.client_id,
        client_id_is_document: client_documents::is_document_url(&pending.client_id),
        redirect_uri: &pending.redirect_uri,
        resource: &pending.resource,
        scope: &scope,
    });
    state.pages.consent(
        &view,
        &state.config.local_path("/oauth/consent"),
        request_id,
        &csrf(&browser_id, request_id),
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
    form: Result<Form<ConsentForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return bad_form(&state.pages, rejection),
    };
    let (browser_id, pending, signed_in) =
        match load_signed_in(&state, &headers, &form.request).await {
            Ok(found) => found,
            Err(response) => return response,
        };
    if form.csrf != csrf(&browser_id, &form.request) {
        return state.pages.error(
            StatusCode::FORBIDDEN,
            "This form was not issued to this browser. Start again from your MCP client.",
        );
    }
    if form.deny.is_some() || form.approve.is_none() {
        let _ = state.store.delete_request(&form.request).await;
        Metrics::bump(&state.metrics.consents_denied);
        tracing::info!(client_id = %pending.client_id, "consent denied");
        let back = Back::of(&state, &pending);
        let denied = OAuthError::new(ErrorCode::AccessDenied, "the user denied access");
        return refuse(&back, Standing::UserAnswered, denied);
    }
    if let Err(err) = state
        .store
        .save_consent(
            &signed_in.user.subject,
            &pending.client_id,
            &pending.resource,
            &pending.scope,
            state.clock.now(),
        )
        .await
    {
        return store_failure(&state, err);
    }
    issue_code(&state, &form.request, pending, signed_in).await
}

/// Our own code for the signed-in user, sent back to the client's redirect URI; the upstream
/// session, if any, is kept with the new grant family.
async fn issue_code<S: Store>(
    state: &AppState<S>,
    request_id: &str,
    pending: PendingRequest,
    signed_in: SignedIn,
) -> Response {
    let family_id = random_token(16);
    if let Some(sealed) = &signed_in.sealed_upstream {
        let Ok(sealed) = STANDARD.decode(sealed) else {
            tracing::error!("a pending request's sealed upstream session is not base64");
            return store_failure_page(&state.pages);
        };
        if let Err(err) = state
            .store
            .save_upstream_tokens(&family_id, &sealed, state.clock.now())
            .await
        {
            return store_failure(state, err);
        }
    }
    let code = random_token(32);
    let grant = Grant {
        client_id: pending.client_id.clone(),
        resource: pending.resource.clone(),
        scope: pending.scope.clone(),
        user: signed_in.user,
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
    };
    let expires_at = state.clock.now() + state.config.lifetimes.code_seconds as i64;
    if let Err(err) = state
        .store
        .save_code(
            &hex(&Sha256::digest(code.as_bytes())),
            &grant,
            &family_id,
            expires_at,
        )
        .await
    {
        return store_failure(state, err);
    }
    let _ = state.store.delete_request(request_id).await;
    tracing::info!(client_id = %pending.client_id, subject = %grant.user.subject, "authorization code issued");
    Back::of(state, &pending).with(&[("code", &code)])
}

/// An error answer: to the client's redirect URI once the person just answered its consent
/// page, else shown here (no open redirector, RFC 9700 §4.11.2).
fn refuse(back: &Back<'_>, standing: Standing, err: OAuthError) -> Response {
    match decide::error_delivery(standing) {
        Delivery::Redirect => back.with(&[
            ("error", err.code.as_str()),
            ("error_description", &err.description),
        ]),
        Delivery::Page => back.pages.refused(&err),
    }
}

/// Where the answer to an authorization request goes.
struct Back<'a> {
    pages: &'a Pages,
    redirect_uri: &'a str,
    state: Option<&'a str>,
    issuer: &'a str,
}

impl<'a> Back<'a> {
    fn of<S>(state: &'a AppState<S>, pending: &'a PendingRequest) -> Self {
        Self {
            pages: &state.pages,
            redirect_uri: &pending.redirect_uri,
            state: decide::echoable_state(pending.state.as_deref()),
            issuer: state.config.issuer_str(),
        }
    }

    /// The redirect URI with `pairs`, `state` and `iss` added to its query.
    fn with(&self, pairs: &[(&str, &str)]) -> Response {
        let Ok(mut url) = Url::parse(self.redirect_uri) else {
            return self
                .pages
                .error(StatusCode::BAD_REQUEST, "The redirect_uri is not a URL.");
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
) -> Result<(String, PendingRequest, Option<SignedIn>), Response> {
    let stored = match state.store.request(request_id, state.clock.now()).await {
        Ok(Some(stored)) => stored,
        Ok(None) => {
            return Err(state.pages.error(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired or is unknown. Start again from your MCP client.",
            ))
        }
        Err(err) => return Err(store_failure(state, err)),
    };
    match browser(headers) {
        Some(browser_id) if browser_id == stored.browser_id => {
            Ok((browser_id, stored.request, stored.signed_in))
        }
        _ => Err(state.pages.error(
            StatusCode::FORBIDDEN,
            "This sign-in was started in another browser. Start again from your MCP client.",
        )),
    }
}

/// A pending request whose user has signed in: the only kind the consent page is shown for.
async fn load_signed_in<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<(String, PendingRequest, SignedIn), Response> {
    match load(state, headers, request_id).await? {
        (browser_id, pending, Some(signed_in)) => Ok((browser_id, pending, signed_in)),
        (_, _, None) => Err(state.pages.error(
            StatusCode::FORBIDDEN,
            "Sign in before you answer the consent page.",
        )),
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

fn store_failure<S>(state: &AppState<S>, err: crate::store::StoreError) -> Response {
    tracing::error!(error = %err, "storage failure during authorization");
    state.metrics.database_failed("authorization");
    store_failure_page(&state.pages)
}

fn store_failure_page(pages: &Pages) -> Response {
    pages.error(
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

    use axum::body::Body;
    use axum::http::Request;
    use axum::Router;
    use serde_json::json;
    use tower::ServiceExt;

    use crate::config::{Config, FileConfig, Overrides};
    use crate::http::Upstream;
    use crate::idp::dev::DevUsers;
    use crate::keys::KeyRing;
    use crate::store::SqliteStore;

    const A: &str = "https://mcp.example.com/a";
    const B: &str = "https://mcp.example.com/b";
    const CB: &str = "https://evil.example/cb";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    /// The router over a real SQLite store and dev users, with one client registered for `CB`.
    struct Server {
        _dir: tempfile::TempDir,
        app: Router,
        cookie: Option<String>,
    }

    impl Server {
        async fn start() -> Self {
            Self::start_at("https://auth.example.com").await
        }

        async fn start_at(issuer: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let users = dir.path().join("users.yaml");
            std::fs::write(&users, "users:\n- {username: alice, password: pw, email: alice@example.com, name: Alice}\n").unwrap();
            let upstream = Upstream::new(Some(Box::new(DevUsers::load(&users).unwrap())));
            Self::with(dir, issuer, upstream).await
        }

        async fn with(dir: tempfile::TempDir, issuer: &str, upstream: Upstream) -> Self {
            let url = format!("sqlite://{}/auth.db", dir.path().display());
            let store = SqliteStore::open(&url).await.unwrap();
            store
                .save_client(&StoredClient {
                    client_id: "c1".into(),
                    secret_sha256: None,
                    metadata: json!({"client_name": "Totally <Legit>", "redirect_uris": [CB]}),
                    created_at: 1,
                    last_used_at: None,
                })
                .await
                .unwrap();
            let file: FileConfig =
                serde_yaml::from_str(&format!("issuer: {issuer}\nresources: [{A}, {B}]\n"))
                    .unwrap();
            let config = Config::resolve(file, Overrides::default()).unwrap();
            let app = crate::http::router(
                config,
                KeyRing::ephemeral(),
                store,
                upstream,
                None,
                std::sync::Arc::new(crate::oauth::SystemClock),
            );
            Self {
                _dir: dir,
                app,
                cookie: None,
            }
        }

        async fn send(&mut self, request: Request<Body>) -> (StatusCode, String, String) {
            let response = self.app.clone().oneshot(request).await.unwrap();
            if let Some(cookie) = response.headers().get(header::SET_COOKIE) {
                let cookie = cookie.to_str().unwrap().split(';').next().unwrap();
                self.cookie = Some(cookie.to_owned());
            }
            let status = response.status();
            let location = response
                .headers()
                .get(header::LOCATION)
                .map(|l| l.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                location,
                String::from_utf8_lossy(&body).into_owned(),
            )
        }

        async fn get(&mut self, uri: &str) -> (StatusCode, String, String) {
            let mut request = Request::get(uri);
            if let Some(cookie) = &self.cookie {
                request = request.header(header::COOKIE, cookie);
            }
            self.send(request.body(Body::empty()).unwrap()).await
        }

        async fn post(&mut self, uri: &str, form: &[(&str, &str)]) -> (StatusCode, String, String) {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            let mut request = Request::post(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            if let Some(cookie) = &self.cookie {
                request = request.header(header::COOKIE, cookie);
            }
            self.send(request.body(Body::from(body)).unwrap()).await
        }

        fn csrf(&self, request_id: &str) -> String {
            let cookie = self.cookie.as_deref().unwrap();
            csrf(cookie.split_once('=').unwrap().1, request_id)
        }

        /// `/oauth/authorize` then the dev login: where the server sends the browser next.
        async fn sign_in(&mut self, extra: &str) -> String {
            let (status, next, body) = self.get(&authorize(extra)).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
            let request_id = next
                .strip_prefix("/oauth/login?request=")
                .unwrap()
                .to_owned();
            let (status, _, _) = self.get(&next).await;
            assert_eq!(status, StatusCode::OK);
            let csrf = self.csrf(&request_id);
            let form = [
                ("request", request_id.as_str()),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "pw"),
            ];
            let (status, next, _) = self.post("/oauth/login", &form).await;
            assert_eq!(status, StatusCode::SEE_OTHER);
            next
        }

        async fn approve(&mut self, consent: &str) -> (StatusCode, String, String) {
            let request_id = consent.strip_prefix("/oauth/consent?request=").unwrap();
            let csrf = self.csrf(request_id);
            let form = [("request", request_id), ("csrf", &csrf), ("approve", "1")];
            self.post("/oauth/consent", &form).await
        }
    }

    fn authorize(extra: &str) -> String {
        format!("/oauth/authorize?response_type=code&client_id=c1&redirect_uri={CB}&code_challenge={CHALLENGE}&code_challenge_method=S256&state=st{extra}")
    }

    #[tokio::test]
    async fn under_an_issuer_path_every_redirect_and_form_stays_under_it() {
        let mut server = Server::start_at("https://auth.example.com/auth").await;
        let (status, login, _) = server
            .get(&format!("/auth{}", authorize(&format!("&resource={A}"))))
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let request_id = login
            .strip_prefix("/auth/oauth/login?request=")
            .unwrap_or_else(|| panic!("{login}"))
            .to_owned();
        let (status, _, page) = server.get(&login).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains(r#"action="/auth/oauth/login""#), "{page}");
        let csrf = server.csrf(&request_id);
        let form = [
            ("request", request_id.as_str()),
            ("csrf", &csrf),
            ("username", "alice"),
            ("password", "pw"),
        ];
        // A proxy that strips the prefix delivers the same form at the root.
        let (status, consent, _) = server.post("/oauth/login", &form).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            consent.starts_with("/auth/oauth/consent?request="),
            "{consent}"
        );
        let (status, _, page) = server.get(&consent).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains(r#"action="/auth/oauth/consent""#), "{page}");
        let form = [
            ("request", request_id.as_str()),
            ("csrf", &csrf),
            ("approve", "1"),
        ];
        let (status, landing, _) = server.post("/auth/oauth/consent", &form).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            landing.starts_with(CB) && landing.contains("code="),
            "{landing}"
        );
        assert!(
            landing.contains("iss=https%3A%2F%2Fauth.example.com%2Fauth"),
            "{landing}"
        );
    }

    #[tokio::test]
    async fn under_an_issuer_path_metadata_is_found_and_names_endpoints_under_it() {
        let mut server = Server::start_at("https://auth.example.com/auth").await;
        for path in [
            "/.well-known/oauth-authorization-server/auth",
            "/.well-known/openid-configuration/auth",
            "/auth/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ] {
            let (status, _, body) = server.get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let metadata: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(metadata["issuer"], "https://auth.example.com/auth");
            for (name, endpoint) in [
                ("authorization_endpoint", "/oauth/authorize"),
                ("token_endpoint", "/oauth/token"),
                ("registration_endpoint", "/oauth/register"),
                ("revocation_endpoint", "/oauth/revoke"),
                ("introspection_endpoint", "/oauth/introspect"),
                ("jwks_uri", "/.well-known/jwks.json"),
            ] {
                assert_eq!(
                    metadata[name],
                    format!("https://auth.example.com/auth{endpoint}"),
                    "{path} {name}"
                );
            }
        }
        for path in [
            "/auth/.well-known/jwks.json",
            "/.well-known/jwks.json",
            "/metrics",
        ] {
            assert_eq!(server.get(path).await.0, StatusCode::OK, "{path}");
        }
        for path in ["/auth/metrics", "/auth/readyz"] {
            assert_eq!(
                server.get(path).await.0,
                StatusCode::NOT_FOUND,
                "{path}: the cluster's endpoints are not under the public prefix"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_identity_provider_is_a_503_page_at_the_login_start_and_in_readyz() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = crate::idp::oidc::unreachable_for_tests(dir.path());
        let mut server = Server::with(
            dir,
            "https://auth.example.com",
            Upstream::new(Some(Box::new(upstream))),
        )
        .await;
        let (status, login, _) = server.get(&authorize(&format!("&resource={A}"))).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, location, page) = server.get(&login).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(location, "", "the person is told here, not sent anywhere");
        assert!(
            page.contains("The identity provider is unreachable; try again later."),
            "{page}"
        );
        assert!(!page.contains("127.0.0.1"), "no upstream detail: {page}");
        let (status, _, body) = server.get("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "identity provider unreachable");
    }

    #[tokio::test]
    async fn errors_before_the_consent_answer_are_shown_not_redirected_even_once_approved() {
        let mut server = Server::start().await;
        let bad = format!("&resource={A}&scope=mcp:admin");
        let (status, location, body) = server.get(&authorize(&bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(location, "", "no redirect to an unvouched-for URI");
        assert!(
            body.contains("invalid_scope") && body.contains("mcp:admin"),
            "{body}"
        );

        let consent = server.sign_in(&format!("&resource={A}")).await;
        let (status, landing, _) = server.approve(&consent).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            landing.starts_with(CB) && landing.contains("code="),
            "{landing}"
        );

        let (status, location, _) = server.get(&authorize(&bad)).await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::BAD_REQUEST, ""),
            "approved once (by anyone, its registrant too) is no licence to redirect a link's errors"
        );
    }

    #[tokio::test]
    async fn consent_is_remembered_per_user_client_resource_and_scope() {
        let mut server = Server::start().await;
        let consent = server
            .sign_in(&format!("&resource={A}&scope=mcp:tools%20offline_access"))
            .await;
        assert!(consent.starts_with("/oauth/consent?request="), "{consent}");
        let (status, _, page) = server.get(&consent).await;
        assert_eq!(status, StatusCode::OK);
        for shown in [
            "Alice (alice@example.com)",
            "Totally &lt;Legit&gt;",
            "a name the client chose itself",
            "evil.example",
            A,
            "offline_access",
        ] {
            assert!(page.contains(shown), "{shown} missing from {page}");
        }
        server.approve(&consent).await;

        let narrower = server
            .sign_in(&format!("&resource={A}&scope=mcp:tools"))
            .await;
        assert!(
            narrower.starts_with(CB) && narrower.contains("code="),
            "remembered: {narrower}"
        );

        let other = server
            .sign_in(&format!("&resource={B}&scope=mcp:tools"))
            .await;
        assert!(
            other.starts_with("/oauth/consent?"),
            "another resource asks again: {other}"
        );
    }

    #[tokio::test]
    async fn an_over_long_state_is_refused_before_anything_is_stored() {
        let mut server = Server::start().await;
        let state = "x".repeat(decide::MAX_STATE + 1);
        let (status, location, body) = server
            .get(&format!("{}&resource={A}&state={state}", authorize("")))
            .await;
        assert_eq!((status, location.as_str()), (StatusCode::BAD_REQUEST, ""));
        assert!(body.contains("state is 513 bytes long"), "{body}");
    }

    #[tokio::test]
    async fn login_and_consent_pages_without_their_request_say_so_in_a_page() {
        let mut server = Server::start().await;
        for uri in ["/oauth/login", "/oauth/consent"] {
            let (status, _, body) = server.get(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(body.contains("opened without one"), "{uri}: {body}");
        }
        let (status, _, body) = server.post("/oauth/login", &[("request", "x")]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("form is incomplete"), "{body}");
    }
}

//! Backends get a token of their own: the verified caller's token is exchanged (RFC 8693) at the
//! authorization server for one whose audience is the backend, and that token, never the
//! caller's, goes upstream.
//!
//! Plain data and decisions: which route needs which audience, the token request to send, what
//! the answer means, and the per-VM memory of issued tokens. One exchange is in flight per
//! (caller, backend) — the requests that arrive meanwhile wait for it and are resumed or refused
//! together — and an issued token is reused until shortly before it expires. The proxy adapter
//! only sends the request and reports the answer.

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use url::form_urlencoded;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const DEFAULT_PATH: &str = "/oauth/token";
const DEFAULT_TIMEOUT_MS: u32 = 2_000;
const DEFAULT_CACHE_ENTRIES: usize = 10_000;
/// An issued token is not handed out in its last 30 seconds (or its last half, when it lives
/// less than a minute): it must still be valid when the backend checks it.
const MARGIN_SECONDS: i64 = 30;
/// A failed exchange is remembered this long: the requests that waited for it are all refused
/// with it, and a client retrying in a loop does not turn into a loop of token requests.
const FAILURE_MEMORY_MS: i64 = 1_000;
/// A token endpoint answer larger than this is not a token response.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A `token_exchange` section the filter refuses, naming the key and quoting the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeConfigError {
    #[error("`token_exchange.{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("`token_exchange`: give exactly one of `client_secret_env` (the name of an environment variable of the VM: Envoy `vm_config.environment_variables`, Istio `vmConfig.env`) or `client_secret` (inline, for tests and development only)")]
    SecretSource,
    #[error("`token_exchange.client_secret_env` names `{0}`, which is not set (or empty) in the VM's environment: pass it with Envoy's `vm_config.environment_variables` or Istio's `vmConfig.env`")]
    SecretMissing(String),
    #[error("`token_exchange.backends`: route `{0}` is listed twice")]
    DuplicateRoute(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExchange {
    cluster: String,
    path: Option<String>,
    authority: String,
    client_id: String,
    client_secret_env: Option<String>,
    client_secret: Option<String>,
    timeout_ms: Option<u32>,
    cache_entries: Option<usize>,
    backends: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    route: String,
    audience: String,
    scope: Option<String>,
}

/// The gateway's client secret: kept out of `Debug` output and so out of every log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One backend: the Envoy route that leads to it and the audience its own tokens carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub route: String,
    pub audience: String,
    pub scope: Option<String>,
}

/// The checked `token_exchange` section.
#[derive(Debug, Clone)]
pub struct ExchangeSettings {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub client_id: String,
    secret: Secret,
    pub timeout_ms: u32,
    pub cache_entries: usize,
    pub backends: Vec<Backend>,
}

impl ExchangeSettings {
    /// Checks the section; `env` reads the VM's environment (`client_secret_env`).
    pub fn from_raw(
        raw: RawExchange,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ExchangeConfigError> {
        let invalid = |field, reason: String| ExchangeConfigError::Invalid { field, reason };
        if raw.cluster.trim().is_empty() {
            return Err(invalid(
                "cluster",
                "name the Envoy cluster that reaches the authorization server's token endpoint"
                    .into(),
            ));
        }
        let path = raw.path.unwrap_or_else(|| DEFAULT_PATH.to_owned());
        if !path.starts_with('/') || path.contains(['#', ' ']) {
            return Err(invalid(
                "path",
                format!("`{path}` must be a path starting with `/`"),
            ));
        }
        if raw.authority.trim().is_empty() || raw.authority.contains(['/', ' ']) {
            return Err(invalid(
                "authority",
                format!(
                    "`{}` must be the token endpoint's host[:port] (its `Host`)",
                    raw.authority
                ),
            ));
        }
        if raw.client_id.is_empty() || raw.client_id.contains(':') {
            return Err(invalid(
                "client_id",
                format!(
                    "`{}` must be the gateway's client ID, non-empty and without `:`",
                    raw.client_id
                ),
            ));
        }
        let secret = match (raw.client_secret_env, raw.client_secret) {
            (Some(name), None) => env(&name)
                .filter(|value| !value.trim().is_empty())
                .ok_or(ExchangeConfigError::SecretMissing(name))?,
            (None, Some(inline)) if !inline.is_empty() => inline,
            _ => return Err(ExchangeConfigError::SecretSource),
        };
        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(100..=60_000).contains(&timeout_ms) {
            return Err(invalid(
                "timeout_ms",
                format!("{timeout_ms} is not between 100 and 60000"),
            ));
        }
        let cache_entries = raw.cache_entries.unwrap_or(DEFAULT_CACHE_ENTRIES);
        if cache_entries == 0 {
            return Err(invalid("cache_entries", "at least 1".into()));
        }
        if raw.backends.is_empty() {
            return Err(invalid(
                "backends",
                "list at least one `{\"route\", \"audience\"}`".into(),
            ));
        }
        let mut backends: Vec<Backend> = Vec::with_capacity(raw.backends.len());
        for backend in raw.backends {
            if backend.route.trim().is_empty() {
                return Err(invalid(
                    "backends[].route",
                    "name the Envoy route (its `name`) that leads to the backend".into(),
                ));
            }
            if backend.audience.trim().is_empty() {
                return Err(invalid(
                    "backends[].audience",
                    format!(
                        "route `{}`: the audience the backend's tokens must carry",
                        backend.route
                    ),
                ));
            }
            if let Some(scope) = &backend.scope {
                if scope.trim().is_empty() {
                    return Err(invalid(
                        "backends[].scope",
                        format!(
                            "route `{}`: a space-separated list, or leave it out",
                            backend.route
                        ),
                    ));
                }
            }
            if backends.iter().any(|known| known.route == backend.route) {
                return Err(ExchangeConfigError::DuplicateRoute(backend.route));
            }
            backends.push(Backend {
                route: backend.route,
                audience: backend.audience,
                scope: backend.scope,
            });
        }
        Ok(Self {
            cluster: raw.cluster,
            path,
            authority: raw.authority,
            client_id: raw.client_id,
            secret: Secret(secret),
            timeout_ms,
            cache_entries,
            backends,
        })
    }

    /// The backend (an index into `backends`) behind the Envoy route `route`, if any.
    pub fn backend_of(&self, route: Option<&str>) -> Option<usize> {
        let route = route?;
        self.backends.iter().position(|b| b.route == route)
    }

    /// The token request for `caller_token` and backend `backend` (RFC 8693 §2.1), the gateway
    /// authenticated with `client_secret_basic` (RFC 6749 §2.3.1: both parts form-encoded).
    fn request(&self, caller_token: &str, backend: &Backend) -> TokenRequest {
        let encode =
            |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let basic = STANDARD.encode(format!(
            "{}:{}",
            encode(&self.client_id),
            encode(&self.secret.0)
        ));
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", TOKEN_EXCHANGE)
            .append_pair("subject_token", caller_token)
            .append_pair("subject_token_type", ACCESS_TOKEN_TYPE)
            .append_pair("audience", &backend.audience);
        if let Some(scope) = &backend.scope {
            form.append_pair("scope", scope);
        }
        TokenRequest {
            cluster: self.cluster.clone(),
            headers: vec![
                (":method".into(), "POST".into()),
                (":path".into(), self.path.clone()),
                (":authority".into(), self.authority.clone()),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("accept".into(), "application/json".into()),
                ("authorization".into(), format!("Basic {basic}")),
                ("user-agent".into(), "mcp-mesh-auth".into()),
            ],
            body: form.finish().into_bytes(),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// The HTTP request to the token endpoint. It carries the caller's token and the gateway's
/// secret: `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenRequest(cluster `{}`, <redacted>)", self.cluster)
    }
}

/// Which token of which backend: a caller (the digest verification already made of its token —
/// or, when Envoy's jwt_authn verified it, of its claims —, never the token) and a backend index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    caller: [u8; 32],
    backend: usize,
}

impl CredentialKey {
    pub fn new(caller: [u8; 32], backend: usize) -> Self {
        Self { caller, backend }
    }
}

/// Why no token could be had for a backend. The request is refused; nothing goes upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The authorization server answered with an RFC 6749 error.
    #[error("the authorization server refused the exchange: HTTP {status} `{error}`{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        status: u32,
        error: String,
        description: Option<String>,
    },
    /// An answer that is no token response (or an error without an `error`).
    #[error("the token endpoint's answer is unusable: {0}")]
    Unusable(String),
    /// No answer: timeout, reset, unreachable cluster.
    #[error("no answer from the token endpoint (timeout, reset or unreachable cluster)")]
    NoAnswer,
    /// The request could not be sent (unknown cluster).
    #[error("the token request could not be sent through cluster `{0}` (is it defined?)")]
    NotSent(String),
    /// The caller presented no bearer token the filter can pass on (`jwt_authn` removed it).
    #[error("the caller's token is not in the request (with `jwt_authn`, set `forward: true`)")]
    NoCallerToken,
}

impl Failure {
    /// The status of the refusal: 503 when the authorization server could not be asked (try
    /// again), 502 when it answered and gave no token.
    pub fn status(&self) -> u32 {
        match self {
            Failure::NoAnswer | Failure::NotSent(_) => 503,
            Failure::Refused { .. } | Failure::Unusable(_) | Failure::NoCallerToken => 502,
        }
    }

    /// A short category for the client's message and the statistics.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Refused { .. } => "refused",
            Failure::Unusable(_) => "unusable_answer",
            Failure::NoAnswer | Failure::NotSent(_) => "unavailable",
            Failure::NoCallerToken => "no_caller_token",
        }
    }

    /// What the client is told: the category and, for a refusal, the RFC 6749 error code (never
    /// the description, which may describe the configuration).
    pub fn message(&self) -> String {
        let detail = match self {
            Failure::Refused { error, .. } => {
                format!("the authorization server refused the exchange ({error})")
            }
            Failure::Unusable(_) => "the token endpoint's answer was unusable".to_owned(),
            Failure::NoAnswer | Failure::NotSent(_) => {
                "the authorization server is unavailable".to_owned()
            }
            Failure::NoCallerToken => {
                "the caller's token was not available for the exchange".to_owned()
            }
        };
        format!("the gateway could not obtain a credential for this backend: {detail}")
    }
}

/// What the token endpoint answered, as the adapter read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No response (timeout, reset, unreachable cluster).
    None,
    Response {
        status: u32,
        body: Vec<u8>,
    },
}

/// A token issued for a backend.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    token: Rc<str>,
    expires_in: Option<i64>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Issued(<redacted>, expires_in {:?})", self.expires_in)
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<i64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Reads the token endpoint's answer (RFC 8693 §2.2).
pub fn parse_answer(answer: &Answer) -> Result<Issued, Failure> {
    let (status, body) = match answer {
        Answer::None => return Err(Failure::NoAnswer),
        Answer::Response { status, body } => (*status, body),
    };
    if body.len() > MAX_ANSWER_BYTES {
        return Err(Failure::Unusable(format!(
            "{} bytes is over the {MAX_ANSWER_BYTES}-byte limit",
            body.len()
        )));
    }
    let parsed: Result<TokenResponse, _> = serde_json::from_slice(body);
    if status != 200 {
        let (error, description) = match parsed {
            Ok(TokenResponse {
                error: Some(error),
                error_description,
                ..
            }) => (
                printable(&error),
                error_description.as_deref().map(printable),
            ),
            _ => {
                return Err(Failure::Unusable(format!(
                    "HTTP {status} without an OAuth error"
                )))
            }
        };
        return Err(Failure::Refused {
            status,
            error,
            description,
        });
    }
    let parsed =
        parsed.map_err(|err| Failure::Unusable(format!("not a JSON token response: {err}")))?;
    let token = parsed.access_token.unwrap_or_default();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure::Unusable(
            "`access_token` is missing or not a header-safe token".into(),
        ));
    }
    let token_type = parsed.token_type.unwrap_or_default();
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(Failure::Unusable(format!(
            "`token_type` is `{}`, not `Bearer`",
            printable(&token_type)
        )));
    }
    if parsed.expires_in.is_some_and(|seconds| seconds <= 0) {
        return Err(Failure::Unusable("`expires_in` is not positive".into()));
    }
    Ok(Issued {
        token: token.into(),
        expires_in: parsed.expires_in,
    })
}

/// At most 200 printable characters of text from the authorization server, for the log.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// What a request that needs a backend token finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A token to send upstream.
    Ready(Rc<str>),
    /// An exchange for this key is in flight: wait for it until `deadline_ms`.
    Wait { deadline_ms: i64 },
    /// The exchange failed: refuse.
    Failed(Failure),
    /// Nobody asked yet: send `request` (then report its call id with
    /// [`Exchanges::dispatched`]) and wait until `deadline_ms`.
    Start {
        request: TokenRequest,
        deadline_ms: i64,
    },
}

#[derive(Debug)]
enum Slot {
    /// Issued; handed out while `now_ms <= until_ms`.
    Ready {
        token: Rc<str>,
        until_ms: i64,
    },
    /// Asked; the answer is due by `deadline_ms`. `caller_exp` caps the cached token's life.
    Pending {
        call: Option<u32>,
        deadline_ms: i64,
        caller_exp: i64,
    },
    Failed {
        failure: Failure,
        until_ms: i64,
    },
}

/// The backend tokens of one VM, and the exchanges in flight.
#[derive(Debug)]
pub struct Exchanges {
    slots: HashMap<CredentialKey, Slot>,
    /// In-flight calls: the adapter's call id → the key it is for.
    calls: HashMap<u32, CredentialKey>,
    capacity: usize,
}

impl Exchanges {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: HashMap::new(),
            calls: HashMap::new(),
            capacity,
        }
    }

    /// The token of `backend` for the caller whose (verified, unexpired at `caller_exp`) token
    /// is `caller_token`: cached, being fetched, failed a moment ago, or to be asked for.
    pub fn lookup(
        &mut self,
        settings: &ExchangeSettings,
        key: CredentialKey,
        caller_token: &str,
        caller_exp: i64,
        now_ms: i64,
    ) -> Lookup {
        match self.settled(key, now_ms) {
            Some(found) => found,
            None => {
                let Some(target) = settings.backends.get(key.backend) else {
                    return Lookup::Failed(Failure::Unusable("unknown backend".into()));
                };
                self.make_room(now_ms);
                let deadline_ms = now_ms.saturating_add(i64::from(settings.timeout_ms));
                self.slots.insert(
                    key,
                    Slot::Pending {
                        call: None,
                        deadline_ms,
                        caller_exp,
                    },
                );
                Lookup::Start {
                    request: settings.request(caller_token, target),
                    deadline_ms,
                }
            }
        }
    }

    /// What a request waiting on `key` finds now: `None` when nothing is known (never asked,
    /// forgotten, or abandoned: the request then asks itself). An exchange past its deadline
    /// fails here.
    pub fn settled(&mut self, key: CredentialKey, now_ms: i64) -> Option<Lookup> {
        let found = match self.slots.get(&key)? {
            Slot::Ready { token, until_ms } if now_ms <= *until_ms => {
                Lookup::Ready(Rc::clone(token))
            }
            Slot::Pending { deadline_ms, .. } if now_ms < *deadline_ms => Lookup::Wait {
                deadline_ms: *deadline_ms,
            },
            Slot::Pending { call, .. } => {
                if let Some(call) = call {
                    self.calls.remove(call);
                }
                let failure = Failure::NoAnswer;
                self.slots.insert(
                    key,
                    Slot::Failed {
                        failure: failure.clone(),
                        until_ms: now_ms + FAILURE_MEMORY_MS,
                    },
                );
                Lookup::Failed(failure)
            }
            Slot::Failed { failure, until_ms } if now_ms <= *until_ms => {
                Lookup::Failed(failure.clone())
            }
            Slot::Ready { .. } | Slot::Failed { .. } => {
                self.slots.remove(&key);
                return None;
            }
        };
        Some(found)
    }

    /// The request for `key` went out as call `call`.
    pub fn dispatched(&mut self, key: CredentialKey, call: u32) {
        if let Some(Slot::Pending { call: slot, .. }) = self.slots.get_mut(&key) {
            *slot = Some(call);
            self.calls.insert(call, key);
        }
    }

    /// The request for `key` could not be sent, or its answer arrived: remember the outcome.
    /// A token is kept until `expires_in` minus the margin, never past the caller's token.
    pub fn settle(&mut self, key: CredentialKey, outcome: Result<Issued, Failure>, now_ms: i64) {
        let caller_exp = match self.slots.get(&key) {
            Some(Slot::Pending { caller_exp, .. }) => *caller_exp,
            _ => return,
        };
        let slot = match outcome {
            Ok(issued) => {
                let lifetime = issued.expires_in.unwrap_or(0);
                let keep = lifetime - MARGIN_SECONDS.min(lifetime / 2);
                let until_s = (now_ms.div_euclid(1000) + keep).min(caller_exp);
                // The requests that waited for it get it, whatever its remaining life.
                let until_ms = until_s.saturating_mul(1000).max(now_ms);
                Slot::Ready {
                    token: issued.token,
                    until_ms,
                }
            }
            Err(failure) => Slot::Failed {
                failure,
                until_ms: now_ms + FAILURE_MEMORY_MS,
            },
        };
        self.slots.insert(key, slot);
    }

    /// The answer to call `call` arrived: settles its key and returns it (whose waiters are to
    /// be resumed), or `None` for a call that is not (any more) an exchange.
    pub fn on_answer(
        &mut self,
        call: u32,
        answer: &Answer,
        now_ms: i64,
    ) -> Option<(CredentialKey, Result<(), Failure>)> {
        let key = self.calls.remove(&call)?;
        let outcome = parse_answer(answer);
        let summary = outcome.as_ref().map(|_| ()).map_err(Failure::clone);
        self.settle(key, outcome, now_ms);
        Some((key, summary))
    }

    /// The call `call` will never be answered (the request that sent it ended, and the proxy
    /// cancelled it): forgets its key, whose waiters then ask again themselves.
    pub fn abandon(&mut self, call: u32) -> Option<CredentialKey> {
        let key = self.calls.remove(&call)?;
        self.slots.remove(&key);
        Some(key)
    }

    /// Whether `call` is an exchange in flight.
    pub fn is_call(&self, call: u32) -> bool {
        self.calls.contains_key(&call)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Keeps the memory bounded: a full one drops what expired, then, still full, every settled
    /// entry (exchanges in flight stay: requests wait on them).
    fn make_room(&mut self, now_ms: i64) {
        if self.slots.len() < self.capacity {
            return;
        }
        self.slots.retain(|_, slot| match slot {
            Slot::Ready { until_ms, .. } | Slot::Failed { until_ms, .. } => now_ms <= *until_ms,
            Slot::Pending { .. } => true,
        });
        if self.slots.len() >= self.capacity {
            self.slots
                .retain(|_, slot| matches!(slot, Slot::Pending { .. }));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The key of `caller`'s token for `backend`, its digest as verification makes it.
    fn key_of(caller: &str, backend: usize) -> CredentialKey {
        CredentialKey::new(crate::verify::digest(caller), backend)
    }

    const NOW_MS: i64 = 1_800_000_000_000;
    const NOW: i64 = NOW_MS / 1000;

    fn settings_from(value: serde_json::Value) -> Result<ExchangeSettings, ExchangeConfigError> {
        let raw: RawExchange = serde_json::from_value(value).unwrap();
        ExchangeSettings::from_raw(raw, |name| {
            (name == "GATEWAY_SECRET").then(|| "s3cret:&=".to_owned())
        })
    }

    fn base() -> serde_json::Value {
        json!({"cluster": "authserver", "authority": "auth.example.com", "client_id": "mesh-gateway",
               "client_secret_env": "GATEWAY_SECRET",
               "backends": [{"route": "github", "audience": "https://github-mcp.internal/mcp", "scope": "mcp:tools"},
                            {"route": "jira", "audience": "https://jira-mcp.internal/mcp"}]})
    }

    fn settings() -> ExchangeSettings {
        settings_from(base()).unwrap()
    }

    fn with(key: &str, value: serde_json::Value) -> Result<ExchangeSettings, ExchangeConfigError> {
        let mut raw = base();
        raw[key] = value;
        settings_from(raw)
    }

    fn issued(token: &str, expires_in: i64) -> Answer {
        Answer::Response {
            status: 200,
            body: json!({"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE,
                         "token_type": "Bearer", "expires_in": expires_in})
            .to_string()
            .into_bytes(),
        }
    }

    /// Starts an exchange for `caller` and backend 0, dispatched as call `call`.
    fn start(exchanges: &mut Exchanges, caller: &str, call: u32, now_ms: i64) -> CredentialKey {
        let found = exchanges.lookup(&settings(), key_of(caller, 0), caller, NOW + 3600, now_ms);
        assert!(matches!(found, Lookup::Start { .. }), "{found:?}");
        let key = key_of(caller, 0);
        exchanges.dispatched(key, call);
        key
    }

    #[test]
    fn the_token_request_is_rfc_8693_with_the_gateway_authenticated() {
        let Lookup::Start {
            request,
            deadline_ms,
        } = Exchanges::new(10).lookup(
            &settings(),
            key_of("caller.jwt", 0),
            "caller.jwt",
            NOW + 60,
            NOW_MS,
        )
        else {
            panic!("no request");
        };
        assert_eq!(deadline_ms, NOW_MS + 2_000);
        assert_eq!(request.cluster, "authserver");
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header(":path"), Some("/oauth/token"));
        assert_eq!(header(":authority"), Some("auth.example.com"));
        assert_eq!(
            header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        // client_secret_basic: client ID and secret form-encoded, then base64.
        let basic = STANDARD.encode("mesh-gateway:s3cret%3A%26%3D");
        assert_eq!(
            header("authorization"),
            Some(format!("Basic {basic}").as_str())
        );
        let form: HashMap<String, String> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        assert_eq!(form["grant_type"], TOKEN_EXCHANGE);
        assert_eq!(form["subject_token"], "caller.jwt");
        assert_eq!(form["subject_token_type"], ACCESS_TOKEN_TYPE);
        assert_eq!(form["audience"], "https://github-mcp.internal/mcp");
        assert_eq!(form["scope"], "mcp:tools");
        let debug = format!("{request:?} {:?}", settings());
        assert!(
            !debug.contains("caller.jwt") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[test]
    fn a_backend_without_scope_asks_for_none() {
        let Lookup::Start { request, .. } =
            Exchanges::new(10).lookup(&settings(), key_of("t", 1), "t", NOW + 60, NOW_MS)
        else {
            panic!("no request");
        };
        let form: HashMap<String, String> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        assert_eq!(form["audience"], "https://jira-mcp.internal/mcp");
        assert!(!form.contains_key("scope"));
    }

    #[test]
    fn routes_map_to_backends() {
        let settings = settings();
        assert_eq!(settings.backend_of(Some("jira")), Some(1));
        assert_eq!(settings.backend_of(Some("other")), None);
        assert_eq!(settings.backend_of(None), None);
    }

    #[test]
    fn one_exchange_per_caller_and_backend_the_others_wait_and_then_share_it() {
        let mut exchanges = Exchanges::new(10);
        let key = start(&mut exchanges, "alice", 7, NOW_MS);
        for _ in 0..3 {
            let found = exchanges.lookup(
                &settings(),
                key_of("alice", 0),
                "alice",
                NOW + 3600,
                NOW_MS + 10,
            );
            assert_eq!(
                found,
                Lookup::Wait {
                    deadline_ms: NOW_MS + 2_000
                }
            );
        }
        // Another caller, or another backend of the same caller, is another exchange.
        assert!(matches!(
            exchanges.lookup(&settings(), key_of("bob", 0), "bob", NOW + 3600, NOW_MS),
            Lookup::Start { .. }
        ));
        assert!(matches!(
            exchanges.lookup(&settings(), key_of("alice", 1), "alice", NOW + 3600, NOW_MS),
            Lookup::Start { .. }
        ));
        let (settled, outcome) = exchanges
            .on_answer(7, &issued("backend.jwt", 300), NOW_MS + 50)
            .unwrap();
        assert_eq!((settled, outcome), (key, Ok(())));
        assert_eq!(
            exchanges.settled(key, NOW_MS + 50),
            Some(Lookup::Ready("backend.jwt".into()))
        );
        assert_eq!(
            exchanges.on_answer(7, &issued("again", 300), NOW_MS + 60),
            None,
            "answered once"
        );
    }

    #[test]
    fn a_token_is_reused_until_its_margin_and_never_past_the_callers_token() {
        let mut exchanges = Exchanges::new(10);
        let key = start(&mut exchanges, "alice", 1, NOW_MS);
        exchanges.on_answer(1, &issued("t1", 300), NOW_MS);
        assert_eq!(
            exchanges.settled(key, NOW_MS + 269_000),
            Some(Lookup::Ready("t1".into()))
        );
        assert_eq!(
            exchanges.settled(key, NOW_MS + 271_000),
            None,
            "30 s before it expires, ask again"
        );
        // A short-lived token keeps half its life; the caller's token caps it.
        let mut exchanges = Exchanges::new(10);
        let found = exchanges.lookup(&settings(), key_of("bob", 0), "bob", NOW + 20, NOW_MS);
        assert!(matches!(found, Lookup::Start { .. }));
        let key = key_of("bob", 0);
        exchanges.dispatched(key, 2);
        exchanges.on_answer(2, &issued("t2", 300), NOW_MS);
        assert_eq!(
            exchanges.settled(key, NOW_MS + 20_000),
            Some(Lookup::Ready("t2".into()))
        );
        assert_eq!(
            exchanges.settled(key, NOW_MS + 20_001),
            None,
            "never past the caller's exp"
        );
        let key = start(&mut exchanges, "carol", 3, NOW_MS);
        exchanges.on_answer(3, &issued("t3", 10), NOW_MS);
        assert!(exchanges.settled(key, NOW_MS + 5_000).is_some());
        assert_eq!(exchanges.settled(key, NOW_MS + 5_001), None);
    }

    #[test]
    fn a_token_without_expires_in_serves_only_the_requests_that_waited_for_it() {
        let mut exchanges = Exchanges::new(10);
        let key = start(&mut exchanges, "alice", 1, NOW_MS);
        let body = json!({"access_token": "t", "token_type": "bearer"})
            .to_string()
            .into_bytes();
        exchanges.on_answer(1, &Answer::Response { status: 200, body }, NOW_MS + 500);
        assert_eq!(
            exchanges.settled(key, NOW_MS + 500),
            Some(Lookup::Ready("t".into()))
        );
        assert_eq!(exchanges.settled(key, NOW_MS + 501), None);
    }

    #[test]
    fn a_refusal_fails_every_waiter_and_is_remembered_a_moment() {
        let mut exchanges = Exchanges::new(10);
        let key = start(&mut exchanges, "alice", 1, NOW_MS);
        let body = json!({"error": "invalid_target", "error_description": "not for you\n"})
            .to_string()
            .into_bytes();
        let (_, outcome) = exchanges
            .on_answer(1, &Answer::Response { status: 400, body }, NOW_MS)
            .unwrap();
        let failure = Failure::Refused {
            status: 400,
            error: "invalid_target".into(),
            description: Some("not for you".into()),
        };
        assert_eq!(outcome, Err(failure.clone()));
        assert_eq!(
            exchanges.settled(key, NOW_MS + 1_000),
            Some(Lookup::Failed(failure.clone()))
        );
        assert_eq!(failure.status(), 502);
        assert_eq!(failure.message(), "the gateway could not obtain a credential for this backend: the authorization server refused the exchange (invalid_target)");
        assert!(
            matches!(
                exchanges.lookup(
                    &settings(),
                    key_of("alice", 0),
                    "alice",
                    NOW + 3600,
                    NOW_MS + 1_001
                ),
                Lookup::Start { .. }
            ),
            "then asked again"
        );
    }

    #[test]
    fn no_answer_by_the_deadline_fails_closed_and_a_late_answer_is_ignored() {
        let mut exchanges = Exchanges::new(10);
        let key = start(&mut exchanges, "alice", 1, NOW_MS);
        assert_eq!(
            exchanges.settled(key, NOW_MS + 1_999),
            Some(Lookup::Wait {
                deadline_ms: NOW_MS + 2_000
            })
        );
        assert_eq!(
            exchanges.settled(key, NOW_MS + 2_000),
            Some(Lookup::Failed(Failure::NoAnswer))
        );
        assert_eq!(Failure::NoAnswer.status(), 503);
        assert_eq!(
            exchanges.on_answer(1, &issued("late", 300), NOW_MS + 2_100),
            None
        );
        assert_eq!(
            exchanges.settled(key, NOW_MS + 2_100),
            Some(Lookup::Failed(Failure::NoAnswer))
        );
        // The proxy's own timeout (no response) says the same.
        let key = start(&mut exchanges, "bob", 2, NOW_MS);
        exchanges.on_answer(2, &Answer::None, NOW_MS + 2_000);
        assert_eq!(
            exchanges.settled(key, NOW_MS + 2_000),
            Some(Lookup::Failed(Failure::NoAnswer))
        );
    }

    #[test]
    fn an_abandoned_exchange_is_forgotten_so_that_a_waiter_asks_again() {
        let mut exchanges = Exchanges::new(10);
        let key = start(&mut exchanges, "alice", 1, NOW_MS);
        assert_eq!(exchanges.abandon(1), Some(key));
        assert!(!exchanges.is_call(1));
        assert_eq!(exchanges.settled(key, NOW_MS + 10), None);
        assert!(matches!(
            exchanges.lookup(
                &settings(),
                key_of("alice", 0),
                "alice",
                NOW + 3600,
                NOW_MS + 10
            ),
            Lookup::Start { .. }
        ));
    }

    #[test]
    fn answers_that_are_no_usable_token_are_failures() {
        let cases = [
            (200, b"not json".to_vec(), "unusable_answer"),
            (
                200,
                json!({"token_type": "Bearer"}).to_string().into_bytes(),
                "unusable_answer",
            ),
            (
                200,
                json!({"access_token": "a b", "token_type": "Bearer"})
                    .to_string()
                    .into_bytes(),
                "unusable_answer",
            ),
            (
                200,
                json!({"access_token": "t", "token_type": "N_A"})
                    .to_string()
                    .into_bytes(),
                "unusable_answer",
            ),
            (
                200,
                json!({"access_token": "t", "token_type": "Bearer", "expires_in": 0})
                    .to_string()
                    .into_bytes(),
                "unusable_answer",
            ),
            (500, b"<html>".to_vec(), "unusable_answer"),
            (
                401,
                json!({"error": "invalid_client"}).to_string().into_bytes(),
                "refused",
            ),
            (200, vec![b' '; MAX_ANSWER_BYTES + 1], "unusable_answer"),
        ];
        for (status, body, reason) in cases {
            let failure = parse_answer(&Answer::Response { status, body }).unwrap_err();
            assert_eq!(failure.reason(), reason, "{failure}");
        }
        assert_eq!(parse_answer(&Answer::None), Err(Failure::NoAnswer));
    }

    #[test]
    fn the_memory_is_bounded_but_never_drops_an_exchange_in_flight() {
        let mut exchanges = Exchanges::new(2);
        let first = start(&mut exchanges, "a", 1, NOW_MS);
        let second = start(&mut exchanges, "b", 2, NOW_MS);
        exchanges.on_answer(2, &issued("t", 300), NOW_MS);
        start(&mut exchanges, "c", 3, NOW_MS);
        assert_eq!(exchanges.len(), 2);
        assert!(matches!(
            exchanges.settled(first, NOW_MS),
            Some(Lookup::Wait { .. })
        ));
        assert_eq!(exchanges.settled(second, NOW_MS), None);
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let error = |key, value| with(key, value).unwrap_err().to_string();
        assert!(error("cluster", json!(" ")).contains("`token_exchange.cluster`"));
        assert!(error("path", json!("oauth/token")).contains("`oauth/token`"));
        assert!(error("authority", json!("http://a/")).contains("`token_exchange.authority`"));
        assert!(error("client_id", json!("a:b")).contains("`a:b`"));
        assert!(error("timeout_ms", json!(5)).contains("`token_exchange.timeout_ms`: 5 is not"));
        assert!(error("cache_entries", json!(0)).contains("cache_entries"));
        assert!(error("backends", json!([])).contains("`token_exchange.backends`"));
        assert!(error("client_secret_env", json!("UNSET")).contains("`UNSET`, which is not set"));
        assert!(error("client_secret", json!("inline")).contains("exactly one of"));
        let twice = json!([{"route": "r", "audience": "a"}, {"route": "r", "audience": "b"}]);
        assert_eq!(
            with("backends", twice).unwrap_err(),
            ExchangeConfigError::DuplicateRoute("r".into())
        );
        assert!(error("backends", json!([{"route": "r", "audience": ""}])).contains("route `r`"));
        let mut inline = base();
        inline.as_object_mut().unwrap().remove("client_secret_env");
        inline["client_secret"] = json!("dev-secret");
        assert!(
            settings_from(inline).is_ok(),
            "inline, for tests and development"
        );
    }
}

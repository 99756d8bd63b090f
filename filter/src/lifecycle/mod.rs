//! The journey of one request through the filter, as a state machine.
//!
//! The proxy adapter hands every callback of a stream to a [`Stream`] (request headers, each
//! request body chunk, request trailers, the release of a request held for keys, response
//! headers, each response body chunk, response trailers) and carries out what it answers. Every
//! side effect goes through [`Host`], so the same machine runs under the fake host of the tests
//! and under Envoy.
//!
//! Nothing moves unless the machine decided so: a request that is not on a public path is
//! authenticated; a request to a backend that gets a token of its own (`token_exchange`) is held
//! until that token replaces the caller's, right after authentication (in the mode where request
//! headers go upstream at header time, they must carry it); an authenticated `POST` is held until
//! its whole body (whether it ends with a last body chunk, an empty chunk or trailers) has been
//! decided; a request that should carry no body is refused when one shows up; a held or answered
//! request keeps everything back.

mod answer;
mod host;
mod route;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use crate::binding::Purpose;
use crate::call_gate::{self, CallHeaders, CallVerdict};
use crate::cors::Grant;
use crate::engine::Engine;
use crate::exchange::{CredentialKey, Failure, Lookup};
use crate::gate::{self, Forward, KidRefetch, RequestHead, Verdict};
use crate::jsonrpc::{INTERNAL_ERROR, INVALID_REQUEST};
use crate::rejection::Rejection;
use crate::response::{self, LocalResponse};
use crate::tasks::Owner;
use crate::telemetry::Caller;
use crate::verify::VerifiedToken;

pub use answer::ResponseHead;
pub use host::{Host, HostError, Observation};

use answer::Answer;
use route::Route;

/// The Streamable HTTP session header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The JSON-RPC error code of an unknown session (the transport's 404 carries it).
const SESSION_NOT_FOUND: i64 = -32001;

/// What a callback tells the host to do with what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Let it move on: the headers, or the body buffered so far with this chunk.
    Continue,
    /// Keep it here: headers stopped, body buffered.
    Pause,
    /// Keep it here and wait for the keys of issuer `issuer` (an index) until `deadline_ms`;
    /// the adapter calls [`Stream::on_keys`] when they change or the deadline passes.
    Hold { issuer: usize, deadline_ms: i64 },
    /// Keep it here and wait for the exchange of the token for its backend until
    /// `deadline_ms`; the adapter calls [`Stream::on_credential`] when the exchange settles or
    /// the deadline passes.
    Await {
        credential: CredentialKey,
        deadline_ms: i64,
    },
}

/// Whether a request re-decided after a hold may be held again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Until(i64),
    /// Its wait is over: keys still missing is a refusal.
    No,
}

/// Where the request of a stream stands.
#[derive(Debug)]
enum Request {
    /// No headers yet.
    New,
    /// Waiting for its issuer's keys; nothing of it may pass.
    Held(Box<RequestHead>),
    /// Authenticated, waiting for the token of its backend (exchanged for the caller's); then
    /// it is `next`. Nothing of it may pass.
    Exchanging {
        key: CredentialKey,
        backend: usize,
        caller: CallerToken,
        next: Box<Request>,
    },
    /// Outside the protected space (or the metadata document): passes untouched.
    Public,
    /// An authenticated MCP `POST`: its body is decided once complete.
    Mcp(CallHeaders),
    /// Authenticated, and must carry no body (`GET`, `DELETE`, ...).
    Bodiless,
    /// Decided and let through.
    Released,
    /// Answered here; nothing more of it moves.
    Answered,
}

/// The caller's own token, kept while its request waits for an exchange that it may have to
/// ask for itself (when the request that asked first went away). Never shown by `Debug`.
struct CallerToken(String);

impl std::fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerToken(<redacted>)")
    }
}

/// Which callback is asking, for the decisions whose outcome depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Headers,
    Body,
    /// The release of a held request, from the timer or a JWKS answer.
    Resume,
}

/// One HTTP stream through the filter.
#[derive(Debug)]
pub struct Stream {
    request: Request,
    /// The request's end (last body chunk, or trailers) has reached the filter.
    ended: bool,
    /// Body bytes the host reported for the request so far.
    body_bytes: usize,
    identity: Option<Rc<VerifiedToken>>,
    answer: Answer,
    /// What the request's browser origin may read of the answer.
    cors: Grant,
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            request: Request::New,
            ended: false,
            body_bytes: 0,
            identity: None,
            answer: Answer::Pass,
            cors: Grant::NotCrossOrigin,
        }
    }
}

impl Stream {
    /// The request head arrived. `end_of_stream`: the request has no body.
    pub fn on_request_headers(
        &mut self,
        engine: &mut Engine,
        host: &mut dyn Host,
        head: RequestHead,
        end_of_stream: bool,
        now_ms: i64,
    ) -> Step {
        if !matches!(self.request, Request::New) {
            return self.answer(host, &internal_error("request headers arrived twice"));
        }
        self.ended = end_of_stream;
        self.cors = Grant::of(engine.config.cors.as_ref(), &head.origins);
        let wait_ms = i64::try_from(engine.config.jwks_wait_ms).unwrap_or(i64::MAX);
        let hold = Hold::Until(now_ms.saturating_add(wait_ms));
        self.decide_head(
            engine,
            host,
            head,
            now_ms,
            KidRefetch::Allowed,
            hold,
            At::Headers,
        )
    }

    /// A chunk of the request body; `body_size` is all the host has buffered so far.
    pub fn on_request_body(
        &mut self,
        engine: &mut Engine,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Step {
        self.body_bytes = body_size;
        self.ended |= end_of_stream;
        match &self.request {
            Request::Public | Request::Released => Step::Continue,
            Request::New | Request::Held(_) | Request::Exchanging { .. } | Request::Answered => {
                Step::Pause
            }
            Request::Bodiless | Request::Mcp(_) => self.proceed(engine, host, At::Body),
        }
    }

    /// The request's trailers: its end, whatever the last body chunk said.
    pub fn on_request_trailers(&mut self, engine: &mut Engine, host: &mut dyn Host) -> Step {
        self.ended = true;
        match &self.request {
            Request::Public => return Step::Continue,
            Request::New | Request::Answered => return Step::Pause,
            Request::Held(_)
            | Request::Exchanging { .. }
            | Request::Released
            | Request::Bodiless
            | Request::Mcp(_) => {}
        }
        if let Err(err) = host.remove_request_trailers() {
            return self.answer(host, &internal_error(&err.to_string()));
        }
        match &self.request {
            Request::Released => Step::Continue,
            Request::Bodiless | Request::Mcp(_) => self.proceed(engine, host, At::Body),
            _ => Step::Pause,
        }
    }

    /// The keys of the issuer a held request waits for changed, or its deadline passed: decide
    /// it again. The effects (resume, answer) are carried out here; a `Step::Hold` asks the
    /// adapter to hold it again, anything else needs nothing more.
    pub fn on_keys(
        &mut self,
        engine: &mut Engine,
        host: &mut dyn Host,
        now_ms: i64,
        hold: Hold,
    ) -> Step {
        let head = match std::mem::replace(&mut self.request, Request::New) {
            Request::Held(head) => *head,
            other => {
                self.request = other;
                return Step::Pause;
            }
        };
        let step = self.decide_head(
            engine,
            host,
            head,
            now_ms,
            KidRefetch::AlreadyTried,
            hold,
            At::Resume,
        );
        if step == Step::Continue {
            if let Err(err) = host.resume_request() {
                log::warn!("mcp-mesh-auth: could not resume a held request: {err}");
            }
        }
        step
    }

    /// The exchange a request waits for settled, or its deadline passed: send the backend's
    /// token upstream and move on, or refuse. The effects are carried out here, like
    /// [`Stream::on_keys`]'s; a `Step::Await` asks the adapter to hold it again (the exchange it
    /// waited for was abandoned, and it asked again itself).
    pub fn on_credential(&mut self, engine: &mut Engine, host: &mut dyn Host, now_ms: i64) -> Step {
        let (key, backend, caller, next) = match std::mem::replace(&mut self.request, Request::New)
        {
            Request::Exchanging {
                key,
                backend,
                caller,
                next,
            } => (key, backend, caller, next),
            other => {
                self.request = other;
                return Step::Pause;
            }
        };
        let found = match engine.exchanges.settled(key, now_ms) {
            Some(found) => found,
            None => match (&engine.config.token_exchange, &self.identity) {
                (Some(settings), Some(identity)) => {
                    let exp = identity.expires_at;
                    engine
                        .exchanges
                        .lookup(settings, key, &caller.0, exp, now_ms)
                }
                _ => return self.answer(host, &internal_error("an exchange lost its settings")),
            },
        };
        let step = self.carry_out(
            engine,
            host,
            found,
            key,
            backend,
            caller,
            *next,
            At::Resume,
            now_ms,
        );
        if step == Step::Continue {
            if let Err(err) = host.resume_request() {
                log::warn!("mcp-mesh-auth: could not resume a held request: {err}");
            }
        }
        step
    }

    /// The response head. Decides how its body is treated (passed, or cut to the caller).
    pub fn on_response_headers(
        &mut self,
        engine: &mut Engine,
        host: &mut dyn Host,
        head: &ResponseHead,
        end_of_stream: bool,
    ) -> Step {
        match self.request {
            // Our own answer on its way out, its CORS headers set when it was made.
            Request::Answered => return Step::Continue,
            // Outside the protected space: not ours to change.
            Request::Public => {}
            _ => {
                if let Err(err) = self.cross_origin(host) {
                    return self.answer(host, &internal_error(&err.to_string()));
                }
            }
        }
        answer::on_headers(self, engine, host, head, end_of_stream)
    }

    /// A chunk of the response body; `body_size` is all the host has buffered so far.
    pub fn on_response_body(
        &mut self,
        engine: &mut Engine,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Step {
        answer::on_body(self, engine, host, body_size, end_of_stream)
    }

    /// The response's trailers: its end.
    pub fn on_response_trailers(&mut self, engine: &mut Engine, host: &mut dyn Host) -> Step {
        answer::on_trailers(self, engine, host)
    }

    /// Whether the stream was answered here (nothing of it went or goes upstream any more).
    pub fn is_answered(&self) -> bool {
        matches!(self.request, Request::Answered)
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_head(
        &mut self,
        engine: &mut Engine,
        host: &mut dyn Host,
        head: RequestHead,
        now_ms: i64,
        kid_refetch: KidRefetch,
        hold: Hold,
        at: At,
    ) -> Step {
        let verdict = gate::decide(
            &engine.config,
            &head,
            &mut engine.keys,
            &mut engine.cache,
            now_ms,
            kid_refetch,
        );
        let forward = match verdict {
            Verdict::Forward(forward) => forward,
            Verdict::Wait { issuer } => match hold {
                Hold::Until(deadline_ms) => {
                    self.request = Request::Held(Box::new(head));
                    return Step::Hold {
                        issuer,
                        deadline_ms,
                    };
                }
                Hold::No => {
                    let issuer = engine.keys.issuer(issuer).unwrap_or_default().to_owned();
                    let rejection = Rejection::KeysUnavailable(issuer);
                    let response = response::refusal(&engine.config, &rejection);
                    return self.reject(host, &head, &response, &rejection);
                }
            },
            Verdict::Respond {
                response,
                rejection: Some(rejection),
            } => return self.reject(host, &head, &response, &rejection),
            Verdict::Respond {
                response,
                rejection: None,
            } => return self.answer(host, &response),
        };
        if let Err(err) = rewrite_headers(host, &forward) {
            return self.answer(host, &internal_error(&err.to_string()));
        }
        self.request = match forward.identity {
            None => Request::Public,
            Some(identity) => {
                host.observe(Observation::Allowed(&Caller::of(&identity)));
                let route = route::route(&engine.config, &head);
                if let Err(refusal) = self.bind_session(engine, host, &identity, &head) {
                    return self.refuse(host, &head, &refusal);
                }
                let (expires_at, caller) = (identity.expires_at, identity.digest);
                self.identity = Some(identity);
                let next = match route {
                    Route::Mcp => Request::Mcp(head.call.clone()),
                    Route::Bodiless { stream } => {
                        if stream {
                            self.answer = Answer::EventStream;
                        }
                        Request::Bodiless
                    }
                    Route::Refuse(refusal) => return self.refuse(host, &head, &refusal),
                };
                let settings = engine.config.token_exchange.as_ref();
                let backend = settings.and_then(|s| s.backend_of(head.route_name.as_deref()));
                if let (Some(settings), Some(backend)) = (settings, backend) {
                    let Ok(token) = gate::bearer_token(&head.authorization) else {
                        return self.exchange_failed(
                            engine,
                            host,
                            backend,
                            &Failure::NoCallerToken,
                        );
                    };
                    let key = CredentialKey::new(caller, backend);
                    let found = engine
                        .exchanges
                        .lookup(settings, key, token, expires_at, now_ms);
                    let caller = CallerToken(token.to_owned());
                    return self
                        .carry_out(engine, host, found, key, backend, caller, next, at, now_ms);
                }
                next
            }
        };
        self.proceed(engine, host, at)
    }

    /// Does what the memory of exchanges said for a request on its way to `backend`: puts the
    /// backend's token in place of the caller's and moves on, waits for the exchange (asking for
    /// it first when nobody has), or refuses.
    #[allow(clippy::too_many_arguments)]
    fn carry_out(
        &mut self,
        engine: &mut Engine,
        host: &mut dyn Host,
        found: Lookup,
        key: CredentialKey,
        backend: usize,
        caller: CallerToken,
        next: Request,
        at: At,
        now_ms: i64,
    ) -> Step {
        let deadline_ms = match found {
            Lookup::Ready(token) => {
                // Replaces: the caller's token never travels with (or instead of) the backend's.
                let bearer = format!("Bearer {token}");
                if let Err(err) = host.set_request_header("authorization", Some(&bearer)) {
                    return self.answer(host, &internal_error(&err.to_string()));
                }
                self.request = next;
                return self.proceed(engine, host, at);
            }
            Lookup::Failed(failure) => {
                return self.exchange_failed(engine, host, backend, &failure)
            }
            Lookup::Wait { deadline_ms } => deadline_ms,
            Lookup::Start {
                request,
                deadline_ms,
            } => match host.dispatch(&request) {
                Ok(call) => {
                    engine.exchanges.dispatched(key, call);
                    deadline_ms
                }
                Err(_) => {
                    let failure = Failure::NotSent(request.cluster.clone());
                    engine.exchanges.settle(key, Err(failure.clone()), now_ms);
                    return self.exchange_failed(engine, host, backend, &failure);
                }
            },
        };
        self.request = Request::Exchanging {
            key,
            backend,
            caller,
            next: Box::new(next),
        };
        Step::Await {
            credential: key,
            deadline_ms,
        }
    }

    /// No token for the backend: a JSON-RPC error that says so, and nothing goes upstream.
    fn exchange_failed(
        &mut self,
        engine: &Engine,
        host: &mut dyn Host,
        backend: usize,
        failure: &Failure,
    ) -> Step {
        let route = engine
            .config
            .token_exchange
            .as_ref()
            .and_then(|settings| settings.backends.get(backend))
            .map_or("?", |backend| backend.route.as_str());
        log::warn!(
            "mcp-mesh-auth: refused: no token for the backend of route `{route}` (reason={}): {failure}",
            failure.reason()
        );
        let mut response =
            response::jsonrpc_error(failure.status(), None, INTERNAL_ERROR, &failure.message());
        if failure.status() == 503 {
            response.headers.push(("retry-after".into(), "1".into()));
        }
        self.answer(host, &response)
    }

    /// Moves an authenticated request on as far as what has arrived of it allows.
    fn proceed(&mut self, engine: &mut Engine, host: &mut dyn Host, at: At) -> Step {
        let hold_headers = engine.config.headers_stop_iteration;
        let call = match &self.request {
            Request::Public | Request::Released => return Step::Continue,
            Request::New | Request::Held(_) | Request::Exchanging { .. } | Request::Answered => {
                return Step::Pause
            }
            Request::Bodiless if self.body_bytes > 0 => {
                let refusal = response::jsonrpc_error(
                    400,
                    None,
                    INVALID_REQUEST,
                    "this request may not carry a body: only POST sends JSON-RPC messages",
                );
                return self.answer(host, &refusal);
            }
            Request::Bodiless if self.ended => {
                self.request = Request::Released;
                return Step::Continue;
            }
            Request::Bodiless => return headers_may_go(at, hold_headers),
            Request::Mcp(call) => call.clone(),
        };
        let max = engine.config.max_body_bytes;
        if self.body_bytes > max {
            let message = format!("the request body is over the {max}-byte limit");
            let refusal = response::jsonrpc_error(413, None, INVALID_REQUEST, &message);
            return self.answer(host, &refusal);
        }
        if !self.ended {
            return headers_may_go(at, hold_headers);
        }
        let body = if self.body_bytes == 0 && at != At::Body {
            Vec::new()
        } else {
            match host.request_body(max.saturating_add(1)) {
                Ok(body) => body,
                Err(err) => return self.answer(host, &internal_error(&err.to_string())),
            }
        };
        if body.len() > max {
            let message = format!("the request body is over the {max}-byte limit");
            let refusal = response::jsonrpc_error(413, None, INVALID_REQUEST, &message);
            return self.answer(host, &refusal);
        }
        self.decide_call(engine, host, &call, &body)
    }

    /// Decides an MCP `POST` on its complete body.
    fn decide_call(
        &mut self,
        engine: &mut Engine,
        host: &mut dyn Host,
        call: &CallHeaders,
        body: &[u8],
    ) -> Step {
        let Some(identity) = self.identity.clone() else {
            return self.answer(host, &internal_error("an MCP request lost its caller"));
        };
        let (verdict, audit) = call_gate::decide(
            &engine.config,
            engine.config.authorizer.as_deref(),
            &engine.annotations,
            &identity,
            call,
            body,
        );
        if let Some(audit) = audit {
            host.observe(Observation::Decided(&audit));
            log::info!("mcp-mesh-auth: audit {}", audit.to_json());
        }
        let forward = match verdict {
            CallVerdict::Pass(forward) => forward,
            CallVerdict::Refuse(refusal) => return self.answer(host, &refusal),
        };
        if let Some(new_body) = &forward.body {
            if let Err(refusal) = replace_body(engine, host, body.len(), new_body) {
                return self.answer(host, &refusal);
            }
        }
        self.request = Request::Released;
        if let Some(pending) = forward.answer {
            self.answer = Answer::Awaited(pending);
        }
        Step::Continue
    }

    /// A request refused because of its token: counted and logged with the reason.
    fn reject(
        &mut self,
        host: &mut dyn Host,
        head: &RequestHead,
        response: &LocalResponse,
        rejection: &Rejection,
    ) -> Step {
        host.observe(Observation::Rejected(rejection));
        log::info!(
            "mcp-mesh-auth: rejected {} {}: status={} reason={} detail=\"{rejection}\"",
            head.method,
            head.path_only(),
            response.status,
            rejection.reason(),
        );
        self.answer(host, response)
    }

    /// A request refused for its shape (path, method, session): logged with the answer.
    fn refuse(&mut self, host: &mut dyn Host, head: &RequestHead, refusal: &LocalResponse) -> Step {
        log::info!(
            "mcp-mesh-auth: refused {} {}: status={} {}",
            head.method,
            head.path_only(),
            refusal.status,
            refusal.body
        );
        self.answer(host, refusal)
    }

    /// Answers locally. The stream is marked answered first, so that whatever the host still
    /// delivers of the request (the rest of a body refused on its first chunk, trailers) is
    /// held back instead of handed to the next filter.
    fn answer(&mut self, host: &mut dyn Host, response: &LocalResponse) -> Step {
        self.request = Request::Answered;
        self.answer = Answer::Pass;
        if let Err(err) = host.send(&self.cors.decorate(response)) {
            log::error!("mcp-mesh-auth: could not answer locally: {err}");
        }
        Step::Pause
    }

    /// Puts the filter's `Access-Control-*` headers on the server's answer to a cross-origin
    /// request, in place of the server's: an origin the operator did not list reads nothing.
    fn cross_origin(&self, host: &mut dyn Host) -> Result<(), HostError> {
        let Some(changes) = self.cors.upstream_changes() else {
            return Ok(());
        };
        for (name, value) in changes {
            host.set_response_header(name, value.as_deref())?;
        }
        if self.cors.varies() {
            host.add_response_header("vary", "origin")?;
        }
        Ok(())
    }

    /// Opens the sealed `Mcp-Session-Id` a client presents and hands the server its own id.
    /// A session sealed to another principal is "not found" (404), as the transport answers an
    /// unknown session, so the client starts its own.
    fn bind_session(
        &mut self,
        engine: &Engine,
        host: &mut dyn Host,
        identity: &VerifiedToken,
        head: &RequestHead,
    ) -> Result<(), LocalResponse> {
        let Some(key) = &engine.config.binding_key else {
            return Ok(());
        };
        let sealed = match head.session_ids.as_slice() {
            [] => return Ok(()),
            [one] => one,
            _ => {
                let message = "send one Mcp-Session-Id header, not several";
                return Err(response::jsonrpc_error(400, None, INVALID_REQUEST, message));
            }
        };
        let Some(owner) = Owner::of(identity) else {
            let message = "session not found: a token without `sub` or `client_id` holds none";
            return Err(response::jsonrpc_error(
                404,
                None,
                SESSION_NOT_FOUND,
                message,
            ));
        };
        match key.open(Purpose::Session, sealed, owner.issuer, owner.subject) {
            Ok(id) => host
                .set_request_header(SESSION_HEADER, Some(&id))
                .map_err(|err| internal_error(&err.to_string())),
            Err(err) => {
                log::info!("mcp-mesh-auth: session refused: {err}");
                let message = "session not found for this caller: initialize a new session";
                Err(response::jsonrpc_error(
                    404,
                    None,
                    SESSION_NOT_FOUND,
                    message,
                ))
            }
        }
    }
}

/// Forwards `new_body` instead of the client's (a task id opened for the server). Only possible
/// while the request head is still held here, since its `Content-Length` changes.
fn replace_body(
    engine: &Engine,
    host: &mut dyn Host,
    size: usize,
    new_body: &[u8],
) -> Result<(), LocalResponse> {
    if !engine.config.headers_stop_iteration {
        let message = "task methods need the request head held until the body is decided: \
                       set Envoy's allow_on_headers_stop_iteration and `headers_stop_iteration`";
        return Err(response::jsonrpc_error(501, None, INVALID_REQUEST, message));
    }
    let length = new_body.len().to_string();
    host.replace_request_body(size, new_body)
        .and_then(|()| host.set_request_header("content-length", Some(&length)))
        .map_err(|err| internal_error(&err.to_string()))
}

/// An authenticated request whose end has not arrived: in the headers callback, its headers may
/// go ahead only where the host would not show the filter the body otherwise (Envoy without
/// `allow_on_headers_stop_iteration`); body callbacks buffer.
fn headers_may_go(at: At, hold_headers: bool) -> Step {
    match at {
        At::Headers | At::Resume if !hold_headers => Step::Continue,
        _ => Step::Pause,
    }
}

/// Removes the token and spoofable identity headers, then sets the verified ones. Any failure
/// stops the request: forwarding with the token still attached is not an option.
fn rewrite_headers(host: &mut dyn Host, forward: &Forward) -> Result<(), HostError> {
    for name in &forward.remove {
        host.set_request_header(name, None)?;
    }
    for (name, value) in &forward.set {
        host.set_request_header(name, Some(value))?;
    }
    Ok(())
}

/// A 500 for a failure of the filter or its host, saying which.
pub fn internal_error(detail: &str) -> LocalResponse {
    LocalResponse {
        status: 500,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: serde_json::json!({"error": "server_error", "error_description": detail}).to_string(),
    }
}

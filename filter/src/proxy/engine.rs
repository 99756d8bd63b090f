//! Per-VM state shared by the root context and every HTTP context of the VM, and the one place
//! where a gate verdict is turned into host calls.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType};

use super::host;
use super::metrics::Metrics;
use super::stream::{Inspect, SharedStream};
use crate::annotations::ToolAnnotations;
use crate::config::FilterConfig;
use crate::gate::{self, Forward, KidRefetch, RequestHead, Verdict};
use crate::key_store::KeyStore;
use crate::list_decisions::ListMemo;
use crate::rejection::Rejection;
use crate::response::{self, LocalResponse};
use crate::token_cache::TokenCache;
use crate::waiters::{Waiter, Waiters};

/// List decisions remembered per VM (token × item); a full memo starts over.
const LIST_MEMO_ENTRIES: usize = 100_000;

/// A request held for keys: its head, and the stream state to set up when it is let through.
pub type Held = (RequestHead, SharedStream);

pub struct Engine {
    pub config: FilterConfig,
    pub keys: KeyStore,
    pub cache: TokenCache,
    pub waiters: Waiters<Held>,
    pub metrics: Metrics,
    pub annotations: ToolAnnotations,
    pub list_memo: ListMemo,
    /// In-flight JWKS fetches: call token → issuer index.
    pub fetches: HashMap<u32, usize>,
}

pub type SharedEngine = Rc<RefCell<Engine>>;

impl Engine {
    pub fn new(config: FilterConfig) -> Self {
        Self {
            keys: KeyStore::new(&config.issuers),
            cache: TokenCache::new(
                config.token_cache_entries,
                config.token_policy.clock_skew_seconds,
            ),
            waiters: Waiters::default(),
            metrics: Metrics::define(),
            annotations: ToolAnnotations::default(),
            list_memo: ListMemo::new(LIST_MEMO_ENTRIES),
            fetches: HashMap::new(),
            config,
        }
    }
}

/// A decision with the engine no longer borrowed, so that carrying it out may re-enter the VM.
pub enum Act {
    Respond(LocalResponse),
    Forward(Forward),
    Held,
}

/// Whether a request may be held for keys, or must be answered now (its wait is over).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Until(i64),
    No,
}

pub fn decide(
    engine: &SharedEngine,
    context_id: u32,
    (head, stream): Held,
    now_ms: i64,
    kid_refetch: KidRefetch,
    hold: Hold,
) -> Act {
    let Ok(mut engine) = engine.try_borrow_mut() else {
        return Act::Respond(internal_error("filter state busy"));
    };
    let Engine {
        config,
        keys,
        cache,
        waiters,
        metrics,
        ..
    } = &mut *engine;
    let verdict = gate::decide(config, &head, keys, cache, now_ms, kid_refetch);
    // A held request must not let its body through either (see `StreamState::held`).
    stream.borrow_mut().held = matches!((&verdict, hold), (Verdict::Wait { .. }, Hold::Until(_)));
    let (response, rejection) = match verdict {
        Verdict::Forward(forward) => {
            if let Some(identity) = &forward.identity {
                metrics.allowed();
                let inspect = config.authorizer.is_some()
                    && head.method == "POST"
                    && head.path_only() == config.mcp_path;
                if inspect {
                    let call = head.call.clone();
                    stream.borrow_mut().inspect = Some(Inspect {
                        identity: Rc::clone(identity),
                        headers: call,
                    });
                }
            }
            return Act::Forward(forward);
        }
        Verdict::Wait { issuer } => match hold {
            Hold::Until(deadline_ms) => {
                waiters.hold(Waiter {
                    context_id,
                    issuer,
                    deadline_ms,
                    request: (head, stream),
                });
                return Act::Held;
            }
            Hold::No => {
                let rejection =
                    Rejection::KeysUnavailable(keys.issuer(issuer).unwrap_or_default().to_owned());
                (response::refusal(config, &rejection), Some(rejection))
            }
        },
        Verdict::Respond {
            response,
            rejection,
        } => (response, rejection),
    };
    if let Some(rejection) = &rejection {
        metrics.rejected(rejection);
        log::info!(
            "mcp-mesh-auth: rejected {} {}: status={} reason={} detail=\"{rejection}\"",
            head.method,
            head.path_only(),
            response.status,
            rejection.reason(),
        );
    }
    Act::Respond(response)
}

/// Carries out a decision for the stream being processed; returns what the callback answers.
pub fn carry_out(act: Act, stream: &SharedStream) -> Action {
    match act {
        Act::Respond(response) => answer(stream, &response),
        Act::Forward(forward) => match rewrite_headers(&forward) {
            Ok(()) => Action::Continue,
            Err(detail) => answer(stream, &internal_error(detail)),
        },
        Act::Held => Action::Pause,
    }
}

/// Carries out a decision for a held stream (the effective context was switched to it).
pub fn carry_out_resumed(engine: &SharedEngine, act: Act, stream: &SharedStream) {
    let forward = match act {
        Act::Held => return,
        Act::Respond(response) => {
            answer(stream, &response);
            return;
        }
        Act::Forward(forward) => forward,
    };
    if let Err(detail) = rewrite_headers(&forward) {
        answer(stream, &internal_error(detail));
        return;
    }
    let hold_headers = engine
        .try_borrow()
        .map(|e| e.config.headers_stop_iteration)
        .unwrap_or(false);
    let (inspect, early) = {
        let mut state = stream.borrow_mut();
        (state.inspect.clone(), state.early_body.take())
    };
    let resume = match (inspect, early) {
        // The whole body arrived while held: decide on it now.
        (Some(inspect), Some((size, true))) => {
            match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
                Ok(body) => {
                    super::stream::decide_body(engine, stream, inspect, &body.unwrap_or_default())
                        == Action::Continue
                }
                Err(_) => {
                    answer(stream, &internal_error("could not read the request body"));
                    false
                }
            }
        }
        // The body callbacks still to come decide, and continue the request themselves.
        (Some(_), _) if hold_headers => false,
        _ => true,
    };
    if resume {
        if let Err(status) = hostcalls::resume_http_request() {
            log::warn!("mcp-mesh-auth: could not resume a held request: {status:?}");
        }
    }
}

/// Answers the request locally and marks the stream answered, so that a body callback the host
/// may still deliver afterwards (the rest of a body refused with 413 on its first chunk) holds
/// the body back instead of handing it to the next filter.
pub fn answer(stream: &SharedStream, response: &LocalResponse) -> Action {
    stream.borrow_mut().answered = true;
    if let Err(status) = host::send(response) {
        log::error!("mcp-mesh-auth: could not answer locally: {status:?}");
    }
    Action::Pause
}

/// Removes the token and spoofable identity headers, then sets the verified ones. Any failure
/// stops the request: forwarding with the token still attached is not an option.
fn rewrite_headers(forward: &Forward) -> Result<(), &'static str> {
    for name in &forward.remove {
        host::set_request_header(name, None).map_err(|_| "could not remove a request header")?;
    }
    for (name, value) in &forward.set {
        host::set_request_header(name, Some(value))
            .map_err(|_| "could not set an identity header")?;
    }
    Ok(())
}

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

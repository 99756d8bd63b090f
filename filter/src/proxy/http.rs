//! The per-request context: reads what the host offers, hands every callback to the stream's
//! lifecycle, and carries out what it decided.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::abi;
use super::exchange_call;
use super::host::{self, ProxyHost};
use super::vm::{self, SharedStream, SharedVm};
use crate::engine::Engine;
use crate::envoy_claims;
use crate::gate::{EnvoyVerified, RequestHead};
use crate::lifecycle::{self, ResponseHead, Step, Stream};

pub struct HttpFilter {
    pub context_id: u32,
    pub vm: SharedVm,
    pub stream: SharedStream,
}

impl HttpFilter {
    /// Runs one lifecycle callback with the VM state borrowed, then carries out its effects.
    fn run(
        &self,
        callback: impl FnOnce(&mut Stream, &mut Engine, &mut ProxyHost) -> Step,
    ) -> Action {
        let Some((step, deferred)) = vm::step(&self.vm, self.context_id, &self.stream, callback)
        else {
            return refuse_now("filter state busy");
        };
        deferred.carry_out();
        match step {
            Step::Continue => Action::Continue,
            Step::Pause | Step::Hold { .. } | Step::Await { .. } => Action::Pause,
        }
    }
}

impl HttpFilter {
    /// In `jwt_authn` mode, what Envoy's `jwt_authn` verified for this request.
    fn envoy_verified(&self) -> EnvoyVerified {
        let settings = match self.vm.try_borrow() {
            Ok(vm) => vm.engine.config.jwt_authn.clone(),
            Err(_) => return EnvoyVerified::Unreadable("filter state busy".into()),
        };
        let Some(settings) = settings else {
            return EnvoyVerified::NotRead;
        };
        let metadata = match abi::get_property(&["metadata"]) {
            Ok(metadata) => metadata.unwrap_or_default(),
            Err(status) => return EnvoyVerified::Unreadable(format!("{status:?}")),
        };
        match envoy_claims::claims(
            &metadata,
            &settings.metadata_namespace,
            &settings.payload_in_metadata,
        ) {
            Ok(Some(claims)) => EnvoyVerified::Claims(claims),
            Ok(None) => EnvoyVerified::Nothing,
            Err(err) => EnvoyVerified::Unreadable(err.to_string()),
        }
    }
}

/// Answers with a 500 when the lifecycle cannot even be asked; the request stays stopped.
fn refuse_now(detail: &str) -> Action {
    if let Err(status) = host::send(&lifecycle::internal_error(detail)) {
        log::error!("mcp-mesh-auth: could not answer locally: {status:?}");
    }
    Action::Pause
}

impl HttpFilter {
    /// The name of the route Envoy matched, when `token_exchange` maps routes to backends.
    fn route_name(&self) -> Option<String> {
        let wanted = self
            .vm
            .try_borrow()
            .is_ok_and(|vm| vm.engine.config.token_exchange.is_some());
        if !wanted {
            return None;
        }
        abi::get_property(&["xds", "route_name"])
            .ok()
            .flatten()
            .and_then(|name| String::from_utf8(name).ok())
            .filter(|name| !name.is_empty())
    }
}

impl Context for HttpFilter {
    /// The answer to a token exchange this stream sent (the SDK delivers it here): settle it
    /// and resume or refuse every request that waited for it, this one included.
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _: usize,
    ) {
        let Some(now_ms) = host::now_ms() else {
            return;
        };
        let released = match self.vm.try_borrow_mut() {
            Ok(mut vm) => {
                exchange_call::on_response(&mut vm, token, num_headers, body_size, now_ms)
            }
            Err(_) => return,
        };
        vm::release(&self.vm, released, now_ms, false);
    }

    fn on_done(&mut self) -> bool {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.waiters.forget(self.context_id);
            let orphans = exchange_call::abandon(&mut vm, self.context_id);
            vm.orphans.extend(orphans);
        }
        true
    }
}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let Some(now_ms) = host::now_ms() else {
            return refuse_now("the host clock is unavailable");
        };
        let Ok(headers) = host::request_headers() else {
            return refuse_now("could not read the request headers");
        };
        let mut head = request_head(headers);
        head.envoy_verified = self.envoy_verified();
        head.route_name = self.route_name();
        self.run(|stream, engine, host| {
            stream.on_request_headers(engine, host, head, end_of_stream, now_ms)
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(|stream, engine, host| {
            stream.on_request_body(engine, host, body_size, end_of_stream)
        })
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        self.run(|stream, engine, host| stream.on_request_trailers(engine, host))
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let head = response_head();
        self.run(|stream, engine, host| {
            stream.on_response_headers(engine, host, &head, end_of_stream)
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(|stream, engine, host| {
            stream.on_response_body(engine, host, body_size, end_of_stream)
        })
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        self.run(|stream, engine, host| stream.on_response_trailers(engine, host))
    }
}

fn request_head(headers: Vec<(String, String)>) -> RequestHead {
    let mut head = RequestHead::default();
    let mut preflight_method = false;
    for (name, value) in headers {
        match name.as_str() {
            ":method" => head.method = value,
            ":path" => head.path = value,
            "authorization" => head.authorization.push(value),
            "access-control-request-method" => preflight_method = true,
            "content-type" | "mcp-method" | "mcp-name" => {
                let slot = match name.as_str() {
                    "content-type" => &mut head.call.content_type,
                    "mcp-method" => &mut head.call.mcp_method,
                    _ => &mut head.call.mcp_name,
                };
                // Proxies and servers disagree on which copy wins: two copies are refused.
                if slot.replace(value).is_some() {
                    head.repeated = Some(name);
                }
            }
            "last-event-id" => head.last_event_id = true,
            "x-http-method-override" | "x-http-method" | "x-method-override" => {
                head.method_override = true
            }
            "mcp-session-id" => head.session_ids.push(value),
            "origin" => head.origins.push(value),
            _ => {}
        }
    }
    head.is_preflight = preflight_method && head.method == "OPTIONS";
    head
}

/// The response head; a value that cannot be read is empty (an unknown content type is cut as
/// JSON, which fails closed when it is not).
fn response_head() -> ResponseHead {
    ResponseHead {
        status: host::response_header(":status"),
        content_type: host::response_header("content-type"),
        session_id: Some(host::response_header(lifecycle::SESSION_HEADER))
            .filter(|id| !id.is_empty()),
    }
}

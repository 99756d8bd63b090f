//! The per-request context: reads the request head and lets the engine decide.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::engine::{self, Act, Hold, SharedEngine};
use super::host;
use super::stream::{self, SharedStream};
use crate::gate::{KidRefetch, RequestHead};

pub struct HttpFilter {
    pub context_id: u32,
    pub engine: SharedEngine,
    pub stream: SharedStream,
}

impl Context for HttpFilter {
    fn on_done(&mut self) -> bool {
        if let Ok(mut engine) = self.engine.try_borrow_mut() {
            engine.waiters.forget(self.context_id);
        }
        true
    }
}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let Some(now_ms) = host::now_ms() else {
            return engine::carry_out(
                Act::Respond(engine::internal_error("the host clock is unavailable")),
                &self.stream,
            );
        };
        let head = match host::request_headers() {
            Ok(headers) => request_head(headers),
            Err(_) => {
                return engine::carry_out(
                    Act::Respond(engine::internal_error("could not read the request headers")),
                    &self.stream,
                )
            }
        };
        let wait_ms = match self.engine.try_borrow() {
            Ok(engine) => i64::try_from(engine.config.jwks_wait_ms).unwrap_or(i64::MAX),
            Err(_) => 0,
        };
        let act = engine::decide(
            &self.engine,
            self.context_id,
            (head, Rc::clone(&self.stream)),
            now_ms,
            KidRefetch::Allowed,
            Hold::Until(now_ms.saturating_add(wait_ms)),
        );
        let action = engine::carry_out(act, &self.stream);
        let inspect = self.stream.borrow().inspect.clone();
        match inspect {
            // A POST without a body is decided now: no body callback will come.
            Some(inspect) if end_of_stream && action == Action::Continue => {
                stream::decide_body(&self.engine, &self.stream, inspect, b"")
            }
            // Where the host lets body callbacks run behind stopped headers, the backend sees
            // nothing of a request until its body is decided.
            Some(_) if action == Action::Continue && self.hold_headers() => Action::Pause,
            _ => action,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        stream::on_request_body(&self.engine, &self.stream, body_size, end_of_stream)
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        stream::on_response_headers(&self.engine, &self.stream, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        stream::on_response_body(&self.engine, &self.stream, body_size, end_of_stream)
    }
}

impl HttpFilter {
    fn hold_headers(&self) -> bool {
        self.engine
            .try_borrow()
            .map(|e| e.config.headers_stop_iteration)
            .unwrap_or(false)
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
            "content-type" => head.call.content_type = Some(value),
            "mcp-method" => head.call.mcp_method = Some(value),
            "mcp-name" => head.call.mcp_name = Some(value),
            _ => {}
        }
    }
    head.is_preflight = preflight_method && head.method == "OPTIONS";
    head
}

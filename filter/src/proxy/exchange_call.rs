//! Token exchange calls: sent from the stream that needed the token first (the SDK delivers the
//! answer to that stream's context), answered into the core's memory of exchanges, whose
//! waiting requests are then resumed or refused together.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

use super::abi;
use super::vm::{SharedStream, Vm};
use crate::exchange::{Answer, TokenRequest, MAX_ANSWER_BYTES};
use crate::lifecycle::HostError;
use crate::waiters::{Awaits, Waiter};

/// Sends `request` through its cluster; the call id comes back with the answer.
pub fn dispatch(request: &TokenRequest) -> Result<u32, HostError> {
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let timeout = Duration::from_millis(u64::from(request.timeout_ms));
    hostcalls::dispatch_http_call(
        &request.cluster,
        headers,
        Some(&request.body),
        vec![],
        timeout,
    )
    .map_err(|status| {
        log::warn!(
            "mcp-mesh-auth: cannot send a token exchange request through cluster `{}`: {status:?}",
            request.cluster
        );
        HostError("send a token exchange request")
    })
}

/// The answer to call `token` arrived (no headers: the call failed): settles its exchange and
/// returns the requests that waited for it; nothing when the call is no exchange (any more).
pub fn on_response(
    vm: &mut Vm,
    token: u32,
    num_headers: usize,
    body_size: usize,
    now_ms: i64,
) -> Vec<Waiter<SharedStream>> {
    vm.exchange_owners.remove(&token);
    if !vm.engine.exchanges.is_call(token) {
        return Vec::new();
    }
    let answer = read_answer(num_headers, body_size);
    let Some((key, outcome)) = vm.engine.exchanges.on_answer(token, &answer, now_ms) else {
        return Vec::new();
    };
    // Each request refused for it logs the failure, naming its route.
    vm.metrics.token_exchanged(outcome.is_ok());
    vm.waiters.release_awaiting(Awaits::Credential(key))
}

/// The stream `context_id` ended: the proxy cancels the calls it sent, so their exchanges are
/// forgotten and the requests that waited for them are released to ask again themselves.
pub fn abandon(vm: &mut Vm, context_id: u32) -> Vec<Waiter<SharedStream>> {
    let calls: Vec<u32> = vm
        .exchange_owners
        .iter()
        .filter(|(_, owner)| **owner == context_id)
        .map(|(call, _)| *call)
        .collect();
    let mut released = Vec::new();
    for call in calls {
        vm.exchange_owners.remove(&call);
        if let Some(key) = vm.engine.exchanges.abandon(call) {
            released.extend(vm.waiters.release_awaiting(Awaits::Credential(key)));
        }
    }
    released
}

fn read_answer(num_headers: usize, body_size: usize) -> Answer {
    if num_headers == 0 {
        return Answer::None;
    }
    let status = abi::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|value| String::from_utf8(value).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    // One byte more than allowed shows an answer over the limit as such.
    let body = abi::get_buffer(
        BufferType::HttpCallResponseBody,
        body_size.min(MAX_ANSWER_BYTES + 1),
    )
    .unwrap_or_default();
    Answer::Response { status, body }
}

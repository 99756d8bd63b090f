//! Small, failure-aware wrappers over the host calls the adapter uses. Per-request calls go
//! through `abi` (never the SDK's panicking wrappers); the root's timer, clock, shared data and
//! JWKS fetches use the SDK where its wrappers return every failure.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, Bytes, MapType, Status};

use super::abi::{self, Failed};
use super::exchange_call;
use super::metrics::Metrics;
use crate::exchange::TokenRequest;
use crate::lifecycle::{Host, HostError, Observation};
use crate::response::LocalResponse;
use crate::telemetry;

/// The host's clock in microseconds, for the decision time histogram only.
pub fn now_us() -> Option<u64> {
    let now = hostcalls::get_current_time().ok()?;
    let since_epoch = now.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_micros()).ok()
}

/// Wall-clock milliseconds from the host, or `None` when the host cannot tell (then nothing
/// time-dependent may be decided: fail closed).
pub fn now_ms() -> Option<i64> {
    let now = hostcalls::get_current_time().ok()?;
    let since_epoch = now.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_millis()).ok()
}

/// The request headers of the current stream, values decoded lossily (a header that is not
/// UTF-8 cannot be a valid bearer token anyway, and must not crash the VM).
pub fn request_headers() -> Result<Vec<(String, String)>, Failed> {
    Ok(abi::get_map(MapType::HttpRequestHeaders)?
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect())
}

/// One response header, decoded lossily; empty when absent or unreadable.
pub fn response_header(name: &str) -> String {
    abi::get_map_value(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
        .map(|value| String::from_utf8_lossy(&value).into_owned())
        .unwrap_or_default()
}

pub fn send(response: &LocalResponse) -> Result<(), Failed> {
    let headers: Vec<(&str, &str)> = response
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    abi::send_response(response.status, &headers, response.body.as_bytes())
}

pub fn shared_data(key: &str) -> Option<(Bytes, Option<u32>)> {
    match hostcalls::get_shared_data(key) {
        Ok((Some(value), cas)) => Some((value, cas)),
        _ => None,
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(value), cas)
}

pub fn tick_every(period: Duration) {
    if let Err(status) = hostcalls::set_tick_period(period) {
        log::error!("mcp-mesh-auth: could not start the timer: {status:?}; JWKS will not refresh");
    }
}

/// The lifecycle's view of the stream in the current context. Reads and writes of buffers and
/// headers happen at once; answering and resuming, which may run our own callbacks again, are
/// kept and carried out by [`ProxyHost::finish`] once the VM state is no longer borrowed.
pub struct ProxyHost<'m> {
    pub metrics: &'m Metrics,
    send: Option<LocalResponse>,
    resume: bool,
    /// An authorization decision was made in this callback (its time goes to the histogram).
    pub decided: bool,
    /// The token exchange calls sent in this callback.
    pub dispatched: Vec<u32>,
}

impl<'m> ProxyHost<'m> {
    pub fn new(metrics: &'m Metrics) -> Self {
        Self {
            metrics,
            send: None,
            resume: false,
            decided: false,
            dispatched: Vec::new(),
        }
    }

    /// What is left to do after the core decided: the local answer or the resume.
    pub fn into_deferred(self) -> Deferred {
        Deferred {
            send: self.send,
            resume: self.resume,
        }
    }
}

/// Effects carried out after the VM state is released.
#[must_use]
pub struct Deferred {
    send: Option<LocalResponse>,
    resume: bool,
}

impl Deferred {
    pub fn carry_out(self) {
        if let Some(response) = self.send {
            if let Err(status) = send(&response) {
                log::error!("mcp-mesh-auth: could not answer locally: {status:?}");
            }
        } else if self.resume {
            if let Err(status) = abi::resume_request() {
                log::warn!("mcp-mesh-auth: could not resume a held request: {status:?}");
            }
        }
    }
}

fn body(kind: BufferType, max: usize, what: &'static str) -> Result<Vec<u8>, HostError> {
    abi::get_buffer(kind, max).map_err(|_| HostError(what))
}

impl Host for ProxyHost<'_> {
    fn request_body(&mut self, max: usize) -> Result<Vec<u8>, HostError> {
        body(BufferType::HttpRequestBody, max, "read the request body")
    }

    fn replace_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        abi::set_buffer(BufferType::HttpRequestBody, size, body)
            .map_err(|_| HostError("rewrite the request body"))
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        abi::set_map_value(MapType::HttpRequestHeaders, name, value)
            .map_err(|_| HostError("change a request header"))
    }

    fn remove_request_trailers(&mut self) -> Result<(), HostError> {
        let failed = || HostError("remove the request trailers");
        let names = abi::get_map(MapType::HttpRequestTrailers).map_err(|_| failed())?;
        for (name, _) in names {
            abi::set_map_value(MapType::HttpRequestTrailers, &name, None).map_err(|_| failed())?;
        }
        Ok(())
    }

    fn resume_request(&mut self) -> Result<(), HostError> {
        self.resume = true;
        Ok(())
    }

    fn response_body(&mut self, max: usize) -> Result<Vec<u8>, HostError> {
        body(BufferType::HttpResponseBody, max, "read the response body")
    }

    fn replace_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        abi::set_buffer(BufferType::HttpResponseBody, size, body)
            .map_err(|_| HostError("rewrite the response body"))
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        abi::set_map_value(MapType::HttpResponseHeaders, name, value)
            .map_err(|_| HostError("change a response header"))
    }

    fn add_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        abi::add_map_value(MapType::HttpResponseHeaders, name, value)
            .map_err(|_| HostError("add a response header"))
    }

    fn dispatch(&mut self, request: &TokenRequest) -> Result<u32, HostError> {
        let call = exchange_call::dispatch(request);
        match call {
            Ok(call) => self.dispatched.push(call),
            Err(_) => self.metrics.token_exchanged(false),
        }
        call
    }

    fn send(&mut self, response: &LocalResponse) -> Result<(), HostError> {
        self.send = Some(response.clone());
        Ok(())
    }

    /// Counts, and records the decision as filter state for Envoy's access logs.
    fn observe(&mut self, observation: Observation<'_>) {
        self.metrics.observe(observation);
        let properties = match observation {
            Observation::Allowed(caller) => caller.properties(),
            Observation::Rejected(rejection) => telemetry::rejection_properties(rejection),
            Observation::Decided(audit) => {
                self.decided = true;
                audit.properties()
            }
        };
        for (key, value) in properties {
            if let Err(failed) = abi::set_property(key, &value) {
                log::warn!("mcp-mesh-auth: could not record {key} for the access log: {failed:?}");
            }
        }
    }
}

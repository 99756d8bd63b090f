//! What the lifecycle needs of the proxy: reading and replacing buffers and headers, answering
//! locally, resuming a held request, counting. Envoy's proxy-wasm host in production, a
//! recording fake in the tests.

use crate::exchange::TokenRequest;
use crate::rejection::Rejection;
use crate::response::LocalResponse;
use crate::telemetry::{Audit, Caller};

/// A host call that failed; `0` says which, for the 500 the request then gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the proxy refused to {0}")]
pub struct HostError(pub &'static str);

/// Something worth counting, and recording where Envoy's access logs read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation<'a> {
    /// A request authenticated, by this caller.
    Allowed(&'a Caller),
    /// A request refused for its token.
    Rejected(&'a Rejection),
    /// An authorization decision: on one call, or on the items of one list answer.
    Decided(&'a Audit),
}

pub trait Host {
    /// The request body buffered so far, at most `max` bytes.
    fn request_body(&mut self, max: usize) -> Result<Vec<u8>, HostError>;
    /// Replaces the first `size` bytes of the buffered request body with `body`.
    fn replace_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError>;
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError>;
    /// Removes every request trailer: MCP defines none, and a trailer would carry identity or
    /// routing headers past the checks made on the head.
    fn remove_request_trailers(&mut self) -> Result<(), HostError>;
    /// Lets a request stopped in an earlier callback move on.
    fn resume_request(&mut self) -> Result<(), HostError>;
    /// The response body buffered so far (the current chunk when earlier ones went on).
    fn response_body(&mut self, max: usize) -> Result<Vec<u8>, HostError>;
    /// Replaces the first `size` bytes of the buffered response body with `body`.
    fn replace_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError>;
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError>;
    /// Adds a value to a response header, keeping the ones it has (`Vary`).
    fn add_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    /// Sends a token exchange request; returns the call's id, which its answer will carry.
    fn dispatch(&mut self, request: &TokenRequest) -> Result<u32, HostError>;
    /// Answers the stream locally.
    fn send(&mut self, response: &LocalResponse) -> Result<(), HostError>;
    fn observe(&mut self, observation: Observation<'_>);
}

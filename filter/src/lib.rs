//! mcp-mesh-auth filter: OAuth bearer authentication for MCP servers, as a proxy-wasm module.
//!
//! Everything but `proxy` is plain Rust that builds and is tested on the host; `proxy` is the
//! thin proxy-wasm adapter and is compiled for `wasm32` only.

pub mod algorithm;
pub mod annotations;
pub mod authz;
pub mod binding;
pub mod call_gate;
pub mod claims;
pub mod config;
pub mod cors;
pub mod engine;
pub mod envoy_claims;
pub mod es384;
pub mod exchange;
pub mod gate;
pub mod jsonrpc;
pub mod jwks;
pub mod key_store;
pub mod lifecycle;
pub mod list_decisions;
pub mod list_filter;
pub mod mcp_headers;
pub mod operation;
pub mod quote;
pub mod rejection;
pub mod response;
pub mod sse;
pub mod tasks;
pub mod telemetry;
pub mod token_cache;
pub mod tool_scopes;
pub mod unique_json;
pub mod uri;
pub mod verify;
pub mod waiters;
pub mod wire;

#[cfg(test)]
mod test_keys;

// Test builds for wasm32 run under a plain WASI runner, which has no proxy-wasm host.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod proxy;

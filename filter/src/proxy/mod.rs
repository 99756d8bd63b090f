//! The proxy-wasm adapter: reads what the host offers, hands it to the core, carries out verdicts.
//!
//! Host calls go through `hostcalls` with their `Result`s handled, never through the SDK's
//! convenience methods, which panic on unexpected input (non-UTF-8 header values among it).

mod host;
mod http;
mod jwks_fetch;
mod metrics;
mod root;
mod vm;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}

//! The proxy-wasm adapter: reads what the host offers, hands it to the core, carries out verdicts.
//!
//! Per-request host calls go through `abi`, whose every status is an error to handle: the SDK's
//! wrappers (and its convenience methods) panic on statuses and input they did not expect.

mod abi;
mod exchange_call;
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

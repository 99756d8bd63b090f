//! The root context: configuration, the timer, and the answers to JWKS fetches.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::abi;
use super::exchange_call;
use super::host;
use super::http::HttpFilter;
use super::jwks_fetch;
use super::metrics::Metrics;
use super::vm::{self, SharedVm, Vm};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::binding::BindingKey;
use crate::config::FilterConfig;
use crate::engine::Engine;
use crate::telemetry;
use crate::waiters::Waiters;

/// Fine enough that a cold start waits little for its first keys, cheap when nothing is due.
const TICK: Duration = Duration::from_millis(200);

pub struct Root {
    context_id: u32,
    vm: Option<SharedVm>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            vm: None,
        }
    }

    fn tick(&self) {
        let (Some(vm), Some(now_ms)) = (&self.vm, host::now_ms()) else {
            return;
        };
        let (mut released, expired) = match vm.try_borrow_mut() {
            Ok(mut state) => (
                jwks_fetch::maintain(&mut state, now_ms),
                state.waiters.release_expired(now_ms),
            ),
            Err(_) => return,
        };
        if let Ok(mut state) = vm.try_borrow_mut() {
            released.append(&mut state.orphans);
        }
        vm::release(vm, released, now_ms, false);
        vm::release(vm, expired, now_ms, true);
    }
}

/// Where the workers of one Envoy keep the binding key they share when none is configured.
const BINDING_KEY_SHARED: &str = "mcp-mesh-auth|binding-key";

/// A binding key shared by this Envoy's workers: the one another worker made, or a new random
/// one. Sessions and tasks then hold on this proxy only (a restart or another replica does not
/// know them: clients start a new session); `binding_key` in the configuration makes them hold
/// everywhere. `None` (no randomness, no shared data) leaves ids unsealed, and is logged.
fn per_proxy_binding_key() -> Option<BindingKey> {
    let read = || {
        host::shared_data(BINDING_KEY_SHARED)
            .and_then(|(value, _)| String::from_utf8(value).ok())
            .and_then(|text| BindingKey::from_base64(&text).ok())
    };
    if let Some(key) = read() {
        return Some(key);
    }
    let mut secret = [0u8; 32];
    if let Err(err) = getrandom::getrandom(&mut secret) {
        log::error!("mcp-mesh-auth: no randomness for a binding key ({err}); set `binding_key`");
        return None;
    }
    let text = STANDARD.encode(secret);
    if let Err(status) = host::set_shared_data(BINDING_KEY_SHARED, text.as_bytes(), None) {
        log::warn!("mcp-mesh-auth: could not share the binding key between workers: {status:?}");
    }
    // Another worker may have written first: theirs is the one every worker reads.
    read().or_else(|| BindingKey::from_base64(&text).ok())
}

/// The statistics instance name when `stats_prefix` is not set: the plugin's `name` in the Envoy
/// configuration (each filter instance has its own), else its root id.
fn plugin_instance() -> String {
    let property = |name: &str| {
        abi::get_property(&[name])
            .ok()
            .flatten()
            .and_then(|value| String::from_utf8(value).ok())
            .filter(|value| !value.is_empty())
    };
    let raw = property("plugin_name")
        .or_else(|| property("plugin_root_id"))
        .unwrap_or_default();
    telemetry::instance_name(&raw)
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _: usize,
    ) {
        let (Some(vm), Some(now_ms)) = (&self.vm, host::now_ms()) else {
            return;
        };
        // JWKS fetches are sent from here; so is an exchange a released request asked for.
        let released = match vm.try_borrow_mut() {
            Ok(mut state) if state.fetches.contains_key(&token) => {
                jwks_fetch::on_response(&mut state, token, num_headers, body_size, now_ms)
            }
            Ok(mut state) => {
                exchange_call::on_response(&mut state, token, num_headers, body_size, now_ms)
            }
            Err(_) => return,
        };
        vm::release(vm, released, now_ms, false);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            _ => {
                log::error!("mcp-mesh-auth: no plugin configuration given; see the README for the required keys");
                return false;
            }
        };
        match FilterConfig::from_json(&bytes) {
            Ok(mut config) => {
                if config.binding_key.is_none() {
                    config.binding_key = per_proxy_binding_key();
                }
                log::info!(
                    "mcp-mesh-auth: configured for {} with {} trusted issuer(s) (root context {})",
                    config.resource,
                    config.issuers.len(),
                    self.context_id
                );
                let instance = config.stats_prefix.clone().unwrap_or_else(plugin_instance);
                self.vm = Some(Rc::new(RefCell::new(Vm {
                    engine: Engine::new(config),
                    waiters: Waiters::default(),
                    metrics: Metrics::define(&instance),
                    fetches: Default::default(),
                    exchange_owners: Default::default(),
                    orphans: Vec::new(),
                })));
                // The first tick fetches the keys; fetching here would also fetch from VMs that
                // Envoy only configures to validate the configuration.
                host::tick_every(TICK);
                true
            }
            Err(err) => {
                log::error!("mcp-mesh-auth: configuration refused: {err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let vm = self.vm.as_ref()?;
        Some(Box::new(HttpFilter {
            context_id,
            vm: Rc::clone(vm),
            stream: Default::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

//! The filter's counters, defined once per VM. Envoy shows them under `wasmcustom.mcp_auth.*`.

use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::lifecycle::Observation;
use crate::rejection::Rejection;

pub struct Metrics {
    allowed: Option<u32>,
    rejected: HashMap<&'static str, u32>,
    jwks_fetch_success: Option<u32>,
    jwks_fetch_failure: Option<u32>,
    authz_allowed: Option<u32>,
    authz_denied: Option<u32>,
    filtered_items: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    match hostcalls::define_metric(MetricType::Counter, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("mcp-mesh-auth: counter {name} unavailable: {status:?}");
            None
        }
    }
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        // A counter that cannot be bumped is not worth failing a request for.
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl Metrics {
    pub fn define() -> Self {
        let rejected = Rejection::ALL_REASONS
            .iter()
            .filter_map(|reason| Some((*reason, counter(&format!("mcp_auth.rejected.{reason}"))?)))
            .collect();
        Self {
            allowed: counter("mcp_auth.allowed"),
            rejected,
            jwks_fetch_success: counter("mcp_auth.jwks_fetch.success"),
            jwks_fetch_failure: counter("mcp_auth.jwks_fetch.failure"),
            authz_allowed: counter("mcp_auth.authz.allowed"),
            authz_denied: counter("mcp_auth.authz.denied"),
            filtered_items: counter("mcp_auth.list.filtered_items"),
        }
    }

    pub fn observe(&self, observation: Observation<'_>) {
        match observation {
            Observation::Allowed => bump(self.allowed),
            Observation::Rejected(rejection) => {
                bump(self.rejected.get(rejection.reason()).copied())
            }
            Observation::Authorized(true) => bump(self.authz_allowed),
            Observation::Authorized(false) => bump(self.authz_denied),
            Observation::Filtered(removed) => {
                if let (Some(id), Ok(removed)) = (self.filtered_items, i64::try_from(removed)) {
                    let _ = hostcalls::increment_metric(id, removed);
                }
            }
        }
    }

    pub fn jwks_fetched(&self, ok: bool) {
        bump(if ok {
            self.jwks_fetch_success
        } else {
            self.jwks_fetch_failure
        });
    }
}

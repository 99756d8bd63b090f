//! The filter's statistics, defined once per plugin instance under `mcp_auth.<instance>.` (Envoy
//! shows them under `wasmcustom.`, and strips that in `/stats/prometheus`): two filter
//! configurations in one VM (the two teams of `envoy/two-teams.yaml`) never share a counter.
//! Labels are name segments that the `stats_tags` regexes of the shipped Envoy configurations
//! turn into Prometheus labels (`telemetry::decision_counter`).

use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::lifecycle::Observation;
use crate::rejection::Rejection;
use crate::telemetry::{self, Reason};

pub struct Metrics {
    instance: String,
    authenticated: Option<u32>,
    /// Every decision counter, by its full name: defined up front so that Prometheus shows a
    /// zero series instead of none.
    decisions: HashMap<String, u32>,
    /// Items cut from lists: `[enforce, shadow]`.
    removed: [Option<u32>; 2],
    jwks_fetch_success: Option<u32>,
    jwks_fetch_failure: Option<u32>,
    token_exchange_success: Option<u32>,
    token_exchange_failure: Option<u32>,
    decision_time_us: Option<u32>,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("mcp-mesh-auth: statistic {name} unavailable: {status:?}");
            None
        }
    }
}

fn add(id: Option<u32>, offset: usize) {
    if let (Some(id), Ok(offset)) = (id, i64::try_from(offset)) {
        // A counter that cannot be bumped is not worth failing a request for.
        let _ = hostcalls::increment_metric(id, offset);
    }
}

impl Metrics {
    pub fn define(instance: &str) -> Self {
        let counter = |suffix: &str| {
            define(
                MetricType::Counter,
                &format!("mcp_auth.{instance}.{suffix}"),
            )
        };
        let mut names: Vec<String> = [false, true]
            .iter()
            .flat_map(|shadow| {
                Reason::ALL.iter().map(move |reason| {
                    telemetry::decision_counter(
                        instance,
                        *shadow,
                        reason.decision(),
                        reason.label(),
                    )
                })
            })
            .collect();
        names.extend(
            Rejection::ALL_REASONS.iter().map(|reason| {
                telemetry::decision_counter(instance, false, "unauthenticated", reason)
            }),
        );
        let decisions = names
            .into_iter()
            .filter_map(|name| Some((name.clone(), define(MetricType::Counter, &name)?)))
            .collect();
        Self {
            instance: instance.to_owned(),
            authenticated: counter("authenticated_total"),
            decisions,
            removed: [
                counter("list_items_removed_total.enforce"),
                counter("list_items_removed_total.shadow"),
            ],
            jwks_fetch_success: counter("jwks_fetches_total.success"),
            jwks_fetch_failure: counter("jwks_fetches_total.failure"),
            token_exchange_success: counter("token_exchanges_total.success"),
            token_exchange_failure: counter("token_exchanges_total.failure"),
            decision_time_us: define(
                MetricType::Histogram,
                &format!("mcp_auth.{instance}.decision_time_us"),
            ),
        }
    }

    pub fn observe(&self, observation: Observation<'_>) {
        match observation {
            Observation::Allowed(_) => add(self.authenticated, 1),
            Observation::Rejected(rejection) => {
                let name = telemetry::decision_counter(
                    &self.instance,
                    false,
                    "unauthenticated",
                    rejection.reason(),
                );
                add(self.decisions.get(&name).copied(), 1);
            }
            Observation::Decided(audit) => {
                add(
                    self.decisions.get(&audit.counter(&self.instance)).copied(),
                    1,
                );
                if let Some(removed) = audit.removed.as_ref().filter(|r| r.count > 0) {
                    add(self.removed[usize::from(audit.shadow)], removed.count);
                }
            }
        }
    }

    /// How long the callback that made a decision took, in microseconds.
    pub fn decision_time(&self, micros: u64) {
        if let Some(id) = self.decision_time_us {
            let _ = hostcalls::record_metric(id, micros);
        }
    }

    /// A token exchange answered with a token (or not: refused, unusable, unanswered, unsent).
    pub fn token_exchanged(&self, ok: bool) {
        add(
            if ok {
                self.token_exchange_success
            } else {
                self.token_exchange_failure
            },
            1,
        );
    }

    pub fn jwks_fetched(&self, ok: bool) {
        add(
            if ok {
                self.jwks_fetch_success
            } else {
                self.jwks_fetch_failure
            },
            1,
        );
    }
}

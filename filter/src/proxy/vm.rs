//! Per-VM state: the core's engine, and what only the proxy has (held streams, counters,
//! in-flight JWKS fetches and token exchange calls).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::hostcalls;

use super::host::{self, Deferred, ProxyHost};
use super::metrics::Metrics;
use crate::engine::Engine;
use crate::lifecycle::{Hold, Step, Stream};
use crate::waiters::{Awaits, Waiter, Waiters};

pub type SharedStream = Rc<RefCell<Stream>>;

pub struct Vm {
    pub engine: Engine,
    /// Streams held for their issuer's keys.
    pub waiters: Waiters<SharedStream>,
    pub metrics: Metrics,
    /// In-flight JWKS fetches: call token → issuer index.
    pub fetches: HashMap<u32, usize>,
    /// In-flight token exchange calls: call token → the stream context that sent it (the proxy
    /// cancels the call when that stream ends).
    pub exchange_owners: HashMap<u32, u32>,
    /// Requests whose exchange was abandoned, for the root's next tick to release: a call sent
    /// from the callback of the stream that ended would be answered to that stream's context.
    pub orphans: Vec<Waiter<SharedStream>>,
}

pub type SharedVm = Rc<RefCell<Vm>>;

/// Runs one lifecycle step of the stream `context_id` with the VM state borrowed: a `Step::Hold`
/// registers the stream with the waiters; what must wait until the state is released (a local
/// answer, a resume) is returned to carry out. `None` when the state is busy (re-entered).
pub fn step(
    vm: &SharedVm,
    context_id: u32,
    stream: &SharedStream,
    callback: impl FnOnce(&mut Stream, &mut Engine, &mut ProxyHost) -> Step,
) -> Option<(Step, Deferred)> {
    let (Ok(mut state), Ok(mut current)) = (vm.try_borrow_mut(), stream.try_borrow_mut()) else {
        return None;
    };
    let Vm {
        engine,
        metrics,
        waiters,
        exchange_owners,
        ..
    } = &mut *state;
    let mut host = ProxyHost::new(metrics);
    let started = host::now_us();
    let step = callback(&mut current, engine, &mut host);
    if let (true, Some(started), Some(ended)) = (host.decided, started, host::now_us()) {
        metrics.decision_time(ended.saturating_sub(started));
    }
    let held = match step {
        Step::Hold {
            issuer,
            deadline_ms,
        } => Some((Awaits::Keys(issuer), deadline_ms)),
        Step::Await {
            credential,
            deadline_ms,
        } => Some((Awaits::Credential(credential), deadline_ms)),
        Step::Continue | Step::Pause => None,
    };
    if let Some((awaits, deadline_ms)) = held {
        waiters.hold(Waiter {
            context_id,
            awaits,
            deadline_ms,
            request: Rc::clone(stream),
        });
    }
    for call in host.dispatched.drain(..) {
        exchange_owners.insert(call, context_id);
    }
    Some((step, host.into_deferred()))
}

/// Re-decides held requests, each in its own stream's context: those whose keys changed or
/// whose exchange settled, or (`expired`) whose deadline passed.
pub fn release(vm: &SharedVm, waiters: Vec<Waiter<SharedStream>>, now_ms: i64, expired: bool) {
    for waiter in waiters {
        if hostcalls::set_effective_context(waiter.context_id).is_err() {
            continue; // the stream is gone
        }
        let hold = if expired {
            Hold::No
        } else {
            Hold::Until(waiter.deadline_ms)
        };
        let Some((_, deferred)) = step(
            vm,
            waiter.context_id,
            &waiter.request,
            |stream, engine, host| match waiter.awaits {
                Awaits::Keys(_) => stream.on_keys(engine, host, now_ms, hold),
                Awaits::Credential(_) => stream.on_credential(engine, host, now_ms),
            },
        ) else {
            continue;
        };
        deferred.carry_out();
    }
}

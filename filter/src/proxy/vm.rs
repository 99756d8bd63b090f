//! Per-VM state: the core's engine, and what only the proxy has (held streams, counters,
//! in-flight JWKS fetches).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::host::{self, Deferred, ProxyHost};
use super::metrics::Metrics;
use crate::engine::Engine;
use crate::lifecycle::{Step, Stream};
use crate::waiters::{Waiter, Waiters};

pub type SharedStream = Rc<RefCell<Stream>>;

pub struct Vm {
    pub engine: Engine,
    /// Streams held for their issuer's keys.
    pub waiters: Waiters<SharedStream>,
    pub metrics: Metrics,
    /// In-flight JWKS fetches: call token → issuer index.
    pub fetches: HashMap<u32, usize>,
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
        ..
    } = &mut *state;
    let mut host = ProxyHost::new(metrics);
    let started = host::now_us();
    let step = callback(&mut current, engine, &mut host);
    if let (true, Some(started), Some(ended)) = (host.decided, started, host::now_us()) {
        metrics.decision_time(ended.saturating_sub(started));
    }
    if let Step::Hold {
        issuer,
        deadline_ms,
    } = step
    {
        waiters.hold(Waiter {
            context_id,
            issuer,
            deadline_ms,
            request: Rc::clone(stream),
        });
    }
    Some((step, host.into_deferred()))
}

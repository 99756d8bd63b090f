//! Per-VM state: the core's engine, and what only the proxy has (held streams, counters,
//! in-flight JWKS fetches).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::metrics::Metrics;
use crate::engine::Engine;
use crate::lifecycle::Stream;
use crate::waiters::Waiters;

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

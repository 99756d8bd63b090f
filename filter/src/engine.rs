//! What every request of one VM shares: the configuration, the issuers' keys, verified tokens,
//! learned tool hints, remembered list decisions and backend tokens. Plain data; the lifecycle reads and updates
//! it, the proxy adapter only owns it.

use crate::annotations::ToolAnnotations;
use crate::config::FilterConfig;
use crate::exchange::Exchanges;
use crate::key_store::KeyStore;
use crate::list_decisions::ListMemo;
use crate::token_cache::TokenCache;

/// List decisions remembered per VM (token × item); a full memo starts over.
const LIST_MEMO_ENTRIES: usize = 100_000;

pub struct Engine {
    pub config: FilterConfig,
    pub keys: KeyStore,
    pub cache: TokenCache,
    pub annotations: ToolAnnotations,
    pub list_memo: ListMemo,
    /// Backend tokens obtained by exchange, and the exchanges in flight.
    pub exchanges: Exchanges,
}

impl Engine {
    pub fn new(config: FilterConfig) -> Self {
        Self {
            keys: KeyStore::new(&config.issuers),
            cache: TokenCache::new(
                config.token_cache_entries,
                config.token_policy.clock_skew_seconds,
            ),
            annotations: ToolAnnotations::default(),
            list_memo: ListMemo::new(LIST_MEMO_ENTRIES),
            exchanges: Exchanges::new(
                config
                    .token_exchange
                    .as_ref()
                    .map_or(1, |settings| settings.cache_entries),
            ),
            config,
        }
    }
}

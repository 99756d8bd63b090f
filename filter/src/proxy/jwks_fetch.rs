//! Keeping every remote issuer's keys fresh: adopt what another VM fetched, or fetch through
//! the issuer's Envoy cluster, publishing the result in shared data for the other VMs.

use std::sync::Arc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

use super::abi;
use super::host;
use super::vm::{SharedStream, Vm};
use crate::config::RemoteJwks;
use crate::jwks::KeySet;
use crate::key_store::{decode_shared, encode_shared};
use crate::waiters::{Awaits, Waiter};

/// A JWKS larger than this is not a JWKS.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long one VM's claim to fetch keeps the others from fetching too. Short on purpose: a VM
/// that Envoy discards right after configuring it (as it does with the first one) never answers,
/// and its claim must not delay the real workers for a whole fetch timeout.
const LEASE_MS: i64 = 1_000;

fn shared_key(issuer: &str, remote: &RemoteJwks) -> String {
    format!(
        "mcp-mesh-auth|jwks|{issuer}|{}|{}",
        remote.cluster, remote.path
    )
}

/// One timer step for every remote issuer; returns the held requests whose keys changed.
pub fn maintain(vm: &mut Vm, now_ms: i64) -> Vec<Waiter<SharedStream>> {
    let mut released = Vec::new();
    for index in 0..vm.engine.keys.len() {
        let Some(remote) = vm.engine.keys.remote(index).cloned() else {
            continue;
        };
        if !vm.engine.keys.should_fetch(index, now_ms) {
            continue;
        }
        let issuer = vm.engine.keys.issuer(index).unwrap_or_default().to_owned();
        let key = shared_key(&issuer, &remote);
        if adopt_shared(vm, index, &key) {
            released.extend(vm.waiters.release_awaiting(Awaits::Keys(index)));
            if !vm.engine.keys.should_fetch(index, now_ms) {
                continue;
            }
        }
        if take_lease(&format!("{key}|lease"), now_ms, LEASE_MS) {
            dispatch(vm, index, &issuer, &remote, now_ms);
        }
    }
    released
}

/// Takes another VM's newer copy, if there is one.
fn adopt_shared(vm: &mut Vm, index: usize, key: &str) -> bool {
    let Some((value, _)) = host::shared_data(key) else {
        return false;
    };
    let Some((fetched_at_ms, document)) = decode_shared(&value) else {
        return false;
    };
    if !vm.engine.keys.is_newer(index, fetched_at_ms) {
        return false;
    }
    match KeySet::from_json(document) {
        Ok(set) => {
            install(vm, index, Arc::new(set), fetched_at_ms);
            true
        }
        Err(_) => false,
    }
}

/// One VM fetches at a time per issuer: the lease is a deadline in shared data.
fn take_lease(key: &str, now_ms: i64, ttl_ms: i64) -> bool {
    let cas = match host::shared_data(key) {
        Some((value, cas)) => {
            let held_until = value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_be_bytes);
            if held_until.is_some_and(|until| until > now_ms) {
                return false;
            }
            cas
        }
        None => None,
    };
    host::set_shared_data(key, &(now_ms + ttl_ms).to_be_bytes(), cas).is_ok()
}

fn dispatch(vm: &mut Vm, index: usize, issuer: &str, remote: &RemoteJwks, now_ms: i64) {
    let headers = vec![
        (":method", "GET"),
        (":path", remote.path.as_str()),
        (":authority", remote.authority.as_str()),
        ("accept", "application/jwk-set+json, application/json"),
        ("user-agent", "mcp-mesh-auth"),
    ];
    let timeout = Duration::from_millis(u64::from(remote.timeout_ms));
    match hostcalls::dispatch_http_call(&remote.cluster, headers, None, vec![], timeout) {
        Ok(token) => {
            vm.fetches.insert(token, index);
            vm.engine.keys.fetch_started(index, now_ms);
        }
        Err(status) => {
            log::warn!(
                "mcp-mesh-auth: cannot fetch the JWKS of {issuer} through cluster `{}`: {status:?} (is the cluster defined?)",
                remote.cluster
            );
            vm.metrics.jwks_fetched(false);
            vm.engine.keys.fetch_failed(index, now_ms);
        }
    }
}

/// A JWKS response arrived (or the call failed: no headers); returns the requests to release.
pub fn on_response(
    vm: &mut Vm,
    token: u32,
    num_headers: usize,
    body_size: usize,
    now_ms: i64,
) -> Vec<Waiter<SharedStream>> {
    let Some(index) = vm.fetches.remove(&token) else {
        return Vec::new();
    };
    vm.engine.keys.fetch_finished(index);
    let issuer = vm.engine.keys.issuer(index).unwrap_or_default().to_owned();
    match read_key_set(num_headers, body_size) {
        Ok((set, document)) => {
            log::info!("mcp-mesh-auth: JWKS of {issuer}: {} usable keys", set.len());
            if let Some(remote) = vm.engine.keys.remote(index) {
                let key = shared_key(&issuer, remote);
                if let Err(status) =
                    host::set_shared_data(&key, &encode_shared(now_ms, &document), None)
                {
                    log::warn!(
                        "mcp-mesh-auth: could not share the JWKS with other workers: {status:?}"
                    );
                }
            }
            vm.metrics.jwks_fetched(true);
            install(vm, index, Arc::new(set), now_ms);
        }
        Err(reason) => {
            log::warn!("mcp-mesh-auth: JWKS fetch for {issuer} failed: {reason}; keeping the last good keys");
            vm.metrics.jwks_fetched(false);
            vm.engine.keys.fetch_failed(index, now_ms);
        }
    }
    vm.waiters.release_awaiting(Awaits::Keys(index))
}

fn install(vm: &mut Vm, index: usize, set: Arc<KeySet>, fetched_at_ms: i64) {
    let issuer = vm.engine.keys.issuer(index).unwrap_or_default().to_owned();
    vm.engine.cache.retain_keys(&issuer, |kid| {
        set.keys()
            .iter()
            .any(|k| k.kid.as_deref().unwrap_or("") == kid)
    });
    vm.engine.keys.keys_arrived(index, set, fetched_at_ms);
}

fn read_key_set(num_headers: usize, body_size: usize) -> Result<(KeySet, Vec<u8>), String> {
    if num_headers == 0 {
        return Err("no response (timeout, reset or unreachable cluster)".to_owned());
    }
    let status = abi::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .map(|value| String::from_utf8_lossy(&value).into_owned())
        .unwrap_or_default();
    if status != "200" {
        return Err(format!("HTTP status {status}"));
    }
    if body_size > MAX_JWKS_BYTES {
        return Err(format!(
            "{body_size} bytes is over the {MAX_JWKS_BYTES}-byte limit"
        ));
    }
    let body = abi::get_buffer(BufferType::HttpCallResponseBody, body_size)
        .map_err(|status| format!("could not read the body: {status:?}"))?;
    let set = KeySet::from_json(&body).map_err(|err| err.to_string())?;
    Ok((set, body))
}

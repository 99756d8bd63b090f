//! Small, failure-aware wrappers over the host calls the adapter uses.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Bytes, MapType, Status};

use crate::response::LocalResponse;

/// Wall-clock milliseconds from the host, or `None` when the host cannot tell (then nothing
/// time-dependent may be decided: fail closed).
pub fn now_ms() -> Option<i64> {
    let now = hostcalls::get_current_time().ok()?;
    let since_epoch = now.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_millis()).ok()
}

/// The request headers of the current stream, values decoded lossily (a header that is not
/// UTF-8 cannot be a valid bearer token anyway, and must not crash the VM).
pub fn request_headers() -> Result<Vec<(String, String)>, Status> {
    Ok(hostcalls::get_map_bytes(MapType::HttpRequestHeaders)?
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect())
}

pub fn set_request_header(name: &str, value: Option<&str>) -> Result<(), Status> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value)
}

pub fn send(response: &LocalResponse) -> Result<(), Status> {
    let headers: Vec<(&str, &str)> = response
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let body = (!response.body.is_empty()).then_some(response.body.as_bytes());
    hostcalls::send_http_response(response.status, headers, body)
}

pub fn shared_data(key: &str) -> Option<(Bytes, Option<u32>)> {
    match hostcalls::get_shared_data(key) {
        Ok((Some(value), cas)) => Some((value, cas)),
        _ => None,
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(value), cas)
}

pub fn tick_every(period: Duration) {
    if let Err(status) = hostcalls::set_tick_period(period) {
        log::error!("mcp-mesh-auth: could not start the timer: {status:?}; JWKS will not refresh");
    }
}

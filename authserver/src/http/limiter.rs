//! Registrations per source address and minute, the source being the TCP peer unless the
//! operator says how many proxies in front of the server append to `X-Forwarded-For`: a header
//! the client writes itself must never buy it a fresh budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use axum::http::HeaderMap;

/// How long a budget lasts, in seconds.
const WINDOW_SECONDS: i64 = 60;
/// Past this many tracked addresses, windows that have ended are dropped (bounded memory).
const MAX_TRACKED: usize = 10_000;

/// The address a request is accounted to.
///
/// With `trusted_proxy_hops == 0` (the default) that is the peer: nothing the client sends
/// counts. With `n` trusted proxies, each appending the address it received the request from,
/// the client is the `n`-th `X-Forwarded-For` entry from the right; entries further left were
/// written by the client and are ignored. A header with fewer entries than trusted hops, or an
/// entry that is not an address, means the request did not come through the proxies as
/// configured, so the peer is used (it fails closed: all such requests share one budget).
pub fn source_address(peer: IpAddr, headers: &HeaderMap, trusted_proxy_hops: usize) -> IpAddr {
    if trusted_proxy_hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(trusted_proxy_hops)
        .and_then(|index| entries.get(index))
        .and_then(|entry| entry.parse().ok())
        .unwrap_or(peer)
}

/// The budget an address draws on: an IPv6 address's /64 (one host is usually given a whole
/// /64, and could otherwise take a fresh budget per address), an IPv4 address as it is (an
/// IPv4-mapped IPv6 peer counts as its IPv4 address).
fn budget_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// A fixed one-minute window per source address (per /64 for IPv6).
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `source` may register once more at `now` (Unix seconds); counts the attempt.
    pub fn allow(&self, source: IpAddr, now: i64) -> bool {
        let Ok(mut windows) = self.windows.lock() else {
            return false;
        };
        if windows.len() > MAX_TRACKED {
            windows.retain(|_, (start, _)| now - *start < WINDOW_SECONDS);
        }
        let (start, count) = windows.entry(budget_key(source)).or_insert((now, 0));
        if now - *start >= WINDOW_SECONDS {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        *count <= self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn registrations_are_limited_per_source_address_and_minute() {
        let limiter = RateLimiter::new(2);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert!(limiter.allow(a, 100) && limiter.allow(a, 100));
        assert!(!limiter.allow(a, 159), "the third in a minute is refused");
        assert!(limiter.allow(b, 159), "another address has its own budget");
        assert!(limiter.allow(a, 160), "a new minute, a new budget");
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_source_whatever_the_headers_say() {
        let mut headers = forwarded(&["203.0.113.7"]);
        headers.insert(
            "x-envoy-external-address",
            HeaderValue::from_static("1.2.3.4"),
        );
        assert_eq!(source_address(ip("10.0.0.9"), &headers, 0), ip("10.0.0.9"));
    }

    #[test]
    fn with_trusted_proxies_the_entry_that_many_hops_from_the_right_is_the_source() {
        let peer = ip("10.0.0.9");
        // The client wrote 1.1.1.1 itself; the one trusted proxy appended 203.0.113.7.
        let headers = forwarded(&["1.1.1.1, 203.0.113.7"]);
        assert_eq!(source_address(peer, &headers, 1), ip("203.0.113.7"));
        // Two proxies, the second header line appended by the nearer one.
        let headers = forwarded(&["1.1.1.1, 203.0.113.7", "10.1.0.1"]);
        assert_eq!(source_address(peer, &headers, 2), ip("203.0.113.7"));
    }

    #[test]
    fn a_short_or_garbled_forwarded_header_falls_back_to_the_peer() {
        let peer = ip("10.0.0.9");
        assert_eq!(source_address(peer, &HeaderMap::new(), 1), peer);
        assert_eq!(source_address(peer, &forwarded(&["203.0.113.7"]), 2), peer);
        assert_eq!(
            source_address(peer, &forwarded(&["1.1.1.1, nonsense"]), 1),
            peer
        );
    }

    #[test]
    fn an_ipv6_host_cannot_rotate_addresses_within_its_64_for_fresh_budgets() {
        let limiter = RateLimiter::new(2);
        assert!(limiter.allow(ip("2001:db8:1:2::1"), 0));
        assert!(limiter.allow(ip("2001:db8:1:2::ffff:1"), 0));
        assert!(
            !limiter.allow(ip("2001:db8:1:2:abcd::7"), 0),
            "the same /64 shares one budget"
        );
        assert!(
            limiter.allow(ip("2001:db8:1:3::1"), 0),
            "another /64 has its own"
        );
        assert!(limiter.allow(ip("::ffff:192.0.2.1"), 0));
        assert!(limiter.allow(ip("192.0.2.1"), 0));
        assert!(
            !limiter.allow(ip("192.0.2.1"), 0),
            "an IPv4-mapped peer is its IPv4 address"
        );
    }
}

//! Client ID Metadata Documents: a `client_id` that is an https URL names a JSON document the
//! client publishes about itself (MCP 2025-11-25 / 2026-07-28). Fetching it is a request the
//! server makes on a stranger's say-so, so it is fenced: no private or loopback addresses (the
//! address is checked and then pinned, against DNS rebinding), no redirects, a size and a time
//! limit, and a cache that honours `Cache-Control: max-age`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::oauth::registration::{AuthMethod, ClientMetadata};

const MAX_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TTL: Duration = Duration::from_secs(300);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Development switches; both off in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchPolicy {
    /// Allow documents on loopback and private addresses (a local stack, tests).
    pub allow_private_addresses: bool,
    /// Allow `http://` client IDs (a local stack, tests).
    pub allow_http: bool,
}

/// Why a document was refused, for the log. A visitor only sees
/// [`MetadataError::public_description`]: anyone can make the server fetch any URL, and an
/// answer that tells "resolves to 10.0.0.7" from "connection refused" from "HTTP 404" maps the
/// internal network for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("client_id `{0}` is not an https URL with a path")]
    NotAUrl(String),
    #[error("client_id `{url}` resolves to {ip}, a private or loopback address: refused")]
    PrivateAddress { url: String, ip: IpAddr },
    #[error("the client metadata document at `{url}` could not be fetched: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the client metadata document at `{url}` is invalid: {reason}")]
    Invalid { url: String, reason: String },
}

impl MetadataError {
    /// What a client is told: which document, and whether it was unreachable or unusable, with
    /// every reason it could not be fetched (address, connection, status) folded into one.
    pub fn public_description(&self) -> String {
        match self {
            Self::NotAUrl(_) | Self::Invalid { .. } => self.to_string(),
            Self::PrivateAddress { url, .. } | Self::Fetch { url, .. } => {
                format!("the client metadata document at `{url}` could not be retrieved")
            }
        }
    }
}

/// Whether `client_id` names a metadata document rather than a registered client.
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

pub struct MetadataFetcher {
    policy: FetchPolicy,
    cache: Mutex<HashMap<String, (Instant, Value)>>,
}

impl MetadataFetcher {
    pub fn new(policy: FetchPolicy) -> Self {
        Self {
            policy,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The checked document for `client_id`, from cache or fetched.
    pub async fn document(&self, client_id: &str) -> Result<Value, MetadataError> {
        if let Some(document) = self.cached(client_id) {
            return Ok(document);
        }
        let url =
            Url::parse(client_id).map_err(|_| MetadataError::NotAUrl(client_id.to_owned()))?;
        let scheme_ok =
            url.scheme() == "https" || (self.policy.allow_http && url.scheme() == "http");
        if !scheme_ok || url.path() == "/" || url.fragment().is_some() || url.username() != "" {
            return Err(MetadataError::NotAUrl(client_id.to_owned()));
        }
        let (fetched, ttl) = self.fetch(&url).await?;
        let document = validate(client_id, &fetched)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 1000 {
                cache.clear();
            }
            cache.insert(
                client_id.to_owned(),
                (Instant::now() + ttl, document.clone()),
            );
        }
        Ok(document)
    }

    fn cached(&self, client_id: &str) -> Option<Value> {
        let cache = self.cache.lock().ok()?;
        let (expires, document) = cache.get(client_id)?;
        (Instant::now() < *expires).then(|| document.clone())
    }

    async fn fetch(&self, url: &Url) -> Result<(Value, Duration), MetadataError> {
        let fail = |reason: String| MetadataError::Fetch {
            url: url.to_string(),
            reason,
        };
        let host = url
            .host_str()
            .ok_or_else(|| MetadataError::NotAUrl(url.to_string()))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|err| fail(format!("cannot resolve {host}: {err}")))?
            .next()
            .ok_or_else(|| fail(format!("{host} has no address")))?;
        if !self.policy.allow_private_addresses && !is_public(addr.ip()) {
            return Err(MetadataError::PrivateAddress {
                url: url.to_string(),
                ip: addr.ip(),
            });
        }
        // No proxy: a proxy from the environment would resolve the host itself and defeat the
        // address check and pin above.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .resolve(host, SocketAddr::new(addr.ip(), port))
            .build()
            .map_err(|err| fail(err.to_string()))?;
        let mut response = client
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|err| fail(err.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let ttl = max_age(
            response
                .headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| fail(err.to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BYTES {
                return Err(fail(format!("larger than {MAX_BYTES} bytes")));
            }
        }
        let document = serde_json::from_slice(&body).map_err(|err| MetadataError::Invalid {
            url: url.to_string(),
            reason: format!("not JSON: {err}"),
        })?;
        Ok((document, ttl))
    }
}

/// The document must name itself and may only describe a public client; its metadata gets the
/// same types and limits as a registration. Returns the document as the server keeps it: the
/// checked metadata and the `client_id`, nothing else.
fn validate(client_id: &str, document: &Value) -> Result<Value, MetadataError> {
    let invalid = |reason: &str| MetadataError::Invalid {
        url: client_id.to_owned(),
        reason: reason.to_owned(),
    };
    let object = document
        .as_object()
        .ok_or_else(|| invalid("it is not a JSON object"))?;
    if object.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(invalid("its client_id is not the URL it was fetched from"));
    }
    let metadata = ClientMetadata::from_object(object).map_err(|err| invalid(&err.to_string()))?;
    if metadata.token_endpoint_auth_method != AuthMethod::None {
        return Err(invalid(&format!(
            "token_endpoint_auth_method `{}` is not supported for metadata documents",
            metadata.token_endpoint_auth_method.as_str()
        )));
    }
    let mut kept = metadata.to_json();
    kept.insert("client_id".into(), Value::String(client_id.to_owned()));
    Ok(Value::Object(kept))
}

fn max_age(cache_control: Option<&str>) -> Duration {
    let Some(value) = cache_control else {
        return DEFAULT_TTL;
    };
    if value
        .split(',')
        .any(|d| matches!(d.trim(), "no-store" | "no-cache"))
    {
        return Duration::ZERO;
    }
    value
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .filter_map(|s| s.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_TTL))
        .next()
        .unwrap_or(DEFAULT_TTL)
}

/// IPv4 ranges a document may not be fetched from: the IANA IPv4 Special-Purpose Address
/// Registry (RFC 6890 and its updates), multicast, and the reserved 240.0.0.0/4.
const V4_SPECIAL: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local (cloud metadata services)
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 31, 196, 0], 24), // AS112-v4
    ([192, 52, 193, 0], 24), // AMT
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([192, 175, 48, 0], 24), // direct delegation AS112
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and the limited broadcast address
];

/// IPv6 ranges a document may not be fetched from, inside global unicast 2000::/3 (everything
/// outside it is refused anyway: loopback, unspecified, IPv4-compatible, discard-only 100::/64,
/// unique-local fc00::/7, link-local fe80::/10, site-local, multicast ff00::/8, SRv6 5f00::/16).
const V6_SPECIAL: &[([u16; 3], u8)] = &[
    ([0x2001, 0, 0], 23), // IETF protocol assignments: Teredo, benchmarking, ORCHID…
    ([0x2001, 0x0db8, 0], 32), // documentation
    ([0x2002, 0, 0], 16), // 6to4: the IPv4 address inside is anyone's
    ([0x2620, 0x004f, 0x8000], 48), // AS112-v6
    ([0x3fff, 0, 0], 20), // documentation (RFC 9637)
];

fn in_v4(ip: Ipv4Addr, (base, prefix): ([u8; 4], u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from_be_bytes(base) & mask
}

fn in_v6(ip: Ipv6Addr, (base, prefix): ([u16; 3], u8)) -> bool {
    let base = Ipv6Addr::new(base[0], base[1], base[2], 0, 0, 0, 0, 0);
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(base) & mask
}

/// Whether the server may fetch a document from `ip`: globally reachable unicast only. An IPv6
/// address that carries an IPv4 one for a translator (IPv4-mapped, NAT64 64:ff9b::/96) is
/// judged by the IPv4 address it reaches.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !V4_SPECIAL.iter().any(|range| in_v4(v4, *range)),
        IpAddr::V6(v6) => {
            let [.., g, h] = v6.segments();
            let embedded = Ipv4Addr::new((g >> 8) as u8, g as u8, (h >> 8) as u8, h as u8);
            if v6.to_ipv4_mapped().is_some() || in_v6(v6, ([0x64, 0xff9b, 0], 96)) {
                return is_public(IpAddr::V4(embedded));
            }
            in_v6(v6, ([0x2000, 0, 0], 3)) && !V6_SPECIAL.iter().any(|range| in_v6(v6, *range))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_ipv4_special_purpose_range_is_refused_at_both_ends() {
        for (range, first, last) in [
            ("0.0.0.0/8", "0.0.0.0", "0.255.255.255"),
            ("10.0.0.0/8", "10.0.0.0", "10.255.255.255"),
            ("100.64.0.0/10", "100.64.0.0", "100.127.255.255"),
            ("127.0.0.0/8", "127.0.0.1", "127.255.255.255"),
            ("169.254.0.0/16", "169.254.169.254", "169.254.255.255"),
            ("172.16.0.0/12", "172.16.0.0", "172.31.255.255"),
            ("192.0.0.0/24", "192.0.0.0", "192.0.0.255"),
            ("192.0.2.0/24", "192.0.2.0", "192.0.2.255"),
            ("192.31.196.0/24", "192.31.196.0", "192.31.196.255"),
            ("192.52.193.0/24", "192.52.193.0", "192.52.193.255"),
            ("192.88.99.0/24", "192.88.99.0", "192.88.99.255"),
            ("192.168.0.0/16", "192.168.0.0", "192.168.255.255"),
            ("192.175.48.0/24", "192.175.48.0", "192.175.48.255"),
            ("198.18.0.0/15", "198.18.0.0", "198.19.255.255"),
            ("198.51.100.0/24", "198.51.100.0", "198.51.100.255"),
            ("203.0.113.0/24", "203.0.113.0", "203.0.113.255"),
            ("224.0.0.0/4", "224.0.0.1", "239.255.255.255"),
            ("240.0.0.0/4", "240.0.0.0", "255.255.255.255"),
        ] {
            for ip in [first, last] {
                assert!(!is_public(ip.parse().unwrap()), "{ip} in {range}");
            }
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn every_ipv6_special_purpose_range_is_refused() {
        for ip in [
            "::",
            "::1",
            "::10.0.0.1",       // IPv4-compatible
            "::8.8.8.8",        // IPv4-compatible, deprecated whatever it embeds
            "::ffff:127.0.0.1", // IPv4-mapped
            "::ffff:10.1.2.3",
            "64:ff9b::a00:1",     // NAT64 to 10.0.0.1
            "64:ff9b::7f00:1",    // NAT64 to 127.0.0.1
            "64:ff9b:1::808:808", // local-use NAT64
            "100::1",             // discard-only
            "2001::1",            // Teredo
            "2001:2::1",          // benchmarking
            "2001:1ff:ffff::1",   // end of the IETF /23
            "2001:db8::1",        // documentation
            "2002:a00:1::1",      // 6to4 around 10.0.0.1
            "2002:808:808::1",    // 6to4 around 8.8.8.8
            "2620:4f:8000::1",    // AS112
            "3fff::1",            // documentation
            "5f00::1",            // SRv6
            "fc00::1",
            "fd12:3456::1", // unique local
            "fe80::1",      // link-local
            "febf::1",
            "fec0::1", // site-local
            "ff02::1", // multicast
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2001:200::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_visitor_is_told_the_same_for_a_private_address_and_a_failed_fetch() {
        let url = "https://app.example.com/client.json".to_owned();
        let private = MetadataError::PrivateAddress {
            url: url.clone(),
            ip: "10.0.0.7".parse().unwrap(),
        };
        let refused = MetadataError::Fetch {
            url: url.clone(),
            reason: "error trying to connect: Connection refused".into(),
        };
        assert_eq!(private.public_description(), refused.public_description());
        assert!(!private.public_description().contains("10.0.0.7"));
        assert!(!refused.public_description().contains("refused"));
        assert!(
            private.to_string().contains("10.0.0.7"),
            "the log keeps the reason"
        );
    }

    #[test]
    fn a_document_must_name_itself() {
        let url = "https://app.example.com/client.json";
        let good = json!({"client_id": url, "redirect_uris": ["http://127.0.0.1:3000/cb"]});
        let kept = validate(url, &good).unwrap();
        assert_eq!(kept["client_id"], url);
        assert_eq!(kept["token_endpoint_auth_method"], "none");
        let huge = json!({"client_id": url, "redirect_uris": ["http://127.0.0.1/cb"], "client_name": "x".repeat(100_000)});
        assert!(validate(url, &huge)
            .unwrap_err()
            .to_string()
            .contains("client_name"));
        let other = json!({"client_id": "https://evil.example.com/client.json", "redirect_uris": ["http://127.0.0.1/cb"]});
        assert!(validate(url, &other)
            .unwrap_err()
            .to_string()
            .contains("not the URL"));
        let secret = json!({"client_id": url, "redirect_uris": ["https://a/cb"], "token_endpoint_auth_method": "client_secret_basic"});
        assert!(validate(url, &secret).is_err());
    }

    #[test]
    fn cache_lifetimes_follow_cache_control() {
        assert_eq!(max_age(None), DEFAULT_TTL);
        assert_eq!(max_age(Some("public, max-age=60")), Duration::from_secs(60));
        assert_eq!(max_age(Some("max-age=999999999")), MAX_TTL);
        assert_eq!(max_age(Some("no-store")), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_loopback_document_is_refused_without_the_dev_flag() {
        let fetcher = MetadataFetcher::new(FetchPolicy::default());
        let err = fetcher
            .document("https://127.0.0.1:9/client.json")
            .await
            .unwrap_err();
        assert!(matches!(err, MetadataError::PrivateAddress { .. }), "{err}");
        assert!(matches!(
            fetcher.document("http://example.com/c.json").await,
            Err(MetadataError::NotAUrl(_))
        ));
    }
}

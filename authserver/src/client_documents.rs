//! Client ID Metadata Documents: a `client_id` that is an https URL names a JSON document the
//! client publishes about itself (MCP 2025-11-25 / 2026-07-28). Fetching it is a request the
//! server makes on a stranger's say-so, so it is fenced: no private or loopback addresses (the
//! address is checked and then pinned, against DNS rebinding), no redirects, a size and a time
//! limit, and a cache that honours `Cache-Control: max-age`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use url::Url;

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
        let (document, ttl) = self.fetch(&url).await?;
        validate(client_id, &document)?;
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
        let client = reqwest::Client::builder()
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

/// The document must name itself and may only describe a public client.
fn validate(client_id: &str, document: &Value) -> Result<(), MetadataError> {
    let invalid = |reason: &str| MetadataError::Invalid {
        url: client_id.to_owned(),
        reason: reason.to_owned(),
    };
    if document.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(invalid("its client_id is not the URL it was fetched from"));
    }
    let uris = document
        .get("redirect_uris")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("it has no redirect_uris"))?;
    for uri in uris {
        let uri = uri
            .as_str()
            .ok_or_else(|| invalid("redirect_uris must be strings"))?;
        crate::oauth::registration::check_redirect_uri(uri)
            .map_err(|err| invalid(&err.to_string()))?;
    }
    match document
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
    {
        None | Some("none") => Ok(()),
        Some(other) => Err(invalid(&format!(
            "token_endpoint_auth_method `{other}` is not supported for metadata documents"
        ))),
    }
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

/// Public unicast only: no loopback, private, link-local, CGNAT, unique-local or special ranges.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_document_must_name_itself() {
        let url = "https://app.example.com/client.json";
        let good = json!({"client_id": url, "redirect_uris": ["http://127.0.0.1:3000/cb"]});
        assert!(validate(url, &good).is_ok());
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

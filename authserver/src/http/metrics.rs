//! `/metrics` in Prometheus' text exposition format (0.0.4): what an operator alerts on — tokens
//! issued and refused by grant type and error code, identity provider failures by kind, database
//! errors by endpoint, registrations refused by reason — and the token endpoint's latency.
//!
//! Every label value is a `&'static str` chosen by this code (a client's `grant_type` is mapped
//! to a known one or `other`), so no client can grow the number of series. The exposition is
//! written by hand: a handful of counters and one histogram do not need a metrics crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::idp::oidc::UpstreamError;
use crate::oauth::ErrorCode;

const PREFIX: &str = "mcp_authserver_";

/// Upper bounds (seconds) of the token latency buckets: from a cached `client_credentials`
/// signature (about a millisecond) to a refresh waiting on a slow identity provider.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `grant_type` label of a token request: the grants this server knows, `other` for any
/// other value and `none` when it is missing (the value is client-chosen; a label must not be).
pub fn grant_label(grant_type: Option<&str>) -> &'static str {
    match grant_type {
        Some("client_credentials") => "client_credentials",
        Some("authorization_code") => "authorization_code",
        Some("refresh_token") => "refresh_token",
        Some(crate::oauth::id_jag::JWT_BEARER) => "jwt_bearer",
        Some(crate::oauth::exchange::GRANT_TYPE) => "token_exchange",
        Some(_) => "other",
        None => "none",
    }
}

/// The `kind` label of an identity provider failure.
fn upstream_kind(err: &UpstreamError) -> &'static str {
    match err {
        UpstreamError::Unreachable { .. } => "unreachable",
        UpstreamError::InvalidClient { .. } => "invalid_client",
        UpstreamError::InvalidGrant { .. } => "invalid_grant",
        UpstreamError::SessionEnded(_) => "session_ended",
        UpstreamError::NotAssigned => "not_assigned",
        UpstreamError::Denied => "denied",
        UpstreamError::Other { .. } => "other",
        UpstreamError::IdToken(_) => "invalid_id_token",
        UpstreamError::NoRefreshToken => "no_refresh_token",
        UpstreamError::NotFederated => "not_federated",
    }
}

/// A counter with labels: one series per combination of label values seen.
struct Family<const N: usize> {
    labels: [&'static str; N],
    series: Mutex<BTreeMap<[&'static str; N], u64>>,
}

impl<const N: usize> Family<N> {
    fn new(labels: [&'static str; N]) -> Self {
        Self {
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn inc(&self, values: [&'static str; N]) {
        // A panic elsewhere while holding the lock leaves the counts intact: keep counting.
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        *series.entry(values).or_default() += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "counter");
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for (values, count) in series.iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(values)
                .map(|(label, value)| format!("{label}=\"{}\"", escape(value)))
                .collect();
            let _ = writeln!(out, "{PREFIX}{name}{{{}}} {count}", labels.join(","));
        }
    }
}

/// A latency histogram with cumulative buckets (`le`), as Prometheus expects them.
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{PREFIX}{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{PREFIX}{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{PREFIX}{name}_sum {sum}");
        let _ = writeln!(out, "{PREFIX}{name}_count {count}");
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

/// A label value as the exposition format requires: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_counter(out: &mut String, name: &str, help: &str, counter: &AtomicU64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{PREFIX}{name} {}", counter.load(Ordering::Relaxed));
}

/// The server's counters.
pub struct Metrics {
    registrations: AtomicU64,
    registrations_refused: Family<1>,
    tokens_issued: Family<1>,
    token_errors: Family<2>,
    token_duration: Histogram,
    upstream_failures: Family<1>,
    database_errors: Family<1>,
    pub logins_failed: AtomicU64,
    pub consents_denied: AtomicU64,
    pub families_revoked: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            registrations: AtomicU64::new(0),
            registrations_refused: Family::new(["reason"]),
            tokens_issued: Family::new(["grant_type"]),
            token_errors: Family::new(["grant_type", "error"]),
            token_duration: Histogram::new(),
            upstream_failures: Family::new(["kind"]),
            database_errors: Family::new(["endpoint"]),
            logins_failed: AtomicU64::new(0),
            consents_denied: AtomicU64::new(0),
            families_revoked: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn registered(&self) {
        Self::bump(&self.registrations);
    }

    /// A registration refused: `rate_limited`, or the RFC 7591 error code it was refused with.
    pub fn registration_refused(&self, reason: &'static str) {
        self.registrations_refused.inc([reason]);
    }

    /// A token request answered, with how long it took and what it ended in.
    pub fn token_answered(
        &self,
        grant_type: &'static str,
        outcome: Result<(), ErrorCode>,
        elapsed: Duration,
    ) {
        match outcome {
            Ok(()) => self.tokens_issued.inc([grant_type]),
            Err(code) => self.token_errors.inc([grant_type, code.as_str()]),
        }
        self.token_duration.observe(elapsed);
    }

    pub fn upstream_failed(&self, err: &UpstreamError) {
        self.upstream_failures.inc([upstream_kind(err)]);
    }

    /// A storage operation failed while serving `endpoint` (`token`, `registration`, …).
    pub fn database_failed(&self, endpoint: &'static str) {
        self.database_errors.inc([endpoint]);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        write_counter(
            &mut out,
            "registrations_total",
            "Clients registered.",
            &self.registrations,
        );
        self.registrations_refused.write(
            &mut out,
            "registrations_refused_total",
            "Registrations refused, by reason (rate_limited or the RFC 7591 error code).",
        );
        self.tokens_issued.write(
            &mut out,
            "tokens_issued_total",
            "Token requests answered with tokens, by grant type.",
        );
        self.token_errors.write(
            &mut out,
            "token_errors_total",
            "Token requests refused, by grant type and OAuth error code.",
        );
        self.token_duration.write(
            &mut out,
            "token_request_duration_seconds",
            "Time to answer a token request (parsed form to answer).",
        );
        self.upstream_failures.write(
            &mut out,
            "upstream_failures_total",
            "Failures of the identity provider (logins and refresh re-checks), by kind.",
        );
        self.database_errors.write(
            &mut out,
            "database_errors_total",
            "Storage operations that failed, by the endpoint that needed them.",
        );
        write_counter(
            &mut out,
            "logins_failed_total",
            "Failed logins (upstream or dev password).",
            &self.logins_failed,
        );
        write_counter(
            &mut out,
            "consents_denied_total",
            "Consents denied.",
            &self.consents_denied,
        );
        write_counter(
            &mut out,
            "families_revoked_total",
            "Refresh token families revoked (replay, reuse or revocation).",
            &self.families_revoked,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(start))
    }

    #[test]
    fn a_refused_and_an_issued_token_move_their_own_labelled_series() {
        let metrics = Metrics::default();
        metrics.token_answered(
            "refresh_token",
            Err(ErrorCode::InvalidGrant),
            Duration::from_millis(3),
        );
        metrics.token_answered("client_credentials", Ok(()), Duration::from_millis(30));
        metrics.token_answered("client_credentials", Ok(()), Duration::from_millis(30));
        let text = metrics.render();
        assert!(text.contains(
            "mcp_authserver_token_errors_total{grant_type=\"refresh_token\",error=\"invalid_grant\"} 1\n"
        ));
        assert!(text
            .contains("mcp_authserver_tokens_issued_total{grant_type=\"client_credentials\"} 2\n"));
        assert!(line(
            &text,
            "mcp_authserver_tokens_issued_total{grant_type=\"refresh"
        )
        .is_none());
        assert!(text.contains("# TYPE mcp_authserver_token_errors_total counter\n"));
    }

    #[test]
    fn the_latency_histogram_is_cumulative_and_counts_every_answer() {
        let metrics = Metrics::default();
        for millis in [3, 30, 30_000] {
            metrics.token_answered("none", Ok(()), Duration::from_millis(millis));
        }
        let text = metrics.render();
        let name = "mcp_authserver_token_request_duration_seconds";
        assert!(text.contains(&format!("# TYPE {name} histogram\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.001\"}} 0\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.005\"}} 1\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.05\"}} 2\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"5\"}} 2\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 3\n")));
        assert!(text.contains(&format!("{name}_count 3\n")));
        assert!(text.contains(&format!("{name}_sum 30.033\n")));
    }

    #[test]
    fn every_metric_has_help_and_type_and_counters_end_in_total() {
        let metrics = Metrics::default();
        metrics.registration_refused("rate_limited");
        metrics.database_failed("token");
        metrics.upstream_failed(&UpstreamError::Denied);
        let text = metrics.render();
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            let kind = line(&text, &format!("# TYPE {family} "))
                .unwrap_or_else(|| panic!("no TYPE for {name}"));
            assert!(
                line(&text, &format!("# HELP {family} ")).is_some(),
                "{name}"
            );
            if kind.ends_with("counter") {
                assert!(family.ends_with("_total"), "{family}");
            }
        }
        assert!(text
            .contains("mcp_authserver_registrations_refused_total{reason=\"rate_limited\"} 1\n"));
        assert!(text.contains("mcp_authserver_database_errors_total{endpoint=\"token\"} 1\n"));
        assert!(text.contains("mcp_authserver_upstream_failures_total{kind=\"denied\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_client_chosen_grant_type_never_becomes_a_label() {
        assert_eq!(grant_label(Some("refresh_token")), "refresh_token");
        assert_eq!(
            grant_label(Some("urn:ietf:params:oauth:grant-type:jwt-bearer")),
            "jwt_bearer"
        );
        assert_eq!(grant_label(Some("password\"}")), "other");
        assert_eq!(grant_label(None), "none");
    }
}

//! The daemon's Prometheus metrics: one registry, created by `app` and handed to each
//! component that records into it, and rendered in the text format by `/metrics`.
//!
//! Owns metric names, labels and help texts. Holds no global state: a [`Metrics`] is a
//! plain value (cheap to clone; clones share their counters), so tests build their own.
//! Labels never carry a token, a user's text or anything unbounded.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodOutcome {
    pub method: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkspaceKindLabel {
    pub workspace: String,
    pub kind: String,
}

/// How well one workspace's sweep covers one kind of activity (`pull_requests`,
/// `pushes`): of the last `decided` activities direct polls found, the sweep had flagged
/// the repository first for `covered`. `mode` says who decides when that kind is polled:
/// `sweep`, `fallback` (per repository, coverage too low) or `measuring` (too few
/// samples yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepCoverage {
    pub workspace: String,
    pub kind: String,
    pub decided: usize,
    pub covered: usize,
    /// Samples waiting for the next sweep's verdict.
    pub pending: u32,
    pub mode: String,
}

impl SweepCoverage {
    /// `covered / decided`, or `None` before any sample is decided.
    pub fn ratio(&self) -> Option<f64> {
        (self.decided > 0).then(|| self.covered as f64 / self.decided as f64)
    }

    fn label(&self) -> WorkspaceKindLabel {
        WorkspaceKindLabel {
            workspace: self.workspace.clone(),
            kind: self.kind.clone(),
        }
    }
}

fn ack_latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric the daemon records.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub envelopes: Family<TypeLabel, Counter>,
    pub duplicate_envelopes: Counter,
    pub ack_latency: Histogram,
    pub socket_reconnects: Family<ReasonLabel, Counter>,
    pub sockets_connected: Gauge,
    pub handler_errors: Family<KindLabel, Counter>,
    pub slack_api_calls: Family<MethodOutcome, Counter>,
    pub installations: Family<StateLabel, Gauge>,
    pub campaign_phase: Family<PhaseLabel, Gauge>,
    pub deliveries: Family<KindLabel, Counter>,
    /// Link previews by outcome: `sent` (a card in `chat.unfurl`), `refused` (the sharer
    /// may not see it, or must connect), `skipped` (the feature is off, the budget is
    /// spent, Bitbucket failed or was too slow).
    pub previews: Family<KindLabel, Counter>,
    pub outbox_depth: Gauge,
    pub dead_letters: Gauge,
    pub bitbucket_requests: Family<EndpointStatus, Counter>,
    pub bitbucket_budget_used: Gauge,
    pub detection_latency: Histogram,
    pub http_connections_open: Gauge,
    pub http_connections_refused: Counter,
    pub http_connections_timed_out: Family<ReasonLabel, Counter>,
    /// Readiness checks that found the store unable to write.
    pub store_write_failures: Counter,
    /// Supervised components that panicked or ended on their own, by component.
    pub component_failures: Family<ComponentLabel, Counter>,
    /// The workspace sweep's coverage (0 to 1) per swept workspace and kind, once a
    /// sample is decided.
    pub sweep_coverage: Family<WorkspaceKindLabel, Gauge<f64, AtomicU64>>,
    pub sweep_coverage_samples: Family<WorkspaceKindLabel, Gauge>,
    /// 1 while the sweep decides when that kind is polled, 0 otherwise.
    pub sweep_decides: Family<WorkspaceKindLabel, Gauge>,
    /// Leases this replica holds, by kind (`repo`, `channel`, `leader`).
    pub leases_held: Family<KindLabel, Gauge>,
    /// Leases this replica took over from a replica whose lease had expired.
    pub lease_takeovers: Counter,
    /// The rows behind the three above, for `status`.
    sweep_coverage_rows: Arc<Mutex<Vec<SweepCoverage>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabel {
    pub component: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            registry: Arc::new(Mutex::new(Registry::with_prefix("bitbucket_slack"))),
            envelopes: Family::default(),
            duplicate_envelopes: Counter::default(),
            ack_latency: ack_latency_histogram(),
            socket_reconnects: Family::default(),
            sockets_connected: Gauge::default(),
            handler_errors: Family::default(),
            slack_api_calls: Family::default(),
            installations: Family::default(),
            campaign_phase: Family::default(),
            deliveries: Family::default(),
            previews: Family::default(),
            outbox_depth: Gauge::default(),
            dead_letters: Gauge::default(),
            bitbucket_requests: Family::default(),
            bitbucket_budget_used: Gauge::default(),
            // 1 s to about 9 hours.
            detection_latency: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            http_connections_open: Gauge::default(),
            http_connections_refused: Counter::default(),
            http_connections_timed_out: Family::default(),
            component_failures: Family::default(),
            store_write_failures: Counter::default(),
            sweep_coverage: Family::default(),
            sweep_coverage_samples: Family::default(),
            sweep_decides: Family::default(),
            leases_held: Family::default(),
            lease_takeovers: Counter::default(),
            sweep_coverage_rows: Arc::default(),
        };
        metrics.register_all();
        metrics
    }
}

impl Metrics {
    fn register_all(&self) {
        let mut registry = self.registry.lock().expect("metrics registry lock");
        registry.register(
            "store_write_failures",
            "Readiness checks that found the store unable to write (full disk, I/O error)",
            self.store_write_failures.clone(),
        );
        registry.register(
            "component_failures",
            "Supervised components (delivery, router, poller, ...) that panicked or stopped on their own and were restarted",
            self.component_failures.clone(),
        );
        registry.register(
            "envelopes",
            "Socket Mode envelopes received, by envelope type",
            self.envelopes.clone(),
        );
        registry.register(
            "duplicate_envelopes",
            "Envelopes acked but not handled because they were seen before",
            self.duplicate_envelopes.clone(),
        );
        registry.register(
            "ack_latency_seconds",
            "Time from reading an envelope to writing its ack",
            self.ack_latency.clone(),
        );
        registry.register(
            "socket_reconnects",
            "Socket Mode sockets replaced or reopened, by reason",
            self.socket_reconnects.clone(),
        );
        registry.register(
            "sockets_connected",
            "Socket Mode sockets that have had hello and are open",
            self.sockets_connected.clone(),
        );
        registry.register(
            "handler_errors",
            "Envelope handlers that failed, by kind",
            self.handler_errors.clone(),
        );
        registry.register(
            "slack_api_calls",
            "Slack Web API calls, by method and outcome (ok, error, rate_limited, unreachable)",
            self.slack_api_calls.clone(),
        );
        registry.register(
            "deliveries",
            "Slack outbox results: delivered, failed, rate_limited, channel_gone, dead_lettered",
            self.deliveries.clone(),
        );
        registry.register(
            "previews",
            "Link previews: sent, refused (not for this person), skipped (off, budget, failure)",
            self.previews.clone(),
        );
        registry.register(
            "outbox_depth",
            "Notifications waiting to be posted, as of the last scrape",
            self.outbox_depth.clone(),
        );
        registry.register(
            "dead_letters",
            "Notifications that failed for good, as of the last scrape",
            self.dead_letters.clone(),
        );
        registry.register(
            "bitbucket_requests",
            "Bitbucket REST requests, by endpoint kind and HTTP status",
            self.bitbucket_requests.clone(),
        );
        registry.register(
            "bitbucket_budget_used",
            "Bitbucket requests made in the last rolling hour",
            self.bitbucket_budget_used.clone(),
        );
        registry.register(
            "detection_latency_seconds",
            "From an activity happening on Bitbucket to it being routed to channels",
            self.detection_latency.clone(),
        );
        registry.register(
            "installations",
            "Installations by state, as of the last scrape",
            self.installations.clone(),
        );
        registry.register(
            "campaign_phase",
            "Installations by permission-upgrade phase, as of the last scrape",
            self.campaign_phase.clone(),
        );
        registry.register(
            "http_connections_open",
            "Connections the HTTP server is serving now (at most http.max_connections)",
            self.http_connections_open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Connections the HTTP server closed unserved because http.max_connections were open",
            self.http_connections_refused.clone(),
        );
        registry.register(
            "sweep_coverage",
            "Of the activities direct polls found, the share whose repository the workspace sweep had flagged first (last 100 decided), by workspace and kind",
            self.sweep_coverage.clone(),
        );
        registry.register(
            "leases_held",
            "Leases this replica holds, by kind: repo (polled here), channel (delivered from here), leader (the singletons run here)",
            self.leases_held.clone(),
        );
        registry.register(
            "lease_takeovers",
            "Leases this replica took over from a replica that stopped renewing them",
            self.lease_takeovers.clone(),
        );
        registry.register(
            "sweep_coverage_samples",
            "Decided samples behind sweep_coverage, by workspace and kind",
            self.sweep_coverage_samples.clone(),
        );
        registry.register(
            "sweep_decides",
            "1 while the workspace sweep decides when that kind is polled (coverage at least 95 %), 0 while it is polled per repository",
            self.sweep_decides.clone(),
        );
        registry.register(
            "http_connections_timed_out",
            "Connections the HTTP server closed for slowness, by reason (idle, header_read)",
            self.http_connections_timed_out.clone(),
        );
    }

    /// Counts one Slack Web API call.
    pub fn slack_call(&self, method: &str, outcome: &str) {
        self.slack_api_calls
            .get_or_create(&MethodOutcome {
                method: method.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts one Bitbucket request.
    pub fn bitbucket_request(&self, endpoint: &str, status: u16) {
        self.bitbucket_requests
            .get_or_create(&EndpointStatus {
                endpoint: endpoint.into(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Replaces the sweep coverage with `rows` (one per swept workspace and kind): label
    /// sets of workspaces no longer swept are removed, so the labels stay bounded by the
    /// watched workspaces.
    pub fn record_sweep_coverage(&self, rows: Vec<SweepCoverage>) {
        let mut current = self
            .sweep_coverage_rows
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for old in current.iter() {
            if !rows.iter().any(|row| row.label() == old.label()) {
                self.sweep_coverage.remove(&old.label());
                self.sweep_coverage_samples.remove(&old.label());
                self.sweep_decides.remove(&old.label());
            }
        }
        for row in &rows {
            let label = row.label();
            match row.ratio() {
                Some(ratio) => {
                    self.sweep_coverage.get_or_create(&label).set(ratio);
                }
                None => {
                    self.sweep_coverage.remove(&label);
                }
            }
            self.sweep_coverage_samples
                .get_or_create(&label)
                .set(row.decided as i64);
            self.sweep_decides
                .get_or_create(&label)
                .set(i64::from(row.mode == "sweep"));
        }
        *current = rows;
    }

    /// The sweep coverage last recorded.
    pub fn sweep_coverage_rows(&self) -> Vec<SweepCoverage> {
        self.sweep_coverage_rows
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Adds further metrics (the poller's, the delivery's) to the same registry.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .expect("metrics registry lock")
            .register(name, help, metric);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_the_prefix() {
        let metrics = Metrics::default();
        metrics
            .envelopes
            .get_or_create(&TypeLabel {
                r#type: "slash_commands".into(),
            })
            .inc();
        metrics.slack_call("chat.postMessage", "rate_limited");
        metrics.ack_latency.observe(0.0004);
        let text = metrics.render();
        assert!(
            text.contains("bitbucket_slack_envelopes_total{type=\"slash_commands\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bitbucket_slack_slack_api_calls_total{method=\"chat.postMessage\",outcome=\"rate_limited\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bitbucket_slack_ack_latency_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn sweep_coverage_keeps_only_the_workspaces_still_swept() {
        let metrics = Metrics::default();
        let row = |workspace: &str, decided, covered, mode: &str| SweepCoverage {
            workspace: workspace.into(),
            kind: "pushes".into(),
            decided,
            covered,
            pending: 0,
            mode: mode.into(),
        };
        metrics.record_sweep_coverage(vec![
            row("acme", 20, 19, "sweep"),
            row("old", 10, 0, "fallback"),
        ]);
        let text = metrics.render();
        assert!(
            text.contains(
                "bitbucket_slack_sweep_coverage{workspace=\"acme\",kind=\"pushes\"} 0.95"
            ),
            "{text}"
        );
        assert!(
            text.contains("bitbucket_slack_sweep_decides{workspace=\"acme\",kind=\"pushes\"} 1"),
            "{text}"
        );
        metrics.record_sweep_coverage(vec![row("acme", 0, 0, "measuring")]);
        let text = metrics.render();
        assert!(!text.contains("workspace=\"old\""), "{text}");
        assert!(!text.contains("bitbucket_slack_sweep_coverage{"), "{text}");
        assert_eq!(metrics.sweep_coverage_rows().len(), 1);
    }
}

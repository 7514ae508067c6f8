//! The daemon's Prometheus metrics (`GET /metrics`), through prometheus-client. Names are a
//! contract: the Grafana dashboard and alert rules in this repository query them (see
//! `docs/contract.md`). Values are set from the same [`Status`] the page shows, so the two
//! never disagree.

use super::{PassSummary, Status};
use crate::plan::ConditionStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Pass durations: a steady pass takes tens of milliseconds, a cold converge a minute.
const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// `{result,trigger}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    result: String,
    trigger: String,
}

/// `{kind,name}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    kind: String,
    name: String,
}

/// `{rule}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

/// `{service,operation,access}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    operation: String,
    access: String,
}

/// `{kind,cause}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: String,
    cause: String,
}

/// `{receiver,result}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SentLabels {
    receiver: String,
    result: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// One alert receiver.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
}

/// A receiver and a kind of delivery failure.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    receiver: String,
    kind: String,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile: Family<PassLabels, Counter>,
    duration: Histogram,
    ready: Family<ResourceLabels, Gauge>,
    drift: Family<ResourceLabels, Gauge>,
    drift_since: Family<ResourceLabels, FloatGauge>,
    violations: Family<RuleLabels, Gauge>,
    api_calls: Family<CallLabels, Counter>,
    writes: Family<WriteLabels, Counter>,
    manifest_rejected: Gauge,
    last_success: FloatGauge,
    leader: Gauge,
    alerts_sent: Family<SentLabels, Counter>,
    alerts_pending: Gauge,
    alerts_dropped: Gauge,
    delivery_failures: Family<FailureLabels, Counter>,
    receiver_pending: Family<ReceiverLabels, Gauge>,
    receiver_dropped: Family<ReceiverLabels, Gauge>,
    receiver_last_success: Family<ReceiverLabels, FloatGauge>,
    receiver_failing: Family<FailureLabels, Gauge>,
    acknowledged: Family<ResourceLabels, Gauge>,
    source_revision: Gauge,
    source_rejected: Gauge,
    source_stale: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let reconcile = Family::<PassLabels, Counter>::default();
        let duration = Histogram::new(DURATION_BUCKETS);
        let ready = Family::<ResourceLabels, Gauge>::default();
        let drift = Family::<ResourceLabels, Gauge>::default();
        let drift_since = Family::<ResourceLabels, FloatGauge>::default();
        let violations = Family::<RuleLabels, Gauge>::default();
        let api_calls = Family::<CallLabels, Counter>::default();
        let writes = Family::<WriteLabels, Counter>::default();
        let manifest_rejected = Gauge::default();
        let last_success = FloatGauge::default();
        let leader = Gauge::default();
        let alerts_sent = Family::<SentLabels, Counter>::default();
        let alerts_pending = Gauge::default();
        let alerts_dropped = Gauge::default();
        let delivery_failures = Family::<FailureLabels, Counter>::default();
        let receiver_pending = Family::<ReceiverLabels, Gauge>::default();
        let receiver_dropped = Family::<ReceiverLabels, Gauge>::default();
        let receiver_last_success = Family::<ReceiverLabels, FloatGauge>::default();
        let receiver_failing = Family::<FailureLabels, Gauge>::default();
        registry.register(
            "stackwarden_alert_delivery_failures",
            "Failed alert deliveries by receiver and kind (tls, dns, connect, proxy, timeout, status, http, config)",
            delivery_failures.clone(),
        );
        registry.register(
            "stackwarden_alert_receiver_pending",
            "Alerts waiting to reach this receiver in their latest state",
            receiver_pending.clone(),
        );
        registry.register(
            "stackwarden_alert_receiver_dropped",
            "Alerts dropped because this receiver's outbox was full, since start",
            receiver_dropped.clone(),
        );
        registry.register(
            "stackwarden_alert_receiver_last_success_timestamp_seconds",
            "When a delivery to this receiver last succeeded (Unix time)",
            receiver_last_success.clone(),
        );
        registry.register(
            "stackwarden_alert_receiver_failing",
            "1 while this receiver's deliveries fail, labelled with the last failure's kind",
            receiver_failing.clone(),
        );
        let acknowledged = Family::<ResourceLabels, Gauge>::default();
        let source_revision = Gauge::default();
        let source_rejected = Gauge::default();
        let source_stale = Gauge::default();
        registry.register(
            "stackwarden_source_revision",
            "The published revision in force (run --source s3://…; 0 before the first)",
            source_revision.clone(),
        );
        registry.register(
            "stackwarden_source_rejected",
            "1 while the newest published revision stands refused (the last good one is in force)",
            source_rejected.clone(),
        );
        registry.register(
            "stackwarden_source_stale",
            "1 while the pointer in force has expired and nothing newer was published",
            source_stale.clone(),
        );
        registry.register(
            "stackwarden_alerts_sent",
            "Alert deliveries by receiver and result (ok, error)",
            alerts_sent.clone(),
        );
        registry.register(
            "stackwarden_alerts_pending",
            "Alerts waiting to reach a receiver in their latest state",
            alerts_pending.clone(),
        );
        registry.register(
            "stackwarden_alerts_dropped",
            "Alerts dropped because a receiver's outbox was full, since start",
            alerts_dropped.clone(),
        );
        registry.register(
            "stackwarden_acknowledged",
            "1 while an acknowledgement in force covers drift or a violation of the resource",
            acknowledged.clone(),
        );
        registry.register(
            "stackwarden_reconcile",
            "Reconcile passes by result and trigger",
            reconcile.clone(),
        );
        registry.register(
            "stackwarden_reconcile_duration_seconds",
            "Wall time of a reconcile pass",
            duration.clone(),
        );
        registry.register(
            "stackwarden_resource_ready",
            "1 when the resource's Ready condition is True",
            ready.clone(),
        );
        registry.register(
            "stackwarden_drift",
            "1 while live state differs from the manifest",
            drift.clone(),
        );
        registry.register(
            "stackwarden_drift_since_timestamp_seconds",
            "Unix time the resource's current drift was first seen",
            drift_since.clone(),
        );
        registry.register(
            "stackwarden_policy_violations",
            "Live policy violations by rule",
            violations.clone(),
        );
        registry.register(
            "stackwarden_api_calls",
            "API calls by service, operation and access (read or write)",
            api_calls.clone(),
        );
        registry.register(
            "stackwarden_writes",
            "Changes applied by kind and cause",
            writes.clone(),
        );
        registry.register(
            "stackwarden_manifest_rejected",
            "1 while the newest manifest edit is rejected and the last good one stays in force",
            manifest_rejected.clone(),
        );
        registry.register(
            "stackwarden_last_success_timestamp_seconds",
            "Unix time of the last pass that converged",
            last_success.clone(),
        );
        registry.register(
            "stackwarden_leader",
            "1 when this daemon holds the stack's lease and acts",
            leader.clone(),
        );
        Metrics {
            registry,
            reconcile,
            duration,
            ready,
            drift,
            drift_since,
            violations,
            api_calls,
            writes,
            manifest_rejected,
            last_success,
            leader,
            alerts_sent,
            alerts_pending,
            alerts_dropped,
            delivery_failures,
            receiver_pending,
            receiver_dropped,
            receiver_last_success,
            receiver_failing,
            acknowledged,
            source_revision,
            source_rejected,
            source_stale,
        }
    }

    /// Counts deliveries to a receiver (`result`: `ok` or `error`).
    pub fn count_alerts_sent(&self, receiver: &str, result: &str, n: u64) {
        self.alerts_sent
            .get_or_create(&SentLabels {
                receiver: receiver.to_string(),
                result: result.to_string(),
            })
            .inc_by(n);
    }

    /// Counts one finished pass and its calls (`calls`: service, operation, access, count).
    pub fn count_pass(&self, pass: &PassSummary, calls: &[(String, String, &'static str, u64)]) {
        self.reconcile
            .get_or_create(&PassLabels {
                result: pass.result.as_str().to_string(),
                trigger: pass.trigger.as_str().to_string(),
            })
            .inc();
        self.duration.observe(pass.duration_ms as f64 / 1000.0);
        for (service, operation, access, n) in calls {
            self.api_calls
                .get_or_create(&CallLabels {
                    service: service.clone(),
                    operation: operation.clone(),
                    access: access.to_string(),
                })
                .inc_by(*n);
        }
    }

    /// Counts one applied change.
    pub fn count_write(&self, kind: &str, cause: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.to_string(),
                cause: cause.to_string(),
            })
            .inc();
    }

    /// Sets the gauges from a status snapshot (resources that disappeared lose their series).
    pub fn set_from(&self, status: &Status) {
        self.ready.clear();
        self.drift.clear();
        self.drift_since.clear();
        self.violations.clear();
        for r in &status.resources {
            let labels = ResourceLabels {
                kind: r.kind.clone(),
                name: r.name.clone(),
            };
            let ready = r
                .condition("Ready")
                .is_some_and(|c| c.status == ConditionStatus::True);
            self.ready.get_or_create(&labels).set(i64::from(ready));
            self.drift
                .get_or_create(&labels)
                .set(i64::from(r.drift.is_some()));
            if let Some(since) = r.drifted_since {
                self.drift_since
                    .get_or_create(&labels)
                    .set(since.unix_seconds());
            }
        }
        for (rule, _) in crate::policy::RULES {
            let n = status.violations.iter().filter(|v| v.rule == rule).count();
            self.violations
                .get_or_create(&RuleLabels {
                    rule: rule.to_string(),
                })
                .set(n as i64);
        }
        self.manifest_rejected
            .set(i64::from(status.manifest.rejected.is_some()));
        if let Some(source) = &status.source {
            let revision = source.revision.unwrap_or(0);
            self.source_revision
                .set(i64::try_from(revision).unwrap_or(i64::MAX));
            self.source_rejected
                .set(i64::from(source.rejected.is_some()));
            self.source_stale.set(i64::from(source.stale));
        }
        if let Some(t) = status.last_success {
            self.last_success.set(t.unix_seconds());
        }
        self.leader
            .set(i64::from(status.lease.role == crate::status::Role::Leader));
        let receivers = &status.alerts.receivers;
        self.alerts_pending
            .set(receivers.iter().map(|r| r.pending as i64).sum());
        self.alerts_dropped
            .set(receivers.iter().map(|r| r.dropped as i64).sum());
        // Cleared first: a receiver removed from the manifest leaves no series behind.
        self.receiver_pending.clear();
        self.receiver_dropped.clear();
        self.receiver_last_success.clear();
        self.receiver_failing.clear();
        for r in receivers {
            let labels = ReceiverLabels {
                receiver: r.name.clone(),
            };
            self.receiver_pending
                .get_or_create(&labels)
                .set(r.pending as i64);
            self.receiver_dropped
                .get_or_create(&labels)
                .set(r.dropped as i64);
            if let Some(t) = r.last_success {
                self.receiver_last_success
                    .get_or_create(&labels)
                    .set(crate::status::Timestamp(t).unix_seconds());
            }
            if let Some(kind) = r.last_error_kind {
                self.receiver_failing
                    .get_or_create(&FailureLabels {
                        receiver: r.name.clone(),
                        kind: kind.as_str().to_string(),
                    })
                    .set(1);
            }
        }
        self.acknowledged.clear();
        for a in status.acknowledgements.iter().filter(|a| a.active) {
            if let Some((kind, name)) = a.resource.split_once('/') {
                self.acknowledged
                    .get_or_create(&ResourceLabels {
                        kind: kind.to_string(),
                        name: name.to_string(),
                    })
                    .set(1);
            }
        }
    }

    /// The OpenMetrics exposition (for scrapers that ask for it).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text exposition (format 0.0.4), what `promtool check metrics` and most
    /// scrapers read by default.
    pub fn encode(&self) -> String {
        to_prometheus_text(&self.encode_openmetrics())
    }
}

impl crate::alerts::deliver::Counts for Metrics {
    fn count_alerts_sent(&self, receiver: &str, result: &str, n: u64) {
        Metrics::count_alerts_sent(self, receiver, result, n);
    }

    fn count_delivery_failure(&self, receiver: &str, kind: &str) {
        self.delivery_failures
            .get_or_create(&FailureLabels {
                receiver: receiver.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }
}

/// OpenMetrics → Prometheus text 0.0.4. The two differ, for what this exporter emits, only in
/// how a counter family is named in its HELP and TYPE lines (OpenMetrics drops the `_total`
/// its samples carry) and in the `# EOF` terminator.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let lines: Vec<&str> = openmetrics.lines().collect();
    let counters: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    for line in lines {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_families_are_named_with_total_in_prometheus_text() {
        let om = "# HELP x_calls Calls.\n# TYPE x_calls counter\nx_calls_total{a=\"b\"} 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_calls_total Calls.\n# TYPE x_calls_total counter\nx_calls_total{a=\"b\"} 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }

    #[test]
    fn every_contract_metric_is_exported() {
        let m = Metrics::new();
        m.count_write("Container", "drift");
        let pass = super::super::PassSummary {
            started: super::super::Timestamp(std::time::SystemTime::now()),
            duration_ms: 12,
            trigger: super::super::Trigger::Resync,
            result: super::super::PassResult::Converged,
            api_calls: Default::default(),
            writes: 0,
            drifts_found: 0,
            repairs: 0,
        };
        m.count_pass(
            &pass,
            &[("ec2".into(), "DescribeInstances".into(), "read", 1)],
        );
        let status = super::super::Status {
            resources: vec![super::super::ResourceStatus {
                kind: "Container".into(),
                name: "loki".into(),
                mode: crate::model::Mode::Enforce,
                conditions: Vec::new(),
                drift: None,
                drifted_since: Some(pass.started),
                violations: Vec::new(),
                last_error: None,
                last_error_class: None,
                backoff_until: None,
            }],
            ..Default::default()
        };
        m.set_from(&status);
        let text = m.encode();
        for name in [
            "stackwarden_reconcile_total",
            "stackwarden_reconcile_duration_seconds",
            "stackwarden_resource_ready",
            "stackwarden_drift",
            "stackwarden_drift_since_timestamp_seconds",
            "stackwarden_policy_violations",
            "stackwarden_api_calls_total",
            "stackwarden_writes_total",
            "stackwarden_manifest_rejected",
            "stackwarden_last_success_timestamp_seconds",
            "stackwarden_leader",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
        }
    }
}

//! CloudWatch metrics in Embedded Metric Format: one JSON line on stdout per request,
//! which CloudWatch Logs turns into metrics in the `winmdm` namespace with no API calls.
//! Emitted on Lambda (or when `WINMDM_EMF=1`); silent elsewhere.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "winmdm";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF record: metric values sharing dimension values.
#[derive(Debug, Clone, Default)]
pub struct Record {
    dimensions: Vec<(&'static str, String)>,
    /// Extra dimension sets beyond the full one, e.g. `FaultCode` alone for an alarm.
    extra_sets: Vec<Vec<&'static str>>,
    metrics: Vec<(&'static str, f64, Unit)>,
}

impl Record {
    /// A record for a function (the `Function` dimension).
    pub fn new(function: &str) -> Self {
        Self {
            dimensions: vec![("Function", function.to_owned())],
            ..Self::default()
        }
    }

    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self.extra_sets.push(vec![name]);
        self
    }

    pub fn count(mut self, name: &'static str, n: usize) -> Self {
        self.metrics.push((name, n as f64, Unit::Count));
        self
    }

    pub fn millis(mut self, name: &'static str, ms: f64) -> Self {
        self.metrics.push((name, ms, Unit::Milliseconds));
        self
    }

    /// The EMF JSON document.
    pub fn to_json(&self, timestamp_ms: i64) -> Value {
        let mut sets = vec![self.dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()];
        sets.extend(self.extra_sets.iter().cloned());
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": sets,
                    "Metrics": self.metrics.iter().map(|(n, _, u)| json!({"Name": n, "Unit": u.as_str()})).collect::<Vec<_>>(),
                }],
            }),
        );
        for (k, v) in &self.dimensions {
            root.insert((*k).into(), Value::String(v.clone()));
        }
        for (n, v, _) in &self.metrics {
            root.insert((*n).into(), json!(v));
        }
        Value::Object(root)
    }

    fn without_zero_counts(mut self) -> Self {
        self.metrics
            .retain(|(_, v, unit)| !(*unit == Unit::Count && *v == 0.0));
        self
    }

    /// Writes the record, where the logs go, if metrics are enabled. Counts of zero are
    /// left out: each is ≈ 60 bytes of log ingestion per request, and a metric with no
    /// value in a period reads as zero in a Sum (the template's alarms treat missing
    /// data as not breaching).
    pub fn emit(mut self) {
        if !enabled() {
            return;
        }
        self = self.without_zero_counts();
        if self.metrics.is_empty() {
            return;
        }
        let ts = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        crate::logging::write_line(&self.to_json(ts as i64).to_string());
    }
}

static ENABLED: OnceLock<bool> = OnceLock::new();

fn enabled() -> bool {
    *ENABLED.get_or_init(|| {
        crate::logging::on_lambda() || std::env::var("WINMDM_EMF").is_ok_and(|v| v == "1")
    })
}

/// Emits metrics from here on, as on Lambda (for the benchmarks that measure log bytes).
/// No effect once a record was emitted or skipped.
pub fn enable() {
    let _ = ENABLED.set(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_counts_are_left_out_but_latency_stays() {
        let r = Record::new("manage")
            .count("ManagementMessages", 1)
            .count("CommandsFailed", 0)
            .millis("Latency", 0.0)
            .without_zero_counts();
        let names: Vec<_> = r.metrics.iter().map(|m| m.0).collect();
        assert_eq!(names, ["ManagementMessages", "Latency"]);
    }

    #[test]
    fn emf_document_shape() {
        let doc = Record::new("enroll")
            .dimension("FaultCode", "Authentication")
            .count("EnrollmentFaults", 1)
            .millis("Latency", 1.5)
            .to_json(1_700_000_000_000);
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "winmdm");
        assert_eq!(
            cw["Dimensions"],
            json!([["Function", "FaultCode"], ["FaultCode"]])
        );
        assert_eq!(
            cw["Metrics"][1],
            json!({"Name": "Latency", "Unit": "Milliseconds"})
        );
        assert_eq!(doc["Function"], "enroll");
        assert_eq!(doc["FaultCode"], "Authentication");
        assert_eq!(doc["EnrollmentFaults"], 1.0);
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }
}

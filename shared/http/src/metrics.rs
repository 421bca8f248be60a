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

    /// Writes the record if metrics are enabled.
    pub fn emit(self) {
        if !enabled() || self.metrics.is_empty() {
            return;
        }
        let ts = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        println!("{}", self.to_json(ts as i64));
    }
}

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
            || std::env::var("WINMDM_EMF").is_ok_and(|v| v == "1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

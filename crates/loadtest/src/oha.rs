//! Reads an `oha --output-format json` report into the harness's fields.
//!
//! The open-loop scenarios drive servers with `oha -q RATE
//! --latency-correction`: requests are due at a fixed rate and each one's
//! latency counts from when it was due, not from when a free connection
//! finally sent it. A server that stalls then pays for every request that
//! queued behind the stall (no coordinated omission), which is what a user
//! at that rate would see.
//!
//! The fields printed have the same names as `wrk-report.lua`'s, so the
//! scripts and the report treat both generators alike, plus the two that
//! only an open loop has: `offered_rps`, the rate asked for, and `unsent`,
//! the requests that fell due but were still waiting for a connection when
//! the run ended. oha leaves those out of its percentiles; a point with many
//! of them could not keep up with the rate, whatever its latency says.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Context as _;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Report {
    summary: Summary,
    #[serde(rename = "latencyPercentiles", default)]
    percentiles: BTreeMap<String, Option<f64>>,
    #[serde(rename = "statusCodeDistribution", default)]
    statuses: BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution", default)]
    errors: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct Summary {
    /// Seconds.
    total: f64,
    /// Seconds; absent or null when no request completed.
    slowest: Option<f64>,
}

/// The fields of one oha run, as `"key":value` pairs without braces.
pub(crate) fn fields(json: &str, offered_rps: Option<f64>, secs: f64) -> anyhow::Result<String> {
    let report: Report = serde_json::from_str(json).context("not an oha json report")?;
    let answered: u64 = report.statuses.values().sum();
    let status_errors: u64 = report
        .statuses
        .iter()
        .filter(|(code, _)| code.parse::<u16>().map_or(true, |code| code >= 400))
        .map(|(_, n)| n)
        .sum();
    let timeouts: u64 =
        report.errors.iter().filter(|(kind, _)| kind.contains("timeout")).map(|(_, n)| n).sum();
    let failed: u64 = report.errors.values().sum();
    let mut errors = failed + status_errors;
    // As with wrk: a run in which nothing was answered is not a clean run
    // without figures.
    if answered == 0 && errors == 0 {
        errors = 1;
    }
    let duration = report.summary.total;
    // Every request answered was sent within the run's `secs`; `duration`
    // also holds the wait for the last answers (`-w`).
    let rps = if secs > 0.0 { answered as f64 / secs } else { 0.0 };

    let mut out = format!(
        "\"requests\":{answered},\"duration_s\":{duration:.3},\"rps\":{rps:.1},\"errors\":{errors},\
         \"timeouts\":{timeouts},\"status_errors\":{status_errors},\"socket_errors\":{}",
        failed - timeouts
    );
    let ms = |key: &str| report.percentiles.get(key).copied().flatten().map(|s| s * 1000.0);
    for (key, name) in [("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")] {
        if let Some(v) = ms(key) {
            let _ = write!(out, ",\"{name}\":{v:.3}");
        }
    }
    if let Some(max) = report.summary.slowest {
        let _ = write!(out, ",\"max_ms\":{:.3}", max * 1000.0);
    }
    if let Some(offered) = offered_rps {
        let due = (offered * secs).round();
        let unsent = (due - (answered + failed) as f64).max(0.0);
        let _ = write!(out, ",\"offered_rps\":{offered},\"unsent\":{unsent:.0}");
    }
    if !report.errors.is_empty() {
        let kinds: Vec<String> = report.errors.iter().map(|(kind, n)| format!("{kind}: {n}")).collect();
        let _ = write!(out, ",\"error_kinds\":{}", serde_json::Value::from(kinds.join("; ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fields: &str) -> serde_json::Value {
        serde_json::from_str(&format!("{{{fields}}}")).expect("fields make a json object")
    }

    #[test]
    fn a_clean_run_reports_latency_in_ms_and_no_errors() {
        let json = r#"{"summary":{"total":10.0,"slowest":0.25},
            "latencyPercentiles":{"p50":0.201,"p90":0.202,"p99":0.21,"p99.9":0.24},
            "statusCodeDistribution":{"200":9990},"errorDistribution":{}}"#;
        let v = parse(&fields(json, Some(1000.0), 10.0).expect("parsed"));
        assert_eq!(v["requests"], 9990);
        assert_eq!(v["errors"], 0);
        assert_eq!(v["p99_ms"].as_f64(), Some(210.0));
        assert_eq!(v["max_ms"].as_f64(), Some(250.0));
        assert_eq!(v["rps"].as_f64(), Some(999.0));
        assert_eq!(v["unsent"], 10);
    }

    #[test]
    fn timeouts_and_server_errors_count_as_errors() {
        let json = r#"{"summary":{"total":5.0,"slowest":1.0},
            "latencyPercentiles":{"p50":0.5,"p90":0.9,"p99":1.0,"p99.9":1.0},
            "statusCodeDistribution":{"200":90,"503":4},
            "errorDistribution":{"timeout":5,"connection closed before message completed":1}}"#;
        let v = parse(&fields(json, Some(20.0), 5.0).expect("parsed"));
        assert_eq!(v["errors"], 10);
        assert_eq!(v["timeouts"], 5);
        assert_eq!(v["status_errors"], 4);
        assert_eq!(v["socket_errors"], 1);
        assert_eq!(v["unsent"], 0);
        assert!(v["error_kinds"].as_str().is_some_and(|k| k.contains("timeout: 5")));
    }

    #[test]
    fn a_run_with_no_answer_is_an_error_not_an_empty_success() {
        let json = r#"{"summary":{"total":5.0,"slowest":null},"latencyPercentiles":{"p50":null},
            "statusCodeDistribution":{},"errorDistribution":{}}"#;
        let v = parse(&fields(json, None, 5.0).expect("parsed"));
        assert_eq!(v["errors"], 1);
        assert!(v.get("p50_ms").is_none());
        assert!(v.get("unsent").is_none());
    }

    #[test]
    fn anything_but_an_oha_report_is_refused() {
        assert!(fields("wrk said: connection refused", None, 1.0).is_err());
    }
}

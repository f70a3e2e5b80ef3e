//! Prometheus text-format metrics (issue 6), written atomically after every reconcile into
//! `[status] metrics_dir` for node_exporter's textfile collector. Counters persist in the
//! state directory across restarts. Building the text is pure; writing goes via `sys::fs`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::report::{Outcome, RunReport};

/// Counters file in the state directory.
pub const COUNTERS_FILE: &str = "counters.json";
/// Metrics file name in the textfile collector directory.
pub const METRICS_FILE: &str = "rolecall.prom";

/// Monotonic counters since the state directory was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Reconciles by outcome.
    pub reconciles: BTreeMap<String, u64>,
    pub rollbacks: u64,
    /// Failed smoke tests.
    pub smoke_failures: u64,
}

impl Counters {
    /// Count one finished reconcile.
    /// A held reconcile (the inputs of a failure in its backoff) did nothing: it counts
    /// as `held`, not as another failure or rollback.
    pub fn count(&mut self, report: &RunReport) {
        let label = match report.held {
            true => HELD,
            false => outcome_label(report.outcome),
        };
        *self.reconciles.entry(label.to_string()).or_default() += 1;
        if report.outcome == Outcome::RolledBack && !report.held {
            self.rollbacks += 1;
        }
        let failed = report.smoke.iter().filter(|s| !s.ok).count();
        self.smoke_failures += u64::try_from(failed).unwrap_or(u64::MAX);
    }
}

/// The `outcome` label of reconciles that repeated a held failure without doing anything.
pub const HELD: &str = "held";

/// The label value of an outcome.
pub fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Converged => "converged",
        Outcome::Waiting => "waiting",
        Outcome::Failed => "failed",
        Outcome::RolledBack => "rolled_back",
        Outcome::Invalid => "invalid",
    }
}

/// The textfile for `report` and `counters`.
pub fn render(report: &RunReport, counters: &Counters) -> String {
    let mut out = String::new();
    for (name, help, value) in gauges(report) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    reconciles(&mut out, counters);
    let counts = [
        (
            "rolecall_rollbacks_total",
            "Reconciles rolled back after a failed reload, hook or smoke test.",
            counters.rollbacks,
        ),
        (
            "rolecall_smoke_failures_total",
            "Failed smoke tests.",
            counters.smoke_failures,
        ),
    ];
    for (name, help, value) in counts {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    out
}

/// `rolecall_reconciles_total` by outcome, held ones included.
fn reconciles(out: &mut String, counters: &Counters) {
    let _ = writeln!(out, "# HELP rolecall_reconciles_total Reconciles by outcome.\n# TYPE rolecall_reconciles_total counter");
    let labels = [
        Outcome::Converged,
        Outcome::Waiting,
        Outcome::Failed,
        Outcome::RolledBack,
        Outcome::Invalid,
    ]
    .map(outcome_label);
    for label in labels.into_iter().chain([HELD]) {
        let n = counters.reconciles.get(label).copied().unwrap_or(0);
        let _ = writeln!(out, "rolecall_reconciles_total{{outcome=\"{label}\"}} {n}");
    }
}

/// The gauges of the last reconcile: name, help text, value (a table).
fn gauges(report: &RunReport) -> [(&'static str, &'static str, f64); 4] {
    let generation = report.map.as_ref().map_or(0, |m| m.info.generation);
    let from_cache = report.map.as_ref().is_some_and(|m| m.from_cache);
    [
        (
            "rolecall_last_reconcile_timestamp_seconds",
            "Start of the last reconcile, seconds since the epoch.",
            report.started_unix as f64,
        ),
        (
            "rolecall_reconcile_duration_seconds",
            "Wall time of the last reconcile.",
            report.elapsed_ms as f64 / 1000.0,
        ),
        (
            "rolecall_map_generation",
            "Generation of the role map the last reconcile used.",
            generation as f64,
        ),
        (
            "rolecall_map_from_cache",
            "1 when the last reconcile ran on the cached map.",
            if from_cache { 1.0 } else { 0.0 },
        ),
    ]
}

/// Earlier reconciles that were not recorded one by one (the daemon's quiet polls, which
/// all ended alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unrecorded {
    /// How each of them ended.
    pub outcome: Outcome,
    /// How many.
    pub count: u64,
}

/// Count `report` and the `unrecorded` reconciles before it, persist the counters in
/// `state_dir`, and write the textfile into `metrics_dir` when configured.
///
/// # Errors
/// I/O or JSON errors of the state or metrics files.
pub fn record(
    state_dir: &Path,
    metrics_dir: Option<&Path>,
    report: &RunReport,
    unrecorded: Option<Unrecorded>,
) -> Result<(), crate::sys::fs::Error> {
    let path = state_dir.join(COUNTERS_FILE);
    let mut counters: Counters = match crate::sys::fs::read_json(&path) {
        Ok(counters) => counters.unwrap_or_default(),
        // A torn copy (disk trouble, a hand edit): the counters start again, as a scraper
        // expects of counters that reset, instead of the metrics stopping for good.
        Err(e @ crate::sys::fs::Error::Json { .. }) => {
            tracing::warn!(error = %crate::text::chain(&e), "counters unreadable: starting again");
            Counters::default()
        }
        Err(e) => return Err(e),
    };
    if let Some(u) = unrecorded {
        *counters
            .reconciles
            .entry(outcome_label(u.outcome).to_string())
            .or_default() += u.count;
    }
    counters.count(report);
    crate::sys::fs::write_json(&path, &counters)?;
    if let Some(dir) = metrics_dir {
        crate::sys::fs::write_state(
            &dir.join(METRICS_FILE),
            render(report, &counters).as_bytes(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A poll held in a failure's backoff repeats its outcome but did nothing: it is not
    /// another rollback.
    #[test]
    fn held_reconciles_are_not_counted_as_rollbacks() {
        let mut counters = Counters::default();
        let mut rolled = RunReport::start(crate::report::Trigger::Poll);
        rolled.finish(Outcome::RolledBack, "rolled back: x");
        counters.count(&rolled);
        let mut held = rolled.clone();
        held.held = true;
        counters.count(&held);
        counters.count(&held);
        assert_eq!(counters.rollbacks, 1);
        assert_eq!(counters.reconciles["rolled_back"], 1);
        assert_eq!(counters.reconciles[HELD], 2);
        assert!(render(&held, &counters).contains("rolecall_reconciles_total{outcome=\"held\"} 2"));
    }

    #[test]
    fn counts_and_renders_every_metric() {
        let mut report = RunReport::start(crate::report::Trigger::Poll);
        report.finish(Outcome::RolledBack, "rolled back: x");
        let mut counters = Counters::default();
        counters.count(&report);
        let text = render(&report, &counters);
        assert!(
            text.contains("rolecall_reconciles_total{outcome=\"rolled_back\"} 1"),
            "{text}"
        );
        assert!(text.contains("rolecall_rollbacks_total 1"));
        for name in [
            "rolecall_last_reconcile_timestamp_seconds",
            "rolecall_reconcile_duration_seconds",
            "rolecall_map_generation",
            "rolecall_smoke_failures_total",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }
}

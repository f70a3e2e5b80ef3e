//! Stage 10, report (SPEC §7.8): the `RunReport` of a reconcile, its one-line `STATUS=`
//! text, and the status record in the state directory that `status` and `check` read.
//! The only module that reads the wall clock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::apply::FileReport;
use crate::services::ReloadReport;
use crate::smoke::SmokeResult;

/// File name of the status record in the state directory.
pub const STATUS_FILE: &str = "status.json";

/// How a reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Disk matches the map (changed or not).
    Converged,
    /// The host is not in the map yet.
    Waiting,
    /// A check, reload or write failed; the service's files were restored.
    Failed,
    /// A smoke test failed; every change was rolled back.
    RolledBack,
    /// Bad input (invalid map, refused plan, render error): nothing was written.
    Invalid,
}

/// Where the map came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapReport {
    /// Source URL.
    pub url: String,
    /// ETag.
    pub etag: Option<String>,
    /// S3 VersionId.
    pub version: Option<String>,
    /// Generation.
    pub generation: u64,
    /// Served from the last-good cache rather than the source.
    pub from_cache: bool,
    /// Why the cache was used, if it was.
    pub cache_reason: Option<String>,
}

/// Everything one reconcile did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Unique id of the reconcile.
    pub reconcile_id: String,
    /// `boot`, `poll`, `sighup` or `sync`.
    pub trigger: String,
    /// Start time, seconds since the epoch.
    pub started_unix: u64,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Result.
    pub outcome: Outcome,
    /// One-line human summary.
    pub message: String,
    /// Host id, once known.
    pub host_id: Option<String>,
    /// Map used.
    pub map: Option<MapReport>,
    /// Files changed.
    pub files: Vec<FileReport>,
    /// Reloads run.
    pub services: Vec<ReloadReport>,
    /// Smoke test results.
    pub smoke: Vec<SmokeResult>,
    /// Position hooks run.
    #[serde(default)]
    pub hooks: Vec<crate::hooks::HookReport>,
    /// Smoke results after a rollback (the old state's health).
    #[serde(default)]
    pub smoke_after_rollback: Vec<SmokeResult>,
    /// Milliseconds per stage.
    pub timings: BTreeMap<String, u64>,
    /// Time of the last converged reconcile (carried over between runs).
    pub last_converged_unix: Option<u64>,
}

impl RunReport {
    /// A report for a reconcile starting now.
    pub fn start(trigger: &str) -> RunReport {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        RunReport {
            reconcile_id: format!("{:x}-{}", now.as_millis(), std::process::id()),
            trigger: trigger.to_string(),
            started_unix: now.as_secs(),
            elapsed_ms: 0,
            outcome: Outcome::Converged,
            message: String::new(),
            host_id: None,
            map: None,
            files: Vec::new(),
            services: Vec::new(),
            smoke: Vec::new(),
            hooks: Vec::new(),
            smoke_after_rollback: Vec::new(),
            timings: BTreeMap::new(),
            last_converged_unix: None,
        }
    }

    /// Set the outcome and message.
    pub fn finish(&mut self, outcome: Outcome, message: impl Into<String>) {
        self.outcome = outcome;
        self.message = message.into();
        if outcome == Outcome::Converged {
            self.last_converged_unix = Some(self.started_unix);
        }
    }

    /// The `STATUS=` line for systemd.
    pub fn status_line(&self) -> String {
        self.message.clone()
    }

    /// Count of files changed.
    pub fn changed(&self) -> usize {
        self.files.len()
    }
}

/// Seconds since the epoch now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The status record's path.
pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATUS_FILE)
}

/// Write the status record, keeping `last_converged_unix` from the previous one.
///
/// # Errors
/// I/O.
pub fn write(state_dir: &Path, report: &mut RunReport) -> Result<(), crate::sys::fs::Error> {
    if report.last_converged_unix.is_none() {
        report.last_converged_unix = read(state_dir)
            .ok()
            .flatten()
            .and_then(|r| r.last_converged_unix);
    }
    crate::sys::fs::write_json(&status_path(state_dir), report)
}

/// Read the status record, if any.
///
/// # Errors
/// I/O or JSON.
pub fn read(state_dir: &Path) -> Result<Option<RunReport>, crate::sys::fs::Error> {
    crate::sys::fs::read_json(&status_path(state_dir))
}

/// Human summary for `sync` and `status`.
pub fn summary(r: &RunReport) -> String {
    let word = outcome_word(r.outcome);
    let mut out = if r.message.starts_with(word) {
        format!("{}\n", r.message)
    } else {
        format!("{word}: {}\n", r.message)
    };
    if let Some(m) = &r.map {
        let cache = if m.from_cache { " (from cache)" } else { "" };
        let etag = m.etag.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "map: {} generation {} etag {etag}{cache}\n",
            m.url, m.generation
        ));
    }
    for f in &r.files {
        out.push_str(&format!("  {:<8} {}\n", f.action, f.path.display()));
    }
    for s in &r.services {
        out.push_str(&step(&s.action, &s.service, s.ok, &s.error, s.elapsed_ms));
    }
    for s in &r.smoke {
        out.push_str(&step("smoke", &s.name, s.ok, &s.error, s.elapsed_ms));
    }
    for h in &r.hooks {
        out.push_str(&step(
            "hook",
            &format!("{} `{}`", h.on, h.command),
            h.ok,
            &h.error,
            h.elapsed_ms,
        ));
    }
    for s in &r.smoke_after_rollback {
        let state = if s.ok { "ok" } else { "STILL FAILING" };
        out.push_str(&format!("  after rollback: smoke {} {state}\n", s.name));
    }
    out.push_str(&format!(
        "took {} ms (reconcile {})\n",
        r.elapsed_ms, r.reconcile_id
    ));
    out
}

/// One indented result line: `  <kind> <what> ok|FAILED: why (N ms)`.
fn step(kind: &str, what: &str, ok: bool, error: &Option<String>, elapsed_ms: u64) -> String {
    let state = if ok {
        "ok".to_string()
    } else {
        format!("FAILED: {}", error.clone().unwrap_or_default())
    };
    format!("  {kind:<8} {what} {state} ({elapsed_ms} ms)\n")
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Converged => "converged",
        Outcome::Waiting => "waiting",
        Outcome::Failed => "failed",
        Outcome::RolledBack => "rolled back",
        Outcome::Invalid => "invalid",
    }
}

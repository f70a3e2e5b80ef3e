//! Stage 10, report (SPEC §7.8): how a reconcile ended, decided in one place
//! ([`RunReport::conclude`]) from what its stages returned; its one-line `STATUS=` text; and
//! the status record in the state directory that `status` and `check` read. Building the
//! report is pure; the only module that reads the wall clock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::apply::FileReport;
use crate::hooks::HookReport;
use crate::render::MapInfo;
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

crate::text::named! {
    /// What started a reconcile.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Trigger {
        /// Daemon start.
        Boot = "boot",
        /// Poll interval elapsed.
        Poll = "poll",
        /// SIGHUP.
        Sighup = "sighup",
        /// `rolecall sync`.
        Sync = "sync",
    }
}

impl Trigger {
    /// Asked for by hand (SIGHUP, `rolecall sync`): secrets are read again (SPEC §10).
    pub fn is_manual(self) -> bool {
        matches!(self, Trigger::Sighup | Trigger::Sync)
    }
}

/// How a reconcile that did not fail ended, as its stages returned it.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Map unchanged, disk as settled (or the host still waiting for its role): nothing
    /// parsed, rendered or written.
    Quiet {
        /// Still waiting for its role.
        waiting: bool,
    },
    /// Not in the map (quietly or not).
    Waiting,
    /// The inputs of a failure still in its backoff: nothing done, the failure repeated.
    Held {
        /// The failed reconcile's outcome.
        outcome: Outcome,
        /// Its message.
        message: String,
    },
    /// Rendered and planned: nothing to change.
    Unchanged,
    /// Changes applied (every service, or all but `failed` ones) and verified.
    Applied(Applied),
}

/// What an applying reconcile did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Files written or removed.
    pub files: Vec<FileReport>,
    /// Account changes made (SPEC §10), one phrase each.
    pub accounts: Vec<String>,
    /// Reloads, hooks and smoke tests.
    pub verified: Verified,
    /// Service transactions that failed (files restored), one message each.
    pub failed: Vec<String>,
}

/// Stages 7–8: reloads, position hooks and smoke tests.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    /// Reloads run.
    pub services: Vec<ReloadReport>,
    /// Hooks run.
    pub hooks: Vec<HookReport>,
    /// Smoke tests run.
    pub smoke: Vec<SmokeResult>,
}

impl Verified {
    /// Every reload, hook and smoke test passed.
    pub fn passed(&self) -> bool {
        self.services.iter().all(|s| s.ok)
            && self.hooks.iter().all(|h| h.ok)
            && self.smoke.iter().all(|s| s.ok)
    }

    /// What failed, one phrase each: smoke tests, reloads and hooks.
    pub fn failures(&self) -> Vec<String> {
        failed_checks(&self.smoke, &self.services, &self.hooks, "")
    }
}

/// What failed, one phrase each: smoke tests, reloads and hooks, in that order; a failure
/// without an error text says `unexplained`.
pub(crate) fn failed_checks(
    smoke: &[SmokeResult],
    services: &[ReloadReport],
    hooks: &[HookReport],
    unexplained: &str,
) -> Vec<String> {
    let why = |e: &Option<String>| e.as_deref().unwrap_or(unexplained).to_string();
    let smoke = smoke
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("smoke test {}: {}", s.name, why(&s.error)));
    let reloads = services
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{} {}: {}", s.action, s.service, why(&s.error)));
    let hooks = hooks
        .iter()
        .filter(|h| !h.ok)
        .map(|h| format!("hook {}: {}", h.on, why(&h.error)));
    smoke.chain(reloads).chain(hooks).collect()
}

/// How a reconcile failed.
#[derive(Debug)]
pub(crate) enum Failed {
    /// A stage failed before anything was changed, or a state file could not be kept.
    Error {
        /// The error chain.
        text: String,
        /// Bad input or configuration (exit 2) rather than a failure.
        bad_input: bool,
    },
    /// A reload, hook or smoke test failed: every change was undone.
    RolledBack {
        /// What ran and failed.
        verified: Verified,
        /// Files or reloads the rollback could not restore.
        errors: Vec<String>,
        /// The smoke tests of the last converged configuration, after the rollback.
        smoke_after: Vec<SmokeResult>,
        /// Nothing had been applied before this reconcile (first boot): the rollback left
        /// the host's own files, not a configuration of rolecall's.
        first: bool,
    },
}

/// What the stages observed on the way, whatever the end.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// Host id, once known.
    pub host_id: Option<String>,
    /// The map used.
    pub map: Option<MapReport>,
    /// Why the live map was refused when the cached one was used instead.
    pub rejected: Option<String>,
    /// Milliseconds per stage.
    pub timings: BTreeMap<String, u64>,
    /// A staged rollout kept the applied map (SPEC §9.2).
    pub rollout: Option<crate::fleet::gate::Note>,
}

/// Where the map came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapReport {
    /// Where it came from (keys `url`, `etag`, `version`, `generation`).
    #[serde(flatten)]
    pub info: MapInfo,
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
    /// What started it.
    pub trigger: Trigger,
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
    /// Account changes made (SPEC §10), e.g. `create user tv (uid 20001, …)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
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
    /// A newer generation this host does not apply yet, held for its wave or halted
    /// (SPEC §9.2); the rest of the report is about the map it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::fleet::gate::Note>,
    /// Nothing was done: the inputs of a failure still in its backoff; the outcome and
    /// message repeat that failure's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

impl RunReport {
    /// A report for a reconcile starting now.
    pub fn start(trigger: Trigger) -> RunReport {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        RunReport {
            reconcile_id: format!("{:x}-{}", now.as_millis(), std::process::id()),
            trigger,
            started_unix: now.as_secs(),
            elapsed_ms: 0,
            outcome: Outcome::Converged,
            message: String::new(),
            host_id: None,
            map: None,
            files: Vec::new(),
            accounts: Vec::new(),
            services: Vec::new(),
            smoke: Vec::new(),
            hooks: Vec::new(),
            smoke_after_rollback: Vec::new(),
            timings: BTreeMap::new(),
            last_converged_unix: None,
            rollout: None,
            held: false,
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

    /// Decide the outcome and message from what the stages returned: the one place that
    /// does (issue 11).
    pub(crate) fn conclude(&mut self, facts: Facts, result: Result<Ended, Failed>) {
        self.host_id = facts.host_id;
        self.map = facts.map;
        self.timings = facts.timings;
        self.rollout = facts.rollout;
        let (outcome, mut message) = match result {
            Ok(ended) => self.ended(ended),
            Err(failed) => self.failed(failed),
        };
        if let Some(note) = &self.rollout {
            message = format!("{message}; {}", note.describe());
        }
        match (&facts.rejected, outcome) {
            (Some(why), Outcome::Converged) => {
                let generation = self.map.as_ref().map_or(0, |m| m.info.generation);
                let text = format!("map rejected: {why}; kept generation {generation}");
                self.finish(Outcome::Invalid, text);
            }
            _ => self.finish(outcome, message),
        }
    }

    fn ended(&mut self, ended: Ended) -> (Outcome, String) {
        match ended {
            Ended::Quiet { waiting: false } | Ended::Unchanged => {
                (Outcome::Converged, self.converged("no changes"))
            }
            Ended::Quiet { waiting: true } | Ended::Waiting => (Outcome::Waiting, self.waiting()),
            Ended::Held { outcome, message } => {
                self.held = true;
                let text = format!(
                    "{message} (retrying after a backoff, or at once on a new map or catalog)"
                );
                (outcome, text)
            }
            Ended::Applied(applied) => self.applied(applied),
        }
    }

    fn applied(&mut self, applied: Applied) -> (Outcome, String) {
        self.files = applied.files;
        self.accounts = applied.accounts;
        self.record(applied.verified);
        if applied.failed.is_empty() {
            let what = match self.accounts.len() {
                0 => format!("{} files changed", self.files.len()),
                n => format!("{} files and {n} accounts changed", self.files.len()),
            };
            (Outcome::Converged, self.converged(&what))
        } else {
            (Outcome::Failed, applied.failed.join("; "))
        }
    }

    fn failed(&mut self, failed: Failed) -> (Outcome, String) {
        match failed {
            Failed::Error { text, bad_input } => {
                let outcome = if bad_input {
                    Outcome::Invalid
                } else {
                    Outcome::Failed
                };
                (outcome, text)
            }
            Failed::RolledBack {
                verified,
                errors,
                smoke_after,
                first,
            } => {
                let message = rolled_back_text(&verified.failures(), &errors, &smoke_after, first);
                self.record(verified);
                self.smoke_after_rollback = smoke_after;
                (Outcome::RolledBack, message)
            }
        }
    }

    fn record(&mut self, verified: Verified) {
        self.services = verified.services;
        self.hooks = verified.hooks;
        self.smoke = verified.smoke;
    }

    /// `converged to generation N (etag E), <what>[ using cached map (why)]`.
    fn converged(&self, what: &str) -> String {
        let (generation, etag, cache) = match &self.map {
            Some(m) => (
                m.info.generation,
                m.info.etag.as_deref(),
                m.cache_reason.as_deref(),
            ),
            None => (0, None, None),
        };
        let from_cache = self.map.as_ref().is_some_and(|m| m.from_cache);
        let cache = cache
            .filter(|_| from_cache)
            .map_or(String::new(), |r| format!(" using cached map ({r})"));
        format!(
            "converged to generation {generation} (etag {}), {what}{cache}",
            etag.unwrap_or("-")
        )
    }

    fn waiting(&self) -> String {
        format!(
            "waiting for role assignment: host {} is not in the map",
            self.host_id.as_deref().unwrap_or("-")
        )
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

/// `rolled back: <what failed>[; ROLLBACK INCOMPLETE: …][; still failing after rollback: …]`.
fn rolled_back_text(
    failing: &[String],
    errors: &[String],
    smoke_after: &[SmokeResult],
    first: bool,
) -> String {
    let mut message = format!("rolled back: {}", failing.join("; "));
    if !errors.is_empty() {
        message.push_str(&format!("; ROLLBACK INCOMPLETE: {}", errors.join("; ")));
    }
    let unhealthy: Vec<&str> = smoke_after
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.name.as_str())
        .collect();
    if !unhealthy.is_empty() {
        message.push_str(&format!(
            "; still failing after rollback: {}",
            unhealthy.join(", ")
        ));
    }
    if first {
        message.push_str("; nothing was applied before: the host keeps its own files");
    }
    message
}

/// The wall clock now (staged rollouts compare it with their waves' opening times).
pub fn now() -> SystemTime {
    SystemTime::now()
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

/// Keep `last_converged_unix` from the previous status record when `report` did not
/// converge (an unreadable record keeps none).
pub fn carry_last_converged(state_dir: &Path, report: &mut RunReport) {
    if report.last_converged_unix.is_none() {
        report.last_converged_unix = read(state_dir)
            .ok()
            .flatten()
            .and_then(|r| r.last_converged_unix);
    }
}

/// Write the status record.
///
/// # Errors
/// I/O.
pub fn write(state_dir: &Path, report: &RunReport) -> Result<(), crate::sys::fs::Error> {
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
        let etag = m.info.etag.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "map: {} generation {} etag {etag}{cache}\n",
            m.info.url, m.info.generation
        ));
    }
    out.push_str(&changes(r));
    out.push_str(&steps(r));
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

/// One line per service command, smoke test and hook run.
fn steps(r: &RunReport) -> String {
    let services = r
        .services
        .iter()
        .map(|s| step(&s.action, &s.service, s.ok, &s.error, s.elapsed_ms));
    let smoke = r
        .smoke
        .iter()
        .map(|s| step("smoke", &s.name, s.ok, &s.error, s.elapsed_ms));
    let hooks = r.hooks.iter().map(|h| {
        let what = format!("{} `{}`", h.on, h.command);
        step("hook", &what, h.ok, &h.error, h.elapsed_ms)
    });
    services.chain(smoke).chain(hooks).collect()
}

/// One line per account change, then per file.
fn changes(r: &RunReport) -> String {
    let accounts = r.accounts.iter().map(|a| format!("  account  {a}\n"));
    let files = r
        .files
        .iter()
        .map(|f| format!("  {:<8} {}\n", f.action, f.path.display()));
    accounts.chain(files).collect()
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

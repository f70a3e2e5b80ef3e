//! One reconcile (SPEC §7): identity → map → view → render → plan → apply → reload →
//! smoke → (rollback) → report. The only code that knows the stage order; each stage is a
//! function of its own module and they talk through plain values.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{error, info, instrument, warn};

use crate::apply::{self, FileReport, Receipt};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::error::{chain, Error};
use crate::hooks;
use crate::identity::{AnyIdentity, Identity, IdentitySource};
use crate::plan::Plan;
use crate::render::{Hook, SmokeTest};
use crate::report::{self, Outcome, RunReport};
use crate::source::{AnySource, Cache};
use crate::sys::fs::Fs;
use crate::sys::{lock, notify};
use crate::{rollback, services, smoke};

use map::fingerprint;
use state::{commit, store_cache, store_if_changed, store_position};

mod journal;
mod map;
mod preview;
mod settled;
mod state;

pub use map::{obtain_map, LoadedMap};
pub use preview::{preview, Preview};
pub use settled::SETTLED_FILE;
pub use state::{read_records, RECORDS_FILE, SMOKE_FILE};

/// How long a reconcile waits for another one to finish.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// What started a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Daemon start.
    Boot,
    /// Poll interval elapsed.
    Poll,
    /// SIGHUP.
    Sighup,
    /// `rolecall sync`.
    Sync,
}

impl Trigger {
    /// Name used in logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Boot => "boot",
            Trigger::Poll => "poll",
            Trigger::Sighup => "sighup",
            Trigger::Sync => "sync",
        }
    }
}

/// The agent's fixed context: settings and where things are on this machine.
#[derive(Debug)]
pub struct Agent {
    /// Validated agent.toml.
    pub settings: Settings,
    /// `--root` prefix.
    pub root: PathBuf,
    /// Writer for managed files.
    pub fs: Fs,
    /// Physical state directory.
    pub state_dir: PathBuf,
    /// Where the host's identity comes from.
    pub identity: AnyIdentity,
    /// Run checks, reloads and smoke tests (off for image builds and demos: files only).
    pub run_services: bool,
    /// The identity once read: an instance's id, zone and address do not change while it
    /// runs, so the daemon asks instance metadata once, not on every poll.
    known: std::sync::OnceLock<Identity>,
}

impl Agent {
    /// Build the context for `settings` under `root`.
    pub fn new(settings: Settings, root: &Path) -> Agent {
        let fs = Fs::new(root, &settings.allowed_roots);
        let state_dir = fs.physical(&settings.state_dir);
        let identity = AnyIdentity::from_config(&settings.identity);
        Agent {
            settings,
            root: root.to_path_buf(),
            fs,
            state_dir,
            identity,
            run_services: true,
            known: std::sync::OnceLock::new(),
        }
    }

    /// The last-good map cache.
    pub fn cache(&self) -> Cache {
        Cache::new(&self.state_dir)
    }
}

/// Fetch the map and reconcile once under the lock; writes the status record.
pub async fn sync(agent: &Agent, trigger: Trigger) -> RunReport {
    let mut report = RunReport::start(trigger.as_str());
    let started = Instant::now();
    match lock::acquire(&agent.state_dir, LOCK_TIMEOUT).await {
        Ok(_lock) => {
            let source =
                AnySource::from_url(&agent.settings.map_url, agent.settings.fetch_timeout).await;
            match source {
                Ok(source) => run(agent, &source, &mut report).await,
                Err(e) => fail(&mut report, &Error::from(e)),
            }
            finish(agent, &mut report, started);
        }
        Err(e) => {
            fail(&mut report, &Error::from(e));
            report.elapsed_ms = elapsed_ms(started);
        }
    }
    report
}

/// A failed set of inputs the daemon does not retry before `until` (SPEC §7, issue 4).
#[derive(Debug, Clone)]
pub struct Hold {
    /// Fingerprint of the map and catalog that failed.
    pub fingerprint: String,
    /// Failures in a row with these inputs.
    pub failures: u32,
    /// No retry before this, unless the inputs change or someone asks.
    pub until: tokio::time::Instant,
    /// The failed reconcile's report, repeated while held.
    pub report: RunReport,
}

/// What a reconcile worked from, for the daemon's backoff decisions.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Fingerprint of everything the render depends on, once a map was obtained.
    pub fingerprint: Option<String>,
    /// The inputs matched a hold: nothing was done.
    pub held: bool,
    /// The map was unchanged and the disk as the last converged reconcile left it:
    /// nothing was parsed, rendered or written.
    pub quiet: bool,
}

/// One reconcile with an already-built source; the caller holds the lock.
pub async fn run(agent: &Agent, source: &AnySource, report: &mut RunReport) {
    let quiet = report.trigger != Trigger::Boot.as_str();
    run_held(agent, source, report, None, quiet, None).await;
}

/// Called once a reconcile's files are installed and every service's check passed, before
/// any service command (reload, restart, hook, smoke test) runs: the daemon's `READY=1` at
/// boot, when the services it is ordered before are still waiting for it (issue 16).
pub type Installed<'a> = &'a dyn Fn();

/// As [`run`], but skips the work when the inputs are those of `hold`. An unchanged map
/// may end the reconcile early as "waiting" at any time, as "converged" only when `quiet`
/// allows it (the daemon allows it once it has converged through the full path, smoke
/// tests included); without `quiet`, an empty plan still runs the smoke tests.
#[instrument(skip_all, fields(reconcile_id = %report.reconcile_id, trigger = %report.trigger))]
pub async fn run_held(
    agent: &Agent,
    source: &AnySource,
    report: &mut RunReport,
    hold: Option<&Hold>,
    quiet: bool,
    installed: Option<Installed<'_>>,
) -> Inputs {
    let recovered = journal::recover(agent);
    if recovered > 0 {
        warn!(
            files = recovered,
            "an interrupted reconcile was undone; applying again"
        );
    }
    let identity = match timed(report, "identity", identify(agent)).await {
        Ok(id) => id,
        Err(e) => {
            fail(report, &Error::from(e));
            return Inputs::default();
        }
    };
    report.host_id = Some(identity.id.clone());
    let fetched = timed(report, "fetch", map::fetch(agent, source)).await;
    // An unchanged map's SHA-256 and fingerprint, kept for the full path if it must run.
    let mut unchanged = None;
    if let Some(meta) = fetched.unchanged() {
        let fingerprint = fingerprint(agent, &identity, &meta.sha256);
        let found = timed(report, "drift", async {
            settled::quiet(agent, &fingerprint, quiet)
        })
        .await;
        if let Some(found) = found {
            let (outcome, text) = match found {
                settled::Quiet::Converged => (
                    Outcome::Converged,
                    converged_text(meta.generation, meta.etag.as_deref(), None, "no changes"),
                ),
                settled::Quiet::Waiting => (Outcome::Waiting, waiting_text(&identity)),
            };
            report.map = Some(map::unchanged_report(meta));
            report.finish(outcome, text);
            return Inputs {
                fingerprint: Some(fingerprint),
                held: false,
                quiet: true,
            };
        }
        unchanged = Some((meta.sha256.clone(), fingerprint));
    }
    let loaded = match timed(report, "load", map::load(agent, fetched, &identity)).await {
        Ok(loaded) => {
            report.map = Some(loaded.report());
            loaded
        }
        Err(e) => {
            fail(report, &e);
            return Inputs::default();
        }
    };
    let fingerprint = match unchanged {
        Some((sha256, fingerprint)) if sha256 == loaded.sha256 => fingerprint,
        _ => fingerprint(agent, &identity, &loaded.sha256),
    };
    if let Some(h) = hold.filter(|h| h.fingerprint == fingerprint) {
        info!(
            failures = h.failures,
            "same inputs as the last failure: waiting for the backoff"
        );
        let text = format!(
            "{} (retrying after a backoff, or at once on a new map or catalog)",
            h.report.message
        );
        report.finish(h.report.outcome, text);
        return Inputs {
            fingerprint: None,
            held: true,
            quiet: false,
        };
    }
    let full = Full {
        verify: !quiet,
        installed,
    };
    reconcile(agent, &identity, &loaded, &fingerprint, &full, report).await;
    if loaded.live_rejected && report.outcome == Outcome::Converged {
        let why = loaded.cache_reason.clone().unwrap_or_default();
        let generation = loaded.info.generation;
        report.finish(
            Outcome::Invalid,
            format!("map rejected: {why}; kept generation {generation}"),
        );
    }
    Inputs {
        fingerprint: Some(fingerprint),
        held: false,
        quiet: false,
    }
}

/// Stage 1, read once per process (see `Agent::known`).
async fn identify(agent: &Agent) -> Result<Identity, crate::identity::Error> {
    if let Some(known) = agent.known.get() {
        return Ok(known.clone());
    }
    let identity = match &agent.identity {
        AnyIdentity::Imds(imds) => {
            imds.identify_with(|path| {
                notify::status(&format!("waiting for instance metadata ({path})"));
            })
            .await
        }
        other => other.identify().await,
    }?;
    Ok(agent.known.get_or_init(|| identity).clone())
}

async fn timed<T>(
    report: &mut RunReport,
    stage: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let out = fut.await;
    report
        .timings
        .insert(stage.to_string(), elapsed_ms(started));
    out
}

/// Elapsed milliseconds since `started`.
pub fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn fail(report: &mut RunReport, err: &Error) {
    let outcome = if err.is_bad_input() {
        Outcome::Invalid
    } else {
        Outcome::Failed
    };
    let text = chain(err);
    error!(error = %text, "reconcile failed");
    report.finish(outcome, text);
}

/// Record the end of a reconcile: elapsed time, status record, `STATUS=`, summary log.
pub fn finish(agent: &Agent, report: &mut RunReport, started: Instant) {
    report.elapsed_ms = elapsed_ms(started);
    record(agent, report, None);
    notify::status(&report.status_line());
}

/// Write the status record and the metrics for `report`, counting the `unrecorded`
/// reconciles before it (the daemon's quiet polls).
pub fn record(
    agent: &Agent,
    report: &mut RunReport,
    unrecorded: Option<crate::metrics::Unrecorded>,
) {
    if let Err(e) = report::write(&agent.state_dir, report) {
        warn!(error = %chain(&e), "status record not written");
    }
    let metrics_dir = agent
        .settings
        .metrics_dir
        .as_ref()
        .map(|d| agent.fs.physical(d));
    let metrics =
        crate::metrics::record(&agent.state_dir, metrics_dir.as_deref(), report, unrecorded);
    if let Err(e) = metrics {
        warn!(error = %chain(&e), "metrics not written");
    }
    info!(outcome = ?report.outcome, changed = report.changed(), elapsed_ms = report.elapsed_ms, "reconcile finished");
}

/// How the full path runs: whether an empty plan is still verified (boot, and until the
/// daemon has converged once), and whom to tell when the files are installed.
struct Full<'a> {
    verify: bool,
    installed: Option<Installed<'a>>,
}

#[instrument(skip_all)]
async fn reconcile(
    agent: &Agent,
    identity: &Identity,
    loaded: &LoadedMap,
    fingerprint: &str,
    full: &Full<'_>,
    report: &mut RunReport,
) {
    let preview = match preview(agent, loaded) {
        Ok(Some(p)) => p,
        Ok(None) => {
            info!(host_id = %identity.id, "waiting for role assignment");
            store_cache(agent, loaded);
            settled::store_waiting(agent, fingerprint);
            return report.finish(Outcome::Waiting, waiting_text(identity));
        }
        Err(e) => return fail(report, &e),
    };
    if preview.is_noop() && !full.verify {
        commit(agent, loaded, &preview.desired, &BTreeSet::new());
        settled::store(agent, fingerprint, &preview.desired);
        return report.finish(Outcome::Converged, loaded_text(loaded, "no changes"));
    }
    if let Err(e) = settled::forget(agent) {
        return fail(report, &Error::from(e));
    }
    execute(agent, loaded, &preview, full.installed, report).await;
    if report.outcome == Outcome::Converged {
        settled::store(agent, fingerprint, &preview.desired);
    }
}

async fn execute(
    agent: &Agent,
    loaded: &LoadedMap,
    preview: &Preview,
    installed: Option<Installed<'_>>,
    report: &mut RunReport,
) {
    let started = Instant::now();
    journal::open(agent, &preview.plan);
    let (receipts, failed) = apply_all(agent, &preview.catalog, &preview.plan).await;
    report.timings.insert("apply".into(), elapsed_ms(started));
    if let Some(installed) = installed.filter(|_| failed.is_empty()) {
        installed();
    }
    if agent.run_services && !verify(preview, &receipts, report).await {
        let last_good: Vec<SmokeTest> =
            crate::sys::fs::read_json(&agent.state_dir.join(SMOKE_FILE))
                .ok()
                .flatten()
                .unwrap_or_default();
        rollback::rollback(&agent.fs, &preview.catalog, &receipts, &last_good, report).await;
        return journal::close(agent);
    }
    report.files = file_reports(&receipts);
    commit(
        agent,
        loaded,
        &preview.desired,
        &failed.keys().cloned().collect(),
    );
    if agent.run_services {
        store_position(agent, preview.position.as_ref());
        store_if_changed(agent, SMOKE_FILE, &preview.desired.smoke);
    }
    journal::close(agent);
    if failed.is_empty() {
        let what = format!("{} files changed", report.files.len());
        report.finish(Outcome::Converged, loaded_text(loaded, &what));
    } else {
        let texts: Vec<&str> = failed.values().map(String::as_str).collect();
        report.finish(Outcome::Failed, texts.join("; "));
    }
}

/// Stages 7–8 and the hooks: reload each changed service once, run the due hooks, run the
/// smoke tests. `false` when anything failed (the caller rolls back).
async fn verify(preview: &Preview, receipts: &[Receipt], report: &mut RunReport) -> bool {
    let started = Instant::now();
    for svc in services::needs_reload(&preview.catalog, receipts) {
        report.services.push(services::reload(svc).await);
    }
    report.timings.insert("reload".into(), elapsed_ms(started));
    if report.services.iter().all(|s| s.ok) {
        let due: Vec<&Hook> = preview.hooks.iter().collect();
        report.hooks = timed(report, "hooks", hooks::run(&due)).await;
    }
    report.smoke = timed(report, "smoke", smoke::smoke(&preview.desired.smoke)).await;
    report.services.iter().all(|s| s.ok)
        && report.hooks.iter().all(|h| h.ok)
        && report.smoke.iter().all(|s| s.ok)
}

/// Failed services (`None` for files without a service) and why.
type Failed = BTreeMap<Option<String>, String>;

async fn apply_all(agent: &Agent, catalog: &Catalog, plan: &Plan) -> (Vec<Receipt>, Failed) {
    let mut receipts = Vec::new();
    let mut failures = Failed::new();
    for (service, changes) in plan.by_service() {
        let svc = service
            .as_ref()
            .and_then(|s| catalog.services.get(s))
            .filter(|_| agent.run_services);
        match apply::apply(&agent.fs, svc, &changes).await {
            Ok(r) => receipts.push(r),
            Err(e) => {
                error!(error = %chain(&e), "service transaction failed, files restored");
                failures.insert(service.clone(), chain(&e));
            }
        }
    }
    (receipts, failures)
}

fn waiting_text(identity: &Identity) -> String {
    format!(
        "waiting for role assignment: host {} is not in the map",
        identity.id
    )
}

fn loaded_text(loaded: &LoadedMap, what: &str) -> String {
    let cache_reason = loaded.cache_reason.as_deref().filter(|_| loaded.from_cache);
    converged_text(
        loaded.info.generation,
        loaded.info.etag.as_deref(),
        cache_reason,
        what,
    )
}

fn converged_text(
    generation: u64,
    etag: Option<&str>,
    cache_reason: Option<&str>,
    what: &str,
) -> String {
    let cache = cache_reason.map_or(String::new(), |r| format!(" using cached map ({r})"));
    format!(
        "converged to generation {generation} (etag {}), {what}{cache}",
        etag.unwrap_or("-")
    )
}

fn file_reports(receipts: &[Receipt]) -> Vec<FileReport> {
    receipts
        .iter()
        .flat_map(|r| {
            r.applied.iter().map(move |a| FileReport {
                path: a.path.clone(),
                action: format!("{:?}", a.action).to_lowercase(),
                service: r.service.clone(),
            })
        })
        .collect()
}

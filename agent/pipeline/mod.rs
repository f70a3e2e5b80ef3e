//! One reconcile (SPEC §7): identity → map → view → render → plan → apply → reload →
//! smoke → (rollback) → report. [`reconcile`] is the only code that knows the stage
//! order; each stage is a function that returns a value, failures leave with `?`, and the
//! report's outcome is decided once, from what came back (`report::RunReport::conclude`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{error, info, info_span, warn, Instrument};

use crate::config::Settings;
use crate::error::Error;
use crate::fleet::gate::Note;
use crate::identity::{AnyIdentity, Identity, IdentitySource};
use crate::plan::Records;
use crate::report::{self, Ended, Failed, RunReport, Verified};
use crate::rolemap::{HostView, Resolution};
use crate::source::{AnySource, Cache, CacheMeta};
use crate::sys::fs::Fs;
use crate::sys::{lock, notify};
use crate::text::chain;

use ahead::{Ahead, Local};
use commit::Settle;
use map::{fingerprint, Fetch, LoadedMap};
use preview::{Planned, Rendered};
use trace::Trace;

mod ahead;
mod commit;
mod execute;
mod journal;
mod map;
mod memo;
mod preview;
mod rollout;
mod settled;
mod trace;

pub use map::obtain_map;
pub use preview::{preview, Preview};
pub use report::Trigger;

/// How long a reconcile waits for another one to finish.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// The agent's fixed context: settings and where things are on this machine.
#[derive(Debug)]
pub struct Agent {
    /// Validated agent.toml.
    pub settings: Settings,
    /// Writer for managed files.
    pub fs: Fs,
    /// Physical state directory.
    pub state_dir: PathBuf,
    /// Where the host's identity comes from.
    pub identity: AnyIdentity,
    /// Run checks, reloads and smoke tests (off for image builds and demos: files only).
    pub run_services: bool,
    /// Secret values in memory, and when they are read again (SPEC §10).
    pub secrets: crate::secrets::Secrets,
    /// The identity once read: an instance's id, zone and address do not change while it
    /// runs, so the daemon asks instance metadata once, not on every poll.
    known: std::sync::OnceLock<Identity>,
    /// The newer map a staged rollout holds this host from, between polls.
    held: rollout::HeldMaps,
}

impl Agent {
    /// Build the context for `settings` under `root`.
    pub fn new(settings: Settings, root: &Path) -> Agent {
        let fs = Fs::new(root, &settings.allowed_roots);
        let state_dir = fs.physical(&settings.state_dir);
        let identity = AnyIdentity::from_config(&settings.identity);
        Agent {
            settings,
            fs,
            state_dir,
            identity,
            run_services: true,
            secrets: crate::secrets::Secrets::default(),
            known: std::sync::OnceLock::new(),
            held: rollout::HeldMaps::default(),
        }
    }

    /// The last-good map cache.
    pub fn cache(&self) -> Cache {
        Cache::new(&self.state_dir)
    }
}

/// What the caller asks of one reconcile.
pub struct Request<'a> {
    /// What started it.
    pub trigger: Trigger,
    /// The host has converged through the full path before (the daemon, once smoke-tested;
    /// a manual run, unless it is a boot): an unchanged map may end on the quiet path and
    /// an empty plan needs no reloads or smoke tests. Otherwise both are verified.
    pub settled: bool,
    /// A failure still in its backoff: inputs with its fingerprint are not tried again.
    pub held: Option<&'a Held>,
    /// Called once the files are installed and every service's check passed, before any
    /// service command (reload, restart, hook, smoke test) runs: the daemon's `READY=1`,
    /// while the services it is ordered before still wait for it (issue 16).
    pub installed: Option<&'a dyn Fn()>,
}

/// A failed set of inputs that the daemon does not retry before its backoff ends.
#[derive(Debug, Clone)]
pub struct Held {
    /// Fingerprint of the inputs that failed.
    pub fingerprint: String,
    /// The failed reconcile's report, repeated while held.
    pub report: RunReport,
}

/// Which way a reconcile went, for the daemon's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// The full path (including every failure).
    Full,
    /// The quiet path: map unchanged and disk as settled; nothing parsed or written.
    Quiet,
    /// Held: the inputs of a failure in its backoff; nothing done.
    Held,
}

/// A finished reconcile.
#[derive(Debug)]
pub struct Reconciled {
    /// Its report.
    pub report: RunReport,
    /// Which way it went.
    pub way: Way,
    /// Fingerprint of the inputs, once a map was loaded (what a hold is keyed on).
    pub fingerprint: Option<String>,
    /// The host's place in the fleet, once a map was loaded (for its report, SPEC §9.1).
    pub placement: Option<crate::fleet::record::Placement>,
}

/// One reconcile with an already-built source; the caller holds the lock.
pub async fn reconcile(agent: &Agent, source: &AnySource, request: &Request<'_>) -> Reconciled {
    let mut report = RunReport::start(request.trigger);
    let span =
        info_span!("reconcile", reconcile_id = %report.reconcile_id, trigger = %request.trigger);
    let started = Instant::now();
    let run = Run {
        agent,
        source,
        request,
        trace: Trace::default(),
        ahead: std::cell::Cell::default(),
    };
    let result = stages(&run).instrument(span).await;
    let way = match &result {
        Ok(Ended::Quiet { .. }) => Way::Quiet,
        Ok(Ended::Held { .. }) => Way::Held,
        _ => Way::Full,
    };
    if let Err(Failed::Error { text, .. }) = &result {
        error!(error = %text, "reconcile failed");
    }
    let (facts, fingerprint, placement) = run.trace.into_parts();
    report.conclude(facts, result);
    report.elapsed_ms = crate::text::elapsed_ms(started);
    Reconciled {
        report,
        way,
        fingerprint,
        placement,
    }
}

/// One reconcile in progress: the agent, the map's source, what was asked, the trace
/// every stage reports to, and stage 4's reads once started ahead (by the load).
struct Run<'a> {
    agent: &'a Agent,
    source: &'a AnySource,
    request: &'a Request<'a>,
    trace: Trace,
    ahead: std::cell::Cell<Ahead>,
}

/// The stages in order. Identity and map either end the reconcile early (quiet, held,
/// waiting) or give the inputs to converge to.
async fn stages(run: &Run<'_>) -> Result<Ended, Failed> {
    journal::recover(run.agent);
    let identity = run.trace.stage("identity", identify(run.agent));
    let identity = identity.await.map_err(fail)?;
    run.trace.host(&identity.id);
    let inputs = match obtain(run, &identity).await? {
        Obtained::Ended(ended) => return Ok(ended),
        Obtained::Inputs(inputs) => inputs,
    };
    let Resolution::Assigned(view) = &inputs.loaded.resolution else {
        info!(host_id = %identity.id, "waiting for role assignment");
        commit(run, &inputs.settle(None, BTreeSet::new()));
        return Ok(Ended::Waiting);
    };
    let ended = converge(run, &inputs, view).await;
    crate::threads::drop_aside(inputs);
    ended
}

/// The map a reconcile works from, and the fingerprint of everything it renders from.
struct Inputs {
    loaded: LoadedMap,
    fingerprint: String,
}

impl Inputs {
    fn settle<'a>(
        &'a self,
        rendered: Option<(&'a Rendered, &'a Records)>,
        failed: BTreeSet<Option<String>>,
    ) -> Settle<'a> {
        Settle {
            loaded: &self.loaded,
            fingerprint: &self.fingerprint,
            rendered,
            failed,
        }
    }
}

enum Obtained {
    Ended(Ended),
    Inputs(Inputs),
}

/// Stages 2–3: fetch the map; end quietly if it and the disk are as settled; else load it
/// (validate, resolve, or fall back to the cache), a large one while stage 4's reads are
/// done ahead; keep the applied map if a staged rollout says so; end if its inputs are held.
async fn obtain(run: &Run<'_>, identity: &Identity) -> Result<Obtained, Failed> {
    let Run { agent, trace, .. } = run;
    let fetched = rollout::fetch(agent, run.source, identity);
    let (fetch, held): (Fetch, _) = trace.stage("fetch", fetched).await;
    let unchanged = fetch
        .unchanged()
        .map(|meta| (meta.clone(), fingerprint(agent, identity, &meta.sha256)));
    if let Some((meta, fingerprint)) = &unchanged {
        if let Some(ended) = quiet(run, meta, fingerprint, held.as_ref()) {
            return Ok(Obtained::Ended(ended));
        }
    }
    let applied = fetch.cached.as_ref().map(|c| c.info.generation);
    if fetch.len().is_some_and(ahead::is_worth_it) {
        run.ahead.set(Ahead::start(agent));
    }
    let loaded = trace.stage("load", map::load(agent, fetch, identity));
    let loaded = loaded.await.map_err(fail)?;
    let loaded = staged(run, loaded, applied, identity, held).await?;
    let fingerprint = match unchanged {
        Some((meta, fingerprint)) if meta.sha256 == loaded.sha256 => fingerprint,
        _ => fingerprint(agent, identity, &loaded.sha256),
    };
    trace.loaded(&loaded, &fingerprint);
    if let Some(held) = run.request.held.filter(|h| h.fingerprint == fingerprint) {
        info!("same inputs as the last failure: waiting for the backoff");
        let (outcome, message) = (held.report.outcome, held.report.message.clone());
        return Ok(Obtained::Ended(Ended::Held { outcome, message }));
    }
    Ok(Obtained::Inputs(Inputs {
        loaded: map::stage(agent, loaded),
        fingerprint,
    }))
}

/// The quiet end of a poll whose map the source still holds (for a host a staged rollout
/// holds: whose held map it still holds), when the disk and secrets are as settled.
fn quiet(run: &Run<'_>, meta: &CacheMeta, fingerprint: &str, held: Option<&Note>) -> Option<Ended> {
    let (agent, request, trace) = (run.agent, run.request, &run.trace);
    let current = agent.secrets.is_current() && !request.trigger.is_manual();
    let quiet = trace.now("drift", || {
        settled::quiet(agent, fingerprint, request.settled, current)
    })?;
    trace.map(map::unchanged_report(meta));
    trace.rollout(held.cloned());
    let waiting = quiet == settled::Quiet::Waiting;
    Some(Ended::Quiet { waiting })
}

/// The one commit step ([`commit::settle`]), timed as the stage `commit`.
fn commit(run: &Run<'_>, settle: &Settle<'_>) {
    run.trace
        .now("commit", || commit::settle(run.agent, settle));
}

/// The end of stage 3: note the host's place in the fleet, and keep the `applied` map
/// instead of `loaded` if a staged rollout says so (SPEC §9.2). A host whose `held` map the
/// source still holds has loaded the applied map already: its placement stays the hold's.
async fn staged(
    run: &Run<'_>,
    loaded: LoadedMap,
    applied: Option<u64>,
    identity: &Identity,
    held: Option<Note>,
) -> Result<LoadedMap, Failed> {
    let Run { agent, trace, .. } = run;
    if held.is_some() {
        trace.rollout(held);
        return Ok(loaded);
    }
    trace.placement(&loaded, identity);
    let gated = rollout::gate(agent, loaded, applied, identity);
    let (loaded, note) = trace.stage("rollout", gated).await.map_err(fail)?;
    trace.rollout(note);
    Ok(loaded)
}

/// Stages 4–9 for a host with a view: render, plan, accounts, install, verify, commit; a
/// failed verification is undone (files and accounts).
async fn converge(run: &Run<'_>, inputs: &Inputs, view: &HostView) -> Result<Ended, Failed> {
    let (agent, request, trace) = (run.agent, run.request, &run.trace);
    let mut rendered = render(run, inputs, view).await?;
    let planned = trace
        .now("plan", || preview::plan(agent, &mut rendered))
        .map_err(fail)?;
    let blocked = execute::blocked(&rendered);
    if planned.is_noop() && blocked.is_empty() && request.settled {
        commit(
            run,
            &inputs.settle(Some((&rendered, &planned.records)), BTreeSet::new()),
        );
        return Ok(Ended::Unchanged);
    }
    let mut done = execute::change(agent, &rendered, &planned, trace).await?;
    done.installed.failed.extend(blocked);
    if let Some(tell) = request
        .installed
        .filter(|_| done.installed.failed.is_empty())
    {
        tell();
    }
    let verified = match agent.run_services {
        true => execute::verify(&rendered, &planned, &done.installed, trace).await,
        false => Verified::default(),
    };
    if !verified.passed() {
        return Err(execute::undo(agent, &rendered, &done, verified).await);
    }
    let Planned { records, .. } = planned;
    rendered.forget_bytes();
    let failed = done.installed.failed.keys().cloned().collect();
    commit(run, &inputs.settle(Some((&rendered, &records)), failed));
    crate::threads::drop_aside((rendered, records));
    Ok(Ended::Applied(done.applied(verified)))
}

/// Stage 4: the catalog, the secrets its templates read, and the host's files rendered.
async fn render(run: &Run<'_>, inputs: &Inputs, view: &HostView) -> Result<Rendered, Failed> {
    let Run { agent, trace, .. } = run;
    // Timed as `catalog`: read here, or waited for from the thread that read it ahead.
    let Local { catalog, last } = trace.now("catalog", || run.ahead.take().finish(agent));
    let catalog = catalog.map_err(fail)?;
    let force = run.request.trigger.is_manual();
    let secrets = preview::secrets(agent, view, &catalog, &inputs.fingerprint, force);
    let secrets = trace.stage("secrets", secrets).await;
    let rendered = trace.now("render", || {
        preview::render(agent, &inputs.loaded, view, (catalog, last), &secrets)
    });
    rendered.map_err(fail)
}

fn fail(err: impl Into<Error>) -> Failed {
    let err = err.into();
    Failed::Error {
        text: chain(&err),
        bad_input: err.is_bad_input(),
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

/// Fetch the map and reconcile once under the lock (`rolecall sync` without a daemon);
/// writes the status record and sends `STATUS=`.
pub async fn sync(agent: &Agent, trigger: Trigger) -> RunReport {
    let started = Instant::now();
    let request = Request {
        trigger,
        settled: trigger != Trigger::Boot,
        held: None,
        installed: None,
    };
    let mut report = match locked(agent, &request).await {
        Ok(reconciled) => reconciled.report,
        Err(e) => refused(trigger, &e),
    };
    report.elapsed_ms = crate::text::elapsed_ms(started);
    record(agent, &mut report, None);
    notify::status(&report.status_line());
    report
}

/// The report of a reconcile that could not start (lock, map source).
pub fn refused(trigger: Trigger, err: &Error) -> RunReport {
    let mut report = RunReport::start(trigger);
    let failed = Failed::Error {
        text: chain(err),
        bad_input: err.is_bad_input(),
    };
    report.conclude(report::Facts::default(), Err(failed));
    report
}

async fn locked(agent: &Agent, request: &Request<'_>) -> Result<Reconciled, Error> {
    let _lock = lock::acquire(&agent.state_dir, LOCK_TIMEOUT).await?;
    let source = AnySource::from_url(&agent.settings.map_url, agent.settings.fetch_timeout).await?;
    Ok(reconcile(agent, &source, request).await)
}

/// Write the status record and the metrics for `report`, counting the `unrecorded`
/// reconciles before it (the daemon's quiet polls).
pub fn record(
    agent: &Agent,
    report: &mut RunReport,
    unrecorded: Option<crate::metrics::Unrecorded>,
) {
    report::carry_last_converged(&agent.state_dir, report);
    let report = &*report;
    let status = || {
        if let Err(e) = report::write(&agent.state_dir, report) {
            warn!(error = %chain(&e), "status record not written");
        }
    };
    let metrics_dir = agent
        .settings
        .metrics_dir
        .as_ref()
        .map(|d| agent.fs.physical(d));
    // Two files that each wait on their fsyncs: side by side.
    let metrics = crate::threads::beside(&[&status], || {
        crate::metrics::record(&agent.state_dir, metrics_dir.as_deref(), report, unrecorded)
    });
    if let Err(e) = metrics {
        warn!(error = %chain(&e), "metrics not written");
    }
    info!(outcome = ?report.outcome, changed = report.changed(), elapsed_ms = report.elapsed_ms, "reconcile finished");
}

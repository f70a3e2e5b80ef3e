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
use crate::plan::{self, Plan, Record, Records};
use crate::render::{self, Desired, MapInfo};
use crate::render::{Hook, SmokeTest};
use crate::report::{self, MapReport, Outcome, RunReport};
use crate::rolemap::resolve::DbPosition;
use crate::rolemap::{self, Resolution, RoleMap};
use crate::source::{AnySource, Cache, CachedMap, Fetched, MapSource};
use crate::sys::fs::{DiskState, Fs};
use crate::sys::{lock, notify};
use crate::{rollback, services, smoke};

/// Records of managed files, in the state directory.
pub const RECORDS_FILE: &str = "managed.json";
/// The smoke tests of the last converged configuration, re-run after a rollback.
pub const SMOKE_FILE: &str = "smoke.json";
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
        }
    }

    /// The last-good map cache.
    pub fn cache(&self) -> Cache {
        Cache::new(&self.state_dir)
    }
}

/// A validated map ready to reconcile from.
#[derive(Debug, Clone)]
pub struct LoadedMap {
    /// The map.
    pub map: RoleMap,
    /// What templates see as `map`.
    pub info: MapInfo,
    /// Raw bytes (for the cache).
    pub bytes: Vec<u8>,
    /// Came from the cache rather than the source.
    pub from_cache: bool,
    /// Why the cache was used; or why the live map was rejected.
    pub cache_reason: Option<String>,
    /// The live map was rejected as bad input (invalid or stale).
    pub live_rejected: bool,
    /// New bytes from the source, to be cached once applied.
    pub is_new: bool,
}

impl LoadedMap {
    fn report(&self) -> MapReport {
        MapReport {
            url: self.info.url.clone(),
            etag: self.info.etag.clone(),
            version: self.info.version.clone(),
            generation: self.info.generation,
            from_cache: self.from_cache,
            cache_reason: self.cache_reason.clone(),
        }
    }
}

/// Whether a reconcile writes or only plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply, reload, smoke.
    Apply,
    /// Stop after planning.
    Plan,
}

/// What `plan` shows: the plan and what applying it would run.
#[derive(Debug, Clone, Default)]
pub struct Preview {
    /// The plan.
    pub plan: Plan,
    /// Everything rendered.
    pub desired: Desired,
    /// Services that would be checked and reloaded.
    pub services: Vec<String>,
    /// The catalog it was rendered from.
    pub catalog: Catalog,
    /// The host's database position in this map.
    pub position: Option<DbPosition>,
    /// Hooks due because the position changed since the last converged reconcile.
    pub hooks: Vec<Hook>,
}

impl Preview {
    /// Nothing to write and no hook to run.
    pub fn is_noop(&self) -> bool {
        self.plan.is_empty() && self.hooks.is_empty()
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
            report.elapsed_ms = ms(started);
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
    /// Fingerprint of map bytes, catalog and templates, once a map was obtained.
    pub fingerprint: Option<String>,
    /// The inputs matched a hold: nothing was done.
    pub held: bool,
}

/// One reconcile with an already-built source; the caller holds the lock.
pub async fn run(agent: &Agent, source: &AnySource, report: &mut RunReport) {
    run_held(agent, source, report, None).await;
}

/// As [`run`], but skips the work when the inputs are those of `hold`.
#[instrument(skip_all, fields(reconcile_id = %report.reconcile_id, trigger = %report.trigger))]
pub async fn run_held(
    agent: &Agent,
    source: &AnySource,
    report: &mut RunReport,
    hold: Option<&Hold>,
) -> Inputs {
    let mut inputs = Inputs::default();
    let identity = match timed(report, "identity", identify(agent)).await {
        Ok(id) => id,
        Err(e) => {
            fail(report, &Error::from(e));
            return inputs;
        }
    };
    report.host_id = Some(identity.id.clone());
    let loaded = match timed(report, "fetch", obtain_map(agent, source)).await {
        Ok(m) => m,
        Err(e) => {
            fail(report, &e);
            return inputs;
        }
    };
    report.map = Some(loaded.report());
    let fingerprint = fingerprint(agent, &loaded);
    if let Some(h) = hold.filter(|h| h.fingerprint == fingerprint) {
        info!(
            failures = h.failures,
            "same inputs as the last failure: waiting for the backoff"
        );
        report.finish(
            h.report.outcome,
            format!(
                "{} (retrying after a backoff, or at once on a new map or catalog)",
                h.report.message
            ),
        );
        inputs.held = true;
        return inputs;
    }
    inputs.fingerprint = Some(fingerprint);
    reconcile(agent, &identity, &loaded, report).await;
    if loaded.live_rejected && report.outcome == Outcome::Converged {
        let why = loaded.cache_reason.clone().unwrap_or_default();
        report.finish(
            Outcome::Invalid,
            format!(
                "map rejected: {why}; kept generation {}",
                loaded.info.generation
            ),
        );
    }
    inputs
}

async fn identify(agent: &Agent) -> Result<Identity, crate::identity::Error> {
    match &agent.identity {
        AnyIdentity::Imds(imds) => {
            imds.identify_with(|path| {
                notify::status(&format!("waiting for instance metadata ({path})"));
            })
            .await
        }
        other => other.identify().await,
    }
}

/// sha256 over the map bytes and every catalog and template file: equal means a retry
/// would do exactly what failed before.
fn fingerprint(agent: &Agent, loaded: &LoadedMap) -> String {
    let mut all = loaded.bytes.clone();
    for dir in [&agent.settings.catalog_dir, &agent.settings.templates_dir] {
        let mut files = Vec::new();
        collect_files(dir, &mut files);
        files.sort();
        for f in files {
            all.extend_from_slice(f.to_string_lossy().as_bytes());
            all.extend(std::fs::read(&f).unwrap_or_default());
        }
    }
    plan::sha256(&all)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

async fn timed<T>(
    report: &mut RunReport,
    stage: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let out = fut.await;
    report.timings.insert(stage.to_string(), ms(started));
    out
}

fn ms(started: Instant) -> u64 {
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
    report.elapsed_ms = ms(started);
    if let Err(e) = report::write(&agent.state_dir, report) {
        warn!(error = %chain(&e), "status record not written");
    }
    let metrics_dir = agent
        .settings
        .metrics_dir
        .as_ref()
        .map(|d| agent.fs.physical(d));
    if let Err(e) = crate::metrics::record(&agent.state_dir, metrics_dir.as_deref(), report) {
        warn!(error = %chain(&e), "metrics not written");
    }
    notify::status(&report.status_line());
    info!(outcome = ?report.outcome, changed = report.changed(), elapsed_ms = report.elapsed_ms, "reconcile finished");
}

/// Fetch (conditionally on the cached ETag) and validate, falling back to the cache.
///
/// # Errors
/// When the source fails or serves a bad map and there is no cache to fall back to.
pub async fn obtain_map(agent: &Agent, source: &AnySource) -> Result<LoadedMap, Error> {
    let cache = agent.cache();
    let cached = cache.load().unwrap_or_else(|e| {
        warn!(error = %chain(&e), "last-good cache unreadable, ignoring it");
        None
    });
    // A cache of another map (the URL was changed in agent.toml) is no fallback for this one.
    let cached = cached.filter(|c| c.url == agent.settings.map_url);
    let url = agent.settings.map_url.clone();
    let fetched = source
        .fetch(cached.as_ref().and_then(|c| c.etag.as_deref()))
        .await;
    let fallback = |reason: String, rejected: bool, err: Error| match &cached {
        Some(c) => {
            warn!(reason = %reason, generation = c.generation, "using cached map");
            from_cache(c, reason, rejected)
        }
        None => Err(err),
    };
    match fetched {
        Ok(Fetched::NotModified) => match &cached {
            Some(c) => from_cache(c, String::new(), false).map(|mut m| {
                m.from_cache = false;
                m.cache_reason = None;
                m.info.url = url.clone();
                m
            }),
            None => Err(Error::Other(format!(
                "{url} answered 304 Not Modified but no map is cached"
            ))),
        },
        Ok(Fetched::Map(m)) => match accept(&m.bytes, cached.as_ref()) {
            Ok(map) => Ok(loaded(map, m.bytes, m.etag, m.version, &url)),
            Err(e) => fallback(
                format!("map from {url} refused: {}", chain(&e)),
                true,
                e.into(),
            ),
        },
        Err(e) => fallback(format!("{url} unreachable: {}", chain(&e)), false, e.into()),
    }
}

fn accept(bytes: &[u8], cached: Option<&CachedMap>) -> Result<RoleMap, rolemap::Error> {
    let map = rolemap::load(bytes)?;
    if let Some(c) = cached {
        if map.generation() < c.generation {
            return Err(rolemap::Error::Stale {
                found: map.generation(),
                applied: c.generation,
            });
        }
    }
    Ok(map)
}

fn from_cache(c: &CachedMap, reason: String, rejected: bool) -> Result<LoadedMap, Error> {
    let map = rolemap::load(&c.bytes)?;
    let mut m = loaded(
        map,
        c.bytes.clone(),
        c.etag.clone(),
        c.version.clone(),
        &c.url,
    );
    m.from_cache = true;
    m.is_new = false;
    m.cache_reason = Some(reason);
    m.live_rejected = rejected;
    Ok(m)
}

fn loaded(
    map: RoleMap,
    bytes: Vec<u8>,
    etag: Option<String>,
    version: Option<String>,
    url: &str,
) -> LoadedMap {
    let info = MapInfo {
        etag,
        version,
        generation: map.generation(),
        url: url.to_string(),
    };
    LoadedMap {
        map,
        info,
        bytes,
        from_cache: false,
        cache_reason: None,
        live_rejected: false,
        is_new: true,
    }
}

/// Render and plan for `identity` from `loaded`, changing nothing.
///
/// # Errors
/// Bad catalog, templates, map content for this host, refused plan, unreadable disk.
pub fn preview(
    agent: &Agent,
    identity: &Identity,
    loaded: &LoadedMap,
) -> Result<Option<Preview>, Error> {
    let view = match rolemap::resolve(&loaded.map, identity) {
        Resolution::Waiting => return Ok(None),
        Resolution::Assigned(view) => view,
    };
    let catalog = Catalog::load(&agent.settings.catalog_dir, &agent.settings.services)?;
    let tera = render::load_templates(&agent.settings.templates_dir)?;
    let desired = render::render(&view, &catalog, &tera, &loaded.info, &agent.settings.vars)?;
    for f in &desired.files {
        crate::sys::fs::check_owner(&f.owner, &f.group, &f.path)?;
    }
    let records = read_records(&agent.state_dir)?;
    let disk = snapshot(agent, &desired, &records)?;
    let plan = plan::plan(
        &desired.files,
        &disk,
        &records,
        &agent.settings.allowed_roots,
    )?;
    let services = plan.services().into_iter().collect();
    let position = view.host.database.clone();
    let previous: Option<DbPosition> = crate::sys::fs::read_json::<Option<DbPosition>>(
        &agent.state_dir.join(hooks::POSITION_FILE),
    )?
    .flatten();
    let events = hooks::events(previous.as_ref(), position.as_ref());
    let due = hooks::due(&desired.hooks, &events)
        .into_iter()
        .cloned()
        .collect();
    Ok(Some(Preview {
        plan,
        desired,
        services,
        catalog,
        position,
        hooks: due,
    }))
}

fn snapshot(
    agent: &Agent,
    desired: &Desired,
    records: &Records,
) -> Result<BTreeMap<PathBuf, DiskState>, Error> {
    let mut disk = BTreeMap::new();
    for path in plan::paths_to_inspect(&desired.files, records) {
        if plan::is_allowed(&path, &agent.settings.allowed_roots) {
            disk.insert(path.clone(), agent.fs.snapshot(&path)?);
        }
    }
    Ok(disk)
}

/// Managed-file records from the state directory.
///
/// # Errors
/// I/O or JSON.
pub fn read_records(state_dir: &Path) -> Result<Records, Error> {
    Ok(crate::sys::fs::read_json(&state_dir.join(RECORDS_FILE))?.unwrap_or_default())
}

#[instrument(skip_all)]
async fn reconcile(agent: &Agent, identity: &Identity, loaded: &LoadedMap, report: &mut RunReport) {
    let preview = match preview(agent, identity, loaded) {
        Ok(Some(p)) => p,
        Ok(None) => {
            info!(host_id = %identity.id, "waiting for role assignment");
            store_cache(agent, loaded);
            return report.finish(
                Outcome::Waiting,
                format!(
                    "waiting for role assignment: host {} is not in the map",
                    identity.id
                ),
            );
        }
        Err(e) => return fail(report, &e),
    };
    let boot = report.trigger == Trigger::Boot.as_str();
    if preview.is_noop() && !boot {
        commit(agent, loaded, &preview.desired, &BTreeSet::new());
        return report.finish(Outcome::Converged, converged_text(loaded, "no changes"));
    }
    execute(agent, loaded, &preview, report).await;
}

async fn execute(agent: &Agent, loaded: &LoadedMap, preview: &Preview, report: &mut RunReport) {
    let catalog = &preview.catalog;
    let started = Instant::now();
    let (receipts, failed) = apply_all(agent, catalog, &preview.plan).await;
    report.timings.insert("apply".into(), ms(started));
    if agent.run_services {
        let started = Instant::now();
        for svc in services::needs_reload(catalog, &receipts) {
            report.services.push(services::reload(svc).await);
        }
        report.timings.insert("reload".into(), ms(started));
        if report.services.iter().all(|s| s.ok) {
            let due: Vec<&Hook> = preview.hooks.iter().collect();
            report.hooks = timed(report, "hooks", hooks::run(&due)).await;
        }
        let started = Instant::now();
        report.smoke = smoke::smoke(&preview.desired.smoke).await;
        report.timings.insert("smoke".into(), ms(started));
    }
    let reload_failed = report.services.iter().any(|s| !s.ok);
    let smoke_failed = report.smoke.iter().any(|s| !s.ok);
    let hook_failed = report.hooks.iter().any(|h| !h.ok);
    if reload_failed || smoke_failed || hook_failed {
        let last_good: Vec<SmokeTest> =
            crate::sys::fs::read_json(&agent.state_dir.join(SMOKE_FILE))
                .ok()
                .flatten()
                .unwrap_or_default();
        return rollback::rollback(&agent.fs, &preview.catalog, &receipts, &last_good, report)
            .await;
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
    if failed.is_empty() {
        let what = format!("{} files changed", report.files.len());
        report.finish(Outcome::Converged, converged_text(loaded, &what));
    } else {
        let texts: Vec<&str> = failed.values().map(String::as_str).collect();
        report.finish(Outcome::Failed, texts.join("; "));
    }
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

fn converged_text(loaded: &LoadedMap, what: &str) -> String {
    let cache = match &loaded.cache_reason {
        Some(r) if loaded.from_cache => format!(" using cached map ({r})"),
        _ => String::new(),
    };
    format!(
        "converged to generation {} (etag {}), {what}{cache}",
        loaded.info.generation,
        loaded.info.etag.as_deref().unwrap_or("-")
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

/// Record every desired file of the services that did not fail (adopting files that
/// already matched), keep the old records of failed services, and cache the map.
fn commit(agent: &Agent, loaded: &LoadedMap, desired: &Desired, failed: &BTreeSet<Option<String>>) {
    let old = read_records(&agent.state_dir).unwrap_or_default();
    let mut records: Records = old
        .iter()
        .filter(|(_, r)| failed.contains(&r.service))
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect();
    for f in desired
        .files
        .iter()
        .filter(|f| !failed.contains(&f.service))
    {
        records.insert(
            f.path.clone(),
            Record {
                role: f.role.clone(),
                service: f.service.clone(),
                sha256: plan::sha256(&f.content),
            },
        );
    }
    if records != old {
        if let Err(e) = crate::sys::fs::write_json(&agent.state_dir.join(RECORDS_FILE), &records) {
            error!(error = %chain(&e), "managed-file records not written");
        }
    }
    store_cache(agent, loaded);
}

fn store_cache(agent: &Agent, loaded: &LoadedMap) {
    if !loaded.is_new {
        return;
    }
    let entry = CachedMap {
        bytes: loaded.bytes.clone(),
        etag: loaded.info.etag.clone(),
        version: loaded.info.version.clone(),
        generation: loaded.info.generation,
        url: loaded.info.url.clone(),
    };
    if let Err(e) = agent.cache().store(&entry) {
        error!(error = %chain(&e), "last-good map cache not written");
    }
}

/// Remember the position whose hooks ran, so they run again only when it changes.
fn store_position(agent: &Agent, position: Option<&DbPosition>) {
    store_if_changed(agent, hooks::POSITION_FILE, &position.cloned());
}

/// Write a JSON state file only when its content changes (no writes on a quiet poll).
fn store_if_changed<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq>(
    agent: &Agent,
    name: &str,
    value: &T,
) {
    let path = agent.state_dir.join(name);
    if crate::sys::fs::read_json::<T>(&path)
        .ok()
        .flatten()
        .as_ref()
        == Some(value)
    {
        return;
    }
    if let Err(e) = crate::sys::fs::write_json(&path, value) {
        error!(error = %chain(&e), path = %path.display(), "state file not written");
    }
}

//! Stages 4 and 5 for one host without touching disk (SPEC §7.3–7.4): render everything
//! the host's roles want, then plan it against the disk and the managed-file records,
//! including the position hooks that are due and the account changes (SPEC §10). What
//! `plan` shows and a reconcile executes.

use foldhash::HashSet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ahead::{LastRender, Local};
use super::{commit::read_records, map::LoadedMap, memo, Agent};
use crate::accounts::{self, AccountPlan};
use crate::catalog::Catalog;
use crate::error::Error;
use crate::hooks;
use crate::plan::DiskState;
use crate::plan::{self, Plan, Records};
use crate::render::{self, Desired, Hook, Memo};
use crate::rolemap::resolve::{DbPosition, HostView};
use crate::rolemap::Resolution;
use crate::secrets::Resolved;

/// Stage 4's result: everything rendered, and the catalog it came from.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// Files, smoke tests and hooks.
    pub desired: Desired,
    /// The catalog (service commands for apply and reload).
    pub catalog: Catalog,
    /// The host's database position in this map.
    pub position: Option<DbPosition>,
    /// Templates that change with every publish (see `render::Templates::warnings`).
    pub warnings: Vec<String>,
    /// The accounts of the host's products (empty when `[accounts] manage` is off).
    pub accounts: accounts::Desired,
    /// The files the render memo vouched for, as the render found them on disk: stage 5
    /// takes them instead of reading them again.
    pub disk: BTreeMap<PathBuf, DiskState>,
}

impl Rendered {
    /// Once installed and checked, let go of every file's bytes, rendered or read from the
    /// disk: the commit needs their hashes only (see [`Desired::forget_bytes`]).
    pub(super) fn forget_bytes(&mut self) {
        self.disk = BTreeMap::new();
        self.desired.forget_bytes();
    }
}

/// Stage 5's result: the changes, and what applying them runs.
#[derive(Debug, Clone, Default)]
pub struct Planned {
    /// The changes.
    pub plan: Plan,
    /// Hooks due because the position changed since the last converged reconcile.
    pub hooks: Vec<Hook>,
    /// Account changes, run before the files are written, and conflicts.
    pub accounts: AccountPlan,
    /// The managed-file records as the plan found them: the commit's starting point (only
    /// the commit writes them, so they are still the file's then).
    pub records: Records,
}

impl Planned {
    /// Nothing was recorded before: this host never converged (first boot).
    pub fn first(&self) -> bool {
        self.records.is_empty()
    }

    /// Nothing to write, no hook to run and no account to change.
    pub fn is_noop(&self) -> bool {
        self.plan.is_empty() && self.hooks.is_empty() && self.accounts.is_empty()
    }
}

/// What `plan` shows.
#[derive(Debug, Clone, Default)]
pub struct Preview {
    /// Stage 4.
    pub rendered: Rendered,
    /// Stage 5.
    pub planned: Planned,
}

/// Render and plan for the host `loaded` was resolved for, changing nothing; `None` while
/// it waits for a role.
///
/// # Errors
/// Bad catalog, templates, map content for this host, refused plan, unreadable disk.
pub async fn preview(agent: &Agent, loaded: &LoadedMap) -> Result<Option<Preview>, Error> {
    let Resolution::Assigned(view) = &loaded.resolution else {
        return Ok(None);
    };
    let Local { catalog, last } = Local::here(agent);
    let loaded_catalog = catalog?;
    let resolved = secrets(agent, view, &loaded_catalog, &loaded.sha256, false).await;
    let mut rendered = render(agent, loaded, view, (loaded_catalog, last), &resolved)?;
    let planned = plan(agent, &mut rendered)?;
    Ok(Some(Preview { rendered, planned }))
}

/// Stage 4a: the secrets the host's templates can ask for (SPEC §10), from memory or their
/// stores; `inputs` is the fingerprint they are read for (a change reads them all again),
/// `force` reads them all again anyway (SIGHUP, `rolecall sync`).
pub(super) async fn secrets(
    agent: &Agent,
    view: &HostView,
    (catalog, templates): &(Catalog, render::Templates),
    inputs: &str,
    force: bool,
) -> Resolved {
    let needs = render::secret_needs(view, catalog, templates);
    let (wanted, vars) = crate::secrets::wanted(view, &agent.settings.vars, needs);
    let ask = crate::secrets::Ask {
        wanted,
        vars,
        inputs,
        force,
        refresh: agent.settings.secrets_refresh,
        timeout: agent.settings.fetch_timeout,
    };
    agent.secrets.resolve(ask).await
}

/// Stage 4: every file, smoke test and hook of the host's roles, in memory, from the
/// catalog and the `last` render.
///
/// # Errors
/// Bad catalog or templates, a template error, an owner or group unknown on this host
/// (and not an account this reconcile creates).
pub(super) fn render(
    agent: &Agent,
    loaded: &LoadedMap,
    view: &HostView,
    ((catalog, templates), last): ((Catalog, render::Templates), LastRender),
    secrets: &Resolved,
) -> Result<Rendered, Error> {
    let settings = &agent.settings;
    let inputs = render::Inputs {
        map: &loaded.info,
        vars: &settings.vars,
        secrets,
        memo: None,
    };
    let (desired, disk) = render_remembering(agent, view, (&catalog, &templates), inputs, last)?;
    let accounts = match settings.accounts.manage {
        true => accounts::Desired::from_view(view),
        false => accounts::Desired::default(),
    };
    agent.fs.check_owners(desired.all_files().map(|f| {
        let owner = Some(f.owner.as_str()).filter(|o| !accounts.users.contains_key(*o));
        let group = Some(f.group.as_str()).filter(|g| !accounts.groups.contains_key(*g));
        (owner, group, f.path.as_path())
    }))?;
    for warning in templates.warnings() {
        tracing::warn!(warning = %warning, "template depends on the map version");
    }
    Ok(Rendered {
        desired,
        catalog,
        position: view.host.database.clone(),
        warnings: templates.warnings().to_vec(),
        accounts,
        disk,
    })
}

/// `view`'s render with the memo of the `last` one (see `render::memo`), its remembered files
/// completed from the disk, and what the disk held for them; everything rendered again
/// when one of them changed there.
fn render_remembering(
    agent: &Agent,
    view: &HostView,
    (catalog, templates): (&Catalog, &render::Templates),
    inputs: render::Inputs<'_>,
    LastRender { memo, stats }: LastRender,
) -> Result<(Desired, BTreeMap<PathBuf, DiskState>), Error> {
    let remembering = render::Inputs {
        memo: memo.as_ref(),
        ..inputs
    };
    let mut desired = render::render_with(view, catalog, templates, &remembering)?;
    if desired.remembered.is_empty() {
        return Ok((desired, BTreeMap::new()));
    }
    if let Some(disk) = memo
        .as_ref()
        .and_then(|m| memo::fill(agent, &mut desired, m, stats))
    {
        return Ok((desired, disk));
    }
    let fresh = memo.as_ref().map(|m| Memo::new(&m.build));
    let inputs = render::Inputs {
        memo: fresh.as_ref(),
        ..remembering
    };
    Ok((
        render::render_with(view, catalog, templates, &inputs)?,
        BTreeMap::new(),
    ))
}

/// Stage 5: compare with the disk and the records; find the hooks the position change makes due.
///
/// # Errors
/// A refused plan (symlink, path outside the allowed roots, bad cron file), unreadable
/// disk or state.
pub(super) fn plan(agent: &Agent, rendered: &mut Rendered) -> Result<Planned, Error> {
    let known = std::mem::take(&mut rendered.disk);
    let rendered = &*rendered;
    let desired = &rendered.desired;
    let all_records = read_records(&agent.state_dir)?;
    let records = unvouched(&all_records, desired);
    let disk = snapshot(agent, desired, &records, known)?;
    let mut plan = plan::plan(
        &desired.files,
        &disk,
        &records,
        &agent.settings.allowed_roots,
    )?;
    // A service blocked by an unreadable secret keeps every file as it is (SPEC §10).
    let blocked = |service: &Option<String>| desired.blocked.contains_key(service);
    plan.changes.retain(|c| !blocked(&c.service));
    plan.forget
        .retain(|p| !records.get(p).is_some_and(|r| blocked(&r.service)));
    let hooks = due_hooks(agent, rendered)?;
    let accounts = plan_accounts(agent, rendered)?;
    Ok(Planned {
        plan,
        hooks,
        accounts,
        records: all_records,
    })
}

/// The records of the files not vouched for: those files stay as they are, neither read nor
/// planned (their records neither).
fn unvouched(records: &Records, desired: &Desired) -> Records {
    let vouched: HashSet<&Path> = desired
        .vouched
        .iter()
        .map(|r| r.file.path.as_path())
        .collect();
    records
        .iter()
        .filter(|(p, _)| !vouched.contains(p.as_path()))
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect()
}

/// The hooks a change of the host's database position makes due.
fn due_hooks(agent: &Agent, rendered: &Rendered) -> Result<Vec<Hook>, Error> {
    let previous: Option<DbPosition> = crate::sys::fs::read_json::<Option<DbPosition>>(
        &agent.state_dir.join(hooks::POSITION_FILE),
    )?
    .flatten();
    let events = hooks::events(previous.as_ref(), rendered.position.as_ref());
    let due = hooks::due(&rendered.desired.hooks, &events);
    Ok(due.into_iter().cloned().collect())
}

/// The account changes, when rolecall manages accounts.
fn plan_accounts(agent: &Agent, rendered: &Rendered) -> Result<AccountPlan, Error> {
    if !agent.settings.accounts.manage {
        return Ok(AccountPlan::default());
    }
    let range = agent.settings.accounts.range;
    Ok(accounts::plan_host(
        &agent.fs,
        &agent.state_dir,
        &rendered.accounts,
        range,
    )?)
}

/// The disk state of every desired and recorded path in the allowed roots; `known` ones
/// (read by the render) are not read again.
pub(super) fn snapshot(
    agent: &Agent,
    desired: &Desired,
    records: &Records,
    known: BTreeMap<PathBuf, DiskState>,
) -> Result<BTreeMap<PathBuf, DiskState>, Error> {
    let paths = plan::paths_to_inspect(&desired.files, records);
    let unread = paths.iter().filter(|p| {
        !known.contains_key(p.as_path()) && plan::is_allowed(p, &agent.settings.allowed_roots)
    });
    let mut disk = agent.fs.snapshot_all(unread.map(PathBuf::as_path))?;
    disk.extend(known.into_iter().filter(|(p, _)| paths.contains(p)));
    Ok(disk)
}

//! Stages 4 and 5 for one host without touching disk (SPEC §7.3–7.4): render everything
//! the host's roles want, then plan it against the disk and the managed-file records,
//! including the position hooks that are due and the account changes (SPEC §10). What
//! `plan` shows and a reconcile executes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{commit::read_records, map::LoadedMap, Agent};
use crate::accounts::{self, AccountPlan};
use crate::catalog::Catalog;
use crate::error::Error;
use crate::hooks;
use crate::plan::DiskState;
use crate::plan::{self, Plan, Records};
use crate::render::{self, Desired, Hook};
use crate::rolemap::resolve::{DbPosition, HostView};
use crate::rolemap::Resolution;

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
}

/// Stage 5's result: the changes, and what applying them runs.
#[derive(Debug, Clone, Default)]
pub struct Planned {
    /// The changes.
    pub plan: Plan,
    /// Hooks due because the position changed since the last converged reconcile.
    pub hooks: Vec<Hook>,
    /// Nothing was recorded before: this host never converged (first boot).
    pub first: bool,
    /// Account changes, run before the files are written, and conflicts.
    pub accounts: AccountPlan,
}

impl Planned {
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
pub fn preview(agent: &Agent, loaded: &LoadedMap) -> Result<Option<Preview>, Error> {
    let Resolution::Assigned(view) = &loaded.resolution else {
        return Ok(None);
    };
    let rendered = render(agent, loaded, view)?;
    let planned = plan(agent, &rendered)?;
    Ok(Some(Preview { rendered, planned }))
}

/// Stage 4: every file, smoke test and hook of the host's roles, in memory.
///
/// # Errors
/// Bad catalog or templates, a template error, an owner or group unknown on this host
/// (and not an account this reconcile creates).
pub(super) fn render(
    agent: &Agent,
    loaded: &LoadedMap,
    view: &HostView,
) -> Result<Rendered, Error> {
    let settings = &agent.settings;
    let catalog =
        Catalog::load_with_vars(&settings.catalog_dir, &settings.services, &settings.vars)?;
    let templates = render::Templates::load(&settings.templates_dir, &catalog)?;
    let desired = render::render(view, &catalog, &templates, &loaded.info, &settings.vars)?;
    let accounts = match settings.accounts.manage {
        true => accounts::Desired::from_view(view),
        false => accounts::Desired::default(),
    };
    for f in &desired.files {
        let owner = Some(f.owner.as_str()).filter(|o| !accounts.users.contains_key(*o));
        let group = Some(f.group.as_str()).filter(|g| !accounts.groups.contains_key(*g));
        agent.fs.check_owner(owner, group, &f.path)?;
    }
    for warning in templates.warnings() {
        tracing::warn!(warning = %warning, "template depends on the map version");
    }
    Ok(Rendered {
        desired,
        catalog,
        position: view.host.database.clone(),
        warnings: templates.warnings().to_vec(),
        accounts,
    })
}

/// Stage 5: compare with the disk and the records; find the hooks the position change makes due.
///
/// # Errors
/// A refused plan (symlink, path outside the allowed roots, bad cron file), unreadable
/// disk or state.
pub(super) fn plan(agent: &Agent, rendered: &Rendered) -> Result<Planned, Error> {
    let desired = &rendered.desired;
    let records = read_records(&agent.state_dir)?;
    let disk = snapshot(agent, desired, &records)?;
    let plan = plan::plan(
        &desired.files,
        &disk,
        &records,
        &agent.settings.allowed_roots,
    )?;
    let previous: Option<DbPosition> = crate::sys::fs::read_json::<Option<DbPosition>>(
        &agent.state_dir.join(hooks::POSITION_FILE),
    )?
    .flatten();
    let events = hooks::events(previous.as_ref(), rendered.position.as_ref());
    let hooks = hooks::due(&desired.hooks, &events)
        .into_iter()
        .cloned()
        .collect();
    let accounts = match agent.settings.accounts.manage {
        true => accounts::plan_host(
            &agent.fs,
            &agent.state_dir,
            &rendered.accounts,
            agent.settings.accounts.range,
        )?,
        false => AccountPlan::default(),
    };
    Ok(Planned {
        plan,
        hooks,
        first: records.is_empty(),
        accounts,
    })
}

pub(super) fn snapshot(
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

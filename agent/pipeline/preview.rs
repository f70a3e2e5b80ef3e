//! Render and plan for one host without touching disk (SPEC §7.3–7.4): what `plan` shows
//! and what a reconcile then executes, including the position hooks that are due.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{map::LoadedMap, state::read_records, Agent};
use crate::catalog::Catalog;
use crate::error::Error;
use crate::hooks;
use crate::plan::{self, Plan, Records};
use crate::render::{self, Desired, Hook};
use crate::rolemap::resolve::DbPosition;
use crate::rolemap::Resolution;
use crate::sys::fs::DiskState;

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

/// Render and plan for the host `loaded` was resolved for, changing nothing; `None` while
/// it waits for a role.
///
/// # Errors
/// Bad catalog, templates, map content for this host, refused plan, unreadable disk.
pub fn preview(agent: &Agent, loaded: &LoadedMap) -> Result<Option<Preview>, Error> {
    let view = match &loaded.resolution {
        Resolution::Waiting => return Ok(None),
        Resolution::Assigned(view) => view,
    };
    let catalog = Catalog::load_with_vars(
        &agent.settings.catalog_dir,
        &agent.settings.services,
        &agent.settings.vars,
    )?;
    let tera = render::load_templates(&agent.settings.templates_dir)?;
    let desired = render::render(view, &catalog, &tera, &loaded.info, &agent.settings.vars)?;
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

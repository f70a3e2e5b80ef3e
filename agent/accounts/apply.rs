//! The I/O half of the account stage: read the root's accounts and the records, run a
//! plan's commands through `sys::exec` inside a snapshot of the four account files, keep
//! `<state>/accounts.json`, and undo it all on failure or rollback.

use std::path::Path;

use tracing::{info, warn};

use super::plan::{self, AccountPlan, Change, Desired, Records};
use super::{command, etc::Existing, Error, COMMAND_TIMEOUT, RECORDS_FILE};
use crate::rolemap::accounts::GroupView;
use crate::sys::exec;
use crate::sys::fs::{self, AccountSnapshot, Fs};

/// `groupdel`/`userdel`: the account does not exist (someone removed it already).
const EXIT_NO_SUCH_ACCOUNT: i32 = 6;

/// The account changes of a reconcile that went through: what [`undo`] needs.
#[derive(Debug)]
pub struct Applied {
    snapshot: AccountSnapshot,
    records: Option<Vec<u8>>,
    /// What was done, in order.
    pub changes: Vec<Change>,
}

/// Plan `desired` against the root's accounts and the records; `range` is the managed id
/// range.
///
/// # Errors
/// The account files or the records cannot be read.
pub fn plan_host(
    fs: &Fs,
    state_dir: &Path,
    desired: &Desired,
    range: (u32, u32),
) -> Result<AccountPlan, Error> {
    let existing = fs.accounts()?;
    let records = read_records(state_dir)?;
    Ok(plan::plan(desired, &existing, &records, range))
}

fn read_records(state_dir: &Path) -> Result<Records, Error> {
    Ok(fs::read_json(&state_dir.join(RECORDS_FILE))?.unwrap_or_default())
}

/// Run `plan`: refuse it if it has conflicts; else snapshot the account files, record the
/// accounts about to be created, run each command, and record the result. A failure puts
/// the account files and the records back before it returns. `None`: nothing to do.
///
/// # Errors
/// `Conflicts` (nothing changed), `Command` or `Files` (everything restored).
pub async fn apply(
    fs: &Fs,
    state_dir: &Path,
    plan: &AccountPlan,
) -> Result<Option<Applied>, Error> {
    if !plan.conflicts.is_empty() {
        return Err(Error::Conflicts {
            conflicts: plan.conflicts.clone(),
        });
    }
    if plan.changes.is_empty() {
        return Ok(None);
    }
    let path = state_dir.join(RECORDS_FILE);
    let existing = fs.accounts()?;
    let old_bytes = fs::read_state(&path)?;
    let old = read_records(state_dir)?;
    let applied = Applied {
        snapshot: fs.snapshot_accounts()?,
        records: old_bytes,
        changes: plan.changes.clone(),
    };
    fs::write_json(&path, &plan::records_before(&old, plan))?;
    let done = run(fs, plan, &existing).await.and_then(|()| {
        let after = plan::records_after(&old, plan, &existing);
        fs::write_json(&path, &after).map_err(Error::from)
    });
    match done {
        Ok(()) => Ok(Some(applied)),
        Err(e) => Err(restored(e, undo(fs, state_dir, &applied))),
    }
}

/// `e`, noting what the restore could not put back.
fn restored(e: Error, errors: Vec<String>) -> Error {
    match e {
        Error::Command {
            action,
            argv,
            source,
            ..
        } if !errors.is_empty() => Error::Command {
            action,
            argv,
            source,
            unrestored: Some(errors.join("; ")),
        },
        other => other,
    }
}

async fn run(fs: &Fs, plan: &AccountPlan, existing: &Existing) -> Result<(), Error> {
    run_each(fs, &plan.changes).await?;
    recreate_vanished(fs, plan, existing).await
}

/// Run each change's command in order, stopping at the first failure.
async fn run_each(fs: &Fs, changes: &[Change]) -> Result<(), Error> {
    let prefix = fs.prefix();
    for change in changes {
        let cmd = command::argv(change, prefix.as_deref());
        let failed = |source| Error::Command {
            action: change.to_string(),
            argv: cmd.to_string(),
            source: Box::new(source),
            unrestored: None,
        };
        let out = exec::run(&cmd, COMMAND_TIMEOUT).await.map_err(failed)?;
        let gone = out.exit_code == Some(EXIT_NO_SUCH_ACCOUNT)
            && matches!(
                change,
                Change::RemoveUser { .. } | Change::RemoveGroup { .. }
            );
        if !out.is_success() && !gone {
            return Err(failed(exec::Error::Failed {
                command: cmd.to_string(),
                exit_code: out.exit_code,
                stderr: out.stderr,
                stdout: out.stdout,
            }));
        }
        info!(action = %change, argv = %cmd, "account changed");
    }
    Ok(())
}

/// `userdel` also deletes the user's same-named primary group when login.defs sets
/// USERGROUPS_ENAB (Debian does), even a group rolecall did not create or still wants:
/// put back, with its gid, every group that was there before and that the plan did not
/// remove.
async fn recreate_vanished(fs: &Fs, plan: &AccountPlan, before: &Existing) -> Result<(), Error> {
    if !plan
        .changes
        .iter()
        .any(|c| matches!(c, Change::RemoveUser { .. }))
    {
        return Ok(());
    }
    let now = fs.accounts()?;
    let removed = |name: &str| {
        plan.changes
            .iter()
            .any(|c| matches!(c, Change::RemoveGroup { name: n, .. } if n == name))
    };
    let vanished = before
        .groups
        .values()
        .filter(|g| !removed(&g.name) && now.gid(&g.name).is_none());
    let again: Vec<Change> = vanished
        .map(|g| {
            let change = Change::CreateGroup(GroupView {
                name: g.name.clone(),
                gid: g.gid,
            });
            warn!(action = %change, "userdel removed a group still needed");
            change
        })
        .collect();
    run_each(fs, &again).await
}

/// Put the account files and the records back as they were before [`apply`]; returns
/// what could not be restored.
pub fn undo(fs: &Fs, state_dir: &Path, applied: &Applied) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = fs.restore_accounts(&applied.snapshot) {
        errors.push(crate::text::chain(&e));
    }
    let path = state_dir.join(RECORDS_FILE);
    let records = match &applied.records {
        Some(bytes) => fs::write_state(&path, bytes),
        None => fs::remove_state(&path),
    };
    if let Err(e) = records {
        errors.push(crate::text::chain(&e));
    }
    match errors.is_empty() {
        true => info!(changed = applied.changes.len(), "account files restored"),
        false => tracing::error!(errors = %errors.join("; "), "account files not restored"),
    }
    errors
}

//! Stages 6–9 of a reconcile that has changes: the account changes (SPEC §10), then each
//! service's changes as a transaction (journalled first), then reload, run the due hooks
//! and smoke-test; a failure there is undone by [`undo`], accounts included. The pipeline
//! decides when each runs.

use std::collections::BTreeMap;

use tracing::error;

use super::preview::{Planned, Rendered};
use super::trace::Trace;
use super::{journal, settled, Agent};
use crate::apply::{self, FileReport, Receipt};
use crate::error::Error;
use crate::report::{Applied, Failed, Verified};
use crate::text::chain;
use crate::{accounts, hooks, rollback, services, smoke};

/// Failed services (`None` for files without a service) and why.
pub(super) type FailedServices = BTreeMap<Option<String>, String>;

/// Stage 6's result: the transactions that went through and those that did not.
#[derive(Debug)]
pub(super) struct Installed {
    /// One per service whose files were written and checked.
    pub receipts: Vec<Receipt>,
    /// Services whose transaction failed; their files were restored.
    pub failed: FailedServices,
}

impl Installed {
    /// The files written or removed, for the report.
    pub fn files(&self) -> Vec<FileReport> {
        let file = |r: &Receipt, a: &apply::Applied| FileReport {
            path: a.path.clone(),
            action: format!("{:?}", a.action).to_lowercase(),
            service: r.service.clone(),
        };
        self.receipts
            .iter()
            .flat_map(|r| r.applied.iter().map(move |a| file(r, a)))
            .collect()
    }
}

/// Stage 6: the account changes ([`accounts`]), then the files ([`install`]). If the
/// files cannot even start, the accounts are put back.
///
/// # Errors
/// Either stage's error, with nothing left changed.
pub(super) async fn change(
    agent: &Agent,
    rendered: &Rendered,
    planned: &Planned,
    trace: &Trace,
) -> Result<Done, Failed> {
    let accounts = trace.stage("accounts", accounts(agent, planned));
    let accounts = accounts.await.map_err(super::fail)?;
    let installed = trace
        .stage("apply", install(agent, rendered, planned))
        .await;
    match installed {
        Ok(installed) => Ok(Done {
            installed,
            accounts,
            first: planned.first(),
        }),
        Err(e) => {
            if let Some(applied) = &accounts {
                accounts::undo(&agent.fs, &agent.state_dir, applied);
            }
            Err(super::fail(e))
        }
    }
}

/// Stage 6a: create and converge the accounts of the host's products before any file (which
/// may be owned by them) is written. A failed command restores the account files itself.
///
/// # Errors
/// Conflicts (nothing changed), a failed command or unreadable account files (restored).
async fn accounts(agent: &Agent, planned: &Planned) -> Result<Option<accounts::Applied>, Error> {
    Ok(accounts::apply(&agent.fs, &agent.state_dir, &planned.accounts).await?)
}

/// The services a secret that could not be read leaves as they are (nothing of them is
/// written), as failures naming the references, never a value.
pub(super) fn blocked(rendered: &Rendered) -> FailedServices {
    rendered
        .desired
        .blocked
        .iter()
        .map(|(service, refs)| {
            let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
            let name = service.as_deref().unwrap_or("(files without a service)");
            let text = format!("service {name}: secret not read: {}", refs.join(", "));
            (service.clone(), text)
        })
        .collect()
}

/// Stage 6b: forget the settled state and journal every file's previous state (one
/// directory fsync for both), then apply each service's changes as a transaction (write,
/// check, restore on failure).
///
/// # Errors
/// The settled record cannot be removed or the journal written: nothing is written then
/// (a crash would leave files without their check, reload and smoke tests).
async fn install(
    agent: &Agent,
    rendered: &Rendered,
    planned: &Planned,
) -> Result<Installed, Error> {
    journal::open(agent, &planned.plan, settled::SETTLED_FILE)?;
    let mut installed = Installed {
        receipts: Vec::new(),
        failed: FailedServices::new(),
    };
    for (service, changes) in planned.plan.by_service() {
        let svc = service
            .as_ref()
            .and_then(|s| rendered.catalog.services.get(s))
            .filter(|_| agent.run_services);
        match apply::apply(&agent.fs, svc, &changes).await {
            Ok(r) => installed.receipts.push(r),
            Err(e) => {
                error!(error = %chain(&e), "service transaction failed, files restored");
                installed.failed.insert(service.clone(), chain(&e));
            }
        }
    }
    Ok(installed)
}

/// Stages 7–8 and the hooks: reload each changed service once, run the due hooks if the
/// reloads worked, run the smoke tests.
pub(super) async fn verify(
    rendered: &Rendered,
    planned: &Planned,
    installed: &Installed,
    trace: &Trace,
) -> Verified {
    let mut verified = Verified::default();
    let reload = async {
        for svc in services::needs_reload(&rendered.catalog, &installed.receipts) {
            verified.services.push(services::reload(svc).await);
        }
    };
    trace.stage("reload", reload).await;
    if verified.services.iter().all(|s| s.ok) {
        let due: Vec<_> = planned.hooks.iter().collect();
        verified.hooks = trace.stage("hooks", hooks::run(&due)).await;
    }
    verified.smoke = trace
        .stage("smoke", smoke::smoke(&rendered.desired.smoke))
        .await;
    verified
}

/// What stage 6 changed: the account changes and the service transactions.
pub(super) struct Done {
    /// The service transactions.
    pub installed: Installed,
    /// The account changes, if any.
    pub accounts: Option<accounts::Applied>,
    /// Nothing was recorded before this reconcile (first boot).
    pub first: bool,
}

impl Done {
    /// The report of a reconcile that went through.
    pub fn applied(&self, verified: Verified) -> Applied {
        let accounts = self.accounts.as_ref().map(|a| &a.changes[..]);
        Applied {
            files: self.installed.files(),
            accounts: accounts
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect(),
            verified,
            failed: self.installed.failed.values().cloned().collect(),
        }
    }
}

/// Stage 9: restore every file of `done`, then its account files (the reverse of the
/// order they changed in), reload again, re-run the last converged configuration's smoke
/// tests, close the journal.
pub(super) async fn undo(
    agent: &Agent,
    rendered: &Rendered,
    done: &Done,
    verified: Verified,
) -> Failed {
    let failing = verified.failures().join("; ");
    tracing::warn!(failing = %failing, "rolling back every change of this reconcile");
    let last_good = super::commit::last_good_smoke(agent);
    let restore_accounts = || match &done.accounts {
        Some(applied) => accounts::undo(&agent.fs, &agent.state_dir, applied),
        None => Vec::new(),
    };
    let undone = rollback::rollback(
        &agent.fs,
        &rendered.catalog,
        &done.installed.receipts,
        restore_accounts,
        &last_good,
    )
    .await;
    journal::close(agent);
    Failed::RolledBack {
        verified,
        errors: undone.errors,
        smoke_after: undone.smoke_after,
        first: done.first,
    }
}

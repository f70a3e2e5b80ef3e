//! Stage 6, apply (SPEC §7.5): one service's changes as a transaction. Every file is
//! backed up (in memory, from the plan's snapshot), written atomically through one
//! `sys::fs` transaction (directories opened once, each synced once before the check),
//! then the service's check command runs; on any failure every file of the service is put
//! back byte for byte and the service is not reloaded.

use std::path::PathBuf;

use serde::Serialize;
use tracing::{info, instrument, warn};

use crate::catalog::Service;
use crate::plan::{Action, Change, DiskState};
use crate::sys::exec;
use crate::sys::fs::{Fs, Transaction};

/// One file written or removed, with what was there before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Logical path.
    pub path: PathBuf,
    /// What was done.
    pub action: Action,
    /// The previous state, for rollback.
    pub before: DiskState,
}

/// A service transaction that went through (files written, check passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Service (`None` for files without one).
    pub service: Option<String>,
    /// Files changed, in order.
    pub applied: Vec<Applied>,
}

/// Why a service transaction failed; its files have been restored (see `restore_errors`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing a file failed.
    #[error("writing files of service {service}")]
    Write {
        /// Service name (`-` for none).
        service: String,
        /// The filesystem error.
        #[source]
        source: crate::sys::fs::Error,
        /// Files that could not be restored (empty when the restore succeeded).
        restore_errors: Vec<String>,
    },
    /// The check command rejected the new configuration.
    #[error("checking configuration of service {service}")]
    Check {
        /// Service name.
        service: String,
        /// The command's failure, with its output tail.
        #[source]
        source: exec::Error,
        /// Files that could not be restored (empty when the restore succeeded).
        restore_errors: Vec<String>,
    },
}

/// Apply `changes` for `service`: write every file (each fsynced), sync each directory
/// written to once, run the check; on any failure restore every file of the service.
///
/// # Errors
/// `Write` or `Check`, after restoring the service's files.
#[instrument(skip_all, fields(service = service_name(service, changes)))]
pub async fn apply(
    fs: &Fs,
    service: Option<&Service>,
    changes: &[&Change],
) -> Result<Receipt, Error> {
    let mut txn = fs.transaction();
    let mut receipt = Receipt {
        service: service.map(|s| s.name.clone()),
        applied: Vec::new(),
    };
    if let Err(source) = write_all(&mut txn, changes, &mut receipt.applied) {
        return Err(Error::Write {
            service: service_name(service, changes),
            restore_errors: restore_in(&mut txn, &receipt.applied),
            source,
        });
    }
    if let Some(check) = service.and_then(|s| s.check.as_ref().map(|c| (c, s.timeout))) {
        if let Err(source) = exec::run_ok(check.0, check.1).await {
            warn!(error = %source, "check failed, restoring files");
            return Err(Error::Check {
                service: service_name(service, changes),
                restore_errors: restore_in(&mut txn, &receipt.applied),
                source,
            });
        }
    }
    Ok(receipt)
}

/// Write every change, recording each one done in `applied`, then make the directory
/// entries durable: every file is on disk before the service's check reads it (SPEC §7.5),
/// with one directory fsync per directory, not one per file (issue 13).
fn write_all(
    txn: &mut Transaction<'_>,
    changes: &[&Change],
    applied: &mut Vec<Applied>,
) -> Result<(), crate::sys::fs::Error> {
    for change in changes {
        match (&change.action, &change.after) {
            (Action::Remove, _) | (_, None) => txn.remove(&change.path)?,
            (_, Some(after)) => txn.write(&change.path, after)?,
        }
        applied.push(Applied {
            path: change.path.clone(),
            action: change.action,
            before: change.before.clone(),
        });
        info!(path = %change.path.display(), action = ?change.action, "file written");
    }
    txn.sync()
}

/// Put every applied file back, newest first, durably; returns the files that could not be
/// restored.
pub fn restore(fs: &Fs, applied: &[Applied]) -> Vec<String> {
    restore_in(&mut fs.transaction(), applied)
}

fn restore_in(txn: &mut Transaction<'_>, applied: &[Applied]) -> Vec<String> {
    let mut errors = Vec::new();
    for a in applied.iter().rev() {
        match txn.restore(&a.path, &a.before) {
            Ok(()) => info!(path = %a.path.display(), "file restored"),
            Err(e) => {
                tracing::error!(path = %a.path.display(), error = %e, "restore failed");
                errors.push(format!("{}: {e}", a.path.display()));
            }
        }
    }
    if let Err(e) = txn.sync() {
        tracing::error!(error = %e, "restored files not synced");
        errors.push(format!("syncing restored files: {e}"));
    }
    errors
}

/// The service's name; with services off (`--files-only`) the one the files belong to.
fn service_name(service: Option<&Service>, changes: &[&Change]) -> String {
    let of_files = || changes.first().and_then(|c| c.service.clone());
    service
        .map(|s| s.name.clone())
        .or_else(of_files)
        .unwrap_or_else(|| "-".to_string())
}

/// What the status record keeps of an applied file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileReport {
    /// Logical path.
    pub path: PathBuf,
    /// `create`, `update`, `metadata` or `remove`.
    pub action: String,
    pub service: Option<String>,
}

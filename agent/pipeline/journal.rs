//! The transaction journal: before the first file of a reconcile is written, the previous
//! state of every file it will touch is saved in `<state>/journal.json`; a converged or
//! rolled-back reconcile deletes it. If the agent dies in between (power loss, OOM kill),
//! the next reconcile finds the journal, puts those files back and starts over, so a
//! configuration is never left installed without its check, reload and smoke tests.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use super::Agent;
use crate::plan::DiskState;
use crate::plan::Plan;
use crate::text::chain;

/// Journal file in the state directory.
pub const JOURNAL_FILE: &str = "journal.json";

/// One file's state before the interrupted reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    before: DiskState,
}

/// Save the previous state of every file `plan` changes, before the first write.
///
/// # Errors
/// The journal could not be written: the caller must not write then (issue 15).
pub(super) fn open(agent: &Agent, plan: &Plan) -> Result<(), crate::sys::fs::Error> {
    if plan.changes.is_empty() {
        return Ok(());
    }
    let entries: Vec<Entry> = plan
        .changes
        .iter()
        .map(|c| Entry {
            path: c.path.clone(),
            before: c.before.clone(),
        })
        .collect();
    crate::sys::fs::write_json(&agent.state_dir.join(JOURNAL_FILE), &entries)
}

/// The reconcile finished (converged or rolled back): forget the journal.
pub(super) fn close(agent: &Agent) {
    if let Err(e) = crate::sys::fs::remove_state(&agent.state_dir.join(JOURNAL_FILE)) {
        tracing::error!(error = %crate::text::chain(&e), "journal not removed");
    }
}

/// Undo an interrupted reconcile, if a journal is left; returns how many files were restored.
pub(super) fn recover(agent: &Agent) -> usize {
    let path = agent.state_dir.join(JOURNAL_FILE);
    let entries: Vec<Entry> = match crate::sys::fs::read_json(&path) {
        Ok(Some(e)) => e,
        Ok(None) => return 0,
        Err(e) => {
            error!(error = %chain(&e), "transaction journal unreadable; ignoring it");
            close(agent);
            return 0;
        }
    };
    warn!(
        files = entries.len(),
        "restoring the files of an interrupted reconcile"
    );
    let mut restored = 0;
    for entry in entries.iter().rev() {
        match agent.fs.restore(&entry.path, &entry.before) {
            Ok(()) => restored += 1,
            Err(e) => error!(path = %entry.path.display(), error = %chain(&e), "restore failed"),
        }
    }
    close(agent);
    restored
}

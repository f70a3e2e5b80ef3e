//! Accounts (SPEC §10): the groups and users of the host's products, created and converged
//! before the files that may be owned by them are written, and undone with those files.
//! `etc` parses a root's passwd and group files, `plan` compares them with what the map
//! wants and what rolecall created, `command` turns each change into argv (all three pure);
//! [`apply`] runs a plan through `sys::exec` inside a snapshot of the account files taken
//! by `sys::fs`, keeping `<state>/accounts.json`, and [`undo`] puts everything back.

use std::time::Duration;

pub mod command;
pub mod etc;
pub mod plan;

mod apply;
pub use apply::{apply, plan_host, undo, Applied};
pub use plan::{AccountPlan, Change, Desired, Records};

/// What rolecall created, in the state directory.
pub const RECORDS_FILE: &str = "accounts.json";

/// Longest a `useradd` & co. may take; they only rewrite a few small files.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the account stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The map wants accounts the host has in another form: nothing was changed.
    #[error("account conflicts, nothing changed: {}", conflicts.join("; "))]
    Conflicts {
        /// One sentence per conflict.
        conflicts: Vec<String>,
    },
    /// A command failed; the account files were restored (unless `unrestored` says not).
    #[error("{action} (`{argv}`){}", unrestored.as_ref().map(|u| format!("; ACCOUNT FILES NOT RESTORED: {u}")).unwrap_or_default())]
    Command {
        /// The change, e.g. `create user tv (uid 20001, …)`.
        action: String,
        /// The command line.
        argv: String,
        /// The command's failure, with its output tail.
        #[source]
        source: Box<crate::sys::exec::Error>,
        /// What the restore could not put back.
        unrestored: Option<String>,
    },
    /// The account files or the records could not be read, saved or written.
    #[error("account files")]
    Files(#[from] crate::sys::fs::Error),
}

#[cfg(test)]
mod tests;

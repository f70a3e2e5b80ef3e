//! Stage 9, rollback (SPEC §7.7): after a failed reload, hook or smoke test, restore every
//! file this reconcile changed, reload the affected services again, and re-run the smoke
//! tests to confirm the previous configuration is healthy. The host keeps serving it.

use tracing::error;

use crate::apply::{self, Receipt};
use crate::catalog::Catalog;
use crate::render::SmokeTest;
use crate::smoke::SmokeResult;
use crate::sys::fs::Fs;
use crate::{services, smoke};

/// What a rollback left.
#[derive(Debug, Default)]
pub struct Undone {
    /// Files or reloads that could not be restored.
    pub errors: Vec<String>,
    /// The smoke tests of the last converged configuration, run after the restore.
    pub smoke_after: Vec<SmokeResult>,
}

/// Undo `receipts`, then run `restore_accounts` (the account changes, which came before
/// the files: SPEC §10), reload again, and re-run the smoke tests of the last converged
/// configuration (`tests`).
pub async fn rollback(
    fs: &Fs,
    catalog: &Catalog,
    receipts: &[Receipt],
    restore_accounts: impl FnOnce() -> Vec<String>,
    tests: &[SmokeTest],
) -> Undone {
    let mut errors = Vec::new();
    for r in receipts.iter().rev() {
        errors.extend(apply::restore(fs, &r.applied));
    }
    errors.extend(restore_accounts());
    for svc in services::needs_reload(catalog, receipts) {
        let again = services::reload(svc).await;
        if !again.ok {
            errors.push(format!(
                "reload {} after rollback: {}",
                svc.name,
                again.error.unwrap_or_default()
            ));
        }
    }
    if !errors.is_empty() {
        error!(errors = %errors.join("; "), "rollback incomplete");
    }
    Undone {
        errors,
        smoke_after: smoke::smoke(tests).await,
    }
}

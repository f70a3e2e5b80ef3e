//! Stage 9, rollback (SPEC §7.7): after a failed reload, hook or smoke test, restore every
//! file this reconcile changed, reload the affected services again, and re-run the smoke
//! tests to confirm the previous configuration is healthy. The host keeps serving it.

use tracing::{error, warn};

use crate::apply::{self, Receipt};
use crate::catalog::Catalog;
use crate::render::SmokeTest;
use crate::report::{Outcome, RunReport};
use crate::sys::fs::Fs;
use crate::{services, smoke};

/// What failed, one phrase each: smoke tests, reloads and hooks.
pub fn failures(report: &RunReport) -> Vec<String> {
    let or_empty = |e: &Option<String>| e.clone().unwrap_or_default();
    let smoke = report
        .smoke
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("smoke test {}: {}", s.name, or_empty(&s.error)));
    let reloads = report
        .services
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{} {}: {}", s.action, s.service, or_empty(&s.error)));
    let hooks = report
        .hooks
        .iter()
        .filter(|h| !h.ok)
        .map(|h| format!("hook {}: {}", h.on, or_empty(&h.error)));
    smoke.chain(reloads).chain(hooks).collect()
}

/// Undo `receipts`, reload again, re-run the smoke tests of the last converged
/// configuration (`tests`), and finish `report` as rolled back.
pub async fn rollback(
    fs: &Fs,
    catalog: &Catalog,
    receipts: &[Receipt],
    tests: &[SmokeTest],
    report: &mut RunReport,
) {
    let failing = failures(report);
    warn!(failing = %failing.join("; "), "rolling back every change of this reconcile");
    let mut errors = Vec::new();
    for r in receipts.iter().rev() {
        errors.extend(apply::restore(fs, &r.applied));
    }
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
    report.smoke_after_rollback = smoke::smoke(tests).await;
    let unhealthy: Vec<&str> = report
        .smoke_after_rollback
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.name.as_str())
        .collect();
    let mut message = format!("rolled back: {}", failing.join("; "));
    if !errors.is_empty() {
        error!(errors = %errors.join("; "), "rollback incomplete");
        message.push_str(&format!("; ROLLBACK INCOMPLETE: {}", errors.join("; ")));
    }
    if !unhealthy.is_empty() {
        message.push_str(&format!(
            "; still failing after rollback: {}",
            unhealthy.join(", ")
        ));
    }
    report.finish(Outcome::RolledBack, message);
}

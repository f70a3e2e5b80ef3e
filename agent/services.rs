//! Stage 7, reload (SPEC §7.6): each service whose files changed is reloaded (or
//! restarted, as its catalog entry says) exactly once. The decision is pure; running the
//! command goes through `sys::exec`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

use crate::apply::Receipt;
use crate::catalog::{Catalog, OnChange, Service};
use crate::sys::exec;

/// Services to reload after these receipts, each once, sorted by name.
pub fn needs_reload<'a>(catalog: &'a Catalog, receipts: &[Receipt]) -> Vec<&'a Service> {
    let names: BTreeSet<&String> = receipts
        .iter()
        .filter(|r| !r.applied.is_empty())
        .filter_map(|r| r.service.as_ref())
        .collect();
    names
        .into_iter()
        .filter_map(|n| catalog.services.get(n))
        .collect()
}

/// The result of one reload, for the status record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub service: String,
    /// `reload` or `restart`.
    pub action: String,
    /// Command run (empty when the service has none).
    pub command: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Failure reason.
    pub error: Option<String>,
    /// Duration.
    pub elapsed_ms: u64,
}

/// Reload (or restart) `service` once.
#[instrument(skip_all, fields(service = %service.name))]
pub async fn reload(service: &Service) -> ReloadReport {
    let action = match service.on_change {
        OnChange::Reload => "reload",
        OnChange::Restart => "restart",
    };
    let Some(cmd) = service.apply_command() else {
        return ReloadReport {
            service: service.name.clone(),
            action: action.into(),
            command: String::new(),
            ok: true,
            error: None,
            elapsed_ms: 0,
        };
    };
    let started = std::time::Instant::now();
    let result = exec::run_ok(cmd, service.timeout).await;
    let elapsed_ms = crate::text::elapsed_ms(started);
    let error = result.err().map(|e| crate::text::chain(&e));
    match &error {
        None => info!(action, elapsed_ms, "service reloaded"),
        Some(e) => tracing::error!(action, error = %e, "service reload failed"),
    }
    ReloadReport {
        service: service.name.clone(),
        action: action.into(),
        command: cmd.to_string(),
        ok: error.is_none(),
        error,
        elapsed_ms,
    }
}

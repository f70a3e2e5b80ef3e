//! Secrets (SPEC §10): the references a host's render needs (`[products.P.secrets]` of its
//! products, `[vars]` values that are references), read through the SDK clients and kept
//! in memory only, never on disk. Values are read again when the inputs (map, catalog,
//! agent.toml) change and when `[secrets] refresh` is due, never on every poll. I/O at the
//! edge (`fetch`); what to read, and when, is decided here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::rolemap::resolve::HostView;

mod fetch;
pub mod reference;

pub use reference::{Reference, Value};

/// The secrets of one render: the values read, and the references that could not be.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Values by reference.
    pub values: BTreeMap<Reference, Value>,
    /// Unreadable references and why (never a value).
    pub failed: BTreeMap<Reference, String>,
    /// `[vars]` names whose value is a reference, and that reference.
    pub vars: BTreeMap<String, Reference>,
}

impl Resolved {
    /// The value of `reference`, when it was read.
    pub fn value(&self, reference: &Reference) -> Option<&Value> {
        self.values.get(reference)
    }
}

/// The secrets the host's templates can ask for: the references of its products when a
/// per-product template reads secrets (`products`), those of `vars` when any template does
/// (`with_vars`). References in map and agent.toml were validated when they were loaded;
/// one that does not parse here is left out, and a template asking for it fails.
pub fn wanted(
    view: &HostView,
    vars: &toml::Table,
    (products, with_vars): (bool, bool),
) -> (BTreeSet<Reference>, BTreeMap<String, Reference>) {
    let mut refs: BTreeSet<Reference> = view
        .products
        .iter()
        .filter(|_| products)
        .flat_map(|p| p.secrets.values())
        .filter_map(|text| Reference::parse(text).ok())
        .collect();
    let vars = match with_vars {
        true => vars_references(vars),
        false => BTreeMap::new(),
    };
    refs.extend(vars.values().cloned());
    (refs, vars)
}

/// `[vars]` entries whose value is a secret reference.
pub fn vars_references(vars: &toml::Table) -> BTreeMap<String, Reference> {
    vars.iter()
        .filter_map(|(name, v)| {
            let text = v.as_str().filter(|t| reference::looks_like(t))?;
            Some((name.clone(), Reference::parse(text).ok()?))
        })
        .collect()
}

/// The daemon's memory of secrets: values, the inputs they were read for, and when they
/// are due again. A one-shot process (`sync`, `plan`) starts empty and reads what it needs.
#[derive(Debug, Default)]
pub struct Secrets {
    clients: OnceCell<fetch::Clients>,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    values: BTreeMap<Reference, Value>,
    /// Fingerprint of the inputs the values were read for.
    inputs: Option<String>,
    /// When they are read again although the inputs did not change.
    due: Option<Instant>,
}

/// How one resolve goes: what to read, and the settings it reads with.
pub struct Ask<'a> {
    /// Every reference wanted.
    pub wanted: BTreeSet<Reference>,
    /// `[vars]` references (passed through to [`Resolved::vars`]).
    pub vars: BTreeMap<String, Reference>,
    /// Fingerprint of the reconcile's inputs (map, catalog, agent.toml, identity).
    pub inputs: &'a str,
    /// Read every value again, whatever the cache holds (asked for by hand).
    pub force: bool,
    /// `[secrets] refresh`.
    pub refresh: Duration,
    /// Deadline of one read.
    pub timeout: Duration,
}

impl Secrets {
    /// Whether this process holds values read within the refresh period (false before
    /// the first read, and once the refresh is due).
    pub fn is_current(&self) -> bool {
        self.lock().due.is_some_and(|due| Instant::now() < due)
    }

    /// Time until the refresh is due (the daemon wakes for it); `None` without secrets.
    pub fn due_in(&self) -> Option<Duration> {
        self.lock()
            .due
            .map(|due| due.saturating_duration_since(Instant::now()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The values of `ask.wanted`: from memory when the inputs are those they were read
    /// for and the refresh is not due, else read (all of them) from their stores. A
    /// reference that cannot be read is in [`Resolved::failed`], never cached.
    pub async fn resolve(&self, ask: Ask<'_>) -> Resolved {
        let (mut values, to_read, fresh) = self.split(&ask);
        let mut failed = BTreeMap::new();
        if !to_read.is_empty() {
            let clients = self.clients.get_or_init(fetch::Clients::new).await;
            for reference in &to_read {
                match clients.read(reference, ask.timeout).await {
                    Ok(value) => {
                        values.insert(reference.clone(), value);
                    }
                    Err(why) => {
                        warn!(secret = %reference, error = %why, "secret not read");
                        failed.insert(reference.clone(), why);
                    }
                }
            }
            info!(
                read = to_read.len() - failed.len(),
                failed = failed.len(),
                "secrets read"
            );
        }
        self.keep(&ask, &values, !fresh);
        Resolved {
            values,
            failed,
            vars: ask.vars,
        }
    }

    /// The cached values still good for `ask`, the references to read, and whether the
    /// cache was fresh (same inputs, refresh not due: only references new to it are read).
    fn split(&self, ask: &Ask<'_>) -> (BTreeMap<Reference, Value>, BTreeSet<Reference>, bool) {
        let cache = self.lock();
        let fresh = !ask.force
            && cache.inputs.as_deref() == Some(ask.inputs)
            && cache.due.is_some_and(|due| Instant::now() < due);
        let mut values = BTreeMap::new();
        let mut to_read = BTreeSet::new();
        for reference in &ask.wanted {
            match cache.values.get(reference).filter(|_| fresh) {
                Some(value) => {
                    values.insert(reference.clone(), value.clone());
                }
                None => {
                    to_read.insert(reference.clone());
                }
            }
        }
        (values, to_read, fresh)
    }

    /// Remember `values` for `ask`'s inputs; a read of them all (`renewed`) starts a new
    /// refresh period.
    fn keep(&self, ask: &Ask<'_>, values: &BTreeMap<Reference, Value>, renewed: bool) {
        let mut cache = self.lock();
        cache.values = values.clone();
        cache.inputs = Some(ask.inputs.to_string());
        if ask.wanted.is_empty() {
            cache.due = None;
        } else if renewed || cache.due.is_none() {
            cache.due = Some(Instant::now() + jittered(ask.refresh, rand::random::<f64>()));
        }
    }
}

/// The refresh period less a jitter share of up to a tenth: hosts started together spread
/// their reads, and a rotated secret still reaches every host within one `refresh`.
pub fn jittered(refresh: Duration, share: f64) -> Duration {
    refresh.saturating_sub(refresh.mul_f64(share.clamp(0.0, 1.0) / 10.0))
}

#[cfg(test)]
mod tests;

//! The commit step: what a finished reconcile leaves in the state directory (SPEC §7.8),
//! in one place: managed-file records, the last-good map cache, the database position
//! whose hooks ran, the smoke tests re-run after a rollback, the settled record of the
//! quiet path, and the end of the crash journal. Each file is written only when its
//! content changes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::error;

use super::preview::Rendered;
use super::{journal, map::LoadedMap, settled, Agent};
use crate::error::Error;
use crate::hooks;
use crate::plan::{Record, Records, RecordsFile};
use crate::render::Desired;
use crate::source::CacheMeta;
use crate::text::chain;

/// Records of managed files, in the state directory.
pub const RECORDS_FILE: &str = "managed.json";

/// The smoke tests of the last converged configuration, re-run after a rollback.
pub const SMOKE_FILE: &str = "smoke.json";

/// From this many bytes on, a new map's cache is written on a thread of its own.
const LARGE_MAP: usize = 256 * 1024;

/// Managed-file records from the state directory.
///
/// # Errors
/// I/O or JSON.
pub fn read_records(state_dir: &Path) -> Result<Records, Error> {
    let file = crate::sys::fs::read_json(&state_dir.join(RECORDS_FILE))?;
    Ok(file.map(|RecordsFile(records)| records).unwrap_or_default())
}

/// What a reconcile that got through settles on.
pub(super) struct Settle<'a> {
    /// The map it worked from.
    pub loaded: &'a LoadedMap,
    /// The fingerprint of its inputs.
    pub fingerprint: &'a str,
    /// What it rendered, and the managed-file records as its plan found them; `None` for a
    /// host waiting for its role.
    pub rendered: Option<(&'a Rendered, &'a Records)>,
    /// Services whose transaction failed (their files were restored).
    pub failed: BTreeSet<Option<String>>,
}

/// The one commit step of a reconcile that got through: the journal closed first (its
/// files are final now), then the map cache beside the records (keeping failed services'
/// old ones) and the render memo, the position and smoke tests (when services ran), and the
/// settled record last (only when nothing failed, and removed when the records could not
/// be written: the next reconcile takes the full path and writes them). A journal that
/// cannot be removed commits nothing: the next reconcile restores the files it lists, and
/// the records must still describe those files.
///
/// The cache, the records and the memo do not depend on each other: each is written on a
/// thread of its own (the cache and the records wait on their fsyncs; a large new map's
/// cache is a megabyte), while the settled record is made ready here under a temp name, to
/// be named only once the records and the cache are durable (issue 13: 10 -> 6 ms). The memo
/// is written once the settled record has found its stamps, with them. The memo and the
/// settled record are shortcuts, never fsynced: a power loss costs a full reconcile, never
/// a wrong file.
pub(super) fn settle(agent: &Agent, s: &Settle<'_>) {
    if !journal::close(agent) {
        return;
    }
    let large = s.loaded.is_new && s.loaded.len >= LARGE_MAP;
    let cache = || store_cache(agent, s.loaded);
    let Some((rendered, recorded)) = s.rendered else {
        cache();
        return settled::store_waiting(agent, s.fingerprint);
    };
    // Built here, where the memory the render let go of is reused: what another thread
    // allocates grows the process (issue 13's 20 MB).
    let records = new_records(recorded, &rendered.desired, &s.failed);
    let records_lost = AtomicBool::new(false);
    let write_records = || {
        let written = records.iter().all(|r| store(agent, RECORDS_FILE, r));
        records_lost.store(!written, Ordering::Relaxed);
    };
    // The memo waits for the stamps the settled record finds for files it has none of
    // (after a first apply, all of them): with them, the next publish reads none of those
    // files again (issue 13). The record sends them before it is written.
    let (send_stamps, stamps) = std::sync::mpsc::sync_channel(1);
    let stamps = std::sync::Mutex::new(stamps);
    let memo = || {
        let found = || stamps.lock().ok()?.recv().ok();
        super::memo::store(agent, &rendered.desired, found);
    };
    // A thread only for a file to write: a publish that changes nothing on this host (the
    // common case on a fleet) starts none.
    let jobs = due([
        (large, &cache),
        (records.is_some(), &write_records),
        (rendered.desired.memo.is_some(), &memo),
    ]);
    let settled = crate::threads::beside(&jobs, || {
        if !large {
            cache();
        }
        let (desired, accounts) = (&rendered.desired, &rendered.accounts);
        let settled = s.failed.is_empty();
        // Moved in, so that the memo stops waiting when no record is made (a service
        // failed) or it is made without stamps.
        let stamped = move |found| drop(send_stamps.send(found));
        settled.then(|| settled::stage(agent, s.fingerprint, desired, accounts, stamped))
    });
    store_services(agent, rendered);
    name_settled(agent, settled.flatten(), records_lost.into_inner());
}

/// The jobs that are due, of those given with whether they are.
fn due<const N: usize>(jobs: [(bool, &(dyn Fn() + Sync)); N]) -> Vec<&(dyn Fn() + Sync)> {
    jobs.into_iter()
        .filter_map(|(due, job)| due.then_some(job))
        .collect()
}

/// The position and the smoke tests, when this reconcile ran the services.
fn store_services(agent: &Agent, rendered: &Rendered) {
    if agent.run_services {
        store_if_changed(agent, hooks::POSITION_FILE, &rendered.position);
        store_if_changed(agent, SMOKE_FILE, &rendered.desired.smoke);
    }
}

/// Give the `staged` settled record its name; when the records were `lost`, remove the
/// settled record instead. The records are what the next reconcile plans against: with
/// the old ones on disk no shortcut may be taken, or a file this reconcile created would
/// never be removed (the full path adopts it into the records).
fn name_settled(agent: &Agent, staged: Option<crate::sys::fs::Staged>, lost: bool) {
    if lost {
        drop(staged);
        if let Err(e) = settled::forget(agent) {
            error!(error = %chain(&e), "settled record not removed");
        }
    } else if let Some(Err(e)) = staged.map(crate::sys::fs::Staged::commit) {
        error!(error = %chain(&e), "settled record not written");
    }
}

/// The smoke tests of the last converged configuration (empty when unknown).
pub(super) fn last_good_smoke(agent: &Agent) -> Vec<crate::render::SmokeTest> {
    crate::sys::fs::read_json(&agent.state_dir.join(SMOKE_FILE))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The records of every desired file of the services that did not fail (adopting files
/// that already matched), keeping the `old` records of failed services; `None` when they
/// are the `old` ones.
fn new_records(
    old: &Records,
    desired: &Desired,
    failed: &BTreeSet<Option<String>>,
) -> Option<Records> {
    // Built from the desired files in path order, at once; a failed service's old records
    // are kept where no desired file took the path.
    let mut records: Records = desired
        .expected()
        .filter(|(f, _)| !failed.contains(&f.service))
        .map(|(f, sha256)| (f.path.clone(), Record::of(f, sha256)))
        .collect();
    for (path, record) in old.iter().filter(|(_, r)| failed.contains(&r.service)) {
        records
            .entry(path.clone())
            .or_insert_with(|| record.clone());
    }
    (records != *old).then_some(records)
}

fn store_cache(agent: &Agent, loaded: &LoadedMap) {
    if !loaded.is_new {
        return;
    }
    let meta = CacheMeta {
        info: loaded.info.clone(),
        sha256: loaded.sha256.clone(),
    };
    let stored = match loaded.cache_staged {
        true => agent.cache().promote(&meta),
        false => agent.cache().store(&loaded.bytes, &meta),
    };
    if let Err(e) = stored {
        error!(error = %chain(&e), "last-good map cache not written");
    }
}

/// Write a JSON state file only when its content changes (no writes on a quiet poll).
pub(super) fn store_if_changed<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq>(
    agent: &Agent,
    name: &str,
    value: &T,
) {
    let path = agent.state_dir.join(name);
    if crate::sys::fs::read_json::<T>(&path)
        .ok()
        .flatten()
        .as_ref()
        == Some(value)
    {
        return;
    }
    store(agent, name, value);
}

/// Write a JSON state file; a failure is logged (the next reconcile writes it again) and
/// returns false.
fn store<T: serde::Serialize>(agent: &Agent, name: &str, value: &T) -> bool {
    let path = agent.state_dir.join(name);
    let written = crate::sys::fs::write_json(&path, value);
    if let Err(e) = &written {
        error!(error = %chain(e), path = %path.display(), "state file not written");
    }
    written.is_ok()
}

//! The staged rollout's hook (SPEC §9.2), between loading a new map and converging to it:
//! a host that runs an earlier generation and whose wave is not open (or whose rollout
//! halted) keeps what it has by reconciling the map it applied last, from the cache, as
//! the live map, so drift is still repaired and a rebooting host still comes up. The
//! decision itself is `fleet::gate`'s.
//!
//! While it waits, the host remembers the held map ([`HeldMaps`]) and asks the source only
//! whether that map is still current ([`fetch`]): the newer map, up to 16 MiB, is not
//! downloaded and parsed again on every poll of a bake that may last hours.

use std::sync::{Mutex, PoisonError};

use super::map::{self, Fetch, LoadedMap};
use super::Agent;
use crate::error::Error;
use crate::fleet::gate::{self, Note, Staged, Step};
use crate::identity::Identity;
use crate::source::{AnySource, Fetched, MapSource};

/// The newer map a staged rollout holds this host from, kept between polls (in memory: a
/// restarted daemon downloads it once more).
#[derive(Debug, Default)]
pub struct HeldMaps(Mutex<Option<HeldMap>>);

#[derive(Debug)]
struct HeldMap {
    url: String,
    etag: String,
    staged: Box<Staged>,
}

impl HeldMaps {
    fn take(&self) -> Option<HeldMap> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn keep(&self, held: HeldMap) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(held);
    }
}

/// Stage 2 for a host that may be held: while the held map's wave stays closed (or its
/// rollout halted), a conditional GET on the held map's ETag; "not modified" then goes on
/// as if the source still held the applied map (the quiet path included), with the hold's
/// note. Anything else (the wave opened, a newer map, no held map) is the usual fetch.
pub(super) async fn fetch(
    agent: &Agent,
    source: &AnySource,
    identity: &Identity,
) -> (Fetch, Option<Note>) {
    let still = agent.held.take().and_then(|held| {
        let note = still_held(agent, &held, identity)?;
        Some((held, note))
    });
    let Some((held, note)) = still else {
        return (map::fetch(agent, source).await, None);
    };
    let Some(cached) = map::cached_meta(agent) else {
        return (map::fetch(agent, source).await, None);
    };
    let fetched = source.fetch(Some(&held.etag)).await;
    let cached = Some(cached);
    if !matches!(fetched, Ok(Fetched::NotModified)) {
        // A newer map (or an error): the usual load, against the applied map.
        return (Fetch { cached, fetched }, None);
    }
    agent.held.keep(held);
    (Fetch { cached, fetched }, Some(note))
}

/// The note of a host `held` still keeps from its map now, if it does.
fn still_held(agent: &Agent, held: &HeldMap, identity: &Identity) -> Option<Note> {
    if held.url != agent.settings.map_url {
        return None;
    }
    let recorded = gate::recorded(&agent.state_dir);
    match held
        .staged
        .step(&identity.id, crate::report::now(), recorded.as_ref())
    {
        Step::Stay(note) => Some(note),
        Step::Apply | Step::Evaluate { .. } => None,
    }
}

/// `loaded`, or the applied map in its place with the reason, for a host that waits.
/// `applied` is the generation of the cached (last applied) map.
///
/// # Errors
/// The cached map cannot be read while the host must keep it.
pub(super) async fn gate(
    agent: &Agent,
    loaded: LoadedMap,
    applied: Option<u64>,
    identity: &Identity,
) -> Result<(LoadedMap, Option<Note>), Error> {
    let Some(staged) = loaded.staged.as_ref().filter(|_| loaded.is_new) else {
        return Ok((loaded, None));
    };
    let earlier = applied.is_some_and(|a| a < staged.generation);
    let has_files = earlier
        && super::commit::read_records(&agent.state_dir).is_ok_and(|records| !records.is_empty());
    if !staged.gates(&identity.id, applied, has_files) {
        return Ok((loaded, None));
    }
    let now = crate::report::now();
    let report = agent.settings.report.as_ref();
    let Some(note) = gate::decide(staged, &identity.id, &agent.state_dir, report, now).await else {
        return Ok((loaded, None));
    };
    tracing::info!(generation = note.generation, outcome = %note.state, "staged rollout: keeping the applied map");
    if let Some(etag) = &loaded.info.etag {
        let url = agent.settings.map_url.clone();
        let staged = staged.clone();
        agent.held.keep(HeldMap {
            url,
            etag: etag.clone(),
            staged,
        });
    }
    Ok((map::unmodified(agent, true, identity)?, Some(note)))
}

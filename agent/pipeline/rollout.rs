//! The staged rollout's hook (SPEC §9.2), between loading a new map and converging to it:
//! a host that runs an earlier generation and whose wave is not open (or whose rollout
//! halted) keeps what it has by reconciling the map it applied last, from the cache, as
//! the live map, so drift is still repaired and a rebooting host still comes up. The
//! decision itself is `fleet::gate`'s.

use super::map::{self, LoadedMap};
use super::Agent;
use crate::error::Error;
use crate::fleet::gate::{self, Note};
use crate::identity::Identity;

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
    Ok((map::unmodified(agent, true, identity)?, Some(note)))
}

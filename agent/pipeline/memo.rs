//! The render memo's life in the state directory (issue 13; the memo itself is in
//! `render::memo`): read before stage 4, its remembered files completed from the disk after
//! it, kept by the commit step when it changed. Every failure here costs a full render,
//! never a wrong file: an unreadable or torn memo, one of another rolecall build, a
//! remembered file missing, refused or changed on disk.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use tracing::{debug, error};

use super::Agent;
use crate::plan::{self, DiskState};
use crate::render::{Desired, Memo};
use crate::text::chain;

/// The memo, in the state directory (0600: it holds the hashes of secret files).
pub const MEMO_FILE: &str = "render-memo.json";

/// The memo of the last render, or an empty one; `None` when this build cannot be told from
/// another (its executable's identity is unreadable), which renders everything.
pub(super) fn load(agent: &Agent) -> Option<Memo> {
    let build = build()?;
    let read = crate::sys::fs::read_json::<Memo>(&agent.state_dir.join(MEMO_FILE));
    let memo = read.unwrap_or_else(|e| {
        debug!(error = %chain(&e), "render memo unreadable: rendering everything");
        None
    });
    Some(
        memo.filter(|m| m.build == build)
            .unwrap_or_else(|| Memo::new(&build)),
    )
}

/// Complete `desired`'s remembered files from the disk. Returns the disk state of each (the
/// plan's snapshot of those paths), or `None` when one is outside the allowed roots, cannot
/// be read or no longer hashes as remembered: the caller renders everything.
pub(super) fn fill(agent: &Agent, desired: &mut Desired) -> Option<BTreeMap<PathBuf, DiskState>> {
    let paths = desired.remembered.iter().map(|r| r.file.path.as_path());
    let allowed = &agent.settings.allowed_roots;
    if !paths.clone().all(|p| plan::is_allowed(p, allowed)) {
        return None;
    }
    let disk = agent.fs.snapshot_all(paths).ok()?;
    let filled = desired.fill_remembered(|file| match disk.get(&file.path) {
        Some(DiskState::File(state)) => Some(state.content.clone()),
        _ => None,
    });
    if !filled {
        debug!("a file the render memo vouches for changed on disk: rendering everything");
    }
    filled.then_some(disk)
}

/// Keep the memo `desired` leaves for the next render, when it changed.
pub(super) fn store(agent: &Agent, desired: &Desired) {
    let Some(memo) = &desired.memo else {
        return;
    };
    let path = agent.state_dir.join(MEMO_FILE);
    let written = serde_json::to_vec(memo)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            crate::sys::fs::write_state_mode(&path, &bytes, 0o600).map_err(|e| chain(&e))
        });
    if let Err(e) = written {
        error!(error = %e, "render memo not written (the next render renders everything)");
    }
}

/// This rolecall build: its version and its executable's identity, so an upgrade (or a
/// rebuild) never uses what another build rendered.
fn build() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let meta = std::fs::metadata(exe).ok()?;
    Some(format!(
        "{} {}:{}:{}:{}",
        env!("CARGO_PKG_VERSION"),
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    ))
}

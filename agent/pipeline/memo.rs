//! The render memo's life in the state directory (issue 13; the memo itself is in
//! `render::memo`): read before stage 4, its remembered files checked on the disk after it
//! (unread where their stamps vouch for them, else read, hashed and stamped), kept by
//! the commit step when it changed. Every failure here costs a full render,
//! never a wrong file: an unreadable or torn memo, one of another rolecall build, a
//! remembered file missing, refused or changed on disk.

use foldhash::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tracing::{debug, error};

use super::ahead::Stats;
use super::Agent;
use crate::plan::{self, DiskState, FileState, Stamp};
use crate::render::{Desired, Memo, Remembered};
use crate::sys::fs::Stat;
use crate::text::{chain, sha256_hex};

/// The memo, in the state directory (0600: it holds the hashes of secret files).
pub const MEMO_FILE: &str = "render-memo.json";

/// The memo of the last render, or an empty one; `None` when this build cannot be told from
/// another (its executable's identity is unreadable), which renders everything.
pub(super) fn load(state_dir: &Path) -> Option<Memo> {
    let build = build()?;
    let read = crate::sys::fs::read_json::<Memo>(&state_dir.join(MEMO_FILE));
    let memo = read.unwrap_or_else(|e| {
        debug!(error = %chain(&e), "render memo unreadable: rendering everything");
        None
    });
    Some(
        memo.filter(|m| m.build == build)
            .unwrap_or_else(|| Memo::new(&build)),
    )
}

/// Complete `desired`'s remembered files from the disk (`stats`: their `lstat`s taken
/// already, else taken here): the ones whose stamp shows them untouched since they were
/// last found as remembered are vouched for unread; the others
/// are read, one at a time: each found as remembered (bytes, owner, group and mode) is
/// vouched for too, its bytes let go as soon as they are hashed (a 500-vhost host's first
/// publish after a first apply reads 1.1 MB, issue 13), and gets its stamp in the memo for
/// the next render (`loaded`, when the render left it unchanged). Returns the disk state of
/// the files read that differ only in owner, group or mode (the plan's snapshot of those
/// paths), or `None` when one is outside the allowed roots, cannot be read or no longer
/// hashes as remembered: the caller renders everything.
pub(super) fn fill(
    agent: &Agent,
    desired: &mut Desired,
    loaded: &Memo,
    stats: Option<Stats>,
) -> Option<BTreeMap<PathBuf, DiskState>> {
    let paths = desired.remembered.iter().map(|r| r.file.path.as_path());
    let allowed = &agent.settings.allowed_roots;
    if !paths.clone().all(|p| plan::is_allowed(p, allowed)) {
        return None;
    }
    let Stats {
        now,
        by_path: stats,
    } = match stats {
        Some(stats) => stats,
        None => Stats::of(&agent.fs, paths)?,
    };
    desired.vouch(|r| {
        stats
            .get(&r.file.path)
            .is_some_and(|s| is_as(r, s.as_ref()))
    });
    let (same, disk) = read(agent, desired)?;
    desired.vouch(|r| same.contains(&r.file.path));
    let filled = desired.fill_remembered(|file| match disk.get(&file.path) {
        Some(DiskState::File(state)) => Some(state.content.clone()),
        _ => None,
    });
    if !filled {
        debug!("a file the render memo vouches for changed on disk: rendering everything");
        return None;
    }
    restamp(desired, loaded, &stats, &same, now);
    Some(disk)
}

/// Read the remembered files not vouched for yet, each checked as it is read: the paths
/// found as remembered, and the disk state of the others.
fn read(
    agent: &Agent,
    desired: &Desired,
) -> Option<(BTreeSet<PathBuf>, BTreeMap<PathBuf, DiskState>)> {
    let wanted: BTreeMap<&Path, &Remembered> = desired
        .remembered
        .iter()
        .map(|r| (r.file.path.as_path(), r))
        .collect();
    let keep = |path: &Path, state: DiskState| match (&state, wanted.get(path)) {
        (DiskState::File(now), Some(r)) if is_remembered(r, now) => None,
        _ => Some(state),
    };
    let read = agent.fs.snapshot_all_as(wanted.keys().copied(), keep);
    let (mut same, mut disk) = (BTreeSet::new(), BTreeMap::new());
    for (path, state) in read.ok()? {
        match state {
            None => {
                same.insert(path);
            }
            Some(state) => {
                disk.insert(path, state);
            }
        }
    }
    Some((same, disk))
}

/// Whether the file read is `r`: its bytes hash as remembered, with the same owner, group
/// and mode.
fn is_remembered(r: &Remembered, now: &FileState) -> bool {
    (&now.owner, &now.group, now.mode) == (&r.file.owner, &r.file.group, r.file.mode)
        && sha256_hex(&now.content) == r.sha256
}

/// Whether the file `stat` found is `r` as last found: the same stamp, and an owner and
/// group that still have the names the file wants.
fn is_as(r: &Remembered, stat: Option<&Stat>) -> bool {
    stat.is_some_and(|s| {
        r.stamp == Some(s.stamp) && s.owner == r.file.owner && s.group == r.file.group
    })
}

/// Give each file just read and found as remembered (the `same`) the stamp it had before
/// it was read, when that stamp is settled (see `Stamp::is_settled`): into the memo the
/// render leaves, or a copy of `loaded`, and to its vouched entry (none when unsettled: the
/// old one is stale). A file that differs in owner, group or mode gets none.
fn restamp(
    desired: &mut Desired,
    loaded: &Memo,
    stats: &HashMap<PathBuf, Option<Stat>>,
    same: &BTreeSet<PathBuf>,
    now: (i64, i64),
) {
    let settled = |path: &PathBuf| {
        let stat = stats.get(path)?.as_ref()?;
        stat.stamp
            .is_settled(now)
            .then(|| (path.clone(), stat.stamp))
    };
    let stamps: BTreeMap<PathBuf, Stamp> = same.iter().filter_map(settled).collect();
    for r in desired.vouched.iter_mut() {
        if same.contains(&r.file.path) {
            r.stamp = stamps.get(&r.file.path).copied();
        }
    }
    debug!(
        found_as_remembered = same.len(),
        stamped = stamps.len(),
        vouched = desired.vouched.len(),
        "render memo filled"
    );
    if stamps.is_empty() {
        return;
    }
    match &mut desired.memo {
        Some(next) => {
            next.restamp(&stamps);
        }
        None => {
            let mut next = loaded.clone();
            if next.restamp(&stamps) {
                desired.memo = Some(next);
            }
        }
    }
}

/// Keep the memo `desired` leaves for the next render, when it changed, with the stamps
/// `found` gives (each of a file read and found as `desired` has it, after its `lstat`
/// showed the stamp, settled; see `settled::stamp`).
pub(super) fn store(
    agent: &Agent,
    desired: &Desired,
    found: impl FnOnce() -> Option<BTreeMap<PathBuf, Stamp>>,
) {
    let Some(memo) = &desired.memo else {
        return;
    };
    let stamps = found().unwrap_or_default();
    let path = agent.state_dir.join(MEMO_FILE);
    let memo = memo.with_stamps(&stamps);
    let written =
        crate::sys::fs::write_shortcut(&path, 0o600, |out| serde_json::to_writer(out, &memo));
    if let Err(e) = written {
        error!(error = %chain(&e), "render memo not written (the next render renders everything)");
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

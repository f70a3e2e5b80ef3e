//! The transaction journal: before the first file of a reconcile is written, the previous
//! state of every file it will touch is saved in `<state>/journal`; a converged or
//! rolled-back reconcile deletes it. If the agent dies in between (power loss, OOM kill),
//! the next reconcile finds the journal, puts those files back and starts over, so a
//! configuration is never left installed without its check, reload and smoke tests.
//!
//! Format (issue 15: compact, and private since it holds file contents, secrets included):
//! a first line `rolecall-journal 1`, a JSON line listing the entries (path, and for a file
//! that existed its owner, group, mode and length), then the files' bytes back to back in
//! that order. Mode 0600, written atomically and fsynced in one write.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::Agent;
use crate::plan::{DiskState, FileState, Plan};
use crate::text::chain;

/// Journal file in the state directory.
pub const JOURNAL_FILE: &str = "journal";
/// Its first line.
const MAGIC: &[u8] = b"rolecall-journal 1\n";
/// It holds file contents: owner only.
const MODE: u32 = 0o600;

/// One file's state before the interrupted reconcile; the bytes follow the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    before: Before,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Before {
    /// Nothing there (or something rolecall never writes through): remove on restore.
    Absent,
    /// A regular file of `len` bytes.
    File {
        owner: String,
        group: String,
        mode: u32,
        len: usize,
    },
}

/// Save the previous state of every file `plan` changes, before the first write, and
/// remove the file `forget` of the state directory (the settled record) first: the fsync
/// of the directory that names the journal makes the removal durable too (issue 13). With
/// nothing to change, `forget` is removed durably on its own.
///
/// # Errors
/// `forget` could not be removed (nothing is written then), or the journal could not be
/// written: the caller must not write then (issue 15).
pub(super) fn open(agent: &Agent, plan: &Plan, forget: &str) -> Result<(), crate::sys::fs::Error> {
    if plan.changes.is_empty() {
        return crate::sys::fs::remove_state(&agent.state_dir.join(forget));
    }
    let path = agent.state_dir.join(JOURNAL_FILE);
    let befores = plan
        .changes
        .iter()
        .map(|c| (c.path.clone(), c.before.clone()));
    let bytes = encode(befores.collect()).map_err(|source| crate::sys::fs::Error::Json {
        path: path.clone(),
        source,
    })?;
    crate::sys::fs::write_state_removing(&path, &bytes, MODE, forget)
}

fn encode(files: Vec<(PathBuf, DiskState)>) -> serde_json::Result<Vec<u8>> {
    let mut blobs = Vec::new();
    let entries: Vec<Entry> = files
        .into_iter()
        .map(|(path, state)| {
            let before = match state {
                DiskState::File(f) => {
                    let len = f.content.len();
                    blobs.extend_from_slice(&f.content);
                    let (owner, group, mode) = (f.owner, f.group, f.mode);
                    Before::File {
                        owner,
                        group,
                        mode,
                        len,
                    }
                }
                _ => Before::Absent,
            };
            Entry { path, before }
        })
        .collect();
    let mut out = MAGIC.to_vec();
    serde_json::to_writer(&mut out, &entries)?;
    out.push(b'\n');
    out.extend_from_slice(&blobs);
    Ok(out)
}

/// The entries of a journal, with their previous states; `None` when it is not one.
fn decode(bytes: &[u8]) -> Option<Vec<(PathBuf, DiskState)>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    let entries: Vec<Entry> = serde_json::from_slice(&rest[..newline]).ok()?;
    let mut blobs = &rest[newline + 1..];
    let mut out = Vec::with_capacity(entries.len());
    for Entry { path, before } in entries {
        let state = match before {
            Before::Absent => DiskState::Absent,
            Before::File {
                owner,
                group,
                mode,
                len,
            } => {
                let content = blobs.get(..len)?.into();
                blobs = &blobs[len..];
                DiskState::File(FileState {
                    content,
                    owner,
                    group,
                    mode,
                })
            }
        };
        out.push((path, state));
    }
    blobs.is_empty().then_some(out)
}

/// The reconcile finished (converged or rolled back): forget the journal, durably. False
/// when it is still there: the next reconcile will restore what it lists.
pub(super) fn close(agent: &Agent) -> bool {
    match crate::sys::fs::remove_state(&agent.state_dir.join(JOURNAL_FILE)) {
        Ok(()) => true,
        Err(e) => {
            error!(error = %chain(&e), "journal not removed");
            false
        }
    }
}

/// Undo an interrupted reconcile, if a journal is left; returns how many files were
/// restored. Each restore sweeps its file's directory first (a transaction does), and every
/// write to a managed file happens while a journal names it: so the undo also removes the
/// temp files a killed rolecall left (issue 15 #4). A journal that cannot be read names no
/// file: the directories of the managed-file records are swept instead.
pub(super) fn recover(agent: &Agent) -> usize {
    let path = agent.state_dir.join(JOURNAL_FILE);
    let entries = match crate::sys::fs::read_state(&path) {
        Ok(Some(bytes)) => decode(&bytes).ok_or_else(|| format!("{} damaged", path.display())),
        Ok(None) => return 0,
        Err(e) => Err(chain(&e)),
    };
    let entries = match entries {
        Ok(entries) => entries,
        Err(why) => {
            error!(error = %why, "transaction journal unreadable; ignoring it");
            sweep_recorded(agent);
            close(agent);
            return 0;
        }
    };
    warn!(
        files = entries.len(),
        "restoring the files of an interrupted reconcile"
    );
    let mut restored = 0;
    for (file, before) in entries.iter().rev() {
        match agent.fs.restore(file, before) {
            Ok(()) => restored += 1,
            Err(e) => error!(path = %file.display(), error = %chain(&e), "restore failed"),
        }
    }
    close(agent);
    restored
}

/// Remove the temp files a killed rolecall may have left beside the recorded files.
fn sweep_recorded(agent: &Agent) {
    let records = super::commit::read_records(&agent.state_dir).unwrap_or_default();
    let dirs: BTreeSet<&Path> = records.keys().filter_map(|f| f.parent()).collect();
    match agent.fs.sweep(dirs) {
        Ok(0) => {}
        Ok(removed) => info!(removed, "removed temp files a killed rolecall left"),
        Err(e) => warn!(error = %chain(&e), "could not sweep stale temp files"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_compact_and_round_trips() {
        let big = vec![b'x'; 10_000];
        let files = vec![
            (PathBuf::from("/etc/a"), DiskState::Absent),
            (
                PathBuf::from("/etc/b"),
                DiskState::File(FileState {
                    content: big.as_slice().into(),
                    owner: "root".into(),
                    group: "www-data".into(),
                    mode: 0o640,
                }),
            ),
            (PathBuf::from("/etc/c"), DiskState::Symlink),
        ];
        let bytes = encode(files.clone()).unwrap();
        assert!(bytes.len() < big.len() + 300, "{} bytes", bytes.len());
        let back = decode(&bytes).unwrap();
        assert_eq!(back[0..2], files[0..2]);
        assert_eq!(back[2], (PathBuf::from("/etc/c"), DiskState::Absent));
    }

    #[test]
    fn a_damaged_journal_is_not_read() {
        let file = DiskState::File(FileState {
            content: b"abc"[..].into(),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o644,
        });
        let bytes = encode(vec![(PathBuf::from("/etc/b"), file)]).unwrap();
        assert!(decode(&bytes[..bytes.len() - 1]).is_none(), "truncated");
        let mut longer = bytes.clone();
        longer.push(b'!');
        assert!(decode(&longer).is_none(), "trailing bytes");
        assert!(decode(b"[]").is_none(), "old format");
    }
}

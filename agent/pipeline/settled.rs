//! The quiet path (issue 3: "a 304 costs no parse, render or write"). A reconcile that
//! converged leaves what it settled on: the fingerprint of its inputs and the expected
//! state of every managed file. A later reconcile whose inputs have that fingerprint
//! renders exactly those files again, so it only has to compare them with the disk: the
//! same snapshot the planner takes, hashed instead of diffed. Any difference (drift, a
//! missing file, another owner or mode) sends the reconcile down the full path. So does an
//! account of the host's products that no longer matches the map (SPEC §10).

use foldhash::HashMap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, error};

use super::Agent;
use crate::plan::{DiskState, Stamp};
use crate::render::{Desired, Memo};
use crate::sys::fs::{coarse_now, Stat};
use crate::text::chain;
use crate::text::sha256_hex;

/// The settled record, in the state directory.
pub const SETTLED_FILE: &str = "settled.json";

/// What the last converged reconcile settled on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// Fingerprint of its inputs (see `map::fingerprint`).
    pub fingerprint: String,
    /// It ran the checks, reloads, hooks and smoke tests (not `--files-only`). Only such a
    /// record lets a full reconcile be quiet: after a files-only run they are still due.
    pub services: bool,
    /// The host was not in the map: nothing was rendered, so nothing is to check.
    #[serde(default)]
    pub waiting: bool,
    /// Some file holds secrets (SPEC §10): quiet only while this process holds their
    /// values and their refresh is not due, else they are read again.
    #[serde(default)]
    pub secrets: bool,
    /// Every file it manages, as it left it.
    #[serde(deserialize_with = "crate::plan::by_path")]
    pub files: BTreeMap<PathBuf, Expected>,
    /// The accounts it converged (none when it manages none): checked against the root's
    /// passwd and group files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<crate::accounts::Desired>,
}

/// One managed file as a converged reconcile left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Owner name.
    pub owner: String,
    /// Group name.
    pub group: String,
    /// Permission bits.
    pub mode: u32,
    /// The file's stamp once it was found as expected (see `plan::Stamp`): while the disk
    /// shows it, the quiet path vouches for the file without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

impl Expected {
    /// Whether `stat` vouches for the file: its stamp, and the owner and group it wants.
    fn vouched_by(&self, stat: Option<&Stat>) -> bool {
        stat.is_some_and(|s| {
            self.stamp == Some(s.stamp) && (&s.owner, &s.group) == (&self.owner, &self.group)
        })
    }

    fn without_stamp(&self) -> Expected {
        Expected {
            stamp: None,
            ..self.clone()
        }
    }
}

/// The record that the inputs `fingerprint` converged to `desired` and `accounts`, written
/// under a temp name (a shortcut, never fsynced) for the commit step to name last; `None`
/// when the record on disk says so already, or it could not be written (logged). A
/// files-only run keeps a full run's record of the same inputs and files rather than weaken
/// it. `stamped` is given, before the record is written, the stamps found for the files the
/// render memo has none of (see [`stamp`]), for the memo the commit writes beside it.
pub(super) fn stage(
    agent: &Agent,
    fingerprint: &str,
    desired: &Desired,
    accounts: &crate::accounts::Desired,
    stamped: impl FnOnce(BTreeMap<PathBuf, Stamp>),
) -> Option<crate::sys::fs::Staged> {
    // A record of other inputs can neither equal this one nor be kept for it: it is parsed
    // (0.3 MB of JSON on a 500-vhost host) only for stamps the memo does not give.
    let stored = load(agent);
    let alike = stored
        .as_deref()
        .is_none_or(|bytes| is_of(bytes, fingerprint));
    let mut old = stored.as_deref().filter(|_| alike).and_then(parse);
    let mut settled = Settled {
        fingerprint: fingerprint.to_string(),
        services: agent.run_services,
        waiting: false,
        // Only a host that holds secret values (its last read wanted references: a refresh
        // is due some time) must read them again; a template that could read one but has
        // none to read (a product without `secrets`) keeps the quiet path.
        secrets: agent.secrets.due_in().is_some() && desired.all_files().any(|f| f.is_secret),
        files: expected_files(desired),
        accounts: Some(accounts.clone()).filter(|a| !a.is_empty()),
    };
    if let Some(old) = old.as_ref().filter(|_| !agent.run_services) {
        if old.fingerprint == settled.fingerprint && same_files(&old.files, &settled.files) {
            return None;
        }
    }
    let rest = memo_stamps(&mut settled.files, desired);
    if !alike && !rest.is_empty() {
        old = stored.as_deref().and_then(parse);
    }
    stamped(stamp(agent, &mut settled.files, rest, old.as_ref()));
    if old.as_ref() == Some(&settled) {
        return None;
    }
    let path = agent.state_dir.join(SETTLED_FILE);
    crate::sys::fs::stage_shortcut_json(&path, &settled)
        .map_err(|e| error!(error = %chain(&e), "settled record not written"))
        .ok()
}

/// Every desired file as the record keeps it, without stamps yet.
fn expected_files(desired: &Desired) -> BTreeMap<PathBuf, Expected> {
    let expected = |(f, sha256): (&crate::render::RenderedFile, String)| {
        let expected = Expected {
            sha256,
            owner: f.owner.clone(),
            group: f.group.clone(),
            mode: f.mode,
            stamp: None,
        };
        (f.path.clone(), expected)
    };
    desired.expected().map(expected).collect()
}

/// The same files expected alike, stamps aside (`new` has none yet).
fn same_files(old: &BTreeMap<PathBuf, Expected>, new: &BTreeMap<PathBuf, Expected>) -> bool {
    old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .all(|((p, e), (q, f))| p == q && e.without_stamp() == *f)
}

/// Give each file of `rest`, those the render memo has no stamps of ([`memo_stamps`]), the
/// stamp that lets the quiet path vouch for it unread: the last record's stamp of a file
/// expected alike is kept while the file still shows it, else the stamp its `lstat` shows
/// now once the file, read after that, is as expected and the stamp is settled. A file
/// that gets none is read by every quiet poll until the next commit. Returns the stamps
/// given.
fn stamp(
    agent: &Agent,
    files: &mut BTreeMap<PathBuf, Expected>,
    rest: Vec<PathBuf>,
    old: Option<&Settled>,
) -> BTreeMap<PathBuf, Stamp> {
    if rest.is_empty() {
        return BTreeMap::new();
    }
    let now = coarse_now();
    let Ok(stats) = agent.fs.stat_all(rest.iter().map(PathBuf::as_path)) else {
        return BTreeMap::new();
    };
    let mut unread = Vec::new();
    for path in &rest {
        let stat = stats.get(path).and_then(Option::as_ref);
        let (Some(e), Some(stat)) = (files.get_mut(path), stat) else {
            continue;
        };
        e.stamp = last_stamp(old, path, e);
        if !e.vouched_by(Some(stat)) {
            e.stamp = None;
            if stat.stamp.is_settled(now) {
                unread.push(path.as_path());
            }
        }
    }
    let same = as_expected(agent, files, unread.iter().copied()).unwrap_or_default();
    for path in unread {
        let stat = stats.get(path).and_then(Option::as_ref);
        if let (Some(e), Some(stat), Some(true)) = (files.get_mut(path), stat, same.get(path)) {
            e.stamp = Some(stat.stamp);
        }
    }
    let stamped = |path: PathBuf| {
        let stamp = files.get(&path)?.stamp?;
        Some((path, stamp))
    };
    rest.into_iter().filter_map(stamped).collect()
}

/// Whether the disk holds each of `paths` as `files` expects it; each file is read and
/// checked in turn, not all read first.
fn as_expected<'p>(
    agent: &Agent,
    files: &BTreeMap<PathBuf, Expected>,
    paths: impl IntoIterator<Item = &'p Path>,
) -> Result<BTreeMap<PathBuf, bool>, crate::sys::fs::Error> {
    agent.fs.snapshot_all_as(paths, |path, now| {
        files.get(path).is_some_and(|e| matches(Some(&now), e))
    })
}

/// Give the files the render memo has stamps of those stamps (each says what the file held
/// when its `lstat` showed it, whatever happened since); returns the others.
fn memo_stamps(files: &mut BTreeMap<PathBuf, Expected>, desired: &Desired) -> Vec<PathBuf> {
    let vouched = desired.vouched.iter();
    let vouched = vouched.filter_map(|r| Some((r.file.path.as_path(), r.stamp?)));
    let memo = desired.memo.iter().flat_map(Memo::stamps);
    let stamps: HashMap<&Path, Stamp> = memo.chain(vouched).collect();
    let mut rest = Vec::new();
    for (path, e) in files.iter_mut() {
        e.stamp = stamps.get(path.as_path()).copied();
        if e.stamp.is_none() {
            rest.push(path.clone());
        }
    }
    rest
}

/// The last record's stamp of `path`, if it expected the file alike.
fn last_stamp(old: Option<&Settled>, path: &Path, e: &Expected) -> Option<Stamp> {
    let last = old?.files.get(path)?;
    (last.without_stamp() == *e).then_some(last.stamp).flatten()
}

/// Whether the settled record `bytes` may be of the inputs `fingerprint`: false only when
/// its first [`PEEK`] bytes name others ([`leading`]), so that a record of other inputs is
/// never parsed; one that does not start as this build writes it is parsed as before.
fn is_of(bytes: &[u8], fingerprint: &str) -> bool {
    leading(&bytes[..bytes.len().min(PEEK)]).is_none_or(|last| last == fingerprint)
}

/// The hex fingerprint a record starting `{"fingerprint":"<hex>"` has (spaces and newlines
/// aside, as a pretty-printed record has them); `None` for any other start.
fn leading(head: &[u8]) -> Option<&str> {
    // The head may end inside a character of a later path.
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
    };
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"fingerprint\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let (hex, _) = rest.split_once('"')?;
    (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// How much of the settled record [`is_of`] looks at: its fingerprint is 64 hex digits.
const PEEK: usize = 256;

/// The settled record's bytes, read once; `None` when there is none or it is unreadable.
fn load(agent: &Agent) -> Option<Vec<u8>> {
    match crate::sys::fs::read_state(&agent.state_dir.join(SETTLED_FILE)) {
        Ok(bytes) => bytes,
        Err(e) => {
            debug!(error = %chain(&e), "settled record unreadable");
            None
        }
    }
}

/// The settled record of `bytes` ([`load`]); `None` when it is no record.
fn parse(bytes: &[u8]) -> Option<Settled> {
    serde_json::from_slice(bytes)
        .map_err(|e| debug!(error = %e, "settled record unreadable"))
        .ok()
}

/// Remember that the inputs `fingerprint` leave this host waiting for a role.
pub(super) fn store_waiting(agent: &Agent, fingerprint: &str) {
    let settled = Settled {
        fingerprint: fingerprint.to_string(),
        services: agent.run_services,
        waiting: true,
        secrets: false,
        files: BTreeMap::new(),
        accounts: None,
    };
    super::commit::store_if_changed(agent, SETTLED_FILE, &settled);
}

/// What a reconcile with settled inputs would find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quiet {
    /// Converged, no changes.
    Converged,
    /// Waiting for role assignment.
    Waiting,
}

/// Forget the settled state: files are about to change, and until a reconcile converges
/// again no shortcut may be taken.
///
/// # Errors
/// The record could not be removed; the caller must not change files then.
pub(super) fn forget(agent: &Agent) -> Result<(), crate::sys::fs::Error> {
    crate::sys::fs::remove_state(&agent.state_dir.join(SETTLED_FILE))
}

/// What the inputs `fingerprint` come to without a render, when the last reconcile that
/// finished had them: waiting again, or converged when every file it manages is still as
/// it left it (and, for a full reconcile, that one ran the services too). The files are
/// checked only when `converged` may be answered. Secrets not `current` (not read by
/// this process, refresh due, or asked for by hand) take the full path too. `None`: take
/// the full path.
pub(super) fn quiet(
    agent: &Agent,
    fingerprint: &str,
    converged: bool,
    current: bool,
) -> Option<Quiet> {
    let bytes = load(agent)?;
    if !is_of(&bytes, fingerprint) {
        debug!("inputs changed since the last converged reconcile");
        return None;
    }
    let settled = parse(&bytes)?;
    if settled.fingerprint != fingerprint {
        debug!("inputs changed since the last converged reconcile");
        return None;
    }
    if settled.secrets && !current {
        debug!("secrets to read again");
        return None;
    }
    if settled.waiting {
        return Some(Quiet::Waiting);
    }
    (converged && holds(agent, &settled)).then_some(Quiet::Converged)
}

/// The settled accounts still need no change (records are not read: only a new map or
/// catalog, which change the fingerprint, make an account unwanted).
fn accounts_hold(agent: &Agent, accounts: Option<&crate::accounts::Desired>) -> bool {
    let Some(desired) = accounts else {
        return true;
    };
    let range = agent.settings.accounts.range;
    agent.fs.accounts().is_ok_and(|existing| {
        let records = crate::accounts::Records::default();
        crate::accounts::plan::plan(desired, &existing, &records, range).is_empty()
    })
}

fn holds(agent: &Agent, settled: &Settled) -> bool {
    if agent.run_services && !settled.services {
        debug!("the last converged reconcile ran files only");
        return false;
    }
    if !accounts_hold(agent, settled.accounts.as_ref()) {
        debug!("an account drifted");
        return false;
    }
    let paths = settled.files.keys().map(PathBuf::as_path);
    let stats = agent.fs.stat_all(paths).unwrap_or_default();
    // What the stamps vouch for is not read.
    let unread = settled
        .files
        .iter()
        .filter(|(p, e)| !e.vouched_by(stats.get(*p).and_then(Option::as_ref)))
        .map(|(p, _)| p.as_path());
    let same = match as_expected(agent, &settled.files, unread) {
        Ok(same) => same,
        Err(e) => {
            debug!(error = %chain(&e), "a managed file cannot be read");
            return false;
        }
    };
    same.iter().all(|(path, &same)| {
        if !same {
            debug!(path = %path.display(), "managed file drifted");
        }
        same
    })
}

/// The file on disk is the one the last converged reconcile left.
fn matches(now: Option<&DiskState>, expected: &Expected) -> bool {
    match now {
        Some(DiskState::File(now)) => {
            (&now.owner, &now.group, now.mode) == (&expected.owner, &expected.group, expected.mode)
                && sha256_hex(&now.content) == expected.sha256
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fingerprint: &str) -> Settled {
        let expected = Expected {
            sha256: "ab".repeat(32),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o644,
            stamp: None,
        };
        Settled {
            fingerprint: fingerprint.into(),
            services: true,
            waiting: false,
            secrets: false,
            files: [(PathBuf::from("/etc/caf\u{e9}/\u{1f600}.conf"), expected)].into(),
            accounts: None,
        }
    }

    /// The fingerprint is read from the first bytes of a record as written now (compact)
    /// and as earlier builds wrote it (pretty), wherever those bytes end.
    #[test]
    fn the_fingerprint_is_read_from_a_records_first_bytes() {
        let fingerprint = "0123456789abcdef".repeat(4);
        let settled = record(&fingerprint);
        let compact = serde_json::to_vec(&settled).expect("serializes");
        let pretty = serde_json::to_vec_pretty(&settled).expect("serializes");
        for text in [&compact, &pretty] {
            let at = text
                .windows(2)
                .position(|w| w == b"\xf0\x9f")
                .expect("the emoji");
            for end in [PEEK.min(text.len()), at + 1, at + 2, text.len()] {
                assert_eq!(leading(&text[..end]), Some(fingerprint.as_str()), "{end}");
            }
            let start = text.iter().position(|&b| b == b'0').expect("digits");
            assert_eq!(
                leading(&text[..start + 10]),
                None,
                "cut inside the fingerprint"
            );
        }
    }

    /// Any other start is no answer, and the caller reads the record whole.
    #[test]
    fn a_record_starting_otherwise_gives_no_fingerprint() {
        let odd = [
            "",
            "{}",
            "{\"services\":true,\"fingerprint\":\"ab\"}",
            "{\"fingerprint\":\"\"}",
            "{\"fingerprint\":\"a\\u0062\"}",
            "{\"fingerprint\":12}",
            "[\"fingerprint\",\"ab\"]",
            "{\"fingerprints\":\"ab\"}",
        ];
        for text in odd {
            assert_eq!(leading(text.as_bytes()), None, "{text}");
        }
        assert_eq!(leading(b" {\n \"fingerprint\" : \"ab\" }"), Some("ab"));
    }
}

//! Stage 5, plan (SPEC §7.4): desired files vs what is on disk (content, owner, group,
//! mode) and vs the managed-file records → the changes to make, grouped by service.
//! Refuses, before anything is written, symlinks at destinations, paths outside
//! `allowed_roots` and cron files that cron would reject. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cron;
use crate::render::RenderedFile;

/// A file's state on disk as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskState {
    /// Nothing there.
    Absent,
    /// A regular file.
    File(FileState),
    /// A symlink (never followed).
    Symlink,
    /// A directory, socket, device…
    Other,
}

/// A regular file's content and metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// Bytes (a desired file's are shared with it: a first apply of 500 vhosts holds them
    /// once, not twice).
    pub content: Arc<[u8]>,
    /// Owner name (or number when it has no name).
    pub owner: String,
    /// Group name (or number).
    pub group: String,
    /// Permission bits.
    pub mode: u32,
}

/// What a regular file's inode looked like (issue 13): device, inode, size, times (seconds and
/// nanoseconds), mode and ids. Writing, truncating, renaming over, `chmod`, `chown` and
/// `touch` each change its ctime (which no caller can set), so an equal stamp is the same,
/// untouched file, provided the stamp was taken after the file's last change had its
/// ctime tick (see [`Stamp::is_settled`]): the racy-git rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Stamp {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: i64,
    /// Modification time.
    pub mtime: (i64, i64),
    /// Status change time.
    pub ctime: (i64, i64),
    /// Type and permission bits.
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One short line in the state files (a web host keeps a thousand of them twice):
/// `dev:ino:size:mtime:ctime:mode:uid:gid`, times as `seconds.nanoseconds`, mode in octal.
impl From<Stamp> for String {
    fn from(s: Stamp) -> String {
        let time = |(sec, nsec): (i64, i64)| format!("{sec}.{nsec:09}");
        format!(
            "{}:{}:{}:{}:{}:{:o}:{}:{}",
            s.dev,
            s.ino,
            s.size,
            time(s.mtime),
            time(s.ctime),
            s.mode,
            s.uid,
            s.gid
        )
    }
}

impl TryFrom<String> for Stamp {
    type Error = String;

    fn try_from(text: String) -> Result<Stamp, String> {
        let bad = || format!("not a file stamp: {text:.80}");
        let f: Vec<&str> = text.split(':').collect();
        let [dev, ino, size, mtime, ctime, mode, uid, gid] = f[..] else {
            return Err(bad());
        };
        let time = |t: &str| -> Option<(i64, i64)> {
            let (sec, nsec) = t.split_once('.')?;
            Some((sec.parse().ok()?, nsec.parse().ok()?))
        };
        let stamp = || -> Option<Stamp> {
            Some(Stamp {
                dev: dev.parse().ok()?,
                ino: ino.parse().ok()?,
                size: size.parse().ok()?,
                mtime: time(mtime)?,
                ctime: time(ctime)?,
                mode: u32::from_str_radix(mode, 8).ok()?,
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
            })
        };
        stamp().ok_or_else(bad)
    }
}

impl Stamp {
    /// Whether a change made after `now` (the coarse realtime clock that file times are
    /// taken from, read before this stamp was) is sure to give another stamp: the file's
    /// ctime is before `now`, so a later change cannot share its ctime.
    pub fn is_settled(&self, now: (i64, i64)) -> bool {
        self.ctime < now
    }
}

/// What rolecall remembers about a file it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Role that declared it.
    pub role: String,
    /// Service it belongs to.
    pub service: Option<String>,
    /// sha256 of the content written.
    pub sha256: String,
}

impl From<&RenderedFile> for FileState {
    /// The state `file` leaves on disk once written.
    fn from(file: &RenderedFile) -> FileState {
        FileState {
            content: Arc::clone(&file.content),
            owner: file.owner.clone(),
            group: file.group.clone(),
            mode: file.mode,
        }
    }
}

impl From<&RenderedFile> for Record {
    /// The record kept once `file` is written.
    fn from(file: &RenderedFile) -> Record {
        Record::of(file, crate::text::sha256_hex(&file.content))
    }
}

impl Record {
    /// The record of `file` whose content hashes to `sha256` (known without its bytes for a
    /// file the render memo vouches for).
    pub fn of(file: &RenderedFile, sha256: String) -> Record {
        Record {
            role: file.role.clone(),
            service: file.service.clone(),
            sha256,
        }
    }
}

/// Managed-file records by logical path.
pub type Records = BTreeMap<PathBuf, Record>;

/// Records as `managed.json` holds them, read by [`by_path`].
#[derive(Deserialize)]
#[serde(transparent)]
pub struct RecordsFile(#[serde(deserialize_with = "by_path")] pub Records);

/// Deserialize a map by path from its entries in order, then build it at once. serde builds
/// a map entry by entry, comparing each path with a dozen others, component by component;
/// a map rolecall wrote comes sorted, and built at once costs one comparison an entry
/// (issue 13: `managed.json` and `settled.json` of a host with 1,000 files, read on every
/// quiet poll and twice by a reconcile, took ~0.9 ms each instead of ~0.2). Any order
/// reads alike; of a path given twice the last entry is kept, as entry by entry.
///
/// # Errors
/// The deserializer's.
pub fn by_path<'de, D, V>(deserializer: D) -> Result<BTreeMap<PathBuf, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Entries<V>(std::marker::PhantomData<V>);

    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Entries<V> {
        type Value = BTreeMap<PathBuf, V>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map by path")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
            while let Some(entry) = map.next_entry()? {
                entries.push(entry);
            }
            Ok(entries.into_iter().collect())
        }
    }

    deserializer.deserialize_map(Entries(std::marker::PhantomData))
}

/// Errors of the plan stage: the desired state cannot be applied safely.
#[derive(Debug, thiserror::Error)]
#[error("refusing to apply: {}", problems.join("; "))]
pub struct Refused {
    /// Every problem found.
    pub problems: Vec<String>,
}

/// What happens to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// New file.
    Create,
    /// Content (and maybe metadata) changes.
    Update,
    /// Only owner, group or mode change.
    Metadata,
    /// A managed file no longer desired.
    Remove,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Logical path.
    pub path: PathBuf,
    /// What happens.
    pub action: Action,
    /// Service to check and reload afterwards.
    pub service: Option<String>,
    /// Role responsible.
    pub role: String,
    /// The file as it is now (for diffs and restore).
    #[serde(skip)]
    pub before: DiskState,
    /// The file as it will be (`None` for removals).
    #[serde(skip)]
    pub after: Option<FileState>,
    /// Never show content.
    pub is_secret: bool,
}

/// Every change of one reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Changes, sorted by path.
    pub changes: Vec<Change>,
    /// Records whose files are gone already: dropped without touching disk.
    pub forget: Vec<PathBuf>,
}

impl Plan {
    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.forget.is_empty()
    }

    /// Services with at least one change, sorted; `None` groups files without a service.
    pub fn by_service(&self) -> BTreeMap<Option<String>, Vec<&Change>> {
        let mut out: BTreeMap<Option<String>, Vec<&Change>> = BTreeMap::new();
        for c in &self.changes {
            out.entry(c.service.clone()).or_default().push(c);
        }
        out
    }

    /// Names of services with changes.
    pub fn services(&self) -> BTreeSet<String> {
        self.changes
            .iter()
            .filter_map(|c| c.service.clone())
            .collect()
    }
}

/// Whether `logical` is a clean absolute path under one of `allowed`.
pub fn is_allowed(logical: &Path, allowed: &[PathBuf]) -> bool {
    let clean = logical.is_absolute()
        && logical
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    clean && allowed.iter().any(|root| logical.starts_with(root))
}

/// The paths a plan needs a disk snapshot of: desired and recorded ones.
pub fn paths_to_inspect(desired: &[RenderedFile], records: &Records) -> BTreeSet<PathBuf> {
    desired
        .iter()
        .map(|f| f.path.clone())
        .chain(records.keys().cloned())
        .collect()
}

/// Compare desired files with `disk` and `records`.
///
/// # Errors
/// `Refused` listing every symlink, disallowed path and cron problem.
pub fn plan(
    desired: &[RenderedFile],
    disk: &BTreeMap<PathBuf, DiskState>,
    records: &Records,
    allowed: &[PathBuf],
) -> Result<Plan, Refused> {
    let problems = refusals(desired, disk, records, allowed);
    if !problems.is_empty() {
        return Err(Refused { problems });
    }
    let mut plan = Plan::default();
    let wanted: BTreeSet<&PathBuf> = desired.iter().map(|f| &f.path).collect();
    for file in desired {
        if let Some(change) = change_for(file, disk.get(&file.path)) {
            plan.changes.push(change);
        }
    }
    for (path, record) in records.iter().filter(|(p, _)| !wanted.contains(p)) {
        match disk.get(path).cloned().unwrap_or(DiskState::Absent) {
            DiskState::Absent => plan.forget.push(path.clone()),
            before => plan.changes.push(Change {
                path: path.clone(),
                action: Action::Remove,
                service: record.service.clone(),
                role: record.role.clone(),
                before,
                after: None,
                is_secret: false,
            }),
        }
    }
    plan.changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(plan)
}

/// The change `file` needs over `before` (its state on disk), if any; nothing is copied for
/// a file that matches (most of a large host's files on most reconciles).
fn change_for(file: &RenderedFile, before: Option<&DiskState>) -> Option<Change> {
    let same_meta = |now: &FileState| {
        now.owner == file.owner && now.group == file.group && now.mode == file.mode
    };
    let action = match before {
        Some(DiskState::File(now)) if now.content == file.content && same_meta(now) => return None,
        Some(DiskState::File(now)) if now.content == file.content => Action::Metadata,
        Some(DiskState::File(_)) => Action::Update,
        _ => Action::Create,
    };
    let after = FileState::from(file);
    Some(Change {
        path: file.path.clone(),
        action,
        service: file.service.clone(),
        role: file.role.clone(),
        before: before.cloned().unwrap_or(DiskState::Absent),
        after: Some(after),
        is_secret: file.is_secret,
    })
}

fn refusals(
    desired: &[RenderedFile],
    disk: &BTreeMap<PathBuf, DiskState>,
    records: &Records,
    allowed: &[PathBuf],
) -> Vec<String> {
    let mut problems = Vec::new();
    let roots: Vec<String> = allowed.iter().map(|p| p.display().to_string()).collect();
    let paths = desired.iter().map(|f| &f.path).chain(records.keys());
    for path in paths.collect::<BTreeSet<_>>() {
        if !is_allowed(path, allowed) {
            problems.push(format!(
                "{} is outside the allowed roots ({})",
                path.display(),
                roots.join(", ")
            ));
        }
        match disk.get(path) {
            Some(DiskState::Symlink) => problems.push(format!(
                "{} is a symlink; rolecall never writes through one",
                path.display()
            )),
            Some(DiskState::Other) => problems.push(format!(
                "{} exists and is not a regular file",
                path.display()
            )),
            _ => {}
        }
    }
    for file in desired.iter().filter(|f| cron::is_cron_file(&f.path)) {
        for p in cron::check(&file.path, &file.content, &file.owner, file.mode) {
            let p = if file.is_secret { withheld(&p) } else { p };
            problems.push(format!("{}: {p}", file.path.display()));
        }
    }
    problems
}

/// A cron problem of a file that holds secret values, without the excerpt of the line it
/// quotes (a secret may stand in any field): only where it is.
fn withheld(problem: &str) -> String {
    let place = problem
        .split_once(':')
        .map_or("the file", |(place, _)| place)
        .to_string();
    format!("{place}: cron would reject it (details withheld: the file holds secret values)")
}

/// A unified diff of one change (content hidden for secret files).
pub fn diff(change: &Change) -> String {
    let old = match &change.before {
        DiskState::File(f) => Some(f),
        _ => None,
    };
    let new = change.after.as_ref();
    let mut out = metadata_line(change, old, new);
    let text = |f: Option<&FileState>| {
        f.map(|f| String::from_utf8_lossy(&f.content).into_owned())
            .unwrap_or_default()
    };
    let (old_text, new_text) = (text(old), text(new));
    if old_text == new_text {
        return out;
    }
    let path = change.path.display();
    if change.is_secret {
        let (a, b) = (old_text.len(), new_text.len());
        out.push_str(&format!(
            "# {path}: secret content changed ({a} -> {b} bytes)\n"
        ));
        return out;
    }
    let label = |present: bool, side: &str| match present {
        true => format!("{side}{path}"),
        false => "/dev/null".into(),
    };
    let (a, b) = (label(old.is_some(), "a"), label(new.is_some(), "b"));
    let diff = similar::TextDiff::from_lines(&old_text, &new_text);
    let unified = diff
        .unified_diff()
        .context_radius(3)
        .header(&a, &b)
        .to_string();
    out.push_str(&unified);
    out
}

/// `# path: owner:group mode -> owner:group mode` when only metadata differs.
fn metadata_line(change: &Change, old: Option<&FileState>, new: Option<&FileState>) -> String {
    let (Some(o), Some(n)) = (old, new) else {
        return String::new();
    };
    if (&o.owner, &o.group, o.mode) == (&n.owner, &n.group, n.mode) {
        return String::new();
    }
    let path = change.path.display();
    format!(
        "# {path}: {}:{} {:04o} -> {}:{} {:04o}\n",
        o.owner, o.group, o.mode, n.owner, n.group, n.mode
    )
}

#[cfg(test)]
mod tests;

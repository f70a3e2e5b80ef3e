//! Stage 4's memory of its own work (issue 13). A render is a pure function of the template
//! files, the catalog, the context every template of the host sees and, for one product's
//! files and smoke tests, that product's value. A unit (one role, one product) whose inputs
//! hash the same as last time renders the same files and smoke tests, so a publish that
//! moves one product's master renders that product again and takes the other 499 from the
//! memo: their smoke tests, their files' metadata and each file's SHA-256, never the bytes
//! (they may hold secrets). The caller checks that each file on disk still hashes the same
//! (vouching for it without its bytes, or filling them in where only its owner, group or
//! mode differ), or renders everything again when one does not.
//!
//! A file the caller read and found as remembered gets its stamp (`plan::Stamp`, taken
//! before the read): while the disk shows the same stamp, the caller vouches for the file
//! without reading it ([`Desired::vouch`]).
//!
//! A key is SHA-256 over every input, so an entry is right whenever its key matches, however
//! old: a torn, stale or foreign memo costs a render, never a wrong file. The caller stamps
//! the memo with the rolecall build (another build may render the same inputs differently).
//! Not remembered: the host's own (not per-product) files, a unit whose render blocked a
//! service (SPEC §10: that depends on which secret stores answered), and anything when a
//! template or catalog string calls `get_env` (it reads the process environment).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tera::Context;

use super::{Desired, RenderedFile, SmokeTest};
use crate::catalog::Catalog;
use crate::plan::Stamp;
use crate::text::{hex, sha256_hex};

/// Part of every key: a render that turns the same inputs into other output bumps it.
const FORMAT: &[u8] = b"rolecall render memo 1";

/// What the last render of the host rendered, unit by unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memo {
    /// The rolecall build that rendered the units (set by the caller); an entry of another
    /// build is never used.
    pub build: String,
    /// By the key of the unit's inputs. Shared with the memo the next render gets: a unit
    /// recalled is not copied (a 500-vhost host's memo is a megabyte in memory), a unit
    /// restamped is copied then.
    units: BTreeMap<String, Arc<Unit>>,
}

/// The per-product files and smoke tests of one role for one product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Unit {
    files: Vec<Remembered>,
    /// Each with the index of its smoke spec among the role's (smoke tests keep catalog order).
    smoke: Vec<(usize, SmokeTest)>,
}

impl Unit {
    /// The stamp `stamps` has for `r`'s file, when it is another than `r` has.
    fn new_stamp(r: &Remembered, stamps: &BTreeMap<PathBuf, Stamp>) -> Option<Stamp> {
        let stamp = stamps.get(&r.file.path).copied();
        stamp.filter(|_| r.stamp != stamp)
    }

    /// Whether `stamps` changes the stamp of one of its files.
    fn restamps(&self, stamps: &BTreeMap<PathBuf, Stamp>) -> bool {
        self.files
            .iter()
            .any(|r| Unit::new_stamp(r, stamps).is_some())
    }

    fn restamp(&mut self, stamps: &BTreeMap<PathBuf, Stamp>) {
        for r in &mut self.files {
            if let Some(stamp) = Unit::new_stamp(r, stamps) {
                r.stamp = Some(stamp);
            }
        }
    }
}

/// A memo serialised as if restamped ([`Memo::with_stamps`]): the fields of [`Memo`], each
/// unit restamped on a copy of its own while it is written.
#[derive(Serialize)]
struct Restamped<'m> {
    build: &'m str,
    units: RestampedUnits<'m>,
}

struct RestampedUnits<'m> {
    units: &'m BTreeMap<String, Arc<Unit>>,
    stamps: &'m BTreeMap<PathBuf, Stamp>,
}

impl Serialize for RestampedUnits<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut units = serializer.serialize_map(Some(self.units.len()))?;
        for (key, unit) in self.units {
            if unit.restamps(self.stamps) {
                let mut copy = Unit::clone(unit);
                copy.restamp(self.stamps);
                units.serialize_entry(key, &copy)?;
            } else {
                units.serialize_entry(key, unit)?;
            }
        }
        units.end()
    }
}

/// A rendered file without its bytes: their SHA-256 instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// Everything but `content` (empty).
    pub file: RenderedFile,
    /// Of the rendered bytes, lowercase hex.
    pub sha256: String,
    /// The file's inode when it was last read and found as remembered, content, owner,
    /// group and mode; `None` until then. An equal stamp vouches for the file unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

impl Remembered {
    /// `file` without its bytes: their SHA-256 instead, not stamped yet.
    fn of(file: RenderedFile) -> Remembered {
        Remembered {
            sha256: sha256_hex(&file.content),
            stamp: None,
            file: RenderedFile {
                content: Default::default(),
                ..file
            },
        }
    }
}

impl Memo {
    /// An empty memo of `build`.
    pub fn new(build: &str) -> Memo {
        Memo {
            build: build.to_string(),
            units: BTreeMap::new(),
        }
    }

    /// Set the stamp of every remembered file of `stamps`; false when none changed.
    pub fn restamp(&mut self, stamps: &BTreeMap<PathBuf, Stamp>) -> bool {
        let mut changed = false;
        for unit in self.units.values_mut() {
            if unit.restamps(stamps) {
                Arc::make_mut(unit).restamp(stamps);
                changed = true;
            }
        }
        changed
    }

    /// The memo as [`Memo::restamp`] would leave it with `stamps`, to serialise, without a
    /// copy of it: a unit is copied only while it is written (copied whole, the memo a
    /// 500-vhost host restamps after its first apply raised that sync's peak by 0.7 MB).
    /// A field added to [`Memo`] must be written here too (a unit test compares the two).
    pub fn with_stamps<'m>(&'m self, stamps: &'m BTreeMap<PathBuf, Stamp>) -> impl Serialize + 'm {
        let units = RestampedUnits {
            units: &self.units,
            stamps,
        };
        Restamped {
            build: &self.build,
            units,
        }
    }

    /// The path of every remembered file.
    pub fn paths(&self) -> impl Iterator<Item = &std::path::Path> {
        let files = self.units.values().flat_map(|u| u.files.iter());
        files.map(|r| r.file.path.as_path())
    }

    /// The stamp of every remembered file that has one.
    pub fn stamps(&self) -> impl Iterator<Item = (&std::path::Path, Stamp)> {
        let files = self.units.values().flat_map(|u| u.files.iter());
        files.filter_map(|r| Some((r.file.path.as_path(), r.stamp?)))
    }

    /// How many units it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.units.len()
    }
}

/// One render's use of a memo: the units it found, the ones it rendered, and the memo the
/// next render gets.
pub(super) struct Recall<'a> {
    old: &'a Memo,
    /// Hashes the inputs every unit of this render shares.
    base: Sha256,
    next: Memo,
    hits: usize,
    misses: usize,
}

impl<'a> Recall<'a> {
    /// For a render from `templates` (their fingerprint) with the host context `ctx`; the
    /// host's database position picks which of the role's specs apply.
    pub(super) fn new(old: &'a Memo, templates: &str, ctx: &Context, position: &str) -> Self {
        let mut base = Sha256::new();
        for part in [FORMAT, templates.as_bytes(), position.as_bytes()] {
            field(&mut base, part);
        }
        let json = serde_json::to_vec(&ctx.clone().into_json()).unwrap_or_default();
        field(&mut base, &json);
        Recall {
            old,
            base,
            next: Memo::new(&old.build),
            hits: 0,
            misses: 0,
        }
    }

    /// The key of `role`'s unit for the product `name`: `value` writes what templates see of
    /// the product (nothing when no template reads it); `unreadable` are its secrets that
    /// could not be read.
    pub(super) fn key(
        &self,
        role: &str,
        name: &str,
        value: impl FnOnce(&mut Vec<u8>),
        unreadable: &[String],
    ) -> String {
        let mut hash = self.base.clone();
        field(&mut hash, role.as_bytes());
        field(&mut hash, name.as_bytes());
        // Collected, then hashed in one update: serde_json writes in pieces of a few bytes.
        let mut bytes = Vec::new();
        value(&mut bytes);
        hash.update(&bytes);
        field(&mut hash, b"unreadable");
        for reason in unreadable {
            field(&mut hash, reason.as_bytes());
        }
        hex(&hash.finalize())
    }

    /// The unit `key`'s files (into `desired.remembered`) and smoke tests (each into its
    /// spec's place in `tests`); false when the memo does not have it.
    pub(super) fn recall(
        &mut self,
        key: &str,
        desired: &mut Desired,
        tests: &mut [Vec<SmokeTest>],
    ) -> bool {
        let Some(unit) = self.old.units.get(key) else {
            self.misses += 1;
            return false;
        };
        if unit.smoke.iter().any(|(i, _)| *i >= tests.len()) {
            self.misses += 1;
            return false;
        }
        self.hits += 1;
        desired.remembered.extend(unit.files.iter().cloned());
        for (i, test) in &unit.smoke {
            tests[*i].push(test.clone());
        }
        self.next.units.insert(key.to_string(), Arc::clone(unit));
        true
    }

    /// Remember the unit `key` just rendered: `files`, and the smoke tests of `tests` past
    /// the lengths `before` they had.
    pub(super) fn store(
        &mut self,
        key: String,
        files: &[RenderedFile],
        tests: &[Vec<SmokeTest>],
        before: &[usize],
    ) {
        let files = files.iter().map(|f| Remembered::of(f.clone()));
        let smoke = tests
            .iter()
            .zip(before)
            .enumerate()
            .flat_map(|(i, (t, b))| t[*b..].iter().map(move |test| (i, test.clone())));
        let unit = Unit {
            files: files.collect(),
            smoke: smoke.collect(),
        };
        self.next.units.insert(key, Arc::new(unit));
    }

    /// The memo for the next render, when it differs from the one this render had.
    pub(super) fn finish(self) -> Option<Memo> {
        let same = self.misses == 0 && self.hits == self.old.units.len();
        (!same).then_some(self.next)
    }
}

impl Desired {
    /// Move the remembered files `is_unchanged` vouches for (the disk holds them as
    /// remembered: same stamp, owner and group, or read and found so) into `vouched`, without
    /// their bytes. The vouched files are sorted by path here, so that every map and set of
    /// paths built from [`Desired::all_files`] and [`Desired::expected`] gets them in order.
    pub fn vouch(&mut self, mut is_unchanged: impl FnMut(&Remembered) -> bool) {
        let (vouched, unread): (Vec<_>, _) = std::mem::take(&mut self.remembered)
            .into_iter()
            .partition(|r| is_unchanged(r));
        self.add_vouched(vouched);
        self.remembered = unread;
    }

    /// Let the rendered files' bytes go once they are installed and checked: each becomes
    /// [`Remembered`] (its SHA-256, which is all the commit records of it) among the vouched
    /// files, in path order. A 500-vhost first apply holds 1.1 MB less through its commit
    /// (issue 13). Nothing after this may need the bytes: the plan and apply are done.
    pub fn forget_bytes(&mut self) {
        let rendered = std::mem::take(&mut self.files);
        self.add_vouched(rendered.into_iter().map(Remembered::of));
    }

    /// `more` among the vouched files, kept in path order.
    fn add_vouched(&mut self, more: impl IntoIterator<Item = Remembered>) {
        self.vouched.extend(more);
        self.vouched.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    }

    /// Every desired file, the rendered ones and the vouched ones (without bytes), by path.
    pub fn all_files(&self) -> impl Iterator<Item = &RenderedFile> {
        self.by_path().map(|(file, _)| file)
    }

    /// Every desired path with its role, service, owner, group, mode and SHA-256 as the
    /// state files keep them: the rendered files' and the vouched ones', by path.
    pub fn expected(&self) -> impl Iterator<Item = (&RenderedFile, String)> {
        self.by_path().map(|(file, vouched)| match vouched {
            Some(r) => (file, r.sha256.clone()),
            None => (file, sha256_hex(&file.content)),
        })
    }

    /// The rendered and the vouched files merged by path (both lists are sorted), each
    /// with its memo entry when vouched.
    fn by_path(&self) -> impl Iterator<Item = (&RenderedFile, Option<&Remembered>)> {
        let mut rendered = self.files.iter().peekable();
        let mut vouched = self.vouched.iter().peekable();
        std::iter::from_fn(move || match (rendered.peek(), vouched.peek()) {
            (Some(f), Some(r)) if f.path <= r.file.path => rendered.next().map(|f| (f, None)),
            (_, Some(_)) => vouched.next().map(|r| (&r.file, Some(r))),
            (Some(_), None) => rendered.next().map(|f| (f, None)),
            (None, None) => None,
        })
    }

    /// Complete the remembered files with their bytes from `content` (the file as it is on
    /// disk, `None` when it is not a readable regular file), sorted in among the others.
    /// False, changing nothing, when one is missing or no longer hashes as remembered: the
    /// caller then renders everything.
    pub fn fill_remembered(
        &mut self,
        mut content: impl FnMut(&RenderedFile) -> Option<Arc<[u8]>>,
    ) -> bool {
        let mut filled = Vec::with_capacity(self.remembered.len());
        for r in &self.remembered {
            match content(&r.file) {
                Some(bytes) if sha256_hex(&bytes) == r.sha256 => {
                    filled.push(RenderedFile {
                        content: bytes,
                        ..r.file.clone()
                    });
                }
                _ => return false,
            }
        }
        self.remembered.clear();
        self.files.append(&mut filled);
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        true
    }
}

/// The hash of the template files (name, text) and the catalog, whose `strings` are
/// templates too; `None` when one of them calls `get_env` (it reads the process
/// environment, which the memo cannot see).
pub(super) fn fingerprint<'s>(
    files: &[(String, String)],
    mut strings: impl Iterator<Item = &'s str>,
    catalog: &Catalog,
) -> Option<String> {
    let reads_env = |text: &str| text.contains("get_env");
    if files.iter().any(|(_, text)| reads_env(text)) || strings.any(reads_env) {
        return None;
    }
    let mut hash = Sha256::new();
    for (name, text) in files {
        field(&mut hash, name.as_bytes());
        field(&mut hash, text.as_bytes());
    }
    field(&mut hash, &serde_json::to_vec(catalog).ok()?);
    Some(hex(&hash.finalize()))
}

/// Hash `bytes` as one length-prefixed field, so no two field lists hash alike.
fn field(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

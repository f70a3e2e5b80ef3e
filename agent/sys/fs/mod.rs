//! The only code that writes files (SPEC §7.5, STYLE §2.4 and §3.6): the `--root` prefix, the
//! `allowed_roots` check, no symlink followed from an allowed root down (each directory is
//! opened with `O_NOFOLLOW` relative to its parent's fd, each file relative to its
//! directory's fd), atomic writes (temp file, fsync, owner/mode, rename, one directory
//! fsync per directory per transaction), the sweep of temp files a crash left, and the
//! state directory's files (never through a symlink). I/O.

use foldhash::HashMap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod account_files;
mod file;
mod owners;
mod state;
mod temp;
mod txn;

#[cfg(test)]
mod tests;

pub use crate::plan::{DiskState, FileState, Stamp};
pub use account_files::{AccountSnapshot, Names};
pub use file::{coarse_now, Stat};
pub use state::{
    create_dirs, create_new, prepare_socket, promote_state, read_json, read_state, remove_state,
    set_mode, stage_shortcut_json, stage_state, write_json, write_shortcut, write_state,
    write_state_removing, Staged,
};
pub use temp::sweep_dir;
pub use txn::Transaction;

/// Errors touching the filesystem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path is outside every allowed root (or not a clean absolute path).
    #[error("{path} is outside the allowed roots ({allowed})")]
    NotAllowed {
        /// Logical path (without `--root`).
        path: PathBuf,
        /// The allowed roots, comma separated.
        allowed: String,
    },
    /// A symlink where rolecall never follows one: a destination, a directory from an
    /// allowed root down, or a state file.
    #[error("{path} is a symlink; refusing to write through it")]
    Symlink {
        /// Physical path of the symlink itself (the component, not the whole path).
        path: PathBuf,
    },
    /// The destination exists but is not a regular file.
    #[error("{path} exists and is not a regular file")]
    NotAFile {
        /// Physical path.
        path: PathBuf,
    },
    /// Something other than a directory where a directory must be.
    #[error("{path} exists and is not a directory")]
    NotADirectory {
        /// Physical path of that component.
        path: PathBuf,
    },
    /// Owner or group name unknown on this system.
    #[error("{kind} {name:?} does not exist on this host (file {path})")]
    UnknownOwner {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
        /// The file it was meant for.
        path: PathBuf,
    },
    /// An I/O operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done (`writing`, `renaming`, …).
        action: &'static str,
        /// Physical path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON state file could not be encoded or decoded.
    #[error("state file {path}")]
    Json {
        /// Physical path.
        path: PathBuf,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// `map_err` adapter: an `std::io::Error` while doing `action` to `path`.
pub(crate) fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// `map_err` adapter for nix's `Errno`.
fn errno<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(nix::errno::Errno) -> Error + 'a {
    move |e| io(action, path)(e.into())
}

/// A whole regular file, not read through a symlink at its name (the account files).
fn read_nofollow(path: &Path) -> Result<Vec<u8>, Error> {
    read_state(path)?.ok_or_else(|| io("reading", path)(std::io::ErrorKind::NotFound.into()))
}

/// fsync a directory so a rename in it survives a crash (the account files).
fn sync_dir(dir: &Path) -> Result<(), Error> {
    let flags =
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty())
        .map_err(errno("syncing directory", dir))?;
    nix::unistd::fsync(fd).map_err(errno("syncing directory", dir))
}

/// Below twice this many paths, [`Fs::snapshot_all`] and [`Fs::stat_all`] work on one thread.
const MIN_SHARE: usize = 128;

/// Filesystem access under a root prefix, limited to allowed roots.
#[derive(Debug, Clone)]
pub struct Fs {
    root: PathBuf,
    allowed: Vec<PathBuf>,
}

impl Fs {
    /// `root` prefixes every logical path; only paths under `allowed` may be touched.
    pub fn new(root: &Path, allowed: &[PathBuf]) -> Fs {
        Fs {
            root: root.to_path_buf(),
            allowed: allowed.to_vec(),
        }
    }

    /// The physical path of a logical one.
    pub fn physical(&self, logical: &Path) -> PathBuf {
        let relative = logical.strip_prefix("/").unwrap_or(logical);
        self.root.join(relative)
    }

    /// Refuse paths that are relative, contain `.`/`..`, or sit outside every allowed root.
    ///
    /// # Errors
    /// `NotAllowed`.
    pub fn check_allowed(&self, logical: &Path) -> Result<(), Error> {
        if crate::plan::is_allowed(logical, &self.allowed) {
            return Ok(());
        }
        let allowed: Vec<String> = self
            .allowed
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Err(Error::NotAllowed {
            path: logical.to_path_buf(),
            allowed: allowed.join(", "),
        })
    }

    /// Whether a symlink at logical directory `dir` is refused: it is an allowed root or
    /// lies below one. Above the allowed roots (and in `--root` itself) the operator may
    /// use symlinks and mounts.
    fn is_protected(&self, dir: &Path) -> bool {
        self.allowed.iter().any(|root| dir.starts_with(root))
    }

    /// A transaction: directories opened once, files written relative to them, one
    /// directory fsync per directory at [`Transaction::sync`].
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction::new(self)
    }

    /// What is at `logical` now, without following a symlink from an allowed root down.
    ///
    /// # Errors
    /// `Symlink` or `NotADirectory` for a parent directory from the allowed root down; I/O
    /// errors other than "not found".
    pub fn snapshot(&self, logical: &Path) -> Result<DiskState, Error> {
        self.transaction().snapshot(logical)
    }

    /// [`Fs::snapshot`] of every path, sharing directory fds and owner-name lookups (what
    /// a plan needs: one call per reconcile instead of one per file).
    ///
    /// # Errors
    /// As [`Fs::snapshot`], for the first path that fails.
    pub fn snapshot_all<'p>(
        &self,
        paths: impl IntoIterator<Item = &'p Path>,
    ) -> Result<BTreeMap<PathBuf, DiskState>, Error> {
        self.snapshot_all_as(paths, |_, state| state)
    }

    /// [`Fs::snapshot_all`], keeping of each path only what `keep` makes of its state as it
    /// is read: checking a thousand files against their hashes holds one file's content at
    /// a time, not a thousand (1.5 MB on a 500-vhost host, issue 13).
    ///
    /// # Errors
    /// As [`Fs::snapshot`], for the first path that fails.
    pub fn snapshot_all_as<'p, R: Send>(
        &self,
        paths: impl IntoIterator<Item = &'p Path>,
        keep: impl Fn(&Path, DiskState) -> R + Sync,
    ) -> Result<BTreeMap<PathBuf, R>, Error> {
        let mut paths: Vec<&Path> = paths.into_iter().collect();
        by_directory(&mut paths);
        // A web host's 1,000 files are 1,000 opens and reads. The first half's error first,
        // so the first path that fails is still the one reported.
        let each =
            |half: &[&Path]| self.in_turn(half, parent, |txn, p| Ok(keep(p, txn.snapshot(p)?)));
        let (first, second) = crate::threads::split(&paths, balanced_cut(&paths), MIN_SHARE, each);
        let kept = first?.into_iter().chain(second?);
        Ok(paths.iter().map(|p| p.to_path_buf()).zip(kept).collect())
    }

    /// `one` of each of `items` (sorted by [`by_directory`]; each in the directory `dir_of`
    /// names) in one transaction, closing each directory once no later item is in or under
    /// it. Growing the descriptor table of a process with threads waits for an RCU grace
    /// period at each doubling (milliseconds each): a web host's 500 product directories
    /// held open at once cost more than reading all their files.
    fn in_turn<T, R>(
        &self,
        items: &[T],
        dir_of: impl Fn(&T) -> &Path,
        mut one: impl FnMut(&mut Transaction<'_>, &T) -> Result<R, Error>,
    ) -> Result<Vec<R>, Error> {
        let mut txn = self.transaction();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(one(&mut txn, item)?);
            let dir = dir_of(item);
            if !items
                .get(i + 1)
                .is_some_and(|next| dir_of(next).starts_with(dir))
            {
                txn.release(dir);
            }
        }
        Ok(out)
    }

    /// The stat of each regular file of `paths` (`None` for anything else or nothing),
    /// without following a symlink from an allowed root down and without opening a file:
    /// what tells whether a file is still the one a stamp describes (issue 13). By path in
    /// a hash map: its callers only look paths up, and a thousand paths hashed cost less
    /// than a tree of them, whose every comparison walks two paths' components (1 ms on a
    /// web host's 998 files).
    ///
    /// # Errors
    /// As [`Fs::snapshot`], for the first path that fails.
    pub fn stat_all<'p>(
        &self,
        paths: impl IntoIterator<Item = &'p Path>,
    ) -> Result<HashMap<PathBuf, Option<Stat>>, Error> {
        let mut paths: Vec<&Path> = paths.into_iter().collect();
        by_directory(&mut paths);
        let stat_each = |half: &[&Path]| self.in_turn(half, parent, |txn, p| txn.stat(p));
        let cut = balanced_cut(&paths);
        let (first, second) = crate::threads::split(&paths, cut, MIN_SHARE, stat_each);
        let stats = first?.into_iter().chain(second?);
        Ok(paths.iter().map(|p| p.to_path_buf()).zip(stats).collect())
    }

    /// Put `logical` back the way `before` describes, durable on return.
    ///
    /// # Errors
    /// As [`Transaction::write`] and [`Transaction::remove`].
    pub fn restore(&self, logical: &Path, before: &DiskState) -> Result<(), Error> {
        let mut txn = self.transaction();
        txn.restore(logical, before)?;
        txn.sync()
    }

    /// Remove the temp files a killed rolecall left in the logical directories `dirs`
    /// (regular files named `.rolecall-tmp-<pid>-<random>`, whose writer is not alive), never
    /// following a symlink from an allowed root down and never creating a directory.
    /// Returns how many were removed.
    ///
    /// Transactions sweep each directory before their first write or removal in it, the
    /// undo of a killed reconcile included (issue 15 #4); the pipeline calls this under the
    /// lock for the directories of the recorded files when a journal cannot be read.
    ///
    /// # Errors
    /// `Symlink`/`NotADirectory` for a directory from an allowed root down; I/O.
    pub fn sweep<'p>(&self, dirs: impl IntoIterator<Item = &'p Path>) -> Result<usize, Error> {
        // One thread: a rare path now (a journal that cannot be read), no longer every
        // reconcile's sweep of a web host's 500 product directories.
        let mut dirs: Vec<&Path> = dirs.into_iter().collect();
        by_directory(&mut dirs);
        let removed = self.in_turn(&dirs, |dir| dir, |txn, dir| txn.sweep(dir))?;
        Ok(removed.into_iter().sum())
    }
}

/// Sort `paths` so that each directory and the paths in and under it stand together, as
/// [`Fs::in_turn`] needs: by their bytes, each as if it ended with `/` (so `/a/b` sorts
/// right before `/a/b/c`, not before `/a/b-c`), which keeps every directory's paths
/// contiguous as `Path`'s order does, at a memcmp a comparison instead of a walk over
/// components (0.05 ms instead of 0.4-0.7 for the 998 paths of a 500-vhost host, issue 13).
fn by_directory(paths: &mut [&Path]) {
    use std::os::unix::ffi::OsStrExt;
    paths.sort_unstable_by(|a, b| {
        let (a, b) = (a.as_os_str().as_bytes(), b.as_os_str().as_bytes());
        let n = a.len().min(b.len());
        let (rest_a, rest_b) = (a[n..].iter().chain(b"/"), b[n..].iter().chain(b"/"));
        a[..n].cmp(&b[..n]).then_with(|| rest_a.cmp(rest_b))
    });
}

/// Where to cut `paths` (sorted by [`by_directory`]) for two threads to take about as long:
/// a path in a directory the one before it is not in costs the directory's open and close
/// on top of its own call. Cut at the middle, a web host's 998 files left one thread the 500
/// vhosts of one directory (1.6 ms) and the other the 500 directories of one file each (4.6
/// ms, issue 13).
fn balanced_cut(paths: &[&Path]) -> usize {
    let mut last = None;
    let costs: Vec<usize> = paths
        .iter()
        .map(|path| {
            let dir = parent(path);
            let opened = last.replace(dir) != Some(dir);
            1 + usize::from(opened) * NEW_DIRECTORY
        })
        .collect();
    let total: usize = costs.iter().sum();
    let mut sum = 0;
    costs
        .iter()
        .position(|cost| {
            sum += cost;
            2 * sum >= total
        })
        .map_or(paths.len(), |i| i + 1)
}

/// What opening and closing a directory costs, in calls on a file (measured: a file in a
/// directory of its own takes three times as long as one more file in the same directory).
const NEW_DIRECTORY: usize = 2;

/// The directory of `path` (itself when it has none).
fn parent<'a>(path: &'a &Path) -> &'a Path {
    path.parent().unwrap_or(path)
}

//! A transaction of `sys::fs`: every directory opened once, from `--root` down, one
//! component at a time relative to its parent's fd; from an allowed root down with
//! `O_NOFOLLOW`, so no symlink is followed there (issue 15 #1). Directories it creates get
//! mode 0755 whatever the umask (issue 15 #8). Files are inspected, written and removed
//! relative to their directory's fd, and each directory written to is fsynced once, at
//! [`Transaction::sync`] (issue 13: not after every file).

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, fsync, Gid, Uid};

use super::file::{self, At};
use super::owners::Owners;
use super::{errno, io, temp, DiskState, Error, FileState, Fs};

/// Mode of the directories rolecall creates.
const DIR_MODE: u32 = 0o755;

/// See the module docs. Dropping it without [`Transaction::sync`] leaves the directory
/// entries it changed not yet durable (each file's content is).
#[derive(Debug)]
pub struct Transaction<'fs> {
    fs: &'fs Fs,
    /// Open directories by logical path (hashed: only looked up, and a web host's walk
    /// looks up hundreds of them).
    dirs: HashMap<PathBuf, Arc<OwnedFd>>,
    /// Directories whose entries changed since the last sync.
    dirty: BTreeSet<PathBuf>,
    /// Directories swept of stale temp files already.
    swept: HashSet<PathBuf>,
    /// Directories found missing (a plan of a first apply asks once, not once per file);
    /// forgotten when this transaction creates one.
    missing: HashSet<PathBuf>,
    owners: Owners,
}

impl<'fs> Transaction<'fs> {
    pub(super) fn new(fs: &'fs Fs) -> Transaction<'fs> {
        Transaction {
            fs,
            dirs: HashMap::new(),
            dirty: BTreeSet::new(),
            swept: HashSet::new(),
            missing: HashSet::new(),
            owners: Owners::default(),
        }
    }

    /// What is at `logical` now (see [`Fs::snapshot`]); creates nothing.
    ///
    /// # Errors
    /// `Symlink` or `NotADirectory` for a directory from an allowed root down; I/O.
    pub fn snapshot(&mut self, logical: &Path) -> Result<DiskState, Error> {
        let (parent, name) = split(logical)?;
        let Some(dir) = self.walk(parent, false)? else {
            return Ok(DiskState::Absent);
        };
        let (path, dir_path) = (self.fs.physical(logical), self.fs.physical(parent));
        let at = at(&dir, &dir_path, name, &path);
        file::inspect(at, self.fs, &mut self.owners)
    }

    /// The stat of the regular file at `logical` (see [`Fs::stat_all`]); opens no file.
    ///
    /// # Errors
    /// As [`Transaction::snapshot`].
    pub fn stat(&mut self, logical: &Path) -> Result<Option<file::Stat>, Error> {
        let (parent, name) = split(logical)?;
        let Some(dir) = self.walk(parent, false)? else {
            return Ok(None);
        };
        let (path, dir_path) = (self.fs.physical(logical), self.fs.physical(parent));
        let at = at(&dir, &dir_path, name, &path);
        file::stat(at, self.fs, &mut self.owners)
    }

    /// Atomically replace `logical` with `file` (see [`Fs::write`]); durable once synced.
    ///
    /// # Errors
    /// `NotAllowed`, `Symlink`, `NotAFile`, `NotADirectory`, `UnknownOwner`, or I/O.
    pub fn write(&mut self, logical: &Path, file: &FileState) -> Result<(), Error> {
        self.fs.check_allowed(logical)?;
        let ids: (Uid, Gid) = self
            .owners
            .ids(self.fs, &file.owner, &file.group, logical)?;
        let (parent, name) = split(logical)?;
        let dir = self.writable(parent)?;
        let (path, dir_path) = (self.fs.physical(logical), self.fs.physical(parent));
        file::replace(at(&dir, &dir_path, name, &path), file, ids)?;
        self.dirty.insert(parent.to_path_buf());
        Ok(())
    }

    /// Remove the regular file `logical`; absent (or a missing directory) is fine.
    ///
    /// # Errors
    /// `NotAllowed`, `Symlink`, `NotAFile`, `NotADirectory`, or I/O.
    pub fn remove(&mut self, logical: &Path) -> Result<(), Error> {
        self.fs.check_allowed(logical)?;
        let (parent, name) = split(logical)?;
        let Some(dir) = self.walk(parent, false)? else {
            return Ok(());
        };
        let (path, dir_path) = (self.fs.physical(logical), self.fs.physical(parent));
        self.sweep_once(parent, &dir, &dir_path)?;
        if file::remove(at(&dir, &dir_path, name, &path))? {
            self.dirty.insert(parent.to_path_buf());
        }
        Ok(())
    }

    /// Put `logical` back as `before` describes: that file, or nothing.
    ///
    /// # Errors
    /// As [`Transaction::write`] and [`Transaction::remove`].
    pub fn restore(&mut self, logical: &Path, before: &DiskState) -> Result<(), Error> {
        match before {
            DiskState::File(state) => self.write(logical, state),
            _ => self.remove(logical),
        }
    }

    /// Remove the stale temp files in the logical directory `dir` (see [`Fs::sweep`]).
    ///
    /// # Errors
    /// `Symlink`/`NotADirectory` from an allowed root down; I/O.
    pub fn sweep(&mut self, dir: &Path) -> Result<usize, Error> {
        let Some(fd) = self.walk(dir, false)? else {
            return Ok(0);
        };
        self.swept.insert(dir.to_path_buf());
        temp::sweep_at(fd.as_fd(), &self.fs.physical(dir))
    }

    /// Close `dir` unless a write is pending in it: a walk over many directories that only
    /// reads does not keep them all open (see `Fs::in_turn`).
    pub(super) fn release(&mut self, dir: &Path) {
        if !self.dirty.contains(dir) {
            self.dirs.remove(dir);
        }
    }

    /// fsync every directory whose entries changed (files renamed or removed in it,
    /// directories created in it), once each.
    ///
    /// # Errors
    /// I/O; the directories not synced yet stay due.
    pub fn sync(&mut self) -> Result<(), Error> {
        while let Some(dir) = self.dirty.first().cloned() {
            if let Some(fd) = self.dirs.get(&dir) {
                fsync(fd.as_fd()).map_err(errno("syncing directory", &self.fs.physical(&dir)))?;
            }
            self.dirty.remove(&dir);
        }
        Ok(())
    }

    /// `dir`, created if missing, swept of stale temp files before the first write in it.
    fn writable(&mut self, dir: &Path) -> Result<Arc<OwnedFd>, Error> {
        let path = self.fs.physical(dir);
        let missing = || io("opening directory", &path)(Errno::ENOENT.into());
        let fd = self.walk(dir, true)?.ok_or_else(missing)?;
        self.sweep_once(dir, &fd, &path)?;
        Ok(fd)
    }

    /// Sweep `dir` of stale temp files before this transaction's first change in it.
    fn sweep_once(&mut self, dir: &Path, fd: &OwnedFd, path: &Path) -> Result<(), Error> {
        if self.swept.insert(dir.to_path_buf()) {
            temp::sweep_at(fd.as_fd(), path)?;
        }
        Ok(())
    }

    /// The fd of logical directory `dir`, opening (and with `create`, creating) each
    /// component not opened yet; `None` when one is missing and `create` is off.
    fn walk(&mut self, dir: &Path, create: bool) -> Result<Option<Arc<OwnedFd>>, Error> {
        if let Some(fd) = self.dirs.get(dir) {
            return Ok(Some(Arc::clone(fd)));
        }
        let clean = dir.is_absolute()
            && dir
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !clean {
            return Err(self.not_clean(dir));
        }
        if !create && dir.ancestors().any(|a| self.missing.contains(a)) {
            return Ok(None);
        }
        let Some((mut at, mut fd)) = self.deepest_open(dir, create)? else {
            return Ok(None);
        };
        for name in dir.strip_prefix(&at).unwrap_or(dir).components() {
            at.push(name);
            let Some(child) = self.open_child(fd.as_fd(), &at, create)? else {
                self.missing.insert(at);
                return Ok(None);
            };
            fd = Arc::new(child);
            self.dirs.insert(at.clone(), Arc::clone(&fd));
        }
        Ok(Some(fd))
    }

    /// The deepest directory above `dir` open already, else the root (`None` when the root
    /// is missing and `create` is off): a product's directory under an open `products` is
    /// one lookup, not one per component (issue 13).
    fn deepest_open(
        &mut self,
        dir: &Path,
        create: bool,
    ) -> Result<Option<(PathBuf, Arc<OwnedFd>)>, Error> {
        let open = dir
            .ancestors()
            .skip(1)
            .find_map(|a| Some((a, Arc::clone(self.dirs.get(a)?))));
        if let Some((at, fd)) = open {
            return Ok(Some((at.to_path_buf(), fd)));
        }
        let root = self.root(create)?;
        if root.is_none() {
            self.missing.insert(PathBuf::from("/"));
        }
        Ok(root.map(|fd| (PathBuf::from("/"), fd)))
    }

    fn not_clean(&self, dir: &Path) -> Error {
        match self.fs.check_allowed(dir) {
            Err(e) => e,
            Ok(()) => Error::NotAllowed {
                path: dir.to_path_buf(),
                allowed: String::new(),
            },
        }
    }

    /// `--root` itself: followed if a symlink (the operator's), created if missing.
    fn root(&mut self, create: bool) -> Result<Option<Arc<OwnedFd>>, Error> {
        let slash = Path::new("/");
        if let Some(fd) = self.dirs.get(slash) {
            return Ok(Some(Arc::clone(fd)));
        }
        let root = &self.fs.root;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::open(root, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                self.missing.clear();
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(root)
                    .map_err(io("creating directory", root))?;
                std::fs::set_permissions(root, std::fs::Permissions::from_mode(DIR_MODE))
                    .map_err(io("changing mode of", root))?;
                nix::fcntl::open(root, flags, Mode::empty())
                    .map_err(errno("opening directory", root))?
            }
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(errno("opening directory", root)(e)),
        };
        let fd = Arc::new(fd);
        self.dirs.insert(slash.to_path_buf(), Arc::clone(&fd));
        Ok(Some(fd))
    }

    /// Open the directory `at` (logical) in `parent`, with `O_NOFOLLOW` from an allowed
    /// root down; create it if missing and `create`.
    fn open_child(
        &mut self,
        parent: BorrowedFd<'_>,
        at: &Path,
        create: bool,
    ) -> Result<Option<OwnedFd>, Error> {
        let name = at.file_name().unwrap_or(at.as_os_str());
        let protected = self.fs.is_protected(at);
        let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        flags.set(OFlag::O_NOFOLLOW, protected);
        let path = self.fs.physical(at);
        let fd = match openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                self.missing.clear();
                let created = mkdirat(parent, name, Mode::from_bits_truncate(DIR_MODE));
                match created {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(errno("creating directory", &path)(e)),
                }
                let fd = openat(parent, name, flags, Mode::empty())
                    .map_err(|e| refusal(parent, name, &path, protected, e))?;
                if created.is_ok() {
                    self.made(&fd, at, &path)?;
                }
                fd
            }
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(refusal(parent, name, &path, protected, e)),
        };
        Ok(Some(fd))
    }

    /// A directory this transaction created: mode 0755 whatever the umask, owned by root
    /// (when rolecall runs as root), and its entry in the parent due for a sync.
    fn made(&mut self, fd: &OwnedFd, at: &Path, path: &Path) -> Result<(), Error> {
        fchmod(fd.as_fd(), Mode::from_bits_truncate(DIR_MODE))
            .map_err(errno("changing mode of", path))?;
        if nix::unistd::geteuid().is_root() {
            fchown(fd.as_fd(), Some(Uid::from_raw(0)), Some(Gid::from_raw(0)))
                .map_err(errno("changing owner of", path))?;
        }
        if let Some(parent) = at.parent() {
            self.dirty.insert(parent.to_path_buf());
        }
        Ok(())
    }
}

/// Why a directory could not be opened: a symlink where none is followed, something that
/// is not a directory, or the OS error.
fn refusal(
    parent: BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    path: &Path,
    protected: bool,
    err: Errno,
) -> Error {
    if !matches!(err, Errno::ENOTDIR | Errno::ELOOP) {
        return errno("opening directory", path)(err);
    }
    let path = path.to_path_buf();
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
            match protected {
                true => Error::Symlink { path },
                // Followed (above the allowed roots), to something that is not a directory.
                false => Error::NotADirectory { path },
            }
        }
        Ok(_) => Error::NotADirectory { path },
        Err(e) => errno("inspecting", &path)(e),
    }
}

/// The parent directory and name of a logical file path.
fn split(logical: &Path) -> Result<(&Path, &std::ffi::OsStr), Error> {
    match (logical.parent(), logical.file_name()) {
        (Some(parent), Some(name)) if logical.is_absolute() => Ok((parent, name)),
        _ => Err(Error::NotAFile {
            path: logical.to_path_buf(),
        }),
    }
}

fn at<'a>(
    dir: &'a OwnedFd,
    dir_path: &'a Path,
    name: &'a std::ffi::OsStr,
    path: &'a Path,
) -> At<'a> {
    At {
        dir: dir.as_fd(),
        dir_path,
        name,
        path,
    }
}

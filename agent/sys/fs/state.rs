//! The agent's own files: the state directory's (status, records, map cache, journal,
//! settled record, counters) and a few others it writes (man pages, keys, the control
//! socket's directory). None is read or written through a symlink at its name (issue 15
//! #9); writes are atomic and durable (the two shortcuts, the render memo and the settled
//! record, atomic only: see `Synced::Never`), with an explicit mode (0600 for contents,
//! issue 15 #3); directories created get mode 0755 whatever the umask.

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, Mode, SFlag};
use nix::unistd::{fsync, linkat, unlinkat, UnlinkatFlags};
use serde::{Deserialize, Serialize};

use super::{errno, io, temp, Error};

/// Mode of state files anyone may read (status for `rolecall check`, records).
const PUBLIC: u32 = 0o644;
/// Mode of the directories created for state files.
const DIR_MODE: u32 = 0o755;

/// Read a state-directory file; `None` when it does not exist.
///
/// # Errors
/// `Symlink` when a symlink is there; other I/O errors.
pub fn read_state(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let Some((fd, size)) = open_file(path, "reading")? else {
        return Ok(None);
    };
    super::file::read_all(File::from(fd), size, path).map(Some)
}

/// The regular file at `path` opened for reading without following a symlink there, and
/// its size; `None` when nothing is there. Errors say `doing` and `path`.
fn open_file(path: &Path, doing: &'static str) -> Result<Option<(OwnedFd, i64)>, Error> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let fd = match nix::fcntl::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(symlink(path)),
        Err(e) => return Err(errno(doing, path)(e)),
    };
    let st = fstat(fd.as_fd()).map_err(errno(doing, path))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Some((fd, st.st_size)))
}

/// Read a JSON state file; `None` when it does not exist.
///
/// # Errors
/// `Symlink`, I/O or JSON errors.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, Error> {
    let Some(bytes) = read_state(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
}

/// Write a JSON state file atomically and durably, mode 0644.
///
/// # Errors
/// `Symlink`, I/O or JSON errors.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let serialize = |out: &mut dyn Write| serde_json::to_writer_pretty(out, value);
    stage_serialized(path, PUBLIC, Synced::Now, serialize)?.commit()
}

/// A JSON state file that is a shortcut (the settled record of the quiet path): written
/// whole under a temp name, taking its own name only at [`Staged::commit`], and never
/// fsynced (see [`Synced::Never`]).
///
/// # Errors
/// As [`write_json`].
pub fn stage_shortcut_json<T: Serialize>(path: &Path, value: &T) -> Result<Staged, Error> {
    // Compact: a machine's file (`rolecall status` shows what an operator needs), written
    // by every commit that changes files.
    let serialize = |out: &mut dyn Write| serde_json::to_writer(out, value);
    stage_serialized(path, PUBLIC, Synced::Never, serialize)
}

/// A state file that is a shortcut (the render memo), `serialize` writing it: atomic, never
/// fsynced (see [`Synced::Never`]).
///
/// # Errors
/// As [`write_json`].
pub fn write_shortcut(
    path: &Path,
    mode: u32,
    serialize: impl FnOnce(&mut dyn Write) -> serde_json::Result<()>,
) -> Result<(), Error> {
    stage_serialized(path, mode, Synced::Never, serialize)?.commit()
}

/// A state-directory file written atomically with `mode` (as [`write_state_mode`]) up to
/// its name, made durable as `synced` says (see [`Staged`]): `serialize` writes it straight
/// into the temp file through a buffer, so a large record is never held whole in memory (a
/// 500-vhost host's render memo, settled record and records are 0.2-0.5 MB each, issue 13).
///
/// # Errors
/// `Symlink`, `NotAFile`, I/O; `Json` when `serialize` fails other than by writing.
fn stage_serialized(
    path: &Path,
    mode: u32,
    synced: Synced,
    serialize: impl FnOnce(&mut dyn Write) -> serde_json::Result<()>,
) -> Result<Staged, Error> {
    let (dir_path, _) = split(path)?;
    let dir = open_dir(dir_path, true)?;
    let mut tmp_name = String::new();
    let fill = |tmp: &mut File| {
        let mut out = BufWriter::with_capacity(BUFFER, tmp);
        serialize(&mut out).map_err(|source| match source.is_io() {
            true => io("writing", path)(source.into()),
            false => Error::Json {
                path: path.to_path_buf(),
                source,
            },
        })?;
        out.flush().map_err(io("writing", path))
    };
    let keep = |tmp: &str| {
        tmp_name = tmp.to_owned();
        Ok(())
    };
    staged(dir.as_fd(), dir_path, path, mode, synced, fill, keep)?;
    Ok(Staged {
        dir,
        path: path.to_path_buf(),
        tmp: Some(tmp_name),
        synced,
    })
}

/// A state file written whole (and fsynced, unless a shortcut) under a temp name in its
/// directory, that takes its own name only when committed: a record made ready while others
/// are written and named after them (the settled record, last of a reconcile's commit step,
/// issue 13). Dropped uncommitted, its temp file is removed; one left by a crash is swept
/// with the lock.
#[derive(Debug)]
pub struct Staged {
    dir: OwnedFd,
    path: PathBuf,
    /// The temp file's name, until it is renamed or removed.
    tmp: Option<String>,
    synced: Synced,
}

impl Staged {
    /// Rename the file over its own name (refused if a symlink or a non-file is there),
    /// then fsync the directory (not for a shortcut).
    ///
    /// # Errors
    /// `Symlink`, `NotAFile`, I/O; the temp file is removed then.
    pub fn commit(mut self) -> Result<(), Error> {
        let (dir_path, name) = split(&self.path)?;
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        let dir = self.dir.as_fd();
        let renamed = refuse_non_file(dir, name, &self.path).and_then(|()| {
            renameat(dir, tmp.as_str(), dir, name).map_err(errno("renaming into", &self.path))
        });
        if renamed.is_err() {
            self.tmp = Some(tmp);
        }
        renamed?;
        match self.synced {
            Synced::Now | Synced::AtPromote => {
                fsync(dir).map_err(errno("syncing directory", dir_path))
            }
            Synced::Never => Ok(()),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = unlinkat(self.dir.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// The buffer between a serializer and its temp file: small, as the commit step writes
/// three state files at once on threads whose memory is new to the process (issue 13).
const BUFFER: usize = 16 * 1024;

/// Write a state-directory file atomically, readable by everyone (status, records).
///
/// # Errors
/// As [`write_state_mode`].
pub fn write_state(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_state_mode(path, bytes, PUBLIC)
}

/// Write a state-directory file atomically with `mode` from its first byte (0600 for files
/// that hold managed files' contents: the journal, backups): temp file in the same
/// directory, fsync, rename over `path` (refused if a symlink or a non-file is there), then
/// the directory fsynced. A missing directory is created (0755).
///
/// # Errors
/// `Symlink`, `NotAFile`, I/O.
pub fn write_state_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    write_state_by(path, mode, Synced::Now, |tmp| {
        tmp.write_all(bytes).map_err(io("writing", path))
    })
}

/// Put `bytes` at `path` atomically as [`write_state`] does, but leave them and the name to
/// [`promote_state`] to make durable: a large file written early and kept only if its
/// reconcile commits (the map cache, issue 13). After a crash the file may be empty or
/// missing; the caller promotes only what it staged in the same run.
///
/// # Errors
/// As [`write_state_mode`].
pub fn stage_state(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_state_by(path, PUBLIC, Synced::AtPromote, |tmp| {
        tmp.write_all(bytes).map_err(io("writing", path))?;
        // Start writing the bytes back now (`POSIX_FADV_DONTNEED` starts the writeback of
        // dirty pages without waiting for it), so that the fsync of the promotion, in the
        // commit step, finds them on disk already. Only advice: an error changes nothing.
        let _ = rustix::fs::fadvise(&*tmp, 0, None, rustix::fs::Advice::DontNeed);
        Ok(())
    })
}

/// Make the file [`stage_state`] put at `from` durable and rename it over `to` in the same
/// directory, then write the file `then` of that directory (its name and bytes: what
/// describes `to`) as [`write_state`] does, with one directory fsync for both names (issue
/// 13: one fsync fewer in the commit step). A symlink or a non-file at either name is
/// refused, never followed. A crash before that fsync may keep either rename without the
/// other: the caller must be able to tell such a pair (the map cache checks the map's
/// SHA-256).
///
/// # Errors
/// `Symlink`, `NotAFile`, I/O; "not found" when nothing is staged.
pub fn promote_state(from: &Path, to: &Path, then: (&str, &[u8])) -> Result<(), Error> {
    let (dir_path, from_name) = split(from)?;
    let (_, to_name) = split(to)?;
    let (then_name, then_bytes) = then;
    let then_path = &dir_path.join(then_name);
    let dir = open_dir(dir_path, false)?;
    refuse_non_file(dir.as_fd(), to_name, to)?;
    refuse_non_file(dir.as_fd(), then_name.as_ref(), then_path)?;
    let Some((fd, _)) = open_file(from, "syncing")? else {
        return Err(errno("syncing", from)(Errno::ENOENT));
    };
    fsync(fd.as_fd()).map_err(errno("syncing", from))?;
    renameat(dir.as_fd(), from_name, dir.as_fd(), to_name).map_err(errno("renaming into", to))?;
    let fill = |tmp: &mut File| tmp.write_all(then_bytes).map_err(io("writing", then_path));
    staged(
        dir.as_fd(),
        dir_path,
        then_path,
        PUBLIC,
        Synced::Now,
        fill,
        |tmp| {
            let d = dir.as_fd();
            renameat(d, tmp, d, then_name).map_err(errno("renaming into", then_path))
        },
    )?;
    fsync(dir.as_fd()).map_err(errno("syncing directory", dir_path))
}

/// When a state file's bytes are made durable.
#[derive(Debug, Clone, Copy)]
enum Synced {
    /// Before it takes its name.
    Now,
    /// By [`promote_state`], which renames it again.
    AtPromote,
    /// Never, nor its name: a shortcut (the render memo, the settled record) that a power
    /// loss may take back to its last copy or leave empty, which costs a full reconcile,
    /// never a wrong file (issue 13: four of the commit step's fsyncs).
    Never,
}

/// [`write_state_mode`], the temp file's content written by `fill`.
fn write_state_by(
    path: &Path,
    mode: u32,
    synced: Synced,
    fill: impl FnOnce(&mut File) -> Result<(), Error>,
) -> Result<(), Error> {
    let (dir_path, name) = split(path)?;
    let dir = open_dir(dir_path, true)?;
    refuse_non_file(dir.as_fd(), name, path)?;
    staged(dir.as_fd(), dir_path, path, mode, synced, fill, |tmp| {
        renameat(dir.as_fd(), tmp, dir.as_fd(), name).map_err(errno("renaming into", path))
    })?;
    match synced {
        Synced::Now => fsync(dir.as_fd()).map_err(errno("syncing directory", dir_path)),
        // promote_state renames it again and fsyncs the directory then.
        Synced::AtPromote | Synced::Never => Ok(()),
    }
}

/// Create `path` with `bytes` and `mode`, never replacing an existing file (key files of
/// `map keygen`): written to a temp file in the same directory, fsynced, then linked into
/// place only if nothing is there, so the file appears whole or not at all.
///
/// # Errors
/// I/O errors; an existing file is `AlreadyExists` ("creating …: File exists").
pub fn create_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let (dir_path, name) = split(path)?;
    let dir = open_dir(dir_path, false)?;
    let mut tmp_left = None;
    let fill = |tmp: &mut File| tmp.write_all(bytes).map_err(io("writing", path));
    let placed = staged(
        dir.as_fd(),
        dir_path,
        path,
        mode,
        Synced::Now,
        fill,
        |tmp| {
            tmp_left = Some(tmp.to_owned());
            let (d, flags) = (dir.as_fd(), AtFlags::empty());
            linkat(d, tmp, d, name, flags).map_err(errno("creating", path))
        },
    );
    if let Some(tmp) = tmp_left {
        let _ = unlinkat(dir.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    placed.and_then(|()| fsync(dir.as_fd()).map_err(errno("syncing directory", dir_path)))
}

/// Create a temp file in `dir` with `mode` from the first byte, `fill` it, fsync it (when
/// `synced` says now) and hand its name to `place` (rename or link it into `path`); the temp file is removed if
/// any step fails, `place` included.
fn staged(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    path: &Path,
    mode: u32,
    synced: Synced,
    fill: impl FnOnce(&mut File) -> Result<(), Error>,
    place: impl FnOnce(&str) -> Result<(), Error>,
) -> Result<(), Error> {
    let (mut tmp, tmp_name) = temp::create(dir, dir_path, mode)?;
    let result = fill(&mut tmp)
        .and_then(|()| chmod_if_needed(&tmp, mode, path))
        .and_then(|()| match synced {
            Synced::Now => tmp.sync_all().map_err(io("syncing", path)),
            Synced::AtPromote | Synced::Never => Ok(()),
        })
        .and_then(|()| place(tmp_name.as_str()));
    if result.is_err() {
        let _ = unlinkat(dir, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Remove a state-directory file (a symlink there is removed, not followed), durably: the
/// directory is fsynced, so the file does not come back after a power loss. One that is
/// already gone is fine.
///
/// # Errors
/// I/O errors other than "not found".
pub fn remove_state(path: &Path) -> Result<(), Error> {
    if !unlink_state(path)? {
        return Ok(());
    }
    let (dir_path, _) = split(path)?;
    let dir = open_dir(dir_path, false)?;
    fsync(dir.as_fd()).map_err(errno("syncing directory", dir_path))
}

/// [`write_state_mode`] after removing the file `stale` of the same directory: the
/// directory fsync that makes `path`'s name durable makes the removal durable too (issue
/// 13: the settled record goes as the journal is written, one fsync fewer before the first
/// file). A `stale` already gone is fine.
///
/// # Errors
/// Removing `stale` (nothing is written then); as [`write_state_mode`].
pub fn write_state_removing(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    stale: &str,
) -> Result<(), Error> {
    let (dir_path, _) = split(path)?;
    unlink_state(&dir_path.join(stale))?;
    write_state_mode(path, bytes, mode)
}

/// Remove a state-directory file, not durably yet; `false` when it was already gone.
fn unlink_state(path: &Path) -> Result<bool, Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("removing", path)(e)),
    }
}

/// Make room for a unix socket at `path`: create its directory, and remove a socket left
/// there by a process that died. Anything else at `path` (a symlink, a file) is refused.
///
/// # Errors
/// `NotAFile` for something other than a socket; I/O.
pub fn prepare_socket(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let (dir, _) = split(path)?;
    open_dir(dir, true)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => remove_state(path),
        Ok(_) => Err(Error::NotAFile {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("inspecting", path)(e)),
    }
}

/// Set the permission bits of a file this process just created (a socket).
///
/// # Errors
/// I/O.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("changing mode of", path))
}

/// Create the directory `dir` and its missing parents, each with mode 0755 whatever the
/// umask (the state directory before its lock file).
///
/// # Errors
/// I/O.
pub fn create_dirs(dir: &Path) -> Result<(), Error> {
    open_dir(dir, true).map(drop)
}

fn chmod_if_needed(tmp: &File, mode: u32, path: &Path) -> Result<(), Error> {
    if !temp::needs_chmod(mode) {
        return Ok(());
    }
    fchmod(tmp.as_fd(), Mode::from_bits_truncate(mode & 0o7777))
        .map_err(errno("changing mode of", path))
}

fn symlink(path: &Path) -> Error {
    Error::Symlink {
        path: path.to_path_buf(),
    }
}

fn refuse_non_file(dir: BorrowedFd<'_>, name: &std::ffi::OsStr, path: &Path) -> Result<(), Error> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => Ok(()),
            SFlag::S_IFLNK => Err(symlink(path)),
            _ => Err(Error::NotAFile {
                path: path.to_path_buf(),
            }),
        },
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno("inspecting", path)(e)),
    }
}

/// The directory and name of a file path; a bare name is in the current directory.
fn split(path: &Path) -> Result<(&Path, &std::ffi::OsStr), Error> {
    let name = path.file_name().ok_or_else(|| Error::NotAFile {
        path: path.to_path_buf(),
    })?;
    let dir = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    Ok((dir, name))
}

/// Open the directory `dir` (the operator's path: symlinks in it are followed); with
/// `create`, create it and missing parents first.
fn open_dir(dir: &Path, create: bool) -> Result<OwnedFd, Error> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match nix::fcntl::open(dir, flags, Mode::empty()) {
        Err(Errno::ENOENT) if create => {
            make_dirs(dir)?;
            nix::fcntl::open(dir, flags, Mode::empty()).map_err(errno("opening directory", dir))
        }
        other => other.map_err(errno("opening directory", dir)),
    }
}

/// `mkdir -p` with mode 0755 for each directory made, each new entry synced in its parent.
fn make_dirs(dir: &Path) -> Result<(), Error> {
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Ok(()),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let parent_fd = match nix::fcntl::open(parent, flags, Mode::empty()) {
        Err(Errno::ENOENT) => {
            make_dirs(parent)?;
            nix::fcntl::open(parent, flags, Mode::empty())
        }
        other => other,
    }
    .map_err(errno("opening directory", parent))?;
    let name = dir.file_name().unwrap_or(dir.as_os_str());
    match nix::sys::stat::mkdirat(parent_fd.as_fd(), name, Mode::from_bits_truncate(DIR_MODE)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(()),
        Err(e) => return Err(errno("creating directory", dir)(e)),
    }
    let made = openat(
        parent_fd.as_fd(),
        name,
        flags | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(errno("opening directory", dir))?;
    fchmod(made.as_fd(), Mode::from_bits_truncate(DIR_MODE))
        .map_err(errno("changing mode of", dir))?;
    fsync(parent_fd.as_fd()).map_err(errno("syncing directory", parent))
}

//! One file relative to its directory's fd: inspect it without following a symlink, replace
//! it atomically (temp file, write, owner, mode, fsync, rename), remove it. The directory
//! fsync is the transaction's (`txn.rs`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};

use super::owners::Owners;
use super::{errno, io, temp, DiskState, Error, FileState, Fs, Stamp};

/// A file: its directory's fd, its name there, and its physical path (for errors).
#[derive(Debug, Clone, Copy)]
pub(super) struct At<'a> {
    pub dir: BorrowedFd<'a>,
    pub dir_path: &'a Path,
    pub name: &'a OsStr,
    pub path: &'a Path,
}

/// The type bits of a stat.
fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// `lstat` relative to the directory; `None` when nothing is there.
fn lstat(at: At<'_>) -> Result<Option<FileStat>, Error> {
    match fstatat(at.dir, at.name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(errno("inspecting", at.path)(e)),
    }
}

/// A regular file's stamp, with its owner's and group's names as the plan compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The inode as it is.
    pub stamp: Stamp,
    /// Owner name (or number when it has no name).
    pub owner: String,
    /// Group name (or number).
    pub group: String,
}

/// The stat of the regular file at `at`, without opening it; `None` for anything else or
/// nothing.
pub(super) fn stat(at: At<'_>, fs: &Fs, owners: &mut Owners) -> Result<Option<Stat>, Error> {
    let Some(st) = lstat(at)?.filter(|st| kind(st) == SFlag::S_IFREG) else {
        return Ok(None);
    };
    let stamp = Stamp {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        ctime: (st.st_ctime, st.st_ctime_nsec),
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
    };
    Ok(Some(Stat {
        stamp,
        owner: owners.user_name(fs, st.st_uid)?,
        group: owners.group_name(fs, st.st_gid)?,
    }))
}

/// The coarse realtime clock, the one the kernel takes file times from: a file changed
/// after this call gets a ctime at or after it.
pub fn coarse_now() -> (i64, i64) {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
        .or_else(|_| clock_gettime(ClockId::CLOCK_REALTIME))
        .map_or((0, 0), |t| (t.tv_sec(), t.tv_nsec()))
}

/// What is at `at`: absent, a symlink (never followed), something else, or a regular file
/// with its bytes and metadata.
pub(super) fn inspect(at: At<'_>, fs: &Fs, owners: &mut Owners) -> Result<DiskState, Error> {
    match lstat(at)? {
        None => return Ok(DiskState::Absent),
        Some(st) if kind(&st) == SFlag::S_IFLNK => return Ok(DiskState::Symlink),
        Some(st) if kind(&st) != SFlag::S_IFREG => return Ok(DiskState::Other),
        Some(_) => {}
    }
    // O_NONBLOCK: should a FIFO replace the file since the lstat, opening it must not hang.
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY
        | OFlag::O_NONBLOCK;
    let fd = match openat(at.dir, at.name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(DiskState::Absent),
        Err(Errno::ELOOP) => return Ok(DiskState::Symlink),
        Err(e) => return Err(errno("reading", at.path)(e)),
    };
    // The metadata of what is read, not of what the lstat saw.
    let st = fstat(fd.as_fd()).map_err(errno("inspecting", at.path))?;
    if kind(&st) != SFlag::S_IFREG {
        return Ok(DiskState::Other);
    }
    let content = read_all(File::from(fd), st.st_size, at.path)?;
    Ok(DiskState::File(FileState {
        content: content.into(),
        owner: owners.user_name(fs, st.st_uid)?,
        group: owners.group_name(fs, st.st_gid)?,
        mode: st.st_mode & 0o7777,
    }))
}

/// Read to the end with plain `read`s (no `statx`/`lseek` as `std::fs::read` makes): the
/// size is known, one spare byte sees the end of file.
pub(super) fn read_all(mut file: File, size: i64, path: &Path) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0; usize::try_from(size).unwrap_or(0) + 1];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io("reading", path)(e)),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Refuse a symlink or a non-file at `at` (absent is fine).
fn refuse_non_file(at: At<'_>) -> Result<(), Error> {
    match lstat(at)? {
        Some(st) if kind(&st) == SFlag::S_IFLNK => Err(Error::Symlink {
            path: at.path.to_path_buf(),
        }),
        Some(st) if kind(&st) != SFlag::S_IFREG => Err(Error::NotAFile {
            path: at.path.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// Atomically replace `at` with `file` owned by `ids`: a temp file in the same directory,
/// written, chowned, chmodded (only when the umask took bits), fsynced, then renamed over
/// the destination, which must not be a symlink or a non-file. The temp file is removed on
/// any failure. The rename is durable once the caller syncs the directory.
pub(super) fn replace(at: At<'_>, file: &FileState, ids: (Uid, Gid)) -> Result<(), Error> {
    let (tmp, tmp_name) = temp::create(at.dir, at.dir_path, file.mode)?;
    let result = fill(tmp, file, ids, at.path)
        // Checked last, just before the rename: a symlink planted since the plan is refused.
        .and_then(|()| refuse_non_file(at))
        .and_then(|()| {
            renameat(at.dir, tmp_name.as_str(), at.dir, at.name)
                .map_err(errno("renaming into", at.path))
        });
    if result.is_err() {
        let _ = unlinkat(at.dir, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Content, owner, mode, then fsync, so all three are durable before the rename.
fn fill(mut tmp: File, file: &FileState, ids: (Uid, Gid), path: &Path) -> Result<(), Error> {
    tmp.write_all(&file.content).map_err(io("writing", path))?;
    fchown(tmp.as_fd(), Some(ids.0), Some(ids.1)).map_err(errno("changing owner of", path))?;
    if temp::needs_chmod(file.mode) {
        fchmod(tmp.as_fd(), Mode::from_bits_truncate(file.mode & 0o7777))
            .map_err(errno("changing mode of", path))?;
    }
    tmp.sync_all().map_err(io("syncing", path))
}

/// Remove the regular file at `at`; `false` when it was not there. A symlink is refused
/// rather than removed.
pub(super) fn remove(at: At<'_>) -> Result<bool, Error> {
    refuse_non_file(at)?;
    match unlinkat(at.dir, at.name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(errno("removing", at.path)(e)),
    }
}

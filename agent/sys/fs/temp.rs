//! rolecall's temp files: one unmistakable name pattern (`.rolecall-tmp-<pid>-<16 hex>`),
//! creation relative to a directory fd (`O_CREAT|O_EXCL|O_NOFOLLOW`, the final permission
//! bits from the first byte), and the sweep of the ones a killed writer left (issue 15 #4).

use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, Pid, UnlinkatFlags};
use rustix::fs::{FileType, RawDir};

use super::{errno, Error};

/// Every temp file rolecall creates starts with this.
const PREFIX: &str = ".rolecall-tmp-";
/// Before [`PREFIX`], temp files were the `tempfile` crate's: this plus 6 alphanumerics.
const LEGACY_PREFIX: &str = ".rolecall-";
/// Name collisions are practically impossible (64 random bits); a few tries cover them.
const ATTEMPTS: usize = 4;

/// Who wrote a temp file, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// A process of this version: its pid is in the name.
    Pid(i32),
    /// An older version's name, without a pid.
    Legacy,
}

/// A fresh temp name for this process.
pub(super) fn name() -> String {
    format!("{PREFIX}{}-{:016x}", pid(), rand::random::<u64>())
}

/// This process's id, asked once (rolecall never forks without exec).
fn pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Who wrote `name`, if it is one of rolecall's temp files (what a sweep may remove): this
/// version's `.rolecall-tmp-<pid>-<16 lowercase hex>`, or an older version's `.rolecall-`
/// plus 6 alphanumerics.
fn writer(name: &str) -> Option<Writer> {
    if let Some(rest) = name.strip_prefix(PREFIX) {
        let (pid, random) = rest.split_once('-')?;
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        let is_pid = (1..=10).contains(&pid.len()) && pid.bytes().all(|b| b.is_ascii_digit());
        if !is_pid || random.len() != 16 || !random.bytes().all(hex) {
            return None;
        }
        return pid.parse().ok().map(Writer::Pid);
    }
    let legacy = name.strip_prefix(LEGACY_PREFIX)?;
    (legacy.len() == 6 && legacy.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(Writer::Legacy)
}

/// Whether the process that named a temp file may still be writing it. This process is
/// not (its sweeps run between writes, under the reconcile lock); an older version's
/// writer is gone once this version runs. A pid reused by another process keeps the file
/// until that process ends.
fn is_alive(writer: Writer) -> bool {
    match writer {
        Writer::Legacy => false,
        Writer::Pid(pid) if pid == self::pid() as i32 => false,
        Writer::Pid(pid) => !matches!(
            nix::sys::signal::kill(Pid::from_raw(pid), None),
            Err(Errno::ESRCH)
        ),
    }
}

/// Create a new temp file in `dir` (physical `dir_path`, for errors) whose permission bits
/// are `mode` minus the umask from the start: `O_EXCL|O_NOFOLLOW` never opens an existing
/// name, nor a symlink planted under one. Returns the file and its name.
pub(super) fn create(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    mode: u32,
) -> Result<(File, String), Error> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let perm = Mode::from_bits_truncate(mode & 0o777);
    let mut last = Errno::EEXIST;
    for _ in 0..ATTEMPTS {
        let tmp = name();
        match openat(dir, tmp.as_str(), flags, perm) {
            Ok(fd) => return Ok((File::from(fd), tmp)),
            Err(Errno::EEXIST) => last = Errno::EEXIST,
            Err(e) => {
                last = e;
                break;
            }
        }
    }
    Err(errno("creating a temporary file in", dir_path)(last))
}

/// Whether a file created with `mode` by [`create`] needs an `fchmod`: the umask took
/// bits away, or it has setuid/setgid/sticky bits (`fchown` clears the first two).
pub(super) fn needs_chmod(mode: u32) -> bool {
    mode & umask() & 0o777 != 0 || mode & 0o7000 != 0
}

/// The process umask, read once (rolecall never changes it). Unknown means every bit may
/// be masked, so every mode is set explicitly.
fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| read_umask().unwrap_or(0o777))
}

/// `Umask:` of /proc/self/status (Linux 4.7+); reading it does not change it, unlike
/// umask(2), which would race with threads creating files.
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// Remove the stale temp files in `dir` (physical `dir_path`): regular files named like
/// rolecall's temp files (see [`writer`]) whose writer is not alive. Symlinks and
/// directories with such names are left alone, and nothing is followed. Returns how many
/// were removed.
pub(super) fn sweep_at(dir: BorrowedFd<'_>, dir_path: &Path) -> Result<usize, Error> {
    let mut removed = 0;
    for name in stale(dir, dir_path)? {
        if remove(dir, dir_path, &name)? {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::warn!(path = %dir_path.display(), removed, "stale temporary files removed");
    }
    Ok(removed)
}

/// Bytes of a directory listing read at once: room for dozens of entries, and for one with
/// the longest name (255 bytes) many times over.
const LISTING: usize = 16 * 1024;

/// The names in `dir` of the regular files a dead writer left. The listing is read with
/// `getdents64` from `dir` itself, from its start (a transaction may have listed it
/// before): no second descriptor and no `opendir`, three system calls for a small
/// directory instead of eight (issue 13).
fn stale(dir: BorrowedFd<'_>, dir_path: &Path) -> Result<Vec<String>, Error> {
    let listing =
        |e: rustix::io::Errno| errno("listing", dir_path)(Errno::from_raw(e.raw_os_error()));
    rustix::fs::seek(dir, rustix::fs::SeekFrom::Start(0)).map_err(listing)?;
    let mut buf = [MaybeUninit::uninit(); LISTING];
    let mut entries = RawDir::new(dir, &mut buf);
    let mut stale = Vec::new();
    while let Some(entry) = entries.next() {
        let entry = entry.map_err(listing)?;
        let Some(name) = entry
            .file_name()
            .to_str()
            .ok()
            .filter(|n| writer(n).is_some_and(|w| !is_alive(w)))
        else {
            continue;
        };
        let is_file = match entry.file_type() {
            FileType::RegularFile => true,
            // The filesystem does not say: ask without following.
            FileType::Unknown => is_regular(dir, dir_path, name)?,
            _ => false,
        };
        if is_file {
            stale.push(name.to_owned());
        }
    }
    Ok(stale)
}

/// Whether `name` in `dir` is a regular file, not following a symlink.
fn is_regular(dir: BorrowedFd<'_>, dir_path: &Path, name: &str) -> Result<bool, Error> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(errno("inspecting", &dir_path.join(name))(e)),
    }
}

/// Remove `name` from `dir`; `false` when it is gone already.
fn remove(dir: BorrowedFd<'_>, dir_path: &Path, name: &str) -> Result<bool, Error> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(errno("removing", &dir_path.join(name))(e)),
    }
}

/// Remove the stale temp files in the physical directory `dir` (the state directory, where
/// a killed writer of status, records or the journal leaves one): as [`super::Fs::sweep`],
/// for a directory that is not a managed one. A missing directory has none.
///
/// # Errors
/// I/O errors other than "not found".
pub fn sweep_dir(dir: &Path) -> Result<usize, Error> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match nix::fcntl::open(dir, flags, Mode::empty()) {
        Ok(fd) => sweep_at(fd.as_fd(), dir),
        Err(Errno::ENOENT) => Ok(0),
        Err(e) => Err(errno("opening directory", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use nix::dir::Dir;

    fn is_temp_name(name: &str) -> bool {
        writer(name).is_some()
    }

    #[test]
    fn temp_names_are_recognised_and_nothing_else_is() {
        let ours = name();
        assert!(is_temp_name(&ours), "{ours}");
        assert_eq!(writer(&ours), Some(Writer::Pid(std::process::id() as i32)));
        assert!(is_temp_name(".rolecall-tmp-1-0123456789abcdef"));
        assert!(is_temp_name(".rolecall-Ab3xY9"), "the old tempfile names");
        for other in [
            "rolecall-alpha.conf",
            ".rolecall-tmp-",
            ".rolecall-tmp-12-0123456789abcde",
            ".rolecall-tmp-12-0123456789abcdef0",
            ".rolecall-tmp-12-0123456789ABCDEF",
            ".rolecall-tmp-x2-0123456789abcdef",
            ".rolecall-tmp--0123456789abcdef",
            ".rolecall-tmp-12-0123456789abcdef.conf",
            ".rolecall-abcdefg",
            ".rolecall-abc-ef",
            ".rolecall-alpha.conf",
            "site.conf",
        ] {
            assert!(!is_temp_name(other), "{other} taken for a temp file");
        }
    }

    #[test]
    fn a_live_writers_temp_file_is_not_stale_but_a_dead_ones_is() {
        assert!(!is_alive(Writer::Pid(std::process::id() as i32)), "self");
        assert!(!is_alive(Writer::Legacy));
        assert!(is_alive(Writer::Pid(1)), "pid 1 is alive");
        // Pids above /proc/sys/kernel/pid_max (at most 2^22) never exist.
        assert!(!is_alive(Writer::Pid(1 << 23)));
    }

    /// A listing larger than the buffer takes several `getdents64` calls, and a directory
    /// fd swept before is listed again from its start.
    #[test]
    fn a_long_listing_is_read_whole_and_again_on_the_same_fd() {
        let dir = tempfile::tempdir().unwrap();
        let long = "n".repeat(200);
        for i in 0..400 {
            std::fs::write(dir.path().join(format!("{long}{i:03}")), "").unwrap();
        }
        let stale = |i: u64| format!(".rolecall-tmp-8388609-{i:016x}");
        std::fs::write(dir.path().join(stale(1)), "half").unwrap();
        let fd = Dir::open(dir.path(), OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        const { assert!(400 * 200 > 4 * LISTING, "the listing spans several reads") };
        assert_eq!(sweep_at(fd.as_fd(), dir.path()).unwrap(), 1);
        assert!(!dir.path().join(stale(1)).exists());
        std::fs::write(dir.path().join(stale(2)), "half").unwrap();
        assert_eq!(sweep_at(fd.as_fd(), dir.path()).unwrap(), 1, "listed again");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 400);
    }

    /// SPEC §10: a secret file is never readable by others, not even empty, before its
    /// first byte: the temp file is born with the file's mode (less the umask), not 0644
    /// and chmodded later.
    #[test]
    fn a_temp_file_has_its_final_mode_before_its_first_byte() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fd = Dir::open(dir.path(), OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        for mode in [0o600, 0o640] {
            let (file, name) = create(fd.as_fd(), dir.path(), mode).unwrap();
            let meta = file.metadata().unwrap();
            assert_eq!(meta.len(), 0, "nothing written yet");
            let born = meta.permissions().mode() & 0o777;
            assert_eq!(born, mode & !umask(), "{name}: born {born:o}");
            assert_eq!(born & 0o007, 0, "others may not read {name}");
        }
    }
}

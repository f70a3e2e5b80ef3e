//! The only code that writes files (SPEC §7.5): the `--root` prefix, the `allowed_roots`
//! check, refusal of symlinks at destinations, atomic writes (temp file in the target
//! directory, fsync, owner/mode, rename, directory fsync), and JSON state files.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

pub use crate::plan::{DiskState, FileState};

mod account_files;
pub use account_files::{AccountSnapshot, Names};

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
    /// The destination is a symlink, which rolecall never follows.
    #[error("{path} is a symlink; refusing to write through it")]
    Symlink {
        /// Physical path.
        path: PathBuf,
    },
    /// The destination exists but is not a regular file.
    #[error("{path} exists and is not a regular file")]
    NotAFile {
        /// Physical path.
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

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

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

    /// What is at `logical` now, without following a symlink.
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub fn snapshot(&self, logical: &Path) -> Result<DiskState, Error> {
        let path = self.physical(logical);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DiskState::Absent),
            Err(e) => return Err(io("inspecting", &path)(e)),
        };
        if meta.file_type().is_symlink() {
            return Ok(DiskState::Symlink);
        }
        if !meta.is_file() {
            return Ok(DiskState::Other);
        }
        let content = read_nofollow(&path)?;
        let names = self.names()?;
        Ok(DiskState::File(FileState {
            content,
            owner: names.user_name(meta.uid()),
            group: names.group_name(meta.gid()),
            mode: meta.mode() & 0o7777,
        }))
    }

    /// Atomically replace `logical` with `file`'s content, owner, group and mode.
    ///
    /// # Errors
    /// `NotAllowed`, `Symlink`, `NotAFile`, `UnknownOwner`, or I/O.
    pub fn write(&self, logical: &Path, file: &FileState) -> Result<(), Error> {
        self.check_allowed(logical)?;
        let path = self.physical(logical);
        let (uid, gid) = owner_ids(&self.names()?, &file.owner, &file.group, logical)?;
        self.refuse_non_file(&path)?;
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        fs::create_dir_all(&dir).map_err(io("creating directory", &dir))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".rolecall-")
            .tempfile_in(&dir)
            .map_err(io("creating temporary file in", &dir))?;
        tmp.write_all(&file.content)
            .map_err(io("writing", tmp.path()))?;
        nix::unistd::fchown(tmp.as_file(), Some(uid), Some(gid))
            .map_err(|e| io("changing owner of", &path)(e.into()))?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(file.mode))
            .map_err(io("changing mode of", &path))?;
        tmp.as_file().sync_all().map_err(io("syncing", &path))?;
        // Checked again just before the rename: a symlink planted since the plan is refused.
        self.refuse_non_file(&path)?;
        tmp.persist(&path)
            .map_err(|e| io("renaming into", &path)(e.error))?;
        sync_dir(&dir)
    }

    /// Remove `logical` (a regular file) and sync its directory; absent is fine.
    ///
    /// # Errors
    /// `NotAllowed`, `Symlink`, `NotAFile`, or I/O.
    pub fn remove(&self, logical: &Path) -> Result<(), Error> {
        self.check_allowed(logical)?;
        let path = self.physical(logical);
        self.refuse_non_file(&path)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("/"))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing", &path)(e)),
        }
    }

    /// Put `logical` back the way `before` describes.
    ///
    /// # Errors
    /// As [`Fs::write`] and [`Fs::remove`].
    pub fn restore(&self, logical: &Path, before: &DiskState) -> Result<(), Error> {
        match before {
            DiskState::File(state) => self.write(logical, state),
            _ => self.remove(logical),
        }
    }

    fn refuse_non_file(&self, path: &Path) -> Result<(), Error> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Err(Error::Symlink {
                path: path.to_path_buf(),
            }),
            Ok(m) if !m.is_file() => Err(Error::NotAFile {
                path: path.to_path_buf(),
            }),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("inspecting", path)(e)),
        }
    }
}

fn read_nofollow(path: &Path) -> Result<Vec<u8>, Error> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(io("reading", path))?;
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut content).map_err(io("reading", path))?;
    Ok(content)
}

/// fsync a directory so a rename in it survives a crash.
///
/// # Errors
/// I/O.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

fn owner_ids(names: &Names, owner: &str, group: &str, path: &Path) -> Result<(Uid, Gid), Error> {
    let unknown = |kind, name: &str| Error::UnknownOwner {
        kind,
        name: name.to_string(),
        path: path.to_path_buf(),
    };
    let uid = names.uid(owner).ok_or_else(|| unknown("user", owner))?;
    let gid = names.gid(group).ok_or_else(|| unknown("group", group))?;
    Ok((uid, gid))
}

impl Fs {
    /// Check that owner and group names exist under the root, before anything is written;
    /// `None` skips one (an account this reconcile is about to create).
    ///
    /// # Errors
    /// `UnknownOwner`; I/O reading the root's account files.
    pub fn check_owner(
        &self,
        owner: Option<&str>,
        group: Option<&str>,
        path: &Path,
    ) -> Result<(), Error> {
        let names = self.names()?;
        owner_ids(&names, owner.unwrap_or("0"), group.unwrap_or("0"), path).map(|_| ())
    }
}

/// Read a JSON state file; `None` when it does not exist.
///
/// # Errors
/// I/O or JSON errors.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, Error> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// Write a state file atomically (mode 0644, owner unchanged: the agent's own files).
///
/// # Errors
/// I/O or JSON errors.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_state(path, &bytes)
}

/// Create `path` with `bytes` and `mode`, never replacing an existing file (key files of
/// `map keygen`): written to a temporary file in the same directory, fsynced, then linked
/// into place only if nothing is there, so the file appears whole or not at all.
///
/// # Errors
/// I/O errors; an existing file is `AlreadyExists` ("creating …: File exists").
pub fn create_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    // `fleet.key` has the parent "", which is the current directory.
    let dir = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".rolecall-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(io("creating temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io("writing", path))?;
    tmp.as_file().sync_all().map_err(io("syncing", path))?;
    tmp.persist_noclobber(path)
        .map_err(|e| io("creating", path)(e.error))?;
    sync_dir(dir)
}

/// Remove a state-directory file; one that is already gone is fine.
///
/// # Errors
/// I/O errors other than "not found".
pub fn remove_state(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
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
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
    match fs::symlink_metadata(path) {
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
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io("changing mode of", path))
}

/// Read a state-directory file; `None` when it does not exist.
///
/// # Errors
/// I/O errors other than "not found".
pub fn read_state(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// Write any state-directory file atomically, readable by everyone (status, records).
///
/// # Errors
/// I/O errors.
pub fn write_state(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_state_mode(path, bytes, 0o644)
}

/// Write a state-directory file atomically with `mode` from its first byte (0600 for
/// files that hold managed files' contents).
///
/// # Errors
/// I/O errors.
pub fn write_state_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".rolecall-")
        .tempfile_in(dir)
        .map_err(io("creating temporary file in", dir))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("changing mode of", path))?;
    tmp.write_all(bytes).map_err(io("writing", path))?;
    tmp.as_file().sync_all().map_err(io("syncing", path))?;
    tmp.persist(path)
        .map_err(|e| io("renaming into", path)(e.error))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_sets_the_mode_and_never_replaces_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("fleet.key");
        create_new(&key, b"secret", 0o600).expect("created");
        let meta = fs::metadata(&key).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(fs::read(&key).expect("read"), b"secret");

        let err = create_new(&key, b"other", 0o600).expect_err("exists");
        assert!(err.to_string().contains("fleet.key"), "{err}");
        assert_eq!(fs::read(&key).expect("read"), b"secret", "overwritten");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["fleet.key"], "a temporary file was left behind");
    }
}

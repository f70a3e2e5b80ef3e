//! The root's account files (SPEC §10). Two things, both under `--root`:
//!
//! - Owner names ↔ ids: the host's NSS for `--root /`, else the root's own `/etc/passwd`
//!   and `/etc/group` read as text, since an account made with `useradd --prefix ROOT`
//!   exists only there ([`Names`]). A root without one of those files (a scratch
//!   directory, not a system tree) uses the host's NSS for it, as before accounts existed.
//! - The one exception to `allowed_roots`: when accounts are managed, the four files the
//!   shadow tools change are saved before they run ([`Fs::snapshot_accounts`]) and put back
//!   byte for byte, with their owner and mode, after a failed change or a rollback
//!   ([`Fs::restore_accounts`]). A snapshot can only be taken of exactly these four paths
//!   and only restores what it saved, so nothing else outside the allowed roots becomes
//!   writable; `Fs::write` still refuses them.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use super::{io, read_nofollow, sync_dir, Error, Fs};
use crate::accounts::etc::Existing;

/// The files `groupadd`, `useradd`, `usermod`, `userdel` and `groupdel` change.
pub const ACCOUNT_FILES: [&str; 4] = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"];

/// Where owner names come from: the root's account files where it has them, else NSS.
#[derive(Debug, Default)]
pub struct Names {
    /// The root's accounts (empty for `--root /`).
    db: Existing,
    /// Users come from the root's `/etc/passwd` (else NSS).
    users_from_root: bool,
    /// Groups come from the root's `/etc/group` (else NSS).
    groups_from_root: bool,
}

impl Names {
    /// Whether both come from the host's name service.
    pub fn is_nss(&self) -> bool {
        !self.users_from_root && !self.groups_from_root
    }

    /// The uid of user `name` (a number is taken as it is).
    pub fn uid(&self, name: &str) -> Option<Uid> {
        let nss = || User::from_name(name).ok()?.map(|u| u.uid.as_raw());
        id_of(name, self.users_from_root, || self.db.uid(name), nss).map(Uid::from_raw)
    }

    /// The gid of group `name` (a number is taken as it is).
    pub fn gid(&self, name: &str) -> Option<Gid> {
        let nss = || Group::from_name(name).ok()?.map(|g| g.gid.as_raw());
        id_of(name, self.groups_from_root, || self.db.gid(name), nss).map(Gid::from_raw)
    }

    /// The name of `uid`, or the number when it has none.
    pub fn user_name(&self, uid: u32) -> String {
        let root = || self.db.user_name(uid).map(str::to_string);
        let nss = || User::from_uid(Uid::from_raw(uid)).ok()?.map(|u| u.name);
        name_of(uid, self.users_from_root, root, nss)
    }

    /// The name of `gid`, or the number when it has none.
    pub fn group_name(&self, gid: u32) -> String {
        let root = || self.db.group_name(gid).map(str::to_string);
        let nss = || Group::from_gid(Gid::from_raw(gid)).ok()?.map(|g| g.name);
        name_of(gid, self.groups_from_root, root, nss)
    }
}

/// The id `name` stands for: a number as it is, else the root's account files' id
/// (`from_root`) or the name service's.
fn id_of(
    name: &str,
    from_root: bool,
    root: impl FnOnce() -> Option<u32>,
    nss: impl FnOnce() -> Option<u32>,
) -> Option<u32> {
    match (name.parse::<u32>(), from_root) {
        (Ok(id), _) => Some(id),
        (Err(_), true) => root(),
        (Err(_), false) => nss(),
    }
}

/// The name of `id` in the root's account files (`from_root`) or the name service, or the
/// number when it has none.
fn name_of(
    id: u32,
    from_root: bool,
    root: impl FnOnce() -> Option<String>,
    nss: impl FnOnce() -> Option<String>,
) -> String {
    let name = if from_root { root() } else { nss() };
    name.unwrap_or_else(|| id.to_string())
}

/// The four account files as they were before the account changes of one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSnapshot {
    files: Vec<(&'static str, Option<Saved>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Saved {
    content: Vec<u8>,
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Fs {
    /// Whether `--root` is the running system's `/`.
    pub fn is_host_root(&self) -> bool {
        self.root
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::CurDir))
            && self.root.has_root()
    }

    /// The root to pass as `--prefix` to the shadow tools: `None` for `/`.
    pub fn prefix(&self) -> Option<PathBuf> {
        (!self.is_host_root()).then(|| std::path::absolute(&self.root).unwrap_or(self.root.clone()))
    }

    /// Where owner names come from: NSS for `/`, else the root's passwd and group files
    /// where it has them (read now: a user created since the last call is seen).
    ///
    /// # Errors
    /// The root's files exist but cannot be read.
    pub fn names(&self) -> Result<Names, Error> {
        if self.is_host_root() {
            return Ok(Names::default());
        }
        let passwd = self.read_account_file("/etc/passwd")?;
        let group = self.read_account_file("/etc/group")?;
        Ok(Names {
            users_from_root: passwd.is_some(),
            groups_from_root: group.is_some(),
            db: parse(passwd, group),
        })
    }

    /// The root's accounts, parsed from its `/etc/passwd` and `/etc/group` (a missing file
    /// has no accounts).
    ///
    /// # Errors
    /// I/O other than "not found".
    pub fn accounts(&self) -> Result<Existing, Error> {
        let passwd = self.read_account_file("/etc/passwd")?;
        let group = self.read_account_file("/etc/group")?;
        Ok(parse(passwd, group))
    }

    fn read_account_file(&self, logical: &str) -> Result<Option<Vec<u8>>, Error> {
        let path = self.physical(Path::new(logical));
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => read_nofollow(&path).map(Some),
            Ok(_) => Err(Error::NotAFile { path }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("inspecting", &path)(e)),
        }
    }

    /// Save the four account files of the root: bytes, owner and mode (absent ones as
    /// absent).
    ///
    /// # Errors
    /// One is not a regular file (a symlink is refused), or cannot be read.
    pub fn snapshot_accounts(&self) -> Result<AccountSnapshot, Error> {
        let mut files = Vec::with_capacity(ACCOUNT_FILES.len());
        for logical in ACCOUNT_FILES {
            let path = self.physical(Path::new(logical));
            let saved = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => Some(Saved {
                    content: read_nofollow(&path)?,
                    uid: m.uid(),
                    gid: m.gid(),
                    mode: m.mode() & 0o7777,
                }),
                Ok(m) if m.file_type().is_symlink() => return Err(Error::Symlink { path }),
                Ok(_) => return Err(Error::NotAFile { path }),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(io("inspecting", &path)(e)),
            };
            files.push((logical, saved));
        }
        Ok(AccountSnapshot { files })
    }

    /// Put the account files back as `snapshot` saved them, each atomically (temp file in
    /// `/etc`, fsync, owner and mode by number, rename, directory fsync); a file that was
    /// absent is removed. Every file is attempted.
    ///
    /// # Errors
    /// The first file that could not be restored.
    pub fn restore_accounts(&self, snapshot: &AccountSnapshot) -> Result<(), Error> {
        let mut first = None;
        for (logical, saved) in &snapshot.files {
            let path = self.physical(Path::new(logical));
            let done = match saved {
                Some(s) => replace(&path, s),
                None => remove(&path),
            };
            if let Err(e) = done {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn parse(passwd: Option<Vec<u8>>, group: Option<Vec<u8>>) -> Existing {
    let text =
        |bytes: Option<Vec<u8>>| String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned();
    Existing::parse(&text(passwd), &text(group))
}

fn replace(path: &Path, saved: &Saved) -> Result<(), Error> {
    refuse_symlink(path)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp = tempfile::Builder::new()
        .prefix(".rolecall-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io("creating temporary file in", dir))?;
    tmp.write_all(&saved.content).map_err(io("writing", path))?;
    nix::unistd::fchown(
        tmp.as_file(),
        Some(Uid::from_raw(saved.uid)),
        Some(Gid::from_raw(saved.gid)),
    )
    .map_err(|e| io("changing owner of", path)(e.into()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(saved.mode))
        .map_err(io("changing mode of", path))?;
    tmp.as_file().sync_all().map_err(io("syncing", path))?;
    refuse_symlink(path)?;
    tmp.persist(path)
        .map_err(|e| io("renaming into", path)(e.error))?;
    sync_dir(dir)
}

fn remove(path: &Path) -> Result<(), Error> {
    refuse_symlink(path)?;
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("/"))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path)(e)),
    }
}

fn refuse_symlink(path: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::Symlink {
            path: path.to_path_buf(),
        }),
        Ok(m) if !m.is_file() => Err(Error::NotAFile {
            path: path.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

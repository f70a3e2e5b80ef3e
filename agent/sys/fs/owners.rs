//! Owner and group names ↔ ids, through [`Names`] (the root's account files, or NSS for
//! `/`), each looked up once per transaction or plan snapshot: every NSS lookup reads
//! /etc/passwd or /etc/group again (issue 13 counted one per file). A cache lives only as
//! long as its transaction, so a user created since is seen next time.

use std::collections::BTreeMap;
use std::path::Path;

use nix::unistd::{Gid, Uid};

use super::{Error, Fs, Names};

/// Lookups made so far.
#[derive(Debug, Default)]
pub(super) struct Owners {
    names: Option<Names>,
    uids: BTreeMap<String, Uid>,
    gids: BTreeMap<String, Gid>,
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

impl Owners {
    /// Where names come from, read on first use.
    fn names(&mut self, fs: &Fs) -> Result<&Names, Error> {
        match &mut self.names {
            Some(names) => Ok(names),
            slot => Ok(slot.insert(fs.names()?)),
        }
    }

    /// The ids of `owner` and `group` (names or numbers), for the file `path`.
    pub fn ids(
        &mut self,
        fs: &Fs,
        owner: &str,
        group: &str,
        path: &Path,
    ) -> Result<(Uid, Gid), Error> {
        let uid = match self.uids.get(owner) {
            Some(uid) => *uid,
            None => {
                let uid = self.names(fs)?.uid(owner);
                let uid = uid.ok_or_else(|| unknown("user", owner, path))?;
                *self.uids.entry(owner.to_owned()).or_insert(uid)
            }
        };
        let gid = match self.gids.get(group) {
            Some(gid) => *gid,
            None => {
                let gid = self.names(fs)?.gid(group);
                let gid = gid.ok_or_else(|| unknown("group", group, path))?;
                *self.gids.entry(group.to_owned()).or_insert(gid)
            }
        };
        Ok((uid, gid))
    }

    /// The name of `uid`, or the number when it has none.
    pub fn user_name(&mut self, fs: &Fs, uid: u32) -> Result<String, Error> {
        if let Some(name) = self.users.get(&uid) {
            return Ok(name.clone());
        }
        let name = self.names(fs)?.user_name(uid);
        Ok(self.users.entry(uid).or_insert(name).clone())
    }

    /// The name of `gid`, or the number when it has none.
    pub fn group_name(&mut self, fs: &Fs, gid: u32) -> Result<String, Error> {
        if let Some(name) = self.groups.get(&gid) {
            return Ok(name.clone());
        }
        let name = self.names(fs)?.group_name(gid);
        Ok(self.groups.entry(gid).or_insert(name).clone())
    }
}

fn unknown(kind: &'static str, name: &str, path: &Path) -> Error {
    Error::UnknownOwner {
        kind,
        name: name.to_string(),
        path: path.to_path_buf(),
    }
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
        self.check_owners([(owner, group, path)])
    }

    /// [`Fs::check_owner`] for every `(owner, group, path)`, reading the account files once
    /// and looking each name up once (what the render stage needs: one call per reconcile,
    /// not one per file).
    ///
    /// # Errors
    /// `UnknownOwner` for the first file whose owner or group does not exist; I/O.
    #[allow(dead_code, reason = "for the pipeline; see the re-exports in mod.rs")]
    pub fn check_owners<'a>(
        &self,
        files: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>, &'a Path)>,
    ) -> Result<(), Error> {
        let mut owners = Owners::default();
        for (owner, group, path) in files {
            owners.ids(self, owner.unwrap_or("0"), group.unwrap_or("0"), path)?;
        }
        Ok(())
    }
}

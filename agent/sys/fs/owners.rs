//! Owner and group names ↔ ids, each looked up once per transaction or plan snapshot
//! (every lookup reads /etc/passwd or /etc/group through NSS; issue 13 counted one per file).
//! A cache lives only as long as its transaction, so a user created since is seen next time.

use std::collections::BTreeMap;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use super::Error;

/// Lookups made so far.
#[derive(Debug, Default)]
pub(super) struct Owners {
    uids: BTreeMap<String, Uid>,
    gids: BTreeMap<String, Gid>,
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

impl Owners {
    /// The ids of `owner` and `group` (names or numbers), for the file `path`.
    pub fn ids(&mut self, owner: &str, group: &str, path: &Path) -> Result<(Uid, Gid), Error> {
        let uid = match self.uids.get(owner) {
            Some(uid) => *uid,
            None => {
                let uid = uid_of(owner).ok_or_else(|| unknown("user", owner, path))?;
                *self.uids.entry(owner.to_owned()).or_insert(uid)
            }
        };
        let gid = match self.gids.get(group) {
            Some(gid) => *gid,
            None => {
                let gid = gid_of(group).ok_or_else(|| unknown("group", group, path))?;
                *self.gids.entry(group.to_owned()).or_insert(gid)
            }
        };
        Ok((uid, gid))
    }

    /// The name of `uid`, or the number when it has none.
    pub fn user_name(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map_or_else(|| uid.to_string(), |u| u.name)
            })
            .clone()
    }

    /// The name of `gid`, or the number when it has none.
    pub fn group_name(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                Group::from_gid(Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map_or_else(|| gid.to_string(), |g| g.name)
            })
            .clone()
    }
}

fn uid_of(owner: &str) -> Option<Uid> {
    match owner.parse::<u32>() {
        Ok(n) => Some(Uid::from_raw(n)),
        Err(_) => User::from_name(owner).ok().flatten().map(|u| u.uid),
    }
}

fn gid_of(group: &str) -> Option<Gid> {
    match group.parse::<u32>() {
        Ok(n) => Some(Gid::from_raw(n)),
        Err(_) => Group::from_name(group).ok().flatten().map(|g| g.gid),
    }
}

fn unknown(kind: &'static str, name: &str, path: &Path) -> Error {
    Error::UnknownOwner {
        kind,
        name: name.to_string(),
        path: path.to_path_buf(),
    }
}

/// Check that owner and group names exist, before anything is written.
///
/// # Errors
/// `UnknownOwner`.
pub fn check_owner(owner: &str, group: &str, path: &Path) -> Result<(), Error> {
    Owners::default().ids(owner, group, path).map(|_| ())
}

/// [`check_owner`] for every `(owner, group, path)`, looking each name up once (what the
/// render stage needs: one call per reconcile, not one per file).
///
/// # Errors
/// `UnknownOwner` for the first file whose owner or group does not exist.
#[allow(dead_code, reason = "for the pipeline; see the re-exports in mod.rs")]
pub fn check_owners<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str, &'a Path)>,
) -> Result<(), Error> {
    let mut owners = Owners::default();
    for (owner, group, path) in files {
        owners.ids(owner, group, path)?;
    }
    Ok(())
}

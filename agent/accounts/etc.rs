//! A root's `/etc/passwd` and `/etc/group` as text (SPEC §10): parsed here, never through
//! NSS, so that `--root` sees the root's accounts and not the build machine's. Pure: the
//! caller reads the files (`sys::fs`).
//!
//! Lines that are blank, comments, NIS compat entries (`+`, `-`) or malformed are skipped;
//! when a name or id appears twice the first line wins, as with `getpwnam`/`getpwuid`.

use std::collections::{BTreeMap, BTreeSet};

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Users listed as supplementary members.
    pub members: Vec<String>,
}

/// The accounts a root has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Users by name.
    pub users: BTreeMap<String, PasswdEntry>,
    /// Groups by name.
    pub groups: BTreeMap<String, GroupEntry>,
    by_uid: BTreeMap<u32, String>,
    by_gid: BTreeMap<u32, String>,
}

impl Existing {
    /// Parse the text of `/etc/passwd` and `/etc/group`.
    pub fn parse(passwd: &str, group: &str) -> Existing {
        let mut out = Existing::default();
        for e in passwd.lines().filter_map(passwd_line) {
            out.by_uid.entry(e.uid).or_insert_with(|| e.name.clone());
            out.users.entry(e.name.clone()).or_insert(e);
        }
        for e in group.lines().filter_map(group_line) {
            out.by_gid.entry(e.gid).or_insert_with(|| e.name.clone());
            out.groups.entry(e.name.clone()).or_insert(e);
        }
        out
    }

    /// The uid of user `name`.
    pub fn uid(&self, name: &str) -> Option<u32> {
        self.users.get(name).map(|u| u.uid)
    }

    /// The gid of group `name`.
    pub fn gid(&self, name: &str) -> Option<u32> {
        self.groups.get(name).map(|g| g.gid)
    }

    /// The name of the first user with `uid`.
    pub fn user_name(&self, uid: u32) -> Option<&str> {
        self.by_uid.get(&uid).map(String::as_str)
    }

    /// The name of the first group with `gid`.
    pub fn group_name(&self, gid: u32) -> Option<&str> {
        self.by_gid.get(&gid).map(String::as_str)
    }

    /// The groups listing `user` as a supplementary member.
    pub fn memberships(&self, user: &str) -> BTreeSet<String> {
        self.groups
            .values()
            .filter(|g| g.members.iter().any(|m| m == user))
            .map(|g| g.name.clone())
            .collect()
    }
}

fn skipped(line: &str) -> bool {
    let line = line.trim_start();
    line.is_empty() || line.starts_with('#') || line.starts_with('+') || line.starts_with('-')
}

/// `name:password:uid:gid:gecos:home:shell`.
fn passwd_line(line: &str) -> Option<PasswdEntry> {
    if skipped(line) {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    let [name, _, uid, gid, _, home, shell] = f.as_slice() else {
        return None;
    };
    Some(PasswdEntry {
        name: (*name).to_string(),
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        home: (*home).to_string(),
        shell: (*shell).to_string(),
    })
}

/// `name:password:gid:member,member`.
fn group_line(line: &str) -> Option<GroupEntry> {
    if skipped(line) {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    let [name, _, gid, members] = f.as_slice() else {
        return None;
    };
    Some(GroupEntry {
        name: (*name).to_string(),
        gid: gid.parse().ok()?,
        members: members
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

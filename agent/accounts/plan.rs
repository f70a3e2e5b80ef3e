//! Account planning (SPEC §10): the accounts the host's products want, against what the
//! root has and what rolecall created before → the changes, in the order they can run
//! (groups, users, changes to users, removals), and the conflicts that stop them. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::etc::Existing;
use crate::rolemap::accounts::{GroupView, UserView};
use crate::rolemap::HostView;

/// The accounts a host's products want, each name once (validation makes a name declared
/// by two products identical).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Groups by name.
    pub groups: BTreeMap<String, GroupView>,
    /// Users by name.
    pub users: BTreeMap<String, UserView>,
}

impl Desired {
    /// The accounts of every product in `view` (what templates can name).
    pub fn from_view(view: &HostView) -> Desired {
        let mut out = Desired::default();
        for p in &view.products {
            for (name, g) in &p.groups {
                out.groups.entry(name.clone()).or_insert_with(|| g.clone());
            }
            for (name, u) in &p.users {
                out.users.entry(name.clone()).or_insert_with(|| u.clone());
            }
        }
        out
    }

    /// No account wanted.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.users.is_empty()
    }
}

/// What rolecall created, by name with the id it gave (`<state>/accounts.json`): the only
/// accounts it may ever remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// Users created, name → uid.
    #[serde(default)]
    pub users: BTreeMap<String, u32>,
    /// Groups created, name → gid.
    #[serde(default)]
    pub groups: BTreeMap<String, u32>,
}

impl Records {
    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// One attribute of an existing user that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    /// `shell`, `home`, `group` or `groups`.
    pub name: &'static str,
    /// Now.
    pub from: String,
    /// As the map says.
    pub to: String,
}

/// One account change, run as one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// `groupadd`.
    CreateGroup(GroupView),
    /// `useradd`.
    CreateUser(UserView),
    /// `usermod` of the fields that differ.
    ModifyUser {
        /// The user as the map wants it.
        user: UserView,
        /// What changes.
        fields: Vec<Field>,
    },
    /// `userdel` (the home directory is left alone).
    RemoveUser {
        /// Name.
        name: String,
        /// Its uid, inside the managed range.
        uid: u32,
    },
    /// `groupdel`.
    RemoveGroup {
        /// Name.
        name: String,
        /// Its gid, inside the managed range.
        gid: u32,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateGroup(g) => write!(f, "create group {} (gid {})", g.name, g.gid),
            Change::CreateUser(u) => write!(
                f,
                "create user {} (uid {}, group {}, home {}, shell {}, groups {})",
                u.name,
                u.uid,
                u.group,
                u.home,
                u.shell,
                list(&u.groups)
            ),
            Change::ModifyUser { user, fields } => {
                let what: Vec<String> = fields
                    .iter()
                    .map(|c| format!("{} {} -> {}", c.name, c.from, c.to))
                    .collect();
                write!(f, "modify user {}: {}", user.name, what.join(", "))
            }
            Change::RemoveUser { name, uid } => write!(f, "remove user {name} (uid {uid})"),
            Change::RemoveGroup { name, gid } => write!(f, "remove group {name} (gid {gid})"),
        }
    }
}

/// How an empty group list reads in a [`Field`].
pub const NONE: &str = "(none)";

fn list<S: AsRef<str>>(names: &[S]) -> String {
    if names.is_empty() {
        return NONE.to_string();
    }
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    names.join(",")
}

/// Every account change of one reconcile, and what stops it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccountPlan {
    /// Changes, in the order they run.
    pub changes: Vec<Change>,
    /// Accounts the map wants that the root has in another form (another id, a missing
    /// system group): reported, never modified. Any conflict fails the reconcile before
    /// anything is changed.
    pub conflicts: Vec<String>,
}

impl AccountPlan {
    /// No change and no conflict.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.conflicts.is_empty()
    }
}

/// Compare `desired` with the root's accounts and `records`; `range` is the inclusive id
/// range inside which a created account may be removed.
pub fn plan(
    desired: &Desired,
    existing: &Existing,
    records: &Records,
    range: (u32, u32),
) -> AccountPlan {
    let mut out = AccountPlan::default();
    let blocked = groups(desired, existing, &mut out);
    users(desired, existing, &blocked, &mut out);
    removals(desired, existing, records, range, &mut out);
    out
}

/// Plan the groups; returns the names in conflict.
fn groups(desired: &Desired, existing: &Existing, out: &mut AccountPlan) -> BTreeSet<String> {
    let mut blocked = BTreeSet::new();
    for g in desired.groups.values() {
        let conflict = match (existing.gid(&g.name), existing.group_name(g.gid)) {
            (Some(gid), _) if gid == g.gid => continue,
            (Some(gid), _) => format!(
                "group {} exists with gid {gid}, the map says {}: left untouched",
                g.name, g.gid
            ),
            (None, Some(other)) => format!(
                "group {}: gid {} already belongs to group {other}: not created",
                g.name, g.gid
            ),
            (None, None) => {
                out.changes.push(Change::CreateGroup(g.clone()));
                continue;
            }
        };
        blocked.insert(g.name.clone());
        out.conflicts.push(conflict);
    }
    blocked
}

fn users(
    desired: &Desired,
    existing: &Existing,
    blocked: &BTreeSet<String>,
    out: &mut AccountPlan,
) {
    let mut modify = Vec::new();
    for u in desired.users.values() {
        if let Err(conflict) = usable(u, desired, existing, blocked) {
            out.conflicts.push(conflict);
            continue;
        }
        match existing.users.get(&u.name) {
            Some(e) => {
                let fields = differences(u, e, desired, existing);
                if !fields.is_empty() {
                    modify.push(Change::ModifyUser {
                        user: u.clone(),
                        fields,
                    });
                }
            }
            None => out.changes.push(Change::CreateUser(u.clone())),
        }
    }
    out.changes.extend(modify);
}

/// Why `u` cannot be created or converged, if it cannot.
fn usable(
    u: &UserView,
    desired: &Desired,
    existing: &Existing,
    blocked: &BTreeSet<String>,
) -> Result<(), String> {
    match (existing.uid(&u.name), existing.user_name(u.uid)) {
        (Some(uid), _) if uid != u.uid => {
            return Err(format!(
                "user {} exists with uid {uid}, the map says {}: left untouched",
                u.name, u.uid
            ))
        }
        (None, Some(other)) => {
            return Err(format!(
                "user {}: uid {} already belongs to user {other}: not created",
                u.name, u.uid
            ))
        }
        _ => {}
    }
    let groups = std::iter::once(&u.group).chain(&u.groups);
    for g in groups {
        if blocked.contains(g) {
            return Err(format!(
                "user {}: group {g} is in conflict: left untouched",
                u.name
            ));
        }
        if !desired.groups.contains_key(g) && existing.gid(g).is_none() {
            return Err(format!(
                "user {}: group {g} does not exist on this host and no product of it declares it",
                u.name
            ));
        }
    }
    Ok(())
}

/// The fields of the existing user `e` that differ from `u`.
fn differences(
    u: &UserView,
    e: &super::etc::PasswdEntry,
    desired: &Desired,
    existing: &Existing,
) -> Vec<Field> {
    let mut out = Vec::new();
    let mut field = |name, from: &str, to: &str| {
        if from != to {
            out.push(Field {
                name,
                from: from.to_string(),
                to: to.to_string(),
            });
        }
    };
    field("shell", &e.shell, &u.shell);
    field("home", &e.home, &u.home);
    let want_gid = desired
        .groups
        .get(&u.group)
        .map(|g| g.gid)
        .or(existing.gid(&u.group));
    if want_gid != Some(e.gid) {
        let now = existing
            .group_name(e.gid)
            .map_or_else(|| e.gid.to_string(), str::to_string);
        field("group", &now, &u.group);
    }
    let (now, want) = memberships(u, existing);
    field("groups", &now, &want);
    out
}

/// The supplementary groups of `u` now and as the map wants them, sorted, as listed in a
/// [`Field`].
fn memberships(u: &UserView, existing: &Existing) -> (String, String) {
    let now: Vec<String> = existing.memberships(&u.name).into_iter().collect();
    let want: BTreeSet<&String> = u.groups.iter().collect();
    let want: Vec<&String> = want.into_iter().collect();
    (list(&now), list(&want))
}

/// Remove what rolecall created, no product wants any more, still has the recorded id and
/// lies inside `range`; a group only when no remaining user has it as primary group.
fn removals(
    desired: &Desired,
    existing: &Existing,
    records: &Records,
    range: (u32, u32),
    out: &mut AccountPlan,
) {
    let inside = |id: u32| range.0 <= id && id <= range.1;
    let mut gone = BTreeSet::new();
    for (name, &uid) in &records.users {
        if !desired.users.contains_key(name) && existing.uid(name) == Some(uid) && inside(uid) {
            gone.insert(name.as_str());
            out.changes.push(Change::RemoveUser {
                name: name.clone(),
                uid,
            });
        }
    }
    for (name, &gid) in &records.groups {
        let still_primary = existing
            .users
            .values()
            .any(|u| u.gid == gid && !gone.contains(u.name.as_str()));
        let wanted = desired.groups.contains_key(name);
        if !wanted && existing.gid(name) == Some(gid) && inside(gid) && !still_primary {
            out.changes.push(Change::RemoveGroup {
                name: name.clone(),
                gid,
            });
        }
    }
}

/// The records once `plan` has run: created accounts added, removed ones dropped, and
/// records of accounts the root no longer has with their recorded id (`existing`: before
/// the plan ran) forgotten.
pub fn records_after(records: &Records, plan: &AccountPlan, existing: &Existing) -> Records {
    let mut out = Records {
        users: still_there(&records.users, |n| existing.uid(n)),
        groups: still_there(&records.groups, |n| existing.gid(n)),
    };
    for change in &plan.changes {
        match change {
            Change::RemoveUser { name, .. } => {
                out.users.remove(name);
            }
            Change::RemoveGroup { name, .. } => {
                out.groups.remove(name);
            }
            _ => {}
        }
    }
    records_before(&out, plan)
}

/// The records whose account the root still has with the recorded id (`id_now`: its id on
/// the root).
fn still_there(
    records: &BTreeMap<String, u32>,
    id_now: impl Fn(&str) -> Option<u32>,
) -> BTreeMap<String, u32> {
    records
        .iter()
        .filter(|(n, id)| id_now(n) == Some(**id))
        .map(|(n, id)| (n.clone(), *id))
        .collect()
}

/// [`records_after`] before the plan runs: what it will create is recorded first, so a
/// crash in between leaves no account of rolecall's unrecorded (and so never removable).
pub fn records_before(records: &Records, plan: &AccountPlan) -> Records {
    let mut out = records.clone();
    for change in &plan.changes {
        match change {
            Change::CreateGroup(g) => {
                out.groups.insert(g.name.clone(), g.gid);
            }
            Change::CreateUser(u) => {
                out.users.insert(u.name.clone(), u.uid);
            }
            _ => {}
        }
    }
    out
}

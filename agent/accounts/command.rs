//! The command each account change runs (SPEC §10): argv for the shadow tools, never a
//! shell, with `--prefix ROOT` under `--root` so an image build or a test changes the
//! root's account files and never the build machine's. Pure.
//!
//! Decisions: `useradd --no-create-home` (a home may lie outside every allowed root; the
//! application's deployment owns it), `--no-user-group` (the primary group is the map's),
//! `--no-log-init` (lastlog and faillog are not ours to touch), and `SUB_UID_COUNT=0`,
//! `SUB_GID_COUNT=0` (no `/etc/subuid` ranges: a service account runs no rootless
//! containers, and a rollback then needs only the four account files); `userdel` without
//! `--remove` (homes are never deleted).

use std::path::Path;

use super::plan::{Change, Field};
use crate::catalog::Command;

/// The argv that makes `change`; `prefix` is the root when it is not `/`.
pub fn argv(change: &Change, prefix: Option<&Path>) -> Command {
    let mut argv: Vec<String> = match change {
        Change::CreateGroup(g) => words(&["groupadd", "--gid", &g.gid.to_string()]),
        Change::CreateUser(u) => {
            let mut a = words(&["useradd", "--uid", &u.uid.to_string(), "--gid", &u.group]);
            a.extend(words(&["--home-dir", &u.home, "--shell", &u.shell]));
            a.extend(words(&[
                "--no-create-home",
                "--no-user-group",
                "--no-log-init",
            ]));
            a.extend(words(&[
                "--key",
                "SUB_UID_COUNT=0",
                "--key",
                "SUB_GID_COUNT=0",
            ]));
            if !u.groups.is_empty() {
                a.extend(words(&["--groups", &u.groups.join(",")]));
            }
            a
        }
        Change::ModifyUser { fields, .. } => {
            let mut a = words(&["usermod"]);
            a.extend(fields.iter().flat_map(modify));
            a
        }
        Change::RemoveUser { .. } => words(&["userdel"]),
        Change::RemoveGroup { .. } => words(&["groupdel"]),
    };
    if let Some(root) = prefix {
        argv.push("--prefix".to_string());
        argv.push(root.display().to_string());
    }
    argv.push(name(change).to_string());
    Command { argv }
}

/// The account a change is about.
pub fn name(change: &Change) -> &str {
    match change {
        Change::CreateGroup(g) => &g.name,
        Change::CreateUser(u) | Change::ModifyUser { user: u, .. } => &u.name,
        Change::RemoveUser { name, .. } | Change::RemoveGroup { name, .. } => name,
    }
}

/// `usermod`'s options for one field; `--groups` replaces the whole list (`""`: none).
fn modify(field: &Field) -> Vec<String> {
    let option = match field.name {
        "shell" => "--shell",
        "home" => "--home",
        "group" => "--gid",
        _ => "--groups",
    };
    let value = match field.name {
        "groups" if field.to == super::plan::NONE => String::new(),
        _ => field.to.clone(),
    };
    vec![option.to_string(), value]
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| (*s).to_string()).collect()
}

//! Unit tests of the pure half: parsing passwd/group text, planning (create, converge,
//! conflicts, removal only of created accounts inside the range), records and argv.

use std::collections::BTreeMap;
use std::path::Path;

use super::command::argv;
use super::etc::Existing;
use super::plan::{plan, records_after, records_before, AccountPlan, Change, Desired, Records};
use crate::rolemap::accounts::{GroupView, UserView};
use crate::rolemap::sample::{group, host, product, user};

const RANGE: (u32, u32) = (20000, 29999);

/// A Debian base plus a foreign account `legacy` (uid/gid 1001) and a user `tv` rolecall
/// made earlier (shell /bin/sh, member of www-data).
const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
# a comment
+nisuser::::::
legacy:x:1001:1001::/home/legacy:/bin/bash
tv:x:20001:20001::/srv/tv:/bin/sh
broken line
";
const GROUP: &str = "root:x:0:
www-data:x:33:tv
adm:x:4:
legacy:x:1001:
tv:x:20001:
";

fn existing() -> Existing {
    Existing::parse(PASSWD, GROUP)
}

fn group(name: &str, gid: u32) -> GroupView {
    GroupView {
        name: name.into(),
        gid,
    }
}

fn user(name: &str, uid: u32, group: &str, groups: &[&str]) -> UserView {
    UserView {
        name: name.into(),
        uid,
        group: group.into(),
        home: format!("/srv/{name}"),
        shell: "/usr/sbin/nologin".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// User `tv` as `PASSWD` has it (uid 20001, home /srv/tv, shell /bin/sh), with primary group
/// `group` and supplementary `groups`.
fn tv_as_on_disk(group: &str, groups: &[&str]) -> UserView {
    UserView {
        shell: "/bin/sh".into(),
        ..user("tv", 20001, group, groups)
    }
}

fn desired(groups: &[GroupView], users: &[UserView]) -> Desired {
    Desired {
        groups: groups.iter().map(|g| (g.name.clone(), g.clone())).collect(),
        users: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
    }
}

/// The plan for these accounts on the host of [`existing`], with no records.
fn plan_fresh(groups: &[GroupView], users: &[UserView]) -> AccountPlan {
    plan(
        &desired(groups, users),
        &existing(),
        &Records::default(),
        RANGE,
    )
}

fn records(users: &[(&str, u32)], groups: &[(&str, u32)]) -> Records {
    let map = |v: &[(&str, u32)]| v.iter().map(|(n, i)| (n.to_string(), *i)).collect();
    Records {
        users: map(users),
        groups: map(groups),
    }
}

fn texts(changes: &[Change]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

#[test]
fn passwd_and_group_text_parse_skipping_comments_nis_and_broken_lines() {
    let e = existing();
    assert_eq!(e.users.len(), 5);
    assert_eq!(e.uid("tv"), Some(20001));
    assert_eq!(e.users["tv"].shell, "/bin/sh");
    assert_eq!(e.users["tv"].home, "/srv/tv");
    assert_eq!(e.gid("www-data"), Some(33));
    assert_eq!(e.user_name(1001), Some("legacy"));
    assert_eq!(e.group_name(4), Some("adm"));
    assert_eq!(e.uid("nisuser"), None);
    assert_eq!(
        e.memberships("tv").into_iter().collect::<Vec<_>>(),
        ["www-data"]
    );
    // The first of two lines with one name or id wins, as with getpwnam/getpwuid.
    let twice = Existing::parse(
        "a:x:5:5::/:/bin/sh\nb:x:5:5::/:/bin/sh\na:x:6:6::/:/bin/sh\n",
        "",
    );
    assert_eq!(twice.uid("a"), Some(5));
    assert_eq!(twice.user_name(5), Some("a"));
}

#[test]
fn new_accounts_are_created_groups_before_users() {
    let p = plan_fresh(
        &[group("radio", 20002)],
        &[user("radio", 20002, "radio", &["www-data"])],
    );
    assert_eq!(p.conflicts, Vec::<String>::new());
    assert_eq!(
        texts(&p.changes),
        [
            "create group radio (gid 20002)",
            "create user radio (uid 20002, group radio, home /srv/radio, shell /usr/sbin/nologin, groups www-data)"
        ]
    );
}

#[test]
fn an_account_as_the_map_says_needs_nothing() {
    let tv = tv_as_on_disk("tv", &["www-data"]);
    let p = plan_fresh(&[group("tv", 20001)], &[tv]);
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn a_changed_shell_home_and_groups_are_converged() {
    let mut tv = user("tv", 20001, "tv", &["adm"]);
    tv.home = "/srv/tv2".into();
    let p = plan_fresh(&[group("tv", 20001)], &[tv]);
    assert_eq!(
        texts(&p.changes),
        ["modify user tv: shell /bin/sh -> /usr/sbin/nologin, home /srv/tv -> /srv/tv2, groups www-data -> adm"]
    );
    let cmd = argv(&p.changes[0], None);
    assert_eq!(
        cmd.argv,
        [
            "usermod",
            "--shell",
            "/usr/sbin/nologin",
            "--home",
            "/srv/tv2",
            "--groups",
            "adm",
            "tv"
        ]
    );
    // No supplementary group at all: usermod --groups "".
    let p = plan_fresh(&[group("tv", 20001)], &[user("tv", 20001, "tv", &[])]);
    let cmd = argv(&p.changes[0], Some(Path::new("/tmp/root")));
    assert_eq!(
        cmd.argv,
        [
            "usermod",
            "--shell",
            "/usr/sbin/nologin",
            "--groups",
            "",
            "--prefix",
            "/tmp/root",
            "tv"
        ]
    );
}

#[test]
fn a_changed_primary_group_is_converged() {
    let tv = tv_as_on_disk("media", &["www-data"]);
    let p = plan_fresh(&[group("tv", 20001), group("media", 20100)], &[tv]);
    assert_eq!(
        texts(&p.changes),
        [
            "create group media (gid 20100)",
            "modify user tv: group tv -> media"
        ]
    );
    assert_eq!(
        argv(&p.changes[1], None).argv,
        ["usermod", "--gid", "media", "tv"]
    );
}

#[test]
fn a_foreign_account_with_another_id_is_a_conflict_left_untouched() {
    let p = plan_fresh(
        &[group("legacy", 20003), group("ok", 20004)],
        &[
            user("legacy", 20003, "legacy", &[]),
            user("ok", 20004, "ok", &[]),
        ],
    );
    assert_eq!(
        p.conflicts,
        [
            "group legacy exists with gid 1001, the map says 20003: left untouched",
            "user legacy exists with uid 1001, the map says 20003: left untouched",
        ]
    );
    // Nothing touches legacy; the unrelated account is still planned (but a reconcile
    // with any conflict changes nothing: see `apply`).
    assert_eq!(
        texts(&p.changes),
        [
            "create group ok (gid 20004)",
            "create user ok (uid 20004, group ok, home /srv/ok, shell /usr/sbin/nologin, groups (none))"
        ]
    );
    assert!(!p.is_empty());
}

#[test]
fn an_id_taken_by_another_name_is_a_conflict() {
    let p = plan_fresh(&[group("radio", 1001)], &[user("radio", 33, "radio", &[])]);
    assert_eq!(
        p.conflicts,
        [
            "group radio: gid 1001 already belongs to group legacy: not created",
            "user radio: uid 33 already belongs to user www-data: not created",
        ]
    );
    assert!(p.changes.is_empty(), "{:?}", p.changes);
}

#[test]
fn a_user_whose_group_conflicts_or_is_missing_is_left_untouched() {
    let p = plan_fresh(
        &[group("legacy", 20005)],
        &[
            user("a", 20006, "legacy", &[]),
            user("b", 20007, "legacy", &["nosuch"]),
        ],
    );
    assert_eq!(p.conflicts.len(), 3, "{:?}", p.conflicts);
    assert!(
        p.conflicts[1].contains("user a: group legacy is in conflict"),
        "{:?}",
        p.conflicts
    );
    let p = plan_fresh(&[group("c", 20008)], &[user("c", 20008, "c", &["nosuch"])]);
    assert_eq!(
        p.conflicts,
        ["user c: group nosuch does not exist on this host and no product of it declares it"]
    );
}

#[test]
fn only_created_accounts_inside_the_range_are_removed() {
    let passwd =
        format!("{PASSWD}old:x:30001:30001::/srv/old:/bin/sh\nadopted:x:20010:20010::/:/bin/sh\n");
    let groups = format!("{GROUP}old:x:30001:\nadopted:x:20010:\n");
    let e = Existing::parse(&passwd, &groups);
    // tv was created by rolecall, inside the range; old too, but outside it; adopted was
    // never created by rolecall; legacy is recorded with another id than it has.
    let rec = records(
        &[("tv", 20001), ("old", 30001), ("legacy", 20011)],
        &[("tv", 20001), ("old", 30001), ("legacy", 20011)],
    );
    let p = plan(&Desired::default(), &e, &rec, RANGE);
    assert_eq!(
        texts(&p.changes),
        ["remove user tv (uid 20001)", "remove group tv (gid 20001)"]
    );
    assert_eq!(argv(&p.changes[0], None).argv, ["userdel", "tv"]);
    assert_eq!(argv(&p.changes[1], None).argv, ["groupdel", "tv"]);
    // Still wanted: nothing is removed.
    let want = desired(&[group("tv", 20001)], &[tv_as_on_disk("tv", &["www-data"])]);
    assert!(plan(&want, &e, &rec, RANGE).is_empty());
}

#[test]
fn a_created_group_still_primary_for_a_remaining_user_is_kept() {
    // rolecall created group tv; user tv (primary group tv) is foreign, not recorded.
    let rec = records(&[], &[("tv", 20001)]);
    let p = plan(&Desired::default(), &existing(), &rec, RANGE);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
}

#[test]
fn records_note_creations_first_and_drop_removed_or_vanished_accounts() {
    let want = desired(
        &[group("radio", 20002)],
        &[user("radio", 20002, "radio", &[])],
    );
    let rec = records(&[("gone", 20009), ("tv", 20001)], &[]);
    let p = plan(&want, &existing(), &rec, RANGE);
    let before = records_before(&rec, &p);
    assert_eq!(
        before.users,
        BTreeMap::from([
            ("gone".into(), 20009),
            ("radio".into(), 20002),
            ("tv".into(), 20001)
        ])
    );
    let after = records_after(&rec, &p, &existing());
    // `gone` is not in the root any more: forgotten; tv stays recorded (still wanted? no:
    // not desired, so it is removed by the plan and dropped).
    assert_eq!(after.users, BTreeMap::from([("radio".into(), 20002)]));
    assert_eq!(after.groups, BTreeMap::from([("radio".into(), 20002)]));
    assert!(texts(&p.changes).contains(&"remove user tv (uid 20001)".to_string()));
}

#[test]
fn useradd_never_creates_a_home_a_user_group_logs_or_subordinate_ids() {
    let c = Change::CreateUser(user("tv", 20001, "tv", &["www-data", "adm"]));
    assert_eq!(
        argv(&c, Some(Path::new("/srv/image"))).argv,
        [
            "useradd",
            "--uid",
            "20001",
            "--gid",
            "tv",
            "--home-dir",
            "/srv/tv",
            "--shell",
            "/usr/sbin/nologin",
            "--no-create-home",
            "--no-user-group",
            "--no-log-init",
            "--key",
            "SUB_UID_COUNT=0",
            "--key",
            "SUB_GID_COUNT=0",
            "--groups",
            "www-data,adm",
            "--prefix",
            "/srv/image",
            "tv"
        ]
    );
    let g = Change::CreateGroup(group("tv", 20001));
    assert_eq!(argv(&g, None).argv, ["groupadd", "--gid", "20001", "tv"]);
}

#[test]
fn the_view_of_several_products_gives_each_account_once() {
    let text = concat!(
        "schema = 1\ngeneration = 1\n",
        product!("a", "a.example.com", "/srv/a"),
        group!("a", "media", 20100),
        product!("b", "b.example.com", "/srv/b"),
        group!("b", "media", 20100),
        group!("b", "b", 20002),
        user!("b", "b", 20002, "b", "/srv/b", "/bin/sh", ["media"]),
        host!("h", "10.0.0.1", "a", ["web"], ["a", "b"]),
    );
    let map = crate::rolemap::load(text.as_bytes()).expect("valid");
    let identity = crate::identity::Identity {
        id: "h".into(),
        address: "10.0.0.1".into(),
        az: "a".into(),
        region: "r".into(),
        instance_type: None,
        ami_id: None,
    };
    let crate::rolemap::Resolution::Assigned(view) = crate::rolemap::resolve(&map, &identity)
    else {
        panic!("not assigned");
    };
    let d = Desired::from_view(&view);
    assert_eq!(d.groups.keys().collect::<Vec<_>>(), ["b", "media"]);
    assert_eq!(d.users.keys().collect::<Vec<_>>(), ["b"]);
}

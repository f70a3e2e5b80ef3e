//! The account files' exception to `allowed_roots` stays exactly four files wide, restores
//! byte for byte with owner and mode, and names resolve from the root, not the host.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::plan::FileState;

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/bash\ntv:x:20001:20001::/srv/tv:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nshadow:x:42:\ntv:x:20001:\n";

/// A scratch root with the four account files (shadow files root:42 0640) and
/// `/etc/hosts`, `/etc/passwd-` that are not account files.
fn scratch() -> (tempfile::TempDir, Fs) {
    let dir = tempfile::tempdir().expect("temp dir");
    let etc = dir.path().join("etc");
    fs::create_dir_all(&etc).expect("etc");
    for (name, text, mode) in [
        ("passwd", PASSWD, 0o644),
        ("group", GROUP, 0o644),
        ("shadow", "root:*:19000:0:99999:7:::\n", 0o640),
        ("gshadow", "root:*::\n", 0o640),
        ("hosts", "127.0.0.1 localhost\n", 0o644),
        ("passwd-", PASSWD, 0o644),
    ] {
        let path = etc.join(name);
        fs::write(&path, text).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    for name in ["shadow", "gshadow"] {
        nix::unistd::chown(&etc.join(name), None, Some(Gid::from_raw(42))).expect("chgrp");
    }
    let fs = Fs::new(dir.path(), &[PathBuf::from("/etc/apache2")]);
    (dir, fs)
}

fn state(path: &Path) -> (Vec<u8>, u32, u32, u32) {
    let m = fs::symlink_metadata(path).expect("stat");
    (
        fs::read(path).expect("read"),
        m.uid(),
        m.gid(),
        m.mode() & 0o7777,
    )
}

#[test]
fn restore_puts_the_four_files_back_byte_for_byte_with_owner_and_mode() {
    let (dir, fs) = scratch();
    let etc = dir.path().join("etc");
    let before: Vec<_> = ["passwd", "group", "shadow", "gshadow"]
        .iter()
        .map(|n| state(&etc.join(n)))
        .collect();
    let snapshot = fs.snapshot_accounts().expect("snapshot");
    fs::write(etc.join("passwd"), "changed\n").expect("write");
    fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o600)).expect("chmod");
    nix::unistd::chown(&etc.join("shadow"), None, Some(Gid::from_raw(0))).expect("chgrp");
    fs::remove_file(etc.join("gshadow")).expect("rm");
    fs::write(etc.join("group"), "grown\n".repeat(100)).expect("write");

    fs.restore_accounts(&snapshot).expect("restore");
    let after: Vec<_> = ["passwd", "group", "shadow", "gshadow"]
        .iter()
        .map(|n| state(&etc.join(n)))
        .collect();
    assert_eq!(after, before);
    let leftovers: Vec<_> = fs::read_dir(&etc)
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".rolecall-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_file_absent_at_the_snapshot_is_removed_again() {
    let (dir, fs) = scratch();
    let gshadow = dir.path().join("etc/gshadow");
    fs::remove_file(&gshadow).expect("rm");
    let snapshot = fs.snapshot_accounts().expect("snapshot");
    fs::write(&gshadow, "tv:!::\n").expect("write");
    fs.restore_accounts(&snapshot).expect("restore");
    assert!(!gshadow.exists());
}

#[test]
fn nothing_but_the_four_account_files_becomes_writable() {
    let (dir, fs) = scratch();
    let etc = dir.path().join("etc");
    let snapshot = fs.snapshot_accounts().expect("snapshot");
    // Other files of /etc, the shadow tools' backups included, are not part of it.
    fs::write(etc.join("hosts"), "edited\n").expect("write");
    fs::write(etc.join("passwd-"), "edited\n").expect("write");
    fs.restore_accounts(&snapshot).expect("restore");
    assert_eq!(fs::read(etc.join("hosts")).expect("read"), b"edited\n");
    assert_eq!(fs::read(etc.join("passwd-")).expect("read"), b"edited\n");
    // The ordinary writer still refuses the account files: they are not allowed roots.
    let file = FileState {
        content: b"x\n"[..].into(),
        owner: "root".into(),
        group: "root".into(),
        mode: 0o644,
    };
    for logical in ACCOUNT_FILES {
        let err = fs
            .transaction()
            .write(Path::new(logical), &file)
            .expect_err("written");
        assert!(matches!(err, Error::NotAllowed { .. }), "{logical}: {err}");
        let err = fs
            .transaction()
            .remove(Path::new(logical))
            .expect_err("removed");
        assert!(matches!(err, Error::NotAllowed { .. }), "{logical}: {err}");
    }
    assert_eq!(
        fs::read_to_string(etc.join("passwd")).expect("read"),
        PASSWD
    );
}

#[test]
fn a_symlink_at_an_account_file_is_refused_and_never_followed() {
    let (dir, fs) = scratch();
    let etc = dir.path().join("etc");
    let snapshot = fs.snapshot_accounts().expect("snapshot");
    let target = dir.path().join("elsewhere");
    fs::write(&target, "target\n").expect("write");
    fs::remove_file(etc.join("passwd")).expect("rm");
    std::os::unix::fs::symlink(&target, etc.join("passwd")).expect("symlink");
    let err = fs
        .restore_accounts(&snapshot)
        .expect_err("restored through a symlink");
    assert!(matches!(err, Error::Symlink { .. }), "{err}");
    assert_eq!(fs::read(&target).expect("read"), b"target\n");
    // The other three were still restored.
    assert_eq!(fs::read_to_string(etc.join("group")).expect("read"), GROUP);
    assert!(matches!(fs.snapshot_accounts(), Err(Error::Symlink { .. })));
}

#[test]
fn names_resolve_from_the_roots_files_not_the_hosts() {
    let (_dir, fs) = scratch();
    assert!(!fs.is_host_root());
    assert!(fs.prefix().is_some());
    let names = fs.names().expect("names");
    assert_eq!(names.uid("tv"), Some(Uid::from_raw(20001)));
    assert_eq!(names.gid("tv"), Some(Gid::from_raw(20001)));
    assert_eq!(names.user_name(20001), "tv");
    assert_eq!(names.group_name(42), "shadow");
    // Present on a Debian build host, absent from this root.
    assert_eq!(names.uid("www-data"), None);
    assert_eq!(names.user_name(33), "33");
    assert_eq!(names.uid("33"), Some(Uid::from_raw(33)));
    let path = Path::new("/etc/apache2/x.conf");
    assert!(fs.check_owner(Some("tv"), Some("tv"), path).is_ok());
    let err = fs
        .check_owner(Some("www-data"), None, path)
        .expect_err("host user accepted");
    assert!(err.to_string().contains("www-data"), "{err}");
}

#[test]
fn the_host_root_uses_nss_and_no_prefix() {
    let fs = Fs::new(Path::new("/"), &[]);
    assert!(fs.is_host_root());
    assert_eq!(fs.prefix(), None);
    assert!(fs.names().expect("names").is_nss());
}

#[test]
fn a_root_without_account_files_uses_the_hosts_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs = Fs::new(dir.path(), &[]);
    let names = fs.names().expect("names");
    assert!(names.is_nss());
    assert_eq!(names.uid("root"), Some(Uid::from_raw(0)));
    // With only a passwd, groups still come from the host.
    fs::create_dir_all(dir.path().join("etc")).expect("etc");
    fs::write(dir.path().join("etc/passwd"), PASSWD).expect("passwd");
    let names = fs.names().expect("names");
    assert!(!names.is_nss());
    assert_eq!(names.uid("tv"), Some(Uid::from_raw(20001)));
    assert_eq!(names.gid("root"), Some(Gid::from_raw(0)));
    assert_eq!(names.gid("tv"), None);
}

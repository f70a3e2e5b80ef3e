use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::state::write_state_mode;
use super::*;

/// A scratch `--root` allowing /etc/apache2 and the file /etc/memcached.conf.
struct Root {
    dir: tempfile::TempDir,
    fs: Fs,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().expect("temp dir");
        let allowed = [
            PathBuf::from("/etc/apache2"),
            PathBuf::from("/etc/memcached.conf"),
        ];
        let fs = Fs::new(&dir.path().join("root"), &allowed);
        Root { dir, fs }
    }

    fn path(&self, logical: &str) -> PathBuf {
        self.fs.physical(Path::new(logical))
    }

    /// Make logical directory `logical` a symlink to a directory outside the root (its
    /// parents created); returns that directory and the link's physical path.
    fn link_elsewhere(&self, logical: &str) -> (PathBuf, PathBuf) {
        let elsewhere = self.dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).expect("elsewhere");
        let link = self.path(logical);
        std::fs::create_dir_all(link.parent().expect("a parent")).expect("parents");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        (elsewhere, link)
    }

    /// Assert that nothing exists at `logical`, saying `why` nothing should.
    #[track_caller]
    fn assert_absent(&self, logical: &str, why: &str) {
        assert!(!self.path(logical).exists(), "{logical} exists: {why}");
    }

    fn write(&self, logical: &str, file: &FileState) -> Result<(), Error> {
        let mut txn = self.fs.transaction();
        txn.write(Path::new(logical), file)?;
        txn.sync()
    }

    /// Every name under the temp dir (root and outside), for "nothing else was written".
    fn names(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        list(self.dir.path(), &mut out);
        out.sort();
        out
    }
}

fn list(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("list").flatten() {
        out.push(e.path());
        if e.file_type().expect("type").is_dir() {
            list(&e.path(), out);
        }
    }
}

fn file(content: &str, mode: u32) -> FileState {
    FileState {
        content: content.as_bytes().into(),
        owner: "root".into(),
        group: "root".into(),
        mode,
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn a_file_written_reads_back_as_written_and_its_directories_are_0755() {
    let root = Root::new();
    let vhost = "/etc/apache2/sites-enabled/a.conf";
    for mode in [0o644, 0o640, 0o4755, 0o600] {
        let want = file(&format!("mode {mode:o}\n"), mode);
        root.write(vhost, &want).expect("written");
        let got = root.fs.snapshot(Path::new(vhost)).expect("snapshot");
        assert_eq!(got, DiskState::File(want), "mode {mode:o}");
    }
    for dir in ["/etc", "/etc/apache2", "/etc/apache2/sites-enabled"] {
        assert_eq!(mode_of(&root.path(dir)), 0o755, "{dir}");
    }
    let left: Vec<_> = root.names().into_iter().filter(|p| is_temp(p)).collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

fn is_temp(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".rolecall-"))
}

#[test]
fn issue15_a_symlinked_parent_below_the_allowed_root_is_refused_for_reads_and_writes() {
    let root = Root::new();
    let (_, link) = root.link_elsewhere("/etc/apache2/sites-enabled");
    let before = root.names();

    let vhost = "/etc/apache2/sites-enabled/a.conf";
    let err = root.write(vhost, &file("x\n", 0o644)).expect_err("written");
    assert!(
        matches!(&err, Error::Symlink { path } if path == &link),
        "{err:?}"
    );
    assert!(err.to_string().contains("sites-enabled"), "{err}");
    let deeper = "/etc/apache2/sites-enabled/sub/a.conf";
    let err = root
        .write(deeper, &file("x\n", 0o644))
        .expect_err("written");
    assert!(
        matches!(&err, Error::Symlink { path } if path == &link),
        "{err:?}"
    );
    assert_eq!(root.names(), before, "something was written");

    let err = root.fs.snapshot(Path::new(vhost)).expect_err("read");
    assert!(
        matches!(&err, Error::Symlink { path } if path == &link),
        "{err:?}"
    );
    let err = root
        .fs
        .transaction()
        .remove(Path::new(vhost))
        .expect_err("removed");
    assert!(matches!(err, Error::Symlink { .. }), "{err:?}");
    let err = root.fs.sweep([Path::new("/etc/apache2/sites-enabled")]);
    assert!(matches!(err, Err(Error::Symlink { .. })), "{err:?}");
}

#[test]
fn issue15_a_symlinked_allowed_root_is_refused() {
    let root = Root::new();
    let (elsewhere, _) = root.link_elsewhere("/etc/apache2");
    let err = root
        .write("/etc/apache2/a.conf", &file("x\n", 0o644))
        .expect_err("written through the allowed root");
    assert!(matches!(err, Error::Symlink { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(&elsewhere).expect("list").count(), 0);
}

#[test]
fn symlinks_above_the_allowed_roots_and_in_the_root_prefix_are_the_operators() {
    let dir = tempfile::tempdir().expect("temp dir");
    let real_etc = dir.path().join("mounted-etc");
    let real_root = dir.path().join("real-root");
    std::fs::create_dir_all(&real_etc).expect("etc");
    std::fs::create_dir_all(&real_root).expect("root");
    std::os::unix::fs::symlink(&real_root, dir.path().join("root")).expect("root link");
    std::os::unix::fs::symlink(&real_etc, real_root.join("etc")).expect("etc link");
    let fs = Fs::new(
        &dir.path().join("root"),
        &[PathBuf::from("/etc/memcached.conf")],
    );
    let mut txn = fs.transaction();
    txn.write(Path::new("/etc/memcached.conf"), &file("-m 64\n", 0o644))
        .expect("written through the operator's symlinks");
    txn.sync().expect("synced");
    assert_eq!(
        std::fs::read(real_etc.join("memcached.conf")).expect("file"),
        b"-m 64\n"
    );
}

#[test]
fn a_file_where_a_directory_should_be_is_named() {
    let root = Root::new();
    std::fs::create_dir_all(root.path("/etc/apache2")).expect("apache2");
    std::fs::write(root.path("/etc/apache2/sites-enabled"), "a file\n").expect("file");
    let err = root
        .write("/etc/apache2/sites-enabled/a.conf", &file("x\n", 0o644))
        .expect_err("written");
    assert!(matches!(err, Error::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains("sites-enabled"), "{err}");
}

#[test]
fn a_symlink_at_the_destination_is_refused_and_its_target_untouched() {
    let root = Root::new();
    let target = root.dir.path().join("precious");
    std::fs::write(&target, "keep\n").expect("target");
    std::fs::create_dir_all(root.path("/etc/apache2")).expect("apache2");
    let vhost = "/etc/apache2/a.conf";
    std::os::unix::fs::symlink(&target, root.path(vhost)).expect("symlink");
    assert_eq!(
        root.fs.snapshot(Path::new(vhost)).expect("snapshot"),
        DiskState::Symlink
    );
    let err = root.write(vhost, &file("x\n", 0o644)).expect_err("written");
    assert!(matches!(err, Error::Symlink { .. }), "{err:?}");
    assert_eq!(std::fs::read(&target).expect("target"), b"keep\n");
    assert!(std::fs::symlink_metadata(root.path(vhost))
        .expect("link")
        .file_type()
        .is_symlink());
    assert!(!root.names().iter().any(|p| is_temp(p)), "temp file left");
}

#[test]
fn a_hard_linked_destination_is_replaced_not_written_through() {
    let root = Root::new();
    let vhost = "/etc/apache2/a.conf";
    root.write(vhost, &file("old\n", 0o644)).expect("written");
    let outside = root.dir.path().join("outside");
    std::fs::hard_link(root.path(vhost), &outside).expect("hard link");
    root.write(vhost, &file("new\n", 0o644)).expect("written");
    assert_eq!(std::fs::read(&outside).expect("outside"), b"old\n");
    assert_eq!(std::fs::read(root.path(vhost)).expect("vhost"), b"new\n");
    assert_eq!(std::fs::metadata(&outside).expect("stat").nlink(), 1);
}

#[test]
fn paths_outside_the_allowed_roots_or_unclean_are_refused() {
    let root = Root::new();
    for bad in [
        "/etc/passwd",
        "/etc/apache2/../passwd",
        "etc/apache2/a.conf",
        "/etc/memcached.conf.d/x",
    ] {
        let err = root.write(bad, &file("x\n", 0o644)).expect_err(bad);
        assert!(matches!(err, Error::NotAllowed { .. }), "{bad}: {err:?}");
    }
    let err = root.fs.snapshot(Path::new("/etc/apache2/../../x"));
    assert!(matches!(err, Err(Error::NotAllowed { .. })), "{err:?}");
}

#[test]
fn remove_takes_a_file_away_and_absent_is_fine() {
    let root = Root::new();
    let vhost = "/etc/apache2/sites-enabled/a.conf";
    root.write(vhost, &file("x\n", 0o644)).expect("written");
    let mut txn = root.fs.transaction();
    txn.remove(Path::new(vhost)).expect("removed");
    txn.remove(Path::new(vhost)).expect("absent is fine");
    txn.remove(Path::new("/etc/apache2/missing/b.conf"))
        .expect("a missing directory is fine");
    txn.sync().expect("synced");
    root.assert_absent(vhost, "it was removed");
    root.assert_absent("/etc/apache2/missing", "remove creates no directory");
}

#[test]
fn an_unknown_owner_is_refused_before_anything_is_created() {
    let root = Root::new();
    let mut bad = file("x\n", 0o644);
    bad.owner = "no-such-user-rolecall".into();
    let err = root
        .write("/etc/apache2/a.conf", &bad)
        .expect_err("written");
    assert!(matches!(err, Error::UnknownOwner { .. }), "{err:?}");
    root.assert_absent("/etc", "a refused write creates nothing");
    let files = [
        (Some("root"), Some("root"), Path::new("/a")),
        (None, Some("nogroup-x"), Path::new("/b")),
    ];
    let err = root.fs.check_owners(files).expect_err("unknown group");
    assert!(err.to_string().contains("nogroup-x"), "{err}");
}

/// A stale temp file of a dead writer (pid above pid_max) named like ours.
const STALE: &str = ".rolecall-tmp-8388609-0123456789abcdef";

#[test]
fn issue15_sweep_removes_only_dead_writers_regular_temp_files() {
    let root = Root::new();
    let dir = root.path("/etc/apache2/sites-enabled");
    std::fs::create_dir_all(&dir).expect("dir");
    let target = root.dir.path().join("target");
    std::fs::write(&target, "keep\n").expect("target");
    std::fs::write(dir.join(STALE), "half a vhost").expect("stale");
    std::fs::write(dir.join(".rolecall-Ab3xY9"), "old version").expect("legacy");
    let live = ".rolecall-tmp-1-0123456789abcdef";
    std::fs::write(dir.join(live), "pid 1 is alive").expect("live");
    let link = ".rolecall-tmp-8388609-aaaaaaaaaaaaaaaa";
    std::os::unix::fs::symlink(&target, dir.join(link)).expect("symlink");
    std::fs::create_dir(dir.join(".rolecall-tmp-8388609-bbbbbbbbbbbbbbbb")).expect("dir");
    std::fs::write(dir.join("rolecall-a.conf"), "a vhost").expect("vhost");

    let removed = root
        .fs
        .sweep([
            Path::new("/etc/apache2/sites-enabled"),
            Path::new("/etc/apache2/none"),
        ])
        .expect("swept");
    assert_eq!(removed, 2);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            ".rolecall-tmp-1-0123456789abcdef",
            ".rolecall-tmp-8388609-aaaaaaaaaaaaaaaa",
            ".rolecall-tmp-8388609-bbbbbbbbbbbbbbbb",
            "rolecall-a.conf"
        ]
    );
    assert_eq!(std::fs::read(&target).expect("target"), b"keep\n");
    root.assert_absent("/etc/apache2/none", "sweep creates no directory");
}

/// Enough directories for `snapshot_all`, `snapshot_all_as` and `stat_all` to work on two
/// threads (and `sweep` on one): a dead writer's temp file in the first and in the last
/// directory goes, every file reads as it does alone, and a symlinked directory in the
/// second half is refused by each, named, and never followed.
#[test]
fn many_directories_are_swept_read_and_stated_on_two_threads_as_on_one() {
    let root = Root::new();
    let n = 2 * MIN_SHARE + 10;
    let dirs: Vec<PathBuf> = (0..n)
        .map(|i| PathBuf::from(format!("/etc/apache2/d{i:03}")))
        .collect();
    let files: Vec<PathBuf> = dirs.iter().map(|d| d.join("a.conf")).collect();
    for (i, f) in files.iter().enumerate() {
        root.write(&f.to_string_lossy(), &file(&format!("site {i}\n"), 0o644))
            .expect("written");
    }
    let (first, last) = (
        root.path("/etc/apache2/d000"),
        root.path(&dirs[n - 1].to_string_lossy()),
    );
    for dir in [&first, &last] {
        std::fs::write(dir.join(STALE), "half a vhost").expect("stale");
    }
    let swept = root.fs.sweep(dirs.iter().map(PathBuf::as_path));
    assert_eq!(swept.expect("swept"), 2);
    assert!(!first.join(STALE).exists() && !last.join(STALE).exists());

    let all = root.fs.snapshot_all(files.iter().map(PathBuf::as_path));
    let all = all.expect("read");
    assert_eq!(all.len(), n);
    for f in &files {
        assert_eq!(
            all[f],
            root.fs.snapshot(f).expect("read alone"),
            "{}",
            f.display()
        );
    }
    // `keep` is handed each path with its own state, and what it returns is what is kept.
    let kept = root
        .fs
        .snapshot_all_as(files.iter().map(PathBuf::as_path), |path, state| {
            (path.to_path_buf(), state)
        });
    let kept = kept.expect("read");
    assert_eq!(kept.len(), n);
    for (f, (handed, state)) in &kept {
        assert_eq!((handed, state), (f, &all[f]), "{}", f.display());
    }
    // Given in reverse: each directory is closed once passed, and reopened if named again.
    let stats = root.fs.stat_all(files.iter().rev().map(PathBuf::as_path));
    let stats = stats.expect("stated");
    assert_eq!(stats.len(), n);
    for f in &files {
        let meta = std::fs::symlink_metadata(root.path(&f.to_string_lossy())).expect("meta");
        let stat = stats[f].as_ref().expect("a regular file");
        let seen = (stat.stamp.ino, stat.stamp.size, stat.stamp.ctime);
        let size = i64::try_from(meta.len()).expect("size");
        let want = (meta.ino(), size, (meta.ctime(), meta.ctime_nsec()));
        assert_eq!(seen, want, "{}", f.display());
    }

    let outside = root.dir.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::write(outside.join(STALE), "not ours to touch").expect("outside file");
    std::fs::remove_dir_all(&last).expect("remove");
    std::os::unix::fs::symlink(&outside, &last).expect("symlink");
    let refused = |err: Error| matches!(&err, Error::Symlink { path } if path == &last);
    let swept = root.fs.sweep(dirs.iter().map(PathBuf::as_path));
    assert!(refused(swept.expect_err("sweep through a symlink")));
    let read = root.fs.snapshot_all(files.iter().map(PathBuf::as_path));
    assert!(refused(read.expect_err("read through a symlink")));
    let stated = root.fs.stat_all(files.iter().map(PathBuf::as_path));
    assert!(refused(stated.expect_err("stat through a symlink")));
    assert!(
        outside.join(STALE).exists(),
        "the sweep followed the symlink"
    );
}

#[test]
fn issue15_a_transaction_sweeps_a_directory_before_its_first_write_there() {
    let root = Root::new();
    let dir = root.path("/etc/apache2");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join(STALE), "half a vhost").expect("stale");
    root.write("/etc/apache2/a.conf", &file("x\n", 0o644))
        .expect("written");
    assert!(!dir.join(STALE).exists(), "the stale temp file stayed");
}

#[test]
fn issue15_state_files_are_never_read_or_written_through_a_symlink() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("target");
    std::fs::write(&target, "{\"a\": 1}").expect("target");
    let status = dir.path().join("state/status.json");
    std::fs::create_dir_all(dir.path().join("state")).expect("state");
    std::os::unix::fs::symlink(&target, &status).expect("symlink");

    let err = read_json::<serde_json::Value>(&status).expect_err("read through");
    assert!(
        matches!(&err, Error::Symlink { path } if path == &status),
        "{err:?}"
    );
    let err = write_json(&status, &2).expect_err("written through");
    assert!(
        matches!(&err, Error::Symlink { path } if path == &status),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&target).expect("target"), b"{\"a\": 1}");
    let dangling = dir.path().join("state/journal");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
    let err = write_state_mode(&dangling, b"x", 0o600).expect_err("created through");
    assert!(matches!(err, Error::Symlink { .. }), "{err:?}");
    assert!(!dir.path().join("nowhere").exists());
    let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "a temp file was left: {names:?}");
}

/// A state file written as it is serialized: a value that fails half way (a map key JSON
/// cannot have) leaves the old file whole and no temp file; one that serializes is
/// written whole, pretty-printed.
#[test]
fn a_state_file_serialized_into_place_is_whole_or_not_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let records = dir.path().join("state/managed.json");
    write_json(&records, &[1, 2]).expect("written");
    let bad: std::collections::BTreeMap<(u8, u8), u8> = [((0, 0), 1)].into();
    let big: Vec<String> = (0..20_000).map(|i| format!("entry {i}")).collect();
    let err = write_json(&records, &(&big, &bad)).expect_err("no JSON for a tuple key");
    assert!(
        matches!(&err, Error::Json { path, .. } if path == &records),
        "{err:?}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["managed.json"], "a temp file was left");
    let kept: serde_json::Value = read_json(&records).expect("read").expect("there");
    assert_eq!(kept, serde_json::json!([1, 2]));

    write_json(&records, &big).expect("written");
    let text = std::fs::read_to_string(&records).expect("read");
    assert_eq!(text, serde_json::to_string_pretty(&big).expect("JSON"));
}

/// A staged state file: the old one stays in place until the commit, a staged one dropped
/// leaves nothing behind, and a symlink planted at the name after staging is refused at
/// the commit (its target untouched, the temp file removed).
#[test]
fn a_staged_state_file_takes_its_name_only_when_committed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let settled = state.join("settled.json");
    let names = || {
        let mut names: Vec<_> = std::fs::read_dir(&state)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
            .collect();
        names.sort();
        names
    };
    write_json(&settled, &1).expect("written");

    let staged = stage_shortcut_json(&settled, &2).expect("staged");
    assert_eq!(read_json::<u8>(&settled).expect("read"), Some(1));
    assert_eq!(
        names().len(),
        2,
        "the staged file is under a temp name: {:?}",
        names()
    );
    drop(staged);
    assert_eq!(
        names(),
        ["settled.json"],
        "a dropped stage left its temp file"
    );

    stage_shortcut_json(&settled, &3)
        .expect("staged")
        .commit()
        .expect("committed");
    assert_eq!(read_json::<u8>(&settled).expect("read"), Some(3));
    assert_eq!(names(), ["settled.json"]);

    let staged = stage_shortcut_json(&settled, &4).expect("staged");
    let target = dir.path().join("target");
    std::fs::write(&target, "kept").expect("target");
    std::fs::remove_file(&settled).expect("removed");
    std::os::unix::fs::symlink(&target, &settled).expect("symlink");
    let err = staged.commit().expect_err("committed over a symlink");
    assert!(
        matches!(&err, Error::Symlink { path } if path == &settled),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&target).expect("target"), b"kept");
    assert_eq!(
        names(),
        ["settled.json"],
        "a refused commit left its temp file"
    );
}

#[test]
fn state_files_get_their_mode_and_missing_directories_0755() {
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = dir.path().join("var/lib/rolecall/journal");
    write_state_mode(&journal, b"secret", 0o600).expect("written");
    assert_eq!(mode_of(&journal), 0o600);
    assert_eq!(
        read_state(&journal).expect("read"),
        Some(b"secret".to_vec())
    );
    let status = dir.path().join("var/lib/rolecall/status.json");
    write_json(&status, &1).expect("written");
    assert_eq!(mode_of(&status), 0o644);
    for d in ["var", "var/lib", "var/lib/rolecall"] {
        assert_eq!(mode_of(&dir.path().join(d)), 0o755, "{d}");
    }
    assert_eq!(read_state(&dir.path().join("none")).expect("read"), None);
}

#[test]
fn create_new_sets_the_mode_and_never_replaces_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("fleet.key");
    create_new(&key, b"secret", 0o600).expect("created");
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(std::fs::read(&key).expect("read"), b"secret");

    let err = create_new(&key, b"other", 0o600).expect_err("exists");
    assert!(err.to_string().contains("fleet.key"), "{err}");
    assert_eq!(std::fs::read(&key).expect("read"), b"secret", "overwritten");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["fleet.key"], "a temporary file was left behind");
}

#[test]
fn a_directory_found_missing_is_created_later_in_the_same_transaction() {
    let root = Root::new();
    let vhost = Path::new("/etc/apache2/sites-enabled/a.conf");
    let mut txn = root.fs.transaction();
    assert_eq!(txn.snapshot(vhost).expect("snapshot"), DiskState::Absent);
    txn.write(vhost, &file("x\n", 0o644)).expect("written");
    txn.sync().expect("synced");
    assert!(matches!(txn.snapshot(vhost), Ok(DiskState::File(_))));
    let other = Path::new("/etc/apache2/conf.d/b.conf");
    assert_eq!(txn.snapshot(other).expect("snapshot"), DiskState::Absent);
    txn.write(other, &file("y\n", 0o644)).expect("written");
    assert!(matches!(txn.snapshot(other), Ok(DiskState::File(_))));
}

/// Sorted by their bytes, the paths in and under each directory stand together, whatever
/// names sort between `/` and the next byte (`-`, `.`), as `Fs::in_turn` needs to close
/// each directory once.
#[test]
fn paths_sorted_by_directory_keep_each_directory_together() {
    let names = [
        "/etc/a/b/x.conf",
        "/etc/a/b-c/y.conf",
        "/etc/a/b.d",
        "/etc/a/b/c/w.conf",
        "/etc/a/b/z.conf",
        "/etc/a/b0/v.conf",
        "/etc/a/b/c-d/u.conf",
        "/etc/a/b",
    ];
    let mut paths: Vec<&Path> = names.iter().map(Path::new).collect();
    by_directory(&mut paths);
    for dir in paths.iter().filter_map(|p| p.parent()) {
        let under: Vec<usize> = (0..paths.len())
            .filter(|&i| paths[i].starts_with(dir))
            .collect();
        let (first, last) = (under[0], under[under.len() - 1]);
        assert_eq!(under.len(), last - first + 1, "{dir:?} split in {paths:?}");
    }
}

/// A web host's batch, 500 vhosts in one directory and 500 directories of one file each,
/// is cut where each side has about as many directories to open as files to stat, not at
/// its middle; a batch in one directory is cut at its middle.
#[test]
fn a_batch_is_cut_where_both_threads_have_as_much_to_do() {
    let vhosts: Vec<PathBuf> = (0..500)
        .map(|i| PathBuf::from(format!("/etc/apache2/sites-enabled/p{i}.conf")))
        .collect();
    let envs: Vec<PathBuf> = (0..500)
        .map(|i| PathBuf::from(format!("/etc/rolecall/products/p{i}/database.env")))
        .collect();
    let mut paths: Vec<&Path> = vhosts.iter().chain(&envs).map(PathBuf::as_path).collect();
    by_directory(&mut paths);
    let cut = balanced_cut(&paths);
    // 500 + 500 × 3 units: the first side takes the vhosts (500) and 167 directories (501).
    assert_eq!(cut, 500 + 167, "cut at {:?}", paths[cut]);

    let one_dir: Vec<&Path> = vhosts.iter().map(PathBuf::as_path).collect();
    // Its first path opens the directory too: 502 units, cut after 249 paths (251).
    assert_eq!(balanced_cut(&one_dir), 249);
    assert_eq!(balanced_cut(&[]), 0);
    assert_eq!(balanced_cut(&one_dir[..1]), 1);
}

/// The journal's write removes the settled record first, in the same directory, so that
/// the fsync naming the journal makes the removal durable too (issue 13). A record already
/// gone is fine; one that cannot be removed (a directory at its name) is an error, and
/// nothing is written.
#[test]
fn a_state_file_written_after_removing_another_of_its_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let (journal, settled) = (state.join("journal"), state.join("settled.json"));
    std::fs::write(&settled, b"{}").expect("settled");
    write_state_removing(&journal, b"one", 0o600, "settled.json").expect("written");
    assert!(!settled.exists(), "the settled record stayed");
    assert_eq!(std::fs::read(&journal).expect("journal"), b"one");
    let mode = std::fs::metadata(&journal)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    write_state_removing(&journal, b"two", 0o600, "settled.json").expect("nothing to remove");
    assert_eq!(std::fs::read(&journal).expect("journal"), b"two");

    std::fs::create_dir(&settled).expect("a directory in the way");
    let err = write_state_removing(&journal, b"three", 0o600, "settled.json").expect_err("removed");
    assert!(err.to_string().contains("settled.json"), "{err}");
    assert_eq!(
        std::fs::read(&journal).expect("journal"),
        b"two",
        "written anyway"
    );
}

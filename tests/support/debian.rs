//! Debian 12 roots made with debootstrap: built once, kept as tarballs in the CI cache
//! (tests/run.sh's `/var/cache/rolecall-ci`), and unpacked fresh for each test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::fcntl::{Flock, FlockArg};
use tempfile::TempDir;

use super::{output, require_program, run_ok};
use crate::fixture::{describe, stdout};

/// Where CI keeps what survives between runs (tests/run.sh): the root tarballs.
pub const CACHE_DIR: &str = "/var/cache/rolecall-ci";
/// The Debian mirror debootstrap uses (`ROLECALL_DEBIAN_MIRROR` overrides it).
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// One kind of cached root.
pub struct RootSpec {
    /// The tarball's name in the cache: bump its version suffix whenever `include` or
    /// `prepare` change, so no cache keeps an old root under the new recipe.
    pub name: &'static str,
    /// Packages debootstrap installs on top of minbase (with their dependencies). debootstrap
    /// installs them with a `policy-rc.d` that refuses every service start, so nothing runs
    /// while the root is built.
    pub include: &'static [&'static str],
    /// Runs on the finished root before it is packed.
    pub prepare: fn(&Path),
}

/// Whether the tests run as root, which chroot, dpkg, debootstrap and namespaces need.
#[track_caller]
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (chroot, dpkg, debootstrap, namespaces): run the suite as root, as tests/run.sh does in CI"
    );
}

/// The cached tarball of `spec`, built first if missing. Builders take a lock, so tests
/// and test runs that need the same root at once debootstrap it only once.
pub fn tarball(spec: &RootSpec) -> PathBuf {
    let tarball = Path::new(CACHE_DIR).join(spec.name);
    if tarball.is_file() {
        return tarball;
    }
    fs::create_dir_all(CACHE_DIR).expect("create the cache dir");
    let lock_path = Path::new(CACHE_DIR).join(format!(".{}.lock", spec.name));
    let file = fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", lock_path.display()));
    let _lock = Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", lock_path.display()));
    if tarball.is_file() {
        return tarball;
    }
    let debootstrap = require_program(
        "debootstrap",
        "apt-get install debootstrap (tests/run.sh does)",
    );
    let work = tempfile::Builder::new()
        .prefix("debootstrap-")
        .tempdir_in(CACHE_DIR)
        .expect("tempdir");
    let root = work.path().join("root");
    let mirror = std::env::var("ROLECALL_DEBIAN_MIRROR").unwrap_or_else(|_| DEBIAN_MIRROR.into());
    run_ok(
        Command::new(debootstrap)
            .arg("--variant=minbase")
            .arg(format!("--include={}", spec.include.join(",")))
            .arg("bookworm")
            .arg(&root)
            .arg(mirror),
    );
    // The downloaded .debs (a sixth of the root) are not needed to use it.
    let archives = root.join("var/cache/apt/archives");
    for entry in fs::read_dir(&archives).expect("read the apt archives") {
        let path = entry.expect("dir entry").path();
        if path.extension() == Some("deb".as_ref()) {
            fs::remove_file(&path).expect("remove a cached .deb");
        }
    }
    (spec.prepare)(&root);
    let partial = work.path().join("root.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-cf"])
            .arg(&partial)
            .arg("."),
    );
    fs::rename(&partial, &tarball).expect("move the tarball into the cache");
    tarball
}

/// A fresh copy of a Debian root, removed when dropped.
pub struct DebianRoot {
    dir: TempDir,
}

impl DebianRoot {
    /// Unpacks `tarball` into a new temp dir.
    pub fn new(tarball: &Path) -> DebianRoot {
        let dir = tempfile::Builder::new()
            .prefix("rolecall-debian12-")
            .tempdir()
            .expect("tempdir");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(dir.path())
                .arg("-xf")
                .arg(tarball),
        );
        DebianRoot { dir }
    }

    /// The root directory, as seen from outside.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `path` (absolute inside the root) as seen from outside.
    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }

    /// Writes `text` to `path` (absolute inside the root), creating its directories.
    pub fn write(&self, path: &str, text: &str) {
        let file = self.path(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        fs::write(&file, text).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    }

    /// Runs `argv` in the root (chroot, no namespaces) with a clean environment.
    pub fn run(&self, argv: &[&str]) -> Output {
        output(
            Command::new(require_program("chroot", "apt-get install coreutils"))
                .arg(self.dir.path())
                .args([
                    "/usr/bin/env",
                    "-i",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    "LC_ALL=C",
                ])
                .args(argv),
        )
    }

    /// [`DebianRoot::run`] that must succeed; returns stdout.
    #[track_caller]
    pub fn run_ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "in the Debian root: {argv:?}\n{}",
            describe(&out)
        );
        stdout(&out)
    }

    /// Each of `paths` (absolute inside the root) exists.
    #[track_caller]
    pub fn assert_exists(&self, paths: &[&str]) {
        for path in paths {
            assert!(
                self.path(path).exists(),
                "{path} missing in the Debian root"
            );
        }
    }

    /// None of `paths` (absolute inside the root) exists.
    #[track_caller]
    pub fn assert_absent(&self, paths: &[&str]) {
        for path in paths {
            assert!(!self.path(path).exists(), "{path} still in the Debian root");
        }
    }
}

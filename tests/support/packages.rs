//! The `.deb` and `.rpm` under test: `packaging/build.sh --fast` builds them once per test
//! binary (the packaging and boot tests share them), and tests read stable copies.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nix::fcntl::{Flock, FlockArg};

use crate::fixture::{describe, stdout};

/// The `.deb` and `.rpm` that `packaging/build.sh` built in this run.
pub struct Packages {
    /// The Debian package.
    pub deb: PathBuf,
    /// The RPM package.
    pub rpm: PathBuf,
}

static PACKAGES: OnceLock<Result<Packages, String>> = OnceLock::new();

/// Builds the packages on first use; every later caller gets the same files (or the same
/// build failure).
pub fn packages() -> &'static Packages {
    match PACKAGES.get_or_init(build_packages) {
        Ok(packages) => packages,
        Err(message) => panic!("{message}"),
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn build_packages() -> Result<Packages, String> {
    // Other test runs share the target dir: build.sh clears the .rpm output directory
    // before generating into it, and a package being rewritten must not be read.
    let lock_path = std::env::temp_dir().join("rolecall-packaging-build.lock");
    let file = fs::File::create(&lock_path)
        .map_err(|e| format!("creating {}: {e}", lock_path.display()))?;
    let _lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking {}: {e}", lock_path.display()))?;
    let built = run_build_sh()?;
    // Tests read stable copies: a later run replaces them by rename, never in place.
    let target = built.deb.ancestors().nth(2).ok_or("unexpected .deb path")?;
    let dir = target.join("packages-under-test");
    Ok(Packages {
        deb: stable_copy(&built.deb, &dir, "rolecall.deb")?,
        rpm: stable_copy(&built.rpm, &dir, "rolecall.rpm")?,
    })
}

fn stable_copy(from: &Path, dir: &Path, name: &str) -> Result<PathBuf, String> {
    let to = dir.join(name);
    let partial = dir.join(format!(".{name}.{}", std::process::id()));
    fs::create_dir_all(dir)
        .and_then(|()| fs::copy(from, &partial))
        .and_then(|_| fs::rename(&partial, &to))
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
    Ok(to)
}

fn run_build_sh() -> Result<Packages, String> {
    let mut command = Command::new("bash");
    command
        .args(["packaging/build.sh", "--fast"])
        .current_dir(repo());
    // The build must see the environment a shell would, not the one cargo gives a test
    // (CARGO_PKG_*, CARGO_MANIFEST_DIR, LD_LIBRARY_PATH, ...): build scripts that watch
    // such variables would otherwise rebuild the release dependencies here, and again in
    // the next plain `cargo build --release`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let keep = matches!(name.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR");
        if !keep && (name.starts_with("CARGO") || name == "LD_LIBRARY_PATH" || name == "OUT_DIR") {
            command.env_remove(&name);
        }
    }
    // Under `cargo test --release` this process's cargo holds the release directory's
    // lock, and the binary it built is the one to package.
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_rolecall")).parent();
    if profile_dir.and_then(Path::file_name) == Some("release".as_ref()) {
        command.arg("--no-build");
    }
    let out = command
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("packaging/build.sh failed\n{}", describe(&out)));
    }
    let text = stdout(&out);
    let mut lines = text.lines().rev();
    let (rpm, deb) = (lines.next(), lines.next());
    match (deb.map(PathBuf::from), rpm.map(PathBuf::from)) {
        (Some(deb), Some(rpm))
            if deb.extension() == Some("deb".as_ref())
                && rpm.extension() == Some("rpm".as_ref()) =>
        {
            Ok(Packages { deb, rpm })
        }
        _ => Err(format!(
            "build.sh did not print the .deb and .rpm paths last\n{}",
            describe(&out)
        )),
    }
}

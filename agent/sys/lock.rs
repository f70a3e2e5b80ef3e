//! The reconcile lock (SPEC §3): one `flock` on `<state>/lock` serialises boot, polls,
//! signals and manual runs. A second reconcile waits, polling, up to a timeout. The lock
//! file is never opened through a symlink (issue 15 #9), and whoever takes the lock removes
//! the temp files a killed writer left in the state directory.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

/// How often a waiting reconcile retries the lock.
const RETRY: Duration = Duration::from_millis(50);

/// Errors taking the lock.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lock file could not be opened.
    #[error("opening lock file {path}")]
    Open {
        /// Lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A symlink is where the lock file should be; rolecall never follows one there.
    #[error("lock file {path} is a symlink; refusing to follow it")]
    Symlink {
        /// Lock file.
        path: PathBuf,
    },
    /// The state directory could not be created.
    #[error("creating the state directory")]
    StateDir(#[source] crate::sys::fs::Error),
    /// Another reconcile held the lock for the whole timeout.
    #[error("another reconcile holds {path} (waited {waited_ms} ms); is `rolecall run` or another `sync` busy?")]
    Busy {
        /// Lock file.
        path: PathBuf,
        /// How long we waited.
        waited_ms: u128,
    },
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _flock: Flock<File>,
}

/// Take the lock in `state_dir`, waiting up to `timeout`; then remove stale temp files from
/// the state directory (a failure there is logged, not fatal).
///
/// # Errors
/// `StateDir`, `Open`, `Symlink` or `Busy`.
pub async fn acquire(state_dir: &Path, timeout: Duration) -> Result<Lock, Error> {
    let path = state_dir.join("lock");
    let deadline = tokio::time::Instant::now() + timeout;
    crate::sys::fs::create_dirs(state_dir).map_err(Error::StateDir)?;
    loop {
        match Flock::lock(open(&path)?, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => {
                sweep(state_dir);
                return Ok(Lock { _flock: flock });
            }
            Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {}
            Err((_, errno)) => {
                return Err(Error::Open {
                    path,
                    source: errno.into(),
                })
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Busy {
                path,
                waited_ms: timeout.as_millis(),
            });
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Open (or create, 0644) the lock file, never through a symlink.
fn open(path: &Path) -> Result<File, Error> {
    let opened = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path);
    opened.map_err(|source| match source.raw_os_error() {
        Some(nix::libc::ELOOP) => Error::Symlink {
            path: path.to_path_buf(),
        },
        _ => Error::Open {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Temp files of killed writers of status, records, cache or journal (issue 15 #4).
fn sweep(state_dir: &Path) {
    if let Err(e) = crate::sys::fs::sweep_dir(state_dir) {
        tracing::warn!(error = %crate::text::chain(&e), "stale temporary files not removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issue15_a_symlink_at_the_lock_file_is_refused_and_its_target_not_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("created-through-the-link");
        std::os::unix::fs::symlink(&target, dir.path().join("lock")).expect("symlink");
        let err = acquire(dir.path(), Duration::from_millis(10))
            .await
            .expect_err("a symlinked lock file was used");
        assert!(matches!(err, Error::Symlink { .. }), "{err:?}");
        assert!(err.to_string().contains("lock"), "{err}");
        assert!(!target.exists(), "the symlink's target was created");
    }

    #[tokio::test]
    async fn taking_the_lock_removes_a_dead_writers_temp_file_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Pids above pid_max (at most 2^22) never run.
        let dead = dir.path().join(".rolecall-tmp-8388609-00000000deadbeef");
        let live = dir.path().join(".rolecall-tmp-1-00000000deadbeef");
        let other = dir.path().join("status.json");
        for f in [&dead, &live, &other] {
            std::fs::write(f, "x").expect("file");
        }
        let _lock = acquire(dir.path(), Duration::from_millis(10))
            .await
            .expect("lock");
        assert!(!dead.exists(), "a dead writer's temp file stayed");
        assert!(
            live.exists(),
            "a live writer's (pid 1) temp file was removed"
        );
        assert!(other.exists());
    }
}

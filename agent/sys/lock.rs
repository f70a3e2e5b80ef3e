//! The reconcile lock (SPEC §3): one `flock` on `<state>/lock` serialises boot, polls,
//! signals and manual runs. A second reconcile waits, polling, up to a timeout.

use std::fs::{File, OpenOptions};
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

/// Take the lock in `state_dir`, waiting up to `timeout`.
///
/// # Errors
/// `Open` or `Busy`.
pub async fn acquire(state_dir: &Path, timeout: Duration) -> Result<Lock, Error> {
    let path = state_dir.join("lock");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let _ = std::fs::create_dir_all(state_dir);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => return Ok(Lock { _flock: flock }),
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

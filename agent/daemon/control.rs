//! The daemon's control socket (SPEC §3): `rolecall sync` asks a running daemon for a
//! reconcile over `<state>/control.sock` and gets that reconcile's report back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::report::RunReport;
/// File name of the control socket in the state directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// A `sync` request waiting for the next reconcile's report.
pub(super) type Waiter = oneshot::Sender<RunReport>;

/// Errors of the daemon's plumbing and of talking to it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signal handler could not be installed.
    #[error("installing the {name} handler")]
    Signal {
        /// The signal.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The control socket could not be created.
    #[error("binding control socket {path}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// The OS error or the refusal to replace what is there.
        #[source]
        source: crate::sys::fs::Error,
    },
    /// The daemon took the request but did not answer in time.
    #[error("the daemon did not answer on {path} within {seconds} s")]
    NoAnswer {
        /// Socket path.
        path: PathBuf,
        /// How long `sync` waited.
        seconds: u64,
    },
    /// The conversation broke off.
    #[error("talking to the daemon on {path}")]
    Talk {
        /// Socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not a report.
    #[error("the daemon's answer on {path} is not a report")]
    Answer {
        /// Socket path.
        path: PathBuf,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Listen on `socket` (0600), replacing a socket a dead daemon left.
/// Listen on `socket` (0600), replacing a socket a dead daemon left.
pub(super) fn bind(socket: &Path) -> Result<UnixListener, Error> {
    let bind_error = |source| Error::Bind {
        path: socket.to_path_buf(),
        source,
    };
    crate::sys::fs::prepare_socket(socket).map_err(bind_error)?;
    let listener = UnixListener::bind(socket)
        .map_err(crate::sys::fs::io("binding", socket))
        .map_err(bind_error)?;
    crate::sys::fs::set_mode(socket, 0o600).map_err(bind_error)?;
    Ok(listener)
}

pub(super) async fn accept(listener: UnixListener, tx: mpsc::Sender<Waiter>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, tx).await {
                warn!(error = %e, "control connection failed");
            }
        });
    }
}

/// One request: a line `sync`; the answer is the JSON report of the reconcile it caused.
async fn serve(stream: UnixStream, tx: mpsc::Sender<Waiter>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    if line.trim() != "sync" {
        write
            .write_all(b"{\"error\":\"unknown request\"}\n")
            .await?;
        return Ok(());
    }
    let (done, wait) = oneshot::channel();
    if tx.send(done).await.is_err() {
        return Ok(());
    }
    if let Ok(report) = wait.await {
        let mut json = serde_json::to_vec(&report).unwrap_or_default();
        json.push(b'\n');
        write.write_all(&json).await?;
    }
    Ok(())
}

/// Ask a running daemon to reconcile now and return its report; `None` when no daemon
/// listens on `state_dir`'s control socket.
///
/// # Errors
/// The daemon accepted the request but the answer could not be read.
pub async fn request_sync(state_dir: &Path, timeout: Duration) -> Result<Option<RunReport>, Error> {
    let socket: PathBuf = state_dir.join(CONTROL_SOCKET);
    let path = || socket.clone();
    let Ok(mut stream) = UnixStream::connect(&socket).await else {
        return Ok(None);
    };
    let talk = async {
        stream.write_all(b"sync\n").await?;
        let mut line = String::new();
        BufReader::new(&mut stream).read_line(&mut line).await?;
        Ok::<String, std::io::Error>(line)
    };
    let line = tokio::time::timeout(timeout, talk)
        .await
        .map_err(|_| Error::NoAnswer {
            path: path(),
            seconds: timeout.as_secs(),
        })?
        .map_err(|source| Error::Talk {
            path: path(),
            source,
        })?;
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|source| Error::Answer {
            path: path(),
            source,
        })
}

//! The only code that spawns processes: argv only (never a shell), a minimal fixed
//! environment, a timeout that kills the process group, and captured output capped in size.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use crate::catalog::Command;
use tokio::io::AsyncReadExt;

/// Bytes of stdout/stderr kept (the tail): enough for an error message, bounded for logs.
pub const OUTPUT_CAP_BYTES: usize = 4096;

/// `PATH` given to every command (and to the snapshot's dump): the distribution's standard
/// directories only.
pub(crate) const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a finished command left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub exit_code: Option<i32>,
    /// Tail of stdout.
    pub stdout: String,
    /// Tail of stderr.
    pub stderr: String,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl Output {
    /// Exit code 0.
    pub fn is_success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Errors spawning or waiting for a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be started.
    #[error("starting `{command}`")]
    Spawn {
        /// The command.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The command ran past its timeout and was killed.
    #[error("`{command}` did not finish within {timeout_ms} ms and was killed")]
    Timeout {
        /// The command.
        command: String,
        /// The timeout.
        timeout_ms: u128,
    },
    /// The command ran but exited non-zero.
    #[error("`{command}` exited with {}: {}", exit_code.map_or("a signal".to_string(), |c| format!("code {c}")), tail(stderr, stdout))]
    Failed {
        /// The command.
        command: String,
        /// Its exit code.
        exit_code: Option<i32>,
        /// Tail of stderr.
        stderr: String,
        /// Tail of stdout.
        stdout: String,
    },
}

fn tail(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let last: Vec<&str> = text.trim().lines().rev().take(3).collect();
    let joined: Vec<&str> = last.into_iter().rev().collect();
    if joined.is_empty() {
        "no output".to_string()
    } else {
        joined.join(" / ")
    }
}

/// Run `cmd` to completion within `timeout`, returning its output whatever the exit code.
///
/// # Errors
/// `Spawn` if it cannot start, `Timeout` if it was killed.
pub async fn run(cmd: &Command, timeout: Duration) -> Result<Output, Error> {
    let command = cmd.to_string();
    let started = Instant::now();
    let spawn_error = |source| Error::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = spawn(cmd).map_err(spawn_error)?;
    let stdout = child.stdout.take().map(read_capped);
    let stderr = child.stderr.take().map(read_capped);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(spawn_error)?,
        Err(_) => {
            kill_group(&child);
            let _ = child.wait().await;
            return Err(Error::Timeout {
                command,
                timeout_ms: timeout.as_millis(),
            });
        }
    };
    Ok(Output {
        exit_code: status.code(),
        stdout: join_output(stdout).await,
        stderr: join_output(stderr).await,
        elapsed_ms: crate::text::elapsed_ms(started),
    })
}

/// Start `cmd` as argv in its own process group, with the fixed minimal environment,
/// stdin closed and its output piped.
fn spawn(cmd: &Command) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new(&cmd.argv[0])
        .args(&cmd.argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Run `cmd` and turn a non-zero exit into `Error::Failed`.
///
/// # Errors
/// As [`run`], plus `Failed`.
pub async fn run_ok(cmd: &Command, timeout: Duration) -> Result<Output, Error> {
    let out = run(cmd, timeout).await?;
    if out.is_success() {
        Ok(out)
    } else {
        Err(Error::Failed {
            command: cmd.to_string(),
            exit_code: out.exit_code,
            stderr: out.stderr,
            stdout: out.stdout,
        })
    }
}

/// Kill the whole process group, so grandchildren (apache2ctl → apache2) die too.
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn read_capped<R>(reader: R) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        String::from_utf8_lossy(&last_bytes(reader, OUTPUT_CAP_BYTES).await).into_owned()
    })
}

/// The last `cap` bytes of `reader`, read to its end (or its first error) without ever
/// holding more than `cap` plus one read.
pub(crate) async fn last_bytes<R>(mut reader: R, cap: usize) -> Vec<u8>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        let excess = kept.len().saturating_sub(cap);
        kept.drain(..excess);
    }
    kept
}

async fn join_output(handle: Option<tokio::task::JoinHandle<String>>) -> String {
    match handle {
        Some(h) => h.await.unwrap_or_default(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_with_shell_quotes() {
        let c = Command::parse(r#"sh -c 'echo "a b"'"#).unwrap();
        assert_eq!(c.argv, vec!["sh", "-c", r#"echo "a b""#]);
        assert!(Command::parse("  ").is_err());
        assert!(Command::parse("echo 'open").is_err());
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let c = Command::parse("sh -c 'echo out; echo err >&2; exit 3'").unwrap();
        let out = run(&c, Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.stdout.trim(), "out");
        assert_eq!(out.stderr.trim(), "err");
        let err = run_ok(&c, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("code 3"), "{err}");
    }

    #[tokio::test]
    async fn environment_is_minimal() {
        let c = Command::parse("env").unwrap();
        let out = run(&c, Duration::from_secs(5)).await.unwrap();
        let keys: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.split('=').next())
            .collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, vec!["LANG", "PATH"]);
    }

    #[tokio::test]
    async fn timeout_kills_the_process() {
        let c = Command::parse("sleep 30").unwrap();
        let started = Instant::now();
        let err = run(&c, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn output_is_capped() {
        let c = Command::parse("sh -c 'head -c 100000 /dev/zero | tr \"\\0\" x'").unwrap();
        let out = run(&c, Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.stdout.len(), OUTPUT_CAP_BYTES);
    }
}

//! The dump child of a snapshot: `mariadb-dump` through `tokio::process`, its output
//! gzipped and handed to the upload part by part. I/O.
//!
//! This is the snapshot's own child, not a `sys::exec` command: `sys::exec` captures a capped
//! tail of the output, and a dump is a stream of gigabytes that must go to S3 as it is
//! produced, never whole in memory or on disk. It keeps `sys::exec`'s other rules: argv only
//! (no shell), a minimal environment, and a deadline (the caller's) that kills it.

use std::io::Write;
use std::process::Stdio;

use flate2::write::GzEncoder;
use flate2::Compression;
use tokio::io::AsyncReadExt;

use super::upload::Upload;
use super::{Error, Request, PART_BYTES};

/// Bytes of the dump's stderr kept for the error message.
const STDERR_CAP_BYTES: usize = 4096;
/// Bytes read from the dump at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Run the dump and pump its output through gzip into the upload; fails unless it exits 0.
pub(super) async fn stream(req: &Request, upload: &mut Upload<'_>) -> Result<u64, Error> {
    let mut argv = req.client_args.clone();
    argv.extend(["--single-transaction", "--databases", &req.database].map(String::from));
    let command = shell_words::join(std::iter::once(&req.program).chain(&argv));
    let mut cmd = tokio::process::Command::new(&req.program);
    cmd.args(&argv)
        .env_clear()
        .env("PATH", crate::sys::exec::PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The client reads ~/.my.cnf for credentials (root's on a Debian host).
    if let Some(home) = std::env::var_os("HOME") {
        cmd.env("HOME", home);
    }
    let spawn = |source| Error::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(spawn(std::io::Error::other("no pipes to the child")));
    };
    let (pumped, stderr) = tokio::join!(pump(stdout, upload, &command), tail(stderr));
    if pumped.is_err() {
        // Not waiting for a dump whose output has nowhere to go.
        let _ = child.start_kill();
    }
    let status = child.wait().await.map_err(spawn)?;
    let dumped = pumped?;
    if !status.success() {
        return Err(Error::Dump {
            command,
            exit_code: status.code(),
            stderr,
        });
    }
    Ok(dumped)
}

/// Read the dump, gzip it, upload a part whenever `PART_BYTES` of gzip are ready, and the
/// rest as the last part. Returns the dump's size.
async fn pump(
    mut stdout: tokio::process::ChildStdout,
    upload: &mut Upload<'_>,
    command: &str,
) -> Result<u64, Error> {
    let failed = |action, source| Error::Stream {
        action,
        command: command.to_string(),
        source,
    };
    let mut gz = GzEncoder::new(
        Vec::with_capacity(PART_BYTES + READ_CHUNK_BYTES),
        Compression::default(),
    );
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut dumped = 0u64;
    loop {
        let n = stdout
            .read(&mut chunk)
            .await
            .map_err(|e| failed("reading", e))?;
        if n == 0 {
            break;
        }
        dumped += n as u64;
        gz.write_all(&chunk[..n])
            .map_err(|e| failed("compressing", e))?;
        if gz.get_ref().len() >= PART_BYTES {
            upload.part(std::mem::take(gz.get_mut())).await?;
        }
    }
    let last = gz.finish().map_err(|e| failed("compressing", e))?;
    upload.part(last).await?;
    Ok(dumped)
}

/// The last `STDERR_CAP_BYTES` of a stream, as text.
async fn tail(stderr: tokio::process::ChildStderr) -> String {
    let kept = crate::sys::exec::last_bytes(stderr, STDERR_CAP_BYTES).await;
    String::from_utf8_lossy(&kept).trim().replace('\n', " / ")
}

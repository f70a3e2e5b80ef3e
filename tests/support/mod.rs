//! Test harness: starts the real parts SPEC §8 names on loopback, each with its own random
//! port and temp dir: Apache 2.4, MariaDB, memcached and munin-node from Debian, moto as the
//! S3 server, an IMDSv2 test server and a systemd notify socket; and for the packaging and boot tests, the packages
//! under test, cached Debian roots and a real systemd booting one in its own namespaces. A
//! missing program fails the test with an install hint (`require_program`); nothing is ever
//! skipped.
#![allow(
    dead_code,
    reason = "one harness for every test module: each uses only part of it"
)]

pub mod acceptor;
pub mod apache;
pub mod cgroup;
pub mod chromium;
pub mod debian;
pub mod fleet;
pub mod health;
pub mod http;
pub mod hung_fs;
pub mod imds;
pub mod mariadb;
pub mod memcached;
pub mod munin;
pub mod notify;
pub mod packages;
pub mod s3;
pub mod secrets;
pub mod systemd;
pub mod tmpfs;

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process could take it before the caller binds it; servers that can be asked to
/// bind port 0 and report their port (moto) are started that way instead.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 for a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// Attempts at starting a server on a fresh free port: another process may take the port
/// between [`free_port`] and the server binding it.
pub const START_ATTEMPTS: usize = 3;

/// The first of up to [`START_ATTEMPTS`] start attempts that succeeds, or every
/// attempt's reason.
pub fn start_with_retries<T>(mut attempt: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let mut failures = String::new();
    for _ in 0..START_ATTEMPTS {
        match attempt() {
            Ok(server) => return Ok(server),
            Err(failure) => failures.push_str(&failure),
        }
    }
    Err(failures)
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
///
/// This is the only way tests wait for readiness: never a bare sleep.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The absolute path of program `name` (searched in `PATH`, then in the sbin directories
/// that a non-login root shell may lack). Panics with `install_hint` when it is missing:
/// a missing server is a test failure, never a skip (SPEC §8).
pub fn require_program(name: &str, install_hint: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| panic!("{name} not found: {install_hint}"))
}

fn find_program(name: &str) -> Option<PathBuf> {
    let candidate = Path::new(name);
    if candidate.is_absolute() {
        return is_executable(candidate).then(|| candidate.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether the tests run as root (as CI does): servers then drop privileges explicitly.
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `command` to completion; panics only when it cannot be started.
pub fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err}"))
}

/// Runs `command` to completion and returns its stdout; panics with its stderr on failure.
pub fn run_ok(command: &mut Command) -> String {
    let output = output(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        describe_output(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stdout and stderr of a finished command, for failure messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
}

/// Joins argv into one command line with shell quoting, for config keys such as
/// `[services.NAME] reload = "…"`, which the agent splits once with shell rules.
pub fn command_line<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|arg| shell_quote(&arg.as_ref().to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Removes ANSI colour sequences (werkzeug colours its log even when not on a terminal).
pub fn strip_ansi(line: &str) -> String {
    let mut clean = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip "[", parameters, and the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            clean.push(c);
        }
    }
    clean
}

/// The last `max_lines` lines of a log file, for failure messages (empty if unreadable).
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

/// Whether process `pid` still runs. A zombie counts as gone: PID 1 in some containers
/// never reaps orphans, and a zombie holds no port, socket or file.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Spawns `command` with stdin closed and stdout and stderr appended to `log` (created if
/// missing): a server started by the harness, whose output a failure message can show.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|err| panic!("opening {}: {err}", log.display()));
    command
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().expect("cloning a file handle"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|err| panic!("starting {command:?}: {err}"))
}

/// Waits up to `timeout` until `ready` holds while `child` runs; whether it does and the
/// child still runs (a server that exited at start-up is not waited for).
pub fn wait_started(child: &mut Child, timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    wait_until(timeout, || !matches!(child.try_wait(), Ok(None)) || ready())
        && matches!(child.try_wait(), Ok(None))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Waits up to `timeout` for `child` to exit, then kills it; always reaps it.
pub fn stop_child(child: &mut Child, timeout: Duration) {
    if !wait_until(timeout, || !matches!(child.try_wait(), Ok(None))) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Sends SIGTERM to `child` (unless it already exited), then behaves like [`stop_child`].
pub fn terminate_child(child: &mut Child, timeout: Duration) {
    if let Ok(None) = child.try_wait() {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    stop_child(child, timeout);
}

//! Debian's munin-node (`/usr/sbin/munin-node`) with a rendered `munin-node.conf`: every
//! directive as rendered (host name, allow lines, ignore patterns, user), except `port` (a
//! random free one), `host` (127.0.0.1), the log and pid files (a temp dir) and, when the
//! tests do not run as root, `user`/`group`. It runs with `--foreground` as the test's
//! child; its plugins are Debian's (`/etc/munin/plugins`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

const MUNIN_NODE: &str = "/usr/sbin/munin-node";
const INSTALL_HINT: &str = "run `bash tests/run.sh` or `apt-get install munin-node`";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A running munin-node; stopped (and reaped) on drop.
pub struct MuninNode {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl MuninNode {
    /// Starts munin-node with the rendered config `conf` (see the module comment) and
    /// waits until it accepts connections; panics with its log if it does not start.
    pub fn start(conf: &Path) -> MuninNode {
        let program = super::require_program(MUNIN_NODE, INSTALL_HINT);
        let text = std::fs::read_to_string(conf)
            .unwrap_or_else(|err| panic!("reading {}: {err}", conf.display()));
        super::start_with_retries(|| try_start(&program, &text))
            .unwrap_or_else(|failures| panic!("munin-node did not start:\n{failures}"))
    }

    /// The port it listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// One session from 127.0.0.1: each command sent, then `quit`; everything the node
    /// said, greeting included (nothing if it refused the connection).
    pub fn session(&self, commands: &[&str]) -> String {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|err| panic!("connecting to munin-node on {addr}: {err}"));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        let mut script: String = commands.iter().map(|c| format!("{c}\n")).collect();
        script.push_str("quit\n");
        // A refused connection may be closed before the script is written.
        let _ = stream.write_all(script.as_bytes());
        let mut said = Vec::new();
        if let Err(err) = stream.read_to_end(&mut said) {
            if err.kind() != std::io::ErrorKind::ConnectionReset {
                panic!("reading from munin-node: {err}\n{}", self.log_tail());
            }
        }
        String::from_utf8_lossy(&said).into_owned()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        super::log_tail(&self.dir.path().join("munin-node.log"), 20)
    }
}

impl Drop for MuninNode {
    fn drop(&mut self) {
        super::terminate_child(&mut self.child, STOP_TIMEOUT);
    }
}

/// `text` with the harness's port, address, log and pid files (and user when not root).
fn fitted(text: &str, dir: &Path, port: u16) -> String {
    let own = |id: u32, name: Option<String>| name.unwrap_or_else(|| id.to_string());
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten();
    let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .ok()
        .flatten();
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split_whitespace().next().unwrap_or_default();
        let replaced = match key {
            "port" => format!("port {port}"),
            "host" => "host 127.0.0.1".to_string(),
            "log_file" => format!("log_file {}", dir.join("munin-node.log").display()),
            "pid_file" => format!("pid_file {}", dir.join("munin-node.pid").display()),
            "user" if !super::running_as_root() => format!(
                "user {}",
                own(nix::unistd::getuid().as_raw(), user.clone().map(|u| u.name))
            ),
            "group" if !super::running_as_root() => format!(
                "group {}",
                own(
                    nix::unistd::getgid().as_raw(),
                    group.clone().map(|g| g.name)
                )
            ),
            _ => line.to_string(),
        };
        out.push_str(&replaced);
        out.push('\n');
    }
    out
}

/// One start attempt on a fresh port; the error text says why it failed.
fn try_start(program: &Path, text: &str) -> Result<MuninNode, String> {
    let dir = tempfile::tempdir().expect("temp dir for munin-node");
    let port = super::free_port();
    let conf = dir.path().join("munin-node.conf");
    std::fs::write(&conf, fitted(text, dir.path(), port)).expect("writing munin-node.conf");
    let output = dir.path().join("output.log");
    let mut command = Command::new(program);
    command.arg("--config").arg(&conf).arg("--foreground");
    let child = super::spawn_logged(&mut command, &output);
    let mut node = MuninNode { child, port, dir };
    if super::wait_started(&mut node.child, START_TIMEOUT, || super::listening(port)) {
        return Ok(node);
    }
    Err(format!(
        "port {port}:\n{}\n{}\n",
        super::log_tail(&output, 20),
        node.log_tail()
    ))
}

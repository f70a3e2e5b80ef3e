//! Debian's memcached (`/usr/bin/memcached`) started with the options of a rendered
//! `/etc/memcached.conf`, read as Debian's `start-memcached` reads them: `#` starts a
//! comment, a line starting with `-` holds options, any other line is a directive of the
//! wrapper (`logfile`), `-d` and `-h` are dropped. The port, the listen address and the pid
//! file are replaced (a random port of 127.0.0.1, a temp dir), and it runs in the
//! foreground as the test's child, as the `memcache` user when the tests run as root
//! (`nobody` if Debian's user is missing).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

const MEMCACHED: &str = "/usr/bin/memcached";
const INSTALL_HINT: &str = "run `bash tests/run.sh` or `apt-get install memcached`";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Options the harness sets itself, each followed by its value.
const REPLACED: [&str; 3] = ["-p", "-l", "-P"];

/// A running memcached; stopped (and reaped) on drop.
pub struct Memcached {
    child: Child,
    port: u16,
    argv: Vec<String>,
    _dir: TempDir,
}

impl Memcached {
    /// Starts memcached with the options of the config file `conf` and waits until it
    /// answers; panics with its output if it does not start.
    pub fn start(conf: &Path) -> Memcached {
        Memcached::try_start(conf).unwrap_or_else(|why| panic!("memcached did not start:\n{why}"))
    }

    /// As [`Memcached::start`], with the reason when memcached refuses the options.
    pub fn try_start(conf: &Path) -> Result<Memcached, String> {
        let program = super::require_program(MEMCACHED, INSTALL_HINT);
        let text = std::fs::read_to_string(conf)
            .unwrap_or_else(|err| panic!("reading {}: {err}", conf.display()));
        let options = conf_options(&text);
        super::start_with_retries(|| try_start(&program, &options))
    }

    /// The port it listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The command line it was started with.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Sends one command line and reads the reply up to (including) a line for which
    /// `last` holds; the reply's lines.
    pub fn request(&self, command: &str, last: impl Fn(&str) -> bool) -> Vec<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|err| panic!("connecting to memcached on {addr}: {err}"));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        (&stream)
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("sending to memcached");
        let mut lines = Vec::new();
        for line in BufReader::new(&stream).lines() {
            let line = line.unwrap_or_else(|err| panic!("memcached after {lines:?}: {err}"));
            let done = last(&line);
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    }

    /// `stats settings` as name → value.
    pub fn settings(&self) -> std::collections::BTreeMap<String, String> {
        self.request("stats settings", |line| line == "END")
            .iter()
            .filter_map(|line| line.strip_prefix("STAT "))
            .filter_map(|stat| stat.split_once(' '))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        super::terminate_child(&mut self.child, STOP_TIMEOUT);
    }
}

/// The memcached options of a `memcached.conf`, as Debian's start script passes them (see
/// the module comment), one argv word each.
pub fn conf_options(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| line.starts_with('-') && !line.starts_with("-d") && !line.starts_with("-h"))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

/// `options` without the ones the harness replaces, and `-u` fitted to who runs the tests.
fn fitted(options: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut words = options.iter();
    while let Some(word) = words.next() {
        if REPLACED.contains(&word.as_str()) || word == "-u" {
            let value = words.next();
            if word == "-u" && super::running_as_root() {
                let user = value.map_or("nobody", String::as_str);
                let exists = nix::unistd::User::from_name(user).is_ok_and(|u| u.is_some());
                kept.extend([
                    "-u".to_string(),
                    (if exists { user } else { "nobody" }).into(),
                ]);
            }
        } else {
            kept.push(word.clone());
        }
    }
    kept
}

/// One start attempt on a fresh port; the error text says why it failed.
fn try_start(program: &Path, options: &[String]) -> Result<Memcached, String> {
    let dir = tempfile::tempdir().expect("temp dir for memcached");
    let port = super::free_port();
    let mut argv = vec![program.display().to_string()];
    argv.extend(fitted(options));
    argv.extend([
        "-p".into(),
        port.to_string(),
        "-l".into(),
        "127.0.0.1".into(),
    ]);
    argv.extend([
        "-P".into(),
        dir.path().join("memcached.pid").display().to_string(),
    ]);
    let log_path = dir.path().join("memcached.log");
    let child = super::spawn_logged(Command::new(program).args(&argv[1..]), &log_path);
    let mut memcached = Memcached {
        child,
        port,
        argv,
        _dir: dir,
    };
    if super::wait_started(&mut memcached.child, START_TIMEOUT, || {
        super::listening(port)
    }) {
        return Ok(memcached);
    }
    Err(format!(
        "{:?}:\n{}\n",
        memcached.argv,
        super::log_tail(&log_path, 20)
    ))
}

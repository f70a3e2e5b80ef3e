//! Debian's MariaDB server in a temp datadir, on a random port of 127.0.0.1 and its own
//! socket. Its base defaults file ends with `!includedir <root>/etc/mysql/mariadb.conf.d`,
//! so what rolecall renders under its `--root` configures this server. A restart script
//! plays `systemctl restart mariadb`: it asks this harness, over loopback, to stop the
//! server and start it again, and returns once it answers or failed to come back.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tempfile::TempDir;

use super::acceptor::Acceptor;

const INSTALL_HINT: &str =
    "run `bash tests/run.sh` or `apt-get install mariadb-server mariadb-client`";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at start-up: another process may take the free port before mariadbd binds it.
const START_ATTEMPTS: usize = 3;
/// Kept small: several instances share a 2-core test machine. Included files override them.
const SERVER_DEFAULTS: &str = "innodb_buffer_pool_size = 32M\ninnodb_log_file_size = 8M\n";

/// The programs used, found once.
struct Programs {
    server: PathBuf,
    client: PathBuf,
}

fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Programs> = OnceLock::new();
    PROGRAMS.get_or_init(|| Programs {
        server: require("mariadbd"),
        client: require("mariadb"),
    })
}

fn require(name: &str) -> PathBuf {
    super::require_program(name, INSTALL_HINT)
}

/// A running MariaDB server; stopped (and reaped) on drop.
pub struct MariaDb {
    name: String,
    instance: Arc<Instance>,
    restart_script: PathBuf,
    supervisor: Option<Acceptor>,
    _dir: TempDir,
}

/// Paths and the server process, shared with the restart supervisor.
struct Instance {
    base_cnf: PathBuf,
    socket: PathBuf,
    error_log: PathBuf,
    port: u16,
    server: Mutex<Option<Child>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MariaDb {
    /// Initialises a datadir, starts `mariadbd` including `<root>/etc/mysql/mariadb.conf.d`
    /// (created if missing) and waits until it answers `SELECT 1`. `name` labels it in
    /// messages (e.g. "master", "replica").
    pub fn start(root: &Path, name: &str) -> MariaDb {
        let conf_dir = root.join("etc/mysql/mariadb.conf.d");
        std::fs::create_dir_all(&conf_dir)
            .unwrap_or_else(|err| panic!("creating {}: {err}", conf_dir.display()));
        let mut failures = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("temp dir for MariaDB");
            let instance = Arc::new(Instance::new(dir.path(), &conf_dir));
            match instance.start() {
                Ok(()) => return MariaDb::supervise(name, dir, instance),
                Err(failure) => failures.push_str(&failure),
            }
        }
        panic!("mariadb {name} did not start:\n{failures}");
    }

    fn supervise(name: &str, dir: TempDir, instance: Arc<Instance>) -> MariaDb {
        let supervisor = supervise(Arc::clone(&instance));
        let restart_script = dir.path().join("restart-mariadb");
        write_restart_script(&restart_script, name, supervisor.port());
        MariaDb {
            name: name.to_string(),
            instance,
            restart_script,
            supervisor: Some(supervisor),
            _dir: dir,
        }
    }

    /// The TCP port (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.instance.port
    }

    /// The unix socket.
    pub fn socket(&self) -> &Path {
        &self.instance.socket
    }

    /// The base defaults file (`mariadbd --defaults-file=`).
    pub fn base_cnf(&self) -> &Path {
        &self.instance.base_cnf
    }

    /// The service's restart command (argv): stops this server and starts it again with
    /// the current config, exiting 0 once it answers and non-zero if it did not come back.
    pub fn restart_cmd(&self) -> Vec<String> {
        vec![self.restart_script.display().to_string()]
    }

    /// Runs `sql` as root over the socket; the tab-separated rows without headers.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql).unwrap_or_else(|err| {
            panic!(
                "mariadb {}: {sql}: {err}\n{}",
                self.name,
                self.error_log_tail()
            )
        })
    }

    /// Like `query`, returning the client's error text instead of panicking.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        self.instance.try_query(sql)
    }

    /// Whether `SELECT COUNT(*)` of `table` answers `count` within 30 s (a replica catching
    /// up).
    pub fn reaches_rows(&self, table: &str, count: &str) -> bool {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        super::wait_until(Duration::from_secs(30), || {
            self.try_query(&sql).as_deref() == Ok(count)
        })
    }

    /// The last lines of the server's error log, for failure messages.
    pub fn error_log_tail(&self) -> String {
        super::log_tail(&self.instance.error_log, 30)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // The supervisor first, so that no restart races the shutdown.
        drop(self.supervisor.take());
        self.instance.stop();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop(); // also covers a failed start attempt
    }
}

impl Instance {
    fn new(dir: &Path, conf_dir: &Path) -> Instance {
        let instance = Instance {
            base_cnf: dir.join("base.cnf"),
            socket: dir.join("mysqld.sock"),
            error_log: dir.join("error.log"),
            port: super::free_port(),
            server: Mutex::new(None),
        };
        copy_template_datadir(&dir.join("data"));
        let base = base_config(dir, &instance, conf_dir);
        std::fs::write(&instance.base_cnf, base).expect("writing the MariaDB base config");
        instance
    }

    /// Starts the server (after stopping a running one) and waits until it answers.
    fn start(&self) -> Result<(), String> {
        let mut server = lock(&self.server);
        if let Some(old) = server.as_mut() {
            super::terminate_child(old, STOP_TIMEOUT);
        }
        let child = server.insert(self.spawn());
        if super::wait_started(child, START_TIMEOUT, || self.try_query("SELECT 1").is_ok()) {
            return Ok(());
        }
        let log = super::log_tail(&self.error_log, 20);
        Err(format!("port {}: {log}\n", self.port))
    }

    fn spawn(&self) -> Child {
        let mut server = Command::new(&programs().server);
        server.arg(format!("--defaults-file={}", self.base_cnf.display()));
        super::spawn_logged(&mut server, &self.error_log)
    }

    fn stop(&self) {
        // SIGTERM is a clean shutdown for mariadbd, as `systemctl stop` sends it.
        if let Some(child) = lock(&self.server).as_mut() {
            super::terminate_child(child, STOP_TIMEOUT);
        }
    }

    fn try_query(&self, sql: &str) -> Result<String, String> {
        let output = Command::new(&programs().client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--connect-timeout=2", "-N", "-B", "-e", sql])
            .output()
            .map_err(|err| format!("running mariadb: {err}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_string())
        }
    }
}

fn base_config(dir: &Path, instance: &Instance, conf_dir: &Path) -> String {
    format!(
        "[mysqld]\ndatadir = {data}\nsocket = {socket}\nport = {port}\nbind-address = 127.0.0.1\n\
         pid-file = {pid}\n{user}log-error = {log}\n{SERVER_DEFAULTS}\
         # The agent's rendered config, read last so that it wins.\n!includedir {conf_dir}\n",
        data = dir.join("data").display(),
        socket = instance.socket.display(),
        port = instance.port,
        pid = dir.join("mysqld.pid").display(),
        log = instance.error_log.display(),
        user = if super::running_as_root() {
            "user = root\n"
        } else {
            ""
        },
        conf_dir = conf_dir.display(),
    )
}

/// mariadbd refuses to run as root unless told to; it may only be told so by root.
fn run_as_root() -> Option<&'static str> {
    super::running_as_root().then_some("--user=root")
}

/// Fills `datadir` with a copy of a freshly initialised datadir. `mariadb-install-db` takes
/// seconds, so it runs once per MariaDB version into the cargo target's temp dir, and each
/// instance gets a copy.
fn copy_template_datadir(datadir: &Path) {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    let template = TEMPLATE.get_or_init(template_datadir);
    super::run_ok(Command::new("cp").arg("-a").arg(template).arg(datadir));
}

fn template_datadir() -> PathBuf {
    let version = super::run_ok(Command::new(&programs().server).arg("--version"));
    let tag: String = version
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let template = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mariadb-datadir-{tag}"));
    if !template.join("mysql").is_dir() {
        install_datadir(&template);
    }
    template
}

/// Runs `mariadb-install-db` into a scratch dir and renames it into place, so that a
/// concurrent test process never sees a half-initialised template.
fn install_datadir(template: &Path) {
    let parent = template.parent().expect("the template has a parent dir");
    std::fs::create_dir_all(parent).expect("creating the cargo target temp dir");
    let scratch = tempfile::tempdir_in(parent).expect("scratch dir for mariadb-install-db");
    let data = scratch.path().join("data");
    super::run_ok(
        Command::new(require("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(run_as_root())
            .arg("--auth-root-authentication-method=normal")
            .args(["--skip-test-db", "--innodb-log-file-size=8M"])
            .args(["--innodb-buffer-pool-size=32M"]),
    );
    // Losing the race to another process is fine: its template is as good as ours.
    let _ = std::fs::rename(&data, template);
}

fn write_restart_script(path: &Path, name: &str, supervisor_port: u16) {
    let script = format!(
        r#"#!/bin/bash
# Restarts test MariaDB "{name}" the way `systemctl restart mariadb` asks systemd to:
# the test harness that owns the server stops it, starts it again with the current config
# and replies "ok" once it answers, or "error: ..." if it did not come back.
set -euo pipefail
exec 3<>/dev/tcp/127.0.0.1/{supervisor_port}
echo restart >&3
read -r reply <&3
echo "mariadb {name}: $reply"
[ "$reply" = ok ]
"#
    );
    std::fs::write(path, script).expect("writing the MariaDB restart script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("making the restart script executable");
}

/// Serves restart requests from the restart script on a loopback port.
fn supervise(instance: Arc<Instance>) -> Acceptor {
    Acceptor::start("binding the restart listener", move |stream| {
        answer_restart(&stream, &instance)
    })
}

fn answer_restart(stream: &TcpStream, instance: &Instance) {
    let mut request = String::new();
    if BufReader::new(stream).read_line(&mut request).is_err() {
        return;
    }
    let reply = match request.trim() {
        "restart" => match instance.start() {
            Ok(()) => "ok".to_string(),
            Err(why) => format!("error: {}", why.replace('\n', " | ")),
        },
        other => format!("error: unknown request {other:?}"),
    };
    let mut stream = stream;
    let _ = writeln!(stream, "{reply}");
}

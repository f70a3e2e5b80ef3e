//! Debian's Apache 2.4 (`/usr/sbin/apache2`) in a temporary ServerRoot, on a random port of
//! 127.0.0.1, including the agent's `<root>/etc/apache2/{sites,conf}-enabled/*.conf` so that
//! what rolecall renders under its `--root` is what this server serves. Runs in the
//! foreground as the test's child; reloads go through the real `-k graceful` and are counted
//! from the error log.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

const APACHE: &str = "/usr/sbin/apache2";
const MODULES_DIR: &str = "/usr/lib/apache2/modules";
const INSTALL_HINT: &str = "run `bash tests/run.sh` or `apt-get install apache2`";
/// Logged by the parent each time it has (re)read its config and serves again.
const GENERATION_MARK: &str = "resuming normal operations";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

const MODULES: [&str; 10] = [
    "mpm_event",
    "authz_core",
    "authz_host",
    "dir",
    "mime",
    "env",
    "setenvif",
    "log_config",
    "unixd",
    "alias",
];

/// A running Apache; stopped (and reaped) on drop.
pub struct Apache {
    server_root: TempDir,
    conf: PathBuf,
    port: u16,
    child: Child,
}

impl Apache {
    /// Starts Apache including the site files under `root` (the agent's `--root`), and waits
    /// until it serves. As root, workers run as `www-data`, so `root` and its parent dirs
    /// inside the temp dir are made world-traversable.
    pub fn start(root: &Path) -> Apache {
        let program = super::require_program(APACHE, INSTALL_HINT);
        prepare_root(root);
        super::start_with_retries(|| try_start(&program, root))
            .unwrap_or_else(|failures| panic!("apache2 did not start:\n{failures}"))
    }

    /// The port Apache listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The temporary ServerRoot (`httpd.conf`, `logs/`, `run/`, `htdocs/`).
    pub fn server_root(&self) -> &Path {
        self.server_root.path()
    }

    /// The main config file.
    pub fn config_path(&self) -> &Path {
        &self.conf
    }

    /// Where the agent's vhosts go: `<root>/etc/apache2/sites-enabled`.
    pub fn sites_dir(root: &Path) -> PathBuf {
        root.join("etc/apache2/sites-enabled")
    }

    /// Config test (`apache2 -t`): the service's check command.
    pub fn check_cmd(&self) -> Vec<String> {
        self.command(&["-t"])
    }

    /// Graceful reload (`apache2 -k graceful`), what `systemctl reload apache2` does.
    pub fn reload_cmd(&self) -> Vec<String> {
        self.command(&["-k", "graceful"])
    }

    /// The graceful reload, after appending the time (nanoseconds since the epoch) to
    /// `reloads.log` in the ServerRoot: [`Apache::reloads`] then knows every reload command
    /// run, exactly and at once, where the error log shows a reload only once Apache has
    /// finished it (and two quick ones may show as one).
    pub fn counted_reload_cmd(&self) -> Vec<String> {
        let log = self.reloads_log().display().to_string();
        let script = format!(
            "date +%s%N >> {} && exec {}",
            super::command_line(&[log]),
            super::command_line(&self.reload_cmd())
        );
        vec!["sh".into(), "-c".into(), script]
    }

    /// When each [`Apache::counted_reload_cmd`] ran, in nanoseconds since the epoch.
    pub fn reloads(&self) -> Vec<u128> {
        std::fs::read_to_string(self.reloads_log())
            .unwrap_or_default()
            .lines()
            .map(|line| line.parse().expect("a time in reloads.log"))
            .collect()
    }

    fn reloads_log(&self) -> PathBuf {
        self.server_root().join("logs/reloads.log")
    }

    /// Restart (`apache2 -k restart`).
    pub fn restart_cmd(&self) -> Vec<String> {
        self.command(&["-k", "restart"])
    }

    fn command(&self, extra: &[&str]) -> Vec<String> {
        let server_root = self.server_root().display().to_string();
        let conf = self.conf.display().to_string();
        let mut argv = vec![
            APACHE.to_string(),
            "-d".into(),
            server_root,
            "-f".into(),
            conf,
        ];
        argv.extend(extra.iter().map(|arg| arg.to_string()));
        argv
    }

    /// How many times Apache has (re)loaded its config: 1 after start, +1 per graceful
    /// reload or restart.
    pub fn generation(&self) -> usize {
        generation(&self.error_log())
    }

    /// Waits until `generation() >= at_least`; returns whether it happened in time.
    pub fn wait_generation(&self, at_least: usize, timeout: Duration) -> bool {
        super::wait_until(timeout, || self.generation() >= at_least)
    }

    /// `GET path` with `Host: host`; the status and body. Panics if Apache does not answer.
    pub fn get(&self, host: &str, path: &str) -> (u16, String) {
        super::http::get(self.addr(), host, path).unwrap_or_else(|err| {
            panic!(
                "GET http://{host}{path} from apache on port {}: {err}\n{}",
                self.port,
                self.error_log_tail()
            )
        })
    }

    /// The error log's path.
    pub fn error_log(&self) -> PathBuf {
        self.server_root().join("logs/error.log")
    }

    /// The last lines of the error log, for failure messages.
    pub fn error_log_tail(&self) -> String {
        super::log_tail(&self.error_log(), 30)
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // In the foreground, SIGTERM is what `apache2 -k stop` sends: the parent stops its
        // workers and exits; waiting on it makes sure nothing is left.
        super::terminate_child(&mut self.child, STOP_TIMEOUT);
    }
}

fn generation(error_log: &Path) -> usize {
    std::fs::read_to_string(error_log)
        .unwrap_or_default()
        .matches(GENERATION_MARK)
        .count()
}

fn prepare_root(root: &Path) {
    for dir in [
        "etc/apache2/sites-enabled",
        "etc/apache2/conf-enabled",
        "var/www",
    ] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
    }
    if super::running_as_root() {
        make_traversable(root);
    }
}

/// Adds `r-x` for others on `path` and its ancestors inside the temp dir, so that the
/// `www-data` workers can reach files below it (tempfile creates dirs with mode 0700).
fn make_traversable(path: &Path) {
    let temp = std::env::temp_dir();
    for dir in path
        .ancestors()
        .filter(|dir| dir.starts_with(&temp) && *dir != temp)
    {
        let mut permissions = std::fs::metadata(dir)
            .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
            .permissions();
        permissions.set_mode(permissions.mode() | 0o755);
        std::fs::set_permissions(dir, permissions)
            .unwrap_or_else(|err| panic!("chmod {}: {err}", dir.display()));
    }
}

/// One start attempt on a fresh port; the error text says why it failed.
fn try_start(program: &Path, root: &Path) -> Result<Apache, String> {
    let server_root = tempfile::tempdir().expect("temp ServerRoot");
    let port = super::free_port();
    let conf = write_config(server_root.path(), root, port);
    let startup_log = server_root.path().join("logs/startup.log");
    let mut command = Command::new(program);
    command
        .arg("-d")
        .arg(server_root.path())
        .arg("-f")
        .arg(&conf)
        .arg("-DFOREGROUND");
    let child = super::spawn_logged(&mut command, &startup_log);
    let mut apache = Apache {
        server_root,
        conf,
        port,
        child,
    };
    let error_log = apache.error_log();
    let ready = || generation(&error_log) >= 1 && super::listening(port);
    if super::wait_started(&mut apache.child, START_TIMEOUT, ready) {
        return Ok(apache);
    }
    let why = format!(
        "port {port}:\n{}\n{}\n",
        super::log_tail(&startup_log, 20),
        apache.error_log_tail()
    );
    Err(why) // dropping `apache` stops whatever did start
}

fn write_config(server_root: &Path, root: &Path, port: u16) -> PathBuf {
    for dir in ["logs", "run", "htdocs"] {
        std::fs::create_dir_all(server_root.join(dir)).expect("creating ServerRoot dirs");
    }
    std::fs::write(
        server_root.join("htdocs/index.html"),
        "apache test server\n",
    )
    .expect("writing the default index.html");
    if super::running_as_root() {
        make_traversable(server_root);
    }
    let conf = server_root.join("httpd.conf");
    std::fs::write(&conf, config_text(server_root, root, port))
        .unwrap_or_else(|err| panic!("writing {}: {err}", conf.display()));
    conf
}

/// `apache2 -l`: the modules compiled in (Debian builds in log_config and unixd), which
/// must not be loaded again.
fn compiled_in_modules() -> &'static str {
    static COMPILED_IN: OnceLock<String> = OnceLock::new();
    COMPILED_IN.get_or_init(|| super::run_ok(Command::new(APACHE).arg("-l")))
}

fn config_text(server_root: &Path, root: &Path, port: u16) -> String {
    let (sr, root) = (server_root.display(), root.display());
    let mut text = String::new();
    let compiled_in = compiled_in_modules();
    for module in MODULES {
        if !compiled_in.contains(&format!("mod_{module}.c")) {
            let _ = writeln!(
                text,
                "LoadModule {module}_module {MODULES_DIR}/mod_{module}.so"
            );
        }
    }
    if super::running_as_root() {
        // Apache refuses to serve as root; Debian's apache2 package creates www-data.
        text.push_str("User www-data\nGroup www-data\n");
    }
    text + &format!(
        r#"ServerRoot "{sr}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile "{sr}/run/apache2.pid"
DefaultRuntimeDir "{sr}/run"
Mutex file:{sr}/run default
ErrorLog "{sr}/logs/error.log"
# notice: the "resuming normal operations" line counts reloads.
LogLevel notice
LogFormat "%h %t \"%r\" %>s %b \"%{{Host}}i\"" vhost_combined
CustomLog "{sr}/logs/access.log" vhost_combined
TypesConfig /etc/mime.types
# Small, so that graceful reloads on a 2-core test machine stay quick.
StartServers 1
ServerLimit 4
ThreadsPerChild 10
MaxRequestWorkers 40
MinSpareThreads 5
MaxSpareThreads 20
DocumentRoot "{sr}/htdocs"
DirectoryIndex index.html
# As Debian's apache2.conf: deny the file system, grant the web roots.
<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>
<Directory /usr/share>
    AllowOverride None
    Require all granted
</Directory>
<Directory "{root}/var/www/">
    AllowOverride None
    Require all granted
</Directory>
<Directory "{sr}/htdocs">
    Require all granted
</Directory>
IncludeOptional "{root}/etc/apache2/conf-enabled/*.conf"
IncludeOptional "{root}/etc/apache2/sites-enabled/*.conf"
"#
    )
}

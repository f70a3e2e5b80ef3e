//! An agent under test: a temp directory holding agent.toml, a file role map, a catalog and
//! the `--root` the agent writes into, plus helpers to run the real `rolecall` binary.
#![allow(dead_code, reason = "each test module uses part of the fixture")]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::support::apache::Apache;
use crate::support::{command_line, log_tail, strip_ansi, terminate_child};

/// The tests' sample fleet, `tests/maps/sample.toml`: a valid map whose lint is clean (web
/// and db hosts spread over zones a and b, a master with replicas in both zones and a
/// backup), with comments that a publish must keep. The unit tests under `agent/` can
/// `include_str!` the same file.
pub const SAMPLE_MAP: &str = include_str!("maps/sample.toml");

/// The repository's default catalog.
pub fn default_catalog() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// How an agent is configured.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Host id, address and AZ for the static identity.
    pub id: String,
    /// Address.
    pub address: String,
    /// Extra `[vars]` lines.
    pub vars: Vec<String>,
    /// `[services.NAME]` → lines.
    pub services: BTreeMap<String, Vec<String>>,
    /// Catalog directory to copy (default: the repository's).
    pub catalog: PathBuf,
    /// Overrides the `[map]` url (default: the fixture's file map).
    pub map_url: Option<String>,
    /// Extra `[map]` lines.
    pub map_lines: Vec<String>,
    /// `[identity]` lines replacing the static identity.
    pub identity: Option<Vec<String>>,
    /// `paths.allowed_roots`, if not the default.
    pub allowed_roots: Option<Vec<String>>,
    /// Whole sections appended to agent.toml (`"[secrets]\nrefresh = \"3s\""`).
    pub sections: Vec<String>,
}

impl Setup {
    /// A static-identity agent with the default catalog.
    pub fn new(id: &str, address: &str) -> Setup {
        Setup {
            id: id.into(),
            address: address.into(),
            vars: Vec::new(),
            services: BTreeMap::new(),
            catalog: default_catalog(),
            map_url: None,
            map_lines: vec!["poll_interval = \"1s\"".into(), "jitter = \"0s\"".into()],
            identity: None,
            allowed_roots: None,
            sections: Vec::new(),
        }
    }

    /// Add a `[services.NAME]` line such as `reload = "true"`.
    pub fn service(mut self, name: &str, line: &str) -> Setup {
        self.services
            .entry(name.into())
            .or_default()
            .push(line.into());
        self
    }

    /// Add a `[vars]` line.
    pub fn var(mut self, line: &str) -> Setup {
        self.vars.push(line.into());
        self
    }

    /// Serve the web role with `apache`: its port for the smoke tests, its config test
    /// (`apache2 -t`) as the check and its counted graceful reload as the reload.
    pub fn apache(self, apache: &Apache) -> Setup {
        let line = |key: &str, argv: &[String]| format!("{key} = {:?}", command_line(argv));
        self.var(&format!("http_port = {}", apache.port()))
            .service("apache2", &line("check", &apache.check_cmd()))
            .service("apache2", &line("reload", &apache.counted_reload_cmd()))
    }
}

/// One agent's files.
pub struct Agent {
    pub dir: TempDir,
    pub root: PathBuf,
    pub config: PathBuf,
    pub map: PathBuf,
    pub catalog: PathBuf,
    pub setup: Setup,
}

impl Agent {
    /// Create the directories, copy the catalog and write agent.toml.
    pub fn new(setup: Setup) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("rolecall-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("root");
        let catalog = dir.path().join("catalog");
        std::fs::create_dir_all(&root).expect("root dir");
        copy_dir(&setup.catalog, &catalog);
        let agent = Agent {
            config: dir.path().join("agent.toml"),
            map: dir.path().join("rolemap.toml"),
            root,
            catalog,
            dir,
            setup,
        };
        agent.write_config();
        agent
    }

    /// (Re)write agent.toml from `setup`.
    pub fn write_config(&self) {
        let s = &self.setup;
        let mut text = String::from("[identity]\n");
        match &s.identity {
            Some(lines) => lines.iter().for_each(|l| text.push_str(&format!("{l}\n"))),
            None => text.push_str(&format!(
                "source = \"static\"\nid = \"{}\"\naddress = \"{}\"\naz = \"test-a\"\n",
                s.id, s.address
            )),
        }
        let url = s
            .map_url
            .clone()
            .unwrap_or_else(|| format!("file://{}", self.map.display()));
        text.push_str(&format!("\n[map]\nurl = \"{url}\"\n"));
        s.map_lines
            .iter()
            .for_each(|l| text.push_str(&format!("{l}\n")));
        text.push_str(&format!(
            "\n[paths]\ncatalog = \"{0}\"\ntemplates = \"{0}\"\nstate = \"/var/lib/rolecall\"\n",
            self.catalog.display()
        ));
        if let Some(roots) = &s.allowed_roots {
            let quoted: Vec<String> = roots.iter().map(|r| format!("\"{r}\"")).collect();
            text.push_str(&format!("allowed_roots = [{}]\n", quoted.join(", ")));
        }
        text.push_str("\n[vars]\n");
        s.vars.iter().for_each(|l| text.push_str(&format!("{l}\n")));
        for (name, lines) in &s.services {
            text.push_str(&format!("\n[services.{name}]\n"));
            lines.iter().for_each(|l| text.push_str(&format!("{l}\n")));
        }
        s.sections
            .iter()
            .for_each(|section| text.push_str(&format!("\n{section}\n")));
        std::fs::write(&self.config, text).expect("writing agent.toml");
    }

    /// Replace the role map file.
    pub fn write_map(&self, text: &str) {
        std::fs::write(&self.map, text).expect("writing the role map");
    }

    /// The physical path of a managed (logical) path.
    pub fn path(&self, logical: &str) -> PathBuf {
        self.root.join(logical.trim_start_matches('/'))
    }

    /// The physical path of the vhost the web role renders for `product`.
    pub fn vhost(&self, product: &str) -> PathBuf {
        self.path(&format!(
            "/etc/apache2/sites-enabled/rolecall-{product}.conf"
        ))
    }

    /// The bytes of `product`'s vhost (panics naming it when it cannot be read).
    pub fn vhost_bytes(&self, product: &str) -> Vec<u8> {
        let path = self.vhost(product);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// The physical state directory.
    pub fn state(&self) -> PathBuf {
        self.path("/var/lib/rolecall")
    }

    /// The binary with `--config` and `--root` set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--root")
            .arg(&self.root)
            .args(args);
        cmd.env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC");
        cmd
    }

    /// Run the binary to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running rolecall")
    }

    /// The persistent counters the daemon and `sync` keep (`<state>/counters.json`):
    /// reconciles by outcome, rollbacks, smoke test failures; `Null` before the first.
    pub fn counters(&self) -> serde_json::Value {
        self.state_json("counters.json")
            .unwrap_or(serde_json::Value::Null)
    }

    /// The state file `name` as JSON; `None` when it is missing or not JSON.
    pub fn state_json(&self, name: &str) -> Option<serde_json::Value> {
        std::fs::read(self.state().join(name))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }

    /// The last status record, as `rolecall status --json` prints it; `Null` while there is
    /// none yet (no reconcile has finished), so that waits can poll it.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.run(&["status", "--json"]).stdout)
            .unwrap_or(serde_json::Value::Null)
    }
}

/// How long a stopping daemon may take to finish its reconcile and exit.
const DAEMON_STOP: Duration = Duration::from_secs(10);

/// A running `rolecall run` of an agent, its stderr in `<agent dir>/daemon.log`; stopped
/// with SIGTERM (and reaped) on drop.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `rolecall run` for `agent` with `env` added (the S3 server's and the IMDS
    /// server's variables, `NOTIFY_SOCKET`, `WATCHDOG_USEC`, …). The log is at debug level
    /// (`RUST_LOG=rolecall=debug`) unless `env` sets `RUST_LOG`. Returns at once.
    pub fn start(agent: &Agent, env: &[(String, String)]) -> Daemon {
        let log = agent.dir.path().join("daemon.log");
        let file = std::fs::File::create(&log).expect("creating the daemon log");
        let mut cmd = agent.command(&["run"]);
        cmd.env("RUST_LOG", "rolecall=debug")
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let child = cmd.spawn().expect("starting rolecall run");
        Daemon { child, log }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid fits in i32"));
        nix::sys::signal::kill(pid, signal).expect("signalling the daemon");
    }

    /// SIGTERM, then waits for the daemon to exit (it finishes a running reconcile first).
    pub fn stop(&mut self) {
        terminate_child(&mut self.child, DAEMON_STOP);
    }

    /// The log so far, one entry per line, colours removed.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(strip_ansi)
            .collect()
    }

    /// How many lines of the log so far contain `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log_lines().iter().filter(|l| l.contains(text)).count()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 40)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes a FIFO at `path` to pass as `--sign-key`: a `map publish` or `map promote` reading
/// its key from it stops there, after reading the published map and before writing, until
/// [`hand_key`] writes the key.
pub fn key_fifo(path: &Path) {
    let owner = nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR;
    nix::unistd::mkfifo(path, owner)
        .unwrap_or_else(|err| panic!("mkfifo {}: {err}", path.display()));
}

/// Once `child` has opened `fifo` for reading (so it has read the map), runs `meanwhile`
/// and writes `secret` into the FIFO; panics if the child exits first (never blocks on it).
pub fn hand_key(fifo: &Path, secret: &[u8], child: &mut Child, meanwhile: impl FnOnce()) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opened = None;
    let ready = crate::support::wait_until(Duration::from_secs(20), || {
        // O_NONBLOCK: opening a FIFO for writing fails (ENXIO) until a reader has it open.
        opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(fifo)
            .ok();
        opened.is_some() || !matches!(child.try_wait(), Ok(None))
    });
    let Some(mut writer) = opened.filter(|_| ready) else {
        panic!(
            "rolecall exited without reading its key: {:?}",
            child.try_wait()
        );
    };
    meanwhile();
    std::io::Write::write_all(&mut writer, secret).expect("handing over the key");
}

/// Stdout, stderr and exit code as one string, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Assert the exit code, showing the output otherwise.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
}

/// Assert that `text` holds each of `needles`, naming the missing one and showing the text.
#[track_caller]
pub fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

/// Assert that neither stdout nor stderr holds `needle`, showing the output otherwise.
#[track_caller]
pub fn assert_not_said(out: &Output, needle: &str) {
    let text = describe(out);
    assert!(!text.contains(needle), "{needle:?} said:\n{text}");
}

/// Assert the exit code and that stdout holds each of `needles`, showing stdout otherwise.
#[track_caller]
pub fn assert_stdout(out: &Output, code: i32, needles: &[&str]) {
    assert_exit(out, code);
    assert_mentions(&stdout(out), needles);
}

/// Assert the exit code and that stderr holds each of `needles`, showing stderr otherwise.
#[track_caller]
pub fn assert_stderr(out: &Output, code: i32, needles: &[&str]) {
    assert_exit(out, code);
    assert_mentions(&String::from_utf8_lossy(&out.stderr), needles);
}

/// `(inode, mtime_ns)` of a file: equal before and after means it was not rewritten.
pub fn identity_of(path: &Path) -> (u64, i64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec())
}

/// Give the web role of the catalog in `dir` a 2 s smoke timeout instead of the shipped
/// 15 s: a failing smoke test (a site without its health page) then takes seconds.
pub fn short_smoke_timeout(dir: &Path) {
    let web = dir.join("web.toml");
    let shipped = std::fs::read_to_string(&web).expect("catalog web.toml");
    assert!(
        shipped.contains("timeout = \"15s\""),
        "web.toml smoke timeout moved"
    );
    let short = shipped.replace("timeout = \"15s\"", "timeout = \"2s\"");
    std::fs::write(&web, short).expect("web.toml");
}

/// `rolecall fleet status` of the map at the URL `map` and the reports under the URL
/// `report`, as an operator's workstation runs it: no agent.toml, no log filter.
pub fn fleet_status(map: &str, report: &str) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(["--config", "/nonexistent/agent.toml", "fleet", "status"])
        .args(["--map", map, "--report", report])
        .env_remove("RUST_LOG");
    cmd
}

/// Rewrite the file at `path` with every `from` replaced by `to` (tests that edit a config,
/// role or template between reconciles).
pub fn replace_in(path: &Path, from: &str, to: &str) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    std::fs::write(path, text.replace(from, to))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A process's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-product map whose only host, `cache-1` at 10.0.0.5, has the memcached role; the
/// trailing comment `note` changes the bytes without changing the meaning.
pub fn memcached_map(generation: u64, note: &str) -> String {
    format!("schema = 1\ngeneration = {generation}\n\n[products.site]\ndomain = \"site.example.test\"\ndocroot = \"/srv/site\"\n\n[hosts.cache-1]\naddress = \"10.0.0.5\"\naz = \"a\"\nroles = [\"memcached\"]\nproducts = [\"site\"]\n# {note}\n")
}

/// The rolecall binary run with its address space limited to 4 GiB (`prlimit`): a map read
/// whole that should not be fails there as out of memory. Add the arguments.
pub fn binary_within_4_gib() -> Command {
    let limit = crate::support::require_program("prlimit", "apt-get install util-linux");
    let mut cmd = Command::new(limit);
    cmd.arg(format!("--as={}", 4u64 << 30)).arg(binary());
    cmd
}

/// The rolecall binary under test: `ROLECALL_BIN` when set (the daemon benchmark points
/// it at the `dist` build, and any other build can be tested that way), else the binary
/// cargo built with the tests.
pub fn binary() -> PathBuf {
    std::env::var_os("ROLECALL_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_rolecall")),
        PathBuf::from,
    )
}

/// Every regular file under `dir`, relative, with its bytes.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).expect("lstat");
        if meta.is_dir() {
            walk(base, &p, out);
        } else if meta.is_file() {
            out.insert(
                p.strip_prefix(base).expect("under base").to_path_buf(),
                std::fs::read(&p).expect("read"),
            );
        }
    }
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Docroots under the agent's `/var/www` with a health page (`ok PRODUCT`) for each product;
/// the base directory.
pub fn docroots(agent: &Agent, products: &[&str]) -> PathBuf {
    let base = agent.path("/var/www");
    for p in products {
        std::fs::create_dir_all(base.join(p)).expect("docroot");
        std::fs::write(base.join(p).join("health.txt"), format!("ok {p}\n")).expect("health page");
    }
    base
}

/// A map with web hosts `web-1`/`web-2`, a database cluster and a backup, for `products`
/// served by `web-1` (each product `p` gets domain `p.example.test`).
pub fn web_map(generation: u64, products: &[&str], docroot_base: &Path) -> String {
    let mut text = format!("schema = 1\ngeneration = {generation}\n");
    for p in products {
        text.push_str(&format!(
            "\n[products.{p}]\ndomain = \"{p}.example.test\"\naliases = [\"www.{p}.example.test\"]\ndocroot = \"{}/{p}\"\nhealth_path = \"/health.txt\"\n",
            docroot_base.display()
        ));
    }
    text.push_str("\n[products.shop]\ndomain = \"shop.example.test\"\ndocroot = \"/srv/shop\"\n");
    text.push_str("\n[products.shop.database]\nname = \"shop\"\nmaster = \"db-1\"\nreplicas = [\"db-2\"]\nbackup = \"db-3\"\nbackup_url = \"s3://backups/shop/\"\n");
    let list: Vec<String> = products.iter().map(|p| format!("\"{p}\"")).collect();
    text.push_str(&format!("\n[hosts.web-1]\naddress = \"127.0.0.1\"\naz = \"test-a\"\nroles = [\"web\"]\nproducts = [{}]\n", list.join(", ")));
    text.push_str("\n[hosts.db-1]\naddress = \"10.0.0.1\"\naz = \"test-a\"\nroles = [\"db\"]\n");
    text.push_str("\n[hosts.db-2]\naddress = \"10.0.0.2\"\naz = \"test-b\"\nroles = [\"db\"]\n");
    text.push_str("\n[hosts.db-3]\naddress = \"10.0.0.3\"\naz = \"test-b\"\nroles = [\"db\", \"db-backup\"]\n");
    text
}

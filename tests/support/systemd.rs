//! A real systemd booting a Debian root as PID 1 of its own PID, mount, UTS, IPC, network
//! and cgroup namespaces (`ns-init.sh`: unshare, then pivot_root into the root), driven from
//! outside with `nsenter`. Only what the test started is ever killed: the namespace's PID 1
//! (which takes every process of the namespace with it), and only the cgroup it made is
//! removed. The host's /etc, services and ports are never touched: every command runs in
//! the namespaces, and the namespace has its own loopback.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::debian::DebianRoot;
use super::{log_tail, pid_alive, require_program, wait_until};
use crate::fixture::stdout;

/// A booted system. Dropping it kills the namespace and removes its cgroup; the root stays
/// with it until then (and is removed with it).
pub struct Booted {
    /// The root, whose files the test reads and writes from outside (taken by `poweroff`).
    root: Option<DebianRoot>,
    unshare: Child,
    init: Pid,
    cgroup: PathBuf,
    console: PathBuf,
    started: Instant,
}

/// The cgroup2 hierarchy's mount point and this process's cgroup in it.
fn own_cgroup2() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
    let mount_point = mounts
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2"))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .unwrap_or_else(|| {
            panic!(
                "no cgroup2 hierarchy mounted: systemd needs one (mount -t cgroup2 none /sys/fs/cgroup/unified)"
            )
        });
    let cgroups = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let own = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("a cgroup2 entry in /proc/self/cgroup");
    mount_point.join(own.trim_start_matches('/'))
}

static BOOTS: AtomicU32 = AtomicU32::new(0);

/// The boot cgroups' names: this prefix, the test process's PID, a counter.
const CGROUP_PREFIX: &str = "rolecall-boot-";

/// Removes the (empty) boot cgroups a killed test run left behind: those named after a
/// test process that no longer runs.
fn remove_stale_cgroups(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix(CGROUP_PREFIX)
            .and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
        if owner.is_some_and(|pid| !pid_alive(pid)) {
            remove_cgroup_tree(&entry.path());
        }
    }
}

impl Booted {
    /// Boots `root`'s `/lib/systemd/systemd`; the namespace's console output goes to
    /// `console` (outside the root). Returns at once: wait for what the test needs.
    pub fn boot(root: DebianRoot, console: &Path) -> Booted {
        for (program, package) in [
            ("unshare", "util-linux"),
            ("nsenter", "util-linux"),
            ("setpriv", "util-linux"),
            ("timeout", "coreutils"),
        ] {
            require_program(program, &format!("apt-get install {package}"));
        }
        require_program("ip", "apt-get install iproute2 (tests/run.sh does)");
        let parent = own_cgroup2();
        remove_stale_cgroups(&parent);
        let cgroup = parent.join(format!(
            "{CGROUP_PREFIX}{}-{}",
            std::process::id(),
            BOOTS.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir(&cgroup)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", cgroup.display()));
        let log = fs::File::create(console).expect("create the console log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/ns-init.sh");
        let started = Instant::now();
        let unshare = Command::new("bash")
            .arg(script)
            .arg("enter")
            .arg(&cgroup)
            .arg(root.dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn ns-init.sh");
        let mut booted = Booted {
            root: Some(root),
            init: Pid::from_raw(0),
            unshare,
            cgroup,
            console: console.to_path_buf(),
            started,
        };
        // The namespace's PID 1 is unshare's only child.
        let children = format!("/proc/{0}/task/{0}/children", booted.unshare.id());
        let mut init = None;
        let found = wait_until(Duration::from_secs(10), || {
            init = fs::read_to_string(&children)
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse::<i32>().ok());
            init.is_some()
        });
        assert!(found, "no namespace init\n{}", booted.diagnostics());
        booted.init = Pid::from_raw(init.expect("found"));
        booted
    }

    /// The booted root, as seen from outside.
    pub fn root(&self) -> &DebianRoot {
        self.root.as_ref().expect("a booted system has its root")
    }

    /// When the namespace was started (the test's clock).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Runs `argv` inside, in every namespace of the system and its root, with a clean
    /// environment.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "--"])
            .args([
                "/usr/bin/env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LC_ALL=C",
            ])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter {argv:?}: {e}"))
    }

    /// `systemctl ARGS` inside; its stdout, trimmed, whatever its exit code.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let argv: Vec<&str> = ["systemctl", "--no-pager"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        stdout(&self.exec(&argv)).trim().to_string()
    }

    /// `systemctl is-active UNIT`: active, inactive, activating, failed, ...
    pub fn state(&self, unit: &str) -> String {
        self.systemctl(&["is-active", unit])
    }

    /// A numeric property of `unit` (e.g. `ActiveEnterTimestampMonotonic`, in µs).
    pub fn property_us(&self, unit: &str, property: &str) -> u64 {
        let value = self.systemctl(&["show", "-P", property, unit]);
        value
            .parse()
            .unwrap_or_else(|_| panic!("{unit} {property}: {value:?}"))
    }

    /// A numeric property of the service manager itself (e.g. `UserspaceTimestampMonotonic`).
    pub fn manager_property_us(&self, property: &str) -> u64 {
        let value = self.systemctl(&["show", "-P", property]);
        value
            .parse()
            .unwrap_or_else(|_| panic!("manager {property}: {value:?}"))
    }

    /// The journal of this boot (`-u UNIT` when given), without a pager.
    pub fn journal(&self, unit: Option<&str>) -> String {
        let mut argv = vec!["journalctl", "--no-pager", "-b", "-o", "short-monotonic"];
        if let Some(unit) = unit {
            argv.extend(["-u", unit]);
        }
        stdout(&self.exec(&argv))
    }

    /// `GET path` with `Host: host` to port 80 inside the namespace (bash's /dev/tcp in the
    /// namespace's network, the host's bash); the status and body, or why not.
    pub fn http_get(&self, host: &str, path: &str) -> Result<(u16, String), String> {
        let request = "exec 3<>/dev/tcp/127.0.0.1/80 && printf 'GET %s HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n' \"$1\" \"$2\" >&3 && cat <&3";
        let out = Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-n", "--"])
            .args([
                "timeout", "5", "bash", "-c", request, "http-get", path, host,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("nsenter: {e}"))?;
        let text = stdout(&out);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no HTTP answer: {}", String::from_utf8_lossy(&out.stderr)))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok((status, body.to_string()))
    }

    /// Waits up to `timeout` for `condition`; panics naming `what`, with the diagnostics.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
        assert!(
            wait_until(timeout, condition),
            "{what}: not within {timeout:?}\n{}",
            self.diagnostics()
        );
    }

    /// What an assertion message needs: jobs, failed units, the journal's tail, the console.
    pub fn diagnostics(&self) -> String {
        if self.init.as_raw() == 0 || !pid_alive(self.init.as_raw().unsigned_abs()) {
            return format!(
                "the namespace's init is not running; console:\n{}",
                log_tail(&self.console, 40)
            );
        }
        let journal = self.journal(None);
        let lines: Vec<&str> = journal.lines().collect();
        format!(
            "--- systemctl is-system-running: {}\n--- systemctl list-jobs\n{}\n--- systemctl --failed\n{}\n--- journal (last 80 lines)\n{}\n--- console\n{}",
            self.systemctl(&["is-system-running"]),
            self.systemctl(&["list-jobs"]),
            self.systemctl(&["--failed"]),
            lines[lines.len().saturating_sub(80)..].join("\n"),
            log_tail(&self.console, 20)
        )
    }

    /// Shuts the system down cleanly (`systemctl poweroff`: every unit stopped in order,
    /// then systemd exits, which ends the namespace) and returns the root for another
    /// boot; kills it if it takes longer than `timeout`.
    pub fn poweroff(mut self, timeout: Duration) -> DebianRoot {
        self.systemctl(&["poweroff", "--no-block"]);
        let stopped = wait_until(timeout, || !matches!(self.unshare.try_wait(), Ok(None)));
        let diagnostics = if stopped {
            String::new()
        } else {
            self.diagnostics()
        };
        self.stop();
        assert!(stopped, "poweroff took over {timeout:?}\n{diagnostics}");
        self.root.take().expect("a booted system has its root")
    }

    /// Kills the namespace (if still up), reaps unshare and removes the cgroup tree.
    #[allow(
        clippy::print_stderr,
        reason = "runs in Drop, where a leftover cgroup is reported, not a panic"
    )]
    fn stop(&mut self) {
        if matches!(self.unshare.try_wait(), Ok(None)) {
            // SIGKILL to a PID namespace's init kills every process in the namespace.
            if self.init.as_raw() > 0 {
                let _ = kill(self.init, Signal::SIGKILL);
            }
            if !wait_until(Duration::from_secs(10), || {
                !matches!(self.unshare.try_wait(), Ok(None))
            }) {
                let _ = self.unshare.kill();
            }
        }
        let _ = self.unshare.wait();
        // Processes leave their cgroups as they are reaped: remove the tree bottom-up.
        let removed = wait_until(Duration::from_secs(10), || {
            remove_cgroup_tree(&self.cgroup);
            !self.cgroup.exists()
        });
        if !removed {
            eprintln!(
                "boot test: could not remove cgroup {}",
                self.cgroup.display()
            );
        }
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes `dir` and its child cgroups, deepest first (rmdir is how cgroups are removed;
/// one still holding a process stays).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

//! Soak benchmark (issue 15): the real `rolecall run` for an hour against the harness's
//! real servers (moto as S3, the IMDSv2 test server, Debian's Apache with its real config
//! test and graceful reload, a notify socket drained as systemd does), on a web host whose
//! map changes every 5 s: the products alternate between two sets, and every tenth change
//! adds a product without a health page, whose smoke test fails and is rolled back.
//!
//! Every 10 s, at a moment the daemon has finished the change (its status record names the
//! generation just published), it samples the daemon's RSS (`VmRSS` in /proc/PID/status),
//! its open file descriptors (/proc/PID/fd), the state directory's size, and looks for
//! rolecall's temp files (`.rolecall-tmp-*`, `.rolecall-*`) and backup-looking files
//! (`*~`, `*.bak`, `*.orig`) under the managed root. It asserts:
//!
//! - RSS within ±1 MB and the fd count exactly that of the first sample after warm-up;
//! - no temp or backup file left in the managed directories at any sample;
//! - the state directory no larger after warm-up than the largest size seen during it plus
//!   [`STATE_SLACK`] (it must not grow with the number of changes);
//! - every good change converged and every broken one was rolled back;
//!
//! and prints the curve and its min/max after warm-up.
//!
//! `cargo bench --bench soak` runs for an hour (`SOAK_SECS` overrides, `SOAK_WARMUP_SECS`
//! the warm-up, by default a sixth of the run, at most 10 minutes). `cargo test
//! --all-targets` also runs this binary, without `--bench`: a sanity pass of 40 s that
//! checks the same things but the flat curve (too short to be past warm-up).
#![allow(
    clippy::print_stdout,
    reason = "a bench binary reports its figures on stdout"
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fixture, support, web_map, Boot, Daemon, Ec2};
use fixture::{docroots, Agent};
use support::apache::Apache;

/// The two product sets the changes alternate between.
const SETS: [&[&str]; 2] = [&["alpha", "beta", "gamma"], &["alpha", "delta", "epsilon"]];
/// Every product either set serves (each gets a docroot with a health page).
const ALL: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];
/// Added by every tenth change: a docroot without a health page, so its smoke test fails.
const BROKEN: &str = "zeta";
const CHANGE_EVERY: Duration = Duration::from_secs(5);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How long one change may take to be reconciled (a failing smoke test waits 2 s, then the
/// rollback reloads and tests again) on a loaded machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const FULL_SECS: u64 = 3600;
const SANITY_SECS: u64 = 40;
/// The allowed RSS drift after warm-up, either way.
const RSS_SLACK_KB: i64 = 1024;
/// How much the state directory may exceed its warm-up size: the cached map and status
/// record differ by a product or two between changes.
const STATE_SLACK: u64 = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test -- --list`: no libtest tests here
    }
    let bench = args.iter().any(|a| a == "--bench");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !bench && !filters.is_empty() && !filters.iter().any(|f| "soak".contains(f.as_str())) {
        println!("soak bench: sanity pass skipped (filter {filters:?})");
        return;
    }
    let secs = env_secs("SOAK_SECS").unwrap_or(if bench { FULL_SECS } else { SANITY_SECS });
    let warmup = env_secs("SOAK_WARMUP_SECS").unwrap_or((secs / 6).min(600));
    let run = Duration::from_secs(secs);
    let warmup = Duration::from_secs(warmup);
    println!(
        "rolecall soak: binary {}; {} s, warm-up {} s, a change every {} s, a sample every {} s",
        fixture::binary().display(),
        run.as_secs(),
        warmup.as_secs(),
        CHANGE_EVERY.as_secs(),
        SAMPLE_EVERY.as_secs()
    );
    let soak = Soak::start();
    let curve = soak.run(run);
    curve.print(warmup);
    curve.assert_clean();
    if bench {
        curve.assert_flat(warmup);
    } else {
        println!(
            "soak sanity pass ok ({} changes, {} rolled back): run `cargo bench --bench soak` for the hour",
            curve.changes, curve.rolled_back
        );
    }
}

fn env_secs(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number of seconds")),
    )
}

// ---------------------------------------------------------------------------------------
// Set-up

/// moto, IMDS, an Apache serving the agent's root, and the running daemon.
struct Soak {
    ec2: Ec2,
    agent: Agent,
    _apache: Apache,
    base: PathBuf,
    daemon: Daemon,
}

impl Soak {
    fn start() -> Soak {
        let ec2 = Ec2::start(false);
        let (agent, apache) = ec2.apache_agent();
        fixture::short_smoke_timeout(&agent.catalog);
        let base = docroots(&agent, &ALL);
        std::fs::create_dir_all(base.join(BROKEN)).expect("docroot without a health page");
        ec2.publish(&web_map(1, SETS[0], &base));
        let (daemon, _) = Daemon::start(&agent, &ec2.env(), Boot::Converged);
        println!(
            "peers: S3 (moto) :{}, Apache :{}",
            ec2.moto.port(),
            apache.port()
        );
        Soak {
            ec2,
            agent,
            _apache: apache,
            base,
            daemon,
        }
    }

    /// Publishes a change every [`CHANGE_EVERY`] for `length`, waits for each to be
    /// reconciled, and samples every [`SAMPLE_EVERY`].
    fn run(&self, length: Duration) -> Curve {
        let started = Instant::now();
        let mut curve = Curve::default();
        let mut next_sample = Duration::ZERO;
        let mut change: u64 = 0;
        while started.elapsed() < length {
            let at = started.elapsed();
            if at >= next_sample {
                curve.samples.push(self.sample(at));
                next_sample += SAMPLE_EVERY;
            }
            let due = CHANGE_EVERY * u32::try_from(change + 1).expect("changes fit in u32");
            std::thread::sleep(due.saturating_sub(started.elapsed()));
            change += 1;
            self.publish(change, &mut curve);
        }
        curve.samples.push(self.sample(started.elapsed()));
        let log = self.daemon.daemon.log_lines();
        curve.log_problems = log.iter().filter(|l| l.contains(" ERROR ")).count();
        if !curve.missed.is_empty() || curve.log_problems > 0 {
            println!("daemon log tail:\n{}", self.daemon.daemon.log_tail());
        }
        curve
    }

    /// Change `n` (generation `n + 1`): the other product set, plus [`BROKEN`] every tenth
    /// change (the 5th, 15th, …: the sanity pass sees one); returns once the daemon's status record shows it reconciled.
    fn publish(&self, n: u64, curve: &mut Curve) {
        let generation = n + 1;
        let broken = n % 10 == 5;
        let mut products = SETS[usize::from(n % 2 == 1)].to_vec();
        if broken {
            products.push(BROKEN);
        }
        let text = web_map(generation, &products, &self.base);
        self.ec2.publish(&text);
        let want = if broken { "rolled_back" } else { "converged" };
        let mut last = serde_json::Value::Null;
        let done = support::wait_until(SETTLE_TIMEOUT, || {
            last = self.agent.status();
            last["map"]["generation"] == generation && last["outcome"] == want
        });
        if !done {
            // Recorded, not asserted at once: an hour's curve is worth printing first.
            curve.missed.push(format!(
                "change {n} (generation {generation}) not {want} within {SETTLE_TIMEOUT:?}: {last}"
            ));
        }
        curve.changes += 1;
        curve.rolled_back += u64::from(broken);
    }

    fn sample(&self, at: Duration) -> Sample {
        let pid = self.daemon.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        let fds = open_fds(pid);
        let mut leftovers = Vec::new();
        let state = self.agent.state();
        let mut state_bytes = 0;
        walk(&self.agent.root, &mut |path, len| {
            if path.starts_with(&state) {
                state_bytes += len;
            } else if is_leftover(path) {
                leftovers.push(path.to_path_buf());
            }
        });
        Sample {
            at,
            rss_kb,
            fds: fds.len(),
            fd_targets: fds,
            state_bytes,
            leftovers,
        }
    }
}

/// What each of `pid`'s open fds points at: a socket as its kind and peer (`tcp to :PORT
/// STATE`, `unix PATH`), a pipe as `pipe`; inode numbers dropped.
fn open_fds(pid: u32) -> Vec<String> {
    let sockets = sockets_of(pid);
    let mut targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| {
            let target = target.display().to_string();
            match target.split_once(":[") {
                Some(("socket", inode)) => {
                    let inode = inode.trim_end_matches(']');
                    sockets
                        .get(inode)
                        .map_or_else(|| "socket".into(), |s| format!("socket {s}"))
                }
                Some(("pipe", _)) => "pipe".into(),
                _ => target,
            }
        })
        .collect();
    targets.sort();
    targets
}

/// The sockets of `pid`'s network namespace by inode: TCP ones as `tcp to :PORT STATE`
/// (the state's hex code from /proc/net/tcp), Unix ones as `unix PATH`.
fn sockets_of(pid: u32) -> std::collections::HashMap<String, String> {
    let read =
        |name: &str| std::fs::read_to_string(format!("/proc/{pid}/net/{name}")).unwrap_or_default();
    let mut sockets = std::collections::HashMap::new();
    for line in [read("tcp"), read("tcp6")].concat().lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let (Some(remote), Some(state), Some(inode)) =
            (fields.get(2), fields.get(3), fields.get(9))
        {
            let port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            sockets.insert(
                (*inode).to_string(),
                format!("tcp to :{} {state}", port.unwrap_or(0)),
            );
        }
    }
    for line in read("unix").lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some(inode) = fields.get(6) {
            let path = fields.get(7).copied().unwrap_or("(unnamed)");
            sockets.insert((*inode).to_string(), format!("unix {path}"));
        }
    }
    sockets
}

/// Calls `visit` with every regular file under `dir` and its size (symlinks not followed).
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, u64)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue; // removed meanwhile
        };
        if meta.is_dir() {
            walk(&entry.path(), visit);
        } else {
            visit(&entry.path(), meta.len());
        }
    }
}

/// rolecall's temp files (`.rolecall-tmp-<pid>-<hex>`, an older version's `.rolecall-*`)
/// and anything named like a backup.
fn is_leftover(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.starts_with(".rolecall")
        || name.ends_with('~')
        || name.ends_with(".bak")
        || name.ends_with(".orig")
}

// ---------------------------------------------------------------------------------------
// Running the daemon

// ---------------------------------------------------------------------------------------
// Measuring

/// One sample of the daemon and its directories.
struct Sample {
    at: Duration,
    rss_kb: u64,
    fds: usize,
    /// What each fd is (`socket`, `pipe`, `anon_inode:[eventpoll]`, a path), for messages.
    fd_targets: Vec<String>,
    state_bytes: u64,
    leftovers: Vec<PathBuf>,
}

/// The samples of a run and what was published.
#[derive(Default)]
struct Curve {
    samples: Vec<Sample>,
    changes: u64,
    rolled_back: u64,
    /// Changes not reconciled as expected in time, with the status record seen.
    missed: Vec<String>,
    /// ERROR lines in the daemon's log (a rolled-back change logs at WARN).
    log_problems: usize,
}

impl Curve {
    fn split(&self, warmup: Duration) -> (&[Sample], &[Sample]) {
        let at = self.samples.partition_point(|s| s.at < warmup);
        self.samples.split_at(at)
    }

    fn print(&self, warmup: Duration) {
        println!(
            "\n{:>7} {:>9} {:>5} {:>11}",
            "t (s)", "RSS (kB)", "fds", "state (B)"
        );
        for s in &self.samples {
            println!(
                "{:>7} {:>9} {:>5} {:>11}{}",
                s.at.as_secs(),
                s.rss_kb,
                s.fds,
                s.state_bytes,
                if s.at < warmup { "  (warm-up)" } else { "" }
            );
        }
        if let Some(last) = self.samples.last() {
            println!("open fds at the end: {}", last.fd_targets.join(", "));
        }
        println!(
            "{} changes published ({} of them broken, to be rolled back), {} not reconciled as expected; {} ERROR lines in the daemon's log",
            self.changes,
            self.rolled_back,
            self.missed.len(),
            self.log_problems
        );
        let (during, after) = self.split(warmup);
        let range = |samples: &[Sample], f: fn(&Sample) -> u64| {
            let values = samples.iter().map(f);
            (values.clone().min().unwrap_or(0), values.max().unwrap_or(0))
        };
        let (rss, fds, state) = (
            range(after, |s| s.rss_kb),
            range(after, |s| s.fds as u64),
            range(after, |s| s.state_bytes),
        );
        println!(
            "after warm-up ({} samples): RSS min {} kB max {} kB (spread {} kB); fds min {} max {}; state dir min {} B max {} B (max during warm-up {} B)",
            after.len(),
            rss.0,
            rss.1,
            rss.1 - rss.0,
            fds.0,
            fds.1,
            state.0,
            state.1,
            range(during, |s| s.state_bytes).1
        );
    }

    /// No leftovers at any sample, a bounded state directory, and all changes reconciled as
    /// expected (each `publish` asserted its own).
    fn assert_clean(&self) {
        for s in &self.samples {
            assert!(
                s.leftovers.is_empty(),
                "at {} s, temp or backup files in the managed directories: {:?}",
                s.at.as_secs(),
                s.leftovers
            );
        }
        assert!(
            self.missed.is_empty(),
            "{} of {} changes missed:\n{}",
            self.missed.len(),
            self.changes,
            self.missed.join("\n")
        );
        assert!(self.changes >= 5, "only {} changes", self.changes);
        assert!(self.rolled_back >= 1, "no rolled-back change");
        assert_eq!(self.log_problems, 0, "ERROR lines in the daemon's log");
    }

    /// RSS within ±1 MB and fds equal to the first sample after warm-up; the state directory
    /// no larger than during warm-up plus [`STATE_SLACK`].
    fn assert_flat(&self, warmup: Duration) {
        let (during, after) = self.split(warmup);
        let (Some(first), Some(warm_state)) =
            (after.first(), during.iter().map(|s| s.state_bytes).max())
        else {
            panic!("no sample on one side of the warm-up: run longer than the warm-up");
        };
        for s in after {
            let drift = i64::try_from(s.rss_kb).unwrap_or(i64::MAX)
                - i64::try_from(first.rss_kb).unwrap_or(i64::MAX);
            assert!(
                drift.abs() <= RSS_SLACK_KB,
                "RSS at {} s is {} kB, {drift:+} kB from {} kB at {} s",
                s.at.as_secs(),
                s.rss_kb,
                first.rss_kb,
                first.at.as_secs()
            );
            assert_eq!(
                s.fd_targets,
                first.fd_targets,
                "open fds at {} s vs {} s",
                s.at.as_secs(),
                first.at.as_secs()
            );
            assert!(
                s.state_bytes <= warm_state + STATE_SLACK,
                "state directory at {} s is {} bytes, over {warm_state} + {STATE_SLACK}",
                s.at.as_secs(),
                s.state_bytes
            );
        }
    }
}

//! Daemon benchmark (issues 3 and 4): the real `rolecall run` and `rolecall sync` against
//! the harness's real servers (moto as S3, the IMDSv2 test server, Debian's Apache, a
//! notify socket), for a web host serving 5 products.
//!
//! - Issue 3: start → `READY=1` with service commands that do nothing (`true`), smoke tests
//!   answered by a real Apache; then the idle daemon over 60 s polling moto every second:
//!   RSS (`VmRSS` sampled, and `VmHWM`), CPU (`utime + stime`), and CPU per unchanged poll
//!   (polls counted as 304s in moto's request log).
//! - Issue 4: start → `READY=1` with Apache's real configtest and graceful reload; and the
//!   rolled-back `rolecall sync` of a map adding a site without a health page, with the
//!   catalog as shipped (15 s smoke timeout) and with a copy whose smoke timeout is 2 s.
//!
//! Issue 3's figures are also taken with the static identity, which shows the boot time
//! without instance metadata's round trips (the daemon reads identity once, at boot).
//!
//! `cargo bench --bench daemon [-- PHASE…]` measures (phases: `issue3-boot`, `issue3-idle`,
//! `issue4-boot`, `issue4-rollback`; a substring selects) the binary the packages ship:
//! it first runs `cargo build --profile dist` (fat LTO, rolecall's code for speed and its
//! dependencies' for size; ~15 minutes the first time) and measures
//! `target/dist/rolecall`, or `ROLECALL_BIN` when set.
//! `cargo test --all-targets` also runs this binary, without `--bench`: it then does one
//! quick boot against Apache (about a second) as a sanity check and exits.
#![allow(
    clippy::print_stdout,
    reason = "a bench binary reports its figures on stdout"
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{fixture, mb, support, verdict, web_map, Boot, Daemon, Ec2, ID, MAP_KEY};
use fixture::{describe, docroots, Agent, Setup};
use support::apache::Apache;

/// The products the host serves.
const PRODUCTS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];
/// The product added by the map that fails its smoke test (no health page).
const BROKEN: &str = "zeta";
const HEALTH: &str = "/health.txt";

/// One measured scenario.
type Phase = fn(&Ec2, &Rounds);

/// How much of each measurement to do.
struct Rounds {
    /// Boots measured per scenario (after one discarded warm-up).
    boots: usize,
    /// Length of the idle window.
    idle: Duration,
    /// Rolled-back syncs with the shipped catalog, and with the 2 s copy.
    rollbacks_shipped: usize,
    rollbacks_short: usize,
}

const FULL: Rounds = Rounds {
    boots: 10,
    idle: Duration::from_secs(60),
    rollbacks_shipped: 3,
    rollbacks_short: 5,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test -- --list`: no libtest tests here
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets [FILTER]`: a filter that is not ours skips the check.
        let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        if filters.is_empty() || filters.iter().any(|f| "daemon".contains(f.as_str())) {
            sanity();
        } else {
            println!("daemon bench: sanity pass skipped (filter {filters:?})");
        }
        return;
    }
    if std::env::var_os("ROLECALL_BIN").is_none() {
        // Set before any thread starts; every spawn goes through `fixture::binary()`.
        std::env::set_var("ROLECALL_BIN", dist_binary());
    }
    println!(
        "rolecall daemon benchmark: binary {}; {} CPUs; {} products on the web host",
        fixture::binary().display(),
        std::thread::available_parallelism().map_or(0, usize::from),
        PRODUCTS.len()
    );
    // `cargo bench --bench daemon -- idle rollback`: only the phases named.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let wanted =
        |phase: &str| filters.is_empty() || filters.iter().any(|f| phase.contains(f.as_str()));
    let ec2 = Ec2::start(true);
    let phases: [(&str, Phase); 4] = [
        ("issue3-boot", issue3_boot),
        ("issue3-idle", issue3_idle),
        ("issue4-boot", issue4_boot),
        ("issue4-rollback", issue4_rollback),
    ];
    for (name, phase) in phases {
        if wanted(name) {
            phase(&ec2, &FULL);
        }
    }
}

/// The packaged build: `cargo build --profile dist`, next to the bench's own profile dir.
fn dist_binary() -> PathBuf {
    let built = Path::new(env!("CARGO_BIN_EXE_rolecall"));
    let target = built
        .parent()
        .and_then(Path::parent)
        .expect("the binary lies in <target>/<profile>/");
    println!("cargo build --profile dist --bin rolecall (the packaged binary) ...");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--profile", "dist", "--bin", "rolecall"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo");
    assert!(status.success(), "cargo build --profile dist failed");
    let binary = target.join("dist").join("rolecall");
    // A stale code order (after a dependency or toolchain update) costs its RSS savings.
    let check = std::process::Command::new("bash")
        .args(["packaging/code-order.sh", "--check"])
        .arg(&binary)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running packaging/code-order.sh --check");
    let said = match check.status.success() {
        true => check.stdout,
        false => check.stderr,
    };
    print!("code order: {}", String::from_utf8_lossy(&said));
    binary
}

/// Without `--bench`: one boot to `READY=1` against a real Apache (file map, static
/// identity: no moto, so it stays within a few seconds), and a read of the daemon's /proc.
fn sanity() {
    let started = Instant::now();
    let mut agent = Agent::new(Setup::new(ID, "127.0.0.1"));
    let apache = Apache::start(&agent.root);
    agent.setup = Setup::new(ID, "127.0.0.1").apache(&apache);
    agent.write_config();
    agent.write_map(&web_map(1, &PRODUCTS, &docroots(&agent, &PRODUCTS)));
    let (daemon, ready) = Daemon::start(&agent, &[], Boot::Finished);
    let usage = Usage::read(daemon.pid());
    for p in PRODUCTS {
        assert_eq!(apache.get(&domain(p), HEALTH).0, 200, "{p} not served");
    }
    drop(daemon);
    println!(
        "daemon bench sanity pass ok in {:.1} s (READY after {:.0} ms, RSS {} kB): \
         run `cargo bench --bench daemon` for the figures",
        started.elapsed().as_secs_f64(),
        ms(ready),
        usage.rss_kb
    );
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// Issue 3: start → READY=1, service commands `true`, smoke tests answered by Apache's
/// default document root (the vhosts are written but never loaded).
///
/// Also measured with the static identity (`identity.source = "static"`, map still in S3):
/// the harness's IMDS server answers each request only after the client's delayed ACK
/// (~40 ms), which real IMDS does not.
fn issue3_boot(ec2: &Ec2, rounds: &Rounds) {
    let responder = Responder::start();
    for imds in [true, false] {
        let mut boots = Boots::default();
        for i in 0..=rounds.boots {
            let mut setup = noop_setup(ec2, responder.port());
            if !imds {
                setup.identity = None;
            }
            let agent = Agent::new(setup);
            ec2.publish(&web_map(1, &PRODUCTS, &docroots(&agent, &PRODUCTS)));
            let (daemon, ready) = Daemon::start(&agent, &ec2.env(), Boot::Finished);
            let status = agent.status();
            drop(daemon);
            if i > 0 {
                boots.add(ready, &status);
            }
        }
        println!(
            "\n== issue 3: start -> READY=1, web host, 5 products, check/reload = \"true\", S3 (moto), {}",
            identity_name(imds)
        );
        boots.print(500.0);
    }
}

/// Issue 3: one daemon idle for `rounds.idle`, polling moto every second (jitter 0).
/// With the IMDSv2 identity (re-read by every reconcile), then with the static identity.
fn issue3_idle(ec2: &Ec2, rounds: &Rounds) {
    for imds in [true, false] {
        idle_case(ec2, rounds, imds);
    }
}

fn idle_case(ec2: &Ec2, rounds: &Rounds, imds: bool) {
    let responder = Responder::start();
    let bucket = ec2.moto.new_bucket(true);
    let mut setup = noop_setup(ec2, responder.port());
    setup.map_url = Some(format!("s3://{bucket}/{MAP_KEY}"));
    if !imds {
        setup.identity = None;
    }
    let agent = Agent::new(setup);
    let map = web_map(1, &PRODUCTS, &docroots(&agent, &PRODUCTS));
    ec2.moto.put(&bucket, MAP_KEY, map.as_bytes());
    let (daemon, _) = Daemon::start(&agent, &ec2.env(), Boot::Finished);
    let pid = daemon.pid();
    let key = format!("/{bucket}/{MAP_KEY}");
    let count = |status| ec2.moto.request_count("GET", &key, Some(status));
    let (polls_before, bodies_before) = (count(304), count(200));
    let before = Usage::read(pid);
    let started = Instant::now();
    let mut rss = Vec::new();
    while started.elapsed() < rounds.idle {
        rss.push(Usage::read(pid).rss_kb);
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = Usage::read(pid);
    let window = started.elapsed();
    // moto's log is read by a thread: give the last poll's line a moment to arrive.
    std::thread::sleep(Duration::from_millis(300));
    let polls = count(304) - polls_before;
    let bodies = count(200) - bodies_before;
    let last = agent.status();
    let log = DaemonLog::read(&daemon.daemon);
    drop(daemon);

    let cpu = after.cpu_s - before.cpu_s;
    let sched = after.sched_s - before.sched_s;
    let share = 100.0 * cpu / window.as_secs_f64();
    let rss_max = rss.iter().copied().max().unwrap_or(0);
    println!(
        "\n== issue 3: idle daemon, {:.1} s window, poll_interval 1s, jitter 0, S3 (moto), {}",
        window.as_secs_f64(),
        identity_name(imds)
    );
    println!(
        "RSS (VmRSS, {} samples): max {:.1} MB, final {:.1} MB; VmHWM (peak since exec) {:.1} MB   target < 15 MB  {}",
        rss.len(),
        mb(rss_max),
        mb(after.rss_kb),
        mb(after.hwm_kb),
        verdict(mb(after.hwm_kb.max(rss_max)) < 15.0)
    );
    println!(
        "CPU (utime+stime): {:.3} s = {:.2} % of one core (schedstat: {:.3} s = {:.2} %); threads {}; children's CPU {:.3} s   target < 1 %  {}",
        cpu,
        share,
        sched,
        100.0 * sched / window.as_secs_f64(),
        after.threads,
        after.children_cpu_s - before.children_cpu_s,
        verdict(share < 1.0)
    );
    let per_poll = |cpu: f64| 1000.0 * cpu / polls.max(1) as f64;
    println!(
        "unchanged polls (304 in moto's log): {polls} ({:.2}/s), full downloads: {bodies}; CPU per poll {:.2} ms (schedstat {:.2} ms)",
        polls as f64 / window.as_secs_f64(),
        per_poll(cpu),
        per_poll(sched)
    );
    println!(
        "RSS at the end: anon {:.1} MB, file-backed {:.1} MB, shmem {:.1} MB",
        mb(after.rss_anon_kb),
        mb(after.rss_file_kb),
        mb(after.rss_shmem_kb)
    );
    println!(
        "daemon log: {} reconciles logged at info (boot, the first quiet poll, the quiet count flushed at stop; quiet polls log at debug), {} WARN/ERROR lines",
        log.reconciles,
        log.problems
    );
    println!(
        "last poll: trigger {}, outcome {}, elapsed {} ms, stages {}",
        last["trigger"], last["outcome"], last["elapsed_ms"], last["timings"]
    );
}

/// What the daemon's (text) log says: how many reconciles it logged at info (quiet polls
/// log at debug only; moto's 304 count is the poll count), and how many problems.
struct DaemonLog {
    reconciles: usize,
    problems: usize,
}

impl DaemonLog {
    fn read(daemon: &fixture::Daemon) -> DaemonLog {
        let lines = daemon.log_lines();
        let reconciles = lines
            .iter()
            .filter(|l| l.contains("reconcile finished"))
            .count();
        let problems = lines
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count();
        DaemonLog {
            reconciles,
            problems,
        }
    }
}

/// Issue 4: start → READY=1 with Apache's real configtest and graceful reload.
fn issue4_boot(ec2: &Ec2, rounds: &Rounds) {
    let mut boots = Boots::default();
    for i in 0..=rounds.boots {
        let (agent, apache) = apache_agent(ec2);
        ec2.publish(&web_map(1, &PRODUCTS, &agent.path("/var/www")));
        let generation = apache.generation();
        let (daemon, ready) = Daemon::start(&agent, &ec2.env(), Boot::Finished);
        let status = agent.status();
        for p in PRODUCTS {
            assert_eq!(
                apache.get(&domain(p), HEALTH),
                (200, format!("ok {p}\n")),
                "{p} not served after READY=1"
            );
        }
        assert_eq!(apache.reloads().len(), 1, "one reload at boot");
        assert!(
            apache.wait_generation(generation + 1, Duration::from_secs(10)),
            "no reload"
        );
        assert_eq!(apache.generation(), generation + 1, "more than one reload");
        drop(daemon);
        if i > 0 {
            boots.add(ready, &status);
        }
    }
    println!("\n== issue 4: start -> READY=1, web host, 5 products, real `apache2 -t` + `apache2 -k graceful`, smoke tests");
    boots.print(2000.0);
}

/// Issue 4: a map adding a product whose health page is missing → smoke failure → rollback,
/// timed as the wall time of `rolecall sync`; with the shipped and the 2 s smoke timeout.
fn issue4_rollback(ec2: &Ec2, rounds: &Rounds) {
    println!("\n== issue 4: rolled-back `rolecall sync` (5 products + {BROKEN} without a health page), real Apache");
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9}   stages (median ms)",
        "ms", "median", "p90", "min", "max"
    );
    for (label, short, runs) in [
        ("catalog as shipped (15s)", false, rounds.rollbacks_shipped),
        ("smoke timeout 2s", true, rounds.rollbacks_short),
    ] {
        rollback_case(ec2, label, short, runs);
    }
}

/// `short`: with the 2 s smoke timeout instead of the shipped one.
fn rollback_case(ec2: &Ec2, label: &str, short: bool, runs: usize) {
    let (agent, apache) = apache_agent(ec2);
    if short {
        fixture::short_smoke_timeout(&agent.catalog);
    }
    let base = agent.path("/var/www");
    std::fs::create_dir_all(base.join(BROKEN)).expect("docroot without a health page");
    let env = ec2.env();
    ec2.publish(&web_map(1, &PRODUCTS, &base));
    expect_exit(&sync(&agent, &env), 0, "converging on 5 products");
    let sites = Apache::sites_dir(&agent.root);
    let served = fixture::tree(&sites);
    let mut broken = PRODUCTS.to_vec();
    broken.push(BROKEN);
    ec2.publish(&web_map(2, &broken, &base));

    let mut walls = Vec::new();
    let mut stages = Stages::default();
    let mut slowest: Option<(Duration, serde_json::Value)> = None;
    for _ in 0..runs {
        let generation = apache.generation();
        let started = Instant::now();
        let out = sync(&agent, &env);
        let wall = started.elapsed();
        walls.push(wall);
        expect_exit(&out, 1, "the rolled-back sync");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
        assert_eq!(report["outcome"], "rolled_back", "{report}");
        assert!(
            all_ok(&report["smoke_after_rollback"]),
            "unhealthy after rollback: {report}"
        );
        stages.add(&report);
        assert_eq!(
            fixture::tree(&sites),
            served,
            "files not restored byte for byte"
        );
        for p in PRODUCTS {
            assert_eq!(apache.get(&domain(p), HEALTH).0, 200, "{p} not served");
        }
        assert!(
            apache.wait_generation(generation + 2, Duration::from_secs(10)),
            "not reloaded twice (apply, rollback)"
        );
        if slowest.as_ref().is_none_or(|(s, _)| wall > *s) {
            slowest = Some((wall, report));
        }
    }
    let stats = Stats::of(&walls);
    println!(
        "{label:<26} {:>9.0} {:>9.0} {:>9.0} {:>9.0}   {}   target < 3000 ms  {}",
        stats.median,
        stats.p90,
        stats.min,
        stats.max,
        stages.medians(),
        verdict(stats.median < 3000.0)
    );
    if let Some((wall, report)) = slowest {
        println!(
            "{:<26} slowest {:.0} ms: smoke {}; after rollback {}",
            "",
            ms(wall),
            smoke_summary(&report["smoke"]),
            smoke_summary(&report["smoke_after_rollback"])
        );
    }
}

// ---------------------------------------------------------------------------------------
// Set-up

/// The web host with `check = "true"`, `reload = "true"`, smoke tests on `http_port`.
fn noop_setup(ec2: &Ec2, http_port: u16) -> Setup {
    ec2.setup()
        .var(&format!("http_port = {http_port}"))
        .service("apache2", "check = \"true\"")
        .service("apache2", "reload = \"true\"")
}

/// A fresh EC2 web agent and an Apache serving its `--root`, with docroots and health pages.
fn apache_agent(ec2: &Ec2) -> (Agent, Apache) {
    let (agent, apache) = ec2.apache_agent();
    docroots(&agent, &PRODUCTS);
    (agent, apache)
}

/// A real Apache with an empty site set, answering 200 for `/health.txt` on any Host from
/// its default document root, and every site's marker with 410 (as each site's own virtual
/// host would): the smoke target when the service commands do nothing.
struct Responder {
    apache: Apache,
    _root: tempfile::TempDir,
}

impl Responder {
    fn start() -> Responder {
        let root = tempfile::Builder::new()
            .prefix("rolecall-bench-")
            .tempdir()
            .expect("temp root");
        let conf = root.path().join("etc/apache2/conf-enabled");
        std::fs::create_dir_all(&conf).expect("conf-enabled");
        let marker = "Redirect gone /.rolecall/site\n";
        std::fs::write(conf.join("markers.conf"), marker).expect("markers.conf");
        let apache = Apache::start(root.path());
        let page = apache.server_root().join("htdocs/health.txt");
        std::fs::write(page, "ok\n").expect("health page");
        assert_eq!(apache.get("alpha.example.test", HEALTH).0, 200);
        assert_eq!(
            apache.get("alpha.example.test", "/.rolecall/site/alpha").0,
            410
        );
        Responder {
            apache,
            _root: root,
        }
    }

    fn port(&self) -> u16 {
        self.apache.port()
    }
}

fn identity_name(imds: bool) -> &'static str {
    if imds {
        "IMDSv2 identity (harness server)"
    } else {
        "static identity"
    }
}

fn domain(product: &str) -> String {
    format!("{product}.example.test")
}

// ---------------------------------------------------------------------------------------
// Running the agent

fn sync(agent: &Agent, env: &[(String, String)]) -> Output {
    agent
        .command(&["sync", "--json"])
        .envs(env.iter().cloned())
        .output()
        .expect("running rolecall sync")
}

#[track_caller]
fn expect_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}: {}", describe(out));
}

fn all_ok(results: &serde_json::Value) -> bool {
    results
        .as_array()
        .is_some_and(|r| !r.is_empty() && r.iter().all(|s| s["ok"] == true))
}

// ---------------------------------------------------------------------------------------
// Measuring

/// One read of /proc/PID: memory and CPU.
struct Usage {
    rss_kb: u64,
    hwm_kb: u64,
    rss_anon_kb: u64,
    rss_file_kb: u64,
    rss_shmem_kb: u64,
    threads: u64,
    /// utime + stime, seconds (clock-tick resolution).
    cpu_s: f64,
    /// cutime + cstime (reaped children), seconds.
    children_cpu_s: f64,
    /// Sum of the live threads' on-CPU time from schedstat, seconds (ns resolution).
    sched_s: f64,
}

impl Usage {
    fn read(pid: u32) -> Usage {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        // Fields after the parenthesised command name, from field 3 (state) on.
        let rest: Vec<f64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default()
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        let tick = clock_ticks_per_second();
        let ticks = |i: usize| rest.get(i).copied().unwrap_or(0.0) / tick;
        Usage {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
            rss_anon_kb: field("RssAnon:"),
            rss_file_kb: field("RssFile:"),
            rss_shmem_kb: field("RssShmem:"),
            threads: field("Threads:"),
            cpu_s: ticks(11) + ticks(12),
            children_cpu_s: ticks(13) + ticks(14),
            sched_s: sched_seconds(pid),
        }
    }
}

fn sched_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// `getconf CLK_TCK` (USER_HZ, the unit of /proc/PID/stat's times), 100 if unknown.
fn clock_ticks_per_second() -> f64 {
    static TICK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Median, p90, min and max of samples, in milliseconds.
struct Stats {
    median: f64,
    p90: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        Self::of_ms(samples.iter().map(|d| ms(*d)).collect())
    }

    fn of_ms(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        let at = |q: usize| samples[(samples.len() - 1) * q / 100];
        Stats {
            median: at(50),
            p90: at(90),
            min: at(0),
            max: at(100),
        }
    }
}

/// Per-stage timings (`status --json` → `timings`, plus `elapsed_ms` as `reconcile`).
#[derive(Default)]
struct Stages(BTreeMap<String, Vec<f64>>);

impl Stages {
    fn add(&mut self, report: &serde_json::Value) {
        let mut push = |name: &str, value: &serde_json::Value| {
            if let Some(v) = value.as_f64() {
                self.0.entry(name.to_string()).or_default().push(v);
            }
        };
        if let Some(timings) = report["timings"].as_object() {
            timings.iter().for_each(|(stage, v)| push(stage, v));
        }
        push("reconcile", &report["elapsed_ms"]);
        let smoke_max = report["smoke"].as_array().and_then(|s| {
            s.iter()
                .filter_map(|r| r["attempts"].as_f64())
                .reduce(f64::max)
        });
        push("smoke_attempts_max", &smoke_max.into());
        let after = |field: &str| {
            report["smoke_after_rollback"]
                .as_array()
                .and_then(|s| s.iter().filter_map(|r| r[field].as_f64()).reduce(f64::max))
        };
        if let Some(elapsed) = after("elapsed_ms") {
            push("smoke_after_rollback", &elapsed.into());
            push("after_rollback_attempts_max", &after("attempts").into());
        }
    }

    fn medians(&self) -> String {
        self.0
            .iter()
            .map(|(stage, values)| format!("{stage} {:.0}", Stats::of_ms(values.clone()).median))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Boot measurements: time to READY=1 and the boot reconcile's stages.
#[derive(Default)]
struct Boots {
    ready: Vec<Duration>,
    stages: Stages,
    slowest: Option<(Duration, serde_json::Value)>,
}

impl Boots {
    fn add(&mut self, ready: Duration, status: &serde_json::Value) {
        assert_eq!(status["outcome"], "converged", "{status}");
        assert!(all_ok(&status["smoke"]), "{status}");
        self.ready.push(ready);
        self.stages.add(status);
        if self
            .slowest
            .as_ref()
            .is_none_or(|(slowest, _)| ready > *slowest)
        {
            self.slowest = Some((ready, status.clone()));
        }
    }

    fn print(&self, target_ms: f64) {
        let stats = Stats::of(&self.ready);
        println!(
            "start -> READY=1 over {} boots (ms): median {:.0}, p90 {:.0}, min {:.0}, max {:.0}   target < {target_ms:.0} ms  {}",
            self.ready.len(),
            stats.median,
            stats.p90,
            stats.min,
            stats.max,
            verdict(stats.median < target_ms && stats.p90 < target_ms)
        );
        println!(
            "boot reconcile stages (median ms): {}",
            self.stages.medians()
        );
        if let Some((ready, status)) = &self.slowest {
            println!(
                "slowest boot: READY after {:.0} ms; stages {}; smoke {}",
                ms(*ready),
                status["timings"],
                smoke_summary(&status["smoke"])
            );
        }
    }
}

/// `name attempts x / elapsed ms` for each smoke result.
fn smoke_summary(results: &serde_json::Value) -> String {
    results
        .as_array()
        .map(|r| {
            r.iter()
                .map(|t| {
                    format!(
                        "{} {}x/{}ms",
                        t["name"].as_str().unwrap_or("?"),
                        t["attempts"],
                        t["elapsed_ms"]
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

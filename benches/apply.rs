//! Issue 13's benchmark: whole `rolecall sync --files-only` processes on a 10,000-host /
//! 500-product map where one web host serves all 500 products, against the fsync floor
//! (`../shared/bench/floor.rs`: the same files installed with nothing else done), measured
//! in the same run on the same disk:
//! - first apply (500 vhosts) vs the floor on an empty target;
//! - no change vs the floor with `--skip-unchanged`;
//! - one product's master moved: whole process time (target ≤ 40 ms) and files rewritten
//!   (that product's vhost and database.env, which both name the master);
//! - the master moved back by the next publish: the same, once the render memo's stamps
//!   vouch for the other products' files (the first publish after the first apply reads
//!   and stamps them): what a long-running host sees;
//! - peak RSS of the whole `sync`, the highest of the three (target ≤ 20 MB); set
//!   `ROLECALL_APPLY_BIN` to measure another build, e.g. the `dist` one packages ship.
//!
//! `cargo bench --bench apply` runs the full size (the floor is found through
//! `ROLECALL_FLOOR_DIR` or `../shared/bench` beside the repository); under `cargo test`
//! (no `--bench`) each scenario runs once on a small map as a sanity pass, with the floor
//! only when its source is there.
#![allow(
    clippy::print_stdout,
    reason = "a bench binary reports its figures on stdout"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/support/fleet.rs"]
mod fleet;

/// The web host that serves every product.
const HOST: &str = "web-all";

struct Scale {
    is_full: bool,
    hosts: usize,
    products: usize,
    runs: usize,
}

/// A scratch agent: config, map and `--root`, removed on drop.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(map: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("rolecall-apply-bench-")
            .tempdir_in(bench_dir())
            .expect("tempdir");
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let config = format!(
            "[identity]\nsource = \"static\"\nid = \"{HOST}\"\naddress = \"10.250.0.1\"\naz = \"us-east-1a\"\n\n\
             [map]\nurl = \"file://{}\"\n\n[paths]\ncatalog = \"{1}\"\ntemplates = \"{1}\"\n",
            dir.path().join("map.toml").display(),
            templates.display()
        );
        std::fs::write(dir.path().join("agent.toml"), config).expect("agent.toml");
        let scratch = Scratch { dir };
        scratch.write_map(map);
        scratch
    }

    fn write_map(&self, map: &str) {
        std::fs::write(self.dir.path().join("map.toml"), map).expect("map");
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// One `sync --files-only`: wall time, peak RSS (KiB), the files it changed and its stage
    /// timings (the report's `timings`, ms). It runs
    /// under this binary's `--rss-of` mode, whose only child it is, so getrusage sees
    /// nothing else (the floor's build, earlier syncs).
    fn sync(&self) -> (Duration, u64, usize, String) {
        let started = Instant::now();
        let out = Command::new(std::env::current_exe().expect("this bench"))
            .arg(RSS_OF)
            .arg(rolecall())
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .arg("--root")
            .arg(self.root())
            .args(["sync", "--files-only", "--json"])
            .output()
            .expect("running rolecall");
        let wall = started.elapsed();
        assert!(
            out.status.success(),
            "sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
        let files = report["files"].as_array().map_or(0, Vec::len);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let rss = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("rss_kib="))
            .next_back()
            .and_then(|n| n.parse().ok())
            .expect("the --rss-of line");
        (wall, rss, files, report["timings"].to_string())
    }
}

/// The rolecall measured: `ROLECALL_APPLY_BIN` (e.g. the `dist` build that packages
/// ship, whose smaller code touches fewer pages), else the one cargo built for this bench.
fn rolecall() -> PathBuf {
    std::env::var_os(BIN)
        .filter(|v| !v.is_empty())
        .map_or_else(|| env!("CARGO_BIN_EXE_rolecall").into(), PathBuf::from)
}

const BIN: &str = "ROLECALL_APPLY_BIN";

/// The argument that makes this binary run the rest of its arguments as a command and
/// report that child's peak RSS (`rss_kib=N` on stderr), passing its stdout through.
const RSS_OF: &str = "--rss-of";

fn rss_of(argv: &[String]) -> ! {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .expect("running the measured command");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    std::io::Write::write_all(&mut std::io::stdout(), &out.stdout).expect("stdout");
    let mut err = std::io::stderr();
    std::io::Write::write_all(&mut err, &out.stderr).expect("stderr");
    std::io::Write::write_all(
        &mut err,
        format!("rss_kib={}\n", usage.max_rss()).as_bytes(),
    )
    .expect("stderr");
    std::process::exit(out.status.code().unwrap_or(1))
}

/// Scratch space on the disk the managed files would be on (not a tmpfs /tmp).
fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("apply-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// The map: `fleet::fleet`'s fleet plus `HOST` serving every product.
fn map(scale: &Scale, generation: u64) -> String {
    let mut text = fleet::fleet(scale.hosts - 1, scale.products).replacen(
        "generation = 1",
        &format!("generation = {generation}"),
        1,
    );
    let all: Vec<String> = (0..scale.products).map(|p| format!("\"p{p}\"")).collect();
    text.push_str(&format!(
        "[hosts.{HOST}]\naddress = \"10.250.0.1\"\naz = \"us-east-1a\"\nroles = [\"web\"]\nproducts = [{}]\n",
        all.join(", ")
    ));
    text
}

/// The same map with product `p7`'s master and first replica swapped (a failover).
fn master_moved(text: &str, generation: u64) -> String {
    text.replacen(
        "master = \"db-7-0\"\nreplicas = [\"db-7-1\", \"db-7-2\"]",
        "master = \"db-7-1\"\nreplicas = [\"db-7-0\", \"db-7-2\"]",
        1,
    )
    .replacen(
        &format!("generation = {}", generation - 1),
        &format!("generation = {generation}"),
        1,
    )
}

/// The floor program, built from `floor.rs` once; `None` when its source is not found.
fn floor_binary() -> Option<PathBuf> {
    let dir = std::env::var_os("ROLECALL_FLOOR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench"));
    let source = dir.join("floor.rs");
    if !source.is_file() {
        return None;
    }
    let out = bench_dir().join("floor");
    let status = Command::new("rustc")
        .args(["-O", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("rustc");
    assert!(status.success(), "building {}", source.display());
    Some(out)
}

/// The bundle of every file under `etc` of `root`, in the floor's format.
fn bundle(root: &Path) -> Vec<u8> {
    // Files only, sorted, without the agent's hidden temp and state files.
    let files = walkdir::WalkDir::new(root.join("etc"))
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(walkdir::DirEntry::into_path);
    let mut out = Vec::new();
    for f in files {
        let data = std::fs::read(&f).expect("read");
        let rel = f.strip_prefix(root.join("etc")).expect("under etc");
        out.extend_from_slice(format!("{} {}\n", data.len(), rel.display()).as_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// One floor run over `bundle` into `target`: wall time.
fn floor(floor: &Path, bundle: &Path, target: &Path, skip: bool) -> Duration {
    let started = Instant::now();
    let mut cmd = Command::new(floor);
    cmd.arg(bundle).arg(target);
    if skip {
        cmd.arg("--skip-unchanged");
    }
    let status = cmd.status().expect("floor");
    let wall = started.elapsed();
    assert!(status.success(), "the floor failed");
    wall
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What the scenarios measured, medians.
/// Files a moved master rewrites on a web host: that product's vhost
/// (`SetEnv ROLECALL_DB_MASTER`) and its `database.env` (`DB_HOST`), nothing of the others.
const MOVED_FILES: usize = 2;

/// One moved-master scenario: its times, and the last sync's files and stage timings.
#[derive(Default)]
struct Moved {
    times: Vec<Duration>,
    files: usize,
    stages: String,
}

impl Moved {
    fn add(&mut self, (time, _, files, stages): (Duration, u64, usize, String)) {
        self.times.push(time);
        self.files = files;
        self.stages = stages;
    }

    fn report(&self, what: &str, verdict: impl Fn(bool) -> &'static str) {
        let time = ms(median(self.times.clone()));
        println!(
            "{what}: {time:.1} ms, {} file(s) rewritten  targets <= 40 ms {}, {MOVED_FILES} files {}",
            self.files,
            verdict(time <= 40.0),
            verdict(self.files == MOVED_FILES),
        );
        println!("  its stages (ms): {}", self.stages);
    }
}

#[derive(Default)]
struct Figures {
    first: Vec<Duration>,
    unchanged: Vec<Duration>,
    moved: Moved,
    /// The master moved back by the next publish.
    moved_again: Moved,
    floor_first: Vec<Duration>,
    floor_unchanged: Vec<Duration>,
    peak_rss_kib: u64,
}

fn run(scale: &Scale, floor_bin: Option<&Path>, figures: &mut Figures) {
    let text = map(scale, 1);
    let scratch = Scratch::new(&text);
    let (first, first_rss, created, _) = scratch.sync();
    assert!(
        created >= scale.products,
        "first apply wrote {created} files"
    );
    figures.first.push(first);
    let (unchanged, unchanged_rss, none, _) = scratch.sync();
    assert_eq!(none, 0, "a no-change sync wrote files");
    figures.unchanged.push(unchanged);
    scratch.write_map(&master_moved(&text, 2));
    let moved = scratch.sync();
    let rss = moved.1;
    figures.moved.add(moved);
    scratch.write_map(&text.replacen("generation = 1", "generation = 3", 1));
    let again = scratch.sync();
    let rss = rss.max(again.1);
    figures.moved_again.add(again);
    figures.peak_rss_kib = [figures.peak_rss_kib, first_rss, unchanged_rss, rss]
        .into_iter()
        .max()
        .unwrap_or_default();
    if let Some(floor_bin) = floor_bin {
        let bundle_path = scratch.dir.path().join("files.bin");
        std::fs::write(&bundle_path, bundle(&scratch.root())).expect("bundle");
        let target = scratch.dir.path().join("floor-target");
        figures
            .floor_first
            .push(floor(floor_bin, &bundle_path, &target, false));
        figures
            .floor_unchanged
            .push(floor(floor_bin, &bundle_path, &target, true));
    }
    if std::env::var_os(KEEP).is_some() {
        let moved = master_moved(&text, 2);
        scratch.write_map(&moved.replacen("generation = 2", "generation = 4", 1));
        let kept = scratch.dir.keep();
        println!(
            "{KEEP}: kept {} (its map.toml moves the master again)",
            kept.display()
        );
    }
}

/// Set, the last run's scratch directory is kept for profiling one sync by hand: its
/// `map.toml` is the applied map with the master moved back (a second moved-master sync).
const KEEP: &str = "ROLECALL_APPLY_KEEP";

fn report(scale: &Scale, f: Figures) {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let ratio = |a: &[Duration], b: &[Duration]| {
        (!b.is_empty()).then(|| ms(median(a.to_vec())) / ms(median(b.to_vec())))
    };
    let first = ratio(&f.first, &f.floor_first);
    println!(
        "first apply ({} vhosts): {:.0} ms; floor {}; ratio {}  target <= 1.5x {}",
        scale.products,
        ms(median(f.first.clone())),
        f.floor_first.first().map_or("-".into(), |_| format!(
            "{:.0} ms",
            ms(median(f.floor_first.clone()))
        )),
        first.map_or("-".into(), |r| format!("{r:.2}x")),
        first.map_or("-", |r| verdict(r <= 1.5)),
    );
    println!(
        "no change: {:.1} ms; floor {}",
        ms(median(f.unchanged.clone())),
        f.floor_unchanged.first().map_or("-".into(), |_| format!(
            "{:.1} ms",
            ms(median(f.floor_unchanged.clone()))
        )),
    );
    f.moved.report("one master moved", verdict);
    f.moved_again
        .report("master moved back by the next publish", verdict);
    let rss_mb = f.peak_rss_kib as f64 / 1024.0;
    println!(
        "peak RSS of sync (any scenario): {rss_mb:.1} MB  target <= 20 MB {}",
        verdict(rss_mb <= 20.0)
    );
    if !scale.is_full {
        for files in [f.moved.files, f.moved_again.files] {
            assert_eq!(
                files, MOVED_FILES,
                "moving one master rewrote more than its product's vhost and database.env"
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(RSS_OF) {
        rss_of(&args[1..]);
    }
    let full = args.iter().any(|a| a == "--bench");
    let scale = if full {
        Scale {
            is_full: true,
            hosts: 10_000,
            products: 500,
            runs: 7,
        }
    } else {
        Scale {
            is_full: false,
            hosts: 200,
            products: 20,
            runs: 1,
        }
    };
    let floor_bin = floor_binary();
    if floor_bin.is_none() {
        assert!(!full, "floor.rs not found: set ROLECALL_FLOOR_DIR");
        println!("(floor.rs not found beside the repository: floor ratios skipped)");
    }
    println!(
        "issue 13 apply benchmark: {} hosts, {} products, {HOST} serves all; {} runs of {}",
        scale.hosts,
        scale.products,
        scale.runs,
        rolecall().display()
    );
    let mut figures = Figures::default();
    for _ in 0..scale.runs {
        run(&scale, floor_bin.as_deref(), &mut figures);
    }
    report(&scale, figures);
}

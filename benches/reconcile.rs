//! Reconcile benchmark (issue 2) on a generated 10,000-host / 500-product role map: (a) parse,
//! validate and resolve for one host, (b) render and plan for a web host serving 50 products
//! against an empty and a converged disk, (c) whole `rolecall sync --files-only` processes,
//! first run and no-change run. Plain `Instant` loops (warm-up, then median / p90 / min) and
//! no criterion, whose build would cost CI time: `cargo test --all-targets` compiles benches.
#![allow(
    clippy::print_stdout,
    reason = "a bench binary reports its figures on stdout"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rolecall::catalog::Catalog;
use rolecall::identity::Identity;
use rolecall::plan::{self, DiskState, FileState, Plan, Record, Records};
use rolecall::render::{self, Desired, MapInfo, RenderedFile};
use rolecall::rolemap::{self, HostView, Resolution, RoleMap};

/// The host every measurement is for: the web host serving `web_products` products.
const HOST: &str = "web-00000";

/// Sizes and repetitions of one run.
struct Scale {
    /// Issue 2's run: compare the medians with its targets.
    is_full: bool,
    hosts: usize,
    products: usize,
    web_products: usize,
    warmup: usize,
    iterations: usize,
    process_iterations: usize,
}

impl Scale {
    /// Issue 2's figures.
    const FULL: Scale = Scale {
        is_full: true,
        hosts: 10_000,
        products: 500,
        web_products: 50,
        warmup: 5,
        iterations: 50,
        process_iterations: 30,
    };
    /// `cargo test`: every step once, on a small map.
    const SMOKE: Scale = Scale {
        is_full: false,
        hosts: 100,
        products: 10,
        web_products: 5,
        warmup: 0,
        iterations: 1,
        process_iterations: 1,
    };
}

/// Wall-clock median, p90 and min of one measurement, and the mean CPU time it took
/// (which shows how much of the wall time is other load on this shared machine).
struct Stats {
    median: Duration,
    p90: Duration,
    min: Duration,
    cpu: Duration,
}

impl Stats {
    /// `cpu` is the CPU time of all samples together: the kernel updates it in ticks, so
    /// only the sum over many samples is precise.
    fn of(mut wall: Vec<Duration>, cpu: Duration) -> Stats {
        wall.sort();
        let at = |q: usize| wall[(wall.len() - 1) * q / 100];
        let runs = u32::try_from(wall.len()).expect("a small number of samples");
        Stats {
            median: at(50),
            p90: at(90),
            min: wall[0],
            cpu: cpu / runs,
        }
    }
}

/// CPU time (user + system) of this process, the threads a parse starts included.
fn process_cpu() -> Duration {
    // Fields 14 and 15 (utime, stime).
    stat_ticks(11)
}

/// CPU time (user + system) of every reaped child process.
fn children_cpu() -> Duration {
    // Fields 16 and 17 (cutime, cstime).
    stat_ticks(13)
}

/// Two consecutive CPU time fields of `/proc/self/stat`, `skip` fields after the process
/// name (which ends field 2), in clock ticks of 10 ms: only meaningful summed over many runs.
fn stat_ticks(skip: usize) -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(skip)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Runs `f` `warmup` times, then `iterations` timed times, in this thread. Wall time runs
/// until `f` returns: freeing what it returned is not timed (as criterion's
/// `iter_with_large_drop`), since a reconcile keeps it to the end. The CPU column is the
/// process's, so it includes the freeing and the threads a large map's parse starts.
fn measure<T>(scale: &Scale, iterations: usize, mut f: impl FnMut() -> T) -> Stats {
    measure_with(scale, iterations, || (), |()| f())
}

/// Like [`measure`], timing `f` on a fresh untimed `setup()` each time.
fn measure_with<S, T>(
    scale: &Scale,
    iterations: usize,
    mut setup: impl FnMut() -> S,
    mut f: impl FnMut(S) -> T,
) -> Stats {
    for _ in 0..scale.warmup {
        black_box(f(setup()));
    }
    let mut cpu = Duration::ZERO;
    let wall = (0..iterations)
        .map(|_| {
            let input = setup();
            let cpu_started = process_cpu();
            let started = Instant::now();
            let output = black_box(f(input));
            let took = started.elapsed();
            drop(output);
            cpu += process_cpu().saturating_sub(cpu_started);
            took
        })
        .collect();
    Stats::of(wall, cpu)
}

/// Like [`measure`] for `f` spawning one process: CPU time is the children's.
fn measure_process(scale: &Scale, mut f: impl FnMut()) -> Stats {
    for _ in 0..scale.warmup {
        f();
    }
    let cpu_started = children_cpu();
    let wall = (0..scale.process_iterations)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    Stats::of(wall, children_cpu().saturating_sub(cpu_started))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints one result line; `target` in milliseconds for the figures issue 2 sets, judged
/// only in a full run (a test run is a debug build on a small map).
fn report(scale: &Scale, name: &str, stats: &Stats, target: Option<f64>) {
    let verdict = match target.filter(|_| scale.is_full) {
        Some(t) if ms(stats.median) < t => format!("< {t} ms  ok"),
        Some(t) => format!("< {t} ms  MISSED"),
        None => String::new(),
    };
    println!(
        "{name:<46} {:>8.2} {:>8.2} {:>8.2} {:>8.2}   {verdict}",
        ms(stats.median),
        ms(stats.p90),
        ms(stats.min),
        ms(stats.cpu)
    );
}

fn product(i: usize) -> String {
    format!("p{i:03}")
}

/// A map of `hosts` hosts and `products` products. Per product: a master, two chained
/// replicas, a backup (db + db-backup) and two memcached hosts; ten monitor hosts; the rest
/// are web hosts, `HOST` serving the first `web_products` products, every other one three.
fn generate_map(scale: &Scale) -> String {
    let mut text = String::from("schema = 1\ngeneration = 1000\n");
    for i in 0..scale.products {
        let name = product(i);
        let _ = write!(
            text,
            "\n[products.{name}]\ndomain = \"{name}.example.com\"\n\
             aliases = [\"www.{name}.example.com\"]\n\
             docroot = \"/srv/{name}/current/public\"\nhealth_path = \"/health\"\n\
             \n[products.{name}.database]\nname = \"{name}\"\nmaster = \"db-{name}-1\"\n\
             replicas = [\"db-{name}-2\", \"db-{name}-3\"]\nbackup = \"db-{name}-4\"\n\
             backup_url = \"s3://fleet-backups/{name}/\"\n"
        );
    }
    let mut hosts = Hosts { text, count: 0 };
    for i in 0..scale.products {
        let name = product(i);
        for k in 1..=3 {
            hosts.add(&format!("db-{name}-{k}"), "\"db\"", &[]);
        }
        hosts.add(&format!("db-{name}-4"), "\"db\", \"db-backup\"", &[]);
        for k in 1..=2 {
            let serves = std::slice::from_ref(&name);
            hosts.add(&format!("mc-{name}-{k}"), "\"memcached\"", serves);
        }
    }
    for k in 0..10 {
        hosts.add(&format!("mon-{k}"), "\"monitor\"", &[]);
    }
    let first: Vec<String> = (0..scale.web_products).map(product).collect();
    hosts.add(HOST, "\"web\"", &first);
    for w in 1..=scale.hosts - hosts.count {
        let serves: Vec<String> = (0..3)
            .map(|k| product((w * 3 + k) % scale.products))
            .collect();
        hosts.add(&format!("web-{w:05}"), "\"web\"", &serves);
    }
    assert_eq!(hosts.count, scale.hosts, "the map has the hosts asked for");
    hosts.text
}

/// Appends `[hosts.*]` tables, each with the next address of 10.0.0.0/8.
struct Hosts {
    text: String,
    count: usize,
}

impl Hosts {
    fn add(&mut self, id: &str, roles: &str, products: &[String]) {
        self.count += 1;
        let n = self.count;
        let list: Vec<String> = products.iter().map(|p| format!("\"{p}\"")).collect();
        let _ = write!(
            self.text,
            "\n[hosts.{id}]\naddress = \"10.{}.{}.{}\"\naz = \"us-east-1{}\"\nroles = [{roles}]\n\
             products = [{}]\n",
            n >> 16,
            (n >> 8) & 255,
            n & 255,
            ["a", "b", "c"][n % 3],
            list.join(", ")
        );
    }
}

fn identity() -> Identity {
    Identity {
        id: HOST.to_string(),
        address: "10.0.0.1".to_string(),
        az: "us-east-1a".to_string(),
        region: "us-east-1".to_string(),
        instance_type: None,
        ami_id: None,
    }
}

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// Stage 3 as a reconcile runs it (`rolemap::load_for`): the map and the host's view.
fn load_for(bytes: &[u8]) -> (RoleMap, HostView) {
    let (map, resolution) =
        rolemap::load_for(bytes, &identity()).expect("the generated map is valid");
    match resolution {
        Resolution::Assigned(view) => (map, *view),
        Resolution::Waiting => panic!("{HOST} is not in the generated map"),
    }
}

fn view_of(bytes: &[u8]) -> HostView {
    load_for(bytes).1
}

/// (a): the whole of stage 3, and its parts.
fn bench_resolve(scale: &Scale, bytes: &[u8]) {
    let stats = measure(scale, scale.iterations, || load_for(bytes));
    report(scale, "(a) parse + validate + resolve", &stats, Some(30.0));
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    let stats = measure(scale, scale.iterations, || rolemap::types::parse(text));
    report(
        scale,
        "    parse (typed map from the parser's events)",
        &stats,
        None,
    );
    let stats = measure_with(scale, scale.iterations, || load_for(bytes), drop);
    report(
        scale,
        "    freeing the map and view (not in (a))",
        &stats,
        None,
    );
    let map = rolemap::types::parse(text).expect("parses");
    let stats = measure(scale, scale.iterations, || {
        rolemap::validate::validate(&map)
    });
    report(scale, "    validate", &stats, None);
    let stats = measure(scale, scale.iterations, || {
        rolemap::resolve(&map, &identity())
    });
    report(scale, "    resolve", &stats, None);
}

/// What the catalog, templates and vars of a reconcile are.
struct Renderer {
    catalog: Catalog,
    tera: render::Templates,
    info: MapInfo,
    vars: toml::Table,
}

impl Renderer {
    fn load() -> Renderer {
        let dir = templates_dir();
        let catalog = Catalog::load(&dir, &BTreeMap::new()).expect("the default catalog");
        Renderer {
            tera: render::Templates::load(&dir, &catalog).expect("the default templates"),
            catalog,
            info: MapInfo {
                etag: Some("\"bench\"".to_string()),
                version: None,
                generation: 1000,
                url: "s3://fleet-config/rolemap.toml".to_string(),
            },
            vars: toml::Table::new(),
        }
    }

    fn render(&self, view: &HostView) -> Desired {
        render::render(view, &self.catalog, &self.tera, &self.info, &self.vars)
            .expect("the default catalog renders")
    }
}

fn allowed() -> Vec<PathBuf> {
    rolecall::config::DEFAULT_ALLOWED_ROOTS
        .iter()
        .map(PathBuf::from)
        .collect()
}

/// The disk and records of a host that already converged to `files`.
fn converged(files: &[RenderedFile]) -> Disk {
    let disk = files
        .iter()
        .map(|f| (f.path.clone(), DiskState::File(FileState::from(f))))
        .collect();
    let records = files
        .iter()
        .map(|f| (f.path.clone(), Record::from(f)))
        .collect();
    (disk, records)
}

fn plan_for(
    files: &[RenderedFile],
    disk: &BTreeMap<PathBuf, DiskState>,
    records: &Records,
) -> Plan {
    plan::plan(files, disk, records, &allowed()).expect("the plan is not refused")
}

type Disk = (BTreeMap<PathBuf, DiskState>, Records);

/// Files the web role renders per product with a database: its vhost and its
/// `database.env`.
const FILES_PER_PRODUCT: usize = 2;

/// What is measured is right: a vhost and a database.env per product, all created on an
/// empty disk, none changed on a converged one.
fn check_plans(scale: &Scale, desired: &Desired, empty: &Disk, converged: &Disk) {
    let files = scale.web_products * FILES_PER_PRODUCT;
    assert_eq!(
        desired.files.len(),
        files,
        "a vhost and a database.env per product"
    );
    let creates = plan_for(&desired.files, &empty.0, &empty.1).changes.len();
    assert_eq!(creates, files);
    assert!(plan_for(&desired.files, &converged.0, &converged.1).is_empty());
}

/// (b): render + plan against an empty disk and against a converged one.
fn bench_render_plan(scale: &Scale, bytes: &[u8]) {
    let view = view_of(bytes);
    let stats = measure(scale, scale.iterations, Renderer::load);
    report(
        scale,
        "    load catalog + templates (per reconcile)",
        &stats,
        None,
    );
    let r = Renderer::load();
    let desired = r.render(&view);
    let empty = (BTreeMap::new(), Records::new());
    let (disk, records) = converged(&desired.files);
    check_plans(scale, &desired, &empty, &(disk.clone(), records.clone()));

    let stats = measure(scale, scale.iterations, || {
        let desired = r.render(&view);
        plan_for(&desired.files, &empty.0, &empty.1)
    });
    report(scale, "(b) render + plan, empty disk", &stats, Some(20.0));
    let stats = measure(scale, scale.iterations, || {
        let desired = r.render(&view);
        plan_for(&desired.files, &disk, &records)
    });
    report(
        scale,
        "(b) render + plan, converged disk",
        &stats,
        Some(20.0),
    );
    let stats = measure(scale, scale.iterations, || r.render(&view));
    report(scale, "    render", &stats, None);
    let stats = measure(scale, scale.iterations, || {
        plan_for(&desired.files, &disk, &records)
    });
    report(scale, "    plan, converged disk", &stats, None);
}

/// A scratch directory with agent.toml and the map for `HOST`.
struct Scratch {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Scratch {
    fn new(bytes: &[u8]) -> Scratch {
        let dir = tempfile::tempdir().expect("scratch dir");
        let map = dir.path().join("rolemap.toml");
        std::fs::write(&map, bytes).expect("writing the map");
        let config = dir.path().join("agent.toml");
        let id = identity();
        let text = format!(
            "[identity]\nsource = \"static\"\nid = \"{}\"\naddress = \"{}\"\naz = \"{}\"\n\n\
             [map]\nurl = \"file://{}\"\n\n[paths]\ncatalog = \"{templates}\"\n\
             templates = \"{templates}\"\nstate = \"/var/lib/rolecall\"\n",
            id.id,
            id.address,
            id.az,
            map.display(),
            templates = templates_dir().display(),
        );
        std::fs::write(&config, text).expect("writing agent.toml");
        Scratch { dir, config }
    }

    /// A fresh, empty `--root`.
    fn fresh_root(&self) -> PathBuf {
        tempfile::tempdir_in(self.dir.path())
            .expect("a scratch root")
            .keep()
    }

    /// `rolecall --config … --root ROOT sync --files-only`, which must converge.
    fn sync(&self, root: &Path) {
        let out = self.command(root, &["sync", "--files-only"]);
        assert!(
            out.status.success(),
            "rolecall sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn command(&self, root: &Path, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_rolecall"))
            .arg("--config")
            .arg(&self.config)
            .arg("--root")
            .arg(root)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .output()
            .expect("running rolecall")
    }
}

/// (c): whole processes; the last no-change run's stage timings as the agent records them.
fn bench_process(scale: &Scale, bytes: &[u8]) {
    let scratch = Scratch::new(bytes);
    let stats = measure_process(scale, || {
        let out = Command::new(env!("CARGO_BIN_EXE_rolecall"))
            .arg("--version")
            .output()
            .expect("running rolecall --version");
        assert!(out.status.success(), "rolecall --version failed");
    });
    report(scale, "    process floor: rolecall --version", &stats, None);
    let stats = measure_process(scale, || scratch.sync(&scratch.fresh_root()));
    report(
        scale,
        "(c) sync --files-only process, first run",
        &stats,
        None,
    );
    let root = scratch.fresh_root();
    scratch.sync(&root);
    let vhosts = root.join("etc/apache2/sites-enabled");
    let written = std::fs::read_dir(&vhosts).expect("vhosts written").count();
    assert_eq!(written, scale.web_products, "one vhost per product");
    let stats = measure_process(scale, || scratch.sync(&root));
    report(
        scale,
        "(c) sync --files-only process, no change",
        &stats,
        Some(50.0),
    );
    let status = scratch.command(&root, &["status", "--json"]);
    let json: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status --json is JSON");
    println!(
        "    stage timings of the last no-change run (ms): {}",
        json["timings"]
    );
}

/// The 1-minute load average: the figures are only as good as the machine was idle.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// `cargo bench --bench reconcile` prints the figures; `-- resolve`, `-- render` or
/// `-- process` runs one section (e.g. under `perf record`). Without `--bench`, which
/// `cargo bench` passes and `cargo test` does not, each step runs once on a small map, as a
/// test. The agent is `CARGO_BIN_EXE_rolecall`, which cargo sets for benches as for
/// integration tests: the release build under `cargo bench`, the debug one under `cargo test`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|arg| arg == "--bench");
    let only: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    let wanted = |section: &str| only.is_empty() || only.iter().any(|o| o.as_str() == section);
    let scale = if full { Scale::FULL } else { Scale::SMOKE };
    let started = Instant::now();
    let text = generate_map(&scale);
    println!(
        "rolecall reconcile benchmark: {} hosts, {} products, {HOST} serves {}; map {} KiB, \
         generated in {:.0} ms; {} CPUs, load average {}",
        scale.hosts,
        scale.products,
        scale.web_products,
        text.len() / 1024,
        ms(started.elapsed()),
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
    );
    println!(
        "{:<46} {:>8} {:>8} {:>8} {:>8}   target (wall median)",
        "ms", "median", "p90", "min", "cpu"
    );
    if wanted("resolve") {
        bench_resolve(&scale, text.as_bytes());
    }
    if wanted("render") {
        bench_render_plan(&scale, text.as_bytes());
    }
    if wanted("process") {
        bench_process(&scale, text.as_bytes());
    }
}

//! Issue 12, the fleet's reports (SPEC §9.1) with real daemons against moto: written on a
//! change and at the heartbeat but not on quiet polls, markers moved within a generation
//! (new one first, old one deleted) and kept one per generation, a report store that is
//! missing or hangs never failing or holding up a reconcile; `fleet status` counts and exit
//! codes over markers in moto; the HTML page in headless Chromium.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use crate::fixture::{
    assert_exit, assert_stdout, describe, fleet_status, memcached_map, stdout, Agent, Daemon, Setup,
};
use crate::map_publish::list_keys;
use crate::support::s3::Moto;
use crate::support::wait_until;

const ID: &str = "cache-1";
const WAIT: Duration = Duration::from_secs(30);

/// A memcached host `cache-1` whose smoke test connects to a listener the test holds,
/// reading its map from `map_url` and reporting to `report_url` with `heartbeat`; its
/// daemon is the fixture's, started with `env` (the S3 server's variables).
pub struct Host {
    pub agent: Agent,
    _smoke_target: TcpListener,
    daemon: Option<Daemon>,
    env: Vec<(String, String)>,
}

impl Host {
    pub fn new(
        map_url: Option<String>,
        report_url: &str,
        heartbeat: &str,
        env: Vec<(String, String)>,
    ) -> Host {
        let smoke_target = TcpListener::bind("127.0.0.1:0").expect("smoke target");
        let port = smoke_target.local_addr().expect("address").port();
        let mut setup = Setup::new(ID, "10.0.0.5")
            .var(&format!("memcached_port = {port}"))
            .var("memcached_mb = 64")
            .service("memcached", "restart = \"true\"");
        setup.map_url = map_url;
        setup.map_lines = vec![
            "poll_interval = \"1s\"".into(),
            "jitter = \"0s\"".into(),
            "timeout = \"2s\"".into(),
        ];
        setup.sections = vec![[
            "[report]".into(),
            format!("url = \"{report_url}\""),
            format!("heartbeat = \"{heartbeat}\""),
        ]
        .join("\n")];
        Host {
            agent: Agent::new(setup),
            _smoke_target: smoke_target,
            daemon: None,
            env,
        }
    }

    /// A host of the shared moto reading its map from `rolemap.toml` in a new bucket and
    /// reporting under `fleet/` there with `heartbeat`; the host, the bucket and the map's URL.
    pub fn in_new_bucket(moto: &Moto, heartbeat: &str) -> (Host, String, String) {
        let bucket = moto.new_bucket(false);
        let map_url = format!("s3://{bucket}/rolemap.toml");
        let report_url = format!("s3://{bucket}/fleet/");
        let host = Host::new(
            Some(map_url.clone()),
            &report_url,
            heartbeat,
            moto.agent_env(),
        );
        (host, bucket, map_url)
    }

    /// The binary for this host, with its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.agent.command(args);
        cmd.envs(self.env.iter().cloned());
        cmd
    }

    pub fn start(&mut self) {
        self.daemon = Some(Daemon::start(&self.agent, &self.env));
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon was started")
    }

    /// Whether the daemon's log has a line holding `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.daemon().log_lines().iter().any(|l| l.contains(text))
    }

    /// Waits until the status record says `text`; panics with the log otherwise.
    #[track_caller]
    pub fn wait_status(&self, timeout: Duration, text: &str) {
        let ok = wait_until(timeout, || {
            self.agent.status()["message"]
                .as_str()
                .is_some_and(|m| m.contains(text))
        });
        assert!(
            ok,
            "no status {text:?}: {}\n{}",
            self.agent.status(),
            self.daemon().log_tail()
        );
    }
}

/// A memcached map with `cache-1` and the `others` (same product, zone `a`).
pub fn map_with(generation: u64, others: &[String]) -> String {
    let mut text = memcached_map(generation, "fleet");
    for (i, id) in others.iter().enumerate() {
        text.push_str(&format!(
            "\n[hosts.{id}]\naddress = \"10.0.1.{}\"\naz = \"a\"\nroles = [\"memcached\"]\nproducts = [\"site\"]\n",
            i + 1
        ));
    }
    text
}

/// Three other hosts such that, at `generation` with waves `[50, 100]`, `cache-1` is in wave 1.
pub fn others_putting_cache_1_in_wave_1(generation: u64) -> Vec<String> {
    (0..100)
        .map(|n| {
            (0..3)
                .map(|i| format!("peer-{n}-{i}"))
                .collect::<Vec<String>>()
        })
        .find(|others| {
            let ids: Vec<&str> = std::iter::once(ID)
                .chain(others.iter().map(String::as_str))
                .collect();
            let waves = rolecall::fleet::waves::Waves::assign(
                ids.iter().map(|id| (*id, "a")),
                generation,
                &[50, 100],
            );
            waves.wave_of(ID) == Some(1)
        })
        .expect("some peers put cache-1 in wave 1")
}

/// A host reporting to a fresh bucket of the shared moto, its map in the same bucket.
struct Reporting {
    moto: &'static Moto,
    bucket: String,
    map_url: String,
    host: Host,
}

impl Reporting {
    fn start(heartbeat: &str) -> Reporting {
        let moto = Moto::shared();
        let (mut host, bucket, map_url) = Host::in_new_bucket(moto, heartbeat);
        moto.put(&bucket, "rolemap.toml", map_with(1, &[]).as_bytes());
        host.start();
        Reporting {
            moto,
            bucket,
            map_url,
            host,
        }
    }

    fn keys(&self) -> Vec<String> {
        list_keys(self.moto, &self.bucket, "fleet/")
    }

    /// Waits until the keys under `fleet/` are `expected`.
    #[track_caller]
    fn wait_keys(&self, expected: &[&str]) {
        let ok = wait_until(WAIT, || self.keys() == expected);
        assert!(ok, "{:?}\n{}", self.keys(), self.host.daemon().log_tail());
    }

    /// PUTs of records and of markers so far.
    fn puts(&self) -> (usize, usize) {
        let count = |part: &str| {
            let prefix = format!("/{}/fleet/{part}", self.bucket);
            self.moto.request_count("PUT", &prefix, None)
        };
        (count("hosts/"), count("g/"))
    }

    /// Unchanged polls (304) of the map so far.
    fn quiet_polls(&self) -> usize {
        let map_path = format!("/{}/rolemap.toml", self.bucket);
        self.moto.request_count("GET", &map_path, Some(304))
    }
}

#[test]
fn reports_follow_changes_and_heartbeats_and_markers_move() {
    let r = Reporting::start("5s");
    r.wait_keys(&["fleet/g/1/ok/cache-1", "fleet/hosts/cache-1.json"]);
    assert!(wait_until(WAIT, || r.puts() == (1, 1)), "{:?}", r.puts());
    quiet_polls_write_nothing_and_the_heartbeat_rewrites_the_record(&r);
    a_staged_generation_is_held_then_ok(&r);
}

fn quiet_polls_write_nothing_and_the_heartbeat_rewrites_the_record(r: &Reporting) {
    let polls = r.quiet_polls();
    assert!(wait_until(WAIT, || r.quiet_polls() >= polls + 2));
    assert_eq!(r.puts(), (1, 1), "a quiet poll wrote a report");
    assert!(wait_until(WAIT, || r.puts().0 == 2), "no heartbeat");
    assert_eq!(r.puts().1, 1, "the heartbeat moved the marker");
}

/// cache-1 is in wave 1: held until wave 1 opens, then ok; the held marker is deleted,
/// generation 1's stays. While held, its polls ask only whether the held map changed (304):
/// the map is downloaded once when published and once when the wave opens.
fn a_staged_generation_is_held_then_ok(r: &Reporting) {
    let map_file = r.host.agent.dir.path().join("next.toml");
    let text = map_with(1, &others_putting_cache_1_in_wave_1(2));
    std::fs::write(&map_file, text).expect("map file");
    let map_file = map_file.display().to_string();
    let publish = r
        .host
        .command(&["map", "publish", &map_file, "--to", &r.map_url])
        .args(["--rollout", "50,100", "--bake", "8s", "--max-failed", "10"])
        .output()
        .expect("map publish");
    assert_exit(&publish, 0);
    r.host.wait_status(WAIT, "generation 2 held: wave 1 opens");
    let downloads = || {
        let map_path = format!("/{}/rolemap.toml", r.bucket);
        r.moto.request_count("GET", &map_path, Some(200))
    };
    let (held_at, polls) = (downloads(), r.quiet_polls());
    assert!(
        wait_until(WAIT, || r.quiet_polls() >= polls + 2),
        "no unchanged polls while held"
    );
    assert_eq!(downloads(), held_at, "a held poll downloaded the map again");
    r.host.wait_status(WAIT, "generation 2 held: wave 1 opens");
    let held = "fleet/g/2/held/cache-1".to_string();
    assert!(
        wait_until(WAIT, || r.keys().contains(&held)),
        "{:?}",
        r.keys()
    );
    r.host.wait_status(WAIT, "converged to generation 2");
    r.wait_keys(&[
        "fleet/g/1/ok/cache-1",
        "fleet/g/2/ok/cache-1",
        "fleet/hosts/cache-1.json",
    ]);
    let held_path = format!("/{}/{held}", r.bucket);
    assert_eq!(r.moto.request_count("DELETE", &held_path, None), 1);
    assert_eq!(downloads(), held_at + 1, "the opened wave's download");
}

/// With a poll of an hour, a host held for wave 1 (bake 4 s) still applies right after its
/// wave opens, woken at the opening time, and not before it; the map is not polled faster.
#[test]
fn a_held_host_wakes_when_its_wave_opens_not_by_polling_faster() {
    let moto = Moto::shared();
    let (mut host, bucket, map_url) = Host::in_new_bucket(moto, "1h");
    host.agent.setup.map_lines[0] = "poll_interval = \"1h\"".into();
    host.agent.write_config();
    moto.put(&bucket, "rolemap.toml", map_with(1, &[]).as_bytes());
    host.start();
    host.wait_status(WAIT, "converged to generation 1");
    let map_file = host.agent.dir.path().join("next.toml");
    let text = map_with(1, &others_putting_cache_1_in_wave_1(2));
    std::fs::write(&map_file, text).expect("map file");
    let map_file = map_file.display().to_string();
    let mut publish = host.command(&["map", "publish", &map_file, "--to", &map_url]);
    publish.args(["--rollout", "50,100", "--bake", "4s", "--max-failed", "10"]);
    assert_exit(&publish.output().expect("map publish"), 0);
    let out = host.command(&["sync"]).output().expect("sync");
    assert_stdout(&out, 0, &["generation 2 held: wave 1 opens"]);
    let map_path = format!("/{bucket}/rolemap.toml");
    let gets = moto.request_count("GET", &map_path, None);
    host.wait_status(Duration::from_secs(20), "converged to generation 2");
    let applied = SystemTime::now();
    let opens = wave_opens(&moto.get(&bucket, "rolemap.toml"), 1);
    assert!(applied >= opens, "applied before wave 1 opened");
    let late = applied.duration_since(opens).unwrap_or_default();
    assert!(
        late < Duration::from_secs(5),
        "woken {late:?} after the opening"
    );
    let polled = moto.request_count("GET", &map_path, None) - gets;
    assert!(polled <= 2, "{polled} polls of the map while held");
}

/// When wave `k` of the map `bytes` opens: its `[rollout]` start plus `k` bakes.
fn wave_opens(bytes: &[u8], k: u32) -> SystemTime {
    let map = rolecall::rolemap::load(bytes).expect("a valid map");
    let rollout = map.rollout.expect("[rollout]");
    let start = rollout.start.expect("start").to_string();
    let start = humantime::parse_rfc3339(&start).expect("RFC 3339 start");
    start + humantime::parse_duration(&rollout.bake).expect("bake") * k
}

/// A report URL whose bucket does not exist: the host converges and `check` is OK; the
/// next change retries the report, which lands once the bucket is there.
#[test]
fn a_missing_report_bucket_never_fails_a_reconcile_and_is_retried() {
    let moto = Moto::shared();
    let missing = format!("rolecall-test-missing-{}", std::process::id());
    let report_url = format!("s3://{missing}/fleet/");
    let mut host = Host::new(None, &report_url, "1h", moto.agent_env());
    host.agent.write_map(&memcached_map(1, "a"));
    host.start();
    host.wait_status(WAIT, "converged to generation 1");
    assert_exit(&host.command(&["check"]).output().expect("check"), 0);
    assert!(wait_until(WAIT, || host.logged("fleet report not written")));
    moto.create_bucket(&missing, false);
    host.agent.write_map(&memcached_map(2, "b"));
    host.wait_status(WAIT, "converged to generation 2");
    let marker = "fleet/g/2/ok/cache-1".to_string();
    assert!(wait_until(WAIT, || list_keys(moto, &missing, "fleet/")
        .contains(&marker)));
}

/// An S3 endpoint that accepts connections and never answers: `sync` answers at once, and
/// a new map is applied within a poll plus the report's bound.
#[test]
fn a_hanging_report_store_never_holds_up_a_reconcile() {
    let hanging = TcpListener::bind("127.0.0.1:0").expect("a server that never answers");
    let endpoint = format!("http://{}", hanging.local_addr().expect("address"));
    let mut env = Moto::shared().agent_env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL_S3");
    env.push(("AWS_ENDPOINT_URL_S3".into(), endpoint));
    let mut host = Host::new(None, "s3://hanging-bucket/fleet/", "1h", env);
    host.agent.write_map(&memcached_map(1, "a"));
    host.start();
    host.wait_status(WAIT, "converged to generation 1");
    let asked = Instant::now();
    assert_exit(&host.command(&["sync"]).output().expect("sync"), 0);
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "sync waited for the report: {waited:?}"
    );
    let changed = Instant::now();
    host.agent.write_map(&memcached_map(2, "b"));
    host.wait_status(Duration::from_secs(20), "converged to generation 2");
    // One poll (1 s) plus at most the report's 5 s bound after the sync's reconcile.
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(9), "{took:?}");
    assert!(
        host.logged("fleet report not written") && host.logged("no answer within 2000 ms"),
        "{}",
        host.daemon().log_tail()
    );
    assert_eq!(host.agent.status()["outcome"], "converged");
}

/// Four hosts in two zones; markers and records put straight into moto.
const STATUS_MAP: &str = "schema = 1\ngeneration = 7\n\n[products.shop]\ndomain = \"shop.example.test\"\ndocroot = \"/srv/shop\"\n\n[products.shop.database]\nname = \"shop\"\nmaster = \"db-1\"\n\n[hosts.db-1]\naddress = \"10.0.0.1\"\naz = \"a\"\nroles = [\"db\"]\n\n[hosts.web-1]\naddress = \"10.0.0.2\"\naz = \"a\"\nroles = [\"web\"]\nproducts = [\"shop\"]\n\n[hosts.web-2]\naddress = \"10.0.0.3\"\naz = \"b\"\nroles = [\"web\"]\nproducts = [\"shop\"]\n\n[hosts.web-3]\naddress = \"10.0.0.4\"\naz = \"b\"\nroles = [\"web\"]\nproducts = [\"shop\"]\n";

struct Reports {
    moto: &'static Moto,
    bucket: String,
}

impl Reports {
    fn new() -> Reports {
        let moto = Moto::shared();
        let bucket = moto.new_bucket(false);
        moto.put(&bucket, "rolemap.toml", STATUS_MAP.as_bytes());
        Reports { moto, bucket }
    }

    fn marker(&self, state: &str, id: &str) {
        self.moto
            .put(&self.bucket, &format!("fleet/g/7/{state}/{id}"), b"");
    }

    fn unmark(&self, state: &str, id: &str) {
        self.moto
            .delete(&self.bucket, &format!("fleet/g/7/{state}/{id}"));
    }

    fn status(&self, extra: &[&str]) -> Output {
        let map = format!("s3://{}/rolemap.toml", self.bucket);
        let report = format!("s3://{}/fleet/", self.bucket);
        let mut cmd = fleet_status(&map, &report);
        cmd.args(extra).envs(self.moto.agent_env());
        cmd.output().expect("fleet status")
    }
}

impl Reports {
    /// Moto's logged requests of `method` under `part` of this bucket, once at least
    /// `at_least` of them are logged (its log is read by a thread).
    fn requests_seen(&self, method: &str, part: &str, at_least: usize) -> usize {
        let path = format!("/{}/{part}", self.bucket);
        self.moto
            .wait_requests((method, &path, None), at_least, Duration::from_secs(5));
        self.moto.request_count(method, &path, None)
    }
}

/// The row of `fleet status`'s table that starts with `key` (product, role, zone, wave),
/// as its words.
fn row(out: &Output, key: &[&str]) -> Vec<String> {
    let text = stdout(out);
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    text.lines()
        .map(words)
        .find(|w| w.len() > key.len() && w[..key.len()] == *key)
        .unwrap_or_else(|| panic!("no row {key:?}: {}", describe(out)))
}

#[test]
fn fleet_status_counts_hosts_and_exits_by_the_worst() {
    let r = Reports::new();
    for id in ["db-1", "web-1", "web-2", "web-3"] {
        r.marker("ok", id);
    }
    let out = r.status(&[]);
    assert_stdout(&out, 0, &["4 of 4 hosts ok"]);
    assert_eq!(
        r.requests_seen("GET", "?list-type=2", 1),
        1,
        "one LIST when every host has a marker"
    );
    held_silent_lagging_and_waiting_exit_1(&r);
    failed_exits_2_reading_only_its_record(&r);
    r.unmark("fail", "web-2");
    r.marker("halted", "web-2");
    zone_b(
        &r,
        2,
        &["web-2 (b, running generation 6) halted"],
        [1, 0, 0, 1, 0, 0, 0],
    );
}

/// `fleet status` exits `code` saying `says`, and the row of shop's web hosts in zone b
/// counts `counts`: OK, FAILED, HELD, HALTED, WAITING, LAGGING, SILENT.
#[track_caller]
fn zone_b(r: &Reports, code: i32, says: &[&str], counts: [u32; 7]) {
    let out = r.status(&[]);
    assert_stdout(&out, code, says);
    let counts = counts.map(|n| n.to_string());
    assert_eq!(
        row(&out, &["shop", "web", "b"])[4..],
        counts,
        "{}",
        describe(&out)
    );
}

/// web-3 (zone b): held, then silent (no marker, no record), then lagging (a recent
/// record); a host the map does not have waiting for a role. Each exits 1.
fn held_silent_lagging_and_waiting_exit_1(r: &Reports) {
    r.unmark("ok", "web-3");
    r.marker("held", "web-3");
    zone_b(r, 1, &["held hosts: web-3"], [1, 0, 1, 0, 0, 0, 0]);
    r.unmark("held", "web-3");
    let silent = ["silent hosts: web-3", "3 of 4 hosts ok, 1 silent"];
    zone_b(r, 1, &silent, [1, 0, 0, 0, 0, 0, 1]);
    r.moto.put(&r.bucket, "fleet/hosts/web-3.json", b"{}");
    zone_b(r, 1, &["lagging hosts: web-3"], [1, 0, 0, 0, 0, 1, 0]);
    r.marker("ok", "web-3");
    r.marker("waiting", "new-1");
    assert_stdout(&r.status(&[]), 1, &["not in the map: new-1 (waiting)"]);
    r.unmark("waiting", "new-1");
    assert_exit(&r.status(&[]), 0);
}

/// web-2 failed: exit 2, its reason from its record (escaped), the only record read.
fn failed_exits_2_reading_only_its_record(r: &Reports) {
    r.unmark("ok", "web-2");
    r.marker("fail", "web-2");
    let record = r#"{"id":"web-2","state":"fail","generation":7,"running":6,"zone":"b","roles":["web"],"products":["shop"],"map_sha256":null,"wave":null,"outcome":"rolled_back","message":"rolled back: smoke test http shop.example.test/: HTTP 404\u001b[2J","failed":[],"rolled_back":true,"converged_at":null,"written_at":1,"agent_version":"0.1.0"}"#;
    r.moto
        .put(&r.bucket, "fleet/hosts/web-2.json", record.as_bytes());
    let before = r.requests_seen("GET", "fleet/hosts/", 0);
    let out = r.status(&[]);
    let reason = "web-2 (b, running generation 6) failed: rolled back: smoke test http shop.example.test/: HTTP 404\\u{1b}[2J";
    assert_stdout(&out, 2, &[reason, "3 of 4 hosts ok, 1 failed"]);
    let read = r.requests_seen("GET", "fleet/hosts/", before + 1);
    assert_eq!(read, before + 1, "only the failed host's record is read");
    let json: serde_json::Value =
        serde_json::from_slice(&r.status(&["--json"]).stdout).expect("JSON");
    assert_eq!(
        (&json["totals"]["failed"], &json["totals"]["ok"]),
        (&1.into(), &3.into())
    );
}

#[test]
fn fleet_status_exits_3_when_the_map_or_the_reports_cannot_be_read() {
    let r = Reports::new();
    let moto = r.moto;
    let run = |map: &str, report: &str| {
        let mut cmd = fleet_status(map, report);
        cmd.envs(moto.agent_env());
        cmd.output().expect("fleet status")
    };
    let report = format!("s3://{}/fleet/", r.bucket);
    let out = run(&format!("s3://{}/absent.toml", r.bucket), &report);
    assert_exit(&out, 3);
    moto.put(&r.bucket, "bad.toml", b"schema = 1\ngeneration = -4\n");
    assert_exit(&run(&format!("s3://{}/bad.toml", r.bucket), &report), 3);
    let map = format!("s3://{}/rolemap.toml", r.bucket);
    let out = run(&map, "s3://rolecall-no-such-bucket/fleet/");
    assert_exit(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reading the fleet's reports"),
        "{}",
        describe(&out)
    );
    let mut no_config = Command::new(crate::fixture::binary());
    no_config.args(["--config", "/nonexistent/agent.toml", "fleet", "status"]);
    assert_exit(&no_config.output().expect("fleet status"), 3);
}

/// A fleet in a report directory: every health once, a database chain, two zones.
fn page_fixture(dir: &Path) -> PathBuf {
    let map = dir.join("rolemap.toml");
    let text = STATUS_MAP.replace(
        "master = \"db-1\"\n",
        "master = \"db-1\"\nreplicas = [\"db-2\"]\n",
    ) + "\n[hosts.db-2]\naddress = \"10.0.0.5\"\naz = \"b\"\nroles = [\"db\"]\n";
    std::fs::write(&map, text).expect("map");
    let reports = dir.join("reports");
    for (state, id) in [
        ("ok", "db-1"),
        ("ok", "web-1"),
        ("fail", "web-2"),
        ("held", "db-2"),
    ] {
        let path = reports.join(format!("g/7/{state}/{id}"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("marker dir");
        std::fs::write(path, b"").expect("marker");
    }
    let record = r#"{"id":"web-2","state":"fail","generation":7,"running":6,"zone":"b","roles":["web"],"products":["shop"],"map_sha256":null,"wave":null,"outcome":"rolled_back","message":"rolled back: smoke test http shop.example.test/: <HTTP 404>","failed":[],"rolled_back":true,"converged_at":null,"written_at":1,"agent_version":"0.1.0"}"#;
    std::fs::create_dir_all(reports.join("hosts")).expect("hosts dir");
    std::fs::write(reports.join("hosts/web-2.json"), record).expect("record");
    map
}

#[test]
fn the_html_page_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("temp dir");
    let map = page_fixture(dir.path());
    let page = dir.path().join("fleet.html");
    let mut cmd = Command::new(crate::fixture::binary());
    cmd.args(["--config", "/nonexistent/agent.toml", "fleet", "status"])
        .arg("--map")
        .arg(format!("file://{}", map.display()))
        .arg("--report")
        .arg(format!("file://{}/reports", dir.path().display()))
        .arg("--html")
        .arg(&page);
    let out = cmd.output().expect("fleet status --html");
    assert_exit(&out, 2);
    let dom = crate::support::chromium::dump_dom(&page);
    for text in [
        "Fleet at generation 7",
        "1 host failed on generation 7.",
        "zone a",
        "zone b",
        "database shop",
        "✗ failed",
        "◷ held",
        "? silent",
        "generation 7 failed, runs 6",
        "rolled back: smoke test http shop.example.test/: &lt;HTTP 404&gt;",
    ] {
        assert!(dom.contains(text), "{text:?} not in the page:\n{dom}");
    }
    let chain = &dom[dom.find("database shop").expect("chain")..];
    assert!(
        chain.find("db-1") < chain.find("db-2"),
        "master before replica"
    );
    let png = crate::support::chromium::artifacts_dir().join("fleet-status.png");
    crate::support::chromium::screenshot(&page, &png, 1280, 2000);
    #[allow(clippy::print_stdout, reason = "the artifact's path for people")]
    {
        println!("fleet status page screenshot: {}", png.display());
    }
}

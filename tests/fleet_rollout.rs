//! Issue 12: a staged rollout across 20 real `rolecall run` processes (static identities,
//! their own roots and state, Apache's commands replaced by `true`, every web smoke test
//! answered by one local server; map and reports in a shared directory, as on a physical
//! fleet without S3). A map whose new product's health page is missing fails in wave 0 and
//! halts every other host before it applies anything; a good map opens wave by wave; a new
//! host with nothing applied applies at once while the others wait for their waves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fixture::{
    assert_exit, copy_dir, default_catalog, describe, fleet_status, short_smoke_timeout, Agent,
    Daemon, Setup,
};
use crate::support::health::HealthServer;
use crate::support::wait_until;

const AGENTS: usize = 20;
const ZONES: [&str; 3] = ["test-a", "test-b", "test-c"];
const WAIT: Duration = Duration::from_secs(60);

/// The shared directory (map, reports, short-smoke catalog), the health server, the agents.
struct Fleet {
    dir: tempfile::TempDir,
    health: HealthServer,
    hosts: BTreeMap<String, Host>,
    published: u64,
}

/// An agent and its daemon (stopped on drop).
struct Host {
    agent: Agent,
    daemon: Daemon,
}

fn id(i: usize) -> String {
    format!("web-{i:02}")
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().expect("fleet dir");
        let catalog = dir.path().join("catalog");
        copy_dir(&default_catalog(), &catalog);
        // A failing health page fails after 2 s rather than the shipped 15 s.
        short_smoke_timeout(&catalog);
        std::fs::create_dir_all(dir.path().join("reports")).expect("reports dir");
        Fleet {
            dir,
            health: HealthServer::start(),
            hosts: BTreeMap::new(),
            published: 0,
        }
    }

    fn map_url(&self) -> String {
        format!("file://{}", self.dir.path().join("rolemap.toml").display())
    }

    fn reports(&self) -> PathBuf {
        self.dir.path().join("reports")
    }

    fn start(&mut self, id: &str) {
        let mut setup = Setup::new(id, "10.0.0.1")
            .var(&format!("http_port = {}", self.health.port()))
            .service("apache2", "check = \"/bin/true\"")
            .service("apache2", "reload = \"/bin/true\"")
            .service("apache2", "restart = \"/bin/true\"");
        setup.catalog = self.dir.path().join("catalog");
        setup.map_url = Some(self.map_url());
        setup.sections = vec![[
            "[report]".into(),
            format!("url = \"file://{}/\"", self.reports().display()),
        ]
        .join("\n")];
        let agent = Agent::new(setup);
        let env = [("RUST_LOG".to_string(), "rolecall=info".to_string())];
        let daemon = Daemon::start(&agent, &env);
        self.hosts.insert(id.to_string(), Host { agent, daemon });
    }

    /// `rolecall map publish` of `text` (edited from the current generation) with `args`.
    fn publish(&mut self, text: &str, args: &[&str]) {
        let file = self.dir.path().join("edit.toml");
        std::fs::write(
            &file,
            text.replace(
                "generation = 0",
                &format!("generation = {}", self.published),
            ),
        )
        .expect("map file");
        let mut cmd = Command::new(crate::fixture::binary());
        cmd.args(["map", "publish"])
            .arg(&file)
            .args(["--to", &self.map_url()])
            .args(args);
        assert_exit(&cmd.output().expect("map publish"), 0);
        self.published = if self.published == 0 {
            1
        } else {
            self.published + 1
        };
    }

    fn status(&self, args: &[&str]) -> Output {
        let reports = format!("file://{}/", self.reports().display());
        let mut cmd = fleet_status(&self.map_url(), &reports);
        cmd.args(args);
        cmd.output().expect("fleet status")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.status(&["--json"]).stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `fleet status --json` has `counts` (health → number).
    #[track_caller]
    fn wait_totals(&self, counts: &[(&str, u64)]) {
        let ok = wait_until(WAIT, || {
            let json = self.json();
            counts
                .iter()
                .all(|(health, n)| json["totals"][*health] == *n)
        });
        assert!(
            ok,
            "totals never {counts:?}: {}\n{}",
            self.json()["totals"],
            self.logs_tail()
        );
    }

    fn waves(&self) -> BTreeMap<String, usize> {
        let json = self.json();
        let hosts = json["hosts"].as_array().cloned().unwrap_or_default();
        hosts
            .iter()
            .filter_map(|h| {
                Some((
                    h["id"].as_str()?.to_string(),
                    usize::try_from(h["wave"].as_u64()?).ok()?,
                ))
            })
            .collect()
    }

    fn log(&self, id: &str) -> String {
        self.hosts[id].daemon.log_lines().join("\n")
    }

    fn logs_tail(&self) -> String {
        self.hosts
            .values()
            .next()
            .map(|h| h.daemon.log_tail())
            .unwrap_or_default()
    }

    /// When the marker `g/<generation>/<state>/<id>` was written.
    fn marked_at(&self, generation: u64, state: &str, id: &str) -> Option<SystemTime> {
        let path = self.reports().join(format!("g/{generation}/{state}/{id}"));
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }
}

/// The base map: every host serves `site`; `extra_product` adds a product to every host.
fn map(hosts: &[String], extra_product: Option<(&str, &str)>, alias: bool) -> String {
    let mut text = String::from("schema = 1\ngeneration = 0\n\n[products.site]\ndomain = \"site.example.test\"\ndocroot = \"/srv/site\"\nhealth_path = \"/health.txt\"\n");
    if alias {
        text.push_str("aliases = [\"www.site.example.test\"]\n");
    }
    let mut products = String::from("\"site\"");
    if let Some((name, health)) = extra_product {
        text.push_str(&format!("\n[products.{name}]\ndomain = \"{name}.example.test\"\ndocroot = \"/srv/{name}\"\nhealth_path = \"{health}\"\n"));
        products.push_str(&format!(", \"{name}\""));
    }
    for (i, id) in hosts.iter().enumerate() {
        text.push_str(&format!(
            "\n[hosts.{id}]\naddress = \"10.0.0.{}\"\naz = \"{}\"\nroles = [\"web\"]\nproducts = [{products}]\n",
            i + 1,
            ZONES[i % ZONES.len()]
        ));
    }
    text
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn a_20_agent_staged_rollout_halts_in_wave_0_then_opens_wave_by_wave() {
    let mut fleet = Fleet::new();
    let ids: Vec<String> = (0..AGENTS).map(id).collect();
    fleet.publish(&map(&ids, None, false), &[]);
    ids.iter().for_each(|id| fleet.start(id));
    fleet.wait_totals(&[("ok", 20)]);
    assert_exit(&fleet.status(&[]), 0);

    halted_in_wave_0(&mut fleet, &ids);
    opened_wave_by_wave(&mut fleet, &ids);
    a_new_host_applies_at_once(&mut fleet, &ids);
}

/// A map adding a product without its health page: wave 0 fails and rolls back, everyone
/// else halts when their wave opens, and no host outside wave 0 writes the product's vhost.
fn halted_in_wave_0(fleet: &mut Fleet, ids: &[String]) {
    let published = Instant::now();
    fleet.publish(
        &map(ids, Some(("broken", "/missing.txt")), false),
        &["--rollout", "10,50,100", "--bake", "6s"],
    );
    let generation = fleet.published;
    let waves = fleet.waves();
    let first: Vec<&String> = waves
        .iter()
        .filter(|(_, w)| **w == 0)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(first.len(), 2, "{waves:?}");
    fleet.wait_totals(&[("failed", 2), ("halted", 18)]);
    let out = fleet.status(&[]);
    assert_exit(&out, 2);
    #[allow(clippy::print_stdout, reason = "the figure for the README")]
    {
        println!("publish -> fleet status exit 2: {:?}", published.elapsed());
    }
    only_wave_0_applied(fleet, ids, &waves, generation);
    let halted = ids
        .iter()
        .find(|id| waves[*id] == 1)
        .expect("a wave-1 host");
    let check = fleet.hosts[halted].agent.run(&["check"]);
    assert_exit(&check, 1);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("HALTED"),
        "{}",
        describe(&check)
    );
}

/// Wave 0's hosts wrote the broken vhost, failed and removed it; no other host wrote it
/// (every host logs the files it writes), and each has its marker.
fn only_wave_0_applied(
    fleet: &Fleet,
    ids: &[String],
    waves: &BTreeMap<String, usize>,
    generation: u64,
) {
    for id in ids {
        let wave = waves[id];
        let wrote = fleet.log(id).contains("rolecall-broken.conf");
        assert_eq!(
            wrote,
            wave == 0,
            "{id} (wave {wave}) wrote the broken vhost: {wrote}"
        );
        let vhost = fleet.hosts[id].agent.vhost("broken");
        assert!(!vhost.exists(), "{id} kept the broken vhost");
        let state = if wave == 0 { "fail" } else { "halted" };
        assert!(
            fleet.marked_at(generation, state, id).is_some(),
            "{id}: no {state} marker"
        );
    }
}

/// A good map with a bake of a few seconds: each wave applies after it opens and before
/// the next one opens.
fn opened_wave_by_wave(fleet: &mut Fleet, ids: &[String]) {
    fleet.publish(
        &map(ids, None, true),
        &["--rollout", "10,50,100", "--bake", "5s"],
    );
    let generation = fleet.published;
    let json = fleet.json();
    let opens: Vec<f64> = json["rollout"]["opens_unix"]
        .as_array()
        .expect("rollout")
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    let waves = fleet.waves();
    fleet.wait_totals(&[("ok", 20)]);
    assert_exit(&fleet.status(&[]), 0);
    for (id, wave) in &waves {
        let ok = unix(fleet.marked_at(generation, "ok", id).expect("ok marker"));
        assert!(
            ok >= opens[*wave],
            "{id} of wave {wave} applied at {ok}, before {}",
            opens[*wave]
        );
        if let Some(next) = opens.get(wave + 1) {
            assert!(
                ok < *next,
                "{id} of wave {wave} applied at {ok}, after wave {} opened",
                wave + 1
            );
        }
        if *wave > 0 {
            assert!(
                fleet.marked_at(generation, "held", id).is_none(),
                "{id}: held marker left"
            );
        }
    }
}

/// A host added to the map with nothing applied yet applies at once, whatever its wave.
fn a_new_host_applies_at_once(fleet: &mut Fleet, ids: &[String]) {
    let generation = fleet.published + 1;
    let newcomer = (AGENTS..AGENTS + 50)
        .map(id)
        .find(|candidate| {
            let mut all: Vec<String> = ids.to_vec();
            all.push(candidate.clone());
            let hosts = all
                .iter()
                .enumerate()
                .map(|(i, h)| (h.as_str(), ZONES[i % ZONES.len()]));
            let waves = rolecall::fleet::waves::Waves::assign(hosts, generation, &[10, 50, 100]);
            waves.wave_of(candidate).is_some_and(|w| w > 0)
        })
        .expect("a newcomer outside wave 0");
    let mut all = ids.to_vec();
    all.push(newcomer.clone());
    fleet.publish(
        &map(&all, None, false),
        &["--rollout", "10,50,100", "--bake", "1h"],
    );
    assert_eq!(fleet.published, generation);
    fleet.start(&newcomer);
    let ok = wait_until(WAIT, || {
        fleet.marked_at(generation, "ok", &newcomer).is_some()
    });
    assert!(
        ok,
        "the new host did not apply at once: {}",
        fleet.log(&newcomer)
    );
    assert!(fleet.waves()[&newcomer] > 0);
    // 21 hosts: wave 0 is ceil(2.1) = 3 of them, applying now; the other 17 wait for 1 h.
    fleet.wait_totals(&[("ok", 4), ("held", 17)]);
    assert_exit(&fleet.status(&[]), 1);
}

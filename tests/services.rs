//! Services for real (issue 4): Apache's graceful reload once per reconcile, smoke tests
//! by Host header, rollback when a site's health page is missing (and no reload storm
//! afterwards), MariaDB master and replica configured from the map with replication and
//! promotion hooks, and the backup cron file's life cycle.

use std::path::Path;
use std::time::Duration;

use crate::fixture::{
    assert_exit, describe, docroots, short_smoke_timeout, web_map, Agent, Daemon, Setup,
};
use crate::reconcile::web_agent;
use crate::support::apache::Apache;
use crate::support::mariadb::MariaDb;
use crate::support::{command_line, wait_until};

/// The repository's hook scripts.
pub fn hooks_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/hooks")
        .display()
        .to_string()
}

#[test]
fn three_products_one_graceful_reload_and_a_new_product_is_served_next_sync() {
    let (agent, apache) = web_agent(Apache::start);
    let base = docroots(&agent, &["alpha", "beta", "gamma", "delta"]);
    agent.write_map(&web_map(1, &["alpha", "beta", "gamma"], &base));
    let out = agent.run(&["sync", "--json"]);
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(
        report["services"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(report["smoke"].as_array().map(Vec::len), Some(3));
    assert!(report["smoke"]
        .as_array()
        .expect("smoke")
        .iter()
        .all(|s| s["ok"] == true));
    // Every reload command the sync ran is counted by the time it exits; the generation
    // shows the one reload took effect.
    assert_eq!(
        apache.reloads().len(),
        1,
        "more than one reload for one reconcile"
    );
    assert!(apache.wait_generation(2, Duration::from_secs(10)));
    assert_eq!(
        apache.generation(),
        2,
        "more than one reload for one reconcile"
    );
    for p in ["alpha", "beta", "gamma"] {
        assert_eq!(
            apache.get(&format!("{p}.example.test"), "/health.txt"),
            (200, format!("ok {p}\n"))
        );
    }
    assert_ne!(
        apache.get("delta.example.test", "/health.txt").1,
        "ok delta\n"
    );

    agent.write_map(&web_map(2, &["alpha", "beta", "gamma", "delta"], &base));
    assert_exit(&agent.run(&["sync"]), 0);
    assert_eq!(
        apache.get("delta.example.test", "/health.txt"),
        (200, "ok delta\n".to_string())
    );
}

/// How long after its reload command returns the delayed Apache below applies the reload.
const RELOAD_LAG: &str = "3";

/// Apache applies a graceful reload after the reload command returns; here it comes
/// seconds later, as on a loaded host. A new site whose health page is missing must still
/// be rolled back: the smoke test first waits for the site's own virtual host (its marker
/// path). The control at the end shows what the marker prevents: without it the same change
/// is kept, because the new Host falls through to alpha's virtual host, whose health page
/// answers 200, until the reload lands and the site is broken.
#[test]
fn a_reload_applied_after_its_command_returns_cannot_pass_a_broken_site() {
    let mut agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    let apache = Apache::start(&agent.root);
    let lagging = format!(
        "(sleep {RELOAD_LAG}; {}) >/dev/null 2>&1 &",
        command_line(&apache.counted_reload_cmd())
    );
    let line = |key: &str, argv: &[String]| format!("{key} = {:?}", command_line(argv));
    agent.setup = Setup::new("web-1", "127.0.0.1")
        .var(&format!("http_port = {}", apache.port()))
        .service("apache2", &line("check", &apache.check_cmd()))
        .service(
            "apache2",
            &line("reload", &["sh".into(), "-c".into(), lagging]),
        );
    agent.write_config();
    let base = docroots(&agent, &["alpha", "beta", "gamma"]);
    std::fs::remove_file(base.join("beta/health.txt")).expect("no health page for beta");

    // A good new site passes once its reload has landed.
    agent.write_map(&web_map(1, &["alpha", "gamma"], &base));
    assert_exit(&agent.run(&["sync"]), 0);
    assert_eq!(
        apache.get("gamma.example.test", "/health.txt"),
        (200, "ok gamma\n".to_string()),
        "the sync passed before gamma was served"
    );

    agent.write_map(&web_map(2, &["alpha", "beta", "gamma"], &base));
    let out = agent.run(&["sync"]);
    let status = agent.status();
    assert_eq!(
        status["outcome"],
        "rolled_back",
        "{}\n{status}",
        describe(&out)
    );
    assert!(!agent.vhost("beta").exists());

    // Control: the shipped smoke test without its marker keeps the broken site. Once the
    // rollback's own reload has landed, beta's Host falls through to alpha's site again.
    assert!(
        wait_until(Duration::from_secs(30), || apache
            .get("beta.example.test", "/health.txt")
            == (200, "ok alpha\n".to_string())),
        "the rollback's reload never landed"
    );
    let web = agent.catalog.join("web.toml");
    let shipped = std::fs::read_to_string(&web).expect("web.toml");
    let marker = "site_marker = \"/.rolecall/site/{{ product.name }}\"\n";
    assert!(shipped.contains(marker), "web.toml's site marker moved");
    std::fs::write(&web, shipped.replace(marker, "")).expect("web.toml");
    assert_exit(&agent.run(&["sync"]), 0);
    assert_eq!(agent.status()["outcome"], "converged", "{}", agent.status());
    assert!(
        wait_until(Duration::from_secs(30), || apache
            .get("beta.example.test", "/health.txt")
            .0
            == 404),
        "beta never became the broken site the control kept"
    );
}

/// The daemon's first retry delay after a failure, doubled for the second.
const FIRST_BACKOFF_MS: u128 = 5_000;

/// Milliseconds between reload `at` and the next one (times in nanoseconds).
fn gap_ms(reloads: &[u128], at: usize) -> u128 {
    (reloads[at + 1] - reloads[at]) / 1_000_000
}

/// After the rollback the daemon polls every second, but the same failing inputs are held:
/// the first retry's reload comes at least the 5 s backoff after the rollback's (judged from
/// the reload commands' own times, with the daemon's counters showing the polls went on
/// meanwhile), and a new map is applied before the second (10 s) backoff would allow.
#[test]
fn a_missing_health_page_rolls_back_and_the_daemon_does_not_reload_again_until_a_new_map() {
    let (agent, apache) = web_agent(Apache::start);
    // A short smoke timeout: each failing attempt then takes seconds, not the shipped 15 s.
    short_smoke_timeout(&agent.catalog);
    let base = docroots(&agent, &["alpha", "beta"]);
    std::fs::remove_file(base.join("beta/health.txt")).expect("no health page for beta");
    agent.write_map(&web_map(1, &["alpha"], &base));
    assert_exit(&agent.run(&["sync"]), 0);
    let served = agent.vhost_bytes("alpha");

    agent.write_map(&web_map(2, &["alpha", "beta"], &base));
    let daemon = Daemon::start(&agent, &[]);
    assert!(
        wait_until(Duration::from_secs(60), || agent.status()["outcome"]
            == "rolled_back"),
        "no rollback: {}\n{}",
        agent.status(),
        daemon.log_tail()
    );
    let status = agent.status();
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("beta.example.test")),
        "{status}"
    );
    assert!(
        status["smoke_after_rollback"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|r| r["ok"] == true)),
        "{status}"
    );
    assert!(!agent.vhost("beta").exists());
    assert_eq!(agent.vhost_bytes("alpha"), served);
    assert_eq!(apache.get("alpha.example.test", "/health.txt").0, 200);
    // The rollback's own reload is counted before anything is compared with it.
    assert_eq!(
        apache.reloads().len(),
        3,
        "reloads: the sync's, then the daemon's apply and rollback"
    );
    assert!(
        apache.wait_generation(4, Duration::from_secs(10)),
        "the rollback's reload did not take effect: {}",
        apache.error_log_tail()
    );

    // The held inputs are retried once the backoff is over: their smoke test fails again.
    let smoke_failures = || agent.counters()["smoke_failures"].as_u64().unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(60), || smoke_failures() >= 2),
        "the failed inputs were never retried: {}\n{}",
        agent.counters(),
        daemon.log_tail()
    );
    let reconciles: u64 = agent.counters()["reconciles"]
        .as_object()
        .expect("reconciles by outcome")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert!(
        reconciles >= 6,
        "the sync, two attempts and at least 3 held polls during the backoff: {}",
        agent.counters()
    );
    // Held polls did nothing: they are counted as held, not as more rollbacks.
    let counters = agent.counters();
    assert!(
        counters["reconciles"]["held"].as_u64() >= Some(1),
        "{counters}"
    );
    assert_eq!(
        counters["rollbacks"], counters["reconciles"]["rolled_back"],
        "{counters}"
    );
    assert_eq!(
        counters["rollbacks"], counters["smoke_failures"],
        "{counters}"
    );

    std::fs::write(base.join("beta/health.txt"), "ok beta\n").expect("health page");
    agent.write_map(&web_map(3, &["alpha", "beta"], &base));
    assert!(
        wait_until(Duration::from_secs(30), || apache
            .get("beta.example.test", "/health.txt")
            == (200, "ok beta\n".to_string())),
        "the new map was not applied: {}\n{}",
        agent.status(),
        daemon.log_tail()
    );
    // Reloads: the sync's; an apply and a rollback per attempt; the new map's.
    let reloads = apache.reloads();
    assert_eq!(reloads.len(), 6, "{reloads:?}");
    let (held, waited) = (gap_ms(&reloads, 2), gap_ms(&reloads, 4));
    assert!(
        held >= FIRST_BACKOFF_MS && waited < 2 * FIRST_BACKOFF_MS,
        "retried {held} ms after the rollback (backoff {FIRST_BACKOFF_MS} ms); the new map \
         applied {waited} ms after the last rollback (the next backoff is twice as long)"
    );
}

/// A db agent bound to a real MariaDB instance.
pub struct Db {
    /// The agent's files.
    pub agent: Agent,
    /// Its MariaDB server.
    pub server: MariaDb,
}

impl Db {
    /// `sync` converges, and `sql` then answers `expected` on the agent's server.
    #[track_caller]
    fn synced_answers(&self, sql: &str, expected: &str) {
        let out = self.agent.run(&["sync"]);
        assert_exit(&out, 0);
        assert_eq!(self.server.query(sql), expected, "{}", describe(&out));
    }
}

/// A db agent whose mariadb service is a real MariaDB instance of its own.
pub fn db_agent(id: &str, address: &str) -> Db {
    let mut agent = Agent::new(Setup::new(id, address));
    let server = MariaDb::start(&agent.root, id);
    let client = format!("--socket={} --user=root", server.socket().display());
    agent.setup = Setup::new(id, address)
        .var(&format!("mysql_client_args = \"{client}\""))
        .var(&format!("hooks_dir = \"{}\"", hooks_dir()))
        .var("replication_user = \"root\"")
        .var("replication_password_file = \"/nonexistent\"")
        .service(
            "mariadb",
            &format!(
                "check = \"mariadbd --defaults-file={} --help --verbose\"",
                server.base_cnf().display()
            ),
        )
        .service(
            "mariadb",
            &format!("restart = {:?}", command_line(&server.restart_cmd())),
        )
        .service(
            "mariadb",
            &format!("reload = {:?}", command_line(&server.restart_cmd())),
        );
    agent.write_config();
    Db { agent, server }
}

/// A map of product shop on `master` (id, address, port) and an optional `replica`.
pub fn db_map(
    generation: u64,
    master: (&str, &str, u16),
    replica: Option<(&str, &str, u16)>,
    removed: &[&str],
) -> String {
    let mut text = format!("schema = 1\ngeneration = {generation}\n\n[products.shop]\ndomain = \"shop.example.test\"\ndocroot = \"/srv/shop\"\nhealth_path = \"/health.txt\"\n");
    text.push_str(&format!(
        "\n[products.shop.database]\nname = \"shop\"\nmaster = \"{}\"\n",
        master.0
    ));
    if let Some(r) = replica {
        text.push_str(&format!("replicas = [\"{}\"]\n", r.0));
    }
    if !removed.is_empty() {
        let list: Vec<String> = removed.iter().map(|r| format!("\"{r}\"")).collect();
        text.push_str(&format!("removed = [{}]\n", list.join(", ")));
    }
    for (id, address, port) in std::iter::once(master).chain(replica) {
        text.push_str(&format!("\n[hosts.{id}]\naddress = \"{address}\"\naz = \"a\"\nroles = [\"db\"]\ndb_port = {port}\n"));
    }
    text
}

#[test]
fn mariadb_master_and_replica_from_the_map_then_promotion() {
    let one = db_agent("db-1", "127.0.0.11");
    let two = db_agent("db-2", "127.0.0.12");
    let m1 = ("db-1", "127.0.0.11", one.server.port());
    let m2 = ("db-2", "127.0.0.12", two.server.port());
    let map1 = db_map(1, m1, Some(m2), &[]);
    one.agent.write_map(&map1);
    two.agent.write_map(&map1);
    one.synced_answers("SELECT @@read_only, @@log_bin", "0\t1");
    two.synced_answers("SELECT @@read_only", "1");

    one.server.query("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY); INSERT INTO shop.orders VALUES (1), (2)");
    assert!(
        two.server.reaches_rows("shop.orders", "2"),
        "the row did not reach the replica: {}",
        two.server.query("SHOW SLAVE STATUS\\G")
    );

    // The failover: db-2 becomes the master; db-1 is taken out of the product.
    let map2 = db_map(2, m2, None, &["db-1"]);
    let map2 = format!("{map2}\n[hosts.db-1]\naddress = \"127.0.0.11\"\naz = \"a\"\nroles = [\"db\"]\ndb_port = {}\n", one.server.port());
    two.agent.write_map(&map2);
    let out = two.agent.run(&["sync"]);
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hook     promoted"),
        "{}",
        describe(&out)
    );
    assert_eq!(two.server.query("SELECT @@read_only"), "0");
    assert_eq!(
        two.server.query("SHOW SLAVE STATUS"),
        "",
        "replication still configured after promotion"
    );
    two.server.query("INSERT INTO shop.orders VALUES (3)");
    assert_eq!(two.server.query("SELECT COUNT(*) FROM shop.orders"), "3");
}

#[test]
fn the_web_host_follows_a_new_master() {
    let (agent, apache) = web_agent(Apache::start);
    let base = docroots(&agent, &["shop"]);
    let map = |generation: u64, master: &str| {
        web_map(generation, &["shop"], &base)
            .replace(
                "[products.shop]\ndomain = \"shop.example.test\"\ndocroot = \"/srv/shop\"\n",
                "",
            )
            .replace(
                "master = \"db-1\"\nreplicas = [\"db-2\"]",
                &format!("master = \"{master}\"\nreplicas = []"),
            )
    };
    agent.write_map(&map(1, "db-1"));
    assert_exit(&agent.run(&["sync"]), 0);
    let vhost = agent.vhost("shop");
    assert!(std::fs::read_to_string(&vhost)
        .expect("vhost")
        .contains("SetEnv ROLECALL_DB_MASTER 10.0.0.1\n"));
    agent.write_map(&map(2, "db-2"));
    let out = agent.run(&["sync"]);
    assert_exit(&out, 0);
    assert!(
        std::fs::read_to_string(&vhost)
            .expect("vhost")
            .contains("SetEnv ROLECALL_DB_MASTER 10.0.0.2\n"),
        "{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("smoke    http shop.example.test/health.txt ok"),
        "{}",
        describe(&out)
    );
    assert_eq!(apache.get("shop.example.test", "/health.txt").0, 200);
}

#[test]
fn the_backup_cron_file_is_installed_root_owned_0644_and_removed_with_the_role() {
    use std::os::unix::fs::MetadataExt;
    let agent = Agent::new(Setup::new("db-3", "10.0.0.3"));
    let base = agent.path("/var/www");
    agent.write_map(&web_map(1, &["alpha"], &base));
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let cron = agent.path("/etc/cron.d/rolecall-snapshot-shop");
    let meta = std::fs::metadata(&cron).expect("cron file installed");
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o644, 0, 0)
    );
    let content = std::fs::read(&cron).expect("cron");
    assert!(rolecall::cron::check(
        Path::new("/etc/cron.d/rolecall-snapshot-shop"),
        &content,
        "root",
        0o644
    )
    .is_empty());
    assert!(String::from_utf8_lossy(&content).contains("*/15 * * * * root"));

    agent.write_map(
        &web_map(2, &["alpha"], &base)
            .replace("roles = [\"db\", \"db-backup\"]", "roles = [\"db\"]")
            .replace("backup = \"db-3\"\n", ""),
    );
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    assert!(
        !cron.exists(),
        "the cron file stayed after the role was removed: {}",
        describe(&out)
    );
}

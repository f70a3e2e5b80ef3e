//! The failover story end to end (SPEC §1, issue 5): a master, two chained replicas and a
//! backup as real MariaDB servers, and a web host with real Apache, each configured by its
//! own `rolecall run` daemon from one map in moto. The master dies; `rolecall map promote`
//! publishes the new topology; within a poll interval plus jitter (plus the reconcile's own
//! time) every agent has reconciled: the first replica is writable, the second replicates
//! from it, the backup follows it, and the web host's vhost points at it with its smoke
//! test passing.

use std::time::{Duration, Instant};

use crate::fixture::{assert_exit, describe, docroots, Agent, Daemon};
use crate::reconcile::web_agent;
use crate::services::{db_agent, Db};
use crate::support::apache::Apache;
use crate::support::s3::Moto;
use crate::support::wait_until;

/// The agents' poll interval and jitter (`point_at_s3`).
const POLL: Duration = Duration::from_secs(1);
const JITTER: Duration = Duration::from_secs(1);
/// Allowed on top of poll, jitter and the reconcile's own time: the poll in progress when
/// the map changed, the status record written, this test noticing it (one `status` run per
/// agent per round), all on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);

const HOSTS: [(&str, &str); 4] = [
    ("db-m", "127.0.0.21"),
    ("db-r1", "127.0.0.22"),
    ("db-r2", "127.0.0.23"),
    ("db-b", "127.0.0.24"),
];

fn map(dbs: &[Db], docroot: &std::path::Path) -> String {
    let mut text = format!("schema = 1\ngeneration = 1\n\n[products.shop]\ndomain = \"shop.example.test\"\ndocroot = \"{}/shop\"\nhealth_path = \"/health.txt\"\n", docroot.display());
    text.push_str("\n[products.shop.database]\nname = \"shop\"\nmaster = \"db-m\"\nreplicas = [\"db-r1\", \"db-r2\"]\nbackup = \"db-b\"\nbackup_url = \"s3://backups/shop/\"\n");
    for (db, (id, address)) in dbs.iter().zip(HOSTS) {
        let roles = if id == "db-b" {
            "[\"db\", \"db-backup\"]"
        } else {
            "[\"db\"]"
        };
        text.push_str(&format!(
            "\n[hosts.{id}]\naddress = \"{address}\"\naz = \"a\"\nroles = {roles}\ndb_port = {}\n",
            db.server.port()
        ));
    }
    text.push_str("\n[hosts.web-1]\naddress = \"127.0.0.1\"\naz = \"a\"\nroles = [\"web\"]\nproducts = [\"shop\"]\n");
    text
}

fn point_at_s3(agent: &mut Agent, bucket: &str) {
    agent.setup.map_url = Some(format!("s3://{bucket}/rolemap.toml"));
    agent.setup.map_lines = vec![
        format!("poll_interval = \"{}s\"", POLL.as_secs()),
        format!("jitter = \"{}s\"", JITTER.as_secs()),
        "timeout = \"2s\"".into(),
    ];
    agent.write_config();
}

/// One agent's convergence to a generation, as the test saw it.
struct Converged {
    /// The agent's host id.
    id: String,
    /// When the test first saw the record.
    seen: Instant,
    /// The converging reconcile's own time (its record's `elapsed_ms`).
    elapsed: Duration,
}

/// Waits until every database agent and the web agent have converged to `generation`,
/// polling them all in turn (so that each is noticed about as soon as it converged); when
/// each was first seen so, and its reconcile's time. Panics after `timeout`.
fn all_converge(
    dbs: &[Db],
    web: &Agent,
    generation: u64,
    timeout: Duration,
    context: &str,
) -> Vec<Converged> {
    let agents: Vec<&Agent> = dbs.iter().map(|d| &d.agent).chain([web]).collect();
    let mut seen: Vec<Option<Converged>> = agents.iter().map(|_| None).collect();
    let all = wait_until(timeout, || {
        for (agent, seen) in agents.iter().zip(seen.iter_mut()) {
            let status = agent.status();
            if seen.is_none()
                && status["outcome"] == "converged"
                && status["map"]["generation"] == generation
            {
                let elapsed = status["elapsed_ms"].as_u64().expect("elapsed_ms");
                *seen = Some(Converged {
                    id: agent.setup.id.clone(),
                    seen: Instant::now(),
                    elapsed: Duration::from_millis(elapsed),
                });
            }
        }
        seen.iter().all(Option::is_some)
    });
    if !all {
        let late: Vec<String> = agents
            .iter()
            .zip(&seen)
            .filter(|(_, seen)| seen.is_none())
            .map(|(agent, _)| format!("{}: {}", agent.setup.id, agent.status()))
            .collect();
        panic!(
            "not converged to generation {generation} within {timeout:?}:\n{}\n{context}",
            late.join("\n")
        );
    }
    seen.into_iter().flatten().collect()
}

#[test]
#[allow(
    clippy::print_stderr,
    reason = "the failover time is a figure for the closing note (`--nocapture`)"
)]
fn promote_after_the_master_dies_reconfigures_every_host() {
    let moto = Moto::shared();
    let bucket = moto.new_bucket(true);
    let mut dbs: Vec<Db> = HOSTS
        .iter()
        .map(|(id, address)| db_agent(id, address))
        .collect();
    let (mut web, apache) = web_agent(Apache::start);
    let base = docroots(&web, &["shop"]);
    for db in &mut dbs {
        point_at_s3(&mut db.agent, &bucket);
    }
    point_at_s3(&mut web, &bucket);
    moto.put(&bucket, "rolemap.toml", map(&dbs, &base).as_bytes());
    let mut daemons: Vec<Daemon> = dbs
        .iter()
        .map(|db| &db.agent)
        .chain([&web])
        .map(|agent| Daemon::start(agent, &moto.agent_env()))
        .collect();
    all_converge(&dbs, &web, 1, Duration::from_secs(90), "");
    let (master, r1, r2, backup) = (
        &dbs[0].server,
        &dbs[1].server,
        &dbs[2].server,
        &dbs[3].server,
    );
    master.query("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY); INSERT INTO shop.orders VALUES (1)");
    for (name, server) in [("db-r1", r1), ("db-r2", r2), ("db-b", backup)] {
        assert!(
            server.reaches_rows("shop.orders", "1"),
            "{name} did not replicate"
        );
    }

    // The master dies, with its agent.
    drop(daemons.remove(0));
    drop(dbs.remove(0));
    let promote_agent = &dbs[0].agent;
    let out = promote_agent
        .command(&[
            "map",
            "promote",
            "--product",
            "shop",
            "--map",
            &format!("s3://{bucket}/rolemap.toml"),
        ])
        .envs(moto.agent_env())
        .output()
        .expect("promote");
    assert_exit(&out, 0);
    let published = Instant::now();
    let converged = all_converge(&dbs, &web, 2, Duration::from_secs(90), &describe(&out));
    // Each agent: the publish lands during a quiet poll or a wait of at most poll + jitter,
    // then its reconcile runs; the margin covers the rest (see MARGIN).
    let figures: Vec<(String, Duration, Duration)> = converged
        .iter()
        .map(|c| {
            let bound = POLL + JITTER + c.elapsed + MARGIN;
            (c.id.clone(), c.seen - published, bound)
        })
        .collect();
    let shown: Vec<String> = figures
        .iter()
        .map(|(id, took, bound)| {
            format!(
                "{id} {} ms (bound {} ms)",
                took.as_millis(),
                bound.as_millis()
            )
        })
        .collect();
    eprintln!("failover: publish to converged: {}", shown.join(", "));
    assert!(
        figures.iter().all(|(_, took, bound)| took <= bound),
        "over poll + jitter + the agent's reconcile + {} ms margin: {}",
        MARGIN.as_millis(),
        shown.join(", ")
    );

    let (r1, r2, backup) = (&dbs[0].server, &dbs[1].server, &dbs[2].server);
    assert_eq!(
        r1.query("SELECT @@read_only"),
        "0",
        "the promoted replica is not writable"
    );
    assert_eq!(
        r1.query("SHOW SLAVE STATUS"),
        "",
        "the promoted replica still replicates"
    );
    r1.query("INSERT INTO shop.orders VALUES (2)");
    for (name, server) in [("db-r2", r2), ("db-b", backup)] {
        assert!(
            server.reaches_rows("shop.orders", "2"),
            "{name} does not follow the new master: {}",
            server.query("SHOW SLAVE STATUS\\G")
        );
    }
    let vhost = std::fs::read_to_string(web.vhost("shop")).expect("vhost");
    assert!(
        vhost.contains("SetEnv ROLECALL_DB_MASTER 127.0.0.22\n"),
        "{vhost}"
    );
    // Converged with the new vhost in place means its smoke test passed: a failing one
    // would have rolled the vhost back to the old master.
    assert_eq!(apache.get("shop.example.test", "/health.txt").0, 200);
}

//! The failover story end to end (SPEC §1, issue 5): a master, two chained replicas and a
//! backup as real MariaDB servers, and a web host with real Apache, each configured by its
//! own `rolecall run` daemon from one map in moto. The master dies; `rolecall map promote`
//! publishes the new topology; within a poll interval plus jitter every agent has
//! reconciled: the first replica is writable, the second replicates from it, the backup
//! follows it, and the web host's vhost points at it with its smoke test passing.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::{assert_exit, describe, Agent};
use crate::reconcile::{docroots, web_agent};
use crate::services::{db_agent, Db};
use crate::support::apache::Apache;
use crate::support::s3::Moto;
use crate::support::{terminate_child, wait_until};

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
        "poll_interval = \"1s\"".into(),
        "jitter = \"1s\"".into(),
        "timeout = \"2s\"".into(),
    ];
    agent.write_config();
}

fn start(agent: &Agent, moto: &Moto) -> Child {
    let mut cmd = agent.command(&["run"]);
    cmd.envs(moto.agent_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().expect("rolecall run")
}

fn status(agent: &Agent) -> serde_json::Value {
    serde_json::from_slice(&agent.run(&["status", "--json"]).stdout)
        .unwrap_or(serde_json::Value::Null)
}

fn converged_to(agent: &Agent, generation: u64) -> bool {
    let s = status(agent);
    s["outcome"] == "converged" && s["map"]["generation"] == generation
}

/// Every database agent and the web agent reach `generation`, converged, within `timeout`.
fn assert_all_converge(dbs: &[Db], web: &Agent, generation: u64, timeout: Duration, context: &str) {
    for agent in dbs.iter().map(|d| &d.agent).chain(std::iter::once(web)) {
        assert!(
            wait_until(timeout, || converged_to(agent, generation)),
            "{} did not converge to generation {generation}: {}\n{context}",
            agent.setup.id,
            status(agent)
        );
    }
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
    let mut daemons: Vec<Child> = dbs.iter().map(|db| start(&db.agent, moto)).collect();
    daemons.push(start(&web, moto));
    assert_all_converge(&dbs, &web, 1, Duration::from_secs(90), "");
    let (master, r1, r2, backup) = (
        &dbs[0].server,
        &dbs[1].server,
        &dbs[2].server,
        &dbs[3].server,
    );
    master.query("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY); INSERT INTO shop.orders VALUES (1)");
    for (name, server) in [("db-r1", r1), ("db-r2", r2), ("db-b", backup)] {
        assert!(
            wait_until(Duration::from_secs(30), || server
                .try_query("SELECT COUNT(*) FROM shop.orders")
                .as_deref()
                == Ok("1")),
            "{name} did not replicate"
        );
    }

    // The master dies, with its agent.
    terminate_child(&mut daemons[0], Duration::from_secs(10));
    drop(dbs.remove(0));
    let promote_agent = &dbs[0].agent;
    let promoted_at = Instant::now();
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
    assert_all_converge(&dbs, &web, 2, Duration::from_secs(30), &describe(&out));
    let converged = promoted_at.elapsed();
    eprintln!(
        "failover: promote to last agent converged in {} ms",
        converged.as_millis()
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
            wait_until(Duration::from_secs(30), || server
                .try_query("SELECT COUNT(*) FROM shop.orders")
                .as_deref()
                == Ok("2")),
            "{name} does not follow the new master: {}",
            server.query("SHOW SLAVE STATUS\\G")
        );
    }
    let vhost = std::fs::read_to_string(web.path("/etc/apache2/sites-enabled/rolecall-shop.conf"))
        .expect("vhost");
    assert!(
        vhost.contains("SetEnv ROLECALL_DB_MASTER 127.0.0.22\n"),
        "{vhost}"
    );
    // Converged with the new vhost in place means its smoke test passed: a failing one
    // would have rolled the vhost back to the old master.
    assert_eq!(apache.get("shop.example.test", "/health.txt").0, 200);
    for d in &mut daemons[1..] {
        terminate_child(d, Duration::from_secs(10));
    }
}

//! Several products on one database cluster (issue 14): two products' databases on one
//! master and its replica chain as real MariaDB servers, configured by the real binary from
//! one file map, rows of both replicated; `map promote` of one product moves both to the
//! new master, and each agent runs its position hook once. `map validate|lint|show` and
//! `map promote`'s exit codes (0, 2, 4) for a shared cluster through the binary.

use std::path::Path;
use std::process::{Output, Stdio};

use crate::fixture::{
    assert_exit, assert_not_said, assert_stderr, assert_stdout, describe, hand_key, key_fifo,
    stdout,
};
use crate::map_cli::{rolecall, write};
use crate::services::{db_agent, Db};

/// `(id, address, db_port)` of a database host.
type DbHost<'a> = (&'a str, &'a str, u16);

/// Products shop and blog on one cluster (`master`, then `replicas` in a chain), with
/// `blog_replicas` overriding blog's chain when given.
fn shared_map(
    generation: u64,
    hosts: &[DbHost<'_>],
    replicas: &[&str],
    blog_replicas: Option<&[&str]>,
) -> String {
    let list = |ids: &[&str]| {
        let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let master = hosts[0].0;
    let mut text = format!(
        "# A shared cluster.\nschema = 1\ngeneration = {generation}   # raised by every publish\n"
    );
    for (product, chain) in [
        ("shop", replicas),
        ("blog", blog_replicas.unwrap_or(replicas)),
    ] {
        text.push_str(&format!(
            "\n[products.{product}]\ndomain = \"{product}.example.test\"\ndocroot = \"/srv/{product}\"\n\n[products.{product}.database]\nname = \"{product}\"\nmaster = \"{master}\"   # one server for both\nreplicas = {}\n",
            list(chain)
        ));
    }
    for (i, (id, address, port)) in hosts.iter().enumerate() {
        let az = ["a", "b", "c"][i % 3];
        text.push_str(&format!(
            "\n[hosts.{id}]\naddress = \"{address}\"\naz = \"{az}\"\nroles = [\"db\"]\ndb_port = {port}\n"
        ));
    }
    text
}

/// The hook events a `sync --json` ran, in order.
fn hooks_run(out: &Output) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sync --json: {e}\n{}", describe(out)));
    report["hooks"]
        .as_array()
        .map(|hooks| {
            hooks
                .iter()
                .map(|h| format!("{} ok={}", h["on"].as_str().unwrap_or("?"), h["ok"]))
                .collect()
        })
        .unwrap_or_default()
}

/// `SELECT COUNT(*)` of `table` reaches `count` on `db` within 30 s.
#[track_caller]
fn assert_rows(db: &Db, table: &str, count: &str) {
    assert!(
        db.server.reaches_rows(table, count),
        "{}: {table} does not have {count} rows: {}",
        db.agent.setup.id,
        db.server.query("SHOW SLAVE STATUS\\G")
    );
}

/// Three db agents with real MariaDB servers reading one file map: `db-m` the master of
/// shop and blog, `db-r1` and `db-r2` their chain.
struct Cluster {
    dbs: Vec<Db>,
    map_path: std::path::PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let map_path = dir.path().join("rolemap.toml");
        let url = format!("file://{}", map_path.display());
        let ids = [
            ("db-m", "127.0.0.41"),
            ("db-r1", "127.0.0.42"),
            ("db-r2", "127.0.0.43"),
        ];
        let mut dbs: Vec<Db> = ids.iter().map(|(id, addr)| db_agent(id, addr)).collect();
        for db in &mut dbs {
            db.agent.setup.map_url = Some(url.clone());
            db.agent.write_config();
        }
        let hosts: Vec<DbHost<'_>> = dbs
            .iter()
            .zip(ids)
            .map(|(db, (id, address))| (id, address, db.server.port()))
            .collect();
        let text = shared_map(1, &hosts, &["db-r1", "db-r2"], None);
        std::fs::write(&map_path, text).expect("writing the map");
        Cluster {
            dbs,
            map_path,
            url,
            _dir: dir,
        }
    }

    /// `sync --json` on `db`, converged; the hooks it ran.
    fn sync(db: &Db) -> Vec<String> {
        let out = db.agent.run(&["sync", "--json"]);
        assert_exit(&out, 0);
        hooks_run(&out)
    }
}

#[test]
fn two_products_on_one_cluster_replicate_and_fail_over_together() {
    let mut cluster = Cluster::start();
    for (db, hook) in cluster
        .dbs
        .iter()
        .zip(["promoted", "upstream_changed", "upstream_changed"])
    {
        let want = [format!("{hook} ok=true")];
        assert_eq!(
            Cluster::sync(db),
            want,
            "{}: one hook for two products",
            db.agent.setup.id
        );
    }
    let cnf_path = cluster.dbs[2]
        .agent
        .path("/etc/mysql/mariadb.conf.d/60-rolecall.cnf");
    let cnf = std::fs::read_to_string(cnf_path).expect("cnf");
    assert!(
        cnf.contains("# replica of product blog (database blog)\n# replica of product shop (database shop)\n# replicates from db-r1 (127.0.0.42)\n"),
        "{cnf}"
    );
    cluster.dbs[0].server.query("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY); INSERT INTO shop.orders VALUES (1); CREATE DATABASE blog; CREATE TABLE blog.posts (id INT PRIMARY KEY); INSERT INTO blog.posts VALUES (1), (2)");
    for replica in &cluster.dbs[1..] {
        assert_rows(replica, "shop.orders", "1");
        assert_rows(replica, "blog.posts", "2");
    }

    // The master dies; promoting shop's last replica moves blog with it (one server).
    drop(cluster.dbs.remove(0));
    promote_shop_to_r2(&cluster);
    let (r1, r2) = (&cluster.dbs[0], &cluster.dbs[1]);
    assert_eq!(
        Cluster::sync(r2),
        ["promoted ok=true"],
        "promoted once, not per product"
    );
    assert_eq!(
        r2.server.query("SELECT @@read_only"),
        "0",
        "the promoted replica is not writable"
    );
    assert_eq!(
        r2.server.query("SHOW SLAVE STATUS"),
        "",
        "the promoted replica still replicates"
    );
    assert_eq!(
        Cluster::sync(r1),
        ["upstream_changed ok=true"],
        "re-chained once, not per product"
    );
    assert_eq!(r1.server.query("SELECT @@read_only"), "1");
    r2.server
        .query("INSERT INTO shop.orders VALUES (2); INSERT INTO blog.posts VALUES (3)");
    assert_rows(r1, "shop.orders", "2");
    assert_rows(r1, "blog.posts", "3");
    // Converged: another sync of each agent runs no hook.
    for db in &cluster.dbs {
        assert_eq!(
            Cluster::sync(db),
            Vec::<String>::new(),
            "{}",
            db.agent.setup.id
        );
    }
}

/// `map promote --product shop --to db-r2` through the binary: both products move.
fn promote_shop_to_r2(cluster: &Cluster) {
    let args = [
        "map",
        "promote",
        "--product",
        "shop",
        "--to",
        "db-r2",
        "--map",
        &cluster.url,
    ];
    let out = cluster.dbs[0].agent.run(&args);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for line in [
        "promoting db-r2 to master of product shop (was db-m); replicas now [db-r1]; db-m marked removed",
        "promoting db-r2 to master of product blog (was db-m, sharing that server with product shop); replicas now [db-r1]",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{}", describe(&out));
    }
    let bytes = std::fs::read(&cluster.map_path).expect("map");
    let map = rolecall::rolemap::load(&bytes).expect("the promoted map is valid");
    for product in ["shop", "blog"] {
        let db = map.products[product].database.clone().expect("database");
        let chain = (db.master, db.replicas, db.removed);
        let want = (
            "db-r2".to_string(),
            vec!["db-r1".to_string()],
            vec!["db-m".to_string()],
        );
        assert_eq!(chain, want, "{product}");
    }
}

/// Hosts of the CLI tests: no servers behind them.
const HOSTS: [DbHost<'static>; 3] = [
    ("db-1", "10.0.1.1", 3306),
    ("db-2", "10.0.1.2", 3306),
    ("db-3", "10.0.1.3", 3306),
];

/// Shop and blog on db-1, both chained db-2 then db-3 (or blog on db-2 only).
fn cli_map(blog_replicas: Option<&[&str]>) -> String {
    shared_map(3, &HOSTS, &["db-2", "db-3"], blog_replicas)
}

#[test]
fn validate_accepts_a_shared_cluster_and_names_both_paths_when_it_disagrees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "good.toml", &cli_map(None));
    assert_stdout(
        &rolecall(&["map", "validate", &good]),
        0,
        &["valid (generation 3, 2 products, 3 hosts)"],
    );
    // db-3 follows db-2 for shop but db-1 for blog.
    let bad = write(dir.path(), "bad.toml", &cli_map(Some(&["db-3"])));
    assert_stdout(
        &rolecall(&["map", "validate", &bad]),
        2,
        &[
            "products.shop.database.replicas[1]: host \"db-3\" is a replica of \"db-2\" here but a replica of \"db-1\" at products.blog.database.replicas[0]",
            "invalid, 1 problem(s)",
        ],
    );
    assert_exit(&rolecall(&["map", "lint", &bad]), 2);
}

#[test]
fn lint_treats_each_product_of_a_shared_cluster_as_its_own_and_names_a_differing_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "good.toml", &cli_map(None));
    let out = rolecall(&["map", "lint", &good]);
    // No backup host in this map: each product is told so at its own path.
    assert_stdout(
        &out,
        0,
        &[
            "warning: products.blog.database.backup:",
            "warning: products.shop.database.backup:",
        ],
    );
    assert_not_said(&out, "shares master");
    let part = write(dir.path(), "part.toml", &cli_map(Some(&["db-2"])));
    assert_stdout(
        &rolecall(&["map", "lint", "--strict", &part]),
        1,
        &["warning: products.shop.database.replicas: product \"shop\" shares master \"db-1\" with product \"blog\" but not its replica chain"],
    );
}

#[test]
fn show_lists_each_host_of_a_shared_cluster_under_both_products_with_its_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "good.toml", &cli_map(None));
    let out = rolecall(&["map", "show", &good]);
    assert_exit(&out, 0);
    let table = stdout(&out);
    for product in ["blog", "shop"] {
        for (host, position) in [("db-1", "master"), ("db-2", "replica"), ("db-3", "replica")] {
            let row = |l: &&str| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.first() == Some(&product)
                    && cells.get(3) == Some(&host)
                    && cells.last() == Some(&position)
            };
            assert!(
                table.lines().any(|l| row(&l)),
                "no {host} {position} of {product}:\n{table}"
            );
        }
    }
}

#[test]
fn promote_to_a_host_that_does_not_replicate_every_product_on_the_server_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = cli_map(Some(&["db-2"]));
    let file = write(dir.path(), "map.toml", &text);
    let url = format!("file://{file}");
    let out = rolecall(&[
        "map",
        "promote",
        "--product",
        "shop",
        "--to",
        "db-3",
        "--map",
        &url,
    ]);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host \"db-3\" is not a replica of product \"blog\", which shares master \"db-1\" with product \"shop\"")
            && err.contains("promote a replica of all of them (\"db-2\")"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("map"),
        text,
        "nothing written"
    );
}

#[test]
fn promote_of_either_product_moves_both_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "map.toml", &cli_map(Some(&["db-2"])));
    let url = format!("file://{file}");
    let out = rolecall(&["map", "promote", "--product", "blog", "--map", &url]);
    assert_exit(&out, 0);
    let now = std::fs::read_to_string(&file).expect("map");
    let map = rolecall::rolemap::load(now.as_bytes()).expect("valid");
    for (product, replicas) in [("shop", vec!["db-3".to_string()]), ("blog", vec![])] {
        let db = map.products[product].database.clone().expect("database");
        let chain = (db.master, db.replicas, db.removed);
        assert_eq!(
            chain,
            ("db-2".to_string(), replicas, vec!["db-1".to_string()]),
            "{product}"
        );
    }
    assert_eq!(
        now.matches("master = \"db-2\"   # one server for both")
            .count(),
        2,
        "{now}"
    );
    assert!(
        now.contains("generation = 4   # raised by every publish"),
        "{now}"
    );
}

#[test]
fn promote_of_a_shared_master_during_a_concurrent_publish_exits_4_and_keeps_the_winner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = cli_map(None);
    let file = write(dir.path(), "map.toml", &text);
    let url = format!("file://{file}");
    let winner = text.replace("generation = 3 ", "generation = 9 ");
    let out = promote_with_a_gap(dir.path(), &url, || {
        std::fs::write(&file, &winner).expect("the other writer");
    });
    assert_stderr(&out, 4, &["current generation: 9"]);
    assert_eq!(std::fs::read_to_string(&file).expect("map"), winner);
}

/// `map promote --product shop` on `url`, signed with a key handed over through a FIFO, so
/// that the binary stops after reading the map and before writing it; `meanwhile` runs then.
fn promote_with_a_gap(dir: &Path, url: &str, meanwhile: impl FnOnce()) -> Output {
    let prefix = dir.join("signing").display().to_string();
    assert_exit(&rolecall(&["map", "keygen", "--out", &prefix]), 0);
    let secret = std::fs::read(dir.join("signing.key")).expect("secret key");
    let fifo = dir.join("key.fifo");
    key_fifo(&fifo);
    let fifo_arg = fifo.display().to_string();
    let args = [
        "map",
        "promote",
        "--product",
        "shop",
        "--map",
        url,
        "--sign-key",
        &fifo_arg,
    ];
    let mut child = std::process::Command::new(crate::fixture::binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rolecall");
    hand_key(&fifo, &secret, &mut child, meanwhile);
    child.wait_with_output().expect("waiting for rolecall")
}

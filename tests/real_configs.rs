//! The real programs accept what the default catalog renders (issues 2, 15): vhosts pass
//! Debian's `apache2 -t` and serve, the MariaDB config passes `mariadbd --help --verbose` and
//! boots a server whose variables match the host's position, memcached runs with the
//! rendered options and serves, munin-node runs with the rendered config and answers the
//! hosts it allows, the backup cron file passes the cron checks on disk. Each positive check
//! has a negative control proving it can fail.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::fixture::{assert_exit, describe, docroots, web_map, Agent, Setup};
use crate::golden::{case_dir, diff, golden_map, read_identity, read_vars};
use crate::reconcile::web_agent;
use crate::support::apache::Apache;
use crate::support::mariadb::MariaDb;
use crate::support::memcached::{conf_options, Memcached};
use crate::support::munin::MuninNode;
use crate::support::{describe_output, require_program};

const MARIADB_HINT: &str = "run `bash tests/run.sh` or `apt-get install mariadb-server`";
/// The db role's file, as a logical path and relative to a golden case's `expected/`.
const DB_CNF: &str = "/etc/mysql/mariadb.conf.d/60-rolecall.cnf";
/// The golden cases of the db role, one per position (and none), and servers shared by
/// two products (issue 14).
const DB_CASES: [&str; 6] = [
    "db-master",
    "db-replica-chain",
    "db-backup",
    "db-no-position",
    "db-shared-replica",
    "db-shared-backup",
];

fn run(argv: &[String]) -> Output {
    let (program, args) = argv.split_first().expect("a non-empty argv");
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {argv:?}: {err}"))
}

/// The negative control: the program failed, naming `what` on stderr.
#[track_caller]
fn refused(out: &Output, what: &str) {
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(what),
        "accepted, or refused without naming {what:?}: {}",
        describe_output(out)
    );
}

#[test]
fn vhosts_of_three_products_pass_apache_configtest_and_serve() {
    let (agent, apache) = web_agent(Apache::start);
    let products = ["alpha", "beta", "gamma"];
    let base = docroots(&agent, &products);
    agent.write_map(&web_map(1, &products, &base));
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    for product in products {
        assert!(agent.vhost(product).is_file(), "no vhost for {product}");
    }

    let check = run(&apache.check_cmd());
    assert!(check.status.success(), "{}", describe_output(&check));
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("Syntax OK"),
        "{}",
        describe_output(&check)
    );
    let reload = run(&apache.reload_cmd());
    assert!(reload.status.success(), "{}", describe_output(&reload));
    assert!(
        apache.wait_generation(2, Duration::from_secs(10)),
        "Apache did not reload: {}",
        apache.error_log_tail()
    );
    for product in products {
        for host in [
            format!("{product}.example.test"),
            format!("www.{product}.example.test"),
        ] {
            assert_eq!(
                apache.get(&host, "/health.txt"),
                (200, format!("ok {product}\n")),
                "GET http://{host}/health.txt"
            );
        }
    }
}

#[test]
fn a_vhost_with_a_misspelt_directive_fails_apache_configtest() {
    let (agent, apache) = web_agent(Apache::start);
    let base = docroots(&agent, &["alpha"]);
    agent.write_map(&web_map(1, &["alpha"], &base));
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let rendered = std::fs::read_to_string(agent.vhost("alpha")).expect("the rendered vhost");
    let misspelt = rendered
        .replace("alpha.example.test", "misspelt.example.test")
        .replace("DocumentRoot ", "DocumentRooot ");
    assert_ne!(misspelt, rendered, "the vhost has a DocumentRoot line");
    let before = run(&apache.check_cmd());
    assert!(before.status.success(), "{}", describe_output(&before));
    let sites = Apache::sites_dir(&agent.root);
    std::fs::write(sites.join("zz-misspelt.conf"), misspelt).expect("writing the bad vhost");

    refused(&run(&apache.check_cmd()), "DocumentRooot");
}

/// A defaults file that only includes `cnf`: `--defaults-file` reads this file and nothing
/// else (no /etc/mysql/my.cnf), and `!include` reads `cnf` as the server would.
fn base_cnf(dir: &Path, cnf: &Path) -> PathBuf {
    let base = dir.join("base.cnf");
    std::fs::write(&base, format!("!include {}\n", cnf.display())).expect("writing base.cnf");
    base
}

/// `mariadbd --defaults-file=<base including cnf> --help --verbose`: parses every option
/// of the file and prints the resulting values; exits non-zero on an unknown option.
fn mariadbd_help(cnf: &Path) -> Output {
    let server = require_program("mariadbd", MARIADB_HINT);
    let dir = tempfile::tempdir().expect("temp dir for base.cnf");
    let base = base_cnf(dir.path(), cnf);
    Command::new(&server)
        .arg(format!("--defaults-file={}", base.display()))
        .args(["--help", "--verbose"])
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", server.display()))
}

/// The value `mariadbd --help --verbose` lists for `option` (dashes, as it prints them).
fn help_value(help: &str, option: &str) -> Option<String> {
    help.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(option))
            .then(|| words.next().map(str::to_string))
            .flatten()
    })
}

/// `key = value` of a rendered cnf.
fn cnf_value(cnf: &str, key: &str) -> Option<String> {
    cnf.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn golden_cnf(case: &str) -> PathBuf {
    case_dir(case)
        .join("expected")
        .join(DB_CNF.trim_start_matches('/'))
}

#[test]
fn mariadbd_accepts_the_rendered_config_of_every_db_position() {
    for case in DB_CASES {
        let cnf = golden_cnf(case);
        let text = std::fs::read_to_string(&cnf)
            .unwrap_or_else(|err| panic!("{case}: reading {}: {err}", cnf.display()));
        let out = mariadbd_help(&cnf);
        assert!(out.status.success(), "{case}: {}", describe_output(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        // The values prove the file was read, not merely that nothing was wrong.
        let read_only = cnf_value(&text, "read_only").expect("read_only in every db config");
        let want = if read_only == "ON" { "TRUE" } else { "FALSE" };
        assert_eq!(
            help_value(&help, "read-only").as_deref(),
            Some(want),
            "{case}"
        );
        assert_eq!(
            help_value(&help, "log-bin").as_deref(),
            Some("mysql-bin"),
            "{case}"
        );
        assert_eq!(
            help_value(&help, "bind-address"),
            cnf_value(&text, "bind_address"),
            "{case}"
        );
        if let Some(id) = cnf_value(&text, "server_id") {
            assert_eq!(help_value(&help, "server-id"), Some(id), "{case}");
        }
    }
}

#[test]
fn mariadbd_rejects_a_misspelt_option_in_the_same_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = std::fs::read_to_string(golden_cnf("db-master")).expect("golden master cnf");
    text.push_str("slave_paralel_threads = 4\n");
    let cnf = dir.path().join("60-rolecall.cnf");
    std::fs::write(&cnf, text).expect("writing the misspelt cnf");
    refused(
        &mariadbd_help(&cnf),
        "unknown variable 'slave_paralel_threads",
    );
}

/// An agent for the host of golden `case` (its identity and vars, the golden map), synced
/// (files only) by the real binary; the files written must equal the case's expected files.
fn synced_golden_agent(case: &str) -> Agent {
    let dir = case_dir(case);
    let identity = read_identity(&dir);
    let mut setup = Setup::new(&identity.id, &identity.address);
    for (key, value) in read_vars(&dir) {
        setup = setup.var(&format!("{key} = {value}"));
    }
    let agent = Agent::new(setup);
    agent.write_map(&std::fs::read_to_string(golden_map()).expect("the golden map"));
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    let expected = dir.join("expected");
    for file in crate::fixture::tree(&expected).keys() {
        let logical = Path::new("/").join(file);
        let written = std::fs::read(agent.path(&logical.display().to_string()))
            .unwrap_or_else(|err| panic!("{case}: {} not written: {err}", logical.display()));
        let golden = std::fs::read(expected.join(file)).expect("an expected file");
        assert!(
            written == golden,
            "{case}: {} differs from the golden file:\n{}\n{}",
            logical.display(),
            diff(&golden, &written),
            describe(&out)
        );
    }
    agent
}

/// Boots MariaDB with the golden case's config as rendered by `sync`, and checks its
/// variables: the server id of the golden file, read_only by position, the binary log on.
fn boot_and_check(case: &str, read_only: &str) {
    let agent = synced_golden_agent(case);
    let text = std::fs::read_to_string(agent.path(DB_CNF)).expect("the rendered cnf");
    let server_id = cnf_value(&text, "server_id").expect("a server_id for a db position");
    let help = mariadbd_help(&agent.path(DB_CNF));
    assert!(help.status.success(), "{}", describe_output(&help));

    let db = MariaDb::start(&agent.root, case);
    let row = db.query("SELECT @@server_id, @@read_only, @@log_bin, @@binlog_format");
    assert_eq!(
        row,
        format!("{server_id}\t{read_only}\t1\tROW"),
        "{case}: {}",
        db.error_log_tail()
    );
}

#[test]
fn the_masters_rendered_config_boots_mariadb_writable_with_its_server_id() {
    boot_and_check("db-master", "0");
}

#[test]
fn a_chained_replicas_rendered_config_boots_mariadb_read_only_with_its_server_id() {
    boot_and_check("db-replica-chain", "1");
}

#[test]
fn the_backup_hosts_cron_file_passes_the_cron_checks_on_disk() {
    check_cron_on_disk("db-backup", "/etc/cron.d/rolecall-snapshot-videos");
}

/// Issue 14: one cron file on a backup shared by two products, a job per product.
#[test]
fn the_shared_backup_hosts_cron_file_dumps_each_product_and_passes_the_cron_checks() {
    let content = check_cron_on_disk("db-shared-backup", "/etc/cron.d/rolecall-snapshot");
    let text = String::from_utf8(content).expect("utf-8");
    let jobs: Vec<&str> = text.lines().filter(|l| l.contains(" root ")).collect();
    assert_eq!(jobs.len(), 2, "{text}");
    assert!(jobs[0].ends_with("snapshot --product forum"), "{text}");
    assert!(jobs[1].ends_with("snapshot --product wiki"), "{text}");
    // Staggered: the two dumps of one server do not start in the same minute.
    assert_ne!(
        jobs[0].split(' ').next(),
        jobs[1].split(' ').next(),
        "{text}"
    );
}

/// Syncs golden `case` and checks the cron file at `logical` on disk; its bytes.
fn check_cron_on_disk(case: &str, logical: &str) -> Vec<u8> {
    let agent = synced_golden_agent(case);
    let logical = Path::new(logical);
    let physical = agent.path(&logical.display().to_string());
    let meta = std::fs::metadata(&physical).expect("the cron file was written");
    let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
        .expect("looking up the owner")
        .expect("the owner has a name")
        .name;
    let mode = meta.mode() & 0o7777;
    assert_eq!((owner.as_str(), meta.gid(), mode), ("root", 0, 0o644));
    let content = std::fs::read(&physical).expect("reading the cron file");
    let problems = rolecall::cron::check(logical, &content, &owner, mode);
    assert!(problems.is_empty(), "{problems:?}");
    // Control: the same check refuses a file cron would ignore.
    let truncated = &content[..content.len() - 1];
    assert!(!rolecall::cron::check(logical, truncated, &owner, 0o664).is_empty());
    content
}

#[test]
fn memcached_runs_with_the_rendered_options_and_serves() {
    let agent = synced_golden_agent("memcached");
    let conf = agent.path("/etc/memcached.conf");
    let options = conf_options(&std::fs::read_to_string(&conf).expect("memcached.conf"));
    assert!(
        options.windows(2).any(|o| o == ["-m", "1024"]),
        "{options:?}"
    );
    let memcached = Memcached::start(&conf);
    // The values prove the file's options were used, not memcached's defaults.
    let settings = memcached.settings();
    let setting = |name: &str| settings.get(name).map(String::as_str);
    assert_eq!(
        (setting("maxbytes"), setting("maxconns"), setting("udpport")),
        (Some("1073741824"), Some("1024"), Some("0")),
        "{:?}: {settings:?}",
        memcached.argv()
    );
    assert_eq!(
        setting("tcpport"),
        Some(memcached.port().to_string().as_str())
    );
    let stored = memcached.request("set rolecall 0 60 5\r\nhello", |l| !l.is_empty());
    assert_eq!(stored, ["STORED"]);
    let got = memcached.request("get rolecall", |l| l == "END");
    assert_eq!(got, ["VALUE rolecall 0 5", "hello", "END"]);
}

#[test]
fn memcached_refuses_a_misspelt_option_in_the_same_start() {
    let agent = synced_golden_agent("memcached");
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("memcached.conf");
    let rendered = std::fs::read_to_string(agent.path("/etc/memcached.conf")).expect("conf");
    std::fs::write(&conf, format!("{rendered}--max-conections 10\n")).expect("writing the conf");
    let refused = Memcached::try_start(&conf).err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|why| why.contains("max-conections")),
        "memcached started with a misspelt option: {refused:?}"
    );
}

/// The rendered allow lines admit 127.0.0.1 (and the monitor hosts, which cannot connect
/// from here); the node answers with the rendered host name.
#[test]
fn munin_node_runs_with_the_rendered_config_and_answers_loopback() {
    let agent = synced_golden_agent("monitor");
    let conf = agent.path("/etc/munin/munin-node.conf");
    let node = MuninNode::start(&conf);
    let said = node.session(&["version", "nodes", "list"]);
    let lines: Vec<&str> = said.lines().collect();
    let host = "i-0f0000000000000f1";
    assert_eq!(
        lines.first().copied(),
        Some(format!("# munin node at {host}").as_str()),
        "{said}\n{}",
        node.log_tail()
    );
    assert!(
        lines
            .get(1)
            .is_some_and(|l| l.starts_with(&format!("munins node on {host} version: "))),
        "{said}"
    );
    assert_eq!(lines.get(2..4), Some(&[host, "."][..]), "{said}");
    let plugins = lines.get(4).copied().unwrap_or_default();
    assert!(
        !plugins.trim().is_empty(),
        "`list` named no plugin of /etc/munin/plugins: {said}"
    );
}

#[test]
fn munin_node_refuses_loopback_without_the_rendered_allow_line() {
    let agent = synced_golden_agent("monitor");
    let rendered =
        std::fs::read_to_string(agent.path("/etc/munin/munin-node.conf")).expect("the conf");
    let allow = "allow ^127\\.0\\.0\\.1$\n";
    assert!(rendered.contains(allow), "{rendered}");
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("munin-node.conf");
    std::fs::write(&conf, rendered.replace(allow, "")).expect("writing the conf");
    let node = MuninNode::start(&conf);
    let said = node.session(&["version"]);
    assert_eq!(said, "", "munin-node answered a host it does not allow");
}

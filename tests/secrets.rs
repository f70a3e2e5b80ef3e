//! Issue 14, SPEC §10: secrets from moto's SSM Parameter Store and Secrets Manager through
//! the real binary and a real Apache: the shipped web role's `database.env` (0640) gets the
//! product's credentials, a rotation reaches it within one `[secrets] refresh` (reloaded
//! and smoke-tested), the stores are not asked on every poll, an unreadable secret leaves
//! the service untouched naming the reference, and no value leaks into output, logs,
//! status or the state directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::fixture::{assert_exit, describe, docroots, web_map, Agent, Daemon};
use crate::reconcile::web_agent;
use crate::services::{db_agent, db_map, hooks_dir};
use crate::support::apache::Apache;
use crate::support::s3::Moto;
use crate::support::secrets::{agent_env, agent_env_at, create_secret, put_parameter};
use crate::support::wait_until;

/// The shipped web role's credentials file for product `alpha`.
const ENV_FILE: &str = "/etc/rolecall/products/alpha/database.env";
const VHOST: &str = "/etc/apache2/sites-enabled/rolecall-alpha.conf";

/// Neither of product alpha's files was written by the run that printed `out`.
#[track_caller]
fn assert_alpha_not_written(agent: &Agent, out: &Output) {
    for path in [ENV_FILE, VHOST] {
        assert!(
            !agent.path(path).exists(),
            "{path} written: {}",
            describe(out)
        );
    }
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// Names of this test's secrets on the shared moto: a parameter and a secret of its own.
struct Names {
    parameter: String,
    secret: String,
}

fn names() -> Names {
    let serial = SERIAL.fetch_add(1, Ordering::SeqCst);
    let unique = format!("rc{}-{serial}", std::process::id());
    Names {
        parameter: format!("/{unique}/alpha/db-password"),
        secret: format!("{unique}/alpha/db"),
    }
}

/// A value no template, path or message could contain by chance.
fn value(what: &str) -> String {
    format!("{what}-{:016x}", rand::random::<u64>())
}

/// `web_map` with product alpha on a database, its credentials as secret references.
fn secret_map(base: &Path, names: &Names) -> String {
    let mut text = web_map(1, &["alpha"], base);
    text.push_str("\n[products.alpha.database]\nname = \"alpha\"\nmaster = \"db-1\"\n");
    text.push_str(&format!(
        "\n[products.alpha.secrets]\ndb_password = \"ssm:{}\"\ndb_user = \"secretsmanager:{}#username\"\n",
        names.parameter, names.secret
    ));
    text
}

/// A web agent with a real Apache serving alpha from the secret map, `[secrets] refresh`.
fn agent(names: &Names, refresh: &str) -> (Agent, Apache) {
    agent_polling(names, refresh, "1s")
}

/// As [`agent`], polling the map every `poll`.
fn agent_polling(names: &Names, refresh: &str, poll: &str) -> (Agent, Apache) {
    let (mut agent, apache) = web_agent(Apache::start);
    agent.setup.map_lines = vec![
        format!("poll_interval = \"{poll}\""),
        "jitter = \"0s\"".into(),
    ];
    agent
        .setup
        .sections
        .push(format!("[secrets]\nrefresh = \"{refresh}\""));
    agent.write_config();
    let base = docroots(&agent, &["alpha"]);
    agent.write_map(&secret_map(&base, names));
    (agent, apache)
}

fn run(agent: &Agent, env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = agent.command(args);
    cmd.envs(env.iter().cloned())
        .env("RUST_LOG", "rolecall=trace");
    cmd.output().expect("running rolecall")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let entries = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .flatten();
    let files = entries.filter(|e| e.file_type().is_file());
    files.map(walkdir::DirEntry::into_path).collect()
}

/// Where `needle` appears among `texts` (name, bytes): the names.
fn leaks<'a>(needle: &str, texts: &'a [(String, Vec<u8>)]) -> Vec<&'a str> {
    texts
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(name, _)| name.as_str())
        .collect()
}

#[test]
fn secrets_reach_the_credentials_file_and_nothing_else_shows_them() {
    let moto = Moto::shared();
    let names = names();
    let (old, new, user) = (value("old-pw"), value("new-pw"), value("alpha-user"));
    put_parameter(moto, &names.parameter, &old);
    let json = format!(r#"{{"username":"{user}","password":"unused"}}"#);
    create_secret(moto, &names.secret, &json);
    let (agent, apache) = agent(&names, "1h");
    let env = agent_env(moto);

    let first = run(&agent, &env, &["sync", "--json"]);
    assert_exit(&first, 0);
    let text = read(&agent.path(ENV_FILE));
    assert!(text.contains(&format!("\nDB_PASSWORD={old}\n")), "{text}");
    assert!(text.contains(&format!("\nDB_USER={user}\n")), "{text}");
    assert!(text.contains("\nDB_NAME=alpha\n"), "{text}");
    let mode = std::fs::metadata(agent.path(ENV_FILE))
        .expect("written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    assert!(read(&agent.path(VHOST)).contains(&format!("ROLECALL_DB_ENV_FILE {ENV_FILE}")));
    assert_eq!(apache.get("alpha.example.test", "/health.txt").0, 200);

    put_parameter(moto, &names.parameter, &new);
    let plan = run(&agent, &env, &["plan", "--color", "never"]);
    assert_exit(&plan, 3);
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains(&format!("# update {ENV_FILE}")) && shown.contains("secret content changed"),
        "the plan must still say the file changes: {shown}"
    );
    let second = run(&agent, &env, &["sync", "--json"]);
    assert_exit(&second, 0);
    assert!(read(&agent.path(ENV_FILE)).contains(&format!("DB_PASSWORD={new}")));
    let status = run(&agent, &env, &["status", "--json"]);
    let shown = everything_shown(
        &agent,
        &[
            ("first sync", &first),
            ("plan", &plan),
            ("second sync", &second),
            ("status", &status),
        ],
    );
    for secret in [&old, &new, &user] {
        let found = leaks(secret, &shown);
        assert!(found.is_empty(), "a secret value shows in {found:?}");
    }
}

/// Everything a reconcile shows: the commands' stdout and stderr (logs at trace level),
/// every file of the state directory, and the vhost.
fn everything_shown(agent: &Agent, runs: &[(&str, &Output)]) -> Vec<(String, Vec<u8>)> {
    let mut texts = Vec::new();
    for (name, out) in runs {
        texts.push((format!("{name} stdout"), out.stdout.clone()));
        texts.push((format!("{name} stderr"), out.stderr.clone()));
    }
    for file in files_under(&agent.state()) {
        texts.push((
            file.display().to_string(),
            std::fs::read(&file).unwrap_or_default(),
        ));
    }
    texts.push((
        VHOST.to_string(),
        std::fs::read(agent.path(VHOST)).unwrap_or_default(),
    ));
    assert!(texts.len() > 8, "too little looked at: {texts:?}");
    texts
}

/// The daemon on a short refresh and a long poll (so only the refresh timer can wake it):
/// the rotated value is in the file within one refresh, Apache reloaded and the smoke
/// test run again, with the map unchanged.
#[test]
fn a_rotated_secret_reaches_the_file_within_one_refresh_reloaded_and_smoke_tested() {
    let moto = Moto::shared();
    let names = names();
    let (old, new) = (value("old-pw"), value("new-pw"));
    put_parameter(moto, &names.parameter, &old);
    create_secret(moto, &names.secret, r#"{"username":"alpha_app"}"#);
    let refresh = Duration::from_secs(4);
    let (agent, apache) = agent_polling(&names, "4s", "10m");
    let mut daemon = Daemon::start(&agent, &agent_env(moto));
    let converged = || agent.status()["outcome"] == "converged";
    assert!(
        wait_until(Duration::from_secs(60), || converged()
            && read(&agent.path(ENV_FILE)).contains(&old)),
        "{}",
        daemon.log_tail()
    );
    let reloads = apache.reloads().len();
    let smoke_runs = smoke_count(&daemon);

    put_parameter(moto, &names.parameter, &new);
    let rotated = Instant::now();
    let reached = wait_until(Duration::from_secs(60), || {
        read(&agent.path(ENV_FILE)).contains(&new)
    });
    let took = rotated.elapsed();
    assert!(reached, "{}", daemon.log_tail());
    // One refresh, and room for a loaded machine's reconcile (the poll is 10 minutes).
    assert!(took <= refresh + Duration::from_secs(6), "took {took:?}");
    assert!(
        wait_until(Duration::from_secs(30), || apache.reloads().len() > reloads
            && smoke_count(&daemon) > smoke_runs
            && converged()),
        "no reload and smoke test after the rotation: {}",
        daemon.log_tail()
    );
    assert!(daemon.running());
    daemon.stop();
}

/// Smoke test runs the daemon has logged.
fn smoke_count(daemon: &Daemon) -> usize {
    daemon.log_count("smoke test passed")
}

/// SPEC §10: 10,000 hosts on a 30 s poll must not read Parameter Store on every poll. With
/// a private moto, no SSM or Secrets Manager request is made by quiet polls.
#[test]
fn quiet_polls_do_not_read_secrets() {
    let moto = Moto::start_private();
    let names = names();
    put_parameter(&moto, &names.parameter, &value("pw"));
    create_secret(&moto, &names.secret, r#"{"username":"alpha_app"}"#);
    let (agent, _apache) = agent(&names, "1h");
    let daemon = Daemon::start(&agent, &agent_env(&moto));
    let quiet = || daemon.log_count("quiet poll");
    assert!(
        wait_until(Duration::from_secs(60), || quiet() >= 1),
        "{}",
        daemon.log_tail()
    );
    let reads = moto.request_count("POST", "/", None);
    assert!(
        reads >= 2,
        "the boot reconcile read both secrets from moto: {reads}"
    );
    let polls = quiet();
    assert!(
        wait_until(Duration::from_secs(30), || quiet() >= polls + 4),
        "{}",
        daemon.log_tail()
    );
    assert_eq!(
        moto.request_count("POST", "/", None),
        reads,
        "secrets read by quiet polls"
    );
}

/// An unreadable secret fails the web service before anything of it is written; the
/// message names the reference.
fn refused_before_writing(env: &[(String, String)], agent: &Agent, names: &Names, why: &str) {
    let started = Instant::now();
    let out = run(agent, env, &["sync"]);
    assert_exit(&out, 1);
    assert!(started.elapsed() < Duration::from_secs(60));
    let status = agent.status();
    let message = status["message"].as_str().unwrap_or_default().to_string();
    let reference = format!("ssm:{}", names.parameter);
    assert!(
        message.contains(&reference) && message.contains(why),
        "{message}\n{}",
        describe(&out)
    );
    assert_alpha_not_written(agent, &out);
}

#[test]
fn a_missing_parameter_leaves_the_service_unwritten_and_names_the_reference() {
    let moto = Moto::shared();
    let names = names();
    create_secret(moto, &names.secret, r#"{"username":"alpha_app"}"#);
    let (agent, _apache) = agent(&names, "1h");
    refused_before_writing(&agent_env(moto), &agent, &names, "ParameterNotFound");
}

#[test]
fn an_unreachable_secret_store_leaves_the_service_unwritten_and_names_the_reference() {
    let moto = Moto::shared();
    let names = names();
    let (agent, _apache) = agent(&names, "1h");
    // Nothing listens on port 9 (discard) of the loopback.
    let env = agent_env_at(moto, "http://127.0.0.1:9");
    refused_before_writing(&env, &agent, &names, "secret not read");
}

/// The db role with `vars.replication_secret`: the replica's replication password file is
/// written from Parameter Store (0600), and the shipped `db-follow` hook, given that file,
/// makes real replication work with the password (it skips the file's header line).
#[test]
fn the_replication_password_comes_from_a_secret_and_replication_runs_with_it() {
    let moto = Moto::shared();
    let names = names();
    let password = value("repl");
    put_parameter(moto, &names.parameter, &password);
    let one = db_agent("db-1", "127.0.0.31");
    let mut two = db_agent("db-2", "127.0.0.32");
    let mut setup = two.agent.setup.clone();
    setup.vars.retain(|line| !line.starts_with("replication_"));
    two.agent.setup = setup
        .var("replication_user = \"repl\"")
        .var(&format!("replication_secret = \"ssm:{}\"", names.parameter));
    two.agent.write_config();
    let map = db_map(
        1,
        ("db-1", "127.0.0.31", one.server.port()),
        Some(("db-2", "127.0.0.32", two.server.port())),
        &[],
    );
    one.agent.write_map(&map);
    two.agent.write_map(&map);
    let env = agent_env(moto);
    assert_exit(&run(&one.agent, &env, &["sync"]), 0);
    one.server.query(&format!(
        "CREATE USER repl@'%' IDENTIFIED BY '{password}'; GRANT REPLICATION SLAVE ON *.* TO repl@'%'"
    ));
    let out = run(&two.agent, &env, &["sync", "--files-only"]);
    assert_exit(&out, 0);
    let file = two.agent.path("/etc/rolecall/replication.password");
    let mode = std::fs::metadata(&file)
        .expect("written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert!(
        read(&file).ends_with(&format!("\n{password}\n")),
        "{}",
        read(&file)
    );
    assert!(leaks(&password, &everything_shown(&two.agent, &[("sync", &out)])).is_empty());

    // What the upstream_changed hook runs, with the physical path of the written file.
    let follow = std::process::Command::new(format!("{}/db-follow", hooks_dir()))
        .args(["127.0.0.31", &one.server.port().to_string(), "repl"])
        .arg(&file)
        .arg(format!("--socket={}", two.server.socket().display()))
        .arg("--user=root")
        .output()
        .expect("running db-follow");
    assert!(follow.status.success(), "{}", describe(&follow));
    one.server.query("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY); INSERT INTO shop.orders VALUES (1)");
    assert!(
        two.server.reaches_rows("shop.orders", "1"),
        "replication with the secret's password failed: {}",
        two.server.query("SHOW SLAVE STATUS\\G")
    );
}

/// Only the service whose secret is unreadable is left out: the host's other roles apply
/// (here munin-node's config beside the blocked web role, files only).
#[test]
fn an_unreadable_secret_blocks_only_its_own_service() {
    let moto = Moto::shared();
    let names = names();
    let (agent, _apache) = agent(&names, "1h");
    let base = docroots(&agent, &["alpha"]);
    let map = secret_map(&base, &names).replacen(
        "roles = [\"web\"]\nproducts",
        "roles = [\"web\", \"monitor\"]\nproducts",
        1,
    );
    agent.write_map(&map);
    let out = run(&agent, &agent_env(moto), &["sync", "--files-only"]);
    assert_exit(&out, 1);
    assert!(
        agent.path("/etc/munin/munin-node.conf").exists(),
        "{}",
        describe(&out)
    );
    assert_alpha_not_written(&agent, &out);
    let message = agent.status()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let reference = format!("ssm:{}", names.parameter);
    assert!(
        message.contains("service apache2: secret not read: ") && message.contains(&reference),
        "{message}"
    );
}

//! The core reconcile through the real binary (issue 2): idempotence, removal of files no
//! longer desired, restore on a failed check, refusals, and the lock. Apache is the real
//! Debian server; its config test and graceful reload are the service commands.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::fixture::{
    assert_exit, assert_stdout, describe, docroots, identity_of, replace_in, tree, web_map, Agent,
    Setup,
};
use crate::support::apache::Apache;
use crate::support::wait_until;

/// An agent for `web-1` whose apache2 service is the test's Apache.
pub fn web_agent(apache_for: impl FnOnce(&Path) -> Apache) -> (Agent, Apache) {
    let mut agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    let apache = apache_for(&agent.root);
    agent.setup = Setup::new("web-1", "127.0.0.1").apache(&apache);
    agent.write_config();
    (agent, apache)
}

/// A web agent and its Apache serving `products` (docroots with health pages under the
/// returned base), converged by one sync: one reload, and Apache has taken it.
pub fn synced_web_agent(products: &[&str]) -> (Agent, Apache, PathBuf) {
    let (agent, apache) = web_agent(Apache::start);
    let base = docroots(&agent, products);
    agent.write_map(&web_map(1, products, &base));
    assert_exit(&agent.run(&["sync"]), 0);
    assert_eq!(apache.reloads().len(), 1, "one reload for the first sync");
    assert!(
        apache.wait_generation(2, Duration::from_secs(10)),
        "Apache was not reloaded: {}",
        apache.error_log_tail()
    );
    (agent, apache, base)
}

#[test]
fn second_sync_writes_nothing_and_reloads_nothing() {
    let (agent, apache, _) = synced_web_agent(&["alpha", "beta"]);
    assert_eq!(
        apache.get("alpha.example.test", "/health.txt"),
        (200, "ok alpha\n".to_string())
    );
    let before = (
        identity_of(&agent.vhost("alpha")),
        identity_of(&agent.vhost("beta")),
    );
    let generation = apache.generation();

    assert_stdout(&agent.run(&["sync"]), 0, &["no changes"]);
    assert_eq!(
        (
            identity_of(&agent.vhost("alpha")),
            identity_of(&agent.vhost("beta"))
        ),
        before
    );
    assert_eq!(
        (apache.reloads().len(), apache.generation()),
        (1, generation),
        "an unchanged map reloaded Apache"
    );
    assert_exit(&agent.run(&["plan"]), 0);
}

/// The stages a sync ran, from its status record.
fn stages(agent: &Agent) -> Vec<String> {
    let status = agent.status();
    let timings = status["timings"]
        .as_object()
        .expect("timings in the status");
    timings.keys().cloned().collect()
}

/// An unchanged map takes the quiet path (no load, no render), yet a hand edit, a mode
/// change or a changed template is never mistaken for "unchanged".
#[test]
fn an_unchanged_sync_is_quiet_but_drift_and_new_templates_are_not_missed() {
    let (agent, _apache) = web_agent(Apache::start);
    let base = docroots(&agent, &["alpha"]);
    agent.write_map(&web_map(1, &["alpha"], &base));
    // Files only: reloads, hooks and smoke tests are still due, so the next full sync
    // takes the full path although the files match.
    let services = |agent: &Agent| {
        let text = std::fs::read_to_string(agent.state().join("settled.json")).expect("settled");
        let settled: serde_json::Value = serde_json::from_str(&text).expect("settled JSON");
        settled["services"].as_bool().expect("services flag")
    };
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    assert!(!services(&agent), "a files-only sync settled with services");
    assert_exit(&agent.run(&["sync"]), 0);
    let full = stages(&agent);
    assert!(
        full.contains(&"load".to_string()),
        "a full sync after a files-only one was quiet"
    );
    for stage in ["catalog", "render", "plan", "commit"] {
        assert!(
            full.contains(&stage.to_string()),
            "no {stage} time: {full:?}"
        );
    }
    assert!(services(&agent), "a full sync settled without services");
    let good = agent.vhost_bytes("alpha");
    assert_exit(&agent.run(&["sync"]), 0);
    let quiet = stages(&agent);
    assert!(
        quiet.contains(&"drift".to_string()) && !quiet.contains(&"load".to_string()),
        "an unchanged sync loaded the map: {quiet:?}"
    );

    std::fs::write(agent.vhost("alpha"), "# edited by hand\n").expect("hand edit");
    let out = agent.run(&["sync"]);
    assert_exit(&out, 0);
    assert_eq!(agent.vhost_bytes("alpha"), good, "{}", describe(&out));
    assert!(stages(&agent).contains(&"load".to_string()));

    use std::os::unix::fs::PermissionsExt;
    let mode = |agent: &Agent| {
        std::fs::metadata(agent.vhost("alpha"))
            .expect("vhost")
            .permissions()
            .mode()
            & 0o7777
    };
    let wanted = mode(&agent);
    std::fs::set_permissions(agent.vhost("alpha"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    assert_exit(&agent.run(&["sync"]), 0);
    assert_eq!(mode(&agent), wanted, "a mode change was not repaired");

    replace_in(
        &agent.catalog.join("web/vhost.conf.tera"),
        "</VirtualHost>",
        "    # new line\n</VirtualHost>",
    );
    assert_exit(&agent.run(&["sync"]), 0);
    let now = std::fs::read_to_string(agent.vhost("alpha")).expect("vhost");
    assert!(
        now.contains("# new line"),
        "a changed template was not rendered: {now}"
    );
}

#[test]
fn a_product_the_host_leaves_is_removed_and_unmanaged_files_stay() {
    let (agent, apache, base) = synced_web_agent(&["alpha", "beta"]);
    let theirs = agent.path("/etc/apache2/sites-enabled/zz-operator.conf");
    std::fs::write(&theirs, "# written by an operator\n").expect("unmanaged file");

    agent.write_map(&web_map(2, &["alpha"], &base));
    let out = agent.run(&["sync"]);
    assert_exit(&out, 0);
    assert!(
        !agent.vhost("beta").exists(),
        "beta's vhost was not removed: {}",
        describe(&out)
    );
    assert!(agent.vhost("alpha").exists());
    assert_eq!(
        std::fs::read(&theirs).expect("still there"),
        b"# written by an operator\n"
    );
    assert!(wait_until(Duration::from_secs(10), || apache
        .get("beta.example.test", "/health.txt")
        .0
        != 200
        || apache.get("beta.example.test", "/health.txt").1
            != "ok beta\n"));
}

#[test]
fn a_config_apache_rejects_is_restored_byte_for_byte_and_not_reloaded() {
    let (agent, apache, _) = synced_web_agent(&["alpha"]);
    let good = agent.vhost_bytes("alpha");
    let (reloads, generation) = (apache.reloads().len(), apache.generation());

    replace_in(
        &agent.catalog.join("web/vhost.conf.tera"),
        "</VirtualHost>",
        "    NoSuchDirective on\n</VirtualHost>",
    );
    let out = agent.run(&["sync"]);
    assert_exit(&out, 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("NoSuchDirective") || stdout.contains("Invalid command"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        agent.vhost_bytes("alpha"),
        good,
        "the old vhost was not restored"
    );
    assert_eq!(
        (apache.reloads().len(), apache.generation()),
        (reloads, generation),
        "Apache was reloaded with a rejected config"
    );
    assert_eq!(apache.get("alpha.example.test", "/health.txt").0, 200);
}

#[test]
fn a_symlink_at_a_destination_is_refused_and_nothing_is_written() {
    let agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    let base = docroots(&agent, &["alpha", "beta"]);
    agent.write_map(&web_map(1, &["alpha", "beta"], &base));
    let target = agent.dir.path().join("precious");
    std::fs::write(&target, "do not overwrite\n").expect("target");
    std::fs::create_dir_all(agent.path("/etc/apache2/sites-enabled")).expect("dir");
    std::os::unix::fs::symlink(&target, agent.vhost("beta")).expect("symlink");
    let before = tree(&agent.path("/etc"));

    assert_stdout(&agent.run(&["sync", "--files-only"]), 2, &["symlink"]);
    assert_eq!(
        std::fs::read(&target).expect("target"),
        b"do not overwrite\n"
    );
    assert_eq!(tree(&agent.path("/etc")), before, "something was written");
    assert!(!agent.vhost("alpha").exists());
}

#[test]
fn a_path_outside_allowed_roots_is_refused_and_nothing_is_written() {
    let mut setup = Setup::new("web-1", "127.0.0.1");
    setup.allowed_roots = Some(vec!["/etc/mysql".into()]);
    let agent = Agent::new(setup);
    let base = docroots(&agent, &["alpha"]);
    agent.write_map(&web_map(1, &["alpha"], &base));
    assert_stdout(
        &agent.run(&["sync", "--files-only"]),
        2,
        &["outside the allowed roots"],
    );
    assert!(
        !agent.path("/etc/apache2").exists(),
        "a file was written outside the allowed roots"
    );
}

/// The first sync's check holds it (and the lock) until the test lets go; the second sync
/// is started meanwhile and seen trying the lock twice while the first holds it (inotify on
/// `<state>/lock`, which every attempt opens): the two runs overlap for certain. The check
/// then ran once, the second sync ended after the first one and found nothing to do.
#[test]
fn concurrent_syncs_never_interleave() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, release) = (dir.path().join("check.log"), dir.path().join("release"));
    let check = format!(
        "sh -c 'echo start >> {0}; for i in $(seq 600); do test -e {1} && break; sleep 0.1; done; echo end >> {0}'",
        log.display(),
        release.display()
    );
    let setup = Setup::new("web-1", "127.0.0.1")
        .service("apache2", &format!("check = {check:?}"))
        .service("apache2", "reload = \"true\"");
    let agent = Agent::new(setup);
    let base = docroots(&agent, &["alpha"]);
    strip_smoke(&agent);
    agent.write_map(&web_map(1, &["alpha"], &base));
    let checks = || std::fs::read_to_string(&log).unwrap_or_default();
    let spawn = || {
        agent
            .command(&["sync"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sync")
    };

    let first = spawn();
    assert!(
        wait_until(Duration::from_secs(60), || checks() == "start\n"),
        "the first sync's check did not start: {:?}",
        checks()
    );
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).expect("inotify");
    inotify
        .add_watch(&agent.state().join("lock"), AddWatchFlags::IN_OPEN)
        .expect("watching the lock file");
    let mut second = spawn();
    let mut attempts = 0;
    let retried = wait_until(Duration::from_secs(30), || {
        attempts += inotify.read_events().map_or(0, |events| events.len());
        attempts >= 2
    });
    assert!(
        retried && checks() == "start\n",
        "the second sync did not retry the lock while the first held it: {attempts} \
         attempt(s), checks {:?}",
        checks()
    );
    assert!(
        matches!(second.try_wait(), Ok(None)),
        "the second sync ended while the first held the lock"
    );
    std::fs::write(&release, b"").expect("releasing the first check");
    let (a, b) = (
        first.wait_with_output().expect("first"),
        second.wait_with_output().expect("second"),
    );
    assert_exit(&a, 0);
    assert_exit(&b, 0);
    assert_eq!(
        checks(),
        "start\nend\n",
        "the check ran twice or overlapped"
    );
    assert!(
        String::from_utf8_lossy(&b.stdout).contains("no changes"),
        "the second reconcile did not see the first one's result:\n{}",
        describe(&b)
    );
}

#[test]
fn a_reconcile_killed_mid_transaction_is_undone_and_applied_again() {
    let log = tempfile::NamedTempFile::new().expect("log");
    let logp = log.path().display().to_string();
    let mut setup = Setup::new("web-1", "127.0.0.1");
    // The check kills the agent (its grandparent is rolecall: sh → kill): a crash after the
    // files were written and before any check or reload.
    setup = setup
        .service("apache2", "check = \"sh -c 'kill -9 $PPID'\"")
        .service(
            "apache2",
            &format!("reload = \"sh -c 'echo reload >> {logp}'\""),
        );
    let mut agent = Agent::new(setup);
    let base = docroots(&agent, &["alpha"]);
    strip_smoke(&agent);
    agent.write_map(&web_map(1, &["alpha"], &base));
    let out = agent.run(&["sync"]);
    assert_eq!(
        out.status.code(),
        None,
        "the agent was expected to die: {}",
        describe(&out)
    );
    assert!(
        agent.vhost("alpha").exists(),
        "the crash happened before the write"
    );
    let journal = agent.state().join("journal");
    assert!(journal.exists(), "no journal left behind");
    // Issue 15: it may hold secret files' previous contents: owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&journal).expect("journal").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "journal mode {mode:o}");

    agent.setup.services.clear();
    agent.setup = agent
        .setup
        .clone()
        .service("apache2", "check = \"true\"")
        .service(
            "apache2",
            &format!("reload = \"sh -c 'echo reload >> {logp}'\""),
        );
    agent.write_config();
    // The file is applied again.
    assert_stdout(&agent.run(&["sync"]), 0, &["create"]);
    assert_eq!(
        std::fs::read_to_string(log.path()).expect("log"),
        "reload\n",
        "the service was not reloaded after the crash"
    );
    assert!(!agent.state().join("journal").exists());
}

/// Remove the web role's smoke test from the agent's catalog copy.
fn strip_smoke(agent: &Agent) {
    let text = std::fs::read_to_string(agent.catalog.join("web.toml")).expect("web.toml");
    let cut = text.find("[[smoke]]").expect("web.toml has a smoke test");
    std::fs::write(agent.catalog.join("web.toml"), &text[..cut]).expect("web.toml");
}

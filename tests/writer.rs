//! Issues 15 and 13: `sys::fs`, the only writer, attacked through the real binary: symlinked
//! parents and allowed roots (refused by `plan` and `sync` before the first write),
//! hard-linked destinations, directories created under umask 000, symlinks at state files
//! and the lock, temp files left by dead writers, and the fsync budget of a first apply.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::fixture::{
    assert_exit, assert_not_said, binary, describe, stdout, tree, web_map, Agent, Setup,
};
use crate::support::require_program;

/// A `--files-only` agent for `web-1` with the web and memcached roles, its map written.
fn agent(products: &[&str]) -> Agent {
    let agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    write_map(&agent, 1, products);
    agent
}

fn write_map(agent: &Agent, generation: u64, products: &[&str]) {
    let map = web_map(generation, products, &agent.path("/var/www"));
    let both = map.replacen("roles = [\"web\"]", "roles = [\"web\", \"memcached\"]", 1);
    agent.write_map(&both);
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn status_outcome(agent: &Agent) -> String {
    let text = std::fs::read_to_string(agent.state().join("status.json")).expect("status.json");
    let status: serde_json::Value = serde_json::from_str(&text).expect("status JSON");
    status["outcome"].as_str().unwrap_or_default().to_string()
}

/// Issue 15 #1: with sites-enabled a symlink to a directory elsewhere, `plan` and `sync`
/// refuse (exit 2) naming that component, and nothing at all is written: not through the
/// link, and not the memcached file the plan would have written first.
#[test]
fn issue15_a_symlinked_parent_is_refused_before_the_first_write() {
    let agent = agent(&["alpha", "beta"]);
    let elsewhere = agent.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("elsewhere");
    std::fs::create_dir_all(agent.path("/etc/apache2")).expect("apache2");
    let link = agent.path("/etc/apache2/sites-enabled");
    std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
    let before = tree(&agent.root);

    let refused = |out: &Output| {
        assert_exit(out, 2);
        let text = describe(out);
        assert!(
            text.contains(&link.display().to_string()) && text.contains("symlink"),
            "the refusal does not name the symlinked component: {text}"
        );
    };
    refused(&agent.run(&["plan"]));
    let out = agent.run(&["sync", "--files-only"]);
    refused(&out);
    assert_eq!(status_outcome(&agent), "invalid");
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("list").count(),
        0,
        "written through the symlink"
    );
    let after = tree(&agent.root);
    let written: Vec<_> = after
        .keys()
        .filter(|p| !before.contains_key(*p) && !p.starts_with("var/lib/rolecall"))
        .collect();
    assert!(
        written.is_empty(),
        "written before the refusal: {written:?}"
    );
    assert!(!agent.state().join("journal").exists());

    std::fs::remove_file(&link).expect("unlink");
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    assert!(agent.vhost("alpha").is_file());
}

/// Issue 15 #1: the allowed root itself (/etc/apache2) a symlink is refused too; a symlink
/// above it (/etc) is the operator's business and followed.
#[test]
fn issue15_a_symlinked_allowed_root_is_refused_and_one_above_it_followed() {
    let agent = agent(&["alpha"]);
    let real_etc = agent.dir.path().join("real-etc");
    std::fs::create_dir_all(real_etc.join("elsewhere")).expect("dirs");
    std::os::unix::fs::symlink(&real_etc, agent.path("/etc")).expect("etc link");
    std::os::unix::fs::symlink(real_etc.join("elsewhere"), real_etc.join("apache2"))
        .expect("apache2 link");
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 2);
    assert!(stdout(&out).contains("apache2"), "{}", describe(&out));
    assert_eq!(
        std::fs::read_dir(real_etc.join("elsewhere"))
            .expect("list")
            .count(),
        0
    );
    assert!(
        !real_etc.join("memcached.conf").exists(),
        "written before the refusal"
    );

    std::fs::remove_file(real_etc.join("apache2")).expect("unlink");
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    assert!(real_etc
        .join("apache2/sites-enabled/rolecall-alpha.conf")
        .is_file());
    assert!(real_etc.join("memcached.conf").is_file());
}

/// A hard link at a destination shares its inode with a file elsewhere: the new content
/// replaces the name, the other file keeps its bytes.
#[test]
fn issue15_a_hard_linked_destination_is_replaced_not_written_through() {
    let mut agent = agent(&["alpha"]);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let outside = agent.dir.path().join("outside");
    std::fs::hard_link(agent.path("/etc/memcached.conf"), &outside).expect("hard link");
    let old = std::fs::read(&outside).expect("outside");
    agent.setup = agent.setup.clone().var("memcached_mb = 128");
    agent.write_config();
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    let new = std::fs::read(agent.path("/etc/memcached.conf")).expect("memcached.conf");
    assert_ne!(
        new,
        old,
        "the change did not reach the file: {}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read(&outside).expect("outside"),
        old,
        "written through the link"
    );
    assert_eq!(std::fs::metadata(&outside).expect("stat").nlink(), 1);
}

/// Issue 15 #8: under umask 000 every directory rolecall creates is 0755 and files have
/// their catalog mode.
#[test]
fn issue15_directories_created_under_umask_000_are_0755() {
    let agent = agent(&["alpha"]);
    let out = sync_under(&agent, &["sh", "-c", "umask 000 && exec \"$0\" \"$@\""]);
    assert_exit(&out, 0);
    for dir in [
        "/etc",
        "/etc/apache2",
        "/etc/apache2/sites-enabled",
        "/var",
        "/var/lib",
        "/var/lib/rolecall",
    ] {
        assert_eq!(mode(&agent.path(dir)), 0o755, "{dir}");
    }
    assert_eq!(mode(&agent.vhost("alpha")), 0o644);
    for state in ["status.json", "managed.json", "lock"] {
        assert_eq!(mode(&agent.state().join(state)), 0o644, "{state}");
    }
}

/// Issue 15 #9: a dangling symlink at the lock file is refused and its target never
/// created; a symlinked state file is never read or written through.
#[test]
fn issue15_symlinks_at_the_lock_and_state_files_are_refused() {
    let agent = agent(&["alpha"]);
    std::fs::create_dir_all(agent.state()).expect("state dir");
    let target = agent.dir.path().join("created-through-the-lock");
    std::os::unix::fs::symlink(&target, agent.state().join("lock")).expect("symlink");
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 1);
    assert!(describe(&out).contains("lock file"), "{}", describe(&out));
    assert!(!target.exists(), "the lock's symlink was followed");
    assert!(!agent.vhost("alpha").exists());
    std::fs::remove_file(agent.state().join("lock")).expect("unlink");

    let records = agent.dir.path().join("records-elsewhere");
    std::fs::write(&records, "{}").expect("records");
    std::os::unix::fs::symlink(&records, agent.state().join("managed.json")).expect("symlink");
    let out = agent.run(&["sync", "--files-only"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains("managed.json"),
        "{}",
        describe(&out)
    );
    assert!(
        !agent.vhost("alpha").exists(),
        "written with unreadable records"
    );
    assert_eq!(std::fs::read(&records).expect("records"), b"{}");
    std::fs::remove_file(agent.state().join("managed.json")).expect("unlink");

    let status = agent.dir.path().join("status-elsewhere");
    std::fs::write(&status, "keep").expect("status");
    let _ = std::fs::remove_file(agent.state().join("status.json"));
    std::os::unix::fs::symlink(&status, agent.state().join("status.json")).expect("symlink");
    let out = agent.run(&["sync", "--files-only"]);
    assert!(
        describe(&out).contains("status record not written"),
        "{}",
        describe(&out)
    );
    assert_eq!(std::fs::read(&status).expect("status"), b"keep");
    assert!(agent.vhost("alpha").exists());
}

/// Issue 15 #4: temp files a killed rolecall left (its own name pattern, a writer that is
/// gone) are removed by the next reconcile, in the managed directories and in the state
/// directory; a live writer's, a symlink with such a name, and an operator's file stay.
#[test]
fn issue15_temp_files_of_dead_writers_are_removed_by_the_next_reconcile() {
    let agent = agent(&["alpha"]);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let sites = agent.path("/etc/apache2/sites-enabled");
    let target = agent.dir.path().join("target");
    std::fs::write(&target, "keep").expect("target");
    // Pids above pid_max (at most 2^22) never run; pid 1 always does.
    let dead = [
        sites.join(".rolecall-tmp-8388609-0123456789abcdef"),
        sites.join(".rolecall-Ab3xY9"),
        agent.state().join(".rolecall-tmp-8388610-0123456789abcdef"),
    ];
    let stay = [
        sites.join(".rolecall-tmp-1-0123456789abcdef"),
        sites.join(".rolecall-notes"),
    ];
    for f in dead.iter().chain(&stay) {
        std::fs::write(f, "half written").expect("plant");
    }
    let link = sites.join(".rolecall-tmp-8388609-aaaaaaaaaaaaaaaa");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");

    write_map(&agent, 2, &["alpha", "beta"]);
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    for f in &dead {
        assert!(!f.exists(), "{} stayed: {}", f.display(), describe(&out));
    }
    for f in &stay {
        assert!(f.exists(), "{} was removed", f.display());
    }
    assert!(
        std::fs::symlink_metadata(&link).is_ok(),
        "a symlink was removed"
    );
    assert_eq!(std::fs::read(&target).expect("target"), b"keep");
}

/// Issue 15 #4: a rolecall killed while it writes a vhost leaves its temp file and its
/// journal; the next reconcile, back on the map before (so it writes nothing at all), undoes
/// the killed one and removes that temp file. A live writer's temp file stays.
#[test]
fn issue15_a_killed_writers_temp_file_goes_even_when_the_next_reconcile_writes_nothing() {
    require_strace();
    let agent = agent(&["alpha"]);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let sites = agent.path("/etc/apache2/sites-enabled");
    let before = tree(&agent.root);
    let live = sites.join(".rolecall-tmp-1-fedcba9876543210");
    std::fs::write(&live, "half written").expect("plant");

    // Killed at its first rename in sites-enabled: beta's vhost is whole under its temp name.
    write_map(&agent, 2, &["alpha", "beta"]);
    let sites_arg = sites.display().to_string();
    let kill = "inject=renameat:signal=KILL:when=1";
    let out = sync_under(
        &agent,
        &[
            "strace",
            "-f",
            "-o",
            "/dev/null",
            "-P",
            &sites_arg,
            "-e",
            kill,
        ],
    );
    assert!(
        out.status.code().is_none(),
        "not killed: {}",
        describe(&out)
    );
    let temps = || {
        let names = std::fs::read_dir(&sites).expect("list");
        let mut temps: Vec<PathBuf> = names
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().contains(".rolecall-tmp-") && *p != live)
            .collect();
        temps.sort();
        temps
    };
    assert_eq!(temps().len(), 1, "the killed run left no temp file");
    assert!(agent.state().join("journal").exists(), "no journal left");

    write_map(&agent, 3, &["alpha"]);
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    assert!(
        temps().is_empty(),
        "the killed writer's temp file stayed: {}",
        describe(&out)
    );
    assert!(live.exists(), "the live writer's temp file was removed");
    std::fs::remove_file(&live).expect("live");
    let mut after = tree(&agent.root);
    after.retain(|p, _| !p.starts_with("var/lib/rolecall"));
    let mut expected = before.clone();
    expected.retain(|p, _| !p.starts_with("var/lib/rolecall"));
    assert_eq!(
        after, expected,
        "the files are not those before the killed run"
    );
}

/// Issue 15 #4: a journal that cannot be read names no file to undo; the next reconcile,
/// quiet otherwise, still removes a dead writer's temp file beside the managed files, and
/// the journal.
#[test]
fn issue15_a_damaged_journal_still_gets_dead_writers_temp_files_removed() {
    let agent = agent(&["alpha"]);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let dead = agent.path("/etc/apache2/sites-enabled/.rolecall-tmp-8388609-0123456789abcdef");
    std::fs::write(&dead, "half written").expect("plant");
    let journal = agent.state().join("journal");
    std::fs::write(&journal, "rolecall-journal 1\n[not json").expect("journal");

    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    assert!(!dead.exists(), "the temp file stayed: {}", describe(&out));
    assert!(!journal.exists(), "the damaged journal stayed");
}

/// Issue 13: the settled record is a shortcut, never fsynced, so a power loss may leave it
/// empty. An empty one costs a full reconcile (the map is loaded again, the map unchanged);
/// with a vhost edited by hand too, that reconcile repairs the vhost; the record is replaced
/// whole.
#[test]
fn an_empty_settled_record_costs_a_full_reconcile_never_a_wrong_file() {
    let agent = agent(&["alpha"]);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let settled = agent.state().join("settled.json");
    assert!(
        agent.state_json("settled.json").is_some(),
        "no settled record"
    );
    let good = agent.vhost_bytes("alpha");
    std::fs::write(&settled, "").expect("emptying the settled record");
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let timings = agent.status()["timings"].clone();
    assert!(
        timings.get("load").is_some(),
        "quiet on an empty record: {timings}"
    );

    std::fs::write(&settled, "").expect("emptying the settled record");
    std::fs::write(agent.vhost("alpha"), "# edited by hand\n").expect("edit");
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    assert_eq!(
        agent.vhost_bytes("alpha"),
        good,
        "the edited vhost was not repaired: {}",
        describe(&out)
    );
    let timings = agent.status()["timings"].clone();
    assert!(
        timings.get("load").is_some(),
        "no full reconcile: {timings}"
    );
    assert!(
        agent.state_json("settled.json").is_some(),
        "the empty settled record was not replaced"
    );
}

/// A torn copy of the counters (disk trouble, a hand edit) makes them start again with this
/// reconcile instead of stopping the metrics for good.
#[test]
fn torn_counters_start_again() {
    let agent = agent(&["alpha"]);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let converged = |agent: &Agent| agent.counters()["reconciles"]["converged"].as_u64();
    assert_eq!(converged(&agent), Some(2), "{}", agent.counters());
    std::fs::write(agent.state().join("counters.json"), "{\"reconc").expect("tearing");

    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    assert_not_said(&out, "metrics not written");
    assert_eq!(converged(&agent), Some(1), "{}", agent.counters());
}

/// strace, or a failure that says how to install it.
fn require_strace() {
    require_program(
        "strace",
        "apt-get install strace (tests/run.sh installs it)",
    );
}

/// `sync --files-only` of `agent` run through the command `wrapper` (its program and
/// arguments, the rolecall command line appended).
fn sync_under(agent: &Agent, wrapper: &[&str]) -> Output {
    Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(binary())
        .arg("--config")
        .arg(&agent.config)
        .arg("--root")
        .arg(&agent.root)
        .args(["sync", "--files-only"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", wrapper[0]))
}

/// `strace -f -c` of `sync --files-only`: calls per syscall.
fn syscall_counts(agent: &Agent) -> (Output, std::collections::BTreeMap<String, u64>) {
    require_strace();
    let summary = agent.dir.path().join("strace-c.txt");
    let summary_arg = summary.display().to_string();
    let out = sync_under(agent, &["strace", "-f", "-c", "-o", &summary_arg]);
    let text = std::fs::read_to_string(&summary).expect("strace summary");
    let counts = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let calls = f.get(3)?.parse().ok()?;
            Some((f.last()?.to_string(), calls))
        })
        .collect();
    (out, counts)
}

/// Issue 13: a first apply fsyncs each file once and each directory once per transaction,
/// not once per file (the old writer made two fsyncs per file); a second sync with nothing
/// to change renames nothing.
#[test]
fn issue13_a_first_apply_fsyncs_each_file_once_and_each_directory_once() {
    let products: Vec<String> = (0..60).map(|i| format!("p{i}")).collect();
    let names: Vec<&str> = products.iter().map(String::as_str).collect();
    let agent = agent(&names);
    let (out, counts) = syscall_counts(&agent);
    assert_exit(&out, 0);
    let files = 61; // 60 vhosts and memcached.conf
    let fsyncs = counts.get("fsync").copied().unwrap_or(0);
    let renames = counts.get("renameat").copied().unwrap_or(0);
    // Beyond one per file: the directories created and written (≤ 6) and the state files
    // (journal, map cache, records, settled record, status, counters: file + directory).
    assert!(
        (files..=files + 30).contains(&fsyncs),
        "{fsyncs} fsyncs for {files} files: {counts:?}"
    );
    assert!(
        (files..=files + 12).contains(&renames),
        "{renames} renames for {files} files: {counts:?}"
    );
    let (out, again) = syscall_counts(&agent);
    assert_exit(&out, 0);
    assert!(
        again.get("renameat").copied().unwrap_or(0) <= 3,
        "an unchanged sync renamed files: {again:?}"
    );
}

/// Issue 13: before the first file of a reconcile is written, the settled record is gone
/// and the journal is in place, both durable, with one fsync of the state directory for
/// the two (the record is removed, the journal named, then the directory synced).
#[test]
fn issue13_the_settled_record_goes_with_the_journal_in_one_directory_fsync() {
    require_strace();
    let agent = agent(&["alpha"]);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    assert!(
        agent.state_json("settled.json").is_some(),
        "no settled record"
    );
    write_map(&agent, 2, &["alpha", "beta"]);
    let trace = agent.dir.path().join("strace.txt");
    let trace_arg = trace.display().to_string();
    let calls = "unlink,unlinkat,rename,renameat,renameat2,fsync,openat";
    let out = sync_under(
        &agent,
        &[
            "strace",
            "-f",
            "-y",
            "-e",
            &format!("trace={calls}"),
            "-o",
            &trace_arg,
        ],
    );
    assert_exit(&out, 0);
    assert!(agent.vhost("beta").exists(), "{}", describe(&out));
    let text = std::fs::read_to_string(&trace).expect("strace output");
    let lines: Vec<&str> = text.lines().collect();
    let first = |what: &dyn Fn(&str) -> bool, name: &str| {
        lines
            .iter()
            .position(|l| what(l))
            .unwrap_or_else(|| panic!("no {name} in the trace:\n{text}"))
    };
    let etc = agent.root.join("etc").display().to_string();
    let unlinked = first(
        &|l| l.contains("unlink") && l.contains("settled.json"),
        "unlink",
    );
    let named = first(
        &|l| l.contains("rename") && l.contains("\"journal\""),
        "journal",
    );
    let written = first(
        &|l| l.contains("openat(") && l.contains(&etc) && l.contains("O_CREAT"),
        "first managed temp file",
    );
    let state_fd = format!("<{}>", agent.state().display());
    let synced: Vec<usize> = (0..written)
        .filter(|&i| lines[i].contains("fsync(") && lines[i].contains(&state_fd))
        .collect();
    assert!(unlinked < named && named < written, "out of order:\n{text}");
    assert_eq!(
        synced.iter().filter(|&&i| i > unlinked).count(),
        1,
        "not one fsync of the state directory between the record's removal and the first \
         file ({synced:?}, removed at {unlinked}, journal at {named}):\n{text}"
    );
    assert!(
        synced.iter().any(|&i| i > named),
        "the journal's name was not made durable before the first file:\n{text}"
    );
}

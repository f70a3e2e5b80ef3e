//! Issue 13: a publish that does not change what a host renders writes nothing and reloads
//! nothing on that host (no fleet-wide reload storm), against the real Apache.

use std::time::Duration;

use crate::fixture::{
    assert_exit, describe, docroots, identity_of, memcached_map, web_map, Agent, Daemon, Setup,
};
use crate::reconcile::{synced_web_agent, web_agent};
use crate::support::apache::Apache;
use crate::support::wait_until;

#[test]
fn issue13_a_map_that_only_adds_an_unrelated_host_changes_nothing_on_a_web_host() {
    let (agent, apache, base) = synced_web_agent(&["alpha", "beta"]);
    let generation = apache.generation();
    let vhosts = ["alpha", "beta"].map(|p| agent.vhost(p));
    let before = vhosts.clone().map(|v| identity_of(&v));

    let mut next = web_map(2, &["alpha", "beta"], &base);
    next.push_str(
        "\n[hosts.cache-9]\naddress = \"10.0.9.9\"\naz = \"test-b\"\nroles = [\"memcached\"]\n",
    );
    agent.write_map(&next);
    let out = agent.run(&["sync", "--json"]);
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["map"]["generation"], 2, "{report:#}");
    assert_eq!(report["files"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["services"], serde_json::json!([]), "{report:#}");
    assert_eq!(
        vhosts.map(|v| identity_of(&v)),
        before,
        "a vhost was rewritten"
    );
    // Every reload command the sync ran is counted by the time it exits: no waiting for
    // Apache to show one.
    assert_eq!(
        (apache.reloads().len(), apache.generation()),
        (1, generation),
        "Apache was reloaded"
    );
}

/// A web host serving a product with a database and no secret references: the shipped
/// catalog's database.env could read secrets, yet there are none to re-read, so once
/// converged its polls take the quiet path (no parse, render or write). The secrets work had
/// lost this for every such host (fixed in f42cae3).
#[test]
fn issue13_a_web_host_with_a_database_product_polls_quietly() {
    let (agent, _apache) = web_agent(Apache::start);
    let base = docroots(&agent, &["alpha"]);
    let mut map = web_map(1, &["alpha"], &base);
    map.push_str("\n[products.alpha.database]\nname = \"alpha\"\nmaster = \"db-1\"\n");
    agent.write_map(&map);
    let daemon = Daemon::start(&agent, &[]);
    let quiet = || daemon.log_count("quiet poll: map unchanged, no drift");
    assert!(
        wait_until(Duration::from_secs(30), || quiet() >= 3),
        "no quiet polls: {}",
        daemon.log_tail()
    );
    let env = agent.path("/etc/rolecall/products/alpha/database.env");
    let text = std::fs::read_to_string(&env).expect("alpha's database.env");
    assert!(text.contains("10.0.0.1"), "{text}");
}

/// Issue 13's render memo never hands out a stale file: with the memo of a converged sync
/// in place, a vhost edited by hand while the map changes another product, a template edit
/// and a torn memo each end with every file as a full render makes it.
#[test]
fn issue13_the_render_memo_never_hands_out_a_stale_file() {
    let (agent, _apache, base) = synced_web_agent(&["alpha", "beta"]);
    let memo = agent.state().join("render-memo.json");
    assert!(memo.exists(), "no render memo after the first sync");
    let [alpha, beta] = ["alpha", "beta"].map(|p| agent.vhost(p));
    let read = |path: &std::path::Path| std::fs::read_to_string(path).expect("a vhost");
    let beta_good = read(&beta);

    std::fs::write(&beta, "# edited by hand\n").expect("editing beta's vhost");
    let map = web_map(2, &["alpha", "beta"], &base).replace("www.alpha.", "w2.alpha.");
    agent.write_map(&map);
    assert_exit(&agent.run(&["sync"]), 0);
    assert_eq!(read(&beta), beta_good, "the edited vhost was not restored");
    assert!(read(&alpha).contains("ServerAlias w2.alpha.example.test"));

    let template = agent.catalog.join("web/vhost.conf.tera");
    let edited = read(&template).replace(
        "Require all granted\n",
        "Require all granted\n        # memo test\n",
    );
    std::fs::write(&template, edited).expect("editing the vhost template");
    assert_exit(&agent.run(&["sync"]), 0);
    for vhost in [&alpha, &beta] {
        assert!(read(vhost).contains("# memo test"), "{}", read(vhost));
    }

    std::fs::write(&memo, "{\"build\": ").expect("tearing the memo");
    std::fs::write(&beta, "# edited again\n").expect("editing beta's vhost");
    assert_exit(&agent.run(&["sync"]), 0);
    assert!(read(&beta).contains("# memo test"), "{}", read(&beta));
    let kept = std::fs::read(&memo).expect("the memo");
    assert!(
        serde_json::from_slice::<serde_json::Value>(&kept).is_ok(),
        "the torn memo was not replaced"
    );
}

/// The memo is a state file like the others: a symlink in its place is neither read through
/// nor written through, and the sync still converges (rendering everything).
#[test]
fn issue13_a_symlink_at_the_render_memo_is_not_followed() {
    let (agent, _apache, base) = synced_web_agent(&["alpha"]);
    let memo = agent.state().join("render-memo.json");
    let elsewhere = agent.dir.path().join("memo-elsewhere");
    std::fs::rename(&memo, &elsewhere).expect("moving the memo away");
    std::os::unix::fs::symlink(&elsewhere, &memo).expect("symlink");
    let before = std::fs::read(&elsewhere).expect("the memo");

    agent.write_map(&web_map(2, &["alpha"], &base).replace("www.alpha.", "w2.alpha."));
    let out = agent.run(&["sync"]);
    assert_exit(&out, 0);
    assert!(
        describe(&out).contains("render memo not written"),
        "{}",
        describe(&out)
    );
    assert_eq!(std::fs::read(&elsewhere).expect("the memo"), before);
    let vhost = agent.vhost("alpha");
    let text = std::fs::read_to_string(vhost).expect("alpha's vhost");
    assert!(text.contains("ServerAlias w2.alpha.example.test"), "{text}");
}

/// Issue 13: the quiet path vouches for the files the settled record has stamps of without
/// reading them, yet an edit of the same size with the mtime put back is seen as drift and
/// repaired (its ctime moved).
#[test]
fn issue13_the_quiet_path_sees_an_edit_that_keeps_size_and_mtime() {
    let (agent, _apache, base) = synced_web_agent(&["alpha", "beta"]);
    let beta = agent.vhost("beta");
    let good = std::fs::read(&beta).expect("beta's vhost");
    // A commit stamps the files written a clock tick or more before it: beta's vhost, once
    // a later publish changes alpha only.
    let map = web_map(2, &["alpha", "beta"], &base).replace("www.alpha.", "w2.alpha.");
    agent.write_map(&map);
    assert_exit(&agent.run(&["sync"]), 0);
    let settled = std::fs::read_to_string(agent.state().join("settled.json")).expect("settled");
    let settled: serde_json::Value = serde_json::from_str(&settled).expect("settled JSON");
    let entry = &settled["files"]["/etc/apache2/sites-enabled/rolecall-beta.conf"];
    assert!(
        entry["stamp"].is_string(),
        "beta's vhost has no stamp: {settled:#}"
    );
    let stages = |out: &std::process::Output| {
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
        let timings = report["timings"].as_object().expect("timings").clone();
        timings.keys().cloned().collect::<Vec<_>>()
    };
    let out = agent.run(&["sync", "--json"]);
    assert_exit(&out, 0);
    let quiet = stages(&out);
    assert!(
        quiet.contains(&"drift".to_string()) && !quiet.contains(&"load".to_string()),
        "{quiet:?}"
    );

    edit_keeping_size_and_mtime(&beta);
    let out = agent.run(&["sync", "--json"]);
    assert_exit(&out, 0);
    assert!(
        stages(&out).contains(&"load".to_string()),
        "the edit was taken for no drift"
    );
    assert_eq!(std::fs::read(&beta).expect("beta"), good, "the edit stayed");
}

/// Issue 13: the stamps a commit finds for the settled record (each file read back and found
/// as written, its stamp settled) go into the render memo as well, so the first publish
/// after a first apply vouches for the files it does not change by their stamps instead of
/// reading every one of them again (a 500-vhost host: 62 -> 41 ms). The memo has the very
/// stamp the record has.
#[test]
fn issue13_the_first_apply_leaves_the_memo_the_stamps_of_the_settled_record() {
    let (agent, _apache, _base) = synced_web_agent(&["alpha", "beta"]);
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(agent.state().join(name)).expect(name);
        serde_json::from_str(&text).expect(name)
    };
    let (settled, memo) = (read("settled.json"), read("render-memo.json"));
    // The vhosts were written before Apache's check, reload and smoke tests: a clock tick
    // and more before the commit, so the record stamps them.
    for product in ["alpha", "beta"] {
        let path = format!("/etc/apache2/sites-enabled/rolecall-{product}.conf");
        let recorded = &settled["files"][&path]["stamp"];
        assert!(recorded.is_string(), "{path} has no stamp: {settled:#}");
        let units = memo["units"].as_object().expect("units").values();
        let files = units.flat_map(|u| u["files"].as_array().expect("files").iter());
        let remembered: Vec<_> = files.filter(|f| f["file"]["path"] == *path).collect();
        assert_eq!(remembered.len(), 1, "{path} in the memo: {memo:#}");
        assert_eq!(&remembered[0]["stamp"], recorded, "{path}: {memo:#}");
    }
}

/// Issue 13: a file the memo has seen as remembered is vouched for by its stamp (inode,
/// size, times, owner, mode) and not read again, yet every change to it is still caught: an
/// edit that keeps the size and puts the mtime back (as `touch -r` would) changes the ctime,
/// and so does a chmod; each time the next sync reads the file and restores it.
#[test]
fn issue13_a_file_vouched_for_by_its_stamp_is_read_again_once_touched() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (agent, _apache, base) = synced_web_agent(&["alpha", "beta"]);
    let beta = agent.vhost("beta");
    let good = std::fs::read(&beta).expect("beta's vhost");
    let mode = std::fs::metadata(&beta).expect("beta's vhost").mode() & 0o7777;
    // Each sync changes alpha only: beta comes from the memo.
    let sync_moving_alpha = |generation: u64| {
        let alias = format!("w{generation}.alpha.");
        let map = web_map(generation, &["alpha", "beta"], &base).replace("www.alpha.", &alias);
        agent.write_map(&map);
        let out = agent.run(&["sync", "--json"]);
        assert_exit(&out, 0);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
        let files = report["files"].as_array().expect("files").clone();
        files
            .iter()
            .map(|f| f["path"].to_string())
            .collect::<Vec<_>>()
    };

    // The second sync reads beta's vhost, finds it as remembered and stamps it.
    sync_moving_alpha(2);
    let memo = std::fs::read_to_string(agent.state().join("render-memo.json")).expect("memo");
    let memo: serde_json::Value = serde_json::from_str(&memo).expect("memo JSON");
    let stamped = memo["units"]
        .as_object()
        .expect("units")
        .values()
        .any(|unit| {
            unit["files"].as_array().expect("files").iter().any(|f| {
                f["file"]["path"] == "/etc/apache2/sites-enabled/rolecall-beta.conf"
                    && f["stamp"].is_string()
            })
        });
    assert!(stamped, "beta's vhost was not stamped: {memo:#}");
    let (identity, records) = (identity_of(&beta), agent.state().join("managed.json"));
    let written = sync_moving_alpha(3);
    assert!(written.iter().all(|p| !p.contains("beta")), "{written:?}");
    assert_eq!(
        identity_of(&beta),
        identity,
        "the vouched vhost was rewritten"
    );
    let kept = std::fs::read_to_string(&records).expect("managed.json");
    assert!(
        kept.contains("rolecall-beta.conf"),
        "beta's record went: {kept}"
    );

    // Same size, another byte, the old mtime put back.
    edit_keeping_size_and_mtime(&beta);
    let written = sync_moving_alpha(4);
    assert_eq!(std::fs::read(&beta).expect("beta"), good, "the edit stayed");
    assert!(written.iter().any(|p| p.contains("beta")), "{written:?}");

    // The restored file is stamped again by the next sync; then a chmod.
    sync_moving_alpha(5);
    std::fs::set_permissions(&beta, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    sync_moving_alpha(6);
    let now = std::fs::metadata(&beta).expect("beta").mode() & 0o7777;
    assert_eq!(now, mode, "the mode was not restored");
}

/// A commit stamps only a file it read back as expected: a file edited behind the agent
/// between its write and the commit (here by the role's smoke test, once) gets no stamp, so
/// the next sync reads it, finds the drift and restores it instead of vouching for it.
#[test]
fn issue13_a_file_edited_before_the_commit_is_not_stamped_and_is_restored_next_sync() {
    let agent =
        Agent::new(Setup::new("cache-1", "10.0.0.5").service("memcached", "restart = \"true\""));
    let conf = agent.path("/etc/memcached.conf");
    let role = agent.catalog.join("memcached.toml");
    let text = std::fs::read_to_string(&role).expect("memcached.toml");
    let (head, _smoke) = text.split_once("[[smoke]]").expect("a smoke test");
    let smoke = smoke_editing_once(&agent, &conf);
    std::fs::write(&role, format!("{head}{smoke}")).expect("memcached.toml");
    agent.write_map(&memcached_map(1, "edited"));

    assert_exit(&agent.run(&["sync"]), 0);
    let edited = std::fs::read_to_string(&conf).expect("memcached.conf");
    assert!(
        edited.ends_with("# edited\n"),
        "the smoke test did not edit: {edited}"
    );
    let settled = agent.state_json("settled.json").expect("settled record");
    let entry = &settled["files"]["/etc/memcached.conf"];
    assert!(entry.is_object(), "no record of the file: {settled:#}");
    assert!(
        entry["stamp"].is_null(),
        "the edited file was stamped: {entry:#}"
    );

    let out = agent.run(&["sync", "--json"]);
    assert_exit(&out, 0);
    let restored = std::fs::read_to_string(&conf).expect("memcached.conf");
    assert!(
        !restored.contains("# edited"),
        "the edit stayed: {restored}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    let files = report["files"].to_string();
    assert!(files.contains("/etc/memcached.conf"), "{report:#}");
}

/// The render memo takes its stamps from the commit only for files read back as written: a
/// vhost (a per-product file, which the memo remembers; memcached.conf above is the host's
/// own) edited behind the agent after its write and before the commit gets no stamp in the
/// memo either, so the next publish, which changes another product only, reads it, finds
/// the drift and restores it instead of vouching for it.
#[test]
fn issue13_a_vhost_edited_before_the_commit_is_not_stamped_in_the_memo_and_is_restored() {
    let (agent, _apache) = web_agent(Apache::start);
    let base = docroots(&agent, &["alpha", "beta"]);
    let beta = agent.vhost("beta");
    let role = agent.catalog.join("web.toml");
    let text = std::fs::read_to_string(&role).expect("web.toml");
    let smoke = smoke_editing_once(&agent, &beta);
    std::fs::write(&role, format!("{text}\n{smoke}")).expect("web.toml");
    agent.write_map(&web_map(1, &["alpha", "beta"], &base));
    assert_exit(&agent.run(&["sync"]), 0);
    let edited = std::fs::read_to_string(&beta).expect("beta's vhost");
    assert!(edited.ends_with("# edited\n"), "not edited: {edited}");
    let path = "/etc/apache2/sites-enabled/rolecall-beta.conf";
    let memo = agent.state_json("render-memo.json").expect("the memo");
    let units = memo["units"].as_object().expect("units").values();
    let files = units.flat_map(|u| u["files"].as_array().expect("files").iter());
    let remembered: Vec<_> = files.filter(|f| f["file"]["path"] == *path).collect();
    assert_eq!(remembered.len(), 1, "{path} in the memo: {memo:#}");
    assert!(
        remembered[0]["stamp"].is_null(),
        "the edited vhost was stamped: {memo:#}"
    );

    let map = web_map(2, &["alpha", "beta"], &base).replace("www.alpha.", "w2.alpha.");
    agent.write_map(&map);
    assert_exit(&agent.run(&["sync"]), 0);
    let restored = std::fs::read_to_string(&beta).expect("beta's vhost");
    assert!(
        !restored.contains("# edited"),
        "the edit stayed: {restored}"
    );
}

/// A `[[smoke]]` test that appends `# edited` to `file` behind the agent, the first time
/// only. The edit's ctime must be a clock tick older than the commit's clock for the commit
/// to read the file back at all (a younger file is left unstamped unread): the test waits
/// 50 ms after it.
fn smoke_editing_once(agent: &Agent, file: &std::path::Path) -> String {
    let once = agent.dir.path().join("edited");
    let edit = format!(
        r##"sh -c 'test -e {once} || {{ printf "# edited\n" >> {file}; touch {once}; sleep 0.05; }}'"##,
        once = once.display(),
        file = file.display()
    );
    format!("[[smoke]]\nkind = \"command\"\nname = \"edit behind\"\ncommand = {edit:?}\ntimeout = \"10s\"\n")
}

/// Change one letter of `path` to upper case and put its mtime back: what a hand edit that
/// wants to go unseen by size and mtime does. Only the ctime tells.
fn edit_keeping_size_and_mtime(path: &std::path::Path) {
    let meta = std::fs::metadata(path).expect("the file");
    let mut bytes = std::fs::read(path).expect("the file");
    let at = bytes
        .iter()
        .position(u8::is_ascii_lowercase)
        .expect("a letter");
    bytes[at] = bytes[at].to_ascii_uppercase();
    std::fs::write(path, &bytes).expect("editing");
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("the file");
    let mtime = meta.modified().expect("mtime");
    file.set_modified(mtime).expect("putting the mtime back");
    let now = file.metadata().expect("the file");
    assert_eq!((now.len(), now.modified().ok()), (meta.len(), Some(mtime)));
}

/// The generated 3,000-host fleet (over 256 KiB: its cache is written on a thread of its
/// own) at `generation`, with product p0's master `db-0-0`, or `db-0-1` when `moved`.
fn large_map(generation: u64, moved: bool) -> String {
    let map = crate::support::fleet::fleet(3000, 60).replacen(
        "generation = 1",
        &format!("generation = {generation}"),
        1,
    );
    assert!(map.len() > 256 * 1024, "the map must take the thread");
    match moved {
        false => map,
        true => map.replace(
            "master = \"db-0-0\"\nreplicas = [\"db-0-1\"",
            "master = \"db-0-1\"\nreplicas = [\"db-0-0\"",
        ),
    }
}

/// After a sync of `map`: the cache holds exactly it, p0's vhost has its master, and the
/// records and the memo are there.
fn assert_applied(agent: &crate::fixture::Agent, map: &str, moved: bool, what: &str) {
    let state = agent.state();
    let cached = std::fs::read(state.join("map.toml")).expect("the cached map");
    assert!(
        cached == map.as_bytes(),
        "{what}: the cache holds another map"
    );
    let json = |name: &str| {
        (agent.state_json(name)).unwrap_or_else(|| panic!("{what}: {name} missing or not JSON"))
    };
    let meta = json("map.meta.json");
    assert_eq!(
        meta["sha256"],
        rolecall::text::sha256_hex(map.as_bytes()),
        "{what}"
    );
    let vhost = "/etc/apache2/sites-enabled/rolecall-p0.conf";
    let records = json("managed.json");
    assert!(records.get(vhost).is_some(), "{what}: no record of {vhost}");
    assert!(
        state.join("render-memo.json").is_file(),
        "{what}: no render memo"
    );
    let master = if moved { "10.0.0.1" } else { "10.0.0.0" };
    let text = std::fs::read_to_string(agent.path(vhost)).expect("p0's vhost");
    assert!(
        text.contains(&format!("ROLECALL_DB_MASTER {master}\n")),
        "{what}: p0's vhost does not follow the map"
    );
}

/// A large map's last-good cache is written on a thread of its own, beside the records and
/// the render memo: after each sync it holds exactly the map applied (bytes and SHA-256 in
/// its metadata), and the records and memo are there too.
#[test]
fn issue13_a_large_maps_cache_is_written_beside_the_records() {
    let agent = crate::fixture::Agent::new(crate::fixture::Setup::new("web-0", "10.0.0.80"));
    for (generation, moved) in [(1, false), (2, true)] {
        let map = large_map(generation, moved);
        agent.write_map(&map);
        assert_exit(&agent.run(&["sync", "--files-only"]), 0);
        assert_applied(&agent, &map, moved, &format!("generation {generation}"));
    }
}

/// With one task allowed, every thread a large map's sync would start is refused: tokio's
/// blocking pool for the `file://` read (the file is read on the one thread), stage 4's
/// reads done ahead beside the load (the catalog, the memo, its files' `lstat`s),
/// validation beside resolution, the two halves of the `lstat`s, the commit's records, memo and cache
/// beside the settled record, the status beside the counters. The work is done on the one
/// thread: the same files, records and cache.
#[test]
fn issue13_a_large_map_syncs_the_same_when_no_thread_may_start() {
    let agent = crate::fixture::Agent::new(crate::fixture::Setup::new("web-0", "10.0.0.80"));
    let limit = crate::support::cgroup::PidsCgroup::new(1);
    for (generation, moved) in [(1, false), (2, true)] {
        let map = large_map(generation, moved);
        agent.write_map(&map);
        assert_exit(&limit.output(&agent.command(&["sync", "--files-only"])), 0);
        assert_applied(&agent, &map, moved, &format!("generation {generation}"));
    }
    assert!(
        limit.refused() >= 6,
        "the limit refused {} threads: the fallbacks were not exercised",
        limit.refused()
    );
}

/// Killed at moments spread over whole syncs of a large map (loading, rendering, writing,
/// and the commit with the cache on its own thread), the agent leaves what the next sync
/// finishes: it converges on the map, its cache holds exactly that map, and no journal or
/// temp file is left.
#[test]
fn issue13_kill_9_while_a_large_map_is_applied_and_cached_is_finished_next_time() {
    let agent = crate::fixture::Agent::new(crate::fixture::Setup::new("web-0", "10.0.0.80"));
    agent.write_map(&large_map(1, false));
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    // How long a sync like the killed ones takes: one master moved (a first apply, which
    // writes every file, takes longer, and kills spread over it miss the shorter syncs).
    agent.write_map(&large_map(2, true));
    let started = std::time::Instant::now();
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let span = started.elapsed();
    let mut killed = 0;
    for round in 0..12u32 {
        let moved = round % 2 == 1;
        let map = large_map(u64::from(round) + 3, moved);
        agent.write_map(&map);
        let mut child = agent
            .command(&["sync", "--files-only"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sync");
        // The kill's moment, from the start to just past the end of a sync: not a wait.
        std::thread::sleep(span.mul_f64(f64::from(round) / 10.0));
        let _ = child.kill();
        killed += usize::from(child.wait().expect("wait").code().is_none());
        let what = format!("killed in round {round}");
        assert_exit(&agent.run(&["sync", "--files-only"]), 0);
        assert_applied(&agent, &map, moved, &what);
        assert!(
            !agent.state().join("journal").exists(),
            "{what}: journal left"
        );
        let temps = crate::faults::temp_files(&agent.root);
        assert!(temps.is_empty(), "{what}: temp files left: {temps:?}");
    }
    assert!(
        killed >= 6,
        "only {killed} of 12 syncs were killed before they ended"
    );
}

/// A catalog that does not load fails a large map's sync as it fails a small one's, though
/// the large map's is read on the thread beside the load: exit 2 naming the file and the
/// key, no file changed, and the map not taken as the last good one. Mended, the next sync
/// applies the map.
#[test]
fn issue13_a_broken_catalog_read_ahead_fails_the_sync_and_changes_nothing() {
    let agent = Agent::new(Setup::new("web-0", "10.0.0.80"));
    let first = large_map(1, false);
    agent.write_map(&first);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let web = agent.catalog.join("web.toml");
    let shipped = std::fs::read_to_string(&web).expect("web.toml");
    std::fs::write(&web, format!("no_such_key = 1\n{shipped}")).expect("breaking web.toml");
    let etc = || crate::fixture::tree(&agent.path("/etc"));
    let before = etc();

    let moved = large_map(2, true);
    agent.write_map(&moved);
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 2);
    crate::fixture::assert_mentions(&describe(&out), &["web.toml", "no_such_key"]);
    assert_eq!(etc(), before, "a file changed");
    assert_applied(&agent, &first, false, "the broken catalog");

    std::fs::write(&web, shipped).expect("mending web.toml");
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    assert_applied(&agent, &moved, true, "the mended catalog");
}

/// A host the large map does not name ends its reconcile before the render, with stage 4's
/// reads started ahead (they wait for the thread when dropped): it reports that it waits
/// for its role, writes no file, and once the map names it, converges.
#[test]
fn issue13_a_host_a_large_map_does_not_name_waits_and_later_converges() {
    let agent = Agent::new(Setup::new("web-new", "10.250.0.9"));
    let map = large_map(1, false);
    agent.write_map(&map);
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    crate::fixture::assert_mentions(&describe(&out), &["waiting for role"]);
    assert!(crate::fixture::tree(&agent.path("/etc")).is_empty());

    let named = large_map(2, false).replacen(
        "[hosts.web-0]",
        "[hosts.web-new]\naddress = \"10.250.0.9\"\naz = \"a\"\nroles = [\"web\"]\nproducts = [\"p0\"]\n\n[hosts.web-0]",
        1,
    );
    agent.write_map(&named);
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    assert!(agent.vhost("p0").is_file(), "{}", describe(&out));
}

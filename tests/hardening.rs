//! Issue 15: promises attacked through the release binary's code paths: a reconcile that
//! cannot journal writes nothing, errors and status stay small whatever the map, an
//! oversize map is an invalid map (not an unreachable one), and map strings printed by
//! `map diff` cannot drive the terminal or forge a line.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fixture::{
    assert_exit, assert_mentions, assert_stderr, describe, docroots, stdout, tree, web_map, Agent,
    Daemon, Setup,
};
use crate::reconcile::web_agent;
use crate::support::acceptor::Acceptor;
use crate::support::apache::Apache;
use crate::support::hung_fs::HungFs;
use crate::support::tmpfs::Tmpfs;
use crate::support::wait_until;

/// A `--files-only` web agent converged on product `alpha`.
fn converged_agent() -> Agent {
    let agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    let base = agent.path("/var/www");
    agent.write_map(&web_map(1, &["alpha"], &base));
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    agent
}

/// Issue 15 #2: with the state directory full, the journal cannot be written, and a
/// reconcile that cannot journal must not write: exit 1, files as they were.
#[test]
fn issue15_a_full_state_directory_stops_the_reconcile_before_its_first_write() {
    let agent = converged_agent();
    let etc = agent.path("/etc");
    let before = tree(&etc);
    let state = agent.state();
    let full = Tmpfs::over(&state, "1m");
    // The settled record goes as the journal is written: gone first, its room is not
    // there for the journal to take.
    std::fs::remove_file(state.join("settled.json")).expect("settled record");
    full.fill();
    let base = agent.path("/var/www");
    agent.write_map(&web_map(2, &["alpha", "beta"], &base));
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("journal") || describe(&out).contains("journal"),
        "the failure does not name the journal: {}",
        describe(&out)
    );
    assert_eq!(tree(&etc), before, "files were written without a journal");
    drop(full);
    // With room again, the same map applies.
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    assert!(agent.vhost("beta").exists());
}

/// A map with one line of `len` bytes that toml refuses (an unterminated string).
fn huge_one_line_map(len: usize) -> String {
    format!("schema = 1\ngeneration = 2\nx = \"{}", "A".repeat(len))
}

/// Issue 15 #5: a TOML error carries a bounded excerpt, not the whole line twice: stderr,
/// the status record and `map validate` stay small.
#[test]
fn issue15_errors_about_a_huge_map_are_bounded() {
    let agent = converged_agent();
    // Under the 16 MiB limit, so sync and `map validate` parse it.
    agent.write_map(&huge_one_line_map(15_000_000));
    let huge = agent.dir.path().join("huge.toml");
    std::fs::write(&huge, huge_one_line_map(50_000_000)).expect("map");
    let out = agent.run(&["sync", "--files-only"]);
    assert!(
        out.stdout.len() + out.stderr.len() < 16_384,
        "sync printed {} bytes",
        out.stdout.len() + out.stderr.len()
    );
    let status = std::fs::metadata(agent.state().join("status.json")).expect("status");
    assert!(
        status.len() < 16_384,
        "status.json is {} bytes",
        status.len()
    );

    assert_exit(&out, 2);
    let out = agent.run(&["map", "validate", &agent.map.display().to_string()]);
    assert_exit(&out, 2);
    let text = describe(&out);
    assert!(
        text.len() < 4096,
        "map validate printed {} bytes",
        text.len()
    );
    assert!(text.contains("line 3"), "no line number: {text}");
    // Over the limit, `map validate` says so as the agent does, unread.
    let out = agent.run(&["map", "validate", &huge.display().to_string()]);
    assert_stderr(&out, 2, &["50000031 bytes, more than the limit"]);
    assert!(describe(&out).len() < 4096, "{}", describe(&out).len());
}

/// Issue 15 #6: a map over the 16 MiB limit is an invalid map: exit 2 and `check`
/// CRITICAL, the cached map kept; not "unreachable" (exit 0 from the cache).
#[test]
fn issue15_an_oversize_map_is_invalid_not_unreachable() {
    let agent = converged_agent();
    let etc = agent.path("/etc");
    let before = tree(&etc);
    let base = agent.path("/var/www");
    let mut text = web_map(2, &["alpha", "beta"], &base);
    text.push_str(&format!("# {}\n", "x".repeat(17 * 1024 * 1024)));
    agent.write_map(&text);
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 2);
    assert!(
        describe(&out).contains("limit"),
        "the size limit is not named: {}",
        describe(&out)
    );
    assert_eq!(tree(&etc), before, "the oversize map changed files");
    let check = agent.run(&["check"]);
    assert_eq!(check.status.code(), Some(2), "{}", describe(&check));

    // Without a cache to fall back to: still bad input.
    let fresh = Agent::new(Setup::new("web-1", "127.0.0.1"));
    fresh.write_map(&text);
    assert_exit(&fresh.run(&["sync", "--files-only"]), 2);
}

/// Issue 15 #7: `map diff` prints map strings escaped: an `az` holding an ANSI sequence
/// and a newline cannot clear the screen or forge a line.
#[test]
fn issue15_map_diff_escapes_terminal_sequences_and_newlines() {
    let agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    let base = agent.path("/var/www");
    let old = web_map(1, &["alpha"], &base);
    let new = web_map(2, &["alpha"], &base).replace(
        "az = \"test-b\"",
        "az = \"test-b\\u001b[2J\\nhost evil-1: added as master\"",
    );
    let dir = agent.dir.path();
    std::fs::write(dir.join("old.toml"), old).expect("old");
    std::fs::write(dir.join("new.toml"), new).expect("new");
    let out = agent.run(&[
        "map",
        "diff",
        &dir.join("old.toml").display().to_string(),
        &dir.join("new.toml").display().to_string(),
    ]);
    let text = stdout(&out);
    assert!(!text.contains('\u{1b}'), "raw ESC printed: {text:?}");
    assert!(
        !text.lines().any(|l| l.starts_with("host evil-1")),
        "a map string forged a line: {text}"
    );
    assert!(text.contains("\\u{1b}[2J\\nhost evil-1"), "{text}");
}

/// `agent`'s map moved to `rolemap.toml` on `fs`, fetched with a 1 s timeout; the map of
/// generation 1 for `alpha` written there.
fn map_on_mount(agent: &mut Agent, fs: &HungFs) {
    agent.setup.map_url = Some(format!("file://{}", fs.path("rolemap.toml").display()));
    agent.setup.map_lines.push("timeout = \"1s\"".into());
    agent.write_config();
    let base = docroots(agent, &["alpha", "beta"]);
    fs.write("rolemap.toml", web_map(1, &["alpha"], &base).as_bytes());
}

/// The threads of process `pid` waiting for the FUSE daemon's answer (their kernel stack
/// is in FUSE's request wait): reads of the hung mount still pending.
fn reads_waiting(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's tasks");
    tasks
        .flatten()
        .filter(|task| {
            let stack = std::fs::read_to_string(task.path().join("stack")).unwrap_or_default();
            stack.contains("request_wait_answer")
        })
        .count()
}

/// A map file on a mount that stopped answering: the fetch gives up after its timeout, the
/// sync goes on from the cached map and writes nothing, and the process exits though the
/// read still waits (a runtime dropped the plain way waits for its blocking threads without
/// end). Once the mount answers, the new map applies.
#[test]
fn a_sync_whose_map_read_hangs_gives_up_uses_the_cache_and_exits() {
    let fs = HungFs::mount();
    let mut agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    map_on_mount(&mut agent, &fs);
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    let etc = agent.path("/etc");
    let before = tree(&etc);
    let base = agent.path("/var/www");
    fs.write(
        "rolemap.toml",
        web_map(2, &["alpha", "beta"], &base).as_bytes(),
    );
    fs.hang();
    let mut sync = agent
        .command(&["sync", "--files-only"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the sync");
    let exited = wait_until(Duration::from_secs(30), || {
        !matches!(sync.try_wait(), Ok(None))
    });
    if !exited {
        let _ = sync.kill();
    }
    let out = sync.wait_with_output().expect("the sync's output");
    assert!(
        exited,
        "the sync did not exit while its map's read hung: {}",
        describe(&out)
    );
    assert_exit(&out, 0);
    assert_mentions(
        &describe(&out),
        &["no answer within 1000 ms", "cached map", "generation 1"],
    );
    assert_eq!(tree(&etc), before, "files changed without a new map");
    fs.release();
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    assert!(agent.vhost("beta").exists(), "the map was not applied");
}

/// A daemon polling a map on a mount that stopped answering waits on the one read it
/// started, poll after poll, instead of leaving a stuck thread behind at each; when the
/// mount answers again, the new map is applied.
#[test]
fn a_daemon_polling_a_hung_mount_keeps_one_read_waiting_and_recovers() {
    let fs = HungFs::mount();
    let (mut agent, _apache) = web_agent(Apache::start);
    map_on_mount(&mut agent, &fs);
    let base = agent.path("/var/www");
    let daemon = Daemon::start(&agent, &[]);
    let converged = wait_until(Duration::from_secs(30), || {
        daemon.log_count("outcome=Converged") >= 1
    });
    assert!(converged, "not converged: {}", daemon.log_tail());
    fs.hang();
    fs.write(
        "rolemap.toml",
        web_map(2, &["alpha", "beta"], &base).as_bytes(),
    );
    let polls = wait_until(Duration::from_secs(60), || {
        daemon.log_count("no answer within 1000 ms") >= 5
    });
    assert!(polls, "five polls did not time out: {}", daemon.log_tail());
    assert_eq!(
        reads_waiting(daemon.pid()),
        1,
        "after five polls of the hung mount: {}",
        daemon.log_tail()
    );
    fs.release();
    let applied = wait_until(Duration::from_secs(30), || agent.vhost("beta").exists());
    assert!(applied, "the map was not applied: {}", daemon.log_tail());
    assert_eq!(reads_waiting(daemon.pid()), 0, "a read still waits");
}

/// A map path naming a FIFO or a device is refused at once, unread: a FIFO without a
/// writer would hold the fetch until its timeout and `/dev/zero` would never end. A map
/// file over the 16 MiB limit is refused from its size, without being read: under a 4 GiB
/// address-space limit, an 8 GiB file read whole would fail as out of memory instead.
#[test]
fn a_map_path_that_is_no_regular_file_or_too_large_is_refused_unread() {
    let mut agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    let fifo = agent.dir.path().join("map.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
    agent.setup.map_lines.push("timeout = \"60s\"".into());
    for path in [fifo.as_path(), Path::new("/dev/zero")] {
        agent.setup.map_url = Some(format!("file://{}", path.display()));
        agent.write_config();
        let out = agent.run(&["sync", "--files-only"]);
        assert_exit(&out, 1);
        assert_mentions(
            &describe(&out),
            &[&format!("{} is not a regular file", path.display())],
        );
    }
    let huge = agent.dir.path().join("huge.toml");
    let file = std::fs::File::create(&huge).expect("huge map");
    file.set_len(8 << 30).expect("a sparse 8 GiB map");
    agent.setup.map_url = Some(format!("file://{}", huge.display()));
    agent.write_config();
    let out = within_4_gib(&agent)
        .output()
        .expect("running rolecall under prlimit");
    assert_exit(&out, 2);
    assert_mentions(&describe(&out), &["8589934592 bytes, more than the limit"]);
    assert!(!agent.path("/etc").exists(), "files were written");
}

/// `sync --files-only` of `agent` with its address space limited to 4 GiB (`prlimit`): a map
/// read whole that should not be fails there as out of memory.
fn within_4_gib(agent: &Agent) -> Command {
    let mut cmd = crate::fixture::binary_within_4_gib();
    cmd.args(["--config".as_ref(), agent.config.as_os_str()])
        .args(["--root".as_ref(), agent.root.as_os_str()])
        .args(["sync", "--files-only"]);
    cmd
}

/// An S3-compatible server whose `GetObject` body declares no length (chunked) and never
/// ends: the map is read no further than the 16 MiB limit, exit 2, instead of growing until
/// memory runs out.
#[test]
fn a_map_body_without_a_length_is_read_no_further_than_the_limit() {
    let endless = Acceptor::start("binding the endless S3 server", endless_body);
    let mut agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    agent.setup.map_url = Some("s3://fleet/rolemap.toml".into());
    agent.write_config();
    let endpoint = format!("http://127.0.0.1:{}", endless.port());
    let out = within_4_gib(&agent)
        .env("AWS_ENDPOINT_URL_S3", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("running rolecall under prlimit");
    assert_exit(&out, 2);
    assert_mentions(
        &describe(&out),
        &["s3://fleet/rolemap.toml", "more than the limit"],
    );
    assert!(!agent.path("/etc").exists(), "files were written");
}

/// Answers the request on `stream` with a chunked body of comment lines, until the peer
/// goes away.
fn endless_body(stream: TcpStream) {
    let mut reader = BufReader::new(&stream);
    if !matches!(crate::support::http::read_request(&mut reader), Ok(Some(_))) {
        return;
    }
    let lines = "# a map without end\n".repeat(4096);
    let chunk = format!("{:x}\r\n{lines}\r\n", lines.len());
    let mut writer = &stream;
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: \"endless\"\r\n\r\n";
    let mut sent = writer.write_all(head.as_bytes());
    while sent.is_ok() {
        sent = writer.write_all(chunk.as_bytes());
    }
}

//! Issue 15: promises attacked through the release binary's code paths: a reconcile that
//! cannot journal writes nothing, errors and status stay small whatever the map, an
//! oversize map is an invalid map (not an unreachable one), and map strings printed by
//! `map diff` cannot drive the terminal or forge a line.

use crate::fixture::{assert_exit, describe, stdout, tree, web_map, Agent, Setup};
use crate::support::tmpfs::Tmpfs;

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
    // Under the 16 MiB limit, so sync parses it; `map validate` parses any size.
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
    let out = agent.run(&["map", "validate", &huge.display().to_string()]);
    assert_exit(&out, 2);
    let text = describe(&out);
    assert!(
        text.len() < 4096,
        "map validate printed {} bytes",
        text.len()
    );
    assert!(text.contains("line 3"), "no line number: {text}");
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

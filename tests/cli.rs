//! Every exit code of `sync`, `plan`, `map validate` and `check` through the real binary
//! (SPEC §3). The host is a memcached host whose smoke test connects to a listener the
//! test holds (or to a closed port, to make it fail).

use std::net::TcpListener;
use std::path::Path;

use crate::fixture::{
    assert_exit, assert_stderr, assert_stdout, memcached_map, replace_in, stdout, Agent, Setup,
};

/// A memcached agent whose smoke test targets `port`, with a 2 s smoke deadline.
fn agent(port: u16) -> Agent {
    let agent = Agent::new(
        Setup::new("cache-1", "10.0.0.5")
            .var(&format!("memcached_port = {port}"))
            .service("memcached", "restart = \"true\""),
    );
    let role = agent.catalog.join("memcached.toml");
    let text = std::fs::read_to_string(&role).expect("memcached.toml");
    std::fs::write(&role, text.replace("timeout = \"10s\"", "timeout = \"2s\""))
        .expect("memcached.toml");
    agent.write_map(&memcached_map(1, "cli"));
    agent
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn map_validate_exits_0_for_valid_and_2_with_every_path_for_invalid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rolemap.toml");
    let agent = agent(closed_port());
    assert_exit(
        &agent.run(&["map", "validate", example.to_str().expect("utf-8")]),
        0,
    );
    let bad = agent.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        memcached_map(1, "cli")
            .replace("10.0.0.5", "10.0.0.5\\n")
            .replace(
                "roles = [\"memcached\"]",
                "roles = [\"memcached\"]\ncolour = \"red\"",
            ),
    )
    .expect("bad map");
    let out = agent.run(&["map", "validate", bad.to_str().expect("utf-8")]);
    assert_stdout(
        &out,
        2,
        &["hosts.cache-1.address", "hosts.cache-1.colour: unknown key"],
    );
}

#[test]
fn sync_exits_0_when_converged_1_when_rolled_back_2_on_bad_input() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ok = agent(listener.local_addr().expect("addr").port());
    assert_exit(&ok.run(&["sync"]), 0);
    assert!(ok.path("/etc/memcached.conf").exists());

    let failing = agent(closed_port());
    assert_stdout(&failing.run(&["sync"]), 1, &["rolled back"]);
    assert!(
        !failing.path("/etc/memcached.conf").exists(),
        "a rolled-back file stayed"
    );

    ok.write_map(&memcached_map(2, "cli").replace("schema = 1", "schema = 9"));
    assert_stdout(&ok.run(&["sync"]), 2, &["schema"]);
}

#[test]
fn a_bad_agent_config_exits_2_naming_the_key() {
    let agent = agent(closed_port());
    replace_in(
        &agent.config,
        "[vars]",
        "[vars]\n[surprise]\nkey = 1\n[vars2]",
    );
    assert_stderr(&agent.run(&["sync"]), 2, &["surprise"]);
}

#[test]
fn plan_exits_3_with_pending_changes_0_without_and_2_on_bad_input() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let agent = agent(listener.local_addr().expect("addr").port());
    assert_stdout(
        &agent.run(&["plan", "--color", "never"]),
        3,
        &[
            "+++ b/etc/memcached.conf",
            "would check and reload service memcached",
            "would run smoke test memcached tcp",
        ],
    );
    assert!(
        !agent.path("/etc/memcached.conf").exists(),
        "plan wrote a file"
    );
    assert_exit(&agent.run(&["sync"]), 0);
    assert_exit(&agent.run(&["plan"]), 0);
    agent.write_map("schema = 1\ngeneration = 2\n[hosts.cache-1]\naddress = \"10.0.0.5\"\naz = \"a\"\nroles = [\"memcached\"]\nproducts = [\"nope\"]\n");
    assert_exit(&agent.run(&["plan"]), 2);
}

#[test]
fn check_returns_each_plugin_state() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let agent = agent(listener.local_addr().expect("addr").port());
    let out = agent.run(&["check"]);
    assert_stdout(&out, 3, &["ROLECALL UNKNOWN - "]);
    assert!(stdout(&out).starts_with("ROLECALL UNKNOWN - "));

    assert_exit(&agent.run(&["sync"]), 0);
    let out = agent.run(&["check"]);
    assert_exit(&out, 0);
    let line = stdout(&out);
    assert!(
        line.starts_with("ROLECALL OK - converged to generation 1") && line.contains(" | age="),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);

    std::fs::remove_file(&agent.map).expect("map gone");
    assert_exit(&agent.run(&["sync"]), 0);
    assert_stdout(&agent.run(&["check"]), 1, &["cached map"]);

    let failing = crate::cli::agent(closed_port());
    assert_exit(&failing.run(&["sync"]), 1);
    let out = failing.run(&["check"]);
    assert_stdout(&out, 2, &["ROLECALL CRITICAL - rolled back"]);
    assert!(stdout(&out).starts_with("ROLECALL CRITICAL - rolled back"));
}

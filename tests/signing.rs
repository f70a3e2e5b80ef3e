//! Signed maps on the agent side (issue 5): with `map.verify_key` set, only a map whose
//! detached signature verifies is applied; a missing, wrong-key or tampered map is refused,
//! the last good one is kept, and the status says why. Keys and signatures are made by the
//! real `rolecall map keygen` and `rolecall map publish --sign-key`.

use std::net::TcpListener;
use std::path::Path;

use crate::fixture::{assert_exit, describe, memcached_map, Agent, Setup};

fn publish(agent: &Agent, text: &str, key: Option<&Path>) {
    let draft = agent.dir.path().join("draft.toml");
    std::fs::write(&draft, text).expect("draft");
    let to = format!(
        "file://{}",
        agent.dir.path().join("published.toml").display()
    );
    let mut args = vec![
        "map".to_string(),
        "publish".into(),
        draft.display().to_string(),
        "--to".into(),
        to,
    ];
    if let Some(k) = key {
        args.extend(["--sign-key".to_string(), k.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_exit(&agent.run(&args), 0);
}

fn keygen(agent: &Agent, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let prefix = agent.dir.path().join(name);
    assert_exit(
        &agent.run(&["map", "keygen", "--out", prefix.to_str().expect("utf-8")]),
        0,
    );
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// `sync` exits `code` and the status message it records says `says`.
#[track_caller]
fn sync_records(agent: &Agent, code: i32, says: &str) {
    let out = agent.run(&["sync"]);
    assert_exit(&out, code);
    let status = agent.status();
    assert!(
        status["message"].as_str().is_some_and(|m| m.contains(says)),
        "no {says:?} in the status {status:#}\n{}",
        describe(&out)
    );
}

#[test]
fn only_maps_with_a_valid_signature_are_applied() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut setup = Setup::new("cache-1", "10.0.0.5")
        .var(&format!("memcached_port = {port}"))
        .service("memcached", "restart = \"true\"");
    let mut agent = Agent::new(setup.clone());
    let (key, public) = keygen(&agent, "fleet");
    setup.map_url = Some(format!(
        "file://{}",
        agent.dir.path().join("published.toml").display()
    ));
    setup
        .map_lines
        .push(format!("verify_key = \"{}\"", public.display()));
    agent.setup = setup;
    agent.write_config();

    publish(&agent, &memcached_map(1, "64"), Some(&key));
    assert_exit(&agent.run(&["sync"]), 0);
    let applied = std::fs::read(agent.path("/etc/memcached.conf")).expect("applied");

    // Tampered: one byte of the published map changed after signing.
    let published = agent.dir.path().join("published.toml");
    let text = std::fs::read_to_string(&published).expect("published");
    std::fs::write(&published, text.replace("# 64", "# 65")).expect("tamper");
    sync_records(&agent, 2, "signature does not match");

    // Missing: a map published without a signature.
    std::fs::remove_file(agent.dir.path().join("published.toml.sig")).expect("remove sig");
    sync_records(&agent, 2, "no signature");

    // Wrong key: signed by a key the agent does not trust.
    let (other, _) = keygen(&agent, "intruder");
    publish(&agent, &memcached_map(5, "64"), Some(&other));
    sync_records(&agent, 2, "signature does not match");
    assert_eq!(
        std::fs::read(agent.path("/etc/memcached.conf")).expect("kept"),
        applied,
        "a refused map changed the host"
    );

    publish(
        &agent,
        &memcached_map(6, "64").replace("az = \"a\"", "az = \"b\""),
        Some(&key),
    );
    sync_records(&agent, 0, "converged to generation 7");
}

//! Monitoring output (issue 6): the Prometheus textfile parses with a real text-format
//! parser and carries the documented metrics; man pages and completions are generated.

use std::net::TcpListener;

use crate::fixture::{assert_exit, memcached_map, replace_in, Agent, Setup};

fn metrics(agent: &Agent) -> prometheus_parse::Scrape {
    let text =
        std::fs::read_to_string(agent.path("/var/lib/prometheus/node-exporter/rolecall.prom"))
            .expect("metrics file");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("{name} missing"));
    match sample.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: unexpected {other:?}"),
    }
}

fn reconciles(scrape: &prometheus_parse::Scrape, outcome: &str) -> f64 {
    value(
        scrape,
        "rolecall_reconciles_total",
        Some(("outcome", outcome)),
    )
}

#[test]
fn metrics_file_parses_and_counts_reconciles_and_rollbacks() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let agent = Agent::new(
        Setup::new("cache-1", "10.0.0.5")
            .var(&format!("memcached_port = {port}"))
            .service("memcached", "restart = \"true\""),
    );
    let text = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        format!("{text}\n[status]\nmetrics_dir = \"/var/lib/prometheus/node-exporter\"\n"),
    )
    .expect("config");
    agent.write_map(&memcached_map(3, "monitoring"));
    assert_exit(&agent.run(&["sync"]), 0);
    let scrape = metrics(&agent);
    assert_eq!(value(&scrape, "rolecall_map_generation", None), 3.0);
    assert_eq!(reconciles(&scrape, "converged"), 1.0);
    assert_eq!(value(&scrape, "rolecall_rollbacks_total", None), 0.0);
    assert!(value(&scrape, "rolecall_last_reconcile_timestamp_seconds", None) > 1.0e9);
    assert!(value(&scrape, "rolecall_reconcile_duration_seconds", None) >= 0.0);

    // A rollback: the smoke test's port closes and the config changes.
    drop(listener);
    replace_in(
        &agent.catalog.join("memcached.toml"),
        "timeout = \"10s\"",
        "timeout = \"1s\"",
    );
    replace_in(&agent.config, "[vars]", "[vars]\nmemcached_mb = 256");
    assert_exit(&agent.run(&["sync"]), 1);
    let scrape = metrics(&agent);
    assert_eq!(value(&scrape, "rolecall_rollbacks_total", None), 1.0);
    assert_eq!(value(&scrape, "rolecall_smoke_failures_total", None), 1.0);
    assert_eq!(reconciles(&scrape, "rolled_back"), 1.0);
}

#[test]
fn man_pages_and_completions_are_generated_from_the_cli() {
    let dir = tempfile::tempdir().expect("dir");
    let generate = |what: &str, sub: &str| {
        let out = std::process::Command::new(crate::fixture::binary())
            .args([what, "--out-dir"])
            .arg(dir.path().join(sub))
            .output()
            .expect("running rolecall");
        assert_exit(&out, 0);
    };
    generate("manpage", "man");
    let page = std::fs::read_to_string(dir.path().join("man/rolecall.1")).expect("rolecall.1");
    assert!(
        page.contains(".TH rolecall 1") && page.contains("sync"),
        "{page}"
    );
    assert!(dir.path().join("man/rolecall-sync.1").exists());
    generate("completions", "c");
    for f in ["rolecall.bash", "_rolecall", "rolecall.fish"] {
        let text = std::fs::read_to_string(dir.path().join("c").join(f)).expect("completion file");
        assert!(text.contains("promote"), "{f} lacks subcommands");
    }
}

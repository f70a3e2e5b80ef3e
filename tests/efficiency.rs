//! Issue 13: a publish that does not change what a host renders writes nothing and reloads
//! nothing on that host (no fleet-wide reload storm), against the real Apache.

use crate::fixture::{assert_exit, identity_of, web_map};
use crate::reconcile::synced_web_agent;

#[test]
fn issue13_a_map_that_only_adds_an_unrelated_host_changes_nothing_on_a_web_host() {
    let (agent, apache, base) = synced_web_agent(&["alpha", "beta"]);
    let generation = apache.generation();
    let vhosts = ["alpha", "beta"]
        .map(|p| agent.path(&format!("/etc/apache2/sites-enabled/rolecall-{p}.conf")));
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

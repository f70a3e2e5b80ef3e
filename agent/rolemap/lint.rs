//! `map lint` (SPEC §3): operational advice about a valid map, each warning with the TOML
//! path it is about: availability-zone spread and single points of failure. Pure.
//!
//! Decisions: a product with one web host counts as "all web hosts in one AZ"; products
//! without a `database` table get no database warnings (static sites); AZ balance is judged
//! per role across the AZs that appear anywhere in the map, and a role whose hosts differ by
//! more than one between the busiest and the emptiest AZ is reported once. Products sharing
//! a database server (issue 14) are linted each with its own path, as any other product.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::types::{Database, RoleMap};
use super::validate::{key, q};

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Every web host of a product is in one availability zone.
    WebSingleAz,
    /// A master's only replica is in the master's availability zone.
    ReplicaSameAz,
    /// A product's database has no replica.
    NoReplica,
    /// A product's database has no backup host.
    NoBackup,
    /// A host has no role.
    NoRole,
    /// A role's hosts are spread over the AZs unevenly (by more than one).
    AzImbalance,
    /// Products sharing a master have different replica chains: a failover of that server
    /// moves them all and needs a replica common to each (issue 14).
    SharedChainDiffers,
    /// A product account's id is in a range the system, systemd or the kernel use.
    AccountId,
}

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// What kind of problem.
    pub kind: Kind,
    /// TOML path it is about, e.g. `products.videos.database.replicas`.
    pub path: String,
    /// What is wrong and why it matters.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every warning for `map` (a validated map), in path order within each kind.
pub fn lint(map: &RoleMap) -> Vec<Warning> {
    let mut out = Vec::new();
    for (name, product) in &map.products {
        web_spread(map, name, &mut out);
        if let Some(db) = &product.database {
            database(map, name, db, &mut out);
        }
    }
    for (id, host) in &map.hosts {
        if host.roles.is_empty() {
            out.push(warning(
                Kind::NoRole,
                format!("hosts.{}.roles", key(id)),
                format!("host {} has no role; it configures nothing", q(id)),
            ));
        }
    }
    az_balance(map, &mut out);
    shared_chains(map, &mut out);
    out.extend(super::accounts::lint(map));
    out
}

fn warning(kind: Kind, path: String, message: String) -> Warning {
    Warning {
        kind,
        path,
        message,
    }
}

fn az_of<'a>(map: &'a RoleMap, id: &str) -> &'a str {
    map.hosts.get(id).map_or("", |h| h.az.as_str())
}

fn web_spread(map: &RoleMap, name: &str, out: &mut Vec<Warning>) {
    let web: Vec<&str> = map
        .hosts
        .values()
        .filter(|h| h.products.iter().any(|p| p == name))
        .filter(|h| h.roles.iter().any(|r| r == super::roles::WEB))
        .map(|h| h.az.as_str())
        .collect();
    let count = web.len();
    let azs: BTreeSet<&str> = web.into_iter().collect();
    if let (1, Some(az)) = (azs.len(), azs.first()) {
        out.push(warning(
            Kind::WebSingleAz,
            format!("products.{}", key(name)),
            format!(
                "all {count} web host(s) of product {} are in {}; losing that zone takes the site down",
                q(name),
                q(az)
            ),
        ));
    }
}

fn database(map: &RoleMap, name: &str, db: &Database, out: &mut Vec<Warning>) {
    let at = format!("products.{}.database", key(name));
    match db.replicas.as_slice() {
        [] => out.push(warning(
            Kind::NoReplica,
            format!("{at}.replicas"),
            format!(
                "product {} has no database replica; there is nothing to promote if master {} fails",
                q(name),
                q(&db.master)
            ),
        )),
        [only] if az_of(map, only) == az_of(map, &db.master) => out.push(warning(
            Kind::ReplicaSameAz,
            format!("{at}.replicas[0]"),
            format!(
                "the only replica {} is in {}, the zone of master {}; one zone outage loses both",
                q(only),
                q(az_of(map, only)),
                q(&db.master)
            ),
        )),
        _ => {}
    }
    if db.backup.is_none() {
        out.push(warning(
            Kind::NoBackup,
            format!("{at}.backup"),
            format!(
                "product {} has no backup host; its database is never dumped to S3",
                q(name)
            ),
        ));
    }
}

/// Products on one master are one server: `map promote` moves them together, to a replica
/// of every one of them. Each product whose chain differs from the first one's on that
/// master (by name) is reported.
fn shared_chains(map: &RoleMap, out: &mut Vec<Warning>) {
    let mut first: BTreeMap<&str, (&str, &Database)> = BTreeMap::new();
    for (name, product) in &map.products {
        let Some(db) = &product.database else {
            continue;
        };
        let Some((other, theirs)) = first.get(db.master.as_str()) else {
            first.insert(&db.master, (name, db));
            continue;
        };
        if theirs.replicas != db.replicas {
            out.push(warning(
                Kind::SharedChainDiffers,
                format!("products.{}.database.replicas", key(name)),
                format!(
                    "product {} shares master {} with product {} but not its replica chain; a failover of that server moves both and can only promote a replica of each",
                    q(name),
                    q(&db.master),
                    q(other)
                ),
            ));
        }
    }
}

fn az_balance(map: &RoleMap, out: &mut Vec<Warning>) {
    let zones: BTreeSet<&str> = map.hosts.values().map(|h| h.az.as_str()).collect();
    let mut counts: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for host in map.hosts.values() {
        for role in host.roles.iter() {
            let per_zone = counts
                .entry(role.as_str())
                .or_insert_with(|| zones.iter().map(|z| (*z, 0)).collect());
            *per_zone.entry(host.az.as_str()).or_default() += 1;
        }
    }
    for (role, per_zone) in counts {
        let most = per_zone.values().max().copied().unwrap_or(0);
        let least = per_zone.values().min().copied().unwrap_or(0);
        if most - least > 1 {
            let spread: Vec<String> = per_zone
                .iter()
                .map(|(z, n)| format!("{n} in {z}"))
                .collect();
            out.push(warning(
                Kind::AzImbalance,
                "hosts".to_string(),
                format!(
                    "role {} is unbalanced across zones ({}); they should differ by at most one",
                    q(role),
                    crate::text::printable(&spread.join(", "), crate::text::LINE_MAX)
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolemap::load;

    /// The tests' sample fleet lints clean: two web hosts in two zones, a master with a
    /// chain of two replicas and a backup, every role balanced over zones a and b.
    const CLEAN: &str = crate::rolemap::SAMPLE;

    fn lint_text(text: &str) -> Vec<Warning> {
        lint(&load(text.as_bytes()).expect("test map is valid"))
    }

    fn only(warnings: &[Warning], kind: Kind) -> Vec<&Warning> {
        warnings.iter().filter(|w| w.kind == kind).collect()
    }

    /// `text` gets exactly one warning of `kind`, at `path`, whose message contains each of
    /// `says`.
    fn assert_the_one(text: &str, kind: Kind, path: &str, says: &[&str]) {
        let warnings = lint_text(text);
        let found = only(&warnings, kind);
        assert_eq!(found.len(), 1, "{warnings:?}");
        assert_eq!(found[0].path, path);
        crate::text::assert_mentions(&found[0].message, says);
    }

    #[test]
    fn clean_map_has_no_warnings() {
        assert_eq!(lint_text(CLEAN), vec![]);
    }

    #[test]
    fn web_hosts_in_one_zone_are_reported() {
        let text = CLEAN.replace(
            "address = \"10.0.0.2\"\naz = \"b\"",
            "address = \"10.0.0.2\"\naz = \"a\"",
        );
        assert_the_one(
            &text,
            Kind::WebSingleAz,
            "products.videos",
            &["all 2 web host(s)"],
        );
    }

    #[test]
    fn only_replica_in_master_zone_is_reported() {
        // db-3 is in zone a, as the master.
        let text = CLEAN.replace("replicas = [\"db-2\", \"db-3\"]", "replicas = [\"db-3\"]");
        let path = "products.videos.database.replicas[0]";
        assert_the_one(&text, Kind::ReplicaSameAz, path, &[]);
    }

    #[test]
    fn missing_replica_and_backup_are_reported() {
        let text = CLEAN
            .replace("replicas = [\"db-2\", \"db-3\"]\n", "")
            .replace("backup = \"db-4\"\n", "");
        let warnings = lint_text(&text);
        let paths: Vec<&str> = warnings
            .iter()
            .filter(|w| matches!(w.kind, Kind::NoReplica | Kind::NoBackup))
            .map(|w| w.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "products.videos.database.replicas",
                "products.videos.database.backup"
            ]
        );
    }

    #[test]
    fn host_without_role_is_reported() {
        let text =
            format!("{CLEAN}[hosts.spare]\naddress = \"10.0.9.9\"\naz = \"a\"\nroles = []\n");
        assert_the_one(&text, Kind::NoRole, "hosts.spare.roles", &[]);
    }

    #[test]
    fn unbalanced_zones_are_reported_per_role() {
        let mut text = CLEAN.to_string();
        for i in 3..=4 {
            text.push_str(&format!(
                "[hosts.web-{i}]\naddress = \"10.0.0.{i}\"\naz = \"a\"\nroles = [\"web\"]\nproducts = [\"videos\"]\n"
            ));
        }
        let says = ["\"web\"", "3 in a, 1 in b"];
        assert_the_one(&text, Kind::AzImbalance, "hosts", &says);
    }

    #[test]
    fn a_zone_without_the_role_counts_as_zero() {
        let text = format!(
            "{CLEAN}[hosts.mon-1]\naddress = \"10.0.5.1\"\naz = \"c\"\nroles = [\"monitor\"]\n"
        );
        // web: 1 in a, 1 in b, 0 in c, and monitor: 0/0/1 differ by one: fine. db: 2/2/0 is not.
        let warnings = lint_text(&text);
        let roles: Vec<&str> = only(&warnings, Kind::AzImbalance)
            .iter()
            .map(|w| w.message.split('"').nth(1).unwrap_or(""))
            .collect();
        assert_eq!(roles, ["db"], "{warnings:?}");
    }

    /// Issue 14: products on one master with the same chain lint like one product each;
    /// a product on that master with another chain is named.
    #[test]
    fn products_sharing_a_master_with_another_chain_are_reported() {
        let shared = CLEAN.replace(
            "[hosts.web-1]",
            "[products.blog]\ndomain = \"blog.example.com\"\ndocroot = \"/srv/blog\"\n[products.blog.database]\nname = \"blog\"\nmaster = \"db-1\"\nreplicas = [\"db-2\", \"db-3\"]\nbackup = \"db-4\"\nbackup_url = \"s3://backups/blog/\"\n[hosts.web-1]",
        );
        assert_eq!(lint_text(&shared), vec![]);
        let differs = shared.replace(
            "name = \"blog\"\nmaster = \"db-1\"\nreplicas = [\"db-2\", \"db-3\"]",
            "name = \"blog\"\nmaster = \"db-1\"\nreplicas = []",
        );
        // Products in name order: blog is first on db-1, so videos is the one that differs.
        let path = "products.videos.database.replicas";
        let says = ["product \"blog\""];
        assert_the_one(&differs, Kind::SharedChainDiffers, path, &says);
    }
}

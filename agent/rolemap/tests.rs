//! Unit tests of map validation (one case per rule of SPEC §5, each asserting the TOML path
//! of the problem) and of host-view resolution (SPEC §5, §6).

use super::resolve::{resolve, server_id, Resolution};
use super::validate::Issue;
use super::{load, load_for, Error, HostView};
use crate::identity::Identity;
use crate::rolemap::resolve::Position;
use crate::rolemap::sample::{host, large_map, product};

/// A valid map exercising every position: two products, a database with a chained replica
/// pair and a backup, web and memcached hosts.
pub(super) const MAP: &str = concat!(
    "schema = 1\ngeneration = 41\n",
    "\n[products.videos]\ndomain = \"videos.example.com\"\naliases = [\"www.videos.example.com\"]\n",
    "docroot = \"/srv/videos/current/public\"\nhealth_path = \"/health\"\n",
    "\n[products.videos.database]\nname = \"videos\"\nmaster = \"db-1\"\nreplicas = [\"db-2\", \"db-3\"]\n",
    "backup = \"db-4\"\nbackup_url = \"s3://fleet-backups/videos/\"\n",
    product!("blog", "blog.example.com", "/srv/blog"),
    host!("db-1", "10.0.1.11", "us-east-1a", ["db"]),
    host!("db-2", "10.0.2.11", "us-east-1b", ["db"]),
    host!("db-3", "10.0.3.11", "us-east-1c", ["db"]),
    host!("db-4", "10.0.3.12", "us-east-1c", ["db", "db-backup"]),
    host!("web-1", "10.0.1.21", "us-east-1a", ["web", "memcached"], ["videos", "blog"]),
    host!("web-2", "10.0.2.21", "us-east-1b", ["web"], ["videos"]),
);

/// Every issue of `text` (which must parse). Each host of the sample map also resolves it
/// through `load_for`, which resolves before validation has finished: that must neither
/// panic on the broken map nor report anything else.
pub(super) fn issues(text: &str) -> Vec<Issue> {
    let issues = match load(text.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(Error::Invalid { issues }) => issues,
        Err(e) => panic!("expected validation issues, got {e}"),
    };
    for id in ["db-1", "db-2", "db-3", "db-4", "web-1", "web-2", "nobody"] {
        match load_for(text.as_bytes(), &identity(id)) {
            Ok(_) => assert!(issues.is_empty(), "load_for accepted what load refuses"),
            Err(Error::Invalid { issues: found }) => assert_eq!(found, issues),
            Err(e) => panic!("load_for as {id}: {e}"),
        }
    }
    issues
}

/// `text` with `old` replaced by `new` exactly once.
pub(super) fn with(text: &str, old: &str, new: &str) -> String {
    assert_eq!(text.matches(old).count(), 1, "{old:?} must occur once");
    text.replacen(old, new, 1)
}

/// Assert that validating `text` reports a problem at `path` whose message contains `needle`.
#[track_caller]
pub(super) fn assert_issue(text: &str, path: &str, needle: &str) {
    let found = issues(text);
    assert!(
        found
            .iter()
            .any(|i| i.path == path && i.message.contains(needle)),
        "expected an issue at {path} containing {needle:?}, got {found:#?}"
    );
}

#[test]
fn the_sample_map_is_valid() {
    assert_eq!(issues(MAP), Vec::<Issue>::new());
}

#[test]
fn unknown_keys_are_refused_at_every_level() {
    // A `colour` key after the line `after`, and the path it is reported at.
    for (after, path) in [
        ("generation = 41\n", "colour"),
        ("docroot = \"/srv/blog\"\n", "products.blog.colour"),
        ("name = \"videos\"\n", "products.videos.database.colour"),
        ("roles = [\"web\"]\n", "hosts.web-2.colour"),
    ] {
        let text = with(MAP, after, &format!("{after}colour = 1\n"));
        assert_issue(&text, path, "unknown key");
    }
}

#[test]
fn unknown_schema_is_refused_alone() {
    let found = issues(&with(MAP, "schema = 1", "schema = 2"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "schema");
    assert!(found[0].message.contains("unsupported schema 2"));
    assert_issue(
        &with(MAP, "schema = 1\n", ""),
        "schema",
        "unsupported schema 0",
    );
}

#[test]
fn missing_or_negative_generation_is_refused() {
    assert_issue(
        &with(MAP, "generation = 41\n", ""),
        "generation",
        "missing or negative",
    );
    assert_issue(
        &with(MAP, "generation = 41", "generation = -3"),
        "generation",
        "missing or negative",
    );
}

#[test]
fn dangling_host_references_are_refused() {
    // The edit, the path of the issue and what it says.
    let cases = [
        (
            ("master = \"db-1\"", "master = \"db-9\""),
            "products.videos.database.master",
            "host \"db-9\" is not in [hosts]",
        ),
        (
            ("[\"db-2\", \"db-3\"]", "[\"db-2\", \"db-8\"]"),
            "products.videos.database.replicas[1]",
            "host \"db-8\" is not in [hosts]",
        ),
        (
            ("backup = \"db-4\"", "backup = \"db-7\""),
            "products.videos.database.backup",
            "not in [hosts]",
        ),
        (
            ("products = [\"videos\"]\n", "products = [\"shop\"]\n"),
            "hosts.web-2.products[0]",
            "product \"shop\" is not in [products]",
        ),
    ];
    for ((old, new), path, says) in cases {
        assert_issue(&with(MAP, old, new), path, says);
    }
}

#[test]
fn references_to_hosts_lacking_the_role_are_refused() {
    assert_issue(
        &with(MAP, "master = \"db-1\"", "master = \"web-2\""),
        "products.videos.database.master",
        "lacks the role \"db\"",
    );
    let text = with(MAP, "roles = [\"db\", \"db-backup\"]", "roles = [\"db\"]");
    assert_issue(
        &text,
        "products.videos.database.backup",
        "lacks the role \"db-backup\"",
    );
}

#[test]
fn a_host_in_two_positions_of_one_product_is_refused() {
    assert_issue(
        &with(MAP, "[\"db-2\", \"db-3\"]", "[\"db-2\", \"db-1\"]"),
        "products.videos.database.replicas[1]",
        "already holds products.videos.database.master",
    );
    assert_issue(
        &with(MAP, "backup = \"db-4\"", "backup = \"db-2\"").replace(
            "roles = [\"db\"]\n\n[hosts.db-3]",
            "roles = [\"db\", \"db-backup\"]\n\n[hosts.db-3]",
        ),
        "products.videos.database.backup",
        "already holds products.videos.database.replicas[0]",
    );
}

#[test]
fn a_replication_cycle_is_refused() {
    let text = with(
        MAP,
        "[\"db-2\", \"db-3\"]",
        "[\"db-2\", \"db-3\", \"db-2\"]",
    );
    assert_issue(
        &text,
        "products.videos.database.replicas",
        "replication cycle",
    );
}

#[test]
fn duplicate_addresses_are_refused() {
    let text = with(MAP, "address = \"10.0.2.11\"", "address = \"10.0.1.11\"");
    assert_issue(
        &text,
        "hosts.db-2.address",
        "\"10.0.1.11\" is also the address of host \"db-1\"",
    );
}

#[test]
fn a_removed_host_holding_a_position_is_refused() {
    let text = with(
        MAP,
        "backup_url = \"s3://fleet-backups/videos/\"\n",
        "backup_url = \"s3://fleet-backups/videos/\"\nremoved = [\"db-3\"]\n",
    );
    assert_issue(
        &text,
        "products.videos.database.removed[0]",
        "still holds a position",
    );
}

#[test]
fn a_backup_needs_a_backup_url() {
    let text = with(MAP, "backup_url = \"s3://fleet-backups/videos/\"\n", "");
    assert_issue(
        &text,
        "products.videos.database.backup_url",
        "required when a backup host is set",
    );
}

/// Values that could end a directive in a rendered file and start another one.
const UNSAFE: [&str; 6] = [
    "has space",
    "has\\\"quote",
    "has\\nnewline",
    "has..dots",
    "has\\u0007bell",
    "has'apostrophe",
];

/// Put each unsafe value at `placeholder` (inside a TOML basic string) and expect an issue
/// at `path` for every one.
#[track_caller]
fn assert_unsafe_refused(placeholder: &str, template: &str, path: &str) {
    for bad in UNSAFE {
        let text = with(MAP, placeholder, &template.replace("BAD", bad));
        let found = issues(&text);
        assert!(
            found.iter().any(|i| i.path == path),
            "{bad:?} at {path}: got {found:#?}"
        );
    }
}

#[test]
fn unsafe_domains_and_aliases_are_refused() {
    assert_unsafe_refused(
        "domain = \"videos.example.com\"",
        "domain = \"videos.BAD.com\"",
        "products.videos.domain",
    );
    assert_unsafe_refused(
        "aliases = [\"www.videos.example.com\"]",
        "aliases = [\"www.BAD.com\"]",
        "products.videos.aliases[0]",
    );
}

#[test]
fn unsafe_docroots_and_health_paths_are_refused() {
    assert_unsafe_refused(
        "docroot = \"/srv/videos/current/public\"",
        "docroot = \"/srv/BAD/public\"",
        "products.videos.docroot",
    );
    assert_unsafe_refused(
        "health_path = \"/health\"",
        "health_path = \"/BAD\"",
        "products.videos.health_path",
    );
}

#[test]
fn unsafe_addresses_are_refused() {
    assert_unsafe_refused(
        "address = \"10.0.2.21\"",
        "address = \"10.0.2.21BAD\"",
        "hosts.web-2.address",
    );
}

#[test]
fn unsafe_identifiers_are_refused() {
    assert_unsafe_refused(
        "az = \"us-east-1b\"\nroles = [\"web\"]",
        "az = \"zone-BAD\"\nroles = [\"web\"]",
        "hosts.web-2.az",
    );
    assert_unsafe_refused(
        "roles = [\"web\"]\n",
        "roles = [\"web-BAD\"]\n",
        "hosts.web-2.roles[0]",
    );
    assert_unsafe_refused(
        "name = \"videos\"",
        "name = \"videos_BAD\"",
        "products.videos.database.name",
    );
    let product = with(MAP, "[products.blog]", "[products.\"blog post\"]");
    let found = issues(&product.replace(
        "products = [\"videos\", \"blog\"]",
        "products = [\"videos\"]",
    ));
    assert!(
        found.iter().any(|i| i.path == "products.\"blog post\""),
        "{found:#?}"
    );
    let host = with(MAP, "[hosts.web-2]", "[hosts.\"web..2\"]");
    assert!(
        issues(&host).iter().any(|i| i.path == "hosts.\"web..2\""),
        "{:#?}",
        issues(&host)
    );
}

#[test]
fn unsafe_backup_urls_are_refused() {
    assert_unsafe_refused(
        "backup_url = \"s3://fleet-backups/videos/\"",
        "backup_url = \"s3://fleet-backups/BAD/\"",
        "products.videos.database.backup_url",
    );
    assert_issue(
        &with(
            MAP,
            "s3://fleet-backups/videos/",
            "https://fleet-backups/videos/",
        ),
        "products.videos.database.backup_url",
        "must be s3://bucket/prefix",
    );
}

#[test]
fn every_problem_is_listed_not_only_the_first() {
    let text = with(MAP, "master = \"db-1\"", "master = \"db-9\"");
    let text = with(&text, "address = \"10.0.2.21\"", "address = \"10 0 2 21\"");
    let paths: Vec<String> = issues(&text).into_iter().map(|i| i.path).collect();
    assert!(paths.contains(&"products.videos.database.master".to_string()));
    assert!(paths.contains(&"hosts.web-2.address".to_string()));
}

pub(super) fn identity(id: &str) -> Identity {
    Identity {
        id: id.to_string(),
        address: String::new(),
        az: String::new(),
        region: "us-east-1".to_string(),
        instance_type: None,
        ami_id: None,
    }
}

/// The view of host `id` in the valid map `text`, which must assign it.
pub(super) fn view_in(text: &str, id: &str) -> HostView {
    let map = load(text.as_bytes()).expect("valid");
    match resolve(&map, &identity(id)) {
        Resolution::Assigned(view) => *view,
        Resolution::Waiting => panic!("{id} should be assigned"),
    }
}

fn view(id: &str) -> HostView {
    view_in(MAP, id)
}

#[test]
fn a_web_hosts_view_has_its_products_with_database_addresses_and_pools() {
    let v = view("web-1");
    assert_eq!(v.host.roles, ["web", "memcached"]);
    assert_eq!(v.host.products, ["blog", "videos"]);
    assert_eq!(v.host.database, None);
    assert_eq!(v.generation, 41);
    let videos = &v.products[1];
    assert_eq!(videos.name, "videos");
    let db = videos.database.as_ref().expect("videos has a database");
    assert_eq!(db.master.address, "10.0.1.11");
    let replicas: Vec<&str> = db.replicas.iter().map(|p| p.address.as_str()).collect();
    assert_eq!(replicas, ["10.0.2.11", "10.0.3.11"]);
    let web: Vec<&str> = videos.pools.pool("web").map(|p| p.id).collect();
    assert_eq!(web, ["web-1", "web-2"]);
    let memcached: Vec<&str> = videos.pools.pool("memcached").map(|p| p.id).collect();
    assert_eq!(memcached, ["web-1"]);
    assert_eq!(v.products[0].database, None);
    assert_eq!(v.fleet.roles.pool("db").count(), 4);
}

#[test]
fn a_master_is_writable_and_has_no_upstream() {
    let position = view("db-1").host.database.expect("db-1 holds a position");
    assert_eq!(position.position, Position::Master);
    assert_eq!(position.upstream, None);
    assert!(!position.read_only);
    assert_eq!(position.products, ["videos"]);
    assert_eq!(
        position.only.map(|d| (d.product, d.name)),
        Some(("videos".to_string(), "videos".to_string()))
    );
}

#[test]
fn replicas_follow_the_chain_read_only() {
    let first = view("db-2").host.database.expect("db-2 holds a position");
    assert_eq!(first.position, Position::Replica);
    assert_eq!(first.upstream.as_ref().map(|p| p.id.as_str()), Some("db-1"));
    assert!(first.read_only);
    let second = view("db-3").host.database.expect("db-3 holds a position");
    let upstream = second.upstream.expect("db-3 follows someone");
    assert_eq!(
        (upstream.id.as_str(), upstream.address.as_str()),
        ("db-2", "10.0.2.11")
    );
    assert!(second.read_only);
}

#[test]
fn the_backup_follows_the_master_read_only_with_its_url() {
    let backup = view("db-4").host.database.expect("db-4 holds a position");
    assert_eq!(backup.position, Position::Backup);
    assert_eq!(backup.upstream.map(|p| p.id), Some("db-1".to_string()));
    assert!(backup.read_only);
    assert_eq!(
        backup.only.and_then(|d| d.backup_url).as_deref(),
        Some("s3://fleet-backups/videos/")
    );
    assert_eq!(view("db-4").host.products, ["videos"]);
}

#[test]
fn an_unknown_host_waits_for_its_role() {
    let map = load(MAP.as_bytes()).expect("valid");
    assert_eq!(resolve(&map, &identity("i-new")), Resolution::Waiting);
}

#[test]
fn server_ids_are_deterministic_and_never_zero() {
    // 10.0.1.11 as a number.
    assert_eq!(server_id("db-1", "10.0.1.11"), (10 << 24) + (1 << 8) + 11);
    assert_eq!(
        view("db-1").host.database.map(|d| d.server_id),
        Some(167_772_427)
    );
    // Not IPv4: FNV-1a of the id, pinned so that a release never renumbers a server.
    assert_eq!(server_id("db-1", "db1.example.com"), 1_148_644_353);
    assert_eq!(server_id("db-1", "0.0.0.0"), 1_148_644_353);
    assert_ne!(server_id("db-2", "::1"), server_id("db-1", "::1"));
}

const ROLLOUT: &str =
    "\n[rollout]\nwaves = [1, 10, 50, 100]\nbake = \"10m\"\nstart = 2026-12-04T16:00:00Z\n";

#[test]
fn a_rollout_table_is_part_of_the_schema() {
    let text = format!("{MAP}{ROLLOUT}max_failed = 1\n");
    assert_eq!(issues(&text), Vec::<Issue>::new());
    let map = load(text.as_bytes()).expect("valid");
    let rollout = map.rollout.expect("[rollout] kept");
    assert_eq!(rollout.waves, vec![1, 10, 50, 100]);
    assert_eq!(rollout.max_failed, 1);
}

#[test]
fn rollout_problems_carry_their_paths() {
    let text = format!("{MAP}{ROLLOUT}colour = 1\n");
    assert_issue(&text, "rollout.colour", "unknown key");
    let bad = ROLLOUT
        .replace("[1, 10, 50, 100]", "[1, 10, 5, 90]")
        .replace("\"10m\"", "\"later\"")
        .replace("16:00:00Z", "16:00:00");
    let text = format!("{MAP}{bad}max_failed = -3\n");
    assert_issue(&text, "rollout.waves[2]", "strictly increasing");
    assert_issue(&text, "rollout.waves[3]", "must be 100");
    assert_issue(&text, "rollout.bake", "\"later\"");
    assert_issue(&text, "rollout.start", "UTC");
    assert_issue(&text, "rollout.max_failed", "negative");
    assert_issue(&format!("{MAP}\n[rollout]\n"), "rollout.waves", "required");
}

#[test]
fn load_for_validates_and_resolves_as_load_then_resolve() {
    use crate::identity::Identity;
    let identity = |id: &str| Identity {
        id: id.to_string(),
        address: "10.1.0.5".to_string(),
        az: "a".to_string(),
        region: "r".to_string(),
        instance_type: None,
        ami_id: None,
    };
    let small = large_map(10);
    let large = large_map(super::MIN_HOSTS + 10);
    for text in [&small, &large] {
        let expected = load(text.as_bytes()).expect("valid");
        for id in ["web-5", "web-unknown"] {
            let (map, resolution) = load_for(text.as_bytes(), &identity(id)).expect("valid");
            assert_eq!(resolution, resolve(&expected, &identity(id)));
            assert_eq!(map, expected);
        }
        // A duplicate address and a product not in the map: both reported, as by load.
        let bad = text
            .replacen("address = \"10.1.0.2\"", "address = \"10.1.0.1\"", 1)
            .replacen("products = [\"p9\"]", "products = [\"nope\"]", 1);
        let Err(Error::Invalid { issues: expected }) = load(bad.as_bytes()) else {
            panic!("load accepts the bad map");
        };
        assert_eq!(expected.len(), 2, "{expected:?}");
        match load_for(bad.as_bytes(), &identity("web-5")) {
            Err(Error::Invalid { issues }) => assert_eq!(issues, expected),
            other => panic!("load_for gave {other:?}"),
        }
    }
}

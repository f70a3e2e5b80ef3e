//! Unit tests of several products on one database cluster (issue 14): the agreement rules
//! of validation, one case per rule asserting both TOML paths, and the host view of a
//! server holding several products' databases.

use super::resolve::Position;
use super::tests::{assert_issue, issues, view_in, with, MAP};
use super::validate::Issue;
use super::HostView;

/// `MAP` with product `blog` given the database `table` (an inline table's contents).
fn blog_database(table: &str) -> String {
    with(
        MAP,
        "docroot = \"/srv/blog\"\n",
        &format!("docroot = \"/srv/blog\"\ndatabase = {{ {table} }}\n"),
    )
}

/// Blog on the very cluster of videos: master db-1, chain db-2 then db-3, backup db-4.
const SAME_CLUSTER: &str = "name = \"blog\", master = \"db-1\", replicas = [\"db-2\", \"db-3\"], backup = \"db-4\", backup_url = \"s3://fleet-backups/blog/\"";

#[test]
fn products_on_one_cluster_with_agreeing_positions_are_valid() {
    assert_eq!(issues(&blog_database(SAME_CLUSTER)), Vec::<Issue>::new());
    // A part of the chain agrees too: db-2 follows db-1 in both products.
    let part = "name = \"blog\", master = \"db-1\", replicas = [\"db-2\"]";
    assert_eq!(issues(&blog_database(part)), Vec::<Issue>::new());
}

#[test]
fn master_of_one_product_and_replica_of_another_is_refused_with_both_paths() {
    let text = blog_database("name = \"blog\", master = \"db-2\"");
    // Products are checked in name order: blog places db-2 first.
    assert_issue(
        &text,
        "products.videos.database.replicas[0]",
        "host \"db-2\" is a replica of \"db-1\" here but the master at products.blog.database.master",
    );
    assert_eq!(issues(&text).len(), 1, "{:#?}", issues(&text));
}

#[test]
fn replica_of_different_upstreams_is_refused_with_both_paths() {
    // db-3 follows db-1 in blog, db-2 in videos.
    let text = blog_database("name = \"blog\", master = \"db-1\", replicas = [\"db-3\"]");
    assert_issue(
        &text,
        "products.videos.database.replicas[1]",
        "host \"db-3\" is a replica of \"db-2\" here but a replica of \"db-1\" at products.blog.database.replicas[0]",
    );
}

#[test]
fn backup_of_one_product_and_replica_of_another_is_refused_with_both_paths() {
    // db-2 follows db-1 in both, but as blog's backup and videos' replica.
    let text = blog_database(
        "name = \"blog\", master = \"db-1\", backup = \"db-2\", backup_url = \"s3://fleet-backups/blog/\"",
    )
    .replace(
        "address = \"10.0.2.11\"\naz = \"us-east-1b\"\nroles = [\"db\"]",
        "address = \"10.0.2.11\"\naz = \"us-east-1b\"\nroles = [\"db\", \"db-backup\"]",
    );
    assert_issue(
        &text,
        "products.videos.database.replicas[0]",
        "is a replica of \"db-1\" here but the backup of \"db-1\" at products.blog.database.backup",
    );
}

#[test]
fn one_schema_for_two_products_on_one_master_is_refused_with_both_paths() {
    let text = blog_database(&SAME_CLUSTER.replace("name = \"blog\"", "name = \"videos\""));
    assert_issue(
        &text,
        "products.videos.database.name",
        "schema \"videos\" is also the database at products.blog.database.name, on the same master \"db-1\"",
    );
    // The same schema name on another cluster is another database.
    let elsewhere = "name = \"videos\", master = \"db-5\"";
    let text = format!(
        "{}\n[hosts.db-5]\naddress = \"10.0.5.11\"\naz = \"us-east-1a\"\nroles = [\"db\"]\n",
        blog_database(elsewhere)
    );
    assert_eq!(issues(&text), Vec::<Issue>::new());
}

fn shared_view(id: &str) -> HostView {
    view_in(&blog_database(SAME_CLUSTER), id)
}

#[test]
fn a_shared_server_has_one_position_and_every_products_database() {
    let view = shared_view("db-3");
    let position = view.host.database.clone().expect("db-3 holds a position");
    assert_eq!(position.position, Position::Replica);
    assert_eq!(
        position.upstream.map(|p| p.id),
        Some("db-2".to_string()),
        "one upstream for both products"
    );
    assert_eq!(position.products, ["blog", "videos"]);
    assert_eq!(position.only, None, "no single product to name");
    let names: Vec<(&str, &str)> = view
        .host
        .databases
        .iter()
        .map(|d| (d.product.as_str(), d.name.as_str()))
        .collect();
    assert_eq!(names, [("blog", "blog"), ("videos", "videos")]);
    assert_eq!(view.host.products, ["blog", "videos"]);
    let serialized = serde_json::to_value(&view.host).expect("json");
    assert!(
        serialized["database"].get("product").is_none(),
        "{serialized}"
    );
}

#[test]
fn a_shared_backup_knows_each_products_backup_url() {
    let view = shared_view("db-4");
    assert_eq!(
        view.host.database.map(|p| p.position),
        Some(Position::Backup)
    );
    let urls: Vec<Option<&str>> = view
        .host
        .databases
        .iter()
        .map(|d| d.backup_url.as_deref())
        .collect();
    assert_eq!(
        urls,
        [
            Some("s3://fleet-backups/blog/"),
            Some("s3://fleet-backups/videos/")
        ]
    );
}

#[test]
fn a_host_without_position_has_no_databases() {
    let view = shared_view("web-1");
    assert_eq!(view.host.database, None);
    assert!(view.host.databases.is_empty());
}

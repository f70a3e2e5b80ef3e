//! `map promote` (SPEC §1, §3; issue 5), the failover step, as a pure transform: the chosen
//! replica (default: the first) becomes master, the remaining replicas are re-chained after
//! it in their order, the backup follows the new master (a backup follows "the master" by
//! definition, so it needs no edit), and the old master is appended to `database.removed`,
//! so no position points at it again until an operator puts it back. `promote_text` applies
//! the same change to the operator's text, keeping its comments and layout. A promotion
//! removes any `[rollout]`: a failover cannot wait for waves (SPEC §9.2).

use super::prepare::{self, document, set, string_array, table_at};
use super::types::RoleMap;
use super::validate::key;

/// Why a promotion was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The map given to promote is not valid.
    #[error("the map to promote in is not valid")]
    Invalid(#[source] super::Error),
    /// No such product.
    #[error("product {product:?} is not in [products]")]
    UnknownProduct {
        /// The product asked for.
        product: String,
    },
    /// The product has no database to fail over.
    #[error(
        "product {product:?} has no database (products.{}.database is missing)",
        key(product)
    )]
    NoDatabase {
        /// The product.
        product: String,
    },
    /// The product's database has no replica to promote.
    #[error(
        "product {product:?} has no replica to promote (products.{}.database.replicas is empty)",
        key(product)
    )]
    NoReplica {
        /// The product.
        product: String,
    },
    /// The target is not one of the product's replicas.
    #[error("host {host:?} is not a replica of product {product:?} (its replicas: [{}])", replicas.join(", "))]
    NotAReplica {
        /// The product.
        product: String,
        /// The host asked for.
        host: String,
        /// The product's replicas.
        replicas: Vec<String>,
    },
    /// The text could not be edited the way the typed map was.
    #[error("rewriting the map text")]
    Edit(#[source] prepare::Error),
}

/// The decision a promotion takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The product failed over.
    pub product: String,
    /// The master taken out (appended to `removed`).
    pub old_master: String,
    /// The replica made master.
    pub new_master: String,
    /// The new replica chain, in order.
    pub replicas: Vec<String>,
    /// The new `removed` list.
    pub removed: Vec<String>,
}

/// Decide the promotion of `to` (default: the first replica) in `product`.
///
/// # Errors
/// `UnknownProduct`, `NoDatabase`, `NoReplica`, or `NotAReplica` when `to` is not one of
/// the product's replicas.
pub fn plan(map: &RoleMap, product: &str, to: Option<&str>) -> Result<Promotion, Error> {
    let p = map
        .products
        .get(product)
        .ok_or_else(|| Error::UnknownProduct {
            product: product.to_string(),
        })?;
    let db = p.database.as_ref().ok_or_else(|| Error::NoDatabase {
        product: product.to_string(),
    })?;
    let first = db.replicas.first().ok_or_else(|| Error::NoReplica {
        product: product.to_string(),
    })?;
    let target = to.unwrap_or(first);
    if !db.replicas.iter().any(|r| r == target) {
        return Err(Error::NotAReplica {
            product: product.to_string(),
            host: target.to_string(),
            replicas: db.replicas.clone(),
        });
    }
    let mut removed = db.removed.clone();
    removed.push(db.master.clone());
    Ok(Promotion {
        product: product.to_string(),
        old_master: db.master.clone(),
        new_master: target.to_string(),
        replicas: db
            .replicas
            .iter()
            .filter(|r| *r != target)
            .cloned()
            .collect(),
        removed,
    })
}

/// `map` with `promotion` applied (generation unchanged: publishing raises it), and no
/// `[rollout]`: a failover goes to every host at once (SPEC §9.2).
pub fn apply(map: &RoleMap, promotion: &Promotion) -> RoleMap {
    let mut out = map.clone();
    out.rollout = None;
    let db = out
        .products
        .get_mut(&promotion.product)
        .and_then(|p| p.database.as_mut());
    if let Some(db) = db {
        db.master.clone_from(&promotion.new_master);
        db.replicas.clone_from(&promotion.replicas);
        db.removed.clone_from(&promotion.removed);
    }
    out
}

/// The result of promoting in map text.
#[derive(Debug, Clone)]
pub struct Promoted {
    /// The edited text (generation unchanged).
    pub text: String,
    /// What was decided.
    pub promotion: Promotion,
    /// The promoted map, validated (the typed form of `text`).
    pub map: RoleMap,
    /// The map promoted in (the typed form of the input text).
    pub original: RoleMap,
}

/// Validate `text`, decide the promotion and write it into the text: `master`, `replicas`
/// and `removed` of `products.<product>.database` change, nothing else does.
///
/// # Errors
/// `Invalid` for a map that does not validate, the refusals of [`plan`], and `Edit` when
/// the text cannot be changed to match (checked by re-reading it).
pub fn promote_text(text: &str, product: &str, to: Option<&str>) -> Result<Promoted, Error> {
    let map = super::load(text.as_bytes()).map_err(Error::Invalid)?;
    let promotion = plan(&map, product, to)?;
    let mut doc = document(text).map_err(Error::Edit)?;
    let db =
        table_at(doc.as_table_mut(), &["products", product, "database"]).map_err(Error::Edit)?;
    let at = format!("products.{}.database", key(product));
    let edits = [
        (
            "master",
            toml_edit::Value::from(promotion.new_master.as_str()),
        ),
        ("replicas", string_array(&promotion.replicas)),
        ("removed", string_array(&promotion.removed)),
    ];
    for (name, value) in edits {
        set(db, name, &format!("{at}.{name}"), value).map_err(Error::Edit)?;
    }
    doc.remove("rollout");
    let edited = doc.to_string();
    let promoted = apply(&map, &promotion);
    if !prepare::same_map(&edited, &promoted) {
        return Err(Error::Edit(prepare::Error::Edit {
            path: at,
            reason: "the edited text does not read back as the promoted map".into(),
        }));
    }
    let issues = super::validate::validate(&promoted);
    if !issues.is_empty() {
        return Err(Error::Invalid(super::Error::Invalid { issues }));
    }
    Ok(Promoted {
        text: edited,
        promotion,
        map: promoted,
        original: map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolemap::load;

    const MAP: &str = r#"schema = 1
generation = 41

[products.videos]
domain = "videos.example.com"
docroot = "/srv/videos"

[products.videos.database]
name = "videos"
master = "db-1"     # the current master
replicas = ["db-2", "db-3", "db-4"]   # a chain
backup = "db-5"
backup_url = "s3://backups/videos/"

[hosts.db-1]
address = "10.0.1.1"
az = "a"
roles = ["db"]
[hosts.db-2]
address = "10.0.1.2"
az = "b"
roles = ["db"]
[hosts.db-3]
address = "10.0.1.3"
az = "c"
roles = ["db"]
[hosts.db-4]
address = "10.0.1.4"
az = "a"
roles = ["db"]
[hosts.db-5]
address = "10.0.1.5"
az = "b"
roles = ["db", "db-backup"]
"#;

    fn database(text: &str) -> crate::rolemap::types::Database {
        let map = load(text.as_bytes()).expect("promoted map is valid");
        map.products["videos"].database.clone().expect("database")
    }

    #[test]
    fn default_promotes_the_first_replica_and_rechains() {
        let promoted = promote_text(MAP, "videos", None).expect("promotes");
        let db = database(&promoted.text);
        assert_eq!(db.master, "db-2");
        assert_eq!(db.replicas, ["db-3", "db-4"]);
        assert_eq!(db.backup.as_deref(), Some("db-5"));
        assert_eq!(db.removed, ["db-1"]);
        assert_eq!(promoted.promotion.old_master, "db-1");
    }

    #[test]
    fn a_chosen_replica_is_promoted_and_the_others_keep_their_order() {
        let promoted = promote_text(MAP, "videos", Some("db-3")).expect("promotes");
        let db = database(&promoted.text);
        assert_eq!(db.master, "db-3");
        assert_eq!(db.replicas, ["db-2", "db-4"]);
        assert_eq!(db.removed, ["db-1"]);
    }

    #[test]
    fn the_backup_follows_the_new_master() {
        let promoted = promote_text(MAP, "videos", None).expect("promotes");
        let map = load(promoted.text.as_bytes()).expect("valid");
        let db = map.products["videos"].database.as_ref().expect("database");
        let upstreams = crate::rolemap::validate::upstreams(db);
        assert_eq!(upstreams.get("db-5"), Some(&"db-2"));
        assert_eq!(upstreams.get("db-3"), Some(&"db-2"));
        assert_eq!(upstreams.get("db-4"), Some(&"db-3"));
    }

    #[test]
    fn comments_and_layout_survive() {
        let promoted = promote_text(MAP, "videos", None).expect("promotes");
        assert!(promoted
            .text
            .contains("master = \"db-2\"     # the current master"));
        assert!(promoted
            .text
            .contains("replicas = [\"db-3\", \"db-4\"]   # a chain"));
        assert!(promoted.text.starts_with("schema = 1\ngeneration = 41\n"));
    }

    #[test]
    fn a_promotion_publishes_without_a_rollout() {
        let staged = format!(
            "{MAP}\n[rollout]\nwaves = [10, 100]\nbake = \"10m\"\nstart = 2026-01-01T00:00:00Z\n"
        );
        let promoted = promote_text(&staged, "videos", None).expect("promotes");
        assert!(!promoted.text.contains("[rollout]"), "{}", promoted.text);
        assert_eq!(promoted.map.rollout, None);
        assert!(promoted.original.rollout.is_some());
    }

    #[test]
    fn a_second_promotion_appends_to_removed() {
        let once = promote_text(MAP, "videos", None).expect("first");
        let twice = promote_text(&once.text, "videos", None).expect("second");
        let db = database(&twice.text);
        assert_eq!(
            (db.master.as_str(), db.replicas.as_slice()),
            ("db-3", &["db-4".to_string()][..])
        );
        assert_eq!(db.removed, ["db-1", "db-2"]);
    }

    #[test]
    fn promoting_a_host_that_is_not_a_replica_is_refused() {
        for host in ["db-1", "db-5", "nope"] {
            let err = promote_text(MAP, "videos", Some(host)).expect_err(host);
            assert!(matches!(err, Error::NotAReplica { .. }), "{host}: {err:?}");
            assert!(err.to_string().contains("[db-2, db-3, db-4]"), "{err}");
        }
    }

    #[test]
    fn unknown_product_no_database_and_no_replica_are_refused() {
        let err = promote_text(MAP, "blog", None).expect_err("no product");
        assert!(matches!(err, Error::UnknownProduct { .. }), "{err:?}");
        let no_db = MAP.replace(
            "[products.videos.database]",
            "[products.videos.database_gone]",
        );
        let map = crate::rolemap::types::parse(&no_db).expect("parses");
        let err = plan(&map, "videos", None).expect_err("no database");
        assert!(matches!(err, Error::NoDatabase { .. }), "{err:?}");
        let lone = MAP.replace("replicas = [\"db-2\", \"db-3\", \"db-4\"]", "replicas = []");
        let err = promote_text(&lone, "videos", None).expect_err("no replica");
        assert!(matches!(err, Error::NoReplica { .. }), "{err:?}");
    }

    #[test]
    fn an_inline_database_table_is_edited_too() {
        let inline = MAP.replace(
            "[products.videos.database]\nname = \"videos\"\nmaster = \"db-1\"     # the current master\nreplicas = [\"db-2\", \"db-3\", \"db-4\"]   # a chain\nbackup = \"db-5\"\nbackup_url = \"s3://backups/videos/\"\n",
            "database = { name = \"videos\", master = \"db-1\", replicas = [\"db-2\"] }\n",
        );
        let inline = inline.replace(
            "docroot = \"/srv/videos\"\n\n",
            "docroot = \"/srv/videos\"\n",
        );
        let promoted = promote_text(&inline, "videos", None).expect("promotes");
        let db = database(&promoted.text);
        assert_eq!(
            (db.master.as_str(), db.removed.as_slice()),
            ("db-2", &["db-1".to_string()][..])
        );
    }
}

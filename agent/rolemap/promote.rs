//! `map promote` (SPEC §1, §3; issue 5), the failover step, as a pure transform: the chosen
//! replica (default: the first) becomes master, the remaining replicas are re-chained after
//! it in their order, the backup follows the new master (a backup follows "the master" by
//! definition, so it needs no edit), and the old master is appended to `database.removed`,
//! so no position points at it again until an operator puts it back. `promote_text` applies
//! the same change to the operator's text, keeping its comments and layout. A promotion
//! removes any `[rollout]`: a failover cannot wait for waves (SPEC §9.2).
//!
//! A master shared by several products is one MariaDB server (issue 14): its failover moves
//! every product on it to the same new master, which must be a replica of each of them;
//! otherwise the promotion is refused, naming the products and the hosts that would do.
//! Moving one product alone is impossible anyway: the new master would still be a replica
//! of the others, a map validation refuses.

use super::prepare::{self, document, set, string_array, table_at};
use super::types::{Database, RoleMap};
use super::validate::{key, q};

/// Map strings for a message, quoted and bounded, comma separated.
fn quoted(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| q(i)).collect();
    items.join(", ")
}

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
    /// The target does not replicate every product on the master being replaced.
    #[error("{0}")]
    NotSharedReplica(Box<SharedRefusal>),
    /// The text could not be edited the way the typed map was.
    #[error("rewriting the map text")]
    Edit(#[source] prepare::Error),
}

/// Why a shared master cannot move to the host asked for (boxed: errors stay small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRefusal {
    /// The product asked for.
    pub product: String,
    /// The master the products share.
    pub master: String,
    /// The host asked for (or the first replica).
    pub host: String,
    /// Products on that master the host does not replicate.
    pub missing: Vec<String>,
    /// Hosts replicating every product on that master.
    pub candidates: Vec<String>,
}

impl std::fmt::Display for SharedRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, verb) = match self.missing.len() {
            1 => ("", "shares"),
            _ => ("s", "share"),
        };
        let candidates = match self.candidates.as_slice() {
            [] => "there is none".to_string(),
            some => quoted(some),
        };
        write!(
            f,
            "host {} is not a replica of product{s} {}, which {verb} master {} with product {}: a failover moves every product on that server; promote a replica of all of them ({candidates}) or add {} to their replicas",
            q(&self.host),
            quoted(&self.missing),
            q(&self.master),
            q(&self.product),
            q(&self.host)
        )
    }
}

/// The decision a promotion takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The product asked for.
    pub product: String,
    /// The master taken out (appended to `removed`).
    pub old_master: String,
    /// The replica made master.
    pub new_master: String,
    /// Every product whose master was `old_master`, by name: the one asked for and those
    /// sharing its server.
    pub moves: Vec<Move>,
}

/// One product's database after the promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The product.
    pub product: String,
    /// Its new replica chain, in order.
    pub replicas: Vec<String>,
    /// Its new `removed` list.
    pub removed: Vec<String>,
}

impl Promotion {
    /// The move of the product asked for.
    pub fn asked(&self) -> Option<&Move> {
        self.moves.iter().find(|m| m.product == self.product)
    }
}

/// Decide the promotion of `to` (default: the first replica) in `product`, and in every
/// product sharing its master.
///
/// # Errors
/// `UnknownProduct`, `NoDatabase`, `NoReplica`, `NotAReplica` when `to` is not one of
/// the product's replicas, `NotSharedReplica` when it does not replicate every product on
/// the shared master.
pub fn plan(map: &RoleMap, product: &str, to: Option<&str>) -> Result<Promotion, Error> {
    let db = database(map, product)?;
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
    let sharing = sharing(map, &db.master);
    check_shared(&sharing, product, &db.master, target)?;
    let moves = sharing
        .iter()
        .map(|(name, db)| Move {
            product: name.to_string(),
            replicas: db
                .replicas
                .iter()
                .filter(|r| *r != target)
                .cloned()
                .collect(),
            removed: db.removed.iter().chain([&db.master]).cloned().collect(),
        })
        .collect();
    Ok(Promotion {
        product: product.to_string(),
        old_master: db.master.clone(),
        new_master: target.to_string(),
        moves,
    })
}

fn database<'m>(map: &'m RoleMap, product: &str) -> Result<&'m Database, Error> {
    let p = map
        .products
        .get(product)
        .ok_or_else(|| Error::UnknownProduct {
            product: product.to_string(),
        })?;
    p.database.as_ref().ok_or_else(|| Error::NoDatabase {
        product: product.to_string(),
    })
}

/// Every product whose database has `master` as its master, by name.
fn sharing<'m>(map: &'m RoleMap, master: &str) -> Vec<(&'m str, &'m Database)> {
    map.products
        .iter()
        .filter_map(|(name, p)| Some((name.as_str(), p.database.as_ref()?)))
        .filter(|(_, db)| db.master == master)
        .collect()
}

/// `target` must replicate every product of `sharing` (it already replicates `product`).
fn check_shared(
    sharing: &[(&str, &Database)],
    product: &str,
    master: &str,
    target: &str,
) -> Result<(), Error> {
    let replicates = |db: &Database, host: &str| db.replicas.iter().any(|r| r == host);
    let missing: Vec<String> = sharing
        .iter()
        .filter(|(_, db)| !replicates(db, target))
        .map(|(name, _)| name.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let candidates = sharing.first().map_or_else(Vec::new, |(_, first)| {
        first
            .replicas
            .iter()
            .filter(|r| sharing.iter().all(|(_, db)| replicates(db, r)))
            .cloned()
            .collect()
    });
    Err(Error::NotSharedReplica(Box::new(SharedRefusal {
        product: product.to_string(),
        master: master.to_string(),
        host: target.to_string(),
        missing,
        candidates,
    })))
}

/// `map` with `promotion` applied (generation unchanged: publishing raises it), and no
/// `[rollout]`: a failover goes to every host at once (SPEC §9.2).
pub fn apply(map: &RoleMap, promotion: &Promotion) -> RoleMap {
    let mut out = map.clone();
    out.rollout = None;
    for m in &promotion.moves {
        let db = out
            .products
            .get_mut(&m.product)
            .and_then(|p| p.database.as_mut());
        if let Some(db) = db {
            db.master.clone_from(&promotion.new_master);
            db.replicas.clone_from(&m.replicas);
            db.removed.clone_from(&m.removed);
        }
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
/// and `removed` of `products.<product>.database` (and of each product sharing its master)
/// change, nothing else does.
///
/// # Errors
/// `Invalid` for a map that does not validate, the refusals of [`plan`], and `Edit` when
/// the text cannot be changed to match (checked by re-reading it).
pub fn promote_text(text: &str, product: &str, to: Option<&str>) -> Result<Promoted, Error> {
    let map = super::load(text.as_bytes()).map_err(Error::Invalid)?;
    let promotion = plan(&map, product, to)?;
    let mut doc = document(text).map_err(Error::Edit)?;
    for m in &promotion.moves {
        edit(&mut doc, &promotion.new_master, m).map_err(Error::Edit)?;
    }
    doc.remove("rollout");
    let edited = doc.to_string();
    let promoted = apply(&map, &promotion);
    if !prepare::same_map(&edited, &promoted) {
        return Err(Error::Edit(prepare::Error::Edit {
            path: format!("products.{}.database", key(product)),
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

/// Write `m`'s new `master`, `replicas` and `removed` into the document.
fn edit(doc: &mut toml_edit::DocumentMut, master: &str, m: &Move) -> Result<(), prepare::Error> {
    let db = table_at(doc.as_table_mut(), &["products", &m.product, "database"])?;
    let at = format!("products.{}.database", key(&m.product));
    let edits = [
        ("master", toml_edit::Value::from(master)),
        ("replicas", string_array(&m.replicas)),
        ("removed", string_array(&m.removed)),
    ];
    for (name, value) in edits {
        set(db, name, &format!("{at}.{name}"), value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolemap::load;
    use crate::rolemap::sample::{host, product};

    const MAP: &str = concat!(
        "schema = 1\ngeneration = 41\n",
        product!("videos", "videos.example.com", "/srv/videos"),
        "\n[products.videos.database]\nname = \"videos\"\n",
        "master = \"db-1\"     # the current master\n",
        "replicas = [\"db-2\", \"db-3\", \"db-4\"]   # a chain\n",
        "backup = \"db-5\"\nbackup_url = \"s3://backups/videos/\"\n",
        host!("db-1", "10.0.1.1", "a", ["db"]),
        host!("db-2", "10.0.1.2", "b", ["db"]),
        host!("db-3", "10.0.1.3", "c", ["db"]),
        host!("db-4", "10.0.1.4", "a", ["db"]),
        host!("db-5", "10.0.1.5", "b", ["db", "db-backup"]),
    );

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

    /// `MAP` with product `blog` on the same server as videos, with `replicas`, and product
    /// `docs` on a master of its own.
    fn shared(replicas: &str) -> String {
        let blog = format!(
            "[products.blog]\ndomain = \"blog.example.com\"\ndocroot = \"/srv/blog\"\n\n[products.blog.database]\nname = \"blog\"\nmaster = \"db-1\"\nreplicas = {replicas}\nbackup = \"db-5\"\nbackup_url = \"s3://backups/blog/\"\n\n[products.docs]\ndomain = \"docs.example.com\"\ndocroot = \"/srv/docs\"\n\n[products.docs.database]\nname = \"docs\"\nmaster = \"db-6\"\n\n[hosts.db-6]\naddress = \"10.0.1.6\"\naz = \"c\"\nroles = [\"db\"]\n\n[hosts.db-1]"
        );
        MAP.replacen("[hosts.db-1]", &blog, 1)
    }

    fn database_of(text: &str, product: &str) -> crate::rolemap::types::Database {
        let map = load(text.as_bytes()).expect("promoted map is valid");
        map.products[product].database.clone().expect("database")
    }

    /// Issue 14: promoting one product of a shared master moves every product on it.
    #[test]
    fn a_shared_master_moves_every_product_on_it() {
        let text = shared("[\"db-2\", \"db-3\", \"db-4\"]");
        for asked in ["videos", "blog"] {
            let promoted = promote_text(&text, asked, Some("db-3")).expect("promotes");
            for product in ["videos", "blog"] {
                let db = database_of(&promoted.text, product);
                assert_eq!(db.master, "db-3", "{asked}: {product}");
                assert_eq!(db.replicas, ["db-2", "db-4"], "{asked}: {product}");
                assert_eq!(db.removed, ["db-1"], "{asked}: {product}");
            }
            let docs = database_of(&promoted.text, "docs");
            assert_eq!((docs.master.as_str(), docs.removed.len()), ("db-6", 0));
            let moved: Vec<&str> = promoted
                .promotion
                .moves
                .iter()
                .map(|m| m.product.as_str())
                .collect();
            assert_eq!(moved, ["blog", "videos"]);
            assert_eq!(
                promoted.promotion.asked().map(|m| m.product.as_str()),
                Some(asked)
            );
        }
    }

    /// A part of the chain is enough when the new master replicates every product.
    #[test]
    fn a_shared_master_moves_to_a_replica_of_each_product() {
        let text = shared("[\"db-2\"]");
        let promoted = promote_text(&text, "videos", None).expect("promotes");
        assert_eq!(
            database_of(&promoted.text, "blog").replicas,
            Vec::<String>::new()
        );
        assert_eq!(
            database_of(&promoted.text, "videos").replicas,
            ["db-3", "db-4"]
        );
    }

    #[test]
    fn a_new_master_that_does_not_replicate_every_product_is_refused() {
        let text = shared("[\"db-2\"]");
        let err = promote_text(&text, "videos", Some("db-3")).expect_err("db-3 lacks blog");
        assert!(matches!(err, Error::NotSharedReplica(_)), "{err:?}");
        crate::text::assert_mentions(
            &err.to_string(),
            &[
                "host \"db-3\" is not a replica of product \"blog\"",
                "shares master \"db-1\" with product \"videos\"",
                "moves every product on that server",
                "promote a replica of all of them (\"db-2\")",
            ],
        );
        let none = shared("[]");
        let err = promote_text(&none, "videos", None).expect_err("no common replica");
        assert!(err.to_string().contains("(there is none)"), "{err}");
    }
}

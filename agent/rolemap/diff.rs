//! `map diff` (SPEC §3, issue 5): what changed between two maps, in words, one line per
//! change, for people and the control panel. Hosts added, removed or changed (address, AZ,
//! roles, products), products added, removed or changed, and database topology (new master,
//! replicas reordered or changed, backup changed). Pure; works on unvalidated maps too.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::types::{Database, Host, Name, Product, RoleMap};

/// One difference between two maps.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// `generation` differs.
    Generation {
        /// Before.
        old: i64,
        /// After.
        new: i64,
    },
    /// A host appeared.
    HostAdded {
        /// Host id.
        id: String,
        /// Its entry.
        host: Host,
    },
    /// A host disappeared.
    HostRemoved {
        /// Host id.
        id: String,
    },
    /// A host's single-valued field (`address`, `az`) changed.
    HostField {
        /// Host id.
        id: String,
        /// Field name.
        field: &'static str,
        /// Before.
        old: String,
        /// After.
        new: String,
    },
    /// A host's list field (`roles`, `products`) gained or lost entries.
    HostList {
        /// Host id.
        id: String,
        /// Field name.
        field: &'static str,
        /// Entries gained.
        added: Vec<String>,
        /// Entries lost.
        removed: Vec<String>,
    },
    /// A product appeared.
    ProductAdded {
        /// Product name.
        name: String,
    },
    /// A product disappeared.
    ProductRemoved {
        /// Product name.
        name: String,
    },
    /// A product setting (`domain`, `aliases`, `docroot`, `health_path`, database `name`,
    /// `backup_url`, `removed`) changed.
    ProductField {
        /// Product name.
        name: String,
        /// Field name (`database.` prefixed for database fields).
        field: String,
        /// Before, as text.
        old: String,
        /// After, as text.
        new: String,
    },
    /// A product gained or lost its database table.
    Database {
        /// Product name.
        name: String,
        /// Whether it now has one.
        present: bool,
    },
    /// The database master is another host.
    NewMaster {
        /// Product name.
        name: String,
        /// Before.
        old: String,
        /// After.
        new: String,
    },
    /// Same replicas, another order (the replication chain changed).
    ReplicasReordered {
        /// Product name.
        name: String,
        /// Before.
        old: Vec<String>,
        /// After.
        new: Vec<String>,
    },
    /// Replicas added or removed.
    ReplicasChanged {
        /// Product name.
        name: String,
        /// Before.
        old: Vec<String>,
        /// After.
        new: Vec<String>,
    },
    /// The backup host changed (or appeared, or went away).
    BackupChanged {
        /// Product name.
        name: String,
        /// Before.
        old: Option<String>,
        /// After.
        new: Option<String>,
    },
}

/// One line per change. Map strings are untrusted (an `az` holding ESC sequences and a
/// newline could forge a line), so the line is escaped and bounded (issue 15).
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = match self {
            Change::Generation { old, new } => format!("generation {old} -> {new}"),
            Change::HostAdded { .. }
            | Change::HostRemoved { .. }
            | Change::HostField { .. }
            | Change::HostList { .. } => self.host_words(),
            _ => self.product_words(),
        };
        f.write_str(&crate::text::printable(&line, crate::text::LINE_MAX))
    }
}

impl Change {
    fn host_words(&self) -> String {
        match self {
            Change::HostAdded { id, host } => format!(
                "host {id} added ({}, {}, roles [{}], products [{}])",
                host.address,
                host.az,
                host.roles.join(", "),
                host.products.join(", ")
            ),
            Change::HostRemoved { id } => format!("host {id} removed"),
            Change::HostField {
                id,
                field,
                old,
                new,
            } => format!("host {id}: {field} {old} -> {new}"),
            Change::HostList {
                id,
                field,
                added,
                removed,
            } => format!("host {id}: {field} {}", plus_minus(added, removed)),
            _ => String::new(),
        }
    }

    fn product_words(&self) -> String {
        match self {
            Change::ProductAdded { name } => format!("product {name} added"),
            Change::ProductRemoved { name } => format!("product {name} removed"),
            Change::ProductField {
                name,
                field,
                old,
                new,
            } => format!("product {name}: {field} {old} -> {new}"),
            Change::Database { name, present } => {
                let what = if *present { "added" } else { "removed" };
                format!("product {name}: database {what}")
            }
            Change::NewMaster { name, old, new } => {
                format!("product {name}: new database master {new} (was {old})")
            }
            Change::ReplicasReordered { name, old, new } => {
                format!(
                    "product {name}: replicas reordered {} (was {})",
                    list(new),
                    list(old)
                )
            }
            Change::ReplicasChanged { name, old, new } => {
                format!("product {name}: replicas {} (was {})", list(new), list(old))
            }
            Change::BackupChanged { name, old, new } => format!(
                "product {name}: backup {} (was {})",
                new.as_deref().unwrap_or("none"),
                old.as_deref().unwrap_or("none")
            ),
            _ => String::new(),
        }
    }
}

fn plus_minus(added: &[String], removed: &[String]) -> String {
    let plus = added.iter().map(|a| format!("+{a}"));
    let minus = removed.iter().map(|r| format!("-{r}"));
    plus.chain(minus).collect::<Vec<_>>().join(" ")
}

/// Every change from `old` to `new`: generation, then products, then hosts, each by key.
pub fn diff(old: &RoleMap, new: &RoleMap) -> Vec<Change> {
    let mut out = Vec::new();
    if old.generation != new.generation {
        out.push(Change::Generation {
            old: old.generation,
            new: new.generation,
        });
    }
    for (name, side) in pair(&old.products, &new.products) {
        match side {
            (None, Some(_)) => out.push(Change::ProductAdded { name: name.clone() }),
            (Some(_), None) => out.push(Change::ProductRemoved { name: name.clone() }),
            (Some(a), Some(b)) => product(name, a, b, &mut out),
            (None, None) => {}
        }
    }
    for (id, side) in pair(&old.hosts, &new.hosts) {
        match side {
            (None, Some(h)) => out.push(Change::HostAdded {
                id: id.to_string(),
                host: h.clone(),
            }),
            (Some(_), None) => out.push(Change::HostRemoved { id: id.to_string() }),
            (Some(a), Some(b)) => host(id, a, b, &mut out),
            (None, None) => {}
        }
    }
    out
}

type Sides<'a, V> = (Option<&'a V>, Option<&'a V>);

/// Every key of either map with its value on each side.
fn pair<'a, K: Ord, V>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> BTreeMap<&'a K, Sides<'a, V>> {
    let mut out: BTreeMap<&K, Sides<V>> = BTreeMap::new();
    for (k, v) in old {
        out.entry(k).or_insert((None, None)).0 = Some(v);
    }
    for (k, v) in new {
        out.entry(k).or_insert((None, None)).1 = Some(v);
    }
    out
}

fn host(id: &str, a: &Host, b: &Host, out: &mut Vec<Change>) {
    for (field, old, new) in [("address", &a.address, &b.address), ("az", &a.az, &b.az)] {
        if old != new {
            out.push(Change::HostField {
                id: id.to_string(),
                field,
                old: old.to_string(),
                new: new.to_string(),
            });
        }
    }
    for (field, old, new) in [
        ("roles", &a.roles, &b.roles),
        ("products", &a.products, &b.products),
    ] {
        let added: Vec<String> = new
            .iter()
            .filter(|x| !old.contains(x))
            .map(Name::to_string)
            .collect();
        let removed: Vec<String> = old
            .iter()
            .filter(|x| !new.contains(x))
            .map(Name::to_string)
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            out.push(Change::HostList {
                id: id.to_string(),
                field,
                added,
                removed,
            });
        }
    }
}

fn product(name: &str, a: &Product, b: &Product, out: &mut Vec<Change>) {
    let fields = [
        ("domain", a.domain.clone(), b.domain.clone()),
        ("aliases", list(&a.aliases), list(&b.aliases)),
        ("docroot", a.docroot.clone(), b.docroot.clone()),
        ("health_path", a.health_path.clone(), b.health_path.clone()),
    ];
    field_changes(name, "", &fields, out);
    match (&a.database, &b.database) {
        (Some(x), Some(y)) => database(name, x, y, out),
        (None, Some(_)) | (Some(_), None) => out.push(Change::Database {
            name: name.to_string(),
            present: b.database.is_some(),
        }),
        (None, None) => {}
    }
}

fn field_changes(
    name: &str,
    prefix: &str,
    fields: &[(&str, String, String)],
    out: &mut Vec<Change>,
) {
    for (field, old, new) in fields {
        if old != new {
            out.push(Change::ProductField {
                name: name.to_string(),
                field: format!("{prefix}{field}"),
                old: old.clone(),
                new: new.clone(),
            });
        }
    }
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn database(name: &str, a: &Database, b: &Database, out: &mut Vec<Change>) {
    if a.master != b.master {
        out.push(Change::NewMaster {
            name: name.to_string(),
            old: a.master.clone(),
            new: b.master.clone(),
        });
    }
    if a.replicas != b.replicas {
        out.push(replicas(name, &a.replicas, &b.replicas));
    }
    if a.backup != b.backup {
        out.push(Change::BackupChanged {
            name: name.to_string(),
            old: a.backup.clone(),
            new: b.backup.clone(),
        });
    }
    let none = || "none".to_string();
    let fields = [
        ("name", a.name.clone(), b.name.clone()),
        (
            "backup_url",
            a.backup_url.clone().unwrap_or_else(none),
            b.backup_url.clone().unwrap_or_else(none),
        ),
        ("removed", list(&a.removed), list(&b.removed)),
    ];
    field_changes(name, "database.", &fields, out);
}

/// Same hosts in another order is a re-chaining; anything else is a membership change.
fn replicas(name: &str, old: &[String], new: &[String]) -> Change {
    let (mut x, mut y) = (old.to_vec(), new.to_vec());
    x.sort();
    y.sort();
    let (name, old, new) = (name.to_string(), old.to_vec(), new.to_vec());
    if x == y {
        Change::ReplicasReordered { name, old, new }
    } else {
        Change::ReplicasChanged { name, old, new }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolemap::types::parse;

    /// The tests' sample fleet, plus a product without a database.
    fn base() -> String {
        format!(
            "{}\n[products.blog]\ndomain = \"blog.example.com\"\ndocroot = \"/srv/blog\"\n",
            crate::rolemap::SAMPLE
        )
    }

    fn lines(old: &str, new: &str) -> Vec<String> {
        let (a, b) = (
            parse(old).expect("old parses"),
            parse(new).expect("new parses"),
        );
        diff(&a, &b).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn identical_maps_have_no_changes() {
        assert_eq!(lines(&base(), &base()), Vec::<String>::new());
    }

    #[test]
    fn generation_change() {
        let new = base().replacen("generation = 41", "generation = 42", 1);
        assert_eq!(lines(&base(), &new), ["generation 41 -> 42"]);
    }

    /// One replacement in the base map, and the change lines it gives.
    const EDITS: &[(&str, &str, &[&str])] = &[
        (
            "[hosts.db-1]",
            "[hosts.db-9]",
            &[
                "host db-1 removed",
                "host db-9 added (10.0.1.1, a, roles [db], products [])",
            ],
        ),
        (
            "address = \"10.0.0.1\"\naz = \"a\"",
            "address = \"10.0.0.7\"\naz = \"b\"",
            &[
                "host web-1: address 10.0.0.1 -> 10.0.0.7",
                "host web-1: az a -> b",
            ],
        ),
        (
            "master = \"db-1\"",
            "master = \"db-5\"",
            &["product videos: new database master db-5 (was db-1)"],
        ),
        (
            "[\"db-2\", \"db-3\"]",
            "[\"db-3\", \"db-2\"]",
            &["product videos: replicas reordered [db-3, db-2] (was [db-2, db-3])"],
        ),
        (
            "[\"db-2\", \"db-3\"]",
            "[\"db-2\"]",
            &["product videos: replicas [db-2] (was [db-2, db-3])"],
        ),
        (
            "backup = \"db-4\"",
            "backup = \"db-5\"",
            &["product videos: backup db-5 (was db-4)"],
        ),
        (
            "backup = \"db-4\"\n",
            "",
            &["product videos: backup none (was db-4)"],
        ),
    ];

    #[test]
    fn each_edit_gives_its_change_lines() {
        for (from, to, want) in EDITS {
            let new = base().replace(from, to);
            assert_eq!(lines(&base(), &new), *want, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn host_roles_and_products_changes() {
        let new = base().replacen(
            "roles = [\"web\"]\nproducts = [\"videos\"]",
            "roles = [\"web\", \"memcached\"]\nproducts = [\"blog\"]",
            1,
        );
        assert_eq!(
            lines(&base(), &new),
            [
                "host web-1: roles +memcached",
                "host web-1: products +blog -videos"
            ]
        );
    }

    #[test]
    fn product_added_removed_and_changed() {
        let new = base()
            .replace("[products.blog]", "[products.shop]")
            .replace("docroot = \"/srv/videos\"", "docroot = \"/srv/videos2\"");
        assert_eq!(
            lines(&base(), &new),
            [
                "product blog removed",
                "product shop added",
                "product videos: docroot /srv/videos -> /srv/videos2"
            ]
        );
    }

    #[test]
    fn database_fields_and_presence() {
        let new = base()
            .replace("name = \"videos\"", "name = \"videos2\"")
            .replace(
                "backup_url = \"s3://fleet-backups/videos/\"",
                "backup_url = \"s3://fleet-backups/videos/\"\nremoved = [\"db-0\"]",
            );
        assert_eq!(
            lines(&base(), &new),
            [
                "product videos: database.name videos -> videos2",
                "product videos: database.removed [] -> [db-0]"
            ]
        );
        let with_db = base().replace(
            "docroot = \"/srv/blog\"",
            "docroot = \"/srv/blog\"\ndatabase = { name = \"blog\", master = \"db-1\" }",
        );
        assert_eq!(lines(&base(), &with_db), ["product blog: database added"]);
    }
}

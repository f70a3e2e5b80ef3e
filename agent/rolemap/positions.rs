//! Database position rules of map validation (SPEC §5; issue 14). Within a product's
//! database: one position per host, no replication cycle, no removed host in a position.
//! Across products: a host in several products' databases is one server, so it holds the
//! same position with the same upstream in each, and products on one master keep schemas
//! of their own. Pure; more rules of `validate`'s `Validator`, which lists these issues with
//! the others.

use foldhash::{HashMap, HashMapExt};
use std::collections::BTreeMap;

use super::resolve::Position;
use super::types::{Database, RoleMap};
use super::validate::{find_cycle, key, q, upstreams, Validator};

impl Validator {
    /// One position per host per product, no replication cycle, no removed host holding a
    /// position; a host in several products' databases holds the same position in each
    /// (one server: one place in the chain, one upstream), and products sharing a master
    /// keep their own schemas.
    pub(super) fn positions(&mut self, map: &RoleMap) {
        let mut places: HashMap<&str, Place<'_>> = HashMap::new();
        let mut schemas: HashMap<(&str, &str), String> = HashMap::new();
        for (name, p) in &map.products {
            let Some(db) = &p.database else { continue };
            let at = format!("products.{}.database", key(name));
            let upstream = upstreams(db);
            for (path, id, position) in self.chain(&at, db) {
                let upstream = upstream.get(id).copied();
                self.agree(
                    &mut places,
                    id,
                    Place {
                        path,
                        position,
                        upstream,
                    },
                );
            }
            self.schema(&mut schemas, &at, db);
        }
    }

    /// The rules within one product's database; the first position of each host in it.
    fn chain<'a>(&mut self, at: &str, db: &'a Database) -> Vec<(String, &'a str, Position)> {
        let mut here: BTreeMap<&str, String> = BTreeMap::new();
        let mut held = Vec::new();
        for (path, id, position) in positions_of(at, db) {
            if let Some(first) = here.get(id) {
                self.push(&path, format!("host {} already holds {first}", q(id)));
                continue;
            }
            here.insert(id, path.clone());
            held.push((path, id, position));
        }
        if let Some(cycle) = find_cycle(db) {
            self.push(
                format!("{at}.replicas"),
                format!("replication cycle through {}", q(&cycle)),
            );
        }
        for (i, r) in db.removed.iter().enumerate() {
            if here.contains_key(r.as_str()) {
                self.push(
                    format!("{at}.removed[{i}]"),
                    format!(
                        "host {} was removed from this database but still holds a position",
                        q(r)
                    ),
                );
            }
        }
        held
    }

    /// `id` holds `place` in one more product's database: it must be where it is in the
    /// first one (issue 14: a server has one place in its chain and one upstream).
    fn agree<'a>(
        &mut self,
        places: &mut HashMap<&'a str, Place<'a>>,
        id: &'a str,
        place: Place<'a>,
    ) {
        let Some(first) = places.get(id) else {
            places.insert(id, place);
            return;
        };
        if first.position == place.position && first.upstream == place.upstream {
            return;
        }
        self.push(
            &place.path,
            format!(
                "host {} is {} here but {} at {}; a server in several products' databases holds one position with one upstream in all of them",
                q(id),
                place.describe(),
                first.describe(),
                first.path
            ),
        );
    }

    /// Products on one master share a server, so each needs a schema of its own.
    fn schema<'a>(
        &mut self,
        seen: &mut HashMap<(&'a str, &'a str), String>,
        at: &str,
        db: &'a Database,
    ) {
        if db.master.is_empty() || db.name.is_empty() {
            return;
        }
        let path = format!("{at}.name");
        match seen.get(&(db.master.as_str(), db.name.as_str())) {
            None => {
                seen.insert((&db.master, &db.name), path);
            }
            Some(first) => self.push(
                &path,
                format!(
                    "schema {} is also the database at {first}, on the same master {}; products sharing a server need schemas of their own",
                    q(&db.name),
                    q(&db.master)
                ),
            ),
        }
    }
}

/// A host's place in one product's database, for the agreement rule.
struct Place<'a> {
    path: String,
    position: Position,
    upstream: Option<&'a str>,
}

impl Place<'_> {
    /// "the master", "a replica of \"db-1\"", "the backup of \"db-1\"".
    fn describe(&self) -> String {
        let of = self
            .upstream
            .map(|u| format!(" of {}", q(u)))
            .unwrap_or_default();
        match self.position {
            Position::Master => "the master".to_string(),
            Position::Replica => format!("a replica{of}"),
            Position::Backup => format!("the backup{of}"),
        }
    }
}

/// `(path, host id, position)` of every position of a database, master first.
fn positions_of<'a>(at: &str, db: &'a Database) -> Vec<(String, &'a str, Position)> {
    let mut out = vec![(format!("{at}.master"), db.master.as_str(), Position::Master)];
    for (i, r) in db.replicas.iter().enumerate() {
        out.push((format!("{at}.replicas[{i}]"), r.as_str(), Position::Replica));
    }
    if let Some(b) = &db.backup {
        out.push((format!("{at}.backup"), b.as_str(), Position::Backup));
    }
    out.retain(|(_, id, _)| !id.is_empty());
    out
}

//! Host view resolution (SPEC §5, §6): everything one host needs from a valid map,
//! ordered so that rendering is byte-for-byte repeatable. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::accounts::{GroupView, UserView};
pub use super::pools::{Fleet, Pool, Pools};
use super::types::{Database, RoleMap};
use super::validate::upstreams;
use crate::identity::Identity;

/// What the map says about this host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Resolution {
    /// The host id is not in the map yet: wait and poll.
    Waiting,
    /// The host's view.
    Assigned(Box<HostView>),
}

/// Everything templates see about the host and the fleet (SPEC §6 names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostView {
    /// This host.
    pub host: HostInfo,
    /// The products this host serves or holds a database position in, by name.
    pub products: Vec<ProductView>,
    /// The whole fleet, by role.
    pub fleet: Fleet,
    /// The map's generation.
    pub generation: u64,
}

/// A host as other hosts see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Peer {
    /// Host id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Availability zone.
    pub az: String,
    /// MySQL/MariaDB port (`hosts.ID.db_port`, default 3306).
    pub db_port: u16,
}

/// The MySQL/MariaDB port when the map does not say.
pub const DEFAULT_DB_PORT: u16 = 3306;

/// This host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostInfo {
    /// Who the host is: its identity, with the address and availability zone the map gives
    /// it. Flattened, so templates see `host.id`, `host.address`, `host.region`, ….
    #[serde(flatten)]
    pub identity: Identity,
    /// Roles, in map order.
    pub roles: Vec<String>,
    /// Names of `products`, sorted.
    pub products: Vec<String>,
    /// The host's place in its database cluster, if it holds one: the same in every
    /// product whose database it holds (validation refuses a map where they disagree).
    pub database: Option<DbPosition>,
    /// Every product database on this host's server, by product (empty without a position).
    pub databases: Vec<ProductDatabase>,
}

crate::text::named! {
    /// A database host's place in its product's replication chain.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    pub enum Position {
        /// Takes the writes.
        Master = "master",
        /// Follows the master or the replica before it.
        Replica = "replica",
        /// Follows the master and dumps the database to `backup_url`.
        Backup = "backup",
    }
}

/// A host's place in its replication chain. Several products may keep their databases on
/// one cluster (one master, one replica chain, one backup); the host is then one server
/// with one position, and `products` names them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbPosition {
    /// Master, replica or backup.
    pub position: Position,
    /// The host it replicates from (none for the master).
    pub upstream: Option<Peer>,
    /// Deterministic MariaDB `server_id`.
    pub server_id: u32,
    /// Whether the server must refuse writes (every position but master).
    pub read_only: bool,
    /// Every product whose database the host holds, sorted (empty in a `position.json`
    /// written before shared clusters: see [`DbPosition::product_names`]).
    #[serde(default)]
    pub products: Vec<String>,
    /// The product's database when the host holds exactly one: `host.database.product`,
    /// `.name` and `.backup_url`, as templates read them before shared clusters. Absent with
    /// several products, so that such a template fails loudly (an undefined variable)
    /// instead of configuring one product of the server; those read `host.databases`.
    #[serde(flatten)]
    pub only: Option<ProductDatabase>,
}

impl DbPosition {
    /// The products holding this position, sorted.
    pub fn product_names(&self) -> Vec<&str> {
        if self.products.is_empty() {
            return self.only.iter().map(|d| d.product.as_str()).collect();
        }
        self.products.iter().map(String::as_str).collect()
    }
}

/// One product's database on a host's server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDatabase {
    /// Product whose database this is.
    pub product: String,
    /// Schema name.
    pub name: String,
    /// Where the product's snapshots go.
    pub backup_url: Option<String>,
}

/// A product with its topology resolved to addresses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductView {
    /// Product name.
    pub name: String,
    /// Domain.
    pub domain: String,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Document root.
    pub docroot: String,
    /// Health path for the smoke test.
    pub health_path: String,
    /// Database topology with addresses.
    pub database: Option<DatabaseView>,
    /// Hosts serving this product, by role (e.g. `pools.memcached`), sorted by id.
    pub pools: Pools,
    /// The product's user (SPEC §10; see `accounts::view`); absent when it declares none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The product's group (see `accounts::view`); absent when it declares none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Every user the product declares, by name.
    pub users: BTreeMap<String, UserView>,
    /// Every group the product declares, by name.
    pub groups: BTreeMap<String, GroupView>,
    /// Secret references by name (SPEC §10). A per-product template sees the values
    /// instead, as `product.secrets.NAME` (`render` puts them there).
    pub secrets: BTreeMap<String, String>,
}

/// A product's database with addresses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseView {
    /// Schema name.
    pub name: String,
    /// Master.
    pub master: Peer,
    /// Replica chain, in order.
    pub replicas: Vec<Peer>,
    /// Backup replica.
    pub backup: Option<Peer>,
    /// Snapshot destination.
    pub backup_url: Option<String>,
}

/// Resolve `identity`'s view of a map. The map need not be valid (`load_for` resolves while
/// validation runs, and drops the view of a refused map), so nothing here may panic on a
/// dangling reference, a cycle or a missing value.
pub fn resolve(map: &RoleMap, identity: &Identity) -> Resolution {
    let Some(host) = map.hosts.get(identity.id.as_str()) else {
        return Resolution::Waiting;
    };
    let (database, databases) = db_place(map, &identity.id);
    let mut names: Vec<String> = super::types::strings(&host.products);
    names.extend(databases.iter().map(|d| d.product.clone()));
    names.sort();
    names.dedup();
    let (fleet, pools) = super::pools::of(map, &names);
    let products = names
        .iter()
        .zip(pools)
        .map(|(n, pools)| product_view(map, n, pools))
        .collect();
    let info = HostInfo {
        identity: Identity {
            address: host.address.to_string(),
            az: host.az.to_string(),
            ..identity.clone()
        },
        roles: super::types::strings(&host.roles),
        products: names,
        database,
        databases,
    };
    Resolution::Assigned(Box::new(HostView {
        host: info,
        products,
        fleet,
        generation: map.generation(),
    }))
}

/// A peer record for a host id of a valid map.
pub fn peer(map: &RoleMap, id: &str) -> Peer {
    let host = map.hosts.get(id);
    Peer {
        id: id.to_string(),
        address: host.map(|h| h.address.to_string()).unwrap_or_default(),
        az: host.map(|h| h.az.to_string()).unwrap_or_default(),
        db_port: host.and_then(|h| h.db_port).unwrap_or(DEFAULT_DB_PORT),
    }
}

fn product_view(map: &RoleMap, name: &str, pools: Pools) -> ProductView {
    let p = map.products.get(name).cloned().unwrap_or_default();
    let accounts = super::accounts::view(name, &p);
    ProductView {
        user: accounts.user,
        group: accounts.group,
        users: accounts.users,
        groups: accounts.groups,
        name: name.to_string(),
        database: p.database.as_ref().map(|db| database_view(map, db)),
        pools,
        domain: p.domain,
        aliases: p.aliases,
        docroot: p.docroot,
        health_path: p.health_path,
        secrets: p.secrets,
    }
}

fn database_view(map: &RoleMap, db: &Database) -> DatabaseView {
    DatabaseView {
        name: db.name.clone(),
        master: peer(map, &db.master),
        replicas: db.replicas.iter().map(|r| peer(map, r)).collect(),
        backup: db.backup.as_ref().map(|b| peer(map, b)),
        backup_url: db.backup_url.clone(),
    }
}

/// The position `id` holds in the products' databases, if any (see [`db_place`]).
pub fn db_position(map: &RoleMap, id: &str) -> Option<DbPosition> {
    db_place(map, id).0
}

/// Where `id` sits in the products' databases: its position, and every product database it
/// holds, by product. Validation makes the position the same in each product; in a map it
/// refuses, the first product's (by name) is taken, without panicking.
pub fn db_place(map: &RoleMap, id: &str) -> (Option<DbPosition>, Vec<ProductDatabase>) {
    let mut position = None;
    let mut databases = Vec::new();
    for (name, p) in &map.products {
        let Some(db) = &p.database else { continue };
        let Some(kind) = position_in(db, id) else {
            continue;
        };
        position.get_or_insert_with(|| DbPosition {
            position: kind,
            upstream: upstreams(db).get(id).map(|up| peer(map, up)),
            server_id: server_id(id, &peer(map, id).address),
            read_only: kind != Position::Master,
            products: Vec::new(),
            only: None,
        });
        databases.push(ProductDatabase {
            product: name.clone(),
            name: db.name.clone(),
            backup_url: db.backup_url.clone(),
        });
    }
    if let Some(p) = position.as_mut() {
        p.products = databases.iter().map(|d| d.product.clone()).collect();
        if let [only] = databases.as_slice() {
            p.only = Some(only.clone());
        }
    }
    (position, databases)
}

/// The position `id` holds in `db`, if any (a refused map may list it twice: the master
/// wins, then the replicas, then the backup).
pub fn position_in(db: &Database, id: &str) -> Option<Position> {
    if db.master == id {
        Some(Position::Master)
    } else if db.replicas.iter().any(|r| r == id) {
        Some(Position::Replica)
    } else if db.backup.as_deref() == Some(id) {
        Some(Position::Backup)
    } else {
        None
    }
}

/// MariaDB `server_id`: the IPv4 address as a number (unique in a valid map), else a
/// hash of the host id; never 0, which disables replication.
pub fn server_id(id: &str, address: &str) -> u32 {
    if let Ok(v4) = address.parse::<std::net::Ipv4Addr>() {
        let n = u32::from(v4);
        if n != 0 {
            return n;
        }
    }
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash.max(1)
}

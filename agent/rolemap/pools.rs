//! The role pools templates see, sorted by id: the fleet's (`fleet.roles.ROLE`, SPEC §6),
//! every host with each role, and each product's (`product.pools.ROLE`), the hosts serving
//! it with each role. All of them point into one [`Table`] of the map's hosts, made in one
//! pass over the map: a pool is a list of row numbers, and becomes peer records only when
//! serialised, in the shape of [`Peer`]. With a shared peer record per host, making and
//! freeing the pools of a 10,000-host map cost a moved-master sync some 10 ms and 2 MB,
//! for a view few templates read (issue 13).

use foldhash::HashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Serialize, Serializer};

#[cfg(doc)]
use super::resolve::Peer;
use super::resolve::DEFAULT_DB_PORT;
use super::types::{Host, Name, RoleMap};

/// The hosts of a map that have a role: ids, addresses and zones as one string.
#[derive(Debug, Default)]
pub struct Table {
    /// Every row's id, address and zone, one after another.
    text: String,
    rows: Vec<Row>,
}

/// Where one host's strings end in [`Table::text`] (id, address, zone; each starts where the
/// previous ends, the first where the previous row's zone ends), and its database port.
#[derive(Debug, Clone, Copy)]
struct Row {
    ends: [usize; 3],
    db_port: u16,
}

impl Table {
    fn push(&mut self, id: &str, address: &str, az: &str, db_port: u16) -> usize {
        let mut ends = [0; 3];
        for (end, part) in ends.iter_mut().zip([id, address, az]) {
            self.text.push_str(part);
            *end = self.text.len();
        }
        self.rows.push(Row { ends, db_port });
        self.rows.len() - 1
    }

    fn peer(&self, row: usize) -> PeerRef<'_> {
        let start = row
            .checked_sub(1)
            .map_or(0, |before| self.rows[before].ends[2]);
        let Row { ends, db_port } = self.rows[row];
        PeerRef {
            id: &self.text[start..ends[0]],
            address: &self.text[ends[0]..ends[1]],
            az: &self.text[ends[1]..ends[2]],
            db_port,
        }
    }
}

/// One host of a pool, as templates see it (the fields of [`Peer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeerRef<'t> {
    pub id: &'t str,
    pub address: &'t str,
    /// Availability zone.
    pub az: &'t str,
    /// MySQL/MariaDB port.
    pub db_port: u16,
}

/// Row numbers by role name.
type Rows = BTreeMap<String, Vec<usize>>;

/// Hosts by role, sorted by id; serialised as `{ ROLE: [PEER, …] }`. Equal when they hold
/// the same roles and peers, whatever tables they point into.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    table: Arc<Table>,
    roles: Rows,
}

impl Pools {
    /// The hosts with `role` (none when there are none).
    pub fn pool(&self, role: &str) -> impl Iterator<Item = PeerRef<'_>> {
        self.get(role).into_iter().flat_map(Pool::peers)
    }

    /// Every pool, in the order of the roles' names.
    pub fn all(&self) -> impl Iterator<Item = (&str, Pool<'_>)> {
        let table = &*self.table;
        self.roles
            .iter()
            .map(move |(role, rows)| (role.as_str(), Pool { table, rows }))
    }

    /// The pool of `role`, if any host has it.
    pub fn get(&self, role: &str) -> Option<Pool<'_>> {
        let rows = self.roles.get(role)?;
        Some(Pool {
            table: &self.table,
            rows,
        })
    }
}

impl PartialEq for Pools {
    fn eq(&self, other: &Pools) -> bool {
        self.roles.len() == other.roles.len()
            && self
                .roles
                .keys()
                .zip(other.roles.keys())
                .all(|(a, b)| a == b && self.pool(a).eq(other.pool(b)))
    }
}

impl Serialize for Pools {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let table = &*self.table;
        let pools = self
            .roles
            .iter()
            .map(|(role, rows)| (role, Pool { table, rows }));
        serializer.collect_map(pools)
    }
}

/// The hosts of one role, serialised as a list of peers.
#[derive(Debug, Clone, Copy)]
pub struct Pool<'p> {
    table: &'p Table,
    rows: &'p [usize],
}

impl<'p> Pool<'p> {
    /// The hosts, sorted by id.
    pub fn peers(self) -> impl Iterator<Item = PeerRef<'p>> {
        self.rows.iter().map(move |&row| self.table.peer(row))
    }
}

impl Pool<'_> {
    /// Write the pool to `out` as the render memo's key has it: the count of peers, then
    /// each peer's length-prefixed id, address and zone, and its port. Two pools that differ
    /// write different bytes, and a pool's bytes end where they say.
    ///
    /// # Errors
    /// Only `out`'s.
    pub fn write_key(self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        out.write_all(&(self.rows.len() as u64).to_le_bytes())?;
        for peer in self.peers() {
            for part in [peer.id, peer.address, peer.az] {
                out.write_all(&(part.len() as u64).to_le_bytes())?;
                out.write_all(part.as_bytes())?;
            }
            out.write_all(&peer.db_port.to_le_bytes())?;
        }
        Ok(())
    }
}

impl Serialize for Pool<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.peers())
    }
}

/// Every host of the fleet by role.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Fleet {
    /// Every host with each role.
    pub roles: Pools,
}

/// The fleet's pools, and the pools of each product in `products` (sorted, without
/// repeats), in their order, from one pass over the hosts of `map`, valid or not: a host
/// listing a role or a product twice is in the pool twice, as it is listed.
pub(super) fn of(map: &RoleMap, products: &[String]) -> (Fleet, Vec<Pools>) {
    let slots: HashMap<&str, usize> = products.iter().map(String::as_str).zip(0..).collect();
    let mut table = Table::default();
    let mut fleet = Rows::new();
    let mut pools: Vec<Rows> = products.iter().map(|_| Rows::new()).collect();
    for (id, host) in map.hosts.iter().filter(|(_, h)| !h.roles.is_empty()) {
        let row = push(&mut table, id, host);
        add(&mut fleet, &host.roles, row);
        for &slot in host.products.iter().filter_map(|p| slots.get(p.as_str())) {
            add(&mut pools[slot], &host.roles, row);
        }
    }
    // Grown a row at a time: give back what was reserved ahead (held until the commit).
    table.text.shrink_to_fit();
    table.rows.shrink_to_fit();
    let every_pool = pools.iter_mut().chain([&mut fleet]);
    every_pool
        .flat_map(|p| p.values_mut())
        .for_each(Vec::shrink_to_fit);
    let table = Arc::new(table);
    let pools_of = |roles| Pools {
        table: Arc::clone(&table),
        roles,
    };
    let fleet = Fleet {
        roles: pools_of(fleet),
    };
    (fleet, pools.into_iter().map(pools_of).collect())
}

fn push(table: &mut Table, id: &str, host: &Host) -> usize {
    let db_port = host.db_port.unwrap_or(DEFAULT_DB_PORT);
    table.push(id, &host.address, &host.az, db_port)
}

/// `row` into the pool of each of `roles`, copying a role's name only for a new pool.
fn add(pools: &mut Rows, roles: &[Name], row: usize) {
    for role in roles {
        match pools.get_mut(role.as_str()) {
            Some(rows) => rows.push(row),
            None => {
                pools.insert(role.to_string(), vec![row]);
            }
        }
    }
}

/// Pools of these peers (for tests that build a view by hand).
#[cfg(test)]
impl FromIterator<(String, Vec<super::resolve::Peer>)> for Pools {
    fn from_iter<I: IntoIterator<Item = (String, Vec<super::resolve::Peer>)>>(pools: I) -> Pools {
        let mut table = Table::default();
        let mut roles = Rows::new();
        for (role, peers) in pools {
            let rows = peers
                .iter()
                .map(|p| table.push(&p.id, &p.address, &p.az, p.db_port));
            roles.entry(role).or_default().extend(rows);
        }
        Pools {
            table: Arc::new(table),
            roles,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolemap::resolve::{peer, Peer};

    fn map() -> RoleMap {
        let mut map = crate::rolemap::types::parse(crate::rolemap::SAMPLE).unwrap();
        let extra = map.hosts.get_mut("web-1").unwrap();
        extra.db_port = Some(3307);
        extra.roles = extra.roles.iter().cloned().chain(["web".into()]).collect();
        map.hosts.get_mut("db-1").unwrap().roles = Default::default();
        map
    }

    /// What templates saw when each pool was a list of peer records: by role, every host
    /// with it (`product`: that serves it), as often as it is listed.
    fn as_records(map: &RoleMap, product: Option<&str>) -> BTreeMap<String, Vec<Peer>> {
        let mut pools: BTreeMap<String, Vec<Peer>> = BTreeMap::new();
        for (id, host) in &map.hosts {
            let times = product.map_or(1, |p| host.products.iter().filter(|q| *q == p).count());
            for role in host.roles.iter() {
                for _ in 0..times {
                    pools
                        .entry(role.to_string())
                        .or_default()
                        .push(peer(map, id));
                }
            }
        }
        pools
    }

    #[test]
    fn the_pools_serialise_as_the_peer_records_they_stand_for() {
        let map = map();
        let names = ["missing".to_string(), "videos".to_string()];
        let (fleet, products) = of(&map, &names);
        let records = serde_json::json!({ "roles": as_records(&map, None) });
        assert_eq!(serde_json::to_value(&fleet).unwrap(), records);
        let videos = serde_json::to_value(as_records(&map, Some("videos"))).unwrap();
        assert_eq!(serde_json::to_value(&products[1]).unwrap(), videos);
        assert_eq!(products[0], Pools::default(), "no host serves it");
        let web: Vec<_> = fleet.roles.pool("web").map(|p| (p.id, p.db_port)).collect();
        assert_eq!(web, [("web-1", 3307), ("web-1", 3307), ("web-2", 3306)]);
        assert!(fleet.roles.pool("db").all(|p| p.id != "db-1"));
        assert_eq!(fleet.roles.pool("no-such-role").count(), 0);
    }

    #[test]
    fn pools_are_equal_by_what_they_hold() {
        let map = map();
        let (fleet, _) = of(&map, &[]);
        let by_hand: Pools = as_records(&map, None).into_iter().collect();
        assert_eq!(fleet.roles, by_hand);
        let mut fewer = as_records(&map, None);
        fewer.get_mut("web").unwrap().pop();
        assert_ne!(fleet.roles, fewer.into_iter().collect::<Pools>());
        let mut moved = as_records(&map, None);
        moved.get_mut("web").unwrap()[0].address = "10.9.9.9".into();
        assert_ne!(fleet.roles, moved.into_iter().collect::<Pools>());
    }
}

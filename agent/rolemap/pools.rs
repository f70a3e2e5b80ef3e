//! The fleet's role pools as templates see them (`fleet.roles.ROLE`, SPEC §6): every host
//! with each role, sorted by id. Few templates read them (in the default catalog, only the
//! monitoring role's), yet every resolve makes them for the whole map: as one shared peer
//! record per host, a 10,000-host map cost a moved-master sync some 10 ms and 2 MB
//! (issue 13). They are kept as one string table with indices instead, and become peer
//! records only when serialised, in the same shape as [`Peer`]'s.

use std::collections::BTreeMap;

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

#[cfg(doc)]
use super::resolve::Peer;
use super::resolve::DEFAULT_DB_PORT;
use super::types::RoleMap;

/// Every host of the fleet by role.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fleet {
    /// The ids, addresses and zones of the hosts in `rows`, one after another.
    text: String,
    /// One per host with a role, in id order.
    rows: Vec<Row>,
    /// Indices into `rows`, by role.
    roles: BTreeMap<String, Vec<usize>>,
}

/// Where one host's strings end in [`Fleet::text`] (id, address, zone; each starts where the
/// previous ends, the first where the previous row's zone ends), and its database port.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    ends: [usize; 3],
    db_port: u16,
}

/// One host of a pool, as templates see it (the fields of [`Peer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeerRef<'f> {
    /// Host id.
    pub id: &'f str,
    /// Address.
    pub address: &'f str,
    /// Availability zone.
    pub az: &'f str,
    /// MySQL/MariaDB port.
    pub db_port: u16,
}

impl Fleet {
    /// The pools of every host in `map` (valid or not: a host listing a role twice is in its
    /// pool twice, as it is listed).
    pub fn of(map: &RoleMap) -> Fleet {
        let mut fleet = Fleet::default();
        for (id, host) in &map.hosts {
            if host.roles.is_empty() {
                continue;
            }
            let row = fleet.rows.len();
            let mut ends = [0; 3];
            for (end, part) in ends.iter_mut().zip([id, &host.address, &host.az]) {
                fleet.text.push_str(part);
                *end = fleet.text.len();
            }
            let db_port = host.db_port.unwrap_or(DEFAULT_DB_PORT);
            fleet.rows.push(Row { ends, db_port });
            for role in &host.roles {
                match fleet.roles.get_mut(role.as_str()) {
                    Some(pool) => pool.push(row),
                    None => {
                        fleet.roles.insert(role.clone(), vec![row]);
                    }
                }
            }
        }
        fleet
    }

    /// The hosts with `role`, sorted by id.
    pub fn pool(&self, role: &str) -> impl Iterator<Item = PeerRef<'_>> {
        let rows = self.roles.get(role).map_or(&[][..], Vec::as_slice);
        rows.iter().map(|&row| self.peer(row))
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

/// As `{ "roles": { ROLE: [PEER, …] } }`.
impl Serialize for Fleet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fleet = serializer.serialize_struct("Fleet", 1)?;
        fleet.serialize_field("roles", &Roles(self))?;
        fleet.end()
    }
}

struct Roles<'f>(&'f Fleet);

impl Serialize for Roles<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fleet = self.0;
        serializer.collect_map(fleet.roles.keys().map(|role| (role, Pool(fleet, role))))
    }
}

struct Pool<'f>(&'f Fleet, &'f str);

impl Serialize for Pool<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.pool(self.1))
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
        extra.roles.push("web".into());
        map.hosts.get_mut("db-1").unwrap().roles.clear();
        map
    }

    /// What templates saw when each pool was a list of peer records.
    fn as_records(map: &RoleMap) -> BTreeMap<String, Vec<Peer>> {
        let mut pools: BTreeMap<String, Vec<Peer>> = BTreeMap::new();
        for (id, host) in &map.hosts {
            for role in &host.roles {
                pools.entry(role.clone()).or_default().push(peer(map, id));
            }
        }
        pools
    }

    #[test]
    fn the_pools_serialise_as_the_peer_records_they_stand_for() {
        let map = map();
        let fleet = Fleet::of(&map);
        let records = serde_json::json!({ "roles": as_records(&map) });
        assert_eq!(serde_json::to_value(&fleet).unwrap(), records);
        let web: Vec<_> = fleet.pool("web").map(|p| (p.id, p.db_port)).collect();
        assert_eq!(web, [("web-1", 3307), ("web-1", 3307), ("web-2", 3306)]);
        assert!(fleet.pool("db").all(|p| p.id != "db-1"));
        assert_eq!(fleet.pool("no-such-role").count(), 0);
    }
}

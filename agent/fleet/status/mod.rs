//! `fleet status` (SPEC §9.1): the map joined with one generation's markers. [`gather`] is
//! the I/O: the map through the map sources, one paginated LIST of `g/<generation>/` (about
//! one request per 1,000 hosts), a LIST of `hosts/` only when some host of the map has no
//! marker, and a GET of `hosts/<id>.json` only for failed and halted hosts. [`join`] is pure.
//!
//! **How silence is known from LIST data.** A host of the map without a marker of the
//! generation is *lagging* when its record `hosts/<id>.json` was written within
//! `2 × heartbeat` (it is alive and has not reported this generation yet: it has not polled
//! since the publish, or its report is being retried), and *silent* otherwise. The record's
//! `LastModified` comes from the `hosts/` listing; every report and heartbeat rewrites it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::store::{self, Listed};
use super::waves::{Schedule, Waves};
use super::State;
use crate::rolemap::types::strings;
use crate::rolemap::RoleMap;

mod gather;
mod table;

pub use gather::{gather, Options};
pub use table::table;

/// Errors of `fleet status`: the map or the reports cannot be read (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The map could not be fetched.
    #[error("reading the role map")]
    Source(#[from] crate::source::Error),
    /// The map is not a valid role map.
    #[error("role map from {url}")]
    Map {
        /// The map URL.
        url: String,
        /// Why it cannot be used.
        #[source]
        source: crate::rolemap::Error,
    },
    /// The reports could not be listed.
    #[error("reading the fleet's reports")]
    Reports(#[from] store::Error),
}

/// A host's health for the generation, as `fleet status` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Converged on the generation.
    Ok,
    /// Its reconcile of the generation failed or rolled back.
    Failed,
    /// Waiting for its wave.
    Held,
    /// The halt rule stopped the rollout for it.
    Halted,
    /// Says it is not in the map.
    Waiting,
    /// No marker yet, but alive (a record within `2 × heartbeat`).
    Lagging,
    /// No marker and no record within `2 × heartbeat`.
    Silent,
}

impl Health {
    /// Every health, in table order.
    pub const ALL: [Health; 7] = [
        Health::Ok,
        Health::Failed,
        Health::Held,
        Health::Halted,
        Health::Waiting,
        Health::Lagging,
        Health::Silent,
    ];

    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Failed => "failed",
            Health::Held => "held",
            Health::Halted => "halted",
            Health::Waiting => "waiting",
            Health::Lagging => "lagging",
            Health::Silent => "silent",
        }
    }

    fn of(state: State) -> Health {
        match state {
            State::Ok => Health::Ok,
            State::Fail => Health::Failed,
            State::Held => Health::Held,
            State::Halted => Health::Halted,
            State::Waiting => Health::Waiting,
        }
    }
}

/// How many hosts are in each health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Converged.
    pub ok: usize,
    /// Failed or rolled back.
    pub failed: usize,
    /// Waiting for their wave.
    pub held: usize,
    /// Stopped by the halt rule.
    pub halted: usize,
    /// Not in the map.
    pub waiting: usize,
    /// Alive, not on the generation yet.
    pub lagging: usize,
    /// Not heard from.
    pub silent: usize,
}

impl Counts {
    fn add(&mut self, health: Health) {
        *self.slot(health) += 1;
    }

    fn slot(&mut self, health: Health) -> &mut usize {
        match health {
            Health::Ok => &mut self.ok,
            Health::Failed => &mut self.failed,
            Health::Held => &mut self.held,
            Health::Halted => &mut self.halted,
            Health::Waiting => &mut self.waiting,
            Health::Lagging => &mut self.lagging,
            Health::Silent => &mut self.silent,
        }
    }

    /// The count of `health`.
    pub fn get(&self, health: Health) -> usize {
        let mut copy = *self;
        *copy.slot(health)
    }

    /// Every host counted.
    pub fn total(&self) -> usize {
        Health::ALL.iter().map(|h| self.get(*h)).sum()
    }
}

/// One host of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostStatus {
    pub id: String,
    pub zone: String,
    pub address: String,
    pub roles: Vec<String>,
    /// Products served, and the product of its database position.
    pub products: Vec<String>,
    /// Its wave, when the map has a rollout for this generation.
    pub wave: Option<usize>,
    /// Its health.
    pub health: Health,
    /// Why it failed or halted, from its record (only for those).
    pub reason: Option<String>,
    /// The generation it runs, from its record (only for those).
    pub running: Option<u64>,
}

/// A marker of a host that is not in the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stranger {
    pub id: String,
    /// Its health.
    pub health: Health,
}

/// One line of the table: hosts of one product, role, zone and wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Product (`-` for none).
    pub product: String,
    pub role: String,
    pub zone: String,
    /// Wave (none without a rollout).
    pub wave: Option<usize>,
    /// The hosts' health.
    pub counts: Counts,
}

/// The rollout of the generation, as the map states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutView {
    /// Cumulative percents.
    pub waves: Vec<u8>,
    /// Seconds between openings.
    pub bake_secs: u64,
    /// When each wave opens, seconds since the epoch.
    pub opens_unix: Vec<u64>,
    /// Waves open at the time of the status.
    pub open: usize,
    /// The tolerance of the halt rule.
    pub max_failed: u64,
}

/// The fleet for one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fleet {
    /// The map read.
    pub map_url: String,
    /// The report prefix read.
    pub report_url: String,
    /// The generation shown.
    pub generation: u64,
    /// The map's own generation.
    pub map_generation: u64,
    /// When it was gathered, seconds since the epoch.
    pub at_unix: u64,
    /// The rollout, when the map has one for this generation.
    pub rollout: Option<RolloutView>,
    /// Every host of the map, by id.
    pub hosts: Vec<HostStatus>,
    /// Markers of hosts not in the map.
    pub strangers: Vec<Stranger>,
    /// Counts per product, role, zone and wave.
    pub rows: Vec<Row>,
    /// Every host once (strangers included).
    pub totals: Counts,
    /// Failed and halted hosts whose record was not read (past [`gather::MAX_RECORD_GETS`]).
    pub unread: usize,
}

/// The overall verdict, which `cli` turns into the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every host ok.
    AllOk,
    /// Some held, waiting, lagging or silent.
    Lagging,
    /// Some failed or halted.
    Failing,
}

impl Fleet {
    /// The verdict over every host.
    pub fn verdict(&self) -> Verdict {
        let t = &self.totals;
        if t.failed + t.halted > 0 {
            Verdict::Failing
        } else if t.total() > t.ok {
            Verdict::Lagging
        } else {
            Verdict::AllOk
        }
    }
}

/// What the LISTs found.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The generation's markers, by host id.
    pub markers: HashMap<String, State>,
    /// When each host's record was written, when `hosts/` was listed.
    pub records: HashMap<String, SystemTime>,
}

/// Join `map` with what was `seen` for `generation` at `now`.
pub fn join(
    map: &RoleMap,
    generation: u64,
    seen: &Seen,
    now: SystemTime,
    heartbeat: Duration,
) -> Fleet {
    let schedule = Schedule::of(map).filter(|_| generation == map.generation());
    let waves = schedule.as_ref().map(|s| Waves::of_map(map, s));
    let health = |id: &str| health(id, seen, now, heartbeat);
    let hosts = host_statuses(map, waves.as_ref(), health);
    let strangers = strangers(map, seen);
    let mut totals = Counts::default();
    let every = hosts.iter().map(|h| h.health);
    every
        .chain(strangers.iter().map(|s| s.health))
        .for_each(|h| totals.add(h));
    Fleet {
        map_url: String::new(),
        report_url: String::new(),
        generation,
        map_generation: map.generation(),
        at_unix: unix(now),
        rollout: schedule.map(|s| rollout_view(&s, now)),
        rows: rows(&hosts),
        hosts,
        strangers,
        totals,
        unread: 0,
    }
}

/// Every host of the map with its wave and `health`.
fn host_statuses(
    map: &RoleMap,
    waves: Option<&Waves>,
    health: impl Fn(&str) -> Health,
) -> Vec<HostStatus> {
    let databases = database_products(map);
    map.hosts
        .iter()
        .map(|(id, h)| HostStatus {
            id: id.to_string(),
            zone: h.az.to_string(),
            address: h.address.to_string(),
            roles: strings(&h.roles),
            products: products_of(h, databases.get(id.as_str())),
            wave: waves.and_then(|w| w.wave_of(id)),
            health: health(id),
            reason: None,
            running: None,
        })
        .collect()
}

fn health(id: &str, seen: &Seen, now: SystemTime, heartbeat: Duration) -> Health {
    if let Some(state) = seen.markers.get(id) {
        return Health::of(*state);
    }
    let alive = seen.records.get(id).is_some_and(|written| {
        now.duration_since(*written).unwrap_or_default() <= heartbeat.saturating_mul(2)
    });
    if alive {
        Health::Lagging
    } else {
        Health::Silent
    }
}

/// The products a host serves, and the one whose database it belongs to.
fn products_of(host: &crate::rolemap::types::Host, databases: Option<&Vec<&str>>) -> Vec<String> {
    let mut products = strings(&host.products);
    products.extend(databases.into_iter().flatten().map(|p| (*p).to_string()));
    products.sort();
    products.dedup();
    products
}

/// Host id → the products whose databases it serves (a shared server serves several).
fn database_products(map: &RoleMap) -> HashMap<&str, Vec<&str>> {
    let mut out: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, p) in &map.products {
        let Some(db) = &p.database else { continue };
        let ids = std::iter::once(&db.master)
            .chain(&db.replicas)
            .chain(&db.backup);
        for id in ids {
            out.entry(id.as_str()).or_default().push(name.as_str());
        }
    }
    out
}

fn strangers(map: &RoleMap, seen: &Seen) -> Vec<Stranger> {
    let mut out: Vec<Stranger> = seen
        .markers
        .iter()
        .filter(|(id, _)| !map.hosts.contains_key(id.as_str()))
        .map(|(id, state)| Stranger {
            id: id.clone(),
            health: Health::of(*state),
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn rows(hosts: &[HostStatus]) -> Vec<Row> {
    let mut by: BTreeMap<(String, String, String, Option<usize>), Counts> = BTreeMap::new();
    let none = vec!["-".to_string()];
    for h in hosts {
        let products = if h.products.is_empty() {
            &none
        } else {
            &h.products
        };
        let roles = if h.roles.is_empty() { &none } else { &h.roles };
        for product in products {
            for role in roles {
                let key = (product.clone(), role.clone(), h.zone.clone(), h.wave);
                by.entry(key).or_default().add(h.health);
            }
        }
    }
    by.into_iter()
        .map(|((product, role, zone, wave), counts)| Row {
            product,
            role,
            zone,
            wave,
            counts,
        })
        .collect()
}

fn rollout_view(s: &Schedule, now: SystemTime) -> RolloutView {
    let opens: Vec<SystemTime> = (0..s.waves.len()).map(|k| s.opens_at(k)).collect();
    RolloutView {
        waves: s.waves.clone(),
        bake_secs: s.bake.as_secs(),
        open: opens.iter().filter(|at| **at <= now).count(),
        opens_unix: opens.into_iter().map(unix).collect(),
        max_failed: s.max_failed,
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The latest marker of each host in a generation's listing (keys `<state>/<id>`). A host
/// moving its marker may show two for a moment; the newer wins, and on a tie (S3 keeps
/// whole seconds) the later state in a reconcile's life: fail, ok, halted, held, waiting.
pub fn latest_markers(listed: &[Listed]) -> HashMap<String, State> {
    let rank = |s: State| match s {
        State::Fail => 4,
        State::Ok => 3,
        State::Halted => 2,
        State::Held => 1,
        State::Waiting => 0,
    };
    let mut best: HashMap<String, (SystemTime, State)> = HashMap::new();
    for l in listed {
        let Some((state, id)) = super::parse_marker(&l.key) else {
            continue;
        };
        let candidate = (l.modified, state);
        let newer =
            |old: &(SystemTime, State)| (candidate.0, rank(candidate.1)) > (old.0, rank(old.1));
        if best.get(id).is_none_or(newer) {
            best.insert(id.to_string(), candidate);
        }
    }
    best.into_iter()
        .map(|(id, (_, state))| (id, state))
        .collect()
}

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::rolemap::sample::{host, product};

const MAP: &str = concat!(
    "schema = 1\ngeneration = 42\n",
    product!("videos", "videos.example.com", "/srv/videos"),
    "\n[products.videos.database]\nname = \"videos\"\nmaster = \"db-1\"\nreplicas = [\"db-2\"]\n",
    host!("db-1", "10.0.1.1", "a", ["db"]),
    host!("db-2", "10.0.2.1", "b", ["db"]),
    host!("web-1", "10.0.1.2", "a", ["web", "memcached"], ["videos"]),
    host!("web-2", "10.0.2.2", "b", ["web"], ["videos"]),
);

const HOUR: Duration = Duration::from_secs(3600);

fn map(text: &str) -> RoleMap {
    crate::rolemap::load(text.as_bytes()).expect("valid map")
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(2_000_000_000)
}

fn seen(markers: &[(&str, State)], records: &[(&str, u64)]) -> Seen {
    Seen {
        markers: markers
            .iter()
            .map(|(id, s)| ((*id).to_string(), *s))
            .collect(),
        records: records
            .iter()
            .map(|(id, ago)| ((*id).to_string(), now() - Duration::from_secs(*ago)))
            .collect(),
    }
}

/// The hosts of `MAP`.
const HOSTS: [&str; 4] = ["db-1", "db-2", "web-1", "web-2"];

/// A marker for every host of `MAP`, all ok but `id` in `state` (added after them when `id` is
/// not one of them).
fn markers_ok_but(id: &'static str, state: State) -> Vec<(&'static str, State)> {
    let mut markers: Vec<_> = HOSTS.iter().map(|h| (*h, State::Ok)).collect();
    match markers.iter_mut().find(|(h, _)| *h == id) {
        Some(marker) => marker.1 = state,
        None => markers.push((id, state)),
    }
    markers
}

/// The fleet of `MAP` at generation 42 with these markers and no records.
fn fleet_of(markers: &[(&str, State)]) -> Fleet {
    join(&map(MAP), 42, &seen(markers, &[]), now(), HOUR)
}

fn health_of(fleet: &Fleet, id: &str) -> Health {
    fleet
        .hosts
        .iter()
        .find(|h| h.id == id)
        .expect("host")
        .health
}

#[test]
fn every_host_ok_is_all_ok() {
    let fleet = fleet_of(&HOSTS.map(|h| (h, State::Ok)));
    assert_eq!(fleet.totals.ok, 4);
    assert_eq!(fleet.totals.total(), 4);
    assert_eq!(fleet.verdict(), Verdict::AllOk);
    assert_eq!(fleet.rollout, None);
    // Database hosts count under their product; web-1 under both roles.
    let keys: Vec<(&str, &str, &str)> = fleet
        .rows
        .iter()
        .map(|r| (r.product.as_str(), r.role.as_str(), r.zone.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("videos", "db", "a"),
            ("videos", "db", "b"),
            ("videos", "memcached", "a"),
            ("videos", "web", "a"),
            ("videos", "web", "b"),
        ]
    );
}

#[test]
fn no_marker_is_lagging_with_a_recent_record_and_silent_without() {
    let markers = [("db-1", State::Ok), ("db-2", State::Held)];
    let records = [("web-1", 2 * 3600), ("web-2", 2 * 3600 + 1)];
    let fleet = join(&map(MAP), 42, &seen(&markers, &records), now(), HOUR);
    assert_eq!(health_of(&fleet, "web-1"), Health::Lagging);
    assert_eq!(health_of(&fleet, "web-2"), Health::Silent);
    assert_eq!(health_of(&fleet, "db-2"), Health::Held);
    assert_eq!(fleet.verdict(), Verdict::Lagging);
    crate::text::assert_mentions(
        &table(&fleet),
        &[
            "silent hosts: web-2",
            "lagging hosts: web-1",
            "1 of 4 hosts ok, 1 held, 1 lagging, 1 silent",
        ],
    );
}

#[test]
fn failed_or_halted_anywhere_is_failing() {
    let fleet = fleet_of(&markers_ok_but("web-2", State::Halted));
    assert_eq!(fleet.verdict(), Verdict::Failing);
    let fleet = fleet_of(&markers_ok_but("srv-9", State::Fail));
    assert_eq!(fleet.strangers.len(), 1);
    assert_eq!(fleet.verdict(), Verdict::Failing);
    let fleet = fleet_of(&markers_ok_but("srv-9", State::Waiting));
    assert_eq!(fleet.verdict(), Verdict::Lagging);
    assert!(table(&fleet).contains("not in the map: srv-9 (waiting)"));
}

#[test]
fn a_rollout_gives_every_host_its_wave_and_the_open_waves() {
    let text = format!(
        "{MAP}\n[rollout]\nwaves = [25, 50, 100]\nbake = \"10m\"\nstart = 2033-05-18T03:33:20Z\n"
    );
    let m = map(&text);
    let fleet = join(
        &m,
        42,
        &Seen::default(),
        now() + Duration::from_secs(601),
        HOUR,
    );
    let view = fleet.rollout.as_ref().expect("rollout");
    assert_eq!(
        view.opens_unix,
        [2_000_000_000, 2_000_000_600, 2_000_001_200]
    );
    assert_eq!(view.open, 2);
    let waves: Vec<Option<usize>> = fleet.hosts.iter().map(|h| h.wave).collect();
    assert!(waves.iter().all(Option::is_some), "{waves:?}");
    assert!(table(&fleet).contains("2 of 3 open"), "{}", table(&fleet));
    // Another generation than the map's has no waves from this map.
    let older = join(&m, 41, &Seen::default(), now(), HOUR);
    assert!(older.rollout.is_none() && older.hosts.iter().all(|h| h.wave.is_none()));
}

fn listed(key: &str, secs: u64) -> Listed {
    Listed {
        key: key.to_string(),
        modified: UNIX_EPOCH + Duration::from_secs(secs),
    }
}

#[test]
fn the_newer_marker_wins_and_a_tie_goes_to_the_later_state() {
    let markers = latest_markers(&[
        listed("held/web-1", 10),
        listed("ok/web-1", 11),
        listed("held/web-2", 10),
        listed("fail/web-2", 10),
        listed("ok/web-3", 12),
        listed("held/web-3", 11),
        listed("junk", 20),
        listed("bogus/web-4", 20),
    ]);
    let expected: HashMap<String, State> = [
        ("web-1", State::Ok),
        ("web-2", State::Fail),
        ("web-3", State::Ok),
    ]
    .into_iter()
    .map(|(id, s)| (id.to_string(), s))
    .collect();
    assert_eq!(markers, expected);
}

#[test]
fn strings_from_records_are_escaped() {
    let mut fleet = fleet_of(&[("web-2", State::Fail)]);
    let web2 = fleet.hosts.iter_mut().find(|h| h.id == "web-2").unwrap();
    web2.reason = Some("rolled back\u{1b}[2J\nforged line".into());
    web2.running = Some(41);
    let text = table(&fleet);
    assert!(
        text.contains(
            "web-2 (b, running generation 41) failed: rolled back\\u{1b}[2J\\nforged line"
        ),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'));
}

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn raw(text: &str) -> Rollout {
    toml::from_str(text).expect("a [rollout] body")
}

const GOOD: &str = "waves = [1, 10, 50, 100]\nbake = \"10m\"\nstart = 2026-12-04T16:00:00Z\n";

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn a_good_rollout_becomes_a_schedule() {
    let s = Schedule::check(&raw(&format!("{GOOD}max_failed = 2\n"))).expect("valid");
    assert_eq!(s.waves, vec![1, 10, 50, 100]);
    assert_eq!(s.bake, Duration::from_secs(600));
    assert_eq!(s.start, Duration::from_secs(1_796_400_000));
    assert_eq!(s.max_failed, 2);
    assert_eq!(
        s.opens_at(0),
        UNIX_EPOCH + Duration::from_secs(1_796_400_000)
    );
    assert_eq!(
        s.opens_at(3),
        UNIX_EPOCH + Duration::from_secs(1_796_401_800)
    );
    assert!(!s.is_open(1, s.opens_at(1) - Duration::from_millis(1)));
    assert!(s.is_open(1, s.opens_at(1)));
    let plain = Schedule::check(&raw(
        "waves = [100]\nbake = \"1s\"\nstart = 2026-12-04T16:00:00+00:00\n",
    ));
    assert_eq!(plain.expect("valid").waves, vec![100]);
}

#[test]
fn every_problem_is_listed_with_its_key() {
    let text = "waves = [0, 10, 10, 150, 90]\nbake = \"soon\"\nstart = 2026-12-04T16:00:00+01:00\nmax_failed = -1\n";
    let problems = Schedule::check(&raw(text)).expect_err("invalid");
    assert_eq!(
        keys(&problems),
        [
            "waves[0]",
            "waves[2]",
            "waves[3]",
            "waves[4]",
            "bake",
            "start",
            "max_failed"
        ],
        "{problems:?}"
    );
    assert!(problems[4].message.contains("\"soon\""), "{problems:?}");
    assert!(problems[5].message.contains("UTC"), "{problems:?}");
}

#[test]
fn waves_must_be_cumulative_and_end_at_100() {
    let check = |waves: &str| {
        let text = format!("waves = {waves}\nbake = \"1m\"\nstart = 2026-01-01T00:00:00Z\n");
        Schedule::check(&raw(&text)).map_err(|p| keys(&p).join(","))
    };
    assert_eq!(check("[]").unwrap_err(), "waves");
    assert_eq!(check("[10, 50]").unwrap_err(), "waves[1]");
    assert_eq!(check("[50, 10, 100]").unwrap_err(), "waves[1]");
    assert_eq!(check("[100, 100]").unwrap_err(), "waves[1]");
    assert!(check("[1, 2, 3, 100]").is_ok());
}

#[test]
fn bake_and_start_are_required_and_checked() {
    let problems = Schedule::check(&raw("waves = [100]\n")).expect_err("invalid");
    assert_eq!(keys(&problems), ["bake", "start"]);
    let zero = Schedule::check(&raw(
        "waves = [100]\nbake = \"0s\"\nstart = 2026-01-01T00:00:00Z\n",
    ));
    assert_eq!(keys(&zero.expect_err("zero bake")), ["bake"]);
    for start in [
        "2026-01-01T00:00:00",
        "2026-01-01",
        "16:00:00",
        "1969-12-31T23:59:59Z",
    ] {
        let text = format!("waves = [100]\nbake = \"1m\"\nstart = {start}\n");
        let problems = Schedule::check(&raw(&text)).expect_err(start);
        assert_eq!(keys(&problems), ["start"], "{start}");
    }
}

#[test]
fn utc_datetimes_count_days_right() {
    let at = |text: &str| utc_since_epoch(&text.parse().expect("datetime")).expect("utc");
    assert_eq!(at("1970-01-01T00:00:00Z"), Duration::ZERO);
    assert_eq!(at("2000-02-29T23:59:59Z"), Duration::from_secs(951_868_799));
    assert_eq!(at("2026-12-04T16:00Z"), Duration::from_secs(1_796_400_000));
    assert_eq!(
        at("2026-12-04T16:00:00.9Z"),
        Duration::from_secs(1_796_400_000)
    );
}

/// `n` hosts named `h<i>` over `zones` zones.
fn hosts(n: usize, zones: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("h{i}"), format!("zone-{}", i % zones.max(1))))
        .collect()
}

fn assign(hosts: &[(String, String)], generation: u64, percents: &[u8]) -> Waves {
    Waves::assign(
        hosts.iter().map(|(id, zone)| (id.as_str(), zone.as_str())),
        generation,
        percents,
    )
}

fn sizes(waves: &Waves) -> Vec<usize> {
    (0..waves.count()).map(|k| waves.members(k).len()).collect()
}

#[test]
fn membership_is_deterministic_and_independent_of_input_order() {
    let list = hosts(200, 3);
    let a = assign(&list, 7, &[1, 10, 50, 100]);
    let mut reversed = list.clone();
    reversed.reverse();
    assert_eq!(a, assign(&reversed, 7, &[1, 10, 50, 100]));
    assert_eq!(a, assign(&list, 7, &[1, 10, 50, 100]));
    assert_ne!(
        a,
        assign(&list, 8, &[1, 10, 50, 100]),
        "a new generation draws a new order"
    );
}

#[test]
fn every_host_is_in_exactly_one_wave() {
    for n in [0, 1, 2, 3, 7, 20, 99, 100, 101, 1000] {
        for zones in [1, 2, 3] {
            for percents in [&[100][..], &[1, 10, 50, 100], &[33, 66, 100], &[99, 100]] {
                let list = hosts(n, zones);
                let waves = assign(&list, 3, percents);
                assert_eq!(waves.count(), percents.len());
                let mut seen = BTreeSet::new();
                for k in 0..waves.count() {
                    for id in waves.members(k) {
                        assert!(seen.insert(id.clone()), "{id} twice (n {n})");
                        assert_eq!(waves.wave_of(id), Some(k));
                    }
                }
                assert_eq!(seen.len(), n, "n {n} zones {zones} {percents:?}");
            }
        }
    }
    assert_eq!(assign(&hosts(5, 1), 1, &[100]).wave_of("nobody"), None);
}

#[test]
fn waves_take_their_cumulative_percent_rounded_up() {
    for (n, want) in [
        (1000, [10, 90, 400, 500]),
        (20, [1, 1, 8, 10]),
        (3, [1, 0, 1, 1]),
        (1, [1, 0, 0, 0]),
    ] {
        let waves = assign(&hosts(n, 1), 1, &[1, 10, 50, 100]);
        assert_eq!(sizes(&waves), want, "{n} hosts");
    }
    assert_eq!(sizes(&assign(&hosts(0, 1), 1, &[1, 100])), [0, 0]);
}

#[test]
fn with_several_zones_wave_0_spans_two_of_them() {
    for generation in 0..300 {
        for (n, zones) in [(20, 2), (20, 3), (1000, 3), (2, 2), (5, 5)] {
            let list = hosts(n, zones);
            let waves = assign(&list, generation, &[1, 10, 50, 100]);
            let zone: HashMap<&str, &str> = list
                .iter()
                .map(|(id, z)| (id.as_str(), z.as_str()))
                .collect();
            let first: BTreeSet<&str> = waves
                .members(0)
                .iter()
                .map(|id| zone[id.as_str()])
                .collect();
            assert!(
                first.len() >= 2,
                "generation {generation}, n {n}: {first:?}"
            );
            assert_eq!(waves.members(0).len(), if n == 1000 { 10 } else { 2 });
        }
    }
    // One zone: wave 0 is its share, one host.
    assert_eq!(assign(&hosts(20, 1), 5, &[1, 100]).members(0).len(), 1);
}

#[test]
fn moving_a_host_into_wave_0_keeps_the_rest_of_the_order() {
    // Find a generation whose hash order starts with two hosts of one zone.
    let list = hosts(10, 2);
    let plain = |generation| {
        let mut ranked: Vec<([u8; 32], &str, &str)> = list
            .iter()
            .map(|(id, z)| (rank(generation, id), id.as_str(), z.as_str()))
            .collect();
        ranked.sort_unstable();
        ranked
    };
    let generation = (0..100)
        .find(|&g| plain(g)[0].2 == plain(g)[1].2)
        .expect("some generation starts with one zone twice");
    let ranked = plain(generation);
    let moved = ranked[2..]
        .iter()
        .position(|e| e.2 != ranked[0].2)
        .expect("other zone")
        + 2;
    let waves = assign(&list, generation, &[1, 50, 100]);
    let mut expected: Vec<&str> = ranked.iter().map(|e| e.1).collect();
    let host = expected.remove(moved);
    expected.insert(1, host);
    let got: Vec<&str> = (0..3)
        .flat_map(|k| waves.members(k))
        .map(String::as_str)
        .collect();
    assert_eq!(got, expected);
}

fn markers(entries: &[(&str, State)]) -> HashMap<String, State> {
    entries
        .iter()
        .map(|(id, s)| ((*id).to_string(), *s))
        .collect()
}

#[test]
fn halt_rule_counts_fail_markers_and_silent_earlier_hosts() {
    let list = hosts(20, 1);
    let waves = assign(&list, 9, &[10, 50, 100]);
    let w0: Vec<&str> = waves.members(0).iter().map(String::as_str).collect();
    let w1: Vec<&str> = waves.members(1).iter().map(String::as_str).collect();
    assert_eq!((w0.len(), w1.len()), (2, 8));
    let all_ok: Vec<(&str, State)> = w0.iter().chain(&w1).map(|id| (*id, State::Ok)).collect();

    let clean = Tally::count(&waves, 2, &markers(&all_ok));
    assert_eq!(
        clean,
        Tally {
            failed: 0,
            silent: 0
        }
    );
    assert!(!clean.halts(0));

    let mut one_failed = all_ok.clone();
    one_failed[0].1 = State::Fail;
    let tally = Tally::count(&waves, 2, &markers(&one_failed));
    assert_eq!(
        tally,
        Tally {
            failed: 1,
            silent: 0
        }
    );
    assert!(tally.halts(0), "1 > 0");
    assert!(!tally.halts(1), "1 is not more than 1");

    // A wave-1 host without a marker is silent for wave 2, not for wave 1.
    let mut one_silent = one_failed.clone();
    one_silent.retain(|(id, _)| *id != w1[0]);
    assert_eq!(Tally::count(&waves, 2, &markers(&one_silent)).silent, 1);
    assert!(Tally::count(&waves, 2, &markers(&one_silent)).halts(1));
    assert_eq!(Tally::count(&waves, 1, &markers(&one_silent)).silent, 0);
}

#[test]
fn held_after_the_bake_is_silent_and_later_waves_never_count() {
    let waves = assign(&hosts(20, 1), 9, &[10, 50, 100]);
    let w0: Vec<&str> = waves.members(0).iter().map(String::as_str).collect();
    // Still `held` after its wave baked: silent. Halted and ok are not.
    let held = markers(&[(w0[0], State::Held), (w0[1], State::Halted)]);
    assert_eq!(
        Tally::count(&waves, 1, &held),
        Tally {
            failed: 0,
            silent: 1
        }
    );
    // Wave 0 has no earlier wave; markers of later waves never count as silent.
    assert_eq!(waves.silent_before(0, &HashMap::new()), 0);
    assert_eq!(waves.silent_before(1, &HashMap::new()), 2);
    assert_eq!(waves.silent_before(9, &HashMap::new()), 20);
}

#[test]
fn fail_markers_of_hosts_outside_the_waves_still_count() {
    let waves = assign(&hosts(4, 1), 1, &[50, 100]);
    let tally = Tally::count(&waves, 1, &markers(&[("new-host", State::Fail)]));
    assert_eq!(tally.failed, 1);
    assert!(tally.reason(0).contains("1 failed"));
}

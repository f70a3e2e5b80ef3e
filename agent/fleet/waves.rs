//! SPEC §9.2, pure: a staged rollout's schedule checked from `[rollout]`, each host's wave,
//! the waves' opening times, and the halt rule over the markers of one generation. Every
//! host and `fleet status` compute the same answers from the map alone.
//!
//! **Membership.** The map's hosts are ordered by SHA-256 of `"<generation>/<host id>"`
//! (ties, which need a hash collision, by id). With `N` hosts and cumulative percents `p₀ <
//! p₁ < … < 100`, wave `k` ends at `ceil(N × pₖ / 100)` hosts in that order, so every host is
//! in exactly one wave and wave 0 holds at least one host. When the map's hosts are in more
//! than one zone, wave 0 holds at least two hosts, and if the hash order put only one zone
//! there, the first host of another zone in the order is moved up to wave 0's last place
//! (the hosts between move down one place): a zone-wide fault shows up in wave 0. A later
//! wave's end is never before wave 0's, so a wave may be empty on a small map. A new
//! generation draws a new order, so no host is always first.
//!
//! **Halt rule.** When wave `k ≥ 1` opens, the earlier waves have all baked (wave `j` opened
//! at `start + j × bake`, a bake or more ago). The rollout halts for a host of wave `k` when
//! the `fail` markers of the generation plus the hosts of waves `< k` that are *silent* (no
//! marker of this generation, or still `held`: they never reported applying it) exceed
//! `max_failed`. `bake` must therefore be longer than `map.jitter` plus one reconcile.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::State;
use crate::rolemap::types::Rollout;

/// A checked `[rollout]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Cumulative percent of the hosts per wave, strictly increasing, the last 100.
    pub waves: Vec<u8>,
    /// Time between two waves' openings.
    pub bake: Duration,
    /// When wave 0 opens, since the Unix epoch.
    pub start: Duration,
    /// Failed or silent hosts tolerated before the rollout halts.
    pub max_failed: u64,
}

/// One problem of a `[rollout]` table: the key under `rollout` and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key under `rollout`, e.g. `waves[2]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

impl Schedule {
    /// Check `raw` (unknown keys are the map validator's business).
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn check(raw: &Rollout) -> Result<Schedule, Vec<Problem>> {
        let mut problems = Vec::new();
        let waves = check_waves(&raw.waves, &mut problems);
        let bake = check_bake(&raw.bake, &mut problems);
        let start = match &raw.start {
            None => Err(problem(
                "start",
                "required: an RFC 3339 UTC datetime such as 2026-12-04T16:00:00Z (map publish --rollout sets it)",
            )),
            Some(dt) => utc_since_epoch(dt).map_err(|why| problem("start", why)),
        };
        let start = start.map_err(|p| problems.push(p)).ok();
        let max_failed = u64::try_from(raw.max_failed)
            .map_err(|_| problems.push(problem("max_failed", "must not be negative")))
            .ok();
        match (waves, bake, start, max_failed) {
            (Some(waves), Some(bake), Some(start), Some(max_failed)) if problems.is_empty() => {
                Ok(Schedule {
                    waves,
                    bake,
                    start,
                    max_failed,
                })
            }
            _ => Err(problems),
        }
    }

    /// The schedule of `map`'s `[rollout]`, if it has a valid one.
    pub fn of(map: &crate::rolemap::RoleMap) -> Option<Schedule> {
        map.rollout.as_ref().and_then(|r| Schedule::check(r).ok())
    }

    /// When wave `k` opens: `start + k × bake`.
    pub fn opens_at(&self, k: usize) -> SystemTime {
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        UNIX_EPOCH + self.start.saturating_add(self.bake.saturating_mul(k))
    }

    /// Whether wave `k` is open at `now`.
    pub fn is_open(&self, k: usize, now: SystemTime) -> bool {
        now >= self.opens_at(k)
    }
}

fn check_waves(waves: &[i64], problems: &mut Vec<Problem>) -> Option<Vec<u8>> {
    let before = problems.len();
    if waves.is_empty() {
        problems.push(problem(
            "waves",
            "required: cumulative percents such as [1, 10, 50, 100]",
        ));
    }
    let mut out = Vec::with_capacity(waves.len());
    for (i, &p) in waves.iter().enumerate() {
        match u8::try_from(p).ok().filter(|p| (1..=100).contains(p)) {
            None => problems.push(problem(format!("waves[{i}]"), format!("{p} is not a percent from 1 to 100"))),
            Some(p) if out.last().is_some_and(|&last| p <= last) => problems.push(problem(
                format!("waves[{i}]"),
                format!("{p} does not rise above the wave before: waves are cumulative percents, strictly increasing"),
            )),
            Some(p) => out.push(p),
        }
    }
    if let Some(&last) = waves.last().filter(|&&last| last != 100) {
        let at = format!("waves[{}]", waves.len() - 1);
        problems.push(problem(
            at,
            format!("{last}: the last wave must be 100 (every host)"),
        ));
    }
    (problems.len() == before).then_some(out)
}

fn check_bake(bake: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
    let parsed = match humantime::parse_duration(bake) {
        _ if bake.is_empty() => Err("required: a duration such as \"10m\"".to_string()),
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{} is not a duration such as \"10m\": {e}",
            crate::text::quoted(bake)
        )),
    };
    parsed
        .map_err(|why| problems.push(problem("bake", why)))
        .ok()
}

/// A TOML datetime with a date, a time and a UTC offset (`Z` or `+00:00`), as time since
/// the Unix epoch (fractions of a second dropped).
///
/// # Errors
/// Why it is not one, in words.
pub fn utc_since_epoch(dt: &toml::value::Datetime) -> Result<Duration, String> {
    use toml::value::Offset;
    let (Some(date), Some(time)) = (dt.date, dt.time) else {
        return Err(format!(
            "{dt} must have a date and a time, e.g. 2026-12-04T16:00:00Z"
        ));
    };
    if !matches!(
        dt.offset,
        Some(Offset::Z) | Some(Offset::Custom { minutes: 0 })
    ) {
        return Err(format!("{dt} must be in UTC (end with Z)"));
    }
    let days = days_from_civil(i64::from(date.year), date.month, date.day);
    let seconds = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0));
    u64::try_from(seconds)
        .map(Duration::from_secs)
        .map_err(|_| format!("{dt} is before 1970"))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Every host's wave for one generation of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waves {
    /// Host ids in rollout order.
    order: Vec<String>,
    /// Where each wave ends in `order` (exclusive), one per wave.
    ends: Vec<usize>,
    /// Host id → wave.
    index: HashMap<String, usize>,
}

impl Waves {
    /// The waves of `hosts` (id, zone) for `generation`, cut at the cumulative `percents`.
    pub fn assign<'a>(
        hosts: impl IntoIterator<Item = (&'a str, &'a str)>,
        generation: u64,
        percents: &[u8],
    ) -> Waves {
        let mut keyed: Vec<([u8; 32], &str, &str)> = hosts
            .into_iter()
            .map(|(id, zone)| (rank(generation, id), id, zone))
            .collect();
        keyed.sort_unstable();
        let zones: BTreeSet<&str> = keyed.iter().map(|(_, _, zone)| *zone).collect();
        let n = keyed.len();
        let first = first_wave_size(n, percents.first().copied().unwrap_or(100), zones.len());
        spread_first_wave(&mut keyed, first);
        let mut ends: Vec<usize> = percents
            .iter()
            .map(|&p| ceil_share(n, p).max(first))
            .collect();
        if let Some(last) = ends.last_mut() {
            *last = n;
        }
        let order: Vec<String> = keyed.into_iter().map(|(_, id, _)| id.to_string()).collect();
        let index = wave_index(&order, &ends);
        Waves { order, ends, index }
    }

    /// The waves of `map` under `schedule`.
    pub fn of_map(map: &crate::rolemap::RoleMap, schedule: &Schedule) -> Waves {
        let hosts = map.hosts.iter().map(|(id, h)| (id.as_str(), h.az.as_str()));
        Waves::assign(hosts, map.generation(), &schedule.waves)
    }

    /// The wave of host `id`; `None` for a host not in the map.
    pub fn wave_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// How many waves there are.
    pub fn count(&self) -> usize {
        self.ends.len()
    }

    /// The hosts of wave `k`, in rollout order.
    pub fn members(&self, k: usize) -> &[String] {
        match self.ends.get(k) {
            Some(&end) => &self.order[self.end_before(k)..end],
            None => &[],
        }
    }

    /// Where the waves before `k` end in the rollout order.
    fn end_before(&self, k: usize) -> usize {
        match k.checked_sub(1) {
            None => 0,
            Some(j) => self.ends.get(j).copied().unwrap_or(self.order.len()),
        }
    }

    /// Hosts of waves before `k` that are silent: no marker in `markers` (this
    /// generation's, by host id), or still `held` (see the module docs).
    pub fn silent_before(&self, k: usize, markers: &HashMap<String, State>) -> u64 {
        let silent = self.order[..self.end_before(k)]
            .iter()
            .filter(|id| matches!(markers.get(*id), None | Some(State::Held)))
            .count();
        u64::try_from(silent).unwrap_or(u64::MAX)
    }
}

fn rank(generation: u64, id: &str) -> [u8; 32] {
    Sha256::digest(format!("{generation}/{id}").as_bytes()).into()
}

/// `ceil(n × percent / 100)`.
fn ceil_share(n: usize, percent: u8) -> usize {
    (n * usize::from(percent)).div_ceil(100)
}

/// Wave 0's size: its share, at least one host, and two when there are several zones.
fn first_wave_size(n: usize, percent: u8, zones: usize) -> usize {
    let least = if zones > 1 { 2 } else { 1 };
    ceil_share(n, percent).max(least).min(n)
}

/// Make the first `size` entries span two zones when the hosts have more than one: the
/// first entry of another zone after them moves up to place `size - 1`.
fn spread_first_wave<T>(keyed: &mut [(T, &str, &str)], size: usize) {
    let Some(zone) = keyed.first().map(|(_, _, zone)| *zone) else {
        return;
    };
    if size < 2 || keyed[..size].iter().any(|(_, _, z)| *z != zone) {
        return;
    }
    if let Some(other) = keyed[size..].iter().position(|(_, _, z)| *z != zone) {
        keyed[size - 1..=size + other].rotate_right(1);
    }
}

fn wave_index(order: &[String], ends: &[usize]) -> HashMap<String, usize> {
    let mut index = HashMap::with_capacity(order.len());
    let mut start = 0;
    for (k, &end) in ends.iter().enumerate() {
        for id in &order[start..end] {
            index.insert(id.clone(), k);
        }
        start = end;
    }
    index
}

/// What a host of an opened wave found when it listed its generation's markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// `fail` markers of the generation.
    pub failed: u64,
    /// Hosts of earlier waves still silent.
    pub silent: u64,
}

impl Tally {
    /// Count `markers` (this generation's, by host id) for a host of wave `k`.
    pub fn count(waves: &Waves, k: usize, markers: &HashMap<String, State>) -> Tally {
        let failed = markers.values().filter(|s| **s == State::Fail).count();
        Tally {
            failed: u64::try_from(failed).unwrap_or(u64::MAX),
            silent: waves.silent_before(k, markers),
        }
    }

    /// The halt rule: failed plus silent hosts exceed `max_failed`.
    pub fn halts(&self, max_failed: u64) -> bool {
        self.failed.saturating_add(self.silent) > max_failed
    }

    /// Why a rollout halted, for `status`, `check` and the report.
    pub fn reason(&self, max_failed: u64) -> String {
        format!(
            "{} failed and {} silent host(s) of earlier waves, more than max_failed = {max_failed}",
            self.failed, self.silent
        )
    }
}

#[cfg(test)]
mod tests;

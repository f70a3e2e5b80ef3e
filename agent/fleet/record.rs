//! SPEC §9.1, pure: a host's record `hosts/<id>.json`, built from its last reconcile's
//! report and its place in the map, bounded well under 4 KiB whatever the map or the
//! failures hold (messages and lists are cut, and say so).

use serde::{Deserialize, Serialize};

use super::State;
use crate::report::{failed_checks, Outcome, RunReport};

/// Bytes kept of the reconcile's message.
const MESSAGE_MAX: usize = 400;
/// Bytes kept of one failure.
const FAILURE_MAX: usize = 150;
/// Failures kept (the rest are counted).
const FAILURES_MAX: usize = 6;
/// Roles or products kept (the rest are counted).
const NAMES_MAX: usize = 10;
/// Bytes kept of one role, product or zone (the map's identifiers are at most 63).
const NAME_MAX: usize = 64;

/// Where a host stands: the state of its marker and the generations involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// Its marker's state.
    pub state: State,
    /// The generation the state is about (the newest map it took a decision on); `None`
    /// when no map was read at all (then no marker is written).
    pub generation: Option<u64>,
    /// The generation its configuration comes from (lower while held or halted).
    pub running: Option<u64>,
}

impl Standing {
    /// A reconcile's standing: `held` or `halted` on the newer generation a staged rollout
    /// kept from it, else its outcome on the map it used.
    pub fn of(report: &RunReport) -> Standing {
        let generation = report.map.as_ref().map(|m| m.info.generation);
        if let Some(note) = &report.rollout {
            return Standing {
                state: note.state,
                generation: Some(note.generation),
                running: generation,
            };
        }
        let state = match report.outcome {
            Outcome::Converged => State::Ok,
            Outcome::Waiting => State::Waiting,
            Outcome::Failed | Outcome::RolledBack | Outcome::Invalid => State::Fail,
        };
        Standing {
            state,
            generation,
            running: generation,
        }
    }
}

/// The host's place in the map, as the reconcile resolved it; in its record, bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Availability zone (or rack).
    pub zone: String,
    /// Roles in the map (in a record: at most 10, then `… N more`).
    pub roles: Vec<String>,
    /// Products served, and the product of a database position (in a record: at most 10).
    pub products: Vec<String>,
    /// Its wave, when the map has a rollout.
    pub wave: Option<usize>,
    /// SHA-256 of the map's bytes.
    pub map_sha256: Option<String>,
}

impl Placement {
    /// As a record carries it: names cut, lists bounded.
    fn bounded(&self) -> Placement {
        Placement {
            zone: cut(&self.zone, NAME_MAX),
            roles: names(&self.roles),
            products: names(&self.products),
            wave: self.wave,
            map_sha256: self.map_sha256.clone(),
        }
    }
}

/// `hosts/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Host id (the map's key).
    pub id: String,
    /// Its marker's state.
    pub state: State,
    /// The generation the state is about.
    pub generation: Option<u64>,
    /// The generation its configuration comes from.
    pub running: Option<u64>,
    /// Its place in the map (keys `zone`, `roles`, `products`, `wave`, `map_sha256`).
    #[serde(flatten)]
    pub placement: Placement,
    /// The last reconcile's outcome.
    pub outcome: Outcome,
    /// Its message (at most 400 bytes, control characters as spaces).
    pub message: String,
    /// Failed checks, reloads, hooks and smoke tests, one phrase each (at most 6).
    pub failed: Vec<String>,
    /// The last reconcile rolled back.
    pub rolled_back: bool,
    /// Last converged reconcile, seconds since the epoch.
    pub converged_at: Option<u64>,
    /// When this record was written, seconds since the epoch.
    pub written_at: u64,
    /// rolecall's version.
    pub agent_version: String,
}

impl Record {
    /// The record of host `id` after `report`, written at `now_unix`.
    pub fn build(
        id: &str,
        report: &RunReport,
        standing: Standing,
        placement: &Placement,
        now_unix: u64,
    ) -> Record {
        Record {
            id: id.to_string(),
            state: standing.state,
            generation: standing.generation,
            running: standing.running,
            placement: placement.bounded(),
            outcome: report.outcome,
            message: cut(&report.message, MESSAGE_MAX),
            failed: failures(report),
            rolled_back: report.outcome == Outcome::RolledBack,
            converged_at: report.last_converged_unix,
            written_at: now_unix,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The JSON written.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What failed in `report`: smoke tests, reloads and hooks, each cut, at most six.
fn failures(report: &RunReport) -> Vec<String> {
    let all = failed_checks(&report.smoke, &report.services, &report.hooks, "failed");
    bounded_list(&all, FAILURES_MAX, FAILURE_MAX)
}

fn names(items: &[String]) -> Vec<String> {
    bounded_list(items, NAMES_MAX, NAME_MAX)
}

/// At most `count` items of at most `each` bytes; `… N more` for the rest.
fn bounded_list(items: &[String], count: usize, each: usize) -> Vec<String> {
    let mut out: Vec<String> = items.iter().take(count).map(|s| cut(s, each)).collect();
    if items.len() > count {
        out.push(format!("… {} more", items.len() - count));
    }
    out
}

/// `s` in at most `max` bytes of JSON: control characters (which JSON would spell as six
/// bytes each) become spaces, and a cut, at a character boundary, ends in `…`.
fn cut(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() <= max {
        return clean;
    }
    let budget = max.saturating_sub('…'.len_utf8());
    let end = clean
        .char_indices()
        .map(|(at, c)| at + c.len_utf8())
        .take_while(|&end| end <= budget)
        .last()
        .unwrap_or(0);
    format!("{}…", &clean[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{MapReport, Trigger};
    use crate::smoke::SmokeResult;

    fn report(outcome: Outcome, generation: u64) -> RunReport {
        let mut r = RunReport::start(Trigger::Poll);
        r.outcome = outcome;
        let mut map = MapReport::default();
        map.info.generation = generation;
        r.map = Some(map);
        r
    }

    #[test]
    fn outcomes_give_marker_states() {
        let state = |o| Standing::of(&report(o, 7)).state;
        assert_eq!(state(Outcome::Converged), State::Ok);
        assert_eq!(state(Outcome::Waiting), State::Waiting);
        assert_eq!(state(Outcome::RolledBack), State::Fail);
        assert_eq!(state(Outcome::Failed), State::Fail);
        assert_eq!(state(Outcome::Invalid), State::Fail);
        assert_eq!(
            Standing::of(&report(Outcome::Converged, 7)).generation,
            Some(7)
        );
        assert_eq!(
            Standing::of(&RunReport::start(Trigger::Boot)).generation,
            None
        );
    }

    #[test]
    fn a_record_stays_well_under_4_kib_whatever_it_holds() {
        let long = "x\u{1b}".repeat(5000);
        let mut r = report(Outcome::RolledBack, u64::MAX);
        r.message = long.clone();
        r.smoke = (0..50)
            .map(|i| SmokeResult {
                name: format!("http site-{i}.example.com/{long}"),
                role: "web".into(),
                ok: false,
                attempts: 3,
                elapsed_ms: 1,
                error: Some(long.clone()),
            })
            .collect();
        let many: Vec<String> = (0..500)
            .map(|i| format!("{}-{i}", "p".repeat(60)))
            .collect();
        let placement = Placement {
            zone: "z".repeat(63),
            roles: many.clone(),
            products: many,
            wave: Some(usize::MAX),
            map_sha256: Some("f".repeat(64)),
        };
        let id = "i".repeat(128);
        let standing = Standing::of(&r);
        let record = Record::build(&id, &r, standing, &placement, u64::MAX);
        let json = record.to_json();
        assert!(json.len() < 3600, "{} bytes", json.len());
        assert_eq!(record.failed.len(), FAILURES_MAX + 1);
        assert_eq!(record.failed.last().unwrap(), "… 44 more");
        assert_eq!(record.placement.products.last().unwrap(), "… 490 more");
        assert!(record.rolled_back);
        let back: Record = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn cut_keeps_whole_characters_within_the_bytes() {
        assert_eq!(cut("héllo wörld", 8), "héll…");
        assert_eq!(cut("ok", 2), "ok");
        assert_eq!(cut("a\nb", 10), "a b");
        for max in 3..40 {
            assert!(cut(&"é✓x".repeat(20), max).len() <= max, "{max}");
        }
    }
}

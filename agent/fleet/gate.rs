//! SPEC §9.2, a host's side of a staged rollout: may it apply a new generation now? A host
//! that runs an earlier generation (it has managed files and a cached map older than the
//! new one) waits until its wave opens, `held`; a host with nothing applied yet applies at
//! once. When a wave `≥ 1` opens, the host lists the generation's markers once and applies
//! the halt rule; the decision is kept in the state directory (`rollout.json`), so it is
//! taken once per host and generation, across restarts. Markers that cannot be listed keep
//! the host held (a host can only stop a rollout, never advance one) and are listed again
//! at the next poll. Without `[report]` there are no markers to read: the host applies when
//! its wave opens.
//!
//! The decision is pure ([`Staged::step`]); [`decide`] adds the listing and the record.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::report::REQUEST_TIMEOUT;
use super::status::latest_markers;
use super::store::Store;
use super::waves::{Schedule, Tally, Waves};
use super::{generation_prefix, State};
use crate::config::ReportSettings;
use crate::rolemap::RoleMap;
use crate::text::chain;

/// The decision of this host for the rollout of one generation, in the state directory.
pub const DECISION_FILE: &str = "rollout.json";

/// A map's rollout: its schedule and every host's wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The map's generation.
    pub generation: u64,
    /// The checked `[rollout]`.
    pub schedule: Schedule,
    /// The waves.
    pub waves: Waves,
}

/// Where a host stands in a rollout it is not applying yet: what the status and the
/// report say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The generation not applied.
    pub generation: u64,
    /// The host's wave.
    pub wave: usize,
    /// `held` or `halted`.
    pub state: State,
    /// When the wave opens (held), seconds since the epoch.
    pub opens_unix: Option<u64>,
    /// Why (halted, or held with markers unreadable).
    pub reason: Option<String>,
}

impl Note {
    /// One phrase for the status line.
    pub fn describe(&self) -> String {
        let at = |t: u64| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t));
        match (self.state, self.opens_unix, &self.reason) {
            (State::Halted, _, reason) => format!(
                "rollout of generation {} HALTED for this host (wave {}): {}",
                self.generation,
                self.wave,
                reason.as_deref().unwrap_or("the halt rule")
            ),
            (_, Some(opens), None) => format!(
                "generation {} held: wave {} opens at {}",
                self.generation,
                self.wave,
                at(opens)
            ),
            (_, _, reason) => format!(
                "generation {} held (wave {}): {}",
                self.generation,
                self.wave,
                reason.as_deref().unwrap_or("waiting")
            ),
        }
    }
}

/// What a host does with a staged generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply it now.
    Apply,
    /// Keep what it has and report this.
    Stay(Note),
    /// Its wave (≥ 1) is open and no decision is recorded: list the markers.
    Evaluate {
        /// The host's wave.
        wave: usize,
    },
}

/// The recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The generation decided on.
    pub generation: u64,
    /// The host's wave.
    pub wave: usize,
    /// Halted (else: apply).
    pub halted: bool,
    /// What the markers said.
    pub reason: String,
}

impl Staged {
    /// The rollout of `map`, when it has a valid one.
    pub fn of(map: &RoleMap) -> Option<Staged> {
        let schedule = Schedule::of(map)?;
        Some(Staged {
            generation: map.generation(),
            waves: Waves::of_map(map, &schedule),
            schedule,
        })
    }

    /// Whether host `id` must wait for its wave: it is in the map, and it runs an earlier
    /// generation (`applied`, with files it manages); a new host applies at once.
    pub fn gates(&self, id: &str, applied: Option<u64>, has_files: bool) -> bool {
        let earlier = applied.is_some_and(|a| a < self.generation);
        earlier && has_files && self.waves.wave_of(id).is_some()
    }

    /// The step of host `id` (gated) at `now`, given the recorded `decision`.
    pub fn step(&self, id: &str, now: SystemTime, decision: Option<&Decision>) -> Step {
        let Some(wave) = self.waves.wave_of(id) else {
            return Step::Apply;
        };
        let opens = self.schedule.opens_at(wave);
        if now < opens {
            return Step::Stay(self.note(wave, State::Held, Some(unix(opens)), None));
        }
        match decision.filter(|d| d.generation == self.generation) {
            _ if wave == 0 => Step::Apply,
            Some(d) if d.halted => {
                Step::Stay(self.note(wave, State::Halted, None, Some(d.reason.clone())))
            }
            Some(_) => Step::Apply,
            None => Step::Evaluate { wave },
        }
    }

    /// The halt rule over the generation's `markers` for a host of `wave`.
    pub fn judge(
        &self,
        wave: usize,
        markers: &std::collections::HashMap<String, State>,
    ) -> Decision {
        let tally = Tally::count(&self.waves, wave, markers);
        let halted = tally.halts(self.schedule.max_failed);
        Decision {
            generation: self.generation,
            wave,
            halted,
            reason: tally.reason(self.schedule.max_failed),
        }
    }

    fn note(&self, wave: usize, state: State, opens: Option<u64>, reason: Option<String>) -> Note {
        Note {
            generation: self.generation,
            wave,
            state,
            opens_unix: opens,
            reason,
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The step of host `id`, listing the markers when its wave has just opened and recording
/// the decision. `None`: apply; `Some(note)`: keep what it has.
pub async fn decide(
    staged: &Staged,
    id: &str,
    state_dir: &Path,
    report: Option<&ReportSettings>,
    now: SystemTime,
) -> Option<Note> {
    let wave = match staged.step(id, now, recorded(state_dir).as_ref()) {
        Step::Apply => return None,
        Step::Stay(note) => return Some(note),
        Step::Evaluate { wave } => wave,
    };
    let Some(report) = report else {
        warn!(
            generation = staged.generation,
            "no [report]: the halt rule cannot be applied"
        );
        return None;
    };
    let decision = match evaluate(staged, wave, report).await {
        Ok(decision) => decision,
        Err(why) => return Some(staged.note(wave, State::Held, None, Some(why))),
    };
    info!(generation = staged.generation, halted = decision.halted, reason = %decision.reason, "rollout decision");
    if let Err(e) = crate::sys::fs::write_json(&state_dir.join(DECISION_FILE), &decision) {
        warn!(error = %chain(&e), "rollout decision not recorded");
    }
    decision
        .halted
        .then(|| staged.note(wave, State::Halted, None, Some(decision.reason)))
}

/// The decision recorded in `state_dir`, if any (an unreadable one is none: the markers are
/// listed again).
pub fn recorded(state_dir: &Path) -> Option<Decision> {
    crate::sys::fs::read_json(&state_dir.join(DECISION_FILE))
        .ok()
        .flatten()
}

/// List the generation's markers once and judge.
async fn evaluate(
    staged: &Staged,
    wave: usize,
    report: &ReportSettings,
) -> Result<Decision, String> {
    let unreadable = |e: super::store::Error| {
        format!(
            "markers unreadable, retried at the next poll: {}",
            chain(&e)
        )
    };
    let store = Store::open(&report.url, REQUEST_TIMEOUT)
        .await
        .map_err(unreadable)?;
    let listed = store
        .list(&generation_prefix(staged.generation))
        .await
        .map_err(unreadable)?;
    Ok(staged.judge(wave, &latest_markers(&listed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn staged(text_rollout: &str) -> Staged {
        let mut text = String::from("schema = 1\ngeneration = 5\n");
        for i in 0..10 {
            text.push_str(&format!(
                "\n[hosts.h{i}]\naddress = \"10.0.0.{i}\"\naz = \"a\"\nroles = [\"web\"]\n"
            ));
        }
        text.push_str(text_rollout);
        Staged::of(&crate::rolemap::load(text.as_bytes()).unwrap()).expect("staged")
    }

    const ROLLOUT: &str =
        "\n[rollout]\nwaves = [10, 50, 100]\nbake = \"10m\"\nstart = 2026-01-01T00:00:00Z\n";
    const START: u64 = 1_767_225_600;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn host_of(s: &Staged, wave: usize) -> String {
        s.waves.members(wave)[0].clone()
    }

    #[test]
    fn only_hosts_running_an_earlier_generation_wait() {
        let s = staged(ROLLOUT);
        assert!(s.gates("h1", Some(4), true));
        assert!(!s.gates("h1", None, false), "a new host applies at once");
        assert!(
            !s.gates("h1", Some(4), false),
            "nothing applied (it waited for a role)"
        );
        assert!(!s.gates("h1", Some(5), true), "already on this generation");
        assert!(!s.gates("new-host", Some(4), true), "not in the map");
    }

    #[test]
    fn a_host_is_held_until_its_wave_opens_then_evaluates() {
        let s = staged(ROLLOUT);
        let (w0, w1) = (host_of(&s, 0), host_of(&s, 1));
        assert!(matches!(
            s.step(&w0, at(START - 1), None),
            Step::Stay(Note {
                state: State::Held,
                ..
            })
        ));
        assert_eq!(
            s.step(&w0, at(START), None),
            Step::Apply,
            "wave 0 applies when it opens"
        );
        let Step::Stay(note) = s.step(&w1, at(START + 599), None) else {
            panic!("held")
        };
        assert_eq!(note.opens_unix, Some(START + 600));
        assert!(
            note.describe()
                .contains("wave 1 opens at 2026-01-01T00:10:00Z"),
            "{}",
            note.describe()
        );
        assert_eq!(
            s.step(&w1, at(START + 600), None),
            Step::Evaluate { wave: 1 }
        );
    }

    #[test]
    fn a_recorded_decision_is_followed_for_its_generation_only() {
        let s = staged(ROLLOUT);
        let w1 = host_of(&s, 1);
        let go = Decision {
            generation: 5,
            wave: 1,
            halted: false,
            reason: String::new(),
        };
        assert_eq!(s.step(&w1, at(START + 900), Some(&go)), Step::Apply);
        let stop = Decision {
            halted: true,
            reason: "1 failed".into(),
            ..go.clone()
        };
        let Step::Stay(note) = s.step(&w1, at(START + 900), Some(&stop)) else {
            panic!("halted")
        };
        assert_eq!(note.state, State::Halted);
        assert!(note.describe().contains("HALTED"));
        let old = Decision {
            generation: 4,
            ..stop
        };
        assert_eq!(
            s.step(&w1, at(START + 900), Some(&old)),
            Step::Evaluate { wave: 1 },
            "another generation's decision"
        );
    }

    #[test]
    fn the_halt_rule_decides_from_the_markers() {
        let s = staged(ROLLOUT);
        let w0 = host_of(&s, 0);
        let ok: HashMap<String, State> = [(w0.clone(), State::Ok)].into();
        assert!(!s.judge(1, &ok).halted);
        let failed: HashMap<String, State> = [(w0.clone(), State::Fail)].into();
        assert!(s.judge(1, &failed).halted);
        assert!(
            s.judge(1, &HashMap::new()).halted,
            "wave 0 silent after its bake"
        );
    }

    #[tokio::test]
    async fn decide_lists_once_and_records_the_decision() {
        let s = staged(ROLLOUT);
        let (w0, w1) = (host_of(&s, 0), host_of(&s, 1));
        let state = tempfile::tempdir().unwrap();
        let reports = tempfile::tempdir().unwrap();
        let report = ReportSettings {
            url: format!("file://{}/", reports.path().display()),
            heartbeat: Duration::from_secs(3600),
        };
        std::fs::create_dir_all(reports.path().join("g/5/fail")).unwrap();
        std::fs::write(reports.path().join(format!("g/5/fail/{w0}")), b"").unwrap();
        let note = decide(&s, &w1, state.path(), Some(&report), at(START + 600))
            .await
            .expect("halted");
        assert_eq!(note.state, State::Halted);
        // The marker turns ok: the decision stands (taken once).
        std::fs::remove_file(reports.path().join(format!("g/5/fail/{w0}"))).unwrap();
        let again = decide(&s, &w1, state.path(), Some(&report), at(START + 700)).await;
        assert_eq!(again.map(|n| n.state), Some(State::Halted));
        // Without [report], the wave's opening is enough.
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(
            decide(&s, &w1, fresh.path(), None, at(START + 600)).await,
            None
        );
        // Unreadable markers keep the host held, nothing recorded.
        let blocked = ReportSettings {
            url: "file:///proc/version/".into(),
            ..report.clone()
        };
        let held = decide(&s, &w1, fresh.path(), Some(&blocked), at(START + 600))
            .await
            .expect("held");
        assert_eq!(held.state, State::Held);
        assert!(!fresh.path().join(DECISION_FILE).exists());
    }
}

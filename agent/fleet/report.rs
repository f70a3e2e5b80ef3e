//! SPEC §9.1, the host's side: after every reconcile the daemon hands its report to a
//! [`Reporter`], which writes `hosts/<id>.json` and moves the host's marker
//! `g/<generation>/<state>/<id>` (new one first, then the old one of the same generation
//! deleted) only when the state or generation changed, and rewrites the record when the
//! heartbeat is due; a quiet poll writes nothing. What was last written is kept in the state
//! directory, so a restart neither rewrites nor forgets the marker to delete.
//!
//! A failed write is logged and retried at the next change, or after `min(heartbeat, 1 min)`
//! rather than a whole heartbeat: a missing `ok` marker counts as silent in the halt rule,
//! and an hour of it could halt a rollout. Every write is bounded (2 s per request, 5 s in
//! all), so a down S3 delays the daemon's loop by at most that, and never fails a reconcile.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::record::{Placement, Record, Standing};
use super::store::{self, Store};
use super::{marker_key, record_key};
use crate::config::ReportSettings;
use crate::report::RunReport;
use crate::rolemap::validate::Rule;
use crate::text::chain;

/// What the host last wrote, in the state directory.
pub const REPORT_FILE: &str = "fleet-report.json";
/// Bound of one request to the report store.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound of one whole report (record, marker, old marker).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A failed write is retried after this long at the latest (or the heartbeat if shorter).
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// What the last report wrote, or tried to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The standing reported.
    pub standing: Standing,
    /// The marker known to exist (the one to delete when the state changes).
    pub marker: Option<String>,
    /// When the record was last written or tried, seconds since the epoch.
    pub at_unix: u64,
    /// Everything was written; `false`: retry.
    pub complete: bool,
}

/// What a report must write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing: same standing, heartbeat not due.
    Nothing,
    /// The heartbeat: the record only.
    Record,
    /// A change (or a retry): the record and the marker moved.
    Everything,
}

/// When to write, from the last report (pure).
pub fn due(last: Option<&Written>, standing: &Standing, now_unix: u64, heartbeat: Duration) -> Due {
    let Some(last) = last else {
        return Due::Everything;
    };
    let age = Duration::from_secs(now_unix.saturating_sub(last.at_unix));
    if last.standing != *standing {
        Due::Everything
    } else if !last.complete {
        match age >= heartbeat.min(RETRY_AFTER) {
            true => Due::Everything,
            false => Due::Nothing,
        }
    } else if age >= heartbeat {
        Due::Record
    } else {
        Due::Nothing
    }
}

/// The host's reporter (`[report]` in agent.toml).
#[derive(Debug)]
pub struct Reporter {
    store: Store,
    heartbeat: Duration,
    path: PathBuf,
    last: Option<Written>,
}

impl Reporter {
    /// The reporter for `settings`, remembering what was written before from `state_dir`.
    ///
    /// # Errors
    /// An unusable report URL.
    pub async fn open(
        settings: &ReportSettings,
        state_dir: &Path,
    ) -> Result<Reporter, store::Error> {
        let store = Store::open(&settings.url, REQUEST_TIMEOUT).await?;
        let path = state_dir.join(REPORT_FILE);
        let last = crate::sys::fs::read_json(&path).unwrap_or_else(|e| {
            warn!(error = %chain(&e), "last fleet report unreadable, writing anew");
            None
        });
        Ok(Reporter {
            store,
            heartbeat: settings.heartbeat,
            path,
            last,
        })
    }

    /// What was last written.
    #[cfg(test)]
    pub fn last(&self) -> Option<&Written> {
        self.last.as_ref()
    }

    /// Report `report` if due; returns what was due. Failures are logged and retried later.
    pub async fn report(
        &mut self,
        report: &RunReport,
        standing: Standing,
        placement: &Placement,
        now_unix: u64,
    ) -> Due {
        let Some(id) = report
            .host_id
            .as_deref()
            .filter(|id| Rule::HostId.check(id).is_ok())
        else {
            debug!("no host id fit for a report key: nothing reported");
            return Due::Nothing;
        };
        let due = due(self.last.as_ref(), &standing, now_unix, self.heartbeat);
        if due == Due::Nothing {
            return due;
        }
        let record = Record::build(id, report, standing, placement, now_unix);
        let old = self.last.as_ref().and_then(|w| w.marker.clone());
        let mut written = Written {
            standing,
            marker: old.clone(),
            at_unix: now_unix,
            complete: false,
        };
        let wrote = tokio::time::timeout(
            WRITE_TIMEOUT,
            self.write(&record, due, old.as_deref(), &mut written.marker),
        )
        .await;
        written.complete = logged(wrote, &standing);
        self.remember(written);
        due
    }

    /// The record, then (for a change) the new marker, then the old one of the same
    /// generation deleted. `marker` follows what exists, for a retry after a failure.
    async fn write(
        &self,
        record: &Record,
        due: Due,
        old: Option<&str>,
        marker: &mut Option<String>,
    ) -> Result<(), store::Error> {
        self.store
            .put(&record_key(&record.id), record.to_json())
            .await?;
        let Some(generation) = record.generation.filter(|_| due == Due::Everything) else {
            return Ok(());
        };
        let new = marker_key(generation, record.state, &record.id);
        self.store.put(&new, Vec::new()).await?;
        *marker = Some(new.clone());
        let same_generation = format!("g/{generation}/");
        if let Some(old) = old.filter(|o| *o != new && o.starts_with(&same_generation)) {
            self.store.delete(old).await?;
        }
        Ok(())
    }

    fn remember(&mut self, written: Written) {
        if let Err(e) = crate::sys::fs::write_json(&self.path, &written) {
            warn!(error = %chain(&e), "last fleet report not recorded");
        }
        self.last = Some(written);
    }
}

/// Log how a report write ended; whether it wrote everything.
fn logged(
    wrote: Result<Result<(), store::Error>, tokio::time::error::Elapsed>,
    standing: &Standing,
) -> bool {
    match wrote {
        Ok(Ok(())) => {
            info!(generation = ?standing.generation, outcome = %standing.state, "fleet report written");
            true
        }
        Ok(Err(e)) => {
            warn!(error = %chain(&e), "fleet report not written; retried later");
            false
        }
        Err(_) => {
            let timeout_ms = crate::text::millis(WRITE_TIMEOUT);
            warn!(timeout_ms, "fleet report timed out; retried later");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::State;

    fn standing(state: State, generation: u64) -> Standing {
        Standing {
            state,
            generation: Some(generation),
            running: Some(generation),
        }
    }

    fn written(state: State, generation: u64, at_unix: u64, complete: bool) -> Written {
        Written {
            standing: standing(state, generation),
            marker: None,
            at_unix,
            complete,
        }
    }

    #[test]
    fn only_changes_heartbeats_and_retries_are_due() {
        let hour = Duration::from_secs(3600);
        let ok7 = standing(State::Ok, 7);
        assert_eq!(due(None, &ok7, 1000, hour), Due::Everything);
        let last = written(State::Ok, 7, 1000, true);
        assert_eq!(
            due(Some(&last), &ok7, 1030, hour),
            Due::Nothing,
            "a quiet poll"
        );
        assert_eq!(due(Some(&last), &ok7, 4599, hour), Due::Nothing);
        assert_eq!(due(Some(&last), &ok7, 4600, hour), Due::Record, "heartbeat");
        assert_eq!(
            due(Some(&last), &standing(State::Ok, 8), 1030, hour),
            Due::Everything
        );
        assert_eq!(
            due(Some(&last), &standing(State::Fail, 7), 1030, hour),
            Due::Everything
        );
        let failed = written(State::Ok, 7, 1000, false);
        assert_eq!(due(Some(&failed), &ok7, 1059, hour), Due::Nothing);
        assert_eq!(
            due(Some(&failed), &ok7, 1060, hour),
            Due::Everything,
            "retry"
        );
        let short = Duration::from_secs(10);
        assert_eq!(due(Some(&failed), &ok7, 1010, short), Due::Everything);
    }

    fn settings(dir: &Path) -> ReportSettings {
        ReportSettings {
            url: format!("file://{}/", dir.display()),
            heartbeat: Duration::from_secs(3600),
        }
    }

    fn run_report(id: &str, generation: u64) -> RunReport {
        let mut r = RunReport::start(crate::report::Trigger::Poll);
        r.host_id = Some(id.to_string());
        let mut map = crate::report::MapReport::default();
        map.info.generation = generation;
        r.map = Some(map);
        r
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn markers_move_within_a_generation_and_stay_per_generation() {
        let reports = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut reporter = Reporter::open(&settings(reports.path()), state.path())
            .await
            .unwrap();
        let place = Placement::default();
        let r = run_report("web-1", 7);
        let held = Standing {
            state: State::Held,
            generation: Some(8),
            running: Some(7),
        };
        let ok7 = standing(State::Ok, 7);
        for (at, now, expected) in [
            (100, ok7, Due::Everything),
            (130, ok7, Due::Nothing),
            (160, held, Due::Everything),
        ] {
            assert_eq!(
                reporter.report(&r, now, &place, at).await,
                expected,
                "at {at}"
            );
        }
        assert_eq!(
            files(reports.path()),
            ["g/7/ok/web-1", "g/8/held/web-1", "hosts/web-1.json"]
        );
        // A restart remembers the marker to delete.
        let mut reporter = Reporter::open(&settings(reports.path()), state.path())
            .await
            .unwrap();
        assert_eq!(reporter.report(&r, held, &place, 190).await, Due::Nothing);
        let r8 = run_report("web-1", 8);
        let ok8 = standing(State::Ok, 8);
        assert_eq!(
            reporter.report(&r8, ok8, &place, 220).await,
            Due::Everything
        );
        assert_eq!(
            files(reports.path()),
            ["g/7/ok/web-1", "g/8/ok/web-1", "hosts/web-1.json"]
        );
        let record: Record = serde_json::from_slice(
            &std::fs::read(reports.path().join("hosts/web-1.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (record.state, record.generation, record.written_at),
            (State::Ok, Some(8), 220)
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_and_a_bad_id_writes_nothing() {
        let base = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        // A file where the prefix's directory should be: every write fails.
        let blocked = base.path().join("reports");
        std::fs::write(&blocked, b"").unwrap();
        let mut reporter = Reporter::open(&settings(&blocked), state.path())
            .await
            .unwrap();
        let r = run_report("web-1", 3);
        let ok = standing(State::Ok, 3);
        assert_eq!(
            reporter.report(&r, ok, &Placement::default(), 100).await,
            Due::Everything
        );
        assert!(!reporter.last().unwrap().complete);
        assert_eq!(
            reporter.report(&r, ok, &Placement::default(), 120).await,
            Due::Nothing
        );
        std::fs::remove_file(&blocked).unwrap();
        assert_eq!(
            reporter.report(&r, ok, &Placement::default(), 160).await,
            Due::Everything
        );
        assert!(reporter.last().unwrap().complete);
        assert_eq!(files(&blocked), ["g/3/ok/web-1", "hosts/web-1.json"]);
        let bad = run_report("../etc", 3);
        assert_eq!(
            reporter
                .report(&bad, standing(State::Fail, 3), &Placement::default(), 200)
                .await,
            Due::Nothing
        );
    }
}

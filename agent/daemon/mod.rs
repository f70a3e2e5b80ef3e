//! `rolecall run` (SPEC §3, §7.8): reconcile at start, then after every poll interval plus
//! jitter; SIGHUP and `rolecall sync` (over the control socket) reconcile at once; SIGTERM
//! and SIGINT stop between reconciles, so a service transaction always finishes or rolls
//! back first. After a failure the same inputs are retried only after a backoff.

mod control;

use control::Waiter;
pub use control::{request_sync, Error, CONTROL_SOCKET};

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::fleet::record::{Placement, Standing};
use crate::fleet::report::Reporter;
use crate::metrics::Unrecorded;
use crate::pipeline::{self, Agent, Held, Reconciled, Request, Trigger, Way};
use crate::report::{Outcome, RunReport};
use crate::source::AnySource;
use crate::sys::{lock, notify};
use crate::text::chain;

/// First retry delay after a failed reconcile; doubled per failure up to `MAX_BACKOFF`.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait before retrying inputs that failed.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The delay before the next poll: the interval plus a jitter share in `[0, 1]`.
pub fn poll_delay(interval: Duration, jitter: Duration, share: f64) -> Duration {
    interval + jitter.mul_f64(share.clamp(0.0, 1.0))
}

/// The pause before retrying inputs that failed `failures` times in a row (1 = first).
pub fn failure_backoff(failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The wait before the next reconcile: `delay`, or less when the secrets' refresh (SPEC
/// §10) is due before it (`due_in`). A refresh already past (held inputs did not read the
/// secrets) is left to the polls: no busy loop.
pub fn wake_delay(delay: Duration, due_in: Option<Duration>) -> Duration {
    let due = due_in.filter(|d| !d.is_zero());
    due.map_or(delay, |due| due.min(delay))
}

/// First retry after a failed reconcile (source down without a cache, …).
pub const FIRST_ERROR_RETRY: Duration = Duration::from_secs(1);

/// The wait after `errors` failed reconciles in a row: 1 s doubling, capped at the poll
/// delay (a host that is failing never polls less often than a healthy one).
pub fn error_delay(errors: u32, poll: Duration) -> Duration {
    if errors == 0 {
        return poll;
    }
    let factor = 1u32.checked_shl(errors - 1).unwrap_or(u32::MAX);
    FIRST_ERROR_RETRY.saturating_mul(factor).min(poll)
}

/// Run the daemon until SIGTERM or SIGINT. `ready_target` is the systemd unit started
/// (`systemctl start --no-block`) once the host first converged, smoke tests passed: what
/// units that need a serving host order themselves after (issue 16).
///
/// # Errors
/// An unusable map URL, or a control socket that cannot be created.
pub async fn run(agent: Agent, ready_target: Option<String>) -> Result<(), crate::error::Error> {
    let source = AnySource::from_url(&agent.settings.map_url, agent.settings.fetch_timeout).await?;
    let socket = agent.state_dir.join(CONTROL_SOCKET);
    let mut events = Events::start(&socket)?;
    if let Some(every) = notify::watchdog_interval() {
        tokio::spawn(watchdog(every / 2));
    }
    let reporter = match &agent.settings.report {
        Some(settings) => Some(Reporter::open(settings, &agent.state_dir).await?),
        None => None,
    };
    let mut state = Loop {
        ready_target,
        reporter,
        ..Loop::default()
    };
    let mut next = Some((Trigger::Boot, Vec::<Waiter>::new()));
    while let Some((trigger, waiters)) = next {
        let report = Box::pin(state.reconcile(&agent, &source, trigger)).await;
        for w in waiters {
            let _ = w.send(report.clone());
        }
        state.report(&report).await;
        next = events.next(state.next_delay(&agent)).await;
    }
    info!("stopping");
    if let Ok(_lock) = lock::acquire(&agent.state_dir, Duration::from_secs(5)).await {
        state.flush(&agent);
    }
    notify::stopping();
    if let Err(e) = crate::sys::fs::remove_state(&socket) {
        warn!(error = %chain(&e), "control socket not removed");
    }
    Ok(())
}

/// What wakes the daemon between reconciles: the poll timer, SIGHUP, `rolecall sync`
/// requests on the control socket, and SIGTERM/SIGINT, which stop it.
struct Events {
    hup: Signal,
    term: Signal,
    int: Signal,
    requests: mpsc::Receiver<Waiter>,
}

impl Events {
    fn start(socket: &std::path::Path) -> Result<Events, Error> {
        let (tx, requests) = mpsc::channel::<Waiter>(64);
        let listener = control::bind(socket)?;
        tokio::spawn(control::accept(listener, tx));
        Ok(Events {
            hup: handler(SignalKind::hangup(), "SIGHUP")?,
            term: handler(SignalKind::terminate(), "SIGTERM")?,
            int: handler(SignalKind::interrupt(), "SIGINT")?,
            requests,
        })
    }

    /// The next reconcile's trigger and the `sync` requests waiting for it, after at most
    /// `delay`; `None` to stop.
    async fn next(&mut self, delay: Duration) -> Option<(Trigger, Vec<Waiter>)> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Some((Trigger::Poll, Vec::new())),
            _ = self.hup.recv() => Some((Trigger::Sighup, Vec::new())),
            Some(w) = self.requests.recv() => {
                let mut waiters = vec![w];
                while let Ok(more) = self.requests.try_recv() {
                    waiters.push(more);
                }
                Some((Trigger::Sync, waiters))
            }
            _ = self.term.recv() => None,
            _ = self.int.recv() => None,
        }
    }
}

fn handler(kind: SignalKind, name: &'static str) -> Result<Signal, Error> {
    signal(kind).map_err(|source| Error::Signal { name, source })
}

/// How often a daemon whose polls are all quiet still rewrites its status record and
/// metrics, so that their timestamps show it is alive.
pub const STATUS_REFRESH: Duration = Duration::from_secs(300);

/// What the loop remembers between reconciles.
#[derive(Debug, Default)]
struct Loop {
    /// `READY=1` was sent: the files were installed and checked once, so the services
    /// ordered after this unit may start and service commands can no longer wait for us.
    installed: bool,
    /// Converged once through the full path, smoke tests included.
    ready: bool,
    /// The unit to start when `ready` first becomes true.
    ready_target: Option<String>,
    hold: Option<Hold>,
    /// Failed reconciles in a row (source down without a cache, identity lost, …).
    errors: u32,
    /// The last `STATUS=` text sent.
    status: Option<String>,
    /// When the status record was last written.
    recorded: Option<tokio::time::Instant>,
    /// Quiet polls since then, counted into the next record (or recorded at stop).
    unrecorded: Option<Quiet>,
    /// Writes the host's fleet report (`[report]`, SPEC §9.1).
    reporter: Option<Reporter>,
    /// The host's place in the fleet, from the last map loaded.
    placement: Placement,
    /// When a staged rollout holding a newer generation opens this host's wave.
    wake: Option<SystemTime>,
}

/// Failed inputs the daemon does not retry before `until` (SPEC §7, issue 4), unless the
/// inputs change or someone asks.
#[derive(Debug, Clone)]
struct Hold {
    /// The inputs and the failure they are held for.
    held: Held,
    /// Failures in a row with these inputs.
    failures: u32,
    /// No retry before this.
    until: tokio::time::Instant,
}

/// Quiet polls not recorded yet; they all ended alike.
#[derive(Debug)]
struct Quiet {
    /// The last of them.
    last: RunReport,
    /// How many.
    count: u64,
}

impl Loop {
    async fn reconcile(
        &mut self,
        agent: &Agent,
        source: &AnySource,
        trigger: Trigger,
    ) -> RunReport {
        let report = match lock::acquire(&agent.state_dir, pipeline::LOCK_TIMEOUT).await {
            Ok(_lock) => {
                let reconciled = self.run(agent, source, trigger).await;
                self.publish(agent, &reconciled);
                self.remember(&reconciled);
                if let Some(placement) = &reconciled.placement {
                    self.placement.clone_from(placement);
                }
                reconciled.report
            }
            Err(e) => {
                warn!(error = %chain(&e), "reconcile skipped");
                pipeline::refused(trigger, &e.into())
            }
        };
        if report.outcome == Outcome::Converged && !self.ready {
            self.become_ready(&report).await;
        }
        self.errors = match report.outcome {
            Outcome::Failed => self.errors + 1,
            _ => 0,
        };
        self.wake = report
            .rollout
            .as_ref()
            .and_then(|note| note.opens_unix)
            .map(|t| UNIX_EPOCH + Duration::from_secs(t));
        report
    }

    /// Write the fleet report if due (SPEC §9.1): after the `sync` requests waiting for this
    /// reconcile have their answer, so a slow report store delays only the next poll, and
    /// by at most the reporter's bound.
    async fn report(&mut self, report: &RunReport) {
        if let Some(reporter) = self.reporter.as_mut() {
            let standing = Standing::of(report);
            let now = crate::report::now_unix();
            reporter
                .report(report, standing, &self.placement, now)
                .await;
        }
    }

    /// One reconcile under the lock: quiet only once this process converged through the
    /// full path (so the ready target always follows a smoke-tested reconcile), failed
    /// inputs held until their backoff ends unless someone asked (signal, sync).
    async fn run(&mut self, agent: &Agent, source: &AnySource, trigger: Trigger) -> Reconciled {
        let now = tokio::time::Instant::now();
        let hold = self
            .hold
            .as_ref()
            .filter(|h| trigger == Trigger::Poll && now < h.until);
        let installed = Cell::new(self.installed);
        let tell = || {
            if !installed.replace(true) {
                notify::ready("files installed and checked; reloading and smoke-testing");
                info!("files installed and checked: READY=1");
            }
        };
        let request = Request {
            trigger,
            settled: self.ready,
            held: hold.map(|h| &h.held),
            installed: Some(&tell),
        };
        let reconciled = pipeline::reconcile(agent, source, &request).await;
        self.installed = installed.get();
        reconciled
    }

    /// The first converge, smoke tests passed: the host serves. `READY=1` if the files
    /// were not installed by this process (nothing changed at boot), then the ready target.
    async fn become_ready(&mut self, report: &RunReport) {
        self.ready = true;
        if !std::mem::replace(&mut self.installed, true) {
            notify::ready(&report.status_line());
        }
        info!("ready: converged and smoke-tested");
        if let Some(unit) = &self.ready_target {
            start_unit(unit).await;
        }
    }

    /// Status record, metrics and `STATUS=` for a finished reconcile. A quiet poll that
    /// says what the one before said writes and sends nothing, but the record is refreshed
    /// every `STATUS_REFRESH`; a reconcile someone asked for is always recorded.
    fn publish(&mut self, agent: &Agent, reconciled: &Reconciled) {
        let mut report = reconciled.report.clone();
        let line = report.status_line();
        let quiet = reconciled.way == Way::Quiet;
        // Asked-for reconciles (SIGHUP, `rolecall sync`) are always recorded.
        let repeated = report.trigger == Trigger::Poll
            && quiet
            && self.status.as_deref() == Some(line.as_str());
        let fresh = self
            .recorded
            .is_some_and(|at| at.elapsed() < STATUS_REFRESH);
        if repeated && fresh {
            let count = self.unrecorded.as_ref().map_or(0, |q| q.count);
            debug!(
                elapsed_ms = report.elapsed_ms,
                "quiet poll: map unchanged, no drift"
            );
            self.unrecorded = Some(Quiet {
                last: report,
                count: count + 1,
            });
            return;
        }
        let earlier = self.unrecorded.take().map(|q| Unrecorded {
            outcome: q.last.outcome,
            count: q.count,
        });
        pipeline::record(agent, &mut report, earlier);
        self.recorded = Some(tokio::time::Instant::now());
        // A full reconcile always says how it ended: other STATUS= lines (waiting for
        // instance metadata) may have been sent meanwhile.
        if !quiet || self.status.as_deref() != Some(line.as_str()) {
            notify::status(&line);
            self.status = Some(line);
        }
    }

    /// Record the quiet polls not yet counted (at stop): the last one as the status
    /// record, the others as counts.
    fn flush(&mut self, agent: &Agent) {
        if let Some(Quiet { mut last, count }) = self.unrecorded.take() {
            let earlier = Unrecorded {
                outcome: last.outcome,
                count: count - 1,
            };
            pipeline::record(agent, &mut last, Some(earlier));
        }
    }

    /// Hold failed inputs for a backoff that doubles with each failure in a row; any
    /// other end releases the hold.
    fn remember(&mut self, reconciled: &Reconciled) {
        let report = &reconciled.report;
        if reconciled.way == Way::Held {
            return;
        }
        let failed = matches!(report.outcome, Outcome::Failed | Outcome::RolledBack);
        self.hold = match (failed, &reconciled.fingerprint) {
            (true, Some(fingerprint)) => Some(self.hold_for(fingerprint, report)),
            (true, None) => self.hold.take(),
            (false, _) => None,
        };
    }

    fn hold_for(&self, fingerprint: &str, report: &RunReport) -> Hold {
        let failures = match &self.hold {
            Some(h) if h.held.fingerprint == fingerprint => h.failures + 1,
            _ => 1,
        };
        let wait = failure_backoff(failures);
        let wait_ms = crate::text::millis(wait);
        warn!(
            failures,
            wait_ms, "these inputs are retried after a backoff"
        );
        Hold {
            held: Held {
                fingerprint: fingerprint.to_string(),
                report: report.clone(),
            },
            failures,
            until: tokio::time::Instant::now() + wait,
        }
    }

    /// The poll delay; a host held by a staged rollout wakes when its wave opens, plus its
    /// share of the jitter, if that comes first (it does not poll faster).
    fn next_delay(&self, agent: &Agent) -> Duration {
        let share = rand::random::<f64>();
        let poll = poll_delay(agent.settings.poll_interval, agent.settings.jitter, share);
        let delay = error_delay(self.errors, poll);
        let delay = match self.wake {
            Some(at) => {
                let until = at.duration_since(crate::report::now()).unwrap_or_default();
                delay.min(poll_delay(until, agent.settings.jitter, share))
            }
            None => delay,
        };
        wake_delay(delay, agent.secrets.due_in())
    }
}

/// How long `systemctl start --no-block` may take: it only queues a job.
const START_UNIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Start `unit` without waiting for it (units after it may take their time); a failure is
/// logged, the host keeps serving.
async fn start_unit(unit: &str) {
    let cmd = crate::catalog::Command {
        argv: ["systemctl", "start", "--no-block", unit]
            .map(String::from)
            .to_vec(),
    };
    match crate::sys::exec::run_ok(&cmd, START_UNIT_TIMEOUT).await {
        Ok(_) => info!(unit, "ready target started"),
        Err(e) => warn!(unit, error = %chain(&e), "ready target not started"),
    }
}

async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        notify::watchdog();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_delay_adds_a_share_of_the_jitter() {
        let s = Duration::from_secs;
        assert_eq!(poll_delay(s(30), s(10), 0.0), s(30));
        assert_eq!(poll_delay(s(30), s(10), 0.5), s(35));
        assert_eq!(poll_delay(s(30), s(10), 7.0), s(40));
    }

    #[test]
    fn the_secrets_refresh_wakes_the_loop_early_but_never_at_once() {
        let poll = Duration::from_secs(30);
        assert_eq!(wake_delay(poll, None), poll);
        assert_eq!(
            wake_delay(poll, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(wake_delay(poll, Some(Duration::from_secs(90))), poll);
        assert_eq!(
            wake_delay(poll, Some(Duration::ZERO)),
            poll,
            "past: no busy loop"
        );
    }

    #[test]
    fn error_delay_doubles_up_to_the_poll_delay() {
        let s = Duration::from_secs;
        assert_eq!(error_delay(0, s(30)), s(30));
        assert_eq!(error_delay(1, s(30)), s(1));
        assert_eq!(error_delay(3, s(30)), s(4));
        assert_eq!(error_delay(10, s(30)), s(30));
        assert_eq!(error_delay(99, s(30)), s(30));
    }

    #[test]
    fn failure_backoff_doubles_up_to_the_cap() {
        assert_eq!(failure_backoff(1), FIRST_BACKOFF);
        assert_eq!(failure_backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(failure_backoff(40), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn jittered_polls_land_inside_the_window() {
        let (interval, jitter) = (Duration::from_secs(30), Duration::from_secs(10));
        for _ in 0..100 {
            let start = tokio::time::Instant::now();
            tokio::time::sleep(poll_delay(interval, jitter, rand::random::<f64>())).await;
            let waited = start.elapsed();
            assert!(
                waited >= interval && waited <= interval + jitter,
                "{waited:?}"
            );
        }
    }
}

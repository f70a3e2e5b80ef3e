//! `rolecall check`: a Nagios/Icinga plugin over the status record.

use std::time::Duration;

use crate::error::Error;
use crate::fleet::State;
use crate::report::{self, Outcome, RunReport};

/// Options of `check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// WARNING when the last converge is older than this.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub warn_age: Duration,
    /// CRITICAL when the last converge is older than this.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub crit_age: Duration,
}

/// Plugin states (exit codes of the Nagios plugin guidelines).
const OK: u8 = 0;
const WARNING: u8 = 1;
const CRITICAL: u8 = 2;
const UNKNOWN: u8 = 3;

pub(super) fn run(cli: &super::Cli, args: &Args) -> Result<u8, Error> {
    let agent = match super::agent(cli) {
        Ok(a) => a,
        Err(e) => {
            return Ok(emit(
                UNKNOWN,
                &format!("configuration: {}", crate::text::chain(&e)),
                "",
            ))
        }
    };
    let record = match report::read(&agent.state_dir) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(emit(UNKNOWN, "no reconcile recorded yet", "")),
        Err(e) => return Ok(emit(UNKNOWN, &crate::text::chain(&e), "")),
    };
    let (code, text) = judge(&record, report::now_unix(), args);
    Ok(emit(
        code,
        &text,
        &perfdata(&record, report::now_unix(), args),
    ))
}

/// The plugin state and message for a status record at time `now`.
pub fn judge(r: &RunReport, now: u64, args: &Args) -> (u8, String) {
    let age = r.last_converged_unix.map(|t| now.saturating_sub(t));
    let generation = r.map.as_ref().map_or(0, |m| m.info.generation);
    match r.outcome {
        Outcome::RolledBack | Outcome::Failed | Outcome::Invalid => {
            return (CRITICAL, r.message.clone())
        }
        Outcome::Waiting => return (WARNING, r.message.clone()),
        Outcome::Converged => {}
    }
    if let Some(note) = r.rollout.as_ref().filter(|n| n.state == State::Halted) {
        return (
            WARNING,
            format!("{}; kept generation {generation}", note.describe()),
        );
    }
    let mut summary = format!(
        "converged to generation {generation} ({} files, {} services)",
        r.files.len(),
        r.services.len()
    );
    if let Some(note) = &r.rollout {
        summary = format!("{summary}; {}", note.describe());
    }
    match age {
        Some(a) if a > args.crit_age.as_secs() => {
            (CRITICAL, format!("last converged {a}s ago: {summary}"))
        }
        Some(a) if a > args.warn_age.as_secs() => {
            (WARNING, format!("last converged {a}s ago: {summary}"))
        }
        _ if r.map.as_ref().is_some_and(|m| m.from_cache) => {
            (WARNING, format!("{summary} from the cached map"))
        }
        _ => (OK, summary),
    }
}

fn perfdata(r: &RunReport, now: u64, args: &Args) -> String {
    let age = r.last_converged_unix.map_or(0, |t| now.saturating_sub(t));
    let generation = r.map.as_ref().map_or(0, |m| m.info.generation);
    format!(
        "age={age}s;{};{};0 duration={}ms;;;0 generation={generation};;;0 files={};;;0",
        args.warn_age.as_secs(),
        args.crit_age.as_secs(),
        r.elapsed_ms,
        r.files.len()
    )
}

fn emit(code: u8, text: &str, perf: &str) -> u8 {
    let state = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][usize::from(code.min(3))];
    let text = text.replace(['|', '\n'], " ");
    if perf.is_empty() {
        super::out(&format!("ROLECALL {state} - {text}\n"));
    } else {
        super::out(&format!("ROLECALL {state} - {text} | {perf}\n"));
    }
    code
}

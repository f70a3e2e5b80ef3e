//! `rolecall sync`: one reconcile now, with a printed summary.

use crate::daemon;
use crate::error::Error;
use crate::pipeline::{self, Trigger};
use crate::report;

/// Options of `sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the run report as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Write files only: no checks, reloads or smoke tests (image builds with --root, demos).
    #[arg(long)]
    pub files_only: bool,
}

pub(super) async fn run(cli: &super::Cli, args: &Args) -> Result<u8, Error> {
    let mut agent = super::agent(cli)?;
    agent.run_services = !args.files_only;
    // A running daemon does the reconcile (it holds the map state); else do it here.
    let from_daemon = if agent.run_services {
        daemon::request_sync(&agent.state_dir, pipeline::LOCK_TIMEOUT * 2).await?
    } else {
        None
    };
    let report = match from_daemon {
        Some(report) => report,
        None => {
            crate::threads::exits_after_one();
            pipeline::sync(&agent, Trigger::Sync).await
        }
    };
    if args.json {
        super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ));
    } else {
        super::out(&report::summary(&report));
    }
    Ok(super::sync_exit_code(report.outcome))
}

//! `rolecall status`: the last reconcile's record.

use crate::error::Error;
use crate::report;

/// Options of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the status record as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(cli: &super::Cli, args: &Args) -> Result<u8, Error> {
    let agent = super::agent(cli)?;
    match report::read(&agent.state_dir)? {
        Some(r) if args.json => super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&r).unwrap_or_default()
        )),
        Some(r) => super::out(&report::summary(&r)),
        None if args.json => super::out("null\n"),
        None => super::out(&format!(
            "no reconcile recorded yet in {}\n",
            agent.state_dir.display()
        )),
    }
    Ok(super::EXIT_OK)
}

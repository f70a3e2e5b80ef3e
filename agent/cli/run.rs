//! `rolecall run`: the daemon, for systemd.

use crate::daemon;
use crate::error::Error;

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub(super) async fn run(cli: &super::Cli, _args: &Args) -> Result<u8, Error> {
    let agent = super::agent(cli)?;
    Box::pin(daemon::run(agent)).await?;
    Ok(super::EXIT_OK)
}

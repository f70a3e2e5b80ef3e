//! `rolecall run`: the daemon, for systemd.

use crate::daemon;
use crate::error::Error;

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// systemd unit to start (`systemctl start --no-block UNIT`) once the host first
    /// converged and its smoke tests passed; units that need a serving host (load-balancer
    /// registration) order themselves after it. READY=1 comes earlier, as soon as the
    /// files are installed and checked, so the services ordered after rolecall can start.
    #[arg(long, value_name = "UNIT")]
    pub ready_target: Option<String>,
}

pub(super) async fn run(cli: &super::Cli, args: &Args) -> Result<u8, Error> {
    let agent = super::agent(cli)?;
    Box::pin(daemon::run(agent, args.ready_target.clone())).await?;
    Ok(super::EXIT_OK)
}

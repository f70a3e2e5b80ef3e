//! `rolecall snapshot --product P`: what the `db-backup` role's cron job runs (SPEC §3, §6).
//! Finds the product's database and `backup_url` in the agent's last-good map (the state
//! directory's cache, so a snapshot needs no network access to the map source), the client
//! arguments in agent.toml's `vars.mysql_client_args`, and hands over to `snapshot`.
//! Exit 0 when the snapshot is stored, 1 otherwise (nothing partial is left in S3).
//!
//! The host's identity is not looked up: the cron job exists only on the product's backup
//! host, and dumping does not depend on who the host is.

use std::time::Duration;

use crate::error::Error;
use crate::snapshot;

/// Options of `snapshot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Product whose database to dump.
    #[arg(long)]
    pub product: String,
    /// Snapshots of the product to keep, the new one included (96: a day at one every 15 minutes).
    #[arg(long, default_value_t = 96, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// Deadline of dump plus upload; kept under the cron interval so that runs never pile up.
    #[arg(long, default_value = "14m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub(super) async fn run(cli: &super::Cli, args: &Args) -> Result<u8, Error> {
    let agent = super::agent(cli)?;
    let cached = agent
        .cache()
        .load()?
        .ok_or_else(|| snapshot::Error::NoMap {
            state_dir: agent.state_dir.display().to_string(),
        })?;
    let mut request = snapshot::request(
        &agent.settings,
        &agent.state_dir,
        &cached.bytes,
        &args.product,
    )?;
    request.keep = usize::try_from(args.keep).unwrap_or(usize::MAX);
    request.timeout = args.timeout;
    request.now_unix = crate::report::now_unix();
    let report = snapshot::snapshot(&request).await?;
    super::out(&format!(
        "snapshot of {} stored at {} ({} bytes of SQL, {} bytes gzip, {} part(s)); {} old snapshot(s) deleted\n",
        request.database,
        report.url,
        report.dumped_bytes,
        report.stored_bytes,
        report.parts,
        report.deleted.len()
    ));
    Ok(super::EXIT_OK)
}

//! `rolecall fleet status` (SPEC §3, §9.1): parsing and printing; the join is in
//! `fleet::status`, the page in `fleet::html`. The map and report URLs, the heartbeat and
//! the signature key default to agent.toml's when it is readable.
//!
//! Exit codes: 0 every host ok; 1 some held, waiting, lagging or silent; 2 any failed or
//! halted; 3 the map or the reports cannot be read (or no URL to read them from).

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use crate::config::Settings;
use crate::error::Error;
use crate::fleet::status::{self, Options};

/// `fleet` subcommands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every host's state for a generation, from the reports (exit 0 all ok, 1 held/waiting/lagging/silent, 2 failed/halted, 3 unreadable).
    Status(StatusArgs),
}

/// Options of `fleet status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The role map (default: agent.toml's map.url).
    #[arg(long, value_name = "URL")]
    map: Option<String>,
    /// The report prefix, s3://bucket/prefix/ or file:///dir/ (default: agent.toml's report.url).
    #[arg(long, value_name = "URL")]
    report: Option<String>,
    /// The generation to show (default: the map's).
    #[arg(long, value_name = "N")]
    generation: Option<u64>,
    /// The hosts' heartbeat: no record for twice this long is silent (default: agent.toml's, else 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat: Option<Duration>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Give up on each request after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub(super) async fn run(cli: &super::Cli, cmd: &FleetCommand) -> Result<u8, Error> {
    let FleetCommand::Status(args) = cmd;
    let options = match options(cli, args) {
        Ok(options) => options,
        Err(why) => return Ok(unreadable(&why)),
    };
    let now = std::time::SystemTime::now();
    let (map, fleet) = match status::gather(&options, now).await {
        Ok(found) => found,
        Err(e) => return Ok(unreadable(&crate::text::chain(&e))),
    };
    if args.json {
        let json = serde_json::to_string_pretty(&fleet).unwrap_or_default();
        super::out(&format!("{json}\n"));
    } else {
        super::out(&status::table(&fleet));
    }
    if let Some(path) = &args.html {
        crate::sys::fs::write_state(path, crate::fleet::html::page(&map, &fleet).as_bytes())?;
        if !args.json {
            super::out(&format!("page written to {}\n", path.display()));
        }
    }
    Ok(super::fleet_exit_code(fleet.verdict()))
}

/// The URLs and heartbeat from the options, else from agent.toml.
fn options(cli: &super::Cli, args: &StatusArgs) -> Result<Options, String> {
    let settings = Settings::load(&cli.config);
    let config = settings.as_ref().ok();
    let missing = |what: &str, option: &str| match &settings {
        Ok(_) => format!(
            "no {option} given and {} has no {what}",
            cli.config.display()
        ),
        Err(e) => format!("no {option} given and {}", crate::text::chain(e)),
    };
    let map_url = match (&args.map, config) {
        (Some(url), _) => url.clone(),
        (None, Some(s)) => s.map_url.clone(),
        (None, None) => return Err(missing("map.url", "--map")),
    };
    let report = config.and_then(|s| s.report.as_ref());
    let report_url = match (&args.report, report) {
        (Some(url), _) => url.clone(),
        (None, Some(r)) => r.url.clone(),
        (None, None) => return Err(missing("[report] url", "--report")),
    };
    let heartbeat = args
        .heartbeat
        .or(report.map(|r| r.heartbeat))
        .unwrap_or(Duration::from_secs(3600));
    Ok(Options {
        map_url,
        report_url,
        generation: args.generation,
        heartbeat,
        timeout: args.timeout,
        verify_key: config.and_then(|s| s.verify_key.clone()),
    })
}

#[allow(
    clippy::print_stderr,
    reason = "why the fleet cannot be read goes to stderr, as main does for other errors"
)]
fn unreadable(why: &str) -> u8 {
    eprintln!(
        "rolecall: error: {}",
        crate::text::printable(why, crate::text::LINE_MAX)
    );
    super::EXIT_FLEET_UNREADABLE
}

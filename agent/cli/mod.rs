//! The command line (SPEC §3): the clap tree, global options, and the one mapping from
//! outcomes to exit codes. One file per command; the logic lives in the library.

mod check;
mod docs;
mod fleet;
mod map;
mod plan;
mod run;
mod snapshot;
mod status;
mod sync;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Settings;
use crate::error::Error;
use crate::pipeline::Agent;
use crate::report::Outcome;

/// Exit code: success / converged / no changes.
pub const EXIT_OK: u8 = 0;
/// Exit code: the reconcile failed (and was rolled back).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad input or configuration; nothing was changed.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of `plan`: changes are pending.
pub const EXIT_CHANGES: u8 = 3;
/// Exit code of `map publish`/`promote`: someone else changed the map first.
pub const EXIT_CONFLICT: u8 = 4;
/// Exit code of `fleet status`: some hosts held, waiting, lagging or silent.
pub const EXIT_FLEET_LAGGING: u8 = 1;
/// Exit code of `fleet status`: some hosts failed or halted.
pub const EXIT_FLEET_FAILING: u8 = 2;
/// Exit code of `fleet status`: the map or the reports cannot be read.
pub const EXIT_FLEET_UNREADABLE: u8 = 3;

/// rolecall: configure this host from the fleet's role map.
///
/// Reads the host's identity (EC2 instance metadata or agent.toml), fetches the role map
/// (S3, HTTPS or a file), renders the configuration of the host's roles, installs it
/// atomically, reloads the services, smoke-tests them and rolls back on failure.
#[derive(Debug, Parser)]
#[command(name = "rolecall", version, propagate_version = true)]
pub struct Cli {
    /// Agent configuration file.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/etc/rolecall/agent.toml",
        env = "ROLECALL_CONFIG"
    )]
    pub config: PathBuf,
    /// Prefix for every managed path and the state directory (image builds, tests).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logging (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event, fields kept for log shippers.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: reconcile at start, then whenever the map changes (for systemd; SIGHUP reconciles now).
    Run(run::Args),
    /// Reconcile once now and print what happened (exit 0 converged, 1 failed and rolled back, 2 bad input).
    Sync(sync::Args),
    /// Show what a reconcile would change, as unified diffs, changing nothing (exit 0 none, 3 pending).
    Plan(plan::Args),
    /// Show the last reconcile: map version, result, files, smoke tests, timings.
    Status(status::Args),
    /// Monitoring plugin (Nagios/Icinga): one line with perfdata (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check(check::Args),
    /// Work with role map files: validate, lint, show, diff, promote, publish, keygen.
    #[command(subcommand)]
    Map(map::MapCommand),
    /// Dump a product's database to its backup_url in S3 and keep the newest N (exit 0 stored, 1 failed).
    Snapshot(snapshot::Args),
    /// The fleet from the hosts' reports: status (exit 0 all ok, 1 lagging, 2 failed/halted, 3 unreadable).
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Write the man pages (for packaging).
    #[command(hide = true)]
    Manpage(docs::Args),
    /// Write bash, zsh and fish completions (for packaging).
    #[command(hide = true)]
    Completions(docs::Args),
}

impl Cli {
    /// The default log level for this command (the daemon and sync narrate, others are quiet).
    pub fn default_log_level(&self) -> &'static str {
        let base = match self.command {
            Command::Sync(_) | Command::Run(_) => 1,
            _ => 0,
        };
        match base + self.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    }
}

/// Run the command; the `u8` is the process exit code.
///
/// # Errors
/// Errors that end the command; `main` prints the chain and exits with [`exit_code_for`].
pub async fn run(cli: Cli) -> Result<u8, Error> {
    match &cli.command {
        Command::Run(args) => Box::pin(run::run(&cli, args)).await,
        Command::Sync(args) => Box::pin(sync::run(&cli, args)).await,
        Command::Plan(args) => Box::pin(plan::run(&cli, args)).await,
        Command::Status(args) => status::run(&cli, args),
        Command::Check(args) => check::run(&cli, args),
        Command::Manpage(args) => docs::manpage(args),
        Command::Completions(args) => docs::completions(args),
        Command::Map(cmd) => Box::pin(map::run(cmd)).await,
        Command::Snapshot(args) => Box::pin(snapshot::run(&cli, args)).await,
        Command::Fleet(cmd) => Box::pin(fleet::run(&cli, cmd)).await,
    }
}

/// The exit code of an error that ended a command: bad input, or a failure.
pub fn exit_code_for(err: &Error) -> u8 {
    sync_exit_code(if err.is_bad_input() {
        Outcome::Invalid
    } else {
        Outcome::Failed
    })
}

/// The exit code of an outcome (`sync`, and through [`exit_code_for`] every command's
/// errors): the one mapping.
pub fn sync_exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Converged | Outcome::Waiting => EXIT_OK,
        Outcome::Failed | Outcome::RolledBack => EXIT_FAILED,
        Outcome::Invalid => EXIT_BAD_INPUT,
    }
}

/// The exit code of `fleet status` (SPEC §3) for what it found.
pub fn fleet_exit_code(verdict: crate::fleet::status::Verdict) -> u8 {
    use crate::fleet::status::Verdict;
    match verdict {
        Verdict::AllOk => EXIT_OK,
        Verdict::Lagging => EXIT_FLEET_LAGGING,
        Verdict::Failing => EXIT_FLEET_FAILING,
    }
}

/// Load agent.toml and build the agent context.
fn agent(cli: &Cli) -> Result<Agent, Error> {
    let settings = Settings::load(&cli.config)?;
    Ok(Agent::new(settings, &cli.root))
}

/// Print to stdout: command output, as opposed to logs.
#[allow(clippy::print_stdout, reason = "command output goes to stdout")]
fn out(text: &str) {
    print!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_spec_exit_codes() {
        assert_eq!(sync_exit_code(Outcome::Converged), 0);
        assert_eq!(sync_exit_code(Outcome::Waiting), 0);
        assert_eq!(sync_exit_code(Outcome::RolledBack), 1);
        assert_eq!(sync_exit_code(Outcome::Failed), 1);
        assert_eq!(sync_exit_code(Outcome::Invalid), 2);
    }

    #[test]
    fn bad_input_errors_exit_2() {
        let err = Error::Map(crate::rolemap::Error::Syntax {
            message: "x".into(),
        });
        assert_eq!(exit_code_for(&err), 2);
        let io = std::io::Error::other("x");
        let err = Error::Read {
            path: "/x".into(),
            source: io,
        };
        assert_eq!(exit_code_for(&err), 1);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

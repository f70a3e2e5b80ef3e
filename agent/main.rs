//! The `rolecall` binary: parse the command line, set up logging and a current-thread
//! runtime, run the command, turn its outcome into an exit code (see `cli` for the codes).

use std::process::ExitCode;

use clap::Parser;
use rolecall::cli::{self, Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fatal(
                &format!("starting the async runtime: {e}"),
                cli::EXIT_FAILED,
            )
        }
    };
    let outcome = runtime.block_on(cli::run(cli));
    // What is left on tokio's blocking pool once the command is done was given up on by its
    // caller: a map file's read past its timeout (a hung mount), a DNS lookup. A plain drop
    // of the runtime would wait for it without end; none of it writes, so the process
    // leaves without it.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => fatal(&rolecall::text::chain(&err), cli::exit_code_for(&err)),
    }
}

fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.default_log_level()));
    // Colours only on a terminal: under systemd, stderr goes to the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

#[allow(
    clippy::print_stderr,
    reason = "the error chain is the command's last word"
)]
fn fatal(text: &str, code: u8) -> ExitCode {
    eprintln!("rolecall: error: {text}");
    ExitCode::from(code)
}

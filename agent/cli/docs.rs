//! `rolecall manpage` and `rolecall completions` (hidden): generate the man page and shell
//! completions from the clap definition, for the packages (packaging/build.sh).

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::error::Error;

/// Options of `manpage` and `completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Other(format!("{what} {}: {e}", path.display()))
}

/// Write `rolecall.1` (and one page per subcommand, `rolecall-sync.1`, …).
pub(super) fn manpage(args: &Args) -> Result<u8, Error> {
    std::fs::create_dir_all(&args.out_dir).map_err(|e| io("creating", &args.out_dir, e))?;
    let cmd = super::Cli::command();
    clap_mangen::generate_to(cmd, &args.out_dir)
        .map_err(|e| io("writing man pages into", &args.out_dir, e))?;
    super::out(&format!(
        "man pages written to {}\n",
        args.out_dir.display()
    ));
    Ok(super::EXIT_OK)
}

/// Write `rolecall.bash`, `_rolecall` and `rolecall.fish`.
pub(super) fn completions(args: &Args) -> Result<u8, Error> {
    std::fs::create_dir_all(&args.out_dir).map_err(|e| io("creating", &args.out_dir, e))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = super::Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "rolecall", &args.out_dir)
            .map_err(|e| io("writing completions into", &args.out_dir, e))?;
    }
    super::out(&format!(
        "completions written to {}\n",
        args.out_dir.display()
    ));
    Ok(super::EXIT_OK)
}

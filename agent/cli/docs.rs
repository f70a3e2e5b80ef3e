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

/// Write `name` in `dir` through `sys::fs` (the only writer) with what `fill` renders.
fn write(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> Result<(), Error> {
    let path = dir.join(name);
    let mut bytes = Vec::new();
    fill(&mut bytes).map_err(crate::sys::fs::io("rendering", &path))?;
    Ok(crate::sys::fs::write_state(&path, &bytes)?)
}

/// One page for `cmd` and each visible subcommand, as `clap_mangen::generate_to` names them.
fn pages(cmd: clap::Command, dir: &Path) -> Result<(), Error> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        pages(sub, dir)?;
    }
    let man = clap_mangen::Man::new(cmd);
    write(dir, &man.get_filename(), |out| man.render(out))
}

/// Write `rolecall.1` (and one page per subcommand, `rolecall-sync.1`, …).
pub(super) fn manpage(args: &Args) -> Result<u8, Error> {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    pages(cmd, &args.out_dir)?;
    super::out(&format!(
        "man pages written to {}\n",
        args.out_dir.display()
    ));
    Ok(super::EXIT_OK)
}

/// Write `rolecall.bash`, `_rolecall` and `rolecall.fish`.
pub(super) fn completions(args: &Args) -> Result<u8, Error> {
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = super::Cli::command();
        let name = clap_complete::Generator::file_name(&shell, "rolecall");
        write(&args.out_dir, &name, |out| {
            clap_complete::generate(shell, &mut cmd, "rolecall", out);
            Ok(())
        })?;
    }
    super::out(&format!(
        "completions written to {}\n",
        args.out_dir.display()
    ));
    Ok(super::EXIT_OK)
}

//! `rolecall map …`: tools for the people and scripts that write the role map.

use std::path::PathBuf;

use clap::Subcommand;

use crate::error::Error;
use crate::rolemap;

/// `map` subcommands.
#[derive(Debug, Subcommand)]
pub enum MapCommand {
    /// Check a map's schema and consistency; lists every problem with its TOML path (exit 0 valid, 2 invalid).
    Validate {
        /// Map file.
        file: PathBuf,
    },
    /// Table of hosts by product, role and availability zone.
    Show {
        /// Map file.
        file: PathBuf,
    },
}

pub(super) fn run(cmd: &MapCommand) -> Result<u8, Error> {
    match cmd {
        MapCommand::Validate { file } => validate(file),
        MapCommand::Show { file } => {
            let map = load(file)?;
            super::out(&rolemap::show::table(&map));
            Ok(super::EXIT_OK)
        }
    }
}

fn read(file: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(file).map_err(|e| Error::Other(format!("reading {}: {e}", file.display())))
}

fn load(file: &PathBuf) -> Result<rolemap::RoleMap, Error> {
    Ok(rolemap::load(&read(file)?)?)
}

fn validate(file: &PathBuf) -> Result<u8, Error> {
    let bytes = read(file)?;
    match rolemap::load(&bytes) {
        Ok(map) => {
            super::out(&format!(
                "{}: valid (generation {}, {} products, {} hosts)\n",
                file.display(),
                map.generation(),
                map.products.len(),
                map.hosts.len()
            ));
            Ok(super::EXIT_OK)
        }
        Err(rolemap::Error::Invalid { issues }) => {
            for issue in &issues {
                super::out(&format!("{}: {issue}\n", file.display()));
            }
            super::out(&format!(
                "{}: invalid, {} problem(s)\n",
                file.display(),
                issues.len()
            ));
            Ok(super::EXIT_BAD_INPUT)
        }
        Err(e) => Err(e.into()),
    }
}

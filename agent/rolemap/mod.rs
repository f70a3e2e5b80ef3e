//! Stage 3, the role map (SPEC §5): typed parse (`types`), validation listing every
//! problem with its TOML path (`validate`), resolution of one host's view (`resolve`),
//! and the pure transforms and checks behind the `map` commands. Pure: no I/O here. A map is
//! read straight from the TOML parser's events (`direct`); a large one is then validated and
//! resolved side by side.

pub mod accounts;
pub mod diff;
mod direct;
pub mod lint;
mod pools;
mod positions;
pub mod prepare;
pub mod promote;
pub mod resolve;
pub mod rollout;
#[cfg(test)]
pub(crate) mod sample;
#[cfg(test)]
mod shared_tests;
pub mod show;
#[cfg(test)]
mod tests;
pub mod types;
pub mod validate;

pub use resolve::{resolve, HostView, Resolution};

/// The tests' sample fleet (tests/maps/sample.toml): one product with a database chain and
/// a backup, two web hosts, in two zones; valid and lint-clean.
#[cfg(test)]
pub(crate) const SAMPLE: &str = include_str!("../../tests/maps/sample.toml");

/// The role names the map's own rules know (SPEC §5: a database position needs the `db`
/// role, a backup `db` or `db-backup`; lint looks at `web` hosts). Every role is defined
/// by the catalog; these are the ones validation, lint and `map show` refer to.
pub mod roles {
    /// Apache virtual hosts.
    pub const WEB: &str = "web";
    /// MariaDB/MySQL server.
    pub const DB: &str = "db";
    /// The backup replica's snapshot job.
    pub const DB_BACKUP: &str = "db-backup";
}

use crate::identity::Identity;
pub use types::RoleMap;
pub use validate::Issue;

/// Errors of the map stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not UTF-8 TOML, or a value has the wrong type.
    #[error("role map is not valid TOML: {message}")]
    Syntax {
        /// toml's message, with the line.
        message: String,
    },
    /// The map parsed but breaks the rules; every problem is listed.
    #[error("role map is invalid ({} problem{}): {}", issues.len(), if issues.len() == 1 { "" } else { "s" }, validate::summary(issues))]
    Invalid {
        /// Every problem, each with its TOML path.
        issues: Vec<Issue>,
    },
    /// The map is older than the one already applied (replay protection).
    #[error("role map generation {found} is older than the applied generation {applied}")]
    Stale {
        /// Generation of the map offered.
        found: u64,
        /// Generation already applied.
        applied: u64,
    },
}

/// Parse and validate map bytes: the only way agent code obtains a `RoleMap`.
///
/// # Errors
/// `Syntax` for TOML/type errors, `Invalid` with every rule broken.
pub fn load(bytes: &[u8]) -> Result<RoleMap, Error> {
    let map = parse(bytes)?;
    let issues = validate::validate(&map);
    valid(map, issues)
}

/// [`load`], and [`resolve`] for `identity`: a reconcile's stage 3. A large map is resolved
/// on this thread while another validates it; the resolution of a refused map is dropped
/// (resolution reads any map that parses, valid or not).
///
/// # Errors
/// As [`load`].
pub fn load_for(bytes: &[u8], identity: &Identity) -> Result<(RoleMap, Resolution), Error> {
    let map = parse(bytes)?;
    let side_by_side = map.hosts.len() >= MIN_HOSTS;
    let (issues, resolution) = crate::threads::join(
        side_by_side,
        || validate::validate(&map),
        || resolve(&map, identity),
    );
    Ok((valid(map, issues)?, resolution))
}

/// From this many hosts on, [`crate::threads::join`] is worth a thread for validation and
/// resolution.
const MIN_HOSTS: usize = 1000;

fn parse(bytes: &[u8]) -> Result<RoleMap, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Syntax {
        message: format!("not UTF-8: {e}"),
    })?;
    types::parse(text)
}

/// `map` if validation found no `issues`.
fn valid(map: RoleMap, issues: Vec<Issue>) -> Result<RoleMap, Error> {
    if issues.is_empty() {
        Ok(map)
    } else {
        Err(Error::Invalid { issues })
    }
}

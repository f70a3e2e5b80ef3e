//! `rolecall map …`: tools for the people and scripts that write the role map (SPEC §3):
//! validate, show, lint, diff, publish, promote, keygen. Parsing and printing only; the
//! logic is in `rolemap::{lint,diff,promote,publish}` and `publish`.
//!
//! Exit codes: 0 success; 1 failure (network, I/O, an existing key file for `keygen`), and
//! warnings under `lint --strict`; 2 bad input (invalid map, refused promotion, unusable
//! key, unusable URL); 4 conflict: someone else published first, or the file was edited from
//! an older generation than the published one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;

use crate::error::Error;
use crate::publish::{self, Current, Target};
use crate::rolemap::prepare::Prepared;
use crate::rolemap::rollout::Staging;
use crate::rolemap::{self, diff, lint, promote};

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
    /// Operational advice with TOML paths: AZ spread, single points of failure (exit 0; 1 on warnings with --strict; 2 invalid).
    Lint {
        /// Map file.
        file: PathBuf,
        /// Exit 1 when there is any warning.
        #[arg(long)]
        strict: bool,
    },
    /// What changed between two maps, in words, one line per change (exit 0; 2 if either is not TOML).
    Diff {
        /// The older map.
        old: PathBuf,
        /// The newer map.
        new: PathBuf,
    },
    /// Validate, raise the generation and upload, refusing to overwrite a version it did not start from (exit 0; 2 invalid; 4 conflict).
    Publish {
        /// Map file. Its `generation` is the version it was edited from.
        file: PathBuf,
        /// Where to publish: s3://bucket/key (or file:///path).
        #[arg(long, value_name = "URL")]
        to: String,
        #[command(flatten)]
        rollout: RolloutOptions,
        #[command(flatten)]
        options: WriteOptions,
    },
    /// Failover: make a replica the master, re-chain the others, publish (exit 0; 2 refused; 4 conflict).
    Promote {
        /// Product whose database fails over.
        #[arg(long)]
        product: String,
        /// Replica to promote (default: the first).
        #[arg(long, value_name = "HOST")]
        to: Option<String>,
        /// The published map: s3://bucket/key (or file:///path).
        #[arg(long, value_name = "URL")]
        map: String,
        #[command(flatten)]
        options: WriteOptions,
    },
    /// Create a signing key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub (for map.verify_key).
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
}

/// A staged rollout of a publish (SPEC §9.2); without `--rollout` every host applies the
/// map at once, and a `[rollout]` table in the file is removed.
#[derive(Debug, clap::Args)]
pub struct RolloutOptions {
    /// Stage the publish in waves: cumulative percents of the hosts, e.g. 1,10,50,100.
    #[arg(
        long,
        value_name = "PERCENTS",
        value_delimiter = ',',
        requires = "bake"
    )]
    rollout: Option<Vec<i64>>,
    /// Time between two waves' openings (with --rollout), e.g. 10m.
    #[arg(long, value_name = "DURATION", requires = "rollout")]
    bake: Option<String>,
    /// Failed or silent hosts of opened waves tolerated before the rollout halts.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "rollout")]
    max_failed: i64,
}

impl RolloutOptions {
    fn staging(&self) -> Option<Staging> {
        Some(Staging {
            waves: self.rollout.clone()?,
            bake: self.bake.clone()?,
            max_failed: self.max_failed,
        })
    }
}

/// Options shared by the commands that write the published map.
#[derive(Debug, clap::Args)]
pub struct WriteOptions {
    /// Print what would change and stop.
    #[arg(long)]
    dry_run: bool,
    /// Sign with this secret key (from `map keygen`) and upload the signature as URL.sig.
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,
    /// Give up on each request after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub(super) async fn run(cmd: &MapCommand) -> Result<u8, Error> {
    match cmd {
        MapCommand::Validate { file } => validate(file),
        MapCommand::Show { file } => {
            let map = load(file)?;
            super::out(&rolemap::show::table(&map));
            Ok(super::EXIT_OK)
        }
        MapCommand::Lint { file, strict } => run_lint(file, *strict),
        MapCommand::Diff { old, new } => run_diff(old, new),
        MapCommand::Publish {
            file,
            to,
            rollout,
            options,
        } => coded(run_publish(file, to, rollout, options).await),
        MapCommand::Promote {
            product,
            to,
            map,
            options,
        } => coded(run_promote(product, to.as_deref(), map, options).await),
        MapCommand::Keygen { out } => {
            let (key, public) = publish::keygen(out)?;
            super::out(&format!(
                "secret key: {} (keep it off the fleet)\npublic key: {} (set map.verify_key to it)\n",
                key.display(),
                public.display()
            ));
            Ok(super::EXIT_OK)
        }
    }
}

/// The map file a command names, refused (exit 2) when over the size limit of every map.
fn read(file: &Path) -> Result<Vec<u8>, Error> {
    crate::source::read_map_file(file, |source| Error::Read {
        path: file.to_path_buf(),
        source,
    })
}

fn load(file: &Path) -> Result<rolemap::RoleMap, Error> {
    Ok(rolemap::load(&read(file)?)?)
}

fn validate(file: &Path) -> Result<u8, Error> {
    let bytes = read(file)?;
    match rolemap::load(&bytes) {
        Ok(map) => {
            let counts = format!(
                "valid (generation {}, {} products, {} hosts)",
                map.generation(),
                map.products.len(),
                map.hosts.len()
            );
            out_lines(file, "", &[counts]);
            Ok(super::EXIT_OK)
        }
        Err(rolemap::Error::Invalid { issues }) => {
            out_lines(file, "", &issues);
            let summary = format!("invalid, {} problem(s)", issues.len());
            out_lines(file, "", &[summary]);
            Ok(super::EXIT_BAD_INPUT)
        }
        Err(e) => Err(e.into()),
    }
}

fn run_lint(file: &Path, strict: bool) -> Result<u8, Error> {
    let bytes = read(file)?;
    let map = match rolemap::load(&bytes) {
        Ok(map) => map,
        Err(rolemap::Error::Invalid { issues }) => {
            out_lines(file, "invalid: ", &issues);
            return Ok(super::EXIT_BAD_INPUT);
        }
        Err(e) => return Err(e.into()),
    };
    let warnings = lint::lint(&map);
    out_lines(file, "warning: ", &warnings);
    out_lines(file, "", &[format!("{} warning(s)", warnings.len())]);
    Ok(if strict && !warnings.is_empty() {
        super::EXIT_FAILED
    } else {
        super::EXIT_OK
    })
}

/// One line per item on stdout: the file, then `label`, then the item.
fn out_lines(file: &Path, label: &str, items: &[impl std::fmt::Display]) {
    for item in items {
        super::out(&format!("{}: {label}{item}\n", file.display()));
    }
}

fn run_diff(old: &Path, new: &Path) -> Result<u8, Error> {
    let parse = |file: &Path| -> Result<rolemap::RoleMap, Error> {
        let bytes = read(file)?;
        let text = String::from_utf8_lossy(&bytes);
        rolemap::types::parse(&text).map_err(|e| {
            Error::Map(rolemap::Error::Syntax {
                message: format!("{}: {e}", file.display()),
            })
        })
    };
    let changes = diff::diff(&parse(old)?, &parse(new)?);
    for change in &changes {
        super::out(&format!("{change}\n"));
    }
    Ok(super::EXIT_OK)
}

/// Print a publishing error and turn it into its exit code; errors without a specific code
/// go back to `main` (exit 1).
fn coded(result: Result<u8, publish::Error>) -> Result<u8, Error> {
    let err = match result {
        Ok(code) => return Ok(code),
        Err(err) => err,
    };
    let code = match &err {
        publish::Error::Conflict { .. } => super::EXIT_CONFLICT,
        publish::Error::Prepare { source, .. } => match source {
            rolemap::prepare::Error::Stale { .. } => super::EXIT_CONFLICT,
            _ => super::EXIT_BAD_INPUT,
        },
        publish::Error::Promote { .. }
        | publish::Error::NoMap { .. }
        | publish::Error::BadTarget { .. }
        | publish::Error::Key { .. }
        | publish::Error::Source(crate::source::Error::BadUrl { .. }) => super::EXIT_BAD_INPUT,
        _ => return Err(err.into()),
    };
    print_invalid(&err);
    stderr_line(&format!("error: {}", crate::text::chain(&err)));
    Ok(code)
}

/// One line per problem of an invalid map, before the error's one-line summary.
fn print_invalid(err: &publish::Error) {
    let issues = match err {
        publish::Error::Prepare {
            source: rolemap::prepare::Error::Invalid(rolemap::Error::Invalid { issues }),
            ..
        }
        | publish::Error::Promote {
            source: promote::Error::Invalid(rolemap::Error::Invalid { issues }),
            ..
        } => issues,
        _ => return,
    };
    for issue in issues {
        stderr_line(&format!("error: invalid: {issue}"));
    }
}

#[allow(
    clippy::print_stderr,
    reason = "a refused publish explains itself on stderr, as main does for other errors"
)]
fn stderr_line(text: &str) {
    eprintln!("rolecall: {text}");
}

async fn run_publish(
    file: &Path,
    to: &str,
    rollout: &RolloutOptions,
    options: &WriteOptions,
) -> Result<u8, publish::Error> {
    let io = |e| publish::Error::from(crate::sys::fs::io("reading", file)(e));
    let bytes = crate::source::read_map_file(file, io)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = staged(file, &text, rollout.staging().as_ref())?;
    let target = Target::open(to, options.timeout).await?;
    let current = target.read().await?;
    let prepared = publish::prepare(&target, &text, current.as_ref())?;
    describe(
        &target,
        &prepared,
        current.as_ref(),
        &file.display().to_string(),
    );
    write(&target, &prepared, current.as_ref(), options).await
}

async fn run_promote(
    product: &str,
    to: Option<&str>,
    map: &str,
    options: &WriteOptions,
) -> Result<u8, publish::Error> {
    let target = Target::open(map, options.timeout).await?;
    let (promoted, prepared, current) = publish::promote(&target, product, to).await?;
    let p = &promoted.promotion;
    // The product asked for first, then those moved with it because they share its server.
    let mut moves: Vec<&promote::Move> = p.moves.iter().collect();
    moves.sort_by_key(|m| m.product != p.product);
    for m in moves {
        let shared = if m.product == p.product {
            String::new()
        } else {
            format!(", sharing that server with product {product}")
        };
        super::out(&format!(
            "promoting {} to master of product {} (was {}{shared}); replicas now [{}]; {} marked removed\n",
            p.new_master,
            m.product,
            p.old_master,
            m.replicas.join(", "),
            p.old_master
        ));
    }
    describe(&target, &prepared, Some(&current), "promotion");
    write(&target, &prepared, Some(&current), options).await
}

/// The file's text with the `[rollout]` of this publish (start = now), or without one.
fn staged(file: &Path, text: &str, staging: Option<&Staging>) -> Result<String, publish::Error> {
    let now = std::time::Duration::from_secs(crate::report::now_unix());
    let prepare = |source| publish::Error::Prepare {
        url: file.display().to_string(),
        source,
    };
    let (text, replaced) = rolemap::rollout::with_rollout(text, staging, now).map_err(prepare)?;
    match (staging, replaced) {
        (Some(s), _) => super::out(&format!(
            "staged rollout: waves {:?}% one every {}, starting now; halts past {} failed or silent\n",
            s.waves, s.bake, s.max_failed
        )),
        (None, true) => super::out("no --rollout: the file's [rollout] table is dropped; every host applies this map at once\n"),
        (None, false) => {}
    }
    Ok(text)
}

/// Print the generation step, the changes in words and the unified diff.
fn describe(target: &Target, prepared: &Prepared, current: Option<&Current>, what: &str) {
    let url = target.url();
    let Some(current) = current else {
        super::out(&format!(
            "creating {url} (no map there yet) from {what} with generation {}\n",
            prepared.generation
        ));
        return;
    };
    let from = prepared.current_generation.map_or_else(
        || "an unreadable map".to_string(),
        |g| format!("generation {g}"),
    );
    super::out(&format!(
        "publishing {what} to {url}: {from} -> generation {} (over ETag {})\n",
        prepared.generation, current.etag
    ));
    for change in &prepared.changes {
        super::out(&format!("  {change}\n"));
    }
    super::out(&prepared.unified);
}

/// Sign, then upload unless `--dry-run`; print the result.
async fn write(
    target: &Target,
    prepared: &Prepared,
    current: Option<&Current>,
    options: &WriteOptions,
) -> Result<u8, publish::Error> {
    let signature = match &options.sign_key {
        Some(key) => Some(publish::sign(prepared, key)?),
        None => None,
    };
    if options.dry_run {
        super::out("dry run: nothing uploaded\n");
        return Ok(super::EXIT_OK);
    }
    if signature.is_none() && publish::has_signature(target, options.timeout).await? {
        stderr_line(&format!(
            "warning: {}.sig exists but this map is not signed (no --sign-key): agents with map.verify_key will refuse it",
            target.url()
        ));
    }
    let committed = publish::commit(target, prepared, current, signature, options.timeout).await?;
    super::out(&format!(
        "published generation {} to {}{}{}\n",
        prepared.generation,
        target.url(),
        committed
            .etag
            .map_or_else(String::new, |e| format!(" (ETag {e})")),
        if committed.signed { ", signed" } else { "" }
    ));
    Ok(super::EXIT_OK)
}

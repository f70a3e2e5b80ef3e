//! Stage 4's reads of this machine, done ahead (issue 13): the catalog and its templates,
//! the render memo, and an `lstat` of every file the memo remembers. None of them depends
//! on the map, so a reconcile that loads a large new map reads them on a thread of their
//! own meanwhile, into the core the map's load leaves idle for part of its time (the join of
//! its halves, the parsed tree's freeing). `plan`, a small map and a thread the system
//! refuses read them in turn instead, with the same result.
//!
//! The `lstat`s are taken earlier than the render that uses them, as they always were
//! taken before the reads they vouch for: a file changed after them has another ctime,
//! which the next reconcile sees, and a file read and found as remembered is stamped with
//! the `lstat` taken before that read.

use foldhash::HashMap;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

use super::{memo, Agent};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::error::Error;
use crate::plan;
use crate::render::{Memo, Templates};
use crate::sys::fs::{coarse_now, Fs, Stat};

/// From this many bytes on, a map's load leaves a core idle long enough to read ahead:
/// a smaller one loads in a millisecond or two (two halves are parsed side by side from
/// the same size), and the thread would only add its start and a wait.
const FROM_MAP_BYTES: usize = 256 * 1024;

/// Whether stage 4's reads are done ahead while a map of `len` bytes loads.
pub(super) fn is_worth_it(len: usize) -> bool {
    len >= FROM_MAP_BYTES
}

/// What stage 4 reads from this machine.
pub(super) struct Local {
    /// The catalog and its templates, or why they do not load.
    pub catalog: Result<(Catalog, Templates), Error>,
    pub last: LastRender,
}

/// The memo of the last render (see [`memo::load`]) and the `lstat`s of the files it
/// remembers (`None` when it remembers none or one failed).
pub(super) struct LastRender {
    pub memo: Option<Memo>,
    pub stats: Option<Stats>,
}

/// `lstat`s of files, and the coarse time read before them (what a stamp is settled
/// against: see `Stamp::is_settled`).
pub(super) struct Stats {
    pub now: (i64, i64),
    pub by_path: HashMap<PathBuf, Option<Stat>>,
}

impl Stats {
    /// `paths`' `lstat`s now; `None` when one cannot be taken.
    pub fn of<'p>(fs: &Fs, paths: impl IntoIterator<Item = &'p Path>) -> Option<Stats> {
        // Read before the stats: a file changed after them has a ctime at or after this.
        let now = coarse_now();
        let by_path = fs.stat_all(paths).ok()?;
        Some(Stats { now, by_path })
    }
}

impl Local {
    /// Read everything for `agent` here, in turn.
    pub fn here(agent: &Agent) -> Local {
        Local::read(&agent.settings, &agent.fs, &agent.state_dir)
    }

    /// Read everything here, in turn.
    fn read(settings: &Settings, fs: &Fs, state_dir: &Path) -> Local {
        let catalog = load_catalog(settings);
        let memo = memo::load(state_dir);
        let stats = memo.as_ref().and_then(|m| {
            let allowed = |p: &&Path| plan::is_allowed(p, &settings.allowed_roots);
            let paths: Vec<&Path> = m.paths().filter(allowed).collect();
            (!paths.is_empty()).then(|| Stats::of(fs, paths)).flatten()
        });
        Local {
            catalog,
            last: LastRender { memo, stats },
        }
    }
}

/// The catalog and its templates, loaded once per reconcile.
///
/// # Errors
/// A bad role file or template.
pub(super) fn load_catalog(settings: &Settings) -> Result<(Catalog, Templates), Error> {
    let catalog =
        Catalog::load_with_vars(&settings.catalog_dir, &settings.services, &settings.vars)?;
    let templates = Templates::load(&settings.templates_dir, &catalog)?;
    Ok((catalog, templates))
}

/// [`Local`] being read on a thread of its own; by default (not started, or no thread
/// granted), read here when it is asked for. Dropped unasked (a reconcile that ends before
/// its render: held, waiting for a role, a map refused), it waits for its thread, so that
/// no read of a reconcile runs on after it, beside the next one.
#[derive(Default)]
pub(super) struct Ahead(Option<JoinHandle<Local>>);

impl Drop for Ahead {
    fn drop(&mut self) {
        if let Some(reading) = self.0.take() {
            drop(reading.join());
        }
    }
}

impl Ahead {
    /// Start reading for `agent`; its thread enters the caller's tracing span.
    pub fn start(agent: &Agent) -> Ahead {
        let settings = agent.settings.clone();
        let (fs, state_dir) = (agent.fs.clone(), agent.state_dir.clone());
        let span = tracing::Span::current();
        let read = move || {
            let read = || Local::read(&settings, &fs, &state_dir);
            span.in_scope(|| crate::threads::alone(read))
        };
        Ahead(thread::Builder::new().spawn(read).ok())
    }

    /// What was read; read here if no thread was started.
    pub fn finish(mut self, agent: &Agent) -> Local {
        match self.0.take() {
            Some(reading) => reading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Local::here(agent),
        }
    }
}

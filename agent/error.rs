//! The crate error, wrapping each stage's error; `text::chain` prints it with its causes.

/// Any error a command can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// agent.toml.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// Identity stage.
    #[error(transparent)]
    Identity(#[from] crate::identity::Error),
    /// Fetch stage.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    /// Role map.
    #[error(transparent)]
    Map(#[from] crate::rolemap::Error),
    /// Catalog.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::Error),
    /// Render stage (boxed: Tera's error is large).
    #[error(transparent)]
    Render(Box<crate::render::Error>),
    /// Plan refused.
    #[error(transparent)]
    Refused(#[from] crate::plan::Refused),
    /// Filesystem.
    #[error(transparent)]
    Fs(#[from] crate::sys::fs::Error),
    /// Lock.
    #[error(transparent)]
    Lock(#[from] crate::sys::lock::Error),
    /// Processes.
    #[error(transparent)]
    Exec(#[from] crate::sys::exec::Error),
    /// `map publish`, `map promote`, `map keygen`.
    #[error(transparent)]
    Publish(#[from] crate::publish::Error),
    /// `snapshot`.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
    /// The fleet's report prefix (SPEC §9.1).
    #[error(transparent)]
    Fleet(#[from] crate::fleet::store::Error),
    /// Account changes (SPEC §10): conflicts, a failed command.
    #[error(transparent)]
    Accounts(#[from] crate::accounts::Error),
    /// The daemon's plumbing, or talking to it (`sync`).
    #[error(transparent)]
    Daemon(#[from] crate::daemon::Error),
    /// The live map was refused and `plan` will not preview from the cache instead.
    #[error("{reason}")]
    MapRejected {
        /// Why the live map was refused.
        reason: String,
    },
    /// A file named on the command line could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether this is bad input or configuration (exit code 2) rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::MapRejected { .. }
                | Error::Map(_)
                | Error::Catalog(_)
                | Error::Render(_)
                | Error::Refused(_)
        ) || matches!(
            self,
            Error::Fs(
                crate::sys::fs::Error::NotAllowed { .. }
                    | crate::sys::fs::Error::Symlink { .. }
                    | crate::sys::fs::Error::UnknownOwner { .. }
            )
        ) || matches!(self, Error::Source(e) if e.is_bad_map())
            || matches!(self, Error::Source(crate::source::Error::BadUrl { .. }))
    }
}

impl From<crate::render::Error> for Error {
    fn from(e: crate::render::Error) -> Self {
        Error::Render(Box::new(e))
    }
}

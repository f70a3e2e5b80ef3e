//! The crate error, wrapping each stage's error, and the one place that prints an error
//! chain (`a: b: c`): Tera's useful message, for one, is in a source, not the top line.

use std::error::Error as StdError;

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
    /// Anything else, described in words.
    #[error("{0}")]
    Other(String),
    /// Bad input described in words (exit code 2).
    #[error("{0}")]
    BadInput(String),
}

impl Error {
    /// Whether this is bad input or configuration (exit code 2) rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::BadInput(_)
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
        ) || matches!(self, Error::Source(crate::source::Error::BadUrl { .. }))
    }
}

impl From<crate::render::Error> for Error {
    fn from(e: crate::render::Error) -> Self {
        Error::Render(Box::new(e))
    }
}

/// The error and all its sources as `a: b: c`, skipping repeats.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = crate::sys::fs::Error::Io {
            action: "reading",
            path: "/x".into(),
            source: io,
        };
        assert_eq!(chain(&err), "reading /x: no such file");
    }
}

//! Stage 2, fetch: the role map's bytes from S3, HTTPS or a file (SPEC §7.2),
//! with conditional requests on the last ETag. The last-good cache lives in `cache.rs`.

pub mod cache;
pub mod file;
pub mod https;
pub mod s3;
pub mod verify;

use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

pub use cache::{Cache, CacheMeta, CachedMap};
pub use file::FileSource;
pub use https::HttpsSource;
pub use s3::{PutOutcome, S3Source};

/// Largest role map a source may return; anything bigger is refused rather than held in memory.
/// A map for several hundred hosts is tens of KiB.
pub const MAX_MAP_BYTES: u64 = 16 * 1024 * 1024;

/// The result of one fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The source still holds the object whose ETag we sent.
    NotModified,
    /// A new (or first) copy of the map.
    Map(MapBytes),
}

/// The map's raw bytes and the source's version markers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapBytes {
    /// Exact bytes of the object.
    pub bytes: Vec<u8>,
    /// ETag as the source sent it (quotes included), if any.
    pub etag: Option<String>,
    /// S3 VersionId when the bucket is versioned, if any.
    pub version: Option<String>,
    /// Hex SHA-256 of `bytes` when the source computed it already (a file's ETag is one).
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Errors of the fetch stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source could not be reached or answered with an error.
    #[error("fetching role map from {url}")]
    Unreachable {
        /// The map URL.
        url: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The source did not answer within the configured timeout.
    #[error("fetching role map from {url}: no answer within {timeout_ms} ms")]
    Timeout {
        /// The map URL.
        url: String,
        /// The timeout that expired.
        timeout_ms: u128,
    },
    /// The source answered, but not with a map (e.g. HTTP 404, access denied).
    #[error("fetching role map from {url}: {reason}")]
    Refused {
        /// The map URL.
        url: String,
        /// Status or error code and message.
        reason: String,
    },
    /// The map is larger than [`MAX_MAP_BYTES`]: an invalid map, never read whole.
    #[error("role map from {url} is {len} bytes, more than the limit of {MAX_MAP_BYTES}")]
    TooLarge {
        /// The map URL.
        url: String,
        /// Its size (or the bytes read before giving up).
        len: u64,
    },
    /// The map URL itself is not usable.
    #[error("map url {url:?} is not usable: {reason}")]
    BadUrl {
        /// The URL as written in agent.toml.
        url: String,
        /// Why.
        reason: String,
    },
    /// Writing the map to its source failed (`map publish`, `map promote`).
    #[error("writing role map to {url}")]
    Write {
        /// The map URL.
        url: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The map's signature is missing or wrong (`map.verify_key` is set): the map is refused.
    #[error("role map from {url} refused: signature check failed")]
    Unverified {
        /// The map URL.
        url: String,
        /// Why the signature was not accepted.
        #[source]
        source: verify::VerifyError,
    },
    /// The source answered "not modified" but nothing is cached to be the unmodified map.
    #[error("{url} answered 304 Not Modified but no map is cached")]
    NotCached {
        /// The map URL.
        url: String,
    },
    /// Reading or writing the last-good cache failed.
    #[error("last-good map cache {path}")]
    Cache {
        /// Cache file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A place a role map can be fetched from.
pub trait MapSource {
    /// Fetch the map; with `last_etag`, a conditional fetch that may answer `NotModified`.
    fn fetch(&self, last_etag: Option<&str>)
        -> impl Future<Output = Result<Fetched, Error>> + Send;
}

/// One of the map sources, chosen from the scheme of `map.url` in agent.toml.
#[derive(Debug)]
pub enum AnySource {
    /// `s3://bucket/key`.
    S3(S3Source),
    /// `https://…` (and `http://` on loopback, for tests).
    Https(HttpsSource),
    /// `file:///path`.
    File(FileSource),
}

impl AnySource {
    /// Build the source for `url`; `timeout` bounds each fetch.
    ///
    /// # Errors
    /// `Error::BadUrl` when the scheme is not `s3`, `https`, `http` or `file`, or the rest of
    /// the URL does not fit that scheme.
    pub async fn from_url(url: &str, timeout: Duration) -> Result<Self, Error> {
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("s3") => Ok(Self::S3(S3Source::new(url, timeout).await?)),
            Some("https" | "http") => Ok(Self::Https(HttpsSource::try_new(url, timeout)?)),
            Some("file") => Ok(Self::File(FileSource::try_new(url, timeout)?)),
            _ => Err(Error::BadUrl {
                url: url.to_owned(),
                reason: "the scheme must be s3://, https:// or file://".to_owned(),
            }),
        }
    }

    /// The map URL this source reads.
    pub fn url(&self) -> &str {
        match self {
            Self::S3(source) => source.url(),
            Self::Https(source) => source.url(),
            Self::File(source) => source.url(),
        }
    }
}

impl MapSource for AnySource {
    async fn fetch(&self, last_etag: Option<&str>) -> Result<Fetched, Error> {
        match self {
            Self::S3(source) => source.fetch(last_etag).await,
            Self::Https(source) => source.fetch(last_etag).await,
            Self::File(source) => source.fetch(last_etag).await,
        }
    }
}

/// `Error::TooLarge` for a map larger than [`MAX_MAP_BYTES`].
fn too_large(url: &str, len: u64) -> Error {
    Error::TooLarge {
        url: url.to_owned(),
        len,
    }
}

/// `chunk` of a body from `url` added to `bytes`, refused once they are over
/// [`MAX_MAP_BYTES`]: a body streamed in is never held past the limit.
///
/// # Errors
/// `Error::TooLarge`, with the count read.
pub fn extend_within_limit(url: &str, bytes: &mut Vec<u8>, chunk: &[u8]) -> Result<(), Error> {
    bytes.extend_from_slice(chunk);
    within_limit(url, bytes.len())
}

/// `Error::TooLarge` when `len` bytes read from `url` are over [`MAX_MAP_BYTES`].
fn within_limit(url: &str, len: usize) -> Result<(), Error> {
    match u64::try_from(len).unwrap_or(u64::MAX) {
        len if len > MAX_MAP_BYTES => Err(too_large(url, len)),
        _ => Ok(()),
    }
}

/// The role map file at `path` (a command's input, a `file://` target): refused from its
/// size when it is a regular file over [`MAX_MAP_BYTES`], and any other (a pipe) read no
/// further than the limit. `io` makes the error of a failed open or read.
///
/// # Errors
/// `io`'s, and `Error::TooLarge`.
pub fn read_map_file<E: From<Error>>(
    path: &Path,
    io: impl Fn(std::io::Error) -> E,
) -> Result<Vec<u8>, E> {
    let file = std::fs::File::open(path).map_err(&io)?;
    read_open_map(file, path, io)
}

/// [`read_map_file`] of the file at `path`, opened already.
///
/// # Errors
/// `io`'s, and `Error::TooLarge`.
pub fn read_open_map<E: From<Error>>(
    file: std::fs::File,
    path: &Path,
    io: impl Fn(std::io::Error) -> E,
) -> Result<Vec<u8>, E> {
    let size = file.metadata().map_or(0, |meta| meta.len());
    read_within_limit(file, size, &path.display().to_string(), io)
}

/// The map in `file`, read from `url`, `size` bytes by its metadata: refused unread when
/// that is over [`MAX_MAP_BYTES`], and read no further than one byte past the limit, as
/// the file may grow while it is read (or, a pipe, have no size). `io` makes the error of
/// a failed read.
///
/// # Errors
/// `io`'s, and `Error::TooLarge`.
pub fn read_within_limit<E: From<Error>>(
    file: std::fs::File,
    size: u64,
    url: &str,
    io: impl Fn(std::io::Error) -> E,
) -> Result<Vec<u8>, E> {
    if size > MAX_MAP_BYTES {
        return Err(too_large(url, size).into());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_MAP_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(&io)?;
    within_limit(url, bytes.len())?;
    Ok(bytes)
}

/// `Error::Timeout` for a request to `url` that got no answer within `timeout`.
fn timeout_error(url: &str, timeout: Duration) -> Error {
    Error::Timeout {
        url: url.to_owned(),
        timeout_ms: timeout.as_millis(),
    }
}

/// The `fetch` of a remote source: `request` (a conditional GET on `last_etag`) given up
/// after `timeout` as `Error::Timeout`, and a "not modified" answer logged.
async fn fetch_within(
    url: &str,
    timeout: Duration,
    last_etag: Option<&str>,
    request: impl Future<Output = Result<Fetched, Error>>,
) -> Result<Fetched, Error> {
    let fetched = tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| timeout_error(url, timeout))??;
    if fetched == Fetched::NotModified {
        tracing::debug!(url = %url, map_etag = ?last_etag, "map not modified");
    }
    Ok(fetched)
}

impl Error {
    /// `url` could not be reached: `err` says why.
    pub fn unreachable(url: &str, err: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Unreachable {
            url: url.to_owned(),
            source: Box::new(err),
        }
    }

    /// The source answered with something that is not a usable map (too large, signature
    /// refused): bad input, like an invalid map, not an unreachable source.
    pub fn is_bad_map(&self) -> bool {
        matches!(self, Error::TooLarge { .. } | Error::Unverified { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of `urls` is refused by `parse` with `Error::BadUrl`.
    pub(super) fn assert_bad_urls<T: std::fmt::Debug>(
        parse: impl Fn(&str) -> Result<T, Error>,
        urls: &[&str],
    ) {
        for url in urls {
            let err = parse(url).expect_err(url);
            assert!(matches!(err, Error::BadUrl { .. }), "{url}: {err:?}");
        }
    }

    #[tokio::test]
    async fn from_url_refuses_unknown_scheme() {
        let err = AnySource::from_url("ftp://host/map.toml", Duration::from_secs(1))
            .await
            .expect_err("ftp is not a map source");
        assert!(matches!(err, Error::BadUrl { .. }), "{err:?}");
    }
}

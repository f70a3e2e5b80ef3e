//! Stage 2, fetch from a local file (SPEC §1, §7.2): `file:///path`, for hosts off EC2 and
//! for tests. Its ETag is `sha256:<hex>` of the bytes, so an unchanged file answers
//! `NotModified` as S3 and HTTPS do. I/O; the URL parser and the ETag are pure and tested
//! below.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{timeout_error, Error, Fetched, MapBytes, MapSource};
use crate::text::sha256_hex;

/// The role map in a local file.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    url: String,
    timeout: Duration,
    /// The read of the file on tokio's blocking pool that a fetch gave up on (a hung mount):
    /// the next fetch waits on it again instead of starting another, so a daemon polling a
    /// hung mount holds one stuck thread, not one a poll. A read that ended between two
    /// fetches is stale, and the next fetch reads again.
    reading: Mutex<Option<Reading>>,
}

/// A read of the map file on tokio's blocking pool.
type Reading = JoinHandle<Result<Vec<u8>, Error>>;

impl FileSource {
    /// A source for `url` (`file:///absolute/path`); `timeout` bounds each read, since the
    /// file may live on a network mount.
    ///
    /// # Errors
    /// `Error::BadUrl` when `url` is not `file:///absolute/path` (or `file://localhost/…`).
    pub fn try_new(url: &str, timeout: Duration) -> Result<Self, Error> {
        Ok(Self {
            path: parse_file_url(url)?,
            url: url.to_owned(),
            timeout,
            reading: Mutex::new(None),
        })
    }

    /// The map URL, as written in agent.toml.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The file's bytes, read on tokio's blocking pool so that the fetch can give up on a hung
    /// mount after its timeout. Where the system grants no thread (a task limit), the pool
    /// would panic: the file is read here instead, without that protection.
    async fn read(&self) -> Result<Vec<u8>, Error> {
        if !crate::threads::available() {
            return read_file(&self.path, &self.url);
        }
        let mut reading = self.reading.lock().await;
        if reading.as_ref().is_some_and(JoinHandle::is_finished) {
            *reading = None;
        }
        let read = reading.get_or_insert_with(|| {
            let (path, url) = (self.path.clone(), self.url.clone());
            tokio::task::spawn_blocking(move || read_file(&path, &url))
        });
        let done = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| timeout_error(&self.url, self.timeout))?;
        *reading = None;
        done.map_err(|panicked| Error::unreachable(&self.url, panicked))?
    }
}

/// The bytes of the map file at `path`, refused without being read whole when it is
/// larger than [`super::MAX_MAP_BYTES`], and refused unread when it is not a regular file:
/// a FIFO (opened without waiting for a writer) or a device such as `/dev/zero` would
/// never end.
fn read_file(path: &Path, url: &str) -> Result<Vec<u8>, Error> {
    let io = |err: std::io::Error| match err.kind() {
        ErrorKind::NotFound => refused(url, format!("no such file {}", path.display())),
        _ => Error::unreachable(url, err),
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        let reason = format!("{} is not a regular file", path.display());
        return Err(refused(url, reason));
    }
    super::read_within_limit(file, meta.len(), url, io)
}

fn refused(url: &str, reason: String) -> Error {
    Error::Refused {
        url: url.to_owned(),
        reason,
    }
}

impl MapSource for FileSource {
    async fn fetch(&self, last_etag: Option<&str>) -> Result<Fetched, Error> {
        let bytes = self.read().await?;
        let sha256 = sha256_hex(&bytes);
        let etag = etag_of(&sha256);
        if last_etag == Some(etag.as_str()) {
            tracing::debug!(url = %self.url, map_etag = %etag, "map not modified");
            return Ok(Fetched::NotModified);
        }
        Ok(Fetched::Map(MapBytes {
            bytes,
            etag: Some(etag),
            version: None,
            sha256: Some(sha256),
        }))
    }
}

/// The ETag of a map read from a file: `sha256:` and the hex digest of its bytes.
pub fn file_etag(bytes: &[u8]) -> String {
    etag_of(&sha256_hex(bytes))
}

fn etag_of(sha256: &str) -> String {
    format!("sha256:{sha256}")
}

/// The absolute path in `file:///path` or `file://localhost/path` (RFC 8089). No
/// percent-decoding: the path is taken as written, and `%` is refused so that no one
/// expects it.
fn parse_file_url(url: &str) -> Result<PathBuf, Error> {
    let bad = |reason: &str| Error::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("file://")
        .ok_or_else(|| bad("expected file:///absolute/path"))?;
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(bad("expected file:///absolute/path, with no host"));
    }
    if path.ends_with('/') || path.contains('%') || path.chars().any(char::is_control) {
        return Err(bad(
            "the path must name a file, without '%' or control characters",
        ));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_give_absolute_paths() {
        let path = parse_file_url("file:///etc/rolecall/rolemap.toml").expect("valid");
        assert_eq!(path, PathBuf::from("/etc/rolecall/rolemap.toml"));
        let path = parse_file_url("file://localhost/srv/map.toml").expect("valid");
        assert_eq!(path, PathBuf::from("/srv/map.toml"));
    }

    #[test]
    fn other_file_urls_are_refused() {
        crate::source::tests::assert_bad_urls(
            parse_file_url,
            &[
                "file://host/srv/map.toml",
                "file://srv/map.toml",
                "file:///srv/maps/",
                "file:///srv/role%20map.toml",
                "/srv/map.toml",
            ],
        );
    }

    #[test]
    fn etag_is_the_sha256_of_the_bytes() {
        assert_eq!(
            file_etag(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[tokio::test]
    async fn unchanged_file_is_not_modified() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("map.toml");
        std::fs::write(&path, b"schema = 1\n").expect("write map");
        let url = format!("file://{}", path.display());
        let source = FileSource::try_new(&url, Duration::from_secs(5)).expect("valid url");
        let Fetched::Map(first) = source.fetch(None).await.expect("first fetch") else {
            panic!("first fetch must return the map");
        };
        assert_eq!(first.bytes, b"schema = 1\n");
        assert_eq!(first.sha256, Some(sha256_hex(b"schema = 1\n")), "its hash");
        let again = source
            .fetch(first.etag.as_deref())
            .await
            .expect("second fetch");
        assert_eq!(again, Fetched::NotModified);
        std::fs::write(&path, b"schema = 1\ngeneration = 2\n").expect("rewrite map");
        let changed = source
            .fetch(first.etag.as_deref())
            .await
            .expect("third fetch");
        assert!(matches!(changed, Fetched::Map(_)));
    }

    #[tokio::test]
    async fn missing_file_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("file://{}/absent.toml", dir.path().display());
        let source = FileSource::try_new(&url, Duration::from_secs(5)).expect("valid url");
        let err = source.fetch(None).await.expect_err("no file");
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    }
}

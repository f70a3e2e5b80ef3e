//! SPEC §9.1, I/O: the report prefix, an S3 prefix (`s3://bucket/prefix/`, through the one
//! S3 client builder of `source::s3`) or a shared directory (`file:///dir/`, written through
//! `sys::fs`): put, delete, list and get of hosts' records and markers, each request bounded
//! by a timeout. Used by the host (`report`) and by `fleet status`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use crate::source::s3::{service_failure, split_s3_url, status_of};

/// Largest record `get` reads: records are under 4 KiB, anything far bigger is not one.
pub const MAX_RECORD_READ: usize = 64 * 1024;

/// Errors of the report store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The prefix URL is not usable.
    #[error("report url {url:?} is not usable: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// S3 answered with an error.
    #[error("{action} {url}: {reason}")]
    Refused {
        /// `writing`, `deleting`, `listing`, `reading`.
        action: &'static str,
        /// The object or prefix.
        url: String,
        /// Status, code and message.
        reason: String,
    },
    /// S3 could not be reached.
    #[error("{action} {url}")]
    Unreachable {
        /// What was being done.
        action: &'static str,
        /// The object or prefix.
        url: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// S3 did not answer in time.
    #[error("{action} {url}: no answer within {timeout_ms} ms")]
    Timeout {
        /// What was being done.
        action: &'static str,
        /// The object or prefix.
        url: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// A record is far larger than any record.
    #[error("{url} is more than {MAX_RECORD_READ} bytes: not a host record")]
    TooLarge {
        /// The object.
        url: String,
    },
    /// Listing a directory failed.
    #[error("listing {path}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading a file failed.
    #[error(transparent)]
    Fs(#[from] crate::sys::fs::Error),
}

/// `url` as a report prefix ending in `/`: `s3://bucket[/prefix]` or `file:///absolute/dir`.
///
/// # Errors
/// Why it is not one, in words (agent.toml and `fleet status` name the key or option).
pub fn prefix_url(url: &str) -> Result<String, String> {
    let bad_char = |c: char| c.is_control() || c.is_whitespace();
    if url.chars().any(bad_char) || url.contains("..") || url.contains('%') {
        return Err(format!(
            "{url:?} must not hold spaces, control characters, '%' or '..'"
        ));
    }
    let ok = if url.starts_with("s3://") {
        split_s3_url(url).map_err(str::to_owned)?;
        true
    } else {
        url.strip_prefix("file://")
            .is_some_and(|path| path.starts_with('/'))
    };
    if !ok {
        return Err(format!(
            "{url:?} must be s3://bucket/prefix/ or file:///absolute/dir/"
        ));
    }
    Ok(if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    })
}

/// One object or file found by [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key relative to the prefix listed (`ok/web-1` under `g/42/`).
    pub key: String,
    /// When it was last written.
    pub modified: SystemTime,
}

/// The report prefix.
#[derive(Debug)]
pub enum Store {
    /// Under an S3 prefix.
    S3(S3Store),
    /// Under a directory.
    Dir(DirStore),
}

impl Store {
    /// The store for `url` (a [`prefix_url`]); `timeout` bounds each request.
    ///
    /// # Errors
    /// `BadUrl`.
    pub async fn open(url: &str, timeout: Duration) -> Result<Store, Error> {
        let url = prefix_url(url).map_err(|reason| Error::BadUrl {
            url: url.to_string(),
            reason,
        })?;
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(Store::Dir(DirStore {
                root: PathBuf::from(path),
                url,
            }));
        }
        let (bucket, prefix) = split_s3_url(&url).map_err(|reason| Error::BadUrl {
            url: url.clone(),
            reason: reason.to_string(),
        })?;
        Ok(Store::S3(S3Store {
            client: crate::source::s3::client().await,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            url: url.clone(),
            timeout,
        }))
    }

    /// The prefix URL, ending in `/`.
    pub fn url(&self) -> &str {
        match self {
            Store::S3(s) => &s.url,
            Store::Dir(d) => &d.url,
        }
    }

    /// Write `bytes` at `key`.
    ///
    /// # Errors
    /// The request's or the file's error.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), Error> {
        match self {
            Store::S3(s) => s.put(key, bytes).await,
            Store::Dir(d) => Ok(crate::sys::fs::write_state(&d.path(key), &bytes)?),
        }
    }

    /// Delete `key`; one that is already gone is fine.
    ///
    /// # Errors
    /// The request's or the file's error.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        match self {
            Store::S3(s) => s.delete(key).await,
            Store::Dir(d) => Ok(crate::sys::fs::remove_state(&d.path(key))?),
        }
    }

    /// Everything under `prefix` (ending in `/`), keys relative to it, in key order.
    ///
    /// # Errors
    /// The requests' or the directory's error.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, Error> {
        let mut listed = match self {
            Store::S3(s) => s.list(prefix).await?,
            Store::Dir(d) => d.list(prefix)?,
        };
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }

    /// The bytes at `key`, or `None` when there is nothing.
    ///
    /// # Errors
    /// The request's or the file's error; `TooLarge` past [`MAX_RECORD_READ`].
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let bytes = match self {
            Store::S3(s) => s.get(key).await?,
            Store::Dir(d) => crate::sys::fs::read_state(&d.path(key))?,
        };
        match bytes {
            Some(b) if b.len() > MAX_RECORD_READ => Err(Error::TooLarge {
                url: format!("{}{key}", self.url()),
            }),
            other => Ok(other),
        }
    }
}

/// An S3 prefix.
#[derive(Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Key prefix, empty or ending in `/`.
    prefix: String,
    url: String,
    timeout: Duration,
}

impl S3Store {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), Error> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .content_type(content_type(key))
            .body(ByteStream::from(bytes));
        self.call("writing", key, request.send()).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        let request = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix));
        self.call("deleting", key, request.send()).await.map(|_| ())
    }

    /// ListObjectsV2, page after page (up to 1,000 keys each).
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, Error> {
        let full = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.take());
            let page = self.call("listing", prefix, request.send()).await?;
            for object in page.contents() {
                let key = object.key().and_then(|k| k.strip_prefix(full.as_str()));
                if let Some(key) = key {
                    let secs = object.last_modified().map_or(0, |t| t.secs());
                    let modified =
                        UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
                    out.push(Listed {
                        key: key.to_string(),
                        modified,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix));
        let sent = tokio::time::timeout(self.timeout, request.send()).await;
        let output = match sent {
            Err(_) => return Err(self.timed_out("reading", key)),
            Ok(Err(err)) if status_of(&err) == Some(404) => return Ok(None),
            Ok(Err(err)) => return Err(self.failed("reading", key, err)),
            Ok(Ok(output)) => output,
        };
        let body = tokio::time::timeout(self.timeout, output.body.collect()).await;
        match body {
            Err(_) => Err(self.timed_out("reading", key)),
            Ok(Err(err)) => Err(Error::Unreachable {
                action: "reading",
                url: self.object(key),
                source: Box::new(err),
            }),
            Ok(Ok(data)) => Ok(Some(data.into_bytes().to_vec())),
        }
    }

    /// One request, bounded by the timeout, its error in words.
    async fn call<T, E>(
        &self,
        action: &'static str,
        key: &str,
        request: impl std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, Error>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(self.timed_out(action, key)),
            Ok(Err(err)) => Err(self.failed(action, key, err)),
            Ok(Ok(output)) => Ok(output),
        }
    }

    fn failed<E>(&self, action: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match service_failure(&err) {
            Some(reason) => Error::Refused {
                action,
                url: self.object(key),
                reason,
            },
            None => Error::Unreachable {
                action,
                url: self.object(key),
                source: Box::new(err),
            },
        }
    }

    fn timed_out(&self, action: &'static str, key: &str) -> Error {
        Error::Timeout {
            action,
            url: self.object(key),
            timeout_ms: crate::text::millis(self.timeout),
        }
    }

    fn object(&self, key: &str) -> String {
        format!("{}{key}", self.url)
    }
}

/// Records are JSON; markers are empty.
fn content_type(key: &str) -> &'static str {
    if key.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// A directory.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    url: String,
}

impl DirStore {
    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Every file under `prefix`, recursively; temporary files of a write in progress
    /// (`.rolecall-*`) are left out.
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, Error> {
        let base = self.path(prefix);
        let mut out = Vec::new();
        walk(&base, &base, &mut out)?;
        Ok(out)
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<Listed>) -> Result<(), Error> {
    let failed = |source| Error::List {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(e)),
    };
    for entry in entries {
        let entry = entry.map_err(failed)?;
        let meta = entry.metadata().map_err(failed)?;
        let path = entry.path();
        if meta.is_dir() {
            walk(base, &path, out)?;
        } else if meta.is_file()
            && !entry
                .file_name()
                .to_string_lossy()
                .starts_with(".rolecall-")
        {
            let key = path.strip_prefix(base).unwrap_or(&path);
            out.push(Listed {
                key: key.to_string_lossy().into_owned(),
                modified: meta.modified().unwrap_or(UNIX_EPOCH),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_in_a_slash() {
        assert_eq!(
            prefix_url("s3://fleet-config/fleet").unwrap(),
            "s3://fleet-config/fleet/"
        );
        assert_eq!(
            prefix_url("s3://fleet-config").unwrap(),
            "s3://fleet-config/"
        );
        assert_eq!(
            prefix_url("file:///srv/fleet/").unwrap(),
            "file:///srv/fleet/"
        );
        for bad in [
            "https://example.com/fleet/",
            "s3://ab/fleet/",
            "file://srv/fleet",
            "file:///srv/../etc",
            "s3://fleet-config/a b/",
            "s3://fleet-config/x\n",
            "/srv/fleet",
        ] {
            assert!(prefix_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_directory_store_puts_lists_gets_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = Store::open(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(store.url(), format!("{url}/"));
        store.put("g/4/ok/web-1", Vec::new()).await.unwrap();
        store.put("g/4/fail/web-2", Vec::new()).await.unwrap();
        store.put("g/5/ok/web-1", Vec::new()).await.unwrap();
        store.put("hosts/web-1.json", b"{}".to_vec()).await.unwrap();
        let keys: Vec<String> = store
            .list("g/4/")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(keys, ["fail/web-2", "ok/web-1"]);
        assert!(store.list("g/9/").await.unwrap().is_empty());
        assert_eq!(
            store.get("hosts/web-1.json").await.unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(store.get("hosts/none.json").await.unwrap(), None);
        store.delete("g/4/fail/web-2").await.unwrap();
        store.delete("g/4/fail/web-2").await.unwrap();
        assert_eq!(store.list("g/4/").await.unwrap().len(), 1);
    }
}

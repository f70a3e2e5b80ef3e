//! `rolecall snapshot` (SPEC §1, §3, §6 `db-backup`; issue 5): dump one product's database
//! on this host with `mariadb-dump --single-transaction`, gzip it and stream it to the
//! product's `backup_url` as an S3 multipart upload, named by UTC time; then keep the newest
//! N snapshots of that product and delete the older ones. I/O; the naming and retention
//! decisions are pure functions, tested below.
//!
//! The dump is this module's own `tokio::process` child, not a `sys::exec` command: `sys::exec`
//! captures a capped tail of the output, and a dump is a stream of gigabytes that must go to
//! S3 as it is produced, never whole in memory or on disk. It keeps `sys::exec`'s other rules:
//! argv only (no shell), a minimal environment, a deadline that kills it.
//!
//! No partial object: parts are invisible until `CompleteMultipartUpload`, which is sent only
//! after the dump exited 0; any failure (dump, compression, S3, deadline) sends
//! `AbortMultipartUpload` instead. Two snapshots in the same second share a name; the later
//! one wins.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, UNIX_EPOCH};

use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use flate2::write::GzEncoder;
use flate2::Compression;
use tokio::io::AsyncReadExt;

/// Size of each uploaded part but the last. S3 wants at least 5 MiB and at most 10,000
/// parts, so 8 MiB parts allow dumps up to about 78 GiB compressed, holding one part in memory.
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Snapshots kept by default: one day at one every 15 minutes.
pub const DEFAULT_KEEP: usize = 96;
/// The dump program.
pub const DUMP_PROGRAM: &str = "mariadb-dump";
/// Client arguments when `vars.mysql_client_args` is not set (as the db role's smoke test).
pub const DEFAULT_CLIENT_ARGS: &str = "--protocol=socket";
/// Bytes of the dump's stderr kept for the error message.
const STDERR_CAP_BYTES: usize = 4096;
/// `PATH` for the dump: the distribution's directories only (as `sys::exec`).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Errors of a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent has no cached map to find the product in.
    #[error("no cached role map in {state_dir}; the agent has not applied a map on this host yet")]
    NoMap {
        /// State directory searched.
        state_dir: String,
    },
    /// The cached map does not validate (it always should: only valid maps are cached).
    #[error("the cached role map in {state_dir} is not usable")]
    BadMap {
        /// State directory.
        state_dir: String,
        /// Why.
        #[source]
        source: crate::rolemap::Error,
    },
    /// The product, its database or its `backup_url` is missing from the map.
    #[error("cannot snapshot product {product:?}: {reason}")]
    NotConfigured {
        /// The product.
        product: String,
        /// What is missing, with its TOML path.
        reason: String,
    },
    /// `vars.mysql_client_args` cannot be split into arguments.
    #[error("vars.mysql_client_args in {config}: {reason}")]
    ClientArgs {
        /// agent.toml.
        config: String,
        /// Why.
        reason: String,
    },
    /// `backup_url` is not `s3://bucket[/prefix]`.
    #[error("backup_url {url:?} is not s3://bucket/prefix/")]
    BadUrl {
        /// The URL.
        url: String,
    },
    /// The dump program could not be started.
    #[error("starting `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The dump exited non-zero.
    #[error("`{command}` exited with {}: {stderr}", exit_code.map_or("a signal".to_string(), |c| format!("code {c}")))]
    Dump {
        /// The command line.
        command: String,
        /// Its exit code.
        exit_code: Option<i32>,
        /// Tail of its stderr.
        stderr: String,
    },
    /// Reading or compressing the dump failed.
    #[error("{action} the dump of `{command}`")]
    Stream {
        /// `reading` or `compressing`.
        action: &'static str,
        /// The command line.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An S3 request failed.
    #[error("{action} s3://{bucket}/{key}")]
    S3 {
        /// What was being done.
        action: &'static str,
        /// Bucket.
        bucket: String,
        /// Key or prefix.
        key: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The dump and upload did not finish in time.
    #[error("the snapshot did not finish within {timeout_ms} ms; the upload was aborted")]
    Timeout {
        /// The deadline.
        timeout_ms: u128,
    },
}

/// Everything one snapshot needs.
#[derive(Debug, Clone)]
pub struct Request {
    /// Product.
    pub product: String,
    /// Database (schema) name.
    pub database: String,
    /// `s3://bucket/prefix/`.
    pub backup_url: String,
    /// Dump program (`mariadb-dump`).
    pub program: String,
    /// Client connection arguments, before the dump's own.
    pub client_args: Vec<String>,
    /// Snapshots to keep, the new one included.
    pub keep: usize,
    /// Wall-clock time, for the name (seconds since the epoch, UTC).
    pub now_unix: u64,
    /// Deadline of dump plus upload.
    pub timeout: Duration,
}

/// What a snapshot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `s3://bucket/key` of the new snapshot.
    pub url: String,
    /// Bytes of SQL dumped.
    pub dumped_bytes: u64,
    /// Bytes stored (compressed).
    pub stored_bytes: u64,
    /// Parts uploaded.
    pub parts: usize,
    /// Keys deleted by retention.
    pub deleted: Vec<String>,
}

/// Build the request for `product` from agent.toml's `[vars]` and the cached map bytes.
///
/// # Errors
/// `BadMap`, `NotConfigured` (product, database or backup_url missing), `ClientArgs`.
pub fn request(
    settings: &crate::config::Settings,
    state_dir: &std::path::Path,
    map_bytes: &[u8],
    product: &str,
) -> Result<Request, Error> {
    let map = crate::rolemap::load(map_bytes).map_err(|source| Error::BadMap {
        state_dir: state_dir.display().to_string(),
        source,
    })?;
    let missing = |reason: String| Error::NotConfigured {
        product: product.to_string(),
        reason,
    };
    let at = format!("products.{}", crate::rolemap::validate::key(product));
    let p = map
        .products
        .get(product)
        .ok_or_else(|| missing(format!("{at} is not in the map")))?;
    let db = p
        .database
        .as_ref()
        .ok_or_else(|| missing(format!("{at}.database is not set")))?;
    let url = db
        .backup_url
        .clone()
        .ok_or_else(|| missing(format!("{at}.database.backup_url is not set")))?;
    Ok(Request {
        product: product.to_string(),
        database: db.name.clone(),
        backup_url: url,
        program: DUMP_PROGRAM.to_string(),
        client_args: client_args(settings)?,
        keep: DEFAULT_KEEP,
        now_unix: 0,
        timeout: Duration::from_secs(14 * 60),
    })
}

fn client_args(settings: &crate::config::Settings) -> Result<Vec<String>, Error> {
    let bad = |reason: String| Error::ClientArgs {
        config: settings.path.display().to_string(),
        reason,
    };
    let text = match settings.vars.get("mysql_client_args") {
        None => DEFAULT_CLIENT_ARGS,
        Some(toml::Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(bad(format!(
                "expected a string, found {}",
                other.type_str()
            )))
        }
    };
    shell_words::split(text).map_err(|e| bad(format!("{text:?}: {e}")))
}

/// Dump, compress, upload, then apply retention.
///
/// # Errors
/// `BadUrl`, `Spawn`, `Dump`, `Stream`, `S3`, `Timeout`; the upload is aborted on each.
pub async fn snapshot(req: &Request) -> Result<Report, Error> {
    let (bucket, prefix) = parse_backup_url(&req.backup_url)?;
    let key = object_key(&prefix, &req.product, req.now_unix);
    let client = client().await;
    let mut upload = Upload::start(&client, &bucket, &key).await?;
    let deadline = tokio::time::timeout(req.timeout, async {
        let dumped = stream(req, &mut upload).await?;
        upload.complete().await?;
        Ok(dumped)
    });
    let dumped = match deadline.await.unwrap_or(Err(Error::Timeout {
        timeout_ms: req.timeout.as_millis(),
    })) {
        Ok(dumped) => dumped,
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    };
    tracing::info!(product = %req.product, path = %format!("s3://{bucket}/{key}"), "snapshot stored");
    let deleted = retention(&client, &bucket, &prefix, &req.product, req.keep).await?;
    Ok(Report {
        url: format!("s3://{bucket}/{key}"),
        dumped_bytes: dumped,
        stored_bytes: upload.stored,
        parts: upload.parts.len(),
        deleted,
    })
}

/// Run the dump and pump its output through gzip into the upload; fails unless it exits 0.
async fn stream(req: &Request, upload: &mut Upload<'_>) -> Result<u64, Error> {
    let mut argv = req.client_args.clone();
    argv.extend(["--single-transaction", "--databases", &req.database].map(String::from));
    let command = shell_words::join(std::iter::once(&req.program).chain(&argv));
    let mut cmd = tokio::process::Command::new(&req.program);
    cmd.args(&argv)
        .env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The client reads ~/.my.cnf for credentials (root's on a Debian host).
    if let Some(home) = std::env::var_os("HOME") {
        cmd.env("HOME", home);
    }
    let spawn = |source| Error::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(spawn(std::io::Error::other("no pipes to the child")));
    };
    let (pumped, stderr) = tokio::join!(pump(stdout, upload, &command), tail(stderr));
    if pumped.is_err() {
        // Not waiting for a dump whose output has nowhere to go.
        let _ = child.start_kill();
    }
    let status = child.wait().await.map_err(spawn)?;
    let dumped = pumped?;
    if !status.success() {
        return Err(Error::Dump {
            command,
            exit_code: status.code(),
            stderr,
        });
    }
    Ok(dumped)
}

/// Read the dump, gzip it, upload a part whenever `PART_BYTES` of gzip are ready, and the
/// rest as the last part. Returns the dump's size.
async fn pump(
    mut stdout: tokio::process::ChildStdout,
    upload: &mut Upload<'_>,
    command: &str,
) -> Result<u64, Error> {
    let failed = |action, source| Error::Stream {
        action,
        command: command.to_string(),
        source,
    };
    let mut gz = GzEncoder::new(
        Vec::with_capacity(PART_BYTES + READ_CHUNK_BYTES),
        Compression::default(),
    );
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut dumped = 0u64;
    loop {
        let n = stdout
            .read(&mut chunk)
            .await
            .map_err(|e| failed("reading", e))?;
        if n == 0 {
            break;
        }
        dumped += n as u64;
        gz.write_all(&chunk[..n])
            .map_err(|e| failed("compressing", e))?;
        if gz.get_ref().len() >= PART_BYTES {
            upload.part(std::mem::take(gz.get_mut())).await?;
        }
    }
    let last = gz.finish().map_err(|e| failed("compressing", e))?;
    upload.part(last).await?;
    Ok(dumped)
}

/// The last `STDERR_CAP_BYTES` of a stream, as text.
async fn tail(mut stderr: tokio::process::ChildStderr) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&chunk[..n]);
        let excess = kept.len().saturating_sub(STDERR_CAP_BYTES);
        kept.drain(..excess);
    }
    String::from_utf8_lossy(&kept).trim().replace('\n', " / ")
}

/// One multipart upload in progress.
struct Upload<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    id: String,
    parts: Vec<CompletedPart>,
    stored: u64,
}

impl<'a> Upload<'a> {
    async fn start(client: &'a Client, bucket: &'a str, key: &'a str) -> Result<Upload<'a>, Error> {
        let created = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("application/gzip")
            // Declared up front: S3 refuses parts whose checksum type the upload did not
            // announce, and the SDK adds a CRC32 to every part by default.
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| s3_error("starting the upload of", bucket, key, e))?;
        let id = created.upload_id().unwrap_or_default().to_string();
        Ok(Upload {
            client,
            bucket,
            key,
            id,
            parts: Vec::new(),
            stored: 0,
        })
    }

    async fn part(&mut self, bytes: Vec<u8>) -> Result<(), Error> {
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let size = bytes.len() as u64;
        let sent = self
            .client
            .upload_part()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(&self.id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("uploading a part of", self.bucket, self.key, e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag().map(str::to_string))
                .set_checksum_crc32(sent.checksum_crc32().map(str::to_string))
                .build(),
        );
        self.stored += size;
        Ok(())
    }

    async fn complete(&self) -> Result<(), Error> {
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(self.parts.clone()))
            .build();
        self.client
            .complete_multipart_upload()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(&self.id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(|e| s3_error("completing the upload of", self.bucket, self.key, e))?;
        Ok(())
    }

    /// Best effort: the error that led here is the one reported.
    async fn abort(&self) {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(&self.id)
            .send()
            .await;
        let path = format!("s3://{}/{}", self.bucket, self.key);
        match aborted {
            Ok(_) => tracing::info!(path = %path, "snapshot upload aborted"),
            Err(e) => {
                tracing::warn!(path = %path, error = %crate::error::chain(&e), "aborting the snapshot upload failed")
            }
        }
    }
}

fn s3_error(
    action: &'static str,
    bucket: &str,
    key: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::S3 {
        action,
        bucket: bucket.to_string(),
        key: key.to_string(),
        source: Box::new(source),
    }
}

/// Delete all but the newest `keep` snapshots of `product` under `prefix`; the deleted keys.
async fn retention(
    client: &Client,
    bucket: &str,
    prefix: &str,
    product: &str,
    keep: usize,
) -> Result<Vec<String>, Error> {
    let listed = format!("{prefix}{product}-");
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&listed)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error("listing", bucket, &listed, e))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    let doomed = expired(&keys, prefix, product, keep);
    for key in &doomed {
        client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("deleting", bucket, key, e))?;
        tracing::info!(product = %product, path = %format!("s3://{bucket}/{key}"), "old snapshot deleted");
    }
    Ok(doomed)
}

/// An S3 client from the SDK's default chain; path-style when a custom endpoint is set
/// (an S3-compatible server on an address has no per-bucket host names), as the map source.
async fn client() -> Client {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(RegionProviderChain::default_provider().or_else("us-east-1"))
        .load()
        .await;
    let custom = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(custom)
        .build();
    Client::from_conf(conf)
}

/// Bucket and key prefix of `s3://bucket[/prefix]`; the prefix is empty or ends with `/`.
///
/// # Errors
/// `BadUrl`.
pub fn parse_backup_url(url: &str) -> Result<(String, String), Error> {
    let bad = || Error::BadUrl {
        url: url.to_string(),
    };
    let rest = url.strip_prefix("s3://").ok_or_else(bad)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.len() < 3 || prefix.starts_with('/') || prefix.contains("//") {
        return Err(bad());
    }
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

/// `YYYYmmddTHHMMSSZ` (UTC) of a Unix time.
pub fn timestamp(now_unix: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(now_unix);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

/// `<prefix><product>-YYYYmmddTHHMMSSZ.sql.gz`.
pub fn object_key(prefix: &str, product: &str, now_unix: u64) -> String {
    format!("{prefix}{product}-{}.sql.gz", timestamp(now_unix))
}

/// Whether `key` is a snapshot of `product` under `prefix` (and not, say, of a product
/// whose name starts the same, or a file someone else put there).
pub fn is_snapshot_key(key: &str, prefix: &str, product: &str) -> bool {
    let Some(stamp) = key
        .strip_prefix(prefix)
        .and_then(|k| k.strip_prefix(product))
        .and_then(|k| k.strip_prefix('-'))
        .and_then(|k| k.strip_suffix(".sql.gz"))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// The snapshots of `product` among `keys` beyond the newest `keep`, oldest first. Names
/// sort by time, so the order of the names is the order of the snapshots.
pub fn expired(keys: &[String], prefix: &str, product: &str, keep: usize) -> Vec<String> {
    let mut ours: Vec<&String> = keys
        .iter()
        .filter(|k| is_snapshot_key(k, prefix, product))
        .collect();
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    ours.into_iter().take(excess).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_timestamps() {
        // 2024-02-29T13:05:09Z
        assert_eq!(timestamp(1_709_211_909), "20240229T130509Z");
        assert_eq!(
            object_key("videos/", "videos", 1_709_211_909),
            "videos/videos-20240229T130509Z.sql.gz"
        );
    }

    #[test]
    fn backup_urls_split_into_bucket_and_prefix() {
        let split = |u| parse_backup_url(u).expect(u);
        assert_eq!(
            split("s3://fleet-backups/videos/"),
            ("fleet-backups".into(), "videos/".into())
        );
        assert_eq!(
            split("s3://fleet-backups/a/b"),
            ("fleet-backups".into(), "a/b/".into())
        );
        assert_eq!(
            split("s3://fleet-backups"),
            ("fleet-backups".into(), String::new())
        );
        for bad in [
            "https://x/y",
            "s3://ab/",
            "s3://bucket//x",
            "s3://bucket/a//b",
        ] {
            assert!(parse_backup_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_this_products_snapshots_count() {
        assert!(is_snapshot_key(
            "p/videos-20240229T130509Z.sql.gz",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key(
            "p/videos-old-20240229T130509Z.sql.gz",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key(
            "p/videos-20240229T130509Z.sql",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key(
            "p/videos-2024022xT130509Z.sql.gz",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key(
            "q/videos-20240229T130509Z.sql.gz",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key("p/README", "p/", "videos"));
    }

    #[test]
    fn retention_keeps_the_newest() {
        let keys: Vec<String> = [
            "p/videos-20240103T000000Z.sql.gz",
            "p/videos-20240101T000000Z.sql.gz",
            "p/videos-notes.txt",
            "p/videos-20240102T000000Z.sql.gz",
            "p/videos-20240104T000000Z.sql.gz",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            expired(&keys, "p/", "videos", 2),
            [
                "p/videos-20240101T000000Z.sql.gz",
                "p/videos-20240102T000000Z.sql.gz"
            ]
        );
        assert!(expired(&keys, "p/", "videos", 4).is_empty());
        assert!(expired(&keys, "p/", "videos", 10).is_empty());
    }
}

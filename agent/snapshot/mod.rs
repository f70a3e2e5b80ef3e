//! `rolecall snapshot` (SPEC §1, §3, §6 `db-backup`; issue 5): dump one product's database
//! on this host with `mariadb-dump --single-transaction`, gzip it and stream it to the
//! product's `backup_url` as an S3 multipart upload, named by UTC time; then keep the newest
//! N snapshots of that product and delete the older ones. I/O at the edges: the dump child
//! (`dump`), S3 (`upload`); the naming and retention decisions are pure (`naming`).
//!
//! No partial object: parts are invisible until `CompleteMultipartUpload`, which is sent only
//! after the dump exited 0; any failure (dump, compression, S3, deadline) sends
//! `AbortMultipartUpload` instead. Two snapshots in the same second share a name; the later
//! one wins.

mod dump;
mod naming;
mod upload;

use std::time::Duration;

pub use naming::{object_key, parse_backup_url};
use upload::{retention, Upload};

/// Size of each uploaded part but the last. S3 wants at least 5 MiB and at most 10,000
/// parts, so 8 MiB parts allow dumps up to about 78 GiB compressed, holding one part in memory.
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Snapshots kept by default: one day at one every 15 minutes.
pub const DEFAULT_KEEP: usize = 96;
/// The dump program.
pub const DUMP_PROGRAM: &str = "mariadb-dump";
/// Client arguments when `vars.mysql_client_args` is not set (as the db role's smoke test).
pub const DEFAULT_CLIENT_ARGS: &str = "--protocol=socket";

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
    let client = crate::source::s3::client().await;
    let mut upload = Upload::start(&client, &bucket, &key).await?;
    let deadline = tokio::time::timeout(req.timeout, async {
        let dumped = dump::stream(req, &mut upload).await?;
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

//! The network half of `map publish`, `map promote` and `map keygen` (SPEC §3; issue 5):
//! read the published map and its ETag, write the new one only if it is still that version
//! (S3 `If-Match`, or `If-None-Match: *` when creating), and keep the detached signature in
//! step. The decisions (generation, diff, promotion) are pure, in `rolemap::{publish,promote}`.
//!
//! Signature order: the signature object is written first, conditionally on its own ETag,
//! then the map. Agents that poll an unchanged map get a 304 and never look at the new
//! signature early; two racing publishers are serialised by the signature's precondition
//! before either touches the map. If the map write then loses (a writer that started from
//! the same signature but another map ETag), the previous signature is put back, again
//! conditionally, so the winner's pair is never left mismatched by us.
//!
//! `file://` targets (local use, tests) compare the file's SHA-256 ETag right before an
//! atomic replace: enough for one operator, not a lock between concurrent writers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::rolemap::prepare::{self, Prepared};
use crate::rolemap::promote::{self, Promoted};
use crate::source::file::file_etag;
use crate::source::verify::{self, signature_url, VerifyError};
use crate::source::{self, Fetched, FileSource, MapSource, PutOutcome, S3Source};

/// Errors of publishing and promoting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The map could not be prepared (invalid, stale base, uneditable).
    #[error("preparing the map for {url}")]
    Prepare {
        /// Target URL.
        url: String,
        /// Why.
        #[source]
        source: prepare::Error,
    },
    /// The promotion was refused.
    #[error("promoting in {url}")]
    Promote {
        /// Map URL.
        url: String,
        /// Why.
        #[source]
        source: promote::Error,
    },
    /// Someone else wrote the map (or its signature) since it was read.
    #[error("{url} changed since it was read; nothing was overwritten (current generation: {})", current_generation.map_or("unknown".to_string(), |g| g.to_string()))]
    Conflict {
        /// The object that changed.
        url: String,
        /// The generation now published (the winner's), when readable.
        current_generation: Option<u64>,
    },
    /// There is no map to promote in.
    #[error("there is no map at {url} to promote in")]
    NoMap {
        /// Map URL.
        url: String,
    },
    /// The URL is neither `s3://` nor `file://`.
    #[error("{url:?} cannot be published to: use s3://bucket/key or file:///path")]
    BadTarget {
        /// The URL given.
        url: String,
    },
    /// Reading or writing the map or its signature failed.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// A key file could not be used.
    #[error("key file {path}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: VerifyError,
    },
    /// A local file (the map, its key) could not be read, or replacing a local map file
    /// failed.
    #[error(transparent)]
    Fs(#[from] crate::sys::fs::Error),
}

/// The published object as read: exact bytes and the ETag to write against.
#[derive(Debug, Clone)]
pub struct Current {
    /// Exact bytes.
    pub bytes: Vec<u8>,
    /// ETag (S3's, quotes included; `sha256:…` for files).
    pub etag: String,
}

impl Current {
    /// The bytes as text (lossy: a map that is not UTF-8 is invalid anyway).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Where a map is published: an S3 object or a local file.
#[derive(Debug)]
pub enum Target {
    /// `s3://bucket/key`.
    S3(S3Source),
    /// `file:///path`.
    File {
        /// The file.
        path: PathBuf,
        /// The URL as given.
        url: String,
    },
}

impl Target {
    /// The target for `url`; each S3 request gives up after `timeout`.
    ///
    /// # Errors
    /// `BadTarget` for other schemes, `Source(BadUrl)` for malformed URLs.
    pub async fn open(url: &str, timeout: Duration) -> Result<Target, Error> {
        if url.starts_with("s3://") {
            return Ok(Target::S3(S3Source::new(url, timeout).await?));
        }
        if url.starts_with("file://") {
            FileSource::try_new(url, timeout)?;
            let rest = url.trim_start_matches("file://");
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            return Ok(Target::File {
                path: PathBuf::from(path),
                url: url.to_string(),
            });
        }
        Err(Error::BadTarget {
            url: url.to_string(),
        })
    }

    /// The URL.
    pub fn url(&self) -> &str {
        match self {
            Target::S3(s3) => s3.url(),
            Target::File { url, .. } => url,
        }
    }

    /// The published object, or `None` when there is none.
    ///
    /// # Errors
    /// The source's errors (unreachable, refused, timeout) and local I/O errors.
    pub async fn read(&self) -> Result<Option<Current>, Error> {
        match self {
            Target::S3(s3) => {
                let Some((head_etag, _)) = s3.head().await? else {
                    return Ok(None);
                };
                let Fetched::Map(map) = s3.fetch(None).await? else {
                    return Ok(None);
                };
                let etag = map.etag.unwrap_or(head_etag);
                Ok(Some(Current {
                    bytes: map.bytes,
                    etag,
                }))
            }
            Target::File { path, .. } => read_file(path),
        }
    }

    /// Write `bytes` only if the object still has ETag `base` (`None`: only if absent).
    ///
    /// # Errors
    /// The source's write errors and local I/O errors; a lost precondition is
    /// `Ok(PutOutcome::Conflict)`.
    pub async fn write(&self, bytes: Vec<u8>, base: Option<&str>) -> Result<PutOutcome, Error> {
        match self {
            Target::S3(s3) => Ok(s3.put_conditional(bytes, base).await?),
            Target::File { path, .. } => {
                let now = read_file(path)?;
                if now.as_ref().map(|c| c.etag.as_str()) != base {
                    return Ok(PutOutcome::Conflict);
                }
                crate::sys::fs::write_state(path, &bytes)?;
                Ok(PutOutcome::Written {
                    etag: Some(file_etag(&bytes)),
                    version: None,
                })
            }
        }
    }

    /// The published generation now, for conflict messages (`None` if unreadable).
    async fn generation_now(&self) -> Option<u64> {
        let current = self.read().await.ok().flatten()?;
        prepare::generation_of(&current.text())
    }
}

fn read_file(path: &Path) -> Result<Option<Current>, Error> {
    let io = |e| Error::from(crate::sys::fs::io("reading", path)(e));
    let file = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        opened => opened.map_err(io)?,
    };
    let bytes = source::read_open_map(file, path, io)?;
    Ok(Some(Current {
        etag: file_etag(&bytes),
        bytes,
    }))
}

/// Prepare `text` for publishing to `target` over `current` (what `target.read()` gave).
///
/// # Errors
/// `Prepare` (invalid, stale base, uneditable).
pub fn prepare(target: &Target, text: &str, current: Option<&Current>) -> Result<Prepared, Error> {
    let current_text = current.map(Current::text);
    prepare::prepare(text, current_text.as_deref()).map_err(|source| Error::Prepare {
        url: target.url().to_string(),
        source,
    })
}

/// Read the published map, promote in it and prepare the result for publishing.
///
/// # Errors
/// `NoMap`, `Promote` (refusals, invalid map), `Prepare`, and read errors.
pub async fn promote(
    target: &Target,
    product: &str,
    to: Option<&str>,
) -> Result<(Promoted, Prepared, Current), Error> {
    let current = target.read().await?.ok_or_else(|| Error::NoMap {
        url: target.url().to_string(),
    })?;
    let promoted =
        promote::promote_text(&current.text(), product, to).map_err(|source| Error::Promote {
            url: target.url().to_string(),
            source,
        })?;
    let current_text = current.text();
    let published = prepare::Published {
        text: &current_text,
        map: Some(&promoted.original),
    };
    let prepared = prepare::prepare_loaded(&promoted.text, promoted.map.clone(), Some(published))
        .map_err(|source| Error::Prepare {
        url: target.url().to_string(),
        source,
    })?;
    Ok((promoted, prepared, current))
}

/// What a successful publish wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    /// ETag of the new map object.
    pub etag: Option<String>,
    /// Whether a signature object was written beside it.
    pub signed: bool,
}

/// Sign `prepared` with the secret key file at `key_path`.
///
/// # Errors
/// `Fs` when the file cannot be read, `Key` when it is not a PKCS#8 Ed25519 key.
pub fn sign(prepared: &Prepared, key_path: &Path) -> Result<Vec<u8>, Error> {
    let secret =
        std::fs::read(key_path).map_err(crate::sys::fs::io("reading signing key", key_path))?;
    verify::sign(&prepared.bytes, &secret).map_err(|source| Error::Key {
        path: key_path.to_path_buf(),
        source,
    })
}

/// Write `prepared` over `base` (the version it was prepared from), after its signature
/// when there is one (see the module docs for the order).
///
/// # Errors
/// `Conflict` naming the winner's generation when the map or its signature changed since
/// it was read; read and write errors.
pub async fn commit(
    target: &Target,
    prepared: &Prepared,
    base: Option<&Current>,
    signature: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Committed, Error> {
    let signed = match signature {
        Some(sig) => Some(SignatureWrite::write(target, sig, timeout).await?),
        None => None,
    };
    let base_etag = base.map(|c| c.etag.as_str());
    let written = target.write(prepared.bytes.clone(), base_etag).await;
    let outcome = match written {
        Ok(PutOutcome::Written { etag, .. }) => {
            return Ok(Committed {
                etag,
                signed: signed.is_some(),
            })
        }
        Ok(PutOutcome::Conflict) => Ok(()),
        Err(e) => Err(e),
    };
    if let Some(signed) = signed {
        signed.undo().await;
    }
    outcome?;
    Err(Error::Conflict {
        url: target.url().to_string(),
        current_generation: target.generation_now().await,
    })
}

/// A signature written ahead of its map, with what it replaced.
struct SignatureWrite {
    target: Target,
    previous: Option<Current>,
    etag: Option<String>,
}

impl SignatureWrite {
    async fn write(map: &Target, signature: Vec<u8>, timeout: Duration) -> Result<Self, Error> {
        let target = Target::open(&signature_url(map.url()), timeout).await?;
        let previous = target.read().await?;
        let base = previous.as_ref().map(|c| c.etag.as_str());
        match target.write(signature, base).await? {
            PutOutcome::Written { etag, .. } => Ok(SignatureWrite {
                target,
                previous,
                etag,
            }),
            PutOutcome::Conflict => Err(Error::Conflict {
                url: target.url().to_string(),
                current_generation: map.generation_now().await,
            }),
        }
    }

    /// Put the previous signature back if ours is still the current one. Best effort: the
    /// map write already failed, and that is the error reported.
    async fn undo(self) {
        let (Some(previous), Some(ours)) = (self.previous, self.etag) else {
            tracing::warn!(path = %self.target.url(), "new signature left beside the unchanged map");
            return;
        };
        match self.target.write(previous.bytes, Some(&ours)).await {
            Ok(PutOutcome::Written { .. }) => {
                tracing::info!(path = %self.target.url(), "signature restored")
            }
            Ok(PutOutcome::Conflict) => {
                tracing::info!(path = %self.target.url(), "signature changed again since, left as is")
            }
            Err(e) => {
                tracing::warn!(path = %self.target.url(), error = %crate::text::chain(&e), "signature not restored")
            }
        }
    }
}

/// Whether a signature object sits beside the map at `target` (publishing without
/// `--sign-key` leaves it stale, and agents that verify then refuse the map).
///
/// # Errors
/// Read errors.
pub async fn has_signature(target: &Target, timeout: Duration) -> Result<bool, Error> {
    let sig = Target::open(&signature_url(target.url()), timeout).await?;
    Ok(match &sig {
        Target::S3(s3) => s3.head().await?.is_some(),
        Target::File { path, .. } => path.exists(),
    })
}

/// Generate a key pair and write `PREFIX.key` (mode 0600) and `PREFIX.pub` (0644); refuses
/// to overwrite either. Written here rather than through `sys::fs`, whose writers are for
/// managed and state files: a secret key must be created 0600 from its first byte.
///
/// # Errors
/// `Key` if the RNG fails, `Fs` if a file exists or cannot be written.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let (secret, public) = verify::generate().map_err(|source| Error::Key {
        path: prefix.to_path_buf(),
        source,
    })?;
    let key_path = with_suffix(prefix, ".key");
    let pub_path = with_suffix(prefix, ".pub");
    crate::sys::fs::create_new(&key_path, &secret, 0o600)?;
    crate::sys::fs::create_new(&pub_path, &public, 0o644)?;
    Ok((key_path, pub_path))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

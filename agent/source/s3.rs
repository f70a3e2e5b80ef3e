//! Stage 2, fetch from S3 (SPEC §7.2, §4): `GetObject` with `If-None-Match` on the last ETag,
//! through aws-sdk-s3 and the SDK's default credential chain (`AWS_ENDPOINT_URL_S3` honoured;
//! path-style addressing whenever a custom endpoint is set). Also the conditional `PutObject`
//! and the `HeadObject` that `map publish` and `map promote` need. I/O; the URL parser and the
//! status mappings (304, 412/409) are pure and tested below.

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::primitives::ByteStream;

use super::{
    extend_within_limit, fetch_within, timeout_error, too_large, Error, Fetched, MapBytes,
    MapSource, MAX_MAP_BYTES,
};

/// Region used when neither the environment, the AWS profile nor IMDS names one; an
/// S3-compatible server on an address usually ignores it.
const DEFAULT_REGION: &str = "us-east-1";
/// The SDK's variables for a custom endpoint (its own service-specific one first).
const ENDPOINT_ENVS: [&str; 2] = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"];

/// The role map as one S3 object, `s3://bucket/key`.
#[derive(Debug)]
pub struct S3Source {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    url: String,
    timeout: Duration,
}

/// What a conditional put did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written; its new ETag and, in a versioned bucket, its VersionId.
    Written {
        /// ETag of the new object, quotes included.
        etag: Option<String>,
        /// VersionId of the new object, when the bucket is versioned.
        version: Option<String>,
    },
    /// The precondition failed (HTTP 412, or 409 `ConditionalRequestConflict`): someone else
    /// changed the object since it was read, or it already exists for a create-only put.
    Conflict,
}

impl S3Source {
    /// A source for `url` (`s3://bucket/key`) whose requests each give up after `timeout`.
    /// Loads the SDK configuration: credentials from the default chain, region from the
    /// environment, profile or IMDS, else `us-east-1`.
    ///
    /// # Errors
    /// `Error::BadUrl` when `url` is not `s3://bucket/key`.
    pub async fn new(url: &str, timeout: Duration) -> Result<Self, Error> {
        let (bucket, key) = parse_s3_url(url)?;
        Ok(Self {
            client: client().await,
            bucket,
            key,
            url: url.to_owned(),
            timeout,
        })
    }

    /// The map URL, as written in agent.toml.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Write `bytes` as the map object, only if it still has ETag `if_match`; with `None`,
    /// only if no object exists yet (`If-None-Match: *`).
    ///
    /// # Errors
    /// `Error::Write` when S3 cannot be reached, does not answer within the timeout, or
    /// refuses the write for another reason than the precondition.
    pub async fn put_conditional(
        &self,
        bytes: Vec<u8>,
        if_match: Option<&str>,
    ) -> Result<PutOutcome, Error> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/toml")
            .body(ByteStream::from(bytes));
        let request = match if_match {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        let sent = tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| self.write_error(NoAnswer::after(self.timeout)))?;
        match sent {
            Ok(output) => Ok(PutOutcome::Written {
                etag: output.e_tag().map(str::to_owned),
                version: output.version_id().map(str::to_owned),
            }),
            Err(err) if is_conflict(&err) => Ok(PutOutcome::Conflict),
            Err(err) => Err(self.write_error(err)),
        }
    }

    /// The current object's ETag and VersionId, or `None` when there is no object.
    ///
    /// # Errors
    /// `Error::Unreachable`, `Error::Timeout`, or `Error::Refused` for an S3 error answer
    /// other than 404.
    pub async fn head(&self) -> Result<Option<(String, Option<String>)>, Error> {
        let request = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key);
        let sent = tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| timeout_error(&self.url, self.timeout))?;
        let output = match sent {
            Ok(output) => output,
            Err(err) if status_of(&err) == Some(404) => return Ok(None),
            Err(err) => return Err(self.read_error(err)),
        };
        let etag = output.e_tag().ok_or_else(|| Error::Refused {
            url: self.url.clone(),
            reason: "HeadObject answered without an ETag".to_owned(),
        })?;
        Ok(Some((
            etag.to_owned(),
            output.version_id().map(str::to_owned),
        )))
    }

    async fn get(&self, last_etag: Option<&str>) -> Result<Fetched, Error> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_if_none_match(last_etag.map(str::to_owned));
        match request.send().await {
            Ok(output) => self.read_body(output).await,
            Err(err) if is_not_modified(&err) => Ok(Fetched::NotModified),
            Err(err) => Err(self.read_error(err)),
        }
    }

    /// The object's body, refused as soon as it grows past [`MAX_MAP_BYTES`]: S3 declares
    /// the length, and a larger one is refused before any byte is read, but a server that
    /// does not (a chunked body) is not read beyond the limit either.
    async fn read_body(&self, output: GetObjectOutput) -> Result<Fetched, Error> {
        let declared = output.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(len) = declared.filter(|&len| len > MAX_MAP_BYTES) {
            return Err(too_large(&self.url, len));
        }
        let etag = output.e_tag().map(str::to_owned);
        let version = output.version_id().map(str::to_owned);
        let mut body = output.body;
        let mut bytes =
            Vec::with_capacity(declared.map_or(0, |len| usize::try_from(len).unwrap_or(0)));
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|err| Error::unreachable(&self.url, err))?
        {
            extend_within_limit(&self.url, &mut bytes, &chunk)?;
        }
        Ok(Fetched::Map(MapBytes {
            bytes,
            etag,
            version,
            sha256: None,
        }))
    }

    /// `Refused` when S3 answered with an error, `Unreachable` when it did not answer.
    fn read_error<E>(&self, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match service_failure(&err) {
            Some(reason) => Error::Refused {
                url: self.url.clone(),
                reason,
            },
            None => Error::unreachable(&self.url, err),
        }
    }

    fn write_error(&self, err: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Write {
            url: self.url.clone(),
            source: Box::new(err),
        }
    }
}

impl MapSource for S3Source {
    async fn fetch(&self, last_etag: Option<&str>) -> Result<Fetched, Error> {
        fetch_within(&self.url, self.timeout, last_etag, self.get(last_etag)).await
    }
}

/// Split `s3://bucket/key` into bucket and key.
///
/// # Errors
/// `Error::BadUrl` for another scheme, a bucket name that is not 3–255 characters of ASCII
/// letters, digits, `.`, `-` and `_` (legacy us-east-1 names included), or a key that is
/// empty, ends in `/` or holds control characters.
pub fn parse_s3_url(url: &str) -> Result<(String, String), Error> {
    let bad = |reason: &str| Error::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (bucket, key) = split_s3_url(url).map_err(bad)?;
    if key.is_empty() || key.ends_with('/') || key.chars().any(char::is_control) {
        return Err(bad(
            "the key must name an object: not empty, not ending in '/', no control characters",
        ));
    }
    Ok((bucket.to_owned(), key.to_owned()))
}

/// `s3://bucket/rest` → (bucket, rest), the bucket name checked; `rest` may be empty. The
/// one parser of S3 URLs (maps, backup and report prefixes).
///
/// # Errors
/// Why the URL is unusable, in words.
pub fn split_s3_url(url: &str) -> Result<(&str, &str), &'static str> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or("expected s3://bucket/key")?;
    let (bucket, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
    if !(3..=255).contains(&bucket.len()) || !bucket.bytes().all(bucket_char) {
        return Err("the bucket name must be 3-255 letters, digits, '.', '-' or '_'");
    }
    Ok((bucket, rest))
}

/// An S3 client from the SDK's default chain (instance profile, `AWS_*` variables): the
/// one place clients are built. Path-style addressing when a custom endpoint is set, since
/// an S3-compatible server on an address has no per-bucket host names.
pub async fn client() -> aws_sdk_s3::Client {
    let sdk_config = sdk_config().await;
    let s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
        .force_path_style(has_custom_endpoint())
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// The SDK's shared configuration: credentials from the default chain (instance profile,
/// `AWS_*` variables), region from the environment, profile or IMDS, else `us-east-1`.
/// Every AWS client rolecall builds (S3 here, SSM and Secrets Manager in `secrets`) starts
/// from it, so they share credentials, region and the `AWS_ENDPOINT_URL[_SERVICE]` variables.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(RegionProviderChain::default_provider().or_else(DEFAULT_REGION))
        .load()
        .await
}

/// Whether a `GetObject` failure is S3's answer to `If-None-Match` on the current ETag. The
/// Rust SDK does not treat 304 as success: it reports a service error whose raw response
/// has status 304.
fn is_not_modified(err: &SdkError<GetObjectError, HttpResponse>) -> bool {
    status_of(err) == Some(304)
}

/// Whether a conditional write lost: 412 Precondition Failed, or 409 with code
/// `ConditionalRequestConflict` (a concurrent conditional write to the same key).
fn is_conflict<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match (status_of(err), err.as_service_error()) {
        (Some(412), _) => true,
        (Some(409), Some(service)) => service.code() == Some("ConditionalRequestConflict"),
        _ => false,
    }
}

/// HTTP status of an S3 error answer; `None` when S3 did not answer (connection, timeout).
pub(crate) fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(service) => Some(service.raw().status().as_u16()),
        _ => None,
    }
}

/// `HTTP 404 NoSuchKey: message` for an S3 error answer; `None` when S3 did not answer.
pub(crate) fn service_failure<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
) -> Option<String> {
    let SdkError::ServiceError(service) = err else {
        return None;
    };
    let status = service.raw().status().as_u16();
    let code = service.err().code().unwrap_or("(no error code)");
    Some(match service.err().message() {
        Some(message) => format!("HTTP {status} {code}: {message}"),
        None => format!("HTTP {status} {code}"),
    })
}

/// Whether the SDK will send S3 requests to a custom endpoint rather than AWS's.
fn has_custom_endpoint() -> bool {
    ENDPOINT_ENVS
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// A request the timeout cut short, as the source of `Error::Write`.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {timeout_ms} ms")]
struct NoAnswer {
    timeout_ms: u128,
}

impl NoAnswer {
    fn after(timeout: Duration) -> Self {
        Self {
            timeout_ms: timeout.as_millis(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().expect("valid status"), SdkBody::empty())
    }

    fn meta(code: Option<&str>) -> ErrorMetadata {
        let builder = ErrorMetadata::builder();
        match code {
            Some(code) => builder.code(code).message("from the test").build(),
            None => builder.build(),
        }
    }

    fn get_error(status: u16, code: Option<&str>) -> SdkError<GetObjectError, HttpResponse> {
        SdkError::service_error(GetObjectError::generic(meta(code)), response(status))
    }

    fn put_error(status: u16, code: Option<&str>) -> SdkError<PutObjectError, HttpResponse> {
        SdkError::service_error(PutObjectError::generic(meta(code)), response(status))
    }

    #[test]
    fn a_304_service_error_is_not_modified() {
        assert!(is_not_modified(&get_error(304, None)));
        assert!(!is_not_modified(&get_error(404, Some("NoSuchKey"))));
        assert!(!is_not_modified(&get_error(200, None)));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let dispatch = SdkError::dispatch_failure(ConnectorError::io(Box::new(io)));
        assert!(!is_not_modified(&dispatch));
    }

    #[test]
    fn precondition_failures_are_conflicts() {
        assert!(is_conflict(&put_error(412, Some("PreconditionFailed"))));
        assert!(is_conflict(&put_error(412, None)));
        assert!(is_conflict(&put_error(
            409,
            Some("ConditionalRequestConflict")
        )));
        assert!(!is_conflict(&put_error(409, Some("OperationAborted"))));
        assert!(!is_conflict(&put_error(403, Some("AccessDenied"))));
    }

    #[test]
    fn service_failures_name_status_and_code() {
        let reason = service_failure(&get_error(404, Some("NoSuchKey")));
        assert_eq!(reason.as_deref(), Some("HTTP 404 NoSuchKey: from the test"));
        let reason = service_failure(&get_error(403, None));
        assert_eq!(reason.as_deref(), Some("HTTP 403 (no error code)"));
        let timeout = SdkError::<GetObjectError, HttpResponse>::timeout_error("slow");
        assert_eq!(service_failure(&timeout), None);
    }

    #[test]
    fn s3_urls_split_into_bucket_and_key() {
        let (bucket, key) = parse_s3_url("s3://fleet-config/maps/rolemap.toml").expect("valid");
        assert_eq!(
            (bucket.as_str(), key.as_str()),
            ("fleet-config", "maps/rolemap.toml")
        );
        let (bucket, _) = parse_s3_url("s3://Legacy_Bucket/m.toml").expect("legacy name");
        assert_eq!(bucket, "Legacy_Bucket");
    }

    #[test]
    fn bad_s3_urls_are_refused() {
        crate::source::tests::assert_bad_urls(
            parse_s3_url,
            &[
                "s3://fleet-config",
                "s3://fleet-config/",
                "s3://fleet-config/maps/",
                "s3:///rolemap.toml",
                "s3://ab/rolemap.toml",
                "s3://fleet config/rolemap.toml",
                "s3://fleet-config/role\nmap.toml",
                "https://fleet-config/rolemap.toml",
            ],
        );
    }
}

//! Stage 1, identity from EC2 instance metadata (SPEC §7.1): instance id, availability zone,
//! region, private IPv4, instance type and AMI id, read with aws-config's IMDS client, which
//! speaks IMDSv2 only (a session token first, never an IMDSv1 fallback). I/O, retried with
//! capped exponential backoff inside one overall deadline; the value checks and the backoff
//! arithmetic are pure and tested below.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_config::imds::client::error::ImdsError;
use aws_config::imds::client::SensitiveString;
use tokio::time::Instant;

use super::{Error, Identity, IdentitySource};

/// First pause between two attempts; doubled after each failed attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// IMDS is a link-local service that answers in milliseconds: a slow answer is better
/// retried by our loop than waited for.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest token lifetime IMDS grants, so one token serves a daemon's reads for hours
/// (the SDK fetches a new one two minutes before it expires).
const TOKEN_TTL: Duration = Duration::from_secs(21_600);
const ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// Longest value accepted from a metadata path.
const MAX_VALUE_LEN: usize = 255;

const INSTANCE_ID: &str = "/latest/meta-data/instance-id";
const AZ: &str = "/latest/meta-data/placement/availability-zone";
const REGION: &str = "/latest/meta-data/placement/region";
const LOCAL_IPV4: &str = "/latest/meta-data/local-ipv4";
const INSTANCE_TYPE: &str = "/latest/meta-data/instance-type";
const AMI_ID: &str = "/latest/meta-data/ami-id";

/// Identity from IMDSv2 (`identity.source = "imds"`). Each `identify` builds its own SDK
/// client and drops it at the end: the daemon reads its identity once, and a client kept for
/// the process would keep its pooled connections to the metadata service open meanwhile.
#[derive(Debug)]
pub struct Imds {
    deadline: Duration,
    /// For error messages only; the client resolves the endpoint itself.
    endpoint: String,
}

impl Imds {
    /// An IMDSv2 source whose `identify` gives up once `deadline` has passed since it
    /// started, or earlier by at most one pause when the next pause would pass the deadline.
    ///
    /// The endpoint is the SDK's choice: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else the AWS
    /// profile's `ec2_metadata_service_endpoint`, else `http://169.254.169.254`.
    pub fn new(deadline: Duration) -> Self {
        let endpoint = std::env::var(ENDPOINT_ENV).unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned());
        Self { deadline, endpoint }
    }

    fn client() -> aws_config::imds::Client {
        aws_config::imds::Client::builder()
            // One attempt per call: `retry` below owns retries, backoff and the deadline.
            .max_attempts(1)
            .token_ttl(TOKEN_TTL)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
    }

    /// [`IdentitySource::identify`], calling `on_retry(path)` before each pause between two
    /// attempts, so that the caller can report "waiting for instance metadata" meanwhile.
    ///
    /// # Errors
    /// `Error::Imds` when a path cannot be read before the deadline, or IMDS refuses it for
    /// good (400, 403); `Error::Missing` when a required path answers 404; `Error::BadValue`
    /// when a value fails its check (a plain token; an IPv4 address for `local-ipv4`).
    pub async fn identify_with(
        &self,
        on_retry: impl Fn(&str) + Send + Sync,
    ) -> Result<Identity, Error> {
        let start = Instant::now();
        let until = start + self.deadline;
        let on_retry: &(dyn Fn(&str) + Sync) = &on_retry;
        let client = Self::client();
        let read = |path: &'static str| self.read(&client, path, until, on_retry);
        let id = self.required(INSTANCE_ID, read(INSTANCE_ID).await?)?;
        let az = self.required(AZ, read(AZ).await?)?;
        let region = self.required(REGION, read(REGION).await?)?;
        let address = self.required(LOCAL_IPV4, read(LOCAL_IPV4).await?)?;
        let instance_type = read(INSTANCE_TYPE).await?;
        let ami_id = read(AMI_ID).await?;
        let identity = Identity {
            id: check_token(INSTANCE_ID, &id)?,
            address: check_ipv4(LOCAL_IPV4, &address)?,
            az: check_token(AZ, &az)?,
            region: check_token(REGION, &region)?,
            instance_type: check_optional(INSTANCE_TYPE, instance_type)?,
            ami_id: check_optional(AMI_ID, ami_id)?,
        };
        tracing::debug!(
            host_id = %identity.id,
            elapsed_ms = crate::text::millis(start.elapsed()),
            "instance metadata read"
        );
        Ok(identity)
    }

    /// Read one path, retrying until `until`; `Ok(None)` when IMDS answers 404.
    async fn read(
        &self,
        client: &aws_config::imds::Client,
        path: &'static str,
        until: Instant,
        on_retry: &(dyn Fn(&str) + Sync),
    ) -> Result<Option<String>, Error> {
        let attempt = move || async move { classify(client.get(path).await) };
        retry(path, until, on_retry, attempt)
            .await
            .map_err(|gave_up| self.imds_error(path, gave_up))
    }

    fn required(&self, path: &str, value: Option<String>) -> Result<String, Error> {
        value.ok_or_else(|| Error::Missing {
            endpoint: self.endpoint.clone(),
            path: path.to_owned(),
        })
    }

    fn imds_error(&self, path: &str, gave_up: GaveUp<ImdsError>) -> Error {
        let source: Box<dyn std::error::Error + Send + Sync> = match gave_up {
            GaveUp::Failed(err) | GaveUp::Deadline(Some(err)) => Box::new(err),
            GaveUp::Deadline(None) => Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer before the deadline",
            )),
        };
        Error::Imds {
            endpoint: self.endpoint.clone(),
            path: path.to_owned(),
            source,
        }
    }
}

impl IdentitySource for Imds {
    fn identify(&self) -> impl Future<Output = Result<Identity, Error>> + Send {
        self.identify_with(|_path: &str| {})
    }
}

/// What one attempt produced, as the retry loop needs to know it.
enum Attempt<T, E> {
    /// A final answer.
    Done(T),
    /// A failure that may go away (no IMDS yet, 401, 5xx, timeout).
    Retry(E),
    /// A failure that waiting will not cure.
    Fail(E),
}

/// Why the retry loop stopped without a value.
enum GaveUp<E> {
    /// An attempt failed for good.
    Failed(E),
    /// The deadline came, with the last error if an attempt had finished.
    Deadline(Option<E>),
}

/// How the retry loop treats one IMDS answer.
fn classify(result: Result<SensitiveString, ImdsError>) -> Attempt<Option<String>, ImdsError> {
    let status = match &result {
        Ok(_) => None,
        Err(ImdsError::ErrorResponse(response)) => Some(response.response().status().as_u16()),
        Err(_) => None,
    };
    match (result, status) {
        (Ok(value), _) => Attempt::Done(Some(value.into())),
        (Err(_), Some(404)) => Attempt::Done(None),
        // 400: our request is malformed; 403: IMDS is turned off for this instance.
        (Err(err), Some(400 | 403)) => Attempt::Fail(err),
        (Err(err), _) => Attempt::Retry(err),
    }
}

/// Run `attempt` until it is done, fails for good, or `until` passes; each retry is logged at
/// warn and announced through `on_retry(path)` before the pause.
async fn retry<T, E, F, Fut>(
    path: &str,
    until: Instant,
    on_retry: &(dyn Fn(&str) + Sync),
    mut attempt: F,
) -> Result<T, GaveUp<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
    E: std::error::Error,
{
    let start = Instant::now();
    let mut failures: u32 = 0;
    loop {
        let remaining = until.saturating_duration_since(Instant::now());
        let err = match tokio::time::timeout(remaining, attempt()).await {
            Err(_elapsed) => return Err(GaveUp::Deadline(None)),
            Ok(Attempt::Done(value)) => return Ok(value),
            Ok(Attempt::Fail(err)) => return Err(GaveUp::Failed(err)),
            Ok(Attempt::Retry(err)) => err,
        };
        let remaining = until.saturating_duration_since(Instant::now());
        let Some(pause) = retry_delay(failures, remaining) else {
            return Err(GaveUp::Deadline(Some(err)));
        };
        failures = failures.saturating_add(1);
        tracing::warn!(
            path,
            attempt = failures,
            elapsed_ms = crate::text::millis(start.elapsed()),
            error = %crate::text::chain(&err),
            "instance metadata not ready, retrying"
        );
        drop(err);
        on_retry(path);
        tokio::time::sleep(pause).await;
    }
}

/// Pause after `failures` failed attempts (0 = after the first): `initial` doubled each time,
/// never more than `max`.
pub fn backoff(failures: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// Pause before the next IMDS attempt, or `None` when the next attempt would start at or
/// after the deadline (`remaining` is the time left until it).
pub fn retry_delay(failures: u32, remaining: Duration) -> Option<Duration> {
    let pause = backoff(failures, INITIAL_BACKOFF, MAX_BACKOFF);
    (pause < remaining).then_some(pause)
}

/// Accept a plain token: 1–255 printable ASCII characters, no whitespace, quotes, slashes or
/// backslashes, since it reaches map lookups, file names and templates. Surrounding
/// whitespace is trimmed.
fn check_token(path: &str, value: &str) -> Result<String, Error> {
    let trimmed = value.trim();
    let plain = |c: char| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '`' | '/' | '\\');
    if trimmed.is_empty() || trimmed.len() > MAX_VALUE_LEN || !trimmed.chars().all(plain) {
        return Err(bad_value(path, value));
    }
    Ok(trimmed.to_owned())
}

fn check_optional(path: &str, value: Option<String>) -> Result<Option<String>, Error> {
    value.map(|value| check_token(path, &value)).transpose()
}

/// Accept a dotted-quad IPv4 address, returned in canonical form.
fn check_ipv4(path: &str, value: &str) -> Result<String, Error> {
    value
        .trim()
        .parse::<Ipv4Addr>()
        .map(|address| address.to_string())
        .map_err(|_| bad_value(path, value))
}

fn bad_value(path: &str, value: &str) -> Error {
    Error::BadValue {
        path: path.to_owned(),
        value: value.chars().take(MAX_VALUE_LEN).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_from_200ms_and_caps_at_5s() {
        let steps: Vec<_> = (0..7)
            .map(|n| backoff(n, INITIAL_BACKOFF, MAX_BACKOFF))
            .collect();
        let want = [200, 400, 800, 1600, 3200, 5000, 5000].map(ms);
        assert_eq!(steps, want);
        assert_eq!(backoff(31, INITIAL_BACKOFF, MAX_BACKOFF), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX, INITIAL_BACKOFF, MAX_BACKOFF), MAX_BACKOFF);
    }

    #[test]
    fn retry_delay_gives_up_when_the_pause_reaches_the_deadline() {
        assert_eq!(retry_delay(0, ms(1000)), Some(ms(200)));
        assert_eq!(retry_delay(2, ms(801)), Some(ms(800)));
        assert_eq!(retry_delay(2, ms(800)), None);
        assert_eq!(retry_delay(0, Duration::ZERO), None);
    }

    #[test]
    fn tokens_are_trimmed_and_plain() {
        let ok = check_token(INSTANCE_ID, "i-0a0000000000000a1\n").expect("valid id");
        assert_eq!(ok, "i-0a0000000000000a1");
        for bad in ["", "  ", "i-1 2", "i-\"1", "i-1/..", "i-\u{e9}", "a\tb"] {
            let err = check_token(INSTANCE_ID, bad).expect_err(bad);
            assert!(matches!(err, Error::BadValue { .. }), "{bad:?}: {err:?}");
        }
        let long = "i".repeat(MAX_VALUE_LEN + 1);
        assert!(check_token(INSTANCE_ID, &long).is_err());
    }

    #[test]
    fn error_chain_joins_sources() {
        let inner = std::io::Error::other("connection refused");
        let outer = std::io::Error::new(std::io::ErrorKind::TimedOut, inner);
        assert_eq!(crate::text::chain(&outer), "connection refused");
        let err = Error::Imds {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            path: INSTANCE_ID.to_owned(),
            source: Box::new(std::io::Error::other("refused")),
        };
        assert_eq!(
            crate::text::chain(&err),
            "reading instance metadata /latest/meta-data/instance-id \
             from http://169.254.169.254: refused"
        );
    }

    #[test]
    fn local_ipv4_must_parse() {
        assert_eq!(
            check_ipv4(LOCAL_IPV4, "10.0.1.11").expect("valid address"),
            "10.0.1.11"
        );
        for bad in ["", "10.0.1", "10.0.1.256", "::1", "10.0.1.11 10.0.1.12"] {
            assert!(check_ipv4(LOCAL_IPV4, bad).is_err(), "{bad:?}");
        }
    }

    fn failing(n: u32) -> std::io::Error {
        std::io::Error::other(format!("failure {n}"))
    }

    #[tokio::test(start_paused = true)]
    async fn retry_backs_off_then_succeeds() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let on_retry = |path: &str| {
            assert_eq!(path, INSTANCE_ID);
            retries.fetch_add(1, Ordering::SeqCst);
        };
        let start = Instant::now();
        let attempt = || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                n @ 0..=2 => Attempt::Retry(failing(n)),
                _ => Attempt::Done("i-1"),
            }
        };
        let got = retry(
            INSTANCE_ID,
            start + Duration::from_secs(60),
            &on_retry,
            attempt,
        )
        .await;
        assert!(matches!(got, Ok("i-1")));
        assert_eq!(retries.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), ms(200 + 400 + 800));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_the_deadline_with_the_last_error() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let attempt =
            || async { Attempt::<(), _>::Retry(failing(calls.fetch_add(1, Ordering::SeqCst))) };
        let got = retry(INSTANCE_ID, start + ms(1000), &|_: &str| {}, attempt).await;
        match got {
            Err(GaveUp::Deadline(Some(err))) => assert_eq!(err.to_string(), "failure 2"),
            _ => panic!("expected the deadline with the last error"),
        }
        // Attempts at 0, 200 and 600 ms; a third pause of 800 ms would pass the deadline.
        assert_eq!(start.elapsed(), ms(600));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_on_a_permanent_failure() {
        let attempt = || async { Attempt::<(), _>::Fail(failing(0)) };
        let got = retry(
            INSTANCE_ID,
            Instant::now() + ms(1000),
            &|_: &str| {},
            attempt,
        )
        .await;
        assert!(matches!(got, Err(GaveUp::Failed(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_cuts_a_hanging_attempt_at_the_deadline() {
        let start = Instant::now();
        let attempt = || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Attempt::<(), std::io::Error>::Done(())
        };
        let got = retry(INSTANCE_ID, start + ms(1500), &|_: &str| {}, attempt).await;
        assert!(matches!(got, Err(GaveUp::Deadline(None))));
        assert_eq!(start.elapsed(), ms(1500));
    }
}

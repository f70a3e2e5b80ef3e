//! The S3-compatible server of SPEC §8: moto in server mode (`moto_server`, installed into a
//! virtualenv by `tests/run.sh`). One shared server per test binary with one bucket per test,
//! or a private one that a fault test can stop and start. Requests and their status codes are
//! read from moto's access log, so a test can prove that an unchanged poll got a 304.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};

use super::strip_ansi;

/// Default location of `moto_server`, where `tests/run.sh` creates the virtualenv.
pub const DEFAULT_MOTO_SERVER: &str = "/var/cache/rolecall-ci/venv/bin/moto_server";
/// Region the harness uses for every bucket.
pub const REGION: &str = "us-east-1";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Raw output lines kept for failure messages.
const KEPT_OUTPUT_LINES: usize = 50;

/// Keeps moto from outliving the test process without `unsafe` (no `pre_exec`, no
/// `PR_SET_PDEATHSIG`, which would also fire when the *thread* that spawned it ends):
/// `sh` runs moto in the background and blocks reading its stdin, a pipe whose only write
/// end the test process holds. When the test drops the handle, or exits or dies in any way,
/// the pipe closes, `cat` returns and `sh` kills moto. The first line reports moto's pid.
const WATCHDOG_SCRIPT: &str = r#"exec 2>&1
"$0" "$@" </dev/null &
pid=$!
echo "watchdog: moto pid $pid"
cat >/dev/null
kill "$pid" 2>/dev/null
wait "$pid"
"#;

/// One request moto answered, from its access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Request {
    /// Method.
    pub method: String,
    /// Path and query, as sent (path-style: `/bucket/key?…`).
    pub path: String,
    /// Status moto answered with.
    pub status: u16,
}

/// What was stored through this handle, to restore a private server after `start()`.
#[derive(Default)]
struct Ledger {
    /// Bucket → versioned.
    buckets: BTreeMap<String, bool>,
    /// (bucket, key) → last bytes put.
    objects: BTreeMap<(String, String), Vec<u8>>,
}

/// A moto server on 127.0.0.1.
pub struct Moto {
    port: u16,
    process: Option<MotoProcess>,
    log: Arc<Mutex<Output>>,
    ledger: Mutex<Ledger>,
}

struct MotoProcess {
    child: Child,
    /// The watchdog pipe: dropping it stops moto.
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<()>>,
    moto_pid: Arc<OnceLock<u32>>,
}

#[derive(Default)]
struct Output {
    requests: Vec<S3Request>,
    last_lines: Vec<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

static SHARED: OnceLock<Moto> = OnceLock::new();
static BUCKETS: AtomicU32 = AtomicU32::new(0);

impl Moto {
    /// The server shared by every test of this binary, started on first use. It lives until
    /// the process exits (the watchdog pipe then stops it). Give each test its own bucket.
    pub fn shared() -> &'static Moto {
        SHARED.get_or_init(Moto::start_private)
    }

    /// A server of one's own, for tests that stop and start it.
    pub fn start_private() -> Moto {
        let log = Arc::new(Mutex::new(Output::default()));
        let (process, port) = MotoProcess::spawn(0, &log);
        Moto {
            port,
            process: Some(process),
            log,
            ledger: Mutex::new(Ledger::default()),
        }
    }

    /// The port on 127.0.0.1 (kept across `stop` and `start`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the value for `AWS_ENDPOINT_URL_S3`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment that points the agent's default AWS chain at this server.
    pub fn agent_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL_S3", self.endpoint().as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", REGION),
        ]
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .to_vec()
    }

    /// Stops the server: the port refuses connections until `start`. Objects are lost by
    /// moto; `start` puts back what was stored through this handle.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts a stopped server on the same port and restores, through the S3 API, every
    /// bucket and the last version of every object stored through this handle (ETags are
    /// content hashes, so they come back unchanged; VersionIds do not).
    pub fn start(&mut self) {
        if self.process.is_some() {
            return;
        }
        let (process, _) = MotoProcess::spawn(self.port, &self.log);
        self.process = Some(process);
        self.restore();
    }

    fn restore(&self) {
        let ledger = std::mem::take(&mut *lock(&self.ledger));
        for (bucket, versioned) in &ledger.buckets {
            self.create_bucket(bucket, *versioned);
        }
        for ((bucket, key), body) in &ledger.objects {
            self.put(bucket, key, body);
        }
    }

    /// An SDK client for this server: path-style, region us-east-1, static dummy keys.
    /// Use it inside a tokio runtime; the other methods here are synchronous.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// What every SDK client of this server is built from (S3, SSM, Secrets Manager): its
    /// endpoint, region us-east-1 and static dummy keys.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        let credentials = Credentials::new("test", "test", None, None, "tests");
        aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build()
    }

    /// Creates a bucket with a name unique in this process, versioned if asked.
    pub fn new_bucket(&self, versioned: bool) -> String {
        let serial = BUCKETS.fetch_add(1, Ordering::SeqCst);
        let bucket = format!("rolecall-test-{}-{serial}", std::process::id());
        self.create_bucket(&bucket, versioned);
        bucket
    }

    /// Creates `bucket` (a name the test chose), versioned if asked.
    pub fn create_bucket(&self, bucket: &str, versioned: bool) {
        let client = self.client();
        block_on(async {
            client.create_bucket().bucket(bucket).send().await?;
            if versioned {
                let enabled = VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build();
                client
                    .put_bucket_versioning()
                    .bucket(bucket)
                    .versioning_configuration(enabled)
                    .send()
                    .await?;
            }
            anyhow::Ok(())
        })
        .unwrap_or_else(|err| panic!("creating bucket {bucket} on moto: {err:?}"));
        lock(&self.ledger)
            .buckets
            .insert(bucket.to_string(), versioned);
    }

    /// Stores `body` at `bucket/key`; returns its ETag (quotes included, as S3 sends it) and
    /// its VersionId (`None` in an unversioned bucket).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) -> (String, Option<String>) {
        let client = self.client();
        let request = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()));
        let output = block_on(request.send())
            .unwrap_or_else(|err| panic!("putting s3://{bucket}/{key} on moto: {err:?}"));
        let record = (bucket.to_string(), key.to_string());
        lock(&self.ledger).objects.insert(record, body.to_vec());
        let etag = output.e_tag().expect("moto returns an ETag").to_string();
        (etag, output.version_id().map(str::to_string))
    }

    /// The current bytes of `bucket/key`.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let client = self.client();
        block_on(async {
            let object = client.get_object().bucket(bucket).key(key).send().await?;
            anyhow::Ok(object.body.collect().await?.into_bytes().to_vec())
        })
        .unwrap_or_else(|err| panic!("getting s3://{bucket}/{key} from moto: {err:?}"))
    }

    /// Deletes `bucket/key` (a delete marker in a versioned bucket).
    pub fn delete(&self, bucket: &str, key: &str) {
        let client = self.client();
        block_on(client.delete_object().bucket(bucket).key(key).send())
            .unwrap_or_else(|err| panic!("deleting s3://{bucket}/{key} on moto: {err:?}"));
        let record = (bucket.to_string(), key.to_string());
        lock(&self.ledger).objects.remove(&record);
    }

    /// Every request moto has logged so far (all tests' requests on the shared server:
    /// filter on the bucket name). A request can show up a few milliseconds after its
    /// response; wait with `wait_until` when counting right after the fact.
    pub fn requests(&self) -> Vec<S3Request> {
        lock(&self.log).requests.clone()
    }

    /// Logged requests with this method whose path contains `path_part`, and with this
    /// status if one is given. E.g. `("GET", "/bucket/map.toml", Some(200))` counts full
    /// downloads of the map; `Some(304)` counts unchanged polls.
    pub fn request_count(&self, method: &str, path_part: &str, status: Option<u16>) -> usize {
        lock(&self.log)
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_part))
            .filter(|r| status.is_none_or(|status| r.status == status))
            .count()
    }

    /// Waits up to `timeout` until moto has logged at least `count` requests as counted by
    /// [`Moto::request_count`] (its log is read by a thread); whether it did.
    pub fn wait_requests(
        &self,
        (method, path_part, status): (&str, &str, Option<u16>),
        count: usize,
        timeout: Duration,
    ) -> bool {
        super::wait_until(timeout, || {
            self.request_count(method, path_part, status) >= count
        })
    }

    /// moto's last output lines, for failure messages.
    pub fn output_tail(&self) -> String {
        lock(&self.log).last_lines.join("\n")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

impl MotoProcess {
    /// Starts moto on `port` (0: any) and waits for its "Running on" line.
    fn spawn(port: u16, log: &Arc<Mutex<Output>>) -> (MotoProcess, u16) {
        let program = moto_program();
        let mut child = Command::new("sh")
            .args(["-c", WATCHDOG_SCRIPT])
            .arg(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (port_tx, port_rx) = mpsc::channel();
        let moto_pid = Arc::new(OnceLock::new());
        let reader = {
            let (log, moto_pid) = (Arc::clone(log), Arc::clone(&moto_pid));
            std::thread::spawn(move || read_output(stdout, &log, &moto_pid, &port_tx))
        };
        let process = MotoProcess {
            stdin: child.stdin.take(),
            child,
            reader: Some(reader),
            moto_pid,
        };
        match process.wait_for_port(&port_rx) {
            Some(port) => (process, port),
            None => {
                process.stop();
                let tail = lock(log).last_lines.join("\n");
                panic!("moto did not start (exited, or took over {START_TIMEOUT:?}):\n{tail}");
            }
        }
    }

    /// The port from the "Running on" line; `None` if moto exited or took too long.
    fn wait_for_port(&self, port_rx: &mpsc::Receiver<u16>) -> Option<u16> {
        let mut port = None;
        super::wait_until(START_TIMEOUT, || {
            port = port_rx.try_recv().ok();
            let exited = self
                .moto_pid
                .get()
                .is_some_and(|&pid| !super::pid_alive(pid));
            port.is_some() || exited
        });
        port
    }

    fn stop(mut self) {
        // Closing the watchdog pipe makes `sh` kill moto and exit.
        self.stdin.take();
        super::stop_child(&mut self.child, STOP_TIMEOUT);
        if let Some(&pid) = self.moto_pid.get() {
            if super::pid_alive(pid) {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            super::wait_until(STOP_TIMEOUT, || !super::pid_alive(pid));
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// `$ROLECALL_MOTO_SERVER`, else `$ROLECALL_VENV/bin/moto_server`, else the default venv's.
fn moto_program() -> PathBuf {
    let program = std::env::var("ROLECALL_MOTO_SERVER")
        .or_else(|_| std::env::var("ROLECALL_VENV").map(|venv| format!("{venv}/bin/moto_server")))
        .unwrap_or_else(|_| DEFAULT_MOTO_SERVER.to_string());
    super::require_program(
        &program,
        "the S3 test server (moto) is installed by `bash tests/run.sh` into \
         /var/cache/rolecall-ci/venv (moto[server]==5.2.5); or set ROLECALL_MOTO_SERVER",
    )
}

/// Reads moto's merged output until it closes: the watchdog's pid line, the port, and the
/// access log.
fn read_output(
    stdout: impl std::io::Read,
    log: &Mutex<Output>,
    moto_pid: &OnceLock<u32>,
    port_tx: &mpsc::Sender<u16>,
) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let line = strip_ansi(&line);
        if let Some(pid) = line.strip_prefix("watchdog: moto pid ") {
            let _ = moto_pid.set(pid.trim().parse().unwrap_or_default());
        } else if let Some(port) = parse_running_port(&line) {
            let _ = port_tx.send(port);
        }
        let mut output = lock(log);
        output.requests.extend(parse_access_line(&line));
        output.last_lines.push(line);
        let excess = output.last_lines.len().saturating_sub(KEPT_OUTPUT_LINES);
        output.last_lines.drain(..excess);
    }
}

/// The port of werkzeug's " * Running on http://127.0.0.1:PORT" line.
fn parse_running_port(line: &str) -> Option<u16> {
    let rest = line.split("Running on http://127.0.0.1:").nth(1)?;
    rest.trim().trim_end_matches('/').parse().ok()
}

/// A werkzeug access log line: `127.0.0.1 - - [date] "GET /b/k HTTP/1.1" 304 -`.
fn parse_access_line(line: &str) -> Option<S3Request> {
    let mut quoted = line.splitn(3, '"');
    let (_, request_line, after) = (quoted.next()?, quoted.next()?, quoted.next()?);
    let mut request = request_line.split(' ');
    let (method, path) = (request.next()?, request.next()?);
    request
        .next()
        .filter(|version| version.starts_with("HTTP/"))?;
    let status = after.split_whitespace().next()?.parse().ok()?;
    Some(S3Request {
        method: method.to_string(),
        path: path.to_string(),
        status,
    })
}

/// Runs an SDK future to completion on a runtime of its own, in a thread of its own, so the
/// synchronous methods above also work when called from inside a `#[tokio::test]`.
pub(crate) fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a tokio runtime for an S3 call")
                    .block_on(future)
            })
            .join()
            .expect("the S3 call thread panicked")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_werkzeug_lines() {
        let line = "127.0.0.1 - - [27/Nov/2025 19:10:00] \"GET /b/map.toml HTTP/1.1\" 304 -";
        let parsed = parse_access_line(line).expect("an access line");
        assert_eq!((parsed.method.as_str(), parsed.status), ("GET", 304));
        assert_eq!(parsed.path, "/b/map.toml");
        let running = strip_ansi(" * Running on \u{1b}[1mhttp://127.0.0.1:41725\u{1b}[0m");
        assert_eq!(parse_running_port(&running), Some(41725));
        assert!(parse_access_line(" * Running on http://127.0.0.1:1").is_none());
    }
}

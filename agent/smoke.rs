//! Stage 8, smoke tests (SPEC §7.7): HTTP with a Host header and expected status, TCP
//! connect, MariaDB `SELECT 1` (and `@@read_only`), or a command. Each is retried with a
//! short backoff until its deadline, never slept blindly.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use crate::catalog::Command;
use crate::render::{SmokeCheck, SmokeTest};
use crate::sys::exec;

/// Pause between attempts of one test; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_millis(1000);
/// Cap on one attempt, so a hanging server still leaves time for retries.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Wrong answers in a row (e.g. HTTP 404 for 200) that end a test before its deadline.
const ANSWERED_LIMIT: u32 = 3;
/// What a site's own virtual host answers at its marker path (`Redirect gone`).
const MARKER_STATUS: u16 = 410;

/// The outcome of one smoke test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmokeResult {
    /// Test name.
    pub name: String,
    pub role: String,
    /// Passed.
    pub ok: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Time until pass or deadline.
    pub elapsed_ms: u64,
    /// Last failure reason.
    pub error: Option<String>,
}

/// Run every test concurrently (a boot waits for the slowest, not the sum); results come
/// back in the order of `tests`.
pub async fn smoke(tests: &[SmokeTest]) -> Vec<SmokeResult> {
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in tests.iter().cloned().enumerate() {
        set.spawn(async move { (i, run(&t).await) });
    }
    let mut results: Vec<(usize, SmokeResult)> = Vec::with_capacity(tests.len());
    while let Some(done) = set.join_next().await {
        match done {
            Ok(r) => results.push(r),
            Err(e) => tracing::error!(error = %e, "smoke test task failed"),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[instrument(skip_all, fields(test = %test.name))]
async fn run(test: &SmokeTest) -> SmokeResult {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + test.timeout;
    let mut attempts = match site_served(&test.check, deadline).await {
        Ok(attempts) => attempts,
        Err((attempts, text)) => return finished(test, attempts, started, Some(text)),
    };
    let mut pause = FIRST_RETRY;
    let mut answered = 0;
    loop {
        attempts += 1;
        let result = bounded_attempt(&test.check, deadline).await;
        answered = match &result {
            Err(f) if f.answered => answered + 1,
            _ => 0,
        };
        // A server that keeps answering, wrongly, is up and wrong: no point waiting it out.
        let done = result.is_ok()
            || answered >= ANSWERED_LIMIT
            || tokio::time::Instant::now() + pause >= deadline;
        if done {
            return finished(test, attempts, started, result.err().map(|f| f.text));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
}

/// Waits until the site's own virtual host answers its marker path (the HTTP test's
/// `site_marker`), returning the attempts made. Until then the server answers from its old
/// configuration (a graceful reload is applied after the reload command returns) or from
/// another site (a Host no virtual host names falls through to the first), whose answers
/// say nothing about this site: wrong answers are retried until the deadline.
async fn site_served(
    check: &SmokeCheck,
    deadline: tokio::time::Instant,
) -> Result<u32, (u32, String)> {
    let SmokeCheck::Http {
        url,
        host,
        site_marker: Some(path),
        ..
    } = check
    else {
        return Ok(0);
    };
    let marker = reqwest::Url::parse(url)
        .and_then(|base| base.join(path))
        .map_err(|e| (0, format!("site marker {path} of {url}: {e}")))?;
    let probe = SmokeCheck::Http {
        url: marker.into(),
        host: host.clone(),
        expect_status: MARKER_STATUS,
        body_contains: None,
        site_marker: None,
    };
    let mut pause = FIRST_RETRY;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let failure = match bounded_attempt(&probe, deadline).await {
            Ok(()) => return Ok(attempts),
            Err(failure) => failure,
        };
        if tokio::time::Instant::now() + pause >= deadline {
            let text = format!("not served by its own virtual host yet: {}", failure.text);
            return Err((attempts, text));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
}

/// One attempt, given at most [`ATTEMPT_TIMEOUT`] and never past `deadline`.
async fn bounded_attempt(
    check: &SmokeCheck,
    deadline: tokio::time::Instant,
) -> Result<(), Failure> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let limit = left.min(ATTEMPT_TIMEOUT);
    match tokio::time::timeout(limit, attempt(check)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::silent(format!(
            "no answer within {} ms",
            limit.as_millis()
        ))),
    }
}

fn finished(
    test: &SmokeTest,
    attempts: u32,
    started: Instant,
    error: Option<String>,
) -> SmokeResult {
    let elapsed_ms = crate::text::elapsed_ms(started);
    match &error {
        None => info!(attempts, elapsed_ms, "smoke test passed"),
        Some(e) => warn!(attempts, elapsed_ms, error = %e, "smoke test failed"),
    }
    SmokeResult {
        name: test.name.clone(),
        role: test.role.clone(),
        ok: error.is_none(),
        attempts,
        elapsed_ms,
        error,
    }
}

/// A failed attempt; `answered` when the service replied, just not as expected.
struct Failure {
    text: String,
    answered: bool,
}

impl Failure {
    /// No usable answer (refused, timed out): the service may still be starting.
    fn silent(text: String) -> Failure {
        Failure {
            text,
            answered: false,
        }
    }

    /// The service answered, wrongly.
    fn answered(text: String) -> Failure {
        Failure {
            text,
            answered: true,
        }
    }
}

async fn attempt(check: &SmokeCheck) -> Result<(), Failure> {
    let silent = |r: Result<(), String>| r.map_err(Failure::silent);
    match check {
        SmokeCheck::Http {
            url,
            host,
            expect_status,
            body_contains,
            site_marker: _,
        } => {
            http(
                url,
                host.as_deref(),
                *expect_status,
                body_contains.as_deref(),
            )
            .await
        }
        SmokeCheck::Tcp { address } => silent(
            tokio::net::TcpStream::connect(address.as_str())
                .await
                .map(drop)
                .map_err(|e| format!("connecting to {address}: {e}")),
        ),
        SmokeCheck::Mysql { command, read_only } => {
            silent(mysql(command, read_only.as_deref()).await)
        }
        SmokeCheck::Command { command } => silent(
            exec::run_ok(command, ATTEMPT_TIMEOUT)
                .await
                .map(drop)
                .map_err(|e| crate::text::chain(&e)),
        ),
    }
}

async fn http(
    url: &str,
    host: Option<&str>,
    expect: u16,
    body_contains: Option<&str>,
) -> Result<(), Failure> {
    // No pool: the attempt's connection closes with it (a daemon keeps no sockets to the
    // services it tested).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .map_err(|e| Failure::silent(e.to_string()))?;
    let mut request = client.get(url);
    if let Some(h) = host {
        request = request.header(reqwest::header::HOST, h);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::silent(format!("GET {url}: {}", crate::text::chain(&e))))?;
    let status = response.status().as_u16();
    if status != expect {
        return Err(Failure::answered(format!(
            "GET {url} (Host {}) answered {status}, expected {expect}",
            host.unwrap_or("-")
        )));
    }
    match body_contains {
        Some(needle) => body_check(response, url, needle).await,
        None => Ok(()),
    }
}

async fn body_check(response: reqwest::Response, url: &str, needle: &str) -> Result<(), Failure> {
    let body = response
        .text()
        .await
        .map_err(|e| Failure::silent(e.to_string()))?;
    if body.contains(needle) {
        return Ok(());
    }
    Err(Failure::answered(format!(
        "GET {url}: body does not contain {needle:?}"
    )))
}

/// `SELECT 1, @@read_only` through the MariaDB client named by `command`.
async fn mysql(command: &Command, read_only: Option<&str>) -> Result<(), String> {
    let mut argv = command.argv.clone();
    argv.extend([
        "-N".into(),
        "-B".into(),
        "-e".into(),
        "SELECT 1, @@read_only".into(),
    ]);
    let out = exec::run_ok(&Command { argv }, ATTEMPT_TIMEOUT)
        .await
        .map_err(|e| crate::text::chain(&e))?;
    let fields: Vec<&str> = out.stdout.split_whitespace().collect();
    if fields.first() != Some(&"1") {
        return Err(format!("SELECT 1 returned {:?}", out.stdout.trim()));
    }
    match (read_only, fields.get(1)) {
        (Some(want), Some(got)) if want != *got => {
            Err(format!("@@read_only is {got}, expected {want}"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A loopback HTTP server answering every request with `status`.
    fn server(status: u16) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        port
    }

    /// A loopback HTTP server answering `/marker` with `marker(n)` on its `n`th request
    /// there (from 0), and everything else with 200.
    fn site(marker: fn(usize) -> u16) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let mut asked = 0;
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).unwrap_or(0);
                let status = if buf[..n].starts_with(b"GET /marker ") {
                    asked += 1;
                    marker(asked - 1)
                } else {
                    200
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        port
    }

    fn marked(port: u16, timeout: Duration) -> SmokeTest {
        let mut test = http_test(port, timeout);
        if let SmokeCheck::Http { site_marker, .. } = &mut test.check {
            *site_marker = Some("/marker".into());
        }
        test
    }

    #[tokio::test]
    async fn the_site_is_checked_only_once_its_own_virtual_host_answers_the_marker() {
        // A reload still being applied: the marker is unknown (404) three times, then served.
        let result = run(&marked(
            site(|n| if n < 3 { 404 } else { 410 }),
            Duration::from_secs(10),
        ))
        .await;
        assert!(result.ok, "{result:?}");
        assert_eq!(
            result.attempts, 5,
            "four marker requests, one health request"
        );
    }

    #[tokio::test]
    async fn a_health_page_answered_by_another_virtual_host_does_not_pass() {
        // Another site answers for this Host: its health page says 200, its marker 404.
        let result = run(&marked(site(|_| 404), Duration::from_millis(800))).await;
        assert!(!result.ok, "{result:?}");
        let error = result.error.as_deref().unwrap_or_default();
        assert!(
            error.contains("not served by its own virtual host") && error.contains("answered 404"),
            "{error}"
        );
    }

    fn http_test(port: u16, timeout: Duration) -> SmokeTest {
        SmokeTest {
            name: "t".into(),
            role: "web".into(),
            check: SmokeCheck::Http {
                url: format!("http://127.0.0.1:{port}/"),
                host: Some("a.test".into()),
                expect_status: 200,
                body_contains: None,
                site_marker: None,
            },
            timeout,
        }
    }

    #[tokio::test]
    async fn a_consistently_wrong_answer_fails_without_waiting_for_the_deadline() {
        let started = Instant::now();
        let result = run(&http_test(server(404), Duration::from_secs(30))).await;
        assert!(!result.ok);
        assert_eq!(result.attempts, ANSWERED_LIMIT);
        assert!(
            result
                .error
                .as_deref()
                .is_some_and(|e| e.contains("answered 404")),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_right_answer_passes_and_silence_is_retried_until_the_deadline() {
        assert!(
            run(&http_test(server(200), Duration::from_secs(5)))
                .await
                .ok
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let result = run(&http_test(closed, Duration::from_millis(600))).await;
        assert!(!result.ok && result.attempts > ANSWERED_LIMIT, "{result:?}");
    }
}

//! `rolecall run` on "EC2" (issue 3): identity from the IMDSv2 test server, the map from
//! moto (S3), systemd notifications on a real datagram socket, signals, the control socket,
//! the last-good cache, and the fault cases. The host is a memcached host whose smoke test
//! connects to a TCP listener the test holds open.

use std::net::TcpListener;
use std::time::Duration;

use crate::fixture::{assert_exit, describe, identity_of, Agent, Daemon, Setup};
use crate::support::imds::{ImdsMeta, ImdsServer};
use crate::support::notify::{Notification, NotifySocket};
use crate::support::s3::{Moto, S3Request};
use crate::support::wait_until;

const ID: &str = "i-0123456789abcdef0";
const MEMCACHED_CONF: &str = "/etc/memcached.conf";

/// A map assigning `ID` the memcached role (or nothing when `assigned` is false).
fn map(generation: u64, memory_mb: u32, assigned: bool) -> String {
    let mut text = format!("schema = 1\ngeneration = {generation}\n\n[products.site]\ndomain = \"site.example.test\"\ndocroot = \"/srv/site\"\n");
    text.push_str(
        "\n[hosts.other-1]\naddress = \"10.0.9.9\"\naz = \"us-east-1b\"\nroles = [\"memcached\"]\n",
    );
    if assigned {
        text.push_str(&format!("\n[hosts.{ID}]\naddress = \"10.0.1.10\"\naz = \"us-east-1a\"\nroles = [\"memcached\"]\nproducts = [\"site\"]\n# memory {memory_mb}\n"));
    }
    text
}

/// Everything one daemon test needs; the daemon is stopped on drop.
struct Ec2 {
    agent: Agent,
    moto: &'static Moto,
    imds: ImdsServer,
    bucket: String,
    notify: NotifySocket,
    _smoke_target: TcpListener,
    daemon: Option<Daemon>,
}

impl Ec2 {
    fn new(interval: &str, jitter: &str) -> Ec2 {
        Ec2::with_restart(interval, jitter, "true")
    }

    /// As `new`, with `restart` (a command string) as memcached's restart command.
    fn with_restart(interval: &str, jitter: &str, restart: &str) -> Ec2 {
        let moto = Moto::shared();
        let bucket = moto.new_bucket(true);
        let smoke_target = TcpListener::bind("127.0.0.1:0").expect("smoke target");
        let port = smoke_target.local_addr().expect("addr").port();
        let mut setup = Setup::new(ID, "10.0.1.10")
            .var(&format!("memcached_port = {port}"))
            .var("memcached_mb = 64")
            .service("memcached", &format!("restart = {restart:?}"));
        setup.identity = Some(vec!["source = \"imds\"".into(), "timeout = \"60s\"".into()]);
        setup.map_url = Some(format!("s3://{bucket}/rolemap.toml"));
        setup.map_lines = vec![
            format!("poll_interval = \"{interval}\""),
            format!("jitter = \"{jitter}\""),
            "timeout = \"2s\"".into(),
        ];
        let agent = Agent::new(setup);
        let imds = ImdsServer::start(ImdsMeta::default());
        Ec2 {
            agent,
            moto,
            imds,
            bucket,
            notify: NotifySocket::new(),
            _smoke_target: smoke_target,
            daemon: None,
        }
    }

    /// Publishes `map(generation)`, starts the daemon and waits for `READY=1`.
    fn started(mut self, generation: u64) -> Ec2 {
        self.publish(&map(generation, 64, true));
        self.start(None);
        self.wait_ready();
        self
    }

    fn wait_ready(&mut self) {
        self.wait_notification(Duration::from_secs(30), "READY", "1");
    }

    /// An agent whose map is in a moto of the test's own, which it can stop and start.
    fn on_private_moto(interval: &str, jitter: &str) -> (Ec2, Moto, String) {
        let moto = Moto::start_private();
        let bucket = moto.new_bucket(false);
        let mut d = Ec2::new(interval, jitter);
        d.agent.setup.map_url = Some(format!("s3://{bucket}/rolemap.toml"));
        d.agent.write_config();
        (d, moto, bucket)
    }

    fn publish(&self, text: &str) {
        self.moto.put(&self.bucket, "rolemap.toml", text.as_bytes());
    }

    /// The map's path in moto's request log.
    fn key_path(&self) -> String {
        format!("/{}/rolemap.toml", self.bucket)
    }

    /// `rolecall ARGS` with the shared moto's and the IMDS server's variables.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.agent.command(args);
        cmd.envs(self.moto.agent_env()).envs(self.imds.agent_env());
        cmd.env("RUST_LOG", "rolecall=debug");
        cmd
    }

    fn start(&mut self, watchdog_usec: Option<u64>) {
        self.spawn(&self.moto.agent_env(), watchdog_usec);
    }

    /// Starts `rolecall run` against the S3 server of `s3_env` (a test's own moto, or the
    /// shared one), the IMDS server and the current notify socket.
    fn spawn(&mut self, s3_env: &[(String, String)], watchdog_usec: Option<u64>) {
        let mut env = s3_env.to_vec();
        env.extend(self.imds.agent_env());
        env.push((
            "NOTIFY_SOCKET".into(),
            self.notify.path().display().to_string(),
        ));
        if let Some(usec) = watchdog_usec {
            env.push(("WATCHDOG_USEC".into(), usec.to_string()));
        }
        self.daemon = Some(Daemon::start(&self.agent, &env));
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the daemon was started")
    }

    /// The daemon's log, for failure messages.
    fn log_tail(&self) -> String {
        self.daemon
            .as_ref()
            .map(Daemon::log_tail)
            .unwrap_or_default()
    }

    fn wait_notification(
        &mut self,
        timeout: Duration,
        key: &str,
        contains: &str,
    ) -> Vec<Notification> {
        let seen = self.notify.recv_until(timeout, |n| {
            n.get(key).is_some_and(|v| v.contains(contains))
        });
        assert!(
            seen.last()
                .and_then(|n| n.get(key))
                .is_some_and(|v| v.contains(contains)),
            "no {key}= containing {contains:?} within {timeout:?}; seen: {:?}\ndaemon log:\n{}",
            self.notify
                .seen()
                .iter()
                .map(|n| n.0.clone())
                .collect::<Vec<_>>(),
            self.log_tail()
        );
        seen
    }

    fn conf(&self) -> String {
        std::fs::read_to_string(self.agent.path(MEMCACHED_CONF)).unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        self.agent.status()
    }

    /// Waits until the daemon has converged to `generation`; panics saying `what` did not
    /// happen, with the status and the log.
    #[track_caller]
    fn wait_converged(&self, generation: u64, what: &str) {
        let converged = |status: serde_json::Value| {
            status["map"]["generation"] == generation && status["outcome"] == "converged"
        };
        assert!(
            wait_until(Duration::from_secs(30), || converged(self.status())),
            "{what}: {}\n{}",
            self.status(),
            self.log_tail()
        );
    }

    /// The last status record's message.
    fn message(&self) -> String {
        self.status()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

#[test]
fn ready_comes_after_the_files_and_status_and_watchdog_are_sent() {
    let mut d = Ec2::new("1s", "0s");
    d.publish(&map(1, 64, true));
    d.start(Some(2_000_000));
    // The file as it is the moment READY=1 arrives (read in the receive loop, before
    // anything else), and the daemon's own log: the write is logged before READY=1.
    let conf_path = d.agent.path(MEMCACHED_CONF);
    let mut at_ready = None;
    let seen = d.notify.recv_until(Duration::from_secs(30), |n| {
        let ready = n.has("READY", "1");
        if ready {
            at_ready = Some(std::fs::read_to_string(&conf_path).unwrap_or_default());
        }
        ready
    });
    let ready = seen
        .last()
        .filter(|n| n.has("READY", "1"))
        .unwrap_or_else(|| panic!("no READY=1 within 30 s: {seen:?}\n{}", d.log_tail()));
    assert!(
        at_ready.as_deref().is_some_and(|c| c.contains("-m 64")),
        "READY=1 arrived before the files were in place: {at_ready:?}"
    );
    assert!(
        ready
            .get("STATUS")
            .is_some_and(|s| s.contains("files installed and checked")),
        "{:?}",
        ready.0
    );
    // The daemon logs READY=1 just after sending it: wait for that line.
    let daemon = d.daemon();
    let told = |log: &[String]| log.iter().any(|l| l.contains("READY=1"));
    assert!(
        wait_until(Duration::from_secs(10), || told(&daemon.log_lines())),
        "READY=1 was not logged:\n{}",
        daemon.log_tail()
    );
    let log = daemon.log_lines();
    let line = |needle: &str| log.iter().position(|l| l.contains(needle));
    let (written, told) = (line(MEMCACHED_CONF), line("READY=1"));
    assert!(
        matches!((written, told), (Some(w), Some(t)) if w < t),
        "the daemon's log does not show {MEMCACHED_CONF} written before READY=1 \
         ({written:?}, {told:?}):\n{}",
        log.join("\n")
    );
    d.wait_notification(
        Duration::from_secs(30),
        "STATUS",
        "converged to generation 1",
    );
    d.wait_notification(Duration::from_secs(5), "WATCHDOG", "1");
}

#[test]
fn issue16_no_service_command_runs_before_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen_ready = dir.path().join("ready-seen");
    let restart = format!(
        "sh -c 'for i in $(seq 200); do test -e {} && exit 0; sleep 0.1; done; exit 1'",
        seen_ready.display()
    );
    let mut d = Ec2::with_restart("1s", "0s", &restart).started(1);
    std::fs::write(&seen_ready, b"").expect("mark READY seen");
    d.wait_notification(
        Duration::from_secs(40),
        "STATUS",
        "converged to generation 1",
    );
    let status = d.status();
    assert_eq!(status["outcome"], "converged", "{status:#}");
    assert_eq!(status["services"][0]["ok"], true, "{status:#}");
}

/// "Within one poll" is judged from moto's request log, not a stopwatch: the first poll
/// after the upload downloads the new map (at most one 304 in between, from a poll that
/// was in flight during the upload), and that download is the one applied.
#[test]
fn a_map_change_is_applied_within_one_poll_and_unchanged_polls_cost_a_304() {
    let d = Ec2::new("1s", "1s").started(1);
    let key_path = d.key_path();
    let get = |status| ("GET", key_path.as_str(), Some(status));
    assert!(
        d.moto.wait_requests(get(304), 2, Duration::from_secs(10)),
        "unchanged polls did not get 304s"
    );
    let full_gets = d.moto.request_count("GET", &key_path, Some(200));

    d.publish(&map(2, 64, true).replace("other-1", "other-2"));
    d.wait_converged(2, "generation 2 not applied");
    assert!(
        d.moto
            .wait_requests(get(200), full_gets + 1, Duration::from_secs(10)),
        "the applied download is not in moto's log"
    );
    let polls = polls_after_last_put(&d.moto.requests(), &key_path);
    let first_download = polls.iter().position(|status| *status == 200);
    assert!(
        first_download.is_some_and(|at| at <= 1),
        "the new map was not downloaded by the first poll after the upload: {polls:?}"
    );
    assert_eq!(d.status()["map"]["from_cache"], false, "{}", d.status());
    assert_eq!(
        d.moto.request_count("GET", &key_path, Some(200)),
        full_gets + 1,
        "unchanged polls re-downloaded the body"
    );
}

/// The statuses of the GETs of `key_path` after its last PUT, in moto's order.
fn polls_after_last_put(requests: &[S3Request], key_path: &str) -> Vec<u16> {
    let ours = |r: &S3Request| {
        r.path
            .strip_prefix(key_path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('?'))
    };
    let put = requests
        .iter()
        .rposition(|r| r.method == "PUT" && ours(r))
        .expect("the upload is in moto's log");
    requests[put + 1..]
        .iter()
        .filter(|r| r.method == "GET" && ours(r))
        .map(|r| r.status)
        .collect()
}

/// Issue 3: a 304 costs no parse, render or write. Polls keep coming (moto counts the
/// 304s), yet the status record, the counters and `STATUS=` stay as they were; a hand
/// edit of a managed file is still noticed by the next poll and undone.
#[test]
fn quiet_polls_write_nothing_but_still_repair_drift() {
    let mut d = Ec2::new("1s", "0s").started(1);
    let key_path = format!("/{}/rolemap.toml", d.bucket);
    let moto = d.moto;
    let polls = |_: &Ec2| moto.request_count("GET", &key_path, Some(304));
    // The first quiet poll records "no changes" once (and says so); from the next one on,
    // nothing.
    let first = polls(&d);
    d.wait_notification(Duration::from_secs(15), "STATUS", "no changes");
    assert!(
        wait_until(Duration::from_secs(10), || polls(&d) >= first + 2),
        "no 304 polls"
    );
    let state = d.agent.state();
    let files = [state.join("status.json"), state.join("counters.json")];
    let before: Vec<_> = files.iter().map(|f| identity_of(f)).collect();
    let counted = polls(&d);
    assert!(
        wait_until(Duration::from_secs(15), || polls(&d) >= counted + 3),
        "fewer than 3 polls in 15 s"
    );
    // Whatever the daemon sent meanwhile is queued on the socket.
    let during = d.notify.recv_until(Duration::from_millis(300), |_| false);
    let after: Vec<_> = files.iter().map(|f| identity_of(f)).collect();
    assert_eq!(
        before, after,
        "a quiet poll rewrote the status record or counters"
    );
    assert!(
        during.iter().all(|n| n.get("STATUS").is_none()),
        "STATUS= repeated on quiet polls: {:?}",
        during.iter().map(|n| n.0.clone()).collect::<Vec<_>>()
    );

    // A reconcile someone asks for is recorded even when it is quiet, by the daemon: it
    // counts the quiet polls before it too (a sync run in-process would count one).
    let converged_before = converged(&d);
    let out = d.command(&["sync"]).output().expect("rolecall sync");
    assert_exit(&out, 0);
    assert_ne!(
        identity_of(&files[0]),
        after[0],
        "a requested sync was not recorded: {}",
        describe(&out)
    );
    assert!(
        converged(&d) >= converged_before + 4,
        "the quiet polls were not counted: {converged_before} -> {}",
        converged(&d)
    );

    let conf = d.agent.path(MEMCACHED_CONF);
    std::fs::write(&conf, "-m 1\n").expect("hand edit");
    assert!(
        wait_until(Duration::from_secs(5), || d.conf().contains("-m 64")),
        "the hand edit was not undone by the next poll: {:?}",
        d.conf()
    );
    assert_eq!(
        d.moto.request_count("GET", &key_path, Some(200)),
        1,
        "drift repair re-downloaded the map"
    );
}

/// The poll interval is 60 s, so a reconcile of generation 2 well before that, recorded
/// by the daemon as triggered by SIGHUP and started within a few seconds of the signal
/// (the record's `started_unix`; headroom for a loaded machine), is the signal's doing.
#[test]
fn sighup_reconciles_at_once_and_sync_gets_the_daemons_result() {
    let mut d = Ec2::new("60s", "0s").started(1);
    d.publish(&map(2, 64, true));
    let sent = unix_seconds();
    d.daemon().signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_converged(2, "SIGHUP did not reconcile");
    let status = d.status();
    assert_eq!(status["trigger"], "sighup", "{status:#}");
    let started = status["started_unix"].as_u64().expect("started_unix");
    assert!(
        (sent..=sent + SIGNAL_HEADROOM_S).contains(&started),
        "the SIGHUP reconcile started at {started}, the signal was sent at {sent}"
    );

    d.publish(&map(3, 64, true));
    let out = d.command(&["sync", "--json"]).output().expect("sync");
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["trigger"], "sync", "{}", describe(&out));
    assert_eq!(report["map"]["generation"], 3);
}

/// How many seconds after a signal its reconcile may start on a loaded 2-core machine.
const SIGNAL_HEADROOM_S: u64 = 5;

/// Now, in whole seconds since the epoch (the resolution of `started_unix`).
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

#[test]
fn s3_outage_keeps_the_cache_and_recovers() {
    let (mut d, mut moto, bucket) = Ec2::on_private_moto("1s", "0s");
    let good = map(1, 64, true);
    moto.put(&bucket, "rolemap.toml", good.as_bytes());
    d.spawn(&moto.agent_env(), None);
    d.wait_ready();
    d.wait_notification(
        Duration::from_secs(30),
        "STATUS",
        "converged to generation 1",
    );
    let conf = d.agent.path(MEMCACHED_CONF);
    let (written, bytes) = (identity_of(&conf), d.conf());

    moto.stop();
    d.wait_notification(Duration::from_secs(15), "STATUS", "using cached map");
    assert!(d.daemon().running(), "the daemon exited while S3 was down");
    assert_eq!(
        (identity_of(&conf), d.conf()),
        (written, bytes),
        "the managed file was rewritten while S3 was down"
    );
    assert!(
        holds_file(&d.agent.state(), good.as_bytes()),
        "the state directory no longer holds the last good map: {:?}",
        crate::fixture::tree(&d.agent.state()).keys()
    );
    moto.start();
    moto.put(&bucket, "rolemap.toml", map(2, 64, true).as_bytes());
    d.wait_converged(2, "did not recover when S3 came back");
}

/// Whether a file under `dir` holds exactly `bytes` (the last-good cache, whatever its name).
fn holds_file(dir: &std::path::Path, bytes: &[u8]) -> bool {
    crate::fixture::tree(dir).values().any(|b| b == bytes)
}

#[test]
fn boot_with_s3_down_converges_from_the_cache_or_waits_without_one() {
    let (mut d, mut moto, bucket) = Ec2::on_private_moto("1s", "0s");
    let env = moto.agent_env();
    moto.stop();
    // No cache: the daemon waits and retries instead of exiting.
    d.spawn(&env, None);
    d.wait_notification(Duration::from_secs(20), "STATUS", "rolemap.toml");
    assert!(d.daemon().running(), "exited without a cache");
    moto.start();
    moto.put(&bucket, "rolemap.toml", map(1, 64, true).as_bytes());
    d.wait_ready();
    d.daemon().stop();

    // With a cache: a fresh boot while S3 is down converges from it.
    moto.stop();
    std::fs::remove_file(d.agent.path(MEMCACHED_CONF)).expect("remove conf");
    d.notify = NotifySocket::new();
    d.spawn(&env, None);
    d.wait_ready();
    assert!(d.conf().contains("-m 64"));
    d.wait_notification(Duration::from_secs(30), "STATUS", "using cached map");
    let message = d.message();
    assert!(
        message.starts_with("converged to generation 1"),
        "{message}"
    );
}

#[test]
fn invalid_and_older_maps_are_refused_and_the_next_valid_one_applies() {
    let mut d = Ec2::new("1s", "0s").started(5);
    let before = d.conf();

    d.publish(&map(6, 64, true).replace("az = \"us-east-1a\"", "az = \"us east\""));
    d.wait_notification(Duration::from_secs(10), "STATUS", "refused");
    assert!(d.message().contains("az"), "{}", d.status());
    assert_eq!(d.conf(), before);

    d.publish(&map(4, 64, true).replace("10.0.9.9", "10.0.9.8"));
    d.wait_notification(
        Duration::from_secs(10),
        "STATUS",
        "older than the applied generation 5",
    );
    assert_eq!(d.status()["map"]["generation"], 5);

    d.publish(&map(7, 64, true).replace("10.0.9.9", "10.0.9.7"));
    d.wait_converged(7, "the next valid map was not applied");
}

#[test]
fn imds_late_and_an_unassigned_host_wait_then_converge() {
    let mut d = Ec2::new("1s", "0s");
    d.imds.set_available(false);
    d.publish(&map(1, 64, false));
    d.start(None);
    d.wait_notification(
        Duration::from_secs(20),
        "STATUS",
        "waiting for instance metadata",
    );
    d.imds.set_available(true);
    d.wait_notification(
        Duration::from_secs(30),
        "STATUS",
        "waiting for role assignment",
    );
    assert!(!d.agent.path(MEMCACHED_CONF).exists());
    assert!(
        !d.notify.seen().iter().any(|n| n.has("READY", "1")),
        "READY before the host had a role"
    );
    // Waiting polls on an unchanged map parse and write nothing either.
    let key_path = format!("/{}/rolemap.toml", d.bucket);
    let moto = d.moto;
    let polls = || moto.request_count("GET", &key_path, Some(304));
    let first = polls();
    assert!(wait_until(Duration::from_secs(10), || polls() >= first + 2));
    let status = d.agent.state().join("status.json");
    let before = identity_of(&status);
    let counted = polls();
    assert!(wait_until(Duration::from_secs(10), || polls() >= counted + 2));
    assert_eq!(
        identity_of(&status),
        before,
        "a waiting poll rewrote the status record"
    );
    d.publish(&map(2, 64, true));
    d.wait_notification(Duration::from_secs(15), "READY", "1");
    assert!(d.conf().contains("-m 64"));
    d.wait_notification(
        Duration::from_secs(15),
        "STATUS",
        "converged to generation 2",
    );
    // The quiet waiting polls were counted as waiting when the status changed.
    let waiting = d.agent.counters()["reconciles"]["waiting"]
        .as_u64()
        .unwrap_or(0);
    assert!(waiting >= 4, "waiting polls counted: {waiting}");
}

fn converged(d: &Ec2) -> u64 {
    d.agent.counters()["reconciles"]["converged"]
        .as_u64()
        .unwrap_or(0)
}

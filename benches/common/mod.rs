//! What the benches that run the real agent share (issue 11): the tests' fixture and
//! harness, the web host and the map key they publish, the EC2 (moto and IMDS) they run on,
//! the daemon launcher, and the units of their figures. A bench includes it with `mod
//! common;` and `use common::{fixture, support};`: the fixture reaches the harness as
//! `crate::support`.
#![allow(dead_code, reason = "each bench uses part of what the benches share")]

#[path = "../../tests/fixture.rs"]
pub mod fixture;
#[allow(
    unused_imports,
    reason = "cargo builds benches with cfg(test) but no libtest: support's unit-test module is empty"
)]
#[path = "../../tests/support/mod.rs"]
pub mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fixture::{Agent, Setup};
use support::apache::Apache;
use support::imds::{ImdsMeta, ImdsServer};
use support::notify::NotifySocket;
use support::s3::Moto;

/// The instance id IMDS reports and the map assigns the web role.
pub const ID: &str = "i-0123456789abcdef0";
pub const MAP_KEY: &str = "rolemap.toml";
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The fixture's web map for `products`, the web host being `ID`.
pub fn web_map(generation: u64, products: &[&str], base: &Path) -> String {
    fixture::web_map(generation, products, base).replace("[hosts.web-1]", &format!("[hosts.{ID}]"))
}

/// The "EC2" a daemon runs on: moto (shared) with a bucket of its own, and the IMDSv2 test
/// server reporting [`ID`] on 127.0.0.1.
pub struct Ec2 {
    pub moto: &'static Moto,
    pub bucket: String,
    imds: ImdsServer,
}

impl Ec2 {
    /// A new bucket, `versioned` or not, and IMDS.
    pub fn start(versioned: bool) -> Ec2 {
        let moto = Moto::shared();
        let bucket = moto.new_bucket(versioned);
        let meta = ImdsMeta {
            local_ipv4: "127.0.0.1".into(),
            ..ImdsMeta::with_instance_id(ID)
        };
        Ec2 {
            moto,
            bucket,
            imds: ImdsServer::start(meta),
        }
    }

    /// Puts `text` as the map object.
    pub fn publish(&self, text: &str) {
        self.moto.put(&self.bucket, MAP_KEY, text.as_bytes());
    }

    /// The environment that points the agent at moto and IMDS.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.agent_env();
        env.extend(self.imds.agent_env());
        env
    }

    /// IMDSv2 identity, the map in S3, polled every second without jitter.
    pub fn setup(&self) -> Setup {
        let mut setup = Setup::new(ID, "127.0.0.1");
        setup.identity = Some(vec!["source = \"imds\"".into()]);
        setup.map_url = Some(format!("s3://{}/{MAP_KEY}", self.bucket));
        setup
    }

    /// A fresh agent of [`Ec2::setup`] and an Apache serving its `--root`, config written.
    pub fn apache_agent(&self) -> (Agent, Apache) {
        let mut agent = Agent::new(self.setup());
        let apache = Apache::start(&agent.root);
        agent.setup = self.setup().apache(&apache);
        agent.write_config();
        (agent, apache)
    }
}

/// What the boot reconcile's status record must show before [`Daemon::start`] returns.
#[derive(Debug, Clone, Copy)]
pub enum Boot {
    /// It has finished, whatever its outcome.
    Finished,
    /// It has converged.
    Converged,
}

/// A running `rolecall run` (the harness's launcher) that sent `READY=1`.
///
/// After `READY=1` a thread keeps reading the notify socket, as systemd does: the daemon
/// sends `STATUS=` after every reconcile with a blocking send, and an unread socket (10
/// datagrams, `net.unix.max_dgram_qlen`) would stall it.
pub struct Daemon {
    pub daemon: fixture::Daemon,
    drain: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Daemon {
    /// Starts the daemon, waits for `READY=1` and then for the boot reconcile to reach
    /// `boot`; returns it and the time from spawn to `READY=1`. Logs at `info`, the
    /// daemon's default level, so that logging costs what it does in production.
    pub fn start(agent: &Agent, env: &[(String, String)], boot: Boot) -> (Daemon, Duration) {
        let mut notify = NotifySocket::new();
        let mut env = env.to_vec();
        env.push(("NOTIFY_SOCKET".into(), notify.path().display().to_string()));
        env.push(("RUST_LOG".into(), "info".into()));
        let started = Instant::now();
        let daemon = fixture::Daemon::start(agent, &env);
        let seen = notify.recv_until(READY_TIMEOUT, |n| n.has("READY", "1"));
        let ready = started.elapsed();
        let mut daemon = Daemon {
            daemon,
            drain: None,
        };
        if !seen.last().is_some_and(|n| n.has("READY", "1")) {
            panic!(
                "no READY=1 within {READY_TIMEOUT:?}; notifications {:?}\n{}",
                seen.iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
                daemon.daemon.log_tail()
            );
        }
        // READY=1 comes once the files are installed and checked, before the reloads and
        // smoke tests (issue 16): the boot reconcile's record says when it has finished.
        let (reached, what) = match boot {
            Boot::Finished => (
                support::wait_until(READY_TIMEOUT, || agent.status()["trigger"] == "boot"),
                "finish",
            ),
            Boot::Converged => (
                support::wait_until(READY_TIMEOUT, || {
                    let status = agent.status();
                    status["trigger"] == "boot" && status["outcome"] == "converged"
                }),
                "converge",
            ),
        };
        assert!(
            reached,
            "the boot reconcile did not {what} within {READY_TIMEOUT:?}\n{}",
            daemon.daemon.log_tail()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    notify.recv_until(Duration::from_millis(100), |_| false);
                }
            })
        };
        daemon.drain = Some((stop, reader));
        (daemon, ready)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.daemon.stop();
        if let Some((stop, reader)) = self.drain.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = reader.join();
        }
    }
}

pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// `ok` when a target is met, else `MISSED`.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "ok"
    } else {
        "MISSED"
    }
}

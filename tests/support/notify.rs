//! systemd's notify protocol, receiving end: a unix datagram socket in a temp dir whose path
//! a test passes to the daemon as `NOTIFY_SOCKET` (see sd_notify(3)). Each datagram is a
//! list of newline-separated `KEY=VALUE` assignments (`READY=1`, `STATUS=…`, `WATCHDOG=1`).

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Largest datagram read; sd_notify messages are short.
const MAX_DATAGRAM: usize = 64 * 1024;

/// One datagram: its assignments in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification(pub Vec<(String, String)>);

impl Notification {
    /// Parses a datagram; lines without `=` are kept with an empty value.
    pub fn parse(datagram: &[u8]) -> Self {
        let text = String::from_utf8_lossy(datagram);
        let pairs = text
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| match line.split_once('=') {
                Some((key, value)) => (key.to_string(), value.to_string()),
                None => (line.to_string(), String::new()),
            })
            .collect();
        Self(pairs)
    }

    /// The value of `key` in this datagram, if assigned.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the datagram assigns `key=value`.
    pub fn has(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }
}

/// A bound notify socket; removed with its temp dir on drop.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<Notification>,
    _dir: TempDir,
}

impl NotifySocket {
    /// Binds a fresh socket in a new temp dir.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the notify socket");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path)
            .unwrap_or_else(|err| panic!("binding notify socket {}: {err}", path.display()));
        Self {
            socket,
            path,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// The socket path, the value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives datagrams until one satisfies `done` or `timeout` passes. Returns every
    /// datagram received during this call (the satisfying one last, if any); check the last
    /// one to tell success from timeout.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Notification) -> bool,
    ) -> Vec<Notification> {
        let deadline = Instant::now() + timeout;
        let mut received = Vec::new();
        while let Some(notification) = self.recv_before(deadline) {
            let finished = done(&notification);
            received.push(notification);
            if finished {
                break;
            }
        }
        self.seen.extend(received.iter().cloned());
        received
    }

    /// Every datagram received so far by `recv_until`, in order.
    pub fn seen(&self) -> &[Notification] {
        &self.seen
    }

    fn recv_before(&self, deadline: Instant) -> Option<Notification> {
        let mut buffer = vec![0; MAX_DATAGRAM];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("setting a non-zero read timeout");
            match self.socket.recv(&mut buffer) {
                Ok(length) => return Some(Notification::parse(&buffer[..length])),
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => panic!("receiving on {}: {err}", self.path.display()),
            }
        }
    }
}

impl Default for NotifySocket {
    fn default() -> Self {
        Self::new()
    }
}

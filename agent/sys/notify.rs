//! systemd notifications (SPEC §7.8): `READY=1`, `STATUS=` and watchdog pings over
//! `NOTIFY_SOCKET`. Without that variable (manual runs) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tell systemd start-up is complete.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Set the one-line status `systemctl status` shows.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Tell systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Ping the watchdog.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval systemd expects pings within, if enabled for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}

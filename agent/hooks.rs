//! Position hooks (issue 4): when the host's database position changes (promoted to
//! master, demoted, or pointed at a new upstream), the roles' hook commands run after the
//! new configuration is applied and the services reloaded, once per change of the server's
//! position however many products share it (issue 14). Which hooks are due is a pure
//! decision over the previous and the new position; running them goes through `sys::exec`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::catalog::HookEvent;
use crate::render::Hook;
use crate::rolemap::resolve::{DbPosition, Position};
use crate::sys::exec;

/// State file holding the last position whose hooks succeeded.
pub const POSITION_FILE: &str = "position.json";

/// The events a position change raises, sorted.
pub fn events(old: Option<&DbPosition>, new: Option<&DbPosition>) -> BTreeSet<HookEvent> {
    let mut out = BTreeSet::new();
    let was_master = old.is_some_and(|p| p.position == Position::Master);
    let is_master = new.is_some_and(|p| p.position == Position::Master);
    if is_master && !was_master {
        out.insert(HookEvent::Promoted);
    }
    if was_master && !is_master {
        out.insert(HookEvent::Demoted);
    }
    let upstream = |p: Option<&DbPosition>| {
        p.and_then(|p| p.upstream.clone())
            .map(|u| (u.id, u.address, u.db_port))
    };
    if new.is_some_and(|p| p.upstream.is_some()) && upstream(old) != upstream(new) {
        out.insert(HookEvent::UpstreamChanged);
    }
    // One position per host, however many products share its server: a promotion of a
    // shared cluster raises each event once. A product joining or leaving the server is a
    // change of position too.
    let key = |p: Option<&DbPosition>| p.map(|p| (p.product_names().join(","), p.position));
    if !out.is_empty() || key(old) != key(new) {
        out.insert(HookEvent::PositionChanged);
    }
    out
}

/// The hooks of `hooks` due for `events`, in catalog order.
pub fn due<'a>(hooks: &'a [Hook], events: &BTreeSet<HookEvent>) -> Vec<&'a Hook> {
    hooks.iter().filter(|h| events.contains(&h.on)).collect()
}

/// The result of one hook, for the status record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookReport {
    /// Event.
    pub on: HookEvent,
    pub command: String,
    /// Success.
    pub ok: bool,
    /// Failure with the output tail.
    pub error: Option<String>,
    /// Duration.
    pub elapsed_ms: u64,
}

/// Run `hooks` in order, stopping at the first failure.
pub async fn run(hooks: &[&Hook]) -> Vec<HookReport> {
    let mut reports = Vec::new();
    for hook in hooks {
        let started = std::time::Instant::now();
        let result = exec::run_ok(&hook.command, hook.timeout).await;
        let elapsed_ms = crate::text::elapsed_ms(started);
        let error = result.err().map(|e| crate::text::chain(&e));
        match &error {
            None => info!(action = %hook.on, argv = %hook.command, elapsed_ms, "hook ran"),
            Some(e) => error!(action = %hook.on, argv = %hook.command, error = %e, "hook failed"),
        }
        let failed = error.is_some();
        reports.push(HookReport {
            on: hook.on,
            command: hook.command.to_string(),
            ok: !failed,
            error,
            elapsed_ms,
        });
        if failed {
            break;
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolemap::resolve::{Peer, ProductDatabase};

    use HookEvent::{Demoted, PositionChanged, Promoted, UpstreamChanged};

    fn pos(position: &str, upstream: Option<&str>) -> DbPosition {
        shared(position, upstream, &["videos"])
    }

    /// The position of a host holding the databases of `products` (one server).
    fn shared(position: &str, upstream: Option<&str>, products: &[&str]) -> DbPosition {
        let position: Position = serde_json::from_value(position.into()).unwrap();
        let only = match products {
            [one] => Some(ProductDatabase {
                product: one.to_string(),
                name: one.to_string(),
                backup_url: None,
            }),
            _ => None,
        };
        DbPosition {
            position,
            upstream: upstream.map(|id| Peer {
                id: id.into(),
                address: "10.0.0.1".into(),
                az: "a".into(),
                db_port: 3306,
            }),
            server_id: 1,
            read_only: position != Position::Master,
            products: products.iter().map(|p| p.to_string()).collect(),
            only,
        }
    }

    #[test]
    fn promotion_and_demotion() {
        let r = pos("replica", Some("db-1"));
        let m = pos("master", None);
        assert_eq!(
            events(Some(&r), Some(&m)),
            BTreeSet::from([Promoted, PositionChanged])
        );
        assert_eq!(
            events(Some(&m), Some(&r)),
            BTreeSet::from([Demoted, UpstreamChanged, PositionChanged])
        );
    }

    #[test]
    fn new_upstream_and_first_assignment() {
        assert_eq!(
            events(
                Some(&pos("replica", Some("db-1"))),
                Some(&pos("replica", Some("db-2")))
            ),
            BTreeSet::from([UpstreamChanged, PositionChanged])
        );
        assert_eq!(
            events(None, Some(&pos("replica", Some("db-1")))),
            BTreeSet::from([UpstreamChanged, PositionChanged])
        );
        assert_eq!(
            events(None, Some(&pos("master", None))),
            BTreeSet::from([Promoted, PositionChanged])
        );
    }

    #[test]
    fn no_change_no_events() {
        let r = pos("replica", Some("db-1"));
        assert!(events(Some(&r), Some(&r)).is_empty());
        assert!(events(None, None).is_empty());
    }

    /// Issue 14: a server shared by two products is one position; its promotion raises each
    /// event once, and a product joining the server is a position change, nothing more.
    #[test]
    fn a_shared_server_changes_position_once() {
        let both = ["blog", "videos"];
        let r = shared("replica", Some("db-1"), &both);
        let m = shared("master", None, &both);
        assert_eq!(
            events(Some(&r), Some(&m)),
            BTreeSet::from([Promoted, PositionChanged])
        );
        assert_eq!(
            events(Some(&pos("replica", Some("db-1"))), Some(&r)),
            BTreeSet::from([PositionChanged])
        );
        assert!(events(Some(&r), Some(&r.clone())).is_empty());
    }

    /// A `position.json` written before shared clusters (`product`, `name`, `backup_url`
    /// and no `products`) reads as the same position: an upgrade runs no hook.
    #[test]
    fn a_position_recorded_by_an_older_release_is_the_same_position() {
        let old = r#"{"product":"videos","name":"videos","position":"replica",
            "upstream":{"id":"db-1","address":"10.0.0.1","az":"a","db_port":3306},
            "server_id":1,"read_only":true,"backup_url":null}"#;
        let old: DbPosition = serde_json::from_str(old).unwrap();
        assert_eq!(old.product_names(), ["videos"]);
        assert!(events(Some(&old), Some(&pos("replica", Some("db-1")))).is_empty());
        let now = serde_json::to_value(shared("master", None, &["blog", "videos"])).unwrap();
        assert!(now.get("product").is_none(), "{now}");
        let back: DbPosition = serde_json::from_value(now).unwrap();
        assert_eq!(back, shared("master", None, &["blog", "videos"]));
    }
}

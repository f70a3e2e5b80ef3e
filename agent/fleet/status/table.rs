//! `fleet status` for a terminal, pure: the counts per product, role, zone and wave, then
//! the hosts that are not ok with the reason their record gives. Every string from the map
//! or a record is escaped (`text::printable`): a record is written by any host.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use super::{Counts, Fleet, Health, HostStatus};
use crate::text::{printable, VALUE_MAX};

/// Characters of a reason kept on its line.
const REASON_MAX: usize = 300;
/// Hosts named per list (silent, lagging, …); the rest are counted.
const NAMES_MAX: usize = 20;

/// The whole report.
pub fn table(fleet: &Fleet) -> String {
    let mut out = heading(fleet);
    let header = [
        "PRODUCT", "ROLE", "ZONE", "WAVE", "OK", "FAILED", "HELD", "HALTED", "WAITING", "LAGGING",
        "SILENT",
    ];
    let mut rows: Vec<Vec<String>> = fleet
        .rows
        .iter()
        .map(|r| {
            let wave = r.wave.map_or("-".to_string(), |k| k.to_string());
            let mut cells = vec![cell(&r.product), cell(&r.role), cell(&r.zone), wave];
            cells.extend(counts(&r.counts));
            cells
        })
        .collect();
    let mut total = vec![
        "all hosts".to_string(),
        String::new(),
        String::new(),
        String::new(),
    ];
    total.extend(counts(&fleet.totals));
    rows.push(total);
    out.push_str(&crate::rolemap::show::render(&header, &rows));
    out.push_str(&failing(fleet));
    out.push_str(&others(fleet));
    out.push_str(&summary(fleet));
    out
}

fn heading(fleet: &Fleet) -> String {
    let mut out = format!(
        "generation {} of {} (map at generation {}); reports under {}\n",
        fleet.generation,
        cell(&fleet.map_url),
        fleet.map_generation,
        cell(&fleet.report_url)
    );
    if let Some(r) = &fleet.rollout {
        let waves: Vec<String> = r.waves.iter().map(|p| format!("{p}%")).collect();
        let _ = writeln!(
            out,
            "rollout: waves {} opening every {} from {}; {} of {} open; halts past {} failed or silent",
            waves.join(", "),
            humantime::format_duration(Duration::from_secs(r.bake_secs)),
            rfc3339(r.opens_unix.first().copied().unwrap_or(0)),
            r.open,
            r.waves.len(),
            r.max_failed
        );
        if let Some(next) = r.opens_unix.get(r.open) {
            let _ = writeln!(out, "next: wave {} opens at {}", r.open, rfc3339(*next));
        }
    }
    out
}

fn counts(c: &Counts) -> Vec<String> {
    Health::ALL.iter().map(|h| c.get(*h).to_string()).collect()
}

/// Failed and halted hosts, one line each with the reason from their record.
fn failing(fleet: &Fleet) -> String {
    let mut out = String::new();
    let bad = |h: &&HostStatus| matches!(h.health, Health::Failed | Health::Halted);
    for h in fleet.hosts.iter().filter(bad) {
        let running = h
            .running
            .map_or(String::new(), |g| format!(", running generation {g}"));
        let wave = h.wave.map_or(String::new(), |k| format!(", wave {k}"));
        let reason = h.reason.as_deref().unwrap_or("record not read");
        let _ = writeln!(
            out,
            "  {} ({}{wave}{running}) {}: {}",
            cell(&h.id),
            cell(&h.zone),
            h.health.as_str(),
            printable(reason, REASON_MAX)
        );
    }
    if fleet.unread > 0 {
        let _ = writeln!(
            out,
            "  … and {} more whose records were not read",
            fleet.unread
        );
    }
    if out.is_empty() {
        return out;
    }
    format!("failing hosts:\n{out}")
}

/// Held, lagging and silent hosts of the map, and markers of hosts not in it, by name.
fn others(fleet: &Fleet) -> String {
    let mut out = String::new();
    for health in [
        Health::Held,
        Health::Waiting,
        Health::Lagging,
        Health::Silent,
    ] {
        let ids: Vec<&str> = fleet
            .hosts
            .iter()
            .filter(|h| h.health == health)
            .map(|h| h.id.as_str())
            .collect();
        if !ids.is_empty() {
            let _ = writeln!(out, "{} hosts: {}", health.as_str(), names(&ids));
        }
    }
    let strangers: Vec<String> = fleet
        .strangers
        .iter()
        .map(|s| format!("{} ({})", s.id, s.health.as_str()))
        .collect();
    if !strangers.is_empty() {
        let refs: Vec<&str> = strangers.iter().map(String::as_str).collect();
        let _ = writeln!(out, "not in the map: {}", names(&refs));
    }
    out
}

fn names(ids: &[&str]) -> String {
    let shown: Vec<String> = ids.iter().take(NAMES_MAX).map(|id| cell(id)).collect();
    match ids.len().checked_sub(NAMES_MAX).filter(|more| *more > 0) {
        Some(more) => format!("{} … and {more} more", shown.join(", ")),
        None => shown.join(", "),
    }
}

fn summary(fleet: &Fleet) -> String {
    let t = &fleet.totals;
    let mut parts = vec![format!("{} of {} hosts ok", t.ok, t.total())];
    for health in Health::ALL.into_iter().skip(1) {
        let n = t.get(health);
        if n > 0 {
            parts.push(format!("{n} {}", health.as_str()));
        }
    }
    format!("{}\n", parts.join(", "))
}

fn cell(s: &str) -> String {
    printable(s, VALUE_MAX)
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

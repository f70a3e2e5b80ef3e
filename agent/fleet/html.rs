//! `fleet status --html` (SPEC §9.1), pure: the fleet as one self-contained page (inline
//! CSS; no script, font, image or any other request). Per product: its hosts in one panel
//! per zone, its database chain, and for each host its generation, wave and health, each
//! health spelled out next to its colour (no legend needed). Every string is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use super::status::{Fleet, Health, HostStatus};
use crate::rolemap::types::Database;
use crate::rolemap::RoleMap;

/// Characters of a failure reason shown on a host card.
const REASON_MAX: usize = 240;

/// The page.
pub fn page(map: &RoleMap, fleet: &Fleet) -> String {
    let mut out = String::with_capacity(4096 + fleet.hosts.len() * 400);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>rolecall fleet: generation {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        fleet.generation
    );
    out.push_str(&header(fleet));
    out.push_str(&attention(fleet));
    let by_id: BTreeMap<&str, &HostStatus> =
        fleet.hosts.iter().map(|h| (h.id.as_str(), h)).collect();
    for (name, product) in &map.products {
        let hosts: Vec<&HostStatus> = fleet
            .hosts
            .iter()
            .filter(|h| h.products.contains(name))
            .collect();
        let chain = product.database.as_ref().map(|db| database(db, &by_id));
        out.push_str(&section(name, &product.domain, &hosts, chain, fleet));
    }
    let loose: Vec<&HostStatus> = fleet
        .hosts
        .iter()
        .filter(|h| h.products.is_empty())
        .collect();
    if !loose.is_empty() {
        out.push_str(&section("hosts without a product", "", &loose, None, fleet));
    }
    out.push_str(&strangers(fleet));
    out.push_str("</body>\n</html>\n");
    out
}

/// The generation, the sources, the verdict in words, the totals and the rollout.
fn header(fleet: &Fleet) -> String {
    let (class, verdict) = verdict(fleet);
    let mut out = format!(
        "<header>\n<h1>Fleet at generation {}</h1>\n<p class=\"meta\">map {} · reports {} · \
         read {}</p>\n<p class=\"verdict {class}\">{verdict}</p>\n<ul class=\"totals\">",
        fleet.generation,
        esc(&fleet.map_url),
        esc(&fleet.report_url),
        time(fleet.at_unix)
    );
    for health in Health::ALL {
        let n = fleet.totals.get(health);
        if n > 0 || health == Health::Ok {
            let _ = write!(
                out,
                "<li class=\"h-{0}\">{n} {1}</li>",
                health.as_str(),
                label(health)
            );
        }
    }
    out.push_str("</ul>\n");
    out.push_str(&rollout(fleet));
    out.push_str("</header>\n");
    out
}

fn verdict(fleet: &Fleet) -> (&'static str, String) {
    let t = &fleet.totals;
    let g = fleet.generation;
    match fleet.verdict() {
        super::status::Verdict::AllOk => {
            ("v-ok", format!("All {} on generation {g}.", hosts(t.ok)))
        }
        super::status::Verdict::Lagging => (
            "v-lagging",
            format!(
                "{} of {} not on generation {g} yet; none failed.",
                t.total() - t.ok,
                hosts(t.total())
            ),
        ),
        super::status::Verdict::Failing => {
            let parts: Vec<String> = [(t.failed, "failed"), (t.halted, "halted")]
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{} {what}", hosts(*n)))
                .collect();
            (
                "v-failing",
                format!("{} on generation {g}.", parts.join(", ")),
            )
        }
    }
}

/// `1 host`, `2 hosts`.
fn hosts(n: usize) -> String {
    if n == 1 {
        "1 host".to_string()
    } else {
        format!("{n} hosts")
    }
}

/// The waves, each open or with its opening time.
fn rollout(fleet: &Fleet) -> String {
    let Some(r) = &fleet.rollout else {
        return "<p class=\"rollout\">No staged rollout: every host applies this generation at once.</p>\n".to_string();
    };
    let mut out = format!(
        "<div class=\"rollout\"><span>Staged rollout, a wave every {}; it halts past {} failed or silent host(s).</span><ol class=\"waves\">",
        humantime::format_duration(Duration::from_secs(r.bake_secs)),
        r.max_failed
    );
    for (k, (percent, opens)) in r.waves.iter().zip(&r.opens_unix).enumerate() {
        let (class, when) = match k < r.open {
            true => ("open", format!("open since {}", time(*opens))),
            false => ("closed", format!("opens {}", time(*opens))),
        };
        let _ = write!(
            out,
            "<li class=\"{class}\"><b>wave {k}</b> up to {percent}% of hosts · {when}</li>"
        );
    }
    out.push_str("</ol></div>\n");
    out
}

/// Failed and halted hosts with their reasons, first, so nobody scrolls for them.
fn attention(fleet: &Fleet) -> String {
    let bad: Vec<&HostStatus> = fleet
        .hosts
        .iter()
        .filter(|h| matches!(h.health, Health::Failed | Health::Halted))
        .collect();
    if bad.is_empty() {
        return String::new();
    }
    let mut out = String::from("<section class=\"attention\">\n<h2>Needs attention</h2>\n<ul>\n");
    for h in bad {
        let _ = writeln!(
            out,
            "<li>{} <b>{}</b> (zone {}) — {}</li>",
            badge(h.health),
            esc(&h.id),
            esc(&h.zone),
            esc(&cut(
                h.reason.as_deref().unwrap_or("record not read"),
                REASON_MAX
            ))
        );
    }
    if fleet.unread > 0 {
        let _ = writeln!(
            out,
            "<li>… and {} more whose records were not read</li>",
            fleet.unread
        );
    }
    out.push_str("</ul>\n</section>\n");
    out
}

/// A product: its counts, database chain and zone panels.
fn section(
    name: &str,
    domain: &str,
    hosts: &[&HostStatus],
    chain: Option<String>,
    fleet: &Fleet,
) -> String {
    let mut out = format!("<section class=\"product\">\n<h2>{}", esc(name));
    if !domain.is_empty() {
        let _ = write!(out, " <span class=\"domain\">{}</span>", esc(domain));
    }
    out.push_str("</h2>\n");
    out.push_str(&summary(hosts));
    out.push_str(&chain.unwrap_or_default());
    let mut zones: BTreeMap<&str, Vec<&HostStatus>> = BTreeMap::new();
    for h in hosts {
        zones.entry(h.zone.as_str()).or_default().push(h);
    }
    // The hosts that need a look first in each panel, then by id.
    let severity = |h: &HostStatus| Health::ALL.len() - severity_rank(h.health);
    zones
        .values_mut()
        .for_each(|m| m.sort_by_key(|h| (severity(h), h.id.clone())));
    out.push_str("<div class=\"zones\">\n");
    for (zone, members) in zones {
        let _ = writeln!(
            out,
            "<div class=\"zone\"><h3>zone {} <small>{} host(s)</small></h3>",
            esc(zone),
            members.len()
        );
        for h in members {
            out.push_str(&card(h, fleet));
        }
        out.push_str("</div>\n");
    }
    out.push_str("</div>\n</section>\n");
    out
}

fn summary(hosts: &[&HostStatus]) -> String {
    let mut counts: BTreeMap<Health, usize> = BTreeMap::new();
    for h in hosts {
        *counts.entry(h.health).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(health, n)| {
            format!(
                "<span class=\"count h-{}\">{n} {}</span>",
                health.as_str(),
                label(*health)
            )
        })
        .collect();
    format!("<p class=\"summary\">{}</p>\n", parts.join(" "))
}

/// One host: id, health in words and colour, roles and address, generation and wave.
fn card(h: &HostStatus, fleet: &Fleet) -> String {
    let mut out = format!(
        "<div class=\"host h-{}\"><div class=\"top\"><span class=\"id\">{}</span>{}</div>\
         <div class=\"facts\">{} · {}</div><div class=\"gen\">{}</div>",
        h.health.as_str(),
        esc(&h.id),
        badge(h.health),
        esc(&h.roles.join(", ")),
        esc(&h.address),
        esc(&generation_line(h, fleet))
    );
    if let Some(reason) = &h.reason {
        let _ = write!(
            out,
            "<div class=\"why\">{}</div>",
            esc(&cut(reason, REASON_MAX))
        );
    }
    out.push_str("</div>\n");
    out
}

/// `generation 42 · wave 1`, in words fitting the host's health.
fn generation_line(h: &HostStatus, fleet: &Fleet) -> String {
    let g = fleet.generation;
    let running = h.running.map_or(String::new(), |r| format!(", runs {r}"));
    let generation = match h.health {
        Health::Ok => format!("generation {g}"),
        Health::Failed => format!("generation {g} failed{running}"),
        Health::Held => "held on an earlier generation".to_string(),
        Health::Halted => format!("halted before generation {g}{running}"),
        Health::Waiting => "says it is not in the map".to_string(),
        Health::Lagging => format!("not on generation {g} yet"),
        Health::Silent => "no report lately".to_string(),
    };
    match h.wave {
        None => generation,
        Some(k) => format!("{generation} · wave {k}{}", wave_opening(k, fleet)),
    }
}

fn wave_opening(k: usize, fleet: &Fleet) -> String {
    match &fleet.rollout {
        Some(r) if k >= r.open => r
            .opens_unix
            .get(k)
            .map_or(String::new(), |t| format!(", opens {}", time(*t))),
        _ => String::new(),
    }
}

/// `master → replica → replica`, and the backup following the master.
fn database(db: &Database, by_id: &BTreeMap<&str, &HostStatus>) -> String {
    let node = |id: &str, position: &str| {
        let health = by_id.get(id).map(|h| h.health);
        let badge = health.map_or(String::new(), badge);
        let class = health.map_or("unknown", Health::as_str);
        format!(
            "<span class=\"node h-{class}\"><small>{position}</small> <b>{}</b> {badge}</span>",
            esc(id)
        )
    };
    let mut out = format!(
        "<div class=\"db\"><h3>database {}</h3><div class=\"chain\">",
        esc(&db.name)
    );
    out.push_str(&node(&db.master, "master"));
    for r in &db.replicas {
        out.push_str("<span class=\"arrow\">→</span>");
        out.push_str(&node(r, "replica"));
    }
    out.push_str("</div>");
    if let Some(b) = &db.backup {
        let _ = write!(
            out,
            "<div class=\"chain backup\"><span class=\"arrow\">master →</span>{}</div>",
            node(b, "backup")
        );
    }
    out.push_str("</div>\n");
    out
}

fn strangers(fleet: &Fleet) -> String {
    if fleet.strangers.is_empty() {
        return String::new();
    }
    let mut out = String::from("<section class=\"product\"><h2>Reporting hosts not in this map</h2><div class=\"zones\"><div class=\"zone\">");
    for s in &fleet.strangers {
        let _ = writeln!(
            out,
            "<div class=\"host h-{}\"><div class=\"top\"><span class=\"id\">{}</span>{}</div></div>",
            s.health.as_str(),
            esc(&s.id),
            badge(s.health)
        );
    }
    out.push_str("</div></div></section>\n");
    out
}

/// How urgent a health is: failed and halted first, ok last.
fn severity_rank(health: Health) -> usize {
    match health {
        Health::Failed => 7,
        Health::Halted => 6,
        Health::Silent => 5,
        Health::Lagging => 4,
        Health::Waiting => 3,
        Health::Held => 2,
        Health::Ok => 1,
    }
}

/// The health as a coloured badge that says it in words too.
fn badge(health: Health) -> String {
    format!(
        "<span class=\"badge h-{}\">{}</span>",
        health.as_str(),
        label(health)
    )
}

/// The health in words, with a symbol for a quick scan.
fn label(health: Health) -> &'static str {
    match health {
        Health::Ok => "✓ ok",
        Health::Failed => "✗ failed",
        Health::Held => "◷ held",
        Health::Halted => "■ halted",
        Health::Waiting => "… waiting",
        Health::Lagging => "↻ lagging",
        Health::Silent => "? silent",
    }
}

fn time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// `s` safe in HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { --ok:#1a7f37; --failed:#cf222e; --held:#0969da; --halted:#9a3412; --waiting:#8250df; --lagging:#9a6700; --silent:#57606a; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: #f6f8fa; }
h1 { margin: 0 0 4px; font-size: 24px; }
h2 { margin: 0 0 8px; font-size: 19px; }
h3 { margin: 0 0 8px; font-size: 14px; color: #424a53; }
small { color: #656d76; font-weight: normal; }
header, section { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 16px 20px; margin-bottom: 16px; }
.meta { margin: 0 0 10px; color: #656d76; word-break: break-all; }
.verdict { margin: 0 0 10px; padding: 8px 12px; border-radius: 6px; font-weight: 600; font-size: 15px; }
.v-ok { background: #dafbe1; color: #116329; } .v-lagging { background: #fff8c5; color: #7d4e00; } .v-failing { background: #ffebe9; color: #a40e26; }
.totals { list-style: none; margin: 0 0 10px; padding: 0; display: flex; flex-wrap: wrap; gap: 8px; }
.totals li, .count { padding: 3px 10px; border-radius: 999px; color: #fff; font-weight: 600; }
.count { font-size: 12px; margin-right: 4px; }
.rollout { margin: 0; color: #424a53; }
.waves { list-style: none; padding: 0; margin: 8px 0 0; display: flex; flex-wrap: wrap; gap: 6px; }
.waves li { padding: 4px 10px; border-radius: 6px; border: 1px solid #d0d7de; }
.waves li.open { background: #dafbe1; border-color: #4ac26b; } .waves li.closed { background: #f6f8fa; color: #656d76; border-style: dashed; }
.attention { border-color: #ff8182; background: #fff5f5; }
.attention ul { margin: 0; padding-left: 0; list-style: none; } .attention li { margin: 6px 0; }
.domain { font-size: 14px; color: #656d76; font-weight: normal; margin-left: 6px; }
.summary { margin: 0 0 12px; }
.db { margin: 0 0 14px; padding: 10px 12px; background: #f6f8fa; border-radius: 6px; }
.chain { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin-top: 4px; }
.arrow { color: #656d76; font-weight: 600; }
.node { display: inline-flex; align-items: center; gap: 6px; padding: 4px 8px; background: #fff; border: 1px solid #d0d7de; border-left-width: 5px; border-radius: 6px; }
.zones { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: 12px; }
.zone { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px; background: #fbfcfd; }
.host { background: #fff; border: 1px solid #d0d7de; border-left-width: 6px; border-radius: 6px; padding: 6px 9px; margin-bottom: 8px; }
.host .top { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
.host .id { font-weight: 600; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; word-break: break-all; }
.host .facts, .host .gen { color: #424a53; font-size: 12.5px; }
.host .why { margin-top: 4px; padding: 4px 6px; background: #ffebe9; border-radius: 4px; font-size: 12px; color: #82071e; word-break: break-word; }
.badge { white-space: nowrap; padding: 1px 8px; border-radius: 999px; color: #fff; font-size: 12px; font-weight: 600; }
.h-ok { border-left-color: var(--ok); } .badge.h-ok, .totals .h-ok, .count.h-ok { background: var(--ok); }
.h-failed { border-left-color: var(--failed); } .badge.h-failed, .totals .h-failed, .count.h-failed { background: var(--failed); }
.h-held { border-left-color: var(--held); } .badge.h-held, .totals .h-held, .count.h-held { background: var(--held); }
.h-halted { border-left-color: var(--halted); } .badge.h-halted, .totals .h-halted, .count.h-halted { background: var(--halted); }
.h-waiting { border-left-color: var(--waiting); } .badge.h-waiting, .totals .h-waiting, .count.h-waiting { background: var(--waiting); }
.h-lagging { border-left-color: var(--lagging); } .badge.h-lagging, .totals .h-lagging, .count.h-lagging { background: var(--lagging); }
.h-silent { border-left-color: var(--silent); } .badge.h-silent, .totals .h-silent, .count.h-silent { background: var(--silent); }
.host.h-failed, .host.h-halted { background: #fff8f8; }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::status::{join, Seen};
    use crate::fleet::State;
    use std::time::SystemTime;

    const MAP: &str = "schema = 1\ngeneration = 7\n\n[products.shop]\ndomain = \"shop.example.com\"\ndocroot = \"/srv/shop\"\n\n[products.shop.database]\nname = \"shop\"\nmaster = \"db-1\"\nreplicas = [\"db-2\", \"db-3\"]\nbackup = \"db-4\"\nbackup_url = \"s3://b/shop/\"\n\n[hosts.db-1]\naddress = \"10.0.0.1\"\naz = \"a\"\nroles = [\"db\"]\n\n[hosts.db-2]\naddress = \"10.0.0.2\"\naz = \"b\"\nroles = [\"db\"]\n\n[hosts.db-3]\naddress = \"10.0.0.3\"\naz = \"c\"\nroles = [\"db\"]\n\n[hosts.db-4]\naddress = \"10.0.0.4\"\naz = \"c\"\nroles = [\"db\", \"db-backup\"]\n\n[hosts.web-1]\naddress = \"10.0.0.5\"\naz = \"a\"\nroles = [\"web\"]\nproducts = [\"shop\"]\n\n[hosts.mon-1]\naddress = \"10.0.0.6\"\naz = \"b\"\nroles = [\"monitor\"]\n";

    fn fleet() -> (RoleMap, Fleet) {
        let map = crate::rolemap::load(MAP.as_bytes()).unwrap();
        let markers = [
            ("db-1", State::Ok),
            ("db-2", State::Fail),
            ("web-1", State::Ok),
            ("x<y", State::Waiting),
        ];
        let seen = Seen {
            markers: markers
                .iter()
                .map(|(id, s)| ((*id).to_string(), *s))
                .collect(),
            ..Seen::default()
        };
        let mut fleet = join(&map, 7, &seen, SystemTime::now(), Duration::from_secs(3600));
        fleet.map_url = "s3://b/map.toml?a=<script>".into();
        let db2 = fleet.hosts.iter_mut().find(|h| h.id == "db-2").unwrap();
        db2.reason = Some("check failed: <b>\"quoted\" & 'single'</b>".into());
        (map, fleet)
    }

    #[test]
    fn the_page_shows_chain_zones_and_health_in_words() {
        let (map, fleet) = fleet();
        let page = page(&map, &fleet);
        assert!(page.contains("master</small> <b>db-1</b>"), "{page}");
        let db = &page[page.find("<div class=\"db\">").unwrap()..];
        let at = |id: &str| db.find(&format!("<b>{id}</b>")).unwrap();
        let chain = at("db-1") < at("db-2") && at("db-2") < at("db-3") && at("db-3") < at("db-4");
        assert!(chain, "master → replica → replica in order");
        assert!(page.contains("backup</small> <b>db-4</b>"));
        for zone in ["zone a", "zone b", "zone c"] {
            assert!(page.contains(zone), "{zone}");
        }
        assert!(page.contains("✗ failed") && page.contains("? silent") && page.contains("✓ ok"));
        assert!(page.contains("hosts without a product"));
        assert!(page.contains("Reporting hosts not in this map"));
        assert!(page.contains("generation 7 failed"));
    }

    #[test]
    fn the_page_escapes_strings_and_loads_nothing() {
        let (map, fleet) = fleet();
        let page = page(&map, &fleet);
        assert!(
            page.contains("&lt;b&gt;&quot;quoted&quot; &amp; &#39;single&#39;&lt;/b&gt;"),
            "{page}"
        );
        assert!(page.contains("x&lt;y"));
        assert!(!page.contains("<script"));
        for needle in ["http://", "https://", "src=", "@import", "url(", "<link"] {
            assert!(!page.contains(needle), "{needle}");
        }
    }
}

//! Map validation (SPEC §5): every rule broken, each with its TOML path. Pure.
//! Strings that reach templates are checked against strict character sets so that no
//! value can end a directive and start another (no whitespace, quotes, newlines, `..`).

use foldhash::{HashMap, HashMapExt, HashSet};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::roles;
use super::types::{Database, Host, Product, RoleMap, Rollout, Unknown};

/// The schema version this agent reads.
pub const SCHEMA: i64 = 1;

/// One problem in a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// TOML path of the offending key, e.g. `products.videos.database.master`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// `a: x; b: y` for an error's one-line text.
pub fn summary(issues: &[Issue]) -> String {
    let texts: Vec<String> = issues.iter().map(Issue::to_string).collect();
    texts.join("; ")
}

/// A map string in a message: quoted, control characters escaped, length bounded
/// (issue 15: a 15 MB value must not make a 15 MB message).
pub fn q(s: &str) -> String {
    crate::text::quoted(s)
}

/// Quote a TOML key for a path when it is not a bare key (bounded like [`q`]).
pub fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare && k.len() <= crate::text::VALUE_MAX {
        k.to_string()
    } else {
        q(k)
    }
}

/// Every problem of `map`; empty means valid.
pub fn validate(map: &RoleMap) -> Vec<Issue> {
    let mut v = Validator::default();
    if map.schema != SCHEMA {
        v.push(
            "schema",
            format!(
                "unsupported schema {} (this agent reads {SCHEMA})",
                map.schema
            ),
        );
        return v.issues;
    }
    if map.generation < 0 {
        v.push(
            "generation",
            "missing or negative; it must be a whole number raised by every publish",
        );
    }
    v.unknown(String::new, &map.unknown);
    for (name, product) in &map.products {
        v.product(map, name, product);
    }
    // Hosts name some 30,000 products in a 10,000-host map: a hash set beats the BTreeMap.
    let products: HashSet<&str> = map.products.keys().map(String::as_str).collect();
    for (id, host) in &map.hosts {
        v.host(&products, id, host);
    }
    v.addresses(map);
    v.positions(map);
    if let Some(rollout) = &map.rollout {
        v.rollout(rollout);
    }
    v.issues.extend(super::accounts::validate(map));
    v.issues
}

/// The map's rules (the database position rules are in `positions.rs`) and the issues they
/// found.
#[derive(Default)]
pub(super) struct Validator {
    issues: Vec<Issue>,
}

impl Validator {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Every unknown key under the table at `at` (empty for the top level).
    fn unknown(&mut self, at: impl Fn() -> String, unknown: &Unknown) {
        for k in unknown.keys() {
            let prefix = at();
            let dot = if prefix.is_empty() { "" } else { "." };
            self.push(format!("{prefix}{dot}{}", key(k)), "unknown key");
        }
    }

    /// Checks `value` against `rule`. Paths are built only for a problem: a valid
    /// 10,000-host map has some 60,000 of them.
    fn check(&mut self, path: impl FnOnce() -> String, value: &str, rule: Rule) {
        if value.is_empty() {
            self.push(path(), "required");
        } else if let Err(why) = rule.check(value) {
            self.push(path(), format!("{} {why}", q(value)));
        }
    }

    fn product(&mut self, map: &RoleMap, name: &str, p: &Product) {
        let at = || format!("products.{}", key(name));
        self.check(at, name, Rule::Identifier);
        self.unknown(at, &p.unknown);
        self.check(|| at() + ".domain", &p.domain, Rule::Domain);
        for (i, alias) in p.aliases.iter().enumerate() {
            self.check(|| format!("{}.aliases[{i}]", at()), alias, Rule::Alias);
        }
        self.check(|| at() + ".docroot", &p.docroot, Rule::Path);
        self.check(|| at() + ".health_path", &p.health_path, Rule::UrlPath);
        if let Some(db) = &p.database {
            self.database(map, || at() + ".database", db);
        }
        for (name, text) in &p.secrets {
            let path = || format!("{}.secrets.{}", at(), key(name));
            self.check(path, name, Rule::Identifier);
            if let Err(why) = crate::secrets::reference::Reference::parse(text) {
                self.push(path(), format!("{} {why}", q(text)));
            }
        }
    }

    fn database(&mut self, map: &RoleMap, at: impl Fn() -> String, db: &Database) {
        self.unknown(&at, &db.unknown);
        self.check(|| at() + ".name", &db.name, Rule::DbName);
        self.reference(map, || at() + ".master", &db.master, &[roles::DB]);
        for (i, r) in db.replicas.iter().enumerate() {
            let path = || format!("{}.replicas[{i}]", at());
            self.reference(map, path, r, &[roles::DB]);
        }
        if let Some(b) = &db.backup {
            self.reference(map, || at() + ".backup", b, &[roles::DB, roles::DB_BACKUP]);
            if db.backup_url.is_none() {
                self.push(at() + ".backup_url", "required when a backup host is set");
            }
        }
        if let Some(url) = &db.backup_url {
            self.check(|| at() + ".backup_url", url, Rule::S3Url);
        }
        for (i, r) in db.removed.iter().enumerate() {
            self.check(|| format!("{}.removed[{i}]", at()), r, Rule::HostId);
        }
    }

    fn reference(&mut self, map: &RoleMap, path: impl Fn() -> String, id: &str, roles: &[&str]) {
        if id.is_empty() {
            return self.push(path(), "required");
        }
        let Some(host) = map.hosts.get(id) else {
            return self.push(path(), format!("host {} is not in [hosts]", q(id)));
        };
        for role in roles {
            if !host.roles.iter().any(|r| r == role) {
                self.push(
                    path(),
                    format!(
                        "host {} lacks the role {} this position needs",
                        q(id),
                        q(role)
                    ),
                );
            }
        }
    }

    fn host(&mut self, products: &HashSet<&str>, id: &str, h: &Host) {
        let at = || format!("hosts.{}", key(id));
        self.check(at, id, Rule::HostId);
        self.unknown(at, &h.unknown);
        self.check(|| at() + ".address", &h.address, Rule::Address);
        self.check(|| at() + ".az", &h.az, Rule::Identifier);
        for (i, role) in h.roles.iter().enumerate() {
            self.check(|| format!("{}.roles[{i}]", at()), role, Rule::Identifier);
            // A host has a handful of roles: a scan beats a set.
            if h.roles[..i].contains(role) {
                self.push(
                    format!("{}.roles[{i}]", at()),
                    format!("role {} listed twice", q(role)),
                );
            }
        }
        for (i, product) in h.products.iter().enumerate() {
            if !products.contains(product.as_str()) {
                self.push(
                    format!("{}.products[{i}]", at()),
                    format!("product {} is not in [products]", q(product)),
                );
            }
        }
    }

    /// `[rollout]` (SPEC §9.2): the checks live with the schedule they produce.
    fn rollout(&mut self, rollout: &Rollout) {
        self.unknown(|| "rollout".to_string(), &rollout.unknown);
        if let Err(problems) = crate::fleet::waves::Schedule::check(rollout) {
            for p in problems {
                self.push(format!("rollout.{}", p.key), p.message);
            }
        }
    }

    fn addresses(&mut self, map: &RoleMap) {
        let mut by_address: HashMap<&str, &str> = HashMap::with_capacity(map.hosts.len());
        for (id, h) in &map.hosts {
            if h.address.is_empty() {
                continue;
            }
            if let Some(first) = by_address.insert(&h.address, id) {
                self.push(
                    format!("hosts.{}.address", key(id)),
                    format!("{} is also the address of host {}", q(&h.address), q(first)),
                );
            }
        }
    }
}

/// Follow each host's upstream; a host met twice on one walk is a cycle.
pub(crate) fn find_cycle(db: &Database) -> Option<String> {
    let upstream = upstreams(db);
    for start in upstream.keys() {
        let mut seen = BTreeSet::new();
        let mut at = *start;
        while let Some(next) = upstream.get(at) {
            if !seen.insert(at) {
                return Some(at.to_string());
            }
            at = next;
        }
    }
    None
}

/// Host → the host it replicates from. Later entries win, as a server has one source.
pub(crate) fn upstreams(db: &Database) -> BTreeMap<&str, &str> {
    let mut up = BTreeMap::new();
    let mut previous = db.master.as_str();
    for r in &db.replicas {
        up.insert(r.as_str(), previous);
        previous = r.as_str();
    }
    if let Some(b) = &db.backup {
        up.insert(b.as_str(), db.master.as_str());
    }
    up
}

/// Character-level patterns for strings that reach templates.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// `[a-z0-9][a-z0-9_-]*`, at most 63: product, role and AZ names.
    Identifier,
    /// `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128, no `..`: host ids.
    HostId,
    /// DNS name: lowercase labels of `[a-z0-9-]`, dots between.
    Domain,
    /// A domain, optionally starting with `*.`.
    Alias,
    /// IPv4/IPv6 literal or DNS name.
    Address,
    /// Absolute path of `[A-Za-z0-9._/-]`, no `..` or `//`.
    Path,
    /// URL path starting with `/`, safe characters only.
    UrlPath,
    /// MySQL schema name `[A-Za-z0-9_]`, at most 64.
    DbName,
    /// `s3://bucket/prefix` with safe characters.
    S3Url,
}

impl Rule {
    /// `Ok` when `v` matches, else why not.
    pub fn check(self, v: &str) -> Result<(), &'static str> {
        let ok = match self {
            Rule::Identifier => ident(v, 63, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
            }),
            Rule::HostId => {
                ident(v, 128, |c| c.is_ascii_alphanumeric() || ".-_".contains(c))
                    && !v.contains("..")
            }
            Rule::Domain => domain(v),
            Rule::Alias => domain(v.strip_prefix("*.").unwrap_or(v)),
            Rule::Address => v.parse::<std::net::IpAddr>().is_ok() || domain(v),
            Rule::Path => {
                path_like(v, |c| c.is_ascii_alphanumeric() || "._/-".contains(c))
                    && !v.contains("//")
            }
            Rule::UrlPath => {
                path_like(v, |c| c.is_ascii_alphanumeric() || "._~/?=&%+-".contains(c))
            }
            Rule::DbName => ident(v, 64, |c| c.is_ascii_alphanumeric() || c == '_'),
            Rule::S3Url => v.strip_prefix("s3://").is_some_and(|rest| {
                !rest.starts_with('/')
                    && !rest.is_empty()
                    && path_like(&format!("/{rest}"), |c| {
                        c.is_ascii_alphanumeric() || "._/-".contains(c)
                    })
            }),
        };
        if ok {
            Ok(())
        } else {
            Err(self.expectation())
        }
    }

    fn expectation(self) -> &'static str {
        match self {
            Rule::Identifier => "must be lowercase letters, digits, '-' or '_' (at most 63)",
            Rule::HostId => "must be letters, digits, '.', '-' or '_' without '..' (at most 128)",
            Rule::Domain => "must be a lowercase DNS name",
            Rule::Alias => "must be a lowercase DNS name, optionally starting with '*.'",
            Rule::Address => "must be an IP address or a lowercase DNS name",
            Rule::Path => {
                "must be an absolute path of letters, digits, '.', '_', '-' and '/' without '..'"
            }
            Rule::UrlPath => "must be a URL path starting with '/' without spaces, quotes or '..'",
            Rule::DbName => "must be letters, digits or '_' (at most 64)",
            Rule::S3Url => "must be s3://bucket/prefix with letters, digits, '.', '_', '-' and '/'",
        }
    }
}

fn ident(v: &str, max: usize, allowed: impl Fn(char) -> bool) -> bool {
    v.len() <= max
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().all(allowed)
}

fn domain(v: &str) -> bool {
    v.len() <= 253
        && v.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn path_like(v: &str, allowed: impl Fn(char) -> bool) -> bool {
    v.starts_with('/') && !v.contains("..") && v.chars().all(allowed)
}

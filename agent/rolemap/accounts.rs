//! Accounts in the role map (SPEC §10): the rules for `[products.P.groups.G]` and
//! `[products.P.users.U]` (every problem with its TOML path), `map lint`'s id-range advice,
//! and the accounts a product shows templates (`product.user`, `product.users`, …). Pure.
//!
//! Decisions: a user's primary `group` is declared in its own product; a supplementary
//! group is the product's own or a group no product declares (a system group such as
//! `www-data`, which the host must already have); ids are fleet-wide, so one name declared
//! in two products must be declared identically, and no id may belong to two names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lint::{Kind, Warning};
use super::types::{Group, Product, RoleMap, User};
use super::validate::{key, q, Issue};

/// Longest account name (`useradd`'s limit on Debian is 32).
pub const NAME_MAX: usize = 32;

/// Longest home or shell path accepted.
const PATH_MAX: usize = 1024;

/// Highest id accepted: `(uid_t) -1` is reserved.
const ID_MAX: i64 = 4_294_967_294;

/// `^[a-z_][a-z0-9_-]{0,31}$`: what `useradd` accepts everywhere, and nothing a passwd line
/// or a template could be tricked with.
pub fn is_account_name(v: &str) -> bool {
    let mut chars = v.chars();
    v.len() <= NAME_MAX
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// An absolute path without `.`, `..`, `//` or a trailing `/`, of `[A-Za-z0-9._-]` and `/`
/// (no `:`, which separates passwd fields, and no whitespace).
pub fn is_clean_path(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('/') else {
        return false;
    };
    v.len() <= PATH_MAX
        && (rest.is_empty()
            || rest
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
}

const NAME_RULE: &str = "must match ^[a-z_][a-z0-9_-]{0,31}$";
const PATH_RULE: &str = "must be a clean absolute path of letters, digits, '.', '_', '-' and '/' (no '.', '..', '//' or trailing '/')";

/// Every problem of the map's accounts.
pub fn validate(map: &RoleMap) -> Vec<Issue> {
    let mut v = Checker::default();
    for (name, product) in &map.products {
        let at = format!("products.{}", key(name));
        for (group, g) in &product.groups {
            v.group(&format!("{at}.groups.{}", key(group)), group, g);
        }
        for (user, u) in &product.users {
            v.user(
                map,
                name,
                product,
                &format!("{at}.users.{}", key(user)),
                (user, u),
            );
        }
    }
    v.issues
}

/// Where a name or id was first seen, for "also declared at …" messages.
#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
    groups: BTreeMap<String, (String, Group)>,
    users: BTreeMap<String, (String, User)>,
    gids: BTreeMap<i64, (String, String)>,
    uids: BTreeMap<i64, (String, String)>,
}

impl Checker {
    fn push(&mut self, path: String, message: String) {
        self.issues.push(Issue { path, message });
    }

    fn unknown(&mut self, at: &str, unknown: &super::types::Unknown) {
        for k in unknown.keys() {
            self.push(format!("{at}.{}", key(k)), "unknown key".to_string());
        }
    }

    fn name(&mut self, path: String, name: &str) {
        if name.is_empty() {
            self.push(path, "required".to_string());
        } else if !is_account_name(name) {
            self.push(path, format!("{} {NAME_RULE}", q(name)));
        }
    }

    fn path(&mut self, path: String, value: &str) {
        if value.is_empty() {
            self.push(path, "required".to_string());
        } else if !is_clean_path(value) {
            self.push(path, format!("{} {PATH_RULE}", q(value)));
        }
    }

    fn id(&mut self, path: String, id: i64) -> bool {
        match id {
            -1 => self.push(path, "required".to_string()),
            0 => self.push(path, "0 is root's; rolecall never manages root".to_string()),
            1..=ID_MAX => return true,
            _ => self.push(path, format!("{id} is not an id from 1 to {ID_MAX}")),
        }
        false
    }

    fn group(&mut self, at: &str, name: &str, g: &Group) {
        self.name(at.to_string(), name);
        self.unknown(at, &g.unknown);
        if self.id(format!("{at}.gid"), g.gid) {
            self.unique_id(IdKind::Gid, at, name, g.gid);
        }
        let issue = declared_alike(&mut self.groups, "group", name, at, g, same_group);
        self.issues.extend(issue);
    }

    fn user(&mut self, map: &RoleMap, product: &str, p: &Product, at: &str, user: (&str, &User)) {
        let (name, u) = user;
        self.name(at.to_string(), name);
        self.unknown(at, &u.unknown);
        if self.id(format!("{at}.uid"), u.uid) {
            self.unique_id(IdKind::Uid, at, name, u.uid);
        }
        self.primary(product, p, at, &u.group);
        self.path(format!("{at}.home"), &u.home);
        self.path(format!("{at}.shell"), &u.shell);
        for (i, group) in u.groups.iter().enumerate() {
            self.supplementary(map, product, p, &format!("{at}.groups[{i}]"), group);
            if u.groups[..i].contains(group) {
                let message = format!("group {} listed twice", q(group));
                self.push(format!("{at}.groups[{i}]"), message);
            }
        }
        let issue = declared_alike(&mut self.users, "user", name, at, u, same_user);
        self.issues.extend(issue);
    }

    /// The primary group must be the product's own: a host of the product then creates it
    /// before the user.
    fn primary(&mut self, product: &str, p: &Product, at: &str, group: &str) {
        let path = format!("{at}.group");
        self.name(path.clone(), group);
        if is_account_name(group) && !p.groups.contains_key(group) {
            let message = format!(
                "group {} is not declared in products.{}.groups",
                q(group),
                key(product)
            );
            self.push(path, message);
        }
    }

    /// The product's own group, or one no product declares (a system group the host has).
    fn supplementary(&mut self, map: &RoleMap, product: &str, p: &Product, at: &str, g: &str) {
        self.name(at.to_string(), g);
        if p.groups.contains_key(g) {
            return;
        }
        let other = map
            .products
            .iter()
            .find(|(_, o)| o.groups.contains_key(g))
            .map(|(n, _)| n);
        if let Some(other) = other {
            let message = format!(
                "group {} is declared by product {}, not by {}: declare it here too, identically (hosts of this product would lack it otherwise)",
                q(g),
                q(other),
                q(product)
            );
            self.push(at.to_string(), message);
        }
    }

    fn unique_id(&mut self, kind: IdKind, at: &str, name: &str, id: i64) {
        let (seen, word, field) = match kind {
            IdKind::Uid => (&mut self.uids, "user", "uid"),
            IdKind::Gid => (&mut self.gids, "group", "gid"),
        };
        match seen.get(&id) {
            Some((first_name, first_at)) if first_name != name => {
                let message = format!(
                    "{field} {id} is also given to {word} {} at {first_at}.{field}",
                    q(first_name)
                );
                self.push(format!("{at}.{field}"), message);
            }
            Some(_) => {}
            None => {
                seen.insert(id, (name.to_string(), at.to_string()));
            }
        }
    }
}

#[derive(Clone, Copy)]
enum IdKind {
    Uid,
    Gid,
}

/// The issue when the `kind` account `name`, declared at `at`, was declared before and not
/// the same by `same`; `first` records each name's first declaration.
fn declared_alike<T: Clone>(
    first: &mut BTreeMap<String, (String, T)>,
    kind: &str,
    name: &str,
    at: &str,
    account: &T,
    same: fn(&T, &T) -> bool,
) -> Option<Issue> {
    match first.get(name) {
        Some((first_at, seen)) if !same(seen, account) => Some(Issue {
            path: at.to_string(),
            message: format!(
                "{kind} {} is declared differently at {first_at}; one name is one account fleet-wide",
                q(name)
            ),
        }),
        Some(_) => None,
        None => {
            first.insert(name.to_string(), (at.to_string(), account.clone()));
            None
        }
    }
}

fn same_group(a: &Group, b: &Group) -> bool {
    a.gid == b.gid
}

fn same_user(a: &User, b: &User) -> bool {
    let sorted = |u: &User| {
        let mut g = u.groups.clone();
        g.sort();
        g
    };
    (a.uid, &a.group, &a.home, &a.shell) == (b.uid, &b.group, &b.home, &b.shell)
        && sorted(a) == sorted(b)
}

/// `map lint`: ids where the distribution, systemd or the kernel allocate their own. Each
/// name is reported once, at its first declaration.
pub fn lint(map: &RoleMap) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, product) in &map.products {
        let at = format!("products.{}", key(name));
        let groups = product
            .groups
            .iter()
            .map(|(n, g)| ("group", "gid", n, g.gid));
        let users = product.users.iter().map(|(n, u)| ("user", "uid", n, u.uid));
        for (word, field, account, id) in groups.chain(users) {
            let Some(range) = reserved_range(id) else {
                continue;
            };
            if seen.insert((word, account)) {
                out.push(Warning {
                    kind: Kind::AccountId,
                    path: format!("{at}.{word}s.{}.{field}", key(account)),
                    message: format!("{word} {} has {field} {id}, {range}", q(account)),
                });
            }
        }
    }
    out
}

/// Why `id` is a poor choice for a product account, if it is.
fn reserved_range(id: i64) -> Option<&'static str> {
    match id {
        ..=999 => {
            Some("in the system range (below 1000) where the distribution's packages allocate ids")
        }
        61184..=65519 => {
            Some("in systemd's dynamic range (61184-65519) used by DynamicUser= services")
        }
        65534.. => Some("at or above 65534 (nobody/nogroup, the 16-bit -1, user-namespace ranges)"),
        _ => None,
    }
}

/// A product's user as templates see it (`product.users.NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group name.
    pub group: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
    /// Supplementary groups, as the map lists them.
    pub groups: Vec<String>,
}

/// A product's group as templates see it (`product.groups.NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
}

/// The accounts part of a product's view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductAccounts {
    /// The product's user (see [`view`]).
    pub user: Option<String>,
    /// The product's group (see [`view`]).
    pub group: Option<String>,
    /// Every user it declares.
    pub users: BTreeMap<String, UserView>,
    /// Every group it declares.
    pub groups: BTreeMap<String, GroupView>,
}

/// The accounts `p` (named `name`) declares. `user` is the user named like the product,
/// else the first by name; `group` is that user's primary group, else the group named like
/// the product, else the first by name. The map need not be valid: ids out of range read 0.
pub fn view(name: &str, p: &Product) -> ProductAccounts {
    let users: BTreeMap<String, UserView> = p
        .users
        .iter()
        .map(|(n, u)| (n.clone(), user_view(n, u)))
        .collect();
    let groups: BTreeMap<String, GroupView> = p
        .groups
        .iter()
        .map(|(n, g)| {
            (
                n.clone(),
                GroupView {
                    name: n.clone(),
                    gid: id(g.gid),
                },
            )
        })
        .collect();
    let user = main(name, users.keys());
    let group = match user.as_ref().and_then(|u| users.get(u)) {
        Some(u) => Some(u.group.clone()),
        None => main(name, groups.keys()),
    };
    ProductAccounts {
        user,
        group,
        users,
        groups,
    }
}

/// An id of a map that need not be valid: out of range reads 0.
fn id(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn user_view(name: &str, u: &User) -> UserView {
    UserView {
        name: name.to_string(),
        uid: id(u.uid),
        group: u.group.clone(),
        home: u.home.clone(),
        shell: u.shell.clone(),
        groups: u.groups.clone(),
    }
}

/// The name equal to the product's, else the first.
fn main<'a>(product: &str, mut names: impl Iterator<Item = &'a String> + Clone) -> Option<String> {
    names
        .clone()
        .find(|n| n.as_str() == product)
        .or_else(|| names.next())
        .cloned()
}

#[cfg(test)]
mod tests;

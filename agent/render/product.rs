//! `product` as templates see it: each of the host's products turned into a template value
//! once per role (not once per file, smoke test and `when` of it), holding only the parts
//! some template of the host reads (see `reads::Wanted`). A virtual host reading
//! `product.pools.memcached` does not pay for every other pool of a product served by
//! hundreds of hosts (issue 13). A part left out is one no template reads, which no
//! template can tell.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use super::reads::Wanted;
use super::secrets::product_values;
use crate::rolemap::resolve::{Pool, ProductView};
use crate::secrets::Resolved;

/// `product` with the parts `wanted`, its `secrets` holding the values read instead of the
/// references (SPEC §10).
pub(super) fn value(product: &ProductView, wanted: &Wanted, resolved: &Resolved) -> Value {
    let mut object = match wanted {
        Wanted::Whole => match json(product) {
            Value::Object(object) => object,
            _ => Map::new(),
        },
        Wanted::Fields(fields) => fields
            .iter()
            .filter_map(|(name, part)| {
                Some((name.clone(), field(product, name, part, &mut ToValue)?))
            })
            .collect(),
    };
    if !product.secrets.is_empty() && wanted.field("secrets").is_some() {
        object.insert("secrets".to_string(), product_values(product, resolved));
    }
    Value::Object(object)
}

/// Write to `out` the parts of `product` that [`value`] holds for the same arguments, each
/// serialised, without making the value: equal values write equal bytes (the render memo's
/// key). Each part ends where it says (JSON text, or pools counted and length-prefixed), so
/// the parts cannot run into each other or into the key's next field.
pub(super) fn write_parts(
    product: &ProductView,
    wanted: &Wanted,
    resolved: &Resolved,
    out: &mut impl Write,
) {
    let mut to = ToWriter(out);
    match wanted {
        Wanted::Whole => to.put(product),
        Wanted::Fields(fields) => {
            for (name, part) in fields {
                to.put(name);
                field(product, name, part, &mut to);
            }
        }
    }
    if !product.secrets.is_empty() && wanted.field("secrets").is_some() {
        to.put(&product_values(product, resolved));
    }
}

/// What [`field`] does with a part: make it a template value, or write it out.
trait Out {
    type Part;
    fn put<T: Serialize + ?Sized>(&mut self, part: &T) -> Self::Part;
    /// The pools of some roles, in the order of their names.
    fn pools<'p>(&mut self, pools: impl Iterator<Item = (&'p str, Pool<'p>)>) -> Self::Part;
}

struct ToValue;

impl Out for ToValue {
    type Part = Value;
    fn put<T: Serialize + ?Sized>(&mut self, part: &T) -> Value {
        json(part)
    }

    fn pools<'p>(&mut self, pools: impl Iterator<Item = (&'p str, Pool<'p>)>) -> Value {
        json(&pools.collect::<BTreeMap<_, _>>())
    }
}

struct ToWriter<'a, W>(&'a mut W);

// Only a failing writer or serialiser errs; neither is in use.
impl<W: Write> Out for ToWriter<'_, W> {
    type Part = ();
    fn put<T: Serialize + ?Sized>(&mut self, part: &T) {
        let _ = serde_json::to_writer(&mut *self.0, part);
    }

    /// As bytes, not JSON: escaping the pools of a product served by hundreds of hosts took
    /// longer than the rest of its key (issue 13). The count of pools, then each one's
    /// length-prefixed role and its peers ([`Pool::write_key`]): no two differ in one way.
    fn pools<'p>(&mut self, pools: impl Iterator<Item = (&'p str, Pool<'p>)>) {
        let pools: Vec<_> = pools.collect();
        let _ = self.0.write_all(&(pools.len() as u64).to_le_bytes());
        for (role, pool) in pools {
            let _ = self.0.write_all(&(role.len() as u64).to_le_bytes());
            let _ = self.0.write_all(role.as_bytes());
            let _ = pool.write_key(&mut *self.0);
        }
    }
}

/// The part `wanted` of `product`'s field `name`, as its serialisation has it, put to `out`;
/// `None` for a field it leaves out (no such field, an absent user or group).
fn field<O: Out>(
    product: &ProductView,
    name: &str,
    wanted: &Wanted,
    out: &mut O,
) -> Option<O::Part> {
    let p = product;
    Some(match name {
        "name" => out.put(&p.name),
        "domain" => out.put(&p.domain),
        "aliases" => out.put(&p.aliases),
        "docroot" => out.put(&p.docroot),
        "health_path" => out.put(&p.health_path),
        "database" => out.put(&p.database),
        "pools" => match wanted {
            Wanted::Whole => out.pools(p.pools.all()),
            Wanted::Fields(roles) => out.pools(
                roles
                    .keys()
                    .filter_map(|r| Some((r.as_str(), p.pools.get(r)?))),
            ),
        },
        "user" => out.put(p.user.as_ref()?),
        "group" => out.put(p.group.as_ref()?),
        "users" => out.put(&p.users),
        "groups" => out.put(&p.groups),
        "secrets" => out.put(&p.secrets),
        _ => return None,
    })
}

fn json(value: &(impl Serialize + ?Sized)) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolemap::resolve::{DatabaseView, Peer, Pools};

    fn peer(id: &str) -> Peer {
        Peer {
            id: id.to_string(),
            address: format!("10.0.0.{}", id.len()),
            az: "us-east-1a".to_string(),
            db_port: 3306,
        }
    }

    /// A web pool (unless left out) and a memcached pool whose one host is `id` at `address`.
    fn pools(web: bool, id: &str, address: &str) -> Pools {
        let memcached = Peer {
            address: address.to_string(),
            ..peer(id)
        };
        let web = web.then(|| ("web".to_string(), vec![peer("web-1"), peer("web-22")]));
        let memcached = ("memcached".to_string(), vec![memcached]);
        web.into_iter().chain([memcached]).collect()
    }

    /// A product with every field set.
    fn product() -> ProductView {
        let db = DatabaseView {
            name: "shop".to_string(),
            master: peer("db-1"),
            replicas: vec![peer("db-22")],
            backup: None,
            backup_url: None,
        };
        ProductView {
            name: "shop".to_string(),
            domain: "shop.example".to_string(),
            aliases: vec!["www.shop.example".to_string()],
            docroot: "/srv/shop".to_string(),
            health_path: "/health".to_string(),
            database: Some(db),
            pools: pools(true, "mc-1", "10.0.0.4"),
            user: Some("shop".to_string()),
            group: Some("shop".to_string()),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            secrets: BTreeMap::from([("db_password".to_string(), "env:X".to_string())]),
        }
    }

    fn every_field(product: &ProductView) -> Wanted {
        let Value::Object(whole) = json(product) else {
            panic!("a product serialises to an object");
        };
        Wanted::Fields(whole.keys().map(|k| (k.clone(), Wanted::Whole)).collect())
    }

    #[test]
    fn every_field_selected_is_the_whole_product() {
        let resolved = Resolved::default();
        for p in [
            product(),
            ProductView {
                user: None,
                group: None,
                secrets: BTreeMap::new(),
                ..product()
            },
        ] {
            let whole = value(&p, &Wanted::Whole, &resolved);
            // A field `field` does not know would be missing here: add it there.
            assert_eq!(value(&p, &every_field(&p), &resolved), whole);
            assert_eq!(
                whole["secrets"],
                serde_json::json!({}),
                "references never reach templates"
            );
        }
    }

    /// The parts at these paths (`["pools", "memcached"]` is `product.pools.memcached`).
    fn wanting(paths: &[&[&str]]) -> Wanted {
        let mut wanted = Wanted::default();
        paths.iter().for_each(|path| wanted.add(path));
        wanted
    }

    #[test]
    fn only_the_parts_read_are_serialised() {
        let resolved = Resolved::default();
        let mut wanted = wanting(&[&["pools", "memcached"], &["domain"], &["user"]]);
        let got = value(&product(), &wanted, &resolved);
        assert_eq!(
            got,
            serde_json::json!({
                "domain": "shop.example",
                "user": "shop",
                "pools": {"memcached": [{"id": "mc-1", "address": "10.0.0.4", "az": "us-east-1a", "db_port": 3306}]},
            })
        );
        let absent = ProductView {
            user: None,
            ..product()
        };
        assert!(
            value(&absent, &wanted, &resolved).get("user").is_none(),
            "user is not defined"
        );
        wanted.add(&["pools", "missing"]);
        assert_eq!(
            value(&product(), &wanted, &resolved)["pools"]
                .as_object()
                .map(|o| o.len()),
            Some(1)
        );
    }

    /// The memo's key reads `write_parts`: whenever two products' values differ, so do the
    /// bytes written for them (else the memo would hand out a stale file).
    #[test]
    fn parts_written_differ_whenever_values_differ() {
        let resolved = Resolved::default();
        let partial = wanting(&[&["pools", "memcached"], &["user"]]);
        let variant = |change: &dyn Fn(&mut ProductView)| {
            let mut p = product();
            change(&mut p);
            p
        };
        let variants = [
            variant(&|_| {}),
            variant(&|p| p.user = None),
            variant(&|p| p.domain = "other.example".into()),
            variant(&|p| p.pools = pools(true, "mc-1", "10.9.9.9")),
            variant(&|p| p.pools = pools(false, "mc-1", "10.0.0.4")),
            // The same bytes, split otherwise between id and address.
            variant(&|p| p.pools = pools(true, "mc-11", "0.0.0.4")),
        ];
        for wanted in [Wanted::Whole, every_field(&product()), partial] {
            for a in &variants {
                for b in &variants {
                    let bytes = |p| {
                        let mut out = Vec::new();
                        write_parts(p, &wanted, &resolved, &mut out);
                        out
                    };
                    let same_value = value(a, &wanted, &resolved) == value(b, &wanted, &resolved);
                    assert_eq!(same_value, bytes(a) == bytes(b), "{a:?}\n{b:?}");
                }
            }
        }
    }
}

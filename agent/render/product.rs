//! `product` as templates see it: each of the host's products turned into a template value
//! once per role (not once per file, smoke test and `when` of it), holding only the parts
//! some template of the host reads (see `reads::Wanted`). A virtual host reading
//! `product.pools.memcached` does not pay for every other pool of a product served by
//! hundreds of hosts (issue 13). A part left out is one no template reads, which no
//! template can tell.

use serde::Serialize;
use serde_json::{Map, Value};

use super::reads::Wanted;
use super::secrets::product_values;
use crate::rolemap::resolve::ProductView;
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
            .filter_map(|(name, part)| Some((name.clone(), field(product, name, part)?)))
            .collect(),
    };
    if !product.secrets.is_empty() && wanted.field("secrets").is_some() {
        object.insert("secrets".to_string(), product_values(product, resolved));
    }
    Value::Object(object)
}

/// The part `wanted` of `product`'s field `name`, as its serialisation has it; `None` for
/// a field it leaves out (no such field, an absent user or group).
fn field(product: &ProductView, name: &str, wanted: &Wanted) -> Option<Value> {
    let p = product;
    Some(match name {
        "name" => json(&p.name),
        "domain" => json(&p.domain),
        "aliases" => json(&p.aliases),
        "docroot" => json(&p.docroot),
        "health_path" => json(&p.health_path),
        "database" => json(&p.database),
        "pools" => match wanted {
            Wanted::Whole => json(&p.pools),
            Wanted::Fields(roles) => {
                let pools = roles.keys().filter_map(|r| Some((r, p.pools.get(r)?)));
                Value::Object(pools.map(|(r, hosts)| (r.clone(), json(hosts))).collect())
            }
        },
        "user" => json(p.user.as_ref()?),
        "group" => json(p.group.as_ref()?),
        "users" => json(&p.users),
        "groups" => json(&p.groups),
        "secrets" => json(&p.secrets),
        _ => return None,
    })
}

fn json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::rolemap::resolve::{DatabaseView, Peer};

    fn peer(id: &str) -> Arc<Peer> {
        Arc::new(Peer {
            id: id.to_string(),
            address: format!("10.0.0.{}", id.len()),
            az: "us-east-1a".to_string(),
            db_port: 3306,
        })
    }

    /// A product with every field set.
    fn product() -> ProductView {
        let db = DatabaseView {
            name: "shop".to_string(),
            master: (*peer("db-1")).clone(),
            replicas: vec![(*peer("db-22")).clone()],
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
            pools: BTreeMap::from([
                ("web".to_string(), vec![peer("web-1"), peer("web-22")]),
                ("memcached".to_string(), vec![peer("mc-1")]),
            ]),
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

    #[test]
    fn only_the_parts_read_are_serialised() {
        let resolved = Resolved::default();
        let mut wanted = Wanted::default();
        wanted.add(&["pools", "memcached"]);
        wanted.add(&["domain"]);
        wanted.add(&["user"]);
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
}

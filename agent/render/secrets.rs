//! Secrets in the render (SPEC §10): the values templates see (`secrets.NAME` for `[vars]`
//! references, `product.secrets.NAME` for the product's), and which files cannot be
//! rendered because a secret they may read could not be. Pure.

use std::collections::BTreeMap;

use tera::Context;

use crate::rolemap::resolve::ProductView;
use crate::secrets::{Reference, Resolved};

/// `secrets` as templates see it: the values of the `[vars]` references that were read.
pub(super) fn vars_values(resolved: &Resolved) -> BTreeMap<&str, &str> {
    resolved
        .vars
        .iter()
        .filter_map(|(name, r)| Some((name.as_str(), resolved.value(r)?.expose())))
        .collect()
}

/// Put `product` into `ctx`, its `secrets` holding the values read instead of references.
pub(super) fn set_product(ctx: &mut Context, product: &ProductView, resolved: &Resolved) {
    if product.secrets.is_empty() {
        return ctx.insert("product", product);
    }
    let values: BTreeMap<&str, &str> = product
        .secrets
        .iter()
        .filter_map(|(name, text)| {
            let value = resolved.value(&Reference::parse(text).ok()?)?;
            Some((name.as_str(), value.expose()))
        })
        .collect();
    let mut value = serde_json::to_value(product).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        let secrets = serde_json::to_value(values).unwrap_or_default();
        object.insert("secrets".to_string(), secrets);
    }
    ctx.insert("product", &value);
}

/// The references a file that reads secrets may need (its product's and the `[vars]`
/// ones) that could not be read, each with why: its service is then left as it is (SPEC
/// §10). The reasons are the stores' error codes and messages, never a value.
pub(super) fn unreadable(product: Option<&ProductView>, resolved: &Resolved) -> Vec<String> {
    let of_product = product
        .into_iter()
        .flat_map(|p| p.secrets.values())
        .filter_map(|text| Reference::parse(text).ok());
    of_product
        .chain(resolved.vars.values().cloned())
        .filter_map(|r| Some(format!("{r} ({})", resolved.failed.get(&r)?)))
        .collect()
}

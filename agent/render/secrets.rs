//! Secrets in the render (SPEC §10): the values templates see (`secrets.NAME` for `[vars]`
//! references, `product.secrets.NAME` for the product's), and which files cannot be
//! rendered because a secret they may read could not be; the catalog's refusal of a
//! secret file others may read. Pure.

use std::collections::{BTreeMap, BTreeSet};

use super::{position_matches, Desired, Error, Templates};
use crate::catalog::{Catalog, Role};
use crate::rolemap::resolve::{HostView, ProductView};
use crate::secrets::{Reference, Resolved};

impl Templates {
    /// Refuse a file whose template reads secrets and whose mode lets others read or
    /// write it (SPEC §10: 0600 or 0640).
    pub(super) fn check_secret_modes(&self, catalog: &Catalog) -> Result<(), Error> {
        for role in catalog.roles.values() {
            for (i, f) in role.files.iter().enumerate() {
                if f.mode & 0o007 != 0 && self.reads_secret(&f.template) {
                    return Err(Error::Invalid {
                        role: role.name.clone(),
                        what: format!("files[{i}].mode"),
                        reason: format!(
                            "{:04o} lets others read {}, which reads secrets (use 0600 or 0640)",
                            f.mode, f.template
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Which secrets the files of `view`'s roles may read (SPEC §10): `(products, vars)`, the
/// products' (a per-product file reads secrets) and the `[vars]` ones (any file does). A
/// host whose templates read none asks its stores for nothing.
pub fn secret_needs(view: &HostView, catalog: &Catalog, templates: &Templates) -> (bool, bool) {
    let files = view
        .host
        .roles
        .iter()
        .filter_map(|r| catalog.roles.get(r))
        .flat_map(|role| role.files.iter())
        .filter(|f| position_matches(f.when_position, view))
        .filter(|f| templates.reads_secret(&f.template));
    files.fold((false, false), |(products, _), f| {
        (products || f.per_product, true)
    })
}

/// A role with a service blocked by an unreadable secret runs no smoke test and no hook:
/// its service is left as it was, and a hook would act on the old secret.
pub(super) fn drop_blocked(roles: &[&Role], desired: &mut Desired) {
    let blocked: BTreeSet<&str> = roles
        .iter()
        .filter(|r| {
            r.files
                .iter()
                .any(|f| desired.blocked.contains_key(&f.service))
        })
        .map(|r| r.name.as_str())
        .collect();
    desired.smoke.retain(|t| !blocked.contains(t.role.as_str()));
    desired.hooks.retain(|h| !blocked.contains(h.role.as_str()));
}

/// `secrets` as templates see it: the values of the `[vars]` references that were read.
pub(super) fn vars_values(resolved: &Resolved) -> BTreeMap<&str, &str> {
    resolved
        .vars
        .iter()
        .filter_map(|(name, r)| Some((name.as_str(), resolved.value(r)?.expose())))
        .collect()
}

/// `err`'s whole chain with every secret value of `resolved` replaced by `[redacted]`.
pub(super) fn redact(err: &Error, resolved: &Resolved) -> Error {
    let mut message = crate::text::chain(err);
    for value in resolved.values.values().map(|v| v.expose()) {
        if !value.is_empty() {
            message = message.replace(value, "[redacted]");
        }
    }
    Error::Redacted { message }
}

/// `product.secrets` as templates see it: the values read instead of the references.
pub(super) fn product_values(product: &ProductView, resolved: &Resolved) -> serde_json::Value {
    let values: BTreeMap<&str, &str> = product
        .secrets
        .iter()
        .filter_map(|(name, text)| {
            let value = resolved.value(&Reference::parse(text).ok()?)?;
            Some((name.as_str(), value.expose()))
        })
        .collect();
    serde_json::to_value(values).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Value;

    /// Tera quotes a value its filter chokes on: the error of a secret-reading template
    /// keeps its message but never the value.
    #[test]
    fn a_failed_secret_template_is_reported_without_the_value() {
        let mut ctx = tera::Context::new();
        ctx.insert("password", "hunter2-value");
        let tera_err = tera::Tera::one_off("{{ password | round }}", &ctx, false).unwrap_err();
        let err = Error::Template {
            template: "app/env.tera".into(),
            role: "app".into(),
            product: None,
            source: Box::new(tera_err),
        };
        let raw = crate::text::chain(&err);
        let mut resolved = Resolved::default();
        let reference = Reference::parse("ssm:/app/password").unwrap();
        let value = Value::new("hunter2-value".into()).unwrap();
        resolved.values.insert(reference, value);
        let redacted = redact(&err, &resolved).to_string();
        assert!(
            raw.contains("hunter2-value"),
            "Tera no longer quotes it: {raw}"
        );
        assert!(!redacted.contains("hunter2-value"), "{redacted}");
        assert!(
            redacted.contains("app/env.tera") && redacted.contains("[redacted]"),
            "{redacted}"
        );
    }
}

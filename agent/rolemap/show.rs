//! `map show`: hosts by product, role and availability zone, as a text table. Pure.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::resolve::db_position;
use super::types::RoleMap;

/// One row per (product, role, host), sorted; hosts without products are listed under `-`.
pub fn table(map: &RoleMap) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for (id, h) in &map.hosts {
        let mut products: Vec<String> = h.products.clone();
        let position = db_position(map, id);
        if let Some(pos) = &position {
            products.extend(pos.products.iter().cloned());
        }
        products.sort();
        products.dedup();
        if products.is_empty() {
            products.push("-".into());
        }
        for product in &products {
            for role in &h.roles {
                let pos = match (&position, role.as_str()) {
                    (Some(p), super::roles::DB) if p.products.contains(product) => {
                        p.position.to_string()
                    }
                    _ => String::new(),
                };
                rows.push([
                    product.clone(),
                    role.clone(),
                    h.az.clone(),
                    id.clone(),
                    format!("{} {pos}", h.address).trim_end().to_string(),
                ]);
            }
        }
    }
    rows.sort();
    render(&["PRODUCT", "ROLE", "AZ", "HOST", "ADDRESS"], &rows)
}

fn render(header: &[&str; 5], rows: &[[String; 5]]) -> String {
    let mut widths: BTreeMap<usize, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (i, h.len()))
        .collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = widths.entry(i).or_default();
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[&i]))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

//! `map show`: hosts by product, role and availability zone, as a text table. Pure.

use std::fmt::Write;

use super::resolve::db_position;
use super::types::RoleMap;

/// One row per (product, role, host), sorted; hosts without products are listed under `-`.
/// A map with a rollout shows each host's wave of this generation (SPEC §9.2).
pub fn table(map: &RoleMap) -> String {
    let schedule = crate::fleet::waves::Schedule::of(map);
    let waves = schedule.map(|s| crate::fleet::waves::Waves::of_map(map, &s));
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (id, h) in &map.hosts {
        let mut products: Vec<String> = super::types::strings(&h.products);
        let position = db_position(map, id);
        if let Some(pos) = &position {
            products.extend(pos.products.iter().cloned());
        }
        products.sort();
        products.dedup();
        if products.is_empty() {
            products.push("-".into());
        }
        let (az, id) = (h.az.to_string(), id.to_string());
        for product in &products {
            for role in h.roles.iter() {
                let pos = match (&position, role.as_str()) {
                    (Some(p), super::roles::DB) if p.products.contains(product) => {
                        p.position.to_string()
                    }
                    _ => String::new(),
                };
                let mut row = vec![product.clone(), role.to_string(), az.clone(), id.clone()];
                if let Some(waves) = &waves {
                    row.push(waves.wave_of(&id).map_or("-".into(), |k| k.to_string()));
                }
                row.push(format!("{} {pos}", h.address).trim_end().to_string());
                rows.push(row);
            }
        }
    }
    rows.sort();
    match waves {
        Some(_) => render(&["PRODUCT", "ROLE", "AZ", "HOST", "WAVE", "ADDRESS"], &rows),
        None => render(&["PRODUCT", "ROLE", "AZ", "HOST", "ADDRESS"], &rows),
    }
}

/// A text table: a header line and left-aligned columns two spaces apart (also `fleet
/// status`'s). Cells are printed as given: callers escape what needs it.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

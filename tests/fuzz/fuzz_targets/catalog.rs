//! The catalog loader (`Catalog::from_sources_with_vars`) with one or two role files (cut
//! at a NUL byte; the first is `web.toml`, the second `memcached.toml`), then, for a catalog
//! that loads, its templated strings parsed with the shipped templates (`Templates::load`)
//! and rendered for the example map's web host.
//!
//! Asserts: no panic; a TOML error in a role file is one escaped line of bounded length.

#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use rolecall::catalog::{Catalog, Error};
use rolecall::render::{self, Templates};
use rolecall_fuzz::{assert_line, parts, TOML_ERROR_MAX};

const NAMES: [&str; 2] = ["web.toml", "memcached.toml"];

fuzz_target!(|data: &[u8]| {
    let mut sources = Vec::new();
    for (part, name) in parts(data, 2).into_iter().zip(NAMES) {
        let Ok(text) = std::str::from_utf8(part) else {
            return;
        };
        sources.push((PathBuf::from(name), text.to_string()));
    }
    let (_, _, vars) = rolecall_fuzz::shipped();
    let catalog = match Catalog::from_sources_with_vars(&sources, &BTreeMap::new(), vars) {
        Ok(catalog) => catalog,
        Err(Error::Invalid { message, .. }) if message.starts_with("line ") => {
            return assert_line("catalog TOML error", &message, TOML_ERROR_MAX);
        }
        Err(_) => return,
    };
    let dir = rolecall_fuzz::repo().join("templates");
    let Ok(templates) = Templates::load(&dir, &catalog) else {
        return;
    };
    let (map, view) = rolecall_fuzz::example_view();
    let info = rolecall_fuzz::map_info(map);
    let _ = render::render(view, &catalog, &templates, &info, vars);
});

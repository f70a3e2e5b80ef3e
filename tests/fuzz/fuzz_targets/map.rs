//! The map parser, validator and resolver (`rolemap::load`, `load_for`, `validate`,
//! `resolve`), then what a valid map feeds: `map lint` and `map show` output, the TOML a
//! publish or promote writes back, and rendering the shipped catalog for the host.
//!
//! Asserts: no panic; the map as parsed (straight from the TOML parser's events when it is
//! written as rolecall writes maps) is the one toml reads; `load` and `load_for` agree; a
//! TOML error and every validation issue is one escaped line of bounded length whatever the
//! input size; a valid map has no issue, writes back to the same map, and its lint and
//! show output is escaped.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rolecall::render;
use rolecall::rolemap::{self, lint, show, validate, Resolution};
use rolecall_fuzz::{assert_line, assert_lines, assert_map_error, identity, ISSUE_MAX};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            rolemap::types::parse(text).ok(),
            toml::from_str::<rolemap::RoleMap>(text).ok(),
            "parsed otherwise than toml reads it"
        );
    }
    let loaded = rolemap::load(data);
    let for_host = rolemap::load_for(data, &identity(rolecall_fuzz::HOST));
    match (&loaded, &for_host) {
        (Ok(a), Ok((b, _))) => assert_eq!(a, b, "load and load_for parsed differently"),
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "load and load_for disagree");
            assert_map_error(a);
        }
        (a, b) => panic!(
            "load and load_for disagree: {:?} vs {:?}",
            a.as_ref().err().map(ToString::to_string),
            b.as_ref().err().map(ToString::to_string)
        ),
    }
    let Ok((map, resolution)) = for_host else {
        return;
    };
    assert!(validate::validate(&map).is_empty(), "a loaded map has issues");
    for id in rolecall_fuzz::OTHER_HOSTS {
        let _ = rolemap::resolve(&map, &identity(id));
    }
    for warning in lint::lint(&map) {
        assert_line("lint warning", &warning.to_string(), ISSUE_MAX);
    }
    assert_lines("map show", &show::table(&map), rolecall::text::LINE_MAX);
    let text = map.to_toml().expect("a valid map serializes");
    let again = rolemap::load(text.as_bytes())
        .unwrap_or_else(|e| panic!("the TOML written back does not load: {e}\n{text}"));
    assert_eq!(again, map, "the TOML written back is another map");
    if let Resolution::Assigned(view) = resolution {
        let (catalog, templates, vars) = rolecall_fuzz::shipped();
        let info = rolecall_fuzz::map_info(&map);
        let _ = render::render(&view, catalog, templates, &info, vars);
    }
});

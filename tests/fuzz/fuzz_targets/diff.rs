//! `map diff`: two maps (cut at a NUL byte) parsed as `map diff` parses them (unvalidated),
//! then every change printed.
//!
//! Asserts: no panic; every printed change is one line with no control character (ESC,
//! CR, LF, …) of bounded length; a map compared with itself has no change; a parse error
//! of either side is bounded and escaped.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rolecall::rolemap::{diff, types};
use rolecall_fuzz::{assert_line, assert_map_error, parts, DIFF_LINE_MAX};

fn parse(bytes: &[u8]) -> Option<types::RoleMap> {
    let text = std::str::from_utf8(bytes).ok()?;
    types::parse(text).map_err(|e| assert_map_error(&e)).ok()
}

fuzz_target!(|data: &[u8]| {
    let sides = parts(data, 2);
    let old = parse(sides[0]);
    let new = match sides.get(1) {
        Some(bytes) => parse(bytes),
        None => Some(types::RoleMap::default()),
    };
    let (Some(old), Some(new)) = (old, new) else {
        return;
    };
    for change in diff::diff(&old, &new) {
        assert_line("diff line", &change.to_string(), DIFF_LINE_MAX);
    }
    assert!(diff::diff(&new, &new).is_empty(), "a map differs from itself");
});

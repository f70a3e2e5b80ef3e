//! What the fuzz targets share: how an input is cut into parts, the fixed identity and
//! inputs they resolve and render with, and the output promises they assert (README
//! "Bounded input and output", issue 15): every line printed from untrusted input has no
//! control or invisible character (no ESC sequence, no forged line) and a bounded length,
//! whatever the size of the input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rolecall::catalog::Catalog;
use rolecall::identity::Identity;
use rolecall::render::{MapInfo, Templates};
use rolecall::rolemap::{self, HostView, Resolution, RoleMap};
use rolecall::text::{LINE_MAX, VALUE_MAX};

/// Where an input is cut into parts (a NUL is never valid in TOML or a cron file).
pub const SEPARATOR: u8 = 0;

/// Longest TOML error message: `line L, column C: ` then toml's message (at most
/// 2 × [`VALUE_MAX`] characters kept) and an excerpt of the line ([`VALUE_MAX`] kept). Each
/// kept character prints as at most 8 bytes (`\u{202e}`), plus the `… (N more bytes)` tails.
pub const TOML_ERROR_MAX: usize = 64 + 3 * VALUE_MAX * 8 + 2 * 32;

/// Longest validation issue (`path: message`): a path holds at most two map keys and a
/// message at most three map values, each quoted and bounded to [`VALUE_MAX`] characters
/// (at most 8 bytes each once escaped), plus the rule's own words.
pub const ISSUE_MAX: usize = 5 * (VALUE_MAX * 8 + 40) + 400;

/// Longest `map diff` line: [`LINE_MAX`] characters of the line kept, escaped.
pub const DIFF_LINE_MAX: usize = LINE_MAX * 8 + 40;

/// The id the targets resolve maps for: a web host of `examples/rolemap.toml`.
pub const HOST: &str = "web-1";

/// The other ids resolved: a database master of the example, a golden case's host.
pub const OTHER_HOSTS: [&str; 2] = ["db-1", "i-0d0000000000000d1"];

/// Cut `data` at each [`SEPARATOR`], into at most `max` parts (the last one keeps the rest).
pub fn parts(data: &[u8], max: usize) -> Vec<&[u8]> {
    data.splitn(max, |b| *b == SEPARATOR).collect()
}

/// The fixed identity of host `id`, as IMDSv2 or agent.toml would report it.
pub fn identity(id: &str) -> Identity {
    Identity {
        id: id.to_string(),
        address: "10.0.1.21".to_string(),
        az: "us-east-1b".to_string(),
        region: "us-east-1".to_string(),
        instance_type: Some("t3.micro".to_string()),
        ami_id: None,
    }
}

/// The repository root (the fuzz package is `tests/fuzz`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What `map.*` templates see.
pub fn map_info(map: &RoleMap) -> MapInfo {
    MapInfo {
        etag: Some("\"5d41402abc4b2a76b9719d911017c592\"".to_string()),
        version: None,
        generation: map.generation(),
        url: "s3://fleet-config/rolemap.toml".to_string(),
    }
}

/// The shipped catalog (`templates/`), its templates and a golden case's vars, loaded once.
pub fn shipped() -> &'static (Catalog, Templates, toml::Table) {
    static SHIPPED: OnceLock<(Catalog, Templates, toml::Table)> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let dir = repo().join("templates");
        let catalog = Catalog::load(&dir, &BTreeMap::new()).expect("the shipped catalog loads");
        let templates = Templates::load(&dir, &catalog).expect("the shipped templates load");
        (catalog, templates, vars())
    })
}

/// `tests/golden/db-master/vars.toml`: what an image's agent.toml sets.
pub fn vars() -> toml::Table {
    let path = repo().join("tests/golden/db-master/vars.toml");
    let text = std::fs::read_to_string(&path).expect("reading the golden vars");
    toml::from_str(&text).expect("the golden vars parse")
}

/// The host view of [`HOST`] in `examples/rolemap.toml`, resolved once.
pub fn example_view() -> &'static (RoleMap, HostView) {
    static VIEW: OnceLock<(RoleMap, HostView)> = OnceLock::new();
    VIEW.get_or_init(|| {
        let bytes = std::fs::read(repo().join("examples/rolemap.toml")).expect("the example");
        match rolemap::load_for(&bytes, &identity(HOST)).expect("the example map is valid") {
            (map, Resolution::Assigned(view)) => (map, *view),
            (_, Resolution::Waiting) => panic!("{HOST} is not in the example map"),
        }
    })
}

/// Asserts that `line`, printed from untrusted input, is one safe line of at most `max`
/// bytes: no control character (ESC, CR, LF, …), no bidirectional override or zero-width
/// character.
pub fn assert_line(what: &str, line: &str, max: usize) {
    assert!(
        line.len() <= max,
        "{what}: {} bytes, over the bound of {max}: {}…",
        line.len(),
        line.chars().take(200).collect::<String>().escape_debug()
    );
    if let Some(c) = line.chars().find(|c| c.is_control() || is_invisible(*c)) {
        panic!(
            "{what}: unescaped {:?} in {:?}",
            c,
            line.chars().take(400).collect::<String>()
        );
    }
}

/// Asserts [`assert_line`] for each line of `text` (a multi-line output, e.g. `map show`).
pub fn assert_lines(what: &str, text: &str, max: usize) {
    for line in text.split('\n') {
        assert_line(what, line, max);
    }
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Checks a map error: a syntax message is bounded and escaped, every issue is.
pub fn assert_map_error(err: &rolemap::Error) {
    match err {
        rolemap::Error::Syntax { message } => assert_line("TOML error", message, TOML_ERROR_MAX),
        rolemap::Error::Invalid { issues } => {
            assert!(!issues.is_empty(), "an invalid map without an issue");
            for issue in issues {
                assert_line("validation issue", &issue.to_string(), ISSUE_MAX);
            }
        }
        rolemap::Error::Stale { .. } => panic!("load never compares generations: {err}"),
    }
}

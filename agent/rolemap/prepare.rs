//! The pure half of `map publish` and `map promote` (SPEC §3, §5; issue 5): decide the
//! generation to publish, write it into the operator's text without disturbing anything
//! else (comments, order and layout survive, through `toml_edit`), and describe the change
//! in words and as a unified diff. The network half is `crate::publish`.
//!
//! The generation rule: the file's `generation` is the version it was edited from. A file
//! whose generation is older than the published map's was edited from an old copy; publishing
//! it would silently undo someone else's change, so it is refused as a conflict. Otherwise the
//! published generation is `max(current, file) + 1`: always above the current one, so agents
//! (which refuse older maps) take it.

use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::diff::{diff, Change};
use super::types::{self, RoleMap};
use super::validate::key;

/// Errors preparing a map for publishing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The map to publish is not valid; nothing is uploaded.
    #[error("the map to publish is not valid")]
    Invalid(#[source] super::Error),
    /// The file was edited from an older generation than the one published now.
    #[error("the file was edited from generation {file}, but the published map is at generation {current}; someone published since: start from the current map and publish again")]
    Stale {
        /// The file's generation.
        file: u64,
        /// The published map's generation.
        current: u64,
    },
    /// The text could not be edited at a TOML path (a shape `toml_edit` cannot change).
    #[error("cannot edit {path} in the map text: {reason}")]
    Edit {
        /// TOML path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A map ready to upload, with what it changes.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Exact bytes to upload: the input text with only `generation` changed.
    pub bytes: Vec<u8>,
    /// The generation it carries.
    pub generation: u64,
    /// The published map's generation, when there is one and it could be read.
    pub current_generation: Option<u64>,
    /// Changes in words (empty when there is no current map to compare with).
    pub changes: Vec<Change>,
    /// Unified text diff against the current map (empty when there is none).
    pub unified: String,
}

/// The published map as read: its text and, when it parses, its typed form.
#[derive(Debug, Clone, Copy)]
pub struct Published<'a> {
    /// Exact text.
    pub text: &'a str,
    /// Parsed (not necessarily valid) map; `None` when the text does not parse.
    pub map: Option<&'a RoleMap>,
}

/// Prepare `text` for publishing over `current` (the published map's text, if any):
/// validate, check the file's base generation, raise the generation, describe the change.
///
/// # Errors
/// `Invalid` with every problem, `Stale` when the file is older than `current`, `Edit`
/// when the generation line cannot be rewritten.
pub fn prepare(text: &str, current: Option<&str>) -> Result<Prepared, Error> {
    let map = super::load(text.as_bytes()).map_err(Error::Invalid)?;
    let current_map = current.and_then(|c| types::parse(c).ok());
    let published = current.map(|text| Published {
        text,
        map: current_map.as_ref(),
    });
    prepare_loaded(text, map, published)
}

/// [`prepare`] for a caller that already holds `map`, the validated form of `text`, and the
/// parsed published map (`map promote`): nothing is parsed twice.
///
/// # Errors
/// As [`prepare`].
pub fn prepare_loaded(
    text: &str,
    map: RoleMap,
    current: Option<Published<'_>>,
) -> Result<Prepared, Error> {
    let file_generation = map.generation();
    let current_generation = current.and_then(|c| {
        c.map
            .and_then(|m| u64::try_from(m.generation).ok())
            .or_else(|| generation_of(c.text))
    });
    if let Some(now) = current_generation.filter(|&now| now > file_generation) {
        return Err(Error::Stale {
            file: file_generation,
            current: now,
        });
    }
    let generation = file_generation.max(current_generation.unwrap_or(0)) + 1;
    let new_text = with_generation(text, generation)?;
    // The edit changed the generation and nothing else, so the typed map follows suit.
    let mut new_map = map;
    new_map.generation = i64::try_from(generation).unwrap_or(i64::MAX);
    let changes = current
        .and_then(|c| c.map)
        .map(|old| diff(old, &new_map))
        .unwrap_or_default();
    let unified = current.map_or_else(String::new, |old| unified(old.text, &new_text));
    Ok(Prepared {
        bytes: new_text.into_bytes(),
        generation,
        current_generation,
        changes,
        unified,
    })
}

/// The `generation` of map text, read leniently: a published map that no longer validates
/// (or does not even parse as a role map) still tells its generation when it has one.
pub fn generation_of(text: &str) -> Option<u64> {
    let table: toml::Table = toml::from_str(text).ok()?;
    table
        .get("generation")
        .and_then(toml::Value::as_integer)
        .and_then(|g| u64::try_from(g).ok())
}

/// A unified diff (3 lines of context) from `old` to `new`, labelled as the published
/// map and the one being published.
pub fn unified(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header("published", "to publish")
        .to_string()
}

/// `text` with its top-level `generation` set to `generation`, everything else untouched.
///
/// Top-level keys come before the first table header, so only that root section is parsed
/// and edited when it stands on its own (a few lines, instead of a whole 10,000-host map);
/// otherwise (a multi-line value spanning the cut, no `generation` there) the whole
/// document is edited. The result is checked to carry the new generation.
///
/// # Errors
/// `Edit` when the text is not TOML or the generation cannot be set.
pub fn with_generation(text: &str, generation: u64) -> Result<String, Error> {
    let value = i64::try_from(generation).map_err(|_| Error::Edit {
        path: "generation".into(),
        reason: format!("{generation} does not fit a TOML integer"),
    })?;
    let cut = root_section_end(text);
    if let Some(root) = edit_root(&text[..cut], value) {
        return Ok(format!("{root}{}", &text[cut..]));
    }
    let mut doc = document(text)?;
    set(
        doc.as_table_mut(),
        "generation",
        "generation",
        Value::from(value),
    )?;
    Ok(doc.to_string())
}

/// Byte offset of the first line that starts (after blanks) with `[`: a table header,
/// unless it sits inside a multi-line value, which [`edit_root`] then fails to parse.
fn root_section_end(text: &str) -> usize {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('[') {
            return offset;
        }
        offset += line.len();
    }
    text.len()
}

/// `root` with `generation` set, when `root` parses alone and holds the key.
fn edit_root(root: &str, value: i64) -> Option<String> {
    let mut doc = root.parse::<DocumentMut>().ok()?;
    if !matches!(doc.get("generation"), Some(Item::Value(_))) {
        return None;
    }
    set(
        doc.as_table_mut(),
        "generation",
        "generation",
        Value::from(value),
    )
    .ok()?;
    let edited = doc.to_string();
    let check = edited.parse::<DocumentMut>().ok()?;
    (check.get("generation").and_then(Item::as_integer) == Some(value)).then_some(edited)
}

/// Parse text for editing.
///
/// # Errors
/// `Edit` when the text is not TOML.
pub fn document(text: &str) -> Result<DocumentMut, Error> {
    text.parse::<DocumentMut>().map_err(|e| Error::Edit {
        path: "(document)".into(),
        reason: e.to_string().trim_end().replace('\n', " "),
    })
}

/// Set `table[name] = value`, keeping the old value's surrounding whitespace and comments.
/// `path` names the key in errors.
///
/// # Errors
/// `Edit` when the existing item is a table (which a value cannot replace).
pub fn set(table: &mut dyn TableLike, name: &str, path: &str, value: Value) -> Result<(), Error> {
    let mut value = value;
    match table.get_mut(name) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
            Ok(())
        }
        Some(Item::None) | None => {
            table.insert(name, Item::Value(value));
            Ok(())
        }
        Some(_) => Err(Error::Edit {
            path: path.to_string(),
            reason: "expected a value, found a table".into(),
        }),
    }
}

/// The table (standard or inline) at `names` under `table`, e.g. `["products", "videos",
/// "database"]`.
///
/// # Errors
/// `Edit` naming the TOML path when a step is missing or not a table.
pub fn table_at<'a>(
    table: &'a mut dyn TableLike,
    names: &[&str],
) -> Result<&'a mut dyn TableLike, Error> {
    let mut at = table;
    let mut path = String::new();
    for name in names {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&key(name));
        at = at
            .get_mut(name)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| Error::Edit {
                path: path.clone(),
                reason: "missing, or not a table".into(),
            })?;
    }
    Ok(at)
}

/// A TOML array of strings.
pub fn string_array(items: &[String]) -> Value {
    Value::Array(items.iter().map(String::as_str).collect())
}

/// Whether two texts hold the same role map (the check that a textual edit did what the
/// typed transform meant).
pub fn same_map(text: &str, expected: &RoleMap) -> bool {
    types::parse(text).is_ok_and(|m| &m == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolemap::sample::host;

    const MAP: &str = concat!(
        "# Fleet map: keep this comment.\nschema = 1\n",
        "generation = 41        # raised by every publish\n",
        "\n[products.videos]   # the video site\ndomain = \"videos.example.com\"\ndocroot = \"/srv/videos\"\n",
        host!("web-1", "10.0.0.1", "a", ["web"], ["videos"]),
    );

    #[test]
    fn generation_edit_keeps_everything_else() {
        let edited = with_generation(MAP, 42).expect("editable");
        assert_eq!(
            edited,
            MAP.replace("generation = 41 ", "generation = 42 "),
            "only the number changes"
        );
    }

    #[test]
    fn generation_edit_falls_back_to_the_whole_document() {
        // A multi-line array whose lines start with '[' spans the cut.
        let tricky = MAP.replace("schema = 1\n", "schema = 1\nnested = [\n[1, 2],\n]\n");
        let edited = with_generation(&tricky, 7).expect("editable");
        assert_eq!(
            edited,
            tricky.replace("generation = 41 ", "generation = 7 ")
        );
        // No generation before the first header: set at the top level of the whole document.
        let missing = MAP.replace("generation = 41        # raised by every publish\n", "");
        let edited = with_generation(&missing, 7).expect("editable");
        assert_eq!(generation_of(&edited), Some(7));
        assert!(edited.contains("[products.videos]"));
    }

    #[test]
    fn first_publish_raises_the_file_generation() {
        let prepared = prepare(MAP, None).expect("valid");
        assert_eq!(prepared.generation, 42);
        assert_eq!(prepared.current_generation, None);
        assert!(prepared.changes.is_empty() && prepared.unified.is_empty());
    }

    #[test]
    fn publish_over_current_diffs_and_raises() {
        let current = MAP.replace("/srv/videos", "/srv/old");
        let prepared = prepare(MAP, Some(&current)).expect("valid");
        assert_eq!(prepared.generation, 42);
        let words: Vec<String> = prepared.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            words,
            [
                "generation 41 -> 42",
                "product videos: docroot /srv/old -> /srv/videos"
            ]
        );
        assert!(prepared.unified.contains("-docroot = \"/srv/old\""));
        assert!(prepared.unified.contains("+docroot = \"/srv/videos\""));
        assert!(prepared
            .unified
            .starts_with("--- published\n+++ to publish\n"));
    }

    #[test]
    fn a_file_ahead_of_the_current_map_goes_one_above_the_file() {
        let current = MAP.replace("generation = 41", "generation = 30");
        assert_eq!(prepare(MAP, Some(&current)).expect("ok").generation, 42);
    }

    #[test]
    fn a_file_edited_from_an_older_generation_is_stale() {
        let current = MAP.replace("generation = 41", "generation = 43");
        let err = prepare(MAP, Some(&current)).expect_err("stale");
        assert!(
            matches!(
                err,
                Error::Stale {
                    file: 41,
                    current: 43
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_unreadable_current_map_still_allows_a_repair() {
        let prepared = prepare(MAP, Some("this is = = not toml")).expect("repairs");
        assert_eq!(prepared.generation, 42);
        assert_eq!(prepared.current_generation, None);
        assert!(prepared.changes.is_empty());
    }

    #[test]
    fn invalid_maps_are_refused() {
        let bad = MAP.replace("az = \"a\"", "az = \"a b\"");
        let err = prepare(&bad, None).expect_err("invalid");
        let Error::Invalid(super::super::Error::Invalid { issues }) = err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert_eq!(issues[0].path, "hosts.web-1.az");
    }

    #[test]
    fn set_inserts_and_refuses_tables() {
        let mut doc = document(MAP).expect("toml");
        let videos = table_at(doc.as_table_mut(), &["products", "videos"]).expect("table");
        set(
            videos,
            "health_path",
            "products.videos.health_path",
            Value::from("/up"),
        )
        .expect("inserted");
        assert!(doc.to_string().contains("health_path = \"/up\""));
        let err =
            set(doc.as_table_mut(), "products", "products", Value::from(1)).expect_err("a table");
        assert!(err.to_string().contains("products"), "{err}");
        let Err(err) = table_at(doc.as_table_mut(), &["products", "nope"]) else {
            panic!("products.nope is missing");
        };
        assert!(err.to_string().contains("products.nope"), "{err}");
    }
}

//! Text for people: an error with its whole chain of causes, strings from untrusted input
//! made safe and short enough to print (issue 15: no terminal escapes, no forged lines,
//! bounded output), milliseconds, hex digests, and the names enums are written with
//! (`named!`). A leaf: it imports nothing from the crate, so every
//! stage can use it without an import circle.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The error and all its sources as `a: b: c`, skipping repeats (Tera's useful message,
/// for one, is in a source, not the top line).
pub fn chain(err: &dyn StdError) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Declares a fieldless enum whose variants each have one name (in the catalog, the map,
/// reports or marker paths) with `as_str` and `Display`, so each name is written once:
///
/// ```ignore
/// named! {
///     /// What started a reconcile.
///     pub enum Trigger {
///         /// Daemon start.
///         Boot = "boot",
///     }
/// }
/// ```
///
/// The enum must derive serde's `Serialize` or `Deserialize`: each variant is renamed to its
/// name there too.
macro_rules! named {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Its name, as the catalog, the map, reports and markers spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use named;

/// Characters of one value kept in a message.
pub const VALUE_MAX: usize = 120;
/// Characters of one output line kept.
pub const LINE_MAX: usize = 2000;

/// `s` safe to print on a terminal: control characters (ESC, CR, LF, …) escaped as Rust's
/// `{:?}` does, and at most `max` characters kept, the rest counted.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (kept, c) in s.chars().enumerate() {
        if kept == max {
            let rest = s.len() - s.char_indices().nth(max).map_or(s.len(), |(i, _)| i);
            out.push_str(&format!("… ({rest} more bytes)"));
            break;
        }
        match c {
            '\\' => out.push('\\'),
            c if c.is_control() || is_invisible(c) => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    out
}

/// Bidirectional overrides and zero-width characters: not control characters, but they
/// make a terminal show something other than the bytes.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` in double quotes for a message, escaped and at most [`VALUE_MAX`] characters.
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", printable(s, VALUE_MAX).replace('"', "\\\""))
}

/// A parse error at byte `at` of `text`, bounded whatever the input: `line L, column C:
/// message` then the start of the offending line around the column.
pub fn located(text: &str, at: usize, message: &str) -> String {
    let at = floor_char_boundary(text, at.min(text.len()));
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..at].matches('\n').count() + 1;
    let column = text[line_start..at].chars().count() + 1;
    let from = floor_char_boundary(text, at.saturating_sub(VALUE_MAX / 2).max(line_start));
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let excerpt = printable(&text[from..line_end], VALUE_MAX);
    let lead = if from > line_start { "…" } else { "" };
    format!(
        "line {line}, column {column}: {}: {lead}{excerpt}",
        printable(message, 2 * VALUE_MAX)
    )
}

/// toml's error about `text`, bounded: toml's own text repeats the whole offending line
/// and a caret line as long (issue 15: a 50 MB one-line map made 100 MB of error).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => located(text, span.start, e.message()),
        None => printable(e.message(), LINE_MAX),
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Whole milliseconds of `duration`, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whole milliseconds since `started`.
pub fn elapsed_ms(started: Instant) -> u64 {
    millis(started.elapsed())
}

/// Lowercase hex SHA-256 of `bytes`: the file source's ETag, the cache's integrity check,
/// the managed-file records, the render memo.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `bytes` (a digest) in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

/// Assert that `text` holds each of `needles`, naming the missing one and showing the text.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading /x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(chain(&Outer(io)), "reading /x: no such file");
    }

    #[test]
    fn printable_escapes_control_characters_and_bounds_length() {
        assert_eq!(printable("plain text", 100), "plain text");
        assert_eq!(
            printable("a\u{1b}[2J\nhost x: added", 100),
            "a\\u{1b}[2J\\nhost x: added"
        );
        assert_eq!(printable("\u{202e}evil", 100), "\\u{202e}evil");
        let long = "x".repeat(10_000);
        let shown = printable(&long, 10);
        assert_eq!(shown, "xxxxxxxxxx… (9990 more bytes)");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn located_is_bounded_and_points_at_the_line() {
        let huge = format!("a = 1\nb = \"{}\nc = 2\n", "y".repeat(50_000_000));
        let at = 6 + 4 + 40_000_000;
        let text = located(&huge, at, "invalid string");
        assert!(
            text.starts_with("line 2, column 40000005: invalid string: …"),
            "{}",
            &text[..80]
        );
        assert!(text.len() < 400, "{} bytes", text.len());
        let small = located("x = [\n", 5, "unclosed array");
        assert_eq!(small, "line 1, column 6: unclosed array: x = [");
        assert_eq!(located("x = [\n", 6, "m"), "line 2, column 1: m: ");
        assert!(located("é", 1, "m").starts_with("line 1, column 1"));
    }

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn sha256_hex_matches_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

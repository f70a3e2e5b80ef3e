//! The lines of a map written the way rolecall writes it, read without a lexer (issue 13):
//! blank lines, comment lines of printable ASCII, `[a.b]` headers of bare keys, and
//! `key = value` lines whose value is a basic string of printable ASCII without escapes, a
//! decimal integer, or an array of those on the line, written with one space around `=`
//! and after each comma. TOML reads such a line only one way, the way read here. A piece
//! with any other line (a quoted key, an escape, a datetime, a trailing comment, CRLF, …)
//! is read from toml_parser's events instead, which decide and word what is wrong.

use std::borrow::Cow;

use super::Value;

/// One line that says something.
pub(super) enum Line<'s> {
    /// `[keys]`: the bare keys between the brackets, joined by dots.
    Header(&'s str),
    /// `key = value`.
    Pair(&'s str, Value<'s>),
}

/// The lines of `piece` that say something, in order, added to `out`; `None` when a line
/// is written otherwise than above.
pub(super) fn scan<'s>(piece: &'s str, out: &mut Vec<Line<'s>>) -> Option<()> {
    for text in piece.split_terminator('\n') {
        match text.as_bytes().first() {
            None => {}
            Some(b'#') => text.bytes().skip(1).all(printable).then_some(())?,
            Some(b'[') => {
                let keys = text.strip_prefix('[')?.strip_suffix(']')?;
                keys.split('.').all(bare).then_some(())?;
                out.push(Line::Header(keys));
            }
            Some(_) => {
                let end = text
                    .bytes()
                    .position(|b| !is_bare(b))
                    .filter(|&end| end > 0)?;
                let (key, text) = (&text[..end], text[end..].strip_prefix(" = ")?);
                let (value, rest) = value(text)?;
                rest.is_empty().then_some(())?;
                out.push(Line::Pair(key, value));
            }
        }
    }
    Some(())
}

/// A bare key: ASCII letters, digits, `_` and `-`, at least one.
fn bare(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(is_bare)
}

fn is_bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Printable ASCII: no control character, no tab, nothing TOML would read otherwise.
fn printable(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

/// The value `text` starts with, and the text after it.
fn value(text: &str) -> Option<(Value<'_>, &str)> {
    match text.as_bytes().first()? {
        b'[' => array(&text[1..]),
        _ => scalar(text),
    }
}

/// The items of an array after its `[`, and the text after its `]`.
fn array(mut text: &str) -> Option<(Value<'_>, &str)> {
    let mut items = Vec::new();
    if let Some(rest) = text.strip_prefix(']') {
        return Some((Value::Array(items), rest));
    }
    loop {
        let (item, rest) = scalar(text)?;
        items.push(item);
        if let Some(rest) = rest.strip_prefix(']') {
            return Some((Value::Array(items), rest));
        }
        text = rest.strip_prefix(", ")?;
    }
}

/// The string or integer `text` starts with, and the text after it.
fn scalar(text: &str) -> Option<(Value<'_>, &str)> {
    let bytes = text.as_bytes();
    if bytes.first() == Some(&b'"') {
        let len = bytes[1..]
            .iter()
            .position(|&b| !printable(b) || b == b'"' || b == b'\\')?;
        (bytes[1 + len] == b'"').then_some(())?;
        let value = Value::Str(Cow::Borrowed(&text[1..1 + len]));
        return Some((value, &text[len + 2..]));
    }
    let sign = usize::from(bytes.first() == Some(&b'-'));
    let digits = bytes[sign..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    // TOML refuses a leading zero (`01`); `0` and `-0` are zero.
    (digits == 1 || (digits > 1 && bytes[sign] != b'0')).then_some(())?;
    let end = sign + digits;
    let n = text[..end].parse().ok()?;
    Some((Value::Int(n), &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(text: &str) -> Option<usize> {
        let mut out = Vec::new();
        scan(text, &mut out).map(|()| out.len())
    }

    #[test]
    fn lines_written_as_rolecall_writes_them_are_scanned() {
        let text = "# a fleet ~ [x] = \"y\"\nschema = 1\ngeneration = -0\n\n\
            [products.p-1_x]\ndomain = \"a # b = [c]\"\naliases = []\n\
            [hosts.9]\nroles = [\"web\", \"db\"]\nwaves = [10, 0, -3]\nempty = \"\"";
        assert_eq!(scanned(text), Some(9));
    }

    #[test]
    fn lines_written_otherwise_are_left_to_the_events() {
        for text in [
            "a = 1 # comment\n",
            "a=1\n",
            "a  = 1\n",
            "a = 1\r\n",
            "\"a\" = 1\n",
            "a.b = 1\n",
            "[a . b]\n",
            "[a.\"b\"]\n",
            "[[a]]\n",
            "[a..b]\n",
            "[]\n",
            "a = \"\\u0041\"\n",
            "a = \"\t\"\n",
            "a = \"é\"\n",
            "a = 'x'\n",
            "a = \"\"\"x\"\"\"\n",
            "a = \"\"\"\n",
            "a = 01\n",
            "a = +1\n",
            "a = 1_000\n",
            "a = 0x10\n",
            "a = 1.5\n",
            "a = true\n",
            "a = 9223372036854775808\n",
            "a = 2026-12-06T10:00:00Z\n",
            "a = [1,2]\n",
            "a = [ 1 ]\n",
            "a = [1, ]\n",
            "a = [[1]]\n",
            "a = [\n",
            "a = { b = 1 }\n",
            "a = \"x\" \"y\"\n",
            "a = -\n",
            "a = \n",
            "# a \u{7f} del\n",
            "#\ttab\n",
        ] {
            assert_eq!(scanned(text), None, "{text:?}");
        }
    }
}

//! A bound on how deeply a template's expressions nest parentheses and brackets, checked
//! before Tera parses the text. Tera's parser backtracks exponentially on unclosed nested
//! calls with keyword arguments (`f(a = g(b = h(…`): 10 of them take ~2 s, 12 ~17 s, found by
//! the catalog fuzz target. No configuration template needs more than a few levels.

/// The deepest nesting of `(` and `[` inside one `{{ }}` or `{% %}` tag that is accepted.
pub const MAX_NESTING: usize = 6;

/// The deepest nesting in `text`'s tags when it is over [`MAX_NESTING`]. Quoted strings
/// are skipped; text outside tags (and comments) is not an expression and does not count.
pub fn too_deep(text: &str) -> Option<usize> {
    let mut deepest = 0;
    let mut rest = text;
    while let Some(open) = next_tag(rest) {
        let (depth, after) = tag_depth(&rest[open + 2..]);
        deepest = deepest.max(depth);
        rest = after;
    }
    (deepest > MAX_NESTING).then_some(deepest)
}

/// Where the next expression or statement tag opens.
fn next_tag(text: &str) -> Option<usize> {
    let expression = text.find("{{");
    let statement = text.find("{%");
    match (expression, statement) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The deepest nesting of one tag's body, and the text after the tag (or the end).
fn tag_depth(body: &str) -> (usize, &str) {
    let (mut depth, mut deepest) = (0usize, 0);
    let mut quote: Option<char> = None;
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, ')' | ']') => depth = depth.saturating_sub(1),
            (None, '}' | '%') if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                return (deepest, &body[i + 2..]);
            }
            (None, _) => {}
        }
    }
    (deepest, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_expressions_count_and_quotes_are_skipped() {
        assert_eq!(too_deep("{{ a(b(c(d(e(f(g(h))))))) }}"), Some(7));
        assert_eq!(
            too_deep("{{ a(b(c(d(e(f))))) }}"),
            None,
            "6 levels are fine"
        );
        assert_eq!(too_deep("(((((((((( plain text ))))))))))"), None);
        assert_eq!(too_deep("{{ x | default(value=\"(((((((((\") }}"), None);
        assert_eq!(too_deep("{% if a([[[[[[[ %}"), Some(8), "unclosed counts");
        assert_eq!(too_deep("{{ a }} ((((((((( {{ b(c) }}"), None);
    }

    #[test]
    fn the_fuzzers_slow_input_is_refused_before_parsing() {
        let text = format!("{{{{ {} }}}}", "f(a = g".repeat(12));
        assert_eq!(too_deep(&text), Some(12));
    }
}

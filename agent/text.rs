//! Text for people: an error with its whole chain of causes, and milliseconds. A leaf:
//! it imports nothing from the crate, so every stage can use it without an import circle.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

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

/// Whole milliseconds of `duration`, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whole milliseconds since `started`.
pub fn elapsed_ms(started: Instant) -> u64 {
    millis(started.elapsed())
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
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}

//! The `[rollout]` table as `map publish` writes it (SPEC §9.2), pure: `--rollout` stages
//! the publish (the table written with `start` = the publish time), and a publish without
//! it, like every `map promote`, goes out at once (the table removed). A rollout belongs to
//! one publish: a copy of the published map carries the last publish's table, whose start
//! has passed, and publishing it again must not look staged. The rest of the text is kept
//! as written (`toml_edit`, or a plain append when the text has no `rollout` at all); the
//! result is validated with the whole map by `prepare`.

use std::time::Duration;

use toml_edit::{value, Array, DocumentMut, Item, Table};

use super::prepare::{document, Error};

/// What `map publish --rollout W --bake B [--max-failed N]` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    /// Cumulative percents, as given (validation checks them).
    pub waves: Vec<i64>,
    /// The bake, as given (`"10m"`).
    pub bake: String,
    /// Failed or silent hosts tolerated.
    pub max_failed: i64,
}

/// `text` with its `[rollout]` replaced by `staging` starting at `start` (since the Unix
/// epoch), or removed when `staging` is `None`; the second value says whether a table was
/// removed or replaced.
///
/// # Errors
/// `Edit` when the text is not TOML, or `start` is not a time TOML can write.
pub fn with_rollout(
    text: &str,
    staging: Option<&Staging>,
    start: Duration,
) -> Result<(String, bool), Error> {
    let table = staging.map(|s| table(s, start)).transpose()?;
    // Only a text that mentions `rollout` can hold the table: others are appended to.
    if !text.contains("rollout") {
        return Ok((append(text, table), false));
    }
    let mut doc: DocumentMut = document(text)?;
    let had = doc.remove("rollout").is_some();
    if let Some(table) = table {
        doc.insert("rollout", Item::Table(table));
    }
    Ok((doc.to_string(), had))
}

fn append(text: &str, table: Option<Table>) -> String {
    let Some(table) = table else {
        return text.to_string();
    };
    let mut doc = DocumentMut::new();
    doc.insert("rollout", Item::Table(table));
    let newline = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!(
        "{text}{newline}\n{}",
        doc.to_string().trim_start_matches('\n')
    )
}

fn table(s: &Staging, start: Duration) -> Result<Table, Error> {
    let start = rfc3339(start)
        .parse::<toml_edit::Datetime>()
        .map_err(|e| Error::Edit {
            path: "rollout.start".into(),
            reason: e.to_string(),
        })?;
    let mut table = Table::new();
    table.decor_mut().set_prefix(
        "# Staged by `rolecall map publish --rollout`: wave k opens at start + k × bake.\n",
    );
    table.insert("waves", value(s.waves.iter().copied().collect::<Array>()));
    table.insert("bake", value(s.bake.as_str()));
    table.insert("start", value(start));
    table.insert("max_failed", value(s.max_failed));
    Ok(table)
}

fn rfc3339(since_epoch: Duration) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "# fleet\nschema = 1\ngeneration = 3\n\n[hosts.a]\naddress = \"10.0.0.1\"\naz = \"z\"\nroles = [\"web\"] # keep me\n";

    fn staging() -> Staging {
        Staging {
            waves: vec![1, 10, 50, 100],
            bake: "10m".into(),
            max_failed: 0,
        }
    }

    const START: Duration = Duration::from_secs(1_796_400_000);

    #[test]
    fn a_staged_publish_appends_the_table_with_start_now() {
        let (text, replaced) = with_rollout(MAP, Some(&staging()), START).unwrap();
        assert!(!replaced);
        assert!(text.starts_with(MAP), "the operator's text is kept: {text}");
        let map = crate::rolemap::load(text.as_bytes()).expect("valid");
        let schedule = crate::fleet::waves::Schedule::of(&map).expect("a schedule");
        assert_eq!(schedule.start, START);
        assert_eq!(schedule.bake, Duration::from_secs(600));
        assert!(text.contains("start = 2026-12-04T16:00:00Z"), "{text}");
    }

    #[test]
    fn a_second_publish_replaces_or_removes_the_old_table() {
        let (staged, _) = with_rollout(MAP, Some(&staging()), START).unwrap();
        let later = Duration::from_secs(START.as_secs() + 3600);
        let again = Staging {
            waves: vec![50, 100],
            ..staging()
        };
        let (text, replaced) = with_rollout(&staged, Some(&again), later).unwrap();
        assert!(replaced);
        let map = crate::rolemap::load(text.as_bytes()).expect("valid");
        let schedule = crate::fleet::waves::Schedule::of(&map).unwrap();
        assert_eq!((schedule.waves, schedule.start), (vec![50, 100], later));
        let (plain, removed) = with_rollout(&staged, None, later).unwrap();
        assert!(removed);
        assert!(crate::rolemap::load(plain.as_bytes())
            .unwrap()
            .rollout
            .is_none());
        assert!(plain.contains("roles = [\"web\"] # keep me"), "{plain}");
        assert_eq!(
            with_rollout(MAP, None, later).unwrap(),
            (MAP.to_string(), false)
        );
    }
}

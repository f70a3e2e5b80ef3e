//! Checks for files under `/etc/cron.d` (SPEC §6), run on the rendered bytes before they are
//! written, because cron picks the directory up on its own. Pure. The rules follow what
//! Debian's cron enforces: file name characters, root ownership, no group/other write,
//! a trailing newline, and per line five time fields (or an `@` special), a user, a command.
//! Values quoted in a problem are escaped and bounded (issue 15), as a rendered line can hold
//! anything a template put there.

use std::path::Path;

use crate::text::quoted;

/// The directory whose files get these checks.
pub const CRON_DIR: &str = "/etc/cron.d";

const SPECIALS: [&str; 8] = [
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
/// (min, max) of minute, hour, day of month, month, day of week.
const RANGES: [(u32, u32); 5] = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];

/// Whether `path` is a cron.d file.
pub fn is_cron_file(path: &Path) -> bool {
    path.parent() == Some(Path::new(CRON_DIR))
}

/// Every problem of a cron.d file, as `line N: …` or file-level messages.
pub fn check(path: &Path, content: &[u8], owner: &str, mode: u32) -> Vec<String> {
    let mut problems = Vec::new();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.push(format!(
            "file name {} is ignored by cron (only letters, digits, '-' and '_')",
            quoted(&name)
        ));
    }
    if owner != "root" && owner != "0" {
        problems.push(format!(
            "owner {}: cron only reads files owned by root",
            quoted(owner)
        ));
    }
    if mode & 0o022 != 0 {
        problems.push(format!(
            "mode {mode:04o}: cron refuses files writable by group or others"
        ));
    }
    problems.extend(content_problems(content));
    problems
}

/// The problems of the file's text: its last newline, its encoding, each line.
fn content_problems(content: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    if !content.ends_with(b"\n") {
        problems.push("no newline at the end: cron ignores the last line".to_string());
    }
    let Ok(text) = std::str::from_utf8(content) else {
        problems.push("not UTF-8 text".to_string());
        return problems;
    };
    for (i, line) in text.lines().enumerate() {
        if let Err(why) = check_line(line) {
            problems.push(format!("line {}: {why}", i + 1));
        }
    }
    problems
}

fn check_line(line: &str) -> Result<(), String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || is_assignment(line) {
        return Ok(());
    }
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or_default();
    if first.starts_with('@') {
        if !SPECIALS.contains(&first) {
            return Err(format!(
                "{} is not a cron special like @daily",
                quoted(first)
            ));
        }
    } else {
        check_field(0, first)?;
        for index in 1..5 {
            let field = words.next().ok_or("fewer than five time fields")?;
            check_field(index, field)?;
        }
    }
    let user = words.next().ok_or("no user column")?;
    if !user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(format!("{} is not a user name", quoted(user)));
    }
    if words.next().is_none() {
        return Err("no command after the user column".to_string());
    }
    Ok(())
}

fn is_assignment(line: &str) -> bool {
    line.split_once('=').is_some_and(|(name, _)| {
        let name = name.trim();
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn check_field(index: usize, field: &str) -> Result<(), String> {
    let names: &[&str] = match index {
        3 => &MONTHS,
        4 => &DAYS,
        _ => &[],
    };
    let (min, max) = RANGES[index];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(step) = step {
            step.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| {
                format!(
                    "{}: step {} is not a positive number",
                    quoted(field),
                    quoted(step)
                )
            })?;
        }
        if range == "*" {
            continue;
        }
        for bound in range.splitn(2, '-') {
            let ok = names.contains(&bound.to_ascii_lowercase().as_str())
                || bound.parse::<u32>().is_ok_and(|n| (min..=max).contains(&n));
            if !ok {
                return Err(format!(
                    "{}: {} is outside {min}-{max}",
                    quoted(field),
                    quoted(bound)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(name: &str, text: &str) -> Vec<String> {
        check(
            &Path::new(CRON_DIR).join(name),
            text.as_bytes(),
            "root",
            0o644,
        )
    }

    #[test]
    fn accepts_a_good_file() {
        let text = "# managed\nSHELL=/bin/sh\n*/15 * * * * root rolecall snapshot --product videos\n@daily root true\n";
        assert_eq!(problems("rolecall-videos", text), Vec::<String>::new());
    }

    #[test]
    fn refuses_dotted_names() {
        assert!(problems("rolecall.cron", "@daily root true\n")[0].contains("file name"));
    }

    #[test]
    fn requires_trailing_newline() {
        assert!(problems("x", "@daily root true")[0].contains("newline"));
    }

    #[test]
    fn requires_five_fields_and_user() {
        assert!(problems("x", "*/15 * * * rolecall\n")[0].contains("line 1"));
        assert!(problems("x", "*/15 * * * * root\n")[0].contains("no command"));
    }

    #[test]
    fn checks_ranges_and_specials() {
        assert!(problems("x", "61 * * * * root true\n")[0].contains("0-59"));
        assert!(problems("x", "@sometimes root true\n")[0].contains("special"));
        assert!(problems("x", "0 0 * jan mon root true\n").is_empty());
    }

    /// Found by the `cron` fuzz target: a problem quoted the whole offending field, so one
    /// long word made an error as long as the line, control characters included.
    #[test]
    fn issue_15_problems_are_bounded_and_escaped() {
        let word = format!("\u{1b}[2J{}", "9".repeat(1_000_000));
        let lines = [
            format!("{word} * * * * root true\n"),
            format!("* * * * */{word} root true\n"),
            format!("@{word} root true\n"),
            format!("@daily {word} true\n"),
        ];
        for text in lines {
            let found = problems("x", &text);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].len() < 400, "{} bytes", found[0].len());
            assert!(found[0].contains("\\u{1b}[2J"), "{}", found[0]);
            assert!(!found[0].contains('\u{1b}'), "{}", found[0]);
        }
        let long_name = format!("x.{}", "y".repeat(100_000));
        let found = problems(&long_name, "@daily root true\n");
        assert!(found[0].len() < 400, "{} bytes", found[0].len());
    }

    #[test]
    fn requires_root_and_safe_mode() {
        let p = Path::new("/etc/cron.d/x");
        assert_eq!(check(p, b"@daily root true\n", "www-data", 0o664).len(), 2);
    }
}

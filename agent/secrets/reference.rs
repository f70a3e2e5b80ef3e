//! Secret references (SPEC §10): `ssm:/path/name` (a Parameter Store parameter, read with
//! decryption) and `secretsmanager:name` (a Secrets Manager secret's `SecretString`), each
//! optionally followed by `#key` to take one string field of a JSON object. Pure: parsing,
//! and the value type that never prints itself.

use std::fmt;

/// Where a secret lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Store {
    /// SSM Parameter Store.
    Ssm,
    /// Secrets Manager.
    SecretsManager,
}

/// A parsed reference; its text is what messages name (never the value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// The service.
    pub store: Store,
    /// Parameter name (`/heavy/tv/db-password`) or secret id (`heavy/tv/db`).
    pub name: String,
    /// A field of the value's JSON object, after `#`.
    pub key: Option<String>,
}

/// The prefixes that make a string a reference (a `[vars]` value starting with one is one).
pub const PREFIXES: [&str; 2] = ["ssm:", "secretsmanager:"];

/// Whether `text` is meant as a reference (it may still be malformed).
pub fn looks_like(text: &str) -> bool {
    PREFIXES.iter().any(|p| text.starts_with(p))
}

impl Reference {
    /// Parse `ssm:/path[#key]` or `secretsmanager:name[#key]`.
    ///
    /// # Errors
    /// Why the text is not a reference (fit for a validation message).
    pub fn parse(text: &str) -> Result<Reference, &'static str> {
        let (store, rest) = if let Some(rest) = text.strip_prefix("ssm:") {
            (Store::Ssm, rest)
        } else if let Some(rest) = text.strip_prefix("secretsmanager:") {
            (Store::SecretsManager, rest)
        } else {
            return Err("must start with ssm: or secretsmanager:");
        };
        let (name, key) = match rest.split_once('#') {
            Some((name, key)) => (name, Some(key)),
            None => (rest, None),
        };
        check_name(store, name)?;
        if let Some(key) = key {
            check_key(key)?;
        }
        Ok(Reference {
            store,
            name: name.to_string(),
            key: key.map(str::to_string),
        })
    }
}

/// Parameter Store names are `/`-rooted paths of `[A-Za-z0-9_.-]` (AWS's own rule); Secrets
/// Manager ids are `[A-Za-z0-9/_+=.@-]`. Both at most 2048 characters.
fn check_name(store: Store, name: &str) -> Result<(), &'static str> {
    let ok = match store {
        Store::Ssm => {
            name.starts_with('/')
                && !name.ends_with('/')
                && !name.contains("//")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
        }
        Store::SecretsManager => name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c)),
    };
    match ok && !name.is_empty() && name.len() <= 2048 {
        true => Ok(()),
        false => Err(match store {
            Store::Ssm => "must be ssm:/path/name with letters, digits, '_', '.', '-' and '/'",
            Store::SecretsManager => {
                "must be secretsmanager:name with letters, digits and '/_+=.@-'"
            }
        }),
    }
}

fn check_key(key: &str) -> Result<(), &'static str> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    ok.then_some(())
        .ok_or("has a #key that is not letters, digits, '_', '.' or '-'")
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.store {
            Store::Ssm => "ssm:",
            Store::SecretsManager => "secretsmanager:",
        };
        write!(f, "{prefix}{}", self.name)?;
        match &self.key {
            Some(key) => write!(f, "#{key}"),
            None => Ok(()),
        }
    }
}

/// A secret's value. No `Display`, and `Debug` prints `[redacted]`: a value reaches a
/// template and nothing else (not a log line, an error, a report or a state file).
#[derive(Clone, PartialEq, Eq)]
pub struct Value(String);

impl Value {
    /// Wrap a value read from its store.
    ///
    /// # Errors
    /// A value with a control character (a newline would end a config directive and start
    /// another one in the file it is written into).
    pub fn new(text: String) -> Result<Value, &'static str> {
        match text.chars().any(char::is_control) {
            true => Err("its value holds a control character (newline, tab, …), refused"),
            false => Ok(Value(text)),
        }
    }

    /// The value, for the render context only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print_back() {
        for text in [
            "ssm:/heavy/tv/db-password",
            "secretsmanager:heavy/tv/db",
            "secretsmanager:heavy/tv/db#password",
            "ssm:/a#b.c",
        ] {
            let r = Reference::parse(text).unwrap();
            assert_eq!(r.to_string(), text);
        }
        let r = Reference::parse("secretsmanager:heavy/tv/db#password").unwrap();
        assert_eq!(r.store, Store::SecretsManager);
        assert_eq!(r.name, "heavy/tv/db");
        assert_eq!(r.key.as_deref(), Some("password"));
    }

    #[test]
    fn malformed_references_are_refused() {
        for text in [
            "vault:/x",
            "ssm:relative",
            "ssm:/",
            "ssm:/a//b",
            "ssm:/a b",
            "secretsmanager:",
            "secretsmanager:a b",
            "secretsmanager:x#",
            "secretsmanager:x#a b",
            "ssm:/x\n",
        ] {
            assert!(Reference::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_value_never_prints_itself_and_refuses_newlines() {
        let v = Value::new("hunter2".into()).unwrap();
        assert_eq!(format!("{v:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&v)), "Some([redacted])");
        assert!(Value::new("a\nb".into()).is_err());
    }
}

//! Agent configuration (`/etc/rolecall/agent.toml`, SPEC §4): `RawConfig` as written,
//! validated into typed `Settings`. Pure apart from `Settings::load`, which reads the file.
//! Relative paths in the file are resolved against the file's own directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::catalog::Command;

/// Errors reading or validating agent.toml.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading agent configuration {path}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("parsing agent configuration {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// A value is present but not acceptable.
    #[error("agent configuration {path}: {key}: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// TOML path of the key.
        key: String,
        /// Why it is not acceptable.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    identity: RawIdentity,
    map: RawMap,
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    vars: toml::Table,
    #[serde(default)]
    services: BTreeMap<String, RawServiceOverride>,
    #[serde(default)]
    status: RawStatus,
    report: Option<RawReport>,
    #[serde(default)]
    accounts: RawAccounts,
    #[serde(default)]
    secrets: RawSecrets,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    source: String,
    id: Option<String>,
    address: Option<String>,
    az: Option<String>,
    region: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    url: String,
    poll_interval: Option<String>,
    jitter: Option<String>,
    timeout: Option<String>,
    verify_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    catalog: Option<PathBuf>,
    templates: Option<PathBuf>,
    state: Option<PathBuf>,
    allowed_roots: Option<Vec<PathBuf>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    metrics_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    url: String,
    heartbeat: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAccounts {
    manage: Option<bool>,
    uid_range: Option<Vec<i64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    refresh: Option<String>,
}

/// `[services.NAME]`: replaces the catalog's commands for one service.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawServiceOverride {
    check: Option<String>,
    reload: Option<String>,
    restart: Option<String>,
    timeout: Option<String>,
}

/// Where the host's identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityConfig {
    /// IMDSv2, retried until the deadline.
    Imds {
        /// Overall deadline for one identity lookup.
        deadline: Duration,
    },
    /// Fixed values from agent.toml (physical hosts, tests).
    Static(crate::identity::Identity),
}

/// Per-service command overrides, already split into argv.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceOverride {
    /// Replaces the catalog's check command.
    pub check: Option<Command>,
    /// Replaces the catalog's reload command.
    pub reload: Option<Command>,
    /// Replaces the catalog's restart command.
    pub restart: Option<Command>,
    /// Replaces the per-command timeout.
    pub timeout: Option<Duration>,
}

/// `[report]` (SPEC §9.1): where the host reports its state for `fleet status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    /// Prefix written under, ending in `/`: `s3://bucket/prefix/` or `file:///dir/`.
    pub url: String,
    /// The record is rewritten at least this often.
    pub heartbeat: Duration,
}

/// `[accounts]` (SPEC §10): whether the map's product accounts are created on this host,
/// and the id range inside which rolecall may remove the accounts it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountSettings {
    /// Create and converge the accounts of the host's products (default true).
    pub manage: bool,
    /// Inclusive range of uids and gids rolecall may remove (default 20000-29999).
    pub range: (u32, u32),
}

/// The managed id range when agent.toml does not set one.
pub const DEFAULT_UID_RANGE: (u32, u32) = (20000, 29999);

impl Default for AccountSettings {
    fn default() -> AccountSettings {
        AccountSettings {
            manage: true,
            range: DEFAULT_UID_RANGE,
        }
    }
}

/// Validated agent configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file it was read from.
    pub path: PathBuf,
    /// Identity source.
    pub identity: IdentityConfig,
    /// Map URL (`s3://`, `https://`, `http://` for loopback tests, `file://`).
    pub map_url: String,
    /// Time between polls.
    pub poll_interval: Duration,
    /// Random extra delay in `[0, jitter]` added to each poll.
    pub jitter: Duration,
    /// Timeout of one fetch.
    pub fetch_timeout: Duration,
    /// Public key file for signed maps.
    pub verify_key: Option<PathBuf>,
    /// Directory of role definitions (`<role>.toml`).
    pub catalog_dir: PathBuf,
    /// Directory of Tera templates.
    pub templates_dir: PathBuf,
    /// State directory (before `--root`).
    pub state_dir: PathBuf,
    /// Only paths under these may be written (before `--root`).
    pub allowed_roots: Vec<PathBuf>,
    /// `[vars]`, visible to templates as `vars`.
    pub vars: toml::Table,
    /// `[services.NAME]` overrides.
    pub services: BTreeMap<String, ServiceOverride>,
    /// Directory for the Prometheus textfile, if any.
    pub metrics_dir: Option<PathBuf>,
    /// `[report]`; `None`: the host reports nothing.
    pub report: Option<ReportSettings>,
    /// `[accounts]`.
    pub accounts: AccountSettings,
    /// `[secrets] refresh` (SPEC §10): how often the daemon reads the secrets again while
    /// the map and catalog stay the same (default 1 h, jittered by up to a tenth less).
    pub secrets_refresh: Duration,
}

/// Default allowed roots (SPEC §4, plus the monitor role's munin-node directory).
pub const DEFAULT_ALLOWED_ROOTS: [&str; 7] = [
    "/etc/apache2",
    "/etc/mysql",
    "/etc/cron.d",
    "/etc/memcached.conf",
    "/etc/munin/munin-node.conf",
    "/etc/rolecall/products",
    "/etc/rolecall/replication.password",
];

impl Settings {
    /// Read and validate `path`.
    ///
    /// # Errors
    /// I/O, TOML syntax, unknown keys, bad durations, URLs, paths or commands.
    pub fn load(path: &Path) -> Result<Settings, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::from_toml(&text, path)
    }

    /// Validate config text as if read from `path` (relative paths resolve against its directory).
    ///
    /// # Errors
    /// See [`Settings::load`].
    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, Error> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: crate::text::toml_error(text, &e),
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Validator {
            path,
            base: absolute.parent().unwrap_or(Path::new("/")),
        }
        .settings(raw)
    }
}

struct Validator<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn settings(&self, raw: RawConfig) -> Result<Settings, Error> {
        let paths = raw.paths;
        let allowed = paths
            .allowed_roots
            .unwrap_or_else(|| DEFAULT_ALLOWED_ROOTS.iter().map(PathBuf::from).collect());
        for (i, root) in allowed.iter().enumerate() {
            self.absolute(&format!("paths.allowed_roots[{i}]"), root)?;
        }
        Ok(Settings {
            path: self.path.to_path_buf(),
            identity: self.identity(raw.identity)?,
            map_url: self.url(&raw.map.url)?,
            poll_interval: self.duration("map.poll_interval", raw.map.poll_interval, "30s")?,
            jitter: self.duration("map.jitter", raw.map.jitter, "10s")?,
            fetch_timeout: self.duration("map.timeout", raw.map.timeout, "10s")?,
            verify_key: raw.map.verify_key.map(|p| self.resolve(&p)),
            catalog_dir: self.resolve(&paths.catalog.unwrap_or("/etc/rolecall/roles".into())),
            templates_dir: self
                .resolve(&paths.templates.unwrap_or("/etc/rolecall/templates".into())),
            state_dir: self.resolve(&paths.state.unwrap_or("/var/lib/rolecall".into())),
            allowed_roots: allowed,
            vars: self.vars(raw.vars)?,
            services: self.services(raw.services)?,
            metrics_dir: raw.status.metrics_dir.map(|p| self.resolve(&p)),
            report: raw.report.map(|r| self.report(r)).transpose()?,
            accounts: self.accounts(raw.accounts)?,
            secrets_refresh: self.refresh(raw.secrets)?,
        })
    }

    fn accounts(&self, raw: RawAccounts) -> Result<AccountSettings, Error> {
        let range = match raw.uid_range.as_deref() {
            None => DEFAULT_UID_RANGE,
            Some(&[lo, hi]) => match (u32::try_from(lo), u32::try_from(hi)) {
                (Ok(lo), Ok(hi)) if 0 < lo && lo <= hi && hi < u32::MAX => (lo, hi),
                _ => {
                    return Err(self.invalid(
                        "accounts.uid_range",
                        format!("[{lo}, {hi}] must be two ids, 1 <= first <= last < 4294967295"),
                    ))
                }
            },
            Some(other) => {
                return Err(self.invalid(
                    "accounts.uid_range",
                    format!("{other:?} must be [first, last], e.g. [20000, 29999]"),
                ))
            }
        };
        Ok(AccountSettings {
            manage: raw.manage.unwrap_or(true),
            range,
        })
    }

    /// `[vars]`, whose values starting with `ssm:` or `secretsmanager:` must be secret
    /// references (templates see their values as `secrets.NAME`, SPEC §10).
    fn vars(&self, vars: toml::Table) -> Result<toml::Table, Error> {
        use crate::secrets::reference::{looks_like, Reference};
        for (name, value) in &vars {
            let Some(text) = value.as_str().filter(|t| looks_like(t)) else {
                continue;
            };
            Reference::parse(text)
                .map_err(|why| self.invalid(&format!("vars.{name}"), format!("{text:?} {why}")))?;
        }
        Ok(vars)
    }

    /// `[secrets] refresh`: at least a second (a zero would read the secrets on every
    /// poll, which SPEC §10 forbids).
    fn refresh(&self, raw: RawSecrets) -> Result<Duration, Error> {
        let refresh = self.duration("secrets.refresh", raw.refresh, "1h")?;
        if refresh < Duration::from_secs(1) {
            return Err(self.invalid("secrets.refresh", "must be at least 1s"));
        }
        Ok(refresh)
    }

    fn report(&self, raw: RawReport) -> Result<ReportSettings, Error> {
        let heartbeat = self.duration("report.heartbeat", raw.heartbeat, "1h")?;
        if heartbeat.is_zero() {
            return Err(self.invalid("report.heartbeat", "must be longer than zero"));
        }
        let url = crate::fleet::store::prefix_url(&raw.url)
            .map_err(|reason| self.invalid("report.url", reason))?;
        Ok(ReportSettings { url, heartbeat })
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn absolute(&self, key: &str, p: &Path) -> Result<(), Error> {
        let text = p.to_string_lossy();
        if !p.is_absolute() || text.contains("..") || text.chars().any(char::is_whitespace) {
            return Err(self.invalid(
                key,
                format!("{text:?} must be an absolute path without `..`"),
            ));
        }
        Ok(())
    }

    fn duration(&self, key: &str, value: Option<String>, default: &str) -> Result<Duration, Error> {
        let text = value.unwrap_or_else(|| default.to_string());
        humantime::parse_duration(&text)
            .map_err(|e| self.invalid(key, format!("{text:?} is not a duration like \"30s\": {e}")))
    }

    fn url(&self, url: &str) -> Result<String, Error> {
        // `file:PATH` (no `//`) is relative to agent.toml's directory: examples and tests.
        if let Some(rel) = url.strip_prefix("file:").filter(|r| !r.starts_with("//")) {
            return self.url(&format!(
                "file://{}",
                self.resolve(Path::new(rel)).display()
            ));
        }
        let ok = ["s3://", "https://", "http://", "file:///"]
            .iter()
            .any(|s| url.starts_with(s));
        if !ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.invalid(
                "map.url",
                format!("{url:?} must be s3://bucket/key, https://host/path or file:///path"),
            ));
        }
        Ok(url.to_string())
    }

    fn identity(&self, raw: RawIdentity) -> Result<IdentityConfig, Error> {
        match raw.source.as_str() {
            "imds" => {
                for (key, v) in [("id", &raw.id), ("address", &raw.address), ("az", &raw.az)] {
                    if v.is_some() {
                        return Err(self.invalid(
                            &format!("identity.{key}"),
                            "only allowed with source = \"static\"",
                        ));
                    }
                }
                let deadline = self.duration("identity.timeout", raw.timeout, "120s")?;
                Ok(IdentityConfig::Imds { deadline })
            }
            "static" => Ok(IdentityConfig::Static(crate::identity::Identity {
                id: self.required("identity.id", raw.id)?,
                address: self.required("identity.address", raw.address)?,
                az: self.required("identity.az", raw.az)?,
                region: raw.region.unwrap_or_else(|| "local".to_string()),
                instance_type: None,
                ami_id: None,
            })),
            other => Err(self.invalid(
                "identity.source",
                format!("{other:?} is not \"imds\" or \"static\""),
            )),
        }
    }

    fn required(&self, key: &str, value: Option<String>) -> Result<String, Error> {
        match value {
            Some(v) if !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Ok(v)
            }
            Some(v) => Err(self.invalid(key, format!("{v:?} must be non-empty without spaces"))),
            None => Err(self.invalid(key, "required with source = \"static\"")),
        }
    }

    fn services(
        &self,
        raw: BTreeMap<String, RawServiceOverride>,
    ) -> Result<BTreeMap<String, ServiceOverride>, Error> {
        let mut out = BTreeMap::new();
        for (name, o) in raw {
            let key = |k: &str| format!("services.{name}.{k}");
            let cmd = |k: &str, v: Option<String>| -> Result<Option<Command>, Error> {
                v.map(|s| Command::parse(&s).map_err(|r| self.invalid(&key(k), r)))
                    .transpose()
            };
            let timeout = match o.timeout {
                Some(t) => Some(self.duration(&key("timeout"), Some(t), "")?),
                None => None,
            };
            let parsed = ServiceOverride {
                check: cmd("check", o.check)?,
                reload: cmd("reload", o.reload)?,
                restart: cmd("restart", o.restart)?,
                timeout,
            };
            out.insert(name, parsed);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[identity]
source = "static"
id = "srv-17"
address = "192.0.2.17"
az = "rack-3"

[map]
url = "file:///etc/rolecall/map.toml"
"#;

    fn load(text: &str) -> Result<Settings, Error> {
        Settings::from_toml(text, Path::new("/etc/rolecall/agent.toml"))
    }

    #[test]
    fn defaults_are_filled_in() {
        let s = load(MINIMAL).unwrap();
        assert_eq!(s.poll_interval, Duration::from_secs(30));
        assert_eq!(s.jitter, Duration::from_secs(10));
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/rolecall"));
        assert_eq!(s.allowed_roots.len(), DEFAULT_ALLOWED_ROOTS.len());
    }

    /// The default allowed roots are defined once, here; the packaged agent.toml leaves
    /// them unset and only shows them, commented out, and what it shows must be them.
    #[test]
    fn the_packaged_config_uses_the_default_roots_and_shows_them_as_they_are() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config/agent.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let s = Settings::from_toml(&text, &path).unwrap();
        let defaults: Vec<PathBuf> = DEFAULT_ALLOWED_ROOTS.iter().map(PathBuf::from).collect();
        assert_eq!(s.allowed_roots, defaults);
        let shown: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("# allowed_roots = ["))
            .skip(1)
            .take_while(|l| !l.starts_with("# ]"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert_eq!(shown, DEFAULT_ALLOWED_ROOTS, "agent.toml shows other roots");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = load(&format!("{MINIMAL}\n[paths]\nstate_dir = \"/x\"\n")).unwrap_err();
        crate::text::assert_mentions(&err.to_string(), &["state_dir", "line"]);
    }

    #[test]
    fn bad_duration_names_key() {
        let err =
            load(&MINIMAL.replace("[map]\n", "[map]\npoll_interval = \"soon\"\n")).unwrap_err();
        assert!(err.to_string().contains("map.poll_interval"), "{err}");
    }

    #[test]
    fn service_commands_are_split_once() {
        let text =
            format!("{MINIMAL}\n[services.apache2]\nreload = \"apache2ctl -k 'graceful'\"\n");
        let s = load(&text).unwrap();
        let reload = s.services["apache2"].reload.clone().unwrap();
        assert_eq!(reload.argv, vec!["apache2ctl", "-k", "graceful"]);
    }

    #[test]
    fn relative_paths_resolve_against_config_dir() {
        let text = format!("{MINIMAL}\n[paths]\ncatalog = \"../templates\"\n");
        let s = load(&text).unwrap();
        assert_eq!(s.catalog_dir, PathBuf::from("/etc/rolecall/../templates"));
    }

    #[test]
    fn report_is_optional_with_a_one_hour_heartbeat() {
        assert_eq!(load(MINIMAL).unwrap().report, None);
        let s = load(&format!(
            "{MINIMAL}\n[report]\nurl = \"s3://fleet-config/fleet\"\n"
        ))
        .unwrap();
        let report = s.report.expect("[report] set");
        assert_eq!(report.url, "s3://fleet-config/fleet/");
        assert_eq!(report.heartbeat, Duration::from_secs(3600));
        let text =
            format!("{MINIMAL}\n[report]\nurl = \"file:///srv/fleet/\"\nheartbeat = \"5m\"\n");
        let report = load(&text).unwrap().report.expect("[report] set");
        assert_eq!(
            (report.url.as_str(), report.heartbeat),
            ("file:///srv/fleet/", Duration::from_secs(300))
        );
    }

    #[test]
    fn accounts_default_to_managed_in_20000_to_29999() {
        let s = load(MINIMAL).unwrap();
        assert_eq!(
            s.accounts,
            AccountSettings {
                manage: true,
                range: (20000, 29999)
            }
        );
        let s = load(&format!(
            "{MINIMAL}\n[accounts]\nmanage = false\nuid_range = [5000, 5999]\n"
        ))
        .unwrap();
        assert_eq!(
            s.accounts,
            AccountSettings {
                manage: false,
                range: (5000, 5999)
            }
        );
    }

    #[test]
    fn report_keys_are_checked() {
        for (body, key) in [
            ("url = \"https://example.com/fleet/\"", "report.url"),
            ("url = \"s3://b/fleet/\"", "report.url"),
            ("url = \"file://relative/dir\"", "report.url"),
            (
                "url = \"s3://fleet-config/x\"\nheartbeat = \"0s\"",
                "report.heartbeat",
            ),
            (
                "url = \"s3://fleet-config/x\"\nheartbeat = \"often\"",
                "report.heartbeat",
            ),
            ("url = \"s3://fleet-config/x\"\ncolour = 1", "colour"),
            ("heartbeat = \"1h\"", "url"),
        ] {
            let err = load(&format!("{MINIMAL}\n[report]\n{body}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{body}: {err}");
        }
    }

    #[test]
    fn a_bad_uid_range_names_the_key() {
        for bad in [
            "[0, 10]",
            "[30000, 20000]",
            "[1]",
            "[1, 2, 3]",
            "[-5, 10]",
            "[1, 4294967295]",
        ] {
            let err = load(&format!("{MINIMAL}\n[accounts]\nuid_range = {bad}\n")).unwrap_err();
            assert!(
                err.to_string().contains("accounts.uid_range"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn unknown_accounts_key_names_key_and_line() {
        let err = load(&format!("{MINIMAL}\n[accounts]\nmanaged = true\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("managed") && text.contains("line"), "{text}");
    }

    #[test]
    fn static_identity_requires_id() {
        let err = load(&MINIMAL.replace("id = \"srv-17\"\n", "")).unwrap_err();
        assert!(err.to_string().contains("identity.id"), "{err}");
    }

    #[test]
    fn secrets_refresh_defaults_to_an_hour_and_refuses_zero() {
        assert_eq!(
            load(MINIMAL).unwrap().secrets_refresh,
            Duration::from_secs(3600)
        );
        let s = load(&format!("{MINIMAL}\n[secrets]\nrefresh = \"5m\"\n")).unwrap();
        assert_eq!(s.secrets_refresh, Duration::from_secs(300));
        let err = load(&format!("{MINIMAL}\n[secrets]\nrefresh = \"0s\"\n")).unwrap_err();
        assert!(err.to_string().contains("secrets.refresh"), "{err}");
    }

    #[test]
    fn a_malformed_secret_reference_in_vars_names_the_key() {
        let text = format!("{MINIMAL}\n[vars]\nreplication_secret = \"ssm:relative\"\n");
        let err = load(&text).unwrap_err();
        assert!(err.to_string().contains("vars.replication_secret"), "{err}");
        let text = format!("{MINIMAL}\n[vars]\nreplication_secret = \"ssm:/db/repl\"\n");
        assert!(load(&text).is_ok());
    }
}

//! The catalog (SPEC §6): one `<role>.toml` per role in `paths.catalog`, naming its files,
//! services, smoke tests and hooks. Parsed into typed values; service commands merged with
//! `[services.NAME]` overrides from agent.toml. Pure apart from `Catalog::load`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ServiceOverride;
use crate::rolemap::resolve::Position;

/// Default timeout of a service command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default timeout of one smoke test (retries included).
pub const SMOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A command as argv, split once from its configured string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Program and arguments.
    pub argv: Vec<String>,
}

impl Command {
    /// Split `text` with shell quoting rules (no expansion, no shell).
    ///
    /// # Errors
    /// Unbalanced quotes, or an empty command.
    pub fn parse(text: &str) -> Result<Command, String> {
        let argv = shell_words::split(text).map_err(|e| format!("{text:?}: {e}"))?;
        if argv.is_empty() {
            return Err("empty command".to_string());
        }
        Ok(Command { argv })
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&shell_words::join(&self.argv))
    }
}

/// Errors loading the catalog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or a file could not be read.
    #[error("reading catalog {path}")]
    Read {
        /// File or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A role file is not valid.
    #[error("role file {path}: {message}")]
    Invalid {
        /// Role file.
        path: PathBuf,
        /// toml's message or the broken rule.
        message: String,
    },
    /// Two roles define the same service differently.
    #[error("service {service:?} is defined differently by roles {first:?} and {second:?}")]
    Conflict {
        /// Service name.
        service: String,
        /// First role.
        first: String,
        /// Second role.
        second: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    description: String,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    services: BTreeMap<String, RawService>,
    #[serde(default)]
    smoke: Vec<SmokeSpec>,
    #[serde(default)]
    hooks: Vec<HookSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    template: String,
    #[serde(default)]
    per_product: bool,
    #[serde(default = "root")]
    owner: String,
    #[serde(default = "root")]
    group: String,
    #[serde(default = "default_mode")]
    mode: String,
    service: Option<String>,
    #[serde(default)]
    secret: bool,
    #[serde(default = "hash")]
    comment: String,
    when_position: Option<WhenPosition>,
    when: Option<String>,
}

fn root() -> String {
    "root".into()
}
fn default_mode() -> String {
    "0644".into()
}
fn hash() -> String {
    "#".into()
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone)]
#[serde(deny_unknown_fields)]
struct RawService {
    check: Option<String>,
    reload: Option<String>,
    restart: Option<String>,
    #[serde(default)]
    on_change: OnChange,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
}

/// What a changed file needs from its service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// A graceful reload (Apache vhosts).
    #[default]
    Reload,
    /// A full restart (MariaDB server settings).
    Restart,
}

/// One file a role manages; `path` and `template` use Tera syntax for per-product files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSpec {
    /// Role that declares it.
    pub role: String,
    /// Destination path (a Tera template string).
    pub path: String,
    /// Template name under `paths.templates`.
    pub template: String,
    /// Rendered once per product of the host.
    pub per_product: bool,
    /// Owner name or number (a Tera template string like `path`, e.g.
    /// `{{ product.user | default(value='root') }}`: SPEC §10).
    pub owner: String,
    /// Group name or number (a Tera template string like `path`).
    pub group: String,
    /// Permission bits.
    pub mode: u32,
    /// Service the file belongs to.
    pub service: Option<String>,
    /// Content never logged or shown in diffs.
    pub is_secret: bool,
    /// Line-comment marker used for the "managed by rolecall" header.
    pub comment: String,
    /// Only for hosts holding this database position.
    pub when_position: Option<WhenPosition>,
    /// A Tera string: the file exists only where it renders to `true` (e.g. only when
    /// `vars.replication_secret` is set, or for products with a database).
    pub when: Option<String>,
}

/// Which hosts a file or smoke test is for, by database position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenPosition {
    /// Hosts holding any position.
    Any,
    /// Masters.
    Master,
    /// Replicas.
    Replica,
    /// Backup replicas.
    Backup,
}

impl WhenPosition {
    /// Whether a host holding `position` (none: not a database host) qualifies.
    pub fn matches(self, position: Option<Position>) -> bool {
        match (self, position) {
            (_, None) => false,
            (WhenPosition::Any, Some(_)) => true,
            (WhenPosition::Master, Some(p)) => p == Position::Master,
            (WhenPosition::Replica, Some(p)) => p == Position::Replica,
            (WhenPosition::Backup, Some(p)) => p == Position::Backup,
        }
    }
}

/// A service's commands after overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// Config check run after writing and before reloading.
    pub check: Option<Command>,
    /// Graceful reload.
    pub reload: Option<Command>,
    /// Full restart.
    pub restart: Option<Command>,
    /// Which of the two a change needs.
    pub on_change: OnChange,
    /// Per-command timeout.
    pub timeout: Duration,
}

impl Service {
    /// The command a change needs (restart falls back to reload and vice versa).
    pub fn apply_command(&self) -> Option<&Command> {
        match self.on_change {
            OnChange::Reload => self.reload.as_ref().or(self.restart.as_ref()),
            OnChange::Restart => self.restart.as_ref().or(self.reload.as_ref()),
        }
    }
}

/// A smoke test as declared; string fields are Tera templates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeSpec {
    /// `http`, `tcp`, `mysql` or `command`.
    pub kind: SmokeKind,
    /// Name shown in reports (templated).
    pub name: Option<String>,
    /// Fanned out per product.
    #[serde(default)]
    pub per_product: bool,
    /// http: URL.
    pub url: Option<String>,
    /// http: Host header.
    pub host: Option<String>,
    /// http: expected status (default 200).
    pub expect_status: Option<u16>,
    /// http: a substring the body must contain.
    pub body_contains: Option<String>,
    /// http: a path (templated) that only the site's own virtual host answers, with 410
    /// Gone. The test first waits for it, so that a graceful reload still in progress, or a
    /// Host that falls through to another site, never passes for the site itself.
    pub site_marker: Option<String>,
    /// tcp: `address:port`.
    pub address: Option<String>,
    /// mysql/command: argv as one string, split with shell rules after rendering.
    pub command: Option<String>,
    /// mysql: expected `@@read_only` (`"0"`/`"1"`, templated), if checked.
    pub read_only: Option<String>,
    /// Overall deadline including retries, e.g. `"10s"` (default 30 s).
    #[serde(default = "smoke_timeout", deserialize_with = "some_duration")]
    pub timeout: Duration,
    /// Only for hosts holding a database position.
    pub when_position: Option<WhenPosition>,
}

/// Smoke test kinds (SPEC §7.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmokeKind {
    /// HTTP request with a Host header and an expected status.
    Http,
    /// TCP connect.
    Tcp,
    /// `SELECT 1` through the MariaDB client.
    Mysql,
    /// A command that must exit 0.
    Command,
}

crate::text::named! {
    /// What changed in the host's database position (SPEC §1, promotion).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
    pub enum HookEvent {
        /// Became the master.
        Promoted = "promoted",
        /// Was the master, is not any more.
        Demoted = "demoted",
        /// Replicates from another host (or for the first time).
        UpstreamChanged = "upstream_changed",
        /// Any change of product or position (raised with each of the others too).
        PositionChanged = "position_changed",
    }
}

/// A command run when the host's database position changes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// The event it runs on.
    pub on: HookEvent,
    /// Command (templated, then split with shell rules).
    pub command: String,
    /// Timeout, e.g. `"60s"` (default 60 s).
    #[serde(default = "command_timeout", deserialize_with = "some_duration")]
    pub timeout: Duration,
}

fn smoke_timeout() -> Duration {
    SMOKE_TIMEOUT
}

fn command_timeout() -> Duration {
    COMMAND_TIMEOUT
}

/// A duration written as `"30s"`, `"5m"`; anything else is an error naming the value.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    some_duration(d).map(Some)
}

fn some_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a duration like \"30s\": {e}"))
    })
}

/// One role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// Role name (file stem).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Files it manages.
    pub files: Vec<FileSpec>,
    /// Smoke tests.
    pub smoke: Vec<SmokeSpec>,
    /// Hooks.
    pub hooks: Vec<HookSpec>,
}

/// Every role, plus the services they name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Catalog {
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
    /// Services by name, overrides applied.
    pub services: BTreeMap<String, Service>,
}

impl Catalog {
    /// Load every `*.toml` in `dir` and apply `overrides`.
    ///
    /// # Errors
    /// I/O, parse errors, invalid modes, commands or durations, conflicting services.
    pub fn load(
        dir: &Path,
        overrides: &BTreeMap<String, ServiceOverride>,
    ) -> Result<Catalog, Error> {
        Catalog::load_with_vars(dir, overrides, &toml::Table::new())
    }

    /// As [`Catalog::load`], rendering `{{ vars.* }}` in service commands (so one catalog
    /// serves Debian's `apache2` and RHEL's `httpd`).
    ///
    /// # Errors
    /// See [`Catalog::load`]; also a service command that does not render.
    pub fn load_with_vars(
        dir: &Path,
        overrides: &BTreeMap<String, ServiceOverride>,
        vars: &toml::Table,
    ) -> Result<Catalog, Error> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| Error::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        entries.sort();
        let mut sources = Vec::new();
        for path in entries {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            sources.push((path, text));
        }
        Catalog::from_sources_with_vars(&sources, overrides, vars)
    }

    /// Build from `(path, text)` pairs; the role name is the file stem.
    ///
    /// # Errors
    /// See [`Catalog::load`].
    pub fn from_sources(
        sources: &[(PathBuf, String)],
        overrides: &BTreeMap<String, ServiceOverride>,
    ) -> Result<Catalog, Error> {
        Catalog::from_sources_with_vars(sources, overrides, &toml::Table::new())
    }

    /// As [`Catalog::from_sources`], rendering `{{ vars.* }}` in service commands.
    ///
    /// # Errors
    /// See [`Catalog::load`].
    pub fn from_sources_with_vars(
        sources: &[(PathBuf, String)],
        overrides: &BTreeMap<String, ServiceOverride>,
        vars: &toml::Table,
    ) -> Result<Catalog, Error> {
        let mut catalog = Catalog::default();
        let mut defined = Defined::new();
        for (path, text) in sources {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let invalid = |message: String| Error::Invalid {
                path: path.clone(),
                message,
            };
            let raw: RawRole =
                toml::from_str(text).map_err(|e| invalid(crate::text::toml_error(text, &e)))?;
            define(&mut defined, &name, &raw.services)?;
            let role = role(&name, raw).map_err(invalid)?;
            catalog.roles.insert(name, role);
        }
        for (name, (role, raw)) in defined {
            let path = PathBuf::from(format!("{role}.toml"));
            let service = service(&name, raw, overrides.get(&name), vars)
                .map_err(|message| Error::Invalid { path, message })?;
            catalog.services.insert(name, service);
        }
        catalog.check_service_references()?;
        Ok(catalog)
    }

    fn check_service_references(&self) -> Result<(), Error> {
        for role in self.roles.values() {
            for file in &role.files {
                if let Some(svc) = &file.service {
                    if !self.services.contains_key(svc) {
                        return Err(Error::Invalid {
                            path: PathBuf::from(format!("{}.toml", role.name)),
                            message: format!(
                                "file {:?} names service {svc:?}, which no role defines",
                                file.path
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Services by name with the role that first defined them; two roles may define a service
/// only identically.
type Defined = BTreeMap<String, (String, RawService)>;

fn define(
    defined: &mut Defined,
    role: &str,
    services: &BTreeMap<String, RawService>,
) -> Result<(), Error> {
    for (svc, def) in services {
        match defined.get(svc) {
            Some((first, prev)) if prev != def => {
                return Err(Error::Conflict {
                    service: svc.clone(),
                    first: first.clone(),
                    second: role.to_string(),
                })
            }
            _ => {
                defined.insert(svc.clone(), (role.to_string(), def.clone()));
            }
        }
    }
    Ok(())
}

fn role(name: &str, raw: RawRole) -> Result<Role, String> {
    let files = raw.files.into_iter().enumerate();
    let files = files.map(|(i, f)| file_spec(name, i, f));
    Ok(Role {
        name: name.to_string(),
        description: raw.description,
        files: files.collect::<Result<_, _>>()?,
        smoke: raw.smoke,
        hooks: raw.hooks,
    })
}

/// The role `name`'s file `i`, its mode checked (octal, not others-readable when secret).
fn file_spec(name: &str, i: usize, f: RawFile) -> Result<FileSpec, String> {
    let mode = u32::from_str_radix(f.mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            format!(
                "files[{i}].mode: {:?} is not an octal mode like \"0644\"",
                f.mode
            )
        })?;
    if f.secret && mode & 0o007 != 0 {
        return Err(format!(
            "files[{i}].mode: {:?} lets others read or write a file marked secret (use 0600 or 0640)",
            f.mode
        ));
    }
    Ok(FileSpec {
        role: name.to_string(),
        path: f.path,
        template: f.template,
        per_product: f.per_product,
        owner: f.owner,
        group: f.group,
        mode,
        service: f.service,
        is_secret: f.secret,
        comment: f.comment,
        when_position: f.when_position,
        when: f.when,
    })
}

fn service(
    name: &str,
    raw: RawService,
    o: Option<&ServiceOverride>,
    vars: &toml::Table,
) -> Result<Service, String> {
    let mut ctx = tera::Context::new();
    ctx.insert("vars", vars);
    let cmd = |key: &str, v: Option<String>| -> Result<Option<Command>, String> {
        let render = |s: String| {
            tera::Tera::one_off(&s, &ctx, false)
                .map_err(|e| format!("services.{name}.{key}: {}", crate::text::chain(&e)))
        };
        v.map(|s| {
            render(s)
                .and_then(|r| Command::parse(&r).map_err(|e| format!("services.{name}.{key}: {e}")))
        })
        .transpose()
    };
    let timeout = raw.timeout.unwrap_or(COMMAND_TIMEOUT);
    let o = o.cloned().unwrap_or_default();
    Ok(Service {
        name: name.to_string(),
        check: o.check.or(cmd("check", raw.check)?),
        reload: o.reload.or(cmd("reload", raw.reload)?),
        restart: o.restart.or(cmd("restart", raw.restart)?),
        on_change: raw.on_change,
        timeout: o.timeout.unwrap_or(timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = r#"
[[files]]
path = "/etc/x/{{ product.name }}.conf"
template = "x/x.tera"
per_product = true
mode = "0640"
service = "web"

[services.web]
check = "{{ vars.ctl | default(value='apache2ctl') }} configtest"
reload = "systemctl reload {{ vars.unit | default(value='apache2') }}"
"#;

    fn load(
        vars: &toml::Table,
        overrides: &BTreeMap<String, ServiceOverride>,
    ) -> Result<Catalog, Error> {
        Catalog::from_sources_with_vars(
            &[(PathBuf::from("x.toml"), ROLE.to_string())],
            overrides,
            vars,
        )
    }

    #[test]
    fn service_commands_render_vars_with_debian_defaults() {
        let debian = load(&toml::Table::new(), &BTreeMap::new()).unwrap();
        assert_eq!(
            debian.services["web"].check.as_ref().unwrap().argv,
            vec!["apache2ctl", "configtest"]
        );
        let rhel_vars: toml::Table =
            toml::from_str("ctl = \"apachectl\"\nunit = \"httpd\"").unwrap();
        let rhel = load(&rhel_vars, &BTreeMap::new()).unwrap();
        assert_eq!(
            rhel.services["web"].reload.as_ref().unwrap().argv,
            vec!["systemctl", "reload", "httpd"]
        );
        assert_eq!(rhel.roles["x"].files[0].mode, 0o640);
    }

    #[test]
    fn agent_overrides_win() {
        let o = ServiceOverride {
            reload: Some(Command::parse("apache2ctl -k graceful").unwrap()),
            ..Default::default()
        };
        let c = load(
            &toml::Table::new(),
            &BTreeMap::from([("web".to_string(), o)]),
        )
        .unwrap();
        assert_eq!(
            c.services["web"].reload.as_ref().unwrap().argv,
            vec!["apache2ctl", "-k", "graceful"]
        );
    }

    #[test]
    fn unknown_keys_and_bad_modes_name_the_file() {
        let err = Catalog::from_sources(
            &[(PathBuf::from("web.toml"), "colour = 1".into())],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("web.toml") && err.to_string().contains("colour"),
            "{err}"
        );
        let bad = ROLE.replace("0640", "rw-r");
        let err =
            Catalog::from_sources(&[(PathBuf::from("x.toml"), bad)], &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("files[0].mode"), "{err}");
    }

    /// Issue 11/15: a typo in a closed set or a duration is an error naming the file and
    /// the key, never a silent default.
    #[test]
    fn unknown_values_and_bad_durations_name_the_file_and_key() {
        let cases = [
            ("[[hooks]]\non = \"promotd\"\ncommand = \"x\"\n", "on"),
            (
                "[[hooks]]\non = \"promoted\"\ncommand = \"x\"\ntimeout = \"soon\"\n",
                "timeout",
            ),
            (
                "[[smoke]]\nkind = \"tcp\"\naddress = \"a:1\"\ntimeout = \"10 parsecs\"\n",
                "timeout",
            ),
            (
                "[[smoke]]\nkind = \"tcp\"\naddress = \"a:1\"\nwhen_position = \"mastr\"\n",
                "when_position",
            ),
            ("[[smoke]]\nkind = \"ftp\"\n", "kind"),
            ("[services.x]\ntimeout = \"1 fortnight-ish\"\n", "timeout"),
            ("[services.x]\non_change = \"reboot\"\n", "on_change"),
        ];
        for (text, key) in cases {
            let err = Catalog::from_sources(
                &[(PathBuf::from("web.toml"), text.to_string())],
                &BTreeMap::new(),
            )
            .expect_err(text);
            let msg = err.to_string();
            assert!(
                msg.contains("web.toml") && msg.contains(key),
                "{text}: {msg}"
            );
        }
    }

    #[test]
    fn typed_values_parse() {
        let text = "[[hooks]]\non = \"upstream_changed\"\ncommand = \"x\"\ntimeout = \"5s\"\n\n[[smoke]]\nkind = \"tcp\"\naddress = \"a:1\"\nwhen_position = \"replica\"\n";
        let c = Catalog::from_sources(&[(PathBuf::from("db.toml"), text.into())], &BTreeMap::new())
            .unwrap();
        let role = &c.roles["db"];
        assert_eq!(role.hooks[0].on, HookEvent::UpstreamChanged);
        assert_eq!(role.hooks[0].timeout, Duration::from_secs(5));
        assert_eq!(role.smoke[0].timeout, SMOKE_TIMEOUT);
        assert_eq!(role.smoke[0].when_position, Some(WhenPosition::Replica));
        assert!(WhenPosition::Replica.matches(Some(Position::Replica)));
        assert!(!WhenPosition::Replica.matches(Some(Position::Master)));
        assert!(WhenPosition::Any.matches(Some(Position::Backup)));
        assert!(!WhenPosition::Any.matches(None));
    }

    #[test]
    fn conflicting_service_definitions_are_refused() {
        let other = ROLE.replace("configtest", "-t");
        let err = Catalog::from_sources(
            &[
                (PathBuf::from("a.toml"), ROLE.into()),
                (PathBuf::from("b.toml"), other),
            ],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
    }
}

//! The role map as written (SPEC §5). Unknown keys are collected rather than refused by
//! serde so that validation can list every one of them with its path; required strings
//! default to empty so that validation, not serde, reports every missing one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Error;

/// Keys that no field claimed, kept for validation.
pub type Unknown = BTreeMap<String, toml::Value>;

/// A host's id, address, zone, role or product name: kept inline up to 24 bytes, so that a
/// host of a large map is one record, not a heap block per string (issue 13: parsing the
/// benchmark's 10,000-host map grew the process by 7.0 MB with `String`s, by 4.7 with these).
pub type Name = compact_str::CompactString;

/// A host's roles or products. Hosts of one pool list the same ones: a large map's direct
/// parse keeps one copy of each list (issue 13).
pub type Names = std::sync::Arc<[Name]>;

/// `names` as `String`s, for the views that outlive the map.
pub fn strings(names: &[Name]) -> Vec<String> {
    names.iter().map(Name::to_string).collect()
}

/// The global role map.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct RoleMap {
    /// Format version; this agent reads 1.
    #[serde(default)]
    pub schema: i64,
    /// Raised by every publish; `-1` when absent (reported by validation).
    #[serde(default = "missing_generation")]
    pub generation: i64,
    /// Products by name.
    #[serde(default)]
    pub products: BTreeMap<String, Product>,
    /// Hosts by id.
    #[serde(default)]
    pub hosts: BTreeMap<Name, Host>,
    /// A staged rollout of this generation (SPEC §9.2); absent: every host applies at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Keys not in the schema.
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

fn missing_generation() -> i64 {
    -1
}

/// A product (site or service).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Product {
    /// Main domain, the vhost's ServerName.
    #[serde(default)]
    pub domain: String,
    /// Extra names, ServerAlias.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Absolute document root.
    #[serde(default)]
    pub docroot: String,
    /// Path the smoke test requests.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Database topology, if the product has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Database>,
    /// Unix groups its hosts need, by name (SPEC §10, `[products.P.groups.G]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Group>,
    /// Unix users its hosts need, by name (SPEC §10, `[products.P.users.U]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, User>,
    /// Secret references by name (SPEC §10, `[products.P.secrets]`): `ssm:/path` or
    /// `secretsmanager:name[#key]`. Only references: the values never enter the map.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Keys not in the schema.
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

/// A Unix group a product's hosts need.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Group {
    /// Group id, fleet-wide; `-1` when absent (reported by validation).
    #[serde(default = "missing_id")]
    pub gid: i64,
    /// Keys not in the schema.
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

/// A Unix user a product's hosts need.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct User {
    /// User id, fleet-wide; `-1` when absent (reported by validation).
    #[serde(default = "missing_id")]
    pub uid: i64,
    /// Primary group, declared in the same product's `groups`.
    #[serde(default)]
    pub group: String,
    /// Home directory (absolute; rolecall does not create it).
    #[serde(default)]
    pub home: String,
    /// Login shell (absolute), e.g. `/usr/sbin/nologin`.
    #[serde(default)]
    pub shell: String,
    /// Supplementary groups: the complete list (a product's own or system groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Keys not in the schema.
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

fn missing_id() -> i64 {
    -1
}

fn default_health_path() -> String {
    "/".to_string()
}

/// A product's MySQL/MariaDB topology.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Database {
    /// Schema name.
    #[serde(default)]
    pub name: String,
    /// Host id of the master.
    #[serde(default)]
    pub master: String,
    /// Replica chain: the first follows the master, each next one the previous.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Backup replica (follows the master, dumps to `backup_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Where snapshots go (`s3://bucket/prefix/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_url: Option<String>,
    /// Hosts taken out of this database by a promote; never pointed at again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Keys not in the schema.
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

/// One host.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Host {
    /// Private address other hosts use to reach it.
    #[serde(default)]
    pub address: Name,
    /// Availability zone (or rack).
    #[serde(default)]
    pub az: Name,
    /// Roles, as defined by the catalog.
    #[serde(default)]
    pub roles: Names,
    /// Products it serves.
    #[serde(default)]
    pub products: Names,
    /// MySQL/MariaDB port, when not the default 3306 (rolecall's extension of SPEC §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_port: Option<u16>,
    /// Keys not in the schema.
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

/// `[rollout]` as written (SPEC §9.2); `fleet::waves::Schedule` is its checked form.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Rollout {
    /// Cumulative percent of the map's hosts per wave, strictly increasing, ending at 100.
    #[serde(default)]
    pub waves: Vec<i64>,
    /// Time between two waves' openings, as a duration string (`"10m"`).
    #[serde(default)]
    pub bake: String,
    /// When wave 0 opens: an RFC 3339 UTC datetime (set by `map publish --rollout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<toml::value::Datetime>,
    /// Failed or silent hosts of opened waves tolerated before the rollout halts.
    #[serde(default)]
    pub max_failed: i64,
    /// Keys not in the schema.
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

/// Parse map text into the typed model without validating it: straight from the parser's
/// events when the map is written as rolecall writes maps (`direct`), else with toml.
///
/// # Errors
/// TOML syntax errors and wrongly typed values, with toml's line information.
pub fn parse(text: &str) -> Result<RoleMap, Error> {
    if let Some(map) = super::direct::parse(text) {
        return Ok(map);
    }
    toml::from_str(text).map_err(|e| Error::Syntax {
        message: crate::text::toml_error(text, &e),
    })
}

impl RoleMap {
    /// The generation as a number (validation guarantees it is not negative).
    pub fn generation(&self) -> u64 {
        u64::try_from(self.generation).unwrap_or(0)
    }

    /// Serialize back to TOML (used by `map promote` and `map publish`).
    ///
    /// # Errors
    /// Only if a value cannot be represented in TOML, which a parsed map never has.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

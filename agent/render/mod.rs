//! Stage 4, render (SPEC §6): `HostView` + catalog + Tera → every desired file, smoke test
//! and hook, before anything touches disk. Pure: the caller loads the [`Templates`] once
//! per reconcile; output is byte-for-byte repeatable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tera::{Context, Tera};
use walkdir::WalkDir;

use crate::catalog::{
    Catalog, Command, FileSpec, HookEvent, HookSpec, Role, SmokeKind, SmokeSpec, WhenPosition,
};
use crate::rolemap::resolve::{HostView, ProductView};
use crate::secrets::Resolved;

/// Errors of the render stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template directory could not be loaded (syntax error, unreadable file).
    #[error("loading templates from {dir}")]
    Load {
        /// `paths.templates`.
        dir: PathBuf,
        /// Tera's error (its source names the template and line).
        #[source]
        source: Box<tera::Error>,
    },
    /// A template failed to render (e.g. an undefined variable).
    #[error("rendering {template} for role {role}{}", product.as_ref().map(|p| format!(", product {p}")).unwrap_or_default())]
    Template {
        /// Template name or the templated field.
        template: String,
        /// Role.
        role: String,
        /// Product, for per-product entries.
        product: Option<String>,
        /// Tera's error; its source says which variable.
        #[source]
        source: Box<tera::Error>,
    },
    /// A host role the catalog does not define.
    #[error("role {role:?} of host {host} is not defined in the catalog")]
    UnknownRole {
        /// Role.
        role: String,
        /// Host id.
        host: String,
    },
    /// A rendered value is unusable (path not absolute, command not splittable…).
    #[error("role {role}: {what}: {reason}")]
    Invalid {
        /// Role.
        role: String,
        /// Which value.
        what: String,
        /// Why.
        reason: String,
    },
    /// A template that reads secrets failed; its message, every secret value replaced by
    /// `[redacted]` (Tera quotes the values its filters and tests choke on).
    #[error("{message}")]
    Redacted {
        /// The error chain, redacted.
        message: String,
    },
    /// A template whose expressions nest too deeply for Tera's parser (see `nesting`).
    #[error("{template}: parentheses or brackets nested {depth} deep in one tag (at most {max}): Tera's parser would take exponential time", max = nesting::MAX_NESTING)]
    TooNested {
        /// The template file, or the role and catalog string.
        template: String,
        /// How deep.
        depth: usize,
    },
    /// Two entries render to the same path.
    #[error("{path} is rendered twice (roles {first} and {second})")]
    Duplicate {
        /// Logical path.
        path: PathBuf,
        /// First role.
        first: String,
        /// Second role.
        second: String,
    },
}

/// A file as it should be on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedFile {
    /// Logical absolute path (before `--root`).
    pub path: PathBuf,
    /// Bytes, header included; shared with the plan's change that writes them.
    #[serde(skip)]
    pub content: Arc<[u8]>,
    /// Owner name.
    pub owner: String,
    /// Group name.
    pub group: String,
    /// Permission bits.
    pub mode: u32,
    /// Service to check and reload.
    pub service: Option<String>,
    /// Role that declares it.
    pub role: String,
    /// Product, for per-product files.
    pub product: Option<String>,
    /// Template name.
    pub template: String,
    /// Content never logged or diffed.
    pub is_secret: bool,
}

/// A concrete smoke test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SmokeTest {
    /// Name for reports.
    pub name: String,
    /// Role that declares it.
    pub role: String,
    /// What to do.
    pub check: SmokeCheck,
    /// Deadline including retries.
    pub timeout: Duration,
}

/// The check a smoke test performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SmokeCheck {
    /// HTTP GET with a Host header.
    Http {
        /// URL.
        url: String,
        /// Host header.
        host: Option<String>,
        /// Expected status.
        expect_status: u16,
        /// Substring the body must contain.
        body_contains: Option<String>,
        /// Path only the site's own virtual host answers with 410 Gone, waited for first.
        site_marker: Option<String>,
    },
    /// TCP connect to `address`.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// MariaDB client query; optionally `@@read_only` must equal `read_only`.
    Mysql {
        /// Client argv (without the query).
        command: Command,
        /// Expected `@@read_only`.
        read_only: Option<String>,
    },
    /// A command that must exit 0.
    Command {
        /// argv.
        command: Command,
    },
}

/// A rendered hook command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    /// Role.
    pub role: String,
    /// Event it runs on.
    pub on: HookEvent,
    /// argv.
    pub command: Command,
    /// Timeout.
    pub timeout: Duration,
}

/// Everything a reconcile wants for this host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Desired {
    /// Files, sorted by path.
    pub files: Vec<RenderedFile>,
    /// Services left as they are because a secret one of their files may read could not
    /// be read (SPEC §10), with those references. Their files are not in `files`.
    #[serde(skip)]
    pub blocked: BTreeMap<Option<String>, BTreeSet<String>>,
    /// Smoke tests in catalog order.
    pub smoke: Vec<SmokeTest>,
    /// Hooks in catalog order.
    pub hooks: Vec<Hook>,
    /// Per-product files the memo vouches for, without their bytes: the caller completes
    /// them from the disk ([`Desired::fill_remembered`]) or renders again without the memo.
    #[serde(skip)]
    pub remembered: Vec<Remembered>,
    /// Remembered files the disk still holds as remembered, by their stamps: never read,
    /// left as they are by the plan ([`Desired::vouch`]); after the install, the rendered
    /// files too, without their bytes ([`Desired::forget_bytes`]).
    #[serde(skip)]
    pub vouched: Vec<Remembered>,
    /// The memo for the next render of the host, when it changed.
    #[serde(skip)]
    pub memo: Option<Memo>,
}

/// Where a map came from: `map` as templates see it. The cache's metadata and the status
/// record's map hold it too, flattened (the same four keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapInfo {
    /// Source URL.
    pub url: String,
    /// ETag of the map object.
    pub etag: Option<String>,
    /// S3 VersionId.
    pub version: Option<String>,
    /// The map's `generation`.
    pub generation: u64,
}

/// The Tera instance of one reconcile: every `*.tera` file under `paths.templates`, and
/// every templated string of the catalog (paths, smoke test fields, hook commands), each
/// parsed once, not once per product.
#[derive(Debug)]
pub struct Templates {
    tera: Tera,
    warnings: Vec<String>,
    /// Hash of every template file and the catalog, for the memo; `None` when one reads
    /// something the memo cannot see (see `memo::fingerprint`).
    fingerprint: Option<String>,
}

mod memo;
mod nesting;
mod product;
mod reads;
mod secrets;

pub use memo::{Memo, Remembered};
pub use secrets::secret_needs;

use reads::Reads;

impl Templates {
    /// Load every `*.tera` under `dir` and the templated strings of `catalog`, autoescape
    /// off (our outputs are config files).
    ///
    /// # Errors
    /// `Load` with Tera's parse error; `Template` for a catalog string that does not parse.
    pub fn load(dir: &Path, catalog: &Catalog) -> Result<Templates, Error> {
        let files = read_files(dir)?;
        let warnings = volatile_warnings(&files);
        let strings = catalog_strings(catalog).into_iter().map(|(_, text)| text);
        let fingerprint = memo::fingerprint(&files, strings, catalog);
        let mut tera = Tera::default();
        tera.add_raw_templates(files)
            .map_err(|source| Error::Load {
                dir: dir.to_path_buf(),
                source: Box::new(source),
            })?;
        tera.autoescape_on(vec![]);
        for (role, text) in catalog_strings(catalog) {
            if let Some(depth) = nesting::too_deep(text) {
                let template = format!("role {role}: {}", crate::text::printable(text, 120));
                return Err(Error::TooNested { template, depth });
            }
            if is_templated(text) {
                tera.add_raw_template(&inline_name(text), text)
                    .map_err(|source| Error::Template {
                        template: text.to_string(),
                        role: role.to_string(),
                        product: None,
                        source: Box::new(source),
                    })?;
            }
        }
        let templates = Templates {
            tera,
            warnings,
            fingerprint,
        };
        templates.check_secret_modes(catalog)?;
        Ok(templates)
    }

    /// Whether the file template `name` may read a secret's value (see `reads::secret`).
    fn reads_secret(&self, name: &str) -> bool {
        self.tera
            .get_template(name)
            .is_ok_and(|t| reads::secret(&t.ast))
    }

    /// What the file template `name`, or the catalog string `text`, reads from the context.
    fn reads(&self, name: &str) -> Reads {
        let inline = inline_name(name);
        let found = self
            .tera
            .get_template(&inline)
            .or_else(|_| self.tera.get_template(name));
        match found {
            Ok(template) => reads::of(&template.ast),
            Err(_) if !is_templated(name) => Reads::none(),
            Err(_) => Reads::Everything,
        }
    }

    /// Templates that depend on the map's generation, ETag or version: each publish
    /// changes their output on every host (issue 13).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Render the catalog string `text` (e.g. `"/etc/x/{{ product.name }}.conf"`).
    fn inline(&self, text: &str, ctx: &Context) -> tera::Result<String> {
        if !is_templated(text) {
            return Ok(text.to_string());
        }
        let name = inline_name(text);
        let mut out = match self.tera.get_template(&name).is_ok() {
            true => self.tera.render(&name, ctx),
            false => Tera::one_off(text, ctx, false),
        }?;
        // Tera renders into a 2,000-byte buffer: 1,500 smoke-test strings kept 3 MB.
        out.shrink_to_fit();
        Ok(out)
    }
}

/// What makes a file change with every publish, whether or not this host's part changed.
const VOLATILE: [&str; 3] = ["map.generation", "map.etag", "map.version"];

/// Every template file under `dir` (`*.tera`, any depth) by its name (the path below
/// `dir`), read once for Tera and the checks: a file nested too deeply for Tera's parser
/// (see `nesting`) is refused.
fn read_files(dir: &Path) -> Result<Vec<(String, String)>, Error> {
    let unreadable = |what: String| Error::Load {
        dir: dir.to_path_buf(),
        source: Box::new(tera::Error::msg(what)),
    };
    let mut files = Vec::new();
    // Symlinks are followed as the catalog's owner laid them out; a loop is an error.
    for entry in WalkDir::new(dir).follow_links(true).sort_by_file_name() {
        let entry = entry.map_err(|e| unreadable(format!("listing: {e}")))?;
        let path = entry.path();
        if entry.file_type().is_dir() || path.extension().is_none_or(|x| x != "tera") {
            continue;
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| unreadable(format!("reading {}: {e}", path.display())))?;
        if let Some(depth) = nesting::too_deep(&text) {
            let template = path.display().to_string();
            return Err(Error::TooNested { template, depth });
        }
        let name = path.strip_prefix(dir).unwrap_or(path);
        files.push((name.to_string_lossy().into_owned(), text));
    }
    Ok(files)
}

/// A warning for each template file that reads a [`VOLATILE`] value: every publish then
/// rewrites its file and reloads its service on every host (a fleet-wide reload storm).
/// Those values are in `status`, `check` and the metrics.
fn volatile_warnings(files: &[(String, String)]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, text) in files {
        for value in VOLATILE.iter().filter(|v| text.contains(**v)) {
            warnings.push(format!(
                "template {name} uses {value}: every publish rewrites its file and reloads its service on every host"
            ));
        }
    }
    warnings
}

fn is_templated(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// Catalog strings live beside the template files under a name no file can have.
fn inline_name(text: &str) -> String {
    format!("\0inline:{text}")
}

/// Every templated string of the catalog, with its role.
fn catalog_strings(catalog: &Catalog) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for role in catalog.roles.values() {
        let r = role.name.as_str();
        out.extend(role.files.iter().map(|f| (r, f.path.as_str())));
        out.extend(role.files.iter().map(|f| (r, f.owner.as_str())));
        out.extend(role.files.iter().map(|f| (r, f.group.as_str())));
        out.extend(
            role.files
                .iter()
                .filter_map(|f| Some((r, f.when.as_deref()?))),
        );
        out.extend(role.hooks.iter().map(|h| (r, h.command.as_str())));
        for s in &role.smoke {
            out.extend(smoke_strings(s).map(|t| (r, t)));
        }
    }
    out
}

/// Render everything `view`'s roles need, for a host without secrets.
///
/// # Errors
/// See [`render_with`].
pub fn render(
    view: &HostView,
    catalog: &Catalog,
    templates: &Templates,
    map: &MapInfo,
    vars: &toml::Table,
) -> Result<Desired, Error> {
    let inputs = Inputs {
        map,
        vars,
        secrets: &Resolved::default(),
        memo: None,
    };
    render_with(view, catalog, templates, &inputs)
}

/// What a render reads besides the view and the catalog.
pub struct Inputs<'a> {
    /// What templates see as `map`.
    pub map: &'a MapInfo,
    /// `[vars]`.
    pub vars: &'a toml::Table,
    /// The secrets read for this render (SPEC §10).
    pub secrets: &'a Resolved,
    /// What the last render of this host rendered (see `memo`); `None` renders everything
    /// and keeps no memo.
    pub memo: Option<&'a Memo>,
}

/// Render everything `view`'s roles need. A file that may read a secret that could not
/// be read is not rendered: its service goes into [`Desired::blocked`].
///
/// # Errors
/// Unknown roles, template errors, unusable rendered paths or commands, duplicates.
pub fn render_with(
    view: &HostView,
    catalog: &Catalog,
    templates: &Templates,
    inputs: &Inputs<'_>,
) -> Result<Desired, Error> {
    let mut roles = Vec::new();
    for role_name in &view.host.roles {
        let role = catalog
            .roles
            .get(role_name)
            .ok_or_else(|| Error::UnknownRole {
                role: role_name.clone(),
                host: view.host.identity.id.clone(),
            })?;
        roles.push(role);
    }
    let mut r = Renderer::new(view, templates, inputs, &roles);
    for role in &roles {
        r.role(role)?;
    }
    let mut desired = r.desired;
    desired.memo = r.recall.and_then(memo::Recall::finish);
    desired.files.sort_by(|a, b| a.path.cmp(&b.path));
    check_duplicates(&desired)?;
    secrets::drop_blocked(&roles, &mut desired);
    Ok(desired)
}

/// From this many products in each half on, [`Renderer::memo_keys`] hashes the halves side
/// by side: a key takes some 5 µs, a thread 50 to 100 µs to start.
const MIN_KEYS_APART: usize = 50;

/// One host's render in progress: the context templates see, and what is rendered so far.
struct Renderer<'a> {
    view: &'a HostView,
    templates: &'a Templates,
    ctx: Context,
    /// The parts of `product` some template reads; `None` when none reads it.
    product: Option<reads::Wanted>,
    secrets: &'a Resolved,
    desired: Desired,
    /// The memo in use, if any.
    recall: Option<memo::Recall<'a>>,
    /// How many files a secret that could not be read has blocked so far.
    blocks: usize,
}

impl<'a> Renderer<'a> {
    /// A render of `roles` for `view`, its context holding only what their templates read.
    fn new(
        view: &'a HostView,
        templates: &'a Templates,
        inputs: &Inputs<'a>,
        roles: &[&Role],
    ) -> Renderer<'a> {
        let needs = roles.iter().fold(Reads::none(), |acc, role| {
            acc.union(role_reads(templates, role, view))
        });
        let ctx = base_context(view, inputs, &needs);
        // Only per-product units are remembered: a host without any does not hash its
        // context (a monitor host's holds the whole fleet).
        let per_product = roles.iter().any(|r| Specs::of(r, view).any_per_product());
        let recall = inputs.memo.zip(templates.fingerprint.as_deref());
        let recall = recall.filter(|_| per_product);
        let position = format!("{:?}", view.host.database.as_ref().map(|d| d.position));
        Renderer {
            view,
            templates,
            recall: recall.map(|(memo, fp)| memo::Recall::new(memo, fp, &ctx, &position)),
            ctx,
            product: needs.reads("product").then(|| needs.product()),
            secrets: inputs.secrets,
            desired: Desired::default(),
            blocks: 0,
        }
    }

    /// Set `product` in the context to `product` (only the parts templates read), or take
    /// it out. Made once per product and role, for all its files, `when`s and smoke tests,
    /// and only one at a time: 500 products each listing 50 hosts of a pool are 15 MB.
    fn set_product(&mut self, product: Option<&ProductView>) {
        self.ctx.remove("product");
        let (Some(p), Some(wanted)) = (product, &self.product) else {
            return;
        };
        let value = product::value(p, wanted, self.secrets);
        let one = serde_json::Map::from_iter([("product".to_string(), value)]);
        // Moved in, not copied as `Context::insert` would.
        if let Ok(context) = Context::from_value(serde_json::Value::Object(one)) {
            self.ctx.extend(context);
        }
    }

    /// The memo key of `role`'s unit for `product`; `None` without a memo.
    fn memo_key(&self, role: &Role, product: &ProductView) -> Option<String> {
        let recall = self.recall.as_ref()?;
        let value = |bytes: &mut Vec<u8>| {
            if let Some(wanted) = &self.product {
                product::write_parts(product, wanted, self.secrets, bytes);
            }
        };
        let unreadable = secrets::unreadable(Some(product), self.secrets);
        Some(recall.key(&role.name, &product.name, value, &unreadable))
    }

    /// The memo key of `role`'s unit for each of the host's products, in their order (all
    /// `None` without a memo). Each hashes what templates see of its product (a pool of
    /// hundreds of peers, its database chain): a host of 500 products hashes them in two
    /// halves side by side (issue 13), while the other core has nothing to do.
    fn memo_keys(&self, role: &Role) -> Vec<Option<String>> {
        let products = &self.view.products;
        if self.recall.is_none() {
            return vec![None; products.len()];
        }
        let keys = |half: &[ProductView]| -> Vec<Option<String>> {
            half.iter().map(|p| self.memo_key(role, p)).collect()
        };
        let (mut first, second) =
            crate::threads::split(products, products.len() / 2, MIN_KEYS_APART, keys);
        first.extend(second);
        first
    }

    /// `role`'s per-product files and smoke tests for `product`, from the memo when it has
    /// them under `key`, else rendered (and remembered unless a secret blocked a file).
    fn product_specs(
        &mut self,
        role: &Role,
        specs: &Specs<'_>,
        (product, key): (&ProductView, Option<String>),
        tests: &mut [Vec<SmokeTest>],
    ) -> Result<(), Error> {
        if let (Some(key), Some(recall)) = (&key, self.recall.as_mut()) {
            if recall.recall(key, &mut self.desired, tests) {
                return Ok(());
            }
        }
        let (files, blocks) = (self.desired.files.len(), self.blocks);
        let before: Vec<usize> = tests.iter().map(Vec::len).collect();
        self.set_product(Some(product));
        self.specs(role, specs, Some(product), tests)?;
        if let (Some(key), Some(recall)) = (key, self.recall.as_mut()) {
            if self.blocks == blocks {
                recall.store(key, &self.desired.files[files..], tests, &before);
            }
        }
        Ok(())
    }

    /// One file of `spec` (for `product`): skipped where its `when` is not `true`, and
    /// left out with its service blocked when a secret it may read could not be read.
    fn file(&mut self, spec: &FileSpec, product: Option<&ProductView>) -> Result<(), Error> {
        if !self.wanted(spec, product)? {
            return Ok(());
        }
        let is_secret = self.templates.reads_secret(&spec.template);
        let missing = match is_secret {
            true => secrets::unreadable(product, self.secrets),
            false => Vec::new(),
        };
        if !missing.is_empty() {
            self.blocks += 1;
            let blocked = self.desired.blocked.entry(spec.service.clone());
            blocked.or_default().extend(missing);
            return Ok(());
        }
        let rendered = render_file(self.templates, &self.ctx, spec, product);
        let mut file = match is_secret {
            true => rendered.map_err(|e| secrets::redact(&e, self.secrets))?,
            false => rendered?,
        };
        file.is_secret |= is_secret;
        self.desired.files.push(file);
        Ok(())
    }

    /// Whether `spec`'s `when`, if any, renders to `true`.
    fn wanted(&self, spec: &FileSpec, product: Option<&ProductView>) -> Result<bool, Error> {
        let Some(when) = &spec.when else {
            return Ok(true);
        };
        let rendered =
            self.templates
                .inline(when, &self.ctx)
                .map_err(|source| Error::Template {
                    template: when.clone(),
                    role: spec.role.clone(),
                    product: product.map(|p| p.name.clone()),
                    source: Box::new(source),
                })?;
        Ok(rendered.trim() == "true")
    }

    /// The files, smoke tests and hooks of `role` that apply to this host's position:
    /// the host's, then each product's where the catalog says so. Smoke tests keep catalog
    /// order (each spec's, for every product in turn).
    fn role(&mut self, role: &Role) -> Result<(), Error> {
        let view = self.view;
        let specs = Specs::of(role, view);
        let mut tests = vec![Vec::new(); specs.smoke.len()];
        self.set_product(None);
        self.specs(role, &specs, None, &mut tests)?;
        if specs.any_per_product() {
            let keys = self.memo_keys(role);
            for product in view.products.iter().zip(keys) {
                self.product_specs(role, &specs, product, &mut tests)?;
            }
            self.set_product(None);
        }
        self.desired.smoke.extend(tests.into_iter().flatten());
        for hook in &role.hooks {
            let hook = render_hook(self.templates, &self.ctx, &role.name, hook)?;
            self.desired.hooks.extend(hook);
        }
        Ok(())
    }

    /// The files and smoke tests of `specs` for `product` (per-product ones), or for the
    /// host (the others); each smoke test into its spec's place in `tests`.
    fn specs(
        &mut self,
        role: &Role,
        specs: &Specs<'_>,
        product: Option<&ProductView>,
        tests: &mut [Vec<SmokeTest>],
    ) -> Result<(), Error> {
        let mine = |per_product: bool| per_product == product.is_some();
        for spec in specs.files.iter().filter(|f| mine(f.per_product)) {
            self.file(spec, product)?;
        }
        for (i, spec) in specs.smoke.iter().enumerate() {
            if mine(spec.per_product) {
                let test = render_smoke(self.templates, &self.ctx, &role.name, spec, product)?;
                tests[i].push(test);
            }
        }
        Ok(())
    }
}

/// A role's file and smoke specs that apply to this host's position.
struct Specs<'a> {
    files: Vec<&'a FileSpec>,
    smoke: Vec<&'a SmokeSpec>,
}

impl<'a> Specs<'a> {
    /// `role`'s specs that apply to `view`'s position.
    fn of(role: &'a Role, view: &HostView) -> Specs<'a> {
        Specs {
            files: role
                .files
                .iter()
                .filter(|f| position_matches(f.when_position, view))
                .collect(),
            smoke: role
                .smoke
                .iter()
                .filter(|s| position_matches(s.when_position, view))
                .collect(),
        }
    }

    fn any_per_product(&self) -> bool {
        self.files.iter().any(|f| f.per_product) || self.smoke.iter().any(|s| s.per_product)
    }
}

/// The templated fields of a smoke test that are set.
fn smoke_strings(s: &SmokeSpec) -> impl Iterator<Item = &str> {
    [
        &s.name,
        &s.url,
        &s.host,
        &s.body_contains,
        &s.site_marker,
        &s.address,
        &s.command,
        &s.read_only,
    ]
    .into_iter()
    .flatten()
    .map(String::as_str)
}

/// What `role`'s templates and catalog strings that apply to this host read.
fn role_reads(templates: &Templates, role: &Role, view: &HostView) -> Reads {
    let files = role
        .files
        .iter()
        .filter(|f| position_matches(f.when_position, view))
        .flat_map(|f| {
            [
                f.template.as_str(),
                f.path.as_str(),
                f.owner.as_str(),
                f.group.as_str(),
                f.when.as_deref().unwrap_or_default(),
            ]
        });
    let smoke = role
        .smoke
        .iter()
        .filter(|s| position_matches(s.when_position, view))
        .flat_map(smoke_strings);
    let hooks = role.hooks.iter().map(|h| h.command.as_str());
    files
        .chain(smoke)
        .chain(hooks)
        .fold(Reads::none(), |acc, name| acc.union(templates.reads(name)))
}

/// The context every template of this host sees: only the names they read, since
/// `fleet` and `products` of a large map cost more to serialise than the render itself.
/// A name no template reads is left out, which no template can tell.
fn base_context(view: &HostView, inputs: &Inputs<'_>, needs: &Reads) -> Context {
    let (map, vars) = (inputs.map, inputs.vars);
    let mut ctx = Context::new();
    if needs.reads("host") {
        ctx.insert("host", &view.host);
    }
    if needs.reads("products") {
        ctx.insert("products", &view.products);
    }
    if needs.reads("fleet") {
        ctx.insert("fleet", &view.fleet);
    }
    if needs.reads("map") {
        ctx.insert("map", map);
    }
    if needs.reads("vars") {
        ctx.insert("vars", vars);
    }
    if needs.reads("secrets") {
        ctx.insert("secrets", &secrets::vars_values(inputs.secrets));
    }
    ctx
}

fn position_matches(when: Option<WhenPosition>, view: &HostView) -> bool {
    let position = view.host.database.as_ref().map(|db| db.position);
    when.is_none_or(|w| w.matches(position))
}

fn render_file(
    templates: &Templates,
    ctx: &Context,
    spec: &FileSpec,
    product: Option<&ProductView>,
) -> Result<RenderedFile, Error> {
    let name = product.map(|p| p.name.clone());
    let template_error = |template: &str, source: tera::Error| Error::Template {
        template: template.to_string(),
        role: spec.role.clone(),
        product: name.clone(),
        source: Box::new(source),
    };
    let path = templates
        .inline(&spec.path, ctx)
        .map_err(|e| template_error(&spec.path, e))?;
    let body = templates
        .tera
        .render(&spec.template, ctx)
        .map_err(|e| template_error(&spec.template, e))?;
    let path = clean_path(spec, &path)?;
    let (owner, group) = owners(templates, ctx, spec, &template_error)?;
    let mut content = header(spec, product).into_bytes();
    content.extend_from_slice(body.as_bytes());
    Ok(RenderedFile {
        path,
        content: content.into(),
        owner,
        group,
        mode: spec.mode,
        service: spec.service.clone(),
        role: spec.role.clone(),
        product: name,
        template: spec.template.clone(),
        is_secret: spec.is_secret,
    })
}

/// A rendered path must be absolute, without whitespace or control characters.
fn clean_path(spec: &FileSpec, rendered: &str) -> Result<PathBuf, Error> {
    let path = PathBuf::from(rendered.trim());
    let text = path.to_string_lossy();
    if path.is_absolute() && !text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Ok(path);
    }
    Err(Error::Invalid {
        role: spec.role.clone(),
        what: format!("path {:?}", spec.path),
        reason: format!("renders to {path:?}, not a clean absolute path"),
    })
}

/// The owner and group of `spec`, rendered like its path (e.g. the product's user).
fn owners(
    templates: &Templates,
    ctx: &Context,
    spec: &FileSpec,
    error: &dyn Fn(&str, tera::Error) -> Error,
) -> Result<(String, String), Error> {
    let one = |what: &str, text: &String| {
        let name = templates.inline(text, ctx).map_err(|e| error(text, e))?;
        account_name(spec, what, text, name)
    };
    Ok((one("owner", &spec.owner)?, one("group", &spec.group)?))
}

/// A rendered owner or group (e.g. `{{ product.user | default(value="root") }}`) must be
/// a user or group name or a number: letters, digits, `_`, `-`, `.`, not starting with `-`.
fn account_name(
    spec: &FileSpec,
    what: &str,
    text: &str,
    rendered: String,
) -> Result<String, Error> {
    let name = rendered.trim();
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        return Ok(name.to_string());
    }
    Err(Error::Invalid {
        role: spec.role.clone(),
        what: format!("{what} {text:?}"),
        reason: format!("renders to {rendered:?}, not a user or group name"),
    })
}

/// The first line of every managed file, in the file's comment syntax.
fn header(spec: &FileSpec, product: Option<&ProductView>) -> String {
    let product = product
        .map(|p| format!(", product {}", p.name))
        .unwrap_or_default();
    format!(
        "{} managed by rolecall — do not edit (role {}{product}, template {})\n",
        spec.comment, spec.role, spec.template
    )
}

struct Fields<'a> {
    templates: &'a Templates,
    ctx: &'a Context,
    role: &'a str,
    product: Option<&'a ProductView>,
}

impl Fields<'_> {
    fn render(&self, field: &str, text: &str) -> Result<String, Error> {
        self.templates
            .inline(text, self.ctx)
            .map_err(|source| Error::Template {
                template: field.to_string(),
                role: self.role.to_string(),
                product: self.product.map(|p| p.name.clone()),
                source: Box::new(source),
            })
    }

    fn opt(&self, field: &str, text: &Option<String>) -> Result<Option<String>, Error> {
        text.as_ref().map(|t| self.render(field, t)).transpose()
    }

    fn required(&self, field: &str, text: &Option<String>) -> Result<String, Error> {
        let t = text
            .as_ref()
            .ok_or_else(|| self.invalid(field, "required for this kind"))?;
        self.render(field, t)
    }

    fn command(&self, field: &str, text: &Option<String>) -> Result<Command, Error> {
        let rendered = self.required(field, text)?;
        Command::parse(&rendered).map_err(|reason| self.invalid(field, &reason))
    }

    /// The check a smoke test of `spec`'s kind performs, its fields rendered.
    fn check(&self, spec: &SmokeSpec) -> Result<SmokeCheck, Error> {
        Ok(match spec.kind {
            SmokeKind::Http => SmokeCheck::Http {
                url: self.required("smoke.url", &spec.url)?,
                host: self.opt("smoke.host", &spec.host)?,
                expect_status: spec.expect_status.unwrap_or(200),
                body_contains: self.opt("smoke.body_contains", &spec.body_contains)?,
                site_marker: self.marker_path(spec)?,
            },
            SmokeKind::Tcp => SmokeCheck::Tcp {
                address: self.required("smoke.address", &spec.address)?,
            },
            SmokeKind::Mysql => SmokeCheck::Mysql {
                command: self.command("smoke.command", &spec.command)?,
                read_only: self.opt("smoke.read_only", &spec.read_only)?,
            },
            SmokeKind::Command => SmokeCheck::Command {
                command: self.command("smoke.command", &spec.command)?,
            },
        })
    }

    /// The site marker's path, rendered; the smoke stage resolves it against the URL.
    fn marker_path(&self, spec: &SmokeSpec) -> Result<Option<String>, Error> {
        match self.opt("smoke.site_marker", &spec.site_marker)? {
            Some(path) if !path.starts_with('/') => {
                let rendered = crate::text::printable(&path, 120);
                let reason = format!("renders to {rendered:?}, not a path starting with /");
                Err(self.invalid("smoke.site_marker", &reason))
            }
            marker => Ok(marker),
        }
    }

    /// `field` of this smoke test (of its product, if any) is unusable because of `reason`.
    fn invalid(&self, field: &str, reason: &str) -> Error {
        let of = self.product.map(|p| format!(" of product {}", p.name));
        Error::Invalid {
            role: self.role.to_string(),
            what: format!("{field}{}", of.unwrap_or_default()),
            reason: reason.to_string(),
        }
    }
}

fn render_smoke(
    templates: &Templates,
    ctx: &Context,
    role: &str,
    spec: &SmokeSpec,
    product: Option<&ProductView>,
) -> Result<SmokeTest, Error> {
    let f = Fields {
        templates,
        ctx,
        role,
        product,
    };
    let check = f.check(spec)?;
    let default_name = format!(
        "{role} {:?}{}",
        spec.kind,
        product.map(|p| format!(" {}", p.name)).unwrap_or_default()
    )
    .to_lowercase();
    let name = f.opt("smoke.name", &spec.name)?.unwrap_or(default_name);
    Ok(SmokeTest {
        name,
        role: role.to_string(),
        check,
        timeout: spec.timeout,
    })
}

/// A hook whose command renders to nothing does not apply to this host.
fn render_hook(
    templates: &Templates,
    ctx: &Context,
    role: &str,
    hook: &HookSpec,
) -> Result<Option<Hook>, Error> {
    let f = Fields {
        templates,
        ctx,
        role,
        product: None,
    };
    let text = f.render("hooks.command", &hook.command)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let command = Command::parse(&text).map_err(|reason| f.invalid("hooks.command", &reason))?;
    Ok(Some(Hook {
        role: role.to_string(),
        on: hook.on,
        command,
        timeout: hook.timeout,
    }))
}

/// Two files (rendered or remembered) with one path are refused; `desired.files` is sorted.
fn check_duplicates(desired: &Desired) -> Result<(), Error> {
    let remembered = desired.remembered.iter().map(|r| &r.file);
    let mut files: Vec<&RenderedFile> = desired.files.iter().chain(remembered).collect();
    if !desired.remembered.is_empty() {
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    for pair in files.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(Error::Duplicate {
                path: pair[0].path.clone(),
                first: pair[0].role.clone(),
                second: pair[1].role.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a template reading the map's generation, ETag or version is named, with
    /// what it costs; the shipped catalog has none.
    #[test]
    fn templates_that_change_with_every_publish_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("web")).unwrap();
        std::fs::write(dir.path().join("web/a.tera"), "# {{ map.generation }}\n").unwrap();
        std::fs::write(dir.path().join("web/b.tera"), "# {{ host.id }}\n").unwrap();
        let catalog = Catalog::default();
        let templates = Templates::load(dir.path(), &catalog).unwrap();
        assert_eq!(templates.warnings().len(), 1, "{:?}", templates.warnings());
        let w = &templates.warnings()[0];
        assert!(
            w.contains("web/a.tera") && w.contains("map.generation") && w.contains("reloads"),
            "{w}"
        );

        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let catalog = Catalog::load(&shipped, &Default::default()).unwrap();
        let templates = Templates::load(&shipped, &catalog).unwrap();
        assert_eq!(templates.warnings(), &[] as &[String]);
    }

    /// The role `app` (its `role` TOML, `app/conf.tera` = `template`) rendered for host h1,
    /// which serves the products zeta and alpha; the products' names in the view's order.
    /// A catalog of one role `app` (`role`, its file template `template`) in a temp dir.
    fn app_catalog(role: &str, template: &str) -> (tempfile::TempDir, Catalog, Templates) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("app/conf.tera"), template).unwrap();
        std::fs::write(dir.path().join("app.toml"), role).unwrap();
        let catalog = Catalog::load(dir.path(), &Default::default()).unwrap();
        let templates = Templates::load(dir.path(), &catalog).unwrap();
        (dir, catalog, templates)
    }

    /// Host h1's view of `map`.
    fn h1_view(map: &str) -> HostView {
        let identity = crate::identity::Identity {
            id: "h1".to_string(),
            address: "10.0.0.1".to_string(),
            az: "us-east-1a".to_string(),
            region: "us-east-1".to_string(),
            instance_type: None,
            ami_id: None,
        };
        let (_, resolution) = crate::rolemap::load_for(map.as_bytes(), &identity).unwrap();
        let crate::rolemap::Resolution::Assigned(view) = resolution else {
            panic!("h1 is assigned");
        };
        *view
    }

    /// Host h1 (role `app`) serving zeta and alpha, with these domains.
    fn app_view(zeta: &str, alpha: &str) -> HostView {
        let product = |name: &str, domain: &str| {
            format!("[products.{name}]\ndomain = \"{domain}\"\ndocroot = \"/srv/{name}\"\n\n")
        };
        let map = format!(
            "schema = 1\ngeneration = 1\n\n{}{}[hosts.h1]\naddress = \"10.0.0.1\"\naz = \"us-east-1a\"\nroles = [\"app\"]\nproducts = [\"zeta\", \"alpha\"]\n",
            product("zeta", zeta),
            product("alpha", alpha)
        );
        h1_view(&map)
    }

    fn render_app(role: &str, template: &str) -> (Vec<String>, Result<Desired, Error>) {
        let (_dir, catalog, templates) = app_catalog(role, template);
        let view = app_view("zeta.example", "alpha.example");
        let products = view.products.iter().map(|p| p.name.clone()).collect();
        let info = MapInfo::default();
        let desired = render(&view, &catalog, &templates, &info, &Default::default());
        (products, desired)
    }

    /// The memo: a product whose value changed is rendered again, the other is remembered;
    /// other vars (in the context every template sees) or another template text remember
    /// nothing.
    #[test]
    fn the_memo_renders_again_exactly_the_units_whose_inputs_changed() {
        let role = "[[files]]\npath = \"/etc/app/{{ product.name }}.conf\"\ntemplate = \"app/conf.tera\"\nper_product = true\n";
        let (_dir, catalog, templates) =
            app_catalog(role, "{{ product.domain }} {{ vars.port }}\n");
        let vars: toml::Table = toml::from_str("port = 80").unwrap();
        let info = MapInfo::default();
        let secrets = Resolved::default();
        let run = |view: &HostView, templates: &Templates, vars: &toml::Table, memo: &Memo| {
            let inputs = Inputs {
                map: &info,
                vars,
                secrets: &secrets,
                memo: Some(memo),
            };
            render_with(view, &catalog, templates, &inputs).unwrap()
        };
        let remembered = |d: &Desired| -> Vec<String> {
            d.remembered
                .iter()
                .map(|r| r.file.path.display().to_string())
                .collect()
        };
        let view = app_view("zeta.example", "alpha.example");
        let first = run(&view, &templates, &vars, &Memo::new("test"));
        let memo = first.memo.clone().expect("a memo of the first render");
        assert_eq!(memo.len(), 2);

        let moved = run(
            &app_view("zeta.example", "alpha.moved"),
            &templates,
            &vars,
            &memo,
        );
        assert_eq!(remembered(&moved), ["/etc/app/zeta.conf"]);
        let alpha = moved
            .files
            .iter()
            .find(|f| f.product.as_deref() == Some("alpha"));
        assert!(
            String::from_utf8_lossy(&alpha.expect("alpha rendered").content)
                .contains("alpha.moved 80")
        );
        assert!(moved.memo.is_some(), "the memo changed");

        let other_vars: toml::Table = toml::from_str("port = 8080").unwrap();
        assert_eq!(
            remembered(&run(&view, &templates, &other_vars, &memo)),
            Vec::<String>::new()
        );
        let (_other, catalog2, edited) =
            app_catalog(role, "{{ product.domain }}:{{ vars.port }}\n");
        assert_eq!(catalog2, catalog);
        assert_eq!(
            remembered(&run(&view, &edited, &vars, &memo)),
            Vec::<String>::new()
        );
        let again = run(&view, &templates, &vars, &memo);
        assert_eq!(remembered(&again).len(), 2);
        assert!(again.memo.is_none(), "nothing changed");
    }

    /// Host h1 (role `app`) serving `n` products p0.. (each with the domain `pN.example`,
    /// `pN.moved` for those in `moved`).
    fn many_view(n: usize, moved: &[usize]) -> HostView {
        let mut map = String::from("schema = 1\ngeneration = 1\n\n");
        for i in 0..n {
            let domain = match moved.contains(&i) {
                true => format!("p{i}.moved"),
                false => format!("p{i}.example"),
            };
            map += &format!("[products.p{i}]\ndomain = \"{domain}\"\ndocroot = \"/srv/p{i}\"\n\n");
        }
        let names: Vec<String> = (0..n).map(|i| format!("\"p{i}\"")).collect();
        map += &format!(
            "[hosts.h1]\naddress = \"10.0.0.1\"\naz = \"us-east-1a\"\nroles = [\"app\"]\nproducts = [{}]\n",
            names.join(", ")
        );
        h1_view(&map)
    }

    /// A host of enough products that their memo keys are hashed in two halves side by side
    /// (`Renderer::memo_keys`): each product finds its own unit, in either half, and a moved
    /// product in either half is rendered again, with its own domain, the rest remembered.
    #[test]
    fn memo_keys_hashed_in_two_halves_each_find_their_own_product() {
        let n = 4 * MIN_KEYS_APART;
        let role = "[[files]]\npath = \"/etc/app/{{ product.name }}.conf\"\ntemplate = \"app/conf.tera\"\nper_product = true\n";
        let (_dir, catalog, templates) = app_catalog(role, "{{ product.domain }}\n");
        let (info, vars, secrets) = (MapInfo::default(), toml::Table::new(), Resolved::default());
        let run = |view: &HostView, memo: &Memo| {
            let inputs = Inputs {
                map: &info,
                vars: &vars,
                secrets: &secrets,
                memo: Some(memo),
            };
            render_with(view, &catalog, &templates, &inputs).unwrap()
        };
        let first = run(&many_view(n, &[]), &Memo::new("test"));
        let memo = first.memo.expect("a memo of the first render");
        let (early, late) = (3, n - 5);
        let moved = run(&many_view(n, &[early, late]), &memo);
        // The line the template wrote, after the header.
        let content = |f: &RenderedFile| {
            let text = String::from_utf8_lossy(&f.content).into_owned();
            text.lines().last().unwrap_or_default().to_string()
        };
        let rendered: Vec<(String, String)> = moved
            .files
            .iter()
            .map(|f| (f.path.display().to_string(), content(f)))
            .collect();
        let mut expected = vec![
            (format!("/etc/app/p{early}.conf"), format!("p{early}.moved")),
            (format!("/etc/app/p{late}.conf"), format!("p{late}.moved")),
        ];
        expected.sort();
        assert_eq!(
            rendered, expected,
            "rendered again: the moved products only"
        );
        assert_eq!(moved.remembered.len(), n - 2);
        for r in &moved.remembered {
            let name = r.file.product.as_deref().expect("a product's file");
            assert_eq!(r.file.path, Path::new(&format!("/etc/app/{name}.conf")));
        }
        let sha = |i: usize| {
            let remembered = first
                .files
                .iter()
                .find(|f| f.product.as_deref() == Some(&*format!("p{i}")));
            crate::text::sha256_hex(&remembered.expect("rendered first").content)
        };
        for r in &moved.remembered {
            let i: usize = r.file.product.as_deref().unwrap()[1..].parse().unwrap();
            assert_eq!(r.sha256, sha(i), "p{i} remembered another product's file");
        }
    }

    /// A memo written with stamps ([`Memo::with_stamps`], which copies no unit it keeps)
    /// reads back as the memo restamped with them; with none, as the memo itself.
    #[test]
    fn a_memo_written_with_stamps_reads_back_restamped() {
        let role = "[[files]]\npath = \"/etc/app/{{ product.name }}.conf\"\ntemplate = \"app/conf.tera\"\nper_product = true\n";
        let (_dir, catalog, templates) = app_catalog(role, "{{ product.domain }}\n");
        let (info, vars, secrets) = (MapInfo::default(), toml::Table::new(), Resolved::default());
        let inputs = Inputs {
            map: &info,
            vars: &vars,
            secrets: &secrets,
            memo: Some(&Memo::new("test")),
        };
        let view = app_view("zeta.example", "alpha.example");
        let rendered = render_with(&view, &catalog, &templates, &inputs).unwrap();
        let memo = rendered.memo.expect("a memo");
        let stamp = crate::plan::Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (4, 5),
            ctime: (6, 7),
            mode: 0o100_644,
            uid: 0,
            gid: 0,
        };
        let stamps: BTreeMap<PathBuf, crate::plan::Stamp> = [
            (PathBuf::from("/etc/app/zeta.conf"), stamp),
            (PathBuf::from("/etc/app/not-in-the-memo.conf"), stamp),
        ]
        .into();
        fn json(value: impl serde::Serialize) -> serde_json::Value {
            serde_json::to_value(value).unwrap()
        }
        let none = BTreeMap::new();
        assert_eq!(json(memo.with_stamps(&none)), json(&memo));
        let mut restamped = memo.clone();
        assert!(restamped.restamp(&stamps), "zeta's file gets a stamp");
        let written = json(memo.with_stamps(&stamps));
        assert_ne!(written, json(&memo));
        assert_eq!(written, json(&restamped));
        let read: Memo = serde_json::from_value(written).unwrap();
        assert_eq!(read, restamped);
        let stamped: Vec<_> = read.stamps().map(|(p, s)| (p.to_path_buf(), s)).collect();
        assert_eq!(stamped, [(PathBuf::from("/etc/app/zeta.conf"), stamp)]);
    }

    fn smoke(name: &str, per_product: bool) -> String {
        format!("[[smoke]]\nkind = \"command\"\nname = \"{name}\"\ncommand = \"true\"\nper_product = {per_product}\n")
    }

    /// Each product's files and smoke tests are rendered together (its template value made
    /// once), yet the smoke tests keep catalog order: each spec's for every product in turn,
    /// the host's where its spec stands; files come sorted by path.
    #[test]
    fn smoke_tests_keep_catalog_order_across_products() {
        let role = [
            "[[files]]\npath = \"/etc/app/{{ product.name }}.conf\"\ntemplate = \"app/conf.tera\"\nper_product = true\n".to_string(),
            smoke("first {{ product.name }}", true),
            smoke("host", false),
            smoke("second {{ product.name }}", true),
        ]
        .concat();
        let (products, desired) = render_app(&role, "{{ product.domain }}\n");
        let desired = desired.unwrap();
        let names: Vec<&str> = desired.smoke.iter().map(|t| t.name.as_str()).collect();
        let expected: Vec<String> = (products.iter().map(|p| format!("first {p}")))
            .chain(["host".to_string()])
            .chain(products.iter().map(|p| format!("second {p}")))
            .collect();
        assert_eq!(names, expected);
        let files: Vec<(String, String)> = desired
            .files
            .iter()
            .map(|f| {
                (
                    f.path.display().to_string(),
                    String::from_utf8_lossy(&f.content)
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(
            files,
            [
                (
                    "/etc/app/alpha.conf".to_string(),
                    "alpha.example".to_string()
                ),
                ("/etc/app/zeta.conf".to_string(), "zeta.example".to_string()),
            ]
        );
    }

    /// A smoke test's `site_marker` must render to a path: the error names the key, the role
    /// and the product.
    #[test]
    fn a_site_marker_that_is_not_a_path_is_refused() {
        let role = "[[smoke]]\nkind = \"http\"\nper_product = true\nurl = \"http://127.0.0.1/\"\nsite_marker = \"rolecall/{{ product.name }}\"\n";
        let (_, desired) = render_app(role, "");
        let err = crate::text::chain(&desired.unwrap_err());
        assert!(
            err.contains("smoke.site_marker")
                && err.contains("starting with /")
                && err.contains("app"),
            "{err}"
        );
        let fixed = role.replace("\"rolecall/", "\"/rolecall/");
        let (_, desired) = render_app(&fixed, "");
        assert_eq!(desired.unwrap().smoke.len(), 2);
    }

    fn catalog_with(dir: &Path, mode: &str, template: &str) -> Result<Templates, String> {
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(dir.join("app/env.tera"), template).unwrap();
        let role = format!(
            "[[files]]\npath = \"/etc/app/{{{{ product.name }}}}.env\"\ntemplate = \"app/env.tera\"\nper_product = true\nmode = \"{mode}\"\n"
        );
        std::fs::write(dir.join("app.toml"), role).unwrap();
        let catalog = Catalog::load(dir, &Default::default()).map_err(|e| e.to_string())?;
        Templates::load(dir, &catalog).map_err(|e| crate::text::chain(&e))
    }

    /// The template tree is walked through symlinked directories (as the catalog's owner
    /// laid it out); a symlink loop is refused, naming where, instead of being walked.
    #[test]
    fn templates_are_read_through_symlinked_directories_and_a_loop_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = tempfile::tempdir().unwrap();
        std::fs::write(shared.path().join("env.tera"), "NAME={{ product.name }}\n").unwrap();
        std::os::unix::fs::symlink(shared.path(), dir.path().join("app")).unwrap();
        let role = "[[files]]\npath = \"/etc/app/{{ product.name }}.env\"\ntemplate = \"app/env.tera\"\nper_product = true\n";
        std::fs::write(dir.path().join("app.toml"), role).unwrap();
        let catalog = Catalog::load(dir.path(), &Default::default()).unwrap();
        assert!(Templates::load(dir.path(), &catalog).is_ok());

        std::os::unix::fs::symlink(dir.path(), shared.path().join("again")).unwrap();
        let err = Templates::load(dir.path(), &catalog)
            .map(|_| ())
            .unwrap_err();
        let err = crate::text::chain(&err);
        assert!(err.contains("app/again") && err.contains("loop"), "{err}");
    }

    /// A template, file or catalog string, whose expressions nest deeper than Tera's parser
    /// can take in bounded time is refused before it is parsed, naming it (the catalog fuzz
    /// target's 12 nested calls took 17 s).
    #[test]
    fn templates_nested_too_deeply_are_refused_before_parsing() {
        let slow = format!("X={{{{ {} }}}}\n", "f(a = g".repeat(12));
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let err = catalog_with(dir.path(), "0644", &slow)
            .map(|_| ())
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            err.contains("app/env.tera") && err.contains("nested 12 deep"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("app/x.tera"), "x\n").unwrap();
        let role = format!(
            "[[files]]\npath = \"/etc/{}\"\ntemplate = \"app/x.tera\"\n",
            slow.trim_start_matches("X=").trim_end()
        );
        std::fs::write(dir.path().join("app.toml"), role).unwrap();
        let catalog = Catalog::load(dir.path(), &Default::default()).unwrap();
        let err = Templates::load(dir.path(), &catalog)
            .map(|_| ())
            .unwrap_err();
        let err = crate::text::chain(&err);
        assert!(
            err.contains("role app") && err.contains("nested 12 deep"),
            "{err}"
        );
    }

    /// SPEC §10: a file whose template reads a secret may not be readable by others; the
    /// error names the role and the key.
    #[test]
    fn a_secret_reading_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let reads = "PASSWORD={{ product.secrets.db_password }}\n";
        let err = catalog_with(dir.path(), "0644", reads)
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.contains("role app") && err.contains("files[0].mode"),
            "{err}"
        );
        assert!(catalog_with(dir.path(), "0640", reads).is_ok());
        assert!(catalog_with(dir.path(), "0644", "NAME={{ product.name }}\n").is_ok());
        let marked = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(marked.path().join("app")).unwrap();
        std::fs::write(marked.path().join("app/x.tera"), "x\n").unwrap();
        let role = "[[files]]\npath = \"/etc/x\"\ntemplate = \"app/x.tera\"\nsecret = true\nmode = \"0604\"\n";
        std::fs::write(marked.path().join("app.toml"), role).unwrap();
        let err = Catalog::load(marked.path(), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("app.toml") && err.contains("files[0].mode"),
            "{err}"
        );
    }

    #[test]
    fn vouched_files_are_sorted_and_every_desired_file_comes_by_path_with_or_without_bytes() {
        let file = |path: &str, content: &str| RenderedFile {
            path: PathBuf::from(path),
            content: content.as_bytes().into(),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o644,
            service: None,
            role: "web".into(),
            product: None,
            template: "t".into(),
            is_secret: false,
        };
        let remembered = |path: &str| memo::Remembered {
            file: file(path, ""),
            sha256: format!("sha of {path}"),
            stamp: None,
        };
        // Component order, which is not byte order: `/a/b` before `/a-b`.
        let mut desired = Desired {
            files: vec![file("/a/c", "c"), file("/z", "z")],
            remembered: ["/a-b/x", "/y", "/a/b", "/unread", "/a/d/e", "/0"]
                .map(remembered)
                .to_vec(),
            ..Desired::default()
        };
        desired.vouch(|r| r.file.path != Path::new("/unread"));
        let paths = |files: Vec<&RenderedFile>| -> Vec<String> {
            files.iter().map(|f| f.path.display().to_string()).collect()
        };
        let vouched: Vec<&RenderedFile> = desired.vouched.iter().map(|r| &r.file).collect();
        assert_eq!(paths(vouched), ["/0", "/a/b", "/a/d/e", "/a-b/x", "/y"]);
        let all = ["/0", "/a/b", "/a/c", "/a/d/e", "/a-b/x", "/y", "/z"];
        assert_eq!(paths(desired.all_files().collect()), all);
        let expected: Vec<(String, String)> = desired
            .expected()
            .map(|(f, sha)| (f.path.display().to_string(), sha))
            .collect();
        assert_eq!(
            expected.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            all
        );
        assert_eq!(expected[1].1, "sha of /a/b");
        assert_eq!(expected[2].1, crate::text::sha256_hex(b"c"));
        assert_eq!(expected[6].1, crate::text::sha256_hex(b"z"));
        // Once installed, the bytes go and the commit sees the same files and hashes.
        desired.forget_bytes();
        assert!(desired.files.is_empty());
        assert!(desired.vouched.iter().all(|r| r.file.content.is_empty()));
        let forgotten: Vec<(String, String)> = desired
            .expected()
            .map(|(f, sha)| (f.path.display().to_string(), sha))
            .collect();
        assert_eq!(forgotten, expected);
    }
}

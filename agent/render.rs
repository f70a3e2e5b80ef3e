//! Stage 4, render (SPEC §6): `HostView` + catalog + Tera → every desired file, smoke test
//! and hook, before anything touches disk. Pure: the caller loads the [`Templates`] once
//! per reconcile; output is byte-for-byte repeatable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tera::{Context, Tera};

use crate::catalog::{
    Catalog, Command, FileSpec, HookEvent, HookSpec, SmokeKind, SmokeSpec, WhenPosition,
};
use crate::rolemap::resolve::{HostView, ProductView};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedFile {
    /// Logical absolute path (before `--root`).
    pub path: PathBuf,
    /// Bytes, header included.
    #[serde(skip)]
    pub content: Vec<u8>,
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
    /// Smoke tests in catalog order.
    pub smoke: Vec<SmokeTest>,
    /// Hooks in catalog order.
    pub hooks: Vec<Hook>,
}

/// `map` as templates see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MapInfo {
    /// ETag of the map object.
    pub etag: Option<String>,
    /// S3 VersionId.
    pub version: Option<String>,
    /// Generation.
    pub generation: u64,
    /// Source URL.
    pub url: String,
}

/// The Tera instance of one reconcile: every `*.tera` file under `paths.templates`, and
/// every templated string of the catalog (paths, smoke test fields, hook commands), each
/// parsed once, not once per product.
#[derive(Debug)]
pub struct Templates {
    tera: Tera,
}

impl Templates {
    /// Load every `*.tera` under `dir` and the templated strings of `catalog`, autoescape
    /// off (our outputs are config files).
    ///
    /// # Errors
    /// `Load` with Tera's parse error; `Template` for a catalog string that does not parse.
    pub fn load(dir: &Path, catalog: &Catalog) -> Result<Templates, Error> {
        let glob = format!("{}/**/*.tera", dir.display());
        let mut tera = Tera::new(&glob).map_err(|source| Error::Load {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        })?;
        tera.autoescape_on(vec![]);
        for (role, text) in catalog_strings(catalog) {
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
        Ok(Templates { tera })
    }

    /// Render the catalog string `text` (e.g. `"/etc/x/{{ product.name }}.conf"`).
    fn inline(&self, text: &str, ctx: &Context) -> tera::Result<String> {
        if !is_templated(text) {
            return Ok(text.to_string());
        }
        let name = inline_name(text);
        match self.tera.get_template_names().any(|n| n == name) {
            true => self.tera.render(&name, ctx),
            false => Tera::one_off(text, ctx, false),
        }
    }
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
        out.extend(role.hooks.iter().map(|h| (r, h.command.as_str())));
        for s in &role.smoke {
            let fields = [
                &s.name,
                &s.url,
                &s.host,
                &s.body_contains,
                &s.address,
                &s.command,
                &s.read_only,
            ];
            out.extend(fields.into_iter().flatten().map(|t| (r, t.as_str())));
        }
    }
    out
}

/// Render everything `view`'s roles need.
///
/// # Errors
/// Unknown roles, template errors, unusable rendered paths or commands, duplicates.
pub fn render(
    view: &HostView,
    catalog: &Catalog,
    templates: &Templates,
    map: &MapInfo,
    vars: &toml::Table,
) -> Result<Desired, Error> {
    let mut ctx = base_context(view, map, vars);
    let mut desired = Desired::default();
    for role_name in &view.host.roles {
        let role = catalog
            .roles
            .get(role_name)
            .ok_or_else(|| Error::UnknownRole {
                role: role_name.clone(),
                host: view.host.id.clone(),
            })?;
        for spec in role
            .files
            .iter()
            .filter(|f| position_matches(f.when_position, view))
        {
            for product in fan_out(spec.per_product, &view.products) {
                set_product(&mut ctx, product);
                desired
                    .files
                    .push(render_file(templates, &ctx, spec, product)?);
            }
        }
        for spec in role
            .smoke
            .iter()
            .filter(|s| position_matches(s.when_position, view))
        {
            for product in fan_out(spec.per_product, &view.products) {
                set_product(&mut ctx, product);
                desired
                    .smoke
                    .push(render_smoke(templates, &ctx, role_name, spec, product)?);
            }
        }
        for hook in &role.hooks {
            set_product(&mut ctx, None);
            desired
                .hooks
                .extend(render_hook(templates, &ctx, role_name, hook)?);
        }
    }
    desired.files.sort_by(|a, b| a.path.cmp(&b.path));
    check_duplicates(&desired.files)?;
    Ok(desired)
}

fn base_context(view: &HostView, map: &MapInfo, vars: &toml::Table) -> Context {
    let mut ctx = Context::new();
    ctx.insert("host", &view.host);
    ctx.insert("products", &view.products);
    ctx.insert("fleet", &view.fleet);
    ctx.insert("map", map);
    ctx.insert("vars", vars);
    ctx
}

fn set_product(ctx: &mut Context, product: Option<&ProductView>) {
    match product {
        Some(p) => ctx.insert("product", p),
        None => {
            ctx.remove("product");
        }
    }
}

fn fan_out(per_product: bool, products: &[ProductView]) -> Vec<Option<&ProductView>> {
    if per_product {
        products.iter().map(Some).collect()
    } else {
        vec![None]
    }
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
    let path = PathBuf::from(path.trim());
    if !path.is_absolute()
        || path
            .to_string_lossy()
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Invalid {
            role: spec.role.clone(),
            what: format!("path {:?}", spec.path),
            reason: format!("renders to {path:?}, not a clean absolute path"),
        });
    }
    let mut content = header(spec, product).into_bytes();
    content.extend_from_slice(body.as_bytes());
    Ok(RenderedFile {
        path,
        content,
        owner: spec.owner.clone(),
        group: spec.group.clone(),
        mode: spec.mode,
        service: spec.service.clone(),
        role: spec.role.clone(),
        product: name,
        template: spec.template.clone(),
        is_secret: spec.is_secret,
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

    fn invalid(&self, field: &str, reason: &str) -> Error {
        Error::Invalid {
            role: self.role.to_string(),
            what: field.to_string(),
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
    let check = match spec.kind {
        SmokeKind::Http => SmokeCheck::Http {
            url: f.required("smoke.url", &spec.url)?,
            host: f.opt("smoke.host", &spec.host)?,
            expect_status: spec.expect_status.unwrap_or(200),
            body_contains: f.opt("smoke.body_contains", &spec.body_contains)?,
        },
        SmokeKind::Tcp => SmokeCheck::Tcp {
            address: f.required("smoke.address", &spec.address)?,
        },
        SmokeKind::Mysql => SmokeCheck::Mysql {
            command: f.command("smoke.command", &spec.command)?,
            read_only: f.opt("smoke.read_only", &spec.read_only)?,
        },
        SmokeKind::Command => SmokeCheck::Command {
            command: f.command("smoke.command", &spec.command)?,
        },
    };
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

fn check_duplicates(files: &[RenderedFile]) -> Result<(), Error> {
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

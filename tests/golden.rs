//! Golden tests (STYLE §3.11): one fleet, `tests/golden/map.toml`, rendered for the host of
//! each `tests/golden/<case>/` (`identity.toml`, optional `vars.toml`) with the default
//! catalog through the library, matching `expected/<logical path>` byte for byte, no file
//! missing or extra; `fails/` holds maps validation rejects and templates that must fail or
//! stay unescaped. Regenerate with `UPDATE_GOLDEN=1 cargo test --test tests golden` and
//! review that diff like code; refused under `CI`, where it would make the test unfailable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use rolecall::catalog::Catalog;
use rolecall::identity::Identity;
use rolecall::render::{self, Desired, MapInfo, SmokeCheck};
use rolecall::rolemap::{self, Resolution};
use rolecall::text::chain;

/// Set to `1` to rewrite the expected files instead of comparing with them.
const UPDATE_VAR: &str = "UPDATE_GOLDEN";
/// Set (to anything) by CI, where updating instead of comparing is refused.
const CI_VAR: &str = "CI";
/// The directory of cases; `fails` is not a case.
const FAILS: &str = "fails";
/// What templates see as `map.url` in every case.
const MAP_URL: &str = "s3://fleet-config/rolemap.toml";

/// `tests/golden`.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The fleet every golden case renders a host of.
pub fn golden_map() -> PathBuf {
    golden_dir().join("map.toml")
}

/// The directory of one golden case.
pub fn case_dir(case: &str) -> PathBuf {
    golden_dir().join(case)
}

/// `<dir>/identity.toml`: what stage 1 reports for the case's host (`id`, `address`,
/// `az`, `region`, optionally `instance_type` and `ami_id`; no other key).
pub fn read_identity(dir: &Path) -> Identity {
    let path = dir.join("identity.toml");
    let mut table: toml::Table =
        toml::from_str(&read_text(&path)).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let mut take = |key: &str| {
        table.remove(key).map(|value| match value {
            toml::Value::String(text) => text,
            other => panic!("{}: {key} = {other} is not a string", path.display()),
        })
    };
    let mut need = |key: &str| {
        take(key).unwrap_or_else(|| panic!("{}: no {key}", dir.join("identity.toml").display()))
    };
    let (id, address, az, region) = (need("id"), need("address"), need("az"), need("region"));
    let (instance_type, ami_id) = (take("instance_type"), take("ami_id"));
    assert!(
        table.is_empty(),
        "{}: unknown keys {:?}",
        path.display(),
        table.keys().collect::<Vec<_>>()
    );
    Identity {
        id,
        address,
        az,
        region,
        instance_type,
        ami_id,
    }
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// `<dir>/vars.toml`, or no vars when the case has none.
pub fn read_vars(dir: &Path) -> toml::Table {
    let path = dir.join("vars.toml");
    if !path.exists() {
        return toml::Table::new();
    }
    toml::from_str(&read_text(&path)).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// `<dir>/secrets.toml` (secret reference = its value, standing in for SSM and Secrets
/// Manager), as the reconcile would have read them for the case's vars.
pub fn read_secrets(dir: &Path, vars: &toml::Table) -> rolecall::secrets::Resolved {
    let path = dir.join("secrets.toml");
    let mut resolved = rolecall::secrets::Resolved {
        vars: rolecall::secrets::vars_references(vars),
        ..Default::default()
    };
    if !path.exists() {
        return resolved;
    }
    let table: toml::Table =
        toml::from_str(&read_text(&path)).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    for (reference, value) in table {
        let reference = rolecall::secrets::Reference::parse(&reference).expect("a reference");
        let text = value.as_str().expect("a string value").to_string();
        let value = rolecall::secrets::Value::new(text).expect("a one-line value");
        resolved.values.insert(reference, value);
    }
    resolved
}

/// Renders the host of case `dir` (its identity and vars) in the golden map with the
/// catalog and templates in `catalog_dir`, through the library exactly as a reconcile does;
/// the error chain on failure.
pub fn render_case(dir: &Path, catalog_dir: &Path) -> Result<Desired, String> {
    assert!(
        !dir.join("map.toml").exists(),
        "{}: every case renders a host of tests/golden/map.toml; add the case's hosts there \
         instead of a map of its own",
        dir.display()
    );
    render_for(&read_identity(dir), &golden_map(), dir, catalog_dir)
}

/// Renders `identity`'s host in the map at `map_path`, with the vars of `dir`.
fn render_for(
    identity: &Identity,
    map_path: &Path,
    dir: &Path,
    catalog_dir: &Path,
) -> Result<Desired, String> {
    let bytes = std::fs::read(map_path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", map_path.display()));
    let map = rolemap::load(&bytes).map_err(|err| chain(&err))?;
    let view = match rolemap::resolve(&map, identity) {
        Resolution::Assigned(view) => view,
        Resolution::Waiting => return Err(format!("host {} is not in the map", identity.id)),
    };
    let catalog = Catalog::load(catalog_dir, &BTreeMap::new()).map_err(|err| chain(&err))?;
    let tera = render::Templates::load(catalog_dir, &catalog).map_err(|err| chain(&err))?;
    let info = MapInfo {
        etag: Some("\"5d41402abc4b2a76b9719d911017c592\"".to_string()),
        version: None,
        generation: map.generation(),
        url: MAP_URL.to_string(),
    };
    let vars = read_vars(dir);
    let fresh = render::Memo::new("golden");
    let inputs = render::Inputs {
        map: &info,
        vars: &vars,
        secrets: &read_secrets(dir, &vars),
        memo: Some(&fresh),
    };
    let desired =
        render::render_with(&view, &catalog, &tera, &inputs).map_err(|err| chain(&err))?;
    assert_memo_renders_the_same(&desired, |memo| {
        let inputs = render::Inputs {
            memo: Some(memo),
            ..inputs
        };
        render::render_with(&view, &catalog, &tera, &inputs).expect("the same render again")
    });
    Ok(desired)
}

/// Issue 13's render memo, on every case: a second render given the first's memo (through
/// its JSON, as the state directory keeps it) takes every per-product unit from it, and,
/// its remembered files completed with the first render's bytes, is the first render.
fn assert_memo_renders_the_same(first: &Desired, again: impl Fn(&render::Memo) -> Desired) {
    let Some(memo) = &first.memo else {
        assert!(
            first.files.iter().all(|f| f.product.is_none()),
            "no memo kept"
        );
        return;
    };
    let json = serde_json::to_vec(memo).expect("memo to JSON");
    let memo: render::Memo = serde_json::from_slice(&json).expect("memo from JSON");
    let mut second = again(&memo);
    let per_product = first.files.iter().filter(|f| f.product.is_some()).count();
    let blocked = !first.blocked.is_empty();
    assert!(
        blocked || second.remembered.len() == per_product,
        "{} of {per_product} per-product files remembered",
        second.remembered.len()
    );
    assert!(
        blocked || second.memo.is_none(),
        "an unchanged render changed the memo"
    );
    let bytes: BTreeMap<&Path, &std::sync::Arc<[u8]>> = first
        .files
        .iter()
        .map(|f| (f.path.as_path(), &f.content))
        .collect();
    assert!(second.fill_remembered(|f| bytes
        .get(f.path.as_path())
        .map(|b| std::sync::Arc::clone(b))));
    assert_eq!(
        (&second.files, &second.smoke, &second.hooks, &second.blocked),
        (&first.files, &first.smoke, &first.hooks, &first.blocked)
    );
    let mut drifted = again(&memo);
    assert!(
        drifted.remembered.is_empty() || !drifted.fill_remembered(|_| Some(b"edited"[..].into())),
        "a remembered file that changed on disk was accepted"
    );
}

/// The repository's default catalog (its role files and templates share one directory).
fn default_catalog() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// Every case directory, sorted.
fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("reading tests/golden")
        .map(|entry| entry.expect("a directory entry of tests/golden"))
        .filter(|entry| entry.path().is_dir() && entry.file_name() != FAILS)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases in tests/golden");
    cases
}

/// Where the expected copy of logical path `path` lives: `expected/` + the path without
/// its leading `/`. Refuses anything but plain components, so that an update can never
/// write outside `expected/`.
fn expected_path(expected: &Path, logical: &Path) -> PathBuf {
    let relative = logical
        .strip_prefix("/")
        .unwrap_or_else(|_| panic!("{} is not absolute", logical.display()));
    assert!(
        relative
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{} has components other than plain names",
        logical.display()
    );
    expected.join(relative)
}

/// Every file under `expected/`, keyed by logical path.
fn read_expected(expected: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    crate::fixture::tree(expected)
        .into_iter()
        .map(|(relative, bytes)| (Path::new("/").join(relative), bytes))
        .collect()
}

/// Replaces `expected/` with what was rendered.
fn update(expected: &Path, desired: &Desired) {
    assert!(
        expected.starts_with(golden_dir()) && expected.ends_with("expected"),
        "refusing to replace {}",
        expected.display()
    );
    if expected.exists() {
        std::fs::remove_dir_all(expected).expect("removing the old expected/");
    }
    for file in &desired.files {
        let path = expected_path(expected, &file.path);
        std::fs::create_dir_all(path.parent().expect("a file under expected/ has a parent"))
            .expect("creating a directory under expected/");
        std::fs::write(&path, &file.content).expect("writing an expected file");
    }
}

/// Differences between what `case` renders and its `expected/`, as readable text.
fn compare(case: &str, desired: &Desired) -> Vec<String> {
    let expected_dir = case_dir(case).join("expected");
    let mut expected = read_expected(&expected_dir);
    let mut problems = Vec::new();
    for file in &desired.files {
        let shown = file.path.display();
        match expected.remove(&file.path) {
            None => problems.push(format!("{case}: {shown} rendered but not in expected/")),
            Some(bytes) if bytes[..] != file.content[..] => problems.push(format!(
                "{case}: {shown} differs from expected/:\n{}",
                diff(&bytes, &file.content)
            )),
            Some(_) => {}
        }
    }
    for path in expected.keys() {
        problems.push(format!(
            "{case}: {} in expected/ but not rendered",
            path.display()
        ));
    }
    problems
}

/// A unified diff of two files' bytes, for failure messages.
pub fn diff(expected: &[u8], actual: &[u8]) -> String {
    let (old, new) = (
        String::from_utf8_lossy(expected),
        String::from_utf8_lossy(actual),
    );
    similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .header("expected", "rendered")
        .to_string()
}

/// Whether `UPDATE_GOLDEN=1` asks to rewrite the expected files; panics under `CI`, where
/// an update would turn the comparison into a test that cannot fail.
fn updating() -> bool {
    let updating = std::env::var(UPDATE_VAR).is_ok_and(|v| v == "1");
    assert!(
        !(updating && std::env::var_os(CI_VAR).is_some()),
        "{UPDATE_VAR}=1 is refused when {CI_VAR} is set: it rewrites expected/ instead of \
         comparing with it; regenerate locally and commit the reviewed diff"
    );
    updating
}

#[test]
fn golden_cases_render_byte_for_byte() {
    let updating = updating();
    let mut problems = Vec::new();
    for case in cases() {
        let dir = case_dir(&case);
        let desired = render_case(&dir, &default_catalog())
            .unwrap_or_else(|err| panic!("golden case {case}: {err}"));
        assert!(
            !desired.files.is_empty(),
            "golden case {case} renders no file"
        );
        let again = render_case(&dir, &default_catalog()).expect("the second render");
        assert_eq!(desired, again, "golden case {case}: two renders differ");
        if updating {
            update(&dir.join("expected"), &desired);
        }
        problems.extend(compare(&case, &desired));
    }
    assert!(
        problems.is_empty(),
        "{}\n\n(if intended: {UPDATE_VAR}=1 cargo test --test tests golden; review the diff)",
        problems.join("\n")
    );
}

#[test]
fn every_template_and_role_of_the_default_catalog_has_a_golden_case() {
    let catalog = Catalog::load(&default_catalog(), &BTreeMap::new()).expect("default catalog");
    let wanted: BTreeSet<(String, String)> = catalog
        .roles
        .values()
        .flat_map(|role| role.files.iter())
        .map(|file| (file.role.clone(), file.template.clone()))
        .collect();
    let mut covered = BTreeSet::new();
    for case in cases() {
        let desired = render_case(&case_dir(&case), &default_catalog())
            .unwrap_or_else(|err| panic!("golden case {case}: {err}"));
        covered.extend(
            desired
                .files
                .iter()
                .map(|file| (file.role.clone(), file.template.clone())),
        );
    }
    let missing: Vec<_> = wanted.difference(&covered).collect();
    assert!(missing.is_empty(), "no golden case renders {missing:?}");
    assert_eq!(
        catalog.roles.keys().collect::<BTreeSet<_>>(),
        covered
            .iter()
            .map(|(role, _)| role)
            .collect::<BTreeSet<_>>(),
        "every role has a golden case"
    );
}

#[test]
fn the_db_host_without_a_position_stays_read_only() {
    let desired = render_case(&case_dir("db-no-position"), &default_catalog()).expect("render");
    let cnf = content(&desired, "/etc/mysql/mariadb.conf.d/60-rolecall.cnf");
    assert!(cnf.contains("\nread_only = ON\n"), "{cnf}");
    assert!(!cnf.contains("server_id"), "{cnf}");
}

fn content(desired: &Desired, path: &str) -> String {
    let file = desired
        .files
        .iter()
        .find(|f| f.path == Path::new(path))
        .unwrap_or_else(|| panic!("{path} was not rendered"));
    String::from_utf8(file.content.to_vec()).expect("rendered files are UTF-8")
}

/// One `tests/golden/fails/maps/*.toml`: the map and what its comments expect.
struct FailingMap {
    name: String,
    bytes: Vec<u8>,
    path: String,
    message: String,
}

fn failing_maps() -> Vec<FailingMap> {
    let dir = golden_dir().join(FAILS).join("maps");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("reading tests/golden/fails/maps")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files.iter().map(|file| failing_map(file)).collect()
}

fn failing_map(file: &Path) -> FailingMap {
    let text = read_text(file);
    let expect = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("# expect-{key}: ")))
            .unwrap_or_else(|| panic!("{} lacks a `# expect-{key}: ` line", file.display()))
            .to_string()
    };
    FailingMap {
        name: file
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned(),
        path: expect("path"),
        message: expect("message"),
        bytes: text.clone().into_bytes(),
    }
}

#[test]
fn golden_fails_maps_are_rejected_with_the_toml_path_of_the_problem() {
    let maps = failing_maps();
    assert!(maps.len() >= 10, "only {} failing maps", maps.len());
    for case in maps {
        let issues = match rolemap::load(&case.bytes) {
            Err(rolemap::Error::Invalid { issues }) => issues,
            Err(other) => panic!("{}: not a validation error: {}", case.name, chain(&other)),
            Ok(_) => panic!("{}: the map was accepted", case.name),
        };
        assert!(
            issues
                .iter()
                .any(|i| i.path.contains(&case.path) && i.message.contains(&case.message)),
            "{}: no issue at {:?} saying {:?}; got {issues:#?}",
            case.name,
            case.path,
            case.message
        );
    }
}

fn fails_dir() -> PathBuf {
    golden_dir().join(FAILS)
}

fn fails_identity(id: &str) -> Identity {
    Identity {
        id: id.to_string(),
        address: "10.0.9.1".to_string(),
        az: "us-east-1a".to_string(),
        region: "us-east-1".to_string(),
        instance_type: None,
        ami_id: None,
    }
}

#[test]
fn golden_fails_undefined_variable_names_the_variable_template_and_product() {
    let dir = fails_dir();
    let map = dir.join("map.toml");
    let err = render_for(
        &fails_identity("broken-1"),
        &map,
        &dir,
        &dir.join("catalog"),
    )
    .expect_err("a template reading an undefined variable must not render");
    crate::fixture::assert_mentions(
        &err,
        &[
            "broken/vhost.conf.tera",
            "product.admin_email",
            "role broken",
            "product videos",
        ],
    );
}

#[test]
fn golden_fails_autoescape_sensitive_characters_are_not_escaped() {
    let dir = fails_dir();
    let map = dir.join("map.toml");
    let desired = render_for(&fails_identity("raw-1"), &map, &dir, &dir.join("catalog"))
        .unwrap_or_else(|err| panic!("rendering the raw role: {err}"));
    let directive = r#"<Location "/a&b"> Require all granted </Location>"#;
    let text = content(&desired, "/etc/apache2/conf-enabled/raw-snippet.conf");
    assert!(text.contains(&format!("\n{directive}\n")), "{text}");
    assert!(
        text.contains(r#"# literal: <If "%{HTTP_HOST} == 'a&b'">"#),
        "{text}"
    );
    for escaped in ["&lt;", "&gt;", "&amp;", "&quot;", "&#x27;", "&#x2F;"] {
        assert!(!text.contains(escaped), "{escaped} in {text}");
    }
    // Control: with autoescape on, Tera would have escaped this very value.
    let mut ctx = tera::Context::new();
    ctx.insert("directive", directive);
    let escaped = tera::Tera::one_off("{{ directive }}", &ctx, true).expect("one_off");
    assert!(
        escaped.contains("&lt;Location &quot;") && escaped.contains("&amp;"),
        "{escaped}"
    );
    match &desired.smoke[..] {
        [smoke] => match &smoke.check {
            SmokeCheck::Http { body_contains, .. } => {
                assert_eq!(body_contains.as_deref(), Some(directive));
            }
            other => panic!("unexpected smoke check {other:?}"),
        },
        other => panic!("expected one smoke test, got {other:?}"),
    }
}

//! Issue 14, accounts (SPEC §10), through the real binary on a scratch `--root` whose
//! `/etc/passwd`, `/etc/group`, `/etc/shadow`, `/etc/gshadow` and `/etc/login.defs` are
//! copies of the Debian build host's: the real `groupadd`/`useradd`/`usermod`/`userdel`/
//! `groupdel` run with `--prefix ROOT`. Every test checks that the build machine's own
//! account files are byte for byte what they were.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rolecall::text::sha256_hex;

use crate::fixture::{
    assert_exit, assert_mentions, assert_not_said, assert_stderr, assert_stdout, describe,
    docroots, identity_of, stdout, Agent, Setup,
};
use crate::reconcile::web_agent;
use crate::support::apache::Apache;

/// The account files a reconcile may change, and login.defs (USERGROUPS_ENAB, as Debian).
const ACCOUNT_FILES: [&str; 4] = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"];

/// The build machine's account files, hashed when the test starts; [`HostGuard::check`]
/// (and the drop, for a failing test) asserts that they did not change.
struct HostGuard {
    before: Vec<String>,
}

impl HostGuard {
    fn new() -> HostGuard {
        HostGuard {
            before: Self::hashes(),
        }
    }

    fn hashes() -> Vec<String> {
        ACCOUNT_FILES
            .iter()
            .map(|f| sha256_hex(&fs::read(f).unwrap_or_else(|e| panic!("reading {f}: {e}"))))
            .collect()
    }

    #[track_caller]
    fn check(&self) {
        assert_eq!(
            Self::hashes(),
            self.before,
            "the build machine's own account files changed"
        );
    }
}

/// Copy the build host's account files and login.defs into the agent's root (same bytes,
/// owner and mode), plus `extra` lines appended to its passwd, group, shadow and gshadow.
fn seed(agent: &Agent, extra: &[(&str, &str)]) {
    fs::create_dir_all(agent.path("/etc")).expect("etc");
    for file in ACCOUNT_FILES.iter().chain(&["/etc/login.defs"]) {
        let to = agent.path(file);
        fs::copy(file, &to).unwrap_or_else(|e| panic!("copying {file}: {e}"));
        let m = fs::metadata(file).expect("stat");
        std::os::unix::fs::chown(&to, Some(m.uid()), Some(m.gid())).expect("chown");
    }
    for (file, line) in extra {
        let path = agent.path(file);
        let mut text = fs::read_to_string(&path).expect("read");
        text.push_str(line);
        text.push('\n');
        fs::write(&path, text).expect("append");
    }
}

/// `(bytes, uid, gid, mode)` of each account file of the agent's root.
fn root_accounts(agent: &Agent) -> Vec<(Vec<u8>, u32, u32, u32)> {
    ACCOUNT_FILES
        .iter()
        .map(|f| {
            let path = agent.path(f);
            let m = fs::metadata(&path).expect("stat");
            (fs::read(&path).expect("read"), m.uid(), m.gid(), m.mode())
        })
        .collect()
}

fn line_of(agent: &Agent, file: &str, name: &str) -> Option<String> {
    let text = fs::read_to_string(agent.path(file)).expect("read");
    text.lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .map(str::to_string)
}

/// The supplementary members of group `name` in the agent's root.
fn members(agent: &Agent, name: &str) -> Vec<String> {
    let line = line_of(agent, "/etc/group", name).unwrap_or_else(|| panic!("no group {name}"));
    let list = line.rsplit(':').next().unwrap_or_default();
    list.split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

/// A catalog role `app` whose per-product file belongs to the product's user and group.
fn add_app_role(agent: &Agent) {
    fs::write(
        agent.catalog.join("app.toml"),
        "description = \"a file the product's application reads, owned by its user\"\n\n[[files]]\npath = \"/etc/apache2/rolecall-app/{{ product.name }}.env\"\ntemplate = \"app/env.tera\"\nper_product = true\nowner = \"{{ product.user | default(value='root') }}\"\ngroup = \"{{ product.group | default(value='root') }}\"\nmode = \"0640\"\n",
    )
    .expect("app.toml");
    fs::create_dir_all(agent.catalog.join("app")).expect("app dir");
    fs::write(
        agent.catalog.join("app/env.tera"),
        "PRODUCT={{ product.name }}\n",
    )
    .expect("env.tera");
}

/// Product `tv` (its user and group 20001, inside the default managed range) and product
/// `big` (30001, outside it); host `web-1` serves `products` with the web and app roles.
fn map(generation: u64, products: &[&str], shell: &str, groups: &[&str]) -> String {
    let quote = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!("schema = 1\ngeneration = {generation}\n");
    for (name, id) in [("tv", 20001), ("big", 30001)] {
        text.push_str(&format!(
            "\n[products.{name}]\ndomain = \"{name}.example.test\"\ndocroot = \"/srv/{name}/public\"\n\n[products.{name}.groups.{name}]\ngid = {id}\n\n[products.{name}.users.{name}]\nuid = {id}\ngroup = \"{name}\"\nhome = \"/srv/{name}\"\nshell = \"{shell}\"\ngroups = [{}]\n",
            quote(groups)
        ));
    }
    text.push_str(&format!(
        "\n[hosts.web-1]\naddress = \"127.0.0.1\"\naz = \"a\"\nroles = [\"web\", \"app\"]\nproducts = [{}]\n",
        quote(products)
    ));
    text
}

/// An agent for `web-1` with the app role, whose root has the host's account files plus the
/// lines `extra` (see [`seed`]), and the guard of the build machine's own account files,
/// taken first.
fn files_only_agent(extra: &[(&str, &str)]) -> (HostGuard, Agent) {
    let host = HostGuard::new();
    let agent = Agent::new(Setup::new("web-1", "127.0.0.1"));
    add_app_role(&agent);
    seed(&agent, extra);
    (host, agent)
}

/// [`map`] at generation 1 with product `tv` only, its user's shell nologin, no groups.
fn tv_map() -> String {
    map(1, &["tv"], "/usr/sbin/nologin", &[])
}

/// What a run printed: stdout, then stderr.
fn printed(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), String::from_utf8_lossy(&out.stderr))
}

/// Neither `tv`'s vhost nor the account records were written.
#[track_caller]
fn assert_nothing_written_for_tv(agent: &Agent) {
    assert!(!agent.vhost("tv").exists());
    assert!(!agent.state().join("accounts.json").exists());
}

#[test]
fn accounts_are_created_converged_and_only_created_ones_inside_the_range_removed() {
    let (host, agent) = files_only_agent(&[
        ("/etc/passwd", "foreign:x:20050:20050::/srv/foreign:/bin/sh"),
        ("/etc/group", "foreign:x:20050:"),
    ]);
    agent.write_map(&map(1, &["tv", "big"], "/usr/sbin/nologin", &["www-data"]));

    // The plan shows the accounts, and accepts files owned by users it is about to create.
    let out = agent.run(&["plan"]);
    assert_exit(&out, 3);
    let text = stdout(&out);
    assert!(
        text.contains("# account: create group tv (gid 20001)"),
        "{text}"
    );
    assert!(
        text.contains("# account: create user tv (uid 20001"),
        "{text}"
    );

    let out = agent.run(&["sync", "--files-only"]);
    assert_stdout(&out, 0, &["account  create user tv"]);
    assert_eq!(
        line_of(&agent, "/etc/passwd", "tv").as_deref(),
        Some("tv:x:20001:20001::/srv/tv:/usr/sbin/nologin")
    );
    assert_eq!(
        line_of(&agent, "/etc/group", "tv").as_deref(),
        Some("tv:x:20001:")
    );
    assert_eq!(members(&agent, "www-data"), ["big", "tv"]);
    assert!(line_of(&agent, "/etc/shadow", "tv").is_some());
    assert!(line_of(&agent, "/etc/gshadow", "tv").is_some());
    assert!(
        !agent.path("/srv/tv").exists(),
        "a home directory was created"
    );
    // The product's file belongs to the root's tv (a user the build machine does not have).
    let env = fs::metadata(agent.path("/etc/apache2/rolecall-app/tv.env")).expect("tv.env");
    assert_eq!(
        (env.uid(), env.gid(), env.mode() & 0o7777),
        (20001, 20001, 0o640)
    );

    // Converged: nothing to do, the account files are not rewritten.
    let passwd = identity_of(&agent.path("/etc/passwd"));
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("no changes"), "{}", describe(&out));
    assert_exit(&agent.run(&["plan"]), 0);
    assert_eq!(identity_of(&agent.path("/etc/passwd")), passwd);

    // A changed shell and groups are converged with usermod.
    agent.write_map(&map(2, &["tv", "big"], "/bin/bash", &["adm"]));
    let out = agent.run(&["sync", "--files-only"]);
    assert_stdout(
        &out,
        0,
        &["account  modify user tv: shell /usr/sbin/nologin -> /bin/bash, groups www-data -> adm"],
    );
    assert_eq!(
        line_of(&agent, "/etc/passwd", "tv").as_deref(),
        Some("tv:x:20001:20001::/srv/tv:/bin/bash")
    );
    assert!(members(&agent, "adm").contains(&"tv".to_string()));
    assert_eq!(members(&agent, "www-data"), Vec::<String>::new());

    // A hand edit of a managed account is repaired although the map did not change.
    let edited = fs::read_to_string(agent.path("/etc/passwd"))
        .expect("passwd")
        .replace("/srv/tv:/bin/bash", "/srv/tv:/bin/sh");
    fs::write(agent.path("/etc/passwd"), edited).expect("edit");
    assert_exit(&agent.run(&["sync", "--files-only"]), 0);
    assert!(line_of(&agent, "/etc/passwd", "tv").is_some_and(|l| l.ends_with(":/bin/bash")));

    // No product left: tv goes (created, inside the range); big stays (outside it), and so
    // does foreign (inside it, but never created by rolecall).
    agent.write_map(&map(3, &[], "/bin/bash", &["adm"]));
    let out = agent.run(&["sync", "--files-only"]);
    assert_stdout(&out, 0, &["account  remove user tv (uid 20001)"]);
    assert_eq!(line_of(&agent, "/etc/passwd", "tv"), None);
    assert_eq!(line_of(&agent, "/etc/group", "tv"), None);
    assert_eq!(line_of(&agent, "/etc/shadow", "tv"), None);
    assert!(line_of(&agent, "/etc/passwd", "big").is_some());
    assert!(line_of(&agent, "/etc/group", "big").is_some());
    assert!(line_of(&agent, "/etc/passwd", "foreign").is_some());
    assert!(line_of(&agent, "/etc/group", "foreign").is_some());
    assert!(!agent.path("/etc/apache2/rolecall-app/tv.env").exists());
    let records = fs::read_to_string(agent.state().join("accounts.json")).expect("records");
    let records: serde_json::Value = serde_json::from_str(&records).expect("json");
    assert_eq!(records["users"], serde_json::json!({"big": 30001}));
    host.check();
}

#[test]
fn a_foreign_account_with_the_maps_name_and_another_id_is_a_conflict_left_untouched() {
    let (host, agent) = files_only_agent(&[
        ("/etc/passwd", "tv:x:1500:1500::/home/tv:/bin/bash"),
        ("/etc/group", "tv:x:1500:"),
        ("/etc/shadow", "tv:!:19000:0:99999:7:::"),
    ]);
    let before = root_accounts(&agent);
    agent.write_map(&tv_map());

    let out = agent.run(&["plan"]);
    assert_stdout(
        &out,
        1,
        &["# account conflict: group tv exists with gid 1500, the map says 20001: left untouched"],
    );
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 1);
    let said = printed(&out);
    assert!(
        said.contains("account conflicts, nothing changed"),
        "{said}"
    );
    assert!(said.contains("user tv exists with uid 1500"), "{said}");
    assert_eq!(
        root_accounts(&agent),
        before,
        "the root's account files changed"
    );
    assert_nothing_written_for_tv(&agent);
    host.check();
}

/// A command that fails half way (groupadd went through, useradd finds `/etc/passwd` locked
/// by a live process, as during an administrator's `vipw`) puts the four account files back
/// byte for byte, and nothing else is written.
#[test]
fn a_failed_account_command_restores_the_account_files_byte_for_byte() {
    let (host, agent) = files_only_agent(&[]);
    fs::write(
        agent.path("/etc/passwd.lock"),
        std::process::id().to_string(),
    )
    .expect("lock");
    let before = root_accounts(&agent);
    agent.write_map(&tv_map());
    let out = agent.run(&["-v", "sync", "--files-only"]);
    assert_exit(&out, 1);
    // "account changed": groupadd ran first, and was undone.
    assert_mentions(
        &printed(&out),
        &["create user tv", "cannot lock", "account changed"],
    );
    assert_eq!(
        root_accounts(&agent),
        before,
        "the account files were not restored"
    );
    assert_nothing_written_for_tv(&agent);
    host.check();
}

/// Debian's userdel also deletes a user's same-named primary group (USERGROUPS_ENAB in the
/// root's login.defs): a group that was there before rolecall (adopted, never recorded)
/// must survive the removal of the user rolecall created.
#[test]
fn a_group_rolecall_did_not_create_survives_the_removal_of_its_user() {
    let (host, agent) =
        files_only_agent(&[("/etc/group", "tv:x:20001:"), ("/etc/gshadow", "tv:!::")]);
    agent.write_map(&tv_map());
    let out = agent.run(&["sync", "--files-only"]);
    assert_exit(&out, 0);
    assert_not_said(&out, "create group tv");
    assert!(line_of(&agent, "/etc/passwd", "tv").is_some());

    agent.write_map(&map(2, &[], "/usr/sbin/nologin", &[]));
    let out = agent.run(&["-v", "sync", "--files-only"]);
    assert_exit(&out, 0);
    assert_eq!(
        line_of(&agent, "/etc/passwd", "tv"),
        None,
        "{}",
        describe(&out)
    );
    assert_eq!(
        line_of(&agent, "/etc/group", "tv").as_deref(),
        Some("tv:x:20001:")
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("userdel removed a group still needed"),
        "{}",
        describe(&out)
    );
    host.check();
}

#[test]
fn with_accounts_unmanaged_nothing_is_created_and_their_owners_must_exist() {
    let (host, agent) = files_only_agent(&[]);
    let config = fs::read_to_string(&agent.config).expect("agent.toml");
    fs::write(
        &agent.config,
        format!("{config}\n[accounts]\nmanage = false\n"),
    )
    .expect("write");
    let before = root_accounts(&agent);
    agent.write_map(&tv_map());
    let out = agent.run(&["sync", "--files-only"]);
    assert_stderr(&out, 2, &["user \"tv\" does not exist"]);
    assert_eq!(root_accounts(&agent), before);
    host.check();
}

/// The web map of `reconcile`'s tests for `alpha` (no accounts) and, when `with_beta`, a
/// `beta` with its own user and group.
fn web_accounts_map(generation: u64, base: &Path, with_beta: bool) -> String {
    let product = |p: &str| {
        format!(
            "\n[products.{p}]\ndomain = \"{p}.example.test\"\ndocroot = \"{}/{p}\"\nhealth_path = \"/health.txt\"\n",
            base.display()
        )
    };
    let mut text = format!(
        "schema = 1\ngeneration = {generation}\n{}",
        product("alpha")
    );
    let mut products = "\"alpha\"".to_string();
    if with_beta {
        text.push_str(&product("beta"));
        text.push_str("\n[products.beta.groups.beta]\ngid = 20002\n\n[products.beta.users.beta]\nuid = 20002\ngroup = \"beta\"\nhome = \"/srv/beta\"\nshell = \"/usr/sbin/nologin\"\ngroups = [\"www-data\"]\n");
        products.push_str(", \"beta\"");
    }
    text.push_str(&format!(
        "\n[hosts.web-1]\naddress = \"127.0.0.1\"\naz = \"test-a\"\nroles = [\"web\"]\nproducts = [{products}]\n"
    ));
    text
}

#[test]
fn a_failed_smoke_test_rolls_the_account_files_back_byte_for_byte() {
    let host = HostGuard::new();
    let (agent, apache) = web_agent(Apache::start);
    seed(&agent, &[]);
    let base = docroots(&agent, &["alpha", "beta"]);
    fs::remove_file(base.join("beta/health.txt")).expect("no health page for beta");
    agent.write_map(&web_accounts_map(1, &base, false));
    assert_exit(&agent.run(&["sync"]), 0);
    let before = root_accounts(&agent);

    agent.write_map(&web_accounts_map(2, &base, true));
    let out = agent.run(&["-v", "sync"]);
    assert_exit(&out, 1);
    let logs = String::from_utf8_lossy(&out.stderr);
    // The accounts were really made before the files, then put back with them.
    assert!(logs.contains("account changed"), "{}", describe(&out));
    assert!(
        logs.contains("account files restored"),
        "{}",
        describe(&out)
    );
    assert!(stdout(&out).contains("rolled back"), "{}", describe(&out));
    assert_eq!(
        root_accounts(&agent),
        before,
        "passwd, group, shadow or gshadow differ after the rollback"
    );
    assert!(!agent.state().join("accounts.json").exists());
    assert!(!agent.vhost("beta").exists());
    assert_eq!(
        apache.get("alpha.example.test", "/health.txt"),
        (200, "ok alpha\n".to_string())
    );
    host.check();
}

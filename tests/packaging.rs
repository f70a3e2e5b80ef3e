//! Issue 6 packaging, with the real tools: `systemd-analyze verify` on the unit (and a
//! misspelt copy that must fail), the `.deb` and `.rpm` built once per run by
//! `packaging/build.sh`, the `.rpm`'s file list, the `.deb` installed, used, removed and
//! purged in a debootstrapped Debian 12 root, and `bake.sh` on scratch roots.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::fixture::{assert_exit, assert_stderr, assert_stdout, copy_dir, describe, stdout};
use crate::support::debian::{self, require_root, DebianRoot, RootSpec};
use crate::support::packages::packages;
use crate::support::require_program;

/// A Debian 12 minbase root, plus `procps` for the package's dependency.
const MINBASE: RootSpec = RootSpec {
    name: "debian-12-minbase-procps-v1.tar",
    include: &["procps"],
    prepare: |_| {},
};
/// A map URL bake.sh accepts (its bucket name is valid).
const MAP_URL: &str = "s3://fleet-config/rolemap.toml";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

#[track_caller]
fn run_ok(command: &mut Command) -> Output {
    let out = run(command);
    assert!(out.status.success(), "{command:?}\n{}", describe(&out));
    out
}

// --- the systemd unit ----------------------------------------------------------------

fn verify_unit(packaging: &Path) -> Output {
    require_program(
        "systemd-analyze",
        "apt-get install systemd (tests/run.sh does)",
    );
    require_program("systemctl", "apt-get install systemd (tests/run.sh does)");
    run(Command::new("bash").arg(packaging.join("verify-unit.sh")))
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let out = verify_unit(&repo().join("packaging"));
    assert_stdout(&out, 0, &[" 0 failed"]);
    let verified = |flavour: &str| {
        format!(
            "ok: systemd-analyze verify (rolecall.service + rolecall-ready.target + {flavour} drop-ins"
        )
    };
    assert_stderr(
        &out,
        0,
        &[
            &verified("debian"),
            &verified("rhel"),
            "ok: rolecall-ready.target: started by the daemon only",
        ],
    );
}

/// Issue 16, negative control: the ready point's contract catches a target that depends on
/// rolecall (an agent restart would stop it) and an example pulled in by the boot (it would
/// register a host whose smoke tests failed).
#[test]
fn issue_16_ready_target_contract_violations_fail_verify() {
    let dir = TempDir::new().expect("tempdir");
    let packaging = dir.path().join("packaging");
    copy_dir(&repo().join("packaging"), &packaging);
    let target = packaging.join("systemd/rolecall-ready.target");
    let example = packaging.join("systemd/examples/register-in-lb.service");
    let edits = [
        (
            &target,
            "\nAfter=rolecall.service\n",
            "\nAfter=rolecall.service\n# (test)\nBindsTo=rolecall.service\n",
        ),
        (
            &example,
            "\nWantedBy=rolecall-ready.target\n",
            "\nWantedBy=multi-user.target\n",
        ),
    ];
    for (file, from, to) in edits {
        let text = fs::read_to_string(file).expect("read");
        assert!(text.contains(from), "{} changed", file.display());
        fs::write(file, text.replace(from, to)).expect("write");
    }

    let out = verify_unit(&packaging);
    assert_stderr(
        &out,
        1,
        &[
            "FAILED: rolecall-ready.target: BindsTo=",
            "FAILED: register-in-lb.service: not WantedBy=rolecall-ready.target",
            "FAILED: register-in-lb.service: WantedBy=multi-user.target",
        ],
    );
}

/// Negative control: verify-unit.sh must catch a directive systemd does not know.
#[test]
fn misspelt_unit_directive_fails_verify() {
    let dir = TempDir::new().expect("tempdir");
    let packaging = dir.path().join("packaging");
    copy_dir(
        &repo().join("packaging/systemd"),
        &packaging.join("systemd"),
    );
    copy_dir(&repo().join("packaging/config"), &packaging.join("config"));
    fs::copy(
        repo().join("packaging/verify-unit.sh"),
        packaging.join("verify-unit.sh"),
    )
    .expect("copy verify-unit.sh");
    let unit = packaging.join("systemd/rolecall.service");
    let text = fs::read_to_string(&unit).expect("read unit");
    assert!(text.contains("\nProtectKernelLogs=yes\n"), "unit changed");
    fs::write(
        &unit,
        text.replace("\nProtectKernelLogs=yes\n", "\nProtectKernelLog=yes\n"),
    )
    .expect("write unit");

    let out = verify_unit(&packaging);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unknown key")
            && stderr.contains("'ProtectKernelLog'")
            && stderr.contains("FAILED: systemd-analyze verify (rolecall.service")
            && !stdout(&out).contains(" 0 failed"),
        "{}",
        describe(&out)
    );
}

#[test]
fn packaging_scripts_pass_shellcheck() {
    let shellcheck = require_program(
        "shellcheck",
        "apt-get install shellcheck (tests/run.sh does)",
    );
    let p = repo().join("packaging");
    let mut scripts = vec![
        p.join("build.sh"),
        p.join("code-order.sh"),
        p.join("verify-unit.sh"),
        p.join("image/bake.sh"),
        p.join("deb/postinst"),
        p.join("deb/postrm"),
    ];
    scripts.extend(files_in(&p.join("hooks")));
    // The boot tests' namespace init (tests/support/systemd.rs).
    scripts.push(repo().join("tests/support/ns-init.sh"));
    run_ok(Command::new(&shellcheck).args(&scripts));
    // cargo-generate-rpm's scriptlets have no shebang: rpm runs them with /bin/sh.
    run_ok(
        Command::new(&shellcheck)
            .args(["--shell", "sh"])
            .args(files_in(&p.join("rpm"))),
    );
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

// --- what the packages must contain (SPEC §4) ----------------------------------------

/// Every role of the repository's default catalog.
fn roles() -> Vec<String> {
    files_in(&repo().join("templates"))
        .iter()
        .filter(|p| p.extension() == Some("toml".as_ref()))
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect()
}

/// The config files under /etc/rolecall: agent.toml, the catalog and the templates.
fn expected_config_files() -> BTreeSet<String> {
    let mut files = BTreeSet::from(["/etc/rolecall/agent.toml".to_string()]);
    for role in roles() {
        files.insert(format!("/etc/rolecall/roles/{role}.toml"));
        for template in files_in(&repo().join("templates").join(&role)) {
            let name = template.file_name().expect("name").to_string_lossy();
            files.insert(format!("/etc/rolecall/templates/{role}/{name}"));
        }
    }
    files
}

/// Files both packages ship outside /etc, where the completions' paths differ per distro.
fn expected_other_files(zsh_dir: &str) -> BTreeSet<String> {
    let mut files: BTreeSet<String> = [
        "/usr/bin/rolecall",
        "/usr/lib/systemd/system/rolecall.service",
        "/usr/lib/systemd/system/rolecall.service.d/before-services.conf",
        "/usr/lib/systemd/system/rolecall-ready.target",
        "/usr/lib/systemd/system/rolecall-ready.target.d/after-services.conf",
        "/usr/lib/systemd/system-preset/90-rolecall.preset",
        "/usr/share/man/man1/rolecall.1.gz",
        "/usr/share/bash-completion/completions/rolecall",
        "/usr/share/fish/vendor_completions.d/rolecall.fish",
        "/usr/share/doc/rolecall/README.md",
    ]
    .map(String::from)
    .into();
    files.insert(format!("{zsh_dir}/_rolecall"));
    for hook in files_in(&repo().join("packaging/hooks")) {
        let name = hook.file_name().expect("name").to_string_lossy();
        files.insert(format!("/usr/lib/rolecall/hooks/{name}"));
    }
    files
}

fn rpm_query(args: &[&str]) -> BTreeSet<String> {
    let rpm = require_program("rpm", "apt-get install rpm (tests/run.sh does)");
    let out = run_ok(Command::new(rpm).args(args).arg(&packages().rpm));
    stdout(&out).lines().map(String::from).collect()
}

#[test]
fn rpm_ships_the_spec_paths_and_marks_config_files() {
    let listed = rpm_query(&["-qlp"]);
    let config = expected_config_files();
    let mut expected = expected_other_files("/usr/share/zsh/site-functions");
    expected.extend(config.iter().cloned());
    let missing: Vec<_> = expected.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "missing from the .rpm: {missing:?}\nlisted: {listed:?}"
    );
    // Extra man pages (one per subcommand) are fine; anything else is unexpected.
    let extra: Vec<_> = listed
        .difference(&expected)
        .filter(|f| !(f.starts_with("/usr/share/man/man1/rolecall-") && f.ends_with(".1.gz")))
        .collect();
    assert!(extra.is_empty(), "unexpected in the .rpm: {extra:?}");

    assert_eq!(rpm_query(&["-qcp"]), config, "rpm -qcp: the config files");

    let modes = rpm_query(&[
        "-qp",
        "--queryformat",
        "[%{FILEMODES:perms} %{FILENAMES}\n]",
    ]);
    for executable in ["/usr/bin/rolecall", "/usr/lib/rolecall/hooks/db-promote"] {
        assert!(
            modes.contains(&format!("-rwxr-xr-x {executable}")),
            "{executable} not 0755: {modes:?}"
        );
    }
    assert!(
        modes.contains("-rw-r--r-- /etc/rolecall/agent.toml"),
        "agent.toml not 0644 (check runs as nagios and reads it): {modes:?}"
    );
    let scripts = stdout(&run_ok(
        Command::new(require_program("rpm", "apt-get install rpm"))
            .args(["-qp", "--scripts"])
            .arg(&packages().rpm),
    ));
    assert!(
        scripts.contains("preset rolecall.service")
            && scripts.contains("install -d -m 0755 /var/lib/rolecall"),
        "%post must apply the preset and create the state directory:\n{scripts}"
    );
}

// --- the .deb in a clean Debian 12 root ---------------------------------------------

/// An agent.toml for the shipped example map's `web-1`, using the packaged catalog.
const CHROOT_AGENT_TOML: &str = r#"
[identity]
source = "static"
id = "web-1"
address = "10.0.1.21"
az = "us-east-1b"
region = "us-east-1"

[map]
url = "file:///tmp/rolemap.toml"

[paths]
catalog = "/etc/rolecall/roles"
templates = "/etc/rolecall/templates"
state = "/var/lib/rolecall"
allowed_roots = ["/etc/apache2", "/etc/memcached.conf", "/etc/rolecall/products"]
"#;

/// What the .deb installs (SPEC §4), relative to the root.
const DEB_FILES: &[&str] = &[
    "/usr/bin/rolecall",
    "/etc/rolecall/agent.toml",
    "/etc/rolecall/roles/web.toml",
    "/etc/rolecall/templates/web/vhost.conf.tera",
    "/usr/lib/systemd/system/rolecall.service",
    "/usr/lib/systemd/system/rolecall.service.d/before-services.conf",
    "/usr/lib/systemd/system/rolecall-ready.target",
    "/usr/lib/systemd/system/rolecall-ready.target.d/after-services.conf",
    "/usr/lib/systemd/system-preset/90-rolecall.preset",
    "/usr/lib/rolecall/hooks/db-promote",
    "/usr/share/man/man1/rolecall.1.gz",
    "/var/lib/rolecall",
];

/// The vhosts and memcached config `web-1` of examples/rolemap.toml gets.
const WEB_1_FILES: &[&str] = &[
    "/etc/apache2/sites-enabled/rolecall-videos.conf",
    "/etc/apache2/sites-enabled/rolecall-blog.conf",
    "/etc/memcached.conf",
    "/etc/rolecall/products/videos/database.env",
    "/etc/rolecall/products/blog/database.env",
];

fn with_prefix(prefix: &str, paths: &[&str]) -> Vec<String> {
    paths.iter().map(|p| format!("{prefix}{p}")).collect()
}

#[test]
fn deb_installs_runs_and_purges_in_a_clean_debian_12_root() {
    require_root("installing the .deb into a Debian root");
    // Debootstrap (first run only) before waiting for the build another test may be running.
    let tarball = debian::tarball(&MINBASE);
    let deb = &packages().deb;
    let root = DebianRoot::new(&tarball);
    fs::copy(deb, root.path("/tmp/rolecall.deb")).expect("copy the .deb in");
    fs::copy(
        repo().join("examples/rolemap.toml"),
        root.path("/tmp/rolemap.toml"),
    )
    .expect("copy the example map in");
    fs::write(root.path("/tmp/agent.toml"), CHROOT_AGENT_TOML).expect("write agent.toml");

    root.run_ok(&["dpkg", "-i", "/tmp/rolecall.deb"]);
    root.assert_exists(DEB_FILES);
    let mode = fs::metadata(root.path("/usr/bin/rolecall"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "/usr/bin/rolecall mode");
    let conffiles = root.run_ok(&["dpkg-query", "-W", "-f", "${Conffiles}", "rolecall"]);
    for file in [
        "/etc/rolecall/agent.toml",
        "/etc/rolecall/roles/web.toml",
        "/etc/rolecall/templates/web/vhost.conf.tera",
    ] {
        assert!(
            conffiles.contains(&format!(" {file} ")),
            "{file} not a conffile:\n{conffiles}"
        );
    }

    let version = root.run_ok(&["rolecall", "--version"]);
    assert_eq!(
        version.trim(),
        format!("rolecall {}", env!("CARGO_PKG_VERSION"))
    );
    root.run_ok(&["rolecall", "map", "validate", "/tmp/rolemap.toml"]);
    // The shipped agent.toml parses (status loads it; nothing recorded yet).
    root.run_ok(&["rolecall", "status"]);

    // A files-only reconcile into a scratch root converges, and a second plan is empty.
    let scratch = ["--config", "/tmp/agent.toml", "--root", "/tmp/x"];
    root.run_ok(&[&["rolecall"], &scratch[..], &["sync", "--files-only"]].concat());
    let in_scratch = with_prefix("/tmp/x", WEB_1_FILES);
    root.assert_exists(&in_scratch.iter().map(String::as_str).collect::<Vec<_>>());
    root.assert_exists(&["/tmp/x/var/lib/rolecall/managed.json"]);
    assert_exit(
        &root.run(&[&["rolecall"], &scratch[..], &["plan"]].concat()),
        0,
    );

    assert_remove_keeps_config_and_purge_cleans_up(&root);
}

/// `dpkg -r` keeps /etc/rolecall and the state; `dpkg -P` removes both (Debian policy:
/// purge deletes conffiles) but never the files rolecall rendered for the services.
fn assert_remove_keeps_config_and_purge_cleans_up(root: &DebianRoot) {
    // State in the real state directory, and rendered files in the root's /etc.
    root.run_ok(&[
        "rolecall",
        "--config",
        "/tmp/agent.toml",
        "sync",
        "--files-only",
    ]);
    root.assert_exists(&[
        "/var/lib/rolecall/managed.json",
        "/var/lib/rolecall/status.json",
    ]);
    root.assert_exists(WEB_1_FILES);
    let agent_toml = root.path("/etc/rolecall/agent.toml");
    let edited = format!(
        "{}\n# edited by the operator\n",
        fs::read_to_string(&agent_toml).expect("read")
    );
    fs::write(&agent_toml, &edited).expect("edit agent.toml");

    root.run_ok(&["dpkg", "-r", "rolecall"]);
    root.assert_absent(&[
        "/usr/bin/rolecall",
        "/usr/lib/systemd/system/rolecall.service",
        "/usr/share/man/man1/rolecall.1.gz",
    ]);
    root.assert_exists(&[
        "/etc/rolecall/roles/web.toml",
        "/etc/rolecall/templates/web/vhost.conf.tera",
        "/var/lib/rolecall/managed.json",
    ]);
    assert_eq!(
        fs::read_to_string(&agent_toml).expect("agent.toml kept"),
        edited
    );
    let status = root.run_ok(&["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "rolecall"]);
    assert_eq!(status.trim(), "rc", "removed, config files kept");

    root.run_ok(&["dpkg", "-P", "rolecall"]);
    // /etc/rolecall itself stays while it holds the products' database.env (SPEC §10):
    // rendered service configuration, like the vhosts.
    root.assert_absent(&[
        "/etc/rolecall/agent.toml",
        "/etc/rolecall/roles",
        "/etc/rolecall/templates",
        "/var/lib/rolecall",
    ]);
    // The services' configuration stays: deleting it would break running services.
    root.assert_exists(WEB_1_FILES);
    assert!(
        !root.run(&["dpkg", "-s", "rolecall"]).status.success(),
        "rolecall still known to dpkg"
    );
}

// --- bake.sh ---------------------------------------------------------------------------

fn bake(args: &[&str]) -> Output {
    run(Command::new("bash")
        .arg(repo().join("packaging/image/bake.sh"))
        .args(args))
}

/// Bakes `package` into a scratch root and checks what an image must and must not hold.
fn assert_bakes(package: &Path, drop_in_marker: &str) {
    let dir = TempDir::new().expect("tempdir");
    let root = dir.path();
    let root_arg = root.to_str().expect("utf-8 path");
    let package_arg = package.to_str().expect("utf-8 path");
    let args = [
        "--root",
        root_arg,
        "--package",
        package_arg,
        "--map-url",
        MAP_URL,
        "--poll-interval",
        "45s",
    ];
    let out = bake(&args);
    assert_exit(&out, 0);

    for file in expected_config_files().iter().chain(&expected_other_files(
        if package_arg.ends_with(".deb") {
            "/usr/share/zsh/vendor-completions"
        } else {
            "/usr/share/zsh/site-functions"
        },
    )) {
        assert!(
            root.join(&file[1..]).is_file(),
            "{file} missing after baking {package_arg}"
        );
    }
    for drop_in in [
        "usr/lib/systemd/system/rolecall.service.d/before-services.conf",
        "usr/lib/systemd/system/rolecall-ready.target.d/after-services.conf",
    ] {
        let text = fs::read_to_string(root.join(drop_in)).expect("drop-in");
        assert!(
            text.contains(drop_in_marker),
            "wrong distro drop-in {drop_in}:\n{text}"
        );
    }

    let config = root.join("etc/rolecall/agent.toml");
    let text = fs::read_to_string(&config).expect("agent.toml");
    assert!(
        text.contains(&format!("\nurl = \"{MAP_URL}\"\n")),
        "map url not set:\n{text}"
    );
    assert!(
        text.contains("\npoll_interval = \"45s\"\n") && text.contains("\nsource = \"imds\"\n"),
        "{text}"
    );
    assert!(
        !root.join("etc/rolecall/map.pub").exists(),
        "no key was given"
    );

    let wants = root.join("etc/systemd/system/multi-user.target.wants/rolecall.service");
    assert_eq!(
        fs::read_link(&wants).unwrap_or_else(|e| panic!("{}: {e}", wants.display())),
        Path::new("/usr/lib/systemd/system/rolecall.service"),
        "unit enabled for multi-user.target"
    );

    let state = root.join("var/lib/rolecall");
    assert_empty_state(&state);
    // The baked binary accepts the baked config, and there is nothing to report yet.
    let baked = root.join("usr/bin/rolecall");
    let status = run(Command::new(&baked)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(root)
        .arg("status"));
    assert_exit(&status, 0);
    assert!(
        stdout(&status).contains("no reconcile recorded yet"),
        "{}",
        describe(&status)
    );
    assert_exit(
        &run(Command::new(&baked)
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(root)
            .arg("check")),
        3,
    );
    assert_empty_state(&state);

    // Running it again with the same arguments changes nothing.
    assert_exit(&bake(&args), 0);
    assert_eq!(fs::read_to_string(&config).expect("agent.toml"), text);
    assert_empty_state(&state);
}

#[track_caller]
fn assert_empty_state(state: &Path) {
    let entries: Vec<_> = fs::read_dir(state)
        .unwrap_or_else(|e| panic!("{}: {e}", state.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    assert!(entries.is_empty(), "state left in the image: {entries:?}");
}

#[test]
fn bake_leaves_the_package_config_and_enabled_unit_and_no_state() {
    require_program("systemctl", "apt-get install systemd (tests/run.sh does)");
    require_program("dpkg-deb", "apt-get install dpkg");
    require_program("rpm2cpio", "apt-get install rpm (tests/run.sh does)");
    require_program("cpio", "apt-get install cpio (tests/run.sh does)");
    let packages = packages();
    assert_bakes(&packages.deb, "apache2.service");
    assert_bakes(&packages.rpm, "httpd.service");
}

#[test]
fn bake_bad_usage_exits_2_naming_the_argument() {
    let dir = TempDir::new().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8 path");
    let cases: &[(&[&str], &str)] = &[
        (&["--root", root], "--map-url is required"),
        (
            &["--root", root, "--map-url", "s3://b/k"],
            "--map-url 's3://b/k'",
        ),
        (
            &["--root", root, "--map-url", "ftp://host/map"],
            "--map-url 'ftp://host/map'",
        ),
        (
            &[
                "--root",
                root,
                "--map-url",
                MAP_URL,
                "--poll-interval",
                "soon",
            ],
            "--poll-interval 'soon'",
        ),
        (
            &["--root", root, "--map-url", MAP_URL, "--jitter"],
            "--jitter needs a value",
        ),
        (
            &[
                "--root",
                root,
                "--map-url",
                MAP_URL,
                "--package",
                "/nonexistent.deb",
            ],
            "--package '/nonexistent.deb'",
        ),
        (
            &["--root", root, "--map-url", MAP_URL, "--identity", "static"],
            "--static-id",
        ),
        (
            &["--root", root, "--map-url", MAP_URL, "--colour", "red"],
            "unknown option: --colour",
        ),
        (
            &["--root", "/nonexistent", "--map-url", MAP_URL],
            "--root '/nonexistent'",
        ),
    ];
    for (args, message) in cases {
        let out = bake(args);
        assert_exit(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(message),
            "{args:?}: expected {message:?}\n{}",
            describe(&out)
        );
    }
    assert_empty_state(dir.path());
}

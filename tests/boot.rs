//! Issue 16: a baked Debian 12 image booted by a real systemd (PID 1 of its own namespaces,
//! `support::systemd`). The `.deb` under test is baked in with `bake.sh --root`; the host
//! finds itself in a `file://` map. First boot must not deadlock: READY=1 once the files are
//! installed and checked, the services start on the rendered configuration, rolecall
//! reloads and smoke-tests them and then starts `rolecall-ready.target`, after which (and
//! only after which) the units that need a serving host run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::fixture::{assert_mentions, describe, stdout};
use crate::support::debian::{self, require_root, DebianRoot, RootSpec};
use crate::support::packages::packages;
use crate::support::require_program;
use crate::support::systemd::Booted;

/// Debian 12 with systemd, D-Bus, Apache and MariaDB, as an image build would install them
/// (debootstrap runs their maintainer scripts with a policy-rc.d that starts nothing).
const BOOT_ROOT: RootSpec = RootSpec {
    name: "debian-12-systemd-apache2-mariadb-v1.tar",
    include: &["systemd", "dbus", "apache2", "mariadb-server", "procps"],
    prepare: forget_the_build_host,
};

/// The cached root must carry nothing of the machine that built it, like a real image: an
/// empty machine id (every copy's first boot makes its own), a neutral host name, no
/// resolver, no package lists.
fn forget_the_build_host(root: &Path) {
    fs::write(root.join("etc/machine-id"), "").expect("empty /etc/machine-id");
    let dbus_id = root.join("var/lib/dbus/machine-id");
    if dbus_id.exists() {
        fs::remove_file(dbus_id).expect("remove D-Bus's copy of the machine id");
    }
    fs::write(root.join("etc/hostname"), "rolecall-boot\n").expect("write /etc/hostname");
    fs::write(root.join("etc/resolv.conf"), "").expect("empty /etc/resolv.conf");
    let lists = root.join("var/lib/apt/lists");
    for entry in fs::read_dir(&lists).expect("read the apt lists") {
        let path = entry.expect("dir entry").path();
        if path.is_file() {
            fs::remove_file(&path).expect("remove an apt list");
        }
    }
    assert!(
        !root.join("usr/sbin/policy-rc.d").exists(),
        "debootstrap left its policy-rc.d: services would never start"
    );
}

/// One boot at a time: each boots Apache and MariaDB, and the figures should not measure
/// two systems competing for two cores.
static ONE_BOOT: Mutex<()> = Mutex::new(());

/// The map the image is baked with (bake.sh --map-url).
const MAP_PATH: &str = "/etc/rolecall/rolemap.toml";
/// The product the web host serves, and its page.
const DOMAIN: &str = "site.example.test";
const DOCROOT: &str = "/srv/site/public";
const INDEX: &str = "<h1>site served by rolecall's vhost</h1>\n";
/// The rendered vhost (templates/web.toml).
const VHOST: &str = "/etc/apache2/sites-enabled/rolecall-site.conf";
/// The rendered MariaDB settings (templates/db.toml).
const DB_CNF: &str = "/etc/mysql/mariadb.conf.d/60-rolecall.cnf";
/// What the stand-in registration script (below) appends to.
const REGISTRATION_LOG: &str = "/var/lib/register-in-lb.log";

/// Generous deadlines: a boot takes a few seconds, but the suite shares two cores.
const BOOT_DEADLINE: Duration = Duration::from_secs(60);
const POWEROFF_DEADLINE: Duration = Duration::from_secs(60);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn web_map(health_path: &str) -> String {
    format!(
        "schema = 1\ngeneration = 1\n\n[products.site]\ndomain = \"{DOMAIN}\"\ndocroot = \"{DOCROOT}\"\nhealth_path = \"{health_path}\"\n\n[hosts.web-1]\naddress = \"127.0.0.1\"\naz = \"test-a\"\nroles = [\"web\"]\nproducts = [\"site\"]\n"
    )
}

fn db_map() -> String {
    "schema = 1\ngeneration = 1\n\n[products.shop]\ndomain = \"shop.example.test\"\ndocroot = \"/srv/shop\"\n\n[products.shop.database]\nname = \"shop\"\nmaster = \"db-1\"\n\n[hosts.db-1]\naddress = \"127.0.0.1\"\naz = \"test-a\"\nroles = [\"db\"]\n".into()
}

/// A fresh image: the cached Debian root with the `.deb` baked in for host `id` (static
/// identity, the map at MAP_PATH), the map, the product's docroot and the example
/// registration unit, enabled.
fn image(id: &str, map: &str) -> DebianRoot {
    require_root("booting a Debian root");
    // Debootstrap (first run only) before waiting for the build another test may be running.
    let tarball = debian::tarball(&BOOT_ROOT);
    let deb = &packages().deb;
    let root = DebianRoot::new(&tarball);
    let out = Command::new("bash")
        .arg(repo().join("packaging/image/bake.sh"))
        .arg("--root")
        .arg(root.dir())
        .arg("--package")
        .arg(deb)
        .args(["--map-url", &format!("file://{MAP_PATH}")])
        .args(["--identity", "static", "--static-id", id])
        .args(["--static-address", "127.0.0.1", "--static-az", "test-a"])
        .args(["--static-region", "test", "--poll-interval", "5s"])
        .output()
        .expect("run bake.sh");
    assert!(out.status.success(), "bake.sh\n{}", describe(&out));
    root.write(MAP_PATH, map);
    root.write(&format!("{DOCROOT}/index.html"), INDEX);
    install_registration(&root);
    root
}

/// The README's example unit, unchanged, with a stand-in script that records each call and
/// whether Apache was active then.
fn install_registration(root: &DebianRoot) {
    let unit = fs::read_to_string(repo().join("packaging/systemd/examples/register-in-lb.service"))
        .expect("read the example unit");
    root.write("/etc/systemd/system/register-in-lb.service", &unit);
    let script = "/usr/local/sbin/register-in-lb";
    root.write(
        script,
        &format!("#!/bin/sh\necho \"$1 apache2=$(systemctl is-active apache2.service)\" >>{REGISTRATION_LOG}\n"),
    );
    fs::set_permissions(root.path(script), fs::Permissions::from_mode(0o755))
        .expect("chmod the registration script");
    let systemctl = require_program("systemctl", "apt-get install systemd (tests/run.sh does)");
    let out = Command::new(systemctl)
        .arg(format!("--root={}", root.dir().display()))
        .args(["enable", "register-in-lb.service"])
        .output()
        .expect("systemctl --root enable");
    assert!(out.status.success(), "{}", describe(&out));
    let wants = root.path("/etc/systemd/system/rolecall-ready.target.wants/register-in-lb.service");
    assert_eq!(
        fs::read_link(&wants).unwrap_or_else(|e| panic!("{}: {e}", wants.display())),
        Path::new("/etc/systemd/system/register-in-lb.service"),
        "enabled: wanted by rolecall-ready.target"
    );
}

/// What the registration script recorded (empty: it never ran).
fn registrations(root: &DebianRoot) -> String {
    fs::read_to_string(root.path(REGISTRATION_LOG)).unwrap_or_default()
}

/// Boots `root` with its console log in `logs`.
fn boot(root: DebianRoot, logs: &TempDir, name: &str) -> Booted {
    Booted::boot(root, &logs.path().join(format!("{name}.console")))
}

/// Waits for the web host to serve the product's page through the rendered vhost; returns
/// when that first happened, on the test's clock.
fn wait_served(system: &Booted) -> Duration {
    let mut served = None;
    system.wait_for(
        &format!("GET / Host: {DOMAIN} answers with the docroot's page"),
        BOOT_DEADLINE,
        || {
            let ok = system
                .http_get(DOMAIN, "/")
                .is_ok_and(|(status, body)| status == 200 && body == INDEX);
            if ok {
                served = Some(system.started().elapsed());
            }
            ok
        },
    );
    served.expect("served")
}

/// The state every good boot reaches: rolecall, the service and the ready target active,
/// the boot finished, the registration run once with Apache active, no ordering cycle.
fn assert_booted_and_ready(system: &Booted, service: &str) {
    system.wait_for("rolecall-ready.target active", BOOT_DEADLINE, || {
        system.state("rolecall-ready.target") == "active"
    });
    for unit in ["rolecall.service", service] {
        assert_eq!(
            system.state(unit),
            "active",
            "{unit}\n{}",
            system.diagnostics()
        );
    }
    system.wait_for("the boot finished", BOOT_DEADLINE, || {
        matches!(
            system.systemctl(&["is-system-running"]).as_str(),
            "running" | "degraded"
        )
    });
    system.wait_for("register-in-lb.service ran", BOOT_DEADLINE, || {
        system.state("register-in-lb.service") == "active"
    });
    // It ran after the target was reached, never before.
    let target = system.property_us("rolecall-ready.target", "ActiveEnterTimestampMonotonic");
    let registered =
        system.property_us("register-in-lb.service", "ExecMainStartTimestampMonotonic");
    assert!(
        registered >= target,
        "registered at {registered} µs, ready at {target} µs"
    );
    let journal = system.journal(None);
    assert!(
        !journal.contains("ordering cycle"),
        "systemd found an ordering cycle:\n{journal}"
    );
}

/// Prints the boot's figures (systemd's monotonic timestamps, in ms from its start).
#[allow(
    clippy::print_stderr,
    reason = "the boot tests print issue 16's figures"
)]
fn report_figures(label: &str, system: &Booted, served: Option<Duration>) {
    let ms = |us: u64| us as f64 / 1000.0;
    let systemd = system.manager_property_us("UserspaceTimestampMonotonic");
    let started = system.property_us("rolecall.service", "ExecMainStartTimestampMonotonic");
    let notified = system.property_us("rolecall.service", "ActiveEnterTimestampMonotonic");
    let ready = system.property_us("rolecall-ready.target", "ActiveEnterTimestampMonotonic");
    let served = served.map_or(String::new(), |d| {
        format!(
            "; site served {:.0} ms after the namespace was spawned",
            d.as_secs_f64() * 1000.0
        )
    });
    eprintln!(
        "boot figures ({label}): rolecall started at {:.0} ms, READY=1 at {:.0} ms, rolecall-ready.target at {:.0} ms after systemd started; rolecall start -> ready {:.0} ms{served}",
        ms(started - systemd),
        ms(notified - systemd),
        ms(ready - systemd),
        ms(ready - started),
    );
}

/// `rolecall ARGS` inside the booted system.
fn rolecall(system: &Booted, args: &[&str]) -> (Option<i32>, String) {
    let argv: Vec<&str> = ["rolecall"].iter().chain(args).copied().collect();
    let out = system.exec(&argv);
    (out.status.code(), stdout(&out))
}

/// (a) and (b): a web host's first boot serves its site and reaches the ready target; the
/// second boot of the same root (state cached, the map gone) does it again from the cache.
#[test]
fn issue_16_web_host_first_and_second_boot_serve_and_reach_ready() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let logs = TempDir::new().expect("tempdir");
    let root = image("web-1", &web_map("/index.html"));
    root.assert_absent(&[VHOST, "/var/lib/rolecall/map.toml"]);

    let system = boot(root, &logs, "first");
    let served = wait_served(&system);
    assert_booted_and_ready(&system, "apache2.service");
    report_figures("first boot", &system, Some(served));
    assert_eq!(
        registrations(system.root()),
        "register apache2=active\n",
        "the registration ran once, with Apache serving"
    );
    let (code, status) = rolecall(&system, &["check"]);
    assert_eq!(
        code,
        Some(0),
        "rolecall check after the first boot:\n{status}"
    );

    // A clean shutdown: the registration is withdrawn while Apache still serves (the
    // target's drop-in orders it before the services' stop).
    let root = system.poweroff(POWEROFF_DEADLINE);
    assert_eq!(
        registrations(&root),
        "register apache2=active\nderegister apache2=active\n"
    );
    root.assert_exists(&[VHOST, "/var/lib/rolecall/map.toml"]);
    // Second boot: the files are in place and the state is cached, but the map is gone.
    fs::remove_file(root.path(MAP_PATH)).expect("remove the map");

    let system = boot(root, &logs, "second");
    let served = wait_served(&system);
    assert_booted_and_ready(&system, "apache2.service");
    report_figures("second boot, map unreachable", &system, Some(served));
    let (code, check) = rolecall(&system, &["check"]);
    assert!(
        code == Some(1) && check.contains("cache"),
        "check on the cached map: WARNING\n{check}"
    );
}

/// (c) A smoke test fails at boot (the health page is missing): the boot completes and
/// Apache runs, but the ready target is never reached while rolecall retries, nothing
/// ordered after it runs, the created vhost is removed again, and status/check say why.
#[test]
#[allow(
    clippy::print_stderr,
    reason = "prints how long the target was watched"
)]
fn issue_16_failing_smoke_test_at_boot_keeps_the_ready_target_down() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let logs = TempDir::new().expect("tempdir");
    let system = boot(
        image("web-1", &web_map("/health.txt")),
        &logs,
        "smoke-fails",
    );

    system.wait_for(
        "rolecall active (READY=1 before the smoke tests)",
        BOOT_DEADLINE,
        || system.state("rolecall.service") == "active",
    );
    system.wait_for("apache2 active", BOOT_DEADLINE, || {
        system.state("apache2.service") == "active"
    });
    system.wait_for("the boot finished", BOOT_DEADLINE, || {
        matches!(
            system.systemctl(&["is-system-running"]).as_str(),
            "running" | "degraded"
        )
    });
    // The daemon retries (backoff 5 s, 10 s, ...); through two failed reconciles the
    // target stays down.
    let failures = || {
        system
            .journal(Some("rolecall.service"))
            .matches("smoke test failed")
            .count()
    };
    let watched = Instant::now();
    system.wait_for("two failed smoke runs", BOOT_DEADLINE, || {
        let state = system.state("rolecall-ready.target");
        assert_eq!(
            state,
            "inactive",
            "rolecall-ready.target reached\n{}",
            system.diagnostics()
        );
        failures() >= 2
    });
    eprintln!(
        "boot (smoke fails): rolecall-ready.target stayed inactive for {} ms of retries",
        watched.elapsed().as_millis()
    );
    // Running: the retries reload Apache (rollback), so it may be caught reloading.
    for unit in ["rolecall.service", "apache2.service"] {
        let state = system.state(unit);
        assert!(
            matches!(state.as_str(), "active" | "reloading"),
            "{unit} {state}\n{}",
            system.diagnostics()
        );
    }
    assert_eq!(system.state("register-in-lb.service"), "inactive");
    assert_eq!(registrations(system.root()), "", "the registration ran");
    // Rolled back: the vhost it created is gone again (nothing was applied before).
    system.root().assert_absent(&[VHOST]);

    let (code, status) = rolecall(&system, &["status"]);
    assert_eq!(code, Some(0), "{status}");
    assert_mentions(
        &status,
        &[
            "rolled back",
            "health.txt",
            "answered 404",
            "nothing was applied before",
        ],
    );
    let (code, check) = rolecall(&system, &["check"]);
    assert!(
        code == Some(2) && check.contains("health.txt"),
        "check: CRITICAL, naming the smoke test\n{check}"
    );
}

/// (d) A database host: MariaDB starts on the rendered configuration (its server id, read
/// only and binary log as rendered, not Debian's defaults), and the ready target follows.
#[test]
fn issue_16_db_host_mariadb_starts_on_the_rendered_config() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let logs = TempDir::new().expect("tempdir");
    let system = boot(image("db-1", &db_map()), &logs, "db");

    assert_booted_and_ready(&system, "mariadb.service");
    report_figures("db host first boot", &system, None);
    let rendered = fs::read_to_string(system.root().path(DB_CNF)).expect("the rendered config");
    let server_id = rendered
        .lines()
        .find_map(|l| l.strip_prefix("server_id = "))
        .unwrap_or_else(|| panic!("no server_id in {DB_CNF}:\n{rendered}"));
    assert_ne!(server_id, "1", "Debian's default server id");
    let out = system.exec(&[
        "mariadb",
        "--protocol=socket",
        "-N",
        "-B",
        "-e",
        "SELECT @@server_id, @@read_only, @@log_bin",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("{server_id}\t0\t1"),
        "the running server's settings (rendered: {rendered})"
    );
    // MariaDB was started once, after rolecall's READY: never on Debian's defaults first.
    let notified = system.property_us("rolecall.service", "ActiveEnterTimestampMonotonic");
    let mariadb = system.property_us("mariadb.service", "ExecMainStartTimestampMonotonic");
    assert!(
        mariadb >= notified,
        "mariadb started at {mariadb} µs, READY at {notified} µs"
    );
}

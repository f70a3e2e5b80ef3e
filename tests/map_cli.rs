//! `rolecall map validate|show|lint|diff|keygen` through the real binary: every exit code
//! of SPEC §3 for these commands, and the TOML paths and words they print.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::fixture::{assert_exit, describe, stdout};

/// A valid map whose lint is clean: web and db hosts spread over zones a and b, a master
/// with a replica in another zone and a backup.
pub const CLEAN_MAP: &str = r#"# Test fleet.
schema = 1
generation = 41   # raised by every publish

[products.videos]
domain = "videos.example.com"
docroot = "/srv/videos"

[products.videos.database]
name = "videos"
master = "db-1"
replicas = ["db-2", "db-3"]
backup = "db-4"
backup_url = "s3://fleet-backups/videos/"

[hosts.web-1]
address = "10.0.0.1"
az = "a"
roles = ["web"]
products = ["videos"]

[hosts.web-2]
address = "10.0.0.2"
az = "b"
roles = ["web"]
products = ["videos"]

[hosts.db-1]
address = "10.0.1.1"
az = "a"
roles = ["db"]

[hosts.db-2]
address = "10.0.1.2"
az = "b"
roles = ["db"]

[hosts.db-3]
address = "10.0.1.3"
az = "a"
roles = ["db"]

[hosts.db-4]
address = "10.0.1.4"
az = "b"
roles = ["db", "db-backup"]
"#;

/// Run `rolecall ARGS` (map commands read no agent.toml).
pub fn rolecall(args: &[&str]) -> Output {
    Command::new(crate::fixture::binary())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running rolecall")
}

/// Write `text` to `dir/name`; its path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test map");
    path.display().to_string()
}

#[test]
fn validate_exits_0_for_a_valid_map_and_2_listing_problems() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "good.toml", CLEAN_MAP);
    let out = rolecall(&["map", "validate", &good]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("valid (generation 41, 1 products, 6 hosts)"));
    let bad_text = CLEAN_MAP
        .replace("master = \"db-1\"", "master = \"db-9\"")
        .replace(
            "az = \"b\"\nroles = [\"db\"]",
            "az = \"b b\"\nroles = [\"db\"]",
        );
    let bad = write(dir.path(), "bad.toml", &bad_text);
    let out = rolecall(&["map", "validate", &bad]);
    assert_exit(&out, 2);
    let text = stdout(&out);
    assert!(
        text.contains("products.videos.database.master: host \"db-9\" is not in [hosts]"),
        "{text}"
    );
    assert!(text.contains("hosts.db-2.az: \"b b\""), "{text}");
    assert!(text.contains("invalid, 2 problem(s)"), "{text}");
    let broken = write(dir.path(), "broken.toml", "schema = = 1\n");
    assert_exit(&rolecall(&["map", "validate", &broken]), 2);
}

#[test]
fn show_exits_0_with_a_table_and_2_for_an_invalid_map() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "good.toml", CLEAN_MAP);
    let out = rolecall(&["map", "show", &good]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("PRODUCT"), "{text}");
    assert!(text.contains("db-2"), "{text}");
    let bad = write(
        dir.path(),
        "bad.toml",
        &CLEAN_MAP.replace("schema = 1", "schema = 7"),
    );
    assert_exit(&rolecall(&["map", "show", &bad]), 2);
}

#[test]
fn lint_exits_0_or_1_with_strict_and_2_when_invalid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clean = write(dir.path(), "clean.toml", CLEAN_MAP);
    let out = rolecall(&["map", "lint", "--strict", &clean]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("0 warning(s)"), "{}", describe(&out));
    let risky = CLEAN_MAP.replace("backup = \"db-4\"\n", "");
    let risky = write(dir.path(), "risky.toml", &risky);
    let out = rolecall(&["map", "lint", &risky]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains(
            "warning: products.videos.database.backup: product \"videos\" has no backup host"
        ),
        "{}",
        describe(&out)
    );
    assert_exit(&rolecall(&["map", "lint", "--strict", &risky]), 1);
    let bad = write(
        dir.path(),
        "bad.toml",
        &CLEAN_MAP.replace("generation = 41", "generation = -1"),
    );
    let out = rolecall(&["map", "lint", &bad]);
    assert_exit(&out, 2);
    assert!(stdout(&out).contains("generation"), "{}", describe(&out));
}

#[test]
fn diff_prints_one_line_per_change_and_exits_2_on_unparseable_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = write(dir.path(), "old.toml", CLEAN_MAP);
    let new_text = CLEAN_MAP
        .replace("master = \"db-1\"", "master = \"db-2\"")
        .replace(
            "replicas = [\"db-2\", \"db-3\"]",
            "replicas = [\"db-3\"]\nremoved = [\"db-1\"]",
        )
        .replace("[hosts.web-2]", "[hosts.web-3]");
    let new = write(dir.path(), "new.toml", &new_text);
    let out = rolecall(&["map", "diff", &old, &new]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "product videos: new database master db-2 (was db-1)\n\
         product videos: replicas [db-3] (was [db-2, db-3])\n\
         product videos: database.removed [] -> [db-1]\n\
         host web-2 removed\n\
         host web-3 added (10.0.0.2, b, roles [web], products [videos])\n"
    );
    let broken = write(dir.path(), "broken.toml", "[hosts\n");
    let out = rolecall(&["map", "diff", &old, &broken]);
    assert_exit(&out, 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.toml"),
        "{}",
        describe(&out)
    );
}

#[test]
fn keygen_writes_a_private_secret_key_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A bare prefix, as typed in the directory the keys belong in.
    let keygen = || {
        Command::new(crate::fixture::binary())
            .current_dir(dir.path())
            .args(["map", "keygen", "--out", "fleet"])
            .env_remove("RUST_LOG")
            .output()
            .expect("running rolecall")
    };
    assert_exit(&keygen(), 0);
    let mode = |p: PathBuf| {
        std::fs::metadata(&p)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(dir.path().join("fleet.key")), 0o600);
    assert_eq!(mode(dir.path().join("fleet.pub")) & 0o600, 0o600);
    let secret = std::fs::read(dir.path().join("fleet.key")).expect("key");
    let out = keygen();
    assert_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fleet.key"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read(dir.path().join("fleet.key")).expect("key"),
        secret
    );
}

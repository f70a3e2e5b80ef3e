//! `rolecall map validate|show|lint|diff|keygen` through the real binary: every exit code
//! of SPEC §3 for these commands, and the TOML paths and words they print.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::fixture::{assert_exit, assert_stderr, assert_stdout, stdout, SAMPLE_MAP};

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
    let good = write(dir.path(), "good.toml", SAMPLE_MAP);
    assert_stdout(
        &rolecall(&["map", "validate", &good]),
        0,
        &["valid (generation 41, 1 products, 6 hosts)"],
    );
    let bad_text = SAMPLE_MAP
        .replace("master = \"db-1\"", "master = \"db-9\"")
        .replace(
            "az = \"b\"\nroles = [\"db\"]",
            "az = \"b b\"\nroles = [\"db\"]",
        );
    let bad = write(dir.path(), "bad.toml", &bad_text);
    assert_stdout(
        &rolecall(&["map", "validate", &bad]),
        2,
        &[
            "products.videos.database.master: host \"db-9\" is not in [hosts]",
            "hosts.db-2.az: \"b b\"",
            "invalid, 2 problem(s)",
        ],
    );
    let broken = write(dir.path(), "broken.toml", "schema = = 1\n");
    assert_exit(&rolecall(&["map", "validate", &broken]), 2);
}

#[test]
fn show_exits_0_with_a_table_and_2_for_an_invalid_map() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "good.toml", SAMPLE_MAP);
    let out = rolecall(&["map", "show", &good]);
    assert_stdout(&out, 0, &["db-2"]);
    assert!(stdout(&out).starts_with("PRODUCT"), "{}", stdout(&out));
    let bad = write(
        dir.path(),
        "bad.toml",
        &SAMPLE_MAP.replace("schema = 1", "schema = 7"),
    );
    assert_exit(&rolecall(&["map", "show", &bad]), 2);
}

#[test]
fn lint_exits_0_or_1_with_strict_and_2_when_invalid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clean = write(dir.path(), "clean.toml", SAMPLE_MAP);
    assert_stdout(
        &rolecall(&["map", "lint", "--strict", &clean]),
        0,
        &["0 warning(s)"],
    );
    let risky = SAMPLE_MAP.replace("backup = \"db-4\"\n", "");
    let risky = write(dir.path(), "risky.toml", &risky);
    assert_stdout(
        &rolecall(&["map", "lint", &risky]),
        0,
        &["warning: products.videos.database.backup: product \"videos\" has no backup host"],
    );
    assert_exit(&rolecall(&["map", "lint", "--strict", &risky]), 1);
    let bad = write(
        dir.path(),
        "bad.toml",
        &SAMPLE_MAP.replace("generation = 41", "generation = -1"),
    );
    assert_stdout(&rolecall(&["map", "lint", &bad]), 2, &["generation"]);
}

#[test]
fn diff_prints_one_line_per_change_and_exits_2_on_unparseable_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = write(dir.path(), "old.toml", SAMPLE_MAP);
    let new_text = SAMPLE_MAP
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
    assert_stderr(
        &rolecall(&["map", "diff", &old, &broken]),
        2,
        &["broken.toml"],
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
    assert_stderr(&keygen(), 1, &["fleet.key"]);
    assert_eq!(
        std::fs::read(dir.path().join("fleet.key")).expect("key"),
        secret
    );
}

/// A 6,000-host map is read in pieces: valid, and a host defined again far down the text (in
/// a later piece) is refused with toml's words and the line of the second definition.
#[test]
fn a_large_map_is_read_in_pieces_and_a_host_defined_again_far_down_is_refused_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = crate::support::fleet::fleet(6000, 200);
    assert!(
        text.len() > 512 * 1024,
        "{} bytes: too small to split",
        text.len()
    );
    let good = write(dir.path(), "good.toml", &text);
    let at = text.find("[hosts.web-5000]").expect("host web-5000");
    let dup = format!(
        "{}[hosts.web-1]\naz = \"b\"\n\n{}",
        &text[..at],
        &text[at..]
    );
    let dup_line = dup[..at].lines().count() + 1;
    let bad = write(dir.path(), "dup.toml", &dup);
    assert_stdout(
        &rolecall(&["map", "validate", &good]),
        0,
        &["valid (generation 1, 200 products, 6000 hosts)"],
    );
    let out = rolecall(&["map", "validate", &bad]);
    assert_exit(&out, 2);
    let all = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("duplicate key"), "{all}");
    assert!(all.contains(&format!("line {dup_line}")), "{all}");
}

/// A map file a command names is held to the size limit of every map (16 MiB): a regular
/// file over it is refused from its size, unread (an 8 GiB sparse file, under a 4 GiB
/// address-space limit, would fail as out of memory if read whole), and a device or a pipe
/// is read no further than the limit. A map piped in under the limit still validates.
#[test]
fn a_map_file_over_the_size_limit_is_refused_unread_and_a_piped_map_still_validates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let huge = dir.path().join("huge.toml");
    let file = std::fs::File::create(&huge).expect("huge map");
    file.set_len(8 << 30).expect("a sparse 8 GiB map");
    for (path, size) in [
        (huge.as_path(), "8589934592"),
        (Path::new("/dev/zero"), "16777217"),
    ] {
        let out = crate::fixture::binary_within_4_gib()
            .args(["map", "validate"])
            .arg(path)
            .output()
            .expect("running rolecall under prlimit");
        let said = format!("{size} bytes, more than the limit");
        assert_stderr(&out, 2, &[&path.display().to_string(), &said]);
    }
    let mut piped = Command::new(crate::fixture::binary())
        .args(["map", "validate", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running rolecall");
    let mut stdin = piped.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, SAMPLE_MAP.as_bytes()).expect("piping the map");
    drop(stdin);
    let out = piped.wait_with_output().expect("rolecall's output");
    assert_stdout(&out, 0, &["valid (generation 41"]);
}

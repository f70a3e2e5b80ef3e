//! `rolecall map publish` and `map promote` against moto (issue 5): lost-update protection
//! (two concurrent publishes, a write over a changed ETag, a stale file), nothing uploaded
//! for an invalid map, signed maps end to end, promotion and its refusal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rolecall::source::verify;

use crate::fixture::{
    assert_exit, assert_stderr, assert_stdout, describe, hand_key, key_fifo, stdout, SAMPLE_MAP,
};
use crate::map_cli::write;
use crate::support::s3::Moto;

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// `rolecall ARGS` pointed at moto.
fn command(moto: &Moto, args: &[&str]) -> Command {
    let mut cmd = Command::new(crate::fixture::binary());
    cmd.args(args).envs(moto.agent_env()).env_remove("RUST_LOG");
    cmd
}

fn run(moto: &Moto, args: &[&str]) -> Output {
    command(moto, args).output().expect("running rolecall")
}

fn spawn(moto: &Moto, args: &[&str]) -> Child {
    command(moto, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rolecall")
}

/// Keys under `prefix` in `bucket`, sorted.
pub fn list_keys(moto: &Moto, bucket: &str, prefix: &str) -> Vec<String> {
    let client = moto.client();
    runtime().block_on(async {
        let listed = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("listing moto");
        let mut keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        keys.sort();
        keys
    })
}

/// A runtime for SDK calls made directly by a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A fresh bucket in the shared moto, holding `map` as `rolemap.toml` if given; the bucket
/// and the map's URL.
fn bucket_with(moto: &Moto, map: Option<&str>) -> (String, String) {
    let bucket = moto.new_bucket(false);
    if let Some(text) = map {
        moto.put(&bucket, "rolemap.toml", text.as_bytes());
    }
    let url = format!("s3://{bucket}/rolemap.toml");
    (bucket, url)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn first_publish_creates_and_a_second_raises_the_generation_keeping_comments() {
    let moto = Moto::shared();
    let (bucket, url) = bucket_with(moto, None);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "map.toml", SAMPLE_MAP);
    assert_stdout(
        &run(moto, &["map", "publish", &file, "--to", &url]),
        0,
        &["creating"],
    );
    let stored = String::from_utf8(moto.get(&bucket, "rolemap.toml")).expect("utf-8");
    assert_eq!(
        stored,
        SAMPLE_MAP.replace("generation = 41 ", "generation = 42 ")
    );
    // The operator edits the published copy and publishes it; dry run first.
    let edited = stored.replace("docroot = \"/srv/videos\"", "docroot = \"/srv/videos2\"");
    let file = write(dir.path(), "map.toml", &edited);
    let out = run(moto, &["map", "publish", &file, "--to", &url, "--dry-run"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("generation 42 -> generation 43"), "{text}");
    assert!(
        text.contains("  product videos: docroot /srv/videos -> /srv/videos2"),
        "{text}"
    );
    assert!(text.contains("+docroot = \"/srv/videos2\""), "{text}");
    assert!(text.contains("dry run: nothing uploaded"), "{text}");
    assert_eq!(moto.get(&bucket, "rolemap.toml"), stored.as_bytes());
    assert_exit(&run(moto, &["map", "publish", &file, "--to", &url]), 0);
    let now = String::from_utf8(moto.get(&bucket, "rolemap.toml")).expect("utf-8");
    assert_eq!(now, edited.replace("generation = 42 ", "generation = 43 "));
    assert!(
        now.starts_with("# Test fleet.\n"),
        "comments survive: {now}"
    );
}

/// Two publishes from the same published version, overlapping for certain: the first is
/// paused between its read and its write (it waits for its signing key, see [`Paused`]).
/// Round 0: the second is paused the same way, and both get their keys only once both
/// have read; the signature's precondition lets one through. Round 1: the second is not
/// signed and runs to completion in the first one's pause; the map's `If-Match` refuses
/// the first. Either way one wins and the other exits 4.
#[test]
fn two_concurrent_publishes_one_wins_the_other_exits_4() {
    let moto = Moto::shared();
    let keys = tempfile::tempdir().expect("temp dir");
    let (key, _) = keygen(keys.path());
    let secret = std::fs::read(&key).expect("secret key");
    for round in 0..2 {
        let (bucket, url) = bucket_with(moto, Some(SAMPLE_MAP));
        let dir = tempfile::tempdir().expect("temp dir");
        let a = SAMPLE_MAP.replace("/srv/videos", "/srv/videos-a");
        let b = SAMPLE_MAP.replace("videos.example.com", "videos-b.example.com");
        let files = [
            write(dir.path(), "a.toml", &a),
            write(dir.path(), "b.toml", &b),
        ];
        let fifo = |name: &str| dir.path().join(format!("{name}.fifo"));
        let mut first = Paused::start(moto, &bucket, &files[0], &fifo("a"));
        let outs: Vec<Output> = if round == 0 {
            let mut second = Paused::start(moto, &bucket, &files[1], &fifo("b"));
            hand_key(&first.fifo, &secret, &mut first.child, || {});
            hand_key(&second.fifo, &secret, &mut second.child, || {});
            [first, second]
                .map(|p| p.child.wait_with_output().expect("waiting for rolecall"))
                .into()
        } else {
            let second = run(moto, &["map", "publish", &files[1], "--to", &url]);
            hand_key(&first.fifo, &secret, &mut first.child, || {});
            let first = first
                .child
                .wait_with_output()
                .expect("waiting for rolecall");
            vec![first, second]
        };
        let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
        let all = format!("{}\n{}", describe(&outs[0]), describe(&outs[1]));
        let winner = match codes.as_slice() {
            [Some(0), Some(4)] => 0,
            [Some(4), Some(0)] => 1,
            _ => panic!("round {round}: expected one 0 and one 4, got {codes:?}\n{all}"),
        };
        let loser = &outs[1 - winner];
        assert!(
            stderr(loser).contains("generation"),
            "loser names the winner's generation: {all}"
        );
        assert!(stderr(loser).contains("42"), "{all}");
        let expected = [&a, &b][winner].replace("generation = 41 ", "generation = 42 ");
        assert_eq!(
            moto.get(&bucket, "rolemap.toml"),
            expected.as_bytes(),
            "round {round}"
        );
    }
}

/// A `map publish` signing with a key it reads from a FIFO: it stops between reading the
/// published map and writing its own until [`hand_key`] gives it the key.
struct Paused {
    child: Child,
    fifo: PathBuf,
}

impl Paused {
    /// Publishes `file` to `bucket/rolemap.toml`, key from a FIFO created at `fifo`; returns
    /// once the publish has read the published map (or found none).
    fn start(moto: &Moto, bucket: &str, file: &str, fifo: &Path) -> Paused {
        key_fifo(fifo);
        let url = format!("s3://{bucket}/rolemap.toml");
        let path = format!("/{bucket}/rolemap.toml");
        // The read is done when the map was downloaded, or found missing.
        let reads = || {
            moto.request_count("GET", &path, Some(200))
                + moto.request_count("HEAD", &path, Some(404))
        };
        let reads_before = reads();
        let fifo_arg = fifo.display().to_string();
        let args = [
            "map",
            "publish",
            file,
            "--to",
            &url,
            "--sign-key",
            &fifo_arg,
        ];
        let child = spawn(moto, &args);
        let read = crate::support::wait_until(TIMEOUT, || reads() > reads_before);
        assert!(read, "the publish read the current map");
        Paused {
            child,
            fifo: fifo.to_path_buf(),
        }
    }
}

/// Publish `file` to `bucket/rolemap.toml` signed with a key read from a FIFO, so the
/// binary stops between reading the published map and writing its own; `meanwhile` runs in
/// that gap (another writer). The binary's output.
fn publish_with_a_gap(moto: &Moto, bucket: &str, file: &str, meanwhile: impl FnOnce()) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, _) = keygen(dir.path());
    let secret = std::fs::read(&key).expect("secret key");
    let mut paused = Paused::start(moto, bucket, file, &dir.path().join("key.fifo"));
    hand_key(&paused.fifo, &secret, &mut paused.child, meanwhile);
    paused
        .child
        .wait_with_output()
        .expect("waiting for rolecall")
}

/// Publishing `file` to `bucket` while `winner` is written in the gap between its read and
/// its write exits 4 naming the winner's generation, and leaves the winner in place.
fn loses_to_a_write_in_the_gap(moto: &Moto, bucket: &str, file: &str, winner: &str) {
    let out = publish_with_a_gap(moto, bucket, file, || {
        moto.put(bucket, "rolemap.toml", winner.as_bytes());
    });
    let generation = winner
        .lines()
        .find_map(|l| l.strip_prefix("generation = "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the winner's generation");
    assert_stderr(&out, 4, &[&format!("current generation: {generation}")]);
    assert_eq!(moto.get(bucket, "rolemap.toml"), winner.as_bytes());
}

#[test]
fn a_write_over_a_changed_etag_is_refused_naming_the_winner() {
    let moto = Moto::shared();
    let (bucket, _) = bucket_with(moto, Some(SAMPLE_MAP));
    let winner = SAMPLE_MAP.replace("generation = 41", "generation = 50");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "map.toml", SAMPLE_MAP);
    loses_to_a_write_in_the_gap(moto, &bucket, &file, &winner);
}

#[test]
fn a_file_edited_from_an_older_generation_exits_4_and_creating_over_an_existing_map_too() {
    let moto = Moto::shared();
    let published = SAMPLE_MAP.replace("generation = 41", "generation = 45");
    let (bucket, url) = bucket_with(moto, Some(&published));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "old.toml", SAMPLE_MAP);
    assert_stderr(
        &run(moto, &["map", "publish", &file, "--to", &url]),
        4,
        &["edited from generation 41", "at generation 45"],
    );
    assert_eq!(moto.get(&bucket, "rolemap.toml"), published.as_bytes());
    // Create-only: the map appears after the read that found none.
    let fresh = moto.new_bucket(false);
    loses_to_a_write_in_the_gap(moto, &fresh, &file, &published);
}

#[test]
fn an_invalid_map_is_never_uploaded() {
    let moto = Moto::shared();
    let (bucket, url) = bucket_with(moto, None);
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = SAMPLE_MAP.replace("master = \"db-1\"", "master = \"web-1\"");
    let file = write(dir.path(), "bad.toml", &bad);
    assert_stderr(
        &run(moto, &["map", "publish", &file, "--to", &url]),
        2,
        &["invalid: products.videos.database.master: host \"web-1\" lacks the role \"db\""],
    );
    assert_eq!(list_keys(moto, &bucket, ""), Vec::<String>::new());
}

fn keygen(dir: &Path) -> (String, Vec<u8>) {
    let prefix = dir.join("fleet").display().to_string();
    let out = Command::new(crate::fixture::binary())
        .args(["map", "keygen", "--out", &prefix])
        .output()
        .expect("keygen");
    assert_exit(&out, 0);
    let public = std::fs::read(format!("{prefix}.pub")).expect("public key");
    (format!("{prefix}.key"), public)
}

#[test]
fn signed_publish_verifies_and_tampering_or_another_key_does_not() {
    let moto = Moto::shared();
    let (bucket, url) = bucket_with(moto, None);
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = keygen(dir.path());
    let file = write(dir.path(), "map.toml", SAMPLE_MAP);
    let out = run(
        moto,
        &["map", "publish", &file, "--to", &url, "--sign-key", &key],
    );
    assert_stdout(&out, 0, &[", signed"]);
    let map = moto.get(&bucket, "rolemap.toml");
    let sig = moto.get(&bucket, "rolemap.toml.sig");
    assert_eq!(verify::signature_url(&url), format!("{url}.sig"));
    verify::verify(&map, &sig, &public).expect("the published pair verifies");
    let mut tampered = map.clone();
    let at = tampered
        .iter()
        .position(|b| *b == b'4')
        .expect("generation digit");
    tampered[at] = b'9';
    assert!(matches!(
        verify::verify(&tampered, &sig, &public),
        Err(verify::VerifyError::Mismatch)
    ));
    let other = tempfile::tempdir().expect("temp dir");
    let (_, other_public) = keygen(other.path());
    assert!(verify::verify(&map, &sig, &other_public).is_err());
    // Publishing unsigned over a signed map warns, and the old signature no longer fits.
    let file = write(dir.path(), "map.toml", &String::from_utf8_lossy(&map));
    assert_stderr(
        &run(moto, &["map", "publish", &file, "--to", &url]),
        0,
        &["is not signed"],
    );
    let unsigned = moto.get(&bucket, "rolemap.toml");
    assert!(verify::verify(&unsigned, &moto.get(&bucket, "rolemap.toml.sig"), &public).is_err());
}

#[test]
fn promote_makes_the_first_replica_master_and_signs() {
    let moto = Moto::shared();
    let (bucket, url) = bucket_with(moto, Some(SAMPLE_MAP));
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = keygen(dir.path());
    let args = [
        "map",
        "promote",
        "--product",
        "videos",
        "--map",
        &url,
        "--sign-key",
        &key,
    ];
    assert_stdout(
        &run(moto, &args),
        0,
        &["new database master db-2 (was db-1)"],
    );
    let stored = moto.get(&bucket, "rolemap.toml");
    let map = rolecall::rolemap::load(&stored).expect("the promoted map is valid");
    assert_eq!(map.generation, 42);
    let db = map.products["videos"].database.clone().expect("database");
    assert_eq!(
        (db.master.as_str(), db.replicas.clone()),
        ("db-2", vec!["db-3".to_string()])
    );
    assert_eq!(db.removed, ["db-1"]);
    verify::verify(&stored, &moto.get(&bucket, "rolemap.toml.sig"), &public).expect("signed");
    assert!(
        String::from_utf8_lossy(&stored).contains("generation = 42   # raised by every publish")
    );
}

#[test]
fn promoting_a_host_that_is_not_a_replica_exits_2_and_changes_nothing() {
    let moto = Moto::shared();
    let (bucket, url) = bucket_with(moto, Some(SAMPLE_MAP));
    for host in ["db-1", "db-4", "web-1"] {
        let out = run(
            moto,
            &[
                "map",
                "promote",
                "--product",
                "videos",
                "--to",
                host,
                "--map",
                &url,
            ],
        );
        let why = format!("host \"{host}\" is not a replica of product \"videos\"");
        assert_stderr(&out, 2, &[&why]);
    }
    let out = run(
        moto,
        &["map", "promote", "--product", "blog", "--map", &url],
    );
    assert_exit(&out, 2);
    assert_eq!(moto.get(&bucket, "rolemap.toml"), SAMPLE_MAP.as_bytes());
}

#[test]
fn promote_works_on_a_local_file_map() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "map.toml", SAMPLE_MAP);
    let url = format!("file://{file}");
    let out = Command::new(crate::fixture::binary())
        .args([
            "map",
            "promote",
            "--product",
            "videos",
            "--to",
            "db-3",
            "--map",
            &url,
        ])
        .output()
        .expect("promote");
    assert_exit(&out, 0);
    let map = rolecall::rolemap::load(&std::fs::read(&file).expect("map")).expect("valid");
    let db = map.products["videos"].database.clone().expect("database");
    assert_eq!(
        (db.master.as_str(), db.replicas.clone()),
        ("db-3", vec!["db-2".to_string()])
    );
    assert_eq!(map.generation, 42);
}

#[test]
fn prepare_keeps_the_operators_bytes_apart_from_the_generation() {
    let prepared = rolecall::rolemap::prepare::prepare(SAMPLE_MAP, None).expect("valid");
    assert_eq!(
        String::from_utf8(prepared.bytes).expect("utf-8"),
        SAMPLE_MAP.replace("generation = 41 ", "generation = 42 ")
    );
}

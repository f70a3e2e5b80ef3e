//! Issue 12 through the binary against moto: `map publish --rollout` writes the `[rollout]`
//! table (start = now) that `map show` reads waves from; a plain publish and `map promote`
//! drop it; a signed staged map holds a host, and its rollout changed without a new
//! signature is refused (SPEC §9.2: a host takes no rollout decision from unsigned bytes).

use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use crate::fixture::{assert_exit, assert_stdout, describe, SAMPLE_MAP};
use crate::fleet::{map_with, others_putting_cache_1_in_wave_1, Host};
use crate::map_cli::write;
use crate::map_publish::keygen;
use crate::support::s3::Moto;

/// `rolecall ARGS` pointed at moto.
fn run(moto: &Moto, args: &[&str]) -> Output {
    let mut cmd = Command::new(crate::fixture::binary());
    cmd.args(args).envs(moto.agent_env()).env_remove("RUST_LOG");
    cmd.output().expect("running rolecall")
}

/// The map stored in `bucket`, as text.
fn stored(moto: &Moto, bucket: &str) -> String {
    String::from_utf8(moto.get(bucket, "rolemap.toml")).expect("utf-8 map")
}

#[test]
fn publish_writes_the_rollout_and_a_plain_publish_or_a_promote_drops_it() {
    let moto = Moto::shared();
    let bucket = moto.new_bucket(false);
    let url = format!("s3://{bucket}/rolemap.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "map.toml", SAMPLE_MAP);
    staged_publish(moto, &bucket, &file, &url);
    let text = stored(moto, &bucket);
    let out = run(
        moto,
        &["map", "show", &write(dir.path(), "got.toml", &text)],
    );
    assert_stdout(&out, 0, &["WAVE"]);
    let file = write(dir.path(), "map.toml", &text);
    let out = run(moto, &["map", "publish", &file, "--to", &url]);
    assert_stdout(&out, 0, &["the file's [rollout] table is dropped"]);
    assert!(!stored(moto, &bucket).contains("[rollout]"));

    let file = write(dir.path(), "map.toml", &stored(moto, &bucket));
    staged_publish(moto, &bucket, &file, &url);
    let out = run(
        moto,
        &["map", "promote", "--product", "videos", "--map", &url],
    );
    assert_stdout(&out, 0, &["new database master db-2"]);
    let promoted = stored(moto, &bucket);
    assert!(!promoted.contains("[rollout]"), "{promoted}");
    let map = rolecall::rolemap::load(promoted.as_bytes()).expect("valid");
    assert_eq!(map.rollout, None);
}

/// `map publish FILE --rollout 1,10,50,100 --bake 10m --max-failed 2`: the stored map has
/// that table, started between the command's start and end.
fn staged_publish(moto: &Moto, bucket: &str, file: &str, url: &str) {
    let before = SystemTime::now() - Duration::from_secs(1);
    let args = [
        "--rollout",
        "1,10,50,100",
        "--bake",
        "10m",
        "--max-failed",
        "2",
    ];
    let out = run(
        moto,
        &[&["map", "publish", file, "--to", url][..], &args].concat(),
    );
    assert_stdout(&out, 0, &["staged rollout: waves [1, 10, 50, 100]%"]);
    let after = SystemTime::now() + Duration::from_secs(1);
    let map = rolecall::rolemap::load(stored(moto, bucket).as_bytes()).expect("valid map");
    let rollout = map.rollout.expect("[rollout] published");
    assert_eq!(
        (rollout.waves, rollout.bake.as_str(), rollout.max_failed),
        (vec![1, 10, 50, 100], "10m", 2)
    );
    let start = rollout.start.expect("start").to_string();
    let start = humantime::parse_rfc3339(&start).expect("RFC 3339 start");
    assert!(before <= start && start <= after, "start {start:?}");
}

#[test]
fn a_signed_staged_map_holds_and_an_unsigned_change_of_its_rollout_is_refused() {
    let moto = Moto::shared();
    let (mut host, bucket, url) = Host::in_new_bucket(moto, "1h");
    let (key, _) = keygen(host.agent.dir.path());
    let public = host.agent.dir.path().join("fleet.pub");
    let verify = format!("verify_key = \"{}\"", public.display());
    host.agent.setup.map_lines.push(verify);
    host.agent.write_config();
    let publish = |text: &str, extra: &[&str]| {
        let file = write(host.agent.dir.path(), "edit.toml", text);
        let argv = [
            &["map", "publish", &file, "--to", &url, "--sign-key", &key][..],
            extra,
        ];
        assert_exit(&run(moto, &argv.concat()), 0);
    };
    publish(&map_with(0, &[]), &[]);
    assert_exit(&host.command(&["sync"]).output().expect("sync"), 0);
    let conf = host.agent.path("/etc/memcached.conf");
    let applied = std::fs::read(&conf).expect("memcached.conf");
    // Generation 2 puts cache-1 in wave 1, opening in an hour: held on generation 1.
    let others = others_putting_cache_1_in_wave_1(2);
    publish(
        &map_with(1, &others),
        &["--rollout", "50,100", "--bake", "1h"],
    );
    let out = host.command(&["sync"]).output().expect("sync");
    assert_stdout(&out, 0, &["generation 2 held: wave 1 opens"]);
    // Someone shortens the bake in S3 without the key: wave 1 would be open now.
    let text = stored(moto, &bucket);
    assert!(text.contains("bake = \"1h\""), "{text}");
    moto.put(
        &bucket,
        "rolemap.toml",
        text.replace("\"1h\"", "\"1s\"").as_bytes(),
    );
    let out = host.command(&["sync"]).output().expect("sync");
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let status = host.agent.status();
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("signature"), "{status}");
    assert_eq!(status["map"]["generation"], 1, "{status}");
    assert_eq!(std::fs::read(&conf).expect("memcached.conf"), applied);
}

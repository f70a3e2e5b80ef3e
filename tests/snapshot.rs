//! `rolecall snapshot` against a real MariaDB and moto (issue 5): the dump lands in S3,
//! gunzips to SQL that restores into a fresh server with the same rows; retention keeps N;
//! a dump that fails, at the start or mid-stream after parts were uploaded, leaves no
//! object and no unfinished upload.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

use flate2::read::GzDecoder;
use rolecall::render::MapInfo;
use rolecall::source::{Cache, CachedMap};

use crate::fixture::{assert_exit, assert_stderr, assert_stdout, describe, Agent, Setup};
use crate::map_publish::{list_keys, runtime};
use crate::support::mariadb::MariaDb;
use crate::support::s3::Moto;

/// The backup host's agent with the last-good map cached, as a reconcile leaves it.
fn backup_agent(db: &MariaDb, bucket: &str, database: &str) -> Agent {
    let args = format!(
        "mysql_client_args = \"--no-defaults --socket={} --user=root\"",
        db.socket().display()
    );
    let agent = Agent::new(Setup::new("db-4", "127.0.0.4").var(&args));
    let map = format!(
        "schema = 1\ngeneration = 3\n\n[products.videos]\ndomain = \"videos.example.com\"\n\
         docroot = \"/srv/videos\"\n\n[products.videos.database]\nname = \"{database}\"\n\
         master = \"db-1\"\nbackup = \"db-4\"\nbackup_url = \"s3://{bucket}/nightly/videos/\"\n\n\
         [hosts.db-1]\naddress = \"127.0.0.1\"\naz = \"a\"\nroles = [\"db\"]\n\n\
         [hosts.db-4]\naddress = \"127.0.0.4\"\naz = \"b\"\nroles = [\"db\", \"db-backup\"]\n"
    );
    rolecall::rolemap::load(map.as_bytes()).expect("the test map is valid");
    let cached = CachedMap {
        bytes: map.into_bytes(),
        info: MapInfo {
            url: "s3://fleet-config/rolemap.toml".into(),
            etag: Some("\"test\"".into()),
            version: None,
            generation: 3,
        },
    };
    Cache::new(agent.state())
        .store(&cached.bytes, &cached.meta())
        .expect("caching the map");
    agent
}

/// A backup host: a MariaDB server with `rows` rows in `videos` (none: no database), a
/// bucket of its own in the shared moto, and the agent whose cached map backs up
/// `database` to it.
struct Backup {
    moto: &'static Moto,
    bucket: String,
    db: MariaDb,
    agent: Agent,
    _root: tempfile::TempDir,
}

impl Backup {
    fn new(database: &str, rows: u32) -> Backup {
        let moto = Moto::shared();
        let bucket = moto.new_bucket(false);
        let root = tempfile::tempdir().expect("root");
        let db = MariaDb::start(root.path(), "backup");
        if rows > 0 {
            fill(&db, "videos", rows);
        }
        let agent = backup_agent(&db, &bucket, database);
        Backup {
            moto,
            bucket,
            db,
            agent,
            _root: root,
        }
    }

    /// `rolecall snapshot --product videos EXTRA`.
    fn snapshot(&self, extra: &[&str]) -> Output {
        snapshot(&self.agent, self.moto, extra)
    }
}

fn snapshot(agent: &Agent, moto: &Moto, extra: &[&str]) -> Output {
    let mut args = vec!["snapshot", "--product", "videos"];
    args.extend(extra);
    agent
        .command(&args)
        .envs(moto.agent_env())
        .output()
        .expect("running rolecall snapshot")
}

/// Unfinished multipart uploads in `bucket`.
fn open_uploads(moto: &Moto, bucket: &str) -> usize {
    let client = moto.client();
    runtime().block_on(async {
        let listed = client
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .expect("listing uploads");
        listed.uploads().len()
    })
}

fn fill(db: &MariaDb, database: &str, rows: u32) {
    db.query(&format!(
        "CREATE DATABASE {database}; \
         CREATE TABLE {database}.aa_rows (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB; \
         INSERT INTO {database}.aa_rows SELECT seq, SHA2(seq, 512) FROM {database}.seq_1_to_{rows};"
    ));
}

/// Restore `dump` into a fresh server through the real client; the row count there.
fn restore_and_count(dump: &[u8], database: &str) -> String {
    let root = tempfile::tempdir().expect("root for the restore server");
    let fresh = MariaDb::start(root.path(), "restore");
    let mut child = Command::new(crate::support::require_program(
        "mariadb",
        "apt-get install mariadb-client",
    ))
    .arg("--no-defaults")
    .arg(format!("--socket={}", fresh.socket().display()))
    .arg("--user=root")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting the mariadb client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dump)
        .expect("feeding the dump");
    let out = child.wait_with_output().expect("restoring");
    assert!(out.status.success(), "restore failed: {}", describe(&out));
    fresh.query(&format!("SELECT COUNT(*) FROM {database}.aa_rows"))
}

#[test]
fn a_snapshot_lands_in_s3_and_restores_with_the_same_rows() {
    let backup = Backup::new("videos", 3000);
    let (moto, bucket) = (backup.moto, &backup.bucket);
    let out = backup.snapshot(&[]);
    assert_exit(&out, 0);
    let keys = list_keys(moto, bucket, "nightly/videos/");
    assert_eq!(keys.len(), 1, "{keys:?}\n{}", describe(&out));
    let name = keys[0].trim_start_matches("nightly/videos/videos-");
    assert!(
        name.len() == 23 && name.ends_with("Z.sql.gz"),
        "UTC-stamped name: {}",
        keys[0]
    );
    let mut sql = Vec::new();
    GzDecoder::new(&moto.get(bucket, &keys[0])[..])
        .read_to_end(&mut sql)
        .expect("the object is gzip");
    assert!(String::from_utf8_lossy(&sql).contains("-- Dump completed"));
    assert_eq!(restore_and_count(&sql, "videos"), "3000");
    assert_eq!(open_uploads(moto, bucket), 0);
}

#[test]
fn retention_keeps_the_newest_n_of_this_product_only() {
    let backup = Backup::new("videos", 10);
    let (moto, bucket) = (backup.moto, &backup.bucket);
    let old: Vec<String> = (1..=4)
        .map(|d| format!("nightly/videos/videos-2020010{d}T000000Z.sql.gz"))
        .collect();
    let foreign = [
        "nightly/videos/videos-notes.txt",
        "nightly/videos/videos-old-20200101T000000Z.sql.gz",
    ];
    for key in old.iter().map(String::as_str).chain(foreign) {
        moto.put(bucket, key, b"old");
    }
    assert_stdout(
        &backup.snapshot(&["--keep", "3"]),
        0,
        &["2 old snapshot(s) deleted"],
    );
    let keys = list_keys(moto, bucket, "nightly/videos/");
    assert_eq!(keys.len(), 5, "{keys:?}");
    for kept in [&old[2], &old[3]] {
        assert!(keys.contains(kept), "{kept} kept: {keys:?}");
    }
    for gone in [&old[0], &old[1]] {
        assert!(!keys.contains(gone), "{gone} deleted: {keys:?}");
    }
    for key in foreign {
        assert!(keys.iter().any(|k| k == key), "{key} untouched: {keys:?}");
    }
}

#[test]
fn a_dump_that_fails_at_once_leaves_no_object() {
    let backup = Backup::new("no_such_db", 0);
    let (moto, bucket) = (backup.moto, &backup.bucket);
    assert_stderr(&backup.snapshot(&[]), 1, &["no_such_db"]);
    assert_eq!(list_keys(moto, bucket, ""), Vec::<String>::new());
    assert_eq!(open_uploads(moto, bucket), 0);
}

#[test]
fn a_dump_that_fails_mid_stream_after_uploading_parts_leaves_no_object() {
    // Well over one 8 MiB part of gzip before the dump reaches the broken view.
    let backup = Backup::new("videos", 160_000);
    let (moto, bucket) = (backup.moto, &backup.bucket);
    backup.db.query(
        "CREATE TABLE videos.zz_base (a INT); \
         CREATE VIEW videos.zz_view AS SELECT a FROM videos.zz_base; \
         DROP TABLE videos.zz_base;",
    );
    let out = backup.snapshot(&[]);
    assert_stderr(&out, 1, &["zz_view"]);
    let part_path = format!("/{bucket}/nightly/videos/");
    let uploaded = crate::support::wait_until(std::time::Duration::from_secs(30), || {
        moto.request_count("PUT", &part_path, Some(200)) >= 1
    });
    assert!(
        uploaded,
        "a part was uploaded before the failure\n{}",
        describe(&out)
    );
    assert_eq!(list_keys(moto, bucket, ""), Vec::<String>::new());
    assert_eq!(open_uploads(moto, bucket), 0);
}

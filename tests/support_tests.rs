//! Self-tests of the harness in `support/`: each real server starts, answers, and stops;
//! the IMDSv2 test server enforces the session rules and works with aws-config's client.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::apache::Apache;
use crate::support::health::HealthServer;
use crate::support::http;
use crate::support::imds::{ImdsMeta, ImdsServer, TOKEN_HEADER, TOKEN_TTL_HEADER};
use crate::support::mariadb::MariaDb;
use crate::support::notify::NotifySocket;
use crate::support::s3::Moto;
use crate::support::{self, wait_until};

const SHORT: Duration = Duration::from_secs(5);

fn imds_call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Reply {
    http::request(addr, method, path, headers)
        .unwrap_or_else(|err| panic!("{method} {path} on the IMDS test server: {err}"))
}

fn imds_token(addr: SocketAddr, ttl: &str) -> String {
    let reply = imds_call(addr, "PUT", TOKEN_PATH, &[(TOKEN_TTL_HEADER, ttl)]);
    assert_eq!(reply.status, 200, "token PUT with TTL {ttl}");
    assert_eq!(reply.header(TOKEN_TTL_HEADER), Some(ttl), "TTL echoed");
    reply.body
}

const TOKEN_PATH: &str = "/latest/api/token";
const ID_PATH: &str = "/latest/meta-data/instance-id";
const PROXIED: (&str, &str) = ("X-Forwarded-For", "10.0.0.1");

/// (method, path, headers, expected status) against a fresh server.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

fn assert_statuses(addr: SocketAddr, cases: &[Case]) {
    for (method, path, headers, expected) in cases {
        let status = imds_call(addr, method, path, headers).status;
        assert_eq!(status, *expected, "{method} {path} with {headers:?}");
    }
}

#[test]
fn imds_token_put_rules() {
    let server = ImdsServer::start(ImdsMeta::default());
    let ttl = |value| vec![(TOKEN_TTL_HEADER, value)];
    let cases: Vec<Case> = vec![
        ("PUT", TOKEN_PATH, ttl("0"), 400),
        ("PUT", TOKEN_PATH, ttl("21601"), 400),
        ("PUT", TOKEN_PATH, ttl("-5"), 400),
        ("PUT", TOKEN_PATH, ttl("soon"), 400),
        ("PUT", TOKEN_PATH, vec![], 400),
        (
            "PUT",
            TOKEN_PATH,
            vec![(TOKEN_TTL_HEADER, "60"), PROXIED],
            403,
        ),
        ("PUT", "/latest/api/tokens", ttl("60"), 404),
        ("GET", TOKEN_PATH, vec![], 405),
        ("PUT", TOKEN_PATH, ttl("21600"), 200),
    ];
    assert_statuses(server.addr(), &cases);
    assert_eq!(server.token_requests(), 7, "PUTs on the token path");
}

#[test]
fn imds_metadata_needs_a_valid_token() {
    let server = ImdsServer::start(ImdsMeta::default());
    let token = imds_token(server.addr(), "21600");
    let valid = (TOKEN_HEADER, token.as_str());
    let cases: Vec<Case> = vec![
        ("GET", ID_PATH, vec![], 401),
        ("GET", ID_PATH, vec![(TOKEN_HEADER, "forged")], 401),
        ("GET", ID_PATH, vec![valid, PROXIED], 403),
        ("GET", "/latest/meta-data/nothing", vec![valid], 404),
        ("POST", ID_PATH, vec![valid], 405),
        ("GET", ID_PATH, vec![valid], 200),
    ];
    assert_statuses(server.addr(), &cases);
    server.expire_tokens();
    assert_statuses(server.addr(), &[("GET", ID_PATH, vec![valid], 401)]);
    assert_eq!(server.metadata_requests(), 6, "GETs of metadata");
}

#[test]
fn imds_tokens_expire_after_their_ttl() {
    let server = ImdsServer::start(ImdsMeta::default());
    let token = imds_token(server.addr(), "1");
    let with_token = [(TOKEN_HEADER, token.as_str())];
    let status = || imds_call(server.addr(), "GET", ID_PATH, &with_token).status;
    assert_eq!(status(), 200);
    assert!(wait_until(SHORT, || status() == 401), "a 1 s token expires");
    let port = server.addr().port();
    drop(server);
    assert!(refused(port), "the IMDS test server stopped on drop");
}

#[test]
fn imds_serves_every_path_and_the_identity_document() {
    let meta = ImdsMeta::with_instance_id("i-0feedfacecafe0001");
    let server = ImdsServer::start(meta.clone());
    let token = imds_token(server.addr(), "60");
    let get = |path: &str| {
        imds_call(
            server.addr(),
            "GET",
            path,
            &[(TOKEN_HEADER, token.as_str())],
        )
    };
    let expected = [
        ("instance-id", &meta.instance_id),
        ("placement/availability-zone", &meta.availability_zone),
        ("placement/region", &meta.region),
        ("local-ipv4", &meta.local_ipv4),
        ("instance-type", &meta.instance_type),
        ("ami-id", &meta.ami_id),
    ];
    for (path, value) in expected {
        assert_eq!(
            get(&format!("/latest/meta-data/{path}")).body,
            *value,
            "{path}"
        );
    }
    let document = get("/latest/dynamic/instance-identity/document").body;
    let document: serde_json::Value = serde_json::from_str(&document).expect("JSON document");
    assert_eq!(document["instanceId"], "i-0feedfacecafe0001");
    assert_eq!(document["privateIp"], meta.local_ipv4.as_str());
    assert_eq!(document["imageId"], meta.ami_id.as_str());
    server.set_instance_id("i-0000000000000000b");
    assert_eq!(
        get("/latest/meta-data/instance-id").body,
        "i-0000000000000000b"
    );
}

fn sdk_imds_client(server: &ImdsServer) -> aws_config::imds::Client {
    aws_config::imds::Client::builder()
        .endpoint(server.endpoint())
        .expect("a valid endpoint URI")
        .build()
}

#[tokio::test]
async fn imds_works_with_the_aws_config_client() {
    let server = ImdsServer::start(ImdsMeta::default());
    let client = sdk_imds_client(&server);
    let id = client.get("/latest/meta-data/instance-id").await;
    assert_eq!(
        id.expect("instance id over IMDSv2").as_ref(),
        "i-0123456789abcdef0"
    );
    let region = client.get("/latest/meta-data/placement/region").await;
    assert_eq!(region.expect("region").as_ref(), "us-east-1");
    assert_eq!(server.token_requests(), 1, "the SDK caches its token");
    assert_eq!(server.metadata_requests(), 2);

    // A TTL inside the SDK's 120 s refresh margin makes it fetch a token per request: the
    // server issued each one with the TTL asked for and echoed it, or the SDK would fail.
    let short_lived = aws_config::imds::Client::builder()
        .endpoint(server.endpoint())
        .expect("a valid endpoint URI")
        .token_ttl(Duration::from_secs(1))
        .build();
    for _ in 0..2 {
        let id = short_lived.get("/latest/meta-data/instance-id").await;
        assert!(id.is_ok(), "short-lived token: {id:?}");
    }
    assert_eq!(server.token_requests(), 3);
}

#[tokio::test]
async fn imds_faults_reach_the_aws_config_client() {
    let server = ImdsServer::start(ImdsMeta::default());
    server.fail_first(1);
    let client = sdk_imds_client(&server);
    let id = client.get("/latest/meta-data/instance-id").await;
    assert!(id.is_ok(), "the SDK retries a 503: {id:?}");
    let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.first(), Some(&Some(503)));

    server.set_available(false);
    let down = sdk_imds_client(&server)
        .get("/latest/meta-data/instance-id")
        .await;
    assert!(down.is_err(), "unavailable IMDS is an error: {down:?}");
    server.set_available(true);
    let up = sdk_imds_client(&server)
        .get("/latest/meta-data/instance-id")
        .await;
    assert!(up.is_ok(), "available again: {up:?}");
}

#[test]
fn notify_socket_receives_sd_notify_datagrams() {
    let mut socket = NotifySocket::new();
    let sender = UnixDatagram::unbound().expect("unbound datagram socket");
    for message in [
        "STATUS=waiting for role assignment",
        "READY=1\nSTATUS=converged",
    ] {
        sender
            .send_to(message.as_bytes(), socket.path())
            .expect("sending to the notify socket");
    }
    let seen = socket.recv_until(SHORT, |n| n.has("READY", "1"));
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].get("STATUS"), Some("waiting for role assignment"));
    assert_eq!(seen[1].get("STATUS"), Some("converged"));
    let nothing = socket.recv_until(Duration::from_millis(50), |_| true);
    assert!(nothing.is_empty());
    assert_eq!(socket.seen().len(), 2);
}

#[test]
fn health_server_answers_every_site_and_stops_on_drop() {
    let server = HealthServer::start();
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
    for (path, status) in [
        ("/health", 200),
        ("/missing-page", 404),
        ("/.rolecall/site/videos", 410),
    ] {
        let (got, _) = http::get(addr, "videos.example.com", path).expect(path);
        assert_eq!(got, status, "{path}");
    }
    assert!(
        wait_until(SHORT, || server.served() == 3),
        "{}",
        server.served()
    );
    drop(server);
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}

#[test]
fn moto_stores_versions_and_logs_requests() {
    let moto = Moto::shared();
    let bucket = moto.new_bucket(true);
    let (etag1, version1) = moto.put(&bucket, "map.toml", b"generation = 1\n");
    let (etag2, version2) = moto.put(&bucket, "map.toml", b"generation = 2\n");
    assert_ne!(etag1, etag2);
    let (version1, version2) = (version1.expect("versioned"), version2.expect("versioned"));
    assert_ne!(version1, version2, "a versioned bucket keeps versions");
    assert_eq!(moto.get(&bucket, "map.toml"), b"generation = 2\n");
    let plain = moto.new_bucket(false);
    assert_eq!(moto.put(&plain, "map.toml", b"x").1, None);
    let path = format!("/{bucket}/map.toml");
    assert!(moto.wait_requests(("GET", &path, Some(200)), 1, SHORT));
    assert_eq!(moto.request_count("GET", &path, Some(200)), 1);
    assert_eq!(moto.request_count("PUT", &path, None), 2);
}

#[tokio::test]
async fn moto_answers_a_conditional_get_with_304() {
    let moto = Moto::shared();
    let bucket = moto.new_bucket(false);
    let (etag, _) = moto.put(&bucket, "map.toml", b"schema = 1\n");
    let client = moto.client();
    let request = client.get_object().bucket(&bucket).key("map.toml");
    let err = request
        .if_none_match(&etag)
        .send()
        .await
        .expect_err("the SDK reports a 304 as an error");
    let status = err.raw_response().map(|raw| raw.status().as_u16());
    assert_eq!(status, Some(304), "{err:?}");
    let path = format!("/{bucket}/map.toml");
    assert!(moto.wait_requests(("GET", &path, Some(304)), 1, SHORT));
    assert_eq!(moto.request_count("GET", &path, Some(304)), 1);
    assert_eq!(
        moto.request_count("GET", &path, Some(200)),
        0,
        "no body was sent"
    );
}

#[test]
fn private_moto_stops_and_comes_back_with_its_objects() {
    let mut moto = Moto::start_private();
    let bucket = moto.new_bucket(true);
    let (etag, _) = moto.put(&bucket, "map.toml", b"generation = 7\n");
    moto.stop();
    assert!(refused(moto.port()), "stopped: connections refused");
    moto.start();
    assert_eq!(moto.get(&bucket, "map.toml"), b"generation = 7\n");
    assert_eq!(moto.put(&bucket, "map.toml", b"generation = 7\n").0, etag);
}

fn write_vhost(root: &Path, apache: &Apache, name: &str, body: &str) {
    let docroot = root.join("var/www").join(name);
    std::fs::create_dir_all(&docroot).expect("creating a docroot");
    std::fs::write(docroot.join("index.html"), body).expect("writing index.html");
    let vhost = format!(
        "<VirtualHost *:{port}>\n  ServerName {name}\n  DocumentRoot {docroot}\n</VirtualHost>\n",
        port = apache.port(),
        docroot = docroot.display()
    );
    let site = Apache::sites_dir(root).join(format!("{name}.conf"));
    std::fs::write(site, vhost).expect("writing a vhost");
}

/// Runs a service command as the agent does: argv only, with an empty environment.
fn run_argv(argv: &[String]) -> std::process::Output {
    Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .output()
        .unwrap_or_else(|err| panic!("running {argv:?}: {err}"))
}

/// Runs `argv` (a harness command such as a reload) and asserts it succeeded.
#[track_caller]
fn run_argv_ok(argv: &[String]) {
    let out = run_argv(argv);
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        support::describe_output(&out)
    );
}

#[test]
fn apache_serves_vhosts_from_root_and_reloads_gracefully() {
    let root = tempfile::tempdir().expect("temp root");
    let apache = Apache::start(root.path());
    assert_eq!(apache.generation(), 1);
    assert_eq!(apache.get("localhost", "/").0, 200);
    write_vhost(root.path(), &apache, "a.test", "site a\n");
    write_vhost(root.path(), &apache, "b.test", "site b\n");
    run_argv_ok(&apache.check_cmd());
    run_argv_ok(&apache.reload_cmd());
    assert!(
        apache.wait_generation(2, SHORT),
        "{}",
        apache.error_log_tail()
    );
    assert!(wait_until(SHORT, || apache.get("a.test", "/")
        == (200, "site a\n".into())));
    assert_eq!(
        apache.get("b.test", "/index.html"),
        (200, "site b\n".to_string())
    );
    assert_eq!(apache.get("b.test", "/missing.html").0, 404);

    let broken = Apache::sites_dir(root.path()).join("c.test.conf");
    std::fs::write(&broken, "<VirtualHost *:1>\nNoSuchDirective on\n").expect("writing");
    assert!(
        !run_argv(&apache.check_cmd()).status.success(),
        "configtest rejects it"
    );
}

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn apache_restart_cmd_restarts_and_drop_stops_it() {
    let root = tempfile::tempdir().expect("temp root");
    let apache = Apache::start(root.path());
    run_argv_ok(&apache.restart_cmd());
    assert!(
        apache.wait_generation(2, SHORT),
        "{}",
        apache.error_log_tail()
    );
    assert!(wait_until(SHORT, || apache.get("localhost", "/").0 == 200));
    let port = apache.port();
    drop(apache);
    assert!(refused(port), "apache stopped on drop");
}

fn write_cnf(root: &Path, name: &str, text: &str) {
    let path = root.join("etc/mysql/mariadb.conf.d").join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("creating conf.d");
    std::fs::write(path, text).expect("writing a MariaDB config file");
}

/// A MariaDB whose `--root` holds `cnf` as a rendered config file; the server drops first.
fn start_mariadb(name: &str, cnf: &str) -> (MariaDb, tempfile::TempDir) {
    let root = tempfile::tempdir().expect("temp root");
    write_cnf(root.path(), "60-server.cnf", cnf);
    (MariaDb::start(root.path(), name), root)
}

#[test]
fn mariadb_master_and_replica_replicate() {
    let (master, _root) = start_mariadb("master", "[mysqld]\nserver_id = 1\nlog_bin = mysql-bin\n");
    let (replica, _root) = start_mariadb("replica", "[mysqld]\nserver_id = 2\nread_only = 1\n");
    assert_eq!(master.query("SELECT @@server_id, @@log_bin"), "1\t1");
    assert_eq!(replica.query("SELECT @@server_id, @@read_only"), "2\t1");
    master.query(
        "CREATE USER repl@'%' IDENTIFIED BY 'pw'; GRANT REPLICATION SLAVE ON *.* TO repl@'%'",
    );
    replica.query(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', \
         MASTER_PASSWORD='pw', MASTER_USE_GTID=slave_pos; START SLAVE",
        master.port()
    ));
    master.query("CREATE DATABASE app; CREATE TABLE app.t (v INT); INSERT INTO app.t VALUES (42)");
    let replicated = || {
        replica
            .try_query("SELECT v FROM app.t")
            .is_ok_and(|v| v == "42")
    };
    let within = Duration::from_secs(20);
    assert!(
        wait_until(within, replicated),
        "{}",
        replica.error_log_tail()
    );
    let port = master.port();
    drop(master);
    assert!(refused(port), "mariadb stopped on drop");
}

#[test]
fn mariadb_restart_cmd_applies_the_rendered_config() {
    let (server, root) = start_mariadb("db", "[mysqld]\nmax_connections = 50\n");
    assert_eq!(server.query("SELECT @@max_connections"), "50");
    write_cnf(
        root.path(),
        "60-server.cnf",
        "[mysqld]\nmax_connections = 77\n",
    );
    run_argv_ok(&server.restart_cmd());
    assert_eq!(server.query("SELECT @@max_connections"), "77");

    write_cnf(
        root.path(),
        "70-broken.cnf",
        "[mysqld]\nno_such_option = 1\n",
    );
    let failed = run_argv(&server.restart_cmd());
    assert!(
        !failed.status.success(),
        "a server that does not come back fails the restart"
    );
    assert!(String::from_utf8_lossy(&failed.stdout).contains("mariadb db: error"));
}

#[test]
fn command_lines_split_back_into_their_argv() {
    let argv = [
        "/usr/sbin/apache2",
        "-f",
        "/tmp/a b/it's.conf",
        "-k",
        "graceful",
        "",
    ];
    let line = support::command_line(&argv);
    assert_eq!(shell_words::split(&line).expect("valid shell words"), argv);
}

#[test]
#[should_panic(expected = "no-such-server-program not found: apt-get install it")]
fn a_missing_program_fails_with_its_install_hint() {
    support::require_program("no-such-server-program", "apt-get install it");
}

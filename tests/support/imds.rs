//! IMDSv2 test server (SPEC §8): a real HTTP/1.1 server on 127.0.0.1 that enforces the
//! IMDSv2 session rules as EC2 does (token PUT with a TTL header, 401 without a valid
//! token, token expiry, `X-Forwarded-For` refused) and serves the metadata paths rolecall
//! reads. std threads only; knobs inject the faults the daemon tests need.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::BufReader;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{self, Request, Response};

/// Header carrying the requested token lifetime on `PUT /latest/api/token` (and echoed back).
pub const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
/// Header carrying the session token on metadata requests.
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Longest token lifetime EC2 grants (6 hours).
pub const MAX_TOKEN_TTL_SECONDS: u64 = 21_600;
const TOKEN_PATH: &str = "/latest/api/token";

/// The instance the server describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsMeta {
    /// `meta-data/instance-id`.
    pub instance_id: String,
    /// `meta-data/placement/availability-zone`.
    pub availability_zone: String,
    /// `meta-data/placement/region`.
    pub region: String,
    /// `meta-data/local-ipv4`.
    pub local_ipv4: String,
    /// `meta-data/instance-type`.
    pub instance_type: String,
    /// `meta-data/ami-id`.
    pub ami_id: String,
}

impl Default for ImdsMeta {
    fn default() -> Self {
        Self {
            instance_id: "i-0123456789abcdef0".to_string(),
            availability_zone: "us-east-1a".to_string(),
            region: "us-east-1".to_string(),
            local_ipv4: "10.0.1.10".to_string(),
            instance_type: "t3.micro".to_string(),
            ami_id: "ami-0abcdef1234567890".to_string(),
        }
    }
}

impl ImdsMeta {
    /// The default instance with another id.
    pub fn with_instance_id(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_string(),
            ..Self::default()
        }
    }

    /// `dynamic/instance-identity/document`, as EC2 formats it.
    pub fn identity_document(&self) -> String {
        let document = serde_json::json!({
            "accountId": "123456789012",
            "architecture": "x86_64",
            "availabilityZone": self.availability_zone,
            "imageId": self.ami_id,
            "instanceId": self.instance_id,
            "instanceType": self.instance_type,
            "pendingTime": "2024-01-01T00:00:00Z",
            "privateIp": self.local_ipv4,
            "region": self.region,
            "version": "2017-09-30",
        });
        serde_json::to_string_pretty(&document).expect("a JSON value serialises")
    }

    fn lookup(&self, path: &str) -> Option<String> {
        let value = match path {
            "/latest/meta-data/" => "ami-id\ninstance-id\ninstance-type\nlocal-ipv4\nplacement/",
            "/latest/meta-data/placement/" => "availability-zone\nregion",
            "/latest/meta-data/instance-id" => &self.instance_id,
            "/latest/meta-data/placement/availability-zone" => &self.availability_zone,
            "/latest/meta-data/placement/region" => &self.region,
            "/latest/meta-data/local-ipv4" => &self.local_ipv4,
            "/latest/meta-data/instance-type" => &self.instance_type,
            "/latest/meta-data/ami-id" => &self.ami_id,
            "/latest/dynamic/instance-identity/document" => return Some(self.identity_document()),
            _ => return None,
        };
        Some(value.to_string())
    }
}

/// One request the server received, and how it answered (`None`: connection dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsRequest {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Status sent, or `None` when the server was unavailable and dropped the connection.
    pub status: Option<u16>,
}

/// A running IMDSv2 test server; stops (and closes every connection) on drop.
pub struct ImdsServer {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    meta: Mutex<ImdsMeta>,
    /// Token → expiry.
    tokens: Mutex<HashMap<String, Instant>>,
    unavailable: AtomicBool,
    failures_left: AtomicU32,
    token_puts: AtomicU32,
    metadata_gets: AtomicU32,
    log: Mutex<Vec<ImdsRequest>>,
    stopping: AtomicBool,
    /// Open connections by id, so that drop and `set_available(false)` can cut them.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler thread must not hide the server state from the test.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ImdsServer {
    /// Starts a server describing `meta` on a random port of 127.0.0.1.
    pub fn start(meta: ImdsMeta) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the IMDS test server");
        let addr = listener.local_addr().expect("IMDS listener address");
        let state = Arc::new(State {
            meta: Mutex::new(meta),
            ..State::default()
        });
        let acceptor = {
            let state = Arc::clone(&state);
            std::thread::spawn(move || accept_loop(&listener, &state))
        };
        Self {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the value for `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Environment that points the agent (through aws-config) at this server.
    pub fn agent_env(&self) -> Vec<(String, String)> {
        vec![(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_string(),
            self.endpoint(),
        )]
    }

    /// While unavailable, every connection is closed without an answer (as when the metadata
    /// service is not reachable yet at boot); open keep-alive connections are cut at once.
    pub fn set_available(&self, available: bool) {
        self.state.unavailable.store(!available, Ordering::SeqCst);
        if !available {
            self.state.cut_connections();
        }
    }

    /// Answers the next `count` requests with 503.
    pub fn fail_first(&self, count: u32) {
        self.state.failures_left.store(count, Ordering::SeqCst);
    }

    /// Changes the instance id served from now on.
    pub fn set_instance_id(&self, instance_id: &str) {
        lock(&self.state.meta).instance_id = instance_id.to_string();
    }

    /// Replaces the whole instance description.
    pub fn set_meta(&self, meta: ImdsMeta) {
        *lock(&self.state.meta) = meta;
    }

    /// Invalidates every token issued so far: the next request with one gets 401. Note
    /// that aws-config's client keeps using its cached token until the TTL it asked for
    /// (minus 120 s) has passed, so it sees 401s until then.
    pub fn expire_tokens(&self) {
        lock(&self.state.tokens).clear();
    }

    /// `PUT /latest/api/token` requests received (answered or not).
    pub fn token_requests(&self) -> u32 {
        self.state.token_puts.load(Ordering::SeqCst)
    }

    /// `GET` requests received for anything but the token path.
    pub fn metadata_requests(&self) -> u32 {
        self.state.metadata_gets.load(Ordering::SeqCst)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ImdsRequest> {
        lock(&self.state.log).clone()
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        self.state.cut_connections();
        // Wake the acceptor blocked in accept(); it sees `stopping` and returns.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<State>) {
    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        handlers.retain(|handler| !handler.is_finished());
        let state = Arc::clone(state);
        handlers.push(std::thread::spawn(move || serve_connection(stream, &state)));
    }
    for handler in handlers {
        let _ = handler.join();
    }
}

fn serve_connection(stream: TcpStream, state: &State) {
    let Some(id) = state.register(&stream) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut writer = stream;
    let Ok(reader) = writer.try_clone() else {
        state.forget(id);
        return;
    };
    let mut reader = BufReader::new(reader);
    while let Ok(Some(request)) = http::read_request(&mut reader) {
        let response = state.respond(&request);
        state.record(&request, response.as_ref().map(|r| r.status));
        let Some(response) = response else { break };
        let close = request.wants_close();
        if http::write_response(&mut writer, &response, close).is_err() || close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
    state.forget(id);
}

impl State {
    /// Tracks a connection; `None` when the server should not serve it at all.
    fn register(&self, stream: &TcpStream) -> Option<u64> {
        if self.stopping.load(Ordering::SeqCst) || self.unavailable.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let clone = stream.try_clone().ok()?;
        lock(&self.connections).insert(id, clone);
        Some(id)
    }

    fn forget(&self, id: u64) {
        lock(&self.connections).remove(&id);
    }

    fn cut_connections(&self) {
        for stream in lock(&self.connections).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn record(&self, request: &Request, status: Option<u16>) {
        lock(&self.log).push(ImdsRequest {
            method: request.method.clone(),
            path: request.path.clone(),
            status,
        });
    }

    /// The answer to `request`, or `None` to drop the connection without one.
    fn respond(&self, request: &Request) -> Option<Response> {
        if self.unavailable.load(Ordering::SeqCst) {
            return None;
        }
        let is_token_path = request.path == TOKEN_PATH;
        match request.method.as_str() {
            "PUT" if is_token_path => self.token_puts.fetch_add(1, Ordering::SeqCst),
            "GET" if !is_token_path => self.metadata_gets.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        // EC2 refuses anything that went through a proxy, so that a misconfigured proxy on
        // the instance cannot leak credentials to others.
        if request.header("x-forwarded-for").is_some() {
            return Some(Response::text(403, "Forbidden"));
        }
        if self.take_failure() {
            return Some(Response::text(503, "Service Unavailable"));
        }
        Some(match (request.method.as_str(), is_token_path) {
            ("PUT", true) => self.issue_token(request),
            ("PUT", false) => Response::text(404, "Not Found"),
            ("GET", true) => Response::text(405, "Method Not Allowed"),
            ("GET", false) => self.metadata(request),
            _ => Response::text(405, "Method Not Allowed"),
        })
    }

    fn take_failure(&self) -> bool {
        self.failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    fn issue_token(&self, request: &Request) -> Response {
        let ttl = request
            .header(TOKEN_TTL_HEADER)
            .and_then(|value| value.trim().parse::<u64>().ok())
            .filter(|ttl| (1..=MAX_TOKEN_TTL_SECONDS).contains(ttl));
        let Some(ttl) = ttl else {
            return Response::text(400, "Bad Request");
        };
        let token = self.new_token();
        let expiry = Instant::now() + Duration::from_secs(ttl);
        lock(&self.tokens).insert(token.clone(), expiry);
        Response::text(200, token).with_header(TOKEN_TTL_HEADER, ttl)
    }

    fn new_token(&self) -> String {
        let serial = self.next_id.fetch_add(1, Ordering::SeqCst);
        let random = std::collections::hash_map::RandomState::new();
        format!(
            "AQAEA{:016x}{:016x}==",
            random.hash_one(serial),
            random.hash_one(Instant::now())
        )
    }

    fn metadata(&self, request: &Request) -> Response {
        if !self.token_valid(request.header(TOKEN_HEADER)) {
            return Response::text(401, "Unauthorized");
        }
        match lock(&self.meta).lookup(&request.path) {
            Some(body) => Response::text(200, body),
            None => Response::text(404, "Not Found"),
        }
    }

    fn token_valid(&self, token: Option<&str>) -> bool {
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, expiry| *expiry > now);
        token.is_some_and(|token| tokens.contains_key(token))
    }
}

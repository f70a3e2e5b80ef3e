//! One local web server standing in for every host's sites in the fleet tests and benchmark
//! (issue 12): agents' web smoke tests (`http://127.0.0.1:PORT/<health_path>` with a Host
//! header) get 200, except paths containing `missing`, which get 404: a product whose health
//! page is missing. Every site's marker (`/.rolecall/site/<product>`, the smoke test's
//! `site_marker`) gets the 410 its own virtual host gives: this one server is every site.
//! One thread per connection, each closed after its answer.

use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::http::{self, Response};

/// The server; stopped on drop.
pub struct HealthServer {
    port: u16,
    stopping: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    acceptor: Option<JoinHandle<()>>,
}

impl HealthServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> HealthServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the health server");
        let port = listener.local_addr().expect("address").port();
        let stopping = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let acceptor = {
            let (stopping, served) = (Arc::clone(&stopping), Arc::clone(&served));
            std::thread::spawn(move || accept(&listener, &stopping, &served))
        };
        HealthServer {
            port,
            stopping,
            served,
            acceptor: Some(acceptor),
        }
    }

    /// The port, for the agents' `vars.http_port`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(listener: &TcpListener, stopping: &AtomicBool, served: &Arc<AtomicU64>) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let served = Arc::clone(served);
        std::thread::spawn(move || answer(stream, &served));
    }
}

fn answer(stream: TcpStream, served: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let Ok(Some(request)) = http::read_request(&mut BufReader::new(reader)) else {
        return;
    };
    let response = if request.path.starts_with("/.rolecall/site/") {
        Response::text(410, "this site's own virtual host\n")
    } else if request.path.contains("missing") {
        Response::text(404, "no health page here\n")
    } else {
        Response::text(200, "ok\n")
    };
    served.fetch_add(1, Ordering::SeqCst);
    let mut writer = stream;
    let _ = http::write_response(&mut writer, &response, true);
}

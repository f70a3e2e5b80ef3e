//! One local web server standing in for every host's sites in the fleet tests and benchmark
//! (issue 12): agents' web smoke tests (`http://127.0.0.1:PORT/<health_path>` with a Host
//! header) get 200, except paths containing `missing`, which get 404: a product whose health
//! page is missing. Every site's marker (`/.rolecall/site/<product>`, the smoke test's
//! `site_marker`) gets the 410 its own virtual host gives: this one server is every site.
//! One thread per connection, each closed after its answer.

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::acceptor::Acceptor;
use super::http::{self, Response};

/// The server; stopped on drop.
pub struct HealthServer {
    acceptor: Acceptor,
    served: Arc<AtomicU64>,
}

impl HealthServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> HealthServer {
        let served = Arc::new(AtomicU64::new(0));
        let acceptor = {
            let served = Arc::clone(&served);
            Acceptor::start("binding the health server", move |stream| {
                let served = Arc::clone(&served);
                std::thread::spawn(move || answer(stream, &served));
            })
        };
        HealthServer { acceptor, served }
    }

    /// The port, for the agents' `vars.http_port`.
    pub fn port(&self) -> u16 {
        self.acceptor.port()
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
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

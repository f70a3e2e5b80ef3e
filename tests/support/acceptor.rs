//! A thread that accepts connections on a free port of 127.0.0.1 and hands each to a
//! closure, until dropped: the stand-in servers of the harness (the fleet's health server,
//! MariaDB's restart supervisor) are each one of these plus what they answer.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The accepting thread; stopped and joined on drop.
pub struct Acceptor {
    port: u16,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Binds a free port of 127.0.0.1 (panicking with `binding` when it cannot) and calls
    /// `serve` on the accepting thread for each connection.
    pub fn start(binding: &str, mut serve: impl FnMut(TcpStream) + Send + 'static) -> Acceptor {
        let listener = TcpListener::bind("127.0.0.1:0").expect(binding);
        let port = listener.local_addr().expect("listener address").port();
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let stopping = Arc::clone(&stopping);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve(stream);
                    }
                }
            })
        };
        Acceptor {
            port,
            stopping,
            thread: Some(thread),
        }
    }

    /// The port it accepts on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the thread blocked in accept(); it sees `stopping` and returns.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

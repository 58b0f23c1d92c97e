//! A TCP forwarder whose link a test cuts and restores, and the PostgreSQL URL surgery to
//! put it between a service and its database.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A TCP forwarder whose link can be cut and restored: a database or service "outage"
/// without touching the server behind it. Plain threads, so it needs no runtime.
pub struct TcpProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    pub fn start(target: SocketAddr) -> io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (accept_up, accept_open) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !accept_up.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let Ok(mut open) = accept_open.lock() {
                    open.extend(client.try_clone().ok());
                    open.extend(server.try_clone().ok());
                }
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(server2, client2));
            }
        });
        Ok(TcpProxy { addr, up, open })
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            for stream in open.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Where `host:port` sits in a PostgreSQL URL.
fn host_span(url: &str) -> (usize, usize) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    let start = url[after_scheme..end]
        .rfind('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    (start, end)
}

/// The same PostgreSQL URL with its host and port replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (start, end) = host_span(url);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

/// The server address of a PostgreSQL URL (port 5432 when none is given).
pub fn server_addr(url: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let (start, end) = host_span(url);
    let host = &url[start..end];
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    host.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    #[test]
    fn via_replaces_host_and_port_only() {
        let addr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(
            super::via("postgres://u@h:5432/db", addr),
            "postgres://u@127.0.0.1:9/db"
        );
        assert_eq!(
            super::via("postgres://h/db?x=1", addr),
            "postgres://127.0.0.1:9/db?x=1"
        );
    }
}

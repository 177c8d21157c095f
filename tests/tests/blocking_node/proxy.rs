//! A TCP proxy for the polling-fallback scenario: plain HTTP gets through, WebSockets do not.

use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(8);

/// A TCP proxy to `target` that drops every WebSocket upgrade (`GET /hubs/node...`) and
/// forwards everything else: a network where only plain HTTP gets through.
pub fn no_websocket_proxy(target: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("a proxy port");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = client.set_read_timeout(Some(LIMIT));
                let client = client;
                let mut head = [0u8; 16];
                let mut seen = 0;
                while seen < head.len() {
                    match client.peek(&mut head) {
                        Ok(0) | Err(_) => return,
                        Ok(n) if n == seen => std::thread::sleep(Duration::from_millis(5)),
                        Ok(n) => seen = n,
                    }
                }
                let mut client = client;
                if head.starts_with(b"GET /hubs/node") {
                    // Dropped like a firewall would (a 401/403 would read as a refused token).
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
                let _ = client.set_read_timeout(None);
                let Ok(upstream) = TcpStream::connect(target) else {
                    return;
                };
                let (Ok(mut client_r), Ok(mut upstream_w)) =
                    (client.try_clone(), upstream.try_clone())
                else {
                    return;
                };
                let mut upstream_r = upstream;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_r, &mut upstream_w);
                    let _ = upstream_w.shutdown(Shutdown::Write);
                });
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match upstream_r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if client.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = client.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

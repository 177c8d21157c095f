//! Dialing a WebSocket: the upgrade request from the machine's URL, and the blocking resolve +
//! TCP connect that runs on a helper thread (the loop takes the socket from there).

use std::net::ToSocketAddrs;
use std::time::Duration;

use nodelink_core::wire::rest::NodeToken;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;

/// The upgrade request (with the bearer token), and where to connect.
pub(crate) fn request_for(
    url: &str,
    bearer: Option<&NodeToken>,
) -> Result<(Request, String, u16, bool), String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("bad WebSocket URL: {e}"))?;
    if let Some(token) = bearer {
        let value = token
            .bearer()
            .parse()
            .map_err(|_| "the token cannot travel in a header".to_string())?;
        request.headers_mut().insert("Authorization", value);
    }
    let uri = request.uri();
    let tls = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        other => return Err(format!("not a WebSocket URL scheme: {other:?}")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("no host in {url}"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((request, host, port, tls))
}

/// Resolves and connects (blocking: runs on a helper thread), trying each address in turn.
pub(crate) fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<std::net::TcpStream, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?;
    let mut last = format!("{host} has no address");
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last)
}

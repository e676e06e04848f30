//! The HTTP side of a server (`--http ADDR`): `/` (the manager's live
//! page), `/api/status` (JSON) and `/metrics` (Prometheus text). It runs on
//! its own thread with tiny_http and serves what the event loop last
//! published (about once a second), so a slow scraper never touches the
//! binary protocol's loop. With a secret, every request needs HTTP basic
//! auth with the secret as password (any user name).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;

use log::{debug, warn};
use tiny_http::{Header, Response, Server};

use crate::net::auth::Secret;

/// What the event loop publishes for the HTTP thread.
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub status_json: String,
    pub metrics: String,
}

pub type Shared = Arc<Mutex<Published>>;

/// The manager's page: self-contained HTML, CSS and JS.
pub const MONITOR_PAGE: &str = include_str!("monitor.html");

/// Decodes standard base64 (for the Authorization header only).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn authorized(request: &tiny_http::Request, secret: &Secret) -> bool {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Basic ").map(str::to_owned))
        .and_then(|b64| base64_decode(b64.trim()))
        .and_then(|raw| {
            let colon = raw.iter().position(|b| *b == b':')?;
            Some(secret.matches(&raw[colon + 1..]))
        })
        .unwrap_or(false)
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header")
}

/// Binds `addr` and serves on a new thread; returns the bound address.
pub fn serve(
    addr: SocketAddr,
    shared: Shared,
    secret: Option<Arc<Secret>>,
    page: Option<&'static str>,
) -> io::Result<SocketAddr> {
    let server = Server::http(addr)
        .map_err(|e| io::Error::other(format!("cannot serve HTTP on {addr}: {e}")))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| io::Error::other("HTTP server has no IP address"))?;
    thread::Builder::new().name("http".into()).spawn(move || {
        for request in server.incoming_requests() {
            let peer = request.remote_addr().copied();
            if let Some(secret) = &secret {
                if !authorized(&request, secret) {
                    debug!("http {peer:?}: {} without the password", request.url());
                    let response = Response::from_string("authentication required\n")
                        .with_status_code(401)
                        .with_header(header("WWW-Authenticate", "Basic realm=\"redmap\""));
                    let _ = request.respond(response);
                    continue;
                }
            }
            let published = shared.lock().map(|p| p.clone()).unwrap_or_default();
            let path = request.url().split('?').next().unwrap_or("/").to_owned();
            let response = match (path.as_str(), page) {
                ("/", Some(html)) => Response::from_string(html)
                    .with_header(header("Content-Type", "text/html; charset=utf-8")),
                ("/api/status", _) => Response::from_string(published.status_json)
                    .with_header(header("Content-Type", "application/json")),
                ("/metrics", _) => Response::from_string(published.metrics)
                    .with_header(header("Content-Type", "text/plain; version=0.0.4")),
                _ => Response::from_string("not found\n").with_status_code(404),
            };
            if let Err(e) = request.respond(response) {
                warn!("http {peer:?}: {e}");
            }
        }
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_basic_auth_base64() {
        assert_eq!(base64_decode("dXNlcjpzM2NyZXQ=").unwrap(), b"user:s3cret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("a*b").is_none());
    }
}

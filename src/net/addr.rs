//! Addresses as users type them, in the original's forms: `HOST:PORT`
//! (a name or an IP; IPv6 in brackets) and `:PORT`, which means every
//! interface when listening and this machine when dialing, as in Go.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError {
    pub input: String,
    pub reason: String,
    /// The name could not be looked up (the name service may answer
    /// later), as opposed to an address that can never be valid.
    pub lookup_failed: bool,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address '{}': {} (expected HOST:PORT or :PORT)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for AddrError {}

fn resolve(input: &str, host: &str, port: &str) -> Result<Vec<SocketAddr>, AddrError> {
    let err = |reason: String| AddrError {
        input: input.to_owned(),
        reason,
        lookup_failed: false,
    };
    let port: u16 = port
        .parse()
        .map_err(|_| err(format!("'{port}' is not a port number (0-65535)")))?;
    let host = unbracket(host);
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| AddrError {
            lookup_failed: true,
            ..err(format!("cannot resolve '{host}': {e}"))
        })?
        .collect();
    if addrs.is_empty() {
        return Err(err(format!("'{host}' resolves to no address")));
    }
    Ok(addrs)
}

/// An IPv6 host without its brackets (`[::1]` -> `::1`).
fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn split(input: &str) -> Result<(&str, &str), AddrError> {
    input.rsplit_once(':').ok_or_else(|| AddrError {
        input: input.to_owned(),
        reason: "missing ':PORT'".to_owned(),
        lookup_failed: false,
    })
}

/// The address to bind for `ADDR`; `:PORT` binds every IPv4 interface.
pub fn listen_addr(input: &str) -> Result<SocketAddr, AddrError> {
    let (host, port) = split(input)?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(resolve(input, host, port)?[0])
}

/// True when dialing `ADDR` means asking a name service, which may take
/// seconds: the host is a name, not an IP address. A malformed address
/// needs no lookup (it fails at once).
pub fn needs_lookup(input: &str) -> bool {
    let Ok((host, port)) = split(input) else {
        return false;
    };
    let host = unbracket(host);
    port.parse::<u16>().is_ok() && !host.is_empty() && host.parse::<std::net::IpAddr>().is_err()
}

/// The addresses to try, in order, when dialing `ADDR`; `:PORT` dials this machine.
pub fn dial_addrs(input: &str) -> Result<Vec<SocketAddr>, AddrError> {
    let (host, port) = split(input)?;
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    resolve(input, host, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_port_means_all_interfaces_or_this_machine() {
        assert_eq!(listen_addr(":9876").unwrap().to_string(), "0.0.0.0:9876");
        assert_eq!(
            dial_addrs(":9876").unwrap()[0].to_string(),
            "127.0.0.1:9876"
        );
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            listen_addr("127.0.0.1:0").unwrap().to_string(),
            "127.0.0.1:0"
        );
        assert_eq!(dial_addrs("[::1]:80").unwrap()[0].to_string(), "[::1]:80");
        assert!(dial_addrs("localhost:80").is_ok());
    }

    #[test]
    fn only_names_need_a_lookup() {
        assert!(needs_lookup("worker-3.example:9876"));
        assert!(needs_lookup("localhost:9876"));
        for literal in [
            "10.0.0.7:9876",
            "[::1]:9876",
            ":9876",
            "9876",
            "host:notaport",
        ] {
            assert!(!needs_lookup(literal), "{literal}");
        }
    }

    #[test]
    fn bad_forms_say_why() {
        assert!(listen_addr("9876")
            .unwrap_err()
            .to_string()
            .contains("missing ':PORT'"));
        assert!(listen_addr(":99999")
            .unwrap_err()
            .to_string()
            .contains("not a port"));
    }
}

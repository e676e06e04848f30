//! Authentication: an HMAC-SHA256 challenge–response with a fresh random
//! nonce from each side, at the start of every binary connection when the
//! cluster has a secret.
//!
//! ```text
//! client → server  HELLO      client nonce (32 bytes)
//! server → client  CHALLENGE  server nonce (32), server proof (32)
//! client → server  AUTH       client proof (32)
//! server → client  AUTH_OK
//!
//! server proof = HMAC-SHA256(secret, "redmap-v1-server" ‖ client nonce ‖ server nonce)
//! client proof = HMAC-SHA256(secret, "redmap-v1-client" ‖ client nonce ‖ server nonce)
//! ```
//!
//! Each side proves it knows the secret over the other side's fresh nonce,
//! so a recorded handshake cannot be replayed, and a client never sends a
//! job to a server that does not know the secret. Proofs are compared in
//! constant time (hmac's `verify_slice`). Only the RustCrypto crates do
//! cryptography here.

use std::fmt;
use std::io;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::conn::{AuthState, Conn};
use crate::proto::msg::Challenge;
use crate::proto::{ErrorCode, Message};

pub const NONCE_LEN: usize = 32;
pub const PROOF_LEN: usize = 32;

const SERVER_LABEL: &[u8] = b"redmap-v1-server";
const CLIENT_LABEL: &[u8] = b"redmap-v1-client";

/// The cluster's shared secret. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The secret from its source's bytes, by the one rule for both
    /// sources (a file and the environment): trailing CR and LF bytes are
    /// removed, as `echo s3cret > file`, an editor or `$(cat file)` leave
    /// different line ends that must not make two keys; nothing else is
    /// changed, and the HMAC key is exactly the bytes left. Empty is
    /// refused: running without a secret must be a choice, never a typo.
    pub fn new(mut bytes: Vec<u8>) -> Result<Secret, String> {
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err("the secret is empty (line breaks at its end do not count)".into());
        }
        Ok(Secret(bytes))
    }

    /// From `--secret-file PATH`, else the `REDMAP_SECRET` environment
    /// variable (its bytes as the OS has them, not re-encoded), else none.
    pub fn load(file: Option<&Path>) -> Result<Option<Secret>, String> {
        if let Some(path) = file {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
            return Secret::new(bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        match std::env::var_os("REDMAP_SECRET") {
            Some(v) => Secret::new(std::os::unix::ffi::OsStringExt::into_vec(v))
                .map(Some)
                .map_err(|e| format!("REDMAP_SECRET is set, but {e}; unset it to run without one")),
            None => Ok(None),
        }
    }

    /// Whether `candidate` is the secret, compared in constant time (for
    /// the HTTP password).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        // Compare MACs of both under a fixed key: equal-length outputs, so
        // the comparison time says nothing about the secret.
        let tag = |bytes: &[u8]| {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"redmap-http-password")
                .expect("HMAC takes keys of any length");
            mac.update(bytes);
            mac
        };
        let expected = tag(&self.0).finalize().into_bytes();
        tag(candidate).verify_slice(&expected).is_ok()
    }

    fn mac(&self, label: &[u8], client_nonce: &[u8], server_nonce: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(label);
        mac.update(client_nonce);
        mac.update(server_nonce);
        mac
    }

    pub fn server_proof(&self, client_nonce: &[u8], server_nonce: &[u8]) -> [u8; PROOF_LEN] {
        self.mac(SERVER_LABEL, client_nonce, server_nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    pub fn client_proof(&self, client_nonce: &[u8], server_nonce: &[u8]) -> [u8; PROOF_LEN] {
        self.mac(CLIENT_LABEL, client_nonce, server_nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks a server's proof, in constant time.
    pub fn verify_server(&self, client_nonce: &[u8], server_nonce: &[u8], proof: &[u8]) -> bool {
        self.mac(SERVER_LABEL, client_nonce, server_nonce)
            .verify_slice(proof)
            .is_ok()
    }

    /// Checks a client's proof, in constant time.
    pub fn verify_client(&self, client_nonce: &[u8], server_nonce: &[u8], proof: &[u8]) -> bool {
        self.mac(CLIENT_LABEL, client_nonce, server_nonce)
            .verify_slice(proof)
            .is_ok()
    }
}

/// A fresh nonce from the operating system's random source.
pub fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(n)
}

/// What the handshake made of one incoming message.
pub enum Step {
    /// Not a handshake message, and the connection may pass it on.
    Pass(Message),
    /// Handled here.
    Consumed,
    /// The handshake failed; the reason is safe to show the peer.
    Failed(String),
}

const NEED_SECRET: &str = "authentication failed: this server requires the cluster's secret \
                           (--secret-file PATH or REDMAP_SECRET)";

/// Advances `conn`'s handshake with `msg`. `secret` is this side's.
pub fn step(conn: &mut Conn, secret: Option<&Secret>, request_id: u32, msg: Message) -> Step {
    let state = std::mem::replace(&mut conn.auth, AuthState::Done);
    match (state, msg, secret) {
        (AuthState::Done, m, _) => Step::Pass(m),
        (AuthState::Open, Message::Hello(_), _) => {
            conn.auth = AuthState::Open;
            Step::Failed(
                "authentication failed: this server has no secret set; give it the same secret \
                 or run the client without one"
                    .into(),
            )
        }
        (AuthState::Open, m, _) => {
            conn.auth = AuthState::Open;
            Step::Pass(m)
        }
        (AuthState::AwaitHello { deadline }, Message::Hello(client_nonce), Some(secret)) => {
            let Ok(server_nonce) = nonce() else {
                return Step::Failed("authentication failed: no randomness on the server".into());
            };
            let proof = secret.server_proof(&client_nonce, &server_nonce);
            conn.queue_handshake(
                request_id,
                &Message::Challenge(Challenge {
                    nonce: server_nonce,
                    proof,
                }),
            );
            conn.auth = AuthState::AwaitAuth {
                client_nonce,
                server_nonce,
                deadline,
            };
            Step::Consumed
        }
        (
            AuthState::AwaitAuth {
                client_nonce,
                server_nonce,
                ..
            },
            Message::Auth(proof),
            Some(secret),
        ) => {
            if secret.verify_client(&client_nonce, &server_nonce, &proof) {
                conn.queue_handshake(request_id, &Message::AuthOk);
                Step::Consumed
            } else {
                Step::Failed("authentication failed: wrong secret".into())
            }
        }
        (AuthState::AwaitHello { .. } | AuthState::AwaitAuth { .. }, _, _) => {
            Step::Failed(NEED_SECRET.into())
        }
        (AuthState::AwaitChallenge { client_nonce, held }, Message::Challenge(c), Some(secret)) => {
            if !secret.verify_server(&client_nonce, &c.nonce, &c.proof) {
                return Step::Failed(
                    "authentication failed: the server does not know the cluster's secret".into(),
                );
            }
            conn.auth = AuthState::AwaitChallenge { client_nonce, held };
            conn.queue_handshake(
                request_id.wrapping_add(1),
                &Message::Auth(secret.client_proof(&client_nonce, &c.nonce)),
            );
            conn.release_held();
            conn.auth = AuthState::AwaitOk;
            Step::Consumed
        }
        (AuthState::AwaitChallenge { .. } | AuthState::AwaitOk, Message::Error(e), _)
            if e.code == ErrorCode::AUTH_FAILED || e.code.closes() =>
        {
            Step::Failed(e.message)
        }
        (AuthState::AwaitChallenge { .. }, other, _) => Step::Failed(format!(
            "authentication failed: the server answered {} to HELLO",
            other.opcode()
        )),
        (AuthState::AwaitOk, Message::AuthOk, _) => Step::Consumed,
        (AuthState::AwaitOk, m, _) => Step::Pass(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_secret_and_nonces() {
        let s = Secret::new(b"s3cret".to_vec()).unwrap();
        let (c, n) = ([1u8; 32], [2u8; 32]);
        let p = s.client_proof(&c, &n);
        assert!(s.verify_client(&c, &n, &p));
        assert!(!s.verify_client(&c, &[3u8; 32], &p), "another server nonce");
        assert!(!s.verify_server(&c, &n, &p), "labels differ");
        let other = Secret::new(b"other".to_vec()).unwrap();
        assert!(!other.verify_client(&c, &n, &p));
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }

    #[test]
    fn line_ends_are_not_part_of_the_secret() {
        let (c, n) = ([1u8; 32], [2u8; 32]);
        let plain = Secret::new(b"s3cret".to_vec()).unwrap();
        for source in [&b"s3cret\n"[..], b"s3cret\r\n", b"s3cret\n\n\r"] {
            let s = Secret::new(source.to_vec()).unwrap();
            assert_eq!(s.client_proof(&c, &n), plain.client_proof(&c, &n));
        }
        // Other blanks are the secret's own.
        let spaced = Secret::new(b"s3cret ".to_vec()).unwrap();
        assert_ne!(spaced.client_proof(&c, &n), plain.client_proof(&c, &n));
        for empty in [&b""[..], b"\n", b"\r\n"] {
            assert!(Secret::new(empty.to_vec()).is_err());
        }
    }
}

//! The shared-secret handshake: a worker with a secret challenges every
//! new connection with a random nonce; the LB answers with HMAC-SHA256 of
//! that nonce under the same secret (resumelb-protocol(7), "Shared
//! secret"). Pure but for the nonce, which comes from the kernel.

use std::fmt;
use std::io;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes in a challenge's nonce.
pub const NONCE_LEN: usize = 32;

/// A shared secret, read from a file. Its bytes never appear in `Debug`.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from bytes; `None` when there are none.
    pub fn new(bytes: &[u8]) -> Option<Secret> {
        (!bytes.is_empty()).then(|| Secret(bytes.to_vec()))
    }

    /// The file's contents without trailing line breaks (so that `echo`
    /// and an editor's final newline do not change the secret). An empty
    /// secret is an error.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let mut bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Secret::new(&bytes).ok_or_else(|| format!("secret file {} is empty", path.display()))
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }

    /// The answer to a challenge: HMAC-SHA256(secret, nonce).
    pub fn mac(&self, nonce: &[u8]) -> Vec<u8> {
        let mut h = self.hmac();
        h.update(nonce);
        h.finalize().into_bytes().to_vec()
    }

    /// Whether `mac` answers `nonce` (compared in constant time).
    pub fn verify(&self, nonce: &[u8], mac: &[u8]) -> bool {
        let mut h = self.hmac();
        h.update(nonce);
        h.verify_slice(mac).is_ok()
    }
}

/// A fresh random nonce from the kernel.
pub fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut buf = [0u8; NONCE_LEN];
    getrandom::fill(&mut buf).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2.
    #[test]
    fn hmac_sha256_reference_vector() {
        let s = Secret::new(b"Jefe").unwrap();
        let mac = s.mac(b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(s.verify(b"what do ya want for nothing?", &mac));
        assert!(!s.verify(b"what do ya want for nothing!", &mac));
        assert!(!s.verify(b"what do ya want for nothing?", &mac[..31]));
        assert!(!Secret::new(b"jefe")
            .unwrap()
            .verify(b"what do ya want for nothing?", &mac));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }

    #[test]
    fn secret_files() {
        let dir = std::env::temp_dir().join(format!("rlb-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s");
        std::fs::write(&p, "hunter2\r\n\n").unwrap();
        let a = Secret::from_file(&p).unwrap();
        assert!(a.verify(b"n", &Secret::new(b"hunter2").unwrap().mac(b"n")));
        assert_eq!(format!("{a:?}"), "Secret(..)");
        std::fs::write(&p, "\n").unwrap();
        assert!(Secret::from_file(&p).unwrap_err().contains("is empty"));
        assert!(Secret::from_file(&dir.join("missing"))
            .unwrap_err()
            .contains("cannot read secret file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

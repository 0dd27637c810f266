//! HTTP basic authentication for the observability listener, from a file
//! in htpasswd's format: `user:hash` a line, `#` comments and blank lines
//! allowed. Hashes are bcrypt (`$2a$`, `$2b$`, `$2y$`, as `htpasswd -B`
//! makes them) or SHA-crypt (`$5$`, `$6$`, as `mkpasswd -m sha-512` makes
//! them). The file is read at start and on SIGHUP; a file that cannot be
//! read or has a line of another kind keeps the users read before.
//!
//! Checking a bcrypt hash takes tens of milliseconds, and the page asks
//! every second: a password that passed is remembered (as a salted
//! SHA-256 digest) until the file is read again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// The users of an htpasswd file, and the passwords that passed.
#[derive(Debug)]
pub struct AuthFile {
    path: PathBuf,
    users: Mutex<HashMap<String, String>>,
    /// user → digest of the password that last passed.
    passed: Mutex<HashMap<String, [u8; 32]>>,
    salt: [u8; 16],
}

/// Why a file was refused.
fn bad(path: &Path, line: usize, why: &str) -> String {
    format!("{}:{line}: {why}", path.display())
}

/// The users of the file's text (`path` names it in messages).
pub fn parse(path: &Path, text: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(bad(path, i + 1, "not user:hash"));
        };
        if user.is_empty() {
            return Err(bad(path, i + 1, "no user name"));
        }
        if !supported(hash) {
            return Err(bad(
                path,
                i + 1,
                &format!(
                    "user {user}: the hash is neither bcrypt ($2y$, htpasswd -B) nor SHA-crypt \
                     ($5$ or $6$)"
                ),
            ));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    if users.is_empty() {
        return Err(format!("{}: no users", path.display()));
    }
    Ok(users)
}

fn supported(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$5$", "$6$"]
        .iter()
        .any(|p| hash.starts_with(p))
}

/// Whether `password` matches `hash` (see the module's list of kinds).
pub fn verify(password: &str, hash: &str) -> bool {
    if hash.starts_with("$2") {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    let sha512 = hash.starts_with("$6$");
    let Some(rest) = hash.get(3..) else {
        return false;
    };
    // [rounds=N$]salt$digest
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => match r.split_once('$') {
            Some((n, rest)) => match n.parse::<usize>() {
                Ok(n) => (n, rest),
                Err(_) => return false,
            },
            None => return false,
        },
        None => (sha_crypt::ROUNDS_DEFAULT, rest),
    };
    let Some((salt, digest)) = rest.rsplit_once('$') else {
        return false;
    };
    // As the specification says: at most 16 bytes of salt count, and a
    // round count out of range is taken as the nearest in range.
    let salt = &salt.as_bytes()[..salt.len().min(16)];
    let rounds = rounds.clamp(sha_crypt::ROUNDS_MIN, sha_crypt::ROUNDS_MAX);
    let made = if sha512 {
        sha_crypt::Sha512Params::new(rounds)
            .ok()
            .and_then(|p| sha_crypt::sha512_crypt_b64(password.as_bytes(), salt, &p).ok())
    } else {
        sha_crypt::Sha256Params::new(rounds)
            .ok()
            .and_then(|p| sha_crypt::sha256_crypt_b64(password.as_bytes(), salt, &p).ok())
    };
    made.is_some_and(|m| same(m.as_bytes(), digest.as_bytes()))
}

/// Equal, in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decode standard base64 (padding optional); none when malformed.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone sixth of a byte left over is not base64.
    (bits < 6).then_some(out)
}

impl AuthFile {
    /// Read `path`; its first error is the message.
    pub fn load(path: &Path) -> Result<AuthFile, String> {
        let users = read(path)?;
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| format!("cannot seed the password cache: {e}"))?;
        Ok(AuthFile {
            path: path.to_path_buf(),
            users: Mutex::new(users),
            passed: Mutex::new(HashMap::new()),
            salt,
        })
    }

    /// Read the file again (SIGHUP). When it cannot be used, the users
    /// read before stay, and the reason is logged.
    pub fn reload(&self) {
        match read(&self.path) {
            Ok(users) => {
                log::info!(
                    "{}: {} user(s) for the observability listener",
                    self.path.display(),
                    users.len()
                );
                *self.users.lock() = users;
                self.passed.lock().clear();
            }
            Err(e) => log::error!("{e}; keeping the users read before"),
        }
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether an `Authorization` header's value names a user and their
    /// password.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(creds) = authorization
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then_some(rest)
            })
            .and_then(|b| base64_decode(b.trim()))
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return false;
        };
        let Some((user, password)) = creds.split_once(':') else {
            return false;
        };
        let digest = self.digest(user, password);
        if self
            .passed
            .lock()
            .get(user)
            .is_some_and(|d| same(d, &digest))
        {
            return true;
        }
        let Some(hash) = self.users.lock().get(user).cloned() else {
            return false;
        };
        let ok = verify(password, &hash);
        if ok {
            self.passed.lock().insert(user.to_string(), digest);
        }
        ok
    }
}

fn read(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("metrics auth file {}: {e}", path.display()))?;
    parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // From the SHA-crypt specification's test vectors.
    const SHA512: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
    const SHA256_ROUNDS: &str =
        "$5$rounds=10000$saltstringsaltstring$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA";

    #[test]
    fn sha_crypt_and_bcrypt_hashes() {
        assert!(verify("Hello world!", SHA512));
        assert!(!verify("Hello world", SHA512));
        assert!(verify("Hello world!", SHA256_ROUNDS));
        assert!(!verify("hello world!", SHA256_ROUNDS));
        let b = bcrypt::hash("secret", 4).expect("bcrypt hashes");
        let y = b.replacen("$2b$", "$2y$", 1);
        assert!(verify("secret", &b) && verify("secret", &y));
        assert!(!verify("Secret", &y));
        assert!(!verify("x", "$6$broken"));
        assert!(!verify("x", "$5$rounds=abc$salt$x"));
    }

    #[test]
    fn file_format() {
        let p = Path::new("auth");
        let users = parse(p, "# ops\n\nalice:$6$a$b\n bob:$2y$05$xyz \n").expect("parses");
        assert_eq!(users.len(), 2);
        assert_eq!(users["bob"], "$2y$05$xyz");
        let e = parse(p, "alice:$6$a$b\ncarol:$apr1$x$y\n").expect_err("apr1 is refused");
        assert!(e.starts_with("auth:2: user carol:"), "{e}");
        assert_eq!(
            parse(p, "nocolon\n").expect_err("no colon"),
            "auth:1: not user:hash"
        );
        assert_eq!(parse(p, "# nobody\n").expect_err("empty"), "auth: no users");
    }

    #[test]
    fn header_check_remembers_what_passed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("ops:{SHA512}\n")).expect("write");
        let a = AuthFile::load(&path).expect("loads");
        // "ops:Hello world!" and "ops:wrong"
        assert!(a.allows(Some("Basic b3BzOkhlbGxvIHdvcmxkIQ==")));
        assert!(a.allows(Some("basic b3BzOkhlbGxvIHdvcmxkIQ")));
        assert!(!a.allows(Some("Basic b3BzOndyb25n")));
        assert!(!a.allows(Some("Bearer b3BzOkhlbGxvIHdvcmxkIQ==")));
        assert!(!a.allows(Some("Basic !!!")));
        assert!(!a.allows(None));
        // A changed file counts after a reload; a broken one is not taken.
        std::fs::write(&path, "other:$6$x$y\n").expect("write");
        a.reload();
        assert!(!a.allows(Some("Basic b3BzOkhlbGxvIHdvcmxkIQ==")));
        std::fs::write(&path, "broken line\n").expect("write");
        a.reload();
        assert!(a.users.lock().contains_key("other"));
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("Y"), None);
        assert_eq!(base64_decode("Y*Q="), None);
    }
}

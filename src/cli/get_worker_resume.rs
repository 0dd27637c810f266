//! `get-worker-resume HOST:PORT…`: connect to workers as an LB would, read
//! the résumé each sends first, and print it.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use getopts::Options;

use super::{parse, seconds, standard_options, CliError};
use crate::proto::auth::Secret;
use crate::proto::{encode_auth, Decoded, Resume, ToLb, DEFAULT_MAX_FRAME};
use crate::worker::resolve;

pub const NAME: &str = "get-worker-resume";
const SYNOPSIS: &str = "[options] HOST:PORT...";

pub fn options() -> Options {
    let mut o = Options::new();
    o.optflag("j", "json", "print JSON instead of `class score` lines");
    o.optopt(
        "t",
        "timeout",
        "seconds to wait for each worker (default 5)",
        "SECONDS",
    );
    o.optopt(
        "",
        "secret-file",
        "answer the workers' challenges with the shared secret in PATH",
        "PATH",
    );
    standard_options(&mut o);
    o
}

/// Read a worker's first résumé, answering its challenge with `secret`.
/// What a worker tells a new connection: its résumé, and the requests
/// that failed since it started, by class (from its hello).
pub struct Report {
    pub resume: Resume,
    pub failed: BTreeMap<String, u64>,
}

pub fn fetch(addr: &str, timeout: Duration, secret: Option<&Secret>) -> Result<Report, String> {
    let sa = resolve(addr).map_err(|e| e.to_string())?;
    let timed_out = || format!("timed out after {} s", timeout.as_secs_f64());
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => timed_out(),
        _ => e.to_string(),
    })?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut answered = false;
    let mut resume = None;
    loop {
        match ToLb::decode(&buf, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())? {
            Decoded::Complete(msg, used) => {
                buf.drain(..used);
                match (msg, secret) {
                    (ToLb::Challenge(_), None) => {
                        return Err("the worker asks for a shared secret: give --secret-file".into())
                    }
                    (ToLb::Challenge(nonce), Some(secret)) if !answered => {
                        let mut out = Vec::new();
                        encode_auth(&mut out, &secret.mac(&nonce));
                        s.write_all(&out).map_err(|e| e.to_string())?;
                        answered = true;
                        continue;
                    }
                    (_, Some(_)) if !answered => {
                        return Err("the worker sent no challenge: it has no shared secret".into())
                    }
                    (ToLb::Resume(r), _) if resume.is_none() => resume = Some(r),
                    // The hello follows the résumé at once.
                    (ToLb::Hello(h), _) if resume.is_some() => {
                        let resume = resume.take().unwrap_or_default();
                        return Ok(Report {
                            resume,
                            failed: h.failed,
                        });
                    }
                    (_, _) if resume.is_some() => {}
                    (other, _) => return Err(format!("expected a résumé first, got {other:?}")),
                }
            }
            Decoded::Partial => {}
        }
        let n = match s.read(&mut chunk) {
            // A worker that sends no hello: the résumé is all there is.
            Ok(0) | Err(_) if resume.is_some() => {
                let resume = resume.take().unwrap_or_default();
                return Ok(Report {
                    resume,
                    failed: BTreeMap::new(),
                });
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(timed_out())
            }
            Err(e) => return Err(e.to_string()),
        };
        if n == 0 && answered {
            return Err("the worker closed the connection after our answer to its \
                        challenge: the shared secrets differ"
                .into());
        }
        if n == 0 {
            return Err("connection closed before a résumé arrived".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn lines(report: &Report) -> String {
    let mut out: String = if report.resume.is_empty() {
        // Nothing learnt yet (or nothing published: see --history).
        "(empty résumé)\n".into()
    } else {
        report
            .resume
            .iter()
            .map(|(c, s)| format!("{c} {s}\n"))
            .collect()
    };
    if !report.failed.is_empty() {
        out.push_str("failed (5xx, not in the résumé):\n");
        for (class, n) in &report.failed {
            out.push_str(&format!("{class} {n}\n"));
        }
    }
    out
}

pub fn run(args: Vec<String>) -> Result<(), CliError> {
    let opts = options();
    let Some(m) = parse(NAME, SYNOPSIS, &opts, &args)? else {
        return Ok(());
    };
    if m.free.is_empty() {
        return Err(CliError::Usage("no worker address given".into()));
    }
    let timeout = seconds(&m, "timeout", 5.0)?;
    let secret = super::secret_file(&m)?;
    let json = m.opt_present("json");
    let several = m.free.len() > 1;
    let mut failed = Vec::new();
    let mut all = serde_json::Map::new();
    for addr in &m.free {
        match fetch(addr, timeout, secret.as_ref()) {
            Ok(r) => {
                if json {
                    let resume = serde_json::to_value(&r.resume).unwrap_or_default();
                    all.insert(addr.clone(), resume);
                } else if several {
                    print!("{addr}\n{}", lines(&r));
                } else {
                    print!("{}", lines(&r));
                }
            }
            Err(e) => {
                eprintln!("{NAME}: cannot get the résumé of {addr}: {e}");
                failed.push(addr.clone());
            }
        }
    }
    if json {
        let doc = if several {
            serde_json::Value::Object(all)
        } else {
            all.into_iter().next().map(|(_, v)| v).unwrap_or_default()
        };
        if !failed.is_empty() && !several {
            // Nothing to print for the one worker asked about.
        } else {
            println!("{doc}");
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "no résumé from {} worker(s)",
            failed.len()
        )))
    }
}

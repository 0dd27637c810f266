//! `get-worker-resume HOST:PORT…`: connect to workers as an LB would, read
//! the résumé each sends first, and print it.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use getopts::Options;

use super::{parse, seconds, standard_options, CliError};
use crate::proto::{Decoded, Resume, ToLb, DEFAULT_MAX_FRAME};
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
    standard_options(&mut o);
    o
}

/// Read a worker's first résumé.
pub fn fetch(addr: &str, timeout: Duration) -> Result<Resume, String> {
    let sa = resolve(addr).map_err(|e| e.to_string())?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match ToLb::decode(&buf, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())? {
            Decoded::Complete(ToLb::Resume(r), _) => return Ok(r),
            Decoded::Complete(other, _) => {
                return Err(format!("expected a résumé first, got {other:?}"))
            }
            Decoded::Partial => {}
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before a résumé arrived".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn lines(resume: &Resume) -> String {
    resume.iter().map(|(c, s)| format!("{c} {s}\n")).collect()
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
    let json = m.opt_present("json");
    let several = m.free.len() > 1;
    let mut failed = Vec::new();
    let mut all = serde_json::Map::new();
    for addr in &m.free {
        match fetch(addr, timeout) {
            Ok(r) => {
                if json {
                    all.insert(addr.clone(), serde_json::to_value(&r).unwrap_or_default());
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
            "{} worker(s) unreachable",
            failed.len()
        )))
    }
}

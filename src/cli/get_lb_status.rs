//! `get-lb-status PATH…`: read LB status documents from their Unix sockets
//! and print them.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime};

use getopts::Options;

use super::{parse, seconds, standard_options, CliError};
use crate::lb::status::format_text;

pub const NAME: &str = "get-lb-status";
const SYNOPSIS: &str = "[options] SOCKET...";

pub fn options() -> Options {
    let mut o = Options::new();
    o.optflag("j", "json", "print the status document as JSON");
    o.optopt(
        "t",
        "timeout",
        "seconds to wait for each LB (default 5)",
        "SECONDS",
    );
    standard_options(&mut o);
    o
}

/// Read one status document. The error says which of three things went
/// wrong: nothing usable at the path, no answer in time, or an answer that
/// is not a resumelb status document.
pub fn fetch(path: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    if crate::lb::status::is_not_a_socket(std::path::Path::new(path)) {
        return Err("exists and is not a socket".into());
    }
    let unreachable = |e: std::io::Error| format!("unreachable: {e}");
    let mut s = UnixStream::connect(path).map_err(unreachable)?;
    s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("timed out after {} s", timeout.as_secs_f64())
        }
        _ => unreachable(e),
    })?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not a resumelb status document: {e}"))?;
    if !(doc["workers"].is_array() && doc["backlog"].is_number()) {
        return Err("not a resumelb status document (no workers or backlog)".into());
    }
    Ok(doc)
}

pub fn run(args: Vec<String>) -> Result<(), CliError> {
    let opts = options();
    let Some(m) = parse(NAME, SYNOPSIS, &opts, &args)? else {
        return Ok(());
    };
    if m.free.is_empty() {
        return Err(CliError::Usage("no status socket given".into()));
    }
    let timeout = seconds(&m, "timeout", 5.0)?;
    let several = m.free.len() > 1;
    let mut failed = 0;
    for path in &m.free {
        match fetch(path, timeout) {
            Ok(doc) => {
                if several {
                    println!("{path}:");
                }
                if m.opt_present("json") {
                    println!("{doc}");
                } else {
                    print!("{}", format_text(&doc, SystemTime::now()));
                }
            }
            Err(e) => {
                eprintln!("{NAME}: {path}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        Err(CliError::Failed(format!("no status from {failed} LB(s)")))
    } else {
        Ok(())
    }
}

//! `get-lb-status PATH…`: read LB status documents from their Unix sockets
//! and print them.

use std::io::Read;
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

/// Read one status document.
pub fn fetch(path: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("bad status document: {e}"))
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
        Err(CliError::Failed(format!("{failed} LB(s) unreachable")))
    } else {
        Ok(())
    }
}

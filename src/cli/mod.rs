//! Command lines: getopts parsing into validated configurations, one
//! module per command, and the one place where errors become exit codes
//! (0 success, 1 failure, 2 usage error, as zdaemon expects).

pub mod get_lb_status;
pub mod get_worker_resume;
pub mod lb;
pub mod nagios;
pub mod worker;
pub mod zklb;

use std::fmt::Display;
use std::process::ExitCode;
use std::str::FromStr;

use getopts::{Matches, Options};

/// Why a command stops.
#[derive(Debug)]
pub enum CliError {
    /// Bad command line: one line on stderr, exit 2.
    Usage(String),
    /// Something failed while running: one line on stderr, exit 1.
    Failed(String),
    /// Configuration the operator must fix (a file in the way, an unusable
    /// path): one line on stderr, exit 2, so that a supervisor that takes
    /// exit 2 as final does not restart it forever.
    Config(String),
}

impl CliError {
    /// A run-time failure, as exit 1, or exit 2 when the error says the
    /// configuration is wrong (`InvalidInput`).
    pub fn from_run(e: std::io::Error) -> CliError {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            CliError::Config(e.to_string())
        } else {
            CliError::Failed(e.to_string())
        }
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError::Failed(e.to_string())
    }
}

/// A listening socket could not be made on `addr` (`-a`): an address that
/// does not parse (bad syntax, port out of range) is the operator's to fix
/// (exit 2); one in use or a name that does not resolve may clear (exit 1).
pub(crate) fn listen_error(addr: &str, e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::InvalidInput {
        CliError::Config(format!("bad address -a {addr:?}: {e}"))
    } else {
        CliError::Failed(format!("cannot listen on {addr}: {e}"))
    }
}

/// `--secret-file PATH`, read: a file that cannot be read or is empty is
/// the operator's to fix (exit 2).
pub(crate) fn secret_file(
    m: &getopts::Matches,
) -> Result<Option<crate::proto::auth::Secret>, CliError> {
    match m.opt_str("secret-file") {
        None => Ok(None),
        Some(p) => crate::proto::auth::Secret::from_file(std::path::Path::new(&p))
            .map(Some)
            .map_err(CliError::Usage),
    }
}

/// Run a command's `run` and turn its result into an exit code.
pub fn main_with(name: &str, run: impl FnOnce(Vec<String>) -> Result<(), CliError>) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) => {
            eprintln!("{name}: {msg} (see {name} --help)");
            ExitCode::from(2)
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("{name}: {msg}");
            ExitCode::from(1)
        }
        Err(CliError::Config(msg)) => {
            eprintln!("{name}: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Parse `args`, handling `-h/--help` and `-V/--version` (which every
/// command has) by printing.
pub(crate) fn parse(
    name: &str,
    synopsis: &str,
    opts: &Options,
    args: &[String],
) -> Result<Option<Matches>, CliError> {
    let m = opts
        .parse(args)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if m.opt_present("h") {
        print!("{}", help_text(opts, &format!("Usage: {name} {synopsis}")));
        return Ok(None);
    }
    // `--version` with a value is the worker's version (ZooKeeper), not a
    // request to print ours.
    if m.opt_present("V") && m.opt_str("V").is_none() {
        println!("{name} {}", env!("CARGO_PKG_VERSION"));
        return Ok(None);
    }
    Ok(Some(m))
}

/// Add `-h/--help` and `-V/--version`.
/// `--help`: getopts' usage text without the trailing spaces it leaves
/// after a long option name.
pub(crate) fn help_text(opts: &Options, brief: &str) -> String {
    opts.usage(brief)
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

/// `-h` and `-V`, which every command has, last in its help.
pub(crate) fn standard_options(opts: &mut Options) {
    opts.optflag("h", "help", "print this help and exit");
    opts.optflag("V", "version", "print the version and exit");
}

/// An option's value parsed as `T`, or `default` when absent.
pub(crate) fn value<T>(m: &Matches, name: &str, default: T) -> Result<T, CliError>
where
    T: FromStr,
    T::Err: Display,
{
    match m.opt_str(name) {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse()
            .map_err(|e| CliError::Usage(format!("bad value {s:?} for --{name}: {e}"))),
    }
}

/// The range of every duration option: a millisecond to a million seconds
/// (about 11.5 days); beyond it a value is a typo, not a timeout.
pub(crate) const MIN_SECONDS: f64 = 0.001;
pub(crate) const MAX_SECONDS: f64 = 1_000_000.0;

/// A duration option given in (possibly fractional) seconds.
pub(crate) fn seconds(
    m: &Matches,
    name: &str,
    default: f64,
) -> Result<std::time::Duration, CliError> {
    let s: f64 = value(m, name, default)?;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&s) {
        return Err(CliError::Usage(format!(
            "--{name} must be from {MIN_SECONDS} to {MAX_SECONDS:.0} seconds"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(s))
}

/// `-L`: install the stderr logger at the given level.
pub(crate) fn init_logging(m: &Matches, name: &str) -> Result<(), CliError> {
    let level = match m.opt_str(name) {
        None => log::LevelFilter::Info,
        Some(s) => crate::util::logger::parse_level(&s).map_err(CliError::Usage)?,
    };
    crate::util::logger::init(level);
    Ok(())
}

//! `rlb-nagios`: see `man rlb-nagios`.
fn main() -> std::process::ExitCode {
    resumelb::cli::nagios::main()
}

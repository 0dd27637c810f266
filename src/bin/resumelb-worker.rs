//! `resumelb-worker`: see `man resumelb-worker`.
fn main() -> std::process::ExitCode {
    resumelb::cli::main_with(resumelb::cli::worker::NAME, resumelb::cli::worker::run)
}

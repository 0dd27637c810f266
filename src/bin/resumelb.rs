//! `resumelb`: see `man resumelb`.
fn main() -> std::process::ExitCode {
    resumelb::cli::main_with(resumelb::cli::lb::NAME, resumelb::cli::lb::run)
}

//! `zkresumelb`: see `man zkresumelb`.
fn main() -> std::process::ExitCode {
    resumelb::cli::main_with(resumelb::cli::zklb::NAME, resumelb::cli::zklb::run)
}

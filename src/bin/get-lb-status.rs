//! `get-lb-status`: see `man get-lb-status`.
fn main() -> std::process::ExitCode {
    resumelb::cli::main_with(
        resumelb::cli::get_lb_status::NAME,
        resumelb::cli::get_lb_status::run,
    )
}

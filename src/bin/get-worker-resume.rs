//! `get-worker-resume`: see `man get-worker-resume`.
fn main() -> std::process::ExitCode {
    resumelb::cli::main_with(
        resumelb::cli::get_worker_resume::NAME,
        resumelb::cli::get_worker_resume::run,
    )
}

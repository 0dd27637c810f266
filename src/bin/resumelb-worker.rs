//! `resumelb-worker`: see `man resumelb-worker`.

/// mimalloc (see `resumelb::alloc`).
#[global_allocator]
static ALLOC: resumelb::alloc::MiMalloc = resumelb::alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    resumelb::alloc::configure();
    resumelb::cli::main_with(resumelb::cli::worker::NAME, resumelb::cli::worker::run)
}

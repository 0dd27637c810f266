//! `zkresumelb`: see `man zkresumelb`.

/// mimalloc (see `resumelb::alloc`).
#[global_allocator]
static ALLOC: resumelb::alloc::MiMalloc = resumelb::alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    resumelb::alloc::configure();
    resumelb::cli::main_with(resumelb::cli::zklb::NAME, resumelb::cli::zklb::run)
}

//! The memory allocator of the LB and worker binaries: mimalloc, declared
//! with `#[global_allocator]` in their `main`.
//!
//! A request's buffers are allocated on one thread and freed on another (the
//! I/O thread and the app threads), where glibc's malloc serialised on its
//! arena locks: the worker spent a third of its time waiting on them, and
//! with mimalloc it spends about half the CPU per request (`make
//! bench-compare`, W2). mimalloc is built without transparent huge pages,
//! which would make every idle connection cost more resident memory.

pub use mimalloc::MiMalloc;

//! The memory allocator of the LB and worker binaries: mimalloc, declared
//! with `#[global_allocator]` in their `main`, which calls [`configure`]
//! first.
//!
//! A request's buffers are allocated on one thread and freed on another (the
//! I/O thread and the app threads), where glibc's malloc serialised on its
//! arena locks: the worker spent a third of its time waiting on them, and
//! with mimalloc it spends about half the CPU per request (`make
//! bench-compare`, W2). mimalloc is built without transparent huge pages,
//! which would make every idle connection cost more resident memory.

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's option list (`mi_option_e`;
/// the version is pinned by Cargo.lock, and a test checks the index by its
/// default value).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Return freed memory to the system at once instead of a second later:
/// with connections coming and going (`make soak`) the LB's resident
/// memory otherwise stays at its peak.
pub fn configure() {
    // SAFETY: mi_option_set takes plain integers and is thread-safe.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_is_the_purge_delay() {
        // SAFETY: reading an option takes a plain integer.
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        // The purge delay's default is 1000 (ms); its neighbours' are 1
        // (a deprecated option) and 0 (NUMA nodes).
        assert_eq!(
            (get(PURGE_DELAY - 1), get(PURGE_DELAY), get(PURGE_DELAY + 1)),
            (1, 1000, 0)
        );
        configure();
        assert_eq!(get(PURGE_DELAY), 0);
    }
}

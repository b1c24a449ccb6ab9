//! Freeing a build's large structures off its path.
//!
//! A no-op build of 10,000 targets ends by freeing its jobs, plan and
//! caches: hundreds of thousands of small allocations, tens of milliseconds
//! the build need not wait for (and that a finished `strata build` never
//! waits for, as the process exits).

/// Drops `value` on a thread of its own (on this one if none can start).
pub(crate) fn later<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("strata-discard".into())
        .spawn(move || drop(value));
}

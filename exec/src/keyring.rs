//! Kernel keyrings a step must not share with the caller.
//!
//! A process inherits its session keyring, which holds the caller's keys and
//! often links the caller's user keyring: a step could read keys root put
//! there (`keyctl print`, `keyctl search @s`). Every step starts with a new,
//! empty session keyring instead. In the sandbox the step also runs under a
//! user id of its own user namespace, so no key is reachable through its
//! owner either (see `sandbox`); unsandboxed, keys the caller's user may
//! read without possessing them stay readable.

use std::io;

/// `KEYCTL_JOIN_SESSION_KEYRING` of <linux/keyctl.h>.
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;

/// Replaces this process's session keyring with a new anonymous one.
/// Async-signal-safe, so it may run in a `pre_exec` hook.
pub fn join_fresh_session_keyring() -> io::Result<()> {
    // SAFETY: keyctl(2); a NULL name asks for an anonymous keyring.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if id < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

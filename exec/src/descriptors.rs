//! File descriptors `strata` inherited and must not hand on.
//!
//! A shell passes its open descriptors to the programs it starts, and
//! `(exec 9</some/dir; strata build)` leaves descriptor 9 open and not
//! close-on-exec. A step given it could read and write the host through
//! `/proc/self/fd/9`, past every mount the sandbox hides. Rust's own
//! descriptors are close-on-exec; inherited ones are not, so they are
//! marked close-on-exec once at startup (`keep_from_children`, covering
//! every child: steps, the sandbox helper, `dockerd`, `git`, `tar`) and
//! again before a step's program starts, covering anything opened since
//! without the flag: by the sandbox helper, whose `main` is this binary's
//! and starts with `keep_from_children`, or, unsandboxed, in the step's
//! `pre_exec` hook (`close_on_exec_above_stdio`).

use std::io;

/// The first descriptor that is not stdin, stdout or stderr.
const FIRST_ABOVE_STDIO: u32 = 3;

/// Marks every descriptor above stderr close-on-exec. Async-signal-safe, so
/// it may run in a `pre_exec` hook. Marking rather than closing keeps the
/// descriptor the standard library uses to report a failed exec.
pub fn close_on_exec_above_stdio() -> io::Result<()> {
    // SAFETY: close_range(2) takes no pointers.
    let done = unsafe {
        libc::close_range(
            FIRST_ABOVE_STDIO,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Called first thing by the binary, before any thread starts: no child of
/// `strata` inherits what `strata` inherited. Kernels before 5.11 lack
/// `CLOSE_RANGE_CLOEXEC`; there each open descriptor is marked on its own.
pub fn keep_from_children() {
    if close_on_exec_above_stdio().is_ok() {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    // Collected first: the listing holds a descriptor of its own.
    let fds: Vec<libc::c_int> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= FIRST_ABOVE_STDIO as libc::c_int)
        .collect();
    for fd in fds {
        // SAFETY: fcntl(2) on a number; a closed one fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn an_inherited_descriptor_becomes_close_on_exec() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        // SAFETY: dup(2) of a live descriptor; the copy lacks FD_CLOEXEC.
        let copy = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(copy >= 3);
        let flags = || unsafe { libc::fcntl(copy, libc::F_GETFD) };
        assert_eq!(flags() & libc::FD_CLOEXEC, 0);
        keep_from_children();
        assert_eq!(flags() & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        // SAFETY: closing the copy made above.
        unsafe { libc::close(copy) };
    }
}

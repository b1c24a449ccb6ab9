//! The fixed layout a step runs in. Keys name these paths, never the real
//! location of a sandbox on the host, so a key is the same on every machine.
//!
//! ```text
//! /strata/work        the input root's `work/`: declared sources, read-only; the working directory
//! /strata/deps/<dep>  each dependency's output tree, read-only
//! /strata/out         $OUT, empty and writable
//! /strata/home        $HOME, empty and writable
//! /strata/tmp         $TMPDIR, empty and writable
//! ```

/// Where the exec root is mounted inside the sandbox.
pub const EXEC_ROOT: &str = "/strata";
/// Sub-folders of the exec root.
pub const WORK: &str = "work";
pub const DEPS: &str = "deps";
pub const OUT: &str = "out";
pub const HOME: &str = "home";
pub const TMP: &str = "tmp";

/// The PATH every step gets: the host toolchain folders, which the sandbox
/// shows read-only.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// The absolute path of an exec-root sub-folder inside the sandbox.
pub fn in_sandbox(sub: &str) -> String {
    format!("{EXEC_ROOT}/{sub}")
}

//! qemu-user through binfmt_misc, for tests of steps on linux/arm64 images
//! (`scripts/binfmt-up.sh` registers the handler).

use std::fs;
use std::path::{Path, PathBuf};

/// Where the kernel shows its handlers.
const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// The enabled handler for aarch64 ELF programs (`e_machine` 0xb7), as the
/// kernel shows it: its entry file and interpreter.
pub fn aarch64_handler() -> Option<(PathBuf, String)> {
    if fs::read_to_string(Path::new(BINFMT).join("status")).is_ok_and(|s| s.trim() == "disabled") {
        return None;
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(BINFMT)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.ends_with("register") && !p.ends_with("status"))
        .collect();
    entries.sort();
    entries.into_iter().find_map(|p| {
        let text = fs::read_to_string(&p).ok()?;
        let enabled = text.lines().next() == Some("enabled");
        let aarch64 = text
            .lines()
            .any(|l| l.starts_with("magic 7f454c46020101") && l.ends_with("b700"));
        let interpreter = text
            .lines()
            .find_map(|l| l.strip_prefix("interpreter "))?
            .to_string();
        (enabled && aarch64).then_some((p, interpreter))
    })
}

/// Whether this machine runs linux/arm64 programs: natively, or through a
/// binfmt_misc handler. A test starts with `if !arm64_runs() { return; }`;
/// with `STRATA_REQUIRE_EMULATION` set (as in CI) a machine that cannot
/// fails the test instead of skipping it.
pub fn arm64_runs() -> bool {
    if std::env::consts::ARCH == "aarch64" || aarch64_handler().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("STRATA_REQUIRE_EMULATION").is_none(),
        "STRATA_REQUIRE_EMULATION is set but {BINFMT} has no enabled aarch64 handler (run scripts/binfmt-up.sh)"
    );
    eprintln!("skipped: no aarch64 binfmt_misc handler (run scripts/binfmt-up.sh)");
    false
}

//! The kernel's binfmt_misc handlers: which one would run an ELF program of
//! a given architecture, and what it is (interpreter, flags, digest).
//!
//! A container step on an image of another architecture runs through such a
//! handler (qemu-user); its interpreter and flags enter the step's key
//! (`strata_rules::platform::Emulator`). The folder is
//! `/proc/sys/fs/binfmt_misc`, or `$STRATA_BINFMT_DIR` when set: tests point
//! it at a folder of their own to see a machine with no handler (or a given
//! one) whatever the kernel has registered.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_rules::platform::Emulator;

/// Where the kernel shows its handlers.
pub const KERNEL_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The folder read for handlers: `$STRATA_BINFMT_DIR` or [`KERNEL_DIR`].
pub fn dir() -> PathBuf {
    std::env::var_os("STRATA_BINFMT_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(KERNEL_DIR))
}

/// One enabled handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    /// The entry's name (`qemu-aarch64`).
    pub name: String,
    pub interpreter: String,
    /// As the kernel prints them (`POF`).
    pub flags: String,
}

impl Handler {
    /// Whether the kernel opened the interpreter when the handler was
    /// registered (`F`): only then can a container, whose root file system
    /// has no such file, run through it.
    pub fn fixed(&self) -> bool {
        self.flags.contains('F')
    }

    /// The emulator as keys record it: the interpreter hashed as the path
    /// names it now.
    pub fn emulator(&self) -> Result<Emulator, String> {
        let sha256 = sha256_of(Path::new(&self.interpreter))
            .map_err(|e| format!("cannot read the interpreter {}: {e}", self.interpreter))?;
        Ok(Emulator {
            interpreter: self.interpreter.clone(),
            sha256,
            flags: self.flags.clone(),
        })
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// ELF `e_machine` of an OCI architecture.
pub fn elf_machine(arch: &str) -> Option<u16> {
    Some(match arch {
        "386" => 3,
        "arm" => 40,
        "ppc64" | "ppc64le" => 21,
        "s390x" => 22,
        "amd64" => 62,
        "arm64" => 183,
        "riscv64" => 243,
        "mips" | "mipsle" | "mips64" | "mips64le" => 8,
        "loong64" => 258,
        _ => return None,
    })
}

/// The name of an OCI architecture in qemu's and Debian's binfmt files
/// (`/usr/lib/binfmt.d/qemu-<name>.conf`).
pub fn qemu_name(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        "loong64" => "loongarch64",
        other => other,
    }
}

/// The enabled handler in `dir` that runs ELF programs of `arch`, if any;
/// the first by name when several would (a machine normally has one).
/// `None` too when binfmt_misc is disabled as a whole.
pub fn handler_for(dir: &Path, arch: &str) -> Option<Handler> {
    let machine = elf_machine(arch)?;
    if fs::read_to_string(dir.join("status")).is_ok_and(|s| s.trim() == "disabled") {
        return None;
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "register" && n != "status")
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let text = fs::read_to_string(dir.join(&name)).ok()?;
        parse(&name, &text, machine)
    })
}

/// One entry's text, if it is enabled and matches ELF files of `machine`
/// (the `e_machine` field, bytes 18-19 of the header: little endian, or big
/// endian for s390x and big-endian MIPS and PowerPC).
fn parse(name: &str, text: &str, machine: u16) -> Option<Handler> {
    let enabled = text.lines().next().is_some_and(|l| l.trim() == "enabled");
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let magic = field("magic ").unwrap_or_default();
    let offset_zero = field("offset ").is_none_or(|o| o == "0");
    let byte = |i: usize| {
        magic
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    let (lo, hi) = (byte(18)?, byte(19)?);
    let matches =
        u16::from_le_bytes([lo, hi]) == machine || u16::from_be_bytes([lo, hi]) == machine;
    if !(enabled && offset_zero && magic.starts_with("7f454c46") && matches) {
        return None;
    }
    Some(Handler {
        name: name.to_string(),
        interpreter: field("interpreter ")?,
        flags: field("flags:").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn a_qemu_entry_runs_its_architecture_only() {
        let h = parse("qemu-aarch64", QEMU_AARCH64, 183).unwrap();
        assert_eq!(h.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        assert_eq!(h.flags, "POF");
        assert!(h.fixed());
        assert!(parse("qemu-aarch64", QEMU_AARCH64, 40).is_none());
        assert!(parse("q", &QEMU_AARCH64.replace("enabled", "disabled"), 183).is_none());
        assert!(
            !parse("q", &QEMU_AARCH64.replace("POF", "P"), 183)
                .unwrap()
                .fixed()
        );
    }

    #[test]
    fn a_folder_of_entries_is_searched() {
        let dir = tempfile::tempdir().unwrap();
        assert!(handler_for(dir.path(), "arm64").is_none());
        fs::write(dir.path().join("status"), "enabled\n").unwrap();
        fs::write(dir.path().join("register"), "").unwrap();
        fs::write(dir.path().join("qemu-aarch64"), QEMU_AARCH64).unwrap();
        assert_eq!(
            handler_for(dir.path(), "arm64").map(|h| h.name),
            Some("qemu-aarch64".into())
        );
        assert!(handler_for(dir.path(), "riscv64").is_none());
        fs::write(dir.path().join("status"), "disabled\n").unwrap();
        assert!(handler_for(dir.path(), "arm64").is_none());
    }

    #[test]
    fn the_emulator_is_the_interpreter_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let interpreter = dir.path().join("qemu");
        fs::write(&interpreter, b"not really qemu").unwrap();
        let text = QEMU_AARCH64.replace(
            "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
            &interpreter.display().to_string(),
        );
        let e = parse("q", &text, 183).unwrap().emulator().unwrap();
        assert_eq!(
            e.sha256,
            format!("sha256:{}", hex::encode(Sha256::digest(b"not really qemu")))
        );
        assert_eq!(e.flags, "POF");
        fs::remove_file(&interpreter).unwrap();
        let missing = parse("q", &text, 183).unwrap().emulator().unwrap_err();
        assert!(missing.contains("cannot read the interpreter"), "{missing}");
    }
}

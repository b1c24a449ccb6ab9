//! Whether this machine can run the images a build's container steps use.
//!
//! An image of another architecture runs only through a binfmt_misc handler
//! (qemu-user); without one, Docker fails deep in the step with "exec
//! format error". The build checks before anything runs and says what to
//! install instead.

use std::fs;
use std::path::Path;

use strata_rules::builtin::Builtin;
use strata_rules::oci::layout::Platform;
use strata_rules::run::ImageRef;

use crate::load::diag::At;
use crate::load::{ConfigError, Kind, Target, Workspace};

/// The architecture of this machine in OCI's words (`amd64`, `arm64`).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Every container step among `targets` whose image declares an
/// architecture this machine cannot run.
pub fn check<'a>(
    ws: &Workspace,
    targets: impl Iterator<Item = &'a Target>,
) -> Result<(), Vec<ConfigError>> {
    check_with(ws, targets, host_architecture(), Path::new(BINFMT))
}

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

fn check_with<'a>(
    ws: &Workspace,
    targets: impl Iterator<Item = &'a Target>,
    host: &str,
    binfmt: &Path,
) -> Result<(), Vec<ConfigError>> {
    let at = At {
        sources: &ws.sources,
    };
    let mut errors = Vec::new();
    for t in targets {
        let Some(image) = image_of(t) else {
            continue;
        };
        let Some(image_target) = ws.targets.iter().find(|x| x.name == image) else {
            continue;
        };
        let Some(platform) = declared_platform(image_target) else {
            continue;
        };
        if platform.architecture == host || handled(binfmt, &platform.architecture) {
            continue;
        }
        let user = t.name.split('#').next().unwrap_or(&t.name);
        errors.push(at.error(
            image_target.loc,
            format!(
                "`{user}` runs `{image}`, an image for linux/{}, but this machine is linux/{host} and has no binfmt_misc handler for {}",
                platform.architecture, platform.architecture
            ),
            format!("linux/{} image", platform.architecture),
            Some(format!(
                "build on a linux/{arch} machine, register an emulator (apt-get install qemu-user-static binfmt-support), or cross-compile with a linux/{host} image and a cross toolchain",
                arch = platform.architecture
            )),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The image target a container step runs in.
fn image_of(t: &Target) -> Option<&str> {
    match &t.kind {
        Kind::Run(p) => match &p.container.as_ref()?.image {
            ImageRef::Target(name) => Some(name),
            ImageRef::Pinned { .. } => None,
        },
        // Later steps start from the step before, which is no image.
        Kind::Stage {
            parent: Some(p), ..
        } => Some(p),
        _ => None,
    }
}

fn declared_platform(t: &Target) -> Option<Platform> {
    let written = match &t.kind {
        Kind::Builtin(Builtin::Image(p), _) => &p.platform,
        Kind::ImagePull(p) => &p.platform,
        _ => return None,
    };
    Platform::parse(written).ok()
}

/// Whether an enabled binfmt_misc entry runs ELF programs of `arch`.
fn handled(binfmt: &Path, arch: &str) -> bool {
    let Some(machine) = elf_machine(arch) else {
        return false;
    };
    if fs::read_to_string(binfmt.join("status")).is_ok_and(|s| s.trim() == "disabled") {
        return false;
    }
    let Ok(entries) = fs::read_dir(binfmt) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        name != "register"
            && name != "status"
            && fs::read_to_string(e.path()).is_ok_and(|text| entry_runs(&text, machine))
    })
}

/// ELF `e_machine` of an OCI architecture.
fn elf_machine(arch: &str) -> Option<u16> {
    Some(match arch {
        "386" => 3,
        "arm" => 40,
        "ppc64le" => 21,
        "s390x" => 22,
        "amd64" => 62,
        "arm64" => 183,
        "riscv64" => 243,
        _ => return None,
    })
}

/// Whether one binfmt_misc entry is enabled and matches ELF files of
/// `machine` (the `e_machine` field, bytes 18-19 of the header, little
/// endian for every architecture above except s390x).
fn entry_runs(text: &str, machine: u16) -> bool {
    let enabled = text.lines().next().is_some_and(|l| l.trim() == "enabled");
    let magic = text
        .lines()
        .find_map(|l| l.strip_prefix("magic "))
        .map(str::trim)
        .unwrap_or("");
    let offset_zero = text
        .lines()
        .find_map(|l| l.strip_prefix("offset "))
        .is_none_or(|o| o.trim() == "0");
    let field = |i: usize| {
        magic
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    let (Some(lo), Some(hi)) = (field(18), field(19)) else {
        return false;
    };
    let le = u16::from_le_bytes([lo, hi]);
    let be = u16::from_be_bytes([lo, hi]);
    enabled && offset_zero && magic.starts_with("7f454c46") && (le == machine || be == machine)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn a_qemu_entry_runs_its_architecture_only() {
        assert!(entry_runs(QEMU_AARCH64, 183));
        assert!(!entry_runs(QEMU_AARCH64, 40));
        assert!(!entry_runs(
            &QEMU_AARCH64.replace("enabled", "disabled"),
            183
        ));
    }

    #[test]
    fn a_folder_of_entries_is_searched() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!handled(dir.path(), "arm64"));
        fs::write(dir.path().join("status"), "enabled\n").unwrap();
        fs::write(dir.path().join("register"), "").unwrap();
        fs::write(dir.path().join("qemu-aarch64"), QEMU_AARCH64).unwrap();
        assert!(handled(dir.path(), "arm64"));
        assert!(!handled(dir.path(), "riscv64"));
        fs::write(dir.path().join("status"), "disabled\n").unwrap();
        assert!(!handled(dir.path(), "arm64"));
    }
}

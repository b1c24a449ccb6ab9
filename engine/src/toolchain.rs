//! The host toolchain in the keys of steps that run on the host.
//!
//! A `run` step without `image:` uses the machine's `/usr`, `/bin` and
//! `/lib`, so two machines with different compilers must not share its
//! results. Such a step is keyed by one of:
//!
//! - its declared `tools:`: each program resolved through the step's `PATH`
//!   (or given as an absolute path), keyed by the digest of the file it
//!   resolves to, of every shared library `ldd` lists for it and of the
//!   interpreter a `#!` script names; `/bin/sh` joins them for a `cmd:`.
//!   Upgrading a package the step does not use leaves its key alone.
//! - otherwise, a fingerprint of the host's package database (every
//!   installed package with its version and architecture): any package
//!   change re-runs every host step, which is safe and coarse.
//!
//! Paths never enter the key, only contents: the same compiler installed at
//! another place gives the same key. Steps in images, fixed-output steps
//! and built-in rules are not keyed by the host at all.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use strata_load::tools::resolve;
use strata_store::reapi::Property;

/// The property naming a declared tool's digest: `strata.tool.<name>`.
const TOOL_PROPERTY: &str = "strata.tool.";
/// The property holding the package database fingerprint.
const PACKAGES_PROPERTY: &str = "strata.host.packages";
/// How deep `#!` interpreters are followed (a script run by a script ...).
const MAX_INTERPRETERS: usize = 4;

/// What host steps are keyed by, computed once per build and shared.
#[derive(Default)]
pub struct HostToolchain {
    packages: OnceLock<String>,
    /// Digest of a resolved program with its libraries, by path.
    programs: Mutex<BTreeMap<PathBuf, String>>,
}

impl HostToolchain {
    /// The key properties of a host step: one per declared tool, or the
    /// package fingerprint when it declares none (`tools: None`).
    pub fn properties(
        &self,
        tools: Option<&[String]>,
        shell: bool,
    ) -> Result<Vec<Property>, String> {
        let Some(tools) = tools else {
            let fingerprint = self.packages.get_or_init(package_fingerprint);
            return Ok(vec![Property {
                name: PACKAGES_PROPERTY.into(),
                value: fingerprint.clone(),
            }]);
        };
        let shell = shell.then_some("/bin/sh");
        let mut properties = Vec::new();
        for tool in shell.into_iter().chain(tools.iter().map(String::as_str)) {
            let path = resolve(tool)?;
            properties.push(Property {
                name: format!("{TOOL_PROPERTY}{tool}"),
                value: self.program_digest(&path)?,
            });
        }
        properties.sort_by(|a, b| a.name.cmp(&b.name));
        properties.dedup_by(|a, b| a.name == b.name);
        Ok(properties)
    }

    fn program_digest(&self, path: &Path) -> Result<String, String> {
        if let Some(d) = self.programs.lock().expect("toolchain cache").get(path) {
            return Ok(d.clone());
        }
        let digest = program_digest(path, 0)?;
        self.programs
            .lock()
            .expect("toolchain cache")
            .insert(path.to_path_buf(), digest.clone());
        Ok(digest)
    }
}

/// A program's contents, its shared libraries' and its interpreter's.
fn program_digest(path: &Path, depth: usize) -> Result<String, String> {
    let file = file_digest(path)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"strata/tool/v1\0");
    hasher.update(file.as_bytes());
    for (soname, lib) in shared_libraries(path) {
        let digest = file_digest(&lib)?;
        hasher.update(format!("\0lib {soname} {digest}").as_bytes());
    }
    if let Some(interpreter) = interpreter(path)
        && depth < MAX_INTERPRETERS
    {
        let resolved = resolve(&interpreter)
            .map_err(|e| format!("the interpreter of {}: {e}", path.display()))?;
        let digest = program_digest(&resolved, depth + 1)?;
        hasher.update(format!("\0interpreter {digest}").as_bytes());
    }
    Ok(format!("blake3:{}", hasher.finalize().to_hex()))
}

fn file_digest(path: &Path) -> Result<String, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut std::io::BufReader::new(file), &mut hasher)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// The libraries `ldd` resolves for `path`, by soname, sorted. A static
/// program or a script has none (`ldd` says "not a dynamic executable").
fn shared_libraries(path: &Path) -> Vec<(String, PathBuf)> {
    let Ok(out) = Command::new("ldd").arg(path).env("LC_ALL", "C").output() else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    let mut libs = parse_ldd(&String::from_utf8_lossy(&out.stdout));
    libs.sort();
    libs.dedup();
    libs
}

/// `ldd` lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
fn parse_ldd(text: &str) -> Vec<(String, PathBuf)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (name, rest) = match line.split_once(" => ") {
                Some((name, rest)) => (name.trim(), rest),
                None => (line.split_whitespace().next()?, line),
            };
            let file = rest.split_whitespace().next()?;
            file.starts_with('/').then(|| {
                let soname = Path::new(name)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| name.to_string());
                (soname, PathBuf::from(file))
            })
        })
        .collect()
}

/// The program a `#!` line names.
fn interpreter(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = fs::File::open(path).ok()?.read(&mut head).ok()?;
    let head = head[..n].strip_prefix(b"#!")?;
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.split_whitespace().next().map(str::to_string)
}

/// The host's installed packages as one digest: dpkg's (name, architecture,
/// version) of every installed package, sorted, so the order or the other
/// fields of the status file do not matter; rpm's and apk's databases as
/// they are. Without any, every host step shares one "unknown" fingerprint
/// and only `tools:` tells machines apart.
fn package_fingerprint() -> String {
    if let Ok(status) = fs::read_to_string("/var/lib/dpkg/status") {
        return dpkg_fingerprint(&status);
    }
    for db in [
        "/var/lib/rpm/rpmdb.sqlite",
        "/var/lib/rpm/Packages",
        "/lib/apk/db/installed",
    ] {
        if let Ok(d) = file_digest(Path::new(db)) {
            return format!("blake3:{d}");
        }
    }
    "unknown".into()
}

fn dpkg_fingerprint(status: &str) -> String {
    let mut installed: Vec<String> = status
        .split("\n\n")
        .filter_map(|paragraph| {
            let field = |name: &str| {
                paragraph
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
            };
            let state = field("Status")?;
            state.ends_with(" installed").then(|| {
                format!(
                    "{}:{}={}",
                    field("Package").unwrap_or(""),
                    field("Architecture").unwrap_or(""),
                    field("Version").unwrap_or("")
                )
            })
        })
        .collect();
    installed.sort();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"strata/dpkg/v1\0");
    for p in &installed {
        hasher.update(p.as_bytes());
        hasher.update(b"\n");
    }
    format!("blake3:{}", hasher.finalize().to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_sonames_and_files() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\tlibgone.so.1 => not found\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                (
                    "libc.so.6".to_string(),
                    PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")
                ),
                (
                    "ld-linux-x86-64.so.2".to_string(),
                    PathBuf::from("/lib64/ld-linux-x86-64.so.2")
                ),
            ]
        );
    }

    const STATUS: &str = "Package: gcc-12\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.2.0-14\nDescription: x\n\nPackage: old\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\nPackage: make\nStatus: install ok installed\nArchitecture: amd64\nVersion: 4.3-4.1\n";

    #[test]
    fn the_package_fingerprint_follows_installed_versions_only() {
        let base = dpkg_fingerprint(STATUS);
        // Another order and other fields: the same packages.
        let (first, rest) = STATUS.split_once("\n\n").unwrap();
        let reordered = format!("{rest}\n\n{}", first.replace("Description: x\n", ""));
        assert_eq!(dpkg_fingerprint(&reordered), base);
        // A package removed but configured is not installed.
        assert_eq!(
            dpkg_fingerprint(&STATUS.replace("Version: 1\n", "Version: 2\n")),
            base
        );
        // An upgrade changes it.
        assert_ne!(
            dpkg_fingerprint(&STATUS.replace("12.2.0-14", "12.2.0-15")),
            base
        );
    }

    #[test]
    fn a_tool_is_keyed_by_contents_with_its_libraries_and_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("tool");
        fs::write(&script, "#!/bin/sh\necho one\n").unwrap();
        let toolchain = HostToolchain::default();
        let one = program_digest(&script, 0).unwrap();
        assert_eq!(toolchain.program_digest(&script).unwrap(), one);
        fs::write(&script, "#!/bin/sh\necho two\n").unwrap();
        assert_ne!(program_digest(&script, 0).unwrap(), one);
        // A copy elsewhere is the same tool.
        let copy = dir.path().join("copy");
        fs::copy(&script, &copy).unwrap();
        assert_eq!(program_digest(&copy, 0), program_digest(&script, 0));
        // /bin/sh is dynamic here: its libraries are found.
        assert!(!shared_libraries(Path::new("/bin/sh")).is_empty());
    }
}

//! Bazel as a third-party REAPI client: Debian's bazel-bootstrap (Bazel
//! 4.2.3), installed by `scripts/bazel-up.sh`, whose path `scripts/test.sh`
//! exports as `STRATA_BAZEL_BIN`.
//!
//! A test starts with `if !bazel::bazel_available() { return; }`; with
//! `STRATA_REQUIRE_BAZEL` set (as in CI) a missing Bazel fails the test
//! instead of skipping it.
//!
//! Debian's Bazel finds its install base and JDK through its system rc
//! (`/etc/bazel/bazelrc`), which 4.2.3 no longer reads: [`Bazel`] passes
//! the same settings itself (`--install_base=/usr/share/bazel
//! --trust_install_base`, `--host_javabase=@local_jdk//:jdk`) and reads no
//! rc file, so the build depends on nothing but the test's workspace. It
//! fetches nothing: a workspace with genrules only needs no external
//! repository.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Run;

/// Set (as `scripts/test.sh` does) to make a missing Bazel fail a test.
pub const REQUIRE_ENV: &str = "STRATA_REQUIRE_BAZEL";

/// Where Debian's bazel-bootstrap keeps Bazel's own files.
pub const INSTALL_BASE: &str = "/usr/share/bazel";

/// `STRATA_BAZEL_BIN`, else `bazel` on PATH; `None` without the install base.
pub fn bazel_bin() -> Option<String> {
    if !Path::new(INSTALL_BASE).is_dir() {
        return None;
    }
    if let Some(bin) = std::env::var_os("STRATA_BAZEL_BIN") {
        return Some(bin.to_string_lossy().into_owned()).filter(|b| Path::new(b).is_file());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("bazel"))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
    })
}

/// Whether the Bazel tests can run (see the module documentation).
pub fn bazel_available() -> bool {
    if bazel_bin().is_some() {
        return true;
    }
    assert!(
        std::env::var_os(REQUIRE_ENV).is_none(),
        "{REQUIRE_ENV} is set but Bazel is missing (run scripts/bazel-up.sh)"
    );
    eprintln!("skipped: Bazel is missing (run scripts/bazel-up.sh)");
    false
}

/// A Bazel workspace in a temporary folder with its own output root, so
/// one Bazel server serves every command of a test; the server is shut
/// down and the output root removed on drop.
pub struct Bazel {
    bin: String,
    workspace: tempfile::TempDir,
    root: tempfile::TempDir,
}

impl Bazel {
    /// An empty workspace (a `WORKSPACE` file and nothing else).
    pub fn new() -> Bazel {
        let bin = bazel_bin().expect("Bazel is missing (run scripts/bazel-up.sh)");
        let workspace = tempfile::tempdir().unwrap();
        fs::write(workspace.path().join("WORKSPACE"), "").unwrap();
        Bazel {
            bin,
            workspace,
            root: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.workspace.path()
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// `bazel-bin/<rel>` as the last build left it.
    pub fn output(&self, rel: &str) -> Vec<u8> {
        let p = self.path().join("bazel-bin").join(rel);
        fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
    }

    /// `bazel COMMAND ARGS` with the startup options that make Debian's
    /// Bazel run here (see the module documentation).
    pub fn command(&self, command: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir(self.path())
            .arg(format!("--install_base={INSTALL_BASE}"))
            .arg("--trust_install_base")
            .arg(format!("--output_user_root={}", self.root.path().display()))
            .args(["--nosystem_rc", "--nohome_rc", "--noworkspace_rc"])
            // A server left behind by a killed test goes away by itself.
            .arg("--max_idle_secs=300")
            .arg(command)
            .args(args);
        c
    }

    pub fn run(&self, command: &str, args: &[&str]) -> Run {
        self.command(command, args)
            .output()
            .expect("bazel runs")
            .into()
    }

    /// `bazel build` with the JDK and the environment pinned (actions see
    /// a fixed PATH, so their keys do not depend on the caller's).
    pub fn build(&self, args: &[&str]) -> Run {
        let mut all = vec![
            "--host_javabase=@local_jdk//:jdk",
            "--incompatible_strict_action_env",
            "--color=no",
        ];
        all.extend_from_slice(args);
        self.run("build", &all)
    }

    /// Bazel's execution log (`--execution_log_json_file`): one JSON
    /// object per spawn, one after the other.
    pub fn spawns(log: &Path) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(log)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", log.display()));
        serde_json::Deserializer::from_str(&text)
            .into_iter::<serde_json::Value>()
            .map(|v| v.expect("the execution log is JSON"))
            .collect()
    }

    /// Where a log file for this workspace's builds may go.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

impl Drop for Bazel {
    fn drop(&mut self) {
        let _ = self.command("shutdown", &[]).output();
        // Bazel makes parts of its output base read-only.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(self.root.path())
            .status();
    }
}

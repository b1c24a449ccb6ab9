//! Helpers for end-to-end tests: a temporary workspace with its own store,
//! and the real `strata` binary run on it.
#![allow(dead_code)]

pub mod bazel;
pub mod docker;
pub mod emulation;
pub mod execution;
pub mod remote;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary workspace and store.
pub struct Ws {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    _store_dir: tempfile::TempDir,
    /// Set for every `strata` this workspace runs.
    env: Vec<(String, PathBuf)>,
}

/// The outcome of one `strata` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The parsed `--json` document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Names of targets with `status` in the JSON document, sorted.
    pub fn with_status(&self, status: &str) -> Vec<String> {
        let doc = self.json();
        let mut names: Vec<String> = doc["targets"]
            .as_object()
            .expect("targets object")
            .iter()
            .filter(|(_, v)| v["status"] == status)
            .map(|(k, _)| k.clone())
            .collect();
        names.sort();
        names
    }

    pub fn executed(&self) -> Vec<String> {
        self.with_status("executed")
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn strata_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

impl Ws {
    pub fn new() -> Ws {
        let dir = tempfile::tempdir().expect("temp workspace");
        let store_dir = tempfile::tempdir().expect("temp store");
        let store = store_dir.path().join("store");
        Ws {
            dir,
            store,
            _store_dir: store_dir,
            env: Vec::new(),
        }
    }

    /// The workspace as a machine with no binfmt_misc handler sees it,
    /// whatever this one has registered: Strata reads handlers from an
    /// empty folder (`STRATA_BINFMT_DIR`).
    pub fn without_emulators(mut self) -> Ws {
        let empty = self._store_dir.path().join("no-binfmt");
        fs::create_dir_all(&empty).unwrap();
        self.env.push(("STRATA_BINFMT_DIR".into(), empty));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` at `rel`, creating folders.
    pub fn write(&self, rel: &str, content: &str) -> &Ws {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path().join(rel))
            .unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// A `strata` command in the workspace with this store, isolated from the
    /// caller's environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(strata_bin());
        c.current_dir(self.path())
            .args(args)
            .env("STRATA_STORE", &self.store)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("STRATA_BINFMT_DIR")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).output().expect("strata runs").into()
    }

    /// `strata build --json ARGS`, asserting the exit code.
    pub fn build_ok(&self, args: &[&str]) -> Run {
        let mut all = vec!["build", "--json"];
        all.extend_from_slice(args);
        let r = self.run(&all);
        assert_eq!(
            r.code, 0,
            "build failed:\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r
    }

    /// `strata build ARGS` expected to fail with `code`.
    pub fn build_fails(&self, args: &[&str], code: i32) -> Run {
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        let r = self.run(&all);
        assert_eq!(
            r.code, code,
            "expected exit {code}:\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r
    }
}

fn checked(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `script` with `sh -c` in `dir` (TZ=UTC, LC_ALL=C), asserts success,
/// and returns its stdout.
pub fn sh(dir: &Path, script: &str) -> String {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).current_dir(dir);
    checked(c, script)
}

/// Runs a program (`args[0]`) in `dir` (TZ=UTC, LC_ALL=C), asserts success,
/// and returns its stdout.
pub fn tool(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]).current_dir(dir);
    checked(c, &format!("{args:?}"))
}

/// `cmd` under another machine's habits: a TZ far from UTC, a French
/// locale and a tight umask, for the tests that outputs are identical
/// across them.
pub fn perturbed(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.env("TZ", "America/Lima")
        .env("LANG", "fr_FR.UTF-8")
        .env("LC_ALL", "fr_FR.UTF-8");
    // SAFETY: umask(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o027);
            Ok(())
        });
    }
    cmd
}

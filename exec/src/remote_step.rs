//! A step handed over by a remote execution service (`strata worker`): a
//! REAPI `Command` over an input root, run in the sandbox every `run` step
//! gets.
//!
//! A REAPI command writes its outputs among its inputs, at paths relative to
//! its working directory, where a `run` step reads inputs from a read-only
//! `work/` and writes to `$OUT`. So the input root is staged in the exec
//! root's writable `out/` (as copies: the step can write there, so no hard
//! link into the store may be), the parents of the declared outputs are
//! created (REAPI asks the worker to), and `work`, the folder the sandbox
//! enters, is a symlink to `out/<working directory>` inside the read-only
//! exec root. Everything else is the sandbox's: host toolchain read-only, no
//! network, no capabilities, the step's processes killed with it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::Uid;
use strata_rules::layout;
use strata_rules::run::Limits;
use strata_store::tree::{self, Placement};
use strata_store::{Digest, Store};

use crate::step::{self, GroupGuard, Isolation};
use crate::{fstree, sandbox};

/// What a REAPI `Command` asks to run.
#[derive(Clone, Debug, Default)]
pub struct RemoteCommand {
    pub arguments: Vec<String>,
    /// In the order given; the step sees exactly these.
    pub environment: Vec<(String, String)>,
    /// Relative to the input root; empty for the root itself.
    pub working_directory: String,
    /// The files and folders the step is expected to write, relative to
    /// the working directory.
    pub output_paths: Vec<String>,
    /// `None`: as long as it takes.
    pub timeout: Option<Duration>,
}

/// How the command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
    /// Killed at the action's timeout.
    TimedOut,
    /// The sandbox could not be set up; the helper's message.
    SetupFailed(String),
}

/// An input root staged for one command in a scratch folder of the
/// worker's store, removed when dropped.
pub struct Staged {
    scratch: PathBuf,
    _lock: fs::File,
}

impl Staged {
    /// The input root on disk: what the command wrote is read from here.
    pub fn input_root(&self) -> PathBuf {
        self.exec_root().join(layout::OUT)
    }

    /// The folder the output paths are relative to.
    pub fn working_directory(&self, command: &RemoteCommand) -> PathBuf {
        tree::rel_join(&self.input_root(), &command.working_directory)
    }

    pub fn stdout(&self) -> PathBuf {
        self.scratch.join("stdout")
    }

    pub fn stderr(&self) -> PathBuf {
        self.scratch.join("stderr")
    }

    fn exec_root(&self) -> PathBuf {
        self.scratch.join("exec")
    }

    /// Hands what the command wrote back to this process's user (a step of
    /// root's ran as another); for commands run outside the sandbox, in a
    /// container.
    pub fn reclaim_outputs(&self) -> std::io::Result<()> {
        sandbox::reclaim_outputs(&self.exec_root())
    }
}

/// Runs a command in a container image instead of the sandbox: the
/// worker's Docker Engine, for actions that name a `container-image`.
pub trait ContainerHost: Send + Sync {
    /// Runs `command` in `image` (a reference the engine takes:
    /// `NAME@sha256:<hex>` or an image ID `sha256:<hex>`) as `platform`
    /// (`linux/arm64`), with [`Staged::input_root`] mounted at
    /// [`CONTAINER_INPUT_ROOT`]; its output in [`Staged::stdout`] and
    /// [`Staged::stderr`]. Cancel-safe: dropping the future removes the
    /// container.
    fn run<'a>(
        &'a self,
        image: &'a str,
        platform: &'a str,
        staged: &'a Staged,
        command: &'a RemoteCommand,
    ) -> crate::BoxFuture<'a, Result<Ended, ContainerError>>;

    /// Removes the containers still there (the worker stops; a dropped
    /// run only scheduled its container's removal).
    fn shutdown(&self) -> crate::BoxFuture<'_, ()>;
}

/// Where a container sees the input root: the exec root of a local step,
/// so the command finds its sources and dependencies where a local step
/// in that image does.
pub const CONTAINER_INPUT_ROOT: &str = layout::EXEC_ROOT;

/// Why a command did not run in its container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerError {
    /// The engine lacks the image, or holds it for another platform: the
    /// action cannot run on this worker as it is.
    Image(String),
    /// The engine failed.
    Engine(String),
}

impl Drop for Staged {
    fn drop(&mut self) {
        fstree::remove_tree(&self.scratch);
    }
}

/// Why an input root could not be staged.
#[derive(Debug)]
pub enum StageError {
    /// A path of the command is not inside the input root: the action is
    /// malformed.
    BadPath {
        what: &'static str,
        path: String,
    },
    Store(strata_store::StoreError),
    Io(String),
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageError::BadPath { what, path } => write!(
                f,
                "{what} `{}` is not a relative path inside the input root",
                path.escape_debug()
            ),
            StageError::Store(e) => write!(f, "{e}"),
            StageError::Io(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for StageError {}

impl From<strata_store::StoreError> for StageError {
    fn from(e: strata_store::StoreError) -> StageError {
        StageError::Store(e)
    }
}

/// Checks that `path` is relative, clean and inside its base: no `..`, no
/// `.`, no empty component; empty is the base itself only if `may_be_empty`.
pub fn check_path(what: &'static str, path: &str, may_be_empty: bool) -> Result<(), StageError> {
    let bad = || StageError::BadPath {
        what,
        path: path.to_string(),
    };
    if path.is_empty() {
        return if may_be_empty { Ok(()) } else { Err(bad()) };
    }
    if path.contains('\0')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad());
    }
    Ok(())
}

/// Writes the stored tree `input_root` (all its blobs in `store`) into a
/// fresh scratch folder named `<prefix><random>`, ready for [`run`].
/// Blocking.
pub fn stage(
    store: &Store,
    prefix: &str,
    input_root: &Digest,
    command: &RemoteCommand,
) -> Result<Staged, StageError> {
    check_path("working directory", &command.working_directory, true)?;
    for out in &command.output_paths {
        check_path("output path", out, false)?;
    }
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StageError::Io(format!("{what} {}: {e}", p.display()))
    };
    let (scratch, lock) = step::create_scratch(store, prefix)
        .map_err(|e| StageError::Io(format!("cannot create a scratch folder: {e}")))?;
    let staged = Staged {
        scratch,
        _lock: lock,
    };
    let exec_root = staged.exec_root();
    for sub in [layout::OUT, layout::HOME, layout::TMP] {
        let dir = exec_root.join(sub);
        fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
    }
    let root = staged.input_root();
    tree::materialize(store.cas(), input_root, &root, Placement::Copy)?;
    // Folders are made one level at a time, never through a symlink of
    // the input root (which may point anywhere on this machine).
    create_inside(&root, &command.working_directory)?;
    for out in &command.output_paths {
        if let Some((parent, _)) = out.rsplit_once('/') {
            create_inside(&root, &join(&command.working_directory, parent))?;
        }
    }
    // Relative, so it points into the exec root wherever that is mounted.
    let target = Path::new(layout::OUT).join(&command.working_directory);
    let link = exec_root.join(layout::WORK);
    std::os::unix::fs::symlink(&target, &link).map_err(|e| io("cannot create", &link, e))?;
    if Uid::current().is_root() {
        // Root's steps run as `ROOT_STEP_ID`, which must be able to write
        // anywhere in the input root (outputs go among the inputs);
        // `sandbox::reclaim_outputs` hands it all back afterwards.
        fstree::chown_tree(&root, sandbox::ROOT_STEP_ID, sandbox::ROOT_STEP_ID)
            .map_err(|e| io("cannot hand over", &root, e))?;
    }
    Ok(staged)
}

/// `a` and `b` joined by `/`, either possibly empty.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// Creates the folder `rel` (checked by [`check_path`]) under `base` and
/// any missing above it, refusing to go through a symlink or a file.
fn create_inside(base: &Path, rel: &str) -> Result<(), StageError> {
    let mut path = base.to_path_buf();
    let mut shown = String::new();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        path.push(part);
        shown = join(&shown, part);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(StageError::BadPath {
                    what: "folder (a symlink or file in the input root)",
                    path: shown,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir(&path)
                .map_err(|e| StageError::Io(format!("cannot create {}: {e}", path.display())))?,
            Err(e) => {
                return Err(StageError::Io(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// The first folder on the way to `rel` under `base` that is a symlink, if
/// any (the last component may be one): reading through it could reach
/// files outside the input root.
pub fn symlink_on_the_way(base: &Path, rel: &str) -> Option<String> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let mut path = base.to_path_buf();
    let mut shown = String::new();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        path.push(part);
        shown = join(&shown, part);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Some(shown),
            Ok(m) if m.is_dir() => {}
            // Missing or a file: nothing lies below it.
            _ => return None,
        }
    }
    None
}

/// Runs `command` in the sandbox over `staged`, its output in
/// [`Staged::stdout`] and [`Staged::stderr`]. Cancel-safe: dropping the
/// future kills the step. `Err` when it could not be started or waited for.
pub async fn run(
    staged: &Staged,
    isolation: &Isolation,
    command: &RemoteCommand,
) -> Result<Ended, String> {
    let Isolation::Sandbox { helper } = isolation else {
        return Err("the sandbox is not available here".to_string());
    };
    if command.arguments.is_empty() {
        return Err("the command has no arguments".to_string());
    }
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let stdout = fs::File::create(staged.stdout()).map_err(|e| io("cannot create the log", e))?;
    let stderr = fs::File::create(staged.stderr()).map_err(|e| io("cannot create the log", e))?;
    let exec_root = staged.exec_root();
    let mut cmd = tokio::process::Command::new(helper);
    cmd.args(sandbox::helper_args(
        &exec_root,
        false,
        Limits::default(),
        None,
        &command.arguments,
    ));
    // No `pre_exec`: the helper dies with this process and keeps
    // descriptors from the step itself (as for `run` steps).
    cmd.env_clear()
        .envs(command.environment.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = crate::launch::spawn(cmd)
        .await
        .map_err(|e| io("cannot start the sandbox helper", e))?;
    let guard = GroupGuard(child.id().map(|p| p as i32));
    let waited = match command.timeout {
        Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    // Kills the helper (and with it the step's PID namespace) if it is
    // still running: at the timeout.
    drop(guard);
    let status = match waited {
        Some(status) => status.map_err(|e| io("cannot wait for the step", e))?,
        None => {
            let _ = child.wait().await;
            sandbox::reclaim_outputs(&exec_root)
                .map_err(|e| io("cannot take back the step's outputs", e))?;
            return Ok(Ended::TimedOut);
        }
    };
    sandbox::reclaim_outputs(&exec_root)
        .map_err(|e| io("cannot take back the step's outputs", e))?;
    Ok(match sandbox::HelperExit::of(status, &staged.stderr()) {
        sandbox::HelperExit::Exited(code) => Ended::Exited(code),
        sandbox::HelperExit::Signaled(signal) => Ended::Signaled(signal),
        sandbox::HelperExit::SetupFailed(why) => Ended::SetupFailed(why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_step_paths_stay_inside_the_input_root() {
        for good in ["a", "a/b", "bazel-out/k8-fastbuild/bin/x.txt", "a..b"] {
            assert!(check_path("output path", good, false).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "..", "a/../b", "./a", "a/.", "a\0b"] {
            assert!(check_path("output path", bad, false).is_err(), "{bad:?}");
        }
        assert!(check_path("working directory", "", true).is_ok());
    }

    #[test]
    fn remote_step_folders_are_never_made_through_symlinks() {
        let base = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), base.path().join("link")).unwrap();
        fs::write(base.path().join("file"), "").unwrap();
        create_inside(base.path(), "a/b").unwrap();
        assert!(base.path().join("a/b").is_dir());
        for bad in ["link/x", "link", "file/x"] {
            assert!(create_inside(base.path(), bad).is_err(), "{bad}");
        }
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(
            symlink_on_the_way(base.path(), "link/x/y"),
            Some("link".to_string())
        );
        assert_eq!(symlink_on_the_way(base.path(), "link"), None);
        assert_eq!(symlink_on_the_way(base.path(), "a/b/c"), None);
    }
}

//! Running one `run` step in a fresh scratch folder: staging its inputs,
//! spawning it (here, or through a `ContainerRunner`), checking and
//! capturing its outputs.
//!
//! The scratch folder `<store>/scratch/<name>` holds `exec/` (the exec root:
//! `work/`, `deps/`, `out/`, `home/`, `tmp/`), `root/` (the sandbox's mount
//! point) and the step's `stdout` and `stderr`. On failure it is kept for
//! inspection. A sandboxed step of the local executor (`run_reusing`) takes
//! its folder from the build's pool (`pool`) and gives it back emptied after
//! a success, its inputs mounted from trees made once per store (`trees`);
//! other steps (`run`) stage their inputs into a fresh folder, removed
//! after a success.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::SystemTime;

use strata_rules::layout;
use strata_rules::run::RunStep;
use strata_store::reapi;
use strata_store::tree::{self, Placement};
use strata_store::{Digest, Store, StoreError};

use crate::BoxFuture;
use crate::cgroup::{self, StepCgroup};
use crate::descriptors;
use crate::fstree::remove_tree;
use crate::keyring;
use crate::mask::Masks;
use crate::perturb::Perturbation;
use crate::pool::{Scratch, ScratchPool};
use crate::reorder;
use crate::sandbox;
use crate::source::SourceFile;
use crate::trees::{Trees, link_copy};

/// How steps are isolated on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Namespaces via `<helper> __sandbox`.
    Sandbox { helper: PathBuf },
    /// No namespaces available: run in the scratch folder only. The reason is
    /// shown once and recorded.
    Unsandboxed { reason: String },
}

/// Why a step failed.
#[derive(Debug)]
pub enum Failure {
    Exit(i32),
    Signal(i32),
    SandboxSetup(String),
    /// The kernel killed a process of the step at its memory limit
    /// (`limits: memory`, in bytes); how the step then ended.
    OverMemory {
        limit: u64,
        ended: Box<Failure>,
    },
    /// The step ran past its time limit (`limits: time`) and was killed,
    /// here or by a remote worker.
    TimedOut {
        limit: std::time::Duration,
    },
    /// The step declares a memory limit this machine cannot enforce.
    NoMemoryController {
        limit: u64,
        reason: String,
    },
    MissingOutput {
        out: String,
    },
    OutputKind {
        out: String,
        expected: &'static str,
    },
    DigestMismatch {
        declared: String,
        actual: String,
    },
    SourceChanged {
        path: PathBuf,
    },
    OutputThroughSymlink {
        out: String,
        link: String,
    },
    /// A built-in rule refused its input or could not produce its output.
    Rule(String),
    /// The step failed while the store's file system was full.
    DiskFull(Box<Failure>),
    Store(StoreError),
    Io(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Exit(code) => write!(f, "the command exited with code {code}"),
            Failure::Signal(sig) => write!(f, "the command was killed by signal {sig}"),
            Failure::SandboxSetup(msg) => write!(f, "the sandbox could not be set up: {msg}"),
            Failure::OverMemory { limit, ended } => write!(
                f,
                "the step went over its memory limit of {} (the kernel killed a process of it), and {ended}",
                cgroup::shown(*limit)
            ),
            Failure::TimedOut { limit } => write!(
                f,
                "the step passed its time limit of {} and was killed",
                strata_rules::run::shown_time(*limit)
            ),
            Failure::NoMemoryController { limit, reason } => write!(
                f,
                "the step was not started: it declares a memory limit of {}, but this machine offers no memory controller Strata can use ({reason}); drop `limits: memory` or run the build where cgroups allow it",
                cgroup::shown(*limit)
            ),
            Failure::MissingOutput { out } => {
                write!(f, "declared output `{out}` was not created in $OUT")
            }
            Failure::OutputKind { out, expected } => {
                write!(f, "declared output `{out}` is not {expected}")
            }
            Failure::DigestMismatch { declared, actual } => {
                write!(
                    f,
                    "output digest mismatch:\n  declared: {declared}\n  actual:   {actual}"
                )
            }
            Failure::OutputThroughSymlink { out, link } => write!(
                f,
                "declared output `{out}` lies behind the symlink `{link}`; outputs are read without following symlinks"
            ),
            Failure::Rule(msg) => write!(f, "{msg}"),
            Failure::DiskFull(inner) => write!(
                f,
                "{inner}, and the store's disk is full (No space left on device): free space and build again"
            ),
            Failure::SourceChanged { path } => write!(
                f,
                "source {} changed while the build was running",
                path.display()
            ),
            Failure::Store(e) if e.is_disk_full() => write!(f, "the store's disk is full: {e}"),
            Failure::Store(e) => write!(f, "{e}"),
            Failure::Io(msg) => write!(f, "{msg}"),
        }
    }
}

/// A failed step with what the user needs to see.
#[derive(Debug)]
pub struct StepFailure {
    pub failure: Failure,
    pub stdout: String,
    pub stderr: String,
    /// The kept scratch folder, for inspection.
    pub scratch: Option<PathBuf>,
}

impl StepFailure {
    /// A failure before or around the step (staging, the store, the
    /// executor): no logs, no scratch folder.
    pub fn without_logs(failure: Failure) -> StepFailure {
        StepFailure {
            failure,
            stdout: String::new(),
            stderr: String::new(),
            scratch: None,
        }
    }
}

/// A step that ran and whose output tree is in the store: its folder
/// records always, its files too unless `held_remotely`.
#[derive(Debug)]
pub struct StepSuccess {
    pub output: Digest,
    pub result: reapi::ActionResult,
    /// Some files of the output are held by the remote executor that ran
    /// the step, not by the store: fetched when something needs their
    /// bytes (`Executors::make_whole`). Such a result gets no action-cache
    /// entry, so every entry's blobs stay stored.
    pub held_remotely: bool,
}

impl StepSuccess {
    /// A result whose whole output tree is in the store.
    pub fn whole(output: Digest, result: reapi::ActionResult) -> StepSuccess {
        StepSuccess {
            output,
            result,
            held_remotely: false,
        }
    }
}

/// Everything one step needs.
pub struct StepRequest<'a> {
    /// Scratch folders of this target are named `<prefix><random>`.
    pub scratch_prefix: String,
    pub step: &'a RunStep,
    pub sources: &'a [SourceFile],
    pub deps: &'a [(String, Digest)],
    pub store: &'a Store,
    /// Where the step's processes run.
    pub runs_in: RunsIn<'a>,
    /// Set by `strata audit`. The step's environment is already perturbed
    /// (see `Perturbation::step_env`); this is the rest.
    pub perturb: Option<Perturbation>,
}

/// Where a `run` step's processes run.
#[derive(Clone, Copy)]
pub enum RunsIn<'a> {
    /// On this machine, isolated as this machine allows.
    Host(&'a Isolation),
    /// In a container (a step with `image:`).
    Container(&'a dyn ContainerRunner),
}

/// Runs a staged `run` step somewhere other than this machine's process
/// tree (a container), its exec root's folders mounted at the sandbox
/// layout and its logs written to `<scratch>/stdout` and `stderr`; stopped
/// at the step's time limit (`Failure::TimedOut`), its container gone.
pub trait ContainerRunner: Send + Sync {
    /// `Ok(None)` when the step exited 0; `Ok(Some)` how it failed.
    fn run<'a>(
        &'a self,
        step: &'a RunStep,
        scratch: &'a Path,
        exec_root: &'a Path,
    ) -> BoxFuture<'a, Result<Option<Failure>, Failure>>;
}

const LOG_TAIL: usize = 8 * 1024;

/// What a sandboxed step may reuse instead of staging its inputs into a
/// fresh scratch folder: a folder of the build's pool, and input trees
/// made once per store, bind-mounted by the sandbox helper.
#[derive(Clone)]
pub struct Reuse<'a> {
    pub pool: &'a ScratchPool,
    pub trees: Arc<Trees>,
}

/// Runs one step to completion in a fresh scratch folder, its inputs
/// staged into it. Cancel-safe: dropping the future kills the step's whole
/// process group.
pub async fn run(req: StepRequest<'_>) -> Result<StepSuccess, StepFailure> {
    run_with(req, None).await
}

/// Runs one sandboxed step in a scratch folder of `reuse`'s pool, its
/// inputs mounted from `reuse`'s trees (other steps: as [`run`]).
pub async fn run_reusing(
    req: StepRequest<'_>,
    reuse: Reuse<'_>,
) -> Result<StepSuccess, StepFailure> {
    let reuse = matches!(req.runs_in, RunsIn::Host(Isolation::Sandbox { .. })).then_some(reuse);
    run_with(req, reuse).await
}

/// Where a step runs: its scratch folder, held as long as this lives.
enum Hold<'a> {
    /// Made for this step: removed after a success.
    Own(fs::File),
    /// Taken from the pool: given back after a success.
    Pooled(Scratch, Reuse<'a>),
}

async fn run_with(
    req: StepRequest<'_>,
    reuse: Option<Reuse<'_>>,
) -> Result<StepSuccess, StepFailure> {
    let (scratch, hold, mounts) = match reuse {
        Some(reuse) => prepare_reused(&req, reuse).await?,
        None => {
            // A container mounts `deps/` read-only, as the sandbox does.
            let sandboxed = !matches!(req.runs_in, RunsIn::Host(Isolation::Unsandboxed { .. }));
            // The sandbox helper reverses listings itself, onto a tmpfs;
            // elsewhere only the order of creation can be reversed.
            let reverse = req.perturb.as_ref().is_some_and(|p| p.reverse_dirs)
                && !matches!(req.runs_in, RunsIn::Host(Isolation::Sandbox { .. }));
            let (scratch, lock) = prepare(
                req.store,
                &req.scratch_prefix,
                req.sources,
                req.deps,
                sandboxed,
                reverse,
            )
            .await?;
            (scratch, Hold::Own(lock), sandbox::Mounts::default())
        }
    };
    let ran = run_in(&req, &scratch, &mounts).await;
    match (ran, hold) {
        (Ok(success), Hold::Own(_lock)) => {
            remove_tree(&scratch);
            Ok(success)
        }
        (Ok(success), Hold::Pooled(folder, reuse)) => {
            reuse.pool.give_back(folder);
            Ok(success)
        }
        (Err(failure), Hold::Own(_lock)) => Err(failure),
        (Err(failure), Hold::Pooled(folder, reuse)) => {
            // Kept as a staged step's would be: with the inputs it saw.
            show_inputs(&reuse.trees, &mounts, &folder.path().join("exec"));
            Err(failure)
        }
    }
}

/// A scratch folder of the pool, renamed for this step, and the trees its
/// inputs are mounted from (made if missing).
async fn prepare_reused<'a>(
    req: &StepRequest<'_>,
    reuse: Reuse<'a>,
) -> Result<(PathBuf, Hold<'a>, sandbox::Mounts), StepFailure> {
    let (trees, sources, deps) = (reuse.trees.clone(), req.sources.to_vec(), req.deps.to_vec());
    let mounts = tokio::task::spawn_blocking(move || {
        let work = trees.sources(&sources)?;
        let deps = deps
            .into_iter()
            .map(|(name, output)| Ok((name, trees.dependency(&output)?)))
            .collect::<Result<Vec<_>, Failure>>()?;
        Ok(sandbox::Mounts { work, deps })
    })
    .await
    .map_err(|e| Failure::Io(e.to_string()))
    .and_then(|made| made)
    .map_err(StepFailure::without_logs)?;
    let folder = reuse
        .pool
        .take(req.store, &req.scratch_prefix)
        .map_err(|e| {
            StepFailure::without_logs(Failure::Io(format!("cannot create a scratch folder: {e}")))
        })?;
    Ok((
        folder.path().to_path_buf(),
        Hold::Pooled(folder, reuse),
        mounts,
    ))
}

/// Links (or copies) the trees a failed step had mounted into its kept
/// exec root, where a staged step's inputs would be. Best effort: the
/// failure is what the user needs.
fn show_inputs(trees: &Trees, mounts: &sandbox::Mounts, exec_root: &Path) {
    if let Some(work) = &mounts.work {
        let _ = link_copy(&trees.on_host(work), &exec_root.join(layout::WORK));
    }
    for (name, tree) in &mounts.deps {
        let dest = exec_root.join(layout::DEPS).join(name);
        if fs::create_dir(&dest).is_ok() {
            let _ = link_copy(&trees.on_host(tree), &dest);
        }
    }
}

/// Runs a prepared step in `scratch` and stores its outputs; the caller
/// removes, keeps or reuses the folder.
async fn run_in(
    req: &StepRequest<'_>,
    scratch: &Path,
    mounts: &sandbox::Mounts,
) -> Result<StepSuccess, StepFailure> {
    let scratch = scratch.to_path_buf();
    let exec_root = scratch.join("exec");
    let early = |failure: Failure| kept(&scratch, failure);

    let started = SystemTime::now();
    let status = match req.runs_in {
        RunsIn::Container(c) => c.run(req.step, &scratch, &exec_root).await,
        RunsIn::Host(isolation) => {
            spawn_and_wait(req, isolation, &scratch, &exec_root, mounts).await
        }
    }
    .map_err(early)?;
    let finished = SystemTime::now();
    let stdout_path = scratch.join("stdout");
    let stderr_path = scratch.join("stderr");
    mask_logs(&req.step.secrets, &scratch).map_err(early)?;
    let logs_failure = |failure: Failure| StepFailure {
        failure,
        stdout: tail(&stdout_path),
        stderr: tail(&stderr_path),
        scratch: Some(scratch.clone()),
    };
    if let Some(failure) = status {
        // A step that filled the store's disk usually just "exits 1" (its
        // own error message may not even fit in its log): say why.
        let failure = if disk_full(&scratch) {
            Failure::DiskFull(Box::new(failure))
        } else {
            failure
        };
        return Err(logs_failure(failure));
    }

    let store = req.store.clone();
    let step = req.step.clone();
    let out_dir = exec_root.join(layout::OUT);
    let (out_log, err_log) = (stdout_path.clone(), stderr_path.clone());
    let collected =
        tokio::task::spawn_blocking(move || collect(&store, &step, &out_dir, &out_log, &err_log))
            .await
            .map_err(|e| logs_failure(Failure::Io(e.to_string())))?;
    let (output, stdout_digest, stderr_digest) = collected.map_err(logs_failure)?;
    let result = action_result(
        output,
        Some((stdout_digest, stderr_digest)),
        started,
        finished,
    );
    Ok(StepSuccess::whole(output, result))
}

/// Masks the secrets a step received in its logs, before they are shown,
/// kept for inspection or stored.
pub fn mask_logs(secrets: &[String], scratch: &Path) -> Result<(), Failure> {
    let masks = Masks::new(secrets);
    for log in ["stdout", "stderr"] {
        let path = scratch.join(log);
        match masks.file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Failure::Io(format!(
                    "cannot mask secrets in the {log} log: {e}"
                )));
            }
        }
    }
    Ok(())
}

/// A failure before the step ran: no logs, the scratch folder kept.
pub fn kept(scratch: &Path, failure: Failure) -> StepFailure {
    StepFailure {
        failure,
        stdout: String::new(),
        stderr: String::new(),
        scratch: Some(scratch.to_path_buf()),
    }
}

/// A fresh scratch folder (held by its lock) with the step's inputs staged
/// in `exec/`.
pub async fn prepare(
    store: &Store,
    prefix: &str,
    sources: &[SourceFile],
    deps: &[(String, Digest)],
    sandboxed: bool,
    reverse: bool,
) -> Result<(PathBuf, fs::File), StepFailure> {
    let (scratch, lock) = create_scratch(store, prefix).map_err(|e| StepFailure {
        failure: Failure::Io(format!("cannot create a scratch folder: {e}")),
        stdout: String::new(),
        stderr: String::new(),
        scratch: None,
    })?;
    let (store, sources, deps, exec_root) = (
        store.clone(),
        sources.to_vec(),
        deps.to_vec(),
        scratch.join("exec"),
    );
    tokio::task::spawn_blocking(move || {
        stage(&store, &exec_root, &sources, &deps, sandboxed, reverse)
    })
    .await
    .map_err(|e| kept(&scratch, Failure::Io(e.to_string())))?
    .map_err(|f| kept(&scratch, f))?;
    Ok((scratch, lock))
}

/// The action-cache entry of a succeeded action: its output tree under
/// `out`, its logs if it had any, and when it ran.
pub fn action_result(
    output: Digest,
    logs: Option<(Digest, Digest)>,
    started: SystemTime,
    finished: SystemTime,
) -> reapi::ActionResult {
    reapi::ActionResult {
        output_directories: vec![reapi::OutputDirectory {
            path: layout::OUT.to_string(),
            tree_digest: None,
            is_topologically_sorted: false,
            root_directory_digest: Some(output.to_proto()),
        }],
        exit_code: 0,
        stdout_digest: logs.map(|(o, _)| o.to_proto()),
        stderr_digest: logs.map(|(_, e)| e.to_proto()),
        execution_metadata: Some(reapi::ExecutedActionMetadata {
            worker: String::new(),
            execution_start_timestamp: Some(timestamp(started)),
            execution_completed_timestamp: Some(timestamp(finished)),
            ..Default::default()
        }),
    }
}

fn timestamp(t: SystemTime) -> reapi::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    reapi::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Creates the exec root with the sources and dependency outputs in place;
/// with `reverse`, each of its input folders re-created in the reverse of
/// that order.
fn stage(
    store: &Store,
    exec_root: &Path,
    sources: &[SourceFile],
    deps: &[(String, Digest)],
    sandboxed: bool,
    reverse: bool,
) -> Result<(), Failure> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Failure::Io(format!("{what} {}: {e}", p.display()))
    };
    create_exec_root(exec_root).map_err(|e| io("cannot create", exec_root, e))?;
    let work = exec_root.join(layout::WORK);
    for src in sources {
        let dest = tree::rel_join(&work, &src.rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
        }
        fs::copy(&src.abs, &dest).map_err(|e| io("cannot stage source", &src.abs, e))?;
        let mode = if src.executable { 0o555 } else { 0o444 };
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
            .map_err(|e| io("cannot set mode of", &dest, e))?;
        if !src.unchanged() {
            return Err(Failure::SourceChanged {
                path: src.abs.clone(),
            });
        }
    }
    // In the sandbox `deps/` is mounted read-only, so hard links into the
    // store are safe; without it a step could write through them.
    let placement = if sandboxed {
        Placement::HardLink
    } else {
        Placement::Copy
    };
    for (name, output) in deps {
        let dest = exec_root.join(layout::DEPS).join(name);
        fs::create_dir(&dest).map_err(|e| io("cannot create", &dest, e))?;
        tree::materialize(store.cas(), output, &dest, placement).map_err(Failure::Store)?;
    }
    if reverse {
        for sub in [layout::WORK, layout::DEPS] {
            let dir = exec_root.join(sub);
            reorder::reverse_in_place(&dir).map_err(|e| io("cannot reorder", &dir, e))?;
        }
    }
    Ok(())
}

/// Whether the file system holding `path` has no space left for us.
fn disk_full(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.blocks_available() == 0 || s.files_available() == 0)
}

/// Creates the empty folders of an exec root.
pub fn create_exec_root(exec_root: &Path) -> std::io::Result<()> {
    for sub in [
        layout::WORK,
        layout::DEPS,
        layout::OUT,
        layout::HOME,
        layout::TMP,
    ] {
        fs::create_dir_all(exec_root.join(sub))?;
    }
    Ok(())
}

const SCRATCH_LOCK: &str = ".lock";

/// Creates `<scratch>/<prefix><random>` holding a lock for as long as the
/// returned file lives. The folder is prepared under a hidden name and
/// renamed into place only once locked, so a reaper never sees it unlocked
/// while its owner is alive.
pub fn create_scratch(store: &Store, prefix: &str) -> std::io::Result<(PathBuf, fs::File)> {
    let dir = store.scratch_dir();
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(&dir)?
        .keep();
    let lock = fs::File::create(tmp.join(SCRATCH_LOCK))?;
    lock.lock()?;
    loop {
        let name = format!("{prefix}{:016x}", rand_u64());
        let path = dir.join(name);
        match fs::rename(&tmp, &path) {
            Ok(()) => return Ok((path, lock)),
            // A non-empty folder of that name exists: pick another name.
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => continue,
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Removes this target's scratch folders that no live build holds: failures
/// kept for inspection, and leftovers of killed builds. Works across
/// processes, containers and machines sharing a store (locks, not PIDs).
pub fn remove_stale_scratch(store: &Store, prefix: &str) {
    for (path, held) in scratch_folders(store, prefix) {
        if !held {
            remove_tree(&path);
        }
    }
}

/// The scratch folders whose names start with `prefix`, each with whether a
/// live build holds it. A folder still being prepared (`.new-`, not locked
/// yet) counts as not held: only a caller that owns the prefix, or knows no
/// build is running (`gc`, under its lock), may remove such a folder.
pub fn scratch_folders(store: &Store, prefix: &str) -> Vec<(PathBuf, bool)> {
    let Ok(entries) = fs::read_dir(store.scratch_dir()) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, bool)> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .map(|e| {
            let held = match fs::File::open(e.path().join(SCRATCH_LOCK)) {
                Ok(f) => matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)),
                Err(_) => false,
            };
            (e.path(), held)
        })
        .collect();
    found.sort();
    found
}

/// Run in the child before exec: it gets SIGKILL when strata dies. (If
/// strata already died before the call took effect, the child is an orphan
/// and exits at once.) Without a sandbox this reaches the step's own shell,
/// not processes that shell detaches.
fn die_with_parent(parent: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// Kills a process group when dropped, so a cancelled build leaves no step behind.
pub(crate) struct GroupGuard(pub(crate) Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn spawn_and_wait(
    req: &StepRequest<'_>,
    isolation: &Isolation,
    scratch: &Path,
    exec_root: &Path,
    mounts: &sandbox::Mounts,
) -> Result<Option<Failure>, Failure> {
    let io = |what: &str, e: std::io::Error| Failure::Io(format!("{what}: {e}"));
    let stdout =
        fs::File::create(scratch.join("stdout")).map_err(|e| io("cannot create the log", e))?;
    let stderr =
        fs::File::create(scratch.join("stderr")).map_err(|e| io("cannot create the log", e))?;
    let step = req.step;
    // Created before the step starts, so that it joins its cgroup before
    // running anything; dropped (killed and removed) on every way out.
    let cgroup = match step.limits.memory {
        None => None,
        Some(limit) => match StepCgroup::create(limit) {
            Ok(c) => Some(std::sync::Arc::new(c)),
            Err(reason) => return Ok(Some(Failure::NoMemoryController { limit, reason })),
        },
    };
    let mut cmd = match isolation {
        Isolation::Sandbox { helper } => {
            let mut c = tokio::process::Command::new(helper);
            let mut args = sandbox::helper_args(
                exec_root,
                step.network,
                step.limits,
                cgroup.as_deref().map(StepCgroup::dir),
                &step.argv,
            );
            if let Some(p) = &req.perturb {
                args.splice(1..1, p.helper_flags());
            }
            args.splice(1..1, mounts.flags());
            // No `pre_exec`: the helper itself dies with strata and keeps
            // descriptors from the step (`sandbox::FLAG_PARENT`), so the
            // standard library spawns it with `posix_spawn`, not `fork`,
            // from the thread that outlives the runtime's (`launch`).
            c.args(args);
            c.env_clear().envs(step.env.iter().map(|(k, v)| (k, v)));
            c
        }
        Isolation::Unsandboxed { .. } => {
            let mut c = tokio::process::Command::new(&step.argv[0]);
            c.args(&step.argv[1..]);
            c.current_dir(exec_root.join(layout::WORK));
            // The keyed environment names the sandbox layout; point it at the
            // real scratch folder instead.
            let prefix = format!("{}/", layout::EXEC_ROOT);
            let real = format!("{}/", exec_root.display());
            // SAFETY: umask(2), close_range(2), keyctl(2), prctl(2), getppid(2),
            // _exit(2) are async-signal-safe.
            let parent = std::process::id() as libc::pid_t;
            let umask = req
                .perturb
                .as_ref()
                .map_or(sandbox::STEP_UMASK, |p| p.umask);
            let joins = cgroup.clone();
            unsafe {
                c.pre_exec(move || {
                    // First, so that all the step runs is counted.
                    if let Some(cgroup) = &joins {
                        cgroup.join_from_forked_child()?;
                    }
                    libc::umask(umask as libc::mode_t);
                    // Before 5.11 the kernel cannot; `keep_from_children` did at startup.
                    let _ = descriptors::close_on_exec_above_stdio();
                    keyring::join_fresh_session_keyring()?;
                    die_with_parent(parent)
                });
            }
            c.env_clear().envs(step.env.iter().map(|(k, v)| {
                let v = match v.strip_prefix(&prefix) {
                    Some(rest) if matches!(k.as_str(), "HOME" | "TMPDIR" | "OUT" | "DEPS") => {
                        format!("{real}{rest}")
                    }
                    _ => v.clone(),
                };
                (k.clone(), v)
            }));
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match crate::launch::spawn(cmd).await {
        Ok(c) => c,
        Err(e) => {
            // The keyed name: the real one may carry a secret.
            let program = step
                .keyed_command
                .arguments
                .first()
                .map(String::as_str)
                .unwrap_or("");
            return Ok(Some(Failure::Io(format!("cannot start `{program}`: {e}"))));
        }
    };
    let guard = GroupGuard(child.id().map(|p| p as i32));
    let waited = match step.limits.time {
        Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    // In the sandbox the step's processes died with its PID namespace;
    // unsandboxed, this kills whatever it left in its group. At the time
    // limit it kills the helper (and with it the namespace) or the step's
    // group, with its memory cgroup's processes killed when it goes.
    drop(guard);
    let Some(status) = waited else {
        let _ = child.wait().await;
        if matches!(isolation, Isolation::Sandbox { .. }) {
            sandbox::reclaim_outputs(exec_root)
                .map_err(|e| io("cannot take back the step's outputs", e))?;
        }
        return Ok(Some(Failure::TimedOut {
            limit: step.limits.time.unwrap_or_default(),
        }));
    };
    let status = status.map_err(|e| io("cannot wait for the step", e))?;
    if matches!(isolation, Isolation::Sandbox { .. }) {
        sandbox::reclaim_outputs(exec_root)
            .map_err(|e| io("cannot take back the step's outputs", e))?;
    }
    let failure = if matches!(isolation, Isolation::Sandbox { .. }) {
        match sandbox::HelperExit::of(status, &scratch.join("stderr")) {
            sandbox::HelperExit::Exited(0) => None,
            sandbox::HelperExit::Exited(code) => Some(Failure::Exit(code)),
            sandbox::HelperExit::Signaled(sig) => Some(Failure::Signal(sig)),
            sandbox::HelperExit::SetupFailed(why) => Some(Failure::SandboxSetup(why)),
        }
    } else {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(0), _) => None,
            (Some(code), _) => Some(Failure::Exit(code)),
            (None, Some(sig)) => Some(Failure::Signal(sig)),
            (None, None) => Some(Failure::Exit(-1)),
        }
    };
    // Read before the cgroup goes: a step the OOM killer hit usually dies
    // of SIGKILL or exits with 137, which alone would not say why.
    Ok(match (failure, cgroup) {
        (Some(ended), Some(cgroup)) if cgroup.went_over() => Some(Failure::OverMemory {
            limit: cgroup.limit(),
            ended: Box::new(ended),
        }),
        (failure, _) => failure,
    })
}

/// Checks the declared outputs, then moves them and the logs into the store.
fn collect(
    store: &Store,
    step: &RunStep,
    out_dir: &Path,
    stdout: &Path,
    stderr: &Path,
) -> Result<(Digest, Digest, Digest), Failure> {
    // Outputs are read on the host: a symlink on the way (`$OUT/x -> /etc`
    // with `outs: [x/passwd]`) would make us store host files. Only the last
    // component of an output may be a symlink, and it is kept verbatim.
    for out in &step.outs {
        refuse_symlinked_parents(out_dir, out)?;
    }
    for (out, &is_dir) in step.outs.iter().zip(&step.declared_dirs) {
        let path = tree::rel_join(out_dir, out);
        let meta =
            fs::symlink_metadata(&path).map_err(|_| Failure::MissingOutput { out: out.clone() })?;
        if is_dir && !meta.is_dir() {
            return Err(Failure::OutputKind {
                out: format!("{out}/"),
                expected: "a folder",
            });
        }
        if !is_dir && meta.is_dir() {
            return Err(Failure::OutputKind {
                out: out.clone(),
                expected: "a file (declare a folder with a trailing `/`)",
            });
        }
    }
    let output = match &step.fixed_output {
        Some(fixed) => {
            // Checked with the declared function, whatever the store uses
            // (a remote cache may have the store on SHA-256).
            let actual = tree::digest_on_disk(fixed.function, out_dir, &step.outs)
                .map_err(Failure::Store)?;
            if !fixed.matches(fixed.function, &actual) {
                return Err(Failure::DigestMismatch {
                    declared: fixed.to_string(),
                    actual: fixed.function.qualified(&actual),
                });
            }
            tree::capture(store.cas(), out_dir, &step.outs).map_err(Failure::Store)?
        }
        None => tree::capture(store.cas(), out_dir, &step.outs).map_err(Failure::Store)?,
    };
    let stdout = store.cas().put_file_move(stdout).map_err(Failure::Store)?;
    let stderr = store.cas().put_file_move(stderr).map_err(Failure::Store)?;
    Ok((output, stdout, stderr))
}

fn refuse_symlinked_parents(out_dir: &Path, out: &str) -> Result<(), Failure> {
    let mut path = out_dir.to_path_buf();
    let mut shown = String::from("$OUT");
    let parts: Vec<&str> = out.split('/').collect();
    let parents = std::iter::once(None).chain(parts[..parts.len() - 1].iter().map(Some));
    for part in parents {
        if let Some(p) = part {
            path.push(p);
            shown = format!("{shown}/{p}");
        }
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Failure::OutputThroughSymlink {
                    out: out.to_string(),
                    link: shown,
                });
            }
            Ok(m) if m.is_dir() => {}
            // Missing or not a folder: the output itself will be reported missing.
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// The last few KiB of a log, for the failure report.
pub fn tail(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(LOG_TAIL);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

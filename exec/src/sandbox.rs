//! The Linux sandbox a step runs in, in the manner of Bazel's linux-sandbox
//! and bubblewrap.
//!
//! `strata __sandbox [--parent=PID] [--cgroup=DIR] [--network] [--processes=N] EXEC_ROOT -- ARGV...`
//! (started by the executor, never by users; `strata audit` adds the
//! options that perturb the step, `FLAG_*`) first joins the step's memory
//! cgroup if it has one (`cgroup`), then enters new user, mount, PID,
//! UTS, IPC and (unless `--network`) network namespaces. Run by root, it
//! first becomes `ROOT_STEP_ID` on the host, so a step never holds host
//! uid 0: neither root's kernel keys nor an exemption from the process
//! limit reach it. Its child, PID 1 of the new PID namespace, builds a root
//! on a tmpfs that holds:
//!
//! - `/usr`, `/etc`, `/opt` and the `/bin`, `/lib*`, `/sbin` links or folders of
//!   the host, read-only: the toolchain;
//! - a minimal `/dev`, a fresh `/proc` (showing only the sandbox's processes),
//!   and `/tmp` backed by the exec root's `tmp/`;
//! - the exec root at `/strata`, read-only except `out/`, `home/` and `tmp/`,
//!   each bind-mounted on its own so none can be swapped for a symlink;
//!   with `--work=` and `--dep=` (`Mounts`), the input trees the executor
//!   made once per store (`trees`) mounted read-only over `work/` and at
//!   `deps/<name>` (then `deps/` is a read-only tmpfs of mount points).
//!
//! It then pivots into that root and detaches the host's, so the workspace,
//! the store and the home folder are not reachable, not even by absolute path.
//! The new root is remounted read-only; only `$OUT`, `$HOME` and `$TMPDIR`
//! are writable. With a network namespace only loopback exists.
//!
//! When the PID 1 child exits, the kernel kills everything left in the
//! namespace, so a step cannot leave processes behind. Before exec the child
//! starts a new session (no controlling terminal), drops every capability,
//! sets `no_new_privs`, joins a new session keyring and gets `RLIMIT_NPROC`
//! (`limits: processes`, counted per user namespace, so per step); the
//! caller (or `ROOT_STEP_ID`) is mapped to uid 0 inside, so steps see the
//! same owner whoever runs the build. Descriptors other than 0-2 never reach
//! it (`descriptors`).

use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, chdir, execvp, execvpe, fork, pivot_root, sethostname};

use strata_rules::layout;
use strata_rules::run::Limits;

/// Exit code of the helper when it could not set the sandbox up.
pub const SETUP_FAILED: i32 = 125;
/// The umask every step starts with, whatever the caller's.
pub const STEP_UMASK: u32 = 0o022;
/// The name of the hidden subcommand.
pub const SUBCOMMAND: &str = "__sandbox";
/// The host user and group a step runs as when strata runs as root:
/// `nobody` and `nogroup`, the kernel's overflow ids, which own nothing.
pub const ROOT_STEP_ID: u32 = 65534;
/// The sandbox root's mount point, beside the exec root.
const SANDBOX_ROOT: &str = "root";

/// Options `strata audit` puts before the exec root: another umask
/// (`--umask=0002`), the environment in reverse order, and input folders
/// listed in reverse order (copied onto a tmpfs; see `audit::reorder`).
pub const FLAG_UMASK: &str = "--umask=";
pub const FLAG_REVERSE_ENV: &str = "--reverse-env";
pub const FLAG_REVERSE_DIRS: &str = "--reverse-dirs";

/// How the helper was asked to perturb the step.
#[derive(Clone, Copy, Debug)]
struct Perturbed {
    umask: u32,
    reverse_env: bool,
    reverse_dirs: bool,
}

/// How many processes (threads included) a step may run at once unless its
/// `limits:` say otherwise: far above what a build tool needs, far below
/// what exhausts a machine's process ids (32,768 by default).
pub const DEFAULT_PROCESSES: u32 = 4096;
/// The helper's option carrying a step's process limit.
const FLAG_PROCESSES: &str = "--processes=";

/// The helper's option naming the cgroup a step joins before anything
/// else (`cgroup::StepCgroup`, for `limits: memory`).
const FLAG_CGROUP: &str = "--cgroup=";

/// The helper's first option: the pid of the strata that started it. The
/// helper asks for SIGKILL when its parent dies and checks that its parent
/// is still that process, itself, so the executor can start it without a
/// `pre_exec` hook: with none, the standard library spawns it with
/// `posix_spawn` (a vfork) instead of forking the whole multi-threaded
/// build process, page tables and all.
const FLAG_PARENT: &str = "--parent=";

/// The helper's options naming folders it mounts read-only over the exec
/// root's: `--work=PATH` at `work/`, and `--dep=NAME=PATH` at
/// `deps/NAME` (then `deps/` is a tmpfs holding the mount points). Paths
/// are relative to the scratch folder, the helper's working folder.
const FLAG_WORK: &str = "--work=";
const FLAG_DEP: &str = "--dep=";

/// Input folders the helper mounts instead of what the exec root holds
/// (trees made once per store, see `trees`). Empty: the exec root's own
/// `work/` and `deps/`, staged into it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    /// Mounted at `work/`.
    pub work: Option<PathBuf>,
    /// Each mounted at `deps/<name>`, in this order.
    pub deps: Vec<(String, PathBuf)>,
}

impl Mounts {
    /// The helper's options that mount these, to put before the exec root.
    pub fn flags(&self) -> Vec<OsString> {
        let mut flags = Vec::new();
        if let Some(work) = &self.work {
            let mut flag = OsString::from(FLAG_WORK);
            flag.push(work);
            flags.push(flag);
        }
        for (name, path) in &self.deps {
            let mut flag = OsString::from(format!("{FLAG_DEP}{name}="));
            flag.push(path);
            flags.push(flag);
        }
        flags
    }

    /// Reads `--dep=NAME=PATH` (dependency names never hold `=` or `/`).
    fn add_dep(&mut self, value: &str) -> Result<(), String> {
        let bad = || format!("bad dependency mount `{value}`");
        let (name, path) = value.split_once('=').ok_or_else(bad)?;
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || path.is_empty() {
            return Err(bad());
        }
        self.deps.push((name.to_string(), PathBuf::from(path)));
        Ok(())
    }
}

/// The arguments of the helper for one step.
pub fn helper_args(
    exec_root: &Path,
    network: bool,
    limits: Limits,
    cgroup: Option<&Path>,
    argv: &[String],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        SUBCOMMAND.into(),
        format!("{FLAG_PARENT}{}", std::process::id()).into(),
    ];
    if let Some(dir) = cgroup {
        let mut flag = OsString::from(FLAG_CGROUP);
        flag.push(dir);
        args.push(flag);
    }
    if network {
        args.push("--network".into());
    }
    let processes = limits.processes.unwrap_or(DEFAULT_PROCESSES);
    args.push(format!("{FLAG_PROCESSES}{processes}").into());
    args.push(exec_root.as_os_str().to_owned());
    args.push("--".into());
    args.extend(argv.iter().map(OsString::from));
    args
}

/// Entry point of `strata __sandbox ...`; never returns.
pub fn helper_main(args: &[OsString]) -> ! {
    let mut network = false;
    let mut processes = DEFAULT_PROCESSES;
    let mut perturbed = Perturbed {
        umask: STEP_UMASK,
        reverse_env: false,
        reverse_dirs: false,
    };
    let mut mounts = Mounts::default();
    let mut rest = args;
    // The exec root is absolute, so no option can be mistaken for it.
    while let Some(flag) = rest.first().and_then(|a| a.to_str()) {
        if let Some(pid) = flag.strip_prefix(FLAG_PARENT) {
            // Before the cgroup is joined: if strata dies, so does the helper (and with
            // it the step). If it died already, the helper is an orphan.
            // Descriptors: `main` marked every one above stderr
            // close-on-exec before calling us (`descriptors`).
            let pid: u32 = pid
                .parse()
                .unwrap_or_else(|_| fail(&format!("bad parent pid `{pid}`")));
            // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            if std::os::unix::process::parent_id() != pid {
                fail("strata exited before the step started");
            }
        } else if let Some(path) = flag.strip_prefix(FLAG_WORK) {
            mounts.work = Some(PathBuf::from(path));
        } else if let Some(dep) = flag.strip_prefix(FLAG_DEP) {
            mounts.add_dep(dep).unwrap_or_else(|e| fail(&e));
        } else if let Some(dir) = flag.strip_prefix(FLAG_CGROUP) {
            // Before anything else, so that all the step runs is counted,
            // and while the helper may still write there (as root).
            if let Err(e) = crate::cgroup::join(Path::new(dir)) {
                fail(&format!("cannot join the step's cgroup {dir}: {e}"));
            }
        } else if flag == "--network" {
            network = true;
        } else if let Some(n) = flag.strip_prefix(FLAG_PROCESSES) {
            processes = n
                .parse()
                .unwrap_or_else(|_| fail(&format!("bad process limit `{n}`")));
        } else if flag == FLAG_REVERSE_ENV {
            perturbed.reverse_env = true;
        } else if flag == FLAG_REVERSE_DIRS {
            perturbed.reverse_dirs = true;
        } else if let Some(octal) = flag.strip_prefix(FLAG_UMASK) {
            perturbed.umask = u32::from_str_radix(octal, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .unwrap_or_else(|| fail(&format!("bad umask `{octal}`")));
        } else {
            break;
        }
        rest = &rest[1..];
    }
    let (Some(exec_root), Some(sep)) = (rest.first(), rest.get(1)) else {
        fail(
            "usage: strata __sandbox [--parent=PID] [--cgroup=DIR] [--network] [--processes=N] [--umask=OCTAL] [--reverse-env] [--reverse-dirs] [--work=PATH] [--dep=NAME=PATH]... EXEC_ROOT -- ARGV...",
        )
    };
    if sep != "--" || rest.len() < 3 {
        fail(
            "usage: strata __sandbox [--parent=PID] [--cgroup=DIR] [--network] [--processes=N] [--umask=OCTAL] [--reverse-env] [--reverse-dirs] [--work=PATH] [--dep=NAME=PATH]... EXEC_ROOT -- ARGV...",
        );
    }
    let exec_root = PathBuf::from(exec_root);
    let argv: Vec<CString> = rest[2..]
        .iter()
        .map(|a| {
            CString::new(a.as_bytes()).unwrap_or_else(|_| fail("an argument contains a NUL byte"))
        })
        .collect();

    let parent = std::os::unix::process::parent_id();
    let exec_root = prepare_scratch(&exec_root).unwrap_or_else(|e| fail(&e));
    if Uid::current().is_root()
        && let Err(e) = become_step_user()
    {
        fail(&e);
    }
    let uid = Uid::current();
    let gid = Gid::current();
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if !network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = unshare(flags) {
        fail(&format!("cannot create namespaces: {e}"));
    }
    if let Err(e) = map_ids(uid, gid) {
        fail(&format!("cannot map user ids: {e}"));
    }
    // A change of credentials cleared the parent-death signal the executor
    // set: set it again, unless strata already died.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if std::os::unix::process::parent_id() != parent {
        fail("strata exited before the step started");
    }
    // SAFETY: the helper is single-threaded, so fork is sound.
    match unsafe { fork() } {
        Err(e) => fail(&format!("cannot fork: {e}")),
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => fail(&format!("cannot wait for the step: {e}")),
            }
        },
        Ok(ForkResult::Child) => {
            // If the helper dies (strata was killed), take the step with it.
            // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
            // (No orphan check: as PID 1 of its namespace the child's
            // getppid() is 0.)
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            // A session of its own: no controlling terminal to read from or
            // to push keystrokes into.
            let _ = nix::unistd::setsid();
            if let Err(e) = enter_root(&exec_root, &mounts, network, perturbed.reverse_dirs)
                .and_then(|()| drop_privileges())
                .and_then(|()| limit_processes(processes))
                .and_then(|()| {
                    ctx(crate::keyring::join_fresh_session_keyring(), || {
                        "cannot start a session keyring".into()
                    })
                })
            {
                fail(&e);
            }
            // The caller's umask must not shape the step's outputs.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(perturbed.umask));
            let err = if perturbed.reverse_env {
                execvpe(&argv[0], &argv, &reversed_env()).unwrap_err()
            } else {
                execvp(&argv[0], &argv).unwrap_err()
            };
            // The program name may hold a secret: describe, do not quote it.
            eprintln!("strata-sandbox: cannot execute the step's program: {err}");
            std::process::exit(127);
        }
    }
}

/// Readies the scratch folder holding `exec_root` for a helper that may no
/// longer be its owner, and makes it the working folder. Returns the exec
/// root relative to it: the folders above the scratch folder (a store under
/// `/root`, say) need not be open to the step's user.
///
/// As root this makes the scratch folder traversable (not listable) and
/// hands `out/`, `home/` and `tmp/` to `ROOT_STEP_ID`, the only folders the
/// step writes; `reclaim_outputs` hands `out/` back afterwards. The sandbox
/// root's mount point is created here, while the helper may still write.
fn prepare_scratch(exec_root: &Path) -> Result<PathBuf, String> {
    let (Some(scratch), Some(name)) = (exec_root.parent(), exec_root.file_name()) else {
        return Err(format!("bad exec root {}", exec_root.display()));
    };
    mkdir(&scratch.join(SANDBOX_ROOT))?;
    if Uid::current().is_root() {
        use std::os::unix::fs::PermissionsExt;
        ctx(
            fs::set_permissions(scratch, fs::Permissions::from_mode(0o711)),
            || format!("cannot open {} to the step's user", scratch.display()),
        )?;
        for rw in [layout::OUT, layout::HOME, layout::TMP] {
            let dir = exec_root.join(rw);
            ctx(
                std::os::unix::fs::chown(&dir, Some(ROOT_STEP_ID), Some(ROOT_STEP_ID)),
                || format!("cannot hand {} to the step's user", dir.display()),
            )?;
        }
    }
    ctx(chdir(scratch), || {
        format!("cannot enter {}", scratch.display())
    })?;
    Ok(PathBuf::from(name))
}

/// When Strata runs as root, its sandboxed steps run as `ROOT_STEP_ID`,
/// which must read and traverse everything Strata stages for them (the exec
/// root, `work/`, `deps/`). A umask such as 077 would make each such folder
/// root's alone and the sandbox impossible to set up, so as root the umask
/// keeps only its write bits for group and others. Outputs do not depend on
/// it: the store records modes itself, and a step gets umask 022.
pub fn let_the_step_user_read() {
    if !Uid::effective().is_root() {
        return;
    }
    // SAFETY: umask(2) cannot fail; called at startup, before any thread.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old & 0o022);
    }
}

/// Hands what a step run by root left in `out/` back to the caller before
/// it is moved into the store, whose objects belong to whoever runs strata
/// (not to `ROOT_STEP_ID`). Called once the step's processes are gone; a
/// no-op unless the caller is root.
pub fn reclaim_outputs(exec_root: &Path) -> std::io::Result<()> {
    let (uid, gid) = (Uid::current(), Gid::current());
    if !uid.is_root() {
        return Ok(());
    }
    // Symlinks are neither followed nor changed through; a step may leave
    // folders nested far past PATH_MAX.
    crate::fstree::chown_tree(&exec_root.join(layout::OUT), uid.as_raw(), gid.as_raw())
}

/// Root's steps run as `ROOT_STEP_ID` on the host (uid 0 inside their user
/// namespace, as any caller's). Under host uid 0 a step would share root's
/// keys (a key's owner may read it without possessing it) and escape the
/// process limit (the kernel never applies `RLIMIT_NPROC` to host root).
///
/// Capabilities are kept across the switch so that creating the user
/// namespace is never refused as an unprivileged one (Debian and Ubuntu can
/// restrict those); the namespace then replaces them, and the step drops
/// them all.
fn become_step_user() -> Setup {
    let id = ROOT_STEP_ID;
    ctx(nix::unistd::setgroups(&[]), || {
        "cannot drop supplementary groups".into()
    })?;
    // SAFETY: prctl with PR_SET_KEEPCAPS takes a flag.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "cannot keep capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    ctx(
        nix::unistd::setresgid(Gid::from_raw(id), Gid::from_raw(id), Gid::from_raw(id)),
        || format!("cannot switch to group {id}"),
    )?;
    ctx(
        nix::unistd::setresuid(Uid::from_raw(id), Uid::from_raw(id), Uid::from_raw(id)),
        || format!("cannot switch to user {id}"),
    )?;
    // The switch made the process undumpable, which gives its /proc files
    // to root: it could not write its own uid_map.
    // SAFETY: prctl with PR_SET_DUMPABLE takes a flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "cannot make the helper dumpable: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut caps = capabilities()?;
    for set in &mut caps {
        set.effective = set.permitted;
    }
    set_capabilities(&caps)
}

/// Drops every capability, for good: with an empty bounding set even a root
/// step gains none at exec, and `no_new_privs` rules out setuid programs. So
/// the step cannot remount anything (the read-only views of `deps/` and the
/// toolchain hold) nor reach kernel knobs.
fn drop_privileges() -> Setup {
    // SAFETY: prctl with valid arguments.
    unsafe {
        for cap in 0..64 {
            // Numbers past the kernel's last capability fail with EINVAL.
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    set_capabilities(&[CapData::default(); 2])?;
    // SAFETY: prctl with valid arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "cannot set no_new_privs: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Lets the step run at most `processes` processes of its own. The count
/// is of the tasks of its user in its user namespace, so it covers exactly
/// this step (its user id is mapped from the caller's, or from
/// `ROOT_STEP_ID`: the kernel never limits host root), and one more is
/// allowed for the helper waiting outside. A limit above the caller's own
/// hard limit is lowered to it.
fn limit_processes(processes: u32) -> Setup {
    let wanted = libc::rlim_t::from(processes) + 1;
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NPROC, &mut current) != 0 {
            return Err(format!(
                "cannot read the process limit: {}",
                std::io::Error::last_os_error()
            ));
        }
        let limit = wanted.min(current.rlim_max);
        let new = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        if libc::setrlimit(libc::RLIMIT_NPROC, &new) != 0 {
            return Err(format!(
                "cannot limit processes: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// `struct __user_cap_header_struct` of <linux/capability.h>.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`: one of the two 32-bit halves of each set.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// This thread's capability sets.
fn capabilities() -> Result<[CapData; 2], String> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) with live pointers to a header and two data structs.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot read capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(data)
}

fn set_capabilities(data: &[CapData; 2]) -> Setup {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset(2) with live pointers to a header and two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(format!(
            "cannot set capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// This process's environment in reverse order: the engine hands it over
/// sorted (`Command` keeps variables in a map), so the step sees it
/// reversed.
fn reversed_env() -> Vec<CString> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.reverse();
    env
}

fn fail(msg: &str) -> ! {
    eprintln!("strata-sandbox: {msg}");
    std::process::exit(SETUP_FAILED);
}

fn map_ids(uid: Uid, gid: Gid) -> std::io::Result<()> {
    fs::write("/proc/self/setgroups", "deny")?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

type Setup = Result<(), String>;

fn ctx<T, E: std::fmt::Display>(
    r: Result<T, E>,
    what: impl FnOnce() -> String,
) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn enter_root(exec_root: &Path, mounts: &Mounts, network: bool, reverse_dirs: bool) -> Setup {
    let none: Option<&str> = None;
    ctx(
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none),
        || "cannot make mounts private".into(),
    )?;
    let root = exec_root
        .parent()
        .ok_or("exec root has no parent")?
        .join(SANDBOX_ROOT);
    ctx(
        mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=1m"),
        ),
        || "cannot mount the sandbox root".into(),
    )?;

    for dir in ["usr", "etc", "opt"] {
        let host = Path::new("/").join(dir);
        if host.is_dir() && !host.is_symlink() {
            bind(&host, &root.join(dir), true)?;
        }
    }
    for entry in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(entry);
        if let Ok(target) = fs::read_link(&host) {
            ctx(
                std::os::unix::fs::symlink(&target, root.join(entry)),
                || format!("cannot link /{entry}"),
            )?;
        } else if host.is_dir() {
            bind(&host, &root.join(entry), true)?;
        }
    }
    make_dev(&root)?;

    let proc_dir = root.join("proc");
    mkdir(&proc_dir)?;
    ctx(
        mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            none,
        ),
        || "cannot mount /proc".into(),
    )?;
    // Kernel knobs stay read-only, as in Docker's default profile.
    for knob in ["sys", "sysrq-trigger", "irq", "bus"] {
        let p = proc_dir.join(knob);
        if p.exists() {
            bind(&p, &p, true)?;
        }
    }
    bind(&exec_root.join(layout::TMP), &root.join("tmp"), false)?;
    // The exec root is read-only as a whole (so `work/`, `deps/` and the
    // mount points cannot be replaced, say by a symlink to the host); only
    // `$OUT`, `$HOME` and `$TMPDIR` are writable, each its own mount.
    let strata = root.join(layout::EXEC_ROOT.trim_start_matches('/'));
    bind(exec_root, &strata, true)?;
    mount_inputs(mounts, &strata)?;
    if reverse_dirs {
        for sub in [layout::WORK, layout::DEPS] {
            reversed_copy(&strata.join(sub), &root)?;
        }
    }
    for rw in [layout::OUT, layout::HOME, layout::TMP] {
        bind(&exec_root.join(rw), &strata.join(rw), false)?;
    }

    ctx(sethostname("strata"), || "cannot set the host name".into())?;
    if !network {
        loopback_up()?;
    }

    let old = root.join(".old-root");
    mkdir(&old)?;
    ctx(chdir(&root), || "cannot enter the sandbox root".into())?;
    ctx(pivot_root(".", ".old-root"), || {
        "cannot pivot into the sandbox root".into()
    })?;
    ctx(chdir("/"), || "cannot enter /".into())?;
    ctx(umount2("/.old-root", MntFlags::MNT_DETACH), || {
        "cannot detach the host root".into()
    })?;
    ctx(fs::remove_dir("/.old-root"), || {
        "cannot remove the old root mount point".into()
    })?;
    ctx(
        mount(
            none,
            "/",
            none,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            none,
        ),
        || "cannot make the sandbox root read-only".into(),
    )?;
    let work = format!("{}/{}", layout::EXEC_ROOT, layout::WORK);
    ctx(chdir(work.as_str()), || format!("cannot enter {work}"))?;
    Ok(())
}

/// Mounts the input trees over the read-only exec root at `strata`: the
/// source tree at `work/`, and a read-only tmpfs at `deps/` holding a
/// mount point per dependency, each its tree, read-only. The mount points
/// live in the sandbox's memory: nothing is created on the store's disk.
fn mount_inputs(mounts: &Mounts, strata: &Path) -> Setup {
    let none: Option<&str> = None;
    if let Some(work) = &mounts.work {
        bind(work, &strata.join(layout::WORK), true)?;
    }
    if mounts.deps.is_empty() {
        return Ok(());
    }
    let deps = strata.join(layout::DEPS);
    ctx(
        mount(
            Some("tmpfs"),
            &deps,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=64k"),
        ),
        || "cannot mount a tmpfs on deps/".into(),
    )?;
    for (name, tree) in &mounts.deps {
        bind(tree, &deps.join(name), true)?;
    }
    ctx(
        mount(
            none,
            &deps,
            none,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            none,
        ),
        || "cannot make deps/ read-only".into(),
    )
}

/// Covers `dst` with a tmpfs holding a copy of what is mounted there now
/// (the exec root's folder, or the trees mounted over it), each folder
/// listing its entries in the reverse of the original's order, then makes
/// it read-only. The original is read through a mount beside it on the
/// sandbox root (`root`).
fn reversed_copy(dst: &Path, root: &Path) -> Setup {
    let none: Option<&str> = None;
    let src = root.join(".unordered");
    bind(dst, &src, true)?;
    let src = src.as_path();
    ctx(
        mount(
            Some("tmpfs"),
            dst,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        || format!("cannot mount a tmpfs on {}", dst.display()),
    )?;
    ctx(
        crate::reorder::relist(src, dst, crate::reorder::How::Copy),
        || format!("cannot copy {} in reverse order", src.display()),
    )?;
    ctx(
        mount(
            none,
            dst,
            none,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            none,
        ),
        || format!("cannot make {} read-only", dst.display()),
    )?;
    ctx(umount2(src, MntFlags::MNT_DETACH), || {
        format!("cannot unmount {}", src.display())
    })?;
    ctx(fs::remove_dir(src), || {
        format!("cannot remove {}", src.display())
    })
}

fn mkdir(p: &Path) -> Setup {
    ctx(fs::create_dir_all(p), || {
        format!("cannot create {}", p.display())
    })
}

/// Bind-mounts `src` at `dst` (created as needed), read-only if asked,
/// keeping the flags the kernel locks on the source mount.
fn bind(src: &Path, dst: &Path, read_only: bool) -> Setup {
    let none: Option<&str> = None;
    if src.is_dir() {
        mkdir(dst)?;
    } else if !dst.exists() {
        ctx(fs::write(dst, b""), || {
            format!("cannot create {}", dst.display())
        })?;
    }
    ctx(
        mount(
            Some(src),
            dst,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        ),
        || format!("cannot bind {} to {}", src.display(), dst.display()),
    )?;
    if read_only {
        let locked = locked_flags(src);
        ctx(
            mount(
                none,
                dst,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
                none,
            ),
            || format!("cannot make {} read-only", dst.display()),
        )?;
    }
    Ok(())
}

/// Flags of the mount holding `p` that an unprivileged remount must keep.
fn locked_flags(p: &Path) -> MsFlags {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let Ok(st) = statvfs(p) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (from, to) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(from) {
            out |= to;
        }
    }
    out
}

fn make_dev(root: &Path) -> Setup {
    let dev = root.join("dev");
    mkdir(&dev)?;
    ctx(
        mount(
            Some("tmpfs"),
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0755,size=64k"),
        ),
        || "cannot mount /dev".into(),
    )?;
    for node in ["null", "zero", "full", "random", "urandom"] {
        let host = Path::new("/dev").join(node);
        if host.exists() {
            bind(&host, &dev.join(node), false)?;
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ctx(std::os::unix::fs::symlink(target, dev.join(link)), || {
            format!("cannot link /dev/{link}")
        })?;
    }
    let shm = dev.join("shm");
    mkdir(&shm)?;
    ctx(
        mount(
            Some("tmpfs"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        || "cannot mount /dev/shm".into(),
    )
}

/// Brings up `lo` in the new network namespace, so steps can still talk to
/// themselves over 127.0.0.1.
fn loopback_up() -> Setup {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq with a NUL-terminated name.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!(
                "cannot open a socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            result = Err(format!(
                "cannot read loopback flags: {}",
                std::io::Error::last_os_error()
            ));
        } else {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) < 0 {
                result = Err(format!(
                    "cannot bring loopback up: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        libc::close(fd);
        result
    }
}

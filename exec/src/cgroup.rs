//! A step's memory limit (`limits: {memory: ...}`), enforced by the
//! kernel's memory cgroup controller.
//!
//! Each step with a limit gets a cgroup of its own, `strata/<pid>-<random>`
//! beside the cgroup Strata runs in (`<pid>` is the build's), with the
//! limit set and swap ruled out. The step joins it before it runs anything:
//! the sandbox helper writes itself into it first thing (`--cgroup=DIR`), an
//! unsandboxed step does so between fork and exec. When the step ends,
//! whatever is left in the cgroup is killed (so an unsandboxed step leaves
//! no daemon behind either) and the cgroup is removed; the kernel's count
//! of OOM kills in it tells a step that went over its limit from one that
//! merely failed. Cgroups of builds that were killed are removed by the
//! next build and by `strata store gc` (`remove_stale`).
//!
//! Both cgroup versions are used: v1 (`N:memory:/path` in
//! /proc/self/cgroup, under the memory hierarchy's mount point) and v2 (the
//! `0::/path` line, with `memory` among the controllers of its cgroup2
//! folder). Where neither can be used (none mounted, or no right to create
//! a cgroup), a step that declares a limit fails to start, saying so: a
//! declared limit is never silently dropped.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The folder, beside Strata's own cgroup, that holds its steps' cgroups.
const PARENT: &str = "strata";
/// How long a step's leftovers get to die before its cgroup is given up.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Which cgroup interface the memory controller is reached through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where this process's memory cgroup is: the folder that receives
/// `strata/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    pub version: Version,
    pub own: PathBuf,
}

impl Controller {
    /// Finds the memory controller of this process, if one is mounted.
    pub fn find() -> Option<Controller> {
        let own = fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
        locate(&own, &mounts, |dir| {
            fs::read_to_string(dir.join("cgroup.controllers")).ok()
        })
    }

    fn parent(&self) -> PathBuf {
        self.own.join(PARENT)
    }

    /// Creates `strata/` and, on v2, lets the memory controller reach the
    /// cgroups below it. Errors say why this machine cannot limit memory.
    fn prepare(&self) -> Result<(), String> {
        let parent = self.parent();
        match fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "cannot create the cgroup {}: {e} (run as root, or in a cgroup delegated to this user)",
                    parent.display()
                ));
            }
        }
        if self.version == Version::V2 {
            for dir in [&self.own, &parent] {
                enable_memory_below(dir)?;
            }
        }
        Ok(())
    }
}

/// The memory cgroup folder of a process whose /proc/self/cgroup is `own`
/// and /proc/self/mountinfo is `mounts`; `controllers` reads a cgroup2
/// folder's `cgroup.controllers`. A v1 memory hierarchy wins over v2, which
/// then cannot hold the memory controller.
fn locate(
    own: &str,
    mounts: &str,
    controllers: impl Fn(&Path) -> Option<String>,
) -> Option<Controller> {
    let mut v2 = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(names), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        for mount in mounts.lines().filter_map(Mount::parse) {
            // The mount shows the hierarchy from `mount.root` down; a
            // cgroup outside it cannot be reached through this mount.
            let Some(below) = Path::new(path).strip_prefix(mount.root).ok() else {
                continue;
            };
            let dir = mount.point.join(below);
            if names.split(',').any(|n| n == "memory")
                && mount.fstype == "cgroup"
                && mount.options.split(',').any(|o| o == "memory")
            {
                return Some(Controller {
                    version: Version::V1,
                    own: dir,
                });
            }
            if names.is_empty()
                && mount.fstype == "cgroup2"
                && v2.is_none()
                && controllers(&dir).is_some_and(|c| c.split_whitespace().any(|n| n == "memory"))
            {
                v2 = Some(Controller {
                    version: Version::V2,
                    own: dir,
                });
            }
        }
    }
    v2
}

/// The fields of a /proc/self/mountinfo line a cgroup lookup needs.
struct Mount<'a> {
    root: &'a str,
    point: PathBuf,
    fstype: &'a str,
    options: &'a str,
}

impl<'a> Mount<'a> {
    fn parse(line: &'a str) -> Option<Mount<'a>> {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        Some(Mount {
            root: fields.get(3)?,
            point: PathBuf::from(unescape(fields.get(4)?)),
            fstype: fields.get(sep + 1)?,
            options: fields.get(sep + 3)?,
        })
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = field
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// On cgroup v2, a cgroup's children have a memory limit only once the
/// cgroup enables the controller for them (`+memory`); the kernel refuses
/// that in a cgroup that holds processes, unless it is the root.
fn enable_memory_below(dir: &Path) -> Result<(), String> {
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&subtree).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == "memory") {
        return Ok(());
    }
    fs::write(&subtree, "+memory").map_err(|e| {
        format!(
            "cannot enable the memory controller below {}: {e} (a cgroup v2 folder that holds processes cannot; run Strata in a cgroup of its own, such as `systemd-run --user --scope -p Delegate=yes strata ...`)",
            dir.display()
        )
    })
}

/// This process's memory controller, prepared once: its `strata/` folder
/// exists and cgroups of dead builds in it are gone. The error says why
/// steps cannot have a memory limit here.
fn controller() -> Result<&'static Controller, &'static str> {
    static FOUND: OnceLock<Result<Controller, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let c = Controller::find().ok_or_else(|| {
                "neither a cgroup v1 memory hierarchy nor a cgroup2 folder with the memory controller is mounted for this process".to_string()
            })?;
            c.prepare()?;
            sweep(&c);
            Ok(c)
        })
        .as_ref()
        .map_err(String::as_str)
}

/// The cgroup of one step, killed and removed when dropped.
#[derive(Debug)]
pub struct StepCgroup {
    dir: PathBuf,
    version: Version,
    limit: u64,
    /// `<dir>/cgroup.procs`, ready for a forked child that may not allocate.
    procs: CString,
}

impl StepCgroup {
    /// A new cgroup allowing `limit` bytes of memory and no swap. The error
    /// says why the machine offers no memory controller Strata can use.
    pub fn create(limit: u64) -> Result<StepCgroup, String> {
        let controller = controller().map_err(str::to_string)?;
        let parent = controller.parent();
        let dir = loop {
            let dir = parent.join(format!("{}-{:016x}", std::process::id(), random()));
            match fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create the cgroup {}: {e}", dir.display())),
            }
        };
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| format!("the cgroup path {} holds a NUL byte", dir.display()))?;
        let cgroup = StepCgroup {
            dir,
            version: controller.version,
            limit,
            procs,
        };
        cgroup.set_limit()?;
        Ok(cgroup)
    }

    fn set_limit(&self) -> Result<(), String> {
        let bytes = self.limit.to_string();
        // The memory+swap limit may not be below the memory limit, so it
        // is set second; equal, it leaves the step no swap.
        let (memory, swap, swap_value) = match self.version {
            Version::V1 => (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                bytes.as_str(),
            ),
            Version::V2 => ("memory.max", "memory.swap.max", "0"),
        };
        let write = |file: &str, value: &str| {
            fs::write(self.dir.join(file), value).map_err(|e| {
                format!(
                    "cannot set {} of the cgroup {}: {e}",
                    file,
                    self.dir.display()
                )
            })
        };
        write(memory, &bytes)?;
        // Without swap accounting (v1) or swap (v2) the file is absent.
        if self.dir.join(swap).exists() {
            write(swap, swap_value)?;
        }
        Ok(())
    }

    /// The cgroup's folder, which the sandbox helper joins (`join`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Moves the calling process into this cgroup. Only async-signal-safe
    /// calls on memory prepared beforehand: meant for `pre_exec`.
    pub fn join_from_forked_child(&self) -> io::Result<()> {
        join_raw(&self.procs)
    }

    /// Whether the kernel's OOM killer killed a process of the step because
    /// the cgroup was at its limit.
    pub fn went_over(&self) -> bool {
        match self.version {
            Version::V1 => {
                let control = fs::read_to_string(self.dir.join("memory.oom_control"));
                match control.ok().and_then(|c| counter(&c, "oom_kill")) {
                    Some(kills) => kills > 0,
                    // Kernels before 4.13 do not count kills: any failure
                    // to charge the limit is the best sign left.
                    None => fs::read_to_string(self.dir.join("memory.failcnt"))
                        .ok()
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0),
                }
            }
            Version::V2 => fs::read_to_string(self.dir.join("memory.events"))
                .ok()
                .and_then(|e| counter(&e, "oom_kill"))
                .is_some_and(|kills| kills > 0),
        }
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        remove(&self.dir);
    }
}

/// Moves the calling process into the cgroup `dir`: the sandbox helper
/// does so first thing.
pub fn join(dir: &Path) -> io::Result<()> {
    // "0" names the writer itself, whatever PID namespace it is in.
    fs::write(dir.join("cgroup.procs"), "0")
}

fn join_raw(procs: &CStr) -> io::Result<()> {
    // SAFETY: open(2), write(2) and close(2) are async-signal-safe; the
    // path and the buffer live for the calls.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// The value of `key` in a cgroup file of `key value` lines.
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Kills whatever is left in the cgroup `dir` and removes it. Returns
/// whether it is gone.
fn remove(dir: &Path) -> bool {
    // v2 kills the whole cgroup at once, forks in flight included.
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let pids = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let mut any = false;
        for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            any = true;
            // SAFETY: kill(2) with a pid read from the cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // A killed process leaves the cgroup as it exits, before its parent
        // reaps it; until then the kernel refuses rmdir (EBUSY).
        match fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(if any { 5 } else { 20 }))
            }
            Err(_) => return false,
        }
    }
}

/// The cgroups that builds no longer running left in `strata/` (killed
/// before they could clean up). Cgroups of live builds are not listed.
pub fn stale() -> Vec<PathBuf> {
    Controller::find().map_or_else(Vec::new, |c| stale_in(&c))
}

/// Removes the cgroups `stale` lists, killing what is still in them (an
/// unsandboxed step's detached processes). Returns how many went.
pub fn remove_stale() -> usize {
    stale().iter().filter(|dir| remove(dir)).count()
}

fn sweep(controller: &Controller) -> usize {
    stale_in(controller)
        .iter()
        .filter(|dir| remove(dir))
        .count()
}

fn stale_in(controller: &Controller) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(controller.parent()) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if path.is_dir() && !alive(pid) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Whether a process with this pid exists (ours or another user's).
fn alive(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return true;
    }
    // SAFETY: kill(2) with signal 0 only checks.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn random() -> u64 {
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

/// A byte count as users write it: `512 MiB`, `2 GiB`, or bytes.
pub fn shown(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_memory_hierarchy_is_found_under_its_mount_point() {
        let own = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        let c = locate(own, MOUNTS, |_| Some("memory pids".into())).unwrap();
        assert_eq!(c.version, Version::V1);
        assert_eq!(c.own, Path::new("/sys/fs/cgroup/memory/process_api/abc"));
    }

    #[test]
    fn v2_is_used_only_with_the_memory_controller() {
        let own = "0::/user.slice/build.scope\n";
        let mounts = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let c = locate(own, mounts, |d| {
            assert_eq!(d, Path::new("/sys/fs/cgroup/user.slice/build.scope"));
            Some("cpu io memory pids".into())
        })
        .unwrap();
        assert_eq!(c.version, Version::V2);
        assert_eq!(c.own, Path::new("/sys/fs/cgroup/user.slice/build.scope"));
        assert_eq!(locate(own, mounts, |_| Some("cpu pids".into())), None);
        // This machine's kind: v1 controllers, and a cgroup2 mount without
        // memory (hugetlb only).
        assert_eq!(
            locate("8:pids:/\n0::/\n", MOUNTS, |_| Some("hugetlb".into())),
            None
        );
    }

    #[test]
    fn a_cgroup_outside_the_mounted_subtree_is_not_reached() {
        let own = "4:memory:/elsewhere\n";
        let mounts = "35 31 0:32 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(locate(own, mounts, |_| None), None);
        let own = "4:memory:/docker/x/job\n";
        let c = locate(own, mounts, |_| None).unwrap();
        assert_eq!(c.own, Path::new("/sys/fs/cgroup/memory/job"));
    }

    #[test]
    fn counters_are_read_by_name() {
        let control = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(counter(control, "oom_kill"), Some(2));
        assert_eq!(counter(control, "oom"), None);
        let events = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 0\noom_group_kill 0\n";
        assert_eq!(counter(events, "oom_kill"), Some(0));
    }

    #[test]
    fn sizes_are_shown_in_the_largest_whole_unit() {
        assert_eq!(shown(512 << 20), "512 MiB");
        assert_eq!(shown(2 << 30), "2 GiB");
        assert_eq!(shown(1536 << 10), "1536 KiB");
        assert_eq!(shown(1_000_000), "1000000 bytes");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}

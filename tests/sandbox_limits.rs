//! What a step cannot take from the process that started `strata`: its open
//! file descriptors and its kernel keyrings; and how many processes, how
//! much memory and how much time a step may take.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use common::{Run, Ws};

/// Every build removes the cgroups that killed builds left (whichever test
/// killed them), so a test that leaves one behind on purpose runs alone.
static CGROUP_CLEANUP: RwLock<()> = RwLock::new(());

fn alongside_others() -> RwLockReadGuard<'static, ()> {
    CGROUP_CLEANUP.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    CGROUP_CLEANUP.write().unwrap_or_else(|e| e.into_inner())
}

/// A step that looks for descriptor 9 and, if it finds it, lists the folder
/// behind it and plants a file there.
const FD_PROBE: &str = r#"
targets:
  probe:
    rule: run
    cmd: |
      if [ -e /proc/self/fd/9 ]; then
        ls /proc/self/fd/9/ > $OUT/seen
        echo planted > /proc/self/fd/9/planted
      fi
      ls /proc/self/fd/ >> $OUT/fds
      touch $OUT/seen
    outs: [seen, fds]
"#;

/// `strata build` started with descriptor 9 open (and not close-on-exec) on
/// a host folder holding `secret.txt`, as `(exec 9</dir; strata build)` does.
fn build_with_fd_9(ws: &Ws, sandbox: bool) -> (Run, tempfile::TempDir) {
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("secret.txt"), "host secret\n").unwrap();
    let dir = fs::File::open(host.path()).unwrap();
    let fd = dir.as_raw_fd();
    let mut cmd = ws.cmd(&["build", "--json"]);
    if !sandbox {
        cmd.env("STRATA_SANDBOX", "off");
    }
    // SAFETY: dup2(2) is async-signal-safe; its copy is not close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run: Run = cmd.output().unwrap().into();
    drop(dir);
    (run, host)
}

fn assert_fd_9_unreachable(sandbox: bool) {
    let ws = Ws::new();
    ws.write("BUILD.yaml", FD_PROBE);
    let (r, host) = build_with_fd_9(&ws, sandbox);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        ws.read("out/probe/seen"),
        "",
        "the step listed the host folder through fd 9"
    );
    assert!(
        !host.path().join("planted").exists(),
        "the step wrote into the host folder through fd 9"
    );
    // Only stdin, stdout, stderr and the descriptor `ls` opens to read
    // the folder reach the step.
    let fds = ws.read("out/probe/fds");
    assert_eq!(
        fds.lines().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "{fds}"
    );
}

#[test]
fn an_inherited_descriptor_does_not_reach_a_sandboxed_step() {
    let _cgroups = alongside_others();
    assert_fd_9_unreachable(true);
}

#[test]
fn an_inherited_descriptor_does_not_reach_an_unsandboxed_step() {
    let _cgroups = alongside_others();
    assert_fd_9_unreachable(false);
}

/// A step that tries every way to a key the caller holds: reading it by
/// id, and searching its user (`@u`) and session (`@s`) keyrings. Each way
/// that works is a line of its output.
const KEY_PROBE: &str = r#"
vars:
  key_u: ""
  key_s: ""
targets:
  probe:
    rule: run
    env: {KEY_U: "${key_u}", KEY_S: "${key_s}"}
    cmd: |
      keyctl print $KEY_U >/dev/null 2>&1 && echo "read the @u key" >> $OUT/reached
      keyctl print $KEY_S >/dev/null 2>&1 && echo "read the @s key" >> $OUT/reached
      keyctl search @u user strata-test-u >/dev/null 2>&1 && echo "found the @u key" >> $OUT/reached
      keyctl search @s user strata-test-s >/dev/null 2>&1 && echo "found the @s key" >> $OUT/reached
      touch $OUT/reached
    outs: [reached]
"#;

/// `strata build` started in a session keyring of its own that holds a key
/// and links the caller's user keyring (root's, in CI) as a login session
/// does, which holds another key that its owner may read (`setperm`) even
/// without possessing it. Both are checked readable before the build; the
/// user key is removed afterwards. Returns what the probe step reached.
fn keys_reached(sandbox: bool) -> String {
    let ws = Ws::new();
    ws.write("BUILD.yaml", KEY_PROBE);
    let script = r#"
ku=$(keyctl add user strata-test-u host-secret-u @u) || exit 99
keyctl link @u @s && keyctl setperm "$ku" 0x3f3f0000 || exit 99
ks=$(keyctl add user strata-test-s host-secret-s @s) || exit 99
keyctl print "$ku" >/dev/null && keyctl print "$ks" >/dev/null || exit 99
"$STRATA" build --json --var key_u="$ku" --var key_s="$ks"
code=$?
keyctl unlink "$ku" @u >/dev/null
exit $code
"#;
    let mut cmd = Command::new("keyctl");
    cmd.args(["session", "-", "sh", "-c", script])
        .current_dir(ws.path())
        .env("STRATA", common::strata_bin())
        .env("STRATA_STORE", &ws.store)
        .env("NO_COLOR", "1");
    if !sandbox {
        cmd.env("STRATA_SANDBOX", "off");
    }
    let r: Run = cmd
        .output()
        .expect("keyctl runs (Debian package keyutils)")
        .into();
    assert_ne!(r.code, 99, "cannot add keys here: {}", r.stderr);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    ws.read("out/probe/reached")
}

#[test]
fn a_sandboxed_step_reaches_no_key_of_the_caller() {
    let _cgroups = alongside_others();
    assert_eq!(keys_reached(true), "");
}

#[test]
fn an_unsandboxed_step_reaches_no_key_of_the_callers_session() {
    let _cgroups = alongside_others();
    let reached = keys_reached(false);
    assert!(!reached.contains("@s"), "{reached}");
}

/// A bounded fork bomb: 200 sleeping children, more than its limit allows.
/// It stops by itself (and its children end with its namespace), so without
/// a limit this test fails instead of exhausting the machine.
const FORK_BOMB: &str = r#"
targets:
  bomb:
    rule: run
    limits: {processes: 64}
    cmd: |
      for i in $(seq 200); do sleep 30 & done
      echo "all 200 started" > $OUT/o
    outs: [o]
  bystander:
    rule: run
    cmd: "echo fine > $OUT/o"
    outs: [o]
"#;

#[test]
fn a_fork_bomb_fails_its_step_and_leaves_the_build_usable() {
    let _cgroups = alongside_others();
    let ws = Ws::new();
    ws.write("BUILD.yaml", FORK_BOMB);
    let start = std::time::Instant::now();
    let r = ws.build_fails(&["--json", "-k"], 1);
    assert_eq!(r.executed(), ["bystander"]);
    assert_eq!(r.with_status("failed"), ["bomb"]);
    // The shell says why: it could not fork (dash: "Cannot fork").
    assert!(r.stderr.contains("fork"), "{}", r.stderr);
    // The step did not wait for its sleeping children.
    assert!(start.elapsed() < std::time::Duration::from_secs(25));
    assert_eq!(ws.read("out/bystander/o"), "fine\n");
    // The next build runs steps again.
    let r = ws.build_fails(&["--json", "-k", "--no-cache"], 1);
    assert_eq!(r.executed(), ["bystander"]);
}

/// A step limited to 64 MiB that commits `mib` MiB (every page written), and
/// an independent bystander. `timeout` bounds the hog whatever happens.
fn memory_hog(mib: u32) -> String {
    format!(
        r#"
targets:
  hog:
    rule: run
    limits: {{memory: 64MiB}}
    cmd: |
      set -e
      timeout 60 python3 -c 'b = bytearray({mib} * 1024 * 1024); b[::4096] = b"x" * len(b[::4096])'
      echo "committed {mib} MiB" > $OUT/o
    outs: [o]
  bystander:
    rule: run
    cmd: "echo fine > $OUT/o"
    outs: [o]
"#
    )
}

/// The folder of this process's memory cgroup: cgroup v2 (a `0::` line,
/// with `memory` among the controllers of its cgroup2 mount) or v1 (an
/// `N:memory:` line, under the memory controller's mount point).
fn own_memory_cgroup() -> PathBuf {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let path = path.trim_start_matches('/');
        for mount in mounts.lines() {
            let fields: Vec<&str> = mount.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-").unwrap();
            let (point, fstype, options) = (fields[4], fields[sep + 1], fields[sep + 3]);
            let dir = Path::new(point).join(path);
            if controllers.is_empty() && fstype == "cgroup2" {
                let available =
                    fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
                if available.split_whitespace().any(|c| c == "memory") {
                    return dir;
                }
            }
            if controllers.split(',').any(|c| c == "memory")
                && fstype == "cgroup"
                && options.split(',').any(|o| o == "memory")
            {
                return dir;
            }
        }
    }
    panic!("this machine offers no memory cgroup controller (the CI machines do)");
}

/// The cgroups a `strata` process with this pid left under the memory
/// controller (Strata names them `strata/<pid>-<random>`).
fn cgroups_left_by(pid: u32) -> Vec<String> {
    let Ok(entries) = fs::read_dir(own_memory_cgroup().join("strata")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{pid}-")))
        .collect()
}

/// `strata build --json -k --no-cache`, with the pid it ran as.
fn build_counting_cgroups(ws: &Ws, sandbox: bool) -> (Run, u32) {
    let mut cmd = ws.cmd(&["build", "--json", "-k", "--no-cache"]);
    if !sandbox {
        cmd.env("STRATA_SANDBOX", "off");
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap().into(), pid)
}

fn assert_memory_hog_fails_alone(sandbox: bool) {
    let ws = Ws::new();
    ws.write("BUILD.yaml", &memory_hog(300));
    for _ in 0..2 {
        let start = std::time::Instant::now();
        let (r, pid) = build_counting_cgroups(&ws, sandbox);
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        assert_eq!(r.executed(), ["bystander"]);
        assert_eq!(r.with_status("failed"), ["hog"]);
        assert!(
            r.stderr
                .contains("the step went over its memory limit of 64 MiB"),
            "{}",
            r.stderr
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(50));
        assert_eq!(ws.read("out/bystander/o"), "fine\n");
        assert_eq!(cgroups_left_by(pid), Vec::<String>::new());
    }
}

#[test]
fn a_sandboxed_step_over_its_memory_limit_fails_alone() {
    let _cgroups = alongside_others();
    assert_memory_hog_fails_alone(true);
}

#[test]
fn an_unsandboxed_step_over_its_memory_limit_fails_alone() {
    let _cgroups = alongside_others();
    assert_memory_hog_fails_alone(false);
}

fn assert_memory_within_limit_is_fine(sandbox: bool) {
    let ws = Ws::new();
    ws.write("BUILD.yaml", &memory_hog(16));
    let (r, pid) = build_counting_cgroups(&ws, sandbox);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.executed(), ["bystander", "hog"]);
    assert_eq!(ws.read("out/hog/o"), "committed 16 MiB\n");
    assert_eq!(cgroups_left_by(pid), Vec::<String>::new());
}

#[test]
fn a_sandboxed_step_within_its_memory_limit_succeeds() {
    let _cgroups = alongside_others();
    assert_memory_within_limit_is_fine(true);
}

#[test]
fn an_unsandboxed_step_within_its_memory_limit_succeeds() {
    let _cgroups = alongside_others();
    assert_memory_within_limit_is_fine(false);
}

/// One step with a memory limit and one without.
const LIMITED_AND_FREE: &str = r#"
targets:
  limited:
    rule: run
    limits: {memory: 64MiB}
    cmd: "echo ran > $OUT/o"
    outs: [o]
  free:
    rule: run
    cmd: "echo fine > $OUT/o"
    outs: [o]
"#;

#[test]
fn a_memory_limit_without_a_memory_controller_fails_its_step_only() {
    let _cgroups = alongside_others();
    // `nobody` may create no cgroup beside Strata's (root's) own: for it
    // the machine offers no memory controller.
    let ws = Ws::new();
    ws.write("BUILD.yaml", LIMITED_AND_FREE);
    fs::set_permissions(ws.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let store = ws.path().join("store");
    let r: Run = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::strata_bin())
        .args(["build", "--json", "-k", "--store"])
        .arg(&store)
        .current_dir(ws.path())
        .env("HOME", ws.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("setpriv (util-linux) runs")
        .into();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.executed(), ["free"]);
    assert_eq!(r.with_status("failed"), ["limited"]);
    assert!(
        r.stderr.contains("declares a memory limit of 64 MiB")
            && r.stderr.contains("offers no memory controller"),
        "{}",
        r.stderr
    );
    assert!(!ws.path().join("out/limited").exists());
}

/// A build killed while its unsandboxed step (limited, so in a cgroup)
/// left a process of its own session behind: the step's cgroup outlives
/// the build, with that process in it.
fn kill_a_build_leaving_its_cgroup(ws: &Ws) -> (u32, Vec<String>) {
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  lingers:
    rule: run
    limits: {memory: 64MiB}
    cmd: |
      setsid sleep 300 < /dev/null > /dev/null 2>&1 &
      sleep 300
    outs: [o]
"#,
    );
    let mut child = ws
        .cmd(&["build"])
        .env("STRATA_SANDBOX", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let name = loop {
        let left = cgroups_left_by(pid);
        let procs = left.first().map(|n| {
            fs::read_to_string(
                own_memory_cgroup()
                    .join("strata")
                    .join(n)
                    .join("cgroup.procs"),
            )
            .unwrap_or_default()
        });
        // The step's shell and both sleeps.
        if let (Some(n), Some(p)) = (left.first(), procs)
            && p.lines().count() >= 3
        {
            break n.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let procs = fs::read_to_string(
        own_memory_cgroup()
            .join("strata")
            .join(&name)
            .join("cgroup.procs"),
    )
    .unwrap();
    assert!(
        !procs.trim().is_empty(),
        "the detached sleep should outlive the build"
    );
    let leftovers = procs.lines().map(|p| p.trim().to_string()).collect();
    (pid, leftovers)
}

/// Whether any of these processes still runs (zombies excepted).
fn any_alive(pids: &[String]) -> bool {
    pids.iter().any(|p| {
        fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    })
}

#[test]
fn the_next_build_removes_the_cgroup_of_a_killed_build() {
    let _cgroups = alone();
    let ws = Ws::new();
    let (pid, leftovers) = kill_a_build_leaving_its_cgroup(&ws);
    // A build with no memory limit of its own cleans up too.
    ws.write(
        "BUILD.yaml",
        "targets:\n  free:\n    rule: run\n    cmd: \"echo fine > $OUT/o\"\n    outs: [o]\n",
    );
    ws.build_ok(&[]);
    assert_eq!(cgroups_left_by(pid), Vec::<String>::new());
    assert!(!any_alive(&leftovers), "{leftovers:?}");
}

#[test]
fn store_gc_removes_the_cgroup_of_a_killed_build() {
    let _cgroups = alone();
    let ws = Ws::new();
    let (pid, leftovers) = kill_a_build_leaving_its_cgroup(&ws);
    let r = ws.run(&["store", "gc", "--max-size", "1G"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(cgroups_left_by(pid), Vec::<String>::new());
    assert!(!any_alive(&leftovers), "{leftovers:?}");
}

/// A step that would sleep 30 s (and leaves a child sleeping too) under a
/// 1 s time limit, and an independent bystander. `marker` is a sleep time
/// no other process uses, to find what the step left running.
fn sleeper(marker: &str) -> String {
    format!(
        r#"
targets:
  sleeper:
    rule: run
    limits: {{time: 1s}}
    cmd: |
      echo "going to sleep"
      sleep {marker} &
      sleep {marker}
      echo woke > $OUT/o
    outs: [o]
  bystander:
    rule: run
    cmd: "echo fine > $OUT/o"
    outs: [o]
"#
    )
}

/// Processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn assert_step_past_its_time_limit_fails_alone(sandbox: bool, marker: &str) {
    let ws = Ws::new();
    ws.write("BUILD.yaml", &sleeper(marker));
    // Twice: a step that passed its limit is never cached, so the next
    // build runs it again (and the bystander is a cache hit).
    for round in 0..2 {
        let start = std::time::Instant::now();
        let mut cmd = ws.cmd(&["build", "--json", "-k"]);
        if !sandbox {
            cmd.env("STRATA_SANDBOX", "off");
        }
        let r: Run = cmd.output().unwrap().into();
        let took = start.elapsed();
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        assert_eq!(r.with_status("failed"), ["sleeper"], "{}", r.stdout);
        let bystander: &[&str] = if round == 0 { &["bystander"] } else { &[] };
        assert_eq!(r.executed(), bystander, "{}", r.stdout);
        assert!(
            r.stderr
                .contains("the step passed its time limit of 1s and was killed"),
            "{}",
            r.stderr
        );
        // Its log up to the kill is shown.
        assert!(r.stderr.contains("going to sleep"), "{}", r.stderr);
        assert!(took < std::time::Duration::from_secs(15), "{took:?}");
        assert_eq!(ws.read("out/bystander/o"), "fine\n");
        assert!(!ws.path().join("out/sleeper").exists());
        // Nothing it started is left running: the sleep in front and the
        // one in the background.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !processes_with(&format!("sleep {marker}")).is_empty()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            processes_with(&format!("sleep {marker}")),
            Vec::<String>::new()
        );
    }
}

#[test]
fn a_sandboxed_step_past_its_time_limit_fails_alone() {
    let _cgroups = alongside_others();
    assert_step_past_its_time_limit_fails_alone(true, "29.71");
}

#[test]
fn an_unsandboxed_step_past_its_time_limit_fails_alone() {
    let _cgroups = alongside_others();
    assert_step_past_its_time_limit_fails_alone(false, "29.72");
}

#[test]
fn a_step_within_its_time_limit_succeeds() {
    let _cgroups = alongside_others();
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  quick:
    rule: run
    limits: {time: 1m}
    cmd: "echo done > $OUT/o"
    outs: [o]
"#,
    );
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["quick"]);
    assert_eq!(ws.read("out/quick/o"), "done\n");
}

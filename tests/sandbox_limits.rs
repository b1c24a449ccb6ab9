//! What a step cannot take from the process that started `strata`: its open
//! file descriptors and its kernel keyrings; and how many processes a step
//! may start.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{Run, Ws};

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
    assert_fd_9_unreachable(true);
}

#[test]
fn an_inherited_descriptor_does_not_reach_an_unsandboxed_step() {
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
    assert_eq!(keys_reached(true), "");
}

#[test]
fn an_unsandboxed_step_reaches_no_key_of_the_callers_session() {
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

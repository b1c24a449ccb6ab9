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

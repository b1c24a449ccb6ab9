//! Steps that leave folders nested thousands of levels deep: in `$TMPDIR`
//! after a success, in `$OUT` after a failure, or as a declared output. None
//! may abort strata (a recursive walk overflows a worker thread's stack; a
//! whole path is longer than PATH_MAX), and the scratch folders they leave
//! are removed by the next build and by `store gc` without help.
//!
//! Every command runs with the soft limit of open files most shells start
//! with (1,024), so one open folder per level cannot pass for a fix.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::{Run, Ws};

/// Levels of the deep folders: far beyond a 2 MiB stack with one frame per
/// level, PATH_MAX with `d/` per level, and 1,024 open files.
const DEEP: u32 = 14_000;

/// Strata's documented limit for the depth of a tree entering the store.
const MAX_TREE_DEPTH: u32 = 1024;

/// A shell command nesting `levels` folders named `d` under `dir` (shell
/// `mkdir -p` would need the whole path, and `cd` in dash or bash keeps a
/// logical path that stops at PATH_MAX; perl's `chdir` is one syscall).
fn nest(dir: &str, levels: u32) -> String {
    format!(
        "perl -e 'mkdir \"{dir}\"; chdir \"{dir}\" or die \"{dir}: $!\"; \
         for (1..{levels}) {{ mkdir \"d\" or die \"mkdir: $!\"; chdir \"d\" or die \"chdir: $!\" }}'"
    )
}

fn run(ws: &Ws, args: &[&str]) -> Run {
    let mut cmd = ws.cmd(args);
    // SAFETY: setrlimit(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = limit.rlim_cur.min(1024);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("strata runs").into()
}

fn expect_code(r: &Run, code: i32, what: &str) {
    assert_eq!(
        r.code, code,
        "{what}: expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
}

/// Runs a test on a thread with room for `std::fs::remove_dir_all`, which
/// the temporary workspace's cleanup uses (one stack frame per level): the
/// test's own 2 MiB thread would abort on a deep folder strata left behind.
fn with_big_stack(test: impl FnOnce() + Send + 'static) {
    let outcome = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(test)
        .expect("test thread")
        .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn scratch_folders(ws: &Ws) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(ws.store.join("scratch"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `store gc` removes every scratch folder left and says so.
fn gc_removes_all_scratch(ws: &Ws) {
    let r = run(ws, &["store", "gc", "--json", "--max-size", "1G"]);
    expect_code(&r, 0, "store gc");
    let report = r.json();
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
    assert!(
        scratch_folders(ws).is_empty(),
        "gc left {:?}",
        scratch_folders(ws)
    );
}

/// A step working a while beside the deep one, to show it is not killed.
fn neighbour() -> &'static str {
    r#"
  neighbour:
    rule: run
    cmd: "sleep 1; echo fine > $OUT/n.txt"
    outs: [n.txt]
"#
}

#[test]
fn a_step_leaving_a_very_deep_tmpdir_succeeds_and_its_scratch_is_removed() {
    with_big_stack(|| {
        let ws = Ws::new();
        ws.write(
            "BUILD.yaml",
            &format!(
                "targets:\n  deep:\n    rule: run\n    cmd: |\n      {}\n      echo ok > $OUT/x.txt\n    outs: [x.txt]\n{}",
                nest("$ENV{TMPDIR}/t", DEEP),
                neighbour()
            ),
        );
        let r = run(&ws, &["build", "--json", "-j2"]);
        expect_code(&r, 0, "build");
        assert_eq!(r.executed(), ["deep", "neighbour"]);
        assert_eq!(ws.read("out/deep/x.txt"), "ok\n");
        assert!(
            scratch_folders(&ws).is_empty(),
            "a successful step's scratch folder was left: {:?}",
            scratch_folders(&ws)
        );
    });
}

#[test]
fn a_failed_step_leaving_a_very_deep_out_is_cleaned_by_the_next_build_and_gc() {
    with_big_stack(|| {
        let ws = Ws::new();
        let build = |marker: &str| {
            ws.write(
                "BUILD.yaml",
                &format!(
                    "targets:\n  deep:\n    rule: run\n    cmd: |\n      # {marker}\n      {}\n      exit 3\n    outs: [x.txt]\n{}",
                    nest("$ENV{OUT}/t", DEEP),
                    neighbour()
                ),
            );
            run(&ws, &["build", "--json", "-j2", "--keep-going"])
        };
        let first = build("first");
        expect_code(&first, 1, "first build");
        assert_eq!(first.executed(), ["neighbour"]);
        assert_eq!(first.with_status("failed"), ["deep"]);
        let kept = scratch_folders(&ws);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(
            ws.store
                .join("scratch")
                .join(&kept[0])
                .join("exec/out/t/d/d")
                .is_dir(),
            "the failed step's deep $OUT is not in its kept scratch folder"
        );

        // The next build of the target removes the kept folder before it runs
        // the step again (which fails again and keeps its own).
        let second = build("second");
        expect_code(&second, 1, "second build");
        assert_eq!(second.with_status("failed"), ["deep"]);
        let now = scratch_folders(&ws);
        assert_eq!(now.len(), 1, "{now:?}");
        assert_ne!(
            now, kept,
            "the first failure's scratch folder was not removed"
        );

        gc_removes_all_scratch(&ws);
    });
}

#[test]
fn a_declared_folder_output_deeper_than_the_limit_fails_that_step_with_a_clear_error() {
    with_big_stack(|| {
        let ws = Ws::new();
        let target = |name: &str, levels: u32| {
            format!(
                "  {name}:\n    rule: run\n    cmd: |\n      {}\n    outs: [tree/]\n",
                nest("$ENV{OUT}/tree", levels)
            )
        };
        ws.write(
            "BUILD.yaml",
            &format!(
                "targets:\n{}{}{}",
                target("deep", DEEP),
                target("at_limit", MAX_TREE_DEPTH - 1),
                neighbour()
            ),
        );
        let r = run(&ws, &["build", "--json", "-j2", "--keep-going"]);
        expect_code(&r, 1, "build");
        assert_eq!(r.with_status("failed"), ["deep"]);
        assert_eq!(r.executed(), ["at_limit", "neighbour"]);
        assert!(
            r.stderr.contains("target `deep` failed")
                && r.stderr.contains("more than 1024 levels deep")
                && r.stderr.contains("tree/d/d/d/"),
            "the error does not say which output is too deep and how deep it may be:\n{}",
            r.stderr
        );
        // The tree at the limit is whole in out/: `tree` and 1,023 levels below.
        let mut deepest = ws.path().join("out/at_limit/tree");
        for _ in 1..MAX_TREE_DEPTH {
            deepest.push("d");
        }
        assert!(fs::symlink_metadata(&deepest).is_ok_and(|m| m.is_dir()));
        assert!(!Path::new(&deepest).join("d").exists());

        gc_removes_all_scratch(&ws);
    });
}

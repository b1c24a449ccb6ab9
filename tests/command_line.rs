//! The command line around a build: `strata log`, finding BUILD.yaml from
//! any folder below it (every command), paths in messages relative to the
//! current folder, and what `--help` says the defaults are.

mod common;

use std::fs;
use std::path::Path;

use common::{Run, Ws};

/// `strata ARGS` run from `dir` (a folder of the workspace or elsewhere).
fn run_in(ws: &Ws, dir: &Path, args: &[&str]) -> Run {
    ws.cmd(args)
        .current_dir(dir)
        .env("TOKEN", "hunter2-secret")
        .output()
        .expect("strata runs")
        .into()
}

const PIPELINE: &str = r#"
vars:
  token: !ENV TOKEN
targets:
  hello:
    rule: run
    env: {TOKEN: "${token}"}
    cmd: "echo compiled; echo warning: unused variable, token $TOKEN >&2; echo hi > $OUT/o"
    outs: [o]
  broken:
    rule: run
    cmd: "echo trying; echo error: no such file >&2; exit 3"
    outs: [o]
  after-broken:
    rule: run
    deps: [broken]
    cmd: "echo > $OUT/o"
    outs: [o]
  bundle:
    rule: archive
    from: hello
"#;

#[test]
fn log_prints_the_last_run_of_succeeded_cached_and_failed_steps_masked() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", PIPELINE);
    let root = ws.path().to_path_buf();
    let r = run_in(&ws, &root, &["build", "-k"]);
    assert_eq!(r.code, 1, "{}", r.stderr);

    // A succeeded step: its warnings are kept, the secret masked.
    let log = run_in(&ws, &root, &["log", "hello"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert_eq!(log.stdout, "compiled\n");
    assert!(
        log.stderr
            .starts_with("log of `hello` (run), executed in the build of ")
            && log
                .stderr
                .ends_with("\nwarning: unused variable, token ***\n"),
        "{}",
        log.stderr
    );
    assert!(!log.stderr.contains("hunter2"), "{}", log.stderr);

    // A failed step: from its kept scratch folder.
    let log = run_in(&ws, &root, &["log", "broken"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert_eq!(log.stdout, "trying\n");
    assert!(
        log.stderr
            .contains("`broken` (run), failed in the build of ")
            && log.stderr.ends_with("\nerror: no such file\n"),
        "{}",
        log.stderr
    );

    // A cached step: the log of the run that made the result it reuses.
    let r = run_in(&ws, &root, &["build", "hello"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = run_in(&ws, &root, &["log", "hello"]);
    assert_eq!(log.stdout, "compiled\n");
    assert!(
        log.stderr.contains("cached in the build of ")
            && log
                .stderr
                .contains("the log of the run that made its result"),
        "{}",
        log.stderr
    );

    // A built-in rule prints nothing, and says so.
    let log = run_in(&ws, &root, &["log", "bundle"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert_eq!(log.stdout, "");
    assert!(log.stderr.contains("keep no log"), "{}", log.stderr);
}

#[test]
fn log_says_clearly_when_there_is_nothing_to_show() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", PIPELINE);
    let root = ws.path().to_path_buf();
    let log = run_in(&ws, &root, &["log", "hello"]);
    assert_eq!(log.code, 2, "{}", log.stderr);
    assert!(
        log.stderr.contains("no store at") || log.stderr.contains("no build of `hello`"),
        "{}",
        log.stderr
    );

    run_in(&ws, &root, &["build", "-k"]);
    let log = run_in(&ws, &root, &["log", "helo"]);
    assert_eq!(log.code, 2);
    assert!(
        log.stderr
            .contains("no build of `helo` is recorded for BUILD.yaml")
            && log.stderr.contains("did you mean `hello`?"),
        "{}",
        log.stderr
    );
    let log = run_in(&ws, &root, &["log", "after-broken"]);
    assert_eq!(log.code, 2);
    assert!(
        log.stderr.contains("`after-broken` has not run") && log.stderr.contains("skipped"),
        "{}",
        log.stderr
    );

    // Once the failed step's scratch folder is gone, so is its log.
    let scratch: Vec<_> = fs::read_dir(ws.store.join("scratch"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-broken-"))
        .collect();
    assert_eq!(scratch.len(), 1, "one kept scratch folder");
    fs::remove_dir_all(scratch[0].path()).unwrap();
    let log = run_in(&ws, &root, &["log", "broken"]);
    assert_eq!(log.code, 1, "{}", log.stderr);
    assert!(
        log.stderr.contains("its scratch folder") && log.stderr.contains("is gone"),
        "{}",
        log.stderr
    );
}

/// Every command finds the BUILD.yaml of the folder it runs in, or of the
/// nearest folder above, and works on that workspace.
#[test]
fn every_command_finds_build_yaml_in_a_folder_above() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", PIPELINE);
    ws.write("src/deep/notes.txt", "below the workspace root\n");
    let deep = ws.path().join("src/deep");

    let r = run_in(&ws, &deep, &["build", "hello", "bundle"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(ws.read("out/hello/o"), "hi\n", "out/ is beside BUILD.yaml");
    assert!(!deep.join("out").exists());

    let r = run_in(&ws, &deep, &["graph", "--format", "json", "bundle"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\"hello\""), "{}", r.stdout);

    let r = run_in(&ws, &deep, &["explain", "hello"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("`hello` (run)"), "{}", r.stdout);

    let r = run_in(&ws, &deep, &["manifest", "hello"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("hello"), "{}", r.stdout);

    let r = run_in(&ws, &deep, &["log", "hello"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "compiled\n"),
        "{}",
        r.stderr
    );

    let r = run_in(&ws, &deep, &["audit", "hello"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("reproducible: hello"), "{}", r.stdout);

    let r = run_in(&ws, &deep, &["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!ws.path().join("out").exists());

    // A nearer BUILD.yaml wins, as with git, cargo and bazel.
    ws.write(
        "src/BUILD.yaml",
        "targets:\n  inner:\n    rule: run\n    cmd: \"echo > $OUT/o\"\n    outs: [o]\n",
    );
    let r = run_in(&ws, &deep, &["build", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.executed(), ["inner"]);
    assert!(ws.path().join("src/out/inner/o").exists());
}

#[test]
fn without_any_build_yaml_above_the_command_says_where_it_looked() {
    let ws = Ws::new();
    let empty = tempfile::tempdir().unwrap();
    for args in [
        &["build"][..],
        &["graph"],
        &["explain", "x"],
        &["audit"],
        &["manifest"],
        &["log", "x"],
        &["clean"],
    ] {
        let r = run_in(&ws, empty.path(), args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!(
                "no BUILD.yaml in {} or any folder above it (name one with -f FILE)",
                empty.path().display()
            )),
            "{args:?}: {}",
            r.stderr
        );
    }
}

const TYPO: &str = "targets:\n  hello:\n    rule: run\n    deps: [helo]\n    cmd: \"echo > $OUT/o\"\n    outs: [o]\n";

/// The place of an error, as `-f` named the file or as found upward: a path
/// the user can open from where they are.
#[test]
fn paths_in_messages_are_relative_to_the_current_folder() {
    let ws = Ws::new();
    ws.write("proj/BUILD.yaml", TYPO);
    ws.write("proj/src/main.c", "int main;\n");
    let root = ws.path().to_path_buf();
    let r = run_in(&ws, &root, &["build", "-f", "proj/BUILD.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("╭─[proj/BUILD.yaml:4:12]"),
        "{}",
        r.stderr
    );
    let r = run_in(&ws, &ws.path().join("proj/src"), &["graph"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("╭─[../BUILD.yaml:4:12]"), "{}", r.stderr);
    let r = run_in(
        &ws,
        &ws.path().join("proj"),
        &["build", "-f", "BUILD.yaml", "nope"],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("╭─[BUILD.yaml:4:12]"), "{}", r.stderr);
}

#[test]
fn build_help_names_the_default_targets_and_the_upward_search() {
    let ws = Ws::new();
    let r = run_in(&ws, ws.path(), &["build", "--help"]);
    assert_eq!(r.code, 0);
    let help = r.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for text in [
        "Targets to build, with their dependencies (default: the BUILD file's `default:` list when it has one, else every target)",
        "The BUILD file (default: the nearest BUILD.yaml, in this folder or above)",
    ] {
        assert!(help.contains(text), "{text}\n{}", r.stdout);
    }
}

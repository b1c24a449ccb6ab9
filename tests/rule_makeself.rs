//! The `makeself` rule: the bundles it makes are run, under `sh` and
//! directly, with every option, intact and corrupted.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Ws;

/// The outcome of running a bundle.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `program args` in `dir` with a clean temporary folder.
fn run_in(dir: &Path, tmp: &Path, program: &str, args: &[&str]) -> Ran {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("TMPDIR", tmp)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .output()
        .expect("bundle runs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(r: Ran) -> Ran {
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r
}

const INSTALL: &str = r#"#!/bin/sh
# Records where it ran and with which arguments.
printf 'ran in %s with %s args:' "$(pwd)" "$#"
for a in "$@"; do printf ' [%s]' "$a"; done
printf '\n'
printf '%s\n' "$@" > marker
cat share/data.txt
exit 7
"#;

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("inst/install.sh", INSTALL)
        .write("inst/data.txt", "payload data\n");
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  payload:
    rule: run
    srcs: ["inst/*"]
    cmd: "mkdir -p $OUT/p/share && cp inst/data.txt $OUT/p/share/ && cp inst/install.sh $OUT/p/ && chmod +x $OUT/p/install.sh"
    outs: [p/]
  bundle:
    rule: makeself
    from: payload:p
    startup: ./install.sh
    args: ["--verbose", "two words"]
    label: "Demo installer"
    name: demo.run
"#,
    );
    ws
}

/// Builds the bundle; returns its path and a private temporary folder.
fn built(ws: &Ws) -> (PathBuf, PathBuf) {
    ws.build_ok(&["bundle"]);
    let bundle = ws.path().join("out/bundle/demo.run");
    let mode = fs::metadata(&bundle).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "executable: {mode:o}");
    let tmp = ws.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    (bundle, tmp)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn check_list_and_info() {
    let ws = workspace();
    let (bundle, tmp) = built(&ws);
    let b = bundle.to_str().unwrap();
    let r = ok(run_in(ws.path(), &tmp, b, &["--check"]));
    assert!(r.stdout.contains("bundle is intact"), "{}", r.stdout);
    let r = ok(run_in(ws.path(), &tmp, "sh", &[b, "--list"]));
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(
        lines[0].starts_with("-rwxr-xr-x 0/0") && lines[0].ends_with(" install.sh"),
        "{}",
        r.stdout
    );
    assert!(lines[2].ends_with(" share/data.txt"), "{}", r.stdout);
    let r = ok(run_in(ws.path(), &tmp, b, &["--info"]));
    let text = fs::read(&bundle).unwrap();
    let header = String::from_utf8_lossy(&text);
    let sha = header
        .lines()
        .find_map(|l| l.strip_prefix("sha256="))
        .unwrap();
    assert!(
        r.stdout.contains("Label:     Demo installer\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("SHA-256:   {sha}\n")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Startup:   install.sh\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Arguments: --verbose 'two words'\n"),
        "{}",
        r.stdout
    );
    // Nothing was extracted by any of these.
    assert!(entries(&tmp).is_empty(), "{:?}", entries(&tmp));
    let r = run_in(ws.path(), &tmp, b, &["--bogus"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown option --bogus"), "{}", r.stderr);
    let r = ok(run_in(ws.path(), &tmp, b, &["--help"]));
    assert!(r.stdout.contains("--target DIR"), "{}", r.stdout);
}

#[test]
fn target_runs_the_startup_script_there_with_its_arguments() {
    let ws = workspace();
    let (bundle, tmp) = built(&ws);
    let b = bundle.to_str().unwrap();
    let r = run_in(
        ws.path(),
        &tmp,
        b,
        &["--target", "dest", "--", "extra", "it's \"quoted\" $HOME"],
    );
    assert_eq!(r.code, 7, "the startup script's status:\n{}", r.stderr);
    let dest = fs::canonicalize(ws.path().join("dest")).unwrap();
    assert_eq!(
        r.stdout,
        format!(
            "ran in {} with 4 args: [--verbose] [two words] [extra] [it's \"quoted\" $HOME]\npayload data\n",
            dest.display()
        )
    );
    assert_eq!(entries(&dest), ["install.sh", "marker", "share"]);
    assert_eq!(
        ws.read("dest/marker"),
        "--verbose\ntwo words\nextra\nit's \"quoted\" $HOME\n"
    );
    assert!(
        r.stderr.contains("Verifying Demo installer"),
        "{}",
        r.stderr
    );
    // --quiet leaves only the script's own output.
    let r = run_in(ws.path(), &tmp, "sh", &[b, "--quiet", "--target=dest2"]);
    assert_eq!(r.code, 7);
    assert_eq!(r.stderr, "");
    assert!(
        r.stdout.contains("with 2 args: [--verbose] [two words]\n"),
        "{}",
        r.stdout
    );
    assert!(ws.path().join("dest2/marker").is_file());
}

#[test]
fn a_temporary_folder_is_removed_unless_kept() {
    let ws = workspace();
    let (bundle, tmp) = built(&ws);
    let b = bundle.to_str().unwrap();
    let r = run_in(ws.path(), &tmp, b, &["--", "x"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with(&format!("ran in {}/bundle.", tmp.display())),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("with 3 args: [--verbose] [two words] [x]\n"),
        "{}",
        r.stdout
    );
    assert!(entries(&tmp).is_empty(), "removed: {:?}", entries(&tmp));
    let r = run_in(ws.path(), &tmp, b, &["--keep", "-q"]);
    assert_eq!(r.code, 7);
    let kept = entries(&tmp);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(tmp.join(&kept[0]).join("marker").is_file());
    fs::remove_dir_all(tmp.join(&kept[0])).unwrap();
    // --noexec extracts only, and keeps the folder.
    let r = ok(run_in(ws.path(), &tmp, b, &["--noexec"]));
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("install.sh not run"), "{}", r.stderr);
    let kept = entries(&tmp);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(entries(&tmp.join(&kept[0])), ["install.sh", "share"]);
    ok(run_in(
        ws.path(),
        &tmp,
        b,
        &["--noexec", "--target", "only"],
    ));
    assert_eq!(entries(&ws.path().join("only")), ["install.sh", "share"]);
    assert_eq!(ws.read("only/share/data.txt"), "payload data\n");
}

#[test]
fn a_corrupted_bundle_refuses_to_run() {
    let ws = workspace();
    let (bundle, tmp) = built(&ws);
    let mut bytes = fs::read(&bundle).unwrap();
    let header = String::from_utf8_lossy(&bytes).into_owned();
    let skip: usize = header
        .lines()
        .find_map(|l| l.strip_prefix("skip="))
        .unwrap()
        .parse()
        .unwrap();
    let size: usize = header
        .lines()
        .find_map(|l| l.strip_prefix("size="))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(skip - 1 + size, bytes.len());
    let i = skip - 1 + size / 2;
    bytes[i] ^= 0x01;
    let bad = ws.path().join("bad.run");
    fs::write(&bad, &bytes).unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).unwrap();
    let b = bad.to_str().unwrap();
    for args in [
        &[][..],
        &["--target", "dest"][..],
        &["--list"][..],
        &["--noexec"][..],
        &["--check"][..],
    ] {
        let r = run_in(ws.path(), &tmp, b, args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("bundle is corrupt"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("nothing was extracted or run"),
            "{}",
            r.stderr
        );
        assert_eq!(r.stdout, "", "{args:?}: the startup script did not run");
        assert!(entries(&tmp).is_empty(), "{args:?}");
        assert!(!ws.path().join("dest").exists(), "{args:?}");
    }
    // A truncated download says so.
    let short = ws.path().join("short.run");
    fs::write(&short, &fs::read(&bundle).unwrap()[..skip + 10]).unwrap();
    let r = run_in(ws.path(), &tmp, "sh", &[short.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("bundle is corrupt"), "{}", r.stderr);
    assert!(r.stderr.contains("incomplete download"), "{}", r.stderr);
}

#[test]
fn bundles_are_identical_across_workspace_paths() {
    let a = workspace();
    let b = workspace();
    let first = a.build_ok(&["bundle"]);
    let second = b.build_ok(&["bundle"]);
    assert_eq!(
        first.json()["targets"]["bundle"]["output"],
        second.json()["targets"]["bundle"]["output"]
    );
    let text = fs::read(a.path().join("out/bundle/demo.run")).unwrap();
    let text = String::from_utf8_lossy(&text);
    let path = a.path().display().to_string();
    assert!(!text.contains(&path), "no workspace path in the bundle");
    assert!(!text.contains(&a.store.display().to_string()));
}

#[test]
fn a_missing_startup_script_fails_the_build() {
    let ws = workspace();
    let yaml = ws
        .read("BUILD.yaml")
        .replace("startup: ./install.sh", "startup: ./setup.sh");
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&["bundle"], 1);
    assert!(r.stderr.contains("payload:p/setup.sh"), "{}", r.stderr);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    let yaml = ws
        .read("BUILD.yaml")
        .replace("startup: ./setup.sh", "startup: /abs/setup.sh");
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&["bundle"], 2);
    assert!(r.stderr.contains("field `startup`"), "{}", r.stderr);
}

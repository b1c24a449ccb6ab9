//! Hostile and malformed input: every case ends in a diagnostic and exit
//! code 2 (or 1), never a panic or a backtrace.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use common::{Run, Ws};

fn no_panic(r: &Run) {
    for text in [&r.stdout, &r.stderr] {
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "{text}"
        );
    }
}

#[test]
fn deeply_nested_yaml_is_a_diagnostic() {
    let ws = Ws::new();
    let flow = format!(
        "targets:\n  t:\n    rule: run\n    cmd: x\n    env: {}1{}\n",
        "{a: ".repeat(5000),
        "}".repeat(5000)
    );
    ws.write("BUILD.yaml", &flow);
    let r = ws.build_fails(&[], 2);
    no_panic(&r);
    assert!(
        r.stderr.contains("BUILD.yaml:5:"),
        "{}",
        &r.stderr[..r.stderr.len().min(2000)]
    );

    let mut block = String::from("targets:\n");
    for depth in 1..3000 {
        block.push_str(&"  ".repeat(depth));
        block.push_str("a:\n");
    }
    ws.write("BUILD.yaml", &block);
    let r = ws.build_fails(&[], 2);
    no_panic(&r);
    assert!(
        r.stderr.contains("BUILD.yaml:"),
        "{}",
        &r.stderr[..r.stderr.len().min(2000)]
    );
}

#[test]
fn a_hundred_thousand_targets_load_and_one_of_them_builds() {
    let ws = Ws::new();
    let mut yaml = String::with_capacity(100_000 * 70);
    yaml.push_str("targets:\n");
    for i in 0..100_000 {
        yaml.push_str(&format!(
            "  t{i}:\n    rule: run\n    cmd: \"echo {i} > $OUT/o\"\n    outs: [o]\n"
        ));
    }
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_ok(&["t99999"]);
    assert_eq!(r.executed(), ["t99999"]);
    assert_eq!(ws.read("out/t99999/o"), "99999\n");
    // A mistake in the last target is still pointed at precisely.
    yaml.push_str("  broken:\n    rule: run\n    deps: [t100000]\n    cmd: x\n");
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:400004:12"), "{}", r.stderr);
    assert!(r.stderr.contains("did you mean"), "{}", r.stderr);
}

#[test]
fn a_symlink_loop_in_srcs_is_a_diagnostic() {
    let ws = Ws::new();
    std::os::unix::fs::symlink("b.txt", ws.path().join("a.txt")).unwrap();
    std::os::unix::fs::symlink("a.txt", ws.path().join("b.txt")).unwrap();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    srcs: [\"*.txt\"]\n    cmd: \"true\"\n",
    );
    let r = ws.build_fails(&[], 2);
    no_panic(&r);
    assert!(
        r.stderr.contains("symlink loop") && r.stderr.contains("BUILD.yaml:4:12"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_source_name_that_is_not_utf8_is_a_diagnostic() {
    let ws = Ws::new();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(ws.path().join(name), "x").unwrap();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    srcs: [\"*.txt\"]\n    cmd: \"true\"\n",
    );
    let r = ws.build_fails(&[], 2);
    no_panic(&r);
    assert!(r.stderr.contains("not valid UTF-8"), "{}", r.stderr);
}

#[test]
fn an_unreadable_source_is_a_diagnostic() {
    // Permission bits do not stop root, so run strata as `nobody`.
    let ws = Ws::new();
    ws.write("BUILD.yaml", "targets:\n  t:\n    rule: run\n    srcs: [secret.txt]\n    cmd: \"cat secret.txt > $OUT/o\"\n    outs: [o]\n");
    ws.write("secret.txt", "hidden\n");
    fs::set_permissions(
        ws.path().join("secret.txt"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    fs::set_permissions(ws.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let store = ws.path().join("store");
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::strata_bin(),
            "build",
            "--store",
        ])
        .arg(&store)
        .current_dir(ws.path())
        .env("HOME", ws.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("setpriv (util-linux) runs");
    let r: Run = out.into();
    assert_eq!(r.code, 2, "{}", r.stderr);
    no_panic(&r);
    assert!(
        r.stderr.contains("cannot read source secret.txt")
            && r.stderr.contains("Permission denied"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_dangling_source_symlink_is_a_diagnostic() {
    let ws = Ws::new();
    std::os::unix::fs::symlink("missing.txt", ws.path().join("link.txt")).unwrap();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    srcs: [link.txt]\n    cmd: \"true\"\n",
    );
    let r = ws.build_fails(&[], 2);
    no_panic(&r);
    assert!(
        r.stderr.contains("symlink points to nothing"),
        "{}",
        r.stderr
    );
}

/// Every file below `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        let ft = fs::symlink_metadata(&p).unwrap().file_type();
        if ft.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if ft.is_file()
            && let Ok(bytes) = fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(p);
        }
    }
    hits
}

#[test]
fn an_env_secret_appears_nowhere_after_a_successful_build() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  token: !ENV API_TOKEN
targets:
  use:
    rule: run
    env: {TOKEN: "${token}"}
    cmd: "test \"$TOKEN\" = \"${token}\" && echo ok > $OUT/o"
    outs: [o]
"#,
    );
    let marker = "s3cr3t-marker-4242";
    let r: Run = ws
        .cmd(&["build", "--json"])
        .env("API_TOKEN", marker)
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(ws.read("out/use/o"), "ok\n");
    assert!(!r.stdout.contains(marker) && !r.stderr.contains(marker));
    let hits = files_containing(&ws.store, marker.as_bytes());
    assert!(hits.is_empty(), "secret found in {hits:?}");
    let hits = files_containing(&ws.path().join("out"), marker.as_bytes());
    assert!(hits.is_empty(), "secret found in {hits:?}");
    // The key depends on the secret (through its hash): another value rebuilds.
    let r: Run = ws
        .cmd(&["build", "--json"])
        .env("API_TOKEN", "other")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.executed(), ["use"]);
}

//! `strata audit`: a rebuild under perturbations compared with the last
//! build. Reproducible pipelines pass; steps that depend on the time, the
//! directory order, the umask, TZ or LANG are caught and explained; declared
//! non-reproducible rules are listed apart; the cache, `out/` and the build
//! records are left as they were.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Run, Ws};
use serde_json::Value;

fn audit(ws: &Ws, args: &[&str]) -> Run {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    ws.run(&all)
}

/// `strata audit --json ARGS`, asserting the exit code.
fn audit_json(ws: &Ws, args: &[&str], code: i32) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let r = audit(ws, &all);
    assert_eq!(
        r.code, code,
        "audit exit code:\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    r.json()
}

fn status(doc: &Value, target: &str) -> String {
    doc["targets"][target]["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status for `{target}`: {doc:#}"))
        .to_string()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every file under `dir` with its inode, mtime and a hash of its content:
/// a folder replaced by materialization gets new inodes.
fn snapshot(dir: &Path) -> Vec<(String, u64, i64, String)> {
    let mut out = Vec::new();
    for e in walkdir(dir) {
        let m = fs::symlink_metadata(&e).unwrap();
        let content = if m.is_file() {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&fs::read(&e).unwrap(), &mut h);
            format!("{:016x}", std::hash::Hasher::finish(&h))
        } else {
            String::new()
        };
        out.push((
            e.strip_prefix(dir).unwrap().display().to_string(),
            m.ino(),
            m.mtime(),
            content,
        ));
    }
    out.sort();
    out
}

fn outputs_of(s: &[(String, u64, i64, String)]) -> Vec<(String, u64, i64, String)> {
    s.iter()
        .filter(|(p, ..)| !p.starts_with(".strata"))
        .cloned()
        .collect()
}

/// `snapshot` without `.strata/`, which every build rewrites (its lock
/// holder and journal).
fn outputs(dir: &Path) -> Vec<(String, u64, i64, String)> {
    let mut s = snapshot(dir);
    s.retain(|(p, ..)| !p.starts_with(".strata"));
    s
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

fn records(ws: &Ws) -> usize {
    walkdir(&ws.store.join("meta/records"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .count()
}

fn audit_scratch(ws: &Ws) -> Vec<String> {
    fs::read_dir(ws.store.join("scratch"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("audit-"))
                .collect()
        })
        .unwrap_or_default()
}

fn copy_hello(ws: &Ws) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for rel in [
        "BUILD.yaml",
        "examples/hello/BUILD.yaml",
        "examples/hello/wordfreq.c",
        "examples/hello/texts/rain.txt",
        "examples/hello/texts/wind.txt",
    ] {
        ws.write(rel, &fs::read_to_string(repo.join(rel)).unwrap());
    }
}

#[test]
fn the_example_pipeline_is_reproducible_and_the_audit_leaves_everything_alone() {
    let ws = Ws::new();
    copy_hello(&ws);
    ws.build_ok(&[]);
    let out_before = snapshot(&ws.path().join("out"));
    let records_before = records(&ws);

    let doc = audit_json(&ws, &["-j", "4"], 0);
    assert_eq!(doc["reproducible"], true, "{doc:#}");
    for t in ["wordfreq", "corpus", "frequencies", "bundle", "checksums"] {
        assert_eq!(status(&doc, t), "reproducible", "{doc:#}");
        assert_eq!(
            doc["targets"][t]["reference"], doc["targets"][t]["rebuilt"],
            "{doc:#}"
        );
        assert_eq!(doc["targets"][t]["pinned"], false);
    }
    assert_eq!(doc["counts"]["reproducible"], 5);
    // A user's -j 4 is audited with -j 1.
    assert_eq!(doc["perturbations"]["jobs"], 1);

    // Nothing the build relies on moved: no record, no out/ change, no
    // action-cache entry, no scratch folder left behind.
    assert_eq!(records(&ws), records_before);
    assert_eq!(snapshot(&ws.path().join("out")), out_before);
    assert!(audit_scratch(&ws).is_empty(), "{:?}", audit_scratch(&ws));
    let again = ws.build_ok(&[]);
    assert!(again.executed().is_empty(), "{}", again.stdout);
    assert_eq!(outputs(&ws.path().join("out")), outputs_of(&out_before));

    // The human report says the same, and a user's -j 1 is audited with 2.
    let r = audit(&ws, &["-j", "1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("reproducible: "))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    for t in ["wordfreq", "corpus", "frequencies", "bundle", "checksums"] {
        assert!(line.contains(t), "{line}");
    }
    assert!(r.stdout.contains("-j 2"), "{}", r.stdout);
    assert!(r.stdout.contains("5 reproducible, 0 not reproducible"));
}

/// A `run` step and the in-process rules: archives of every compression,
/// a .deb and an initramfs.
const BUILTINS: &str = r#"vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  tree:
    rule: run
    srcs: ["data/*"]
    cmd: "mkdir -p $OUT/share && cp data/* $OUT/share/ && printf 'x\n' > $OUT/x"
    outs: [share/, x]
  tgz:
    rule: archive
    from: tree
  tzst:
    rule: archive
    from: tree
    compression: zstd
  txz:
    rule: archive
    from: tree
    compression: xz
  tar:
    rule: archive
    from: tree
    compression: none
  pkg:
    rule: deb
    from: tree
    control:
      Package: words
      Version: "1.0"
      Architecture: all
      Maintainer: "A <a@example.com>"
      Description: words
  ramdisk:
    rule: initramfs
    from: tree
    compression: zstd
"#;

fn builtins_ws(tree_cmd: Option<&str>) -> Ws {
    let ws = Ws::new();
    let yaml = match tree_cmd {
        Some(cmd) => BUILTINS.replace(
            r#"cmd: "mkdir -p $OUT/share && cp data/* $OUT/share/ && printf 'x\n' > $OUT/x""#,
            &format!("cmd: {cmd:?}"),
        ),
        None => BUILTINS.to_string(),
    };
    ws.write("BUILD.yaml", &yaml);
    for n in ["a", "b", "c", "d"] {
        ws.write(&format!("data/{n}.txt"), &format!("{n}\n"));
    }
    ws
}

#[test]
fn a_pipeline_of_built_in_rules_is_reproducible() {
    let ws = builtins_ws(None);
    ws.build_ok(&[]);
    let doc = audit_json(&ws, &[], 0);
    for t in ["tree", "tgz", "tzst", "txz", "tar", "pkg", "ramdisk"] {
        assert_eq!(status(&doc, t), "reproducible", "{t}: {doc:#}");
    }
    assert_eq!(doc["counts"]["not_reproducible"], 0);
}

#[test]
fn a_timestamp_is_found_by_file_and_offset_and_in_every_archive_entry() {
    let ws = builtins_ws(Some(
        "mkdir -p $OUT/share && cp data/* $OUT/share/ && echo \"built at $(date +%s%N)\" > $OUT/x",
    ));
    ws.build_ok(&[]);
    let out_before = snapshot(&ws.path().join("out"));
    let reference_x = ws.read("out/tree/x");

    let r = audit(&ws, &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("NOT reproducible: tree (its inputs were identical"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "x: content differs (reference 29 bytes, rebuilt 29 bytes), first difference at byte"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("NOT reproducible: tgz (dependency `tree` already differed)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("entry `x`: content"), "{}", r.stdout);

    let doc = audit_json(&ws, &[], 1);
    assert_eq!(doc["reproducible"], false);
    let tree = &doc["targets"]["tree"];
    assert_eq!(tree["status"], "not-reproducible");
    assert_eq!(tree["cause"], "inputs-identical");
    assert_eq!(tree["differing_deps"], serde_json::json!([]));
    assert_eq!(tree["files_total"], 1, "{tree:#}");
    let x = &tree["files"][0];
    assert_eq!(x["path"], "x");
    assert_eq!(x["change"], "content");
    assert_eq!(x["reference_size"], reference_x.len());
    assert_eq!(x["rebuilt_size"], reference_x.len());
    // "built at " is the same; the digits are not.
    let offset = x["first_difference"].as_u64().unwrap();
    assert!(
        (9..reference_x.len() as u64 - 1).contains(&offset),
        "offset {offset} in {reference_x:?}"
    );

    // Each archive names the entry, and only it.
    let entries = |target: &str| -> Vec<(String, Vec<String>)> {
        let t = &doc["targets"][target];
        assert_eq!(t["status"], "not-reproducible", "{target}: {t:#}");
        assert_eq!(t["cause"], "dependency-differed");
        assert_eq!(t["differing_deps"], serde_json::json!(["tree"]));
        assert_eq!(t["files"].as_array().unwrap().len(), 1, "{t:#}");
        let f = &t["files"][0];
        assert_eq!(f["change"], "content");
        assert!(f["first_difference"].is_u64());
        f["archive"]["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("{target}: no entries: {f:#}"))
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["fields"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect()
    };
    let content = vec!["content".to_string()];
    for t in ["tgz", "tzst", "txz", "tar"] {
        assert_eq!(entries(t), [("x".to_string(), content.clone())], "{t}");
    }
    assert_eq!(
        doc["targets"]["tzst"]["files"][0]["archive"]["format"],
        "tar+zstd"
    );
    assert_eq!(entries("ramdisk"), [("x".to_string(), content.clone())]);
    // The .deb: its data member and the entry inside it (md5sums in the
    // control member changes too).
    let deb = entries("pkg");
    let names: Vec<&str> = deb.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"data.tar.xz:./x"), "{names:?}");
    assert!(names.contains(&"data.tar.xz"), "{names:?}");
    assert!(names.contains(&"control.tar.xz:./md5sums"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("share")), "{names:?}");

    // The JSON shape is fixed.
    assert_eq!(
        keys(&doc),
        set(&["reproducible", "counts", "perturbations", "targets"])
    );
    assert_eq!(
        keys(&doc["counts"]),
        set(&[
            "reproducible",
            "not_reproducible",
            "declared_non_reproducible",
            "failed",
            "skipped"
        ])
    );
    assert_eq!(
        keys(&doc["perturbations"]),
        set(&[
            "scratch",
            "tz",
            "lang",
            "umask",
            "environment_order",
            "directory_order",
            "jobs",
            "isolation"
        ])
    );
    assert_eq!(
        keys(tree),
        set(&[
            "status",
            "rule",
            "reference",
            "rebuilt",
            "pinned",
            "cause",
            "differing_deps",
            "files",
            "files_total",
            "error",
            "notes"
        ])
    );
    assert_eq!(tree["rule"], "run");
    assert_eq!(doc["targets"]["pkg"]["rule"], "deb");
    assert_eq!(doc["counts"]["not_reproducible"], 7);
    let entry = &doc["targets"]["tgz"]["files"][0]["archive"]["entries"][0];
    assert_eq!(
        keys(entry),
        set(&["name", "change", "fields", "reference", "rebuilt"])
    );
    assert_eq!(entry["reference"]["mode"], "0644");

    // The cache and out/ still hold the last build's results.
    assert_eq!(snapshot(&ws.path().join("out")), out_before);
    let again = ws.build_ok(&[]);
    assert!(again.executed().is_empty(), "{}", again.stdout);
    assert_eq!(outputs(&ws.path().join("out")), outputs_of(&out_before));
    assert_eq!(ws.read("out/tree/x"), reference_x);
}

#[test]
fn directory_order_umask_tz_lang_and_environment_order_are_perturbed() {
    let ws = Ws::new();
    for n in ["a", "b", "c", "d", "e", "f"] {
        ws.write(&format!("data/{n}.txt"), n);
    }
    ws.write(
        "BUILD.yaml",
        r#"targets:
  listing:
    rule: run
    srcs: ["data/*"]
    cmd: "ls -U data > $OUT/ls.txt"
    outs: [ls.txt]
  sorted:
    rule: run
    srcs: ["data/*"]
    cmd: "ls data > $OUT/ls.txt"
    outs: [ls.txt]
  gen:
    rule: run
    cmd: "for f in 1 2 3 4 5; do echo $f > $OUT/$f; done"
    outs: [1, 2, 3, 4, 5]
  dep-listing:
    rule: run
    deps: [gen]
    cmd: "find $DEPS/gen -type f > $OUT/found.txt"
    outs: [found.txt]
  umask:
    rule: run
    cmd: "umask > $OUT/umask.txt"
    outs: [umask.txt]
  modes:
    rule: run
    cmd: "mkdir $TMPDIR/d && stat -c %a $TMPDIR/d > $OUT/mode.txt"
    outs: [mode.txt]
  tz:
    rule: run
    cmd: "date -d @0 +%H > $OUT/hour.txt"
    outs: [hour.txt]
  tz-declared:
    rule: run
    env: {TZ: UTC}
    cmd: "date -d @0 +%H > $OUT/hour.txt"
    outs: [hour.txt]
  lang:
    rule: run
    cmd: "echo $LANG > $OUT/lang.txt"
    outs: [lang.txt]
  env-order:
    rule: run
    # The environment as the shell received it (a shell re-exports
    # variables in an order of its own).
    cmd: "tr '\\0' '\\n' < /proc/$$/environ | cut -d= -f1 > $OUT/names.txt"
    outs: [names.txt]
"#,
    );
    ws.build_ok(&[]);
    let doc = audit_json(&ws, &[], 1);
    for t in [
        "listing",
        "dep-listing",
        "umask",
        "modes",
        "tz",
        "lang",
        "env-order",
    ] {
        assert_eq!(status(&doc, t), "not-reproducible", "{t}: {doc:#}");
        assert_eq!(doc["targets"][t]["cause"], "inputs-identical", "{t}");
    }
    for t in ["sorted", "gen", "tz-declared"] {
        assert_eq!(status(&doc, t), "reproducible", "{t}: {doc:#}");
    }
    assert_eq!(doc["targets"]["listing"]["files"][0]["path"], "ls.txt");
    assert_eq!(doc["perturbations"]["umask"], "0002");
    assert_eq!(doc["perturbations"]["directory_order"], "reversed");
}

#[test]
fn without_the_sandbox_the_umask_and_tz_are_still_perturbed() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  umask:
    rule: run
    cmd: "umask > $OUT/umask.txt"
    outs: [umask.txt]
  tz:
    rule: run
    cmd: "date -d @0 +%H > $OUT/hour.txt"
    outs: [hour.txt]
  plain:
    rule: run
    cmd: "echo same > $OUT/same.txt"
    outs: [same.txt]
"#,
    );
    let unsandboxed = |args: &[&str]| -> Run {
        ws.cmd(args)
            .env("STRATA_SANDBOX", "off")
            .output()
            .unwrap()
            .into()
    };
    let b = unsandboxed(&["build", "--json"]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    let r = unsandboxed(&["audit", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(status(&doc, "umask"), "not-reproducible");
    assert_eq!(status(&doc, "tz"), "not-reproducible");
    assert_eq!(status(&doc, "plain"), "reproducible");
    assert!(
        doc["perturbations"]["isolation"]
            .as_str()
            .unwrap()
            .starts_with("unsandboxed"),
        "{doc:#}"
    );
    // The sandboxed audit of an unsandboxed build would compare other keys.
    let r = audit(&ws, &[]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("strata.sandbox"), "{}", r.stderr);
}

#[test]
fn an_audit_needs_an_up_to_date_build_to_compare_with() {
    let ws = Ws::new();
    ws.write("in.txt", "one\n");
    ws.write(
        "BUILD.yaml",
        r#"targets:
  copy:
    rule: run
    srcs: [in.txt]
    cmd: "cp in.txt $OUT/out.txt"
    outs: [out.txt]
  after:
    rule: run
    deps: [copy]
    cmd: "cp $DEPS/copy/out.txt $OUT/"
    outs: [out.txt]
"#,
    );
    let r = audit(&ws, &[]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("no recorded build of `copy`, `after`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("run `strata build` first"),
        "{}",
        r.stderr
    );

    // A build of one target is a reference for it, not for the other.
    ws.build_ok(&["copy"]);
    audit_json(&ws, &["copy"], 0);
    let r = audit(&ws, &["after"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("`after`"), "{}", r.stderr);

    // A source changed since the last build: that build is no reference.
    ws.build_ok(&[]);
    ws.write("in.txt", "two\n");
    let r = audit(&ws, &[]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("out of date"), "{}", r.stderr);
    assert!(r.stderr.contains("copy: source `in.txt`"), "{}", r.stderr);
    assert!(!r.stderr.contains("after:"), "{}", r.stderr);
    ws.build_ok(&[]);
    audit_json(&ws, &[], 0);

    // Bad usage.
    let r = audit(&ws, &["nosuch"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("no target named `nosuch`"),
        "{}",
        r.stderr
    );
    let r = audit(&ws, &["-j", "0"]);
    assert_eq!(r.code, 2);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn a_failing_rebuild_fails_the_audit_and_skips_its_dependents() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  flaky:
    rule: run
    cmd: "test \"$TZ\" = UTC && echo ok > $OUT/ok.txt"
    outs: [ok.txt]
  after:
    rule: run
    deps: [flaky]
    cmd: "cp $DEPS/flaky/ok.txt $OUT/"
    outs: [ok.txt]
"#,
    );
    ws.build_ok(&[]);
    let r = audit(&ws, &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("target `flaky` failed in the audit: the command exited with code 1"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("skipped: after"), "{}", r.stdout);
    let doc = audit_json(&ws, &[], 1);
    assert_eq!(status(&doc, "flaky"), "failed");
    assert_eq!(status(&doc, "after"), "skipped");
    assert_eq!(doc["targets"]["flaky"]["rebuilt"], Value::Null);
    // A failed audit step leaves no action-cache entry: the build is cached.
    let again = ws.build_ok(&[]);
    assert!(again.executed().is_empty(), "{}", again.stdout);
}

#[test]
fn a_declared_non_reproducible_target_is_listed_apart_and_its_dependents_judged_alone() {
    if !common::docker::docker_available() {
        return;
    }
    let ws = Ws::new();
    common::docker::mini_rootfs(&ws.path().join("rootfs"));
    ws.write(
        "BUILD.yaml",
        r#"targets:
  base:
    rule: image
    srcs: ["rootfs/**"]
    from: srcs:rootfs
    tag: strata-test/audit:1
  data-root:
    rule: docker-data-root
    images: [base]
  shipped:
    rule: archive
    from: data-root
    name: var-lib-docker.tar
  in-image:
    rule: run
    image: base
    cmd: "echo $TZ > $OUT/tz.txt"
    outs: [tz.txt]
"#,
    );
    ws.build_ok(&["base", "data-root", "shipped"]);
    let doc = audit_json(&ws, &["shipped"], 0);
    assert_eq!(status(&doc, "data-root"), "declared-non-reproducible");
    assert_eq!(doc["targets"]["data-root"]["rule"], "docker-data-root");
    assert_eq!(status(&doc, "base"), "reproducible");
    // Fed the reference data-root, the archive is judged on its own.
    assert_eq!(status(&doc, "shipped"), "reproducible", "{doc:#}");
    assert_eq!(doc["counts"]["declared_non_reproducible"], 1);
    let r = audit(&ws, &["shipped"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("declared non-reproducible: data-root"),
        "{}",
        r.stdout
    );

    // A container step gets the perturbed environment too.
    ws.build_ok(&["in-image"]);
    let doc = audit_json(&ws, &["in-image"], 1);
    assert_eq!(status(&doc, "in-image"), "not-reproducible", "{doc:#}");
}

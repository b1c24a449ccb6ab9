//! Sandboxed steps see their inputs through trees made once per store
//! (`<store>/trees/<boot>/<fn>/<tree>`, mounted read-only) and run in
//! scratch folders the build reuses: a dependency's tree is made once for
//! all its dependents, a reused folder shows a step nothing of the step
//! before, a failed step's kept folder still holds its inputs, and only
//! whole trees of this boot are ever mounted; `gc` removes the rest.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{Run, Ws};

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

fn trees_of_this_boot(ws: &Ws) -> PathBuf {
    ws.store.join("trees").join(boot_id()).join("blake3")
}

/// The trees (folders named `<hex>-<size>`) in `dir`, sorted.
fn trees_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The tree in `dir` holding `file`.
fn tree_holding(dir: &Path, file: &str) -> PathBuf {
    let found: Vec<PathBuf> = trees_in(dir)
        .into_iter()
        .map(|n| dir.join(n))
        .filter(|t| t.join(file).exists())
        .collect();
    assert_eq!(found.len(), 1, "trees holding {file}: {found:?}");
    found[0].clone()
}

fn scratch_left(ws: &Ws) -> Vec<String> {
    fs::read_dir(ws.store.join("scratch"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn json(r: Run) -> serde_json::Value {
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.json()
}

const DEPENDENTS: &str = r#"targets:
  lib:
    rule: run
    cmd: "printf L > $OUT/lib.txt"
    outs: [lib.txt]
  a:
    rule: run
    srcs: [a.txt]
    deps: [lib]
    cmd: |
      cat a.txt $DEPS/lib/lib.txt > $OUT/x
      ! touch $DEPS/lib/new 2>/dev/null && ! touch $DEPS/new 2>/dev/null && ! touch new 2>/dev/null
    outs: [x]
  b:
    rule: run
    srcs: [b.txt]
    deps: [lib]
    cmd: |
      cat b.txt $DEPS/lib/lib.txt > $OUT/x
      ls $DEPS > $OUT/deps
    outs: [x, deps]
"#;

fn dependents() -> Ws {
    let ws = Ws::new();
    ws.write("BUILD.yaml", DEPENDENTS)
        .write("a.txt", "A")
        .write("b.txt", "B");
    ws
}

#[test]
fn a_dependency_tree_is_made_once_and_mounted_read_only_by_each_dependent() {
    let ws = dependents();
    let r = ws.build_ok(&["-j2"]);
    assert_eq!(r.executed(), ["a", "b", "lib"]);
    assert_eq!(ws.read("out/a/x"), "AL");
    assert_eq!(ws.read("out/b/x"), "BL");
    assert_eq!(
        ws.read("out/b/deps"),
        "lib\n",
        "deps/ holds the dependencies only"
    );
    assert!(scratch_left(&ws).is_empty(), "{:?}", scratch_left(&ws));

    // lib's output once (mounted by both), and the sources of a and b.
    let dir = trees_of_this_boot(&ws);
    assert_eq!(trees_in(&dir).len(), 3, "{:?}", trees_in(&dir));
    let lib = tree_holding(&dir, "lib.txt");
    assert!(
        fs::metadata(lib.join("lib.txt")).unwrap().nlink() >= 2,
        "a hard link into the store, not a copy"
    );
    assert_eq!(
        fs::read_to_string(tree_holding(&dir, "a.txt").join("a.txt")).unwrap(),
        "A"
    );
    let stats = json(ws.run(&["store", "stats", "--json"]));
    assert_eq!(stats["trees"]["count"], 3, "{stats:#}");
    assert_eq!(
        stats["trees"]["bytes"], 2,
        "the two source copies: {stats:#}"
    );

    // Every step again: the trees are mounted as they are, not made again.
    let folder = fs::metadata(&lib).unwrap().ino();
    let again = ws.build_ok(&["--no-cache", "-j2"]);
    assert_eq!(again.executed(), ["a", "b", "lib"]);
    assert_eq!(fs::metadata(&lib).unwrap().ino(), folder);
    assert_eq!(trees_in(&dir).len(), 3);
}

#[test]
fn unsandboxed_steps_stage_their_inputs_as_before() {
    let ws = dependents();
    // (`a` checks the sandbox's read-only mounts.)
    let r = ws
        .cmd(&["build", "--json", "b"])
        .env("STRATA_SANDBOX", "off")
        .output()
        .unwrap();
    let r: Run = r.into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(ws.read("out/b/x"), "BL");
    assert!(!ws.store.join("trees").exists());
    assert!(scratch_left(&ws).is_empty());
}

#[test]
fn a_reused_scratch_folder_shows_the_next_step_nothing_of_the_last() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  first:
    rule: run
    cmd: |
      stat -c %i $OUT > $OUT/folder
      stat -c %a $HOME $TMPDIR > $OUT/modes
      echo secret > $HOME/left; mkdir -p $TMPDIR/d/e; echo x > /tmp/left
      echo stray > $OUT/undeclared; mkdir $OUT/sub
      chmod 500 $HOME $OUT/sub
      chmod 700 $TMPDIR
    outs: [folder, modes]
  second:
    rule: run
    deps: [first]
    cmd: |
      stat -c %i $OUT > $OUT/folder
      ls -A $HOME $TMPDIR /tmp $OUT > $OUT/seen
      stat -c %a $HOME $TMPDIR > $OUT/modes
      touch $HOME/ok $TMPDIR/ok
    outs: [folder, seen, modes]
"#,
    );
    ws.build_ok(&["-j1"]);
    assert_eq!(
        ws.read("out/first/folder"),
        ws.read("out/second/folder"),
        "the second step ran in the first one's folder"
    );
    assert_eq!(
        ws.read("out/second/seen"),
        "/strata/home:\n\n/strata/out:\nfolder\nseen\n\n/strata/tmp:\n\n/tmp:\n",
        "$OUT holds only what the step wrote so far"
    );
    assert_eq!(
        ws.read("out/second/modes"),
        ws.read("out/first/modes"),
        "the modes the first step found, not those it left"
    );
    assert!(scratch_left(&ws).is_empty(), "{:?}", scratch_left(&ws));
}

#[test]
fn a_failed_step_keeps_its_folder_with_the_inputs_it_saw() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  lib:
    rule: run
    cmd: "printf L > $OUT/lib.txt"
    outs: [lib.txt]
  broken:
    rule: run
    srcs: [src/in.txt]
    deps: [lib]
    cmd: "echo tried > $OUT/partial; exit 3"
    outs: [x]
"#,
    )
    .write("src/in.txt", "IN");
    let r = ws.build_fails(&["-j1"], 1);
    let kept: Vec<String> = scratch_left(&ws);
    assert_eq!(kept.len(), 1, "{kept:?}\n{}", r.stderr);
    assert!(
        kept[0].contains("-broken-"),
        "named for its target: {kept:?}"
    );
    let exec = ws.store.join("scratch").join(&kept[0]).join("exec");
    assert!(r.stderr.contains(&kept[0]), "{}", r.stderr);
    assert_eq!(
        fs::read_to_string(exec.join("work/src/in.txt")).unwrap(),
        "IN"
    );
    assert_eq!(
        fs::read_to_string(exec.join("deps/lib/lib.txt")).unwrap(),
        "L"
    );
    assert_eq!(
        fs::read_to_string(exec.join("out/partial")).unwrap(),
        "tried\n"
    );
}

#[test]
fn only_whole_trees_of_this_boot_are_mounted() {
    let ws = dependents();
    ws.build_ok(&[]);
    let trees = ws.store.join("trees");
    let this_boot = trees.join(boot_id());
    // As a power cut would leave it: this boot's trees become an earlier
    // boot's, one of them missing a file and another holding wrong bytes;
    // and a build killed while it filled a tree left a temporary.
    let earlier = trees.join("00000000-0000-0000-0000-000000000000");
    fs::rename(&this_boot, &earlier).unwrap();
    let old = earlier.join("blake3");
    let lib = tree_holding(&old, "lib.txt");
    fs::remove_file(lib.join("lib.txt")).unwrap();
    fs::write(lib.join("lib.txt"), "WRONG").unwrap();
    fs::remove_file(tree_holding(&old, "a.txt").join("a.txt")).unwrap();
    let leftover = this_boot.join("blake3").join(".tmp-00000000000000aa");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("lib.txt"), "WRONG").unwrap();

    let r = ws.build_ok(&["--no-cache"]);
    assert_eq!(r.executed(), ["a", "b", "lib"]);
    assert_eq!(ws.read("out/a/x"), "AL");
    assert_eq!(ws.read("out/b/x"), "BL");

    // gc removes the earlier boot's trees and the leftover; this boot's
    // stay while the store holds their trees, then go with them.
    let r = json(ws.run(&["store", "gc", "--json", "--max-size", "10G"]));
    assert_eq!(r["removed"]["trees"]["count"], 4, "{r:#}");
    assert_eq!(r["removed"]["trees"]["bytes"], 5 + 1 + 5, "{r:#}");
    assert!(!earlier.exists() && !leftover.exists());
    assert_eq!(trees_in(&this_boot.join("blake3")).len(), 3);
    let r = json(ws.run(&[
        "store",
        "gc",
        "--json",
        "--max-size",
        "0",
        "--keep-builds",
        "0",
    ]));
    assert_eq!(r["removed"]["trees"]["count"], 3, "{r:#}");
    assert_eq!(fs::read_dir(&trees).unwrap().count(), 0);
    let stats = json(ws.run(&["store", "stats", "--json"]));
    assert_eq!(stats["trees"]["count"], 0, "{stats:#}");
}

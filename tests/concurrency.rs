//! Several `strata build` processes at once on one store: on the same
//! workspace (they take turns on `out/`) and on different workspaces. None
//! may fail, the store must verify clean, and every `out/` must equal a clean
//! build's. (A build waiting for the `out/` lock and naming its holder is
//! covered in tests/workspace.rs.)

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::hash::Hasher;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;

use common::{Run, Ws};

const BUILDS: usize = 4;

/// Nine targets: `run` steps writing a few hundred KiB each (with a pause, so
/// concurrent builds overlap in every phase) and built-in `archive` and
/// `rootfs` rules.
const BUILD_YAML: &str = r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  gen0:
    rule: run
    srcs: [src/g0.txt]
    cmd: >-
      w=$(cat src/g0.txt) && mkdir -p $OUT/d/e && seq -f "g0-$w-%07g" 1 20000 > $OUT/d/a.txt &&
      tac $OUT/d/a.txt > $OUT/d/e/b.txt && sleep 0.2 && echo $w > $OUT/w.txt
    outs: [d/, w.txt]
  gen1:
    rule: run
    srcs: [src/g1.txt]
    cmd: >-
      w=$(cat src/g1.txt) && mkdir -p $OUT/d/e && seq -f "g1-$w-%07g" 1 20000 > $OUT/d/a.txt &&
      tac $OUT/d/a.txt > $OUT/d/e/b.txt && sleep 0.2 && echo $w > $OUT/w.txt
    outs: [d/, w.txt]
  gen2:
    rule: run
    srcs: [src/g2.txt]
    cmd: >-
      w=$(cat src/g2.txt) && mkdir -p $OUT/d/e && seq -f "g2-$w-%07g" 1 20000 > $OUT/d/a.txt &&
      tac $OUT/d/a.txt > $OUT/d/e/b.txt && sleep 0.2 && echo $w > $OUT/w.txt
    outs: [d/, w.txt]
  join:
    rule: run
    deps: [gen0, gen1, gen2]
    cmd: >-
      mkdir $OUT/j && cat $DEPS/gen*/d/a.txt | sort -r > $OUT/j/all.txt &&
      cat $DEPS/gen*/w.txt > $OUT/j/words.txt && ln -s all.txt $OUT/j/link &&
      printf '#!/bin/sh\necho hi\n' > $OUT/j/run.sh && chmod +x $OUT/j/run.sh
    outs: [j/]
  tgz:
    rule: archive
    from: join
  root:
    rule: rootfs
    layers:
      - {from: "gen0:d", prefix: /opt/g0}
      - {from: "gen1:d", prefix: /opt/g1}
  img:
    rule: archive
    from: root
    compression: zstd
    level: 3
    name: root.tar.zst
  plain:
    rule: archive
    from: "gen2:d"
    compression: none
  last:
    rule: run
    deps: [tgz, img, plain]
    cmd: "cd $DEPS && find . -type f | LC_ALL=C sort | xargs sha256sum > $OUT/sums.txt"
    outs: [sums.txt]
"#;

/// Writes the workspace into `dir`, with `word` in every source but
/// `edited` in `src/g1.txt`.
fn write_workspace(dir: &Path, word: &str, edited: &str) {
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("BUILD.yaml"), BUILD_YAML).unwrap();
    for g in 0..3 {
        let w = if g == 1 { edited } else { word };
        fs::write(dir.join(format!("src/g{g}.txt")), format!("{w}\n")).unwrap();
    }
}

/// Every entry under `out/` but `.strata`: kind, mode, size, content hash.
fn snapshot(out: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, rel: &str, into: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && name == ".strata" {
                continue;
            }
            let path = format!("{rel}{name}");
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let desc = if meta.file_type().is_symlink() {
                format!("symlink -> {}", fs::read_link(e.path()).unwrap().display())
            } else if meta.is_dir() {
                walk(&e.path(), &format!("{path}/"), into);
                format!("dir {mode:o}")
            } else {
                let bytes = fs::read(e.path()).unwrap();
                let mut h = std::hash::DefaultHasher::new();
                h.write(&bytes);
                format!("file {mode:o} {} bytes {:016x}", bytes.len(), h.finish())
            };
            into.insert(path, desc);
        }
    }
    let mut into = BTreeMap::new();
    walk(out, "", &mut into);
    into
}

/// Target -> output digest of a successful `--json` build.
fn outputs(r: &Run) -> BTreeMap<String, String> {
    r.json()["targets"]
        .as_object()
        .expect("targets object")
        .iter()
        .map(|(name, t)| {
            assert!(
                t["status"] == "executed" || t["status"] == "cached",
                "target {name} is {}:\n{}",
                t["status"],
                r.stderr
            );
            (name.clone(), t["output"].as_str().unwrap().to_string())
        })
        .collect()
}

/// What a clean build (fresh store, one process) of a workspace with these
/// sources produces.
struct Clean {
    outputs: BTreeMap<String, String>,
    out: BTreeMap<String, String>,
}

fn clean_build(word: &str, edited: &str) -> Clean {
    let ws = Ws::new();
    write_workspace(ws.path(), word, edited);
    let r = ws.build_ok(&["-j2"]);
    Clean {
        outputs: outputs(&r),
        out: snapshot(&ws.path().join("out")),
    }
}

/// `strata build --json -j2` in `dir` on `store`.
fn build_cmd(dir: &Path, store: &Path) -> Command {
    let mut c = Command::new(common::strata_bin());
    c.current_dir(dir)
        .args(["build", "--json", "-j2"])
        .env("STRATA_STORE", store)
        .env_remove("XDG_CACHE_HOME")
        .env("NO_COLOR", "1");
    c
}

/// Runs one build in each of `dirs` (a folder may appear several times), all
/// started at the same moment, and returns their results in order.
fn build_at_once(dirs: &[PathBuf], store: &Path) -> Vec<Run> {
    let barrier = Barrier::new(dirs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|dir| {
                let mut cmd = build_cmd(dir, store);
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    Run::from(cmd.output().expect("strata runs"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn assert_all_succeeded(runs: &[Run], what: &str) {
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(
            r.code,
            0,
            "{what}: build {i} of {} failed:\nstdout:\n{}\nstderr:\n{}",
            runs.len(),
            r.stdout,
            r.stderr
        );
    }
}

fn assert_store_verifies(store: &Path) {
    let out = Command::new(common::strata_bin())
        .args(["store", "verify", "--store"])
        .arg(store)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "store verify:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("no corruption"), "{stdout}");
}

/// After the builds, `out/.strata` holds only the lock holder's name and
/// the state: no staging folder of a build that lost a race.
fn assert_no_staging(dir: &Path) {
    let mut left: Vec<String> = fs::read_dir(dir.join("out/.strata"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["holder", "state.json"], "in {}", dir.display());
}

fn assert_like_clean(r: &Run, dir: &Path, clean: &Clean, what: &str) {
    assert_eq!(
        outputs(r),
        clean.outputs,
        "{what}: outputs differ from a clean build\nstderr:\n{}",
        r.stderr
    );
    let out = snapshot(&dir.join("out"));
    if out != clean.out {
        let diff: Vec<String> = clean
            .out
            .keys()
            .chain(out.keys())
            .filter(|k| out.get(*k) != clean.out.get(*k))
            .take(10)
            .map(|k| format!("out/{k}: {:?}, clean: {:?}", out.get(k), clean.out.get(k)))
            .collect();
        panic!(
            "{what}: {} differs from a clean build's out/:\n{}",
            dir.display(),
            diff.join("\n")
        );
    }
}

#[test]
fn four_builds_of_one_workspace_at_once_agree_with_a_clean_build() {
    let ws = Ws::new();
    write_workspace(ws.path(), "alpha", "alpha");
    let dirs = vec![ws.path().to_path_buf(); BUILDS];

    // Cold: all four run the same steps and write the same objects at once.
    let runs = build_at_once(&dirs, &ws.store);
    assert_all_succeeded(&runs, "cold");
    assert_store_verifies(&ws.store);
    let clean = clean_build("alpha", "alpha");
    for (i, r) in runs.iter().enumerate() {
        assert_like_clean(r, ws.path(), &clean, &format!("cold build {i}"));
    }
    assert_no_staging(ws.path());
    // They took turns on out/; report how many had to wait.
    let waited = runs
        .iter()
        .filter(|r| r.stderr.contains("locked by"))
        .count();
    eprintln!("cold: {waited} of {BUILDS} builds waited for out/");

    // Incremental: an edit, then four builds at once again.
    write_workspace(ws.path(), "alpha", "bravo");
    let runs = build_at_once(&dirs, &ws.store);
    assert_all_succeeded(&runs, "after an edit");
    assert_store_verifies(&ws.store);
    let clean = clean_build("alpha", "bravo");
    for (i, r) in runs.iter().enumerate() {
        assert_like_clean(r, ws.path(), &clean, &format!("incremental build {i}"));
    }
    assert_no_staging(ws.path());

    // Everything cached and out/ gone: all four go straight to filling out/.
    let r = ws.run(&["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let runs = build_at_once(&dirs, &ws.store);
    assert_all_succeeded(&runs, "cached, after strata clean");
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.executed(), Vec::<String>::new(), "build {i}");
        assert_like_clean(r, ws.path(), &clean, &format!("cached build {i}"));
    }
    assert_no_staging(ws.path());
    let waited = runs
        .iter()
        .filter(|r| r.stderr.contains("locked by"))
        .count();
    eprintln!("cached: {waited} of {BUILDS} builds waited for out/");
}

#[test]
fn four_workspaces_on_one_store_at_once_agree_with_clean_builds() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("store");
    // Three copies of one workspace and one with an edited source.
    let wss: Vec<Ws> = (0..BUILDS).map(|_| Ws::new()).collect();
    let dirs: Vec<PathBuf> = wss.iter().map(|w| w.path().to_path_buf()).collect();
    let same = clean_build("alpha", "alpha");
    for (round, edited) in [("cold", "bravo"), ("incremental", "charlie")] {
        for (i, dir) in dirs.iter().enumerate() {
            let e = if i == BUILDS - 1 { edited } else { "alpha" };
            write_workspace(dir, "alpha", e);
        }
        let runs = build_at_once(&dirs, &store);
        assert_all_succeeded(&runs, round);
        assert_store_verifies(&store);
        let other = clean_build("alpha", edited);
        for (i, r) in runs.iter().enumerate() {
            let clean = if i == BUILDS - 1 { &other } else { &same };
            assert_like_clean(r, &dirs[i], clean, &format!("{round}: workspace {i}"));
            assert_no_staging(&dirs[i]);
        }
    }
}

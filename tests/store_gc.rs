//! `strata store gc` and `strata store stats` on real builds: what the
//! newest builds need survives (and the next build is fully cached), the
//! rest goes least recently used first, a running build is never collected
//! from, and the numbers match what is on disk.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, Ws};

/// Two targets whose outputs depend on `src/x.txt`.
const CHAIN: &str = r#"
targets:
  first:
    rule: run
    srcs: [src/x.txt]
    cmd: "cat src/x.txt > $OUT/f.txt; seq 1 3000 >> $OUT/f.txt"
    outs: [f.txt]
  second:
    rule: run
    deps: [first]
    cmd: "tac $DEPS/first/f.txt > $OUT/s.txt"
    outs: [s.txt]
"#;

fn json_of(ws: &Ws, args: &[&str]) -> serde_json::Value {
    let r = ws.run(args);
    assert_eq!(r.code, 0, "{args:?}:\n{}\n{}", r.stdout, r.stderr);
    r.json()
}

fn gc(ws: &Ws, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["store", "gc", "--json"];
    all.extend_from_slice(args);
    json_of(ws, &all)
}

fn stats(ws: &Ws, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["store", "stats", "--json"];
    all.extend_from_slice(args);
    json_of(ws, &all)
}

fn verify_clean(ws: &Ws) {
    let r = ws.run(&["store", "verify"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("no corruption"), "{}", r.stdout);
}

/// Whether the CAS holds a blob with the hash of `qualified`
/// (`blake3:<hex>`).
fn blob_stored(ws: &Ws, qualified: &str) -> bool {
    let hex = qualified.strip_prefix("blake3:").expect("a blake3 digest");
    let shard = ws.store.join("cas/blake3").join(&hex[..2]);
    fs::read_dir(shard).is_ok_and(|d| {
        d.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{hex}-"))
        })
    })
}

fn outputs(r: &Run) -> Vec<String> {
    let doc = r.json();
    ["first", "second"]
        .iter()
        .map(|t| doc["targets"][t]["output"].as_str().unwrap().to_string())
        .collect()
}

/// Builds CHAIN with `x` as its source, as build A, then with `y` as B.
fn two_builds(ws: &Ws) -> (Vec<String>, Vec<String>) {
    ws.write("BUILD.yaml", CHAIN).write("src/x.txt", "A\n");
    let a = ws.build_ok(&[]);
    ws.write("src/x.txt", "B\n");
    let b = ws.build_ok(&[]);
    assert_eq!(b.executed(), ["first", "second"]);
    (outputs(&a), outputs(&b))
}

#[test]
fn gc_keeps_what_the_newest_build_needs_and_removes_the_rest() {
    let ws = Ws::new();
    let (a, b) = two_builds(&ws);
    for out in a.iter().chain(&b) {
        assert!(blob_stored(&ws, out), "{out} is stored before gc");
    }
    let r = gc(&ws, &["--max-size", "0", "--keep-builds", "1"]);
    assert_eq!(r["removed"]["action_results"]["count"], 2, "{r:#}");
    for out in &a {
        assert!(!blob_stored(&ws, out), "A's output {out} survived gc");
    }
    for out in &b {
        assert!(blob_stored(&ws, out), "B's output {out} was collected");
    }
    // Everything left is what build B reaches.
    let s = stats(&ws, &["--keep-builds", "1"]);
    assert_eq!(s["objects"], s["reachable"], "{s:#}");
    assert_eq!(s["objects"], r["after"], "{s:#}\n{r:#}");
    verify_clean(&ws);

    let again = ws.build_ok(&[]);
    assert_eq!(again.with_status("cached"), ["first", "second"]);
    assert!(ws.read("out/first/f.txt").starts_with("B\n1\n2\n"));
    assert!(ws.read("out/second/s.txt").ends_with("2\n1\nB\n"));

    // A's results went with its objects.
    ws.write("src/x.txt", "A\n");
    assert_eq!(ws.build_ok(&[]).executed(), ["first", "second"]);
    verify_clean(&ws);
}

#[test]
fn keeping_two_builds_keeps_both() {
    let ws = Ws::new();
    let (a, b) = two_builds(&ws);
    let r = gc(&ws, &["--max-size", "0", "--keep-builds", "2"]);
    assert_eq!(r["removed"]["action_results"]["count"], 0, "{r:#}");
    assert_eq!(r["removed"]["blobs"]["count"], 0, "{r:#}");
    assert_eq!(r["over_limit"], true);
    for out in a.iter().chain(&b) {
        assert!(blob_stored(&ws, out), "{out} was collected");
    }
    ws.write("src/x.txt", "A\n");
    assert_eq!(ws.build_ok(&[]).with_status("cached"), ["first", "second"]);
    verify_clean(&ws);
}

/// Counts of one are in the singular: "1 workspace", not "1 workspaces".
#[test]
fn counts_of_one_read_in_the_singular() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  one:\n    rule: run\n    cmd: \"echo 1 > $OUT/o\"\n    outs: [o]\n",
    );
    ws.build_ok(&[]);
    let s = ws.run(&["store", "stats", "--keep-builds", "1"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert!(
        s.stdout.contains("build records of 1 workspace:\n")
            && s.stdout.contains("  1 build   ")
            && s.stdout
                .contains("reachable from the newest build of each workspace: ")
            && s.stdout.contains(" and 1 action result\n"),
        "{}",
        s.stdout
    );
    let v = ws.run(&["store", "verify"]);
    assert!(
        v.stdout.contains(" objects, 1 action result checked"),
        "{}",
        v.stdout
    );
    let g = ws.run(&["store", "gc", "--max-size", "0", "--keep-builds", "1"]);
    assert_eq!(g.code, 0, "{}", g.stderr);
    assert!(
        g.stdout
            .contains("the newest build of each workspace reach")
            && g.stdout.contains("and 1 action result (limit"),
        "{}",
        g.stdout
    );
}

#[test]
fn dry_run_removes_nothing() {
    let ws = Ws::new();
    two_builds(&ws);
    let before = stats(&ws, &[]);
    let r = gc(&ws, &["--max-size", "0", "--keep-builds", "1", "--dry-run"]);
    assert_eq!(r["removed"]["action_results"]["count"], 2, "{r:#}");
    assert_eq!(stats(&ws, &[])["objects"], before["objects"]);
}

/// One target whose ~240 KB output is named by the variable `v`.
const VERSIONS: &str = r#"
vars:
  v: v1
targets:
  t:
    rule: run
    cmd: "seq -f '${v}-%08g' 1 20000 > $OUT/o"
    outs: [o]
"#;

fn build_version(ws: &Ws, v: &str) -> Run {
    // Apart in time, so last uses are ordered whatever the clock's grain.
    std::thread::sleep(Duration::from_millis(50));
    ws.build_ok(&["--var", &format!("v={v}")])
}

#[test]
fn the_least_recently_used_results_go_first() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", VERSIONS);
    build_version(&ws, "v1");
    build_version(&ws, "v2");
    // A cache hit is a use: v1 is now more recent than v2, though older.
    assert_eq!(build_version(&ws, "v1").with_status("cached"), ["t"]);
    build_version(&ws, "v3");
    // Only v3 is kept by its record; v1 and v2 are two unreachable groups of
    // about 240 KB each. The limit requires evicting one of them.
    let total = stats(&ws, &[])["objects"]["bytes"].as_u64().unwrap();
    let limit = (total - 120_000).to_string();
    let r = gc(&ws, &["--max-size", &limit, "--keep-builds", "1"]);
    assert_eq!(r["removed"]["action_results"]["count"], 1, "{r:#}");
    assert!(r["after"]["bytes"].as_u64().unwrap() <= total - 120_000);
    assert_eq!(r["over_limit"], false);
    verify_clean(&ws);
    assert_eq!(build_version(&ws, "v3").with_status("cached"), ["t"]);
    assert_eq!(build_version(&ws, "v1").with_status("cached"), ["t"]);
    assert_eq!(build_version(&ws, "v2").executed(), ["t"]);
}

fn wait_for(path: &Path, what: &str) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strata starts")
}

fn finish(child: Child) -> Run {
    child.wait_with_output().expect("strata ends").into()
}

/// `second` waits (at most a minute) for `<markers>/go`, after telling
/// `<markers>/started` that `first` is done.
fn waiting_chain(ws: &Ws) -> PathBuf {
    let markers = ws.path().join("markers");
    fs::create_dir_all(&markers).unwrap();
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"
targets:
  first:
    rule: run
    cmd: "seq 1 5000 > $OUT/f.txt"
    outs: [f.txt]
  second:
    rule: run
    deps: [first]
    env: {{DIR: "{}"}}
    cmd: "touch $DIR/started; i=0; while [ ! -e $DIR/go ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.05; done; tac $DEPS/first/f.txt > $OUT/s.txt"
    outs: [s.txt]
"#,
            markers.display()
        ),
    );
    markers
}

#[test]
fn a_running_build_is_never_collected_from() {
    let ws = Ws::new();
    let markers = waiting_chain(&ws);
    // The markers live outside the sandbox, so run the steps unsandboxed.
    let mut build = ws.cmd(&["build", "--json"]);
    build.env("STRATA_SANDBOX", "off");
    let build = spawn(build);
    wait_for(&markers.join("started"), "the build's second step to start");

    // `first`'s results are in the store, named by no record yet.
    let refused = ws.run(&[
        "store",
        "gc",
        "--max-size",
        "0",
        "--keep-builds",
        "0",
        "--no-wait",
    ]);
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("a build is running"),
        "{}",
        refused.stderr
    );

    let mut collector = spawn(ws.cmd(&[
        "store",
        "gc",
        "--json",
        "--max-size",
        "0",
        "--keep-builds",
        "1",
    ]));
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        collector.try_wait().unwrap().is_none(),
        "gc did not wait for the running build"
    );
    fs::write(markers.join("go"), "").unwrap();
    let built = finish(build);
    assert_eq!(built.code, 0, "{}\n{}", built.stdout, built.stderr);
    assert_eq!(built.executed(), ["first", "second"]);
    let collected = finish(collector);
    assert_eq!(
        collected.code, 0,
        "{}\n{}",
        collected.stdout, collected.stderr
    );
    assert!(
        collected
            .stderr
            .contains("waiting for the running builds to finish"),
        "{}",
        collected.stderr
    );

    let seq: String = (1..=5000).map(|i| format!("{i}\n")).collect();
    let tac: String = (1..=5000).rev().map(|i| format!("{i}\n")).collect();
    assert_eq!(ws.read("out/first/f.txt"), seq);
    assert_eq!(ws.read("out/second/s.txt"), tac);
    verify_clean(&ws);
    let mut again = ws.cmd(&["build", "--json"]);
    again.env("STRATA_SANDBOX", "off");
    let again: Run = again.output().unwrap().into();
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.with_status("cached"), ["first", "second"]);
}

#[test]
fn a_build_waits_while_gc_holds_the_store() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", CHAIN).write("src/x.txt", "A\n");
    ws.build_ok(&[]);
    let lock = fs::File::options()
        .write(true)
        .open(ws.store.join("meta/gc.lock"))
        .expect("builds create the lock file");
    lock.lock().unwrap();
    let mut build = spawn(ws.cmd(&["build", "--json"]));
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        build.try_wait().unwrap().is_none(),
        "the build did not wait for gc"
    );
    lock.unlock().unwrap();
    let r = finish(build);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("waiting for `strata store gc`"),
        "{}",
        r.stderr
    );
}

/// (files, bytes) of the regular files under `dir`, at depth `depth`.
fn files_at(dir: &Path, depth: usize) -> (u64, u64) {
    let mut level = vec![dir.to_path_buf()];
    for _ in 0..depth - 1 {
        level = level
            .iter()
            .flat_map(|d| fs::read_dir(d).unwrap().flatten().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
    }
    let files: Vec<fs::Metadata> = level
        .iter()
        .flat_map(|d| fs::read_dir(d).unwrap().flatten())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .collect();
    (
        files.len() as u64,
        files.iter().map(|m| m.len()).sum::<u64>(),
    )
}

#[test]
fn stats_match_the_disk_and_gc_removes_leftovers_of_dead_builds() {
    let ws = Ws::new();
    two_builds(&ws);
    ws.write("src/x.txt", "C\n");
    ws.build_ok(&[]);
    // Leftovers of a killed build: a temporary file and an unlocked scratch
    // folder; and a cache mount, which gc leaves alone.
    fs::write(ws.store.join("tmp/.tmp-dead"), vec![7u8; 1000]).unwrap();
    let dead = ws
        .store
        .join("scratch/0123456789abcdef-first-00000000000000aa");
    fs::create_dir_all(dead.join("exec")).unwrap();
    fs::write(dead.join(".lock"), "").unwrap();
    fs::write(dead.join("stderr"), vec![b'e'; 300]).unwrap();
    fs::create_dir_all(ws.store.join("caches/apt")).unwrap();
    fs::write(ws.store.join("caches/apt/pkg"), vec![0u8; 4096]).unwrap();

    let s = stats(&ws, &[]);
    let (blobs, blob_bytes) = files_at(&ws.store.join("cas/blake3"), 2);
    let (entries, entry_bytes) = files_at(&ws.store.join("ac/blake3"), 2);
    assert!(
        blobs > 10 && entries == 6,
        "{blobs} blobs, {entries} entries"
    );
    let o = &s["by_function"]["blake3"];
    assert_eq!(o["blobs"]["count"], blobs, "{s:#}");
    assert_eq!(o["blobs"]["bytes"], blob_bytes, "{s:#}");
    assert_eq!(o["action_results"]["count"], entries, "{s:#}");
    assert_eq!(o["action_results"]["bytes"], entry_bytes, "{s:#}");
    assert_eq!(s["objects"]["bytes"], blob_bytes + entry_bytes);
    assert_eq!(s["temporaries"]["count"], 1);
    assert_eq!(s["temporaries"]["bytes"], 1000);
    assert_eq!(s["scratch"]["folders"], 1);
    assert_eq!(s["scratch"]["in_use"], 0);
    assert_eq!(s["scratch"]["bytes"], 300);
    assert_eq!(s["caches"]["count"], 1);
    assert_eq!(s["caches"]["bytes"], 4096);
    let w = s["workspaces"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{s:#}");
    assert_eq!(w[0]["builds"], 3);
    // Three builds, each with its own two results, all kept by default.
    assert_eq!(s["reachable"], s["objects"], "{s:#}");
    assert_eq!(
        stats(&ws, &["--keep-builds", "1"])["reachable"]["action_results"]["count"],
        2
    );

    let r = gc(&ws, &["--max-size", "10G"]);
    assert_eq!(r["removed"]["blobs"]["count"], 0, "{r:#}");
    assert_eq!(r["removed"]["temporaries"]["count"], 1, "{r:#}");
    assert_eq!(r["removed"]["scratch"]["count"], 1, "{r:#}");
    assert!(!ws.store.join("tmp/.tmp-dead").exists());
    assert!(!dead.exists());
    assert!(ws.store.join("caches/apt/pkg").exists());
    assert_eq!(r["after"], s["objects"]);
    verify_clean(&ws);
}

#[test]
fn bad_sizes_and_missing_stores_are_usage_errors() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", CHAIN).write("src/x.txt", "A\n");
    ws.build_ok(&[]);
    for bad in ["10X", "-1", "", "1.5G", "G", "99999999999999T"] {
        let r = ws.run(&["store", "gc", "--max-size", bad]);
        assert_eq!(r.code, 2, "{bad:?}: {}", r.stderr);
        assert!(r.stderr.contains("--max-size"), "{}", r.stderr);
    }
    assert_eq!(ws.run(&["store", "gc"]).code, 2, "--max-size is required");
    let r = ws.run(&["store", "gc", "--max-size", "0", "--keep-builds", "x"]);
    assert_eq!(r.code, 2);
    let nowhere = ws.path().join("no-store");
    let nowhere = nowhere.to_str().unwrap();
    let r = ws.run(&["store", "gc", "--max-size", "0", "--store", nowhere]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(ws.run(&["store", "stats", "--store", nowhere]).code, 2);
    assert!(!Path::new(nowhere).exists(), "a store was created");
    // Nothing was collected by any of them.
    assert_eq!(ws.build_ok(&[]).with_status("cached"), ["first", "second"]);
}

/// Twenty targets, each writing a few files named by the variable `v`.
fn many_targets() -> String {
    let mut yaml = String::from("vars:\n  v: a\ntargets:\n");
    for i in 0..20 {
        yaml.push_str(&format!(
            "  t{i}:\n    rule: run\n    cmd: \"mkdir $OUT/d; for f in 1 2 3 4 5; do seq -f '${{v}}-{i}-$f-%g' 1 200 > $OUT/d/$f; done\"\n    outs: [d/]\n"
        ));
    }
    yaml
}

#[test]
fn a_killed_gc_leaves_no_entry_pointing_at_a_removed_blob() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", &many_targets());
    let versions = ["a", "b", "c"];
    for v in versions {
        ws.build_ok(&["--var", &format!("v={v}")]);
    }
    let t0 = Instant::now();
    gc(&ws, &["--max-size", "0", "--keep-builds", "1", "--dry-run"]);
    let span = t0.elapsed().as_micros() as u64 * 2 + 1;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..8 {
        let latest = versions[round % versions.len()];
        let r = ws.build_ok(&["--var", &format!("v={latest}")]);
        assert_eq!(r.with_status("failed"), Vec::<String>::new());
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut collector =
            spawn(ws.cmd(&["store", "gc", "--max-size", "0", "--keep-builds", "1"]));
        std::thread::sleep(Duration::from_micros(seed % span));
        let _ = collector.kill();
        let _ = collector.wait();
        // Whatever it removed, entries went before their blobs, and what the
        // newest build uses is all there.
        verify_clean(&ws);
        let again = ws.build_ok(&["--var", &format!("v={latest}")]);
        assert_eq!(again.executed(), Vec::<String>::new(), "round {round}");
    }
}

//! Crash injection: `strata build -j2` is SIGKILLed at random moments (while
//! it hashes sources, runs steps, writes the store or fills `out/`), and after
//! every kill no step may outlive the build, `strata store verify` must find
//! nothing corrupt, and the next build must succeed with exactly the outputs
//! (JSON digests and bytes under `out/`) of a build that was never
//! interrupted.
//!
//! Between kills sources are usually edited, so the killed build has work to
//! do; sometimes `out/` is cleaned first, and sometimes the edit is undone
//! after the kill. The same sequence of builds runs uninterrupted in a
//! reference workspace with a store of its own: it gives the expected outputs
//! and the duration of each build, over which the kill moment is spread
//! (a cold build first, then incremental ones, which are much shorter).
//!
//! `STRATA_CRASH_KILLS` sets the number of kills (default 30),
//! `STRATA_CRASH_SEED` the seed of the PRNG that picks the moments and the
//! edits (default: from the clock; it is printed). The test prints a summary
//! line, `crash injection: N kills ..., F failures ...`, which
//! `benches/crash_injection.sh` reads.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::Hasher;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Run, Ws};

const DEFAULT_KILLS: usize = 30;
/// Generator targets, each with a source file of its own.
const GENS: usize = 6;
/// What a source may hold. The first two differ only by a space, which the
/// steps drop: switching between them re-runs a generator whose output does
/// not change (early cutoff).
const WORDS: [&str; 4] = ["alpha", "al pha", "bravo", "charlie"];
/// How long the processes of a killed build may take to disappear.
const GRACE: Duration = Duration::from_secs(5);

/// SplitMix64: a small seeded PRNG, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
    )
}

/// About 20 targets in four layers: `run` steps writing several files and
/// folders of a few hundred KiB each, and built-in `archive` and `rootfs`
/// rules reading them. Every `run` command starts with `marker`, so the
/// step's processes can be found in /proc.
fn build_yaml(marker: &str) -> String {
    let mut y = String::from("vars:\n  SOURCE_DATE_EPOCH: \"1700000000\"\ntargets:\n");
    for g in 0..GENS {
        // ~400 KiB per file, three files in a folder tree plus a small one.
        y.push_str(&format!(
            r#"  gen{g}:
    rule: run
    srcs: [src/g{g}.txt]
    cmd: >-
      {marker} w=$(tr -d ' \n' < src/g{g}.txt) &&
      mkdir -p $OUT/tree/sub &&
      seq -f "g{g}-$w-%07g" 1 24000 > $OUT/tree/a.txt &&
      tac $OUT/tree/a.txt > $OUT/tree/sub/b.txt &&
      sed 's/-/./g' $OUT/tree/a.txt > $OUT/tree/sub/c.txt &&
      wc -c < $OUT/tree/a.txt > $OUT/size.txt
    outs: [tree/, size.txt]
"#
        ));
    }
    for m in 0..GENS - 1 {
        let (a, b) = (m, m + 1);
        y.push_str(&format!(
            r#"  mix{m}:
    rule: run
    deps: [gen{a}, gen{b}]
    cmd: >-
      {marker} mkdir -p $OUT/m &&
      sort -r $DEPS/gen{a}/tree/a.txt > $OUT/m/sorted.txt &&
      paste -d' ' $DEPS/gen{a}/tree/a.txt $DEPS/gen{b}/tree/sub/b.txt > $OUT/m/pasted.txt &&
      cat $DEPS/gen{a}/size.txt $DEPS/gen{b}/size.txt > $OUT/sizes.txt
    outs: [m/, sizes.txt]
"#
        ));
    }
    y.push_str(&format!(
        r#"  combo0:
    rule: run
    deps: [mix0, mix2]
    cmd: >-
      {marker} mkdir -p $OUT/c/d &&
      cut -c1-12 $DEPS/mix0/m/pasted.txt > $OUT/c/cut.txt &&
      cat $DEPS/mix2/m/sorted.txt $DEPS/mix0/m/sorted.txt > $OUT/c/d/both.txt &&
      ln -s d/both.txt $OUT/c/link &&
      printf '#!/bin/sh\necho hi\n' > $OUT/c/run.sh && chmod +x $OUT/c/run.sh
    outs: [c/]
  combo1:
    rule: run
    deps: [mix3, mix4]
    cmd: >-
      {marker} mkdir -p $OUT/x &&
      for f in sorted pasted; do cat $DEPS/mix3/m/$f.txt $DEPS/mix4/m/$f.txt > $OUT/x/$f.txt; done
    outs: [x/]
  arc0:
    rule: archive
    from: gen0
  arc1:
    rule: archive
    from: "gen1:tree"
    compression: zstd
    level: 3
    prefix: opt/g1
    name: g1.tar.zst
  arcmix:
    rule: archive
    from: mix3
    compression: gzip
    level: 1
  tgz:
    rule: archive
    from: combo0
  root:
    rule: rootfs
    srcs: [src/g3.txt]
    layers:
      - {{from: "gen2:tree", prefix: /opt/g2}}
      - {{from: "mix1:m", prefix: /opt/m1}}
    components:
      - {{type: file, source: src/g3.txt, target: /etc/g3.txt, chmod: "0644"}}
  img:
    rule: archive
    from: root
    compression: none
    name: root.tar
  final:
    rule: run
    deps: [img, arc0, arc1, arcmix, tgz, combo1]
    cmd: >-
      {marker} cd $DEPS && find . -type f | LC_ALL=C sort | xargs sha256sum > $OUT/sums.txt &&
      cp img/root.tar $OUT/img.tar
    outs: [sums.txt, img.tar]
"#
    ));
    y
}

fn write_sources(ws: &Ws, state: &[usize]) {
    for (g, &w) in state.iter().enumerate() {
        ws.write(&format!("src/g{g}.txt"), &format!("{}\n", WORDS[w]));
    }
}

/// Pids and command lines of processes whose command line contains `marker`
/// (arguments joined by spaces).
fn processes_with(marker: &str) -> Vec<(String, String)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        })
        .filter_map(|e| {
            let raw = fs::read(e.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            line.contains(marker)
                .then(|| (e.file_name().to_string_lossy().into_owned(), line))
        })
        .collect()
}

/// What a successful build produced: each target's key and output digest
/// from `--json`, and every entry of `out/` (kind, mode, size, content hash).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outputs {
    targets: BTreeMap<String, (String, String)>,
    tree: BTreeMap<String, String>,
}

fn outputs_of(run: &Run, out: &Path) -> Result<Outputs, String> {
    let doc: serde_json::Value = serde_json::from_str(&run.stdout)
        .map_err(|e| format!("stdout is not JSON ({e}):\n{}", run.stdout))?;
    let mut targets = BTreeMap::new();
    for (name, t) in doc["targets"].as_object().ok_or("no targets object")? {
        let status = t["status"].as_str().unwrap_or("");
        if status != "executed" && status != "cached" {
            return Err(format!("target {name} is {status}:\n{}", run.stderr));
        }
        targets.insert(
            name.clone(),
            (
                t["key"].as_str().unwrap_or("").to_string(),
                t["output"].as_str().unwrap_or("").to_string(),
            ),
        );
    }
    let mut tree = BTreeMap::new();
    snapshot(out, "", &mut tree).map_err(|e| format!("cannot read out/: {e}"))?;
    Ok(Outputs { targets, tree })
}

fn snapshot(dir: &Path, rel: &str, into: &mut BTreeMap<String, String>) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if rel.is_empty() && name == ".strata" {
            continue;
        }
        let path = format!("{rel}{name}");
        let meta = fs::symlink_metadata(e.path())?;
        let mode = meta.permissions().mode() & 0o7777;
        let desc = if meta.file_type().is_symlink() {
            format!("symlink -> {}", fs::read_link(e.path())?.display())
        } else if meta.is_dir() {
            snapshot(&e.path(), &format!("{path}/"), into)?;
            format!("dir {mode:o}")
        } else {
            let bytes = fs::read(e.path())?;
            let mut h = std::hash::DefaultHasher::new();
            h.write(&bytes);
            format!(
                "file {mode:o} {} bytes, hash {:016x}",
                bytes.len(),
                h.finish()
            )
        };
        into.insert(path, desc);
    }
    Ok(())
}

/// The first differences between two sets of outputs, for a failure message.
fn differences(got: &Outputs, want: &Outputs) -> String {
    let mut lines = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        got.targets.keys().chain(want.targets.keys()).collect();
    for n in names {
        if got.targets.get(n) != want.targets.get(n) {
            lines.push(format!(
                "target {n}: got (key, output) {:?}, a clean build has {:?}",
                got.targets.get(n),
                want.targets.get(n)
            ));
        }
    }
    let paths: std::collections::BTreeSet<&String> =
        got.tree.keys().chain(want.tree.keys()).collect();
    for p in paths {
        if got.tree.get(p) != want.tree.get(p) {
            lines.push(format!(
                "out/{p}: got {:?}, a clean build has {:?}",
                got.tree.get(p),
                want.tree.get(p)
            ));
        }
    }
    let total = lines.len();
    lines.truncate(20);
    if total > 20 {
        lines.push(format!("... {} more differences", total - 20));
    }
    lines.join("\n")
}

fn build(ws: &Ws) -> Result<Outputs, String> {
    build_timed(ws).map(|(o, _)| o)
}

/// [`build`], and how long the `strata` process ran.
fn build_timed(ws: &Ws) -> Result<(Outputs, Duration), String> {
    let t0 = Instant::now();
    let r = ws.run(&["build", "--json", "-j2"]);
    let took = t0.elapsed();
    if r.code != 0 {
        return Err(format!(
            "build exited with {}:\nstdout:\n{}\nstderr:\n{}",
            r.code, r.stdout, r.stderr
        ));
    }
    Ok((outputs_of(&r, &ws.path().join("out"))?, took))
}

fn verify(ws: &Ws) -> Result<(), String> {
    let store = ws.store.to_str().expect("UTF-8 temp path");
    let r = ws.run(&["store", "verify", "--store", store]);
    if r.code != 0 || !r.stdout.contains("no corruption") {
        return Err(format!(
            "`strata store verify` exited with {}:\n{}{}",
            r.code, r.stdout, r.stderr
        ));
    }
    Ok(())
}

/// Waits until no process carries `marker`, for at most [`GRACE`].
fn no_survivors(marker: &str) -> Result<(), String> {
    let deadline = Instant::now() + GRACE;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "step processes survived the kill by {GRACE:?}: {left:#?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds of the same sequence of source states in a workspace and store of
/// their own that are never interrupted: what each build after a kill must
/// produce, and how long the build that gets killed should take.
struct Reference {
    ws: Ws,
    seen: HashMap<Vec<usize>, Outputs>,
}

impl Reference {
    /// Brings the reference to `state` (emptying its `out/` first if `clean`)
    /// and returns its outputs and how long that build took.
    fn build(&mut self, state: &[usize], clean: bool) -> (Outputs, Duration) {
        write_sources(&self.ws, state);
        if clean {
            let r = self.ws.run(&["clean"]);
            assert_eq!(r.code, 0, "strata clean: {}", r.stderr);
        }
        let (o, took) =
            build_timed(&self.ws).unwrap_or_else(|e| panic!("reference build failed: {e}"));
        // Outputs are a function of the sources, however the store got there.
        if let Some(before) = self.seen.insert(state.to_vec(), o.clone()) {
            assert!(
                before == o,
                "the reference build of sources {state:?} changed:\n{}",
                differences(&o, &before)
            );
        }
        (o, took)
    }
}

/// How one kill went.
enum Kill {
    /// The build was running when it was killed.
    Hit,
    /// The build had already finished (successfully).
    Late,
}

/// Starts a build and SIGKILLs it after `delay`, unless it finished first;
/// then checks that none of its steps' processes is left and that the store
/// verifies clean.
fn kill(ws: &Ws, delay: Duration, marker: &str) -> Result<Kill, String> {
    let mut child = ws
        .cmd(&["build", "--json", "-j2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start strata: {e}"))?;
    // Poll rather than sleep, to tell a build that finished before the kill.
    let t0 = Instant::now();
    let kill = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if !status.success() {
                return Err(format!("the build ended with {status} before the kill"));
            }
            break Kill::Late;
        }
        let left = delay.saturating_sub(t0.elapsed());
        if left.is_zero() {
            // SAFETY: kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            child.wait().map_err(|e| e.to_string())?;
            break Kill::Hit;
        }
        std::thread::sleep(left.min(Duration::from_millis(2)));
    };
    no_survivors(marker)?;
    verify(ws)?;
    Ok(kill)
}

/// The build after a kill: it succeeds with the outputs of a clean build.
fn recover(ws: &Ws, expected: &Outputs) -> Result<(), String> {
    let got = build(ws).map_err(|e| format!("the build after the kill: {e}"))?;
    if got != *expected {
        return Err(format!(
            "the build after the kill differs from a clean build:\n{}",
            differences(&got, expected)
        ));
    }
    Ok(())
}

#[test]
fn builds_killed_at_random_moments_leave_a_consistent_store_and_out() {
    let kills = env_number("STRATA_CRASH_KILLS").unwrap_or(DEFAULT_KILLS as u64) as usize;
    let seed = env_number("STRATA_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let replay = format!("STRATA_CRASH_SEED={seed} STRATA_CRASH_KILLS={kills}");
    eprintln!("crash injection: {replay}");
    let mut rng = Rng(seed);
    // A sleep length no other process uses marks this run's steps.
    let marker = format!("sleep 0.0{:07}3;", std::process::id());
    let yaml = build_yaml(&marker);

    let mut state = vec![0usize; GENS];
    let mut reference = Reference {
        ws: Ws::new(),
        seen: HashMap::new(),
    };
    reference.ws.write("BUILD.yaml", &yaml);
    let ws = Ws::new();
    ws.write("BUILD.yaml", &yaml);
    let (mut hits, mut late, mut failures) = (0usize, 0usize, 0usize);
    let mut first_failure = None;
    let mut cold = None;
    let started = Instant::now();
    for i in 0..kills {
        // Give the killed build work to do: usually edit a source or two.
        // (The first one is a cold build.)
        let before = state.clone();
        if i > 0 && rng.percent(75) {
            for _ in 0..=rng.below(2) {
                let g = rng.below(GENS as u64) as usize;
                state[g] =
                    (state[g] + 1 + rng.below(WORDS.len() as u64 - 1) as usize) % WORDS.len();
            }
        }
        if i == 0 || state != before {
            write_sources(&ws, &state);
        }
        // Sometimes make it fill out/ from scratch.
        let clean = rng.percent(10);
        if clean {
            let r = ws.run(&["clean"]);
            assert_eq!(r.code, 0, "{replay}: strata clean: {}", r.stderr);
        }
        // The same build, uninterrupted, gives the expected outputs and the
        // range of the kill moment: hashing, execution, store writes and
        // materialization all lie in it.
        let (_, duration) = reference.build(&state, clean);
        cold.get_or_insert(duration);
        let delay = Duration::from_micros(rng.below(duration.as_micros() as u64 * 11 / 10));
        // Sometimes the edit is undone after the kill, as after a build
        // interrupted by mistake: the next build goes back to older outputs.
        let edited = state.clone();
        let undo = before != state && rng.percent(25);
        let outcome = kill(&ws, delay, &marker).and_then(|k| {
            if undo {
                state = before.clone();
                write_sources(&ws, &state);
            }
            recover(&ws, &reference.seen[&state]).map(|()| k)
        });
        match outcome {
            Ok(Kill::Hit) => hits += 1,
            Ok(Kill::Late) => late += 1,
            Err(e) => {
                failures += 1;
                let undone = if undo {
                    ", edit undone after the kill"
                } else {
                    ""
                };
                let msg = format!(
                    "{replay}: kill #{i} after {delay:.2?} of {duration:.2?} (sources {before:?} -> {edited:?}{undone}) failed: {e}"
                );
                eprintln!("crash injection FAILURE: {msg}");
                first_failure.get_or_insert(msg);
                // Start over from an empty store, so later kills still count.
                for p in processes_with(&marker) {
                    if let Ok(pid) = p.0.parse::<i32>() {
                        // SAFETY: kill(2); these processes belong to this test.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                let _ = fs::remove_dir_all(&ws.store);
                let _ = ws.run(&["clean"]);
            }
        }
    }
    let full = cold.unwrap_or_default();
    let (tmp_files, tmp_bytes) = usage(&ws.store.join("tmp"));
    let scratch_left = fs::read_dir(ws.store.join("scratch")).map_or(0, |d| d.count());
    let (_, scratch_bytes) = usage(&ws.store.join("scratch"));
    eprintln!(
        "crash injection: {kills} kills ({hits} during a build, {late} after it finished), \
         {failures} failures, seed {seed}, cold build {full:.2?}, {:.1?} in all; \
         left in the store: {tmp_files} temporary files ({} KiB), \
         {scratch_left} scratch folders ({} KiB)",
        started.elapsed(),
        tmp_bytes / 1024,
        scratch_bytes / 1024,
    );
    if let Some(msg) = first_failure {
        panic!("{failures} of {kills} kills failed ({replay}); the first:\n{msg}");
    }
    // The reference itself: a cold build in a fresh store agrees with it.
    let fresh = Ws::new();
    fresh.write("BUILD.yaml", &yaml);
    write_sources(&fresh, &state);
    let clean_build = build(&fresh).unwrap_or_else(|e| panic!("{replay}: fresh build: {e}"));
    if let Some(last) = reference.seen.get(&state) {
        assert!(
            clean_build == *last,
            "{replay}: a fresh build differs from the reference:\n{}",
            differences(&clean_build, last)
        );
    }
}

/// How many files lie below `dir`, and their total size.
fn usage(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(entries) = fs::read_dir(dir) else {
        return total;
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                let (n, b) = usage(&e.path());
                total = (total.0 + n, total.1 + b);
            }
            Ok(_) => {
                let size = e.metadata().map_or(0, |m| m.len());
                total = (total.0 + 1, total.1 + size);
            }
            Err(_) => {}
        }
    }
    total
}

/// Without namespaces (`STRATA_SANDBOX=off`) a step is only the leader of a
/// process group that strata kills when it drops the step; a SIGKILLed
/// strata drops nothing, so the step outlives the build.
#[test]
#[ignore = "known limit of the degraded mode: without namespaces, processes a step detaches from its shell outlive a SIGKILLed strata (the shell itself dies with it); sandboxed builds are covered by the test above"]
fn a_killed_unsandboxed_build_leaves_no_step_behind() {
    let ws = Ws::new();
    let marker = format!("sleep 3{:07}.5", std::process::id());
    ws.write(
        "BUILD.yaml",
        &format!(
            "targets:\n  t:\n    rule: run\n    cmd: \"{marker}; echo > $OUT/o\"\n    outs: [o]\n"
        ),
    );
    let mut child = ws
        .cmd(&["build"])
        .env("STRATA_SANDBOX", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let left = no_survivors(&marker);
    // Never leave the step running, whatever the outcome.
    for (pid, _) in processes_with(&marker) {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: kill(2) on a process of this test's step.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Err(e) = left {
        panic!("{e}");
    }
}

/// `out/` after a build killed while filling it: a target's folder already
/// replaced, but `out/.strata/state.json` (written once, at the end) still
/// naming the old output. A later build that wants the old output again
/// must not trust that record and keep the killed build's files.
#[test]
fn a_build_killed_while_filling_out_leaves_no_stale_folder_behind() {
    let ws = Ws::new();
    // `z` has many files, so it is still being materialized after `a`
    // (targets are materialized in name order) when out/z is missing.
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  a:
    rule: run
    srcs: [v.txt]
    cmd: "cp v.txt $OUT/o"
    outs: [o]
  z:
    rule: run
    cmd: "mkdir $OUT/many; for i in $(seq 400); do echo $i > $OUT/many/$i; done"
    outs: [many/]
"#,
    );
    ws.write("v.txt", "1\n");
    let first = ws.build_ok(&[]).json();
    let old = first["targets"]["a"]["output"]
        .as_str()
        .unwrap()
        .to_string();
    let old_hex = old.trim_start_matches("blake3:").to_string();
    let state_of_a = || -> String {
        let state = fs::read(ws.path().join("out/.strata/state.json")).unwrap_or_default();
        serde_json::from_slice::<serde_json::Value>(&state).unwrap_or_default()["placed"]["a"]
            ["output"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // Kill builds of v=N right after they replace out/a (while `z` is still
    // being materialized). Whatever the moment, the state file must never
    // vouch for a folder it does not describe, and undoing the edit must
    // bring back the first output.
    let mut kills_in_window = 0;
    for n in 2..8 {
        let new = format!("{n}\n");
        ws.write("v.txt", &new);
        fs::remove_dir_all(ws.path().join("out/z")).unwrap();
        let mut child = ws
            .cmd(&["build"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let killed = loop {
            if fs::read_to_string(ws.path().join("out/a/o")).is_ok_and(|s| s == new) {
                // SAFETY: kill(2) on our own child, which has not been reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                child.wait().unwrap();
                break true;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        if killed && !ws.path().join("out/z").exists() {
            kills_in_window += 1;
        }
        assert!(
            !state_of_a().starts_with(&old_hex),
            "out/a holds {new:?} but the state still records the old output"
        );
        // The edit is undone: the next build wants the first output again.
        ws.write("v.txt", "1\n");
        let r = ws.build_ok(&[]);
        assert_eq!(r.json()["targets"]["a"]["output"], old.as_str());
        assert_eq!(
            ws.read("out/a/o"),
            "1\n",
            "out/a is stale after undoing the edit"
        );
    }
    eprintln!("kills between replacing out/a and finishing out/: {kills_in_window}");
}

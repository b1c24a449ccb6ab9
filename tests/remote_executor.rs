//! `strata build --remote-executor` on real components: BuildGrid 0.4.4
//! with its scheduler on PostgreSQL (`common::execution::Service`) and one
//! `strata worker` as its bot. One service serves every scenario of this
//! file (it takes a while to start).
//!
//! - A graph built through the service gives `out/` byte for byte (and
//!   mode for mode) what a local build gives; `remote_executed` counts the
//!   `run` steps the worker ran, and nothing else went there (a built-in
//!   rule and a `local: true` step ran here); the next build is all cache
//!   hits.
//! - A second clone at another path, with a store of its own and the
//!   service named in `strata.yaml`, gets every step from the service's
//!   action cache and uploads nothing.
//! - A service that cannot be reached: one warning and a local build; with
//!   `--remote-only`, an error (exit 2) and no `out/`. A wrong instance name
//!   is an error naming it (exit 2).
//! - A result missing a declared output (the command removes `$OUT`) fails
//!   the step (exit 1) and `out/` gets nothing of it.
//! - A step past its time limit (`limits: time`, the action's timeout,
//!   which the worker enforces) fails as it does locally, with its log,
//!   without waiting for the step; the next build runs it again. A time
//!   limit is part of the action sent, not of the step's key: another limit
//!   is a local cache hit, and the service's cache is asked by the digest it
//!   executed (a clone with the same limit gets the result from it, one
//!   with another limit runs the step there again).
//! - Outputs are fetched only when needed ("build without the bytes"): in
//!   a chain a -> b -> c run there with only `c` requested, only `c`'s
//!   files are downloaded (the store never holds `a`'s or `b`'s big file)
//!   and `out/c` is what a local build gives; the next build executes
//!   nothing (the service's action cache answers) and downloads nothing
//!   new. With `b` marked `local: true`, `a`'s files are fetched before `b`
//!   runs here.
//! - A service that goes away while a step runs there: one warning, that
//!   step and the rest run here, the build succeeds.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Ws;
use common::execution::{Service, Worker};
use common::remote::buildgrid_available;

const BUILD: &str = r#"
targets:
  upper:
    rule: run
    srcs: [words.txt]
    cmd: |
      mkdir -p $OUT/share/doc
      tr a-z A-Z < words.txt > $OUT/upper.txt
      echo scratch > $OUT/not-declared
      printf '#!/bin/sh\necho run\n' > $OUT/share/tool && chmod +x $OUT/share/tool
      echo doc > $OUT/share/doc/README
    outs: [upper.txt, share/]
  sorted:
    rule: run
    deps: [upper]
    cmd: sort $DEPS/upper/upper.txt > $OUT/sorted.txt && $DEPS/upper/share/tool >> $OUT/sorted.txt && echo "$HOME $TMPDIR" | grep -c strata > $OUT/layout.txt
    outs: [sorted.txt, layout.txt]
  counted:
    rule: run
    deps: [sorted]
    cmd: wc -l < $DEPS/sorted/sorted.txt > $OUT/count.txt
    outs: [count.txt]
  here:
    rule: run
    local: true
    deps: [counted]
    cmd: cat $DEPS/counted/count.txt > $OUT/here.txt
    outs: [here.txt]
  sums:
    rule: checksums
    of: [sorted]
"#;

/// The `run` steps of `BUILD` a worker may run (`here` is `local: true`).
const REMOTE_STEPS: u64 = 3;

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("BUILD.yaml", BUILD);
    ws.write("words.txt", "pear\napple\nfig\n");
    ws
}

/// Every file under `out/` with its bytes and executable bit.
fn out_files(ws: &Ws) -> BTreeMap<String, (Vec<u8>, bool)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![ws.path().join("out")];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(ws.path()).unwrap().display().to_string();
            if rel.starts_with("out/.strata") {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else {
                let executable = meta.permissions().mode() & 0o100 != 0;
                files.insert(rel, (without_keys(fs::read(&path).unwrap()), executable));
            }
        }
    }
    files
}

/// `bytes` without the `key=<hex>` fields of a build manifest: keys are
/// in the store's digest function, SHA-256 with BuildGrid and BLAKE3 in a
/// local build; everything else must be the same.
fn without_keys(bytes: Vec<u8>) -> Vec<u8> {
    let Ok(text) = String::from_utf8(bytes.clone()) else {
        return bytes;
    };
    text.split_inclusive('\n')
        .map(|line| match line.find("  key=") {
            Some(at) if !line.starts_with('#') => format!("{}\n", &line[..at]),
            _ => line.to_string(),
        })
        .collect::<String>()
        .into_bytes()
}

fn count(json: &serde_json::Value, field: &str) -> u64 {
    json["remote_execution"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no remote_execution.{field} in {json}"))
}

#[test]
fn run_steps_execute_on_buildgrid_and_strata_workers() {
    if !buildgrid_available() {
        return;
    }
    let mut service = Service::start(10);
    let worker = Worker::start(&service, 2, "1G");
    let local = a_remote_build_gives_what_a_local_build_gives(&service, &worker);
    a_second_clone_gets_every_result_from_the_action_cache(&service, &worker, &local);
    an_unreachable_service_builds_locally_unless_remote_only();
    a_wrong_instance_name_is_an_error(&service);
    a_result_missing_a_declared_output_fails_the_step(&service);
    a_step_past_its_time_limit_fails_there_as_here(&service, &worker);
    a_time_limit_is_in_the_action_sent_not_in_the_key(&service, &worker);
    let lazy = outputs_are_fetched_only_where_needed(&service, &worker);
    an_sbom_reads_the_files_the_service_held(&service);
    // Last: it stops the service.
    a_service_gone_mid_build_leaves_the_rest_to_this_machine(&mut service, &worker);
    drop(worker);
    a_service_that_lost_what_it_held_runs_it_again(&lazy);
}

fn a_remote_build_gives_what_a_local_build_gives(
    service: &Service,
    worker: &Worker,
) -> BTreeMap<String, (Vec<u8>, bool)> {
    let local = workspace();
    let run = local.build_ok(&[]);
    assert!(
        run.json().get("remote_executed").is_none(),
        "{}",
        run.stdout
    );
    let expected = out_files(&local);
    assert!(
        expected.contains_key("out/upper/share/tool"),
        "{expected:?}"
    );
    assert!(!expected.contains_key("out/upper/not-declared"));

    let remote = workspace();
    let url = service.url();
    let run = remote.build_ok(&["--remote-executor", &url]);
    let json = run.json();
    assert_eq!(
        json["remote_executed"], REMOTE_STEPS,
        "{}\n{}",
        run.stdout, run.stderr
    );
    assert_eq!(count(&json, "cached"), 0);
    assert!(count(&json, "uploaded_blobs") > 0);
    assert!(
        run.stderr
            .contains(&format!("({REMOTE_STEPS} ran remotely)")),
        "{}",
        run.stderr
    );
    assert_eq!(run.executed().len(), 5, "{}", run.stdout);
    // The worker ran exactly the remote steps, each exiting 0.
    let finished = worker.finished();
    assert_eq!(finished.len() as u64, REMOTE_STEPS, "{}", worker.log());
    assert!(
        finished.iter().all(|(_, what)| what.starts_with("exit 0")),
        "{}",
        worker.log()
    );
    assert_eq!(out_files(&remote), expected);
    // The digest function is the service's: SHA-256 for BuildGrid.
    let output = json["targets"]["upper"]["output"].as_str().unwrap();
    assert!(output.starts_with("sha256:"), "{output}");

    let again = remote.build_ok(&["--remote-executor", &url]);
    assert_eq!(again.executed(), Vec::<String>::new(), "{}", again.stdout);
    assert_eq!(again.json()["remote_executed"], 0);
    assert_eq!(worker.finished().len() as u64, REMOTE_STEPS);
    expected
}

fn a_second_clone_gets_every_result_from_the_action_cache(
    service: &Service,
    worker: &Worker,
    expected: &BTreeMap<String, (Vec<u8>, bool)>,
) {
    let clone = workspace();
    clone.write(
        "strata.yaml",
        &format!("remote_executor: {}\n", service.url()),
    );
    let run = clone.build_ok(&[]);
    let json = run.json();
    assert_eq!(json["remote_executed"], 0, "{}", run.stdout);
    assert_eq!(count(&json, "cached"), REMOTE_STEPS);
    assert_eq!(count(&json, "uploaded_blobs"), 0);
    assert!(count(&json, "downloaded_bytes") > 0);
    assert!(
        run.stderr.contains(&format!(
            "0 ran remotely, {REMOTE_STEPS} from the remote executor's cache"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(&out_files(&clone), expected);
    assert_eq!(
        worker.finished().len() as u64,
        REMOTE_STEPS,
        "nothing ran again: {}",
        worker.log()
    );
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn an_unreachable_service_builds_locally_unless_remote_only() {
    let url = format!("grpc://127.0.0.1:{}/main", closed_port());
    let ws = workspace();
    let run = ws.build_ok(&["--remote-executor", &url]);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("remote executor"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("building locally"), "{}", run.stderr);
    assert_eq!(run.executed().len(), 5);

    let ws = workspace();
    let run = ws.build_fails(&["--remote-executor", &url, "--remote-only"], 2);
    assert!(
        run.stderr
            .contains("--remote-only forbids building locally"),
        "{}",
        run.stderr
    );
    assert!(!ws.path().join("out").exists());
}

fn a_wrong_instance_name_is_an_error(service: &Service) {
    let url = format!("{}-wrong", service.url());
    let ws = workspace();
    let run = ws.build_fails(&["--remote-executor", &url], 2);
    assert!(
        run.stderr.contains("check the instance name"),
        "{}",
        run.stderr
    );
    assert!(!ws.path().join("out").exists());
}

fn a_result_missing_a_declared_output_fails_the_step(service: &Service) {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  gone:
    rule: run
    cmd: echo y > $OUT/y; echo made it; rm -rf "$OUT"
    outs: [y]
"#,
    );
    let run = ws.build_fails(&["--remote-executor", &service.url()], 1);
    assert!(
        run.stderr.contains("declared output `y` was not created"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("made it"), "its log: {}", run.stderr);
    assert!(!Path::new(&ws.path().join("out/gone")).exists());
}

fn a_step_past_its_time_limit_fails_there_as_here(service: &Service, worker: &Worker) {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  sleeper:
    rule: run
    limits: {time: 2s}
    cmd: echo going to sleep; sleep 30; echo woke > $OUT/o
    outs: [o]
  bystander:
    rule: run
    cmd: echo fine > $OUT/o
    outs: [o]
"#,
    );
    let url = service.url();
    for round in 0..2 {
        let timed_out_before = worker
            .finished()
            .iter()
            .filter(|(_, what)| what.starts_with("DeadlineExceeded"))
            .count();
        let start = std::time::Instant::now();
        let run = ws.build_fails(&["--json", "-k", "--remote-executor", &url], 1);
        let took = start.elapsed();
        assert!(
            run.stderr
                .contains("the step passed its time limit of 2s and was killed"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("going to sleep"),
            "its log: {}",
            run.stderr
        );
        assert!(took < std::time::Duration::from_secs(25), "{took:?}");
        assert_eq!(run.with_status("failed"), ["sleeper"], "{}", run.stdout);
        // The bystander ran there the first time, was a hit the second.
        assert_eq!(run.json()["remote_executed"], 1 - round, "{}", run.stdout);
        assert!(!ws.path().join("out/sleeper").exists());
        // The worker killed it (the client does not wait it out).
        let timed_out = worker
            .finished()
            .iter()
            .filter(|(_, what)| what.starts_with("DeadlineExceeded"))
            .count();
        assert_eq!(timed_out, timed_out_before + 1, "{}", worker.log());
    }
}

/// A step limited to `limit` in a fresh workspace of its own.
fn limited_workspace(limit: &str) -> Ws {
    let ws = Ws::new();
    limit_to(&ws, limit);
    ws
}

fn limit_to(ws: &Ws, limit: &str) {
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"
targets:
  limited:
    rule: run
    limits: {{time: {limit}}}
    cmd: echo limited > $OUT/o
    outs: [o]
"#
        ),
    );
}

fn a_time_limit_is_in_the_action_sent_not_in_the_key(service: &Service, worker: &Worker) {
    let url = service.url();
    let ran = || worker.finished().len();
    let before = ran();
    let ws = limited_workspace("1m");
    let run = ws.build_ok(&["--remote-executor", &url]);
    assert_eq!(run.json()["remote_executed"], 1, "{}", run.stdout);
    assert_eq!(ran(), before + 1, "{}", worker.log());
    // Another limit: the same key, so a local cache hit.
    limit_to(&ws, "2m");
    let run = ws.build_ok(&["--remote-executor", &url]);
    assert_eq!(run.executed(), Vec::<String>::new(), "{}", run.stdout);
    assert_eq!(ran(), before + 1);
    // A clone with the first limit finds the result the service cached
    // under the action it executed (with its timeout).
    let clone = limited_workspace("1m");
    let run = clone.build_ok(&["--remote-executor", &url]);
    let json = run.json();
    assert_eq!(count(&json, "cached"), 1, "{}", run.stdout);
    assert_eq!(count(&json, "uploaded_blobs"), 0);
    assert_eq!(clone.read("out/limited/o"), "limited\n");
    // One with another limit sends another action: it runs there again.
    let other = limited_workspace("2m");
    let run = other.build_ok(&["--remote-executor", &url]);
    let json = run.json();
    assert_eq!(json["remote_executed"], 1, "{}", run.stdout);
    assert_eq!(count(&json, "cached"), 0);
    assert_eq!(ran(), before + 2, "{}", worker.log());
    assert_eq!(other.read("out/limited/o"), "limited\n");
}

/// Sizes of `a`'s and `b`'s big files in [`chain`]: no other blob of a
/// test has them.
const A_BIG: u64 = 3_000_017;
const B_BIG: u64 = 2_000_029;

/// a -> b -> c, each leaving a big file `c` does not need; `b` runs here
/// when `b_local`.
fn chain(b_local: bool) -> Ws {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"
targets:
  a:
    rule: run
    cmd: yes lazy-a | head -c {A_BIG} > $OUT/big.bin && echo a > $OUT/a.txt
    outs: [big.bin, a.txt]
  b:
    rule: run
    local: {b_local}
    deps: [a]
    cmd: wc -c < $DEPS/a/big.bin > $OUT/b.txt && yes lazy-b | head -c {B_BIG} > $OUT/big.bin
    outs: [b.txt, big.bin]
  c:
    rule: run
    deps: [b]
    cmd: cat $DEPS/b/b.txt > $OUT/c.txt && sha256sum < $DEPS/b/big.bin >> $OUT/c.txt
    outs: [c.txt]
"#
        ),
    );
    ws
}

/// Whether `ws`'s store holds a blob of `size` bytes.
fn stores_blob_of(ws: &Ws, size: u64) -> bool {
    let suffix = format!("-{size}");
    let mut todo = vec![ws.store.clone()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                todo.push(path);
            } else if path.to_string_lossy().ends_with(&suffix) {
                return true;
            }
        }
    }
    false
}

/// Returns the workspace whose `a` and `b` the service held.
fn outputs_are_fetched_only_where_needed(service: &Service, worker: &Worker) -> Ws {
    let url = service.url();
    let local = chain(false);
    local.build_ok(&["c"]);
    let expected = out_files(&local);
    let c_bytes = local.read("out/c/c.txt").len() as u64;

    let ws = chain(false);
    let ran = worker.finished().len();
    let run = ws.build_ok(&["--remote-executor", &url, "c"]);
    let json = run.json();
    assert_eq!(
        json["remote_executed"], 3,
        "{}
{}",
        run.stdout, run.stderr
    );
    assert_eq!(worker.finished().len(), ran + 3, "{}", worker.log());
    let downloaded = count(&json, "downloaded_bytes");
    // c's file, the folder records and logs: not a's or b's big files.
    assert!(downloaded >= c_bytes, "{downloaded}");
    assert!(downloaded < B_BIG, "only what out/ needs: {downloaded}");
    assert!(!stores_blob_of(&ws, A_BIG) && !stores_blob_of(&ws, B_BIG));
    assert_eq!(out_files(&ws), expected);
    assert_eq!(
        ws.read("out/c/c.txt").lines().next(),
        Some(&*A_BIG.to_string())
    );

    // The next build: nothing runs again, the service's cache answers and
    // nothing more is downloaded.
    let run = ws.build_ok(&["--remote-executor", &url, "c"]);
    let json = run.json();
    assert_eq!(json["remote_executed"], 0, "{}", run.stdout);
    assert_eq!(worker.finished().len(), ran + 3, "{}", worker.log());
    assert!(count(&json, "downloaded_bytes") < c_bytes, "{}", run.stdout);
    assert!(!stores_blob_of(&ws, A_BIG));
    assert_eq!(out_files(&ws), expected);
    // The store is whole by its own rules: no entry names a blob it lacks.
    for command in [
        &["store", "verify"][..],
        &["store", "gc", "--max-size", "0"],
        &["store", "verify"],
    ] {
        let run = ws.run(command);
        assert_eq!(run.code, 0, "{command:?}: {}\n{}", run.stdout, run.stderr);
    }

    let lazy = ws;
    // `b` here: `a`'s files come first (from the service's cache now; `c`
    // too, its input being the same).
    let ws = chain(true);
    let run = ws.build_ok(&["--remote-executor", &url, "c"]);
    let json = run.json();
    assert_eq!(count(&json, "cached"), 2, "a and c: {}", run.stdout);
    assert_eq!(json["remote_executed"], 0, "{}", run.stdout);
    assert_eq!(worker.finished().len(), ran + 3, "{}", worker.log());
    let downloaded = count(&json, "downloaded_bytes");
    assert!((A_BIG..A_BIG + B_BIG).contains(&downloaded), "{downloaded}");
    assert!(stores_blob_of(&ws, A_BIG));
    assert_eq!(out_files(&ws), expected);
    lazy
}

/// An `sbom` of `c` listing every file reads its closure's files, which
/// the service held: they are fetched first.
fn an_sbom_reads_the_files_the_service_held(service: &Service) {
    let ws = chain(false);
    let build = fs::read_to_string(ws.path().join("BUILD.yaml")).unwrap();
    ws.write(
        "BUILD.yaml",
        &format!("{build}  c-sbom:\n    rule: sbom\n    of: c\n    files: true\n"),
    );
    let run = ws.build_ok(&["--remote-executor", &service.url(), "c-sbom"]);
    assert!(stores_blob_of(&ws, A_BIG), "{}", run.stderr);
    let placed = fs::read_dir(ws.path().join("out/c-sbom")).unwrap().count();
    assert!(placed > 0, "{}", run.stdout);
}

/// The workspace whose `a` and `b` a service held, built against a new
/// service (empty storage, empty action cache: a restart): what it lacks
/// runs again there, and `out/` is right.
fn a_service_that_lost_what_it_held_runs_it_again(lazy: &Ws) {
    let local = chain(false);
    local.build_ok(&["b"]);
    let service = Service::start(10);
    let worker = Worker::start(&service, 1, "1G");
    let run = lazy.build_ok(&["--remote-executor", &service.url(), "b"]);
    let json = run.json();
    assert_eq!(json["remote_executed"], 2, "a and b: {}", run.stdout);
    assert_eq!(worker.finished().len(), 2, "{}", worker.log());
    let of_b = |ws: &Ws| {
        let mut files = out_files(ws);
        files.retain(|path, _| path.starts_with("out/b/"));
        files
    };
    assert_eq!(of_b(lazy), of_b(&local));
    assert!(!of_b(&local).is_empty());
}

fn a_service_gone_mid_build_leaves_the_rest_to_this_machine(
    service: &mut Service,
    worker: &Worker,
) {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  slow:
    # On a strata worker (whose /strata/work is a symlink into the input
    # root) the step outlasts the service; here it is quick.
    rule: run
    cmd: if [ -L /strata/work ]; then sleep 60; fi; echo slow > $OUT/slow.txt
    outs: [slow.txt]
  after:
    rule: run
    deps: [slow]
    cmd: cat $DEPS/slow/slow.txt > $OUT/after.txt
    outs: [after.txt]
"#,
    );
    let leases_before = worker.started().len();
    let build = ws
        .cmd(&["build", "--json", "--remote-executor", &service.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while worker.started().len() == leases_before {
        assert!(std::time::Instant::now() < deadline, "{}", worker.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    service.stop();
    let run: common::Run = build.wait_with_output().unwrap().into();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("went away"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    let json = run.json();
    // `slow` fell back; `after` was never offered to the service.
    assert_eq!(count(&json, "fell_back"), 1, "{}", run.stdout);
    assert_eq!(json["remote_executed"], 0);
    assert_eq!(ws.read("out/after/after.txt"), "slow\n");
}

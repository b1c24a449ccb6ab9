//! The scheduler's choices, proved by construction rather than by timing:
//! without `-k` no step starts once a failure is seen, at any `-j`; and
//! among steps that could start, the one on the longest remaining path goes
//! first (by recorded durations, else by depth).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Run, Ws};
use serde_json::Value;

/// A `run` target, unsandboxed steps appending `start <name>` to the log
/// at `log` as their first act.
fn logged(name: &str, deps: &[&str], body: &str, log: &Path) -> String {
    format!(
        "  {name}:\n    rule: run\n    deps: [{}]\n    env: {{LOG: \"{}\"}}\n    cmd: 'echo start {name} >> \"$LOG\"; {body}'\n    outs: [o]\n",
        deps.join(", "),
        log.display()
    )
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `strata build ARGS` with unsandboxed steps (they write outside the
/// sandbox), stderr going to `stderr_file`, which steps may read.
fn build_unsandboxed(ws: &Ws, args: &[&str], stderr_file: &Path) -> Run {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let out = ws
        .cmd(&all)
        .env("STRATA_SANDBOX", "off")
        .stderr(Stdio::from(fs::File::create(stderr_file).unwrap()))
        .output()
        .expect("strata runs");
    let mut run: Run = out.into();
    run.stderr = fs::read_to_string(stderr_file).unwrap();
    run
}

/// At -j1 the failing step holds the only slot until the scheduler has seen
/// its failure: no other step may start after it, whatever ran before.
#[test]
fn at_j1_no_step_starts_after_a_failure() {
    let ws = Ws::new();
    let log = ws.path().join("starts.log");
    let mut yaml = String::from("targets:\n");
    yaml += &logged("fail", &[], "echo end fail >> \"$LOG\"; exit 1", &log);
    yaml += &logged("after-fail", &["fail"], "echo > $OUT/o", &log);
    for x in ["x1", "x2", "x3", "x4", "x5"] {
        yaml += &logged(x, &[], "echo > $OUT/o", &log);
    }
    ws.write("BUILD.yaml", &yaml);
    for round in 0..3 {
        let _ = fs::remove_file(&log);
        let r = build_unsandboxed(&ws, &["-j1"], &ws.path().join("stderr"));
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert_eq!(r.with_status("failed"), ["fail"]);
        let log = lines(&log);
        let end = log.iter().position(|l| l == "end fail").expect("fail ran");
        assert_eq!(
            log.len(),
            end + 1,
            "round {round}: steps started after the failure: {log:?}"
        );
        // `fail` leads the longest path, so it went first and nothing else ran.
        assert_eq!(log, ["start fail", "end fail"], "round {round}");
        assert_eq!(r.executed(), Vec::<String>::new());
    }
}

/// At -j2 a second step runs beside the failing one and ends only once
/// Strata has printed the failure: its freed slot must not start another.
/// The failing step's own slot is freed only when its failure is handled.
#[test]
fn at_j2_no_step_starts_after_a_failure_is_seen() {
    let ws = Ws::new();
    let log = ws.path().join("starts.log");
    let stderr = ws.path().join("stderr");
    let mut yaml = String::from("targets:\n");
    // `fail` and `blocker` each lead a chain of two, so they start first.
    yaml += &logged("fail", &[], "exit 1", &log);
    yaml += &logged("after-fail", &["fail"], "echo > $OUT/o", &log);
    yaml += &logged(
        "blocker",
        &[],
        &format!(
            "i=0; until grep -q \"FAILED fail\" \"{}\"; do i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.05; done; echo > $OUT/o",
            stderr.display()
        ),
        &log,
    );
    yaml += &logged("after-blocker", &["blocker"], "echo > $OUT/o", &log);
    for x in ["x1", "x2", "x3", "x4"] {
        yaml += &logged(x, &[], "echo > $OUT/o", &log);
    }
    ws.write("BUILD.yaml", &yaml);
    for round in 0..3 {
        let _ = fs::remove_file(&log);
        let r = build_unsandboxed(&ws, &["-j2", "--no-cache"], &stderr);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert_eq!(r.with_status("failed"), ["fail"], "{}", r.stderr);
        assert_eq!(r.executed(), ["blocker"], "round {round}: {}", r.stderr);
        let mut started = lines(&log);
        started.sort();
        assert_eq!(
            started,
            ["start blocker", "start fail"],
            "round {round}: a step started after the failure was seen"
        );
    }
}

/// The trace's action spans, first started first.
fn start_order(trace: &Path) -> Vec<String> {
    let doc: Value = serde_json::from_str(&fs::read_to_string(trace).unwrap()).unwrap();
    let mut spans: Vec<(u64, String)> = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["cat"] == "action")
        .map(|e| {
            (
                e["ts"].as_u64().unwrap(),
                e["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    spans.sort();
    spans.into_iter().map(|(_, n)| n).collect()
}

fn step(name: &str, deps: &[&str]) -> String {
    format!(
        "  {name}:\n    rule: run\n    deps: [{}]\n    cmd: \"echo {name} > $OUT/o\"\n    outs: [o]\n",
        deps.join(", ")
    )
}

/// At -j1 steps run one after another, so the trace gives the order the
/// scheduler chose.
fn order_at_j1(ws: &Ws, extra: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let trace = ws.path().join("trace.json");
    let mut args = vec!["build", "--json", "-j1", "--trace", trace.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut cmd = ws.cmd(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let r: Run = cmd.output().unwrap().into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    start_order(&trace)
}

#[test]
fn with_no_record_the_deepest_chain_starts_first() {
    let ws = Ws::new();
    let yaml = format!(
        "targets:\n{}{}{}{}{}{}",
        step("x", &[]),
        step("y", &[]),
        step("z", &[]),
        step("a", &[]),
        step("b", &["a"]),
        step("c", &["b"]),
    );
    ws.write("BUILD.yaml", &yaml);
    // First ready, first started, for contrast: the chain goes last there.
    let fifo = order_at_j1(&ws, &[], &[("STRATA_READY_ORDER", "fifo")]);
    assert_ne!(fifo[0], "a", "{fifo:?}");
    // That build's record would rank steps by the times they took there:
    // on a busy machine one slow `y` can outweigh a fast `b` and `c`
    // together. This test is about a workspace with no record.
    fs::remove_dir_all(ws.store.join("meta/records")).unwrap();
    let order = order_at_j1(&ws, &["--no-cache"], &[]);
    assert_eq!(order[..2], ["a", "b"], "{order:?}");
    assert_eq!(order.len(), 6);
}

/// The newest build record of the workspace (there is one workspace).
fn newest_record(store: &Path) -> PathBuf {
    let dir = fs::read_dir(store.join("meta/records"))
        .unwrap()
        .flatten()
        .next()
        .expect("a workspace's records")
        .path();
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files.pop().expect("a record")
}

#[test]
fn recorded_durations_decide_which_step_starts_first() {
    let ws = Ws::new();
    let yaml = format!(
        "targets:\n{}{}  slow:\n    rule: run\n    cmd: \"sleep 0.5; echo > $OUT/o\"\n    outs: [o]\n",
        step("x", &[]),
        step("y", &["x"]),
    );
    ws.write("BUILD.yaml", &yaml);
    // No record: the chain is deeper.
    assert_eq!(order_at_j1(&ws, &[], &[])[0], "x");
    let path = newest_record(&ws.store);
    let mut record: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let slow_ms = record["targets"]["slow"]["duration_ms"].as_u64().unwrap();
    assert!(slow_ms >= 500, "slow slept 0.5 s but took {slow_ms} ms");
    for t in ["x", "y"] {
        assert!(record["targets"][t]["duration_ms"].is_u64(), "{record:#}");
    }
    // Recorded: `slow` took longer than the whole chain will.
    record["targets"]["x"]["duration_ms"] = 1.into();
    record["targets"]["y"]["duration_ms"] = 1.into();
    record["targets"]["slow"]["duration_ms"] = 60_000.into();
    fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    assert_eq!(order_at_j1(&ws, &["--no-cache"], &[])[0], "slow");

    // A cached step keeps the duration of the run it reuses.
    let r = ws.build_ok(&[]);
    assert_eq!(r.with_status("cached").len(), 3);
    let record: Value =
        serde_json::from_str(&fs::read_to_string(newest_record(&ws.store)).unwrap()).unwrap();
    let kept = record["targets"]["slow"]["duration_ms"].as_u64().unwrap();
    assert!(kept >= 500, "{record:#}");
}
